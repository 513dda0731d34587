//! Safety across jobs and cleanup, in the walk: a step with `group_by`
//! goes in batches that hold at most its limit of each group, and each
//! batch starts only once the claims give its hosts room in their groups
//! (and, with `require_healthy`, the groups' other hosts are healthy); a
//! module call's `always` steps run on every host that began the call,
//! however the run goes on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::claims::{Busy, Held, Members};
use crate::engine::events::Event;
use crate::engine::walk::{Finished, HostAction, Walk};
use crate::model::decide::in_call;
use crate::model::outcome::{Failure, Outcome, SkipReason, Status};
use crate::model::playbook::{Group, Limit};

/// How often a waiting batch looks at its groups' health again: health
/// has no event to wait for (the claims do, and wake a waiter at once).
const RECHECK: Duration = Duration::from_secs(2);

/// One group of a batch: every host of the inventory in it, and the
/// batch's.
#[derive(Default)]
struct GroupHosts {
    all: Vec<usize>,
    batch: Vec<usize>,
}

/// Why a batch got no room in its groups.
pub(super) enum NoRoom {
    /// None within the job's claim wait: its hosts fail the step, why.
    Refused(String),
    /// The run was stopped while the batch waited: its hosts skip.
    Stopped(SkipReason),
}

impl<A: HostAction> Walk<'_, A> {
    /// A step's hosts in rolling batches of `size`, each cut further so
    /// that it holds at most its limit of any one group.
    pub(super) fn batches(&self, si: usize, hosts: &[usize], size: usize) -> Vec<Vec<usize>> {
        let Some(limit) = &self.job.playbook.steps[si].limit else {
            return hosts.chunks(size.max(1)).map(<[usize]>::to_vec).collect();
        };
        let allowed = self.allowed(si, limit);
        let mut out = Vec::new();
        for chunk in hosts.chunks(size.max(1)) {
            let mut left: Vec<usize> = chunk.to_vec();
            while !left.is_empty() {
                let mut taken: BTreeMap<String, usize> = BTreeMap::new();
                let mut batch = Vec::new();
                left.retain(|&h| {
                    let g = self.group_of(limit, h);
                    let n = taken.entry(g.clone()).or_default();
                    if *n < allowed.get(&g).copied().unwrap_or(1) {
                        *n += 1;
                        batch.push(h);
                        false
                    } else {
                        true
                    }
                });
                out.push(batch);
            }
        }
        out
    }

    /// The claim name of a host's group (a host without the label is
    /// refused when the job is built; alone in its group if not).
    fn group_of(&self, limit: &Limit, h: usize) -> String {
        let host = &self.job.inventory.hosts[h];
        limit
            .group_of(host)
            .unwrap_or_else(|| format!("host={}", host.name))
    }

    /// Every group the step's hosts are in, with all of its hosts in the
    /// inventory: a group is its label's value, not what one step targets,
    /// so a member the step leaves out still counts when it is down.
    fn members(&self, si: usize, limit: &Limit) -> BTreeMap<String, Vec<usize>> {
        let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for t in &self.job.expanded[si].tasks {
            out.entry(self.group_of(limit, t.host)).or_default();
        }
        for h in 0..self.job.inventory.hosts.len() {
            if let Some(g) = out.get_mut(&self.group_of(limit, h)) {
                g.push(h);
            }
        }
        out
    }

    /// Each group's allowance: its share of the group's hosts.
    fn allowed(&self, si: usize, limit: &Limit) -> BTreeMap<String, usize> {
        self.members(si, limit)
            .into_iter()
            .map(|(g, hosts)| (g, limit.allowed(hosts.len())))
            .collect()
    }

    /// Room for a batch of step `si` in its groups: taken (held until
    /// the returned claim is dropped) or, once the job's claim wait is
    /// over, why the batch cannot start. Waiting is reported as a gate.
    pub(super) async fn admit(&self, si: usize, batch: &[usize]) -> Result<Option<Held>, NoRoom> {
        let step = &self.job.playbook.steps[si];
        let Some(limit) = &step.limit else {
            return Ok(None);
        };
        let members = self.members(si, limit);
        let allowed: BTreeMap<String, usize> = members
            .iter()
            .map(|(g, hosts)| (g.clone(), limit.allowed(hosts.len())))
            .collect();
        let mut groups: BTreeMap<String, GroupHosts> = members
            .into_iter()
            .map(|(g, all)| {
                let hosts = GroupHosts {
                    all,
                    batch: Vec::new(),
                };
                (g, hosts)
            })
            .collect();
        for &h in batch {
            groups
                .entry(self.group_of(limit, h))
                .or_default()
                .batch
                .push(h);
        }
        groups.retain(|_, g| !g.batch.is_empty());
        let wait = self.opts.claims.as_ref().map_or(Duration::ZERO, |c| c.wait);
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + wait;
        let mut said = String::new();
        loop {
            // A cancel or a signal ends the wait: nothing starts any more.
            if let Some(why) = self.halted() {
                return Err(NoRoom::Stopped(why));
            }
            let mut down: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            let mut unhealthy = None;
            for (name, h, why) in self.out_of_service(si, &groups).await {
                let host = self.job.inventory.hosts[h].name.clone();
                unhealthy.get_or_insert_with(|| format!("{host} of {name} is {why}"));
                down.entry(name).or_default().push(host);
            }
            let now = tokio::time::Instant::now();
            let why = match (&unhealthy, &self.opts.claims) {
                (Some(u), _) if limit.require_healthy => format!("require_healthy: {u}"),
                (_, None) => return Ok(None),
                (_, Some(c)) => {
                    let members = groups
                        .iter()
                        .map(|(name, g)| Members {
                            group: name.clone(),
                            limit: allowed.get(name).copied().unwrap_or(1),
                            hosts: g
                                .batch
                                .iter()
                                .map(|&h| self.job.inventory.hosts[h].name.clone())
                                .collect(),
                            down: down.get(name.as_str()).cloned().unwrap_or_default(),
                        })
                        .collect();
                    // The first look does not wait, so that a wait is
                    // seen, said and recorded with why.
                    let slice = match said.is_empty() {
                        true => Duration::ZERO,
                        false => deadline.saturating_duration_since(now).min(RECHECK),
                    };
                    match c.store.take_members(members, c.job_id, slice).await {
                        Ok(held) => {
                            self.note_wait(si, batch, t0.elapsed(), &said);
                            return Ok(Some(held));
                        }
                        Err(busy) => busy_words(&busy, limit),
                    }
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(NoRoom::Refused(format!(
                    "{why}; the batch did not start within {} (the job's claim wait)",
                    humantime::format_duration(wait)
                )));
            }
            if why != said {
                tracing::info!(step = %step.id, "batch waits: {why}");
                for &h in batch {
                    self.opts.events.event(&Event::GateWaiting {
                        step: step.id.clone(),
                        host: self.job.inventory.hosts[h].name.clone(),
                        gate: format!("room in its group: {why}"),
                    });
                }
                said = why;
            }
            if limit.require_healthy && unhealthy.is_some() {
                tokio::time::sleep_until((tokio::time::Instant::now() + RECHECK).min(deadline))
                    .await;
            }
        }
    }

    /// The hosts of `groups` outside the batch that are out of service
    /// now, read all at once: (group, host, why). A host the step does not
    /// work on is read for the unit the batch's hosts of its group have,
    /// and counts only when it has that unit (or is unreachable, or in
    /// maintenance as a whole).
    async fn out_of_service<'g>(
        &self,
        si: usize,
        groups: &'g BTreeMap<String, GroupHosts>,
    ) -> Vec<(&'g str, usize, String)> {
        let ex = &self.job.expanded[si];
        let mut looks = Vec::new();
        for (name, g) in groups {
            let Some(unit) = g.batch.iter().find_map(|&h| ex.task(h)).map(|t| &t.unit) else {
                continue;
            };
            for &h in g.all.iter().filter(|h| !g.batch.contains(h)) {
                let (unit, member_only) = match ex.task(h) {
                    Some(t) => (&t.unit, false),
                    None => (unit, true),
                };
                looks.push(async move {
                    let r = self.action.in_service(h, unit, member_only).await;
                    r.err().map(|why| (name.as_str(), h, why))
                });
            }
        }
        futures_util::future::join_all(looks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// A batch that waited before it got room: each host's result will
    /// say for how long and why (the last reason seen).
    fn note_wait(&self, si: usize, batch: &[usize], waited: Duration, why: &str) {
        if why.is_empty() {
            return;
        }
        let note = format!(
            "waited {} for room in its group: {why}",
            humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
        );
        let mut w = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        for &h in batch {
            w.insert((si, h), note.clone());
        }
        self.any_waited.store(true, Ordering::Release);
    }

    /// Why the host's batch waited for room before step `si`, once.
    pub(super) fn take_wait(&self, si: usize, h: usize) -> Option<String> {
        // Set before the batch's hosts start, under the same lock.
        if !self.any_waited.load(Ordering::Acquire) {
            return None;
        }
        let mut w = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        w.remove(&(si, h))
    }

    /// Why an `always` step skips a host: it never began the call, or it
    /// failed one of the call's steps and the call's `on_failure` steps
    /// decide what it is left as. None: the cleanup runs.
    pub(super) fn cleanup_skip(&self, call: &str, h: usize) -> Option<SkipReason> {
        let steps = &self.job.playbook.steps;
        let worked = self.worked.lock().unwrap_or_else(|p| p.into_inner());
        let began = worked[h]
            .iter()
            .any(|&sj| steps[sj].always.is_none() && in_call(&steps[sj].id, call));
        drop(worked);
        if !began {
            return Some(SkipReason::NotBegun(call.to_string()));
        }
        let failed = self.book().failed_at(h).map(str::to_string);
        match failed {
            Some(at)
                if in_call(&at, call)
                    && steps.iter().any(|s| s.on_failure.as_deref() == Some(call)) =>
            {
                Some(SkipReason::FailedAt(at))
            }
            _ => None,
        }
    }

    /// A batch that got no room: each host fails the step with why (what
    /// an earlier run settled stays as it was).
    pub(super) fn refuse(&self, si: usize, batch: &[usize], b: usize, why: &str) -> Vec<Status> {
        batch
            .iter()
            .map(|&h| {
                if self.job.expanded[si].task(h).is_none() {
                    return Status::Skipped;
                }
                if let Some(status) = self.carried(si, h, b) {
                    return status;
                }
                self.action.record(Finished {
                    si,
                    h,
                    batch: b,
                    outcome: Outcome::failed(Failure::Error(why.to_string())),
                    detail: A::Detail::default(),
                    elapsed: Duration::ZERO,
                    waited: None,
                });
                Status::Failed
            })
            .collect()
    }

    /// A batch of a module call with `serial` that got no room: its first
    /// step fails with why, the others skip; the hosts count as failed at
    /// the call, so neither its `on_failure` nor its `always` steps run
    /// (nothing began).
    pub(super) fn refuse_group(&self, g: &Group, batch: &[usize], b: usize, why: &str) {
        for (k, &si) in g.steps.iter().enumerate() {
            if k == 0 {
                self.refuse(si, batch, b, why);
                continue;
            }
            for &h in batch {
                if self.job.expanded[si].task(h).is_some() {
                    self.skip(si, h, b, SkipReason::FailedAt(g.call.clone()));
                }
            }
        }
        let mut book = self.book();
        for &h in batch {
            book.host_failed(h, &g.call);
        }
    }

    /// The host worked on step `si` (or an earlier run of the job did).
    pub(super) fn began(&self, si: usize, h: usize) {
        if !self.cleanup {
            return;
        }
        let mut worked = self.worked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = worked.get_mut(h) {
            w.insert(si);
        }
    }

    /// The `always` steps of the walk that never started, in DAG order:
    /// they run after everything else (a stop kept their call's steps
    /// from finishing).
    pub(super) fn late_cleanup(&self, started: &[bool]) -> Vec<usize> {
        let steps = &self.job.playbook.steps;
        self.job
            .dag
            .order()
            .iter()
            .copied()
            .filter(|&s| !started[s] && steps[s].always.is_some())
            .collect()
    }
}

/// A full group in words, naming the job that holds it.
fn busy_words(busy: &Busy, limit: &Limit) -> String {
    let max = limit.describe();
    match &busy.claim {
        crate::engine::claims::Claim::Member(g, h) if busy.job_id.is_empty() => {
            format!("group {g} is full ({max}): {h} is out of service")
        }
        crate::engine::claims::Claim::Member(g, h) => format!(
            "group {g} is full ({max}): job {} holds {h} (GET /job/{})",
            busy.job_id, busy.job_id
        ),
        other => format!("job {} holds {other}", busy.job_id),
    }
}
