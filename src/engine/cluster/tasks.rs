//! A worker's side of a cluster job: the tasks a coordinator sends for
//! the hosts this worker owns. Each is checked (protocol, the inventory's
//! digest, the playbook's and parameters' digests against the text that
//! came with it) and answered with apply's own host action over this
//! worker's warm connections ([`crate::engine::execute::answer_task`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use crate::engine::execute::{answer_task, MaintCache};
use crate::engine::job::Job;
use crate::model::cluster::{TaskJob, TaskOp, TaskReply, TaskRequest, PROTOCOL};
use crate::model::inventory::Inventory;
use crate::model::params::ParamValues;
use crate::model::playbook::Playbook;
use crate::remote::pool::Pool;

/// Jobs a worker keeps parsed; past them the oldest is parsed again when
/// its next task comes.
const JOBS_KEPT: usize = 16;

/// What answering tasks needs, shared by every bucket this worker serves.
pub struct WorkerTasks {
    inventory: Arc<Inventory>,
    /// Each host's index in the inventory.
    index: HashMap<String, usize>,
    pool: Option<Pool>,
    /// Parsed jobs by (playbook, params, limit), newest last.
    jobs: Mutex<Vec<(JobKey, Arc<Job>)>>,
    maint: MaintCache,
    /// Tasks worked at once (the worker's forks); more wait their turn.
    at_once: Semaphore,
    /// The work tasks taken and not answered yet: (job, host, step).
    working: Mutex<HashSet<(String, String, usize)>>,
    /// Told when one of them is answered.
    answered: Notify,
}

/// A work task taken: in [`WorkerTasks::working`] until answered.
struct Taken<'a> {
    set: &'a Mutex<HashSet<(String, String, usize)>>,
    answered: &'a Notify,
    key: (String, String, usize),
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.set.lock() {
            g.remove(&self.key);
        }
        self.answered.notify_waiters();
    }
}

type JobKey = (String, String, Option<String>);

impl WorkerTasks {
    /// Tasks over `inventory`'s hosts, `forks` at once, over `pool`.
    pub fn new(inventory: Arc<Inventory>, pool: Option<Pool>, forks: usize) -> Self {
        let index = inventory
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), i))
            .collect();
        WorkerTasks {
            inventory,
            index,
            pool,
            jobs: Mutex::new(Vec::new()),
            maint: MaintCache::default(),
            at_once: Semaphore::new(forks.max(1)),
            working: Mutex::default(),
            answered: Notify::new(),
        }
    }

    /// The answer to one task message. A message drover cannot read, or
    /// one for another inventory, playbook text or host, is refused (and
    /// logged): nothing is done, and nothing panics.
    /// `fence`: the revision of the lease the host is held under.
    pub async fn answer(
        &self,
        payload: &[u8],
        mine: impl Fn(&str) -> bool,
        fence: crate::remote::fence::FenceToken,
    ) -> TaskReply {
        let req: TaskRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a malformed task: refused");
                return TaskReply::Refused(format!("not a drover task: {e}"));
            }
        };
        if req.protocol != PROTOCOL {
            return TaskReply::Refused(format!(
                "protocol {} (this worker speaks {PROTOCOL})",
                req.protocol
            ));
        }
        if req.job.inventory != self.inventory.digest {
            return TaskReply::Refused(
                "the coordinator holds another inventory than this worker: reload both from the same file"
                    .into(),
            );
        }
        let Some(&h) = self.index.get(&req.host).filter(|_| mine(&req.host)) else {
            return TaskReply::Refused(format!("{} is not one of this worker's hosts", req.host));
        };
        let key = |step: usize| (req.job.job_id.clone(), req.host.clone(), step);
        let _taken = match &req.op {
            TaskOp::Working { step } => {
                let now = self
                    .working
                    .lock()
                    .map(|g| g.contains(&key(*step)))
                    .unwrap_or(false);
                return TaskReply::Working(now);
            }
            // The same work sent again while this worker still does it
            // (its coordinator died, and another took the job over): it
            // waits for the first to end, then reads the host, so that a
            // change is never made twice at once.
            TaskOp::Work { step, .. } => loop {
                // Registered before the set is looked at: an answer in
                // between still wakes this one.
                let answered = self.answered.notified();
                tokio::pin!(answered);
                answered.as_mut().enable();
                let took = self
                    .working
                    .lock()
                    .map(|mut g| g.insert(key(*step)))
                    .unwrap_or(true);
                if took {
                    break Some(Taken {
                        set: &self.working,
                        answered: &self.answered,
                        key: key(*step),
                    });
                }
                tracing::info!(job = %req.job.job_id, host = %req.host, step, "the same work again while it runs: waiting for it to end");
                answered.await;
            },
            _ => None,
        };
        let job = match self.job(&req.job) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(job = %req.job.job_id, error = %e, "a task refused");
                return TaskReply::Refused(e);
            }
        };
        let Ok(_permit) = self.at_once.acquire().await else {
            return TaskReply::Refused("the worker is stopping".into());
        };
        tracing::debug!(job = %req.job.job_id, host = %req.host, op = ?req.op, "task");
        let t0 = std::time::Instant::now();
        let reply = answer_task(&job, h, &req, self.pool.clone(), &self.maint, Some(fence)).await;
        tracing::debug!(job = %req.job.job_id, host = %req.host, took = ?t0.elapsed(), "task answered");
        reply
    }

    /// The task's job, parsed from its text once and checked against its
    /// digests.
    fn job(&self, t: &TaskJob) -> Result<Arc<Job>, String> {
        let key: JobKey = (t.playbook.clone(), t.params_digest.clone(), t.limit.clone());
        if let Ok(g) = self.jobs.lock() {
            if let Some((_, j)) = g.iter().find(|(k, _)| *k == key) {
                return Ok(j.clone());
            }
        }
        let values = ParamValues::from_request(t.params.clone().into_iter().collect());
        let pb = Playbook::from_str_with(&t.text, Path::new(&t.label), None, &values)
            .map_err(|e| format!("the job's playbook does not load here: {e}"))?;
        if pb.digest != t.playbook {
            return Err("the playbook text sent does not match its digest".into());
        }
        if !pb.inputs.is_empty() {
            return Err("the playbook reads other files (modules, unit templates), which workers do not hold".into());
        }
        let job = Job::new(pb, (*self.inventory).clone(), t.limit.as_deref())
            .map_err(|e| format!("the job does not load here: {e}"))?;
        if job.inputs().params != t.params_digest {
            return Err("the parameters sent do not match their digest".into());
        }
        let job = Arc::new(job);
        if let Ok(mut g) = self.jobs.lock() {
            if g.len() >= JOBS_KEPT {
                g.remove(0);
            }
            g.push((key, job.clone()));
        }
        Ok(job)
    }
}
