//! Cluster mode's command line: the NATS flags `serve` and `worker` share,
//! and `drover worker`, which holds SSH keys and warm connections and
//! answers for the hosts of its region.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::engine::cluster::worker::{self, WorkerOptions};
use crate::model::error::{Error, Result};
use crate::model::parse_duration;
use crate::model::target::Selector;
use crate::remote::fanout::Reach;
use crate::remote::nats::NatsOptions;
use crate::remote::pool::Pool;

/// How to reach NATS JetStream (cluster mode).
#[derive(Debug, Clone, Default, Args)]
pub struct NatsArgs {
    /// NATS servers for cluster mode, comma-separated
    /// (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`); the client fails
    /// over between them. A password in a URL is never printed.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificates (PEM) to verify NATS servers by; TLS is then required.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients.
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_key"])]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// The hub's JetStream domain, when connecting to a leaf node (the
    /// hub's servers set `jetstream { domain: … }`).
    #[arg(long, value_name = "DOMAIN", requires = "nats")]
    pub nats_domain: Option<String>,
    /// Replicas of the KV buckets drover makes (1 on one server, 3 on a
    /// cluster); buckets that exist keep theirs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub nats_replicas: u16,
}

impl NatsArgs {
    /// The connection options, named `name` on the servers.
    pub fn options(&self, name: &str) -> NatsOptions {
        NatsOptions {
            urls: self.nats.clone(),
            creds: self.nats_creds.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone().zip(self.nats_key.clone()),
            replicas: usize::from(self.nats_replicas),
            name: name.to_string(),
            domain: self.nats_domain.clone(),
        }
    }
}

/// `drover worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// NATS (required here).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The inventory: the same as the replicas' (its digest is checked on
    /// every request). A YAML file, a directory of them, or an executable
    /// printing it as JSON.
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// Work only the hosts this selector matches (e.g. `region:eu-west`);
    /// workers with the same selector share its hosts. Default: all hosts.
    #[arg(long, value_name = "SEL")]
    pub region: Option<String>,
    /// This worker's name among the live workers (default: the machine's
    /// hostname and this process's id).
    #[arg(long)]
    pub name: Option<String>,
    /// A lease not renewed for this long is free for another worker (the
    /// first worker to make the buckets sets it for all).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Hosts read in parallel per request.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// Bound on one host's read.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub read_timeout: Duration,
    /// Keep each host's connection open this long after its last use.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub idle: Duration,
    /// The live snapshot of its hosts, which reads are answered from.
    #[command(flatten)]
    pub live: crate::cmd::snapshot::LiveArgs,
}

/// `drover worker`: runs until SIGTERM or SIGINT, then hands its leases
/// back so other workers take its hosts at once.
pub(super) fn worker(a: &WorkerArgs) -> Result<i32> {
    if a.nats.nats.is_empty() {
        return Err(Error::Usage(
            "--nats: name at least one NATS server (e.g. --nats nats://127.0.0.1:4222)".into(),
        ));
    }
    if a.lease_ttl < Duration::from_secs(1) {
        return Err(Error::Usage("--lease-ttl: at least 1s".into()));
    }
    let inv = crate::engine::inventory::load(&a.inventory)?;
    let region = a.region.clone().unwrap_or_default();
    let hosts = match a.region.as_deref() {
        None => inv.hosts.clone(),
        Some(raw) => {
            let sel =
                Selector::parse(raw).map_err(|m| Error::Usage(format!("--region `{raw}`: {m}")))?;
            if sel.is_any() {
                return Err(Error::Usage(format!(
                    "--region `{raw}`: `_any` picks one host per run; name a region's hosts"
                )));
            }
            let hosts: Vec<_> = inv
                .hosts
                .iter()
                .filter(|h| sel.matches(h))
                .cloned()
                .collect();
            if hosts.is_empty() {
                return Err(Error::Usage(format!(
                    "--region `{raw}` matches no host of {}",
                    inv.path.display()
                )));
            }
            hosts
        }
    };
    let name = a.name.clone().unwrap_or_else(default_name);
    if name.is_empty() {
        return Err(Error::Usage("--name: empty".into()));
    }
    let opts = a.nats.options(&format!("drover-worker {name}"));
    let rt = super::runtime()?;
    rt.block_on(async move {
        let nats = opts
            .connect()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                    let _ = stop_tx.send(true);
                }
                _ => tracing::error!(
                    "cannot install signal handlers; the worker stops only when killed"
                ),
            }
        });
        let pool = Pool::new(a.idle);
        let fleet = a.live.fleet(pool.clone(), a.read_timeout)?;
        let reach = Reach::new(a.forks, a.read_timeout).with_pool(Some(pool));
        worker::run(
            nats,
            WorkerOptions {
                name,
                region,
                hosts,
                inventory: Arc::new(inv),
                ttl: a.lease_ttl,
                reach,
                fleet,
            },
            stop_rx,
        )
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    })?;
    Ok(0)
}

/// `HOSTNAME-PID`.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "worker" } else { &host },
        std::process::id()
    )
}
