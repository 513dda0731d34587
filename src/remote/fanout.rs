//! Fan-out: work on many hosts at once, at most `forks` at a time, with a
//! result per host. One host's failure (unreachable, or an error in the
//! work) never stops the others.

use std::future::Future;
use std::sync::Arc;

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
}

impl From<SystemdError> for HostError {
    fn from(e: SystemdError) -> Self {
        HostError::Failed(e.to_string())
    }
}

impl HostError {
    /// Whether the host was unreachable (as opposed to failing the work).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HostError::Unreachable(_))
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

/// Connect to every host, at most `forks` connections being set up at a
/// time. Results come back in the order of `hosts`.
pub async fn connect_all(hosts: &[Host], forks: usize) -> Vec<HostResult<Session>> {
    let mut out: Vec<HostResult<Session>> = stream::iter(hosts.iter().enumerate())
        .map(|(index, h)| async move {
            HostResult {
                index,
                host: h.name.clone(),
                result: carrier::connect(h).await.map_err(HostError::from),
            }
        })
        .buffer_unordered(forks.max(1))
        .collect()
        .await;
    out.sort_by_key(|r| r.index);
    out
}

/// Close sessions in parallel (each closes its SSH master).
pub async fn close_all(sessions: impl IntoIterator<Item = Session>) {
    futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
}

/// For each host: connect, run `work`, close — at most `forks` hosts in
/// flight. `work` gets the host's index in `hosts` and its session.
/// Results come back in the order of `hosts`.
pub async fn fan_out<T, F, Fut>(hosts: &[Host], forks: usize, work: F) -> Vec<HostResult<T>>
where
    F: Fn(usize, Arc<Session>) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let work = &work;
    let mut out: Vec<HostResult<T>> = stream::iter(hosts.iter().enumerate())
        .map(|(index, h)| async move {
            let result = match carrier::connect(h).await {
                Err(e) => Err(HostError::Unreachable(e)),
                Ok(session) => {
                    let session = Arc::new(session);
                    let r = work(index, session.clone()).await;
                    match Arc::try_unwrap(session) {
                        Ok(s) => s.close().await,
                        // The work kept a clone; its Drop stops the master.
                        Err(_) => tracing::debug!("{}: session still shared after work", h.name),
                    }
                    r
                }
            };
            HostResult {
                index,
                host: h.name.clone(),
                result,
            }
        })
        .buffer_unordered(forks.max(1))
        .collect()
        .await;
    out.sort_by_key(|r| r.index);
    out
}
