//! Unit files on a host: read, written and removed by constant remote
//! scripts that get the path as a quoted positional argument and the
//! content on stdin; the decision of what to do is the model's
//! ([`crate::model::unitfile::decide_unit`]).

use crate::model::facts::UnitFacts;
use crate::model::service::Action;
use crate::model::unit::UnitName;
use crate::model::unitfile::{decide_unit, unit_path, UnitFileWant};
use crate::remote::carrier::Session;
use crate::remote::systemd::Systemd;

/// Prints `present` and the file, or `absent`; anything there that is not
/// a regular file (a link to /dev/zero, a fifo) is an error, never read.
const READ_SCRIPT: &str = "if [ -f \"$1\" ]; then printf 'present\\n'; cat -- \"$1\"; \
elif [ -e \"$1\" ] || [ -L \"$1\" ]; then echo \"$1 is not a regular file\" >&2; exit 3; \
else printf 'absent\\n'; fi";
const WRITE_SCRIPT: &str = "set -e; umask 022; t=$(mktemp \"$1.drover.XXXXXX\"); \
trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; \
if [ -f \"$1\" ]; then chmod --reference=\"$1\" \"$t\"; else chmod 644 \"$t\"; fi; sync \"$t\" 2>/dev/null || true; \
mv -f \"$t\" \"$1\"; trap - EXIT";
const REMOVE_SCRIPT: &str = "rm -f -- \"$1\"";

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
