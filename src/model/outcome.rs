//! Per-host outcomes as types: what happened to one host in one step, why
//! a host failed or was skipped. The report's `status` and `error` strings
//! are rendered from these, and exit codes (and HTTP statuses) are decided
//! from them, never from the text.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A result's status, exactly as the job report spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Done (or nothing to do).
    Ok,
    /// The operation failed or the host was unreachable.
    Failed,
    /// Not attempted; `error` says why.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        })
    }
}

/// Why a host failed a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The host could not be reached at all (connect failed).
    Unreachable(String),
    /// The connection broke while the step was working on the host.
    ConnectionLost {
        /// The step it broke in.
        step: String,
        /// What the transport said.
        detail: String,
    },
    /// A systemd job ended with a result other than `done`; the text has
    /// systemd's result, the unit's state and its `Result=`.
    JobFailed(String),
    /// The unit does not exist on the host.
    UnitMissing(String),
    /// The unit is masked on the host.
    UnitMasked(String),
    /// The step's time bound passed.
    Timeout(Duration),
    /// drover refused to act on this host (a protected unit).
    Refused(String),
    /// Anything else the host answered (a read that failed, a script's
    /// error, a gate that did not pass).
    Error(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(d) => write!(f, "unreachable: {d}"),
            Failure::ConnectionLost { step, detail } => {
                write!(
                    f,
                    "unreachable: connection lost during step {step} ({detail})"
                )
            }
            Failure::JobFailed(d) | Failure::Error(d) => f.write_str(d),
            Failure::UnitMissing(u) => write!(f, "unit {u} not found"),
            Failure::UnitMasked(u) => {
                write!(f, "unit {u} is masked; add `masked: false` to unmask it")
            }
            Failure::Timeout(after) => write!(
                f,
                "timed out after {} (a systemd job may still be running on the host)",
                humantime::format_duration(*after)
            ),
            Failure::Refused(m) => write!(f, "refused: {m}"),
        }
    }
}

impl Failure {
    /// Whether the unit's own journal may say why: its job failed, or a
    /// check on it (`wait`) did not pass. Not when the host or the
    /// connection was the reason, the unit is missing or masked, drover
    /// refused, or the step's own time bound ran out (the host may be
    /// wedged, and the bound is a promise a read after it would break).
    pub fn unit_may_explain(&self) -> bool {
        matches!(self, Failure::JobFailed(_) | Failure::Error(_))
    }

    /// The kind, as the report records it beside the text.
    pub fn kind(&self) -> Kind {
        match self {
            Failure::Unreachable(_) => Kind::Unreachable,
            Failure::ConnectionLost { .. } => Kind::ConnectionLost,
            Failure::JobFailed(_) => Kind::JobFailed,
            Failure::UnitMissing(_) => Kind::UnitMissing,
            Failure::UnitMasked(_) => Kind::UnitMasked,
            Failure::Timeout(_) => Kind::Timeout,
            Failure::Refused(_) => Kind::Refused,
            Failure::Error(_) => Kind::Error,
        }
    }
}

/// Why a host did not run a step. The wording is the report's `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The step's `when:` is false for the host.
    WhenFalse,
    /// The host failed an earlier step.
    FailedAt(String),
    /// `max_fail_percentage` was exceeded in a step; nothing more starts.
    Aborted(String),
    /// A signal (or a cancel) stopped the run before this started.
    Interrupted(String),
    /// The playbook's window (described) closed before this batch
    /// started: nothing new starts after it.
    WindowClosed(String),
    /// The host, or the unit on it, is in maintenance.
    Maintenance(String),
    /// An `on_failure` step of a module call, and the host failed none of
    /// the call's steps.
    NoFailure(String),
    /// A retry (of the job named) leaves the host alone: it ended `ok`
    /// there, or was never part of that job's step.
    NotRetried(String),
    /// An `always` step of a module call, and the host never began the
    /// call: there is nothing to clean up.
    NotBegun(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::WhenFalse => f.write_str("skipped: `when` condition is false"),
            SkipReason::FailedAt(s) => write!(f, "skipped: failed at step {s}"),
            SkipReason::Aborted(s) => write!(f, "skipped: run aborted at step {s}"),
            SkipReason::Interrupted(why) => write!(f, "skipped: run interrupted by {why}"),
            SkipReason::WindowClosed(w) => {
                write!(f, "skipped: the window ({w}) closed before this batch")
            }
            SkipReason::Maintenance(r) => write!(f, "skipped: in maintenance: {r}"),
            SkipReason::NotBegun(call) => {
                write!(f, "skipped: never began {call}; nothing to clean up")
            }
            SkipReason::NoFailure(call) => {
                write!(f, "skipped: runs only after a failure in {call}")
            }
            SkipReason::NotRetried(job) => {
                write!(
                    f,
                    "skipped: not retried (nothing to redo here from job {job})"
                )
            }
        }
    }
}

impl SkipReason {
    /// The kind, as the report records it beside the text.
    pub fn kind(&self) -> Kind {
        match self {
            SkipReason::WhenFalse
            | SkipReason::NoFailure(_)
            | SkipReason::NotRetried(_)
            | SkipReason::NotBegun(_) => Kind::When,
            SkipReason::FailedAt(_) => Kind::FailedEarlier,
            SkipReason::Aborted(_) => Kind::Aborted,
            // The run stops like an interrupted one, and reports so.
            SkipReason::Interrupted(_) | SkipReason::WindowClosed(_) => Kind::Interrupted,
            SkipReason::Maintenance(_) => Kind::Maintenance,
        }
    }
}

/// What happened to one host in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done; `changed` when systemd's state really changed.
    Ok {
        /// Whether anything changed.
        changed: bool,
    },
    /// Failed; `changed` when something changed before it failed.
    Failed {
        /// Why.
        failure: Failure,
        /// Whether anything changed before the failure.
        changed: bool,
    },
    /// Not attempted.
    Skipped(SkipReason),
}

impl Outcome {
    /// The report's status word.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Ok { .. } => Status::Ok,
            Outcome::Failed { .. } => Status::Failed,
            Outcome::Skipped(_) => Status::Skipped,
        }
    }

    /// The report's `changed`.
    pub fn changed(&self) -> bool {
        match self {
            Outcome::Ok { changed } | Outcome::Failed { changed, .. } => *changed,
            Outcome::Skipped(_) => false,
        }
    }

    /// The report's `error` text (None when ok).
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { failure, .. } => Some(failure.to_string()),
            Outcome::Skipped(why) => Some(why.to_string()),
        }
    }

    /// The kind of failure or skip (None when ok).
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { failure, .. } => Some(failure.kind()),
            Outcome::Skipped(why) => Some(why.kind()),
        }
    }

    /// A failure with nothing changed.
    pub fn failed(failure: Failure) -> Self {
        Outcome::Failed {
            failure,
            changed: false,
        }
    }
}

/// The kind of a failure or skip, recorded in reports and journals beside
/// the human text (`"kind": "unreachable"`) so that programs, exit codes
/// and HTTP statuses never parse the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Could not connect.
    Unreachable,
    /// Connection lost during the step (counted as unreachable).
    ConnectionLost,
    /// A systemd job failed.
    JobFailed,
    /// The unit does not exist.
    UnitMissing,
    /// The unit is masked.
    UnitMasked,
    /// The step's time bound passed.
    Timeout,
    /// Refused (protected unit).
    Refused,
    /// Another error on the host.
    Error,
    /// Skipped: `when:` false.
    When,
    /// Skipped: failed an earlier step.
    FailedEarlier,
    /// Skipped: the run was aborted (max_fail_percentage).
    Aborted,
    /// Skipped: the run was interrupted (signal, cancel, the window's
    /// close).
    Interrupted,
    /// Skipped: in maintenance.
    Maintenance,
}

impl Kind {
    /// Whether this failure means the host could not be reached (exit 4
    /// rather than 2).
    pub fn is_unreachable(self) -> bool {
        matches!(self, Kind::Unreachable | Kind::ConnectionLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_unit_itself_read_its_journal() {
        assert!(Failure::JobFailed("job failed".into()).unit_may_explain());
        assert!(Failure::Error("wait: did not pass".into()).unit_may_explain());
        for f in [
            Failure::Unreachable("x".into()),
            Failure::ConnectionLost {
                step: "s".into(),
                detail: "x".into(),
            },
            Failure::UnitMissing("u".into()),
            Failure::UnitMasked("u".into()),
            Failure::Timeout(Duration::from_secs(1)),
            Failure::Refused("p".into()),
        ] {
            assert!(!f.unit_may_explain(), "{f:?}");
        }
    }

    #[test]
    fn wording_is_the_reports() {
        let lost = Failure::ConnectionLost {
            step: "roll".into(),
            detail: "I/O error".into(),
        };
        assert_eq!(
            lost.to_string(),
            "unreachable: connection lost during step roll (I/O error)"
        );
        assert!(lost.kind().is_unreachable());
        assert_eq!(
            SkipReason::FailedAt("a".into()).to_string(),
            "skipped: failed at step a"
        );
        let o = Outcome::Skipped(SkipReason::Maintenance("disk".into()));
        assert_eq!((o.status(), o.changed()), (Status::Skipped, false));
        assert_eq!(o.error().as_deref(), Some("skipped: in maintenance: disk"));
        let closed = Outcome::Skipped(SkipReason::WindowClosed("02:00-04:00 UTC".into()));
        assert_eq!(
            closed.error().as_deref(),
            Some("skipped: the window (02:00-04:00 UTC) closed before this batch")
        );
        assert_eq!(closed.kind(), Some(Kind::Interrupted));
        assert_eq!(
            serde_json::to_string(&Kind::ConnectionLost).unwrap(),
            "\"connection-lost\""
        );
    }
}
