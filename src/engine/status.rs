//! `status`: every unit of the selected hosts in the listing shape (name,
//! status RUNNING|STOPPED|STARTING|RESTARTING|FAILED, start time, uptime)
//! and every maintenance flag.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::engine::events::EventSink;
use crate::engine::live::{parse_units, read_facts, select_hosts, verdict, UnitSet};
use crate::model::error::Result;
use crate::model::facts::{Facts, UnitFacts};
use crate::model::inventory::Inventory;
use crate::model::report::Verdict;
use crate::remote::fanout::Reach;

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
    /// systemd's UnitFileState (enabled, disabled, static, ...), when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unit_file_state: String,
    /// The main process, while there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// The unit's Description=, when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The unit's (or its host's) maintenance flag, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::model::facts::Maintenance>,
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

/// Build status entries from facts, with uptimes relative to `now`;
/// `unreachable` names the hosts that could not be reached (the others
/// without facts failed their read).
pub fn status_report(
    facts: &Facts,
    unreachable: &BTreeSet<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> StatusReport {
    let mut services = Vec::new();
    let mut errors = Vec::new();
    let mut maintenance = Vec::new();
    for (host, hf) in &facts.hosts {
        let flag = |unit: Option<&String>, m: &crate::model::facts::Maintenance| MaintenanceEntry {
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
                unreachable: unreachable.contains(host),
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
                unit_file_state: u.unit_file_state.clone(),
                main_pid: (u.main_pid != 0).then_some(u.main_pid),
                description: u.description.clone(),
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

/// `drover status`: read the selected hosts (`target`, all without one)
/// and list their units (`units`, every loaded service without any). The
/// verdict says whether some host was unreachable or failed its read.
pub async fn status(
    inv: &Inventory,
    target: Option<&str>,
    units: &[String],
    reach: Reach,
    events: &dyn EventSink,
) -> Result<(StatusReport, Verdict)> {
    let hosts = select_hosts(inv, target)?;
    let units = parse_units(units)?;
    let (facts, results) = read_facts(
        &hosts,
        reach,
        |_| {
            if units.is_empty() {
                UnitSet::LoadedServices
            } else {
                UnitSet::These(units.clone())
            }
        },
        events,
    )
    .await;
    let unreachable = results
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(|e| e.is_unreachable()))
        .map(|r| r.host.clone())
        .collect();
    Ok((
        status_report(&facts, &unreachable, chrono::Utc::now()),
        verdict(&results),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::facts::HostFacts;

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
            description: String::new(),
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
        let r = status_report(&f, &BTreeSet::from(["g".to_string()]), now);
        assert_eq!(r.services[0].uptime, Some(3 * 86_400 + 3539));
        assert_eq!(r.services[1].uptime, None);
        assert_eq!(r.services[1].start_time, None);
        assert!(r.errors[0].unreachable);
    }
}
