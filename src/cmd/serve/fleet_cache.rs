//! The status page's snapshot of the fleet: the last read of every host,
//! shared by every session and replaced whole (see `fleet`, which reads
//! and filters it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::render::fleet::{FleetState, HostState};

/// One read of every host, and what it was read for.
pub(super) struct Snapshot {
    /// The `Loaded` it was read under (a reload makes it stale at once).
    pub(super) loaded: usize,
    /// When the read began.
    pub(super) taken: Instant,
    /// When a host of it was last read again on its own (see
    /// [`refresh_host`]): a full read begun before is older than it.
    pub(super) patched: Option<Instant>,
    pub(super) read_at: chrono::DateTime<chrono::Utc>,
    /// Every host of the inventory, in its order.
    pub(super) hosts: Arc<Vec<HostState>>,
    pub(super) by_name: Arc<HashMap<String, usize>>,
    pub(super) watched: Arc<BTreeSet<String>>,
}

/// A fleet state built from the live snapshot, kept for a moment.
struct LiveEntry {
    /// The `Loaded` it was built under.
    loaded: usize,
    /// The hosts it shows (the asked ones the key may see), in order.
    hosts: Vec<String>,
    built: Instant,
    state: FleetState,
}

/// How long a fleet state built from the live snapshot is reused. Built
/// per load it cost 138 ms of CPU at 1,000 hosts (every unit of every
/// host copied and judged); reused, a page loaded in a loop costs that at
/// most once a second, and a change shows within it.
const LIVE_REUSE: Duration = Duration::from_secs(1);

/// Fleet states kept (one per set of hosts asked, e.g. per key's scope).
const LIVE_KEPT: usize = 8;

/// The page's snapshot of the fleet, and whether a refresh is under way.
#[derive(Default)]
pub struct FleetCache {
    snap: Mutex<Option<Arc<Snapshot>>>,
    live: Mutex<Vec<LiveEntry>>,
    /// A background refresh is under way.
    pub(super) refreshing: AtomicBool,
    /// Why the last refresh failed, until one succeeds.
    pub(super) error: Mutex<Option<String>>,
}

impl FleetCache {
    pub(super) fn current(&self) -> Option<Arc<Snapshot>> {
        self.snap.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set(&self, s: Snapshot) {
        *self.snap.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(s));
    }

    /// Keep a full read unless a host was read again since it began: the
    /// page would show the host as it was before its change.
    pub(super) fn set_unless_patched(&self, s: Snapshot) {
        let mut cur = self.snap.lock().unwrap_or_else(|p| p.into_inner());
        let newer = cur
            .as_ref()
            .and_then(|c| c.patched)
            .is_some_and(|p| p > s.taken);
        if !newer {
            *cur = Some(Arc::new(s));
        }
    }

    pub(super) fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// A fleet state built from the live snapshot for `hosts` under
    /// `loaded` within [`LIVE_REUSE`].
    pub(super) fn live(&self, loaded: usize, hosts: &[&str]) -> Option<FleetState> {
        let cache = self.live.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|e| e.loaded == loaded && e.hosts == hosts && e.built.elapsed() < LIVE_REUSE)
            .map(|e| e.state.clone())
    }

    pub(super) fn set_live(&self, loaded: usize, hosts: Vec<String>, state: FleetState) {
        let mut cache = self.live.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|e| !(e.loaded == loaded && e.hosts == hosts) && e.built.elapsed() < LIVE_REUSE);
        if cache.len() >= LIVE_KEPT {
            cache.remove(0);
        }
        cache.push(LiveEntry {
            loaded,
            hosts,
            built: Instant::now(),
            state,
        });
    }

    /// Forget the fleet states built from the live snapshot: the page
    /// changed a host, and its next load must show it.
    pub(super) fn forget_live(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
