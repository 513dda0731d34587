//! A host's maintenance state file, read with a constant remote command
//! and written by a constant remote script that takes the JSON document on
//! stdin and renames it into place: no user data is ever part of a command
//! line. What the flags mean is the model's ([`crate::model::maintenance`]).

use crate::model::maintenance::{
    decide_maintenance, parse_state, MaintenanceGoal, MaintenanceState, STATE_FILE,
};
use crate::model::service::Action;
use crate::remote::carrier::Session;

/// Prints the file if it exists, nothing otherwise; anything there that is
/// not a regular file (a link to /dev/zero, a fifo) is an error, never read
/// (a constant script).
const READ_SCRIPT: &str = "f=/var/lib/drover/maintenance.json; \
if [ -f \"$f\" ]; then cat \"$f\"; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f is not a regular file\" >&2; exit 3; fi";

/// Writes stdin to the state file atomically: temp file in the same
/// directory, flushed, renamed over the old one (a constant script).
const WRITE_SCRIPT: &str = "set -e; umask 022; mkdir -p /var/lib/drover; \
t=$(mktemp /var/lib/drover/.maintenance.json.XXXXXX); \
trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 644 \"$t\"; sync \"$t\" 2>/dev/null || true; \
mv -f \"$t\" /var/lib/drover/maintenance.json; trap - EXIT";

/// Read a host's maintenance state over its session (empty when the file
/// does not exist). A file drover cannot parse is an error, never "no
/// maintenance": silently ignoring a flag would be the unsafe choice.
pub async fn read(session: &Session) -> std::result::Result<MaintenanceState, String> {
    // The session's preread read the file when it opened: use that once
    // instead of logging in again.
    match session.take_preread() {
        Some(crate::remote::carrier::Preread::Missing) => return parse_state(b""),
        Some(crate::remote::carrier::Preread::Content(bytes)) => return parse_state(&bytes),
        Some(crate::remote::carrier::Preread::Unreadable) => {
            return Err(format!(
                "cannot read {STATE_FILE}: permission denied or I/O error"
            ))
        }
        None => {}
    }
    let out = session
        .run("sh", &["-c", READ_SCRIPT])
        .await
        .map_err(|e| format!("cannot read {STATE_FILE}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot read {STATE_FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_state(&out.stdout)
}

/// Write a host's maintenance state atomically over its session.
pub async fn write(session: &Session, state: &MaintenanceState) -> std::result::Result<(), String> {
    let mut json = serde_json::to_vec_pretty(state)
        .map_err(|e| format!("cannot serialise maintenance state: {e}"))?;
    json.push(b'\n');
    let out = session
        .run_input("sh", &["-c", WRITE_SCRIPT], &json)
        .await
        .map_err(|e| format!("cannot write {STATE_FILE}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot write {STATE_FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Apply a maintenance step on one host: re-read the state file (another
/// drover may have changed it), decide, write when it changes. Returns the
/// action done (None: already so) and the state now on the host.
pub async fn apply_goal_on(
    session: &Session,
    goal: &MaintenanceGoal,
) -> std::result::Result<(Option<Action>, MaintenanceState), String> {
    let current = read(session).await?;
    let d = decide_maintenance(goal, &current, &crate::model::now_rfc3339());
    if d.action.is_some() {
        write(session, &d.after).await?;
    }
    Ok((d.action, d.after))
}
