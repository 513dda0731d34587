//! The server's side of the live snapshot (`engine::fleet`): its flags,
//! the units it watches by default (those the runbooks name, on the hosts
//! their steps target), and answering a read from it while it is fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::engine::fleet::{Fleet, LiveSettings, NOT_READ};
use crate::engine::status::{status_report, StatusReport};
use crate::model::error::{Error, Result};
use crate::model::inventory::Inventory;
use crate::model::parse_duration;
use crate::model::playbook::Operation;
use crate::remote::pool::Pool;

use super::state::{AppState, Loaded};

/// `drover serve`'s live snapshot flags.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Read hosts on every request instead of answering from the live
    /// snapshot kept from systemd's signals.
    #[arg(long)]
    pub no_live: bool,
    /// Answer from a host's snapshot only if it was confirmed current
    /// within this (a full read, or a ping to systemd answered after its
    /// signals).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub live_fresh: Duration,
    /// Read each watched host in full this often, to heal a missed signal
    /// and see maintenance flags changed by hand.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub live_heal: Duration,
    /// Watch at most this many hosts (reads of others read them).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub live_hosts: usize,
}

impl LiveArgs {
    /// The snapshot these flags ask for (None with `--no-live`); must be
    /// called inside the runtime.
    pub fn fleet(&self, pool: Pool, read_timeout: Duration) -> Result<Option<Fleet>> {
        if self.no_live {
            return Ok(None);
        }
        if self.live_fresh.is_zero() || self.live_heal.is_zero() || self.live_hosts == 0 {
            return Err(Error::Usage(
                "--live-fresh, --live-heal and --live-hosts must be more than 0 (--no-live turns the snapshot off)".into(),
            ));
        }
        let mut s = LiveSettings::new(read_timeout);
        s.fresh = self.live_fresh;
        s.heal = self.live_heal;
        s.max_hosts = self.live_hosts;
        Ok(Some(Fleet::new(pool, s)))
    }
}

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
