//! Serving connections: hyper's HTTP/1.1 with a timer, so a client must
//! send a request's headers within the header timeout (after connecting,
//! after a TLS handshake that has the same bound, and between requests on
//! a kept-alive connection), and a cap on open connections, so idle
//! clients cannot use up the process's file descriptors and starve the
//! ones with a request to make.
//!
//! At the cap, a new connection is let in by closing the oldest one that is
//! not inside a request (idle, or still sending its headers, or still in
//! its TLS handshake): a flood of silent connections then costs its own
//! oldest members, never a request being answered. When every connection
//! is inside a request, the new one is closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use super::listen::{Accepted, AnyListener, Stream};

/// The header timeout without `--header-timeout`.
pub const HEADER_TIMEOUT: &str = "10s";

/// The connection cap without `--max-connections`: this many, or a quarter
/// of the descriptor limit when that is lower (the rest is for the hosts'
/// connections, job files and journals).
pub const MAX_CONNECTIONS: usize = 1024;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers (and a TLS handshake) must arrive within this.
    pub header_read: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Raise the soft limit on open files to the hard one (the default soft
/// limit, often 1024, is a compatibility relic for select(2) users); the
/// soft limit in force afterwards.
pub fn raise_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read the one struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
        tracing::debug!(
            "cannot raise the open files limit: {}",
            std::io::Error::last_os_error()
        );
    }
    Some(lim.rlim_cur)
}

/// The cap for a descriptor limit (None: unknown).
pub fn default_max_connections(nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => (n / 4).clamp(16, MAX_CONNECTIONS as u64) as usize,
        None => MAX_CONNECTIONS,
    }
}

/// Serve `app` on `listener` until `shutdown`, then stop accepting, let
/// the requests in flight finish (closing idle connections at once) and
/// return when every connection is closed.
pub async fn serve(
    mut listener: AnyListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Open::default());
    // Every connection holds a receiver: `closed()` is when all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let Some(slot) = open.admit(limits.max_connections) else {
            tracing::debug!(peer = %accepted.peer.0, "at the connection cap, every connection in a request: closed");
            continue;
        };
        tokio::spawn(connection(
            accepted,
            slot,
            app.clone(),
            limits.header_read,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}

type Answer = Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;

async fn connection(
    accepted: Accepted,
    slot: Slot,
    app: Router,
    header_read: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let state = slot.state.clone();
    let peer = accepted.peer.clone();
    let io = tokio::select! {
        io = accepted.ready(header_read) => io,
        _ = state.close.notified() => None,
        _ = stop.changed() => None,
    };
    let Some(io) = io else { return };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        let busy = Busy::new(state.clone());
        let app = app.clone();
        // Boxed: an Unpin future lets the connection be polled without
        // shutting its stream, which the lingering close below needs.
        Box::pin(async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            Ok(resp.map(|inner| Body::new(Guarded { inner, _busy: busy })))
        }) as Answer
    });
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .serve_connection(TokioIo::new(io), svc);
    let state = &slot.state;
    let (mut closing, mut stopping) = (false, false);
    loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                match r {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::debug!("connection: {e}");
                        return;
                    }
                }
            }
            // Told to make room, or the server stops: outside a request the
            // connection just closes (hyper's graceful shutdown would wait
            // for half-sent headers); inside one it ends after the answer.
            _ = state.close.notified(), if !closing => {
                closing = true;
                if state.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                Pin::new(&mut conn).graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if state.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    }
    if closing || stopping {
        return;
    }
    let io = conn.into_parts().io.into_inner();
    tokio::select! {
        _ = linger(io, header_read) => {}
        _ = state.close.notified() => {}
        _ = stop.changed() => {}
    }
}

/// What a lingering close reads at most.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Close as a web server must after answering early (401 or 413 before a
/// large body was read): end our side, then read and drop what the client
/// is still sending, for a while. Closing at once, with its bytes unread,
/// would make the kernel reset the connection, and a client still writing
/// its body would see the reset instead of the answer.
async fn linger(mut io: Pin<Box<dyn Stream>>, within: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(within, async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    slots: Mutex<BTreeMap<u64, Arc<SlotState>>>,
    next: AtomicU64,
    warned: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct SlotState {
    /// Requests in flight, their answers' bodies included.
    busy: AtomicUsize,
    /// Already told to close.
    told: AtomicBool,
    close: Notify,
}

/// A connection's place among the open ones, given back when dropped.
struct Slot {
    id: u64,
    state: Arc<SlotState>,
    open: Arc<Open>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut s) = self.open.slots.lock() {
            s.remove(&self.id);
        }
    }
}

impl Open {
    /// A place for a new connection, making room at `cap` by closing the
    /// oldest connection outside a request; None when there is none.
    fn admit(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        let mut slots = self.slots.lock().ok()?;
        if slots.len() >= cap {
            let victim = slots
                .values()
                .find(|s| s.busy.load(Ordering::SeqCst) == 0 && !s.told.load(Ordering::SeqCst))?;
            victim.told.store(true, Ordering::SeqCst);
            victim.close.notify_one();
            self.warn_at_cap(cap);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(SlotState::default());
        slots.insert(id, state.clone());
        Some(Slot {
            id,
            state,
            open: self.clone(),
        })
    }

    /// Once a minute at most: a flood must not flood the log too.
    fn warn_at_cap(&self, cap: usize) {
        let Ok(mut last) = self.warned.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                "{cap} connections open (--max-connections): closing the oldest idle ones to let new ones in"
            );
        }
    }
}

/// A request in flight on a connection, until its answer's body is sent.
struct Busy(Arc<SlotState>);

impl Busy {
    fn new(s: Arc<SlotState>) -> Busy {
        s.busy.fetch_add(1, Ordering::SeqCst);
        Busy(s)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its connection counted as in a request
/// until it is sent (an event stream lasts as long as its job).
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_descriptor_limit() {
        assert_eq!(default_max_connections(Some(1024)), 256);
        assert_eq!(default_max_connections(Some(524_288)), MAX_CONNECTIONS);
        assert_eq!(default_max_connections(Some(20)), 16);
        assert_eq!(default_max_connections(None), MAX_CONNECTIONS);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let open = Arc::new(Open::default());
        let a = open.admit(2).unwrap();
        let b = open.admit(2).unwrap();
        // `a` is in a request: `b`, the oldest idle one, is told to close.
        let _busy = Busy::new(a.state.clone());
        let c = open.admit(2).unwrap();
        assert!(!a.state.told.load(Ordering::SeqCst));
        assert!(b.state.told.load(Ordering::SeqCst));
        drop(b);
        // `a` busy, `c` idle: `c` goes.
        let d = open.admit(2).unwrap();
        assert!(c.state.told.load(Ordering::SeqCst));
        drop(c);
        // Both in a request: no room.
        let _busy_d = Busy::new(d.state.clone());
        assert!(open.admit(2).is_none());
        assert_eq!(open.slots.lock().unwrap().len(), 2);
    }
}
