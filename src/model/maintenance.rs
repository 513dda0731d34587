//! Maintenance mode: a host or one of its units set aside, with a reason
//! and a time. The flag lives ON the host, in [`STATE_FILE`], so it
//! survives reboots and is seen by every drover that reads the host; facts
//! carry it, `plan` and `apply` skip what is in maintenance, `status` and
//! `health` show it.
//!
//! This file holds what the flags mean and the decision of a
//! `maintenance:` step; reading and writing the file on a host is
//! the remote layer's (`remote/maintenance.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::facts::{HostFacts, Maintenance};
use crate::model::outcome::SkipReason;
use crate::model::service::Action;
use crate::model::unit::UnitName;

/// Where the maintenance state of a host is kept, on the host.
pub const STATE_FILE: &str = "/var/lib/drover/maintenance.json";

/// The report name of a host-wide maintenance result: the root slice, the
/// unit that contains everything on the host.
pub const HOST_SCOPE: &str = "-.slice";

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// The content of [`STATE_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Format version ([`STATE_VERSION`]).
    #[serde(default)]
    pub version: u32,
    /// Host-wide maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Maintenance>,
    /// Per-unit maintenance, by full unit name.
    #[serde(default)]
    pub units: BTreeMap<String, Maintenance>,
}

impl MaintenanceState {
    /// The state recorded in a host's facts.
    pub fn of_facts(hf: &HostFacts) -> Self {
        MaintenanceState {
            version: STATE_VERSION,
            host: hf.maintenance.clone(),
            units: hf.unit_maintenance.clone(),
        }
    }

    /// Copy this state into a host's facts.
    pub fn into_facts(self, hf: &mut HostFacts) {
        hf.maintenance = self.host;
        hf.unit_maintenance = self.units;
    }

    /// Why a step on `unit` must skip this host, if it must.
    pub fn skip_reason(&self, unit: &str) -> Option<SkipReason> {
        skip_reason(self.host.as_ref(), &self.units, unit)
    }
}

/// Why a step on `unit` must skip a host, given its maintenance flags:
/// "skipped: in maintenance: REASON" (host-wide first).
pub fn skip_reason(
    host: Option<&Maintenance>,
    units: &BTreeMap<String, Maintenance>,
    unit: &str,
) -> Option<SkipReason> {
    host.or_else(|| units.get(unit))
        .map(|m| SkipReason::Maintenance(m.reason.clone()))
}

/// What a `maintenance:` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceGoal {
    /// On or off.
    pub enable: bool,
    /// Why (kept with the flag; ignored when disabling).
    pub reason: String,
    /// The unit, or None for the whole host.
    pub unit: Option<UnitName>,
}

/// The decision of a `maintenance:` step on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceDecision {
    /// The operation, None when the state already holds.
    pub action: Option<Action>,
    /// The state afterwards.
    pub after: MaintenanceState,
}

/// Decide a maintenance step from the host's current flags; `now` stamps a
/// new flag. Idempotent: enabling what is enabled with the same reason and
/// disabling what is not set change nothing; a new reason updates the flag
/// and keeps its `since`. Used by both plan and apply.
pub fn decide_maintenance(
    goal: &MaintenanceGoal,
    current: &MaintenanceState,
    now: &str,
) -> MaintenanceDecision {
    let mut after = current.clone();
    after.version = STATE_VERSION;
    let slot = match &goal.unit {
        None => &mut after.host,
        Some(u) => {
            let mut v = after.units.remove(u.as_str());
            let changed = apply_goal(&mut v, goal, now);
            if let Some(m) = v {
                after.units.insert(u.as_str().to_string(), m);
            }
            return MaintenanceDecision {
                action: changed,
                after,
            };
        }
    };
    let action = apply_goal(slot, goal, now);
    MaintenanceDecision { action, after }
}

fn apply_goal(slot: &mut Option<Maintenance>, goal: &MaintenanceGoal, now: &str) -> Option<Action> {
    match (goal.enable, slot.as_mut()) {
        (true, Some(m)) if m.reason == goal.reason => None,
        (true, Some(m)) => {
            m.reason = goal.reason.clone();
            Some(Action::MaintenanceOn)
        }
        (true, None) => {
            *slot = Some(Maintenance {
                reason: goal.reason.clone(),
                since: now.to_string(),
            });
            Some(Action::MaintenanceOn)
        }
        (false, Some(_)) => {
            *slot = None;
            Some(Action::MaintenanceOff)
        }
        (false, None) => None,
    }
}

/// Parse the state file's bytes (empty: no maintenance).
pub fn parse_state(bytes: &[u8]) -> std::result::Result<MaintenanceState, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(MaintenanceState {
            version: STATE_VERSION,
            ..Default::default()
        });
    }
    let st: MaintenanceState = serde_json::from_slice(bytes)
        .map_err(|e| format!("{STATE_FILE} is not valid drover state: {e}"))?;
    if st.version > STATE_VERSION {
        return Err(format!(
            "{STATE_FILE} has version {} (this drover reads {STATE_VERSION})",
            st.version
        ));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(enable: bool, reason: &str, unit: Option<&str>) -> MaintenanceGoal {
        MaintenanceGoal {
            enable,
            reason: reason.into(),
            unit: unit.map(|u| UnitName::parse(u).unwrap()),
        }
    }

    #[test]
    fn enabling_is_idempotent_and_keeps_since() {
        let empty = MaintenanceState::default();
        let d = decide_maintenance(&goal(true, "disk", None), &empty, "T1");
        assert_eq!(d.action, Some(Action::MaintenanceOn));
        assert_eq!(d.after.host.as_ref().unwrap().since, "T1");
        let again = decide_maintenance(&goal(true, "disk", None), &d.after, "T2");
        assert_eq!(again.action, None);
        let new_reason = decide_maintenance(&goal(true, "ram", None), &d.after, "T3");
        assert_eq!(new_reason.action, Some(Action::MaintenanceOn));
        assert_eq!(new_reason.after.host.as_ref().unwrap().since, "T1");
        let off = decide_maintenance(&goal(false, "", None), &d.after, "T4");
        assert_eq!(off.action, Some(Action::MaintenanceOff));
        assert!(off.after.host.is_none());
        assert_eq!(
            decide_maintenance(&goal(false, "", None), &off.after, "T5").action,
            None
        );
    }

    #[test]
    fn unit_flags_are_separate_from_the_host() {
        let d = decide_maintenance(
            &goal(true, "drain", Some("demo-web")),
            &MaintenanceState::default(),
            "T",
        );
        assert!(d.after.host.is_none());
        assert_eq!(d.after.units["demo-web.service"].reason, "drain");
        assert_eq!(
            d.after
                .skip_reason("demo-web.service")
                .map(|r| r.to_string())
                .as_deref(),
            Some("skipped: in maintenance: drain")
        );
        assert_eq!(d.after.skip_reason("demo-worker.service"), None);
    }

    #[test]
    fn state_files_parse_strictly() {
        assert_eq!(parse_state(b"").unwrap().host, None);
        assert!(parse_state(b"{not json").is_err());
        assert!(parse_state(b"{\"version\": 99}").is_err());
        let st =
            parse_state(br#"{"version":1,"host":{"reason":"r","since":"s"},"units":{}}"#).unwrap();
        assert_eq!(st.host.unwrap().reason, "r");
    }
}
