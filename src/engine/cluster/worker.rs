//! `drover worker`: announce itself, hold the leases of the host buckets
//! it wins among its region's live workers, and answer the reads of their
//! hosts over its own warm connections.
//!
//! A lease is a KV entry taken by `create` (compare-and-set on "absent")
//! and renewed by `update` on its revision, every quarter of the TTL; the
//! bucket's max age removes an entry its holder stopped renewing. A worker
//! serves a bucket only while its last renewal, on the monotonic clock,
//! is younger than the TTL minus a margin: a worker that was stopped
//! (SIGSTOP) or cut off stops answering before anyone else may take over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::engine::cluster::coordination::Renewed;
use crate::engine::events::NoEvents;
use crate::engine::fleet::Fleet;
use crate::engine::live::{read_facts_with, UnitSet};
use crate::model::cluster::{
    bucket_of, lease_key, owner_of, read_subject, task_subject, token, Lease, LogsAsk, LogsReply, ReadReply,
    ReadRequest, ReadUnits,
    WorkerInfo, LEASES_BUCKET, PROTOCOL, WORKERS_BUCKET,
};
use crate::model::inventory::{Host, Inventory};
use crate::model::unit::UnitName;
use crate::remote::fanout::Reach;
use crate::remote::nats::{Nats, NatsError};

/// Reads one worker answers at once; more wait their turn.
const READS_AT_ONCE: usize = 64;

/// What a worker is.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name, unique among live workers.
    pub name: String,
    /// The selector of its region's hosts (empty: every host).
    pub region: String,
    /// Its region's hosts, from the inventory.
    pub hosts: Vec<Host>,
    /// The inventory (its digest is checked on every request).
    pub inventory: Arc<Inventory>,
    /// Lease TTL for buckets this worker makes (an existing bucket's own
    /// max age wins: every worker must use the same).
    pub ttl: Duration,
    /// Forks, read bound and the connection pool.
    pub reach: Reach,
    /// The live snapshot of its hosts (None: every read reads the host).
    pub fleet: Option<Fleet>,
}

/// When a lease was last renewed, on this process's monotonic clock,
/// shared with the task answering its hosts: a read is answered only
/// while the lease is fenced-fresh, so a worker that wakes from a stop
/// (SIGSTOP, a stall) answers nothing queued meanwhile before its own
/// tick has seen whether it still holds the lease.
#[derive(Debug)]
pub struct LeaseClock {
    renewed: Renewed,
    /// The revision the lease was taken at: what the host's fence is
    /// raised to before a change. Renewals do not move it (a newer
    /// owner's take is still a newer revision), so a host's fence file is
    /// rewritten when the host changes owner, not at every renewal.
    revision: u64,
    /// The lease bucket's epoch (see [`crate::remote::fence`]).
    epoch: u64,
}

impl LeaseClock {
    fn new(fence: Duration, epoch: u64, revision: u64) -> Arc<Self> {
        Arc::new(LeaseClock {
            renewed: Renewed::fenced(fence),
            revision,
            epoch,
        })
    }

    /// The host fence's token under this lease.
    fn token(&self) -> crate::remote::fence::FenceToken {
        crate::remote::fence::FenceToken {
            epoch: self.epoch,
            revision: self.revision,
        }
    }

    fn renew(&self) {
        self.renewed.renew();
    }

    /// Renewed within the fence.
    fn valid(&self) -> bool {
        self.renewed.fresh()
    }
}

/// A bucket lease held, and the task answering its hosts.
struct Held {
    revision: u64,
    clock: Arc<LeaseClock>,
    serving: JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Its subscriptions go with the task.
        self.serving.abort();
    }
}

/// Run a worker until `stop` turns true, then give its leases back.
pub async fn run(nats: Nats, o: WorkerOptions, mut stop: watch::Receiver<bool>) -> Result<(), NatsError> {
    // An unattended worker waits out NATS being slow or not there yet
    // (a leaf link still coming up, a cluster electing its leader)
    // instead of exiting.
    let (workers, leases) = loop {
        let made = async {
            Ok::<_, NatsError>((
                nats.bucket(WORKERS_BUCKET, o.ttl).await?,
                nats.bucket(LEASES_BUCKET, o.ttl).await?,
            ))
        };
        match made.await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the KV buckets yet; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    };
    let (ttl, epoch) = match leases.status().await {
        Ok(s) => (
            Some(s.max_age()).filter(|a| !a.is_zero()).unwrap_or(o.ttl),
            // The bucket's creation, on the NATS server's clock: the same
            // for every worker of this bucket, later for a bucket made anew.
            u64::try_from(s.info.created.unix_timestamp()).unwrap_or(0),
        ),
        Err(_) => (o.ttl, 0),
    };
    // Renew four times per TTL; stop serving a quarter TTL before anyone
    // else may take over.
    let tick = ttl / 4;
    let fence = ttl.saturating_sub(ttl / 4);
    let info = WorkerInfo {
        protocol: PROTOCOL,
        name: o.name.clone(),
        region: o.region.clone(),
        inventory: o.inventory.digest.clone(),
    };
    let info_bytes = serde_json::to_vec(&info).map_err(|e| NatsError(e.to_string()))?;
    let lease_bytes = serde_json::to_vec(&Lease {
        worker: o.name.clone(),
    })
    .map_err(|e| NatsError(e.to_string()))?;
    let mut buckets: BTreeMap<u32, Vec<Host>> = BTreeMap::new();
    for h in &o.hosts {
        buckets.entry(bucket_of(&h.name)).or_default().push(h.clone());
    }
    let reads = Arc::new(Semaphore::new(READS_AT_ONCE));
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    tracing::info!(worker = %o.name, region = %o.region, hosts = o.hosts.len(), ttl = ?ttl, "worker up");
    // The live workers as last listed: a listing NATS does not answer in
    // time (a server died, a leader is being elected) must not stop the
    // renewals of the leases held.
    let mut live: Vec<String> = Vec::new();
    let bound = tick.max(Duration::from_millis(500));
    let lz = LeaseStore {
        epoch,
        store: &leases,
        name: &o.name,
        value: &lease_bytes,
        fence,
        bound,
    };
    let answering = Answering {
        client: nats.client.clone(),
        region: o.region.clone(),
        inventory: o.inventory.digest.clone(),
        reach: o.reach.clone(),
        fleet: o.fleet.clone(),
        reads: reads.clone(),
        tasks: Arc::new(crate::engine::cluster::tasks::WorkerTasks::new(
            o.inventory.clone(),
            o.reach.pool.clone(),
            o.reach.forks,
        )),
    };
    loop {
        let put = workers.put(token(&o.name), info_bytes.clone().into());
        match tokio::time::timeout(bound, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot announce this worker"),
            Err(_) => tracing::warn!("cannot announce this worker: timed out"),
        }
        match tokio::time::timeout(bound, live_workers(&workers, &o.region)).await {
            Ok(Ok(now)) => live = now,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot list the live workers"),
            Err(_) => tracing::warn!("cannot list the live workers: timed out"),
        }
        if !live.is_empty() {
            for (&b, hosts) in &buckets {
                let mine = owner_of(b, live.iter().map(String::as_str)) == Some(o.name.as_str());
                let key = lease_key(&o.region, b);
                step(&lz, &key, b, mine, &mut held, |clock| {
                    tokio::spawn(serve_bucket(clock, answering.clone(), hosts.clone()))
                })
                .await;
            }
        }
        // The fence: a lease not renewed lately is not served, whatever
        // NATS says later (this worker may have been asleep).
        held.retain(|b, h| {
            let fresh = h.clock.valid();
            if !fresh {
                tracing::warn!(bucket = b, "lease not renewed within the TTL: no longer served");
            }
            fresh
        });
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => break,
        }
    }
    // Give everything back at once, so the other workers take over at
    // their next tick instead of after the TTL.
    for (b, h) in std::mem::take(&mut held) {
        let key = lease_key(&o.region, b);
        h.serving.abort();
        let _ = leases.delete_expect_revision(&key, Some(h.revision)).await;
    }
    let _ = workers.delete(token(&o.name)).await;
    tracing::info!(worker = %o.name, "worker stopped, leases released");
    Ok(())
}

/// The leases bucket, this worker's name and lease value, and its clocks.
struct LeaseStore<'a> {
    /// The bucket's epoch, for the hosts' fences.
    epoch: u64,
    store: &'a kv::Store,
    name: &'a str,
    value: &'a [u8],
    /// Serve only while renewed within this.
    fence: Duration,
    /// Bound on each KV call within a tick: a call NATS does not answer
    /// (a server died, a leader is being elected) must not hold up the
    /// other buckets' renewals past their fence.
    bound: Duration,
}

/// What answering a bucket's reads needs, shared by its tasks.
#[derive(Clone)]
struct Answering {
    client: async_nats::Client,
    region: String,
    inventory: String,
    reach: Reach,
    fleet: Option<Fleet>,
    reads: Arc<Semaphore>,
    tasks: Arc<crate::engine::cluster::tasks::WorkerTasks>,
}

/// One bucket's lease for this tick: renew it, take it, or give it back.
async fn step(
    lz: &LeaseStore<'_>,
    key: &str,
    b: u32,
    mine: bool,
    held: &mut BTreeMap<u32, Held>,
    serve: impl FnOnce(Arc<LeaseClock>) -> JoinHandle<()>,
) {
    let (leases, value, fence, bound) = (lz.store, lz.value, lz.fence, lz.bound);
    let timed_out = || async_nats::Error::from("timed out");
    match (held.get_mut(&b), mine) {
        (Some(h), true) => match tokio::time::timeout(bound, leases.update(key, value.to_vec().into(), h.revision))
            .await
            .map_err(|_| timed_out())
        {
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(bucket = b, "lease lost to another worker");
                held.remove(&b);
            }
            Ok(Ok(rev)) => {
                h.revision = rev;
                h.clock.renew();
            }
            // Kept until the fence drops it: NATS may be back next tick.
            Ok(Err(e)) => tracing::warn!(bucket = b, error = %e, "cannot renew a lease"),
            Err(e) => tracing::warn!(bucket = b, error = %e, "cannot renew a lease"),
        },
        (Some(h), false) => {
            // Stop answering first, then let the winner take it.
            let rev = h.revision;
            held.remove(&b);
            if let Err(e) = leases.delete_expect_revision(key, Some(rev)).await {
                tracing::debug!(bucket = b, error = %e, "lease already gone");
            }
            tracing::info!(bucket = b, "lease handed over");
        }
        (None, true) => match tokio::time::timeout(bound, leases.create(key, value.to_vec().into()))
            .await
            .unwrap_or_else(|_| Err(kv::CreateError::new(kv::CreateErrorKind::Other)))
        {
            Ok(rev) => {
                tracing::info!(bucket = b, "lease taken");
                hold(held, b, rev, (fence, lz.epoch), serve);
            }
            // Its last holder's entry has not expired yet: wait, unless
            // that holder is this worker, which dropped it at its fence
            // (a renewal NATS did not answer in time): take it back on
            // its revision rather than wait out the TTL unserved.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let mine = match tokio::time::timeout(bound, leases.entry(key)).await {
                    Ok(Ok(Some(en))) => serde_json::from_slice::<Lease>(&en.value)
                        .ok()
                        .filter(|l| l.worker == lz.name)
                        .map(|_| en.revision),
                    _ => None,
                };
                if let Some(rev) = mine {
                    let back = tokio::time::timeout(bound, leases.update(key, value.to_vec().into(), rev));
                    if let Ok(Ok(rev)) = back.await {
                        tracing::info!(bucket = b, "lease taken (back)");
                        hold(held, b, rev, (fence, lz.epoch), serve);
                    }
                }
            }
            Err(e) => tracing::warn!(bucket = b, error = %e, "cannot take a lease"),
        },
        (None, false) => {}
    }
}

/// The regions the live workers announce (each once).
pub async fn live_regions(workers: &kv::Store) -> Result<Vec<String>, NatsError> {
    let mut out: Vec<String> = Vec::new();
    for w in live_infos(workers).await? {
        if !out.contains(&w.region) {
            out.push(w.region);
        }
    }
    Ok(out)
}

/// A lease just taken at `revision`: its clock starts, its reads are
/// answered.
fn hold(
    held: &mut BTreeMap<u32, Held>,
    b: u32,
    revision: u64,
    (fence, epoch): (Duration, u64),
    serve: impl FnOnce(Arc<LeaseClock>) -> JoinHandle<()>,
) {
    let clock = LeaseClock::new(fence, epoch, revision);
    clock.renew();
    let serving = serve(clock.clone());
    held.insert(
        b,
        Held {
            revision,
            clock,
            serving,
        },
    );
}

/// The names of the live workers of `region` (those whose entry has not
/// expired), this one included once it has announced itself.
async fn live_workers(workers: &kv::Store, region: &str) -> Result<Vec<String>, NatsError> {
    Ok(live_infos(workers)
        .await?
        .into_iter()
        .filter(|w| w.region == region)
        .map(|w| w.name)
        .collect())
}

/// Every live worker's entry that speaks this [`PROTOCOL`]; an entry drover
/// cannot read is logged and left out.
async fn live_infos(workers: &kv::Store) -> Result<Vec<WorkerInfo>, NatsError> {
    let mut keys = workers
        .keys()
        .await
        .map_err(|e| NatsError(format!("workers: {e}")))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(v)) = workers.get(&k).await else {
            continue;
        };
        match serde_json::from_slice::<WorkerInfo>(&v) {
            Ok(w) if w.protocol == PROTOCOL => out.push(w),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = %k, error = %e, "a worker entry drover cannot read"),
        }
    }
    Ok(out)
}

/// Answer the reads of `hosts` until aborted.
async fn serve_bucket(clock: Arc<LeaseClock>, a: Answering, hosts: Vec<Host>) {
    let Answering {
        client,
        region,
        inventory,
        reach,
        fleet,
        reads,
        tasks,
    } = a;
    let mut subs = Vec::new();
    for h in &hosts {
        for subject in [read_subject(&region, &h.name), task_subject(&region, &h.name)] {
            match client.subscribe(subject).await {
                Ok(s) => subs.push(s),
                Err(e) => tracing::warn!(host = %h.name, error = %e, "cannot listen for reads and tasks"),
            }
        }
    }
    let hosts: Arc<BTreeMap<String, Host>> =
        Arc::new(hosts.into_iter().map(|h| (h.name.clone(), h)).collect());
    let inventory: Arc<str> = inventory.into();
    let mut all = futures_util::stream::select_all(subs);
    while let Some(msg) = all.next().await {
        let Some(reply) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "a read without a reply subject: dropped");
            continue;
        };
        if !clock.valid() {
            tracing::warn!(subject = %msg.subject, "a read dropped: this worker's lease is not renewed (it was stopped or cut off)");
            continue;
        }
        if msg.subject.starts_with("drover.task.") {
            let (client, tasks, hosts) = (client.clone(), tasks.clone(), hosts.clone());
            let fence = clock.token();
            // A task's answer is sent whatever happened meanwhile: what was
            // done on the host is a fact the coordinator must hear.
            tokio::spawn(async move {
                let answer = tasks
                    .answer(&msg.payload, |h| hosts.contains_key(h), fence)
                    .await;
                match serde_json::to_vec(&answer) {
                    Ok(b) => {
                        if let Err(e) = client.publish(reply, b.into()).await {
                            tracing::warn!(error = %e, "cannot send a task's answer");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot encode a task's answer"),
                }
            });
            continue;
        }
        let Ok(permit) = reads.clone().acquire_owned().await else {
            return;
        };
        let (client, hosts, inventory, reach, fleet) = (
            client.clone(),
            hosts.clone(),
            inventory.clone(),
            reach.clone(),
            fleet.clone(),
        );
        let clock = clock.clone();
        tokio::spawn(async move {
            let answer = answer(&msg.payload, &hosts, &inventory, reach, fleet.as_ref()).await;
            drop(permit);
            // Stopped while reading: the answer may be stale.
            if !clock.valid() {
                tracing::warn!("an answer dropped: this worker's lease expired while it read");
                return;
            }
            match serde_json::to_vec(&answer) {
                Ok(b) => {
                    if let Err(e) = client.publish(reply, b.into()).await {
                        tracing::warn!(error = %e, "cannot send a read's answer");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a read's answer"),
            }
        });
    }
}

/// One read request's answer. A request drover cannot read is refused
/// (and logged), never a panic.
async fn answer(
    payload: &[u8],
    hosts: &BTreeMap<String, Host>,
    inventory: &str,
    reach: Reach,
    fleet: Option<&Fleet>,
) -> ReadReply {
    let req: ReadRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "a malformed read request: refused");
            return ReadReply::Refused(format!("not a drover read request: {e}"));
        }
    };
    if req.protocol != PROTOCOL {
        return ReadReply::Refused(format!(
            "protocol {} (this worker speaks {PROTOCOL})",
            req.protocol
        ));
    }
    if req.inventory != inventory {
        return ReadReply::Refused(
            "the asker holds another inventory than this worker: reload both from the same file"
                .into(),
        );
    }
    let Some(host) = hosts.get(&req.host) else {
        return ReadReply::Refused(format!("{} is not one of this worker's hosts", req.host));
    };
    if let Some(ask) = &req.logs {
        return logs(host, ask, reach).await;
    }
    let set = match req.units {
        ReadUnits::Loaded => UnitSet::LoadedServices,
        ReadUnits::All => UnitSet::AllServices,
        ReadUnits::These(names) => {
            match names.iter().map(|n| UnitName::parse(n)).collect::<Result<Vec<_>, _>>() {
                Ok(u) => UnitSet::These(u),
                Err(m) => return ReadReply::Refused(format!("unit name: {m}")),
            }
        }
    };
    let files = match req
        .files
        .iter()
        .map(|n| UnitName::parse(n))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(f) => f,
        Err(m) => return ReadReply::Refused(format!("unit file name: {m}")),
    };
    // From the snapshot while it is fresh, as a single server answers; a
    // dry run reads the host, and the snapshot holds no unit files.
    let named: Option<Vec<String>> = match &set {
        _ if req.from_host || !files.is_empty() => None,
        UnitSet::LoadedServices => Some(Vec::new()),
        UnitSet::These(u) => Some(u.iter().map(|u| u.to_string()).collect()),
        UnitSet::AllServices => None,
    };
    if let (Some(f), Some(named)) = (fleet, named) {
        if let Some((mut facts, age)) = f.answer(std::slice::from_ref(host), &named) {
            if let Some(facts) = facts.hosts.shift_remove(&host.name) {
                tracing::debug!(host = %host.name, ?age, "read answered from the live snapshot");
                return ReadReply::Facts {
                    facts,
                    unreachable: false,
                };
            }
        }
    }
    tracing::debug!(host = %host.name, "read from the host");
    let (mut facts, results) = read_facts_with(
        std::slice::from_ref(host),
        reach,
        |_| set.clone(),
        |_| files.clone(),
        &NoEvents,
    )
    .await;
    let unreachable = results
        .iter()
        .any(|r| r.result.as_ref().is_err_and(|e| e.is_unreachable()));
    match facts.hosts.shift_remove(&host.name) {
        Some(facts) => ReadReply::Facts { facts, unreachable },
        None => ReadReply::Refused("the read returned nothing".into()),
    }
}

/// A journal read of one host, its query validated again here.
async fn logs(host: &Host, ask: &LogsAsk, reach: Reach) -> ReadReply {
    let q = match ask.query() {
        Ok(q) => q,
        Err(m) => return ReadReply::Refused(format!("journal query: {m}")),
    };
    tracing::debug!(host = %host.name, unit = %q.unit, "journal read from the host");
    let (mut read, _) =
        crate::engine::logs::read_logs(std::slice::from_ref(host), &q, reach, false).await;
    match read.pop() {
        Some(l) => ReadReply::Logs(LogsReply {
            entries: l.entries,
            truncated: l.truncated,
            unit_unknown: l.unit_unknown,
            error: l.error,
            unreachable: l.unreachable,
        }),
        None => ReadReply::Refused("the journal read returned nothing".into()),
    }
}
