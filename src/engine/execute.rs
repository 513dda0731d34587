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

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::engine::events::{Event, EventSink, StopFlag};
use crate::engine::job::Job;
use crate::engine::journal::Journal;
use crate::model::decide::{
    batch_size, failure_text, group_batch_size, pick_any, refuse_protected, Candidate, RunBook,
};
use crate::model::expand::{goal_of, HostTask};
use crate::model::facts::UnitFacts;
use crate::model::maintenance::{MaintenanceGoal, MaintenanceState, HOST_SCOPE};
use crate::model::module::ScriptModule;
use crate::model::now_rfc3339;
use crate::model::outcome::{Failure, Outcome, SkipReason, Status};
use crate::model::playbook::{Group, Module, ServiceState, Step, Strategy, UnitFileGoal, Wait};
use crate::model::report::{JobReport, JobResult, RunOutcome};
use crate::model::service::{decide_service, join_actions, Action, ServiceGoal};
use crate::model::unit::UnitName;
use crate::model::unitfile::UnitFileWant;
use crate::remote::carrier::Session;
use crate::remote::fanout::{HostError, Reach};
use crate::remote::pool::Pool;
use crate::remote::systemd::{StateRead, Systemd, SystemdError};

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
    book: Mutex<RunBook>,
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
            book: Mutex::new(RunBook::new(n)),
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

    fn book(&self) -> std::sync::MutexGuard<'_, RunBook> {
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

/// Linear: the DAG's state machine; a step's hosts all finish before its
/// dependents start. Ready steps run concurrently.
async fn run_linear(run: &Run<'_>, started: &mut [bool]) {
    let mut sched = run.job.dag.scheduler();
    let mut running = FuturesUnordered::new();
    loop {
        if !run.spec.stop.is_stopped() {
            for s in sched.take_ready() {
                if started[s] {
                    // A step of a module call already run as a group.
                    continue;
                }
                match &run.job.playbook.steps[s].group {
                    Some(g) => {
                        for &gs in &g.steps {
                            started[gs] = true;
                        }
                        running.push(futures_util::future::Either::Left(run_group(
                            run,
                            g.clone(),
                        )));
                    }
                    None => {
                        started[s] = true;
                        running.push(futures_util::future::Either::Right(async move {
                            vec![run_step(run, s).await]
                        }));
                    }
                }
            }
        }
        match running.next().await {
            Some(done) => {
                for s in done {
                    sched.finish(s);
                    for h in run.job.expanded[s].targets.candidates() {
                        if run.pending[h].fetch_sub(1, Ordering::SeqCst) == 1 {
                            release(run, h);
                        }
                    }
                }
            }
            None => break,
        }
    }
}

/// A module call with `serial`: its hosts go through all of its steps
/// batch by batch (batch 1 runs every step, then batch 2), the rolling
/// drain-restart-undrain. The call's steps share its target, so the first
/// step's hosts (and `_any` pick) are the group's.
async fn run_group(run: &Run<'_>, group: Arc<Group>) -> Vec<usize> {
    let Some(&first) = group.steps.first() else {
        return Vec::new();
    };
    let hosts = step_hosts(run, first);
    for &si in &group.steps {
        run.spec.events.event(&Event::StepStarted {
            step: run.job.playbook.steps[si].id.clone(),
            hosts: hosts.len(),
        });
    }
    let mut failed_hosts = BTreeSet::new();
    for (b, batch) in hosts
        .chunks(group_batch_size(&group, hosts.len()))
        .enumerate()
    {
        for &si in &group.steps {
            let aborted = run.book().before_batch();
            let skip = aborted.or_else(|| run.spec.stop.is_stopped().then(|| interrupted(run)));
            if let Some(why) = skip {
                for &h in batch {
                    if run.job.expanded[si].task(h).is_some() {
                        record_skip(run, si, h, why.clone());
                    }
                }
                continue;
            }
            let outcomes = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|&h| async move { run_host(run, si, h, &mut None, None).await }),
            )
            .await;
            let mut book = run.book();
            for (h, status) in batch.iter().zip(outcomes) {
                if status == Status::Failed {
                    failed_hosts.insert(*h);
                    book.host_failed(*h, &run.job.playbook.steps[si].id);
                }
            }
        }
        run.book()
            .after_group_batch(&group, failed_hosts.len(), hosts.len());
        if let Some(&last) = group.steps.last() {
            run.spec.events.event(&Event::BatchDone {
                step: run.job.playbook.steps[last].id.clone(),
                batch: b + 1,
                failed: failed_hosts.len(),
            });
        }
    }
    for &si in &group.steps {
        run.spec.events.event(&Event::StepFinished {
            step: run.job.playbook.steps[si].id.clone(),
        });
    }
    group.steps.clone()
}

/// Free: every host walks the steps in DAG order on its own, at most
/// `forks` hosts at a time; a host that fails skips its later steps.
async fn run_free(run: &Run<'_>, involved: &[usize]) {
    let order = run.job.dag.order();
    for &si in order {
        run.spec.events.event(&Event::StepStarted {
            step: run.job.playbook.steps[si].id.clone(),
            hosts: run.job.expanded[si].targets.fixed.len(),
        });
    }
    let hosts = futures_util::stream::iter(involved.iter().copied())
        .map(|h| async move {
            let mine: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&si| run.job.expanded[si].targets.fixed.binary_search(&h).is_ok())
                .collect();
            // The host runs its steps back to back: each step's last reading
            // also reads the next step's unit.
            let mut carry = None;
            for (k, &si) in mine.iter().enumerate() {
                if run.spec.stop.is_stopped() {
                    record_skip(run, si, h, interrupted(run));
                    continue;
                }
                let next = mine.get(k + 1).and_then(|&n| next_reading(run, n, h));
                if run_host(run, si, h, &mut carry, next).await == Status::Failed {
                    run.book().host_failed(h, &run.job.playbook.steps[si].id);
                }
            }
            release(run, h);
        })
        .buffer_unordered(run.forks.available_permits().max(1));
    hosts.collect::<Vec<()>>().await;
    for &si in order {
        run.spec.events.event(&Event::StepFinished {
            step: run.job.playbook.steps[si].id.clone(),
        });
    }
}

/// The hosts a step works on now: fixed targets plus one pick per `_any`
/// group, chosen as the plan chooses.
fn step_hosts(run: &Run<'_>, si: usize) -> Vec<usize> {
    let job = run.job;
    let step = &job.playbook.steps[si];
    let ex = &job.expanded[si];
    let book = run.book().clone();
    let maint = run.maint.lock().map(|m| m.clone()).unwrap_or_default();
    let candidate = |h: usize| Candidate {
        reachable: run.slots[h].get().is_some_and(|r| r.is_ok()),
        in_maintenance: maint
            .get(h)
            .is_none_or(|m| m.as_ref().is_none_or(|m| m.host.is_some())),
        failed: book.failed_at(h).is_some(),
        protected: ex.task(h).is_some_and(|t| {
            refuse_protected(step, t, &job.inventory.hosts[h], run.spec.allow_protected).is_some()
        }),
    };
    let mut set: BTreeSet<usize> = ex.targets.fixed.iter().copied().collect();
    for g in &ex.targets.any {
        if let Some(h) = pick_any(g, candidate) {
            set.insert(h);
        }
    }
    set.into_iter().collect()
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
    let unit = match &job.playbook.steps[si].module {
        Module::Script(m) => m.name.clone(),
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

async fn run_step(run: &Run<'_>, si: usize) -> usize {
    let step = &run.job.playbook.steps[si];
    let hosts = step_hosts(run, si);
    run.spec.events.event(&Event::StepStarted {
        step: step.id.clone(),
        hosts: hosts.len(),
    });
    let mut failed_here = 0usize;
    for (b, batch) in hosts.chunks(batch_size(step, hosts.len())).enumerate() {
        let aborted = run.book().before_batch();
        let skip = aborted.or_else(|| run.spec.stop.is_stopped().then(|| interrupted(run)));
        if let Some(why) = skip {
            for &h in batch {
                record_skip(run, si, h, why.clone());
            }
            continue;
        }
        let outcomes = futures_util::future::join_all(batch.iter().copied().map(|h| async move {
            // Linear: other hosts run between a host's steps, so no
            // reading is carried from one step to the next.
            run_host(run, si, h, &mut None, None).await
        }))
        .await;
        let mut book = run.book();
        for (h, status) in batch.iter().zip(outcomes) {
            if status == Status::Failed {
                failed_here += 1;
                book.host_failed(*h, &step.id);
            }
        }
        book.after_batch(step, failed_here, hosts.len());
        drop(book);
        run.spec.events.event(&Event::BatchDone {
            step: step.id.clone(),
            batch: b + 1,
            failed: failed_here,
        });
    }
    run.spec.events.event(&Event::StepFinished {
        step: step.id.clone(),
    });
    si
}

/// One host in one step: what every phase of its work needs.
struct HostStep<'r, 'a> {
    run: &'r Run<'a>,
    h: usize,
    step: &'a Step,
    task: &'a HostTask,
}

/// One host, one step: checks, connect, maintenance, then the module's
/// read, decide, act, verify; the result is recorded.
async fn run_host(
    run: &Run<'_>,
    si: usize,
    h: usize,
    carry: &mut Option<Reading>,
    next: Option<(UnitName, StateRead)>,
) -> Status {
    // A reading carried from the previous step is for this step only.
    let carried = carry.take();
    let job = run.job;
    let Some(task) = job.expanded[si].task(h) else {
        return Status::Skipped;
    };
    let hs = HostStep {
        run,
        h,
        step: &job.playbook.steps[si],
        task,
    };
    let t0 = Instant::now();
    let (outcome, action, msg) = match hs.prepare().await {
        Err(outcome) => (outcome, "none".to_string(), None),
        Ok(session) => {
            let _permit = run.forks.acquire().await;
            hs.work(&session, carried, next, carry).await
        }
    };
    let mut r = result_of(run, si, h, &outcome);
    if !matches!(outcome, Outcome::Skipped(_)) {
        r.duration_ms = t0.elapsed().as_millis() as u64;
        r.action = action;
        r.msg = msg.map(|m| job.playbook.secrets.redact_string(m));
    }
    let status = r.status;
    push(run, si, h, r);
    status
}

impl HostStep<'_, '_> {
    /// Everything decided before the host's work: earlier failures,
    /// `when`, protection, the connection, maintenance. `Err` is the
    /// host's outcome for this step.
    async fn prepare(&self) -> std::result::Result<Arc<Session>, Outcome> {
        let (run, h) = (self.run, self.h);
        if let Some(why) = run.book().before_step_host(self.step, h, self.task.when) {
            return Err(Outcome::Skipped(why));
        }
        let host = &run.job.inventory.hosts[h];
        if let Some(refused) =
            refuse_protected(self.step, self.task, host, run.spec.allow_protected)
        {
            return Err(Outcome::failed(refused));
        }
        let slot = run.slots[h]
            .get_or_init(|| async {
                crate::remote::fanout::open(host, &run.spec.reach())
                    .await
                    .map(open_slot)
                    .map_err(unreachable_text)
            })
            .await;
        let session = match slot.as_ref().map(|m| m.lock().ok().and_then(|s| s.clone())) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Outcome::failed(Failure::Error(
                    "internal: the host's connection was already closed".into(),
                )))
            }
            Err(e) => return Err(Outcome::failed(Failure::Unreachable(e.clone()))),
        };
        let exempt =
            self.step.ignore_maintenance || matches!(self.step.module, Module::Maintenance { .. });
        if !exempt {
            match host_maintenance(run, h).await {
                Ok(m) => {
                    if let Some(why) = m.skip_reason(self.task.unit.as_str()) {
                        return Err(Outcome::Skipped(why));
                    }
                }
                Err(e) => return Err(Outcome::failed(Failure::Error(e))),
            }
        }
        Ok(session)
    }

    /// The module's work, bounded by the step timeout: an unattended run
    /// must never hang, whatever systemd or the network does.
    async fn work(
        &self,
        session: &Session,
        carried: Option<Reading>,
        next: Option<(UnitName, StateRead)>,
        carry: &mut Option<Reading>,
    ) -> (Outcome, String, Option<String>) {
        let work = async {
            match &self.step.module {
                Module::Service { .. } => {
                    let svc = ServiceStep {
                        hs: self,
                        sd: session.systemd(),
                        goal: goal_of(&self.step.module),
                    };
                    svc.apply(carried, next.as_ref().map(|(u, w)| (u, *w)))
                        .await
                }
                Module::Maintenance { enable, .. } => self.maintenance(session, *enable).await,
                Module::Unit { state, .. } => self.unit_file(session, *state).await,
                Module::Script(m) => self.script(session, m).await,
            }
        };
        let timeout = self.run.spec.step_timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(done)) => {
                *carry = done.next;
                (
                    Outcome::Ok {
                        changed: done.changed,
                    },
                    done.action,
                    done.msg,
                )
            }
            Ok(Err(f)) => (
                Outcome::Failed {
                    failure: f.failure,
                    changed: f.changed,
                },
                f.action,
                None,
            ),
            Err(_) => (
                Outcome::failed(Failure::Timeout(timeout)),
                "unknown".into(),
                None,
            ),
        }
    }

    /// A systemd error as a failure: a broken connection makes the host
    /// unreachable; anything else is the host's error, with `context`.
    fn systemd_failure(&self, e: &SystemdError, context: String) -> Failure {
        if e.is_connection_lost() {
            Failure::ConnectionLost {
                step: self.step.id.clone(),
                detail: context,
            }
        } else {
            Failure::Error(context)
        }
    }

    /// A `maintenance:` step on one host.
    async fn maintenance(&self, session: &Session, enable: bool) -> Result<Done, Failed> {
        let (run, h, task) = (self.run, self.h, self.task);
        let failed_at = run.book().failed_at(h).map(str::to_string);
        let goal = MaintenanceGoal {
            enable,
            reason: failure_text(
                self.step,
                task.content.as_deref().unwrap_or_default(),
                failed_at.as_deref(),
            ),
            unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
        };
        let _w = run.maint_write[h].lock().await;
        let (action, now) = crate::remote::maintenance::apply_goal_on(session, &goal)
            .await
            .map_err(|error| Failed {
                changed: false,
                action: if enable {
                    "maintenance-on"
                } else {
                    "maintenance-off"
                }
                .into(),
                failure: Failure::Error(error),
            })?;
        if let Ok(mut cache) = run.maint.lock() {
            if let Some(slot) = cache.get_mut(h) {
                *slot = Some(now);
            }
        }
        Ok(Done {
            changed: action.is_some(),
            action: joined(&action.into_iter().collect::<Vec<_>>()),
            next: None,
            msg: None,
        })
    }

    /// A script module on one host: its program runs there with the input
    /// JSON on stdin; its one JSON object is the result.
    async fn script(&self, session: &Session, m: &ScriptModule) -> Result<Done, Failed> {
        let host = &self.run.job.inventory.hosts[self.h];
        let input = crate::model::module::input_json(&m.params, false, host);
        let limit = m.timeout.min(self.run.spec.step_timeout);
        let action = joined(&[Action::Run]);
        let ran = crate::remote::script::run(session, &m.program, &input, limit)
            .await
            .map_err(|e| Failed {
                // Whether it ran is unknown: the host must be looked at.
                changed: true,
                action: action.clone(),
                failure: Failure::Error(format!("module `{}`: {e}", m.name)),
            })?;
        let rep = crate::model::module::read_report(&m.name, ran.code, &ran.stdout, &ran.stderr);
        if rep.failed {
            return Err(Failed {
                changed: rep.changed,
                action,
                failure: Failure::Error(if rep.msg.is_empty() {
                    format!("module `{}` failed", m.name)
                } else {
                    rep.msg
                }),
            });
        }
        Ok(Done {
            changed: rep.changed,
            action,
            next: None,
            msg: (!rep.msg.is_empty()).then_some(rep.msg),
        })
    }

    /// A `unit:` step on one host.
    async fn unit_file(&self, session: &Session, state: UnitFileGoal) -> Result<Done, Failed> {
        let content = self.task.content.as_deref().unwrap_or_default();
        let want = match state {
            UnitFileGoal::Present => UnitFileWant::Present(content),
            UnitFileGoal::Absent => UnitFileWant::Absent,
        };
        let o = crate::remote::unitfile::apply_unit(session, &self.task.unit, &want).await;
        match o.error {
            Some(error) => Err(Failed {
                changed: o.changed,
                action: joined(&o.done),
                failure: Failure::Error(error),
            }),
            None => Ok(Done {
                changed: o.changed,
                action: joined(&o.done),
                next: None,
                msg: None,
            }),
        }
    }
}

struct Done {
    changed: bool,
    action: String,
    /// What a script module said.
    msg: Option<String>,
    /// The next step's unit, read together with this step's last reading.
    next: Option<Reading>,
}

struct Failed {
    changed: bool,
    action: String,
    failure: Failure,
}

/// A unit's state read at the end of a host's step for that host's next
/// step (`strategy: free`): one round trip serves both.
struct Reading {
    unit: UnitName,
    what: StateRead,
    facts: UnitFacts,
    at: Instant,
}

/// How old a carried reading may be and still stand in for the next step's
/// own. It was taken by the same connection with no drover action since;
/// normally the next step starts microseconds later, but waiting for a
/// `forks` slot could take longer, and then the step reads again.
const CARRY_FRESH: Duration = Duration::from_millis(250);

/// What a service step reads before deciding: enablement only when the
/// step is about it (less bus traffic, and the same reading before and
/// after); the InvocationID is added once the step knows it will act.
fn reads_for(goal: &ServiceGoal) -> StateRead {
    StateRead {
        file_state: goal.enabled.is_some() || goal.masked.is_some(),
        invocation: false,
    }
}

/// What a host's next step would read first, if it is a service step that
/// runs there: its unit and the properties its goal needs.
fn next_reading(run: &Run<'_>, si: usize, h: usize) -> Option<(UnitName, StateRead)> {
    let step = &run.job.playbook.steps[si];
    if !matches!(step.module, Module::Service { .. }) {
        return None;
    }
    let task = run.job.expanded[si].task(h).filter(|t| t.when)?;
    let goal = goal_of(&step.module);
    Some((
        task.unit.clone(),
        StateRead {
            // A restart always needs the InvocationID before.
            invocation: goal.state == Some(ServiceState::Restarted),
            ..reads_for(&goal)
        },
    ))
}

/// A host's maintenance flags: from the run's cache, read from the host on
/// first use.
async fn host_maintenance(
    run: &Run<'_>,
    h: usize,
) -> std::result::Result<MaintenanceState, String> {
    let limit = run.spec.step_timeout;
    tokio::time::timeout(limit, read_host_maintenance(run, h))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "cannot read the maintenance state: no answer within {}",
                humantime::format_duration(limit)
            ))
        })
}

async fn read_host_maintenance(
    run: &Run<'_>,
    h: usize,
) -> std::result::Result<MaintenanceState, String> {
    if let Some(m) = run
        .maint
        .lock()
        .ok()
        .and_then(|m| m.get(h).cloned().flatten())
    {
        return Ok(m);
    }
    let Some(session) = session_of(run, h) else {
        return Err("unreachable: no connection".into());
    };
    let m = crate::remote::maintenance::read(&session).await?;
    if let Ok(mut cache) = run.maint.lock() {
        if let Some(slot) = cache.get_mut(h) {
            *slot = Some(m.clone());
        }
    }
    Ok(m)
}

fn joined(actions: &[Action]) -> String {
    join_actions(actions, "none")
}

/// Whether systemd's state really differs between two readings.
pub fn really_changed(before: &UnitFacts, after: &UnitFacts) -> bool {
    before.active_state != after.active_state
        || before.unit_file_state != after.unit_file_state
        || before.load_state != after.load_state
        || before.invocation_id != after.invocation_id
}

/// A `service:` step on one host: read, decide, act, gate, read again.
struct ServiceStep<'s, 'r, 'a> {
    hs: &'s HostStep<'r, 'a>,
    sd: &'s Systemd,
    goal: ServiceGoal,
}

impl ServiceStep<'_, '_, '_> {
    fn unit(&self) -> &UnitName {
        &self.hs.task.unit
    }

    fn fail(&self, changed: bool, actions: &[Action], failure: Failure) -> Failed {
        Failed {
            changed,
            action: joined(actions),
            failure,
        }
    }

    async fn read(&self, what: StateRead) -> Result<UnitFacts, Failure> {
        let unit = self.unit();
        self.sd.unit_state(unit, what).await.map_err(|e| {
            self.hs
                .systemd_failure(&e, format!("cannot read {unit}: {e}"))
        })
    }

    /// Whether anything changed since `before` (after a failure: `guess`
    /// when the unit cannot be read again).
    async fn changed_since(&self, before: &UnitFacts, what: StateRead, guess: bool) -> bool {
        self.read(what)
            .await
            .map(|now| really_changed(before, &now))
            .unwrap_or(guess)
    }

    /// Bring the unit to the goal, verifying with systemd at each step.
    async fn apply(
        &self,
        carried: Option<Reading>,
        next: Option<(&UnitName, StateRead)>,
    ) -> Result<Done, Failed> {
        let unit = self.unit();
        let mut fs = reads_for(&self.goal);
        let (mut before, have_invocation) = self
            .before(carried, fs)
            .await
            .map_err(|f| self.fail(false, &[], f))?;
        let d = decide_service(unit.as_str(), &self.goal, &before);
        if let Some(f) = d.error {
            return Err(self.fail(false, &d.actions, f));
        }
        // Only a start or restart makes a new invocation; the InvocationID is
        // read (before and after) only then. Before and after must hold the
        // same properties, or an unread one would look changed.
        if d.actions
            .iter()
            .any(|a| matches!(a, Action::Start | Action::Restart))
        {
            fs.invocation = true;
            if !have_invocation {
                before.invocation_id = self.sd.invocation_id(unit).await.map_err(|e| {
                    let f = self
                        .hs
                        .systemd_failure(&e, format!("cannot read {unit}: {e}"));
                    self.fail(false, &[], f)
                })?;
            }
        } else {
            before.invocation_id.clear();
        }
        if !fs.file_state {
            before.unit_file_state.clear();
        }
        let wait = self.hs.step.wait.as_ref();
        if d.actions.is_empty() && wait.is_none() {
            // Nothing to do and nothing to wait for: the reading stands.
            return Ok(Done {
                changed: false,
                action: joined(&[]),
                next: None,
                msg: None,
            });
        }
        let done = self.act(&d.actions, &before, fs).await?;
        if let Some(w) = wait {
            if let Err(e) = self.gate(w).await {
                let changed = self.changed_since(&before, fs, true).await;
                return Err(self.fail(changed, &done, Failure::Error(e)));
            }
        }
        self.after(&before, fs, done, next).await
    }

    /// The reading before deciding: the previous step's last reading if it
    /// covers what this step needs, else a fresh one. Says whether it
    /// holds the InvocationID.
    async fn before(
        &self,
        carried: Option<Reading>,
        fs: StateRead,
    ) -> Result<(UnitFacts, bool), Failure> {
        let carried = carried.filter(|c| {
            c.unit == *self.unit()
                && c.at.elapsed() < CARRY_FRESH
                && (c.what.file_state || !fs.file_state)
        });
        match carried {
            Some(c) => Ok((c.facts, c.what.invocation)),
            None => Ok((self.read(fs).await?, false)),
        }
    }

    /// Run the decided operations in order; a failed one ends the step.
    async fn act(
        &self,
        actions: &[Action],
        before: &UnitFacts,
        fs: StateRead,
    ) -> Result<Vec<Action>, Failed> {
        let (sd, unit) = (self.sd, self.unit());
        let mut done: Vec<Action> = Vec::new();
        for a in actions {
            let res = match a {
                Action::Unmask => sd.unmask(unit).await.map(|_| None),
                Action::Enable => sd.enable(unit).await.map(|_| None),
                Action::Disable => sd.disable(unit).await.map(|_| None),
                Action::Mask => sd.mask(unit).await.map(|_| None),
                Action::Start => sd.start(unit).await.map(Some),
                Action::Stop => sd.stop(unit).await.map(Some),
                Action::Restart => sd.restart(unit).await.map(Some),
                Action::Reload => sd.reload(unit).await.map(Some),
                other => {
                    return Err(self.fail(
                        false,
                        &done,
                        Failure::Error(format!("internal: `{other}` is not a service operation")),
                    ))
                }
            };
            done.push(*a);
            match res {
                Err(e) => {
                    let f = self.hs.systemd_failure(&e, format!("{a} {unit}: {e}"));
                    let changed = self.changed_since(before, fs, false).await;
                    return Err(self.fail(changed, &done, f));
                }
                Ok(Some(job)) if !job.ok() => {
                    let changed = self.changed_since(before, fs, true).await;
                    let why = job
                        .error_message()
                        .unwrap_or_else(|| format!("job {}", job.result));
                    return Err(self.fail(changed, &done, Failure::JobFailed(why)));
                }
                Ok(_) => {}
            }
        }
        Ok(done)
    }

    /// The last reading, and with it (same round trip) the first one of
    /// the host's next step; `changed` is decided from it.
    async fn after(
        &self,
        before: &UnitFacts,
        fs: StateRead,
        done: Vec<Action>,
        next: Option<(&UnitName, StateRead)>,
    ) -> Result<Done, Failed> {
        let unit = self.unit();
        let read_failed = |f: Failure| self.fail(!done.is_empty(), &done, f);
        let (after, next) = match next {
            Some((next_unit, next_what)) => {
                let mut both = self
                    .sd
                    .unit_states(&[(unit, fs), (next_unit, next_what)])
                    .await
                    .map_err(|e| {
                        read_failed(
                            self.hs
                                .systemd_failure(&e, format!("cannot read {unit}: {e}")),
                        )
                    })?;
                let next = both.pop().map(|facts| Reading {
                    unit: next_unit.clone(),
                    what: next_what,
                    facts,
                    at: Instant::now(),
                });
                match both.pop() {
                    Some(after) => (after, next),
                    None => {
                        return Err(read_failed(Failure::Error(format!(
                            "cannot read {unit}: no answer"
                        ))))
                    }
                }
            }
            None => (self.read(fs).await.map_err(read_failed)?, None),
        };
        // A unit that ended up failed is never a success, whatever the job said.
        if after.active_state == "failed"
            && self.goal.state.is_some_and(|s| s != ServiceState::Stopped)
        {
            return Err(self.fail(
                really_changed(before, &after),
                &done,
                Failure::JobFailed(format!(
                    "unit {unit} entered failed state ({})",
                    after.sub_state
                )),
            ));
        }
        // A reload changes no property systemd exposes but did happen.
        let changed = really_changed(before, &after) || done.contains(&Action::Reload);
        Ok(Done {
            changed,
            action: joined(&done),
            next,
            msg: None,
        })
    }

    /// The `wait:` gate: unit active, health, HTTP 2xx, TCP accepts — within
    /// the timeout.
    async fn gate(&self, w: &Wait) -> std::result::Result<(), String> {
        let (sd, unit) = (self.sd, self.unit());
        let run = self.hs.run;
        let job = run.job;
        run.spec.events.event(&Event::GateWaiting {
            step: self.hs.step.id.clone(),
            host: job.inventory.hosts[self.hs.h].name.clone(),
            gate: gate_words(w),
        });
        let deadline = tokio::time::Instant::now() + w.timeout;
        let ctx = job
            .playbook
            .templates
            .host_context(&job.inventory.hosts[self.hs.h]);
        if w.active {
            wait_active(sd, unit, deadline, w.timeout).await?;
        }
        if let Some(level) = w.health {
            // Health has no single signal to wait for: re-read until good enough.
            probe(
                deadline,
                w.timeout,
                &format!("health of {unit}"),
                || async move {
                    let u = sd
                        .unit_state(unit, StateRead::default())
                        .await
                        .map_err(|e| format!("cannot read {unit}: {e}"))?;
                    let (now, note) = crate::model::health::unit_health(&u, None);
                    if now.satisfies(level) {
                        Ok(())
                    } else {
                        Err(format!("{} ({note})", now.as_str()))
                    }
                },
            )
            .await?;
        }
        if let Some(t) = w.tcp {
            let addr = job.playbook.templates.render(t, &ctx)?;
            probe(deadline, w.timeout, &format!("tcp {addr}"), || {
                tcp_ok(addr.clone())
            })
            .await?;
        }
        if let Some(t) = w.http {
            let url = job.playbook.templates.render(t, &ctx)?;
            probe(deadline, w.timeout, &format!("http {url}"), || {
                http_ok(url.clone())
            })
            .await?;
        }
        Ok(())
    }
}

/// What a gate waits for, in words (for the event).
fn gate_words(w: &Wait) -> String {
    let mut parts = Vec::new();
    if w.active {
        parts.push("active".to_string());
    }
    if let Some(h) = w.health {
        parts.push(format!("health {}", h.as_str().to_lowercase()));
    }
    if w.tcp.is_some() {
        parts.push("tcp".into());
    }
    if w.http.is_some() {
        parts.push("http".into());
    }
    format!(
        "{} within {}",
        parts.join(", "),
        humantime::format_duration(w.timeout)
    )
}

/// Wait for ActiveState=active, driven by systemd's PropertiesChanged
/// signal (no polling); `failed`/`inactive` end the wait at once.
async fn wait_active(
    sd: &Systemd,
    unit: &UnitName,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let proxy = crate::remote::systemd::UnitProxy::builder(sd.connection())
        .path(crate::remote::systemd::unit_object_path(unit.as_str()))
        .map_err(|e| e.to_string())?
        .build()
        .await
        .map_err(|e| format!("wait for {unit}: {e}"))?;
    let mut changes = proxy.receive_active_state_changed().await;
    loop {
        let state = proxy
            .active_state()
            .await
            .map_err(|e| format!("wait for {unit}: {e}"))?;
        match state.as_str() {
            "active" => return Ok(()),
            "failed" | "inactive" => {
                return Err(format!("wait: unit {unit} is {state}, not active"));
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return Err(format!("wait: lost the signal stream of {unit}")),
            Err(_) => {
                return Err(format!(
                    "wait: unit {unit} not active within {} (still {state})",
                    humantime::format_duration(timeout)
                ))
            }
        }
    }
}

/// Retry a network probe until it passes or the deadline passes. Probing a
/// remote endpoint has no event to wait for, so this is the one place that
/// retries on an interval.
async fn probe<F, Fut>(
    deadline: tokio::time::Instant,
    timeout: Duration,
    what: &str,
    mut attempt: F,
) -> std::result::Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut last = String::from("no attempt");
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "wait: {what} did not pass within {}: {last}",
                humantime::format_duration(timeout)
            ));
        }
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline),
        )
        .await;
    }
}

async fn tcp_ok(addr: String) -> std::result::Result<(), String> {
    tokio::net::TcpStream::connect(&addr)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `wait.http`: 2xx passes (the one HTTP client is in [`crate::remote::probe`]).
async fn http_ok(url: String) -> std::result::Result<(), String> {
    match crate::remote::probe::http_status(&url).await? {
        c if (200..300).contains(&c) => Ok(()),
        c => Err(format!("HTTP status {c}")),
    }
}
