//! Fan-out: work on many hosts at once, at most `forks` at a time, with a
//! result per host. One host's failure (unreachable, or an error in the
//! work) never stops the others.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::model::inventory::Host;
use crate::remote::carrier::{self, Session};
use crate::remote::pool::Pool;

pub use crate::remote::connect::{close_all, connect_within, HostError};

/// How hosts are read: how many at once, and how long one host may take
/// (connecting included) before it is that host's error.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Hosts in flight at once.
    pub forks: usize,
    /// Bound on one host's connect and work.
    pub timeout: Duration,
    /// Connections kept open between jobs (the server); None: each read
    /// or run opens and closes its own.
    pub pool: Option<Pool>,
}

impl Reach {
    /// The default bound on one host's read.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// `forks` hosts at once, each bounded by `timeout`.
    pub fn new(forks: usize, timeout: Duration) -> Self {
        Reach {
            forks,
            timeout,
            pool: None,
        }
    }

    /// The same, taking connections from `pool` (and leaving them there).
    pub fn with_pool(mut self, pool: Option<Pool>) -> Self {
        self.pool = pool;
        self
    }
}

impl Default for Reach {
    fn default() -> Self {
        Reach::new(16, Reach::DEFAULT_TIMEOUT)
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

/// The host's session: from the pool if there is one (it stays open
/// there when the caller lets go), else a new connection the caller closes.
pub async fn open(h: &Host, reach: &Reach) -> Result<Arc<Session>, HostError> {
    match &reach.pool {
        Some(pool) => pool.get(h, reach.timeout).await,
        None => connect_within(h, reach.timeout).await.map(Arc::new),
    }
}

/// Connect to every host, at most `reach.forks` connections being set up
/// at a time, each within `reach.timeout`. Results come back in the order
/// of `hosts`.
pub async fn connect_all(hosts: &[Host], reach: &Reach) -> Vec<HostResult<Arc<Session>>> {
    // Indices, not `(usize, &Host)` items: a closure taking a reference
    // argument makes the future not provably Send (rust-lang/rust#102211),
    // and the server spawns these.
    let mut out: Vec<HostResult<Arc<Session>>> = stream::iter(0..hosts.len())
        .map(|index| async move {
            let h = &hosts[index];
            HostResult {
                index,
                host: h.name.clone(),
                result: open(h, reach).await,
            }
        })
        .buffer_unordered(reach.forks.max(1))
        .collect()
        .await;
    out.sort_by_key(|r| r.index);
    out
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
    let (work, reach) = (&work, &reach);
    let mut out: Vec<HostResult<T>> = stream::iter(0..hosts.len())
        .map(|index| async move {
            let h = &hosts[index];
            let one = async {
                let session = match &reach.pool {
                    Some(pool) => pool.get(h, reach.timeout).await?,
                    None => Arc::new(carrier::connect(h).await.map_err(HostError::Unreachable)?),
                };
                let r = work(index, session.clone()).await;
                if let (Some(pool), Err(HostError::Failed(_))) = (&reach.pool, &r) {
                    // Whatever failed may have been the connection: the
                    // next job connects anew rather than trust it.
                    pool.discard(&h.name, &session);
                }
                match Arc::try_unwrap(session) {
                    Ok(s) => s.close().await,
                    // A pool keeps it, or the work kept a clone (whose Drop
                    // stops the master).
                    Err(_) => tracing::trace!("{}: session kept after work", h.name),
                }
                r
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
