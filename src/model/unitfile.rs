//! The `unit:` module: register a unit (write its file under
//! [`UNIT_DIR`] from inline content or a template, daemon-reload only when
//! the content changed) or deregister it (stop, disable, remove the file,
//! daemon-reload). The decision is one function that plan and apply share.
//!
//! Reading, writing and removing the files on a host is
//! the remote layer's (`remote/unitfile.rs`).

use crate::model::facts::UnitFacts;
use crate::model::service::{is_running, Action};
use crate::model::unit::UnitName;

/// Where registered unit files go.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The path of a unit's file.
pub fn unit_path(unit: &UnitName) -> String {
    format!("{UNIT_DIR}/{}", unit.as_str())
}

/// What a `unit:` step wants on one host: the file's content, or no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitFileWant<'a> {
    /// The file with exactly this content.
    Present(&'a str),
    /// No file.
    Absent,
}

/// Decide a `unit:` step from the file's current content (None: no file)
/// and the unit's state. Writing a file that differs is `write-unit` +
/// `daemon-reload`; equal content is a no-op. Removing stops a running
/// unit, disables an enabled one, removes the file and reloads; an absent
/// file is a no-op. Used by both plan and apply.
pub fn decide_unit(want: &UnitFileWant<'_>, current: Option<&str>, now: &UnitFacts) -> Vec<Action> {
    match (want, current) {
        (UnitFileWant::Present(c), Some(cur)) if *c == cur => Vec::new(),
        (UnitFileWant::Present(_), _) => vec![Action::WriteUnit, Action::DaemonReload],
        (UnitFileWant::Absent, None) => Vec::new(),
        (UnitFileWant::Absent, Some(_)) => {
            let mut v = Vec::new();
            if is_running(&now.active_state) || now.active_state == "deactivating" {
                v.push(Action::Stop);
            }
            if now.unit_file_state.starts_with("enabled") {
                v.push(Action::Disable);
            }
            v.push(Action::RemoveUnit);
            v.push(Action::DaemonReload);
            v
        }
    }
}

/// The predicted unit state after a `unit:` step's actions.
pub fn predict(unit_now: &UnitFacts, actions: &[Action], present: bool) -> UnitFacts {
    let mut a = if present && unit_now.load_state == "not-found" {
        UnitFacts {
            load_state: "loaded".into(),
            unit_file_state: "disabled".into(),
            ..unit_now.clone()
        }
    } else {
        unit_now.clone()
    };
    if !present && actions.contains(&Action::RemoveUnit) {
        a = UnitFacts::not_found();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(active: &str, ufs: &str) -> UnitFacts {
        UnitFacts {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: String::new(),
            unit_file_state: ufs.into(),
            start_time: None,
            invocation_id: String::new(),
            main_pid: 0,
            job: None,
            description: String::new(),
        }
    }

    #[test]
    fn present_writes_only_on_difference() {
        let nf = UnitFacts::not_found();
        assert_eq!(
            decide_unit(&UnitFileWant::Present("a"), None, &nf),
            [Action::WriteUnit, Action::DaemonReload]
        );
        assert!(decide_unit(&UnitFileWant::Present("a"), Some("a"), &nf).is_empty());
        assert_eq!(
            decide_unit(&UnitFileWant::Present("b"), Some("a"), &nf),
            [Action::WriteUnit, Action::DaemonReload]
        );
    }

    #[test]
    fn absent_stops_disables_removes() {
        assert!(decide_unit(&UnitFileWant::Absent, None, &UnitFacts::not_found()).is_empty());
        assert_eq!(
            decide_unit(
                &UnitFileWant::Absent,
                Some("x"),
                &facts("active", "enabled")
            ),
            [
                Action::Stop,
                Action::Disable,
                Action::RemoveUnit,
                Action::DaemonReload
            ]
        );
        assert_eq!(
            decide_unit(
                &UnitFileWant::Absent,
                Some("x"),
                &facts("inactive", "disabled")
            ),
            [Action::RemoveUnit, Action::DaemonReload]
        );
    }
}
