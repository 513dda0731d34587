//! The one systemd client: typed zbus proxies for `org.freedesktop.systemd1`
//! and the operations drover needs, over any D-Bus connection (the local
//! system bus or `systemd-stdio-bridge` over SSH — see `carrier`).
//!
//! Reads are pipelined: every call for a batch of units is sent before any
//! reply is awaited, so a batch costs one round trip however many units it
//! has. Job completion is the `JobRemoved` signal, matched before the
//! job is queued so it cannot be missed; nothing here sleeps or polls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{DeserializeDict, OwnedObjectPath, OwnedValue, Type};
use zbus::Connection;

use crate::model::facts::UnitFacts;
use crate::model::unit::UnitName;

const DEST: &str = "org.freedesktop.systemd1";
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";

/// Units read concurrently on one connection. Each costs up to 3 pending
/// calls, and dbus-daemon refuses more than 128 pending replies per
/// connection (max_replies_per_connection) with LimitsExceeded.
pub const UNITS_IN_FLIGHT: usize = 32;

/// A unit-file change reported by systemd: (type, file, destination).
pub type UnitFileChange = (String, String, String);

/// Per-run properties of one unit: name, InvocationID, ActiveEnterTimestamp,
/// MainPID and (when the file list lacked it) UnitFileState.
type RunHistory = (
    String,
    Option<String>,
    Option<u64>,
    Option<u32>,
    Option<String>,
);

/// The systemd Manager object (`/org/freedesktop/systemd1`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// The object path of a loaded unit (fails for units not loaded).
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// The object path of a unit, loading it from disk if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a start job; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a stop job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a restart job.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a reload job.
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enable unit files; returns (carries install info, changes).
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<UnitFileChange>)>;
    /// Disable unit files; returns the changes.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    /// Mask unit files; returns the changes.
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    /// Unmask unit files; returns the changes.
    fn unmask_unit_files(&self, files: &[&str], runtime: bool)
        -> zbus::Result<Vec<UnitFileChange>>;
    /// `systemctl daemon-reload`; the reply comes after the reload is done.
    fn reload(&self) -> zbus::Result<()>;
    /// Every loaded unit.
    #[allow(clippy::type_complexity)]
    fn list_units(&self) -> zbus::Result<Vec<ListedUnit>>;
    /// The same rows for named units, loading them if needed.
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<ListedUnit>>;
    /// Unit files matching states and glob patterns: (path, state).
    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;
    /// The enablement state of one unit file.
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
}

/// One row of `ListUnits`: name, description, load, active, sub, following,
/// unit path, job id, job type, job path.
pub type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// A unit object (`/org/freedesktop/systemd1/unit/...`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    /// The unit's primary name.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    /// active, inactive, failed, activating, deactivating, reloading.
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// Type-specific state: running, dead, exited, auto-restart, ...
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// loaded, not-found, masked, error, ...
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// enabled, disabled, static, masked, ... ("" for no file).
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    /// When the unit last entered `active`, µs since the epoch (0: never).
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    /// 128-bit id of the unit's current run (empty when it never ran).
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    /// The pending job: (id, path); id 0 when none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

/// The service-specific interface of a `.service` unit object.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Service {
    /// PID of the main process, 0 when none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    /// Why the service last stopped: success, exit-code, signal, timeout, ...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    /// The service's own sd_notify STATUS= text.
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;
}

/// A job object (`/org/freedesktop/systemd1/job/N`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Job {
    /// start, stop, restart, reload, ...
    #[zbus(property)]
    fn job_type(&self) -> zbus::Result<String>;
}

/// The Unit interface's properties drover reads, fetched with one GetAll
/// (one message per unit instead of one per property).
#[derive(Debug, Default, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
struct UnitProps {
    load_state: Option<String>,
    active_state: Option<String>,
    sub_state: Option<String>,
    unit_file_state: Option<String>,
    active_enter_timestamp: Option<u64>,
    #[zvariant(rename = "InvocationID")]
    invocation_id: Option<Vec<u8>>,
    job: Option<(u32, OwnedObjectPath)>,
}

/// What went wrong talking to systemd (the carrier was up).
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A D-Bus call failed; `what` says which, with the unit.
    #[error("{what}: {source}")]
    Bus {
        /// e.g. "StartUnit demo-web.service".
        what: String,
        /// zbus's error (systemd's error name and message for method errors).
        #[source]
        source: zbus::Error,
    },
    /// The connection closed while waiting for a job to finish.
    #[error("connection lost while waiting for the {op} job of {unit}")]
    Lost {
        /// start, stop, ...
        op: &'static str,
        /// The unit.
        unit: String,
    },
}

impl SystemdError {
    /// Whether the connection to the host broke (as opposed to systemd
    /// answering with an error): the host is then unreachable.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            SystemdError::Lost { .. } => true,
            SystemdError::Bus { source, .. } => matches!(source, zbus::Error::InputOutput(_)),
        }
    }

    fn bus(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> SystemdError {
        let what = what.into();
        move |source| SystemdError::Bus { what, source }
    }
}

/// A job's result as systemd reports it in `JobRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
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

impl JobResult {
    /// Parse systemd's result string.
    pub fn parse(s: &str) -> Self {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_string()),
        }
    }

    /// systemd's word for it.
    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        }
    }

    /// Whether the job did what was asked (`done`; `skipped` only happens
    /// for jobs that had nothing to do, so it counts as success too).
    pub fn is_success(&self) -> bool {
        matches!(self, JobResult::Done | JobResult::Skipped)
    }
}

impl fmt::Display for JobResult {
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
    pub result: JobResult,
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

/// Which optional properties [`Systemd::unit_state`] reads besides the
/// load/active/sub state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateRead {
    /// UnitFileState (enablement), for steps about `enabled`/`masked`.
    pub file_state: bool,
    /// InvocationID: the evidence of a restart (and of a oneshot start
    /// that is inactive again afterwards).
    pub invocation: bool,
}

/// The systemd of one host, over one D-Bus connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    jobs: std::sync::Arc<tokio::sync::OnceCell<JobWatch>>,
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
struct JobWatch {
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
struct JobBoard {
    /// Callers waiting, by job object path. Several callers can wait for
    /// one job: systemd merges a second identical request into the job
    /// already queued and returns its path.
    waiting: std::collections::HashMap<String, Vec<tokio::sync::oneshot::Sender<String>>>,
    /// (job path, result, sender) of the last jobs that finished with
    /// nobody yet waiting: the signal may be routed before a caller has
    /// read systemd's reply. Entries stay (for any merged caller) until
    /// pushed out.
    finished: std::collections::VecDeque<(String, String, String)>,
    /// systemd's unique name on this bus, from the sender of its first
    /// reply to us. A signal carries its sender's unique name, set by the
    /// bus and unforgeable; the match rule's well-known sender does not
    /// protect us, because any peer may send a signal addressed to our
    /// connection and zbus cannot check a well-known sender itself.
    systemd: Option<String>,
    /// The signal stream ended: the connection is gone.
    closed: bool,
}

impl JobBoard {
    /// Route one `JobRemoved` from `sender`: to the callers waiting for
    /// `job` and into the finished list, if it comes from systemd. Before
    /// systemd's name is known (the signal overtook its reply), it is kept
    /// with its sender and checked when the caller claims it.
    fn route(&mut self, job: &str, result: String, sender: &str) {
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
    fn learn(&mut self, systemd: &str) {
        if self.systemd.is_none() {
            self.systemd = Some(systemd.to_string());
            self.finished.retain(|(_, _, s)| s == systemd);
        }
    }

    /// The result of `job` if systemd's signal for it already came.
    fn finished(&self, job: &str) -> Option<String> {
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
struct Claim<'a> {
    board: &'a std::sync::Mutex<JobBoard>,
    job: &'a str,
}

impl Drop for Claim<'_> {
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

/// systemd's bus-label escaping of a unit name into its object path, so
/// reads can address a unit without first asking for its path.
pub fn unit_object_path(unit: &str) -> String {
    let mut out = String::from(UNIT_PATH_PREFIX);
    if unit.is_empty() {
        out.push('_');
    }
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// RFC 3339 (UTC, seconds) of a systemd µs timestamp; None for 0 ("never").
pub fn timestamp_rfc3339(usec: u64) -> Option<String> {
    if usec == 0 {
        return None;
    }
    let secs = i64::try_from(usec / 1_000_000).ok()?;
    let nanos = u32::try_from((usec % 1_000_000) * 1000).ok()?;
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_names(changes: &[UnitFileChange]) -> Vec<String> {
    changes.iter().map(|(_, file, _)| file.clone()).collect()
}

impl Systemd {
    /// A client over an established connection (from `carrier::connect`).
    pub async fn new(conn: Connection) -> Result<Self, SystemdError> {
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(SystemdError::bus("Manager proxy"))?;
        Ok(Systemd {
            conn,
            manager,
            jobs: Default::default(),
        })
    }

    /// The underlying D-Bus connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The typed Manager proxy, for calls this client does not wrap.
    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// A typed proxy on a unit object (properties are not cached: every
    /// read is a fresh Get).
    pub async fn unit_proxy(&self, unit: &str) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(&self.conn)
            .path(unit_object_path(unit))
            .map_err(SystemdError::bus(format!("unit path of {unit}")))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(SystemdError::bus(format!("Unit proxy {unit}")))
    }

    /// The state of each unit, read in one round trip per batch of
    /// [`UNITS_IN_FLIGHT`] units: per unit, LoadUnit (so inactive units that
    /// are not loaded are found too), GetAll of the Unit interface and, for
    /// services, MainPID — all sent before any reply is awaited. A unit
    /// whose file does not exist reports `load_state: "not-found"`.
    pub async fn unit_facts(
        &self,
        units: &[UnitName],
    ) -> Result<BTreeMap<String, UnitFacts>, SystemdError> {
        // Bounded so the bus's per-connection limit on pending replies
        // (dbus-daemon: 128) is never hit; below it all reads overlap.
        let reads: Vec<Result<UnitFacts, SystemdError>> = futures_util::stream::iter(units)
            .map(|u| self.read_unit(u.as_str()))
            .buffered(UNITS_IN_FLIGHT)
            .collect()
            .await;
        let mut out = BTreeMap::new();
        for (u, r) in units.iter().zip(reads) {
            out.insert(u.to_string(), r?);
        }
        Ok(out)
    }

    async fn read_unit(&self, unit: &str) -> Result<UnitFacts, SystemdError> {
        let path = unit_object_path(unit);
        let load = self.manager.load_unit(unit);
        let all = self.conn.call_method(
            Some(DEST),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &("org.freedesktop.systemd1.Unit",),
        );
        let pid = async {
            if !unit.ends_with(".service") {
                return Ok(None);
            }
            let reply = self
                .conn
                .call_method(
                    Some(DEST),
                    path.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &("org.freedesktop.systemd1.Service", "MainPID"),
                )
                .await?;
            let v: OwnedValue = reply.body().deserialize()?;
            Ok::<_, zbus::Error>(u32::try_from(v).ok())
        };
        let (load, all, pid) = futures_util::join!(load, all, pid);
        load.map_err(SystemdError::bus(format!("LoadUnit {unit}")))?;
        let reply = all.map_err(SystemdError::bus(format!("GetAll {unit}")))?;
        let props: UnitProps = reply
            .body()
            .deserialize()
            .map_err(SystemdError::bus(format!("GetAll {unit}")))?;
        // MainPID is best effort: a unit that is not a service (or a
        // not-found one) simply has none.
        let main_pid = pid.ok().flatten().unwrap_or(0);
        let mut facts = UnitFacts {
            load_state: props.load_state.unwrap_or_default(),
            active_state: props.active_state.unwrap_or_default(),
            sub_state: props.sub_state.unwrap_or_default(),
            unit_file_state: props.unit_file_state.unwrap_or_default(),
            start_time: props.active_enter_timestamp.and_then(timestamp_rfc3339),
            invocation_id: props.invocation_id.as_deref().map(hex).unwrap_or_default(),
            main_pid,
            job: None,
        };
        // A pending job decides STARTING vs RESTARTING in `status`; its type
        // costs one more round trip, paid only while a job is queued.
        if let Some((id, job_path)) = props.job.filter(|(id, _)| *id != 0) {
            let ty = match JobProxy::builder(&self.conn)
                .path(job_path)
                .map_err(SystemdError::bus(format!("job {id} of {unit}")))?
                .cache_properties(CacheProperties::No)
                .build()
                .await
            {
                // The job may have finished meanwhile; then there is none.
                Ok(p) => p.job_type().await.ok(),
                Err(_) => None,
            };
            facts.job = ty;
        }
        Ok(facts)
    }

    /// The state the executor decides and verifies on, in as little bus
    /// traffic as systemd allows: one ListUnitsByNames row (load, active and
    /// sub state), plus the InvocationID and UnitFileState when asked, sent
    /// together. Every message crosses ssh, the bridge and the bus, so a
    /// reading asks only for what its caller compares. Cheaper than
    /// [`Systemd::unit_facts`], which reads every Unit property.
    pub async fn unit_state(
        &self,
        unit: &UnitName,
        what: StateRead,
    ) -> Result<UnitFacts, SystemdError> {
        let mut all = self.unit_states(&[(unit, what)]).await?;
        Ok(all.pop().unwrap_or_else(UnitFacts::not_found))
    }

    /// [`Systemd::unit_state`] of several units at once: one
    /// ListUnitsByNames for all, their optional properties sent alongside
    /// (a single round trip). Results in the order asked.
    pub async fn unit_states(
        &self,
        asked: &[(&UnitName, StateRead)],
    ) -> Result<Vec<UnitFacts>, SystemdError> {
        let names: Vec<&str> = asked.iter().map(|(u, _)| u.as_str()).collect();
        let rows = self.manager.list_units_by_names(&names);
        let extras = futures_util::future::join_all(asked.iter().map(|(unit, what)| async move {
            let path = unit_object_path(unit.as_str());
            let inv = async {
                if what.invocation {
                    self.unit_property(&path, "InvocationID").await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let ufs = async {
                if what.file_state {
                    self.unit_property(&path, "UnitFileState").await.map(Some)
                } else {
                    Ok(None)
                }
            };
            futures_util::join!(inv, ufs)
        }));
        let (rows, extras) = futures_util::join!(rows, extras);
        let rows = rows.map_err(SystemdError::bus(format!(
            "ListUnitsByNames {}",
            names.join(" ")
        )))?;
        // One row per name, in the order asked (systemd loads each name;
        // an alias answers under its unit's own name, so match by position).
        // No row at all: systemd skipped names it finds invalid.
        if rows.is_empty() {
            return Ok(names.iter().map(|_| UnitFacts::not_found()).collect());
        }
        if rows.len() != names.len() {
            return Err(SystemdError::bus(format!(
                "ListUnitsByNames {}",
                names.join(" ")
            ))(zbus::Error::Failure(format!(
                "{} rows for {} names",
                rows.len(),
                names.len()
            ))));
        }
        let mut out = Vec::with_capacity(rows.len());
        for ((r, (inv, ufs)), name) in rows.into_iter().zip(extras).zip(&names) {
            // A unit without a file has no InvocationID worth reading.
            let invocation_id = inv
                .ok()
                .flatten()
                .and_then(|v| Vec::<u8>::try_from(v).ok())
                .map(|b| hex(&b))
                .unwrap_or_default();
            let unit_file_state = match ufs {
                Ok(Some(v)) => String::try_from(v).unwrap_or_default(),
                Ok(None) => String::new(),
                Err(e) => return Err(SystemdError::bus(format!("UnitFileState {name}"))(e)),
            };
            out.push(UnitFacts {
                load_state: r.2,
                active_state: r.3,
                sub_state: r.4,
                unit_file_state,
                start_time: None,
                invocation_id,
                main_pid: 0,
                job: None,
            });
        }
        Ok(out)
    }

    /// A unit's InvocationID alone (hex; empty when it has none).
    pub async fn invocation_id(&self, unit: &UnitName) -> Result<String, SystemdError> {
        let v = self
            .unit_property(&unit_object_path(unit.as_str()), "InvocationID")
            .await
            .map_err(SystemdError::bus(format!("InvocationID {unit}")))?;
        Ok(Vec::<u8>::try_from(v).map(|b| hex(&b)).unwrap_or_default())
    }

    /// One property of the Unit interface, by the unit's object path.
    async fn unit_property(&self, path: &str, prop: &str) -> zbus::Result<OwnedValue> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Unit", prop),
            )
            .await?;
        reply.body().deserialize()
    }

    /// Names of the loaded service units (what `systemctl list-units
    /// --type=service --all` shows), sorted.
    pub async fn list_loaded_services(&self) -> Result<Vec<UnitName>, SystemdError> {
        let units = self
            .manager
            .list_units()
            .await
            .map_err(SystemdError::bus("ListUnits"))?;
        Ok(units
            .into_iter()
            .filter(|u| u.2 != "not-found")
            .filter_map(|u| service_name(&u.0))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Every service unit of the host: the loaded ones and every installed
    /// service unit file (template files such as `getty@.service` excluded:
    /// they are not units until instantiated). Both lists are read in one
    /// round trip.
    pub async fn list_service_units(&self) -> Result<Vec<UnitName>, SystemdError> {
        let (loaded, files) = futures_util::join!(
            self.manager.list_units(),
            self.manager
                .list_unit_files_by_patterns(&[], &["*.service"])
        );
        let loaded = loaded.map_err(SystemdError::bus("ListUnits"))?;
        let files = files.map_err(SystemdError::bus("ListUnitFilesByPatterns"))?;
        let mut names = BTreeSet::new();
        for u in loaded.iter().filter(|u| u.2 != "not-found") {
            names.extend(service_name(&u.0));
        }
        for (path, _state) in &files {
            let base = path.rsplit('/').next().unwrap_or(path);
            names.extend(service_name(base));
        }
        Ok(names.into_iter().collect())
    }

    /// Facts of every service unit (loaded units and unit files) — what
    /// `drover facts` records by default — in a few bulk calls instead of
    /// a full property read per unit: ListUnits and ListUnitFiles give names,
    /// states and jobs; ListUnitsByNames loads the rest in one message; only
    /// units with a runtime history (loaded before we asked) get their
    /// InvocationID, ActiveEnterTimestamp and MainPID read, pipelined.
    pub async fn all_service_facts(
        &self,
        loaded_only: bool,
    ) -> Result<BTreeMap<String, UnitFacts>, SystemdError> {
        let (loaded, files) = futures_util::join!(self.manager.list_units(), async {
            if loaded_only {
                Ok(Vec::new())
            } else {
                self.manager
                    .list_unit_files_by_patterns(&[], &["*.service"])
                    .await
            }
        });
        let loaded = loaded.map_err(SystemdError::bus("ListUnits"))?;
        let files = files.map_err(SystemdError::bus("ListUnitFilesByPatterns"))?;
        let mut file_state: BTreeMap<String, String> = BTreeMap::new();
        for (path, state) in files {
            let base = path.rsplit('/').next().unwrap_or(&path).to_string();
            file_state.insert(base, state);
        }
        let mut out: BTreeMap<String, UnitFacts> = BTreeMap::new();
        let mut history: Vec<UnitName> = Vec::new();
        for u in &loaded {
            let Some(name) = service_name(&u.0) else {
                continue;
            };
            if u.2 == "not-found" {
                continue;
            }
            out.insert(
                name.to_string(),
                UnitFacts {
                    load_state: u.2.clone(),
                    active_state: u.3.clone(),
                    sub_state: u.4.clone(),
                    unit_file_state: file_state.get(name.as_str()).cloned().unwrap_or_default(),
                    start_time: None,
                    invocation_id: String::new(),
                    main_pid: 0,
                    job: (u.7 != 0).then(|| u.8.clone()),
                },
            );
            history.push(name);
        }
        // Unit files systemd has not loaded: one call loads and lists them.
        let unloaded: Vec<String> = file_state
            .keys()
            .filter(|n| !out.contains_key(*n) && service_name(n).is_some())
            .cloned()
            .collect();
        if !unloaded.is_empty() {
            let refs: Vec<&str> = unloaded.iter().map(String::as_str).collect();
            let rows = self
                .manager
                .list_units_by_names(&refs)
                .await
                .map_err(SystemdError::bus("ListUnitsByNames"))?;
            for u in rows {
                let Some(name) = service_name(&u.0) else {
                    continue;
                };
                out.insert(
                    name.to_string(),
                    UnitFacts {
                        load_state: u.2,
                        active_state: u.3,
                        sub_state: u.4,
                        unit_file_state: file_state.get(name.as_str()).cloned().unwrap_or_default(),
                        start_time: None,
                        invocation_id: String::new(),
                        main_pid: 0,
                        job: (u.7 != 0).then_some(u.8),
                    },
                );
            }
        }
        // Loaded units may have run: read what distinguishes one run from
        // the next. Units without a listed file state (generated,
        // transient) get theirs from the unit itself.
        let file_state_ref = &file_state;
        // By index: a closure over `&UnitName` items makes the future not
        // provably Send (rust-lang/rust#102211), and the server spawns it.
        let history_ref = &history;
        let extra: Vec<RunHistory> = futures_util::stream::iter(0..history.len())
            .map(|i| async move {
                let u = &history_ref[i];
                let path = unit_object_path(u.as_str());
                let get = |iface: &'static str, prop: &'static str| {
                    let path = path.clone();
                    async move {
                        let reply = self
                            .conn
                            .call_method(
                                Some(DEST),
                                path.as_str(),
                                Some("org.freedesktop.DBus.Properties"),
                                "Get",
                                &(iface, prop),
                            )
                            .await
                            .ok()?;
                        reply.body().deserialize::<OwnedValue>().ok()
                    }
                };
                let need_ufs = !file_state_ref.contains_key(u.as_str());
                let (inv, ts, pid, ufs) = futures_util::join!(
                    get("org.freedesktop.systemd1.Unit", "InvocationID"),
                    get("org.freedesktop.systemd1.Unit", "ActiveEnterTimestamp"),
                    get("org.freedesktop.systemd1.Service", "MainPID"),
                    async {
                        if need_ufs {
                            get("org.freedesktop.systemd1.Unit", "UnitFileState").await
                        } else {
                            None
                        }
                    }
                );
                (
                    u.to_string(),
                    inv.and_then(|v| Vec::<u8>::try_from(v).ok())
                        .map(|b| hex(&b)),
                    ts.and_then(|v| u64::try_from(v).ok()),
                    pid.and_then(|v| u32::try_from(v).ok()),
                    ufs.and_then(|v| String::try_from(v).ok()),
                )
            })
            .buffered(UNITS_IN_FLIGHT)
            .collect()
            .await;
        for (name, inv, ts, pid, ufs) in extra {
            if let Some(f) = out.get_mut(&name) {
                f.invocation_id = inv.unwrap_or_default();
                f.start_time = ts.and_then(timestamp_rfc3339);
                f.main_pid = pid.unwrap_or(0);
                if let Some(ufs) = ufs {
                    f.unit_file_state = ufs;
                }
            }
        }
        Ok(out)
    }

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
                let _claim = Claim {
                    board: &watch.board,
                    job: path,
                };
                // The router drops every sender when the stream ends.
                rx.await.map_err(|_| lost())?
            }
        };
        let result = JobResult::parse(&result);
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

    /// Enable a unit file (then daemon-reload if anything changed).
    /// Returns the files systemd changed; empty means it already was.
    pub async fn enable(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .enable_unit_files(&[unit.as_str()], false, false)
            .await
            .map(|(_, changes)| changes);
        self.file_change(format!("EnableUnitFiles {unit}"), r).await
    }

    /// Disable a unit file (then daemon-reload if anything changed).
    pub async fn disable(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .disable_unit_files(&[unit.as_str()], false)
            .await;
        self.file_change(format!("DisableUnitFiles {unit}"), r)
            .await
    }

    /// Mask a unit (then daemon-reload if anything changed).
    pub async fn mask(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .mask_unit_files(&[unit.as_str()], false, false)
            .await;
        self.file_change(format!("MaskUnitFiles {unit}"), r).await
    }

    /// Unmask a unit (then daemon-reload if anything changed).
    pub async fn unmask(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .unmask_unit_files(&[unit.as_str()], false)
            .await;
        self.file_change(format!("UnmaskUnitFiles {unit}"), r).await
    }

    /// The common tail of the unit-file calls: reload if files changed,
    /// return their names.
    async fn file_change(
        &self,
        what: String,
        reply: zbus::Result<Vec<UnitFileChange>>,
    ) -> Result<Vec<String>, SystemdError> {
        let changes = reply.map_err(SystemdError::bus(what))?;
        self.reload_if(&changes).await?;
        Ok(file_names(&changes))
    }

    /// `daemon-reload`: systemd re-reads unit files; returns when done.
    pub async fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(SystemdError::bus("Reload"))
    }

    /// The enablement state of a unit file (`systemctl is-enabled`).
    pub async fn unit_file_state(&self, unit: &UnitName) -> Result<String, SystemdError> {
        self.manager
            .get_unit_file_state(unit.as_str())
            .await
            .map_err(SystemdError::bus(format!("GetUnitFileState {unit}")))
    }

    async fn reload_if(&self, changes: &[UnitFileChange]) -> Result<(), SystemdError> {
        // Unit-file changes are invisible to the running manager until a
        // reload; an unchanged file needs none.
        if changes.is_empty() {
            Ok(())
        } else {
            self.daemon_reload().await
        }
    }

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

/// A concrete (non-template) service unit name, validated.
fn service_name(name: &str) -> Option<UnitName> {
    if !name.ends_with(".service") || name.contains("@.") {
        return None;
    }
    UnitName::parse(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_use_systemd_escaping() {
        assert_eq!(
            unit_object_path("demo-web.service"),
            "/org/freedesktop/systemd1/unit/demo_2dweb_2eservice"
        );
        assert_eq!(
            unit_object_path("getty@tty1.service"),
            "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
        );
        assert_eq!(
            unit_object_path("1a.service"),
            "/org/freedesktop/systemd1/unit/_31a_2eservice"
        );
    }

    #[test]
    fn timestamps_and_results() {
        assert_eq!(timestamp_rfc3339(0), None);
        assert_eq!(
            timestamp_rfc3339(1_700_000_000_123_456).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(JobResult::parse("dependency"), JobResult::Dependency);
        assert!(JobResult::parse("done").is_success());
        let o = JobOutcome {
            op: JobOp::Start,
            unit: "demo-broken.service".into(),
            job: "/j/1".into(),
            result: JobResult::Failed,
            active_state: Some("failed".into()),
            unit_result: Some("exit-code".into()),
            status_text: None,
        };
        assert_eq!(
            o.error_message().as_deref(),
            Some("job failed: unit entered failed state (Result=exit-code)")
        );
    }

    #[test]
    fn only_concrete_services_are_listed() {
        assert!(service_name("getty@.service").is_none());
        assert!(service_name("a.socket").is_none());
        assert_eq!(
            service_name("getty@tty1.service")
                .map(|u| u.to_string())
                .as_deref(),
            Some("getty@tty1.service")
        );
    }

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
