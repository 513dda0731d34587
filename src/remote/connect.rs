//! One host's connection: made within its connect timeout, closed when
//! done, and why a host has no result ([`HostError`]). Below the fan-out
//! and the pool, which both connect and close through it.

use std::time::Duration;

use crate::model::inventory::Host;
use crate::remote::carrier::{self, CarrierError, Session};
use crate::remote::systemd::SystemdError;

/// Why a host has no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The host could not be reached (exit code 4 territory).
    #[error("unreachable: {0}")]
    Unreachable(#[from] CarrierError),
    /// Connected, but the work failed.
    #[error("{0}")]
    Failed(String),
    /// The host did not finish within the read's time bound (a wedged
    /// sshd or dbus-daemon): as good as unreachable.
    #[error("unreachable: no answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

impl From<SystemdError> for HostError {
    fn from(e: SystemdError) -> Self {
        HostError::Failed(e.to_string())
    }
}

impl HostError {
    /// Whether the host was unreachable (as opposed to failing the work).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HostError::Unreachable(_) | HostError::TimedOut(_))
    }
}

/// Connect to one host within `timeout` (ssh's own connect timeout does
/// not cover a bus that never answers the D-Bus handshake).
pub async fn connect_within(h: &Host, timeout: Duration) -> Result<Session, HostError> {
    match tokio::time::timeout(timeout, carrier::connect(h)).await {
        Ok(r) => r.map_err(HostError::from),
        Err(_) => Err(HostError::TimedOut(timeout)),
    }
}

/// Close sessions in parallel (each closes its SSH master).
pub async fn close_all(sessions: impl IntoIterator<Item = Session>) {
    futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
}
