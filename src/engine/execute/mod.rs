//! The executor: runs a job on real hosts.
//!
//! The walk over steps, batches and hosts is the plan's too
//! ([`crate::engine::walk`]): ready steps start together, a step's hosts
//! run in rolling batches (`serial`), and a batch's gates (job result,
//! `wait`) decide before the next batch starts. This is what happens on
//! one host, [`Do`]: its connection (made up front under `linear`, on
//! first use under `free`, closed as soon as the host has no step left),
//! its maintenance flags, at most `forks` hosts working at once across all
//! steps, and the module's work, deciding with the same module functions
//! as the plan from state read just before acting and reporting `changed`
//! from state read just after. Results stream to the journal and to the
//! caller's [`EventSink`] as they happen.

mod dispatch;
mod gate;
mod host;
mod service;
mod step;

pub use dispatch::{answer_task, task_job, HostTasks, MaintCache, Unanswered};

pub use host::really_changed;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::engine::carry::{Carry, Origin};
use crate::engine::claims::{ClaimStore, LocalClaims};
use crate::engine::clock::Clock;
use crate::engine::events::{Event, EventSink, StopFlag};
use crate::engine::execute::host::{host_in_service, host_maintenance, next_reading};
use crate::engine::execute::step::{HostStep, Reading};
use crate::engine::job::Job;
use crate::engine::journal::Journal;
use crate::engine::walk::{walk, Finished, HostAction, Presence, WalkClaims, WalkOptions, Work};
use crate::model::logs::{LogEntry, LogQuery};
use crate::model::maintenance::MaintenanceState;
use crate::model::now_rfc3339;
use crate::model::outcome::{Failure, Outcome, SkipReason};
use crate::model::playbook::{Operation, Window};
use crate::model::report::{JobReport, JobResult, RunOutcome};
use crate::model::unit::UnitName;
use crate::remote::carrier::Session;
use crate::remote::fanout::{HostError, Reach};
use crate::remote::logs::Bounds;
use crate::remote::pool::Pool;

/// The inputs of one run.
pub struct RunSpec<'a> {
    /// The validated job.
    pub job: &'a Job,
    /// Hosts in flight at once.
    pub forks: usize,
    /// Graceful-stop flag (signals, cancel).
    pub stop: &'a StopFlag,
    /// The journal, if any.
    pub journal: Option<&'a Journal>,
    /// Where events go.
    pub events: &'a dyn EventSink,
    /// UUID of this run.
    pub job_id: String,
    /// Upper bound on one host's work in one step (read, act, gate).
    pub step_timeout: Duration,
    /// Stop/restart/mask protected units (`--allow-protected`).
    pub allow_protected: bool,
    /// Connections kept between runs (the server); None: this run opens
    /// and closes its own.
    pub pool: Option<Pool>,
    /// The window checked before each batch (None: no window, or
    /// `--ignore-window`).
    pub window: Option<&'a Window>,
    /// The time the window is checked against.
    pub clock: &'a Clock,
    /// What an earlier run of this job already did (retry, resume).
    pub carry: Option<&'a Carry>,
    /// Journal lines a failed service step's result carries (0: none).
    pub failure_logs: u32,
    /// Where `group_by` claims room (the server's, shared by its jobs);
    /// None: this run's own.
    pub claims: Option<Arc<dyn ClaimStore>>,
    /// How long a batch waits for room in its groups.
    pub claim_wait: Duration,
    /// Where each host's work runs: None here, over this run's own
    /// connections; else asked of the host's owner (a cluster's worker).
    pub tasks: Option<Arc<dyn HostTasks>>,
}

impl RunSpec<'_> {
    /// How this run reaches a host: its forks, the step timeout as the
    /// connect bound, its pool.
    fn reach(&self) -> Reach {
        Reach::new(self.forks.max(1), self.step_timeout).with_pool(self.pool.clone())
    }
}

/// A host's connection for one run: `Err` if it could not be made; the
/// session is taken out when released.
type Slot = tokio::sync::OnceCell<std::result::Result<Mutex<Option<Arc<Session>>>, String>>;

fn open_slot(s: Arc<Session>) -> Mutex<Option<Arc<Session>>> {
    Mutex::new(Some(s))
}

/// Apply's [`HostAction`]: each host's step done on the host, with what
/// the host workers share.
pub(crate) struct Do<'a> {
    spec: RunSpec<'a>,
    job: &'a Job,
    /// One connection per host, made up front (linear) or on first use
    /// (free), closed as soon as the host has no step left.
    slots: Vec<Slot>,
    /// Connections being closed in the background; awaited before the
    /// report.
    closing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    forks: Semaphore,
    ledger: Ledger,
    /// Each host's maintenance flags, read once per run and kept up to date
    /// by the run's own `maintenance:` steps.
    maint: Mutex<Vec<Option<MaintenanceState>>>,
    /// Serialises `maintenance:` writes per host.
    maint_write: Vec<tokio::sync::Mutex<()>>,
}

/// Bound on reading whether a group's host is in service.
const IN_SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// Walk the job over its hosts doing each step there, close the sessions
/// and return the report.
pub async fn execute(spec: RunSpec<'_>) -> JobReport {
    let job = spec.job;
    let started_at = now_rfc3339();
    let job_id = spec.job_id.clone();
    let stop = spec.stop;
    let (end, results) = match spec.tasks.clone() {
        None => {
            let run = Do::new(spec);
            let end = walk_with(&run, &run.spec).await;
            (end, run.finish().await)
        }
        Some(tasks) => {
            let run = dispatch::Dispatch::new(spec, tasks);
            let end = walk_with(&run, &run.spec).await;
            (end, run.finish())
        }
    };
    let outcome = if stop.is_stopped() || end.window_closed {
        RunOutcome::Interrupted
    } else if end.aborted_at.is_some() {
        RunOutcome::Aborted
    } else {
        RunOutcome::Completed
    };
    JobReport {
        job_id,
        playbook: job.playbook.name.clone(),
        started_at,
        finished_at: now_rfc3339(),
        outcome,
        results,
        inputs: None,
        retry_of: None,
    }
}

/// The walk of `run` under `spec`'s options.
async fn walk_with<A>(run: &A, spec: &RunSpec<'_>) -> crate::engine::walk::WalkEnd
where
    A: HostAction<Error = std::convert::Infallible>,
{
    let claims: Arc<dyn ClaimStore> = match &spec.claims {
        Some(c) => c.clone(),
        None => Arc::new(LocalClaims::default()),
    };
    let end = walk(
        spec.job,
        run,
        WalkOptions {
            allow_protected: spec.allow_protected,
            stop: Some(spec.stop),
            window: spec.window.map(|w| (w, spec.clock)),
            events: spec.events,
            lanes: spec.forks.max(1),
            carry: spec.carry,
            claims: Some(WalkClaims {
                store: claims.as_ref(),
                job_id: &spec.job_id,
                wait: spec.claim_wait,
            }),
        },
    )
    .await;
    match end {
        Ok(end) => end,
        Err(never) => match never {},
    }
}

/// Every result of a run, kept in the report's order, and where each goes
/// as it happens (journal, events): what apply's two host actions share.
struct Ledger {
    results: Mutex<Vec<(usize, usize, JobResult)>>,
    /// Each step's position in DAG order (the report's order).
    order_of: Vec<usize>,
}

impl Ledger {
    fn new(job: &Job) -> Self {
        let mut order_of = vec![0; job.playbook.steps.len()];
        for (pos, s) in job.dag.order().iter().enumerate() {
            order_of[*s] = pos;
        }
        Ledger {
            results: Mutex::new(Vec::new()),
            order_of,
        }
    }

    /// A host's final result in a step, done here.
    fn record(&self, spec: &RunSpec<'_>, f: Finished<Ran>) {
        let job = spec.job;
        let mut r = result_of(job, f.si, f.h, &f.outcome);
        if !matches!(f.outcome, Outcome::Skipped(_)) {
            r.duration_ms = f.elapsed.as_millis() as u64;
            r.action = f.detail.action;
            // A wait for room in its group comes first: it came first.
            let msg = match (f.waited, f.detail.msg) {
                (Some(w), Some(m)) => Some(format!("{w}; {m}")),
                (w, m) => w.or(m),
            };
            r.msg = msg.map(|m| job.playbook.secrets.redact_string(m));
            // A unit may print what it was given, secret values included.
            r.logs = f.detail.logs;
            for e in &mut r.logs {
                e.message = job
                    .playbook
                    .secrets
                    .redact_string(std::mem::take(&mut e.message));
            }
        }
        self.push(spec, f.si, f.h, r, spec.journal);
    }

    /// A host's result taken over from an earlier run.
    fn carry(&self, spec: &RunSpec<'_>, si: usize, h: usize, r: &JobResult) {
        // A resume's (or a takeover's) journal already holds what it carries; a retry's is
        // new and gets it, so that a resume of the retry finds it there.
        let journal = match spec.carry.map(|c| &c.origin) {
            Some(Origin::Resume | Origin::Takeover) => None,
            _ => spec.journal,
        };
        self.push(spec, si, h, r.clone(), journal);
    }

    fn push(
        &self,
        spec: &RunSpec<'_>,
        si: usize,
        h: usize,
        r: JobResult,
        journal: Option<&Journal>,
    ) {
        if let Some(j) = journal {
            j.record(&r);
        }
        spec.events.event(&Event::HostResult(r.clone()));
        if let Ok(mut v) = self.results.lock() {
            v.push((self.order_of[si], h, r));
        }
    }

    /// The results in execution order.
    fn into_results(self) -> Vec<JobResult> {
        let mut results = self.results.into_inner().unwrap_or_default();
        results.sort_by_key(|(order, host, _)| (*order, *host));
        results.into_iter().map(|(_, _, r)| r).collect()
    }
}

/// What apply's work reports beside its outcome.
pub(crate) struct Ran {
    /// Operations performed, `+`-joined.
    action: String,
    /// What a script module said.
    msg: Option<String>,
    /// The unit's last journal lines, when the step failed on the host.
    logs: Vec<LogEntry>,
}

impl Default for Ran {
    fn default() -> Self {
        Ran {
            action: "none".into(),
            msg: None,
            logs: Vec::new(),
        }
    }
}

impl HostAction for Do<'_> {
    type Conn = Arc<Session>;
    type Lane = Option<Reading>;
    type Detail = Ran;
    type Error = std::convert::Infallible;

    fn presence(&self, h: usize) -> Presence {
        let maint = self.maint.lock();
        Presence {
            reachable: self.slots[h].get().is_some_and(|r| r.is_ok()),
            // Flags not read (or not readable) count as in maintenance.
            in_maintenance: maint.map_or(true, |m| {
                m.get(h)
                    .is_none_or(|m| m.as_ref().is_none_or(|m| m.host.is_some()))
            }),
        }
    }

    /// Connect to every host up front and read its maintenance flags.
    async fn survey(&self, involved: &[usize]) {
        let job = self.job;
        let hosts: Vec<_> = involved
            .iter()
            .map(|i| job.inventory.hosts[*i].clone())
            .collect();
        let reach = self.spec.reach();
        for r in crate::remote::fanout::connect_all(&hosts, &reach).await {
            let h = involved[r.index];
            let _ = self.slots[h].set(r.result.map(open_slot).map_err(unreachable_text));
        }
        futures_util::future::join_all(involved.iter().map(|&h| host_maintenance(self, h))).await;
    }

    async fn connect(&self, h: usize) -> Result<Arc<Session>, Failure> {
        let host = &self.job.inventory.hosts[h];
        let slot = self.slots[h]
            .get_or_init(|| async {
                crate::remote::fanout::open(host, &self.spec.reach())
                    .await
                    .map(open_slot)
                    .map_err(unreachable_text)
            })
            .await;
        match slot.as_ref().map(|m| m.lock().ok().and_then(|s| s.clone())) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Failure::Error(
                "internal: the host's connection was already closed".into(),
            )),
            Err(e) => Err(Failure::Unreachable(e.clone())),
        }
    }

    async fn in_service(&self, h: usize, unit: &UnitName, member_only: bool) -> Result<(), String> {
        let bound = self.spec.step_timeout.min(IN_SERVICE_TIMEOUT);
        match tokio::time::timeout(bound, host_in_service(self, h, unit, member_only)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "unknown: no answer within {}",
                humantime::format_duration(bound)
            )),
        }
    }

    async fn maintenance(&self, h: usize, unit: &UnitName) -> Result<Option<SkipReason>, String> {
        host_maintenance(self, h)
            .await
            .map(|m| m.skip_reason(unit.as_str()))
    }

    async fn work(
        &self,
        session: Arc<Session>,
        w: Work<'_>,
        carried: Option<Reading>,
        lane: &mut Option<Reading>,
    ) -> Result<(Outcome, Ran), Self::Error> {
        // The host runs its steps back to back (free): this step's last
        // reading also reads the next step's unit.
        let next = w.next.and_then(|n| next_reading(self, n, w.h));
        let hs = HostStep {
            run: self,
            si: w.si,
            h: w.h,
            step: w.step,
            task: w.task,
            failed_at: w.failed_at,
        };
        let _permit = self.forks.acquire().await;
        let (outcome, action, msg) = hs.work(&session, carried, next, lane).await;
        let logs = self.failure_logs(&session, w.step, w.task, &outcome).await;
        Ok((outcome, Ran { action, msg, logs }))
    }

    fn record(&self, f: Finished<Ran>) {
        self.ledger.record(&self.spec, f);
    }

    fn carry(&self, si: usize, h: usize, _batch: usize, r: &JobResult) {
        self.ledger.carry(&self.spec, si, h, r);
    }

    /// The host has no step left: close its connection now, in the
    /// background, instead of holding an ssh master per host until the run
    /// ends (a large fleet would pile them up; a small one would pay every
    /// close at the end).
    fn release(&self, h: usize) {
        let Some(Ok(cell)) = self.slots[h].get() else {
            return;
        };
        let Some(arc) = cell.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        match Arc::try_unwrap(arc) {
            Ok(session) => {
                let task = tokio::spawn(session.close());
                if let Ok(mut c) = self.closing.lock() {
                    c.push(task);
                }
            }
            // Still in use (cannot happen once the host's steps are done):
            // put it back for the final close.
            Err(arc) => {
                if let Ok(mut s) = cell.lock() {
                    *s = Some(arc);
                }
            }
        }
    }
}

impl<'a> Do<'a> {
    pub(crate) fn new(spec: RunSpec<'a>) -> Do<'a> {
        let job = spec.job;
        let n = job.inventory.hosts.len();
        Do {
            forks: Semaphore::new(spec.forks.max(1)),
            spec,
            job,
            slots: (0..n).map(|_| tokio::sync::OnceCell::new()).collect(),
            closing: Mutex::new(Vec::new()),
            ledger: Ledger::new(job),
            maint: Mutex::new(vec![None; n]),
            maint_write: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The unit's last journal lines, when a service step failed on the
    /// host in a way the unit's own output may explain (its job failed,
    /// a gate did not pass), within
    /// [`Bounds::FAILURE`]. A read that fails leaves the result without
    /// them: it never changes the outcome.
    async fn failure_logs(
        &self,
        session: &Session,
        step: &crate::model::playbook::Step,
        task: &crate::model::expand::HostTask,
        outcome: &Outcome,
    ) -> Vec<LogEntry> {
        let n = self.spec.failure_logs;
        let Outcome::Failed { failure, .. } = outcome else {
            return Vec::new();
        };
        if n == 0
            || !failure.unit_may_explain()
            || !matches!(step.operation, Operation::Service { .. })
        {
            return Vec::new();
        }
        let q = LogQuery::last(task.unit.clone(), n);
        match crate::remote::logs::read(session, &q, &Bounds::FAILURE).await {
            Ok(log) => log.entries,
            Err(e) => {
                tracing::debug!(host = %session.host(), unit = %task.unit, "no failure logs: {e}");
                Vec::new()
            }
        }
    }

    /// Close every connection still open and return the results in
    /// execution order.
    async fn finish(self) -> Vec<JobResult> {
        let Do {
            slots,
            ledger,
            closing,
            ..
        } = self;
        crate::remote::fanout::close_all(
            slots
                .into_iter()
                .filter_map(|c| c.into_inner())
                .filter_map(|r| r.ok())
                .filter_map(|m| m.into_inner().ok().flatten())
                .filter_map(|s| Arc::try_unwrap(s).ok()),
        )
        .await;
        for task in closing.into_inner().unwrap_or_default() {
            let _ = task.await;
        }
        ledger.into_results()
    }
}

/// Why a host could not be connected, as `Failure::Unreachable` words it
/// ("unreachable: " comes with the failure).
fn unreachable_text(e: HostError) -> String {
    match e {
        HostError::Unreachable(c) => c.to_string(),
        HostError::TimedOut(t) => format!("no answer within {}", humantime::format_duration(t)),
        HostError::Failed(m) => m,
    }
}

/// The host's open session, if any.
fn session_of(run: &Do<'_>, h: usize) -> Option<Arc<Session>> {
    run.slots[h].get()?.as_ref().ok()?.lock().ok()?.clone()
}

/// The result of a host in a step, from its outcome.
fn result_of(job: &Job, si: usize, h: usize, outcome: &Outcome) -> JobResult {
    let unit = match &job.playbook.steps[si].operation {
        Operation::Script(m) => m.name.clone(),
        _ => job.expanded[si]
            .task(h)
            .map(|t| t.unit.to_string())
            .unwrap_or_default(),
    };
    JobResult::new(
        &job.inventory.hosts[h].name,
        &job.playbook.steps[si].id,
        &unit,
        outcome,
        &job.playbook.secrets,
    )
}
