//! The fence a host keeps for cluster mode: the newest lease revision any
//! worker changed it under, in `/var/lib/drover/fence`. A worker writes
//! its lease's revision there before each change, by compare-and-set on
//! the host (a constant script under the same kind of lock as the
//! maintenance file): a revision older than the one kept is refused, so a
//! worker whose lease was taken over while it was stopped or cut off
//! changes nothing, whatever its own clock believes. Lease revisions come
//! from one JetStream stream and only grow, so a newer owner's is larger.
//! A lease bucket made again (a new NATS deployment) starts its revisions
//! over: each token therefore leads with the bucket's epoch (its stream's
//! creation time), and a newer bucket's tokens win over an older one's.

use crate::remote::carrier::Session;

/// Where the fence is kept on a host.
pub const FENCE_FILE: &str = "/var/lib/drover/fence";

/// Keeps `$1 $2` (epoch and revision: digits made by drover, never user
/// data) unless the kept pair is newer; then prints the kept pair and
/// exits 77. A file that does not hold two numbers is an error, never
/// "no fence". With `$3` (an intent's name: letters, digits, `_.-`, made
/// by drover), stdin is kept as that intent, under the same lock: what
/// the worker is about to do, for an owner after it to read (intents a
/// day old go).
const ADVANCE_SCRIPT: &str = "set -e; umask 022; mkdir -p /var/lib/drover; \
exec 9>/var/lib/drover/.fence.lock; flock -w 10 9; \
f=/var/lib/drover/fence; e=0; r=0; \
if [ -f \"$f\" ]; then read -r e r < \"$f\" || true; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f is not a regular file\" >&2; exit 3; fi; \
for n in \"$e\" \"$r\"; do case \"$n\" in ''|*[!0-9]*) echo \"$f does not hold an epoch and a revision\" >&2; exit 3;; esac; done; \
if [ \"$e\" -gt \"$1\" ] || { [ \"$e\" -eq \"$1\" ] && [ \"$r\" -gt \"$2\" ]; }; then echo \"$e $r\"; exit 77; fi; \
if [ \"$e $r\" != \"$1 $2\" ]; then t=$(mktemp /var/lib/drover/.fence.XXXXXX); \
printf '%s %s\\n' \"$1\" \"$2\" > \"$t\"; chmod 644 \"$t\"; mv -f \"$t\" \"$f\"; fi; \
if [ -n \"$3\" ]; then d=/var/lib/drover/intent; mkdir -p \"$d\"; \
find \"$d\" -type f -mmin +1440 -delete 2>/dev/null || true; \
t=$(mktemp \"$d/.intent.XXXXXX\"); cat > \"$t\"; chmod 644 \"$t\"; mv -f \"$t\" \"$d/$3\"; fi";

/// Prints `present` and the intent `$1`, or `absent`.
const INTENT_SCRIPT: &str = "f=/var/lib/drover/intent/$1; \
if [ -f \"$f\" ]; then printf 'present\\n'; cat \"$f\"; else printf 'absent\\n'; fi";

/// An intent's name is drover's own, and safe as a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What a worker raises a host's fence to: its lease bucket's epoch and
/// its lease's revision, compared in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FenceToken {
    /// The lease bucket's creation time (seconds since the Unix epoch).
    pub epoch: u64,
    /// The lease's revision in that bucket.
    pub revision: u64,
}

/// The exit status of [`ADVANCE_SCRIPT`] when the host keeps a newer
/// revision.
const NEWER_KEPT: i32 = 77;

/// Why the fence did not let a change through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// The host keeps a newer lease's token: this worker's is stale.
    Stale {
        /// What the host keeps (`epoch revision`).
        kept: String,
    },
    /// The fence could not be read or written.
    Failed(String),
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fenced::Stale { kept } => write!(
                f,
                "the host's fence holds a newer lease ({kept}): this worker no longer owns it; nothing was done"
            ),
            Fenced::Failed(m) => write!(f, "cannot write {FENCE_FILE}: {m}"),
        }
    }
}

/// Raise the host's fence to `token`, or learn that a newer one is kept
/// there; with `intent` (name, content), leave it on the host once the
/// fence let the change through.
pub async fn advance(
    session: &Session,
    token: FenceToken,
    intent: Option<(&str, &str)>,
) -> Result<(), Fenced> {
    let (epoch, rev) = (token.epoch.to_string(), token.revision.to_string());
    let (name, content) = intent.unwrap_or(("", ""));
    if !name.is_empty() && !valid_name(name) {
        return Err(Fenced::Failed(format!("`{name}` is not an intent's name")));
    }
    let out = session
        .run_input(
            "sh",
            &["-c", ADVANCE_SCRIPT, "sh", &epoch, &rev, name],
            content.as_bytes(),
        )
        .await
        .map_err(|e| Fenced::Failed(e.to_string()))?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(NEWER_KEPT) => Err(Fenced::Stale {
            kept: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }),
        _ => Err(Fenced::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}

/// The intent `name` a worker left on the host, if any.
pub async fn intent(session: &Session, name: &str) -> Result<Option<String>, String> {
    if !valid_name(name) {
        return Err(format!("`{name}` is not an intent's name"));
    }
    let out = session
        .run("sh", &["-c", INTENT_SCRIPT, "sh", name])
        .await
        .map_err(|e| format!("cannot read the intent {name}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_once('\n') {
        Some(("present", rest)) => Ok(Some(rest.to_string())),
        _ if text.trim() == "absent" => Ok(None),
        _ => Err(format!(
            "cannot read the intent {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_names_are_drover_s_own() {
        assert!(valid_name("d0b8-aa.3"));
        assert!(valid_name(&crate::model::cluster::intent_name("a.b/c*", 2)));
        for bad in ["", ".x", "a/b", "a b", "a;b", "$(x)"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
