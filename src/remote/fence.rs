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
/// "no fence".
const ADVANCE_SCRIPT: &str = "set -e; umask 022; mkdir -p /var/lib/drover; \
exec 9>/var/lib/drover/.fence.lock; flock -w 10 9; \
f=/var/lib/drover/fence; e=0; r=0; \
if [ -f \"$f\" ]; then read -r e r < \"$f\" || true; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f is not a regular file\" >&2; exit 3; fi; \
case \"$e$r\" in ''|*[!0-9]*) echo \"$f does not hold an epoch and a revision\" >&2; exit 3;; esac; \
if [ \"$e\" -gt \"$1\" ] || { [ \"$e\" -eq \"$1\" ] && [ \"$r\" -gt \"$2\" ]; }; then echo \"$e $r\"; exit 77; fi; \
[ \"$e $r\" = \"$1 $2\" ] && exit 0; \
t=$(mktemp /var/lib/drover/.fence.XXXXXX); trap 'rm -f \"$t\"' EXIT; \
printf '%s %s\\n' \"$1\" \"$2\" > \"$t\"; chmod 644 \"$t\"; mv -f \"$t\" \"$f\"; trap - EXIT";

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
/// there.
pub async fn advance(session: &Session, token: FenceToken) -> Result<(), Fenced> {
    let (epoch, rev) = (token.epoch.to_string(), token.revision.to_string());
    let out = session
        .run("sh", &["-c", ADVANCE_SCRIPT, "sh", &epoch, &rev])
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
