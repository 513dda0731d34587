//! A host's maintenance state file, read with a constant remote command
//! and written by a constant remote script that takes the JSON document on
//! stdin and renames it into place: no user data is ever part of a command
//! line. What the flags mean is the model's ([`crate::model::maintenance`]).

use crate::model::maintenance::{
    decide_maintenance, parse_state, MaintenanceGoal, MaintenanceState, STATE_FILE,
};
use crate::model::service::Action;
use crate::remote::carrier::Session;

/// Prints `present` and the file, or `absent`; anything there that is not
/// a regular file (a link to /dev/zero, a fifo) is an error, never read (a
/// constant script).
const READ_SCRIPT: &str = "f=/var/lib/drover/maintenance.json; \
if [ -f \"$f\" ]; then printf 'present\\n'; cat \"$f\"; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f is not a regular file\" >&2; exit 3; \
else printf 'absent\\n'; fi";

/// Writes stdin to the state file atomically: temp file in the same
/// directory, flushed, renamed over the old one (a constant script). Two
/// drovers must not drop each other's flags, so the write holds a lock on
/// the host and happens only if the file is still what was read: `$1` is
/// the SHA-256 of the content drover decided on (`absent`: no file); a
/// different file exits 76 and drover reads, decides and writes again.
const WRITE_SCRIPT: &str = "set -e; umask 022; mkdir -p /var/lib/drover; \
exec 9>/var/lib/drover/.maintenance.lock; flock -w 10 9; \
f=/var/lib/drover/maintenance.json; \
if [ -f \"$f\" ]; then cur=$(sha256sum < \"$f\"); cur=${cur%% *}; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f is not a regular file\" >&2; exit 3; \
else cur=absent; fi; \
[ \"$cur\" = \"$1\" ] || exit 76; \
t=$(mktemp /var/lib/drover/.maintenance.json.XXXXXX); \
trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 644 \"$t\"; sync \"$t\" 2>/dev/null || true; \
mv -f \"$t\" \"$f\"; trap - EXIT";

/// The exit status of [`WRITE_SCRIPT`] when the file changed since it was read.
const CHANGED_MEANWHILE: i32 = 76;

/// How often a maintenance update is tried again after another writer
/// changed the file between our read and our write.
const CAS_TRIES: usize = 5;

/// Read a host's maintenance state over its session (empty when the file
/// does not exist). A file drover cannot parse is an error, never "no
/// maintenance": silently ignoring a flag would be the unsafe choice.
pub async fn read(session: &Session) -> std::result::Result<MaintenanceState, String> {
    read_versioned(session, true).await.map(|(state, _)| state)
}

/// The state and the SHA-256 of the bytes it was read from (`absent`: no
/// file), for a write that must find the file unchanged. With `preread`,
/// the session's preread (taken when it opened) serves once.
async fn read_versioned(
    session: &Session,
    preread: bool,
) -> std::result::Result<(MaintenanceState, String), String> {
    let version = |bytes: &[u8]| crate::model::digest(bytes);
    // The session's preread read the file when it opened: use that once
    // instead of logging in again.
    match preread.then(|| session.take_preread()).flatten() {
        Some(crate::remote::carrier::Preread::Missing) => {
            return parse_state(b"").map(|s| (s, "absent".into()))
        }
        Some(crate::remote::carrier::Preread::Content(bytes)) => {
            return parse_state(&bytes).map(|s| (s, version(&bytes)))
        }
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
    match out.stdout.split_first_chunk::<8>() {
        Some((b"present\n", bytes)) => parse_state(bytes).map(|s| (s, version(bytes))),
        _ if out.stdout == b"absent\n" => parse_state(b"").map(|s| (s, "absent".into())),
        _ => Err(format!("cannot read {STATE_FILE}: unexpected answer")),
    }
}

/// Write a host's maintenance state atomically over its session if the
/// file is still the one whose version was read; false when it changed.
async fn write_if(
    session: &Session,
    state: &MaintenanceState,
    version: &str,
) -> std::result::Result<bool, String> {
    let mut json = serde_json::to_vec_pretty(state)
        .map_err(|e| format!("cannot serialise maintenance state: {e}"))?;
    json.push(b'\n');
    let out = session
        .run_input("sh", &["-c", WRITE_SCRIPT, "sh", version], &json)
        .await
        .map_err(|e| format!("cannot write {STATE_FILE}: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(CHANGED_MEANWHILE) => Ok(false),
        _ => Err(format!(
            "cannot write {STATE_FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Apply a maintenance step on one host: re-read the state file (another
/// drover may have changed it), decide, write when it changes. Returns the
/// action done (None: already so) and the state now on the host.
pub async fn apply_goal_on(
    session: &Session,
    goal: &MaintenanceGoal,
) -> std::result::Result<(Option<Action>, MaintenanceState), String> {
    for attempt in 0..CAS_TRIES {
        // The first read may be the session's preread; after a conflict
        // only a fresh one will do.
        let (current, version) = read_versioned(session, attempt == 0).await?;
        let d = decide_maintenance(goal, &current, &crate::model::now_rfc3339());
        if d.action.is_none() || write_if(session, &d.after, &version).await? {
            return Ok((d.action, d.after));
        }
        tracing::debug!(
            host = session.host(),
            attempt,
            "maintenance file changed meanwhile; again"
        );
    }
    Err(format!(
        "{STATE_FILE} kept changing under other writers; {CAS_TRIES} attempts gave up"
    ))
}
