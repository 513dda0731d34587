//! Modules decide, from a unit's current state, which systemd operations a
//! step needs. `plan` and `apply` call the same function, so the plan can
//! only predict what apply will really do.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::facts::UnitFacts;
use crate::playbook::ServiceState;

/// One systemd operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Action {
    Unmask,
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
    Mask,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Action::Unmask => "unmask",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Mask => "mask",
        };
        f.write_str(s)
    }
}

/// What the service module wants of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceGoal {
    /// Run state.
    pub state: Option<ServiceState>,
    /// Enablement.
    pub enabled: Option<bool>,
    /// Mask.
    pub masked: Option<bool>,
}

/// The decision for one unit on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Operations in the order they run; empty means no change.
    pub actions: Vec<Action>,
    /// The predicted state afterwards.
    pub after: UnitFacts,
    /// Why the step fails on this host, when it must.
    pub error: Option<String>,
}

/// Whether systemd counts the unit as running for our purposes.
pub fn is_running(active_state: &str) -> bool {
    matches!(active_state, "active" | "reloading" | "activating")
}

/// Whether the unit file is masked.
pub fn is_masked(u: &UnitFacts) -> bool {
    u.load_state == "masked" || u.unit_file_state.starts_with("masked")
}

/// Unit-file states in which `enabled: true` already holds or cannot apply.
fn enabled_like(ufs: &str) -> bool {
    matches!(
        ufs,
        "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated" | "transient" | "linked" | "linked-runtime"
    )
}

/// Decide the operations for `goal` given the unit's current state `now`.
///
/// Rules (documented in the README): unmask first, then enable/disable,
/// then the run state, then mask; starting an active unit and stopping an
/// inactive or failed one change nothing; a restart always changes; a
/// reload of a stopped unit starts it; a unit systemd does not know can
/// only be stopped (a no-op), disabled (a no-op) or masked.
pub fn decide_service(unit: &str, goal: &ServiceGoal, now: &UnitFacts) -> Decision {
    let mut after = now.clone();
    let mut actions = Vec::new();
    let fail = |after: UnitFacts, actions: Vec<Action>, msg: String| Decision {
        actions,
        after,
        error: Some(msg),
    };
    let mut missing = now.load_state == "not-found";

    if goal.masked == Some(false) && is_masked(&after) {
        actions.push(Action::Unmask);
        after.unit_file_state = "disabled".into();
        if after.load_state == "masked" {
            after.load_state = "loaded".into();
        }
    }
    if let Some(want) = goal.enabled {
        if missing {
            if want {
                return fail(after, actions, format!("unit {unit} not found"));
            }
        } else if is_masked(&after) {
            if want {
                return fail(after, actions, format!("unit {unit} is masked; add `masked: false` to unmask it"));
            }
        } else if want && !enabled_like(&after.unit_file_state) {
            actions.push(Action::Enable);
            after.unit_file_state = "enabled".into();
        } else if !want && after.unit_file_state.starts_with("enabled") {
            actions.push(Action::Disable);
            after.unit_file_state = "disabled".into();
        }
    }
    if let Some(state) = goal.state {
        let running = is_running(&after.active_state);
        let needs_unit = !matches!(state, ServiceState::Stopped);
        if needs_unit && missing {
            return fail(after, actions, format!("unit {unit} not found"));
        }
        if needs_unit && is_masked(&after) {
            return fail(after, actions, format!("unit {unit} is masked; add `masked: false` to unmask it"));
        }
        let op = match state {
            ServiceState::Started if !running => Some(Action::Start),
            ServiceState::Started => None,
            ServiceState::Stopped if running || after.active_state == "deactivating" => Some(Action::Stop),
            ServiceState::Stopped => None,
            ServiceState::Restarted => Some(Action::Restart),
            ServiceState::Reloaded if running => Some(Action::Reload),
            ServiceState::Reloaded => Some(Action::Start),
        };
        if let Some(op) = op {
            actions.push(op);
            match op {
                Action::Stop => {
                    after.active_state = "inactive".into();
                    after.sub_state = "dead".into();
                    after.main_pid = 0;
                }
                Action::Start | Action::Restart => {
                    after.active_state = "active".into();
                    after.sub_state = "running".into();
                }
                _ => {}
            }
        }
    }
    if goal.masked == Some(true) && !is_masked(&after) {
        actions.push(Action::Mask);
        after.unit_file_state = "masked".into();
        missing = false;
    }
    let _ = missing;
    Decision {
        actions,
        after,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: &str, ufs: &str) -> UnitFacts {
        UnitFacts {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: if active == "active" { "running".into() } else { "dead".into() },
            unit_file_state: ufs.into(),
            start_time: None,
            invocation_id: String::new(),
            main_pid: 0,
            job: None,
        }
    }

    fn acts(goal: ServiceGoal, now: &UnitFacts) -> Vec<Action> {
        let d = decide_service("u.service", &goal, now);
        assert!(d.error.is_none(), "{:?}", d.error);
        d.actions
    }

    fn state(s: ServiceState) -> ServiceGoal {
        ServiceGoal { state: Some(s), ..Default::default() }
    }

    #[test]
    fn idempotent_states_change_nothing() {
        assert!(acts(state(ServiceState::Started), &unit("active", "enabled")).is_empty());
        assert!(acts(state(ServiceState::Stopped), &unit("inactive", "enabled")).is_empty());
        assert!(acts(state(ServiceState::Stopped), &unit("failed", "enabled")).is_empty());
        assert_eq!(acts(state(ServiceState::Started), &unit("failed", "enabled")), [Action::Start]);
        assert_eq!(acts(state(ServiceState::Restarted), &unit("active", "enabled")), [Action::Restart]);
        assert_eq!(acts(state(ServiceState::Reloaded), &unit("inactive", "enabled")), [Action::Start]);
        assert_eq!(acts(state(ServiceState::Reloaded), &unit("active", "enabled")), [Action::Reload]);
    }

    #[test]
    fn enablement_and_masks() {
        let g = ServiceGoal { state: Some(ServiceState::Started), enabled: Some(true), masked: None };
        assert_eq!(acts(g, &unit("inactive", "disabled")), [Action::Enable, Action::Start]);
        assert!(acts(g, &unit("active", "enabled")).is_empty());
        let g = ServiceGoal { enabled: Some(true), ..Default::default() };
        assert!(acts(g, &unit("active", "static")).is_empty());
        let g = ServiceGoal { state: Some(ServiceState::Stopped), masked: Some(true), ..Default::default() };
        assert_eq!(acts(g, &unit("active", "enabled")), [Action::Stop, Action::Mask]);
        let g = ServiceGoal { state: Some(ServiceState::Started), masked: Some(false), ..Default::default() };
        assert_eq!(acts(g, &unit("inactive", "masked")), [Action::Unmask, Action::Start]);
        let d = decide_service("u.service", &state(ServiceState::Started), &unit("inactive", "masked"));
        assert!(d.error.unwrap().contains("masked"));
    }

    #[test]
    fn missing_units() {
        let nf = UnitFacts::not_found();
        assert!(acts(state(ServiceState::Stopped), &nf).is_empty());
        let d = decide_service("u.service", &state(ServiceState::Started), &nf);
        assert_eq!(d.error.as_deref(), Some("unit u.service not found"));
    }
}
