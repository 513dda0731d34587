//! The executor: runs the expanded playbook on real hosts.
//!
//! It is an explicit state machine over the DAG's scheduler: ready steps
//! start together, a step's hosts run in rolling batches (`serial`) with at
//! most `--forks` hosts in flight across all steps, and a batch's gates
//! (job result, `wait`) decide before the next batch starts. Every host
//! decides what to do with the same function the plan uses, from state read
//! just before acting, and reports `changed` from state read just after.
//! Results stream to the journal as they happen; reporting to the person
//! is a separate [`Progress`] sink.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::carrier::Session;
use crate::cli::Loaded;
use crate::error::{Error, Result};
use crate::facts::UnitFacts;
use crate::maintenance::{MaintenanceGoal, MaintenanceState, HOST_SCOPE};
use crate::module::{decide_service, Action, ServiceGoal};
use crate::plan::{failure_exceeded, goal_of, pick_any, Status};
use crate::playbook::{Module, ServiceState, Step, Strategy, UnitFileGoal, Wait};
use crate::report::{now_rfc3339, JobReport, JobResult, Journal};
use crate::systemd::{StateRead, Systemd};
use crate::unit::UnitName;
use crate::unitfile::UnitFileWant;

/// Where per-result events go while the run goes on.
pub trait Progress: Send + Sync {
    /// A step starts on `hosts` hosts.
    fn step_started(&self, step: &str, hosts: usize);
    /// One result is final.
    fn result(&self, r: &JobResult);
    /// A step is over.
    fn step_finished(&self, step: &str);
}

/// Set by SIGINT/SIGTERM: start nothing new, let in-flight jobs end.
#[derive(Debug, Default)]
pub struct StopFlag {
    stopped: AtomicBool,
    why: Mutex<Option<String>>,
}

impl StopFlag {
    /// Request a graceful stop.
    pub fn stop(&self, why: &str) {
        if let Ok(mut w) = self.why.lock() {
            w.get_or_insert_with(|| why.to_string());
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn reason(&self) -> String {
        self.why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "signal".into())
    }
}

/// Refuse (403, exit 3) before anything happens if a step would stop,
/// restart or mask a unit the inventory protects on some host.
pub fn check_protected(l: &Loaded, allow: bool) -> Result<()> {
    if allow {
        return Ok(());
    }
    for (si, step) in l.playbook.steps.iter().enumerate() {
        let goal = goal_of(&step.module);
        let disruptive = matches!(
            goal.state,
            Some(ServiceState::Stopped | ServiceState::Restarted)
        ) || goal.masked == Some(true);
        if !disruptive {
            continue;
        }
        for task in &l.expanded[si].tasks {
            let host = &l.inventory.hosts[task.host];
            if task.when && host.protected.contains(&task.unit) {
                return Err(Error::Refused(format!(
                    "step `{}` would stop/restart/mask {} on host `{}`, which the inventory marks protected; pass --allow-protected if that is intended",
                    step.id, task.unit, host.name
                )));
            }
        }
    }
    Ok(())
}

/// A host's connection for one run: `Err` if it could not be made; the
/// session is taken out when released.
type Slot = tokio::sync::OnceCell<std::result::Result<Mutex<Option<Arc<Session>>>, String>>;

fn open_slot(s: Session) -> Mutex<Option<Arc<Session>>> {
    Mutex::new(Some(Arc::new(s)))
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

/// Everything the host workers share.
struct Run<'a> {
    l: &'a Loaded,
    /// One connection per host, made up front (linear) or on first use
    /// (free), closed as soon as the host has no step left.
    slots: Vec<Slot>,
    /// Steps not yet finished that may work on each host (linear): at zero
    /// the host's connection is released.
    pending: Vec<std::sync::atomic::AtomicUsize>,
    /// Connections being closed in the background; awaited before the
    /// report.
    closing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    failed_at: Mutex<Vec<Option<String>>>,
    aborted_at: Mutex<Option<String>>,
    forks: Semaphore,
    stop: &'a StopFlag,
    journal: Option<&'a Journal>,
    progress: &'a dyn Progress,
    results: Mutex<Vec<(usize, usize, JobResult)>>,
    order_of: Vec<usize>,
    step_timeout: Duration,
    /// Each host's maintenance flags, read once per run and kept up to date
    /// by the run's own `maintenance:` steps.
    maint: Mutex<Vec<Option<MaintenanceState>>>,
    /// Serialises `maintenance:` writes per host.
    maint_write: Vec<tokio::sync::Mutex<()>>,
}

/// The inputs of one run.
pub struct RunSpec<'a> {
    /// The validated model.
    pub loaded: &'a Loaded,
    /// Hosts in flight at once.
    pub forks: usize,
    /// Graceful-stop flag (signals).
    pub stop: &'a StopFlag,
    /// The journal, if any.
    pub journal: Option<&'a Journal>,
    /// Progress sink.
    pub progress: &'a dyn Progress,
    /// UUID of this run.
    pub job_id: String,
    /// Upper bound on one host's work in one step (read, act, gate).
    pub step_timeout: Duration,
}

/// Connect to every host the run may touch, run the DAG, close the
/// sessions and return the report.
pub async fn execute(spec: RunSpec<'_>) -> JobReport {
    let l = spec.loaded;
    let started_at = now_rfc3339();
    let mut involved = BTreeSet::new();
    for ex in &l.expanded {
        involved.extend(ex.tasks.iter().map(|t| t.host));
    }
    let involved: Vec<usize> = involved.into_iter().collect();
    let hosts: Vec<crate::inventory::Host> = involved
        .iter()
        .map(|i| l.inventory.hosts[*i].clone())
        .collect();
    let slots: Vec<Slot> = (0..l.inventory.hosts.len())
        .map(|_| tokio::sync::OnceCell::new())
        .collect();
    if l.playbook.strategy == Strategy::Linear {
        // `_any` picks need to know who is reachable before the first step.
        for r in crate::fanout::connect_all(&hosts, spec.forks.max(1)).await {
            let h = involved[r.index];
            let _ = slots[h].set(r.result.map(open_slot).map_err(|e| e.to_string()));
        }
    }
    let mut order_of = vec![0; l.playbook.steps.len()];
    for (pos, s) in l.dag.order().iter().enumerate() {
        order_of[*s] = pos;
    }
    let mut pending = vec![0usize; l.inventory.hosts.len()];
    for ex in &l.expanded {
        for h in ex.targets.candidates() {
            pending[h] += 1;
        }
    }
    let run = Run {
        l,
        slots,
        pending: pending
            .into_iter()
            .map(std::sync::atomic::AtomicUsize::new)
            .collect(),
        closing: Mutex::new(Vec::new()),
        failed_at: Mutex::new(vec![None; l.inventory.hosts.len()]),
        aborted_at: Mutex::new(None),
        forks: Semaphore::new(spec.forks.max(1)),
        stop: spec.stop,
        journal: spec.journal,
        progress: spec.progress,
        results: Mutex::new(Vec::new()),
        order_of,
        step_timeout: spec.step_timeout,
        maint: Mutex::new(vec![None; l.inventory.hosts.len()]),
        maint_write: (0..l.inventory.hosts.len())
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
    };
    if l.playbook.strategy == Strategy::Linear {
        // `_any` never picks a host in maintenance: know the flags first.
        futures_util::future::join_all(involved.iter().map(|&h| host_maintenance(&run, h))).await;
    }

    let mut started = vec![false; l.playbook.steps.len()];
    match l.playbook.strategy {
        Strategy::Linear => run_linear(&run, &mut started).await,
        Strategy::Free => {
            run_free(&run, &involved).await;
            started.iter_mut().for_each(|s| *s = true);
        }
    }
    // Steps that never started (interrupted) are reported skipped.
    let why = format!("skipped: run interrupted by {}", run.stop.reason());
    for (s, was) in started.iter().enumerate() {
        if !*was {
            let hosts = step_hosts(&run, s);
            for h in hosts {
                record_skip(&run, s, h, &why);
            }
        }
    }

    let Run {
        slots,
        results,
        closing,
        ..
    } = run;
    crate::fanout::close_all(
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
    let outcome = if spec.stop.is_stopped() {
        "interrupted"
    } else if results.iter().any(|(_, _, r)| {
        r.error
            .as_deref()
            .is_some_and(|e| e.starts_with("skipped: run aborted"))
    }) {
        "aborted"
    } else {
        "completed"
    };
    JobReport {
        job_id: spec.job_id,
        playbook: l.playbook.name.clone(),
        started_at,
        finished_at: now_rfc3339(),
        outcome: outcome.to_string(),
        results: results.into_iter().map(|(_, _, r)| r).collect(),
    }
}

/// Linear: the DAG's state machine; a step's hosts all finish before its
/// dependents start. Ready steps run concurrently.
async fn run_linear(run: &Run<'_>, started: &mut [bool]) {
    let mut sched = run.l.dag.scheduler();
    let mut running = FuturesUnordered::new();
    loop {
        if !run.stop.is_stopped() {
            for s in sched.take_ready() {
                started[s] = true;
                running.push(run_step(run, s));
            }
        }
        match running.next().await {
            Some(s) => {
                sched.finish(s);
                for h in run.l.expanded[s].targets.candidates() {
                    if run.pending[h].fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                        release(run, h);
                    }
                }
            }
            None => break,
        }
    }
}

/// Free: every host walks the steps in DAG order on its own, at most
/// `--forks` hosts at a time; a host that fails skips its later steps.
async fn run_free(run: &Run<'_>, involved: &[usize]) {
    let order = run.l.dag.order();
    for &si in order {
        let n = run.l.expanded[si].targets.fixed.len();
        run.progress.step_started(&run.l.playbook.steps[si].id, n);
    }
    let hosts = futures_util::stream::iter(involved.iter().copied())
        .map(|h| async move {
            let mine: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&si| run.l.expanded[si].targets.fixed.binary_search(&h).is_ok())
                .collect();
            // The host runs its steps back to back: each step's last reading
            // also reads the next step's unit.
            let mut carry = None;
            for (k, &si) in mine.iter().enumerate() {
                if run.stop.is_stopped() {
                    let why = format!("skipped: run interrupted by {}", run.stop.reason());
                    record_skip(run, si, h, &why);
                    continue;
                }
                let step = &run.l.playbook.steps[si];
                let next = mine.get(k + 1).and_then(|&n| next_reading(run, n, h));
                if run_host(run, si, step, h, &mut carry, next).await == Status::Failed {
                    if let Ok(mut f) = run.failed_at.lock() {
                        f[h].get_or_insert_with(|| step.id.clone());
                    }
                }
            }
            release(run, h);
        })
        .buffer_unordered(run.forks.available_permits().max(1));
    hosts.collect::<Vec<()>>().await;
    for &si in order {
        run.progress.step_finished(&run.l.playbook.steps[si].id);
    }
}

/// The hosts a step works on now: fixed targets plus one pick per `_any`
/// group among hosts that are reachable and have not failed.
fn step_hosts(run: &Run<'_>, si: usize) -> Vec<usize> {
    let ex = &run.l.expanded[si];
    let failed = run.failed_at.lock().map(|f| f.clone()).unwrap_or_default();
    let maint = run.maint.lock().map(|m| m.clone()).unwrap_or_default();
    let usable = |h: usize| {
        run.slots[h].get().is_some_and(|r| r.is_ok())
            && failed.get(h).is_some_and(|f| f.is_none())
            && maint
                .get(h)
                .is_some_and(|m| m.as_ref().is_some_and(|m| m.host.is_none()))
    };
    let mut set: BTreeSet<usize> = ex.targets.fixed.iter().copied().collect();
    for g in &ex.targets.any {
        if let Some(h) = pick_any(g, usable).or_else(|| g.first().copied()) {
            set.insert(h);
        }
    }
    set.into_iter().collect()
}

fn push(run: &Run<'_>, si: usize, h: usize, r: JobResult) {
    if let Some(j) = run.journal {
        j.record(&r);
    }
    run.progress.result(&r);
    if let Ok(mut v) = run.results.lock() {
        v.push((run.order_of[si], h, r));
    }
}

fn record_skip(run: &Run<'_>, si: usize, h: usize, why: &str) {
    let l = run.l;
    let unit = l.expanded[si]
        .task(h)
        .map(|t| t.unit.to_string())
        .unwrap_or_default();
    push(
        run,
        si,
        h,
        JobResult {
            hostname: l.inventory.hosts[h].name.clone(),
            status: Status::Skipped,
            name: unit,
            changed: false,
            error: Some(why.to_string()),
            step: l.playbook.steps[si].id.clone(),
            action: "none".into(),
            duration_ms: 0,
        },
    );
}

async fn run_step(run: &Run<'_>, si: usize) -> usize {
    let step = &run.l.playbook.steps[si];
    let hosts = step_hosts(run, si);
    run.progress.step_started(&step.id, hosts.len());
    let batch_size = step
        .serial
        .map_or(hosts.len().max(1), |s| s.batch_size(hosts.len()));
    let mut failed_here = 0usize;
    for batch in hosts.chunks(batch_size) {
        let aborted = run.aborted_at.lock().ok().and_then(|a| a.clone());
        if let Some(a) = aborted {
            for &h in batch {
                record_skip(run, si, h, &format!("skipped: run aborted at step {a}"));
            }
            continue;
        }
        if run.stop.is_stopped() {
            let why = format!("skipped: run interrupted by {}", run.stop.reason());
            for &h in batch {
                record_skip(run, si, h, &why);
            }
            continue;
        }
        let outcomes = futures_util::future::join_all(batch.iter().map(|&h| async move {
            // Linear: other hosts run between a host's steps, so no
            // reading is carried from one step to the next.
            run_host(run, si, step, h, &mut None, None).await
        }))
        .await;
        for (h, status) in batch.iter().zip(outcomes) {
            if status == Status::Failed {
                failed_here += 1;
                if let Ok(mut f) = run.failed_at.lock() {
                    f[*h].get_or_insert_with(|| step.id.clone());
                }
            }
        }
        if failure_exceeded(failed_here, hosts.len(), step.max_fail_percentage) {
            if let Ok(mut a) = run.aborted_at.lock() {
                a.get_or_insert_with(|| step.id.clone());
            }
        }
    }
    run.progress.step_finished(&step.id);
    si
}

/// One host, one step: checks, read, decide, act, verify, record.
async fn run_host(
    run: &Run<'_>,
    si: usize,
    step: &Step,
    h: usize,
    carry: &mut Option<Reading>,
    next: Option<(UnitName, StateRead)>,
) -> Status {
    // A reading carried from the previous step is for this step only.
    let carried = carry.take();
    let l = run.l;
    let host = &l.inventory.hosts[h];
    let Some(task) = l.expanded[si].task(h) else {
        return Status::Skipped;
    };
    let prior = run
        .failed_at
        .lock()
        .ok()
        .and_then(|f| f.get(h).cloned().flatten());
    if let Some(f) = prior {
        record_skip(run, si, h, &format!("skipped: failed at step {f}"));
        return Status::Skipped;
    }
    if !task.when {
        record_skip(run, si, h, "skipped: `when` condition is false");
        return Status::Skipped;
    }
    let mut r = JobResult {
        hostname: host.name.clone(),
        status: Status::Failed,
        name: task.unit.to_string(),
        changed: false,
        error: None,
        step: step.id.clone(),
        action: "none".into(),
        duration_ms: 0,
    };
    let slot = run.slots[h]
        .get_or_init(|| async {
            crate::carrier::connect(host)
                .await
                .map(open_slot)
                .map_err(|e| format!("unreachable: {e}"))
        })
        .await;
    let session = match slot.as_ref().map(|m| m.lock().ok().and_then(|s| s.clone())) {
        Ok(Some(s)) => s,
        Ok(None) => {
            r.error = Some("internal: the host's connection was already closed".into());
            push(run, si, h, r);
            return Status::Failed;
        }
        Err(e) => {
            r.error = Some(e.clone());
            push(run, si, h, r);
            return Status::Failed;
        }
    };
    let _permit = run.forks.acquire().await;
    let t0 = Instant::now();
    let is_maintenance = matches!(step.module, Module::Maintenance { .. });
    if !step.ignore_maintenance && !is_maintenance {
        match host_maintenance(run, h).await {
            Ok(m) => {
                if let Some(why) = m.skip_reason(task.unit.as_str()) {
                    record_skip(run, si, h, &why);
                    return Status::Skipped;
                }
            }
            Err(e) => {
                r.error = Some(e);
                push(run, si, h, r);
                return Status::Failed;
            }
        }
    }
    let goal = goal_of(&step.module);
    let work = async {
        match &step.module {
            Module::Service { .. } => {
                apply_service(
                    session.systemd(),
                    &task.unit,
                    &goal,
                    step.wait.as_ref(),
                    l,
                    h,
                    carried,
                    next.as_ref().map(|(u, w)| (u, *w)),
                )
                .await
            }
            Module::Maintenance { enable, .. } => {
                apply_maintenance(run, &session, task, *enable, h).await
            }
            Module::Unit { state, .. } => {
                let content = task.content.as_deref().unwrap_or_default();
                let want = match state {
                    UnitFileGoal::Present => UnitFileWant::Present(content),
                    UnitFileGoal::Absent => UnitFileWant::Absent,
                };
                let o = crate::unitfile::apply_unit(&session, &task.unit, &want).await;
                match o.error {
                    Some(error) => Err(Failed {
                        changed: o.changed,
                        action: joined(&o.done),
                        error,
                    }),
                    None => Ok(Done {
                        changed: o.changed,
                        action: joined(&o.done),
                        next: None,
                    }),
                }
            }
        }
    };
    // An unattended run must never hang: whatever systemd or the network
    // does, one host's step ends by this deadline.
    let outcome = match tokio::time::timeout(run.step_timeout, work).await {
        Ok(o) => o,
        Err(_) => Err(Failed {
            changed: false,
            action: "unknown".into(),
            error: format!(
                "timed out after {} (a systemd job may still be running on the host)",
                humantime::format_duration(run.step_timeout)
            ),
        }),
    };
    r.duration_ms = t0.elapsed().as_millis() as u64;
    match outcome {
        Ok(done) => {
            r.status = Status::Ok;
            r.changed = done.changed;
            r.action = done.action;
            *carry = done.next;
        }
        Err(fail) => {
            r.action = fail.action;
            r.changed = fail.changed;
            r.error = Some(fail.error);
        }
    }
    let status = r.status;
    push(run, si, h, r);
    status
}

struct Done {
    changed: bool,
    action: String,
    /// The next step's unit, read together with this step's last reading.
    next: Option<Reading>,
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
/// `--forks` slot could take longer, and then the step reads again.
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
    let step = &run.l.playbook.steps[si];
    if !matches!(step.module, Module::Service { .. }) {
        return None;
    }
    let task = run.l.expanded[si].task(h).filter(|t| t.when)?;
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
    let m = crate::maintenance::read(&session).await?;
    if let Ok(mut cache) = run.maint.lock() {
        if let Some(slot) = cache.get_mut(h) {
            *slot = Some(m.clone());
        }
    }
    Ok(m)
}

/// A `maintenance:` step on one host.
async fn apply_maintenance(
    run: &Run<'_>,
    session: &Session,
    task: &crate::plan::HostTask,
    enable: bool,
    h: usize,
) -> std::result::Result<Done, Failed> {
    let goal = MaintenanceGoal {
        enable,
        reason: task.content.as_deref().unwrap_or_default().to_string(),
        unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
    };
    let _w = run.maint_write[h].lock().await;
    let (action, now) = crate::maintenance::apply_goal_on(session, &goal)
        .await
        .map_err(|error| Failed {
            changed: false,
            action: if enable {
                "maintenance-on"
            } else {
                "maintenance-off"
            }
            .into(),
            error,
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
    })
}

struct Failed {
    changed: bool,
    action: String,
    error: String,
}

fn joined(actions: &[Action]) -> String {
    if actions.is_empty() {
        "none".into()
    } else {
        actions
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Whether systemd's state really differs between two readings.
pub fn really_changed(before: &UnitFacts, after: &UnitFacts) -> bool {
    before.active_state != after.active_state
        || before.unit_file_state != after.unit_file_state
        || before.load_state != after.load_state
        || before.invocation_id != after.invocation_id
}

async fn read_one(
    sd: &Systemd,
    unit: &UnitName,
    what: StateRead,
) -> std::result::Result<UnitFacts, String> {
    sd.unit_state(unit, what)
        .await
        .map_err(|e| format!("cannot read {unit}: {e}"))
}

/// Bring one unit to `goal`, verifying with systemd at each step.
#[allow(clippy::too_many_arguments)]
async fn apply_service(
    sd: &Systemd,
    unit: &UnitName,
    goal: &ServiceGoal,
    wait: Option<&Wait>,
    l: &Loaded,
    h: usize,
    carried: Option<Reading>,
    next: Option<(&UnitName, StateRead)>,
) -> std::result::Result<Done, Failed> {
    let fail = |changed: bool, actions: &[Action], error: String| Failed {
        changed,
        action: joined(actions),
        error,
    };
    let mut fs = reads_for(goal);
    // The previous step's last reading, if it covers what this step needs.
    let carried = carried.filter(|c| {
        c.unit == *unit && c.at.elapsed() < CARRY_FRESH && (c.what.file_state || !fs.file_state)
    });
    let (mut before, have_invocation) = match carried {
        Some(c) => (c.facts, c.what.invocation),
        None => (
            read_one(sd, unit, fs)
                .await
                .map_err(|e| fail(false, &[], e))?,
            false,
        ),
    };
    let d = decide_service(unit.as_str(), goal, &before);
    if let Some(e) = d.error {
        return Err(fail(false, &d.actions, e));
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
            before.invocation_id = sd
                .invocation_id(unit)
                .await
                .map_err(|e| fail(false, &[], format!("cannot read {unit}: {e}")))?;
        }
    } else {
        before.invocation_id.clear();
    }
    if !fs.file_state {
        before.unit_file_state.clear();
    }
    if d.actions.is_empty() && wait.is_none() {
        // Nothing to do and nothing to wait for: the reading stands.
        return Ok(Done {
            changed: false,
            action: joined(&[]),
            next: None,
        });
    }
    let mut done: Vec<Action> = Vec::new();
    for a in &d.actions {
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
                return Err(fail(
                    false,
                    &done,
                    format!("internal: `{other}` is not a service operation"),
                ))
            }
        };
        done.push(*a);
        match res {
            Err(e) => {
                let changed = read_one(sd, unit, fs)
                    .await
                    .map(|now| really_changed(&before, &now))
                    .unwrap_or(false);
                return Err(fail(changed, &done, format!("{a} {unit}: {e}")));
            }
            Ok(Some(job)) if !job.ok() => {
                let changed = read_one(sd, unit, fs)
                    .await
                    .map(|now| really_changed(&before, &now))
                    .unwrap_or(true);
                return Err(fail(
                    changed,
                    &done,
                    job.error_message()
                        .unwrap_or_else(|| format!("job {}", job.result)),
                ));
            }
            Ok(_) => {}
        }
    }
    if let Some(w) = wait {
        if let Err(e) = gate(sd, unit, w, l, h).await {
            let changed = read_one(sd, unit, fs)
                .await
                .map(|now| really_changed(&before, &now))
                .unwrap_or(true);
            return Err(fail(changed, &done, e));
        }
    }
    // The last reading, and with it (same round trip) the first one of the
    // host's next step.
    let (after, next) = match next {
        Some((next_unit, next_what)) => {
            let mut both = sd
                .unit_states(&[(unit, fs), (next_unit, next_what)])
                .await
                .map_err(|e| fail(!done.is_empty(), &done, format!("cannot read {unit}: {e}")))?;
            let next = both.pop().map(|facts| Reading {
                unit: next_unit.clone(),
                what: next_what,
                facts,
                at: Instant::now(),
            });
            match both.pop() {
                Some(after) => (after, next),
                None => {
                    return Err(fail(
                        !done.is_empty(),
                        &done,
                        format!("cannot read {unit}: no answer"),
                    ))
                }
            }
        }
        None => (
            read_one(sd, unit, fs)
                .await
                .map_err(|e| fail(!done.is_empty(), &done, e))?,
            None,
        ),
    };
    // A unit that ended up failed is never a success, whatever the job said.
    if after.active_state == "failed" && goal.state.is_some_and(|s| s != ServiceState::Stopped) {
        return Err(fail(
            really_changed(&before, &after),
            &done,
            format!("unit {unit} entered failed state ({})", after.sub_state),
        ));
    }
    // A reload changes no property systemd exposes but did happen.
    let changed = really_changed(&before, &after) || done.contains(&Action::Reload);
    Ok(Done {
        changed,
        action: joined(&done),
        next,
    })
}

/// The `wait:` gate: unit active, HTTP 2xx, TCP accepts — within the timeout.
async fn gate(
    sd: &Systemd,
    unit: &UnitName,
    w: &Wait,
    l: &Loaded,
    h: usize,
) -> std::result::Result<(), String> {
    let deadline = tokio::time::Instant::now() + w.timeout;
    let ctx = l.playbook.templates.host_context(&l.inventory.hosts[h]);
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
                let u = read_one(sd, unit, StateRead::default()).await?;
                let (now, note) = crate::health::unit_health(&u, None);
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
        let addr = l.playbook.templates.render(t, &ctx)?;
        probe(deadline, w.timeout, &format!("tcp {addr}"), || {
            tcp_ok(addr.clone())
        })
        .await?;
    }
    if let Some(t) = w.http {
        let url = l.playbook.templates.render(t, &ctx)?;
        probe(deadline, w.timeout, &format!("http {url}"), || {
            http_ok(url.clone())
        })
        .await?;
    }
    Ok(())
}

/// Wait for ActiveState=active, driven by systemd's PropertiesChanged
/// signal (no polling); `failed`/`inactive` end the wait at once.
async fn wait_active(
    sd: &Systemd,
    unit: &UnitName,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let proxy = crate::systemd::UnitProxy::builder(sd.connection())
        .path(crate::systemd::unit_object_path(unit.as_str()))
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

/// `wait.http`: 2xx passes (the one HTTP client is in [`crate::health`]).
async fn http_ok(url: String) -> std::result::Result<(), String> {
    match crate::health::http_status(&url).await? {
        c if (200..300).contains(&c) => Ok(()),
        c => Err(format!("HTTP status {c}")),
    }
}
