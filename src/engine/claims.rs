//! Who is working on what, for callers that run several jobs at once (the
//! server): a job claims every (host, unit) it touches and, for a runbook,
//! the runbook's name. A second job wanting any of them waits until they
//! are free or its time is up, and then learns which job holds them.
//!
//! [`ClaimStore`] is the seam: [`LocalClaims`] keeps them in this
//! process's memory; a store shared by several servers (compare-and-set
//! entries in a key-value bucket) implements the same trait.

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
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Unit(h, u) => write!(f, "{u} on {h}"),
            Claim::Runbook(r) => write!(f, "runbook {r}"),
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

/// Where claims are kept: all of a job's claims are taken at once or none
/// are, and they are freed when the [`Held`] is dropped.
#[async_trait::async_trait]
pub trait ClaimStore: Send + Sync {
    /// Take every claim in `keys` for `job_id`, all or none, waiting up to
    /// `wait` for them to be free; else the claim another job holds.
    async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy>;
    /// How many claims are held now (the server's metrics).
    fn held(&self) -> usize;
}

/// The claims held in this process's memory, by job id.
#[derive(Debug, Default, Clone)]
pub struct LocalClaims {
    inner: Arc<(Mutex<HashMap<Claim, String>>, Notify)>,
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
    fn held(&self) -> usize {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl LocalClaims {
    fn release(&self, keys: &[Claim]) {
        let (map, notify) = &*self.inner;
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            m.remove(k);
        }
        drop(m);
        notify.notify_waiters();
    }

    /// Take every claim in `keys` for `job_id`, all or none, waiting up to
    /// `wait` for them to be free.
    pub async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy> {
        let deadline = tokio::time::Instant::now() + wait;
        let (map, notify) = &*self.inner;
        loop {
            // Registered before looking, so a release between the look and
            // the wait is not missed.
            let freed = notify.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
                match keys.iter().find_map(|k| m.get(k).map(|j| (k, j))) {
                    None => {
                        for k in &keys {
                            m.insert(k.clone(), job_id.to_string());
                        }
                        let me = self.clone();
                        return Ok(Held::new(keys, move |k| me.release(k)));
                    }
                    Some((k, j)) => {
                        let busy = Busy {
                            job_id: j.clone(),
                            claim: k.clone(),
                        };
                        if tokio::time::Instant::now() >= deadline {
                            return Err(busy);
                        }
                    }
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                // One last look: freed exactly at the deadline counts.
                let m = map.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((k, j)) = keys.iter().find_map(|k| m.get(k).map(|j| (k, j))) {
                    return Err(Busy {
                        job_id: j.clone(),
                        claim: k.clone(),
                    });
                }
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
}
