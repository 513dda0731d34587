//! Jobs run in the background and looked at while and after they run (the
//! server's jobs): each is an ordinary `apply` with its report and journal
//! in one directory, so a restarted server lists them again, and a job that
//! was running when the server died is `interrupted` with the results its
//! journal holds.
//!
//! Finished jobs are held as summaries (id, start, outcome, hosts, report
//! file), at most [`Retention::keep`] of them: a listing pages over the
//! summaries and reads only its page's reports, so neither memory nor a
//! page's cost grows with the history. Past the retention, a finished
//! job's report and journal are deleted; a running job is never touched.
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
use crate::engine::events::{Event, EventSink, JobObserver, StopFlag};
use crate::engine::job::Job;
use crate::engine::journal::{save_report, Journal};
use crate::model::error::{Error, Refusal, Result};
use crate::model::report::{JobReport, JobResult, RunOutcome};

mod history;
mod progress;

use history::{delete, done_of, inside, now_seconds, Done, Index, Key};
pub use history::{JobSummary, Removed};
pub use progress::{JobProgress, StepProgress};
use progress::Progress;
pub use history::{Retention, DEFAULT_KEEP_JOBS};

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
    /// The job this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
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
    /// Steps, batches and when each result arrived, for the page's
    /// progress bar and timeline (a job read back from its report has
    /// none).
    progress: Mutex<Progress>,
    /// A job another cluster replica coordinates, seen from its stream:
    /// that replica's name.
    coordinator: Mutex<Option<String>>,
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
            progress: Mutex::new(Progress::new()),
            coordinator: Mutex::new(None),
        })
    }

    /// A job coordinated by another replica (`coordinator`), to be fed
    /// from the jobs' stream ([`Entry::mirror_result`],
    /// [`Entry::mirror_end`]).
    pub fn mirrored(view: JobView, mut hosts: Vec<String>, coordinator: String) -> Arc<Entry> {
        hosts.sort();
        hosts.dedup();
        Arc::new(Entry {
            state: Mutex::new(State { view, report: None }),
            changes: watch::channel(0).0,
            stop: Arc::new(StopFlag::default()),
            hosts,
            progress: Mutex::new(Progress::new()),
            coordinator: Mutex::new(Some(coordinator)),
        })
    }

    /// The replica coordinating a job seen from the stream (None: this
    /// process runs it, or ran it).
    pub fn coordinator(&self) -> Option<String> {
        self.coordinator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Another replica took the mirrored job over.
    pub fn mirror_coordinator(&self, by: String) {
        *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = Some(by);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The next result of a mirrored job.
    pub fn mirror_result(&self, r: &JobResult) {
        self.push(r);
    }

    /// A mirrored job that ended runs again (a resume, the same id).
    pub fn mirror_reopen(&self) {
        {
            let mut s = self.state();
            if s.view.outcome == JobStatus::Running {
                return;
            }
            s.view.outcome = JobStatus::Running;
            s.view.finished_at = None;
            s.report = None;
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// A mirrored job's end.
    pub fn mirror_end(&self, report: JobReport) {
        {
            let mut s = self.state();
            s.view.started_at = report.started_at.clone();
            s.view.retry_of = report.retry_of.clone();
        }
        self.finish(report);
    }

    /// Where the job is, as a summary.
    pub fn summary(&self) -> JobSummary {
        let s = self.state();
        JobSummary {
            job_id: s.view.job_id.clone(),
            started_at: s.view.started_at.clone(),
            outcome: s.view.outcome,
            hosts: crate::model::report::HostTally::of(&s.view.results),
        }
    }

    /// The hosts the job may touch, sorted: those a change still running
    /// past its wait has not reported yet are among them.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether every host of the job is in `within` (None: no bound).
    pub fn within(&self, within: Option<&BTreeSet<String>>) -> bool {
        inside(&self.hosts, within)
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

    /// Its steps as their events told them, and when each result arrived.
    pub fn progress(&self) -> JobProgress {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
    }

    fn note(&self, e: &Event) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(e);
    }

    fn push(&self, r: &JobResult) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrived();
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
    extra: Vec<Arc<dyn EventSink>>,
}

impl EventSink for Sink {
    fn event(&self, e: &Event) {
        match e {
            Event::HostResult(r) => self.entry.push(r),
            Event::StepStarted { .. } | Event::BatchDone { .. } => self.entry.note(e),
            Event::JobStarted { .. } => {
                if let Some(tx) = self.started.lock().ok().and_then(|mut s| s.take()) {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
        for x in &self.extra {
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
        inputs: None,
        retry_of: None,
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
    /// A finished job's journal, to retry or resume it from.
    fn journal(&self, id: &str) -> Option<PathBuf>;
    /// The job as this process runs it (cluster mode: None for a job
    /// another replica coordinates), which a cancel stops.
    fn here(&self, id: &str) -> Option<Arc<Entry>> {
        self.get(id)
    }
    /// Every job within `within` (None: every job), newest first, as
    /// summaries: no report is read, so counting and filtering on how
    /// their hosts ended costs no more than the index.
    fn summaries(&self, within: Option<&BTreeSet<String>>) -> Vec<JobSummary>;
    /// Delete a finished job (its report and journal); a running job
    /// stays.
    fn remove(&self, id: &str) -> Removed;
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
    fn journal(&self, id: &str) -> Option<PathBuf> {
        let idx = self.index();
        let started = idx.by_id.get(id)?;
        let done = idx.done.get(&(started.clone(), id.to_string()))?;
        let journal = Journal::beside(&done.report);
        journal.exists().then_some(journal)
    }
    fn summaries(&self, within: Option<&BTreeSet<String>>) -> Vec<JobSummary> {
        DirJobs::summaries(self, within)
    }
    fn remove(&self, id: &str) -> Removed {
        DirJobs::remove(self, id)
    }
}

/// Every job of one directory, newest first in listings: the running ones
/// in memory, the finished ones as an index of summaries over their
/// report files, at most [`Retention::keep`] of them.
pub struct DirJobs {
    dir: PathBuf,
    retention: Retention,
    index: Arc<Mutex<Index>>,
    tasks: Mutex<Vec<oneshot::Receiver<()>>>,
    observer: Option<Arc<dyn JobObserver>>,
}

impl std::fmt::Debug for DirJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirJobs")
            .field("dir", &self.dir)
            .field("retention", &self.retention)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// The hosts a job's steps may touch: every target and `_any` candidate.
pub fn job_hosts(job: &Job) -> Vec<String> {
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
    /// Only jobs of this playbook (its name).
    pub playbook: Option<String>,
    /// Only jobs that touch this host.
    pub host: Option<String>,
}

/// A job of a page, before its view is made outside the index's lock.
enum Pick {
    Running(Arc<Entry>),
    Finished(PathBuf),
}

impl DirJobs {
    /// The store of `dir`: its reports are indexed, and a journal without
    /// its report (a job running when the last server died) becomes an
    /// `interrupted` report holding the journal's results. Finished jobs
    /// past `retention` are deleted from `dir` at once.
    pub fn open(dir: &Path, retention: Retention) -> Result<DirJobs> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        // (finished_at, started_at, job_id, summary): sorted below so
        // that finishing order, and so expiry, holds across restarts.
        let mut found: Vec<(String, String, String, Done)> = Vec::new();
        let mut add = |r: JobReport, path: PathBuf| {
            let done = done_of(&r, hosts_of(&r), path);
            found.push((r.finished_at, r.started_at, r.job_id, done));
        };
        let listing = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
        let mut names: Vec<PathBuf> = listing.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".json") {
                match crate::engine::journal::load_report(&path) {
                    Ok(r) => add(r, path),
                    Err(e) => tracing::warn!("jobs dir: skipping {}: {e}", path.display()),
                }
            } else if let Some(report_name) = name.strip_suffix(".journal") {
                let report_path = dir.join(report_name);
                if report_path.exists() {
                    continue;
                }
                match recover(&path) {
                    Ok(r) => {
                        if let Err(e) = save_report(&r, &report_path) {
                            // Unsaved, it could be neither read back nor
                            // expired: listed again at the next start.
                            tracing::warn!("jobs dir: cannot write {}: {e}", report_path.display());
                            continue;
                        }
                        add(r, report_path);
                    }
                    Err(e) => tracing::warn!("jobs dir: skipping {}: {e}", path.display()),
                }
            }
        }
        found.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        let mut index = Index::default();
        for (_, started_at, job_id, done) in found {
            let path = done.report.clone();
            if !index.insert(&job_id, &started_at, done) {
                tracing::warn!(
                    "jobs dir: skipping {}: job {job_id} is already in another report",
                    path.display()
                );
            }
        }
        delete(index.expire(&retention, now_seconds()), "expired");
        Ok(DirJobs {
            dir: dir.to_path_buf(),
            retention,
            index: Arc::new(Mutex::new(index)),
            tasks: Mutex::new(Vec::new()),
            observer: None,
        })
    }

    /// Tell `observer` about every job this store starts from now on.
    pub fn with_observer(mut self, observer: Arc<dyn JobObserver>) -> DirJobs {
        self.observer = Some(observer);
        self
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        lock_index(&self.index)
    }

    /// A job by id: a finished one is read from its report.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let (report, hosts, timing) = {
            let idx = self.index();
            if let Some(e) = idx.running.iter().find(|e| e.state().view.job_id == id) {
                return Some(e.clone());
            }
            let started = idx.by_id.get(id)?;
            let done = idx.done.get(&(started.clone(), id.to_string()))?;
            (done.report.clone(), done.hosts.clone(), idx.timing(id))
        };
        match crate::engine::journal::load_report(&report) {
            Ok(r) => {
                let e = Entry::new(view_of(&r), hosts, Some(r));
                if let Some(p) = timing {
                    *e.progress.lock().unwrap_or_else(|p| p.into_inner()) =
                        Progress::ended((*p).clone());
                }
                Some(e)
            }
            Err(e) => {
                tracing::warn!("jobs dir: cannot read {}: {e}", report.display());
                None
            }
        }
    }

    /// Jobs newest first, filtered and paged. The page is picked from the
    /// index; only its jobs are copied (running) or read (finished).
    pub fn list(&self, q: &JobQuery) -> Vec<JobView> {
        let picks = {
            let mut idx = self.index();
            // Without new jobs nothing else would expire by age.
            if self.retention.max_age.is_some() {
                delete(idx.expire(&self.retention, now_seconds()), "expired");
            }
            let within = q.within.as_ref();
            let mut running: Vec<(Key, Arc<Entry>)> = idx
                .running
                .iter()
                .filter(|_| q.status.is_none_or(|s| s == JobStatus::Running))
                .filter(|e| e.within(within))
                .filter(|e| q.host.as_ref().is_none_or(|h| e.hosts.contains(h)))
                .filter(|e| {
                    q.playbook
                        .as_ref()
                        .is_none_or(|p| e.state().view.playbook == *p)
                })
                .map(|e| {
                    let s = e.state();
                    let key = (s.view.started_at.clone(), s.view.job_id.clone());
                    (key, e.clone())
                })
                .collect();
            running.sort_by(|a, b| b.0.cmp(&a.0));
            let mut running = running.into_iter().peekable();
            let mut done = idx
                .done
                .iter()
                .rev()
                .filter(|(_, d)| q.status.is_none_or(|s| d.outcome == s))
                .filter(|(_, d)| inside(&d.hosts, within))
                .filter(|(_, d)| q.host.as_ref().is_none_or(|h| d.hosts.contains(h)))
                .filter(|(_, d)| q.playbook.as_ref().is_none_or(|p| d.playbook == *p))
                .peekable();
            let merged = std::iter::from_fn(|| {
                let newer_running = match (running.peek(), done.peek()) {
                    (Some((rk, _)), Some((dk, _))) => rk > *dk,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => return None,
                };
                if newer_running {
                    running.next().map(|(_, e)| Pick::Running(e))
                } else {
                    done.next().map(|(_, d)| Pick::Finished(d.report.clone()))
                }
            });
            merged.skip(q.offset).take(q.limit).collect::<Vec<Pick>>()
        };
        picks
            .into_iter()
            .filter_map(|p| match p {
                Pick::Running(e) => Some(e.view()),
                Pick::Finished(path) => match crate::engine::journal::load_report(&path) {
                    Ok(r) => Some(view_of(&r)),
                    // Expired between the pick and now, or changed on disk.
                    Err(e) => {
                        tracing::warn!("jobs dir: cannot read {}: {e}", path.display());
                        None
                    }
                },
            })
            .collect()
    }

    /// Where a job's report goes (its journal beside it).
    pub fn report_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
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
        let opts_resumes = opts.resume.is_some();
        let report_path = self.report_path(&id);
        opts.report = Some(report_path.clone());
        let entry = Entry::new(
            JobView {
                job_id: id.clone(),
                playbook: job.playbook.name.clone(),
                // A resumed job keeps its start.
                started_at: match &opts.resume {
                    Some(c) => c.header.started_at.clone(),
                    None => crate::model::now_rfc3339(),
                },
                finished_at: None,
                outcome: JobStatus::Running,
                results: Vec::new(),
                retry_of: match (&opts.resume, opts.carry.as_ref().map(|c| &c.origin)) {
                    (Some(c), _) => c.header.retry_of.clone(),
                    (None, Some(crate::engine::carry::Origin::Retry(p))) => Some(p.clone()),
                    _ => None,
                },
            },
            job_hosts(&job),
            None,
        );
        let (tx, started) = oneshot::channel();
        let observer = self.observer.clone();
        let sink = Sink {
            entry: entry.clone(),
            started: Mutex::new(Some(tx)),
            extra: extra
                .into_iter()
                .chain(observer.as_ref().map(|o| o.sink(&id, &job)))
                .collect(),
        };
        let (err_tx, err_rx) = oneshot::channel();
        let e2 = entry.clone();
        let index = self.index.clone();
        let retention = self.retention;
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let run = async move {
            let stop = e2.stop.clone();
            let ran = std::panic::AssertUnwindSafe(apply(&job, &opts, &stop, &sink))
                .catch_unwind()
                .await;
            let ended = match ran {
                Ok(Ok(applied)) => Ok(applied.report),
                Ok(Err(e)) => Err(e),
                Err(panic) => {
                    let why = panic_text(panic.as_ref());
                    tracing::error!(job = %e2.view().job_id, "the job panicked: {why}");
                    if sink.has_started() {
                        Ok(failed_report(&e2, opts.report.as_deref()))
                    } else {
                        Err(Error::Internal(format!("the job panicked: {why}")))
                    }
                }
            };
            match ended {
                Ok(r) => {
                    // The report is on disk (apply wrote it): from now on
                    // the job is a summary over that file. Moved under the
                    // index's lock, so a listing sees it once, never twice.
                    // Files are deleted under the lock too, so that once
                    // a listing no longer shows a job its files are gone.
                    let mut idx = lock_index(&index);
                    let done = done_of(&r, e2.hosts.clone(), report_path);
                    let (job_id, started_at) = (r.job_id.clone(), r.started_at.clone());
                    // Told after the job is listed as over, outside the lock.
                    let observed = observer.as_ref().map(|o| (o.clone(), r.clone()));
                    e2.finish(r);
                    idx.keep_timing(&job_id, e2.progress());
                    idx.running.retain(|x| !Arc::ptr_eq(x, &e2));
                    if !idx.insert(&job_id, &started_at, done) {
                        tracing::warn!("job {job_id}: another report has its id; not listed");
                    }
                    delete(idx.expire(&retention, now_seconds()), "expired");
                    drop(idx);
                    if let Some((o, r)) = observed {
                        o.ended(&r);
                    }
                }
                Err(e) => {
                    // Before JobStarted nothing ran: the starter answers
                    // with the error and the job is forgotten.
                    lock_index(&index).running.retain(|x| !Arc::ptr_eq(x, &e2));
                    let _ = err_tx.send(e);
                    e2.changes.send_modify(|n| *n += 1);
                }
            }
            drop(held);
            let _ = done_tx.send(());
        };
        // Listed before it runs: a job that fails to start removes itself
        // from the list, which must not happen before it is on it.
        {
            let mut idx = self.index();
            if opts_resumes {
                // A resumed job is the same job running again: its
                // finished summary goes (its files stay: the journal is
                // being continued, the report is rewritten at the end).
                if idx.running.iter().any(|e| e.view().job_id == id) {
                    return Err(Error::Refused(Refusal::InputsChanged(format!(
                        "job {id} is running already"
                    ))));
                }
                idx.forget(&id);
            }
            idx.running.push(entry.clone());
        }
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
        for e in self.index().running.iter() {
            e.stop.stop(why);
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

fn lock_index(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

fn view_of(r: &JobReport) -> JobView {
    JobView {
        job_id: r.job_id.clone(),
        playbook: r.playbook.clone(),
        started_at: r.started_at.clone(),
        finished_at: Some(r.finished_at.clone()),
        outcome: r.outcome.into(),
        results: r.results.clone(),
        retry_of: r.retry_of.clone(),
    }
}

/// The report of a job whose process died: the journal's header and
/// results, `interrupted`, finished when the journal was last written.
fn recover(journal: &Path) -> Result<JobReport> {
    let text = crate::model::yaml::read_bounded(journal, "journal")?;
    let finished_at = std::fs::metadata(journal)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|_| crate::model::now_rfc3339());
    if let Ok(read) = crate::model::journal::parse(journal, &text) {
        let results = read.last_results().into_iter().cloned().collect();
        let h = read.header;
        return Ok(JobReport {
            job_id: h.job_id,
            playbook: h.playbook,
            started_at: h.started_at,
            finished_at,
            // It ended, but died before its report was written.
            outcome: read.end.unwrap_or(RunOutcome::Interrupted),
            results,
            inputs: Some(h.inputs),
            retry_of: h.retry_of,
        });
    }
    // A journal from before format 2: a header and result lines.
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
    Ok(JobReport {
        job_id: field("job_id"),
        playbook: field("playbook"),
        started_at: field("started_at"),
        finished_at,
        outcome: RunOutcome::Interrupted,
        results,
        inputs: None,
        retry_of: None,
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
        let jobs = DirJobs::open(dir.path(), Retention::default()).unwrap();
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

    fn done(finished: Option<i64>, name: &str) -> Done {
        Done {
            seq: 0,
            outcome: JobStatus::Completed,
            playbook: String::new(),
            hosts: Vec::new(),
            finished,
            report: PathBuf::from(name),
            tally: crate::model::report::HostTally::default(),
        }
    }

    #[test]
    fn the_first_to_finish_goes_first_whatever_their_start() {
        let mut idx = Index::default();
        // Inserted in finishing order; started in the opposite one.
        for (i, name) in ["c", "b", "a"].iter().enumerate() {
            assert!(idx.insert(name, &format!("2024-01-0{}", 3 - i), done(None, name)));
        }
        assert!(!idx.insert("a", "2024-01-09", done(None, "again")));
        let keep = |keep| Retention {
            keep,
            max_age: None,
        };
        assert!(idx.expire(&keep(3), 0).is_empty());
        assert_eq!(
            idx.expire(&keep(1), 0),
            [PathBuf::from("c"), PathBuf::from("b")]
        );
        assert_eq!(idx.done.len(), 1);
        assert_eq!(idx.by_id.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(idx.by_seq.len(), 1);
    }

    #[test]
    fn by_age_only_those_that_ended_before_the_cutoff_go() {
        let mut idx = Index::default();
        idx.insert("old", "1", done(Some(100), "old"));
        idx.insert("unknown", "2", done(None, "unknown"));
        idx.insert("new", "3", done(Some(1_000), "new"));
        let r = Retention {
            keep: 10,
            max_age: Some(Duration::from_secs(500)),
        };
        assert_eq!(idx.expire(&r, 1_000), [PathBuf::from("old")]);
        assert!(idx.expire(&r, 1_500).is_empty());
        assert_eq!(idx.expire(&r, 1_501), [PathBuf::from("new")]);
        assert_eq!(idx.by_id.keys().collect::<Vec<_>>(), ["unknown"]);
        assert!(idx.by_end.is_empty());
    }
}
