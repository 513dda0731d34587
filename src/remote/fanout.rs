//! Fan-out: work on many hosts at once, at most `forks` at a time, with a
//! result per host. One host's failure (unreachable, or an error in the
//! work) never stops the others.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

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

/// How hosts are read: how many at once, and how long one host may take
/// (connecting included) before it is that host's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Hosts in flight at once.
    pub forks: usize,
    /// Bound on one host's connect and work.
    pub timeout: Duration,
}

impl Reach {
    /// The default bound on one host's read.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// `forks` hosts at once, each bounded by `timeout`.
    pub fn new(forks: usize, timeout: Duration) -> Self {
        Reach { forks, timeout }
    }
}

impl Default for Reach {
    fn default() -> Self {
        Reach::new(16, Reach::DEFAULT_TIMEOUT)
    }
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

/// One host's outcome, tagged with its inventory name and index.
#[derive(Debug)]
pub struct HostResult<T> {
    /// Index of the host in the slice given to the fan-out.
    pub index: usize,
    /// The host's inventory name.
    pub host: String,
    /// The work's value, or why there is none.
    pub result: Result<T, HostError>,
}

/// Connect to one host within `timeout` (ssh's own connect timeout does
/// not cover a bus that never answers the D-Bus handshake).
pub async fn connect_within(h: &Host, timeout: Duration) -> Result<Session, HostError> {
    match tokio::time::timeout(timeout, carrier::connect(h)).await {
        Ok(r) => r.map_err(HostError::from),
        Err(_) => Err(HostError::TimedOut(timeout)),
    }
}

/// Connect to every host, at most `reach.forks` connections being set up
/// at a time, each within `reach.timeout`. Results come back in the order
/// of `hosts`.
pub async fn connect_all(hosts: &[Host], reach: Reach) -> Vec<HostResult<Session>> {
    let mut out: Vec<HostResult<Session>> = stream::iter(hosts.iter().enumerate())
        .map(|(index, h)| async move {
            HostResult {
                index,
                host: h.name.clone(),
                result: connect_within(h, reach.timeout).await,
            }
        })
        .buffer_unordered(reach.forks.max(1))
        .collect()
        .await;
    out.sort_by_key(|r| r.index);
    out
}

/// Close sessions in parallel (each closes its SSH master).
pub async fn close_all(sessions: impl IntoIterator<Item = Session>) {
    futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
}

/// For each host: connect, run `work`, close — at most `reach.forks`
/// hosts in flight, each bounded by `reach.timeout` (a host that does not
/// answer is its own error; the others go on). `work` gets the host's
/// index in `hosts` and its session. Results come back in the order of
/// `hosts`.
pub async fn fan_out<T, F, Fut>(hosts: &[Host], reach: Reach, work: F) -> Vec<HostResult<T>>
where
    F: Fn(usize, Arc<Session>) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let work = &work;
    let mut out: Vec<HostResult<T>> = stream::iter(hosts.iter().enumerate())
        .map(|(index, h)| async move {
            let one = async {
                match carrier::connect(h).await {
                    Err(e) => Err(HostError::Unreachable(e)),
                    Ok(session) => {
                        let session = Arc::new(session);
                        let r = work(index, session.clone()).await;
                        match Arc::try_unwrap(session) {
                            Ok(s) => s.close().await,
                            // The work kept a clone; its Drop stops the master.
                            Err(_) => {
                                tracing::debug!("{}: session still shared after work", h.name)
                            }
                        }
                        r
                    }
                }
            };
            // Dropping the unfinished work drops its session, whose Drop
            // stops the ssh master: nothing of a wedged host is left behind.
            let result = tokio::time::timeout(reach.timeout, one)
                .await
                .unwrap_or(Err(HostError::TimedOut(reach.timeout)));
            HostResult {
                index,
                host: h.name.clone(),
                result,
            }
        })
        .buffer_unordered(reach.forks.max(1))
        .collect()
        .await;
    out.sort_by_key(|r| r.index);
    out
}
