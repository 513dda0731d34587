//! Modules decide, from a unit's current state, which systemd operations a
//! step needs. `plan` and `apply` call the same function, so the plan can
//! only predict what apply will really do.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::facts::UnitFacts;
use crate::model::outcome::Failure;
use crate::model::playbook::ServiceState;

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
    /// Set a maintenance flag (`maintenance:` module).
    #[serde(rename = "maintenance-on")]
    MaintenanceOn,
    /// Clear a maintenance flag.
    #[serde(rename = "maintenance-off")]
    MaintenanceOff,
    /// Write a unit file (`unit:` module).
    #[serde(rename = "write-unit")]
    WriteUnit,
    /// Remove a unit file.
    #[serde(rename = "remove-unit")]
    RemoveUnit,
    /// Make systemd re-read its unit files.
    #[serde(rename = "daemon-reload")]
    DaemonReload,
    /// Run a script module's program.
    Run,
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
            Action::Run => "run",
            Action::MaintenanceOn => "maintenance-on",
            Action::MaintenanceOff => "maintenance-off",
            Action::WriteUnit => "write-unit",
            Action::RemoveUnit => "remove-unit",
            Action::DaemonReload => "daemon-reload",
        };
        f.write_str(s)
    }
}

/// Operations as one word, `+`-joined (`none` when there are none).
pub fn join_actions(actions: &[Action], none: &str) -> String {
    if actions.is_empty() {
        return none.to_string();
    }
    actions
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("+")
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
    /// The predicted state afterwards; None when nothing changes.
    pub after: Option<UnitFacts>,
    /// Why the step fails on this host, when it must.
    pub error: Option<Failure>,
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
        "enabled"
            | "enabled-runtime"
            | "static"
            | "alias"
            | "indirect"
            | "generated"
            | "transient"
            | "linked"
            | "linked-runtime"
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
    // Work on borrowed words; clone the facts only when something changes.
    let mut load: &str = &now.load_state;
    let mut active: &str = &now.active_state;
    let mut sub: &str = &now.sub_state;
    let mut ufs: &str = &now.unit_file_state;
    let mut actions = Vec::new();
    let masked = |load: &str, ufs: &str| load == "masked" || ufs.starts_with("masked");
    let missing = now.load_state == "not-found";
    let fail = |actions: Vec<Action>, msg: Failure| Decision {
        actions,
        after: None,
        error: Some(msg),
    };

    if goal.masked == Some(false) && masked(load, ufs) {
        actions.push(Action::Unmask);
        ufs = "disabled";
        if load == "masked" {
            load = "loaded";
        }
    }
    if let Some(want) = goal.enabled {
        if missing {
            if want {
                return fail(actions, Failure::UnitMissing(unit.to_string()));
            }
        } else if masked(load, ufs) {
            if want {
                return fail(actions, Failure::UnitMasked(unit.to_string()));
            }
        } else if want && !enabled_like(ufs) {
            actions.push(Action::Enable);
            ufs = "enabled";
        } else if !want && ufs.starts_with("enabled") {
            actions.push(Action::Disable);
            ufs = "disabled";
        }
    }
    if let Some(state) = goal.state {
        let running = is_running(active);
        let needs_unit = !matches!(state, ServiceState::Stopped);
        if needs_unit && missing {
            return fail(actions, Failure::UnitMissing(unit.to_string()));
        }
        if needs_unit && masked(load, ufs) {
            return fail(actions, Failure::UnitMasked(unit.to_string()));
        }
        let op = match state {
            ServiceState::Started if !running => Some(Action::Start),
            ServiceState::Started => None,
            ServiceState::Stopped if running || active == "deactivating" => Some(Action::Stop),
            ServiceState::Stopped => None,
            ServiceState::Restarted => Some(Action::Restart),
            ServiceState::Reloaded if running => Some(Action::Reload),
            ServiceState::Reloaded => Some(Action::Start),
        };
        if let Some(op) = op {
            actions.push(op);
            match op {
                Action::Stop => {
                    active = "inactive";
                    sub = "dead";
                }
                Action::Start | Action::Restart => {
                    active = "active";
                    sub = "running";
                }
                _ => {}
            }
        }
    }
    if goal.masked == Some(true) && !masked(load, ufs) {
        actions.push(Action::Mask);
        ufs = "masked";
    }
    let after = (!actions.is_empty()).then(|| {
        let mut a = now.clone();
        a.load_state = load.to_string();
        a.active_state = active.to_string();
        a.sub_state = sub.to_string();
        a.unit_file_state = ufs.to_string();
        if a.active_state == "inactive" {
            a.main_pid = 0;
        }
        a
    });
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
            sub_state: if active == "active" {
                "running".into()
            } else {
                "dead".into()
            },
            unit_file_state: ufs.into(),
            start_time: None,
            invocation_id: String::new(),
            main_pid: 0,
            job: None,
            description: String::new(),
        }
    }

    fn acts(goal: ServiceGoal, now: &UnitFacts) -> Vec<Action> {
        let d = decide_service("u.service", &goal, now);
        assert!(d.error.is_none(), "{:?}", d.error);
        d.actions
    }

    fn state(s: ServiceState) -> ServiceGoal {
        ServiceGoal {
            state: Some(s),
            ..Default::default()
        }
    }

    #[test]
    fn idempotent_states_change_nothing() {
        assert!(acts(state(ServiceState::Started), &unit("active", "enabled")).is_empty());
        assert!(acts(state(ServiceState::Stopped), &unit("inactive", "enabled")).is_empty());
        assert!(acts(state(ServiceState::Stopped), &unit("failed", "enabled")).is_empty());
        assert_eq!(
            acts(state(ServiceState::Started), &unit("failed", "enabled")),
            [Action::Start]
        );
        assert_eq!(
            acts(state(ServiceState::Restarted), &unit("active", "enabled")),
            [Action::Restart]
        );
        assert_eq!(
            acts(state(ServiceState::Reloaded), &unit("inactive", "enabled")),
            [Action::Start]
        );
        assert_eq!(
            acts(state(ServiceState::Reloaded), &unit("active", "enabled")),
            [Action::Reload]
        );
    }

    #[test]
    fn enablement_and_masks() {
        let g = ServiceGoal {
            state: Some(ServiceState::Started),
            enabled: Some(true),
            masked: None,
        };
        assert_eq!(
            acts(g, &unit("inactive", "disabled")),
            [Action::Enable, Action::Start]
        );
        assert!(acts(g, &unit("active", "enabled")).is_empty());
        let g = ServiceGoal {
            enabled: Some(true),
            ..Default::default()
        };
        assert!(acts(g, &unit("active", "static")).is_empty());
        let g = ServiceGoal {
            state: Some(ServiceState::Stopped),
            masked: Some(true),
            ..Default::default()
        };
        assert_eq!(
            acts(g, &unit("active", "enabled")),
            [Action::Stop, Action::Mask]
        );
        let g = ServiceGoal {
            state: Some(ServiceState::Started),
            masked: Some(false),
            ..Default::default()
        };
        assert_eq!(
            acts(g, &unit("inactive", "masked")),
            [Action::Unmask, Action::Start]
        );
        let d = decide_service(
            "u.service",
            &state(ServiceState::Started),
            &unit("inactive", "masked"),
        );
        assert!(d.error.unwrap().to_string().contains("masked"));
    }

    #[test]
    fn missing_units() {
        let nf = UnitFacts::not_found();
        assert!(acts(state(ServiceState::Stopped), &nf).is_empty());
        let d = decide_service("u.service", &state(ServiceState::Started), &nf);
        assert_eq!(
            d.error.map(|e| e.to_string()).as_deref(),
            Some("unit u.service not found")
        );
    }
}
