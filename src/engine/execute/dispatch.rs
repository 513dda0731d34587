//! A run whose hosts are worked by their owners (cluster mode): the walk
//! stays here, on the coordinator, deciding order, batches, `_any`, the
//! failure policy and the window exactly as a single process does; each
//! of its questions about one host (connect, maintenance, in service, the
//! step's work) is a task asked of the worker that owns the host
//! ([`HostTasks`]). The worker answers it with [`answer_task`]: apply's
//! own host action over its warm connection, so what is done on a host is
//! the same code either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OnceCell, Semaphore};

use super::{Do, Ledger, Ran, RunSpec};
use crate::engine::clock::Clock;
use crate::engine::events::{NoEvents, StopFlag};
use crate::engine::execute::host::host_maintenance;
use crate::engine::job::Job;
use crate::engine::walk::{Finished, HostAction, Presence, Work};
use crate::model::cluster::{intent_name, TaskJob, TaskOp, TaskReply, TaskRequest, PROTOCOL};
use crate::model::inventory::Host;
use crate::model::maintenance::MaintenanceState;
use crate::model::outcome::{Failure, Outcome, SkipReason};
use crate::model::playbook::Operation;
use crate::model::playbook::ServiceState;
use crate::model::report::JobResult;
use crate::model::unit::UnitName;
use crate::remote::pool::Pool;

/// Beyond the step's own bound, what a task's answer may take to come back
/// (the trip to the worker, a journal read on failure).
const TASK_MARGIN: Duration = Duration::from_secs(10);

/// Why a task got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// It reached no worker (none owns the host now): nothing was done.
    NotDelivered(String),
    /// A worker took it and did not answer in time (or the answer was
    /// lost): for work, the host's state is unknown.
    NoAnswer(String),
}

/// Where a run's host work is asked for: the owner of each host.
#[async_trait]
pub trait HostTasks: Send + Sync + std::fmt::Debug {
    /// Ask `host`'s owner to do `req`, waiting up to `bound` for its answer.
    async fn ask(
        &self,
        host: &Host,
        req: TaskRequest,
        bound: Duration,
    ) -> Result<TaskReply, Unanswered>;
}

/// How long a task that reached no owner, or a stale one, is sent again
/// before the host counts as unreachable: a lease moves within its TTL
/// (15 s by default), plus a tick.
const OWNER_WAIT: Duration = Duration::from_secs(30);
/// Between two sends of such a task.
const OWNER_RETRY: Duration = Duration::from_millis(500);
/// How often a coordinator asks whether work that has not answered is
/// still being done.
const WORKING_EVERY: Duration = Duration::from_secs(1);

/// What every task of `job` carries of it: its text, parameters and
/// digests, so that the worker rebuilds and checks the same job.
pub fn task_job(
    job: &Job,
    job_id: &str,
    allow_protected: bool,
    step_timeout: Duration,
    failure_logs: u32,
) -> TaskJob {
    let inputs = job.inputs();
    TaskJob {
        job_id: job_id.to_string(),
        label: job.playbook.path.display().to_string(),
        text: job.playbook.source.to_string(),
        params: job.params.values().clone(),
        playbook: inputs.playbook,
        inventory: inputs.inventory,
        params_digest: inputs.params,
        limit: job.limit.clone(),
        allow_protected,
        step_timeout_ms: u64::try_from(step_timeout.as_millis()).unwrap_or(u64::MAX),
        failure_logs,
    }
}

/// Apply's [`HostAction`] in cluster mode: each question about a host is
/// a task for its owner.
pub(crate) struct Dispatch<'a> {
    pub(super) spec: RunSpec<'a>,
    tasks: Arc<dyn HostTasks>,
    /// What every task carries of the job.
    job: TaskJob,
    /// Each host's connection on its owner: made once per run.
    connected: Vec<OnceCell<Result<(), String>>>,
    /// Each host's flags say the whole host is in maintenance (or they
    /// could not be read); true until known.
    in_maintenance: Vec<AtomicBool>,
    forks: Semaphore,
    ledger: Ledger,
}

impl<'a> Dispatch<'a> {
    pub(super) fn new(spec: RunSpec<'a>, tasks: Arc<dyn HostTasks>) -> Self {
        let job = spec.job;
        let n = job.inventory.hosts.len();
        let task_job = task_job(
            job,
            &spec.job_id,
            spec.allow_protected,
            spec.step_timeout,
            spec.failure_logs,
        );
        Dispatch {
            forks: Semaphore::new(spec.forks.max(1)),
            tasks,
            job: task_job,
            connected: (0..n).map(|_| OnceCell::new()).collect(),
            in_maintenance: (0..n).map(|_| AtomicBool::new(true)).collect(),
            ledger: Ledger::new(job),
            spec,
        }
    }

    /// The step's work on host `h`, asked of its owner, which is asked
    /// every [`WORKING_EVERY`] whether it still works on it: an owner that
    /// died (or was cut off) mid-work says nothing, its successor says
    /// no, twice; the work is then sent again to the successor, which
    /// reads the host before doing anything.
    async fn work_watched(
        &self,
        h: usize,
        step: usize,
        failed_at: Option<String>,
    ) -> Result<TaskReply, String> {
        let host = &self.spec.job.inventory.hosts[h];
        // Sent again at most until the step's time and an owner's wait are
        // over: a host whose owner keeps refusing (its fence holds another
        // deployment's lease) fails the step instead of holding the job.
        let t0 = tokio::time::Instant::now();
        let bound = self.spec.step_timeout + TASK_MARGIN + OWNER_WAIT;
        // A job taken over from a replica that died: its work here may
        // have been under way, so the owner reads the host first.
        let mut again = self.spec.carry.is_some_and(|c| c.maybe_in_flight(step, h));
        loop {
            let op = TaskOp::Work {
                step,
                failed_at: failed_at.clone(),
                again,
            };
            let work = self.ask(h, op);
            tokio::pin!(work);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + WORKING_EVERY,
                WORKING_EVERY,
            );
            let mut denied = 0;
            loop {
                tokio::select! {
                    r = &mut work => return r,
                    _ = tick.tick() => {
                        let req = self.request(h, TaskOp::Working { step });
                        match self.tasks.ask(host, req, WORKING_EVERY).await {
                            Ok(TaskReply::Working(true)) => denied = 0,
                            Ok(TaskReply::Working(false)) => denied += 1,
                            // No owner now, or no answer: wait on.
                            _ => {}
                        }
                        if denied >= 2 {
                            break;
                        }
                    }
                }
            }
            if t0.elapsed() >= bound {
                return Err(format!(
                    "{}'s owner did not answer the step's work within {}; the unit's state is unknown",
                    host.name,
                    humantime::format_duration(bound)
                ));
            }
            tracing::warn!(host = %host.name, step, "the host's owner is no longer working on it: sent again, to be read before anything is done");
            again = true;
        }
    }

    pub(super) fn finish(self) -> Vec<JobResult> {
        self.ledger.into_results()
    }

    /// `op` on host `h`, as a task of this job.
    fn request(&self, h: usize, op: TaskOp) -> TaskRequest {
        TaskRequest {
            protocol: PROTOCOL,
            job: self.job.clone(),
            host: self.spec.job.inventory.hosts[h].name.clone(),
            op,
        }
    }

    async fn ask(&self, h: usize, op: TaskOp) -> Result<TaskReply, String> {
        let host = &self.spec.job.inventory.hosts[h];
        let req = self.request(h, op);
        let bound = self.spec.step_timeout + TASK_MARGIN;
        let t0 = tokio::time::Instant::now();
        loop {
            // Nothing was done: the host's new owner (a lease moving after
            // a worker died, or was stopped, or cut off) gets it again.
            let again = match self.tasks.ask(host, req.clone(), bound).await {
                Ok(TaskReply::Refused(why)) => {
                    return Err(format!("the host's worker refused: {why}"))
                }
                Ok(TaskReply::Stale(why)) => why,
                Ok(reply) => return Ok(reply),
                Err(Unanswered::NotDelivered(why)) => why,
                Err(Unanswered::NoAnswer(why)) => return Err(why),
            };
            if t0.elapsed() >= OWNER_WAIT {
                return Err(again);
            }
            tracing::debug!(host = %host.name, "task sent again: {again}");
            tokio::time::sleep(OWNER_RETRY).await;
        }
    }
}

/// A reply of another kind than the question's.
fn unexpected(r: &TaskReply) -> String {
    format!("the host's worker answered another question: {r:?}")
}

impl HostAction for Dispatch<'_> {
    type Conn = ();
    type Lane = ();
    type Detail = Ran;
    type Error = std::convert::Infallible;

    fn presence(&self, h: usize) -> Presence {
        Presence {
            reachable: self.connected[h].get().is_some_and(|r| r.is_ok()),
            in_maintenance: self.in_maintenance[h].load(Ordering::SeqCst),
        }
    }

    async fn survey(&self, involved: &[usize]) {
        use futures_util::StreamExt;
        futures_util::stream::iter(involved.iter().copied())
            .map(|h| async move {
                let _ = self.connect(h).await;
            })
            .buffer_unordered(self.spec.forks.max(1))
            .collect::<Vec<()>>()
            .await;
    }

    async fn connect(&self, h: usize) -> Result<(), Failure> {
        let r = self.connected[h]
            .get_or_init(|| async {
                match self.ask(h, TaskOp::Connect).await {
                    Ok(TaskReply::Connected {
                        result,
                        in_maintenance,
                    }) => {
                        self.in_maintenance[h].store(in_maintenance, Ordering::SeqCst);
                        result
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                }
            })
            .await;
        r.clone().map_err(Failure::Unreachable)
    }

    async fn maintenance(&self, h: usize, unit: &UnitName) -> Result<Option<SkipReason>, String> {
        let op = TaskOp::Maintenance {
            unit: unit.to_string(),
        };
        match self.ask(h, op).await? {
            TaskReply::Maintenance(r) => r,
            other => Err(unexpected(&other)),
        }
    }

    async fn in_service(&self, h: usize, unit: &UnitName, member_only: bool) -> Result<(), String> {
        let op = TaskOp::InService {
            unit: unit.to_string(),
            member_only,
        };
        match self.ask(h, op).await {
            Ok(TaskReply::InService(r)) => r,
            Ok(other) => Err(format!("unknown: {}", unexpected(&other))),
            Err(e) => Err(format!("unknown: {e}")),
        }
    }

    async fn work(
        &self,
        _: (),
        w: Work<'_>,
        _: (),
        _: &mut (),
    ) -> Result<(Outcome, Ran), Self::Error> {
        let _permit = self.forks.acquire().await;
        let failed = |why: String| Outcome::Failed {
            failure: Failure::Error(why),
            changed: false,
        };
        Ok(match self.work_watched(w.h, w.si, w.failed_at).await {
            Ok(TaskReply::Worked {
                outcome,
                action,
                msg,
                logs,
            }) => (outcome, Ran { action, msg, logs }),
            Ok(other) => (failed(unexpected(&other)), Ran::default()),
            // No answer: the work may have been done or not.
            Err(e) => (
                failed(format!(
                    "{e}; the unit's state is unknown: read it before going on"
                )),
                Ran::default(),
            ),
        })
    }

    fn record(&self, f: Finished<Ran>) {
        self.ledger.record(&self.spec, f);
    }

    fn carry(&self, si: usize, h: usize, _batch: usize, r: &JobResult) {
        self.ledger.carry(&self.spec, si, h, r);
    }

    fn release(&self, _: usize) {}
}

/// A worker's maintenance flags of each (job, host) it worked, as the
/// job's own steps left them: a single process reads them once per run,
/// and so does a job worked task by task. Kept per lease revision: a host
/// that moved to another worker and back (whose steps may have changed
/// its flags meanwhile) is read again.
#[derive(Debug, Default)]
pub struct MaintCache {
    known: Mutex<HashMap<(String, String, u64), MaintenanceState>>,
}

/// Entries a worker keeps; past them it starts over (a read more each).
const MAINT_CACHE_MAX: usize = 100_000;

impl MaintCache {
    fn get(&self, job: &str, host: &str, lease: u64) -> Option<MaintenanceState> {
        let k = (job.to_string(), host.to_string(), lease);
        self.known.lock().ok()?.get(&k).cloned()
    }

    fn put(&self, job: &str, host: &str, lease: u64, m: MaintenanceState) {
        if let Ok(mut g) = self.known.lock() {
            if g.len() >= MAINT_CACHE_MAX {
                g.clear();
            }
            g.retain(|(j, h, _), _| !(j == job && h == host));
            g.insert((job.to_string(), host.to_string(), lease), m);
        }
    }
}

/// A worker's answer to one task of `job` (already checked against the
/// task's digests) on its host `h`, over `pool`'s warm connections: the
/// same host action a single process's apply runs.
///
/// `fence`: the worker's lease revision, raised on the host's fence before
/// any change; a host that keeps a newer one refuses the change
/// ([`TaskReply::Stale`]).
pub async fn answer_task(
    job: &Job,
    h: usize,
    req: &TaskRequest,
    pool: Option<Pool>,
    cache: &MaintCache,
    fence: Option<crate::remote::fence::FenceToken>,
) -> TaskReply {
    let stop = StopFlag::default();
    let clock = Clock::system();
    let spec = RunSpec {
        job,
        forks: 1,
        stop: &stop,
        journal: None,
        events: &NoEvents,
        job_id: req.job.job_id.clone(),
        step_timeout: Duration::from_millis(req.job.step_timeout_ms),
        allow_protected: req.job.allow_protected,
        pool,
        window: None,
        clock: &clock,
        carry: None,
        failure_logs: req.job.failure_logs,
        claims: None,
        claim_wait: Duration::ZERO,
        tasks: None,
    };
    let run = Do::new(spec);
    let host = &job.inventory.hosts[h].name;
    let lease = fence.map_or(0, |f| f.revision);
    if let Some(m) = cache.get(&req.job.job_id, host, lease) {
        if let Ok(mut g) = run.maint.lock() {
            g[h] = Some(m);
        }
    }
    let reply = answer_with(&run, h, &req.op, fence).await;
    let known = run.maint.lock().ok().and_then(|g| g[h].clone());
    if let Some(m) = known {
        cache.put(&req.job.job_id, host, lease, m);
    }
    // Pooled connections stay in the pool; one made for this task alone
    // (no pool) is closed.
    drop(run.finish().await);
    reply
}

async fn answer_with(
    run: &Do<'_>,
    h: usize,
    op: &TaskOp,
    fence: Option<crate::remote::fence::FenceToken>,
) -> TaskReply {
    let job = run.job;
    let unit = |u: &str| UnitName::parse(u).map_err(|e| format!("unit name: {e}"));
    match op {
        TaskOp::Connect => match run.connect(h).await {
            Ok(_) => {
                let m = host_maintenance(run, h).await;
                TaskReply::Connected {
                    result: Ok(()),
                    in_maintenance: m.map_or(true, |m| m.host.is_some()),
                }
            }
            Err(f) => TaskReply::Connected {
                result: Err(match f {
                    Failure::Unreachable(e) => e,
                    other => other.to_string(),
                }),
                in_maintenance: true,
            },
        },
        TaskOp::Maintenance { unit: u } => {
            let u = match unit(u) {
                Ok(u) => u,
                Err(e) => return TaskReply::Refused(e),
            };
            if let Err(f) = run.connect(h).await {
                return TaskReply::Maintenance(Err(f.to_string()));
            }
            TaskReply::Maintenance(run.maintenance(h, &u).await)
        }
        TaskOp::InService {
            unit: u,
            member_only,
        } => match unit(u) {
            Ok(u) => TaskReply::InService(run.in_service(h, &u, *member_only).await),
            Err(e) => TaskReply::Refused(e),
        },
        TaskOp::Working { .. } => TaskReply::Refused("not a host action".into()),
        TaskOp::Work {
            step,
            failed_at,
            again,
        } => {
            let (Some(s), Some(task)) = (
                job.playbook.steps.get(*step),
                job.expanded.get(*step).and_then(|ex| ex.task(h)),
            ) else {
                return TaskReply::Refused(format!("the job has no step {step} on this host"));
            };
            let session = match run.connect(h).await {
                Ok(s) => s,
                Err(f) => return worked_failed(f),
            };
            // A restart is the one change done again would do twice: its
            // intent (the unit's InvocationID before) is left on the host,
            // and a task sent again after its owner went silent reads it.
            let restarts = matches!(
                s.operation,
                Operation::Service {
                    state: Some(ServiceState::Restarted),
                    ..
                }
            );
            let name = intent_name(&run.spec.job_id, *step);
            if restarts && *again {
                match done_before(&session, &name, &task.unit, run.spec.step_timeout).await {
                    Ok(false) => {}
                    Ok(true) => {
                        return TaskReply::Worked {
                            outcome: Outcome::Ok { changed: true },
                            action: "restart".into(),
                            msg: Some(
                                "restarted by the host's previous owner, whose answer was lost: read again, not restarted again"
                                    .into(),
                            ),
                            logs: Vec::new(),
                        }
                    }
                    Err(e) => return worked_failed(Failure::Error(e)),
                }
            }
            let t0 = std::time::Instant::now();
            let before = match (restarts, fence) {
                (true, Some(_)) => match invocation(&session, &task.unit).await {
                    Ok(id) => Some(id),
                    Err(e) => return worked_failed(Failure::Error(e)),
                },
                _ => None,
            };
            let read = t0.elapsed();
            // The host checks that no newer owner changed it: a worker
            // whose lease moved while it was stopped changes nothing.
            if let Some(rev) = fence {
                let intent = before.as_deref().map(|b| (name.as_str(), b));
                match crate::remote::fence::advance(&session, rev, intent).await {
                    Ok(()) => {}
                    Err(f @ crate::remote::fence::Fenced::Stale { .. }) => {
                        tracing::warn!(host = %job.inventory.hosts[h].name, "{f}");
                        return TaskReply::Stale(f.to_string());
                    }
                    Err(f) => return worked_failed(Failure::Error(f.to_string())),
                }
            }
            tracing::debug!(host = %job.inventory.hosts[h].name, ?read, took = ?t0.elapsed(), "fence and intent");
            let w = Work {
                si: *step,
                h,
                step: s,
                task,
                failed_at: failed_at.clone(),
                next: None,
            };
            let mut lane = None;
            match run.work(session, w, None, &mut lane).await {
                Ok((outcome, ran)) => TaskReply::Worked {
                    outcome,
                    action: ran.action,
                    msg: ran.msg,
                    logs: ran.logs,
                },
                Err(never) => match never {},
            }
        }
    }
}

fn worked_failed(failure: Failure) -> TaskReply {
    TaskReply::Worked {
        outcome: Outcome::Failed {
            failure,
            changed: false,
        },
        action: "none".into(),
        msg: None,
        logs: Vec::new(),
    }
}

/// `unit`'s state on the host.
async fn unit_now(
    session: &crate::remote::carrier::Session,
    unit: &UnitName,
) -> Result<crate::model::facts::UnitFacts, String> {
    let mut facts = session
        .systemd()
        .unit_facts(std::slice::from_ref(unit))
        .await
        .map_err(|e| format!("cannot read {unit}: {e}"))?;
    Ok(facts
        .remove(unit.as_str())
        .unwrap_or_else(crate::model::facts::UnitFacts::not_found))
}

/// `unit`'s InvocationID now (empty: never started).
async fn invocation(
    session: &crate::remote::carrier::Session,
    unit: &UnitName,
) -> Result<String, String> {
    Ok(unit_now(session, unit).await?.invocation_id)
}

/// Whether the intent `name` on the host shows its restart done: once
/// the unit's pending systemd job (the previous owner's) has ended, its
/// InvocationID is not the one the intent recorded before. No intent:
/// the previous owner never got to it.
async fn done_before(
    session: &crate::remote::carrier::Session,
    name: &str,
    unit: &UnitName,
    bound: Duration,
) -> Result<bool, String> {
    let Some(before) = crate::remote::fence::intent(session, name).await? else {
        return Ok(false);
    };
    let before = before.trim();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let u = unit_now(session, unit).await?;
        let settling = u.job.is_some()
            || matches!(
                u.active_state.as_str(),
                "activating" | "deactivating" | "reloading"
            );
        if !settling {
            return Ok(!u.invocation_id.is_empty() && u.invocation_id != before);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{unit}'s pending job (the previous owner's) did not end within {}",
                humantime::format_duration(bound)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
