//! The walk's schedule: ready steps start together, a step's hosts go in
//! rolling batches and a batch's results decide (failures, aborts) before
//! the next batch starts; a module call with `serial` takes each batch
//! through all of its steps; `strategy: free` lets every host walk its
//! steps on its own.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use futures_util::stream::StreamExt;

use crate::engine::events::Event;
use crate::engine::walk::safety::NoRoom;
use crate::engine::walk::{HostAction, Shape, Walk};
use crate::model::decide::{batch_size, group_batch_size};
use crate::model::outcome::{SkipReason, Status};
use crate::model::playbook::Group;

/// What the linear schedule starts at once: one step, or a module call
/// with `serial` (all of its steps).
enum Unit<'a> {
    Step(usize),
    Group(&'a Group),
}

impl<'a, A: HostAction> Walk<'a, A> {
    /// Linear: the DAG's state machine; a step's hosts all finish before
    /// its dependents start, and ready steps run concurrently. Running
    /// steps are polled in DAG order, so a walk that never waits (the
    /// plan's) goes through the steps exactly in DAG order.
    pub(super) async fn linear(&self) -> Result<(), A::Error> {
        let job = self.job;
        let mut sched = job.dag.scheduler();
        let mut started = vec![false; job.playbook.steps.len()];
        let mut running = Vec::new();
        loop {
            if self.halted().is_none() {
                for s in sched.take_ready() {
                    if started[s] {
                        // A step of a module call already running as a group.
                        continue;
                    }
                    let (unit, pos) = match &job.playbook.steps[s].group {
                        Some(g) => {
                            for &gs in &g.steps {
                                started[gs] = true;
                            }
                            let pos = g.steps.iter().map(|&gs| self.order_of[gs]).min();
                            (Unit::Group(g), pos.unwrap_or(self.order_of[s]))
                        }
                        None => {
                            started[s] = true;
                            (Unit::Step(s), self.order_of[s])
                        }
                    };
                    insert_sorted(&mut running, pos, Box::pin(self.unit(unit)));
                }
            }
            if running.is_empty() {
                break;
            }
            for s in first_done(&mut running).await? {
                sched.finish(s);
                for t in &job.expanded[s].tasks {
                    if self.pending[t.host].fetch_sub(1, Ordering::SeqCst) == 1 {
                        self.action.release(t.host);
                    }
                }
            }
        }
        // Cleanup whose call a stop cut short runs now, on the hosts that
        // began the call.
        for s in self.late_cleanup(&started) {
            started[s] = true;
            Box::pin(self.step(s)).await?;
        }
        // Steps that never started (stopped, or the window closed) are
        // reported skipped.
        for (s, was) in started.iter().enumerate() {
            if !*was {
                let why = self
                    .stopped()
                    .unwrap_or_else(|| SkipReason::Interrupted("signal".into()));
                for h in self.step_hosts(s).0 {
                    self.skip(s, h, 1, why.clone());
                }
            }
        }
        Ok(())
    }

    /// Run one unit of the linear schedule; the steps it finished.
    async fn unit(&self, unit: Unit<'a>) -> Result<Vec<usize>, A::Error> {
        match unit {
            Unit::Step(si) => self.step(si).await.map(|()| vec![si]),
            Unit::Group(g) => self.group(g).await.map(|()| g.steps.clone()),
        }
    }

    /// One step over its hosts, batch by batch.
    async fn step(&self, si: usize) -> Result<(), A::Error> {
        let step = &self.job.playbook.steps[si];
        let (hosts, picked) = self.step_hosts(si);
        let size = batch_size(step, hosts.len());
        self.set_shape(
            si,
            Shape {
                picked,
                batch_size: size,
            },
        );
        self.opts.events.event(&Event::StepStarted {
            step: step.id.clone(),
            hosts: hosts.len(),
        });
        let mut failed_here = 0usize;
        let cleanup = step.always.is_some();
        for (b, batch) in self.batches(si, &hosts, size).iter().enumerate() {
            // Cleanup is not stopped by what stops the rest.
            let skip = match cleanup {
                true => None,
                false => self.book().before_batch().or_else(|| self.halted()),
            };
            if let Some(why) = skip {
                for &h in batch {
                    self.skip(si, h, b + 1, why.clone());
                }
                continue;
            }
            let room = match cleanup {
                true => Ok(None),
                false => Box::pin(self.admit(si, batch)).await,
            };
            let statuses = match room {
                Ok(held) => {
                    let statuses = self.batch(si, batch, b + 1).await?;
                    drop(held);
                    statuses
                }
                Err(NoRoom::Refused(why)) => self.refuse(si, batch, b + 1, &why),
                Err(NoRoom::Stopped(why)) => {
                    for &h in batch {
                        self.skip(si, h, b + 1, why.clone());
                    }
                    continue;
                }
            };
            let mut book = self.book();
            for (h, status) in batch.iter().zip(statuses) {
                if status == Status::Failed {
                    failed_here += 1;
                    book.host_failed(*h, &step.id);
                }
            }
            book.after_batch(step, failed_here, hosts.len());
            drop(book);
            self.opts.events.event(&Event::BatchDone {
                step: step.id.clone(),
                batch: b + 1,
                failed: failed_here,
            });
        }
        self.opts.events.event(&Event::StepFinished {
            step: step.id.clone(),
        });
        Ok(())
    }

    /// A module call with `serial`: its hosts go through all of its steps
    /// batch by batch (batch 1 runs every step, then batch 2), the rolling
    /// drain-restart-undrain. The call's steps share its target, so the
    /// first step's hosts (and `_any` pick) are the call's.
    async fn group(&self, g: &Group) -> Result<(), A::Error> {
        let steps = &self.job.playbook.steps;
        let Some(&first) = g.steps.first() else {
            return Ok(());
        };
        let (hosts, picked) = self.step_hosts(first);
        let size = group_batch_size(g, hosts.len());
        for &si in &g.steps {
            self.set_shape(
                si,
                Shape {
                    picked: picked.clone(),
                    batch_size: size,
                },
            );
            self.opts.events.event(&Event::StepStarted {
                step: steps[si].id.clone(),
                hosts: hosts.len(),
            });
        }
        let mut failed_hosts = BTreeSet::new();
        for (b, batch) in self.batches(first, &hosts, size).iter().enumerate() {
            // Room in the batch's groups is claimed before its first step
            // and held through the last (cleanup included): from drained
            // to undrained.
            let stopped = self.book().before_batch().or_else(|| self.halted());
            let held = match stopped {
                Some(_) => None,
                None => match Box::pin(self.admit(first, batch)).await {
                    Ok(held) => held,
                    // The steps below see the stop and skip.
                    Err(NoRoom::Stopped(_)) => None,
                    Err(NoRoom::Refused(why)) => {
                        self.refuse_group(g, batch, b + 1, &why);
                        failed_hosts.extend(batch.iter().copied());
                        self.book()
                            .after_group_batch(g, failed_hosts.len(), hosts.len());
                        continue;
                    }
                },
            };
            for &si in &g.steps {
                let skip = match steps[si].always {
                    Some(_) => None,
                    None => self.book().before_batch().or_else(|| self.halted()),
                };
                if let Some(why) = skip {
                    for &h in batch {
                        if self.job.expanded[si].task(h).is_some() {
                            self.skip(si, h, b + 1, why.clone());
                        }
                    }
                    continue;
                }
                let statuses = self.batch(si, batch, b + 1).await?;
                let mut book = self.book();
                for (h, status) in batch.iter().zip(statuses) {
                    if status == Status::Failed {
                        failed_hosts.insert(*h);
                        book.host_failed(*h, &steps[si].id);
                    }
                }
            }
            drop(held);
            self.book()
                .after_group_batch(g, failed_hosts.len(), hosts.len());
            if let Some(&last) = g.steps.last() {
                self.opts.events.event(&Event::BatchDone {
                    step: steps[last].id.clone(),
                    batch: b + 1,
                    failed: failed_hosts.len(),
                });
            }
        }
        for &si in &g.steps {
            self.opts.events.event(&Event::StepFinished {
                step: steps[si].id.clone(),
            });
        }
        Ok(())
    }

    /// One batch of one step: its hosts at once; their statuses in order.
    async fn batch(&self, si: usize, hosts: &[usize], b: usize) -> Result<Vec<Status>, A::Error> {
        if A::NEVER_WAITS {
            // A box and a move per host-step were 2% of a large plan.
            let mut out = Vec::with_capacity(hosts.len());
            for &h in hosts {
                out.push(self.host(si, h, b, &mut A::Lane::default(), None).await?);
            }
            return Ok(out);
        }
        join_in_order(hosts.iter().map(|&h| async move {
            // Linear: other hosts run between a host's steps, so nothing
            // is carried from one step to the next.
            self.host(si, h, b, &mut A::Lane::default(), None).await
        }))
        .await
        .into_iter()
        .collect()
    }

    /// Free: every host walks the steps in DAG order on its own, `lanes`
    /// hosts at a time; a host that fails skips its later steps. The error
    /// of the earliest step (then host) wins, whatever finished first.
    pub(super) async fn free(&self, involved: &[usize]) -> Result<(), A::Error> {
        let job = self.job;
        let order = job.dag.order();
        for &si in order {
            let hosts = job.expanded[si].targets.fixed.len();
            self.set_shape(
                si,
                Shape {
                    picked: Vec::new(),
                    batch_size: hosts.max(1),
                },
            );
            self.opts.events.event(&Event::StepStarted {
                step: job.playbook.steps[si].id.clone(),
                hosts,
            });
        }
        let lanes = futures_util::stream::iter(involved.iter().copied())
            .map(|h| self.lane(h))
            .buffer_unordered(self.opts.lanes.max(1));
        let errors: Vec<_> = lanes.filter_map(|r| async move { r.err() }).collect().await;
        for &si in order {
            self.opts.events.event(&Event::StepFinished {
                step: job.playbook.steps[si].id.clone(),
            });
        }
        match errors.into_iter().min_by_key(|(pos, h, _)| (*pos, *h)) {
            Some((_, _, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// One host's steps, back to back (free); its first error with the
    /// step's position and the host.
    async fn lane(&self, h: usize) -> Result<(), (usize, usize, A::Error)> {
        let job = self.job;
        let mine: Vec<usize> = job
            .dag
            .order()
            .iter()
            .copied()
            .filter(|&si| job.expanded[si].targets.fixed.binary_search(&h).is_ok())
            .collect();
        let mut lane = A::Lane::default();
        let mut end = Ok(());
        for (k, &si) in mine.iter().enumerate() {
            let cleanup = job.playbook.steps[si].always.is_some();
            if let Some(why) = self.halted().filter(|_| !cleanup) {
                self.skip(si, h, 1, why);
                continue;
            }
            let room = match cleanup {
                true => Ok(None),
                false => Box::pin(self.admit(si, &[h])).await,
            };
            let done = match room {
                Ok(held) => {
                    let done = self
                        .host(si, h, 1, &mut lane, mine.get(k + 1).copied())
                        .await;
                    drop(held);
                    done
                }
                Err(NoRoom::Refused(why)) => Ok(self.refuse(si, &[h], 1, &why).remove(0)),
                Err(NoRoom::Stopped(why)) => {
                    self.skip(si, h, 1, why);
                    continue;
                }
            };
            match done {
                Ok(Status::Failed) => self.book().host_failed(h, &job.playbook.steps[si].id),
                Ok(_) => {}
                Err(e) => {
                    end = Err((self.order_of[si], h, e));
                    break;
                }
            }
        }
        self.action.release(h);
        end
    }
}

/// Run `futs` together; their outputs in the order given. Each is polled
/// once as it is made: one that is ready then (a host skipped, refused or
/// carried over) costs no task of a set; the others go on together in a
/// `FuturesUnordered`. `join_all` gave every one of a large batch a task
/// of a `FuturesOrdered`.
async fn join_in_order<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    use futures_util::stream::FuturesUnordered;
    let mut futs = futs.enumerate();
    let mut out: Vec<Option<F::Output>> = Vec::with_capacity(futs.size_hint().0);
    let mut waiting = FuturesUnordered::new();
    std::future::poll_fn(|cx| {
        for (i, f) in futs.by_ref() {
            let mut f = Box::pin(f);
            out.push(None);
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => out[i] = Some(v),
                // Polled again by the set (with its own waker) before
                // it waits.
                Poll::Pending => waiting.push(async move { (i, f.await) }),
            }
        }
        while let Poll::Ready(Some((i, v))) = waiting.poll_next_unpin(cx) {
            out[i] = Some(v);
        }
        match waiting.is_empty() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Add a running unit at its DAG position.
fn insert_sorted<F>(running: &mut Vec<(usize, F)>, pos: usize, unit: F) {
    let at = running.partition_point(|(p, _)| *p < pos);
    running.insert(at, (pos, unit));
}

/// Wait for the first of the running units to finish, polling them in
/// DAG order (the list is kept sorted by position); its finished steps.
async fn first_done<F, T>(running: &mut Vec<(usize, Pin<Box<F>>)>) -> T
where
    F: Future<Output = T>,
{
    std::future::poll_fn(|cx| {
        for i in 0..running.len() {
            if let Poll::Ready(out) = running[i].1.as_mut().poll(cx) {
                running.remove(i);
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    })
    .await
}
