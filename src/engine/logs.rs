//! `drover logs` and the log route: one unit's journal on many hosts at
//! once, `forks` at a time, each host bounded (lines, bytes, time); a host
//! that cannot be reached or read is that host's error, and the others
//! are reported.

use serde::Serialize;

use crate::engine::live::{select_hosts, verdict};
use crate::model::error::Result;
use crate::model::inventory::{Host, Inventory};
use crate::model::logs::{LogEntry, LogQuery};
use crate::model::outcome::Status;
use crate::model::report::Verdict;
use crate::remote::fanout::{fan_out, HostError, HostResult, Reach};
use crate::remote::logs::{Bounds, UnitLog};

/// One host's entries, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostLogs {
    /// The host's inventory name.
    pub hostname: String,
    /// `ok`, or `failed` when the host could not be reached or read.
    pub status: Status,
    /// Oldest first.
    pub entries: Vec<LogEntry>,
    /// Why `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The host could not be reached (vs. a read that failed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
    /// The read stopped at its byte or time bound: older entries within
    /// the line count were left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// No entry, and systemd on the host does not know the unit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unit_unknown: bool,
}

impl HostLogs {
    fn of(r: HostResult<UnitLog>) -> Self {
        match r.result {
            Ok(log) => HostLogs {
                hostname: r.host,
                status: Status::Ok,
                entries: log.entries,
                error: None,
                unreachable: false,
                truncated: log.truncated,
                unit_unknown: !log.unit_found,
            },
            Err(e) => HostLogs {
                hostname: r.host,
                status: Status::Failed,
                entries: Vec::new(),
                unreachable: e.is_unreachable(),
                error: Some(e.to_string()),
                truncated: false,
                unit_unknown: false,
            },
        }
    }
}

/// What `drover logs` prints as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LogsReport {
    /// The unit read.
    pub unit: String,
    /// Per host, in inventory order.
    pub results: Vec<HostLogs>,
}

/// Read `q` on `hosts`, `reach.forks` at a time. With `any`, one host
/// answers: the first in `hosts` that could be read (else the first
/// failure), as `_any` picks. The verdict is that of the hosts answered
/// for: a failed read beats an unreachable host.
pub async fn read_logs(
    hosts: &[Host],
    q: &LogQuery,
    reach: Reach,
    any: bool,
) -> (Vec<HostLogs>, Verdict) {
    let results = fan_out(hosts, reach, |_, session| async move {
        crate::remote::logs::read(&session, q, &Bounds::READ)
            .await
            .map_err(HostError::Failed)
    })
    .await;
    let results = match any {
        true => first_answer(results, |r| r.result.is_ok()),
        false => results,
    };
    let v = verdict(&results);
    (results.into_iter().map(HostLogs::of).collect(), v)
}

/// What `_any` answers of the hosts' reads, in order: the first that
/// succeeded, else the first host's failure.
pub fn first_answer<T>(reads: Vec<T>, ok: impl Fn(&T) -> bool) -> Vec<T> {
    let first_ok = reads.iter().position(ok).unwrap_or(0);
    reads.into_iter().skip(first_ok).take(1).collect()
}

/// `drover logs UNIT --target SEL`: the selected hosts' entries, and the
/// verdict for the exit code.
pub async fn logs(
    inv: &Inventory,
    target: Option<&str>,
    q: &LogQuery,
    reach: Reach,
) -> Result<(LogsReport, Verdict)> {
    let hosts = select_hosts(inv, target)?;
    let (results, v) = read_logs(&hosts, q, reach, false).await;
    Ok((
        LogsReport {
            unit: q.unit.to_string(),
            results,
        },
        v,
    ))
}
