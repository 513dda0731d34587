//! Health: per host, a unit's state plus configured checks aggregated into
//! passing, warning or critical — the levels of Consul and the exit codes
//! of the monitoring-plugin convention.
//!
//! Rules (README "Health"):
//! - unit: `active` passing; `activating`/`reloading`/`deactivating`
//!   warning; anything else (inactive, failed, not found) critical; a unit
//!   or host in maintenance is critical with the reason as its note.
//! - http (from the controller): 2xx passing, 429 warning, anything else
//!   or no answer critical (Consul's rule).
//! - tcp (from the controller): connects passing, else critical.
//! - command (on the host, `sh -c CMD`): exit 0 passing, 1 warning, other
//!   critical (Consul's and the monitoring-plugin rule).
//!
//! A host is its worst check; an unreachable host is unknown. Over hosts
//! the result is critical if any host is, else unknown if any is, else
//! warning if any is, else passing.

use serde::{Deserialize, Serialize};

use crate::model::facts::{Maintenance, UnitFacts};
use crate::model::unit::UnitName;

/// A health level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// All good.
    Passing,
    /// Degraded but serving.
    Warning,
    /// Down (or in maintenance).
    Critical,
    /// Could not be determined (host unreachable, check error).
    Unknown,
}

impl Health {
    /// Severity rank for "worst of": passing < warning < unknown < critical.
    pub fn rank(self) -> u8 {
        match self {
            Health::Passing => 0,
            Health::Warning => 1,
            Health::Unknown => 2,
            Health::Critical => 3,
        }
    }

    /// The worse of two levels.
    pub fn worst(self, other: Health) -> Health {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Whether this level is at least as good as `required` (a gate).
    pub fn satisfies(self, required: Health) -> bool {
        self.rank() <= required.rank() && self != Health::Unknown
    }

    /// Monitoring-plugin exit code: 0 passing, 1 warning, 2 critical, 3 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Health::Passing => 0,
            Health::Warning => 1,
            Health::Critical => 2,
            Health::Unknown => 3,
        }
    }

    /// Upper-case word, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "PASSING",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// The health of a unit from its state and maintenance flag.
pub fn unit_health(u: &UnitFacts, maintenance: Option<&Maintenance>) -> (Health, String) {
    if let Some(m) = maintenance {
        return (Health::Critical, format!("in maintenance: {}", m.reason));
    }
    let word = format!("{} ({})", u.active_state, u.sub_state);
    match u.active_state.as_str() {
        "active" => (Health::Passing, word),
        "activating" | "reloading" | "deactivating" => (Health::Warning, word),
        _ if u.load_state == "not-found" => (Health::Critical, "unit not found".into()),
        _ => (Health::Critical, word),
    }
}

/// Health of an HTTP status line's code (Consul: 2xx passing, 429 warning).
pub fn http_health(code: u16) -> Health {
    match code {
        200..=299 => Health::Passing,
        429 => Health::Warning,
        _ => Health::Critical,
    }
}

/// Health of a check command's exit status.
pub fn command_health(code: Option<i32>) -> Health {
    match code {
        Some(0) => Health::Passing,
        Some(1) => Health::Warning,
        _ => Health::Critical,
    }
}

/// One check's outcome on one host.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// unit, http, tcp or command.
    pub check: String,
    /// What was checked (unit name, URL, address, command).
    pub target: String,
    /// Its level.
    pub status: Health,
    /// Why, for people.
    pub note: String,
}

/// Checks configured for a unit, already rendered for one host.
#[derive(Debug, Clone, Default)]
pub struct HostChecks {
    /// URLs (http:// only).
    pub http: Vec<String>,
    /// `host:port` addresses.
    pub tcp: Vec<String>,
    /// Shell commands run on the host.
    pub command: Vec<String>,
}

/// The worst level of a list of checks (passing when empty).
pub fn worst_of<'a>(it: impl IntoIterator<Item = &'a Health>) -> Health {
    it.into_iter().fold(Health::Passing, |acc, h| acc.worst(*h))
}

/// One host's aggregated health.
#[derive(Debug, Clone, Serialize)]
pub struct HostHealth {
    /// The host's inventory name.
    pub hostname: String,
    /// The worst of its checks (unknown when unreachable).
    pub status: Health,
    /// The note of the worst check (e.g. the maintenance reason).
    pub note: String,
    /// Every check, the unit's own state first.
    pub checks: Vec<CheckResult>,
}

/// The whole `health` output.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The unit.
    pub unit: String,
    /// The worst over the hosts.
    pub status: Health,
    /// Per host, in inventory order.
    pub hosts: Vec<HostHealth>,
}

/// Aggregate over hosts: critical if any, else unknown if any, else
/// warning if any, else passing.
pub fn aggregate(unit: &UnitName, hosts: Vec<HostHealth>) -> HealthReport {
    HealthReport {
        unit: unit.to_string(),
        status: worst_of(hosts.iter().map(|h| &h.status)),
        hosts,
    }
}

/// One host's health from its checks: the worst of them, with its note.
pub fn host_health(hostname: &str, checks: Vec<CheckResult>) -> HostHealth {
    let worst = checks
        .iter()
        .fold(None::<&CheckResult>, |acc, c| match acc {
            Some(a) if a.status.rank() >= c.status.rank() => Some(a),
            _ => Some(c),
        });
    HostHealth {
        hostname: hostname.to_string(),
        status: worst.map_or(Health::Passing, |c| c.status),
        note: worst.map(|c| c.note.clone()).unwrap_or_default(),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Health, note: &str) -> CheckResult {
        CheckResult {
            check: "command".into(),
            target: "x".into(),
            status,
            note: note.into(),
        }
    }

    #[test]
    fn worst_wins_and_exit_codes_follow_the_plugin_convention() {
        let u = UnitName::parse("demo-web").unwrap();
        let r = aggregate(
            &u,
            vec![
                host_health("a", vec![check(Health::Passing, "ok")]),
                host_health(
                    "b",
                    vec![check(Health::Passing, "ok"), check(Health::Warning, "slow")],
                ),
            ],
        );
        assert_eq!(r.status, Health::Warning);
        assert_eq!(r.hosts[1].note, "slow");
        assert_eq!(r.status.exit_code(), 1);
        assert_eq!(Health::Critical.worst(Health::Unknown), Health::Critical);
        assert_eq!(Health::Unknown.worst(Health::Warning), Health::Unknown);
        assert!(Health::Passing.satisfies(Health::Warning));
        assert!(!Health::Warning.satisfies(Health::Passing));
        assert_eq!(http_health(204), Health::Passing);
        assert_eq!(http_health(429), Health::Warning);
        assert_eq!(http_health(503), Health::Critical);
        assert_eq!(command_health(Some(1)), Health::Warning);
        assert_eq!(command_health(Some(2)), Health::Critical);
    }

    #[test]
    fn maintenance_is_critical_with_its_reason() {
        let mut u = UnitFacts::not_found();
        u.load_state = "loaded".into();
        u.active_state = "active".into();
        let m = Maintenance {
            reason: "disk swap".into(),
            since: "t".into(),
        };
        assert_eq!(
            unit_health(&u, Some(&m)),
            (Health::Critical, "in maintenance: disk swap".into())
        );
        assert_eq!(unit_health(&u, None).0, Health::Passing);
    }
}
