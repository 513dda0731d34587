//! The executor: runs a job on real hosts.
//!
//! It is an explicit state machine over the DAG's scheduler: ready steps
//! start together, a step's hosts run in rolling batches (`serial`) with at
//! most `forks` hosts in flight across all steps, and a batch's gates (job
//! result, `wait`) decide before the next batch starts. Who skips, which
//! host `_any` picks, batching and aborting are the decisions the plan
//! uses ([`crate::model::decide`]); every host decides what to do with the
//! same module functions, from state read just before acting, and reports
//! `changed` from state read just after. Results stream to the journal and
//! to the caller's [`EventSink`] as they happen.

mod gate;
mod host;
mod schedule;
mod service;

pub use host::really_changed;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::engine::events::{Event, EventSink, StopFlag};
use crate::engine::execute::host::host_maintenance;
use crate::engine::execute::schedule::run_free;
use crate::engine::execute::schedule::run_linear;
use crate::engine::execute::schedule::step_hosts;
use crate::engine::job::Job;
use crate::engine::journal::Journal;
use crate::model::decide::FailureLedger;
use crate::model::maintenance::MaintenanceState;
use crate::model::now_rfc3339;
use crate::model::outcome::{Outcome, SkipReason};
use crate::model::playbook::{Operation, Strategy};
use crate::model::report::{JobReport, JobResult, RunOutcome};
use crate::remote::carrier::Session;
use crate::remote::fanout::{HostError, Reach};
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

/// Everything the host workers share.
struct Run<'a> {
    spec: RunSpec<'a>,
    job: &'a Job,
    /// One connection per host, made up front (linear) or on first use
    /// (free), closed as soon as the host has no step left.
    slots: Vec<Slot>,
    /// Steps not yet finished that may work on each host (linear): at zero
    /// the host's connection is released.
    pending: Vec<AtomicUsize>,
    /// Connections being closed in the background; awaited before the
    /// report.
    closing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    book: Mutex<FailureLedger>,
    forks: Semaphore,
    results: Mutex<Vec<(usize, usize, JobResult)>>,
    order_of: Vec<usize>,
    /// Each host's maintenance flags, read once per run and kept up to date
    /// by the run's own `maintenance:` steps.
    maint: Mutex<Vec<Option<MaintenanceState>>>,
    /// Serialises `maintenance:` writes per host.
    maint_write: Vec<tokio::sync::Mutex<()>>,
}

/// Connect to every host the run may touch, run the DAG, close the
/// sessions and return the report.
pub async fn execute(spec: RunSpec<'_>) -> JobReport {
    let job = spec.job;
    let started_at = now_rfc3339();
    let involved = involved_hosts(job);
    let run = Run::new(spec, &involved).await;
    if job.playbook.strategy == Strategy::Linear {
        // `_any` never picks a host in maintenance: know the flags first.
        futures_util::future::join_all(involved.iter().copied().map(|h| host_maintenance(&run, h)))
            .await;
    }
    let mut started = vec![false; job.playbook.steps.len()];
    match job.playbook.strategy {
        Strategy::Linear => run_linear(&run, &mut started).await,
        Strategy::Free => {
            run_free(&run, &involved).await;
            started.iter_mut().for_each(|s| *s = true);
        }
    }
    // Steps that never started (interrupted) are reported skipped.
    for (s, was) in started.iter().enumerate() {
        if !*was {
            for h in step_hosts(&run, s) {
                record_skip(&run, s, h, interrupted(&run));
            }
        }
    }
    let outcome = if run.spec.stop.is_stopped() {
        RunOutcome::Interrupted
    } else if run
        .book
        .lock()
        .ok()
        .is_some_and(|b| b.aborted_at().is_some())
    {
        RunOutcome::Aborted
    } else {
        RunOutcome::Completed
    };
    let job_id = run.spec.job_id.clone();
    let results = run.finish().await;
    JobReport {
        job_id,
        playbook: job.playbook.name.clone(),
        started_at,
        finished_at: now_rfc3339(),
        outcome,
        results,
    }
}

/// Every host some step may work on, in inventory order.
fn involved_hosts(job: &Job) -> Vec<usize> {
    let mut involved = BTreeSet::new();
    for ex in &job.expanded {
        involved.extend(ex.tasks.iter().map(|t| t.host));
    }
    involved.into_iter().collect()
}

impl<'a> Run<'a> {
    async fn new(spec: RunSpec<'a>, involved: &[usize]) -> Run<'a> {
        let job = spec.job;
        let n = job.inventory.hosts.len();
        let slots: Vec<Slot> = (0..n).map(|_| tokio::sync::OnceCell::new()).collect();
        if job.playbook.strategy == Strategy::Linear {
            // `_any` picks need to know who is reachable before the first step.
            let hosts: Vec<_> = involved
                .iter()
                .map(|i| job.inventory.hosts[*i].clone())
                .collect();
            let reach = spec.reach();
            for r in crate::remote::fanout::connect_all(&hosts, &reach).await {
                let h = involved[r.index];
                let _ = slots[h].set(r.result.map(open_slot).map_err(unreachable_text));
            }
        }
        let mut order_of = vec![0; job.playbook.steps.len()];
        for (pos, s) in job.dag.order().iter().enumerate() {
            order_of[*s] = pos;
        }
        let mut pending = vec![0usize; n];
        for ex in &job.expanded {
            for h in ex.targets.candidates() {
                pending[h] += 1;
            }
        }
        Run {
            forks: Semaphore::new(spec.forks.max(1)),
            spec,
            job,
            slots,
            pending: pending.into_iter().map(AtomicUsize::new).collect(),
            closing: Mutex::new(Vec::new()),
            book: Mutex::new(FailureLedger::new(n)),
            results: Mutex::new(Vec::new()),
            order_of,
            maint: Mutex::new(vec![None; n]),
            maint_write: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Close every connection still open and return the results in
    /// execution order.
    async fn finish(self) -> Vec<JobResult> {
        let Run {
            slots,
            results,
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
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(order, host, _)| (*order, *host));
        results.into_iter().map(|(_, _, r)| r).collect()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, FailureLedger> {
        // A poisoned book only means a worker panicked mid-update; the
        // bookkeeping itself is still consistent enough to report.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn interrupted(run: &Run<'_>) -> SkipReason {
    SkipReason::Interrupted(run.spec.stop.reason())
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
fn session_of(run: &Run<'_>, h: usize) -> Option<Arc<Session>> {
    run.slots[h].get()?.as_ref().ok()?.lock().ok()?.clone()
}

/// The host has no step left: close its connection now, in the background,
/// instead of holding an ssh master per host until the run ends (a large
/// fleet would pile them up; a small one would pay every close at the end).
fn release(run: &Run<'_>, h: usize) {
    let Some(Ok(cell)) = run.slots[h].get() else {
        return;
    };
    let Some(arc) = cell.lock().ok().and_then(|mut s| s.take()) else {
        return;
    };
    match Arc::try_unwrap(arc) {
        Ok(session) => {
            let task = tokio::spawn(session.close());
            if let Ok(mut c) = run.closing.lock() {
                c.push(task);
            }
        }
        // Still in use (cannot happen once the host's steps are done): put
        // it back for the final close.
        Err(arc) => {
            if let Ok(mut s) = cell.lock() {
                *s = Some(arc);
            }
        }
    }
}

fn push(run: &Run<'_>, si: usize, h: usize, r: JobResult) {
    if let Some(j) = run.spec.journal {
        j.record(&r);
    }
    run.spec.events.event(&Event::HostResult(r.clone()));
    if let Ok(mut v) = run.results.lock() {
        v.push((run.order_of[si], h, r));
    }
}

/// The result of a host in a step, from its outcome.
fn result_of(run: &Run<'_>, si: usize, h: usize, outcome: &Outcome) -> JobResult {
    let job = run.job;
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

fn record_skip(run: &Run<'_>, si: usize, h: usize, why: SkipReason) {
    push(run, si, h, result_of(run, si, h, &Outcome::Skipped(why)));
}
