//! The live fleet snapshot: each watched host's units, kept current from
//! systemd's own signals over the host's pooled connection (`watch`),
//! healed by a periodic full read, so that reads (the server's status,
//! Consul and Redis routes, the status page) answer from memory while a
//! host's entry is fresh instead of reading the host per request.
//!
//! One seam for all of it, [`Fleet`]: a server in cluster mode keeps the
//! watch on the worker that owns the hosts and answers through the same
//! calls. Hosts are watched on demand (the first read of a host starts its
//! watch and is answered by reading the host, as without a snapshot) and
//! dropped after [`LiveSettings::idle`] without a read.
//!
//! Bounds: at most [`LiveSettings::max_hosts`] hosts, and per host at most
//! [`snapshot::MAX_LISTED`] loaded services and [`snapshot::MAX_NAMED`]
//! named units; what is past a bound is read from the host as before.

mod snapshot;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::facts::{Facts, UnitFacts};
use crate::model::inventory::Host;
use crate::model::maintenance::MaintenanceState;
use crate::remote::pool::Pool;

use snapshot::HostSnap;

/// A host's error until its watch's first full read.
pub const NOT_READ: &str = "not read yet";

/// How the snapshot is kept.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// An entry answers only if confirmed current within this (a full
    /// read, or a ping to systemd answered after every earlier signal).
    pub fresh: Duration,
    /// Every host is read in full this often, to heal a missed signal.
    pub heal: Duration,
    /// Hosts watched at most; past it, reads of other hosts read them.
    pub max_hosts: usize,
    /// A host not read for this long is no longer watched.
    pub idle: Duration,
    /// Bound on connecting and on one full read.
    pub timeout: Duration,
}

impl LiveSettings {
    /// The defaults: fresh 5 s, heal 60 s, 1024 hosts, idle 10 min.
    pub fn new(timeout: Duration) -> Self {
        LiveSettings {
            fresh: Duration::from_secs(5),
            heal: Duration::from_secs(60),
            max_hosts: 1024,
            idle: Duration::from_secs(600),
            timeout,
        }
    }

    /// How often a watcher pings systemd: thrice per freshness bound, so
    /// one late answer does not make the entry stale.
    fn ping_every(&self) -> Duration {
        (self.fresh / 3).max(Duration::from_millis(100))
    }
}

/// One host as the status page shows it: [`Fleet::snapshot`].
// The status page's host grid reads these (issue 22's page, built
// beside this snapshot); until it does, only tests do.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
#[derive(Debug, Clone)]
pub struct HostState {
    /// The host's inventory name.
    pub hostname: String,
    /// Every unit held: its loaded services and its named units.
    pub units: BTreeMap<String, UnitFacts>,
    /// Whether the watch is connected (false: `error` says why; also
    /// false before the first full read).
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// When the last full read of the host finished.
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Since when the entry is confirmed current (None: it is not).
    pub age: Option<Duration>,
    /// Whether reads answer from it now.
    pub fresh: bool,
    /// Its maintenance flags as last read (None: not known now, a job
    /// may have changed them).
    pub maintenance: Option<MaintenanceState>,
}

/// The snapshot's counts, for the server's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Hosts watched whose entry answers now.
    pub fresh: usize,
    /// Hosts watched whose entry does not (connecting, lost, reading).
    pub stale: usize,
    /// Signals applied since start.
    pub signals: u64,
    /// Reads answered from the snapshot.
    pub answered: u64,
    /// Reads that had to read the hosts.
    pub missed: u64,
    /// The age of the oldest confirmation among the watched hosts that
    /// have one (None: none has).
    pub oldest: Option<Duration>,
}

struct Entry {
    host: Host,
    fingerprint: String,
    snap: HostSnap,
    asked: Instant,
    wake: Arc<tokio::sync::Notify>,
    /// Named units asked for and not held yet: the watcher reads them.
    to_read: Vec<String>,
    task: tokio::task::AbortHandle,
}

struct Inner {
    settings: LiveSettings,
    pool: Pool,
    hosts: Mutex<HashMap<String, Entry>>,
    signals: AtomicU64,
    answered: AtomicU64,
    missed: AtomicU64,
}

impl Inner {
    fn hosts(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the host's entry, if it is still watched.
    fn with<T>(&self, host: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.hosts().get_mut(host).map(f)
    }
}

/// The live snapshot of the watched hosts. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

fn fingerprint(h: &Host) -> String {
    serde_json::to_string(h).unwrap_or_default()
}

impl Fleet {
    /// An empty snapshot whose watchers take connections from `pool`.
    pub fn new(pool: Pool, settings: LiveSettings) -> Fleet {
        Fleet {
            inner: Arc::new(Inner {
                settings,
                pool,
                hosts: Mutex::new(HashMap::new()),
                signals: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                missed: AtomicU64::new(0),
            }),
        }
    }

    /// Watch `hosts` (and on them the named `units`, full names) from now
    /// on; a host already watched is marked as just asked for. Must be
    /// called inside a tokio runtime (it starts the watchers).
    pub fn watch(&self, hosts: &[Host], units: &[String]) {
        let now = Instant::now();
        let mut all = self.inner.hosts();
        for h in hosts {
            let fp = fingerprint(h);
            // A reloaded inventory that changed how to reach the host:
            // its watch starts over.
            if all.get(&h.name).is_some_and(|e| e.fingerprint != fp) {
                if let Some(old) = all.remove(&h.name) {
                    old.task.abort();
                }
            }
            if !all.contains_key(&h.name) {
                if all.len() >= self.inner.settings.max_hosts {
                    continue;
                }
                let wake = Arc::new(tokio::sync::Notify::new());
                let task = tokio::spawn(watch::run(self.inner.clone(), h.name.clone()));
                let mut snap = HostSnap::default();
                snap.lost(NOT_READ.into());
                all.insert(
                    h.name.clone(),
                    Entry {
                        host: h.clone(),
                        fingerprint: fp,
                        snap,
                        asked: now,
                        wake,
                        to_read: Vec::new(),
                        task: task.abort_handle(),
                    },
                );
            }
            let Some(e) = all.get_mut(&h.name) else {
                continue;
            };
            e.asked = now;
            let new = e.snap.want(units, now);
            if !new.is_empty() {
                e.to_read.extend(new);
                e.wake.notify_one();
            }
        }
    }

    /// The facts a `status` of `units` (full names; every loaded service
    /// without any) on `hosts` would read, from the snapshot, if every
    /// host's entry is fresh and holds those units; and the age of the
    /// oldest entry. None: read the hosts. Either way the hosts and units
    /// are watched from now on.
    pub fn answer(&self, hosts: &[Host], units: &[String]) -> Option<(Facts, Duration)> {
        self.watch(hosts, units);
        let now = Instant::now();
        let fresh = self.inner.settings.fresh;
        let all = self.inner.hosts();
        let mut facts = Facts::new();
        let mut oldest = Duration::ZERO;
        for h in hosts {
            let got = all.get(&h.name).and_then(|e| {
                if !e.snap.fresh(now, fresh) {
                    tracing::debug!(host = %h.name, age = ?e.snap.age(now), error = ?e.snap.error, "live snapshot: not fresh");
                    return None;
                }
                let Some(units) = e.snap.view(units) else {
                    tracing::debug!(host = %h.name, ?units, "live snapshot: units not held");
                    return None;
                };
                Some((e.snap.facts(units), e.snap.age(now).unwrap_or_default()))
            });
            let Some((hf, age)) = got else {
                drop(all);
                self.inner.missed.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            oldest = oldest.max(age);
            facts.hosts.insert(h.name.clone(), hf);
        }
        drop(all);
        self.inner.answered.fetch_add(1, Ordering::Relaxed);
        Some((facts, oldest))
    }

    /// Every host of `hosts` as the snapshot has it, in that order (a host
    /// not watched yet starts being watched and shows unreachable, "not
    /// read yet", until its first full read).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn snapshot(&self, hosts: &[Host]) -> Vec<HostState> {
        self.watch(hosts, &[]);
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let fresh = self.inner.settings.fresh;
        let all = self.inner.hosts();
        hosts
            .iter()
            .map(|h| match all.get(&h.name) {
                Some(e) => HostState {
                    hostname: h.name.clone(),
                    units: e.snap.all(),
                    reachable: e.snap.error.is_none() && e.snap.read_at.is_some(),
                    error: e.snap.error.clone(),
                    read_at: e.snap.read_at.and_then(|t| {
                        chrono::Duration::from_std(now.saturating_duration_since(t))
                            .ok()
                            .map(|d| wall - d)
                    }),
                    age: e.snap.age(now),
                    fresh: e.snap.fresh(now, fresh),
                    maintenance: e.snap.maintenance().cloned(),
                },
                None => HostState {
                    hostname: h.name.clone(),
                    units: BTreeMap::new(),
                    reachable: false,
                    error: Some(format!(
                        "not watched: the snapshot watches at most {} hosts",
                        self.inner.settings.max_hosts
                    )),
                    read_at: None,
                    age: None,
                    fresh: false,
                    maintenance: None,
                },
            })
            .collect()
    }

    /// Something systemd does not signal may have changed on `host` (a job
    /// ran there: maintenance flags): its entry answers nothing until its
    /// watcher has read them again.
    pub fn invalidate(&self, host: &str) {
        self.inner.with(host, |e| {
            e.snap.invalidate();
            e.wake.notify_one();
        });
    }

    /// The counts, for metrics.
    pub fn stats(&self) -> FleetStats {
        let now = Instant::now();
        let fresh = self.inner.settings.fresh;
        let all = self.inner.hosts();
        let up = all.values().filter(|e| e.snap.fresh(now, fresh)).count();
        let oldest = all.values().filter_map(|e| e.snap.age(now)).max();
        FleetStats {
            oldest,
            fresh: up,
            stale: all.len() - up,
            signals: self.inner.signals.load(Ordering::Relaxed),
            answered: self.inner.answered.load(Ordering::Relaxed),
            missed: self.inner.missed.load(Ordering::Relaxed),
        }
    }

    /// Stop every watch (at shutdown).
    pub fn stop(&self) {
        for (_, e) in self.inner.hosts().drain() {
            e.task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
