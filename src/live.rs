//! The commands that read live hosts: `facts`, `status`, and the facts of a
//! live `plan`. Each connects to its hosts in parallel (bounded by
//! `--forks`), reads everything it needs in one round trip per host per
//! batch of units, and never changes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::facts::{Facts, HostFacts, UnitFacts};
use crate::fanout::{fan_out, HostError, HostResult};
use crate::inventory::{Host, Inventory};
use crate::plan::ExpandedStep;
use crate::target::Selector;
use crate::unit::UnitName;

/// Exit code when some host was unreachable (DESIGN.md).
pub const EXIT_UNREACHABLE: i32 = 4;
/// Exit code when some host failed.
pub const EXIT_FAILED: i32 = 2;

/// A tokio runtime for one command: drover's CLI is synchronous outside the
/// code that talks to hosts.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// The hosts a `--target` selector picks (all hosts without one), in
/// inventory order; unknown hostnames and empty matches are usage errors.
pub fn select_hosts(inv: &Inventory, target: Option<&str>) -> Result<Vec<Host>> {
    let Some(raw) = target else {
        return Ok(inv.hosts.clone());
    };
    let sel = Selector::parse(raw).map_err(|m| Error::Usage(format!("--target `{raw}`: {m}")))?;
    if sel.is_any() {
        return Err(Error::Usage(
            "--target cannot contain `_any` here: name the hosts to read".into(),
        ));
    }
    if let Some(h) = sel.unknown_hosts(inv).first() {
        return Err(Error::Usage(format!(
            "--target names unknown host `{h}`{}",
            inv.suggest_host(h)
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default()
        )));
    }
    let hosts: Vec<Host> = inv
        .hosts
        .iter()
        .filter(|h| sel.matches(h))
        .cloned()
        .collect();
    if hosts.is_empty() {
        return Err(Error::Usage(format!(
            "--target `{raw}` matches no host of {}",
            inv.path.display()
        )));
    }
    Ok(hosts)
}

/// Validate unit names from the command line (a bare name gets `.service`).
pub fn parse_units(raw: &[String]) -> Result<Vec<UnitName>> {
    raw.iter()
        .map(|u| {
            UnitName::parse(u)
                .map_err(|m| Error::Usage(format!("unit `{}`: {m}", u.escape_default())))
        })
        .collect()
}

/// Which units to read on a host.
#[derive(Debug, Clone)]
pub enum UnitSet {
    /// Exactly these.
    These(Vec<UnitName>),
    /// Every service unit (loaded units and unit files).
    AllServices,
    /// The loaded service units (what `systemctl list-units` shows).
    LoadedServices,
}

/// Read facts from `hosts`, `forks` at a time; `units(i)` says which units
/// to read on `hosts[i]`. Unreachable hosts get `reachable: false` and the
/// error; a host whose read fails is reported unreachable too (the plan
/// cannot use it either).
pub async fn read_facts(
    hosts: &[Host],
    forks: usize,
    units: impl Fn(usize) -> UnitSet,
) -> (Facts, Vec<HostResult<()>>) {
    read_facts_with(hosts, forks, units, |_| Vec::new()).await
}

/// [`read_facts`], also reading the maintenance state file (always) and
/// the unit files `files(i)` names on `hosts[i]` (for `unit:` steps).
pub async fn read_facts_with(
    hosts: &[Host],
    forks: usize,
    units: impl Fn(usize) -> UnitSet,
    files: impl Fn(usize) -> Vec<UnitName>,
) -> (Facts, Vec<HostResult<()>>) {
    let sets: Vec<UnitSet> = (0..hosts.len()).map(units).collect();
    let sets = &sets;
    let file_sets: Vec<Vec<UnitName>> = (0..hosts.len()).map(files).collect();
    let file_sets = &file_sets;
    let results = fan_out(hosts, forks, |i, session| async move {
        // The state file and unit files travel over other channels of the
        // same connection, alongside the D-Bus reads.
        let extra = async {
            let m = crate::maintenance::read(&session)
                .await
                .map_err(HostError::Failed)?;
            let mut f = BTreeMap::new();
            for u in &file_sets[i] {
                let c = crate::unitfile::read_file(&session, u)
                    .await
                    .map_err(HostError::Failed)?;
                f.insert(u.to_string(), c);
            }
            Ok::<_, HostError>((m, f))
        };
        let (units, extra) = tokio::join!(read_units(i, &session, sets), extra);
        let (m, f) = extra?;
        Ok::<_, HostError>((units?, m, f))
    })
    .await;
    let mut facts = Facts::new();
    let mut outcomes = Vec::with_capacity(results.len());
    for r in results {
        let hf = match &r.result {
            Ok((units, m, f)) => {
                let mut hf = HostFacts {
                    reachable: true,
                    error: None,
                    maintenance: None,
                    unit_maintenance: BTreeMap::new(),
                    units: units.clone(),
                    unit_files: f.clone(),
                };
                m.clone().into_facts(&mut hf);
                hf
            }
            Err(e) => HostFacts::unreachable(e.to_string()),
        };
        facts.hosts.insert(r.host.clone(), hf);
        outcomes.push(HostResult {
            index: r.index,
            host: r.host,
            result: r.result.map(|_| ()),
        });
    }
    (facts, outcomes)
}

async fn read_units(
    i: usize,
    session: &crate::carrier::Session,
    sets: &[UnitSet],
) -> std::result::Result<BTreeMap<String, UnitFacts>, HostError> {
    {
        let sd = session.systemd();
        let t0 = std::time::Instant::now();
        let facts = match &sets[i] {
            UnitSet::These(u) => sd.unit_facts(u).await?,
            UnitSet::AllServices => sd.all_service_facts(false).await?,
            UnitSet::LoadedServices => sd.all_service_facts(true).await?,
        };
        tracing::debug!(host = %session.host(), elapsed = ?t0.elapsed(), "unit facts read");
        Ok::<_, HostError>(facts)
    }
}

/// The exit code for per-host outcomes: 2 if some host failed, else 4 if
/// some host was unreachable, else 0.
pub fn exit_code<T>(results: &[HostResult<T>]) -> i32 {
    let failed = results
        .iter()
        .any(|r| matches!(&r.result, Err(e) if !e.is_unreachable()));
    let unreachable = results
        .iter()
        .any(|r| matches!(&r.result, Err(e) if e.is_unreachable()));
    if failed {
        EXIT_FAILED
    } else if unreachable {
        EXIT_UNREACHABLE
    } else {
        0
    }
}

/// `drover facts`: write the facts file; exit 4 if some host was unreachable.
pub fn facts_cmd(
    inventory: &std::path::Path,
    target: Option<&str>,
    units: &[String],
    out: &std::path::Path,
    forks: usize,
) -> Result<i32> {
    let inv = Inventory::load(inventory)?;
    let hosts = select_hosts(&inv, target)?;
    let units = parse_units(units)?;
    let rt = runtime()?;
    let (facts, results) = rt.block_on(read_facts(&hosts, forks, |_| {
        if units.is_empty() {
            UnitSet::AllServices
        } else {
            UnitSet::These(units.clone())
        }
    }));
    facts.save(out)?;
    for r in &results {
        if let Err(e) = &r.result {
            eprintln!("{}: {e}", r.host);
        }
    }
    let n_units: usize = facts.hosts.values().map(|h| h.units.len()).sum();
    let ok = results.iter().filter(|r| r.result.is_ok()).count();
    eprintln!(
        "facts: {n_units} units from {ok} of {} hosts written to {}",
        results.len(),
        out.display()
    );
    Ok(exit_code(&results))
}

/// Facts for a live plan: per host, exactly the units the expanded steps
/// touch, read in parallel. Hosts no step touches are not contacted; they
/// get an empty (reachable) entry, which the plan never consults.
pub fn live_plan_facts(
    inv: &Inventory,
    expanded: &[ExpandedStep],
    forks: usize,
) -> Result<(Facts, i32)> {
    let mut per_host: BTreeMap<usize, BTreeSet<UnitName>> = BTreeMap::new();
    let mut files: BTreeMap<usize, BTreeSet<UnitName>> = BTreeMap::new();
    for ex in expanded {
        for t in &ex.tasks {
            per_host.entry(t.host).or_default().insert(t.unit.clone());
            if ex.reads_file {
                files.entry(t.host).or_default().insert(t.unit.clone());
            }
        }
    }
    let idx: Vec<usize> = per_host.keys().copied().collect();
    let hosts: Vec<Host> = idx.iter().map(|i| inv.hosts[*i].clone()).collect();
    let units: Vec<Vec<UnitName>> = per_host
        .into_values()
        .map(|s| s.into_iter().collect())
        .collect();
    let file_sets: Vec<Vec<UnitName>> = idx
        .iter()
        .map(|h| {
            files
                .get(h)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        })
        .collect();
    let rt = runtime()?;
    let (read, results) = rt.block_on(read_facts_with(
        &hosts,
        forks,
        |i| UnitSet::These(units[i].clone()),
        |i| file_sets[i].clone(),
    ));
    let mut facts = Facts::new();
    facts.collected_at = read.collected_at.clone();
    for h in &inv.hosts {
        let hf = read.hosts.get(&h.name).cloned().unwrap_or(HostFacts {
            reachable: true,
            error: None,
            maintenance: None,
            unit_maintenance: BTreeMap::new(),
            units: BTreeMap::new(),
            unit_files: BTreeMap::new(),
        });
        facts.hosts.insert(h.name.clone(), hf);
    }
    for r in &results {
        if let Err(e) = &r.result {
            tracing::warn!("{}: {e}", r.host);
        }
    }
    // For a plan any host without facts makes the plan incomplete: 4, never
    // 2 (which --detailed-exitcode uses for "changes pending").
    let code = if results.iter().any(|r| r.result.is_err()) {
        EXIT_UNREACHABLE
    } else {
        0
    };
    Ok((facts, code))
}

/// A unit's status in the listing shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServiceStatus {
    /// active.
    Running,
    /// inactive (or not found, or on its way down).
    Stopped,
    /// activating towards a first start.
    Starting,
    /// reloading, or activating again (restart job or auto-restart).
    Restarting,
    /// failed.
    Failed,
}

impl ServiceStatus {
    /// Map systemd's states to the listing's five words.
    pub fn of(u: &UnitFacts) -> Self {
        let restart_job = matches!(u.job.as_deref(), Some("restart" | "try-restart"));
        match u.active_state.as_str() {
            "active" => ServiceStatus::Running,
            "reloading" => ServiceStatus::Restarting,
            "activating" if restart_job || u.sub_state == "auto-restart" => {
                ServiceStatus::Restarting
            }
            "activating" => ServiceStatus::Starting,
            "deactivating" if restart_job => ServiceStatus::Restarting,
            "failed" => ServiceStatus::Failed,
            _ => ServiceStatus::Stopped,
        }
    }

    /// The word, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Running => "RUNNING",
            ServiceStatus::Stopped => "STOPPED",
            ServiceStatus::Starting => "STARTING",
            ServiceStatus::Restarting => "RESTARTING",
            ServiceStatus::Failed => "FAILED",
        }
    }

    /// Whether the unit is up, so start time and uptime mean something.
    pub fn is_up(self) -> bool {
        matches!(self, ServiceStatus::Running | ServiceStatus::Restarting)
    }
}

/// One line of `drover status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// The unit.
    pub name: String,
    /// RUNNING, STOPPED, STARTING, RESTARTING or FAILED.
    pub status: ServiceStatus,
    /// When it entered the active state (RFC 3339), while up.
    pub start_time: Option<String>,
    /// Seconds since start_time, while up.
    pub uptime: Option<u64>,
    /// systemd's ActiveState.
    pub active_state: String,
    /// systemd's SubState.
    pub sub_state: String,
    /// systemd's LoadState (not-found for a unit that does not exist).
    pub load_state: String,
    /// The unit's (or its host's) maintenance flag, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::facts::Maintenance>,
}

/// A maintenance flag, as `status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// The unit, or None for the whole host.
    pub unit: Option<String>,
    /// Why.
    pub reason: String,
    /// When it was set (RFC 3339).
    pub since: String,
}

/// A host `status` could not read.
#[derive(Debug, Clone, Serialize)]
pub struct StatusError {
    /// The host's inventory name.
    pub hostname: String,
    /// Why.
    pub error: String,
    /// Whether it was unreachable (vs. a failed read).
    pub unreachable: bool,
}

/// The whole `status` output.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Every unit of every reachable host, host by host in inventory order.
    pub services: Vec<StatusEntry>,
    /// Hosts without results.
    pub errors: Vec<StatusError>,
    /// Every maintenance flag of the reachable hosts (host-wide first).
    pub maintenance: Vec<MaintenanceEntry>,
}

/// Build status entries from facts, with uptimes relative to `now`.
pub fn status_report(facts: &Facts, now: chrono::DateTime<chrono::Utc>) -> StatusReport {
    let mut services = Vec::new();
    let mut errors = Vec::new();
    let mut maintenance = Vec::new();
    for (host, hf) in &facts.hosts {
        let flag = |unit: Option<&String>, m: &crate::facts::Maintenance| MaintenanceEntry {
            hostname: host.clone(),
            unit: unit.cloned(),
            reason: m.reason.clone(),
            since: m.since.clone(),
        };
        if let Some(m) = &hf.maintenance {
            maintenance.push(flag(None, m));
        }
        for (u, m) in &hf.unit_maintenance {
            maintenance.push(flag(Some(u), m));
        }
        if !hf.reachable {
            let error = hf.error.clone().unwrap_or_default();
            errors.push(StatusError {
                hostname: host.clone(),
                unreachable: error.starts_with("unreachable"),
                error,
            });
            continue;
        }
        for (name, u) in &hf.units {
            let status = ServiceStatus::of(u);
            let started = u
                .start_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .filter(|_| status.is_up());
            services.push(StatusEntry {
                hostname: host.clone(),
                name: name.clone(),
                status,
                start_time: started.map(|t| {
                    t.to_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                }),
                uptime: started.map(|t| (now - t.to_utc()).num_seconds().max(0) as u64),
                active_state: u.active_state.clone(),
                sub_state: u.sub_state.clone(),
                load_state: u.load_state.clone(),
                maintenance: hf
                    .maintenance
                    .clone()
                    .or_else(|| hf.unit_maintenance.get(name).cloned()),
            });
        }
    }
    StatusReport {
        services,
        errors,
        maintenance,
    }
}

/// An uptime as Python's timedelta prints it: "3 days, 0:58:59", "0:00:07".
pub fn format_uptime(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// Render the report as aligned columns; `color` adds colour (on a TTY).
pub fn render_status_text(r: &StatusReport, color: bool) -> String {
    use owo_colors::OwoColorize;
    let header = ["HOST", "UNIT", "STATUS", "START TIME", "UPTIME"];
    let mut rows: Vec<[String; 5]> = Vec::new();
    for s in &r.services {
        let mut name = s.name.clone();
        if s.load_state != "loaded" {
            name.push_str(&format!(" ({})", s.load_state));
        }
        if s.maintenance.is_some() {
            name.push_str(" [maintenance]");
        }
        rows.push([
            s.hostname.clone(),
            name,
            s.status.as_str().to_string(),
            s.start_time.clone().unwrap_or_else(|| "-".into()),
            s.uptime.map(format_uptime).unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String; 5], status_painted: Option<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let text = match (i, &status_painted) {
                (2, Some(p)) => format!("{p}{}", " ".repeat(width[i].saturating_sub(c.len()))),
                _ => format!("{c:<w$}", w = width[i]),
            };
            out.push_str(&text);
            if i + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    let head = line(&header.map(String::from), None);
    if color {
        out.push_str(&head.bold().to_string());
    } else {
        out.push_str(&head);
    }
    out.push('\n');
    for (row, s) in rows.iter().zip(&r.services) {
        let painted = color.then(|| match s.status {
            ServiceStatus::Running => row[2].green().to_string(),
            ServiceStatus::Failed => row[2].red().bold().to_string(),
            ServiceStatus::Starting | ServiceStatus::Restarting => row[2].yellow().to_string(),
            ServiceStatus::Stopped => row[2].dimmed().to_string(),
        });
        out.push_str(&line(row, painted));
        out.push('\n');
    }
    for e in &r.errors {
        let word = if e.unreachable {
            "UNREACHABLE"
        } else {
            "ERROR"
        };
        let word = if color {
            word.red().bold().to_string()
        } else {
            word.to_string()
        };
        out.push_str(&format!(
            "{:<w$}  {word}  {}\n",
            e.hostname,
            e.error,
            w = width[0]
        ));
    }
    for m in &r.maintenance {
        let word = if color {
            "MAINTENANCE".yellow().bold().to_string()
        } else {
            "MAINTENANCE".to_string()
        };
        out.push_str(&format!(
            "{:<w$}  {word}  {}: {} (since {})\n",
            m.hostname,
            m.unit.as_deref().unwrap_or("whole host"),
            m.reason,
            m.since,
            w = width[0]
        ));
    }
    out
}

/// `drover status`: exit 4 if some host was unreachable, 2 if a read failed.
pub fn status_cmd(
    inventory: &std::path::Path,
    target: Option<&str>,
    units: &[String],
    json: bool,
    forks: usize,
    color: bool,
) -> Result<i32> {
    let inv = Inventory::load(inventory)?;
    let hosts = select_hosts(&inv, target)?;
    let units = parse_units(units)?;
    let rt = runtime()?;
    let (facts, results) = rt.block_on(read_facts(&hosts, forks, |_| {
        if units.is_empty() {
            UnitSet::LoadedServices
        } else {
            UnitSet::These(units.clone())
        }
    }));
    let report = status_report(&facts, chrono::Utc::now());
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot serialise status: {e}")))?;
        outln!("{text}");
    } else {
        let color = color && std::io::stdout().is_terminal();
        out!("{}", render_status_text(&report, color));
    }
    Ok(exit_code(&results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(active: &str, sub: &str, job: Option<&str>) -> UnitFacts {
        UnitFacts {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            unit_file_state: "enabled".into(),
            start_time: Some("2024-01-01T00:00:00Z".into()),
            invocation_id: String::new(),
            main_pid: 0,
            job: job.map(String::from),
        }
    }

    #[test]
    fn states_map_to_listing_words() {
        assert_eq!(
            ServiceStatus::of(&u("active", "running", None)),
            ServiceStatus::Running
        );
        assert_eq!(
            ServiceStatus::of(&u("inactive", "dead", None)),
            ServiceStatus::Stopped
        );
        assert_eq!(
            ServiceStatus::of(&u("activating", "start", Some("start"))),
            ServiceStatus::Starting
        );
        assert_eq!(
            ServiceStatus::of(&u("activating", "auto-restart", None)),
            ServiceStatus::Restarting
        );
        assert_eq!(
            ServiceStatus::of(&u("activating", "start", Some("restart"))),
            ServiceStatus::Restarting
        );
        assert_eq!(
            ServiceStatus::of(&u("reloading", "reload", None)),
            ServiceStatus::Restarting
        );
        assert_eq!(
            ServiceStatus::of(&u("failed", "failed", None)),
            ServiceStatus::Failed
        );
    }

    #[test]
    fn uptimes_read_like_timedelta() {
        assert_eq!(format_uptime(7), "0:00:07");
        assert_eq!(format_uptime(3 * 86_400 + 3539), "3 days, 0:58:59");
        assert_eq!(format_uptime(86_400 + 1), "1 day, 0:00:01");
    }

    #[test]
    fn report_has_uptime_only_while_up() {
        let mut f = Facts::new();
        let mut hf = HostFacts::unreachable("x");
        hf.reachable = true;
        hf.error = None;
        hf.units
            .insert("a.service".into(), u("active", "running", None));
        hf.units
            .insert("b.service".into(), u("inactive", "dead", None));
        f.hosts.insert("h".into(), hf);
        f.hosts.insert(
            "g".into(),
            HostFacts::unreachable("unreachable: connection timed out: x"),
        );
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-04T00:58:59Z")
            .unwrap()
            .to_utc();
        let r = status_report(&f, now);
        assert_eq!(r.services[0].uptime, Some(3 * 86_400 + 3539));
        assert_eq!(r.services[1].uptime, None);
        assert_eq!(r.services[1].start_time, None);
        assert!(r.errors[0].unreachable);
        let text = render_status_text(&r, false);
        assert!(text.contains("3 days, 0:58:59"), "{text}");
        assert!(text.contains("g     UNREACHABLE  unreachable"), "{text}");
    }
}
