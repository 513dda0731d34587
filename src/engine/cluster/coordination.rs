//! Which replica coordinates a running job, and the takeover of a job
//! whose replica died.
//!
//! A job's coordinator takes its lease in [`JOB_LEASES_BUCKET`] by
//! `create` (compare-and-set on "absent") as the job starts, renews it by
//! `update` on the revision it holds every quarter of the TTL, and gives
//! it back (a delete on that revision) once the job's end is in the jobs
//! stream. It asks the workers for nothing, and publishes nothing of the
//! job, once its last renewal, on its own monotonic clock, is older than
//! the TTL minus a quarter: a replica that was stopped, or cut off from
//! NATS, acts on nothing stale when it wakes.
//!
//! Every replica watches the bucket. A lease whose revision has not moved
//! for a whole TTL, measured on the watcher's monotonic clock (never by
//! comparing its clock with the entry's timestamp), is tried by `create`,
//! which succeeds only once the server has expired the entry (the bucket's
//! max age; nats-server 2.9 tells no watcher when that happens). One
//! replica wins; it rebuilds the job from the lease and continues it from
//! the results in the jobs stream ([`crate::engine::carry::Origin::Takeover`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::engine::execute::{HostTasks, Unanswered};
use crate::model::cluster::{token, JobLease, TaskReply, TaskRequest, JOB_LEASES_BUCKET, PROTOCOL};
use crate::model::inventory::Host;
use crate::remote::nats::{Nats, NatsError};

/// Bound on one KV call.
const CALL: Duration = Duration::from_secs(5);

/// When a lease was last renewed, on this process's monotonic clock: a
/// job's lease here, a worker's host-bucket lease in
/// [`crate::engine::cluster::worker`].
#[derive(Debug)]
pub struct Renewed {
    start: Instant,
    at_ms: AtomicU64,
    fence: Duration,
    lost: AtomicBool,
}

impl Renewed {
    fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Renewed::fenced(ttl.saturating_sub(ttl / 4)))
    }

    /// Fresh for `fence` after each renewal (not renewed yet).
    pub(crate) fn fenced(fence: Duration) -> Renewed {
        Renewed {
            start: Instant::now(),
            at_ms: AtomicU64::new(0),
            fence,
            lost: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn renew(&self) {
        self.at_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Another replica took the lease.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// How long after a renewal the lease stops being fresh.
    pub fn fence(&self) -> Duration {
        self.fence
    }

    /// Held, and renewed within the fence: this replica may act for the
    /// job.
    pub fn fresh(&self) -> bool {
        let age = self.now_ms().saturating_sub(self.at_ms.load(Ordering::SeqCst));
        !self.lost() && u128::from(age) < self.fence.as_millis()
    }
}

/// One job's lease, held by this replica.
pub struct Holding {
    key: String,
    revision: u64,
    value: Vec<u8>,
    /// Its renewals.
    pub renewed: Arc<Renewed>,
}

/// A job whose coordinator stopped renewing its lease, now held here.
pub struct Takeover {
    /// The replica that held it.
    pub from: String,
    /// The job, as the lease holds it (`by` is this replica now).
    pub lease: JobLease,
    /// The lease, to keep renewed while the job runs here.
    pub holding: Holding,
    /// The leases' TTL (the bucket's max age).
    pub ttl: Duration,
}

/// The job leases, as one replica holds and watches them.
pub struct JobLeases {
    nats: Nats,
    by: String,
    ttl: Duration,
    store: OnceCell<(kv::Store, Duration)>,
    /// The leases this replica holds and renews now.
    held: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl JobLeases {
    /// Leases written as replica `by`, in a bucket made with max age `ttl`
    /// if it does not exist (an existing bucket keeps its own).
    pub fn new(nats: Nats, ttl: Duration, by: String) -> Arc<Self> {
        Arc::new(JobLeases {
            nats,
            by,
            ttl,
            store: OnceCell::new(),
            held: Default::default(),
        })
    }

    /// This replica's name.
    pub fn by(&self) -> &str {
        &self.by
    }

    fn hold(&self, key: &str, on: bool) {
        if let Ok(mut g) = self.held.lock() {
            match on {
                true => g.insert(key.to_string()),
                false => g.remove(key),
            };
        }
    }

    fn holds(&self, key: &str) -> bool {
        self.held.lock().map(|g| g.contains(key)).unwrap_or(false)
    }

    /// The bucket and its max age.
    async fn store(&self) -> Result<(kv::Store, Duration), NatsError> {
        self.store
            .get_or_try_init(|| self.nats.bucket_aged(JOB_LEASES_BUCKET, self.ttl, CALL))
            .await
            .cloned()
    }

    /// Take the lease of a job starting here.
    pub async fn take(&self, job_id: &str, lease: &JobLease) -> Result<Holding, NatsError> {
        let (store, ttl) = self.store().await?;
        let value = serde_json::to_vec(lease).map_err(|e| NatsError(e.to_string()))?;
        let key = token(job_id);
        let revision = tokio::time::timeout(CALL, store.create(&key, value.clone().into()))
            .await
            .map_err(|_| NatsError(format!("KV bucket {JOB_LEASES_BUCKET} did not answer within 5s")))?
            .map_err(|e| NatsError(format!("job {job_id}'s lease: {e}")))?;
        let renewed = Renewed::new(ttl);
        renewed.renew();
        self.hold(&key, true);
        Ok(Holding {
            key,
            revision,
            value,
            renewed,
        })
    }

    /// Give a lease back now (a job that did not start).
    pub async fn give_back(&self, h: Holding) {
        self.hold(&h.key, false);
        if let Ok((store, _)) = self.store().await {
            let _ = tokio::time::timeout(CALL, store.delete_expect_revision(&h.key, Some(h.revision))).await;
        }
    }

    /// Keep `h` renewed until `done` resolves, then give it back. `lost`
    /// runs once if another replica took it meanwhile (this one was
    /// stopped or cut off for longer than the TTL).
    pub fn keep(
        self: &Arc<Self>,
        mut h: Holding,
        done: impl Future<Output = ()> + Send + 'static,
        lost: impl FnOnce() + Send + 'static,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let (store, ttl) = match me.store().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("job leases: {e}");
                    me.hold(&h.key, false);
                    return;
                }
            };
            let mut tick = tokio::time::interval(ttl / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(done);
            loop {
                tokio::select! {
                    _ = &mut done => {
                        // On its revision: a lease taken over meanwhile is
                        // not deleted under its new holder.
                        let _ = tokio::time::timeout(CALL, store.delete_expect_revision(&h.key, Some(h.revision))).await;
                        me.hold(&h.key, false);
                        return;
                    }
                    _ = tick.tick() => {
                        match tokio::time::timeout(CALL, store.update(&h.key, h.value.clone().into(), h.revision)).await {
                            Ok(Ok(rev)) => {
                                h.revision = rev;
                                h.renewed.renew();
                            }
                            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                // A renewal that landed but whose answer was
                                // lost (a timeout, a NATS server's death)
                                // left this replica's own value at a newer
                                // revision: still ours.
                                if let Some(rev) = still_ours(&store, &h.key, &h.value).await {
                                    h.revision = rev;
                                    h.renewed.renew();
                                    continue;
                                }
                                h.renewed.lose();
                                me.hold(&h.key, false);
                                tracing::warn!(lease = %h.key, "another replica took this job over while this one was stopped or cut off (or its lease aged out): it stops here");
                                lost();
                                return;
                            }
                            // NATS unreachable: tried again next tick; the
                            // fence stops the job's work here meanwhile.
                            Ok(Err(e)) => tracing::warn!(lease = %h.key, error = %e, "a job lease not renewed"),
                            Err(_) => tracing::warn!(lease = %h.key, "a job lease not renewed within 5s"),
                        }
                    }
                }
            }
        });
    }

    /// Watch every job lease in the background; `take` runs for each job
    /// this replica takes over.
    pub fn watch<F, Fut>(self: &Arc<Self>, take: F)
    where
        F: Fn(Takeover) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.watch_once(&take).await {
                    tracing::warn!("watching the job leases: {e}; again in 1s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn watch_once<F, Fut>(&self, take: &F) -> Result<(), String>
    where
        F: Fn(Takeover) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (store, ttl) = self.store().await.map_err(|e| e.to_string())?;
        let mut w = store
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        // Each lease's last value, and when this replica saw it written.
        let mut seen: HashMap<String, (Instant, Vec<u8>)> = HashMap::new();
        let mut tick = tokio::time::interval(ttl / 4);
        loop {
            tokio::select! {
                e = w.next() => match e {
                    Some(Ok(e)) => match e.operation {
                        kv::Operation::Put => {
                            seen.insert(e.key, (Instant::now(), e.value.to_vec()));
                        }
                        _ => {
                            seen.remove(&e.key);
                        }
                    },
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the watch ended".into()),
                },
                _ = tick.tick() => {
                    let stale: Vec<(String, Vec<u8>)> = seen
                        .iter()
                        .filter(|(_, (at, _))| at.elapsed() >= ttl)
                        .map(|(k, (_, v))| (k.clone(), v.clone()))
                        .collect();
                    for (key, value) in stale {
                        if let Some(t) = self.try_take(&store, ttl, &key, &value).await {
                            seen.remove(&key);
                            tokio::spawn(take(t));
                        }
                    }
                }
            }
        }
    }

    /// One attempt at a lease not renewed for a TTL.
    async fn try_take(&self, store: &kv::Store, ttl: Duration, key: &str, value: &[u8]) -> Option<Takeover> {
        let lease: JobLease = match serde_json::from_slice(value) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %key, error = %e, "a malformed job lease: left alone");
                return None;
            }
        };
        // The leases it renews are its renewals' business; one of its own
        // that aged out (its renewals failed for a TTL) is taken over like
        // any other, here too.
        if self.holds(key) || lease.protocol != PROTOCOL {
            return None;
        }
        let from = lease.by.clone();
        let mut mine = lease;
        mine.by = self.by.clone();
        let bytes = serde_json::to_vec(&mine).ok()?;
        match tokio::time::timeout(CALL, store.create(key, bytes.clone().into())).await {
            Ok(Ok(revision)) => {
                self.hold(key, true);
                tracing::warn!(job = %mine.job.job_id, from = %from, "its coordinator stopped renewing the job's lease: taken over here");
                let renewed = Renewed::new(ttl);
                renewed.renew();
                Some(Takeover {
                    ttl,
                    from,
                    lease: mine,
                    holding: Holding {
                        key: key.to_string(),
                        revision,
                        value: bytes,
                        renewed,
                    },
                })
            }
            // Not expired on the server yet, or another replica won (its
            // write shows in the watch).
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
            Ok(Err(e)) => {
                tracing::warn!(lease = %key, error = %e, "a job lease could not be taken");
                None
            }
            Err(_) => None,
        }
    }
}

/// The revision of `key` when it still holds `value` (this holder's own
/// write), else None.
pub async fn still_ours(store: &kv::Store, key: &str, value: &[u8]) -> Option<u64> {
    match tokio::time::timeout(CALL, store.entry(key)).await {
        Ok(Ok(Some(e))) if e.operation == kv::Operation::Put && e.value.as_ref() == value => {
            Some(e.revision)
        }
        _ => None,
    }
}

/// Delete each key on the revision this holder wrote: a key someone else
/// took since is left alone. Claims, group room and their takes all
/// give keys back this way.
pub async fn give_back_keys(store: &kv::Store, keys: &[(String, u64)]) {
    futures_util::future::join_all(keys.iter().map(|(key, rev)| async move {
        match tokio::time::timeout(CALL, store.delete_expect_revision(key, Some(*rev))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(key, error = %e, "claim not given back (it ages out)"),
            Err(_) => tracing::debug!(key, "claim not given back in time (it ages out)"),
        }
    }))
    .await;
}

/// One renewal of every key of `keys` holding `value`, all at once (a job
/// over many units renews within its quarter), each revision moved on to
/// the one written; the keys lost (another holder's now, or gone).
pub async fn renew(store: &kv::Store, keys: &mut [(String, u64)], value: &[u8]) -> Vec<String> {
    let mut lost = Vec::new();
    let renewed = futures_util::future::join_all(keys.iter().map(|(key, rev)| {
        tokio::time::timeout(CALL, store.update(key.as_str(), value.to_vec().into(), *rev))
    }))
    .await;
    for ((key, rev), r) in keys.iter_mut().zip(renewed) {
        match r {
            Ok(Ok(r)) => *rev = r,
            // A renewal that landed but whose answer was lost: the key
            // still holds this holder's value, at a newer revision.
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match still_ours(store, key, value).await {
                    Some(r) => *rev = r,
                    None => lost.push(key.clone()),
                }
            }
            // NATS slow or away: try again next time; the key ages out if
            // that lasts.
            Ok(Err(e)) => tracing::warn!(key = %key, error = %e, "a claim was not renewed"),
            Err(_) => tracing::warn!(key = %key, "a claim was not renewed within 5s"),
        }
    }
    lost
}

/// A job's host tasks, asked only while this replica's lease on the job
/// is fresh: a coordinator that wakes from a stop sends no stale work.
#[derive(Debug)]
pub struct Fenced {
    /// The replica's tasks.
    pub inner: Arc<dyn HostTasks>,
    /// The job lease's renewals.
    pub renewed: Arc<Renewed>,
}

#[async_trait]
impl HostTasks for Fenced {
    async fn ask(&self, host: &Host, req: TaskRequest, bound: Duration) -> Result<TaskReply, Unanswered> {
        // A renewal late by a loaded moment is waited for; a lease taken
        // over, or not renewed within a whole fence, ends the asking.
        let t0 = Instant::now();
        if !self.renewed.fresh() {
            tracing::warn!(host = %host.name, "the job's lease is not fresh: waiting for its renewal before asking");
        }
        while !self.renewed.fresh() {
            if self.renewed.lost() || t0.elapsed() >= self.renewed.fence {
                return Ok(TaskReply::Refused(
                    "this replica's lease on the job is not fresh (it was stopped, or cut off from NATS): another replica may coordinate it, so nothing is asked".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.ask(host, req, bound).await
    }
}
