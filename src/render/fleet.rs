//! The fleet at a glance, as HTML: one tile per host coloured by the
//! worst state of the units the operator watches, the counts over the
//! fleet on top, the filter form, the pager; and one host's page (its
//! unit table, health as Consul would report it, maintenance toggles).
//! Pure: the server hands over what its snapshot holds and the time.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::engine::status::{ServiceStatus, StatusEntry};
use crate::model::facts::{Maintenance, UnitFacts};
use crate::model::health::{unit_health, Health};
use crate::model::keys::Role;

use super::html::{esc, page_end, page_start, Chrome};
use super::page_assets::HOST_SCRIPT;

/// One host as the fleet snapshot last read it.
#[derive(Debug, Clone)]
pub struct HostState {
    /// Its inventory name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Its labels, `key=value`, for the host page.
    pub labels: Vec<String>,
    /// Its loaded units (every unit the read listed), in name order.
    pub units: Arc<Vec<StatusEntry>>,
    /// Why it could not be read.
    pub error: Option<String>,
    /// The host-wide maintenance flag.
    pub maintenance: Option<Maintenance>,
}

/// What the page shows of the fleet: the hosts asked for that the key
/// may see, in inventory order, and when they were read.
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    /// The hosts.
    pub hosts: Vec<HostState>,
    /// When the snapshot was read (None: never, yet).
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the last read failed as a whole, if it did (the hosts are then
    /// those of the read before).
    pub error: Option<String>,
    /// The units the tiles watch besides failed ones: those the runbooks
    /// name.
    pub watched: Arc<BTreeSet<String>>,
}

/// A tile's state, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TileState {
    /// Every watched unit up.
    Passing,
    /// A watched unit on its way up or down.
    Warning,
    /// A watched unit (or the whole host) in maintenance.
    Maintenance,
    /// A failed unit, or a watched one down.
    Critical,
    /// The host could not be read.
    Unreachable,
}

impl TileState {
    /// Every state, in the order the counts show them.
    pub const ALL: [TileState; 5] = [
        TileState::Passing,
        TileState::Warning,
        TileState::Critical,
        TileState::Maintenance,
        TileState::Unreachable,
    ];

    /// The word (also the tile's CSS class).
    pub fn word(self) -> &'static str {
        match self {
            TileState::Passing => "passing",
            TileState::Warning => "warning",
            TileState::Critical => "critical",
            TileState::Maintenance => "maintenance",
            TileState::Unreachable => "unreachable",
        }
    }

    /// A mark beside the word, so colour is not the only signal.
    pub fn icon(self) -> &'static str {
        match self {
            TileState::Passing => "\u{2713}",
            TileState::Warning => "\u{25B2}",
            TileState::Critical => "\u{2717}",
            TileState::Maintenance => "\u{2699}",
            TileState::Unreachable => "\u{2298}",
        }
    }
}

/// A unit's health as Consul would report it (model::health's rule:
/// active passing, on its way warning, else critical; maintenance
/// critical with its reason).
pub fn entry_health(e: &StatusEntry) -> (Health, String) {
    let facts = UnitFacts {
        load_state: e.load_state.clone(),
        active_state: e.active_state.clone(),
        sub_state: e.sub_state.clone(),
        ..UnitFacts::not_found()
    };
    unit_health(&facts, e.maintenance.as_ref())
}

/// Whether the tiles watch `u`: failed, or named by a runbook (or the
/// one unit the filter asks for).
fn watches(u: &StatusEntry, watched: &BTreeSet<String>, unit: Option<&str>) -> bool {
    match unit {
        Some(only) => u.name == only,
        None => u.status == ServiceStatus::Failed || watched.contains(&u.name),
    }
}

/// The tile state of a host: unreachable, else host-wide maintenance,
/// else the worst of its watched units (a unit's own maintenance flag
/// counts as maintenance, not as the critical Consul reports).
pub fn tile_state(h: &HostState, watched: &BTreeSet<String>, unit: Option<&str>) -> TileState {
    if h.error.is_some() {
        return TileState::Unreachable;
    }
    if h.maintenance.is_some() {
        return TileState::Maintenance;
    }
    h.units
        .iter()
        .filter(|u| watches(u, watched, unit))
        .map(|u| {
            if u.maintenance.is_some() {
                return TileState::Maintenance;
            }
            match entry_health(u).0 {
                Health::Passing => TileState::Passing,
                Health::Warning => TileState::Warning,
                Health::Critical | Health::Unknown => TileState::Critical,
            }
        })
        .max()
        .unwrap_or(TileState::Passing)
}

/// The grid's filter, as the form sent it.
#[derive(Debug, Clone, Default)]
pub struct GridFilter {
    /// A label selector (src/model/target.rs syntax), or empty.
    pub selector: String,
    /// One unit, or empty: the tiles then show that unit's state.
    pub unit: String,
}

impl GridFilter {
    /// The query string of this filter at `page` (1-based).
    fn query(&self, page: usize) -> String {
        let mut q = format!("?page={page}");
        for (k, v) in [("selector", &self.selector), ("unit", &self.unit)] {
            if !v.is_empty() {
                let _ = write!(q, "&{k}={}", urlencode(v));
            }
        }
        q
    }
}

/// The grid section's input.
#[derive(Debug, Clone)]
pub struct Grid<'a> {
    /// The hosts that pass the filter (all pages).
    pub fleet: &'a FleetState,
    /// The filter.
    pub filter: &'a GridFilter,
    /// Why the filter was refused, if it was (then no host is filtered out).
    pub filter_error: Option<&'a str>,
    /// The page shown, 1-based.
    pub page: usize,
    /// Tiles per page.
    pub per_page: usize,
    /// Now, for the snapshot's age.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// `read 12s ago`, or why there is nothing yet.
pub fn age_text(read_at: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> String {
    match read_at {
        None => "not read yet".into(),
        Some(t) => {
            let s = (now - t).num_seconds().max(0);
            format!(
                "read {}s ago ({})",
                s,
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
    }
}

/// The fleet section of the status page: counts, filter, tiles, pager.
pub fn grid_section(b: &mut String, g: &Grid<'_>) {
    let unit = (!g.filter.unit.is_empty()).then_some(g.filter.unit.as_str());
    let states: Vec<TileState> = g
        .fleet
        .hosts
        .iter()
        .map(|h| tile_state(h, &g.fleet.watched, unit))
        .collect();
    let _ = write!(
        b,
        "<section id=\"fleet\" aria-labelledby=\"fleet-h\"><h2 id=\"fleet-h\">Fleet</h2><p class=\"small\" id=\"fleet-age\">{} hosts, {}</p>",
        g.fleet.hosts.len(),
        esc(&age_text(g.fleet.read_at, g.now))
    );
    if let Some(e) = &g.fleet.error {
        let _ = write!(b, "<p class=\"err\" role=\"alert\">last read failed: {}</p>", esc(e));
    }
    b.push_str("<ul class=\"counts\" id=\"counts\">");
    for s in TileState::ALL {
        let n = states.iter().filter(|x| **x == s).count();
        let _ = write!(
            b,
            "<li class=\"count st-{w}\" data-state=\"{w}\"><span aria-hidden=\"true\">{i}</span> <b>{n}</b> {w}</li>",
            w = s.word(),
            i = s.icon()
        );
    }
    let _ = write!(
        b,
        "</ul><form method=\"get\" action=\"/\" id=\"filter\" class=\"filter\"><label>Hosts <input name=\"selector\" id=\"f-selector\" value=\"{}\" placeholder=\"selector, e.g. role:web,!lab-3\"></label> <label>Unit <input name=\"unit\" id=\"f-unit\" value=\"{}\" placeholder=\"e.g. demo-web.service\"></label> <button type=\"submit\">Filter</button> <a href=\"/\">clear</a></form>",
        esc(&g.filter.selector),
        esc(&g.filter.unit)
    );
    if let Some(e) = g.filter_error {
        let _ = write!(b, "<p class=\"err\" id=\"filter-error\" role=\"alert\">{}</p>", esc(e));
    }
    let per = g.per_page.max(1);
    let pages = g.fleet.hosts.len().div_ceil(per).max(1);
    let page = g.page.clamp(1, pages);
    b.push_str("<ul class=\"tiles\" id=\"tiles\">");
    let from = (page - 1) * per;
    for (h, s) in g.fleet.hosts.iter().zip(&states).skip(from).take(per) {
        tile(b, h, *s, &g.fleet.watched, unit);
    }
    b.push_str("</ul>");
    if pages > 1 {
        let _ = write!(
            b,
            "<nav class=\"pager\" aria-label=\"fleet pages\">page {page} of {pages} "
        );
        if page > 1 {
            let _ = write!(b, "<a rel=\"prev\" href=\"/{}\">previous</a> ", esc(&g.filter.query(page - 1)));
        }
        if page < pages {
            let _ = write!(b, "<a rel=\"next\" href=\"/{}\">next</a>", esc(&g.filter.query(page + 1)));
        }
        b.push_str("</nav>");
    }
    b.push_str("</section>");
}

fn tile(b: &mut String, h: &HostState, s: TileState, watched: &BTreeSet<String>, unit: Option<&str>) {
    let failed = h
        .units
        .iter()
        .filter(|u| u.status == ServiceStatus::Failed)
        .count();
    let detail = match (&h.error, s) {
        (Some(_), _) => "not read".to_string(),
        (None, TileState::Maintenance) if h.maintenance.is_some() => "host in maintenance".into(),
        _ => {
            let bad: Vec<&str> = h
                .units
                .iter()
                .filter(|u| watches(u, watched, unit) && entry_health(u).0 != Health::Passing)
                .map(|u| u.name.as_str())
                .take(3)
                .collect();
            let mut d = if failed > 0 {
                format!("{failed} failed")
            } else {
                format!("{} units", h.units.len())
            };
            if !bad.is_empty() {
                let _ = write!(d, ": {}", bad.join(", "));
            }
            d
        }
    };
    let _ = write!(
        b,
        "<li class=\"tile st-{w}\" data-host=\"{n}\" data-state=\"{w}\"><a href=\"/page/host/{u}\"><span class=\"icon\" aria-hidden=\"true\">{i}</span> <b>{n}</b><span class=\"word\">{w}</span><span class=\"small\">{d}</span></a></li>",
        w = s.word(),
        i = s.icon(),
        n = esc(&h.name),
        u = esc(&urlencode(&h.name)),
        d = esc(&detail)
    );
}

/// Percent-encode a path segment or query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One host's page.
#[derive(Debug, Clone)]
pub struct HostPage<'a> {
    /// Key, role, CSRF token: the page's frame.
    pub chrome: &'a Chrome<'a>,
    /// The host.
    pub host: &'a HostState,
    /// Watched units (see [`FleetState::watched`]).
    pub watched: &'a BTreeSet<String>,
    /// When the snapshot was read.
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Now.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// The host page: its state, its units (failed first, stopped ones
/// folded away), their health as Consul would report it, and for
/// operate keys a maintenance toggle per host and unit.
pub fn host_page(p: &HostPage<'_>, nonce: &str) -> String {
    let h = p.host;
    let mut b = page_start(&format!("drover: {}", h.name), nonce, p.chrome);
    let s = tile_state(h, p.watched, None);
    let _ = write!(
        b,
        "<main id=\"host\" data-host=\"{n}\"><h2>{n} <span class=\"badge st-{w}\"><span aria-hidden=\"true\">{i}</span> {w}</span></h2><p class=\"small\">{a}{l} · {age}</p>",
        n = esc(&h.name),
        w = s.word(),
        i = s.icon(),
        a = esc(&h.address),
        l = if h.labels.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&h.labels.join(", ")))
        },
        age = esc(&age_text(p.read_at, p.now))
    );
    if let Some(e) = &h.error {
        let _ = write!(b, "<p class=\"err\" role=\"alert\">{}</p>", esc(e));
    }
    let operate = p.chrome.role >= Role::Operate;
    let _ = write!(b, "<section aria-labelledby=\"hm\"><h3 id=\"hm\">Host maintenance</h3>");
    match &h.maintenance {
        Some(m) => {
            let _ = write!(
                b,
                "<p class=\"maint\" id=\"host-maint\">\u{2699} in maintenance: {} <span class=\"small\">since {}</span></p>",
                esc(&m.reason),
                esc(&m.since)
            );
        }
        None => b.push_str("<p class=\"small\" id=\"host-maint\">not in maintenance</p>"),
    }
    if operate {
        maint_form(&mut b, &h.name, None, h.maintenance.is_some());
    }
    b.push_str("</section>");
    let mut units: Vec<&StatusEntry> = h.units.iter().collect();
    // Failed first, then the others up or on their way; stopped last,
    // folded away (most of a host's: one-shot set-up units).
    units.sort_by_key(|u| {
        (
            match u.status {
                ServiceStatus::Failed => 0,
                ServiceStatus::Stopped => 2,
                _ => 1,
            },
            u.name.clone(),
        )
    });
    let (shown, stopped): (Vec<&StatusEntry>, Vec<&StatusEntry>) = units
        .into_iter()
        .partition(|u| u.status != ServiceStatus::Stopped || u.maintenance.is_some());
    let _ = write!(b, "<section aria-labelledby=\"hu\"><h3 id=\"hu\">Units</h3>");
    unit_table(&mut b, &shown, p.watched, operate, &h.name, "units");
    if !stopped.is_empty() {
        let _ = write!(
            b,
            "<details id=\"stopped\"><summary>{} stopped units</summary>",
            stopped.len()
        );
        unit_table(&mut b, &stopped, p.watched, operate, &h.name, "stopped-units");
        b.push_str("</details>");
    }
    b.push_str("</section></main>");
    page_end(&mut b, nonce, &[HOST_SCRIPT]);
    b
}

fn unit_table(
    b: &mut String,
    units: &[&StatusEntry],
    watched: &BTreeSet<String>,
    operate: bool,
    host: &str,
    id: &str,
) {
    let _ = write!(
        b,
        "<table id=\"{id}\"><thead><tr><th>Unit</th><th>Status</th><th>Health</th><th class=\"wide\">Uptime</th><th>Maintenance</th></tr></thead><tbody>"
    );
    for u in units {
        let (health, note) = entry_health(u);
        let hw = health.as_str().to_ascii_lowercase();
        let icon = match health {
            Health::Passing => "\u{2713}",
            Health::Warning => "\u{25B2}",
            _ => "\u{2717}",
        };
        let _ = write!(
            b,
            "<tr data-unit=\"{n}\" data-status=\"{s}\"><td>{n}{w}</td><td class=\"{s}\">{s}</td><td class=\"h-{hw}\"><span aria-hidden=\"true\">{icon}</span> {hw} <span class=\"small\">{note}</span></td><td class=\"wide\">{up}</td><td>",
            n = esc(&u.name),
            w = if watched.contains(&u.name) {
                " <span class=\"small\" title=\"named by a runbook\">(watched)</span>"
            } else {
                ""
            },
            s = u.status.as_str(),
            note = esc(&note),
            up = u
                .uptime
                .map(crate::render::status::format_uptime)
                .unwrap_or_default(),
        );
        if let Some(m) = &u.maintenance {
            let _ = write!(b, "<span class=\"maint\">\u{2699} {}</span>", esc(&m.reason));
        }
        if operate {
            maint_form(b, host, Some(&u.name), u.maintenance.is_some());
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table>");
}

/// A maintenance toggle: the page's script posts it with the CSRF token.
fn maint_form(b: &mut String, host: &str, unit: Option<&str>, on: bool) {
    let what = unit.unwrap_or("the host");
    let _ = write!(
        b,
        "<form class=\"maint-form\" data-host=\"{h}\" data-unit=\"{u}\" data-enable=\"{e}\">",
        h = esc(host),
        u = esc(unit.unwrap_or("")),
        e = !on
    );
    if on {
        let _ = write!(
            b,
            "<button type=\"submit\">End maintenance<span class=\"sr\"> of {}</span></button>",
            esc(what)
        );
    } else {
        let _ = write!(
            b,
            "<label class=\"sr\" for=\"r-{id}\">reason for {w}</label><input id=\"r-{id}\" name=\"reason\" required placeholder=\"reason\" size=\"12\"> <button type=\"submit\">Maintenance<span class=\"sr\"> for {w}</span></button>",
            id = esc(&urlencode(&format!("{host}/{}", unit.unwrap_or("")))),
            w = esc(what)
        );
    }
    b.push_str("<span class=\"small maint-result\" role=\"status\"></span></form>");
}
