//! How the server's host work is reached: the reads (status of units,
//! unit logs) and the dry runs (plans from live facts) that serve asks
//! for. [`InProcess`]
//! reaches the hosts from this process with its connection pool; a server
//! that holds no SSH keys would send the same requests to the worker that
//! owns the hosts, behind the same trait.
//!
//! Running a job (apply) is reached through the job store
//! ([`crate::engine::job_store::JobStore::start`]), which owns the job
//! from its start to its report; the per-host work inside a run stays the
//! executor's walk, below this seam.

use async_trait::async_trait;

use crate::engine::events::NoEvents;
use crate::engine::job::Job;
use crate::engine::logs::HostLogs;
use crate::engine::plan::{FactsSource, PlanOptions, Planned};
use crate::engine::status::StatusReport;
use crate::model::inventory::{Host, Inventory};
use crate::model::logs::LogQuery;
use crate::remote::fanout::Reach;

use super::error::ApiError;

/// Where serve's reads and plans run.
#[async_trait]
pub trait HostExecutor: Send + Sync {
    /// The plan of `job` from the hosts' live state (a dry run); refused
    /// if it would disrupt a protected unit, unless `allow_protected`.
    /// `keep_facts`: the plan records the facts it was made on (a stored
    /// plan's drift is checked against them).
    async fn plan(&self, job: Job, allow_protected: bool, keep_facts: bool)
        -> Result<Planned, ApiError>;

    /// The state of `units` (all watched ones when empty) on the hosts of
    /// `inv` that `target` selects (all of them when None).
    async fn status(
        &self,
        inv: Inventory,
        target: Option<String>,
        units: Vec<String>,
    ) -> Result<StatusReport, ApiError>;

    /// The journal entries `q` asks for on `hosts` of the inventory of
    /// digest `inventory` (with `any`, the first of them that answers),
    /// each host's failure its own result.
    async fn logs(
        &self,
        inventory: &str,
        hosts: Vec<Host>,
        q: LogQuery,
        any: bool,
    ) -> Vec<HostLogs>;

    /// In cluster mode, this replica's clock against the NATS server's.
    fn clock(&self) -> Option<crate::engine::cluster::clock::ClockReport> {
        None
    }
}

/// How a server plans: the whole inventory (no `--limit`), nothing
/// carried over.
fn served_plan(reach: Reach, allow_protected: bool, keep_facts: bool) -> PlanOptions {
    PlanOptions {
        reach,
        limit: None,
        allow_protected,
        keep_facts,
        carry: None,
    }
}

/// Hosts reached from this process, over its pool.
pub struct InProcess {
    /// Forks, read timeout and the pool.
    pub reach: Reach,
}

#[async_trait]
impl HostExecutor for InProcess {
    async fn plan(
        &self,
        job: Job,
        allow_protected: bool,
        keep_facts: bool,
    ) -> Result<Planned, ApiError> {
        let opts = served_plan(self.reach.clone(), allow_protected, keep_facts);
        Ok(crate::engine::plan::plan(&job, FactsSource::Live, &opts, &NoEvents).await?)
    }

    async fn status(
        &self,
        inv: Inventory,
        target: Option<String>,
        units: Vec<String>,
    ) -> Result<StatusReport, ApiError> {
        let reach = self.reach.clone();
        let (report, _) =
            crate::engine::status::status(&inv, target.as_deref(), &units, reach, &NoEvents)
                .await?;
        Ok(report)
    }

    async fn logs(&self, _: &str, hosts: Vec<Host>, q: LogQuery, any: bool) -> Vec<HostLogs> {
        crate::engine::logs::read_logs(&hosts, &q, self.reach.clone(), any)
            .await
            .0
    }
}

/// A cluster-mode replica's executor: each host's read is asked of the
/// worker that owns it (`drover worker`), over NATS, and a dry run is
/// planned here from the facts the owners read, and unit logs are read
/// by the owners. Dry runs of check-mode script modules are not carried
/// yet; they answer 503 with what to do instead.
pub struct Cluster {
    reads: crate::engine::cluster::reads::ClusterReads,
    clock: std::sync::Arc<crate::engine::cluster::clock::ClockWatch>,
    forks: usize,
}

impl Cluster {
    /// Reads over `client`; a worker may take `read_timeout` (plus the
    /// trip) per host; `forks` hosts asked at once.
    pub fn new(
        nats: &crate::remote::nats::Nats,
        clock: std::sync::Arc<crate::engine::cluster::clock::ClockWatch>,
        read_timeout: std::time::Duration,
        forks: usize,
    ) -> Self {
        Cluster {
            clock,
            reads: crate::engine::cluster::reads::ClusterReads::new(
                nats,
                read_timeout + std::time::Duration::from_secs(5),
            ),
            forks: forks.max(1),
        }
    }
}

impl Cluster {
    /// A job's host work, asked of each host's owner.
    pub fn tasks(&self) -> std::sync::Arc<dyn crate::engine::HostTasks> {
        std::sync::Arc::new(self.reads.clone())
    }
}

/// `ask(i)` for each of `n` hosts, `forks` at a time; the answers in
/// order. By index: a closure over `&Host` items makes the future not
/// provably Send (rust-lang/rust#102211).
async fn each_host<T, F: std::future::Future<Output = T>>(
    n: usize,
    forks: usize,
    ask: impl Fn(usize) -> F,
) -> Vec<T> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(ask)
        .buffered(forks)
        .collect()
        .await
}

/// What a replica answers for what cluster mode does not carry yet.
pub fn not_in_cluster_mode(what: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!(
            "{what} are not available in cluster mode yet: use `drover` where the hosts are reachable, or a server without --nats"
        ),
    )
}

#[async_trait]
impl HostExecutor for Cluster {
    async fn plan(
        &self,
        job: Job,
        allow_protected: bool,
        keep_facts: bool,
    ) -> Result<Planned, ApiError> {
        use crate::engine::cluster::reads::Ask;
        use crate::model::cluster::ReadUnits;
        // A check-mode script runs on the host: a task, which workers do
        // not take yet. A plan without its checks would claim less than it
        // knows, so none is made.
        let checks = job.playbook.steps.iter().any(|s| {
            matches!(&s.operation, crate::model::playbook::Operation::Script(m) if m.check)
        });
        if checks {
            return Err(not_in_cluster_mode(
                "dry runs of playbooks with check-mode script modules",
            ));
        }
        if let Some(why) = self.clock.refusal() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                why,
            ));
        }
        // The same reads a single server's dry run makes, each of the
        // host's owner, from the host itself.
        let wanted = crate::engine::live::plan_reads(&job);
        let (reads, digest, inv, wanted_ref) =
            (&self.reads, job.inventory.digest.as_str(), &job.inventory, &wanted);
        let answers = each_host(wanted.len(), self.forks, |i| async move {
            let w = &wanted_ref[i];
            let ask = Ask {
                units: ReadUnits::These(w.units.iter().map(|u| u.to_string()).collect()),
                files: w.files.iter().map(|u| u.to_string()).collect(),
                from_host: true,
            };
            let host = &inv.hosts[w.host];
            (host.name.clone(), reads.read(digest, host, ask).await)
        })
        .await;
        let mut read = crate::model::facts::Facts::new();
        let mut incomplete = false;
        for (host, r) in answers {
            if let Some(e) = &r.facts.error {
                tracing::warn!("{host}: {e}");
            }
            incomplete |= !r.facts.reachable;
            read.hosts.insert(host, r.facts);
        }
        let facts = read.covering(inv.hosts.iter().map(|h| h.name.as_str()));
        // Given facts: the plan connects to nothing, so no reach matters.
        let opts = served_plan(Reach::default(), allow_protected, keep_facts);
        let source = FactsSource::Given {
            facts,
            label: "live".into(),
        };
        let mut planned = crate::engine::plan::plan(&job, source, &opts, &NoEvents).await?;
        planned.incomplete = incomplete;
        Ok(planned)
    }

    async fn status(
        &self,
        inv: Inventory,
        target: Option<String>,
        units: Vec<String>,
    ) -> Result<StatusReport, ApiError> {
        use crate::engine::cluster::reads::Ask;
        use crate::model::cluster::ReadUnits;
        let hosts = crate::engine::live::select_hosts(&inv, target.as_deref())?;
        let units = crate::engine::live::parse_units(&units)?;
        let ask = match units.is_empty() {
            true => ReadUnits::Loaded,
            false => ReadUnits::These(units.iter().map(|u| u.to_string()).collect()),
        };
        let (reads, digest, ask, hosts_ref) = (&self.reads, inv.digest.as_str(), &ask, &hosts);
        let answers = each_host(hosts.len(), self.forks, |i| async move {
            let host = &hosts_ref[i];
            (host.name.clone(), reads.read(digest, host, Ask::units(ask.clone())).await)
        })
        .await;
        let mut facts = crate::model::facts::Facts::new();
        let mut unreachable = std::collections::BTreeSet::new();
        for (host, r) in answers {
            if r.unreachable {
                unreachable.insert(host.clone());
            }
            facts.hosts.insert(host, r.facts);
        }
        Ok(crate::engine::status::status_report(
            &facts,
            &unreachable,
            chrono::Utc::now(),
        ))
    }

    fn clock(&self) -> Option<crate::engine::cluster::clock::ClockReport> {
        Some(self.clock.report())
    }

    async fn logs(
        &self,
        digest: &str,
        hosts: Vec<Host>,
        q: LogQuery,
        any: bool,
    ) -> Vec<HostLogs> {
        let (reads, q, hosts_ref) = (&self.reads, &q, &hosts);
        let all = each_host(hosts.len(), self.forks, |i| async move {
            reads.logs(digest, &hosts_ref[i], q).await
        })
        .await;
        match any {
            true => crate::engine::logs::first_answer(all, |l| {
                l.status == crate::model::outcome::Status::Ok
            }),
            false => all,
        }
    }
}
