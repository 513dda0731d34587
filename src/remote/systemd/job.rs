//! Jobs (start, stop, restart, reload) and their completion: one
//! `JobRemoved` match per connection, routed to the caller waiting for
//! that job, believed only from systemd's own unique name.

use std::fmt;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

use crate::model::unit::UnitName;
use crate::remote::systemd::unit_object_path;
use crate::remote::systemd::ServiceProxy;
use crate::remote::systemd::Systemd;
use crate::remote::systemd::SystemdError;
use crate::remote::systemd::DEST;
use crate::remote::systemd::MANAGER_INTERFACE;
use crate::remote::systemd::MANAGER_PATH;

/// A job's result as systemd reports it in `JobRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEnd {
    /// The job completed successfully.
    Done,
    /// The job was canceled before it finished.
    Canceled,
    /// The job timed out.
    Timeout,
    /// The job failed (the unit entered a failed state).
    Failed,
    /// A job this one depended on failed.
    Dependency,
    /// The job was skipped (it did not apply to the unit's state).
    Skipped,
    /// A result this drover does not know (future systemd), verbatim.
    Other(String),
}

impl JobEnd {
    /// Parse systemd's result string.
    pub fn parse(s: &str) -> Self {
        match s {
            "done" => JobEnd::Done,
            "canceled" => JobEnd::Canceled,
            "timeout" => JobEnd::Timeout,
            "failed" => JobEnd::Failed,
            "dependency" => JobEnd::Dependency,
            "skipped" => JobEnd::Skipped,
            other => JobEnd::Other(other.to_string()),
        }
    }

    /// systemd's word for it.
    pub fn as_str(&self) -> &str {
        match self {
            JobEnd::Done => "done",
            JobEnd::Canceled => "canceled",
            JobEnd::Timeout => "timeout",
            JobEnd::Failed => "failed",
            JobEnd::Dependency => "dependency",
            JobEnd::Skipped => "skipped",
            JobEnd::Other(s) => s,
        }
    }

    /// Whether the job did what was asked (`done`; `skipped` only happens
    /// for jobs that had nothing to do, so it counts as success too).
    pub fn is_success(&self) -> bool {
        matches!(self, JobEnd::Done | JobEnd::Skipped)
    }
}

impl fmt::Display for JobEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job operation on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOp {
    /// StartUnit.
    Start,
    /// StopUnit.
    Stop,
    /// RestartUnit.
    Restart,
    /// ReloadUnit.
    Reload,
}

impl JobOp {
    /// The verb, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOp::Start => "start",
            JobOp::Stop => "stop",
            JobOp::Restart => "restart",
            JobOp::Reload => "reload",
        }
    }
}

/// How a job ended, with enough of the unit's state to explain a failure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobOutcome {
    /// The operation.
    pub op: JobOp,
    /// The unit.
    pub unit: String,
    /// The job's object path.
    pub job: String,
    /// The result from `JobRemoved`.
    pub result: JobEnd,
    /// On failure: the unit's ActiveState after the job.
    pub active_state: Option<String>,
    /// On failure: the service's `Result` (exit-code, signal, timeout, ...).
    pub unit_result: Option<String>,
    /// On failure: the service's STATUS= text, when it set one.
    pub status_text: Option<String>,
}

impl JobOutcome {
    /// Whether the job succeeded.
    pub fn ok(&self) -> bool {
        self.result.is_success()
    }

    /// A one-line explanation for a failed job, as the job report's `error`:
    /// "job failed: unit entered failed state (Result=exit-code)".
    pub fn error_message(&self) -> Option<String> {
        if self.ok() {
            return None;
        }
        let mut s = format!("job {}", self.result);
        match self.active_state.as_deref() {
            Some("failed") => s.push_str(": unit entered failed state"),
            Some(state) => s.push_str(&format!(": unit is {state}")),
            None => {}
        }
        if let Some(r) = self.unit_result.as_deref().filter(|r| *r != "success") {
            s.push_str(&format!(" (Result={r})"));
        }
        if let Some(t) = self.status_text.as_deref().filter(|t| !t.is_empty()) {
            s.push_str(&format!(": {t}"));
        }
        Some(s)
    }
}

/// How many finished jobs nobody has claimed yet are remembered. A caller
/// claims its job right after systemd's reply, so only a handful are ever
/// pending; the rest are other clients' jobs, forgotten oldest first.
const FINISHED_KEPT: usize = 256;

/// The jobs of one connection: ONE `JobRemoved` match for
/// the connection's life, and a task routing each signal to the caller
/// waiting for that job. A match per job would cost two extra round trips
/// (AddMatch, RemoveMatch) per operation, through ssh and the bus.
#[derive(Debug)]
pub(super) struct JobWatch {
    board: std::sync::Arc<std::sync::Mutex<JobBoard>>,
    task: tokio::task::AbortHandle,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        // The router holds the connection's signal stream; stop it with the
        // last clone of the client.
        self.task.abort();
    }
}

#[derive(Debug, Default)]
pub(super) struct JobBoard {
    /// Callers waiting, by job object path. Several callers can wait for
    /// one job: systemd merges a second identical request into the job
    /// already queued and returns its path.
    pub(super) waiting:
        std::collections::HashMap<String, Vec<tokio::sync::oneshot::Sender<String>>>,
    /// (job path, result, sender) of the last jobs that finished with
    /// nobody yet waiting: the signal may be routed before a caller has
    /// read systemd's reply. Entries stay (for any merged caller) until
    /// pushed out.
    pub(super) finished: std::collections::VecDeque<(String, String, String)>,
    /// systemd's unique name on this bus, from the sender of its first
    /// reply to us. A signal carries its sender's unique name, set by the
    /// bus and unforgeable; the match rule's well-known sender does not
    /// protect us, because any peer may send a signal addressed to our
    /// connection and zbus cannot check a well-known sender itself.
    pub(super) systemd: Option<String>,
    /// The signal stream ended: the connection is gone.
    pub(super) closed: bool,
}

impl JobBoard {
    /// Route one `JobRemoved` from `sender`: to the callers waiting for
    /// `job` and into the finished list, if it comes from systemd. Before
    /// systemd's name is known (the signal overtook its reply), it is kept
    /// with its sender and checked when the caller claims it.
    pub(super) fn route(&mut self, job: &str, result: String, sender: &str) {
        if self.systemd.as_deref().is_some_and(|s| s != sender) {
            tracing::warn!(
                sender,
                job,
                "ignored a JobRemoved signal not sent by systemd"
            );
            return;
        }
        if self.systemd.is_some() {
            for tx in self.waiting.remove(job).unwrap_or_default() {
                let _ = tx.send(result.clone());
            }
        }
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished
            .push_back((job.to_string(), result, sender.to_string()));
    }

    /// Learn systemd's name from a reply, and forget whatever was kept
    /// from anyone else.
    pub(super) fn learn(&mut self, systemd: &str) {
        if self.systemd.is_none() {
            self.systemd = Some(systemd.to_string());
            self.finished.retain(|(_, _, s)| s == systemd);
        }
    }

    /// The result of `job` if systemd's signal for it already came.
    pub(super) fn finished(&self, job: &str) -> Option<String> {
        let systemd = self.systemd.as_deref()?;
        self.finished
            .iter()
            .rev()
            .find(|(j, _, s)| j == job && s == systemd)
            .map(|(_, r, _)| r.clone())
    }
}

/// Removes a caller's registration when it stops waiting (done, or
/// cancelled by a timeout), so the board never keeps dead senders.
struct Waiter<'a> {
    board: &'a std::sync::Mutex<JobBoard>,
    job: &'a str,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.board.lock() {
            if let Some(senders) = b.waiting.get_mut(self.job) {
                senders.retain(|tx| !tx.is_closed());
                if senders.is_empty() {
                    b.waiting.remove(self.job);
                }
            }
        }
    }
}

impl Systemd {
    /// Run a job (start/stop/restart/reload) and wait for its `JobRemoved`.
    ///
    /// The signal stream is set up (the connection's match rule installed)
    /// before the job is queued, and matched on the job's object path, so
    /// the completion cannot be missed. A failed job also reads the unit's
    /// ActiveState, Result and StatusText to explain itself. Bound the wait
    /// with `tokio::time::timeout` if needed; systemd's own job timeouts
    /// (TimeoutStartSec, ...) end every job eventually.
    pub async fn run_job(&self, op: JobOp, unit: &UnitName) -> Result<JobOutcome, SystemdError> {
        let name = unit.as_str();
        let lost = || SystemdError::Lost {
            op: op.as_str(),
            unit: name.to_string(),
        };
        let watch = self.job_watch().await?;
        let what = format!("{}Unit {name}", capitalized(op));
        // The reply's own sender is systemd's unique name: the only sender
        // whose JobRemoved is believed.
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some(MANAGER_INTERFACE),
                format!("{}Unit", capitalized(op)).as_str(),
                &(name, "replace"),
            )
            .await
            .map_err(SystemdError::bus(what.clone()))?;
        let job: OwnedObjectPath = reply
            .body()
            .deserialize()
            .map_err(SystemdError::bus(what.clone()))?;
        let Some(systemd) = reply.header().sender().map(|s| s.to_string()) else {
            return Err(SystemdError::Bus {
                what,
                source: zbus::Error::Failure("systemd's reply names no sender".into()),
            });
        };
        let path = job.as_str();
        let rx = {
            let mut b = watch.board.lock().map_err(|_| lost())?;
            b.learn(&systemd);
            if let Some(r) = b.finished(path) {
                Ok(r)
            } else if b.closed {
                return Err(lost());
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                b.waiting.entry(path.to_string()).or_default().push(tx);
                Err(rx)
            }
        };
        let result = match rx {
            Ok(r) => r,
            Err(rx) => {
                let _waiter = Waiter {
                    board: &watch.board,
                    job: path,
                };
                // The router drops every sender when the stream ends.
                rx.await.map_err(|_| lost())?
            }
        };
        let result = JobEnd::parse(&result);
        let mut outcome = JobOutcome {
            op,
            unit: name.to_string(),
            job: job.to_string(),
            result,
            active_state: None,
            unit_result: None,
            status_text: None,
        };
        if !outcome.ok() {
            self.explain(&mut outcome).await;
        }
        Ok(outcome)
    }

    /// Start a unit; see [`Systemd::run_job`].
    pub async fn start(&self, unit: &UnitName) -> Result<JobOutcome, SystemdError> {
        self.run_job(JobOp::Start, unit).await
    }

    /// Stop a unit; see [`Systemd::run_job`].
    pub async fn stop(&self, unit: &UnitName) -> Result<JobOutcome, SystemdError> {
        self.run_job(JobOp::Stop, unit).await
    }

    /// Restart a unit; see [`Systemd::run_job`].
    pub async fn restart(&self, unit: &UnitName) -> Result<JobOutcome, SystemdError> {
        self.run_job(JobOp::Restart, unit).await
    }

    /// Reload a unit; see [`Systemd::run_job`].
    pub async fn reload(&self, unit: &UnitName) -> Result<JobOutcome, SystemdError> {
        self.run_job(JobOp::Reload, unit).await
    }
}

impl Systemd {
    /// The connection's job router, set up on first use: the match rule is
    /// installed before any job is queued, so no completion can be missed.
    ///
    /// No `Subscribe`: systemd sends a job's `JobRemoved` to the client that
    /// queued it anyway (the job tracks its sender). Subscribing would make
    /// systemd emit every unit's PropertiesChanged on the bus for as long as
    /// we are connected — the costliest traffic on the host, and none of it
    /// used here.
    async fn job_watch(&self) -> Result<&JobWatch, SystemdError> {
        self.jobs
            .get_or_try_init(|| async {
                // The bus filters on the well-known sender itself (only its
                // owner's signals arrive), so no GetNameOwner and owner
                // tracking, as a proxy's signal stream would add.
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .sender(DEST)
                    .and_then(|b| b.path(MANAGER_PATH))
                    .and_then(|b| b.interface(MANAGER_INTERFACE))
                    .and_then(|b| b.member("JobRemoved"))
                    .map(|b| b.build())
                    .map_err(SystemdError::bus("match JobRemoved"))?;
                let mut stream = zbus::MessageStream::for_match_rule(rule, &self.conn, None)
                    .await
                    .map_err(SystemdError::bus("match JobRemoved"))?;
                let board = std::sync::Arc::new(std::sync::Mutex::new(JobBoard::default()));
                let routed = board.clone();
                let task = tokio::spawn(async move {
                    while let Some(msg) = stream.next().await {
                        // A malformed signal is not ours to act on.
                        let Ok(msg) = msg else { continue };
                        let Ok((_id, job, _unit, result)) =
                            msg.body()
                                .deserialize::<(u32, OwnedObjectPath, String, String)>()
                        else {
                            continue;
                        };
                        let header = msg.header();
                        let Some(sender) = header.sender() else {
                            continue;
                        };
                        let Ok(mut b) = routed.lock() else { break };
                        b.route(job.as_str(), result, sender.as_str());
                    }
                    if let Ok(mut b) = routed.lock() {
                        b.closed = true;
                        b.waiting.clear();
                    }
                })
                .abort_handle();
                Ok(JobWatch { board, task })
            })
            .await
    }

    async fn explain(&self, outcome: &mut JobOutcome) {
        // Best effort: the explanation must never hide the failure itself.
        let path = unit_object_path(&outcome.unit);
        if let Ok(p) = self.unit_proxy(&outcome.unit).await {
            outcome.active_state = p.active_state().await.ok();
        }
        if outcome.unit.ends_with(".service") {
            let svc = async {
                ServiceProxy::builder(&self.conn)
                    .path(path)?
                    .cache_properties(CacheProperties::No)
                    .build()
                    .await
            };
            if let Ok(s) = svc.await {
                let (r, t) = futures_util::join!(s.result(), s.status_text());
                outcome.unit_result = r.ok();
                outcome.status_text = t.ok();
            }
        }
    }
}

fn capitalized(op: JobOp) -> &'static str {
    match op {
        JobOp::Start => "Start",
        JobOp::Stop => "Stop",
        JobOp::Restart => "Restart",
        JobOp::Reload => "Reload",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_results_are_believed_only_from_systemd() {
        let mut b = JobBoard::default();
        let job = "/org/freedesktop/systemd1/job/42";
        // A signal that overtook systemd's reply is kept with its sender...
        b.route(job, "done".into(), ":1.99");
        b.route(job, "failed".into(), ":1.2");
        // ...and only systemd's counts once its name is known.
        b.learn(":1.2");
        assert_eq!(b.finished(job).as_deref(), Some("failed"));
        // A waiting caller is not woken by a forged signal, nor is it kept.
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let next = "/org/freedesktop/systemd1/job/43";
        b.waiting.entry(next.to_string()).or_default().push(tx);
        b.route(next, "done".into(), ":1.99");
        assert!(rx.try_recv().is_err());
        assert_eq!(b.finished(next), None);
        assert!(b.finished.iter().all(|(_, _, s)| s == ":1.2"));
        b.route(next, "canceled".into(), ":1.2");
        assert_eq!(rx.try_recv().ok().as_deref(), Some("canceled"));
    }
}
