//! `drover serve`: the seeds' HTTP APIs over the same engine as the command
//! line, with keys, roles, an audit log, jobs that outlive a request, and
//! connections kept open between jobs.

mod audit;
mod auth;
mod conns;
mod consul;
mod error;
mod executor;
mod exposition;
mod extract;
mod fleet;
mod fleet_cache;
mod inflight;
mod jobs;
pub(super) mod launch;
mod limit;
mod listen;
mod live;
mod metrics;
mod node;
mod observe;
mod openapi;
mod osapi;
mod page;
mod plans;
mod pages;
mod read;
mod redis;
mod session;
mod state;
mod takeover;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::routing::{get, post, put};
use axum::Router;
use clap::{Args, Subcommand};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::engine::claims::LocalClaims;
use crate::engine::job_store::{DirJobs, JobStore, Retention, DEFAULT_KEEP_JOBS};
use crate::model::error::{Error, Result};
use crate::model::keys::Role;
use crate::model::parse_duration;
use crate::remote::fanout::Reach;
use crate::remote::pool::Pool;

use self::audit::Audit;
use self::executor::InProcess;
use self::limit::TokenBuckets;
use self::listen::Address;
use self::session::{MemorySessions, MAX_SESSIONS};
use self::state::{AppState, Settings, Sources};

/// Bodies over this are refused with 413.
const MAX_BODY: usize = 1024 * 1024;

/// How long a stopping server waits for notifications still being retried.
const NOTIFY_DRAIN: Duration = Duration::from_secs(30);

/// A path and query over this is refused with 414 (hyper itself answers
/// 414 past 64 KiB, with no body).
const MAX_URI: usize = 8 * 1024;

/// `drover serve`: the HTTP API.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// `keygen`: make a new key.
    #[command(subcommand)]
    pub sub: Option<ServeSub>,
    /// The inventory (loaded at start; SIGHUP or POST /reload re-reads it).
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// The keys file (hashed keys with roles; see `drover serve keygen`).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Where to listen: HOST:PORT or unix:PATH. Not loopback needs TLS or
    /// --insecure-http.
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub listen: String,
    /// Serve the playbooks of this directory as runbooks (by file name).
    #[arg(long)]
    pub playbooks: Option<PathBuf>,
    /// osapi's object store: the unit files of this directory, by file
    /// name, for `POST`/`PUT /api/node/{hostname}/service`.
    #[arg(long)]
    pub objects: Option<PathBuf>,
    /// The inventory host node-local routes act on (default: the only
    /// `transport: local` host).
    #[arg(long)]
    pub node: Option<String>,
    /// Job reports and journals (default: the state directory's jobs/).
    #[arg(long)]
    pub jobs_dir: Option<PathBuf>,
    /// Keep at most this many finished jobs: past it, the reports and
    /// journals of those that finished first are deleted from --jobs-dir.
    /// Running jobs are never deleted nor counted.
    #[arg(long, default_value_t = DEFAULT_KEEP_JOBS)]
    pub keep_jobs: usize,
    /// Also delete finished jobs that ended longer ago than this (e.g.
    /// 30d); default: no age limit.
    #[arg(long, value_parser = keep_for)]
    pub keep_jobs_for: Option<Duration>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (keys then cross the
    /// network in clear; a warning is logged).
    #[arg(long)]
    pub insecure_http: bool,
    /// Append audit lines (JSON) to this file instead of stderr.
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Hosts in flight at once per job.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// Bound on one host's step in a job.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Bound on one host's read (GET routes, plans).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub read_timeout: Duration,
    /// Keep each host's connection open this long after its last use.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Changes allowed per key per minute (in bursts of as many); 0: no limit.
    #[arg(long, default_value_t = 60)]
    pub rate_limit: u32,
    /// How long a status page login lasts (logout or a reload that
    /// removes its key ends it sooner).
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// A client must send a request's headers (and finish its TLS
    /// handshake) within this after connecting or after its last answer;
    /// else its connection is closed.
    #[arg(long, default_value = conns::HEADER_TIMEOUT, value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Open client connections at most (default: 1024, or a quarter of the
    /// open files limit when lower); past it the oldest idle one is closed.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Also serve GET /metrics without a key on this loopback HOST:PORT
    /// (for a local Prometheus or agent); GET /metrics on --listen needs a key.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Label host results with the hostname (one series per host: mind
    /// the fleet's size).
    #[arg(long)]
    pub metrics_host_labels: bool,
    /// A stored plan (POST /runbook/{name}/plan) can be approved and
    /// applied for this long after it was made.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub plan_ttl: Duration,
    /// `--notify`, its secret and time bound.
    #[command(flatten)]
    pub notify: crate::cmd::notify::NotifyArgs,
    /// When a job's service step fails on a host, attach the unit's last
    /// N journal lines to that host's result (`logs`); 0: none.
    #[arg(long, value_name = "N", default_value_t = crate::engine::DEFAULT_FAILURE_LOGS, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub failure_logs: u32,
    /// The live snapshot's flags.
    #[command(flatten)]
    pub live: crate::cmd::snapshot::LiveArgs,
    /// Cluster mode: with --nats, this server is a replica that holds no
    /// SSH key and asks `drover worker`s for the hosts' state.
    #[command(flatten)]
    pub cluster: crate::cmd::cluster::NatsArgs,
    /// Cluster mode: a replica whose clock is off the NATS server's by
    /// more than this refuses dry runs (windows are read on its clock);
    /// `/health` shows the skew.
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "nats")]
    pub max_clock_skew: Duration,
    /// Cluster mode: how long a job's (host, unit) claims and its lease in
    /// the NATS KV buckets outlive a replica that died holding them
    /// (renewed every quarter of it while held; `drover apply --nats`
    /// shares the claims). Another replica takes a job over once its lease
    /// has aged out.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "nats")]
    pub claim_ttl: Duration,
}

/// `drover serve` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServeSub {
    /// Print a new random key once, and its entry for the keys file.
    #[command(after_long_help = book!("guide/serve.md", "Serve: the HTTP API"))]
    Keygen {
        /// Its name (what the audit log shows).
        #[arg(long)]
        name: String,
        /// read, operate or admin.
        #[arg(long)]
        role: String,
        /// Only these hosts (a selector).
        #[arg(long)]
        targets: Option<String>,
    },
    /// Print the OpenAPI 3.1 document of the API (as GET /openapi.json).
    #[command(after_long_help = book!("reference/http-api.md", "HTTP API"))]
    Openapi,
}

/// `--keep-jobs-for`'s value. Not [`parse_duration`]: history is kept for
/// longer than its 7 days.
fn keep_for(raw: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("`{raw}` is not a duration ({e}); write e.g. `30d` or `12h`"))
}

/// `--keep-jobs` and `--keep-jobs-for`.
fn retention(a: &ServeArgs) -> Result<Retention> {
    if a.keep_jobs == 0 {
        return Err(Error::Usage(
            "--keep-jobs 0 would delete every job as it ends; give at least 1".into(),
        ));
    }
    Ok(Retention {
        keep: a.keep_jobs,
        max_age: a.keep_jobs_for,
    })
}

/// Run `drover serve`.
pub fn serve(a: &ServeArgs) -> Result<i32> {
    if let Some(ServeSub::Keygen {
        name,
        role,
        targets,
    }) = &a.sub
    {
        return keygen(name, role, targets.as_deref());
    }
    if let Some(ServeSub::Openapi) = &a.sub {
        out!("{}", openapi::spec_json());
        return Ok(0);
    }
    let need = |v: &Option<PathBuf>, flag: &str| {
        v.clone()
            .ok_or_else(|| Error::Usage(format!("drover serve needs {flag}")))
    };
    let retention = retention(a)?;
    let sources = Sources {
        inventory: need(&a.inventory, "-i INVENTORY")?,
        keys: need(
            &a.keys,
            "--keys KEYS.yml (make one with `drover serve keygen`)",
        )?,
        playbooks: a.playbooks.clone(),
        node: a.node.clone(),
    };
    let loaded = sources.load()?;
    let notifier = crate::cmd::notify::Notifier::from_args(&a.notify)?;
    error::hide_dirs(server_dirs(a, &sources, &loaded));
    let address = Address::parse(&a.listen)?;
    let tls = a.tls_cert.as_deref().zip(a.tls_key.as_deref());
    if !address.is_local() && tls.is_none() {
        if !a.insecure_http {
            return Err(Error::Usage(format!(
                "--listen {} is reachable from other machines: give --tls-cert and --tls-key, or --insecure-http to send keys in clear",
                a.listen
            )));
        }
        tracing::warn!(
            "serving plain HTTP on {}: keys cross the network in clear",
            a.listen
        );
    }
    let settings = Settings {
        forks: a.forks.max(1),
        step_timeout: a.timeout,
        read_timeout: a.read_timeout,
        tls: tls.is_some(),
        session_ttl: a.session_ttl,
        objects: a.objects.clone(),
        failure_logs: a.failure_logs,
        cluster: !a.cluster.nats.is_empty(),
    };
    let idle = a.idle;
    let header_read = a.header_timeout;
    if header_read.is_zero() {
        return Err(Error::Usage(
            "--header-timeout must be more than 0s: without it a silent client holds its connection forever".into(),
        ));
    }
    let nofile = conns::raise_nofile();
    let limits = conns::Limits {
        header_read,
        max_connections: match a.max_connections {
            Some(0) => return Err(Error::Usage("--max-connections must be at least 1".into())),
            Some(n) => n,
            None => conns::default_max_connections(nofile),
        },
    };
    let jobs_dir = a.jobs_dir.clone().unwrap_or_else(|| {
        crate::engine::journal::Journal::default_path("x")
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("jobs"))
    });
    let audit = Audit::open(a.audit.as_deref())?;
    // Reports are read back and listed: a directory others may write would
    // list what they forge.
    crate::engine::private::private_dir_for("--jobs-dir", &jobs_dir)?;
    // Beside the jobs, private like them: plans hold hosts' states.
    let plans = Arc::new(crate::engine::plan_store::PlanStore::open(
        &jobs_dir.join("plans"),
        a.plan_ttl,
    )?);
    let rt = super::runtime()?;
    rt.block_on(async move {
        let metrics = Arc::new(metrics::Metrics::new(a.metrics_host_labels));
        let notifier = notifier.map(|n| {
            metrics.notifying();
            let m = metrics.clone();
            Arc::new(n.on_result(move |d| m.notified(d == crate::cmd::notify::Delivery::Delivered)))
        });
        let pool = Pool::new(idle);
        // A replica follows no host: the owning workers do.
        let fleet = match settings.cluster {
            true => None,
            false => a.live.fleet(pool.clone(), settings.read_timeout)?,
        };
        let mut cluster = None;
        let mut cluster_nats = None;
        let replica_name = format!("replica-{}", uuid::Uuid::new_v4().simple());
        let executor: Arc<dyn executor::HostExecutor> = match settings.cluster {
            true => {
                let nats = a
                    .cluster
                    .options("drover-serve")
                    .connect()
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?;
                tracing::info!("cluster mode: reads go to the workers over NATS");
                let clock = crate::engine::cluster::clock::ClockWatch::spawn(
                    nats.clone(),
                    replica_name.clone(),
                    a.max_clock_skew,
                );
                cluster_nats = Some(nats.clone());
                let replica = executor::Cluster::new(
                    &nats,
                    clock,
                    settings.read_timeout,
                    settings.forks,
                );
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let by = format!("drover serve on {} pid {}", host.trim(), std::process::id());
                let units = crate::engine::cluster::claims::LazyKvClaims::new(nats.clone(), a.claim_ttl, by);
                cluster = Some(state::ClusterJobs {
                    tasks: replica.tasks(),
                    units: Arc::new(units),
                });
                Arc::new(replica)
            }
            false => Arc::new(InProcess {
                reach: Reach::new(settings.forks, settings.read_timeout)
                    .with_pool(Some(pool.clone())),
            }),
        };
        let observer = observe::ServeObserver {
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            fleet: fleet.clone(),
        };
        // A key's limit holds across the replicas, not once per replica.
        let limiter: Arc<dyn limit::RateLimiter> = match &cluster_nats {
            Some(n) => Arc::new(limit::SharedBuckets::new(n.clone(), a.rate_limit)),
            None => Arc::new(TokenBuckets::new(a.rate_limit)),
        };
        let mut cluster_jobs = None;
        let jobs: Arc<dyn JobStore> = match cluster_nats {
            // Its jobs run here under a lease and are published; every
            // job of the cluster is followed from the stream.
            Some(nats) => {
                use crate::engine::cluster::coordination::JobLeases;
                use crate::engine::cluster::jobs::{ClusterJobs, Mirror, Publisher};
                let publisher = Arc::new(Publisher::new(
                    nats.clone(),
                    replica_name.clone(),
                    Some(Arc::new(observer)),
                ));
                let local = DirJobs::open(&jobs_dir, retention)?.with_observer(publisher.clone());
                let leases = JobLeases::new(nats.clone(), a.claim_ttl, replica_name.clone());
                let cj = Arc::new(ClusterJobs::new(
                    local,
                    Mirror::follow(nats.clone(), retention.keep),
                    publisher,
                    leases.clone(),
                ));
                cluster_jobs = Some((cj.clone(), leases, nats));
                cj
            }
            None => Arc::new(DirJobs::open(&jobs_dir, retention)?.with_observer(Arc::new(observer))),
        };
        // A cluster's sessions are every replica's.
        let sessions: Arc<dyn session::SessionStore> = match &cluster_jobs {
            Some((_, _, nats)) => Arc::new(session::KvSessionStore(
                crate::engine::cluster::sessions::KvSessions::new(nats.clone(), settings.session_ttl),
            )),
            None => Arc::new(MemorySessions::new(MAX_SESSIONS)),
        };
        let listener = listen::bind(&address, tls).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let state = Arc::new(AppState {
            sources,
            loaded: std::sync::RwLock::new(Arc::new(loaded)),
            jobs: jobs.clone(),
            claims: Arc::new(LocalClaims::default()),
            executor,
            sessions,
            pool: pool.clone(),
            audit,
            limiter,
            settings,
            shutdown: stop_rx,
            reads: Default::default(),
            fleet: Default::default(),
            metrics,
            plans,
            live: fleet.clone(),
            cluster,
        });
        if let Some(f) = &fleet {
            live::watch_defaults(f, &state.loaded());
        }
        // A job whose coordinating replica died goes on here, if this
        // replica wins its lease.
        if let Some((cj, leases, nats)) = cluster_jobs {
            let st = state.clone();
            leases.watch(move |t| takeover::take_over(st.clone(), cj.clone(), nats.clone(), t));
        }
        let metrics_bound = match &a.metrics_listen {
            Some(addr) => {
                Some(exposition::listen(addr, state.clone(), state.shutdown.clone()).await?)
            }
            None => None,
        };
        let app = router(state.clone());
        let bound = listener.local_addr().map(|p| p.0).unwrap_or_default();
        // Handlers first: a SIGTERM sent as soon as the line below is read
        // must stop the server gracefully, not kill it.
        let shutdown = signals(state.clone(), stop_tx);
        // One line on stdout that scripts (and tests) wait for.
        outln!("drover serve: listening on {bound}");
        if let Some(m) = metrics_bound {
            outln!("drover serve: metrics on {m} (GET /metrics, no key)");
        }
        tracing::info!(
            max_connections = limits.max_connections,
            header_timeout_ms = limits.header_read.as_millis() as u64,
            open_files_limit = nofile,
            "serving"
        );
        conns::serve(listener, app, limits, shutdown).await;
        wind_down(jobs, notifier, fleet, pool, &address).await;
        Ok(0)
    })
}

/// After the last connection: the jobs stopped, notifications sent, the
/// live snapshot's watches and the pooled connections closed, a unix
/// socket's file removed.
async fn wind_down(
    jobs: Arc<dyn JobStore>,
    notifier: Option<Arc<crate::cmd::notify::Notifier>>,
    fleet: Option<crate::engine::fleet::Fleet>,
    pool: Pool,
    address: &Address,
) {
    jobs.shutdown("SIGTERM").await;
    if let Some(n) = &notifier {
        n.drain(NOTIFY_DRAIN).await;
    }
    tracing::info!(
        connections_opened = pool.opened(),
        "stopped; connections opened over the server's life"
    );
    if let Some(f) = &fleet {
        f.stop();
    }
    pool.shutdown().await;
    if let Address::Unix(p) = address {
        let _ = std::fs::remove_file(p);
    }
}

fn keygen(name: &str, role: &str, targets: Option<&str>) -> Result<i32> {
    let role: Role = role
        .parse()
        .map_err(|m: String| Error::Usage(format!("--role: {m}")))?;
    let (key, entry) = crate::model::keys::generate(name, role, targets)?;
    eprintln!("drover: the key is shown once; store it now. Add the entry to the keys file.");
    outln!("key: {key}");
    outln!("entry:");
    outln!("  - name: {}", serde_json::Value::from(entry.name));
    outln!("    sha256: {}", entry.sha256);
    outln!("    role: {}", entry.role.as_str());
    if let Some(t) = entry.targets {
        outln!("    targets: {}", serde_json::Value::from(t));
    }
    Ok(0)
}

/// SIGTERM/SIGINT: stop running jobs as apply does, end event streams,
/// stop accepting; SIGHUP: reload. The handlers are installed when this
/// is called, not when the future is first polled.
fn signals(
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    on_signals(state, stop, handlers)
}

type Handlers = (
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
);

async fn on_signals(
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    handlers: Handlers,
) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
        tracing::error!("cannot install signal handlers; the server stops only when killed");
        return std::future::pending().await;
    };
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match live::reload(&state).await {
                Ok(l) => tracing::info!(hosts = l.inventory.hosts.len(), keys = l.keys.len(), runbooks = l.runbooks.len(), "reloaded"),
                Err(e) => tracing::error!("reload failed, keeping what was loaded: {}: {}", e, e.details()),
            },
        }
    };
    tracing::info!("{why}: stopping jobs, then the server");
    // Jobs first: a request waiting for its job then answers with the
    // interrupted report instead of holding the shutdown.
    state.jobs.stop_all(why);
    let _ = stop.send(true);
}

/// Every route, and the layers around them.
/// The directories whose paths answers never show: those of the server's
/// files (inventory, its ssh_config, keys, runbooks, jobs, audit) and of
/// the lock files, as absolute paths.
fn server_dirs(a: &ServeArgs, sources: &Sources, loaded: &state::Loaded) -> Vec<PathBuf> {
    let parent = |p: &std::path::Path| {
        std::path::absolute(p)
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    };
    let mut dirs: Vec<PathBuf> = [
        Some(sources.inventory.as_path()),
        Some(sources.keys.as_path()),
        a.audit.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(parent)
    .collect();
    for d in [
        sources.playbooks.as_deref(),
        a.jobs_dir.as_deref(),
        a.objects.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        dirs.extend(std::path::absolute(d).ok());
    }
    for h in &loaded.inventory.hosts {
        dirs.extend(h.ssh_config.as_deref().and_then(parent));
    }
    dirs.push(crate::engine::lock_dir());
    dirs
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/node/{target}/service", get(node::list_services))
        .route("/node/{target}/service/{name}", get(node::one_service))
        .route(
            "/node/{target}/service/{name}/{action}",
            post(node::service_action),
        )
        .route("/job", get(jobs::list_jobs))
        .route("/job/{id}", get(jobs::get_job))
        .route("/job/{id}/events", get(jobs::job_events))
        .route("/job/{id}/cancel", post(jobs::cancel_job))
        .route("/job/{id}/retry", post(jobs::retry_job))
        .route("/job/{id}/resume", post(jobs::resume_job))
        .route("/runbook", get(jobs::list_runbooks))
        .route("/runbook/{name}", post(jobs::run_runbook))
        .route("/runbook/{name}/plan", post(plans::make_plan))
        .route("/plan", get(plans::list_plans).post(plans::upload_plan))
        .route("/plan/{digest}", get(plans::get_plan))
        .route("/plan/{digest}/approve", post(plans::approve_plan))
        .route("/plan/{digest}/apply", post(plans::apply_plan))
        .route("/reload", post(jobs::reload))
        .route("/audit", get(jobs::audit))
        .route("/openapi.json", get(openapi::serve_spec))
        .merge(osapi::routes())
        .route("/health", get(jobs::health))
        .route("/metrics", get(exposition::metrics))
        .route("/", get(page::page))
        .route("/login", post(page::login))
        .route("/logout", post(page::logout))
        .route("/page/host/{name}", get(pages::host))
        .route("/page/jobs", get(pages::history))
        .route("/page/job/{id}", get(pages::job))
        .route("/page/job/{id}/live", get(pages::job_live))
        .route("/page/dryrun/{name}", post(pages::dryrun))
        .route("/page/maintenance", post(pages::maintenance))
        .route(
            "/v1/local/services",
            get(redis::local_services).post(redis::local_operation),
        )
        .route("/v1/services", post(redis::cluster_operation))
        .route("/v1/agent/services", get(consul::services))
        .route("/v1/agent/service/{id}", get(consul::service))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(consul::health_by_name),
        )
        .route(
            "/v1/agent/health/service/id/{id}",
            get(consul::health_by_id),
        )
        .route("/v1/agent/service/register", put(consul::register))
        .route("/v1/agent/service/deregister/{id}", put(consul::deregister))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(consul::maintenance),
        )
        .fallback(|| async {
            error::ApiError::not_found("no such route; GET /openapi.json lists them")
        })
        // Innermost, in the handler's task: answers from the live
        // snapshot say how old they are.
        .layer(axum::middleware::from_fn(live::age_header))
        // Inside the key check: a client without a key gets 401 whatever
        // it sends (DESIGN: 401 on every route); the limits then bound
        // what a known key may send.
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(error::uri_limit::<MAX_URI>))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outside the key check: refused requests are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            exposition::track,
        ));
    outer(api.with_state(state))
}

/// The layers around every route: panics and wedged handlers answered in
/// the error shape, tracing without secrets.
fn outer(app: Router) -> Router {
    app.layer(CatchPanicLayer::custom(error::panic_response))
        // Past the longest `wait` (10m): only a wedged handler meets it.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(11 * 60),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::HeaderName::from_static("x-consul-token"),
        ]))
        // Outermost: whatever a layer above answers on its own (413, 408,
        // 405) leaves in the API's error shape.
        .layer(axum::middleware::from_fn(error::json_errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics is answered 500 in the error shape, without
    /// the panic's text, and the server goes on. Proven here, over a real
    /// port, with a route only this test build has: the release binary
    /// has no route that panics on request.
    #[tokio::test]
    async fn a_panic_is_a_500_in_the_error_shape_and_the_server_goes_on() {
        let app = outer(
            Router::new()
                .route(
                    "/panic",
                    get(|| async {
                        if true {
                            panic!("secret text");
                        }
                        "unreached"
                    }),
                )
                .route("/ok", get(|| async { "ok" })),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let r = reqwest::get(format!("http://{addr}/panic")).await.unwrap();
        assert_eq!(r.status().as_u16(), 500);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], 500, "{body}");
        assert!(body["error"].is_string() && body["details"].is_string());
        assert!(!body.to_string().contains("secret text"), "{body}");
        let r = reqwest::get(format!("http://{addr}/ok")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}
