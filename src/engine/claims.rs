//! Who is working on what, for callers that run several jobs at once (the
//! server): a job claims every (host, unit) it touches and, for a runbook,
//! the runbook's name. A second job wanting any of them waits until they
//! are free or its time is up, and then learns which job holds them.
//!
//! Beside these exclusive claims a job claims *members* of a group
//! (`group_by` with `max_unavailable`): up to a limit of hosts of one group
//! may be claimed at once, by any jobs, and hosts seen out of service count
//! against it too ([`Members`]).
//!
//! [`ClaimStore`] is the seam: [`LocalClaims`] keeps them in this
//! process's memory; a store shared by several servers (compare-and-set
//! entries in a key-value bucket) implements the same trait: one entry per
//! exclusive claim, and one entry per group whose value is its member set
//! (host, job), updated by compare-and-set so the count check and the
//! insert are one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::engine::job::Job;

/// Something a job works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// A unit on a host (inventory name, unit name).
    Unit(String, String),
    /// A runbook, by name.
    Runbook(String),
    /// A host counted against its group's `max_unavailable` (group, host).
    Member(String, String),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Unit(h, u) => write!(f, "{u} on {h}"),
            Claim::Runbook(r) => write!(f, "runbook {r}"),
            Claim::Member(g, h) => write!(f, "{h} of group {g}"),
        }
    }
}

/// Every (host, unit) a job may touch, `_any` candidates included: which
/// one `_any` picks is known only at run time.
pub fn claims_of(job: &Job) -> Vec<Claim> {
    let mut out: Vec<Claim> = job
        .expanded
        .iter()
        .flat_map(|ex| &ex.tasks)
        .filter_map(|t| {
            let h = job.inventory.hosts.get(t.host)?;
            Some(Claim::Unit(h.name.clone(), t.unit.as_str().to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Room for one more host in every group a job's `group_by` steps work
/// on: what a server checks before it starts the job, so a job that cannot
/// get even that within its wait is refused (409) instead of failing its
/// first batch. The walk claims each batch's own room later. The host
/// asked for is a name no host has: a group whose room another job holds
/// is full, whichever of its hosts this job would start with.
pub fn group_room(job: &Job) -> Vec<Members> {
    let mut out: Vec<Members> = Vec::new();
    for (step, ex) in job.playbook.steps.iter().zip(&job.expanded) {
        let Some(limit) = &step.limit else { continue };
        // A group is every host of the inventory with its label's value
        // (as the walk counts it), not only those the step targets.
        let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for t in &ex.tasks {
            if let Some(g) = job.inventory.hosts.get(t.host).and_then(|h| limit.group_of(h)) {
                groups.entry(g).or_default();
            }
        }
        for h in &job.inventory.hosts {
            if let Some(hosts) = limit.group_of(h).and_then(|g| groups.get_mut(&g)) {
                hosts.push(h.name.clone());
            }
        }
        for (group, hosts) in groups {
            let limit = limit.allowed(hosts.len());
            if out.iter().any(|m| m.group == group) {
                continue;
            }
            out.push(Members {
                group,
                limit,
                hosts: vec![format!("(a host of {} hosts)", hosts.len())],
                down: Vec::new(),
            });
        }
    }
    out
}

/// Where claims are kept: all of a job's claims are taken at once or none
/// are, and they are freed when the [`Held`] is dropped.
#[async_trait::async_trait]
pub trait ClaimStore: Send + Sync + std::fmt::Debug {
    /// Take every claim in `keys` for `job_id`, all or none, waiting up to
    /// `wait` for them to be free; else the claim another job holds.
    async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy>;
    /// Take room for `hosts` in each group of `groups` for `job_id`, all
    /// groups or none, waiting up to `wait`: a group's claimed hosts,
    /// its hosts seen out of service and these together may be at most its
    /// limit (a host counts once, whoever holds it). Else the member
    /// another job holds ([`Busy::job_id`] empty: a host out of service).
    async fn take_members(
        &self,
        groups: Vec<Members>,
        job_id: &str,
        wait: Duration,
    ) -> Result<Held, Busy>;
    /// How many claims are held now (the server's metrics).
    fn held(&self) -> usize;
    /// Wait until claims freed so far are gone from the store too (a
    /// process about to exit; memory needs no wait).
    async fn settle(&self) {}
}

/// Room asked for in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The group's name (`labels.cluster=a`).
    pub group: String,
    /// At most this many of its hosts claimed or out of service at once.
    pub limit: usize,
    /// The hosts this job is about to work on.
    pub hosts: Vec<String>,
    /// Hosts of the group seen out of service now (maintenance, failing
    /// health), which count against the limit whoever holds them.
    pub down: Vec<String>,
}

/// The claims held in this process's memory, by job id.
#[derive(Debug, Default, Clone)]
pub struct LocalClaims {
    inner: Arc<(Mutex<Table>, Notify)>,
}

/// What a [`LocalClaims`] holds.
#[derive(Debug, Default)]
struct Table {
    /// Exclusive claims and their job.
    sole: HashMap<Claim, String>,
    /// Each group's members: (host, job, which take), a host possibly
    /// twice (two steps of one job).
    members: HashMap<String, Vec<(String, String, u64)>>,
    /// Numbers the takes, so a release frees exactly its own members.
    takes: u64,
}

impl Table {
    /// Why `groups` cannot be given room now.
    fn full(&self, groups: &[Members]) -> Option<Busy> {
        groups.iter().find_map(|g| {
            let held: Vec<(&str, &str)> = self
                .members
                .get(&g.group)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|(h, j, _)| (h.as_str(), j.as_str()))
                .collect();
            no_room(g, &held)
        })
    }
}

/// Why group `g` has no room for its hosts beside the members `held`
/// (host, job) and its hosts out of service (a host counts once): the
/// member of another job that fills it, else a host out of service. Both
/// stores count with it, so a group's limit means the same in memory and
/// across machines.
pub fn no_room(g: &Members, held: &[(&str, &str)]) -> Option<Busy> {
    let mut counted: std::collections::BTreeSet<&str> = held.iter().map(|(h, _)| *h).collect();
    counted.extend(g.down.iter().map(String::as_str));
    counted.extend(g.hosts.iter().map(String::as_str));
    if counted.len() <= g.limit {
        return None;
    }
    let busy = held
        .iter()
        .find(|(h, _)| !g.hosts.iter().any(|m| m == h))
        .map(|(h, j)| Busy {
            job_id: (*j).to_string(),
            claim: Claim::Member(g.group.clone(), (*h).to_string()),
        })
        .or_else(|| {
            g.down.iter().find(|h| !g.hosts.contains(h)).map(|h| Busy {
                job_id: String::new(),
                claim: Claim::Member(g.group.clone(), h.clone()),
            })
        })
        .unwrap_or_else(|| Busy {
            job_id: String::new(),
            claim: Claim::Member(g.group.clone(), g.hosts.join(",")),
        });
    Some(busy)
}

/// What frees a [`Held`]'s claims in its store.
type Release = Box<dyn FnOnce(&[Claim]) + Send>;

/// Held claims; dropping it frees them (and wakes the waiters).
pub struct Held {
    keys: Vec<Claim>,
    release: Option<Release>,
}

impl Held {
    /// Claims taken in a store; `release` frees them there, once, when
    /// this is dropped.
    pub fn new(keys: Vec<Claim>, release: impl FnOnce(&[Claim]) + Send + 'static) -> Held {
        Held {
            keys,
            release: Some(Box::new(release)),
        }
    }

    /// What is held.
    #[cfg(test)]
    fn claims(&self) -> &[Claim] {
        &self.keys
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("keys", &self.keys).finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(&self.keys);
        }
    }
}

/// A claim another job holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The job holding it.
    pub job_id: String,
    /// What it holds.
    pub claim: Claim,
}

#[async_trait::async_trait]
impl ClaimStore for LocalClaims {
    async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy> {
        LocalClaims::take(self, keys, job_id, wait).await
    }
    async fn take_members(
        &self,
        groups: Vec<Members>,
        job_id: &str,
        wait: Duration,
    ) -> Result<Held, Busy> {
        let keys: Vec<Claim> = groups
            .iter()
            .flat_map(|g| g.hosts.iter().map(|h| Claim::Member(g.group.clone(), h.clone())))
            .collect();
        let taken = self
            .until(wait, |t| match t.full(&groups) {
                Some(b) => Err(b),
                None => {
                    t.takes += 1;
                    let n = t.takes;
                    for g in &groups {
                        let m = t.members.entry(g.group.clone()).or_default();
                        m.extend(g.hosts.iter().map(|h| (h.clone(), job_id.to_string(), n)));
                    }
                    Ok(n)
                }
            })
            .await?;
        let me = self.clone();
        Ok(Held::new(keys, move |_| me.release_members(taken)))
    }
    fn held(&self) -> usize {
        let t = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        t.sole.len() + t.members.values().map(Vec::len).sum::<usize>()
    }
}

impl LocalClaims {
    fn release(&self, keys: &[Claim]) {
        let (table, notify) = &*self.inner;
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            t.sole.remove(k);
        }
        drop(t);
        notify.notify_waiters();
    }

    fn release_members(&self, take: u64) {
        let (table, notify) = &*self.inner;
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        for m in t.members.values_mut() {
            m.retain(|(_, _, n)| *n != take);
        }
        t.members.retain(|_, m| !m.is_empty());
        drop(t);
        notify.notify_waiters();
    }

    /// Take every claim in `keys` for `job_id`, all or none, waiting up to
    /// `wait` for them to be free.
    pub async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy> {
        self.until(wait, |t| {
            match keys.iter().find_map(|k| t.sole.get(k).map(|j| (k, j))) {
                None => {
                    for k in &keys {
                        t.sole.insert(k.clone(), job_id.to_string());
                    }
                    Ok(())
                }
                Some((k, j)) => Err(Busy {
                    job_id: j.clone(),
                    claim: k.clone(),
                }),
            }
        })
        .await?;
        let me = self.clone();
        Ok(Held::new(keys, move |k| me.release(k)))
    }

    /// Try `attempt` on the table until it succeeds or `wait` is over,
    /// trying again whenever something is released.
    async fn until<T>(
        &self,
        wait: Duration,
        mut attempt: impl FnMut(&mut Table) -> Result<T, Busy>,
    ) -> Result<T, Busy> {
        let deadline = tokio::time::Instant::now() + wait;
        let (table, notify) = &*self.inner;
        loop {
            // Registered before looking, so a release between the look and
            // the wait is not missed.
            let freed = notify.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                match attempt(&mut t) {
                    Ok(v) => return Ok(v),
                    Err(busy) if tokio::time::Instant::now() >= deadline => return Err(busy),
                    Err(_) => {}
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                // One last look: freed exactly at the deadline counts.
                let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                return attempt(&mut t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_or_names_it() {
        let c = LocalClaims::default();
        let unit = || vec![Claim::Unit("h".into(), "u.service".into())];
        let first = c.take(unit(), "job-1", Duration::ZERO).await.unwrap();
        let busy = c.take(unit(), "job-2", Duration::ZERO).await.unwrap_err();
        assert_eq!(busy.job_id, "job-1");
        // Other units are free.
        let _other = c
            .take(vec![Claim::Runbook("r".into())], "job-3", Duration::ZERO)
            .await
            .unwrap();
        let c2 = c.clone();
        let waiter =
            tokio::spawn(async move { c2.take(unit(), "job-2", Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        drop(first);
        let held = waiter.await.unwrap().unwrap();
        assert_eq!(held.claims().len(), 1);
    }

    fn members(group: &str, limit: usize, hosts: &[&str], down: &[&str]) -> Vec<Members> {
        vec![Members {
            group: group.into(),
            limit,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            down: down.iter().map(|h| h.to_string()).collect(),
        }]
    }

    #[tokio::test]
    async fn a_group_holds_at_most_its_limit_across_jobs() {
        let c = LocalClaims::default();
        let z = Duration::ZERO;
        let a = c.take_members(members("g", 1, &["a"], &[]), "job-1", z).await.unwrap();
        // One more host of the group is one too many, for any job.
        let busy = c.take_members(members("g", 1, &["b"], &[]), "job-2", z).await.unwrap_err();
        assert_eq!(busy.job_id, "job-1");
        assert_eq!(busy.claim, Claim::Member("g".into(), "a".into()));
        // Another group is free; the same host again counts once.
        let _other = c.take_members(members("h", 1, &["x"], &[]), "job-2", z).await.unwrap();
        let again = c.take_members(members("g", 1, &["a"], &[]), "job-1", z).await.unwrap();
        drop(again);
        assert!(c.take_members(members("g", 1, &["b"], &[]), "job-2", z).await.is_err());
        // A host out of service fills the room as a claim does.
        drop(a);
        let busy = c.take_members(members("g", 1, &["b"], &["c"]), "job-2", z).await.unwrap_err();
        assert_eq!((busy.job_id.as_str(), busy.claim), ("", Claim::Member("g".into(), "c".into())));
        // A waiter gets the room once it is released.
        let first = c.take_members(members("g", 2, &["a", "b"], &[]), "job-1", z).await.unwrap();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.take_members(members("g", 2, &["c"], &[]), "job-2", Duration::from_secs(30)).await
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        let _room = waiter.await.unwrap().unwrap();
        assert_eq!(c.held(), 2, "job-2's member and the other group's");
    }

}
