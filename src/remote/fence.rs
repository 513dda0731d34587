//! The fence a host keeps for cluster mode: the newest lease revision any
//! worker changed it under, in `/var/lib/drover/fence`. A worker writes
//! the revision its lease was taken at there before each change, by
//! compare-and-set on the host (a constant script, kept running for the
//! session, under the same kind of lock as the maintenance file): a
//! revision older than the one kept is refused, so a
//! worker whose lease was taken over while it was stopped or cut off
//! changes nothing, whatever its own clock believes. Lease revisions come
//! from one JetStream stream and only grow, so a newer owner's is larger.
//! A lease bucket made again (a new NATS deployment) starts its revisions
//! over: each token therefore leads with the bucket's epoch (its stream's
//! creation time), and a newer bucket's tokens win over an older one's.

use crate::remote::carrier::Session;

/// Where the fence is kept on a host.
pub const FENCE_FILE: &str = "/var/lib/drover/fence";

/// The fence's keeper: a shell kept running on the host for the
/// session's life (see [`crate::remote::carrier::Resident`]), one request
/// per line on its stdin, `E R NAME SWEEP =VALUE`, all made by drover and
/// checked before they are sent (digits; an intent's name or `-`;
/// `sweep` or `-`; letters and digits after `=`), and read as data, never
/// as code. For each request it keeps `E R` (epoch and revision) unless
/// the kept pair is newer, then answers `@ 77 E R` with the kept pair. A
/// file that does not hold two numbers is an error (`@ 3 why`), never "no
/// fence". With a NAME it keeps VALUE as that intent, under the same
/// lock: what the worker is about to do, for an owner after it to read;
/// with `sweep`, intents a day old go first. `@ 0`: the change may go.
///
/// It runs before every change a worker makes, so a request starts as few
/// processes as it can: `flock`, and one `mv` per file it replaces (the
/// lock makes fixed temporary names safe; the rename keeps a reader from
/// ever seeing half a file, and the fence file only changes when a host
/// changes owner).
const KEEPER_SCRIPT: &str = "umask 022; exec 2>&1; d=/var/lib/drover; f=$d/fence; i=$d/intent; \
advance() { \
flock -w 10 9 || { echo \"@ 3 $d/.fence.lock stayed locked for 10 s\"; return; }; \
e=0; r=0; \
if [ -f \"$f\" ]; then read -r e r < \"$f\" || true; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"@ 3 $f is not a regular file\"; return; fi; \
for n in \"$e\" \"$r\"; do case \"$n\" in ''|*[!0-9]*) echo \"@ 3 $f does not hold an epoch and a revision\"; return;; esac; done; \
if [ \"$e\" -gt \"$1\" ] || { [ \"$e\" -eq \"$1\" ] && [ \"$r\" -gt \"$2\" ]; }; then echo \"@ 77 $e $r\"; return; fi; \
if [ \"$e $r\" != \"$1 $2\" ]; then \
{ printf '%s %s\\n' \"$1\" \"$2\" > \"$d/.fence.new\" && mv -f \"$d/.fence.new\" \"$f\"; } || { echo \"@ 3 cannot replace $f\"; return; }; fi; \
if [ \"$3\" != - ]; then \
if [ \"$4\" = sweep ]; then find \"$i\" -type f -mmin +1440 -delete 2>/dev/null || true; fi; \
{ printf '%s\\n' \"${5#=}\" > \"$i/.intent.new\" && mv -f \"$i/.intent.new\" \"$i/$3\"; } || { echo \"@ 3 cannot write the intent $3\"; return; }; fi; \
echo '@ 0'; }; \
while read -r a b c s v; do \
if [ -d \"$i\" ] || mkdir -p \"$i\"; then advance \"$a\" \"$b\" \"$c\" \"$s\" \"$v\" 9>\"$d/.fence.lock\"; \
else echo \"@ 3 cannot make $i\"; fi; done";

/// How long one request to the keeper may take: its lock wait (10 s) and
/// then some.
const KEEPER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

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

/// Whether writing the intent `name` also sweeps the day-old ones: about
/// one write in sixteen, decided by the name (a job id is random), so
/// the directory stays small without a `find` before every change.
fn sweeps(name: &str) -> bool {
    valid_name(name)
        && name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 16
            == 0
}

/// What a worker raises a host's fence to: its lease bucket's epoch and
/// the revision its lease was taken at, compared in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FenceToken {
    /// The lease bucket's creation time (seconds since the Unix epoch).
    pub epoch: u64,
    /// The revision the lease was taken at in that bucket.
    pub revision: u64,
}

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
/// there; with `intent` (name, content: letters and digits, e.g. an
/// InvocationID), leave it on the host once the fence let the change
/// through. The session's keeper answers; one that went (its channel
/// closed, the host rebooted) is started again, once.
pub async fn advance(
    session: &Session,
    token: FenceToken,
    intent: Option<(&str, &str)>,
) -> Result<(), Fenced> {
    let (name, content) = intent.unwrap_or(("-", ""));
    if name != "-" && !valid_name(name) {
        return Err(Fenced::Failed(format!("`{name}` is not an intent's name")));
    }
    if !content.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Fenced::Failed(
            "an intent is letters and digits only".into(),
        ));
    }
    let sweep = if sweeps(name) { "sweep" } else { "-" };
    let line = format!(
        "{} {} {name} {sweep} ={content}",
        token.epoch, token.revision
    );
    let mut slot = session.resident().lock().await;
    let mut tries = 0;
    let (said, answer) = loop {
        tries += 1;
        let keeper = match slot.as_mut() {
            Some(k) => k,
            None => slot.insert(
                session
                    .start_resident("sh", &["-c", KEEPER_SCRIPT, "drover-fence"])
                    .await
                    .map_err(|e| Fenced::Failed(e.to_string()))?,
            ),
        };
        // Asking again is safe: the same token and intent written twice
        // leave the host as once.
        match tokio::time::timeout(KEEPER_WAIT, keeper.ask(&line, "@ ")).await {
            Ok(Ok(a)) => break a,
            Ok(Err(e)) if tries < 2 && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                *slot = None;
            }
            Ok(Err(e)) => {
                *slot = None;
                return Err(Fenced::Failed(e.to_string()));
            }
            Err(_) => {
                *slot = None;
                return Err(Fenced::Failed(format!(
                    "the host did not answer within {}",
                    humantime::format_duration(KEEPER_WAIT)
                )));
            }
        }
    };
    drop(slot);
    let (code, rest) = answer.split_once(' ').unwrap_or((answer.as_str(), ""));
    match code {
        "0" => Ok(()),
        "77" => Err(Fenced::Stale {
            kept: rest.trim().to_string(),
        }),
        _ => {
            // What the host said besides its answer, then the answer's
            // own reason.
            let why: Vec<&str> = said
                .iter()
                .map(String::as_str)
                .chain(Some(rest))
                .filter(|w| !w.is_empty())
                .collect();
            Err(Fenced::Failed(why.join("; ")))
        }
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
