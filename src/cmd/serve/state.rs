//! What the server holds: the inventory, keys and runbooks it loaded
//! (swapped whole on reload, kept when the new ones are invalid), the jobs,
//! the connections kept between jobs, and who holds what. Jobs, claims,
//! sessions, rate limits and host work are held through traits (the
//! seams a server shared by several machines plugs into); `serve` builds
//! this process's implementations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::engine::claims::ClaimStore;
use crate::engine::job_store::JobStore;
use crate::model::error::{Error, Result};
use crate::model::inventory::{Host, Inventory, Transport};
use crate::model::keys::Keys;
use crate::model::params::ParamValues;
use crate::model::playbook::Playbook;
use crate::remote::pool::Pool;

use super::audit::Audit;
use super::executor::HostExecutor;
use super::limit::RateLimiter;
use super::session::SessionStore;

/// A runbook: a playbook of `--playbooks`, by name, as validated text.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// Its name (the file name without `.yml`/`.yaml`).
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Its text when it was loaded and validated.
    pub text: String,
}

impl Runbook {
    /// Its playbook, required parameters filled with samples of their
    /// type: to list and check it, never to run it.
    pub fn declared(&self) -> Result<Playbook> {
        Playbook::from_str_with(&self.text, &self.path, None, &ParamValues::samples())
    }

    /// Approvals a plan of it needs before the server runs it (0: it runs
    /// without a plan).
    pub fn approvals(&self) -> Result<u32> {
        Ok(self.declared()?.approval.unwrap_or(0))
    }

    /// Its playbook with a caller's parameter values (validated when
    /// loaded; parsed again per use).
    pub fn playbook_with(&self, values: &ParamValues) -> Result<Playbook> {
        Playbook::from_str_with(&self.text, &self.path, None, values)
    }
}

/// Everything read from files, replaced as a whole on reload.
#[derive(Debug)]
pub struct Loaded {
    /// The inventory.
    pub inventory: Inventory,
    /// The keys.
    pub keys: Keys,
    /// Runbooks by name.
    pub runbooks: BTreeMap<String, Runbook>,
    /// The host node-local routes act on, if any.
    pub node: Option<String>,
}

/// Where the loaded things come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `-i`.
    pub inventory: PathBuf,
    /// `--keys`.
    pub keys: PathBuf,
    /// `--playbooks`.
    pub playbooks: Option<PathBuf>,
    /// `--node`.
    pub node: Option<String>,
}

impl Sources {
    /// Read and validate everything; any error leaves the caller's old
    /// copy in place.
    pub fn load(&self) -> Result<Loaded> {
        let inventory = crate::engine::inventory::load(&self.inventory)?;
        let keys = Keys::load(&self.keys)?;
        let runbooks = match &self.playbooks {
            Some(dir) => load_runbooks(dir)?,
            None => BTreeMap::new(),
        };
        let node = match &self.node {
            Some(n) => {
                if inventory.host(n).is_none() {
                    return Err(Error::Usage(format!(
                        "--node `{n}` is not in the inventory{}",
                        inventory
                            .suggest_host(n)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default()
                    )));
                }
                Some(n.clone())
            }
            None => {
                let local: Vec<&Host> = inventory
                    .hosts
                    .iter()
                    .filter(|h| h.transport == Transport::Local)
                    .collect();
                match local.as_slice() {
                    [only] => Some(only.name.clone()),
                    _ => None,
                }
            }
        };
        Ok(Loaded {
            inventory,
            keys,
            runbooks,
            node,
        })
    }
}

/// A runbook name is a file name, never a path.
pub fn valid_runbook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn load_runbooks(dir: &Path) -> Result<BTreeMap<String, Runbook>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(name) = file
            .strip_suffix(".yml")
            .or_else(|| file.strip_suffix(".yaml"))
        else {
            continue;
        };
        if !valid_runbook_name(name) || !path.is_file() {
            continue;
        }
        let text = crate::model::yaml::read_bounded(&path, "playbook")?;
        // Its parameters come with each request: checked here with samples.
        Playbook::from_str_with(&text, &path, None, &ParamValues::samples())?;
        if out.contains_key(name) {
            return Err(Error::Usage(format!(
                "--playbooks: two files are named `{name}` (.yml and .yaml); keep one"
            )));
        }
        out.insert(
            name.to_string(),
            Runbook {
                name: name.to_string(),
                path,
                text,
            },
        );
    }
    Ok(out)
}

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hosts in flight at once per job.
    pub forks: usize,
    /// Bound on one host's step.
    pub step_timeout: Duration,
    /// Bound on one host's read.
    pub read_timeout: Duration,
    /// Served over TLS: the page's cookie is `Secure` and `__Host-`.
    pub tls: bool,
    /// How long a status page session lasts.
    pub session_ttl: Duration,
    /// `--objects`: the unit files osapi's unit-file routes name.
    pub objects: Option<PathBuf>,
    /// Journal lines a job's failed service result carries (0: none).
    pub failure_logs: u32,
    /// A cluster-mode replica (`--nats`): reads and jobs' host work go to
    /// the workers that own the hosts; this process reaches no host.
    pub cluster: bool,
}

/// The server's state, shared by every request.
pub struct AppState {
    /// Where files come from.
    pub sources: Sources,
    /// What is loaded now (see [`AppState::loaded`]).
    pub loaded: RwLock<Arc<Loaded>>,
    /// Jobs, running and past.
    pub jobs: Arc<dyn JobStore>,
    /// Who holds which unit or runbook.
    pub claims: Arc<dyn ClaimStore>,
    /// Where reads and dry runs reach the hosts.
    pub executor: Arc<dyn HostExecutor>,
    /// The status page's sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Connections kept between jobs.
    pub pool: Pool,
    /// The audit log.
    pub audit: Audit,
    /// Mutations per key.
    pub limiter: Arc<dyn RateLimiter>,
    /// Settings.
    pub settings: Settings,
    /// Flipped once at shutdown: event streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Host reads in flight, by what they read: a read asked for while
    /// the same one is running joins it instead of reading the hosts again;
    /// bounded per key and overall.
    pub reads: super::inflight::Inflight,
    /// The status page's snapshot of the fleet (see `fleet::fleet_state`).
    pub fleet: super::fleet_cache::FleetCache,
    /// The server's metrics (GET /metrics).
    pub metrics: Arc<super::metrics::Metrics>,
    /// Stored plans and their approvals.
    pub plans: Arc<crate::engine::plan_store::PlanStore>,
    /// The live snapshot reads answer from while it is fresh (None:
    /// `--no-live`).
    pub live: Option<crate::engine::fleet::Fleet>,
    /// Cluster mode: where a job's host work goes, and the claims every
    /// replica and `drover apply --nats` share.
    pub cluster: Option<ClusterJobs>,
}

/// What a replica's jobs run through.
pub struct ClusterJobs {
    /// Each host's work, asked of its owning worker.
    pub tasks: Arc<dyn crate::engine::HostTasks>,
    /// (host, unit) claims in the NATS KV bucket, taken by compare-and-set.
    pub units: Arc<dyn crate::engine::claims::ClaimStore>,
}

impl AppState {
    /// Where `group_by` room is counted: in cluster mode the bucket every
    /// replica and `drover apply --nats` share, else this server's claims.
    pub fn room(&self) -> Arc<dyn ClaimStore> {
        match &self.cluster {
            Some(c) => c.units.clone(),
            None => self.claims.clone(),
        }
    }

    /// What is loaded now.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read inventory, keys and runbooks; on any error keep the old
    /// ones and return the error. Sessions of keys no longer there end.
    pub async fn reload(&self) -> Result<Arc<Loaded>> {
        let new = Arc::new(self.sources.load()?);
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        self.metrics.reloaded();
        let keys = new.keys.clone();
        self.sessions
            .retain(&move |s| keys.find_digest(&s.key_digest).is_some())
            .await;
        Ok(new)
    }
}
