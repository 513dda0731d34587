//! Claims across machines, in a NATS KV bucket.
//!
//! A claim on a (host, unit) or a runbook is one key, taken by `create`:
//! JetStream's compare-and-set on "no entry", so two takers never both
//! win, and nothing is read before it is acted on. The holder renews each
//! key by `update` on the revision it holds, every quarter of the bucket's
//! max age; a holder that dies (or stops, or loses NATS) stops renewing
//! and its keys age out, so a crashed run frees its units within the age.
//! A holder that finds its revision moved has lost the claim and says so.
//!
//! `group_by` room is counted in the same bucket, one compare-and-set
//! entry per group (see `groups`), so every replica and every
//! `drover apply --nats` counts against one `max_unavailable`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::engine::claims::{Busy, Claim, ClaimStore, Held, Members};
use crate::engine::cluster::coordination::{give_back_keys, renew};
use crate::engine::cluster::groups::{self, KvGroups};
use crate::model::cluster::{token, CLAIMS_BUCKET};
use crate::remote::nats::{Nats, NatsError};

/// How often a waiting taker looks again: a key aged out is not announced
/// to watchers on nats-server 2.9, so a wait polls.
const RETRY: Duration = Duration::from_millis(250);
/// Bound on one KV call.
const CALL: Duration = Duration::from_secs(5);


/// Up to 100 ms, from the OS's randomness (0 without it).
fn rand_ms() -> u8 {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    b[0] % 101
}

/// A claim's value: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    /// The job.
    job_id: String,
    /// The process (`drover apply on HOST pid N`, a replica's name).
    by: String,
}

/// Claims in the KV bucket [`CLAIMS_BUCKET`].
#[derive(Clone)]
pub struct KvClaims {
    store: kv::Store,
    /// Who this process is, in the claims it writes.
    by: String,
    /// The bucket's max age: a key not renewed within it is gone.
    ttl: Duration,
    held: Arc<AtomicUsize>,
    /// The tasks renewing held claims (and giving them back once freed).
    holding: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for KvClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClaims")
            .field("by", &self.by)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The key of a claim: its kind, then its parts encoded ([`token`]).
pub fn claim_key(c: &Claim) -> String {
    match c {
        Claim::Unit(h, u) => format!("unit.{}.{}", token(h), token(u)),
        Claim::Runbook(r) => format!("runbook.{}", token(r)),
        Claim::Member(g, h) => format!("member.{}.{}", token(g), token(h)),
    }
}

impl KvClaims {
    /// The claims bucket over `nats` (made with max age `ttl` if it does
    /// not exist; an existing bucket keeps its own), written as `by`.
    pub async fn open(nats: &Nats, ttl: Duration, by: String) -> Result<KvClaims, NatsError> {
        let (store, ttl) = nats.bucket_aged(CLAIMS_BUCKET, ttl, CALL).await?;
        Ok(KvClaims {
            store,
            by,
            ttl,
            held: Arc::default(),
            holding: Arc::default(),
        })
    }

    /// One attempt at every key, all or none: the revisions taken, else
    /// the claim someone holds (the ones taken meanwhile are given back).
    /// The keys are created at once, not one round trip after another: a
    /// job over 30 hosts waits for one round trip, not thirty.
    async fn try_take(&self, keys: &[Claim], value: &[u8]) -> Result<Vec<(String, u64)>, Busy> {
        let created = futures_util::future::join_all(keys.iter().map(|c| {
            let key = claim_key(c);
            async move {
                let r = tokio::time::timeout(CALL, self.store.create(&key, value.to_vec().into())).await;
                (key, r)
            }
        }))
        .await;
        let mut taken: Vec<(String, u64)> = Vec::new();
        let mut busy = None;
        for (c, (key, created)) in keys.iter().zip(created) {
            let why = match created {
                Ok(Ok(rev)) => {
                    taken.push((key, rev));
                    continue;
                }
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if busy.is_some() {
                        continue;
                    }
                    match tokio::time::timeout(CALL, self.store.entry(&key)).await {
                        Ok(Ok(Some(e))) => serde_json::from_slice::<Holder>(&e.value)
                            .map(|h| h.job_id)
                            .unwrap_or_else(|_| "(an unreadable claim)".into()),
                        // Gone between the two calls: taken again next look.
                        _ => "(a claim just released)".into(),
                    }
                }
                Ok(Err(e)) => format!("(the claims bucket refused: {e})"),
                Err(_) => "(the claims bucket did not answer within 5s)".into(),
            };
            busy.get_or_insert(Busy {
                job_id: why,
                claim: c.clone(),
            });
        }
        match busy {
            None => Ok(taken),
            Some(b) => {
                give_back_keys(&self.store, &taken).await;
                Err(b)
            }
        }
    }
}

/// `attempt` again until it succeeds or `wait` is over (then its last
/// refusal). Two takers that collided try again at different times.
async fn until<T, F, Fut>(wait: Duration, mut attempt: F) -> Result<T, Busy>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Busy>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(busy) if tokio::time::Instant::now() >= deadline => return Err(busy),
            Err(_) => {
                let jitter = Duration::from_millis(u64::from(rand_ms()));
                tokio::time::sleep_until((tokio::time::Instant::now() + RETRY + jitter).min(deadline))
                    .await
            }
        }
    }
}

impl KvClaims {
    /// `keys` held while `task` renews them: dropping the Held stops the
    /// renewals (through `stop`) and gives the keys back
    /// ([`ClaimStore::settle`] waits for that).
    fn kept(
        &self,
        keys: Vec<Claim>,
        task: tokio::task::JoinHandle<()>,
        stop: tokio::sync::oneshot::Sender<()>,
    ) -> Held {
        let n = keys.len();
        self.held.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut h) = self.holding.lock() {
            h.retain(|t| !t.is_finished());
            h.push(task);
        }
        let held = self.held.clone();
        Held::new(keys, move |_| {
            held.fetch_sub(n, Ordering::Relaxed);
            let _ = stop.send(());
        })
    }
}

/// Renew `keys` every quarter `ttl` until `stop`, then give them back.
async fn hold(
    store: kv::Store,
    mut keys: Vec<(String, u64)>,
    value: Vec<u8>,
    ttl: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let every = (ttl / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(every) => {}
        }
        let lost = renew(&store, &mut keys, &value).await;
        if !lost.is_empty() {
            tracing::error!(
                keys = ?lost,
                "claims lost: they aged out before they were renewed (this process was stopped or cut off from NATS), and another run may hold them now"
            );
            keys.retain(|(k, _)| !lost.contains(k));
        }
    }
    give_back_keys(&store, &keys).await;
}

#[async_trait::async_trait]
impl ClaimStore for KvClaims {
    async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy> {
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        let value = serde_json::to_vec(&Holder {
            job_id: job_id.to_string(),
            by: self.by.clone(),
        })
        .unwrap_or_default();
        let taken = until(wait, || self.try_take(&keys, &value)).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(hold(self.store.clone(), taken, value, self.ttl, rx));
        Ok(self.kept(keys, task, tx))
    }

    async fn take_members(
        &self,
        groups: Vec<Members>,
        job_id: &str,
        wait: Duration,
    ) -> Result<Held, Busy> {
        let groups = groups::in_order(groups);
        let keys: Vec<Claim> = groups
            .iter()
            .flat_map(|g| g.hosts.iter().map(|h| Claim::Member(g.group.clone(), h.clone())))
            .collect();
        let value = serde_json::to_vec(&Holder {
            job_id: job_id.to_string(),
            by: self.by.clone(),
        })
        .unwrap_or_default();
        let kv = KvGroups {
            store: self.store.clone(),
        };
        // A take of its own at each attempt: a wait longer than the
        // bucket's max age never leaves an aged-out take behind.
        let (take, rev) = until(wait, || async {
            let take = groups::take_id();
            let rev = groups::take_room(&kv, &groups, job_id, (&take, &value)).await?;
            Ok((take, rev))
        })
        .await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let names = groups.into_iter().map(|g| g.group).collect();
        let task = tokio::spawn(groups::hold_room(kv, (take, rev, value), names, self.ttl, rx));
        Ok(self.kept(keys, task, tx))
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    async fn settle(&self) {
        let tasks: Vec<_> = match self.holding.lock() {
            Ok(mut h) => h.drain(..).collect(),
            Err(_) => return,
        };
        for t in tasks {
            // Bounded: NATS gone, the keys age out instead.
            let _ = tokio::time::timeout(CALL * 2, t).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_be_widened_by_names() {
        let a = claim_key(&Claim::Unit("web.1".into(), "a.service".into()));
        let b = claim_key(&Claim::Unit("web".into(), "1.a.service".into()));
        assert_ne!(a, b);
        let k = claim_key(&Claim::Unit("*".into(), ">".into()));
        assert!(!k.contains('*') && !k.contains('>'), "{k}");
        assert_eq!(k.split('.').count(), 3, "{k}");
    }
}

/// [`KvClaims`] opened at its first use, and opened again at the next if
/// NATS did not answer: a replica starts (and answers reads) while NATS
/// is still electing its leaders, or with credentials that may run no job;
/// a job that cannot reach the claims does not start.
#[derive(Debug)]
pub struct LazyKvClaims {
    nats: Nats,
    ttl: Duration,
    by: String,
    store: tokio::sync::OnceCell<KvClaims>,
}

impl LazyKvClaims {
    /// Claims over `nats` (see [`KvClaims::open`]), opened when first taken.
    pub fn new(nats: Nats, ttl: Duration, by: String) -> Self {
        LazyKvClaims {
            nats,
            ttl,
            by,
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn store(&self, first: Option<&Claim>) -> Result<&KvClaims, Busy> {
        self.store
            .get_or_try_init(|| KvClaims::open(&self.nats, self.ttl, self.by.clone()))
            .await
            .map_err(|e| Busy {
                job_id: format!("(the claims bucket cannot be reached: {e})"),
                claim: first.cloned().unwrap_or(Claim::Runbook(String::new())),
            })
    }
}

#[async_trait::async_trait]
impl ClaimStore for LazyKvClaims {
    async fn take(&self, keys: Vec<Claim>, job_id: &str, wait: Duration) -> Result<Held, Busy> {
        let store = self.store(keys.first()).await?;
        store.take(keys, job_id, wait).await
    }

    async fn take_members(
        &self,
        groups: Vec<Members>,
        job_id: &str,
        wait: Duration,
    ) -> Result<Held, Busy> {
        let store = self.store(None).await?;
        store.take_members(groups, job_id, wait).await
    }

    fn held(&self) -> usize {
        self.store.get().map_or(0, |s| s.held())
    }

    async fn settle(&self) {
        if let Some(s) = self.store.get() {
            s.settle().await;
        }
    }
}
