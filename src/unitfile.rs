//! The `unit:` module: register a unit (write its file under
//! [`UNIT_DIR`] from inline content or a template, daemon-reload only when
//! the content changed) or deregister it (stop, disable, remove the file,
//! daemon-reload). The decision is one function that plan and apply share.
//!
//! Files are read, written and removed by constant remote scripts that get
//! the path as a quoted positional argument and the content on stdin.
//!
//! This file also turns the `maintenance:` and `unit:` specs of a playbook
//! step into their validated [`Module`]s.

use std::path::Path;

use crate::carrier::Session;
use crate::error::{Error, Position, Result};
use crate::facts::UnitFacts;
use crate::module::{is_running, Action};
use crate::playbook::{Module, StepSpec, UnitFileGoal, UnitSource};
use crate::systemd::Systemd;
use crate::template::Templates;
use crate::unit::UnitName;

/// Where registered unit files go.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Largest unit file or template drover writes (1 MiB).
const MAX_UNIT_FILE: usize = 1 << 20;

const READ_SCRIPT: &str =
    "if [ -e \"$1\" ]; then printf 'present\\n'; cat -- \"$1\"; else printf 'absent\\n'; fi";
const WRITE_SCRIPT: &str = "set -e; umask 022; t=$(mktemp \"$1.drover.XXXXXX\"); \
trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 644 \"$t\"; sync \"$t\" 2>/dev/null || true; \
mv -f \"$t\" \"$1\"; trap - EXIT";
const REMOVE_SCRIPT: &str = "rm -f -- \"$1\"";

/// The path of a unit's file.
pub fn unit_path(unit: &UnitName) -> String {
    format!("{UNIT_DIR}/{}", unit.as_str())
}

/// Build the module of a step that has `maintenance:` or `unit:`.
pub fn module_of(
    spec: &StepSpec,
    templates: &mut Templates,
    playbook_path: &Path,
    field: &dyn Fn(&str) -> String,
    id: &str,
    pos: &dyn Fn(serde_saphyr::Location) -> Position,
    position: Position,
) -> Result<Module> {
    const WHAT: &str = "playbook";
    if let Some(m) = &spec.maintenance {
        let reason = match m.reason.as_deref() {
            Some(r) if !r.trim().is_empty() => Some(templates.add_string(r).map_err(|e| {
                Error::invalid(
                    WHAT,
                    field("maintenance.reason"),
                    format!("step `{id}`: {e}"),
                    Some(position.clone()),
                )
            })?),
            _ if m.enable => {
                return Err(Error::invalid(
                    WHAT,
                    field("maintenance.reason"),
                    format!(
                    "step `{id}`: enabling maintenance needs a `reason` (it is shown to everyone)"
                ),
                    Some(position),
                ))
            }
            _ => None,
        };
        let (unit, name_position) = match &m.unit {
            Some(u) => {
                let at = pos(u.referenced);
                let t = templates.add_unit_name(&u.value).map_err(|e| {
                    Error::invalid(
                        WHAT,
                        field("maintenance.unit"),
                        format!("step `{id}`: {e}"),
                        Some(at.clone()),
                    )
                })?;
                (Some(t), at)
            }
            None => (None, position),
        };
        return Ok(Module::Maintenance {
            enable: m.enable,
            reason,
            unit,
            name_position,
        });
    }
    let Some(u) = &spec.unit else {
        return Err(Error::Internal(format!("step `{id}` has no module")));
    };
    let at = pos(u.name.referenced);
    let name = templates.add_unit_name(&u.name.value).map_err(|e| {
        Error::invalid(
            WHAT,
            field("unit.name"),
            format!("step `{id}`: {e}"),
            Some(at.clone()),
        )
    })?;
    let state = u.state.unwrap_or(UnitFileGoal::Present);
    let source = match (state, &u.content, &u.template) {
        (_, Some(_), Some(_)) => {
            return Err(Error::invalid(
                WHAT,
                field("unit"),
                format!("step `{id}`: give `content` or `template`, not both"),
                Some(at),
            ))
        }
        (UnitFileGoal::Absent, None, None) => UnitSource::Nothing,
        (UnitFileGoal::Absent, ..) => {
            return Err(Error::invalid(
                WHAT,
                field("unit"),
                format!("step `{id}`: `state: absent` removes the file; drop `content`/`template`"),
                Some(at),
            ))
        }
        (UnitFileGoal::Present, None, None) => {
            return Err(Error::invalid(
                WHAT,
                field("unit"),
                format!("step `{id}`: registering a unit needs `content` or `template`"),
                Some(at),
            ))
        }
        (UnitFileGoal::Present, Some(c), None) => {
            if c.len() > MAX_UNIT_FILE {
                return Err(Error::invalid(
                    WHAT,
                    field("unit.content"),
                    format!("step `{id}`: content is larger than 1 MiB"),
                    Some(at),
                ));
            }
            UnitSource::Content(c.clone())
        }
        (UnitFileGoal::Present, None, Some(t)) => {
            let file = playbook_path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(t);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Error::invalid(
                    WHAT,
                    field("unit.template"),
                    format!("step `{id}`: cannot read template {}: {e}", file.display()),
                    Some(at.clone()),
                )
            })?;
            if text.len() > MAX_UNIT_FILE {
                return Err(Error::invalid(
                    WHAT,
                    field("unit.template"),
                    format!(
                        "step `{id}`: template {} is larger than 1 MiB",
                        file.display()
                    ),
                    Some(at),
                ));
            }
            UnitSource::Template(templates.add_string(&text).map_err(|e| {
                Error::invalid(
                    WHAT,
                    field("unit.template"),
                    format!("step `{id}`: {}: {e}", file.display()),
                    Some(at.clone()),
                )
            })?)
        }
    };
    Ok(Module::Unit {
        name,
        name_position: at,
        source,
        state,
    })
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

/// Read a unit's file over the session: Some(content) or None (no file).
pub async fn read_file(
    session: &Session,
    unit: &UnitName,
) -> std::result::Result<Option<String>, String> {
    let path = unit_path(unit);
    let out = session
        .run("sh", &["-c", READ_SCRIPT, "sh", &path])
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot read {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| format!("{path} is not UTF-8 text"))?;
    match text.split_once('\n') {
        Some(("present", rest)) => Ok(Some(rest.to_string())),
        Some(("absent", _)) => Ok(None),
        _ => Err(format!("cannot read {path}: unexpected answer")),
    }
}

async fn script(
    session: &Session,
    s: &str,
    path: &str,
    input: &[u8],
) -> std::result::Result<(), String> {
    let out = session
        .run_input("sh", &["-c", s, "sh", path], input)
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The outcome of applying a `unit:` step on one host.
#[derive(Debug)]
pub struct UnitOutcome {
    /// Whether anything changed on the host.
    pub changed: bool,
    /// The operations done, in order.
    pub done: Vec<Action>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Apply a `unit:` step: read the file and the unit, decide, act.
pub async fn apply_unit(
    session: &Session,
    unit: &UnitName,
    want: &UnitFileWant<'_>,
) -> UnitOutcome {
    let sd: &Systemd = session.systemd();
    let mut out = UnitOutcome {
        changed: false,
        done: Vec::new(),
        error: None,
    };
    let current = match read_file(session, unit).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let now = match sd.unit_facts(std::slice::from_ref(unit)).await {
        Ok(mut m) => m.remove(unit.as_str()).unwrap_or_else(UnitFacts::not_found),
        Err(e) => {
            out.error = Some(format!("cannot read {unit}: {e}"));
            return out;
        }
    };
    let path = unit_path(unit);
    for a in decide_unit(want, current.as_deref(), &now) {
        let r = match a {
            Action::WriteUnit => {
                let content = match want {
                    UnitFileWant::Present(c) => c.as_bytes(),
                    UnitFileWant::Absent => b"",
                };
                script(session, WRITE_SCRIPT, &path, content)
                    .await
                    .map_err(|e| format!("write {path}: {e}"))
            }
            Action::RemoveUnit => script(session, REMOVE_SCRIPT, &path, b"")
                .await
                .map_err(|e| format!("remove {path}: {e}")),
            Action::DaemonReload => sd
                .daemon_reload()
                .await
                .map_err(|e| format!("daemon-reload: {e}")),
            Action::Stop => match sd.stop(unit).await {
                Ok(job) if job.ok() => Ok(()),
                Ok(job) => Err(job
                    .error_message()
                    .unwrap_or_else(|| format!("stop {unit}: job {}", job.result))),
                Err(e) => Err(format!("stop {unit}: {e}")),
            },
            Action::Disable => sd
                .disable(unit)
                .await
                .map(|_| ())
                .map_err(|e| format!("disable {unit}: {e}")),
            other => Err(format!("internal: `{other}` is not a unit-file operation")),
        };
        out.done.push(a);
        match r {
            Ok(()) => out.changed = true,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    out
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
