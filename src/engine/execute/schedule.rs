//! The scheduler: ready steps start together, a step's hosts run in
//! rolling batches with at most `forks` hosts in flight, and a batch's
//! gates decide before the next batch starts.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::engine::events::Event;
use crate::engine::execute::host::next_reading;
use crate::engine::execute::host::run_host;
use crate::engine::execute::interrupted;
use crate::engine::execute::record_skip;
use crate::engine::execute::release;
use crate::engine::execute::Run;
use crate::model::decide::{batch_size, group_batch_size, pick_any, refuse_protected, Candidate};
use crate::model::outcome::Status;
use crate::model::playbook::Group;

/// Linear: the DAG's state machine; a step's hosts all finish before its
/// dependents start. Ready steps run concurrently.
pub(super) async fn run_linear(run: &Run<'_>, started: &mut [bool]) {
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
                // By value: a closure over `&usize` items makes the job's
                // future not provably Send (rust-lang/rust#102211).
                batch
                    .iter()
                    .copied()
                    .map(|h| async move { run_host(run, si, h, &mut None, None).await }),
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
pub(super) async fn run_free(run: &Run<'_>, involved: &[usize]) {
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
pub(super) fn step_hosts(run: &Run<'_>, si: usize) -> Vec<usize> {
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
