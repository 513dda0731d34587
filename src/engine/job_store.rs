//! Jobs run in the background and looked at while and after they run (the
//! server's jobs): each is an ordinary `apply` with its report and journal
//! in one directory, so a restarted server lists them again, and a job that
//! was running when the server died is `interrupted` with the results its
//! journal holds.
//!
//! [`JobStore`] is the seam the server holds; [`DirJobs`] is this
//! process's store over one directory. A store shared by several servers
//! (job summaries and results in a stream) implements the same trait; a
//! job is then still seen through an [`Entry`], fed from that stream.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::engine::apply::{apply, ApplyOptions};
use crate::engine::claims::Held;
use crate::engine::events::{Event, EventSink, StopFlag};
use crate::engine::job::Job;
use crate::engine::journal::save_report;
use crate::model::error::{Error, Result};
use crate::model::report::{JobReport, JobResult, RunOutcome};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Every step ran (hosts may have failed).
    Completed,
    /// `max_fail_percentage` stopped it.
    Aborted,
    /// A cancel, a signal or the server's death stopped it.
    Interrupted,
    /// drover failed mid-job (a panic, logged); the report holds the
    /// results recorded before.
    Failed,
}

impl From<RunOutcome> for JobStatus {
    fn from(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Completed => JobStatus::Completed,
            RunOutcome::Aborted => JobStatus::Aborted,
            RunOutcome::Interrupted => JobStatus::Interrupted,
            RunOutcome::Failed => JobStatus::Failed,
        }
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "aborted" => JobStatus::Aborted,
            "interrupted" => JobStatus::Interrupted,
            "failed" => JobStatus::Failed,
            other => {
                return Err(format!(
                    "`{other}` is not a job status; use running, completed, aborted, interrupted or failed"
                ))
            }
        })
    }
}

/// A job as the API shows it: the report's fields, with `outcome` also
/// `running` while it runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// UUID v4 of the job.
    pub job_id: String,
    /// The playbook's (or the ad-hoc operation's) name.
    pub playbook: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// running, completed, aborted, interrupted or failed.
    pub outcome: JobStatus,
    /// Every result so far, in execution order.
    pub results: Vec<JobResult>,
}

#[derive(Debug)]
struct State {
    view: JobView,
    /// The finished report, once there is one.
    report: Option<JobReport>,
}

/// One job of the store.
#[derive(Debug)]
pub struct Entry {
    state: Mutex<State>,
    /// Bumped on every result and at the end: what the event streams and
    /// waiters watch.
    changes: watch::Sender<u64>,
    stop: Arc<StopFlag>,
    /// Every host the job may touch (a report's: the hosts it has results
    /// for), so a key scoped to some hosts sees only jobs within them.
    hosts: Vec<String>,
}

impl Entry {
    fn new(view: JobView, mut hosts: Vec<String>, report: Option<JobReport>) -> Arc<Entry> {
        hosts.sort();
        hosts.dedup();
        Arc::new(Entry {
            state: Mutex::new(State { view, report }),
            changes: watch::channel(0).0,
            stop: Arc::new(StopFlag::default()),
            hosts,
        })
    }

    /// The hosts the job may touch, sorted.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether every host of the job is in `within` (None: no bound).
    pub fn within(&self, within: Option<&BTreeSet<String>>) -> bool {
        within.is_none_or(|w| self.hosts.iter().all(|h| w.contains(h)))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job as it is now.
    pub fn view(&self) -> JobView {
        self.state().view.clone()
    }

    /// The finished report, if it has finished.
    pub fn report(&self) -> Option<JobReport> {
        self.state().report.clone()
    }

    /// Results from `from` on, and whether the job is over (then these are
    /// all of them).
    pub fn results_since(&self, from: usize) -> (Vec<JobResult>, Option<JobStatus>) {
        let s = self.state();
        let rest = s.view.results.get(from..).unwrap_or_default().to_vec();
        let done = (s.view.outcome != JobStatus::Running).then_some(s.view.outcome);
        (rest, done)
    }

    /// A receiver that changes with every result and at the end.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wait until the job is over or `wait` has passed; true if over.
    pub async fn wait(&self, wait: Duration) -> bool {
        let mut rx = self.subscribe();
        let over = async {
            loop {
                if self.state().view.outcome != JobStatus::Running {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(wait, over).await.is_ok()
    }

    /// Ask the job to stop as SIGTERM does: nothing new starts, systemd
    /// jobs in flight finish. False if it is not running.
    pub fn cancel(&self) -> bool {
        if self.state().view.outcome != JobStatus::Running {
            return false;
        }
        self.stop.stop("cancel");
        true
    }

    fn push(&self, r: &JobResult) {
        self.state().view.results.push(r.clone());
        self.changes.send_modify(|n| *n += 1);
    }

    fn finish(&self, report: JobReport) {
        {
            let mut s = self.state();
            s.view.outcome = report.outcome.into();
            s.view.finished_at = Some(report.finished_at.clone());
            s.view.results = report.results.clone();
            s.report = Some(report);
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Forwards a job's events to its entry, and tells the starter once the
/// job has really started (or could not).
struct Sink {
    entry: Arc<Entry>,
    started: Mutex<Option<oneshot::Sender<()>>>,
    extra: Option<Arc<dyn EventSink>>,
}

impl EventSink for Sink {
    fn event(&self, e: &Event) {
        match e {
            Event::HostResult(r) => self.entry.push(r),
            Event::JobStarted { .. } => {
                if let Some(tx) = self.started.lock().ok().and_then(|mut s| s.take()) {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
        if let Some(x) = &self.extra {
            x.event(e);
        }
    }
}

impl Sink {
    /// Whether the job told its starter it started.
    fn has_started(&self) -> bool {
        self.started.lock().map_or(true, |s| s.is_none())
    }
}

/// What a panic said, for the log.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The report of a job that panicked: `failed`, with the results it
/// recorded before, written where its report goes.
fn failed_report(entry: &Entry, path: Option<&Path>) -> JobReport {
    let view = entry.view();
    let report = JobReport {
        job_id: view.job_id,
        playbook: view.playbook,
        started_at: view.started_at,
        finished_at: crate::model::now_rfc3339(),
        outcome: RunOutcome::Failed,
        results: view.results,
    };
    if let Some(path) = path {
        if let Err(e) = save_report(&report, path) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
    report
}

/// Where the server's jobs are run, kept and found: what serve calls.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// A job by id.
    fn get(&self, id: &str) -> Option<Arc<Entry>>;
    /// Jobs newest first, filtered and paged.
    fn list(&self, q: &JobQuery) -> Vec<JobView>;
    /// Start `job` with `opts`, holding `held` until it ends. Returns once
    /// the job has started, or with the error that kept it from starting
    /// (window, protection, lock): then nothing ran.
    async fn start(&self, job: Job, opts: ApplyOptions, held: Held) -> Result<Arc<Entry>>;
    /// Ask every running job to stop as SIGTERM does; returns at once.
    fn stop_all(&self, why: &str);
    /// Stop every running job and wait for them to write their reports.
    async fn shutdown(&self, why: &str);
}

#[async_trait::async_trait]
impl JobStore for DirJobs {
    fn get(&self, id: &str) -> Option<Arc<Entry>> {
        DirJobs::get(self, id)
    }
    fn list(&self, q: &JobQuery) -> Vec<JobView> {
        DirJobs::list(self, q)
    }
    async fn start(&self, job: Job, opts: ApplyOptions, held: Held) -> Result<Arc<Entry>> {
        DirJobs::start(self, job, opts, held, None).await
    }
    fn stop_all(&self, why: &str) {
        DirJobs::stop_all(self, why)
    }
    async fn shutdown(&self, why: &str) {
        DirJobs::shutdown(self, why).await
    }
}

/// Every job of one directory, newest first in listings.
#[derive(Debug)]
pub struct DirJobs {
    dir: PathBuf,
    jobs: Arc<Mutex<Vec<Arc<Entry>>>>,
    tasks: Mutex<Vec<oneshot::Receiver<()>>>,
}

/// The hosts a job's steps may touch: every target and `_any` candidate.
fn job_hosts(job: &Job) -> Vec<String> {
    let mut hosts = Vec::new();
    for ex in &job.expanded {
        let any = ex.targets.any.iter().flatten();
        for &h in ex.targets.fixed.iter().chain(any) {
            if let Some(host) = job.inventory.hosts.get(h) {
                hosts.push(host.name.clone());
            }
        }
    }
    hosts
}

/// The hosts a finished job has results for.
fn hosts_of(report: &JobReport) -> Vec<String> {
    report.results.iter().map(|r| r.hostname.clone()).collect()
}

/// A page of jobs.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// At most this many.
    pub limit: usize,
    /// Skipping this many of the newest.
    pub offset: usize,
    /// Only those in this state.
    pub status: Option<JobStatus>,
    /// Only jobs all of whose hosts are in this set (a key's targets);
    /// None: every job.
    pub within: Option<BTreeSet<String>>,
}

impl DirJobs {
    /// The store of `dir`: its reports are read back, and a journal without
    /// its report (a job running when the last server died) becomes an
    /// `interrupted` report holding the journal's results.
    pub fn open(dir: &Path) -> Result<DirJobs> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let mut jobs = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
        let mut names: Vec<PathBuf> = listing.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for path in &names {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".json") {
                match read_report(path) {
                    Ok(r) => jobs.push(Entry::new(view_of(&r), hosts_of(&r), Some(r))),
                    Err(e) => tracing::warn!("jobs dir: skipping {}: {e}", path.display()),
                }
            } else if let Some(report_name) = name.strip_suffix(".journal") {
                let report_path = dir.join(report_name);
                if report_path.exists() {
                    continue;
                }
                match recover(path) {
                    Ok(r) => {
                        if let Err(e) = save_report(&r, &report_path) {
                            tracing::warn!("jobs dir: cannot write {}: {e}", report_path.display());
                        }
                        jobs.push(Entry::new(view_of(&r), hosts_of(&r), Some(r)));
                    }
                    Err(e) => tracing::warn!("jobs dir: skipping {}: {e}", path.display()),
                }
            }
        }
        Ok(DirJobs {
            dir: dir.to_path_buf(),
            jobs: Arc::new(Mutex::new(jobs)),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        lock_jobs(&self.jobs)
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.jobs()
            .iter()
            .find(|e| e.state().view.job_id == id)
            .cloned()
    }

    /// Jobs newest first, filtered and paged.
    pub fn list(&self, q: &JobQuery) -> Vec<JobView> {
        let mut all: Vec<JobView> = self
            .jobs()
            .iter()
            .filter(|e| e.within(q.within.as_ref()))
            .map(|e| e.view())
            .collect();
        all.retain(|v| q.status.is_none_or(|s| v.outcome == s));
        all.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        all.into_iter().skip(q.offset).take(q.limit).collect()
    }

    /// Start `job` in the background with `opts` (its report and journal
    /// go to the store's directory), holding `held` until it ends. Returns
    /// once the job has started, or with the error that kept it from
    /// starting (window, protection, lock): then nothing ran.
    pub async fn start(
        &self,
        job: Job,
        mut opts: ApplyOptions,
        held: Held,
        extra: Option<Arc<dyn EventSink>>,
    ) -> Result<Arc<Entry>> {
        let id = opts
            .job_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        opts.job_id = Some(id.clone());
        opts.report = Some(self.dir.join(format!("{id}.json")));
        let entry = Entry::new(
            JobView {
                job_id: id.clone(),
                playbook: job.playbook.name.clone(),
                started_at: crate::model::now_rfc3339(),
                finished_at: None,
                outcome: JobStatus::Running,
                results: Vec::new(),
            },
            job_hosts(&job),
            None,
        );
        let (tx, started) = oneshot::channel();
        let sink = Sink {
            entry: entry.clone(),
            started: Mutex::new(Some(tx)),
            extra,
        };
        let (err_tx, err_rx) = oneshot::channel();
        let e2 = entry.clone();
        let jobs = self.jobs.clone();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let run = async move {
            let stop = e2.stop.clone();
            let ran = std::panic::AssertUnwindSafe(apply(&job, &opts, &stop, &sink))
                .catch_unwind()
                .await;
            match ran {
                Ok(Ok(applied)) => e2.finish(applied.report),
                Err(panic) => {
                    let why = panic_text(panic.as_ref());
                    tracing::error!(job = %e2.view().job_id, "the job panicked: {why}");
                    if sink.has_started() {
                        e2.finish(failed_report(&e2, opts.report.as_deref()));
                    } else {
                        lock_jobs(&jobs).retain(|x| !Arc::ptr_eq(x, &e2));
                        let _ = err_tx.send(Error::Internal(format!("the job panicked: {why}")));
                        e2.changes.send_modify(|n| *n += 1);
                    }
                }
                Ok(Err(e)) => {
                    // Before JobStarted nothing ran: the starter answers
                    // with the error and the job is forgotten.
                    lock_jobs(&jobs).retain(|x| !Arc::ptr_eq(x, &e2));
                    let _ = err_tx.send(e);
                    e2.changes.send_modify(|n| *n += 1);
                }
            }
            drop(held);
            let _ = done_tx.send(());
        };
        // Listed before it runs: a job that fails to start removes itself
        // from the list, which must not happen before it is on it.
        self.jobs().push(entry.clone());
        {
            let mut t = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.retain(|h| !h.is_terminated());
            t.push(done_rx);
        }
        tokio::spawn(run);
        if started.await.is_ok() {
            return Ok(entry);
        }
        // The sink went away without a start: the task ended, and sent its
        // error before letting the sink go (none if it panicked).
        if let Ok(e) = err_rx.await {
            return Err(e);
        }
        Err(Error::Internal("the job ended before it started".into()))
    }

    /// Ask every running job to stop as SIGTERM does; returns at once.
    pub fn stop_all(&self, why: &str) {
        for e in self.jobs().iter() {
            if e.state().view.outcome == JobStatus::Running {
                e.stop.stop(why);
            }
        }
    }

    /// Stop every running job as SIGTERM does and wait for them to write
    /// their reports.
    pub async fn shutdown(&self, why: &str) {
        self.stop_all(why);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        futures_util::future::join_all(tasks).await;
    }
}

fn lock_jobs(jobs: &Mutex<Vec<Arc<Entry>>>) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
    jobs.lock().unwrap_or_else(|p| p.into_inner())
}

fn view_of(r: &JobReport) -> JobView {
    JobView {
        job_id: r.job_id.clone(),
        playbook: r.playbook.clone(),
        started_at: r.started_at.clone(),
        finished_at: Some(r.finished_at.clone()),
        outcome: r.outcome.into(),
        results: r.results.clone(),
    }
}

fn read_report(path: &Path) -> Result<JobReport> {
    let text = crate::model::yaml::read_bounded(path, "job report")?;
    serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            "job report",
            "",
            e.to_string(),
            Some(crate::model::error::Position::at(
                path,
                &text,
                e.line() as u64,
                e.column() as u64,
            )),
        )
    })
}

/// The report of a job whose process died: the journal's header and
/// results, `interrupted`, finished when the journal was last written.
fn recover(journal: &Path) -> Result<JobReport> {
    let text = crate::model::yaml::read_bounded(journal, "journal")?;
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| Error::invalid("journal", "", "no header line", None))?;
    let field = |k: &str| {
        header
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    // A line cut short by the kill is the only one that may not parse.
    let results: Vec<JobResult> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    let finished_at = std::fs::metadata(journal)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|_| crate::model::now_rfc3339());
    Ok(JobReport {
        job_id: field("job_id"),
        playbook: field("playbook"),
        started_at: field("started_at"),
        finished_at,
        outcome: RunOutcome::Interrupted,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::claims::{Claim, LocalClaims};

    /// An event sink that panics once the job has started: a bug in the
    /// engine, as far as the job's task can tell.
    struct Boom;
    impl EventSink for Boom {
        fn event(&self, e: &Event) {
            if matches!(e, Event::JobStarted { .. }) {
                panic!("boom");
            }
        }
    }

    #[tokio::test]
    async fn a_job_that_panics_ends_failed_with_its_report_and_frees_its_units() {
        let dir = tempfile::tempdir().unwrap();
        let inv = crate::model::inventory::Inventory::from_str(
            "hosts:\n  h1: { address: 127.0.0.1, transport: local }\n",
            Path::new("inv.yml"),
        )
        .unwrap();
        let pb = crate::model::playbook::Playbook::from_str(
            "name: p\nsteps:\n  - { id: s, target: h1, service: { name: u, state: restarted } }\n",
            Path::new("pb.yml"),
        )
        .unwrap();
        let job = Job::new(pb, inv, None).unwrap();
        let claims = LocalClaims::default();
        let unit = || vec![Claim::Unit("h1".into(), "u.service".into())];
        let held = claims.take(unit(), "j", Duration::ZERO).await.unwrap();
        let jobs = DirJobs::open(dir.path()).unwrap();
        let entry = jobs
            .start(job, ApplyOptions::default(), held, Some(Arc::new(Boom)))
            .await
            .unwrap();
        assert!(entry.wait(Duration::from_secs(60)).await, "still running");
        let view = entry.view();
        assert_eq!(view.outcome, JobStatus::Failed);
        let report: JobReport = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{}.json", view.job_id))).unwrap(),
        )
        .unwrap();
        assert_eq!(report.outcome, RunOutcome::Failed);
        jobs.shutdown("test").await;
        // The job's units are free again.
        assert!(claims.take(unit(), "k", Duration::ZERO).await.is_ok());
    }
}
