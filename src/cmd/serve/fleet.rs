//! The fleet as the status page reads it. Every host state the page
//! shows comes through [`fleet_state`], and only through it: from the
//! live snapshot kept current by systemd's signals (`serve::live`) when
//! every host asked for is known current there; else from the page's own
//! snapshot of the whole inventory, read through the joined read (so a
//! page load joins `GET /node/_all/service` in flight and the reverse)
//! and refreshed in the background once it is older than [`REFRESH`]. A
//! page load never reads every host itself, but the very first one
//! without a live answer, which waits for the first snapshot.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::status::{StatusEntry, StatusReport};
use crate::model::facts::Maintenance;
use crate::model::inventory::Host;
use crate::render::fleet::{FleetState, HostState};

use super::auth::Caller;
use super::fleet_cache::Snapshot;
use super::state::{AppState, Loaded};

/// A snapshot older than this is read again, in the background, on the
/// next page load (which answers at once from the old one).
pub const REFRESH: Duration = Duration::from_secs(10);

/// Whose bound the page's reads count against in the joined read.
const WHO: &str = "(status page)";

/// The state of `hosts` (inventory names, in the order wanted) that the
/// key may see, from the page's fleet snapshot, with when it was read.
/// The one place the page reads host state from.
pub async fn fleet_state(state: &Arc<AppState>, caller: &Caller, hosts: &[String]) -> FleetState {
    if let Some(live) = &state.live {
        if let Some(fleet) = from_live(state, live, caller, hosts) {
            return fleet;
        }
    }
    let loaded = state.loaded();
    let key = Arc::as_ptr(&loaded) as usize;
    let snap = match state.fleet.current() {
        Some(s) if s.loaded == key => {
            if s.taken.elapsed() >= REFRESH {
                spawn_refresh(state.clone());
            }
            Some(s)
        }
        // None yet, or read under files since reloaded: wait for a read.
        _ => {
            refresh(state).await;
            state.fleet.current().filter(|s| s.loaded == key)
        }
    };
    let error = state
        .fleet
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(snap) = snap else {
        return FleetState {
            error: Some(error.unwrap_or_else(|| "the fleet could not be read".into())),
            ..FleetState::default()
        };
    };
    // The snapshot holds every host of this inventory, in its order: a
    // host's index is the same in both.
    let picked = hosts
        .iter()
        .filter_map(|h| snap.by_name.get(h).copied())
        .filter(|&i| {
            loaded
                .inventory
                .hosts
                .get(i)
                .is_some_and(|host| caller.may_reach(host))
        })
        .map(|i| snap.hosts[i].clone())
        .collect();
    FleetState {
        hosts: picked,
        read_at: Some(snap.read_at),
        error,
        watched: snap.watched.clone(),
    }
}

/// The hosts' state from the live snapshot (`serve --no-live` turns it
/// off), reading no host; None while any of them is not known current
/// there (being watched for the first time, lost, or past the watch's
/// bound): the load then answers from the page's own snapshot.
fn from_live(
    state: &Arc<AppState>,
    live: &crate::engine::fleet::Fleet,
    caller: &Caller,
    hosts: &[String],
) -> Option<FleetState> {
    let loaded = state.loaded();
    let by_name: HashMap<&str, &Host> = loaded
        .inventory
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h))
        .collect();
    let reachable: Vec<&Host> = hosts
        .iter()
        .filter_map(|n| by_name.get(n.as_str()).copied())
        .filter(|h| caller.may_reach(h))
        .collect();
    let key = Arc::as_ptr(&loaded) as usize;
    let names: Vec<&str> = reachable.iter().map(|h| h.name.as_str()).collect();
    if let Some(kept) = state.fleet.live(key, &names) {
        return Some(kept);
    }
    let picked: Vec<Host> = reachable.into_iter().cloned().collect();
    let lf = super::live::fleet_report(live, &picked);
    if !lf.stale.is_empty() {
        return None;
    }
    let read_at = lf
        .age
        .and_then(|a| chrono::Duration::from_std(a).ok())
        .map(|a| chrono::Utc::now() - a);
    let fleet = FleetState {
        hosts: hosts_of(&picked, &lf.report),
        read_at,
        error: None,
        watched: Arc::new(watched_units(&loaded)),
    };
    let names = picked.iter().map(|h| h.name.clone()).collect();
    state.fleet.set_live(key, names, fleet.clone());
    Some(fleet)
}

/// Read the host `name` again now and put it in the snapshot (after a
/// change the page made, so its next load shows it).
pub async fn refresh_host(state: &Arc<AppState>, name: &str) {
    state.fleet.forget_live();
    let loaded = state.loaded();
    let key = Arc::as_ptr(&loaded) as usize;
    let Some(snap) = state.fleet.current().filter(|s| s.loaded == key) else {
        return;
    };
    let Some(&i) = snap.by_name.get(name) else {
        return;
    };
    let read = state
        .executor
        .status(loaded.inventory.clone(), Some(name.to_string()), Vec::new())
        .await;
    let Ok(report) = read else { return };
    let mut fresh = hosts_of(&loaded.inventory.hosts, &report);
    let Some(one) = fresh.iter().position(|h| h.name == name).map(|p| fresh.swap_remove(p)) else {
        return;
    };
    let mut hosts = (*snap.hosts).clone();
    hosts[i] = one;
    state.fleet.set(Snapshot {
        loaded: snap.loaded,
        taken: snap.taken,
        patched: Some(Instant::now()),
        read_at: snap.read_at,
        hosts: Arc::new(hosts),
        by_name: snap.by_name.clone(),
        watched: snap.watched.clone(),
    });
}

fn spawn_refresh(state: Arc<AppState>) {
    if state.fleet.refreshing.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        refresh(&state).await;
        state.fleet.refreshing.store(false, Ordering::Release);
    });
}

/// Read every host of the inventory through the joined read and make it
/// the snapshot; a failed read keeps the old one and says why.
async fn refresh(state: &Arc<AppState>) {
    let loaded = state.loaded();
    let key = Arc::as_ptr(&loaded) as usize;
    let read_at = chrono::Utc::now();
    let taken = Instant::now();
    let read = super::read::shared_read(
        state,
        WHO,
        "",
        loaded.inventory.clone(),
        "_all",
        &[],
    )
    .await;
    match read {
        Ok(report) => {
            let hosts = hosts_of(&loaded.inventory.hosts, &report);
            let by_name = hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.name.clone(), i))
                .collect();
            state.fleet.set_unless_patched(Snapshot {
                loaded: key,
                taken,
                patched: None,
                read_at,
                hosts: Arc::new(hosts),
                by_name: Arc::new(by_name),
                watched: Arc::new(watched_units(&loaded)),
            });
            state.fleet.set_error(None);
        }
        Err(e) => state
            .fleet
            .set_error(Some(format!("{}: {}", e.error, e.details))),
    }
}

/// Per-host states of a read, in inventory order.
fn hosts_of(inv: &[Host], report: &StatusReport) -> Vec<HostState> {
    let mut units: HashMap<&str, Vec<StatusEntry>> = HashMap::new();
    for s in &report.services {
        units.entry(s.hostname.as_str()).or_default().push(s.clone());
    }
    let errors: HashMap<&str, &str> = report
        .errors
        .iter()
        .map(|e| (e.hostname.as_str(), e.error.as_str()))
        .collect();
    let flags: HashMap<&str, Maintenance> = report
        .maintenance
        .iter()
        .filter(|m| m.unit.is_none())
        .map(|m| {
            (
                m.hostname.as_str(),
                Maintenance {
                    reason: m.reason.clone(),
                    since: m.since.clone(),
                },
            )
        })
        .collect();
    inv.iter()
        .map(|h| {
            let mut us = units.remove(h.name.as_str()).unwrap_or_default();
            us.sort_by(|a, b| a.name.cmp(&b.name));
            HostState {
                name: h.name.clone(),
                address: h.address.clone(),
                labels: h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                units: Arc::new(us),
                error: errors.get(h.name.as_str()).map(|e| e.to_string()),
                maintenance: flags.get(h.name.as_str()).cloned(),
            }
        })
        .collect()
}

/// The units the runbooks name (service steps whose unit is the same on
/// every host): what the tiles watch besides failed units.
fn watched_units(loaded: &Loaded) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(any) = loaded.inventory.hosts.first() else {
        return out;
    };
    for rb in loaded.runbooks.values() {
        let Ok(pb) = rb.declared() else { continue };
        let ctx = pb.templates.host_context(any);
        for step in &pb.steps {
            if let crate::model::playbook::Operation::Service { name, .. } = &step.operation {
                if pb.templates.is_per_host(*name) {
                    continue;
                }
                if let Ok(u) = pb.templates.render_unit(*name, &ctx) {
                    out.insert(u.as_str().to_string());
                }
            }
        }
    }
    out
}
