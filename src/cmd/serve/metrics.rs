//! The server's metrics, through the `prometheus-client` crate (served
//! by `exposition`). They are counted where things happen: a job's events
//! (its start, steps, each host's result) reach [`JobMetrics`] as they do
//! the job's entry; its end comes with the report; requests pass a layer
//! around every route; what the server holds (claims, pooled connections,
//! the loaded inventory) is read when scraped.
//!
//! Label values come from fixed sets or from the operator's files, never
//! from a request or a job: the runbook's file name (ad-hoc operations by
//! their kind), a runbook's step ids, statuses and kinds, the route's
//! template. Hostnames only with `--metrics-host-labels`, and then only
//! the inventory's. So the number of series does not grow with the number
//! of jobs (the book lists every metric: operations/observability.md).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::events::{Event, EventSink};
use crate::engine::job::Job;
use crate::model::outcome::{Kind, Status};
use crate::model::report::RunOutcome;
use crate::render::metrics::{encode, is_adhoc, playbook_label, word};

/// A series' labels: names are fixed, values bounded (see the module doc).
type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// Jobs and steps take seconds to hours.
fn job_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    ])
}

/// Requests take milliseconds; a `wait` holds one up to 10 minutes.
fn http_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
    ])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    host_labels: bool,
    jobs_started: Family<Labels, Counter>,
    jobs_finished: Family<Labels, Counter>,
    job_duration: Hist,
    step_duration: Hist,
    host_results: Family<Labels, Counter>,
    http_requests: Family<Labels, Counter>,
    http_duration: Hist,
    notifications: Family<Labels, Counter>,
    jobs_running: Gauge,
    hosts_unreachable: Gauge,
    claims_held: Gauge,
    requests_waiting: Gauge,
    pool_open: Gauge,
    fleet_hosts: Gauge,
    snapshot_age: Gauge<f64, AtomicU64>,
    live_hosts: Family<Labels, Gauge>,
    live_age: Gauge<f64, AtomicU64>,
    live_signals: Counter,
    live_answers: Family<Labels, Counter>,
    /// The snapshot's counts at the last scrape: counters grow by the
    /// difference.
    live_seen: Mutex<crate::engine::fleet::FleetStats>,
    /// Hosts whose latest result said they could not be reached.
    unreachable: Mutex<HashSet<String>>,
    /// When the inventory, keys and runbooks now in use were loaded.
    loaded_at: Mutex<Instant>,
    /// Jobs that have a sink, by id: their end comes with the report.
    jobs: Mutex<HashMap<String, Weak<JobMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("host_labels", &self.host_labels)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics, registered; hostnames as labels only if `host_labels`.
    pub fn new(host_labels: bool) -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            host_labels,
            jobs_started: Family::default(),
            jobs_finished: Family::default(),
            job_duration: Family::new_with_constructor(job_histogram),
            step_duration: Family::new_with_constructor(job_histogram),
            host_results: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            notifications: Family::default(),
            jobs_running: Gauge::default(),
            hosts_unreachable: Gauge::default(),
            claims_held: Gauge::default(),
            requests_waiting: Gauge::default(),
            pool_open: Gauge::default(),
            fleet_hosts: Gauge::default(),
            snapshot_age: Gauge::default(),
            live_hosts: Family::default(),
            live_age: Gauge::default(),
            live_signals: Counter::default(),
            live_answers: Family::default(),
            live_seen: Mutex::default(),
            unreachable: Mutex::new(HashSet::new()),
            loaded_at: Mutex::new(Instant::now()),
            jobs: Mutex::new(HashMap::new()),
        };
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        r.register("drover_build_info", "drover's version (always 1)", build);
        r.register(
            "drover_jobs_started",
            "Jobs started, by playbook",
            m.jobs_started.clone(),
        );
        r.register(
            "drover_jobs_finished",
            "Jobs ended, by playbook and outcome",
            m.jobs_finished.clone(),
        );
        r.register(
            "drover_job_duration_seconds",
            "How long jobs ran, by playbook and outcome",
            m.job_duration.clone(),
        );
        r.register(
            "drover_step_duration_seconds",
            "How long a step took over all its hosts, by playbook and step",
            m.step_duration.clone(),
        );
        r.register(
            "drover_host_results",
            "Results (host x step), by playbook, status and kind (and host with --metrics-host-labels)",
            m.host_results.clone(),
        );
        r.register(
            "drover_hosts_unreachable",
            "Hosts whose latest result said they could not be reached",
            m.hosts_unreachable.clone(),
        );
        r.register(
            "drover_jobs_running",
            "Jobs running now",
            m.jobs_running.clone(),
        );
        r.register(
            "drover_claims_held",
            "Units and runbooks held by running jobs",
            m.claims_held.clone(),
        );
        r.register(
            "drover_requests_waiting",
            "Requests waiting for a unit or runbook another job holds",
            m.requests_waiting.clone(),
        );
        r.register(
            "drover_pool_connections_open",
            "Host connections kept open between jobs",
            m.pool_open.clone(),
        );
        r.register(
            "drover_fleet_hosts",
            "Hosts in the inventory in use",
            m.fleet_hosts.clone(),
        );
        r.register(
            "drover_fleet_snapshot_age_seconds",
            "Seconds since the inventory, keys and runbooks in use were loaded (start, SIGHUP, POST /reload)",
            m.snapshot_age.clone(),
        );
        r.register(
            "drover_live_hosts",
            "Hosts the live snapshot watches, by state (fresh: reads answer from it; stale: they read the host)",
            m.live_hosts.clone(),
        );
        r.register(
            "drover_live_age_seconds",
            "Seconds since the least recently confirmed host of the live snapshot was known current (0: none is)",
            m.live_age.clone(),
        );
        r.register(
            "drover_live_signals",
            "systemd signals applied to the live snapshot",
            m.live_signals.clone(),
        );
        r.register(
            "drover_live_reads",
            "Host reads asked of the server, by source (snapshot: answered from it; hosts: read the hosts)",
            m.live_answers.clone(),
        );
        r.register(
            "drover_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "drover_http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers), by route template and method",
            m.http_duration.clone(),
        );
        r.register(
            "drover_notifications",
            "--notify deliveries, by result (delivered, failed)",
            m.notifications.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The text of a scrape, with what the server holds now.
    pub fn exposition(&self, now: Held) -> String {
        let live = now.live;
        self.fleet_hosts.set(gauge_value(now.hosts));
        self.claims_held.set(gauge_value(now.claims));
        self.pool_open.set(gauge_value(now.connections));
        self.snapshot_age
            .set(lock(&self.loaded_at).elapsed().as_secs_f64());
        self.hosts_unreachable
            .set(gauge_value(lock(&self.unreachable).len()));
        if let Some(now) = live {
            self.live(now);
        }
        encode(&self.registry)
    }

    fn live(&self, now: crate::engine::fleet::FleetStats) {
        let label = |k: &'static str, v: &str| vec![(k, v.to_string())];
        self.live_hosts
            .get_or_create(&label("state", "fresh"))
            .set(gauge_value(now.fresh));
        self.live_hosts
            .get_or_create(&label("state", "stale"))
            .set(gauge_value(now.stale));
        self.live_age
            .set(now.oldest.map_or(0.0, |d| d.as_secs_f64()));
        let mut seen = lock(&self.live_seen);
        self.live_signals
            .inc_by(now.signals.saturating_sub(seen.signals));
        self.live_answers
            .get_or_create(&label("source", "snapshot"))
            .inc_by(now.answered.saturating_sub(seen.answered));
        self.live_answers
            .get_or_create(&label("source", "hosts"))
            .inc_by(now.missed.saturating_sub(seen.missed));
        *seen = now;
    }

    /// The inventory, keys and runbooks were (re)loaded.
    pub fn reloaded(&self) {
        *lock(&self.loaded_at) = Instant::now();
    }

    /// Counts a request waiting for a claim while the guard lives.
    pub fn waiting(&self) -> Waiting<'_> {
        self.requests_waiting.inc();
        Waiting(self)
    }

    /// Notifications are sent: both results are served from 0 on, so
    /// that an alert on failures sees the first one as an increase.
    pub fn notifying(&self) {
        for result in ["delivered", "failed"] {
            drop(
                self.notifications
                    .get_or_create(&vec![("result", result.to_string())]),
            );
        }
    }

    /// A notification was delivered, or given up on.
    pub fn notified(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.notifications
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The sink of one job's events.
    pub fn job(self: &Arc<Self>, job_id: &str, job: &Job) -> Arc<JobMetrics> {
        let path = &job.playbook.path;
        let adhoc = is_adhoc(path);
        let steps = job
            .playbook
            .steps
            .iter()
            .map(|s| {
                // An ad-hoc step's id holds the unit a request named.
                let label = if adhoc {
                    s.operation.kind().to_string()
                } else {
                    s.id.clone()
                };
                (s.id.clone(), label)
            })
            .collect();
        let jm = Arc::new(JobMetrics {
            m: self.clone(),
            playbook: playbook_label(path),
            steps,
            started: OnceLock::new(),
            step_started: Mutex::new(HashMap::new()),
        });
        let mut jobs = lock(&self.jobs);
        // Jobs refused before they started leave a dead entry.
        jobs.retain(|_, w| w.strong_count() > 0);
        jobs.insert(job_id.to_string(), Arc::downgrade(&jm));
        jm
    }

    /// A job ended: counted by its outcome, its duration observed.
    pub fn job_ended(&self, job_id: &str, outcome: RunOutcome) {
        let Some(jm) = lock(&self.jobs).remove(job_id).and_then(|w| w.upgrade()) else {
            return;
        };
        let Some(t0) = jm.started.get() else { return };
        let labels = vec![
            ("playbook", jm.playbook.clone()),
            ("outcome", outcome.to_string()),
        ];
        self.jobs_finished.get_or_create(&labels).inc();
        self.job_duration
            .get_or_create(&labels)
            .observe(t0.elapsed().as_secs_f64());
        self.jobs_running.dec();
    }

    fn host_result(&self, playbook: &str, r: &crate::model::report::JobResult) {
        let mut labels = vec![
            ("playbook", playbook.to_string()),
            ("status", word(r.status)),
            ("kind", r.kind.map(word).unwrap_or_else(|| "none".into())),
        ];
        if self.host_labels {
            labels.push(("host", r.hostname.clone()));
        }
        self.host_results.get_or_create(&labels).inc();
        let mut unreachable = lock(&self.unreachable);
        match (r.status, r.kind) {
            (_, Some(k)) if k.is_unreachable() => {
                unreachable.insert(r.hostname.clone());
            }
            // A skip says nothing about the host's connection.
            (Status::Skipped, _) | (_, Some(Kind::Interrupted | Kind::Aborted)) => {}
            _ => {
                unreachable.remove(&r.hostname);
            }
        }
    }

    /// A request was answered.
    pub fn http(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.clone()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![("route", route), ("method", method.to_string())])
            .observe(seconds);
    }
}

/// What the server holds at a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Hosts in the inventory in use.
    pub hosts: usize,
    /// Claims held by running jobs.
    pub claims: usize,
    /// Pooled host connections.
    pub connections: usize,
    /// The live snapshot's counts (None: `--no-live`).
    pub live: Option<crate::engine::fleet::FleetStats>,
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A request waiting for a claim; counted until dropped.
pub struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.requests_waiting.dec();
    }
}

/// One job's metrics as its events come.
pub struct JobMetrics {
    m: Arc<Metrics>,
    playbook: String,
    /// Step id to its `step` label.
    steps: HashMap<String, String>,
    started: OnceLock<Instant>,
    step_started: Mutex<HashMap<String, Instant>>,
}

impl EventSink for JobMetrics {
    fn event(&self, e: &Event) {
        match e {
            Event::JobStarted { .. } if self.started.set(Instant::now()).is_ok() => {
                let labels = vec![("playbook", self.playbook.clone())];
                self.m.jobs_started.get_or_create(&labels).inc();
                self.m.jobs_running.inc();
            }
            Event::StepStarted { step, .. } => {
                lock(&self.step_started).insert(step.clone(), Instant::now());
            }
            Event::StepFinished { step } => {
                let Some(t0) = lock(&self.step_started).remove(step) else {
                    return;
                };
                let label = self
                    .steps
                    .get(step)
                    .cloned()
                    .unwrap_or_else(|| "other".into());
                self.m
                    .step_duration
                    .get_or_create(&vec![("playbook", self.playbook.clone()), ("step", label)])
                    .observe(t0.elapsed().as_secs_f64());
            }
            Event::HostResult(r) => self.m.host_result(&self.playbook, r),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::JobResult;

    fn result(host: &str, i: usize) -> JobResult {
        let (status, kind) = match i % 4 {
            0 => (Status::Ok, None),
            1 => (Status::Failed, Some(Kind::Unreachable)),
            2 => (Status::Failed, Some(Kind::JobFailed)),
            _ => (Status::Skipped, Some(Kind::FailedEarlier)),
        };
        JobResult {
            hostname: host.into(),
            status,
            name: "demo.service".into(),
            changed: i.is_multiple_of(2),
            error: None,
            kind,
            step: "roll".into(),
            action: "restart".into(),
            duration_ms: 5,
            msg: None,
            carried_from: None,
            logs: Vec::new(),
        }
    }

    /// Series (sample lines) in a scrape's text.
    fn series(text: &str) -> usize {
        text.lines().filter(|l| !l.starts_with('#')).count()
    }

    fn job(runbook: &str) -> Job {
        let inv = crate::model::inventory::Inventory::from_str(
            "hosts:\n  h1: { transport: local }\n",
            std::path::Path::new("inv.yml"),
        )
        .unwrap();
        let pb = crate::model::playbook::Playbook::from_str(
            "name: p\nsteps:\n  - { id: roll, target: h1, service: { name: u, state: restarted } }\n",
            std::path::Path::new(runbook),
        )
        .unwrap();
        Job::new(pb, inv, None).unwrap()
    }

    /// 1,000 jobs of 3 runbooks over 30 hosts: past the first jobs, which
    /// meet every label value there is, the number of series stays put;
    /// with host labels it is bounded by the hosts, never the jobs.
    fn run_jobs(m: &Arc<Metrics>, jobs: std::ops::Range<usize>) {
        let runbooks = [job("rb/a.yml"), job("rb/b.yml"), job("<drover service>")];
        for n in jobs {
            let id = format!("jid-{n}");
            let sink = m.job(&id, &runbooks[n % 3]);
            sink.event(&Event::JobStarted {
                job_id: id.clone(),
                name: format!("free text {n}"),
            });
            sink.event(&Event::StepStarted {
                step: "roll".into(),
                hosts: 30,
            });
            for h in 0..30 {
                sink.event(&Event::HostResult(result(&format!("host-{h}"), n + h)));
            }
            sink.event(&Event::StepFinished {
                step: "roll".into(),
            });
            let outcome = [RunOutcome::Completed, RunOutcome::Aborted][n % 2];
            m.job_ended(&id, outcome);
            m.http("/job/{id}".into(), "GET", [200, 404][n % 2], 0.01);
        }
    }

    fn scrape(m: &Metrics) -> String {
        encode(&m.registry)
    }

    #[test]
    fn a_thousand_jobs_over_thirty_hosts_keep_the_series_bounded() {
        let m = Arc::new(Metrics::new(false));
        run_jobs(&m, 0..100);
        let early = series(&scrape(&m));
        run_jobs(&m, 100..1000);
        let text = scrape(&m);
        assert_eq!(series(&text), early, "series grew with the jobs");
        assert!(series(&text) < 200, "{text}");
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for free in ["jid-", "free text", "\"host-"] {
            assert!(
                !samples.iter().any(|l| l.contains(free)),
                "`{free}` in a label:\n{text}"
            );
        }
        assert!(
            text.contains(r#"drover_jobs_started_total{playbook="a"} 334"#),
            "{text}"
        );
        assert!(
            text.contains(r#"step="service""#),
            "ad-hoc steps by kind:\n{text}"
        );
        assert!(lock(&m.jobs).is_empty(), "no job left behind");
        assert!(text.contains("drover_jobs_running 0"), "{text}");

        let hosts = Arc::new(Metrics::new(true));
        run_jobs(&hosts, 0..1000);
        let text = scrape(&hosts);
        let n = series(&text);
        // 3 playbooks x 30 hosts x 4 result kinds at most, plus the rest.
        assert!(n <= 3 * 30 * 4 + early, "{n} series");
        assert!(text.contains(r#"host="host-29""#), "{text}");
        assert!(!text.contains("jid-"), "{text}");
    }
}
