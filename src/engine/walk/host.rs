//! One host in one step: the checks before work, in their one order (an
//! earlier failure or `when`, a protected unit, the connection,
//! maintenance), then the action's work; the result is recorded.

use std::time::Instant;

use crate::engine::walk::{Finished, HostAction, Walk, Work};
use crate::model::decide::refuse_protected;
use crate::model::expand::HostTask;
use crate::model::outcome::{Failure, Outcome, SkipReason, Status};
use crate::model::playbook::{Operation, Step};

impl<A: HostAction> Walk<'_, A> {
    /// One host, one step: checks, then the work; the result is recorded
    /// and its status returned. `lane` carries what the host's previous
    /// step left (free); `next` is the host's next step when it follows at
    /// once.
    pub(super) async fn host(
        &self,
        si: usize,
        h: usize,
        batch: usize,
        lane: &mut A::Lane,
        next: Option<usize>,
    ) -> Result<Status, A::Error> {
        // What the previous step left is for this step only.
        let carried = std::mem::take(lane);
        let Some(task) = self.job.expanded[si].task(h) else {
            return Ok(Status::Skipped);
        };
        if let Some(status) = self.carried(si, h, batch) {
            return Ok(status);
        }
        let step = &self.job.playbook.steps[si];
        let t0 = (!A::NEVER_WAITS).then(Instant::now);
        let (outcome, detail) = match self.before_work(step, h, task).await {
            Err(outcome) => (outcome, A::Detail::default()),
            Ok((conn, failed_at)) => {
                self.began(si, h);
                let w = Work {
                    si,
                    h,
                    step,
                    task,
                    failed_at,
                    next,
                };
                self.action.work(conn, w, carried, lane).await?
            }
        };
        let status = outcome.status();
        self.action.record(Finished {
            si,
            h,
            batch,
            outcome,
            detail,
            elapsed: t0.map(|t| t.elapsed()).unwrap_or_default(),
            waited: self.take_wait(si, h),
        });
        Ok(status)
    }

    /// Everything decided before the host's work: earlier failures and
    /// `when`, protection, the connection, maintenance. `Err` is the
    /// host's outcome for this step; `Ok` has the connection and the step
    /// the host failed at (an `on_failure` step's text).
    async fn before_work(
        &self,
        step: &Step,
        h: usize,
        task: &HostTask,
    ) -> Result<(A::Conn, Option<String>), Outcome> {
        let failed_at = {
            // Cleanup runs on every host that began its call, whatever
            // else failed.
            let skip = match &step.always {
                Some(call) => self
                    .cleanup_skip(call, h)
                    .or_else(|| (!task.when).then_some(SkipReason::WhenFalse)),
                None => self.book().before_step_host(step, h, task.when),
            };
            if let Some(why) = skip {
                return Err(Outcome::Skipped(why));
            }
            self.book().failed_at(h).map(str::to_string)
        };
        let host = &self.job.inventory.hosts[h];
        if let Some(refused) = refuse_protected(step, task, host, self.opts.allow_protected) {
            return Err(Outcome::failed(refused));
        }
        let conn = self.action.connect(h).await.map_err(Outcome::failed)?;
        let exempt =
            step.ignore_maintenance || matches!(step.operation, Operation::Maintenance { .. });
        if !exempt {
            match self.action.maintenance(h, &task.unit).await {
                Ok(Some(why)) => return Err(Outcome::Skipped(why)),
                Ok(None) => {}
                Err(e) => return Err(Outcome::failed(Failure::Error(e))),
            }
        }
        Ok((conn, failed_at))
    }
}
