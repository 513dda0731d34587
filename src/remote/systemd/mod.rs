//! The one systemd client: typed zbus proxies for `org.freedesktop.systemd1`
//! and the operations drover needs, over any D-Bus connection (the local
//! system bus or `systemd-stdio-bridge` over SSH — see `carrier`).
//!
//! Reads are pipelined: every call for a batch of units is sent before any
//! reply is awaited, so a batch costs one round trip however many units it
//! has. Job completion is the `JobRemoved` signal, matched before the
//! job is queued so it cannot be missed; nothing here sleeps or polls.

mod job;
mod proxy;
pub(super) mod read;
mod signals;
mod unitfile;

// How a job ended, for the lab tests that drive this client directly.
#[cfg(feature = "internals")]
pub use job::JobEnd;
pub use proxy::*;
pub use read::StateRead;
pub use signals::{UnitChange, UnitEvent, UnitEvents};

use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::remote::systemd::job::JobWatch;

const DEST: &str = "org.freedesktop.systemd1";
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";

/// Units read concurrently on one connection. Each costs up to 3 pending
/// calls, and dbus-daemon refuses more than 128 pending replies per
/// connection (max_replies_per_connection) with LimitsExceeded.
pub const UNITS_IN_FLIGHT: usize = 32;

/// Pending calls the reads ([`Systemd::unit_facts`],
/// [`Systemd::unit_states`], [`Systemd::all_service_facts`]) may hold on
/// one connection, all of them together. dbus-daemon refuses a
/// connection's 129th pending call, and while systemd reloads it answers
/// nothing, so every call sent meanwhile stays pending: 400 Gets during a
/// reload drew 73 LimitsExceeded. The server's reads share a connection
/// (the live snapshot's, each route's), and a refused Get once listed a
/// running unit without its start time. The other 32 are for jobs and
/// the snapshot's follow-ups of a signal.
const BULK_CALLS: u32 = 96;

/// A unit-file change reported by systemd: (type, file, destination).
pub type UnitFileChange = (String, String, String);

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

/// The systemd of one host, over one D-Bus connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    jobs: std::sync::Arc<tokio::sync::OnceCell<JobWatch>>,
    /// [`BULK_CALLS`] permits, shared by every clone on this connection.
    bulk: std::sync::Arc<tokio::sync::Semaphore>,
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
            bulk: std::sync::Arc::new(tokio::sync::Semaphore::new(BULK_CALLS as usize)),
        })
    }

    /// Room for `calls` pending calls of a bulk read on this connection.
    async fn bulk_permit(
        &self,
        calls: u32,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, SystemdError> {
        self.bulk
            .acquire_many(calls.min(BULK_CALLS))
            .await
            .map_err(|_| SystemdError::bus("bulk read")(zbus::Error::Failure("closed".into())))
    }

    /// The underlying D-Bus connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The machine id of the system this systemd runs (D-Bus's
    /// `Peer.GetMachineId`, answered from its `/etc/machine-id`): which
    /// machine a bus address really leads to.
    pub async fn machine_id(&self) -> Result<String, SystemdError> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "GetMachineId",
                &(),
            )
            .await
            .map_err(SystemdError::bus("GetMachineId"))?;
        reply
            .body()
            .deserialize::<String>()
            .map_err(SystemdError::bus("GetMachineId"))
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
}

#[cfg(test)]
mod tests {
    use super::job::{JobEnd, JobOp, JobOutcome};
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
        assert_eq!(JobEnd::parse("dependency"), JobEnd::Dependency);
        assert!(JobEnd::parse("done").is_success());
        let o = JobOutcome {
            op: JobOp::Start,
            unit: "demo-broken.service".into(),
            job: "/j/1".into(),
            result: JobEnd::Failed,
            active_state: Some("failed".into()),
            unit_result: Some("exit-code".into()),
            status_text: None,
        };
        assert_eq!(
            o.error_message().as_deref(),
            Some("job failed: unit entered failed state (Result=exit-code)")
        );
    }
}
