//! The job report: the per-host result format of DESIGN.md, and the one
//! mapping from a job's end (a report, or an error before it) to an exit
//! code and an HTTP status.

use serde::{Deserialize, Serialize};

use crate::model::error::{Class, Error};
use crate::model::outcome::{Kind, Outcome, Status};
use crate::model::secret::Secrets;

/// One result: the fields `hostname`, `status`, `name`, `changed` and
/// `error` mean exactly what DESIGN.md says; the rest is extra detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    /// Inventory name of the host.
    pub hostname: String,
    /// ok, failed or skipped.
    pub status: Status,
    /// The unit.
    pub name: String,
    /// Whether systemd state really changed.
    pub changed: bool,
    /// Why not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure or skip, for programs (`error` is for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// The step id.
    pub step: String,
    /// Operations performed, `+`-joined (`none` when nothing was needed).
    pub action: String,
    /// Wall time on this host for this step.
    pub duration_ms: u64,
    /// What a script module said (`msg`), when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The earlier job this result was carried over from, unchanged (a
    /// retry keeps what already ended `ok`); absent when this run did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<String>,
    /// When a service step failed: the unit's last journal lines, oldest
    /// first (`--failure-logs N`), secret values replaced by markers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<crate::model::logs::LogEntry>,
}

impl JobResult {
    /// Whether a retry runs this again: it failed (unreachable included),
    /// or it was skipped because of an earlier failure, an abort or a
    /// stop. A skip by `when` or maintenance stays out.
    pub fn needs_retry(&self) -> bool {
        match self.status {
            Status::Ok => false,
            Status::Failed => true,
            Status::Skipped => matches!(
                self.kind,
                Some(Kind::FailedEarlier | Kind::Aborted | Kind::Interrupted)
            ),
        }
    }

    /// The result of `outcome` for one host in one step. Its `error` may
    /// quote rendered values (a `wait.http` URL, a maintenance reason,
    /// what systemd echoed back), so secret values in it become their markers
    /// here, before the result reaches a journal, an event or a report.
    pub fn new(
        hostname: &str,
        step: &str,
        unit: &str,
        outcome: &Outcome,
        secrets: &Secrets,
    ) -> Self {
        JobResult {
            hostname: hostname.to_string(),
            status: outcome.status(),
            name: unit.to_string(),
            changed: outcome.changed(),
            error: outcome.error().map(|e| secrets.redact_string(e)),
            kind: outcome.kind(),
            step: step.to_string(),
            action: "none".into(),
            duration_ms: 0,
            msg: None,
            carried_from: None,
            logs: Vec::new(),
        }
    }
}

/// How one host ended in a job, over all its results: `Failed` when one
/// needs a retry (it failed, or was skipped because of a failure, an abort
/// or a stop), else `Ok` when one ended ok, else `Skipped` (every result
/// skipped by `when`, maintenance, ...). The rule a retry reruns by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEnd {
    /// Every result ok (or skipped for a reason of its own).
    Ok,
    /// Some result needs a retry.
    Failed,
    /// Every result skipped for a reason of its own.
    Skipped,
}

impl HostEnd {
    /// How a host with these results ended.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a JobResult>) -> Self {
        let mut ok = false;
        for r in results {
            if r.needs_retry() {
                return HostEnd::Failed;
            }
            ok |= r.status == Status::Ok;
        }
        if ok {
            HostEnd::Ok
        } else {
            HostEnd::Skipped
        }
    }
}

/// How many hosts of a job ended each way ([`HostEnd`]), each counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTally {
    /// Hosts that ended ok.
    pub ok: usize,
    /// Hosts a retry would run again.
    pub failed: usize,
    /// Hosts every result of which was skipped for a reason of its own.
    pub skipped: usize,
}

impl HostTally {
    /// The tally of a job's results.
    pub fn of(results: &[JobResult]) -> Self {
        let mut hosts: Vec<&str> = results.iter().map(|r| r.hostname.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let mut t = HostTally::default();
        for h in hosts {
            match HostEnd::of(results.iter().filter(|r| r.hostname == h)) {
                HostEnd::Ok => t.ok += 1,
                HostEnd::Failed => t.failed += 1,
                HostEnd::Skipped => t.skipped += 1,
            }
        }
        t
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Every step ran (hosts may have failed).
    Completed,
    /// `max_fail_percentage` was exceeded; the rest was skipped.
    Aborted,
    /// A signal or a cancel stopped it, or the playbook's window closed
    /// before its last batch; the rest was skipped.
    Interrupted,
    /// drover itself failed mid-run (a bug: the server logs the panic);
    /// the results are those recorded before it.
    Failed,
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Aborted => "aborted",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Failed => "failed",
        })
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobReport {
    /// UUID v4 of this run.
    pub job_id: String,
    /// The playbook's name (or the ad-hoc command).
    pub playbook: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// completed, aborted (max_fail_percentage), interrupted (signal) or failed (a drover bug).
    pub outcome: RunOutcome,
    /// Every step × host, in execution order.
    pub results: Vec<JobResult>,
    /// Digests of what ran: a retry refuses when they changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    /// The job this one retried (`--retry`, `POST /job/{id}/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
}

/// Digests (hex SHA-256) of a run's inputs, so that a retry or a resume
/// can tell that the playbook, the inventory or the parameters changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inputs {
    /// The playbook file.
    pub playbook: String,
    /// The inventory.
    pub inventory: String,
    /// The parameters' values, secret ones left out.
    pub params: String,
}

impl JobReport {
    /// Counts for the summary line: (ok changed, ok unchanged, skipped, failed).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for r in &self.results {
            match (r.status, r.changed) {
                (Status::Ok, true) => c.0 += 1,
                (Status::Ok, false) => c.1 += 1,
                (Status::Skipped, _) => c.2 += 1,
                (Status::Failed, _) => c.3 += 1,
            }
        }
        c
    }
}

/// How a job (or a read over hosts) ended, for whoever asked: the process
/// exit code of DESIGN.md, or the HTTP status of the server. Every command
/// and route decides through this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every result ok (or skipped by a `when`, maintenance, ...).
    Ok,
    /// A plan with `--detailed-exitcode` has changes pending.
    ChangesPending,
    /// Some host failed a step.
    HostFailed,
    /// Refused: window, lock, protected unit, drift; or interrupted.
    Refused,
    /// Some host was unreachable and none failed otherwise.
    Unreachable,
    /// Invalid input; nothing was changed.
    Invalid,
    /// drover or its environment failed.
    Internal,
}

impl Verdict {
    /// The process exit code (DESIGN.md, "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::ChangesPending | Verdict::HostFailed => 2,
            Verdict::Refused => 3,
            Verdict::Unreachable => 4,
            Verdict::Invalid | Verdict::Internal => 1,
        }
    }

    /// The HTTP status: a host's failure is a result, not an HTTP error.
    pub fn http_status(self) -> u16 {
        match self {
            Verdict::Ok | Verdict::ChangesPending | Verdict::HostFailed | Verdict::Unreachable => {
                200
            }
            Verdict::Refused => 403,
            Verdict::Invalid => 400,
            Verdict::Internal => 500,
        }
    }

    /// The verdict of an error that stopped a command before or outside
    /// per-host work.
    pub fn of_error(e: &Error) -> Self {
        match e.class() {
            Class::Invalid => Verdict::Invalid,
            Class::Refused => Verdict::Refused,
            Class::Internal => Verdict::Internal,
        }
    }

    /// The verdict of per-host outcomes: a failure beats an interrupted
    /// run, which beats unreachable hosts.
    pub fn of_kinds(kinds: impl IntoIterator<Item = Option<Kind>>, interrupted: bool) -> Self {
        let (mut failed, mut refused, mut unreachable) = (false, false, false);
        for k in kinds.into_iter().flatten() {
            match k {
                k if k.is_unreachable() => unreachable = true,
                Kind::Refused => refused = true,
                Kind::JobFailed
                | Kind::UnitMissing
                | Kind::UnitMasked
                | Kind::Timeout
                | Kind::Error => failed = true,
                _ => {}
            }
        }
        if failed {
            Verdict::HostFailed
        } else if interrupted || refused {
            Verdict::Refused
        } else if unreachable {
            Verdict::Unreachable
        } else {
            Verdict::Ok
        }
    }

    /// The verdict of a run's report.
    pub fn of_report(r: &JobReport) -> Self {
        Self::of_kinds(
            r.results
                .iter()
                .filter(|r| r.status == Status::Failed)
                .map(|r| r.kind.or(Some(Kind::Error))),
            r.outcome == RunOutcome::Interrupted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::Refusal;
    use crate::model::outcome::Failure;

    #[test]
    fn an_errors_code_is_its_verdicts_status() {
        for e in [
            Error::Refused(Refusal::Drift("web-1".into())),
            Error::Usage("no playbook".into()),
            Error::Internal("bug".into()),
        ] {
            assert_eq!(e.code(), Verdict::of_error(&e).http_status(), "{e:?}");
        }
    }

    fn report(outcomes: &[Outcome], run: RunOutcome) -> JobReport {
        JobReport {
            job_id: "j".into(),
            playbook: "p".into(),
            started_at: String::new(),
            finished_at: String::new(),
            outcome: run,
            results: outcomes
                .iter()
                .map(|o| JobResult::new("h", "s", "u.service", o, &Secrets::new()))
                .collect(),
            inputs: None,
            retry_of: None,
        }
    }

    #[test]
    fn each_host_is_tallied_once_by_its_worst_result() {
        let ok = Outcome::Ok { changed: true };
        let failed = Outcome::failed(Failure::JobFailed("job failed".into()));
        let maint = Outcome::Skipped(crate::model::outcome::SkipReason::Maintenance("m".into()));
        let r = |h: &str, o: &Outcome| JobResult::new(h, "s", "u.service", o, &Secrets::new());
        let results = [
            r("a", &ok),
            r("a", &failed),
            r("b", &ok),
            r("b", &maint),
            r("c", &maint),
        ];
        assert_eq!(
            HostTally::of(&results),
            HostTally {
                ok: 1,
                failed: 1,
                skipped: 1
            }
        );
        assert_eq!(HostEnd::of(&results[..2]), HostEnd::Failed);
        assert_eq!(HostEnd::of(&results[4..]), HostEnd::Skipped);
        assert_eq!(HostTally::of(&[]), HostTally::default());
    }

    #[test]
    fn exit_codes_follow_design() {
        let ok = Outcome::Ok { changed: true };
        let lost = Outcome::failed(Failure::ConnectionLost {
            step: "s".into(),
            detail: "x".into(),
        });
        let job = Outcome::failed(Failure::JobFailed("job failed".into()));
        let code = |o: &[Outcome], r| Verdict::of_report(&report(o, r)).exit_code();
        assert_eq!(code(std::slice::from_ref(&ok), RunOutcome::Completed), 0);
        assert_eq!(code(&[ok.clone(), lost.clone()], RunOutcome::Completed), 4);
        assert_eq!(code(&[lost.clone(), job.clone()], RunOutcome::Completed), 2);
        assert_eq!(code(std::slice::from_ref(&ok), RunOutcome::Interrupted), 3);
        assert_eq!(code(&[job], RunOutcome::Interrupted), 2);
        assert_eq!(
            code(
                &[Outcome::failed(Failure::Refused("p".into()))],
                RunOutcome::Completed
            ),
            3
        );
        let e = Error::Refused(Refusal::Drift("web-1".into()));
        assert_eq!(Verdict::of_error(&e).exit_code(), 3);
        assert_eq!(Verdict::of_error(&e).http_status(), 403);
        assert_eq!(Verdict::HostFailed.http_status(), 200);
    }

    /// What the executor records for a host (journal line, event, report)
    /// never quotes a secret value, whatever text the failure carries.
    #[test]
    fn result_errors_hide_secret_values() {
        let mut secrets = Secrets::new();
        secrets.insert("token", "tok-9f2c1e").unwrap();
        let marker = crate::model::secret::marker("token", "tok-9f2c1e");
        let outcomes = [
            // The words of the executor's wait gate, quoting the URL.
            Outcome::failed(Failure::Error(
                "wait: http http://web-1:8080/ready?token=tok-9f2c1e did not pass within 1m: HTTP status 500".into(),
            )),
            // systemd echoing a rendered value back.
            Outcome::failed(Failure::JobFailed(
                "unit demo.service entered failed state (Environment=TOKEN=tok-9f2c1e)".into(),
            )),
            Outcome::failed(Failure::Unreachable("tok-9f2c1e".into())),
            Outcome::Skipped(crate::model::outcome::SkipReason::Maintenance(
                "rotating tok-9f2c1e".into(),
            )),
        ];
        for o in &outcomes {
            let r = JobResult::new("web-1", "deploy", "demo.service", o, &secrets);
            let error = r.error.as_deref().unwrap_or_default();
            assert!(error.contains(&marker), "{error}");
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains("tok-9f2c1e"), "{line}");
            // Only the text changes: status and kind still say what happened.
            let plain = JobResult::new("web-1", "deploy", "demo.service", o, &Secrets::new());
            assert_eq!((r.status, r.kind), (plain.status, plain.kind));
            assert!(plain.error.unwrap().contains("tok-9f2c1e"));
        }
    }
}
