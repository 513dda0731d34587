//! The status page's snapshot of the fleet: the last read of every host,
//! shared by every session and replaced whole (see `fleet`, which reads
//! and filters it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::render::fleet::HostState;

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

/// The page's snapshot of the fleet, and whether a refresh is under way.
#[derive(Default)]
pub struct FleetCache {
    snap: Mutex<Option<Arc<Snapshot>>>,
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
}

