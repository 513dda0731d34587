//! Reading a unit's journal on a host: `journalctl`, one fixed program,
//! with the arguments of a validated [`LogQuery`], each passed as an
//! argument of its own, and bounded three ways: lines (the query's),
//! bytes (stdout is read up to [`Bounds::bytes`], newest entries first,
//! and then the program is let go of) and time (`timeout` on the host,
//! and a deadline here).
//!
//! Over ssh the program runs on the host; for `transport: local` it runs
//! here, but only once the host's bus is known to be this machine's: a
//! `bus:` address may lead to another machine's systemd, whose journal
//! is not on this one.

use std::time::Duration;

use crate::model::logs::{parse_journal, LogEntry, LogQuery};
use crate::model::unit::UnitName;
use crate::remote::carrier::Session;
use crate::remote::systemd::StateRead;

/// How much one read may take from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most bytes of journalctl's output read.
    pub bytes: usize,
    /// Most time journalctl may take (killed on the host past it).
    pub time: Duration,
    /// Ask journald first to take in everything logged so far
    /// (`journalctl --sync`, as root): lines a unit wrote just before
    /// failing may still be on their way to the journal.
    pub sync: bool,
}

impl Bounds {
    /// `drover logs` and the log route: 4 MiB, 30 s.
    pub const READ: Bounds = Bounds {
        bytes: 4 << 20,
        time: Duration::from_secs(30),
        sync: false,
    };

    /// The lines attached to a failed result: 64 KiB, 10 s, after a sync.
    pub const FAILURE: Bounds = Bounds {
        bytes: 64 << 10,
        time: Duration::from_secs(10),
        sync: true,
    };
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitLog {
    /// Oldest first; the newest ones when the read was cut.
    pub entries: Vec<LogEntry>,
    /// The byte or time bound cut the read: older entries than the first
    /// here exist within the line count.
    pub truncated: bool,
    /// False when no entry was found and systemd does not know the unit.
    pub unit_found: bool,
}

/// The fixed command the query's arguments are given to. `$1` is the time
/// bound in seconds and `$2` `sync` or `-` (values drover computes); the
/// rest are journalctl's arguments, as separate words. No user text is
/// part of the script.
const RUNNER: &str = r#"t=$1 s=$2
shift 2
if [ "$s" = sync ]; then timeout 5 journalctl --sync >/dev/null 2>&1; fi
exec timeout --kill-after=2 "$t" journalctl "$@""#;

/// How long past its own bound the host's `timeout` is given before the
/// read is abandoned here.
const GRACE: Duration = Duration::from_secs(5);

/// Read `q` from the session's host within `b`: journalctl and the D-Bus
/// calls beside it (a wedged bus must not hold the read either). The
/// error is the host's (for its result), never a panic.
pub async fn read(session: &Session, q: &LogQuery, b: &Bounds) -> Result<UnitLog, String> {
    tokio::time::timeout(b.time + GRACE, read_unbounded(session, q, b))
        .await
        .map_err(|_| format!("journalctl did not answer within {}", secs_text(b.time)))?
}

async fn read_unbounded(session: &Session, q: &LogQuery, b: &Bounds) -> Result<UnitLog, String> {
    if session.is_local() {
        same_machine(session).await?;
    }
    let secs = b.time.as_secs().max(1).to_string();
    let args = q.journalctl_args();
    let mut argv: Vec<&str> = vec![
        "-c",
        RUNNER,
        "drover-logs",
        &secs,
        if b.sync { "sync" } else { "-" },
    ];
    argv.extend(args.iter().map(String::as_str));
    let ran = session
        .run_capped("sh", &argv, b.bytes)
        .await
        .map_err(|e| e.to_string())?;
    // 124: the host's `timeout` stopped it; what it printed stands, cut.
    let timed_out = ran.code == Some(124);
    if !ran.cut && !timed_out {
        match ran.code {
            Some(0) => {}
            Some(127) => return Err("journalctl is not installed on the host".into()),
            Some(c) => {
                return Err(format!(
                    "journalctl failed (exit {c}): {}",
                    first_words(&ran.stderr)
                ))
            }
            None => return Err("journalctl was killed".into()),
        }
    }
    let parsed = parse_journal(&ran.stdout, ran.cut || timed_out, &q.unit);
    if timed_out && parsed.entries.is_empty() {
        return Err(format!(
            "journalctl did not finish within {}",
            secs_text(b.time)
        ));
    }
    if parsed.skipped > 0 {
        tracing::debug!(host = %session.host(), skipped = parsed.skipped, "journal lines that were not JSON objects");
    }
    let unit_found = if parsed.entries.is_empty() {
        known(session, &q.unit).await?
    } else {
        true
    };
    Ok(UnitLog {
        entries: parsed.entries,
        truncated: ran.cut || timed_out,
        unit_found,
    })
}

/// Whether systemd knows the unit (loaded, or a unit file for it).
async fn known(session: &Session, unit: &UnitName) -> Result<bool, String> {
    let facts = session
        .systemd()
        .unit_state(unit, StateRead::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(facts.load_state != "not-found")
}

/// A local host's journal is this machine's only if its bus is.
async fn same_machine(session: &Session) -> Result<(), String> {
    let theirs = session
        .systemd()
        .machine_id()
        .await
        .map_err(|e| e.to_string())?;
    let ours = tokio::fs::read_to_string("/etc/machine-id")
        .await
        .map_err(|e| format!("cannot read /etc/machine-id: {e}"))?;
    if theirs.trim() == ours.trim() {
        return Ok(());
    }
    Err(format!(
        "its bus leads to machine {}, not to this one ({}): that journal is not on this machine; reach the host over ssh to read its logs",
        theirs.trim(),
        ours.trim()
    ))
}

fn secs_text(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// The start of a program's complaint, on one line.
fn first_words(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.trim().lines().next().unwrap_or("(no message)");
    line.chars().take(300).collect()
}
