//! The server's side of the live snapshot (`engine::fleet`; its flags are
//! `cmd::snapshot`'s): the units it watches by default (those the runbooks name, on the hosts
//! their steps target), and answering a read from it while it is fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::fleet::{Fleet, NOT_READ};
use crate::engine::status::{status_report, StatusReport};
use crate::model::error::Result;
use crate::model::inventory::Inventory;
use crate::model::playbook::Operation;

use super::state::{AppState, Loaded};

/// The units the runbooks name, per host their steps target: rendered for
/// each host with the runbook's sample parameters, so a name that depends
/// on a parameter may be a sample (watching it costs one unit read).
pub fn runbook_units(loaded: &Loaded) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rb in loaded.runbooks.values() {
        let Ok(pb) = rb.declared() else { continue };
        for step in &pb.steps {
            let id = match &step.operation {
                Operation::Service { name, .. } | Operation::Unit { name, .. } => *name,
                Operation::Maintenance { unit: Some(u), .. } => *u,
                _ => continue,
            };
            for h in &loaded.inventory.hosts {
                if !step.targets.iter().any(|t| t.matches(h)) {
                    continue;
                }
                let ctx = pb.templates.host_context(h);
                if let Ok(u) = pb.templates.render_unit(id, &ctx) {
                    out.entry(h.name.clone()).or_default().insert(u.to_string());
                }
            }
        }
    }
    out
}

/// Re-read the server's files ([`AppState::reload`]) and watch what the
/// new runbooks name.
pub async fn reload(state: &AppState) -> Result<Arc<Loaded>> {
    let new = state.reload().await?;
    if let Some(f) = &state.live {
        watch_defaults(f, &new);
    }
    Ok(new)
}

/// Start watching what the server watches by default: the `--node` host,
/// and the runbooks' units on the hosts they target.
pub fn watch_defaults(fleet: &Fleet, loaded: &Loaded) {
    for (host, units) in runbook_units(loaded) {
        if let Some(h) = loaded.inventory.host(&host) {
            let units: Vec<String> = units.into_iter().collect();
            fleet.watch(std::slice::from_ref(h), &units);
        }
    }
    if let Some(h) = loaded.node.as_deref().and_then(|n| loaded.inventory.host(n)) {
        fleet.watch(std::slice::from_ref(h), &[]);
    }
}

/// The status of `units` (every loaded service without any) on the hosts
/// of `inv` that `target` selects, from the snapshot, if it is fresh for
/// all of them; None: read the hosts.
pub fn answer(
    fleet: &Fleet,
    inv: &Inventory,
    target: &str,
    units: &[String],
) -> Option<Arc<StatusReport>> {
    let hosts = crate::engine::live::select_hosts(inv, Some(target)).ok()?;
    let names: Vec<String> = crate::engine::live::parse_units(units)
        .ok()?
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    let (facts, age) = fleet.answer(&hosts, &names)?;
    answered_at_age(age);
    Some(Arc::new(status_report(
        &facts,
        &BTreeSet::new(),
        chrono::Utc::now(),
    )))
}

/// The fleet as the live snapshot holds it, for the status page:
/// [`fleet_report`].
// The status page (issue 22's page, built beside this) reads it.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct LiveFleet {
    /// What a `status` of every unit held would say, host by host in the
    /// order asked: a host whose watch has not read it yet or has lost it
    /// is in `errors` with why (`unreachable` when the watch lost it).
    pub report: Arc<StatusReport>,
    /// When the oldest full read among the hosts finished (None: no host
    /// read yet).
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Since when the least recently confirmed host is known current
    /// (None: none is): the snapshot's age to show.
    pub age: Option<Duration>,
    /// The hosts whose entries are not fresh now (reads of them read the
    /// host); the report holds what they last showed, or their error.
    pub stale: Vec<String>,
}

/// `hosts` as the live snapshot holds them, without reading any host:
/// the status page's view of the fleet (pass the hosts the key may see,
/// e.g. `caller.inventory(&loaded.inventory).hosts`). Hosts not watched
/// yet start being watched and show as "not read yet" until their first
/// full read (a moment); the units are every one the entry holds (loaded
/// services and the units named by runbooks and reads).
pub fn fleet_report(fleet: &Fleet, hosts: &[crate::model::inventory::Host]) -> LiveFleet {
    use crate::model::facts::{Facts, HostFacts};
    let states = fleet.snapshot(hosts);
    let mut facts = Facts::new();
    let mut unreachable = BTreeSet::new();
    let mut stale = Vec::new();
    let mut read_at: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut age: Option<Duration> = None;
    for s in states {
        if !s.fresh {
            stale.push(s.hostname.clone());
        }
        age = age.max(s.age);
        read_at = match (read_at, s.read_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let hf = if s.reachable {
            let mut hf = HostFacts::unread();
            hf.units = s
                .units
                .into_iter()
                .filter(|(_, f)| f.load_state != "not-found")
                .collect();
            if let Some(m) = s.maintenance {
                m.into_facts(&mut hf);
            }
            hf
        } else {
            let error = s.error.unwrap_or_else(|| NOT_READ.to_string());
            if error != NOT_READ {
                unreachable.insert(s.hostname.clone());
            }
            HostFacts {
                reachable: false,
                error: Some(error),
                ..HostFacts::unread()
            }
        };
        facts.hosts.insert(s.hostname, hf);
    }
    LiveFleet {
        report: Arc::new(status_report(&facts, &unreachable, chrono::Utc::now())),
        read_at,
        age,
        stale,
    }
}

/// The header that shows how old a snapshot answer is: seconds since the
/// least recently confirmed host it covers was known current.
pub const AGE_HEADER: &str = "x-drover-live-age";

tokio::task_local! {
    /// The oldest snapshot answer the current request used, if any.
    static AGE: std::cell::Cell<Option<Duration>>;
}

/// Note that the request being answered used the snapshot at `age`.
fn answered_at_age(age: Duration) {
    let _ = AGE.try_with(|a| a.set(Some(a.get().map_or(age, |b| b.max(age)))));
}

/// A layer that adds [`AGE_HEADER`] to every answer that came from the
/// snapshot (a poller can tell those from host reads, and how old they
/// are).
pub async fn age_header(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    AGE.scope(std::cell::Cell::new(None), async move {
        let mut res = next.run(req).await;
        if let Some(age) = AGE.with(|a| a.get()) {
            let v = format!("{:.3}", age.as_secs_f64());
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                res.headers_mut().insert(AGE_HEADER, v);
            }
        }
        res
    })
    .await
}
