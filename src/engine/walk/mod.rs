//! The one walk of a job over its hosts, for plan and apply alike.
//!
//! The walk owns everything that decides *when* and *whether* a host works
//! on a step: steps in DAG order (linear: a step's hosts batch by batch,
//! ready steps together; a module call with `serial`: batch by batch
//! through all of its steps; free: every host through its steps on its
//! own), which host `_any` picks, rolling batches, `max_fail_percentage`,
//! a stop or the window's close (checked before each batch), and the
//! checks before a host's work in their one order (an
//! earlier failure or `when`, a protected unit, the connection,
//! maintenance). *What* happens on one host is a [`HostAction`]: the plan
//! predicts it from facts, apply does it on the host. The rules themselves
//! are [`crate::model::decide`]'s.

mod host;
mod safety;
mod schedule;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::engine::carry::{Carried, Carry};
use crate::engine::claims::ClaimStore;
use crate::engine::clock::Clock;
use crate::engine::events::{EventSink, StopFlag};
use crate::engine::job::Job;
use crate::model::decide::{pick_any, refuse_protected, Candidate, FailureLedger};
use crate::model::expand::HostTask;
use crate::model::outcome::{Failure, Outcome, SkipReason, Status};
use crate::model::playbook::{Step, Strategy, Window};
use crate::model::report::JobResult;
use crate::model::unit::UnitName;

/// What happens to one host in one step: predicted (the plan) or done
/// (apply). The walk calls these in its one order; an implementation
/// decides nothing about order, batches or skips.
pub(crate) trait HostAction {
    /// A host's connection: apply's session; nothing for the plan.
    type Conn;
    /// What a host carries from one of its steps to the next when it walks
    /// them back to back (`strategy: free`): apply's last reading.
    type Lane: Default;
    /// What the work reports beside its outcome: apply's operations and a
    /// module's message, the plan's predicted operations. The default is
    /// what a host that never reached its work reports.
    type Detail: Default;
    /// Why the walk cannot go on at all (the plan's facts lack a unit).
    type Error;

    /// The action's work never waits (a prediction): a batch's hosts are
    /// then walked one after another, in the order a join would finish
    /// them, without a boxed future each; and a result says no time, as
    /// such work takes none worth a report (two clock reads per
    /// host-step were 3% of a 500,000 host-step plan).
    const NEVER_WAITS: bool = false;

    /// What `_any` knows of a host when it picks.
    fn presence(&self, h: usize) -> Presence;

    /// Before the first step of a linear walk: learn what `_any` needs of
    /// these hosts (apply connects and reads their maintenance flags).
    async fn survey(&self, hosts: &[usize]);

    /// The host's connection, or why there is none.
    async fn connect(&self, h: usize) -> Result<Self::Conn, Failure>;

    /// Whether the host, or `unit` on it, is in maintenance (`Err`: the
    /// flags could not be read).
    async fn maintenance(&self, h: usize, unit: &UnitName) -> Result<Option<SkipReason>, String>;

    /// Whether the host is in service for `unit` (for `group_by`): `Err`
    /// says why not (maintenance, failing health, unreachable). With
    /// `member_only` (a host of the group the step does not work on), a
    /// host without the unit is in service: it runs no such service to
    /// be down. The plan cannot know and says yes.
    async fn in_service(&self, h: usize, unit: &UnitName, member_only: bool) -> Result<(), String>;

    /// The step's module on the host. `carried` is what the host's
    /// previous step left in its lane; what this step leaves for the next
    /// goes into `lane`.
    async fn work(
        &self,
        conn: Self::Conn,
        w: Work<'_>,
        carried: Self::Lane,
        lane: &mut Self::Lane,
    ) -> Result<(Outcome, Self::Detail), Self::Error>;

    /// A host's result in a step is final.
    fn record(&self, r: Finished<Self::Detail>);

    /// A host's result in a step is taken over from an earlier run (a
    /// retry's or a resume's [`Carry`]): nothing is done on the host.
    fn carry(&self, si: usize, h: usize, batch: usize, r: &JobResult);

    /// The walk has nothing more for this host.
    fn release(&self, h: usize);
}

/// What `_any` knows of a candidate besides the run's own bookkeeping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presence {
    /// A connection exists (or its facts say so).
    pub(crate) reachable: bool,
    /// The whole host is in maintenance (or this is not known yet).
    pub(crate) in_maintenance: bool,
}

/// One host's work in one step, as the walk hands it over.
pub(crate) struct Work<'a> {
    /// The step's index.
    pub(crate) si: usize,
    /// The host's inventory index.
    pub(crate) h: usize,
    pub(crate) step: &'a Step,
    pub(crate) task: &'a HostTask,
    /// The step the host failed at, if it did (an `on_failure` step's text).
    pub(crate) failed_at: Option<String>,
    /// The host's next step, when it follows at once (`strategy: free`).
    pub(crate) next: Option<usize>,
}

/// One host's final result in one step.
pub(crate) struct Finished<D> {
    pub(crate) si: usize,
    pub(crate) h: usize,
    /// Rolling batch number within the step (1-based).
    pub(crate) batch: usize,
    pub(crate) outcome: Outcome,
    pub(crate) detail: D,
    /// From the first check to the result (zero for a skip before any).
    pub(crate) elapsed: Duration,
    /// How long the host's batch waited for room in its group, and why
    /// (`group_by`), for the report.
    pub(crate) waited: Option<String>,
}

/// How a walk may go.
pub(crate) struct WalkOptions<'a> {
    /// Stop/restart/mask protected units (`--allow-protected`).
    pub(crate) allow_protected: bool,
    /// A graceful stop: nothing new starts once it is set.
    pub(crate) stop: Option<&'a StopFlag>,
    /// The window and the clock it is read on: no batch starts once it is
    /// closed.
    pub(crate) window: Option<(&'a Window, &'a Clock)>,
    /// Where StepStarted, BatchDone and StepFinished go.
    pub(crate) events: &'a dyn EventSink,
    /// Hosts walking their steps at once (`strategy: free`).
    pub(crate) lanes: usize,
    /// What an earlier run of this job already did (retry, resume).
    pub(crate) carry: Option<&'a Carry>,
    /// Where `group_by` claims room for each batch; None: nothing is
    /// claimed (the plan).
    pub(crate) claims: Option<WalkClaims<'a>>,
}

/// The claims a walk takes for `group_by`.
pub(crate) struct WalkClaims<'a> {
    /// Where they are kept (the server's, shared by its jobs).
    pub(crate) store: &'a dyn ClaimStore,
    /// The job they are taken for.
    pub(crate) job_id: &'a str,
    /// How long a batch waits for room in its groups.
    pub(crate) wait: Duration,
}

/// What a step looked like when it started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    /// The hosts `_any` picked, one per `_any` group.
    pub(crate) picked: Vec<usize>,
    /// Hosts per batch.
    pub(crate) batch_size: usize,
}

/// How a walk ended.
#[derive(Debug)]
pub(crate) struct WalkEnd {
    /// The step whose failures aborted the run.
    pub(crate) aborted_at: Option<String>,
    /// Per step (by index), its picks and batch size.
    pub(crate) shapes: Vec<Shape>,
    /// The window closed with work left: some batch never started.
    pub(crate) window_closed: bool,
}

/// Walk `job` over its hosts, doing `action` on each host in each step.
pub(crate) async fn walk<A: HostAction>(
    job: &Job,
    action: &A,
    opts: WalkOptions<'_>,
) -> Result<WalkEnd, A::Error> {
    let involved = involved_hosts(job, opts.carry);
    let w = Walk::new(job, action, opts);
    match job.playbook.strategy {
        Strategy::Linear => {
            // `_any` picks need to know who is reachable and who is in
            // maintenance before the first step.
            action.survey(&involved).await;
            w.linear().await?;
        }
        Strategy::Free => w.free(&involved).await?,
    }
    let window_closed = w.closed.get().is_some();
    let book = w.book.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(WalkEnd {
        window_closed,
        aborted_at: book.aborted_at().map(str::to_string),
        shapes: w.shapes.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

/// Every host some step may work on, in inventory order: not those whose
/// every step an earlier run settled (a retry leaves them alone).
fn involved_hosts(job: &Job, carry: Option<&Carry>) -> Vec<usize> {
    let mut involved = BTreeSet::new();
    for (si, ex) in job.expanded.iter().enumerate() {
        let Some(carry) = carry else {
            involved.extend(ex.tasks.iter().map(|t| t.host));
            continue;
        };
        // An `_any` group an earlier run picked needs only its pick.
        let settled_any: BTreeSet<usize> = ex
            .targets
            .any
            .iter()
            .filter(|g| carry.picked(si, g).is_some())
            .flatten()
            .copied()
            .collect();
        involved.extend(
            ex.tasks
                .iter()
                .map(|t| t.host)
                .filter(|&h| !carry.settles(si, h) && !settled_any.contains(&h)),
        );
    }
    involved.into_iter().collect()
}

/// A walk under way.
struct Walk<'a, A> {
    job: &'a Job,
    action: &'a A,
    opts: WalkOptions<'a>,
    book: Mutex<FailureLedger>,
    /// Each step's position in DAG order.
    order_of: Vec<usize>,
    /// Steps not yet finished that may work on each host (linear): at zero
    /// the host is released.
    pending: Vec<AtomicUsize>,
    shapes: Mutex<Vec<Shape>>,
    /// Why nothing starts any more, once the window was seen closed.
    closed: OnceLock<SkipReason>,
    /// Per host, the steps it worked on (or an earlier run did): who
    /// began a module call, for its `always` steps.
    worked: Mutex<Vec<BTreeSet<usize>>>,
    /// Some step has `always` steps to run: only then is `worked` kept
    /// (a set insert per host-step cost a plan of 500,000 of them 2%).
    cleanup: bool,
    /// Per (step, host), why its batch waited for room in its group
    /// before it started, until its result takes it.
    waited: Mutex<std::collections::HashMap<(usize, usize), String>>,
    /// Some batch waited: only then is `waited` looked in (a lock and a
    /// lookup per host-step otherwise).
    any_waited: AtomicBool,
}

impl<'a, A: HostAction> Walk<'a, A> {
    fn new(job: &'a Job, action: &'a A, opts: WalkOptions<'a>) -> Self {
        let n = job.inventory.hosts.len();
        let mut order_of = vec![0; job.playbook.steps.len()];
        for (pos, s) in job.dag.order().iter().enumerate() {
            order_of[*s] = pos;
        }
        // A step's tasks are its candidates, one per host.
        let mut pending = vec![0usize; n];
        for ex in &job.expanded {
            for t in &ex.tasks {
                pending[t.host] += 1;
            }
        }
        Walk {
            job,
            action,
            opts,
            book: Mutex::new(FailureLedger::new(n)),
            order_of,
            pending: pending.into_iter().map(AtomicUsize::new).collect(),
            shapes: Mutex::new(vec![Shape::default(); job.playbook.steps.len()]),
            closed: OnceLock::new(),
            worked: Mutex::new(vec![BTreeSet::new(); n]),
            cleanup: job.playbook.steps.iter().any(|s| s.always.is_some()),
            waited: Mutex::default(),
            any_waited: AtomicBool::new(false),
        }
    }

    fn book(&self) -> MutexGuard<'_, FailureLedger> {
        // A poisoned book only means a host's work panicked mid-update; the
        // bookkeeping itself is still consistent enough to report.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why nothing new may start now: a stop, or the window closed (read
    /// on the clock now; once closed it stays closed for this run).
    fn halted(&self) -> Option<SkipReason> {
        if let Some(why) = self.stopped() {
            return Some(why);
        }
        let (window, clock) = self.opts.window?;
        if window.contains(clock.now()) {
            return None;
        }
        Some(
            self.closed
                .get_or_init(|| SkipReason::WindowClosed(window.describe()))
                .clone(),
        )
    }

    /// Why the walk stopped, without reading the clock again.
    fn stopped(&self) -> Option<SkipReason> {
        match self.opts.stop.filter(|s| s.is_stopped()) {
            Some(s) => Some(SkipReason::Interrupted(s.reason())),
            None => self.closed.get().cloned(),
        }
    }

    fn set_shape(&self, si: usize, shape: Shape) {
        if let Ok(mut shapes) = self.shapes.lock() {
            shapes[si] = shape;
        }
    }

    /// The hosts a step works on now: its fixed targets plus one pick per
    /// `_any` group (the picks also apart, in group order).
    fn step_hosts(&self, si: usize) -> (Vec<usize>, Vec<usize>) {
        let job = self.job;
        let step = &job.playbook.steps[si];
        let ex = &job.expanded[si];
        let mut hosts: BTreeSet<usize> = ex.targets.fixed.iter().copied().collect();
        let mut picked = Vec::new();
        if !ex.targets.any.is_empty() {
            let book = self.book();
            let candidate = |h: usize| {
                let p = self.action.presence(h);
                Candidate {
                    reachable: p.reachable,
                    in_maintenance: p.in_maintenance,
                    failed: book.failed_at(h).is_some(),
                    protected: ex.task(h).is_some_and(|t| {
                        refuse_protected(
                            step,
                            t,
                            &job.inventory.hosts[h],
                            self.opts.allow_protected,
                        )
                        .is_some()
                    }),
                }
            };
            for g in &ex.targets.any {
                // What an earlier run picked stays picked.
                let earlier = self.opts.carry.and_then(|c| c.picked(si, g));
                if let Some(h) = earlier.or_else(|| pick_any(g, candidate)) {
                    picked.push(h);
                    hosts.insert(h);
                }
            }
        }
        (hosts.into_iter().collect(), picked)
    }

    /// Record a skip decided before any check of the host (what an
    /// earlier run settled stays as it was).
    fn skip(&self, si: usize, h: usize, batch: usize, why: SkipReason) {
        if self.carried(si, h, batch).is_some() {
            return;
        }
        self.action.record(Finished {
            si,
            h,
            batch,
            outcome: Outcome::Skipped(why),
            detail: A::Detail::default(),
            elapsed: Duration::ZERO,
            waited: None,
        });
    }

    /// If an earlier run settled the step × host, record that and return
    /// its status.
    fn carried(&self, si: usize, h: usize, batch: usize) -> Option<Status> {
        match self.opts.carry?.get(si, h)? {
            Carried::Result(r) => {
                if r.status != Status::Skipped {
                    self.began(si, h);
                }
                self.action.carry(si, h, batch, r);
                Some(r.status)
            }
            Carried::Skip(why) => {
                self.action.record(Finished {
                    si,
                    h,
                    batch,
                    outcome: Outcome::Skipped(why.clone()),
                    detail: A::Detail::default(),
                    elapsed: Duration::ZERO,
                    waited: None,
                });
                Some(Status::Skipped)
            }
        }
    }
}
