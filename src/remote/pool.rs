//! Connections kept open between jobs, for a long-running caller (the
//! server): one session per host, shared by every job that needs the host
//! (the session bounds its own channels), closed after an idle time or on
//! shutdown. The command line never uses one: a run opens and closes its
//! own connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::inventory::Host;
use crate::remote::carrier::Session;
use crate::remote::connect::{connect_within, HostError};

/// How long a pooled session may take to answer the liveness check before
/// it is replaced by a new connection.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A session unused for less than this is not checked before reuse: it
/// was working a moment ago, and a check costs a round trip.
const FRESH: Duration = Duration::from_secs(1);

struct Entry {
    /// The host's settings when it connected: a reloaded inventory that
    /// changes them must not reuse the old connection.
    fingerprint: String,
    session: Arc<Session>,
    last_used: Instant,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    /// One connect per host at a time: concurrent jobs wait for the one
    /// connection instead of each opening their own.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    opened: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// A cheap handle to a shared set of open sessions.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
    idle: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle)
            .field("opened", &self.opened())
            .finish()
    }
}

fn fingerprint(h: &Host) -> String {
    serde_json::to_string(h).unwrap_or_default()
}

impl Pool {
    /// A pool whose sessions close after `idle` unused. Must be called
    /// inside a tokio runtime: it starts the task that closes idle ones.
    pub fn new(idle: Duration) -> Pool {
        let pool = Pool {
            inner: Arc::new(Inner::default()),
            idle,
        };
        let weak = Arc::downgrade(&pool.inner);
        let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                let stale = take_idle(&inner, idle);
                drop(inner);
                crate::remote::connect::close_all(stale).await;
            }
        });
        pool
    }

    /// How many connections this pool has opened so far (the benchmarks
    /// report it: a pool must not open one per request).
    pub fn opened(&self) -> usize {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// How many sessions the pool holds open now (the server's metrics).
    pub fn open(&self) -> usize {
        self.entries().len()
    }

    /// The host's open session, or a new one within `timeout`.
    pub(crate) async fn get(&self, h: &Host, timeout: Duration) -> Result<Arc<Session>, HostError> {
        let fp = fingerprint(h);
        if let Some(s) = self.reusable(h, &fp).await {
            return Ok(s);
        }
        let gate = {
            let mut c = self
                .inner
                .connecting
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            c.entry(h.name.clone()).or_default().clone()
        };
        let _one = match tokio::time::timeout(timeout, gate.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(HostError::TimedOut(timeout)),
        };
        // Someone else may have connected while we waited.
        if let Some(s) = self.reusable(h, &fp).await {
            return Ok(s);
        }
        let session = Arc::new(connect_within(h, timeout).await?);
        let n = self.inner.opened.fetch_add(1, Ordering::Relaxed) + 1;
        // Counted by benches/health.rs: polling must not cost a connection
        // per request.
        tracing::debug!(opened = n, "{}: pool opened a connection", h.name);
        if !self.inner.closed.load(Ordering::SeqCst) {
            let old = self.entries().insert(
                h.name.clone(),
                Entry {
                    fingerprint: fp,
                    session: session.clone(),
                    last_used: Instant::now(),
                },
            );
            drop(old);
        }
        Ok(session)
    }

    /// Forget the host's session if it is `s` (it lost its connection):
    /// the next job connects anew.
    pub(crate) fn discard(&self, host: &str, s: &Arc<Session>) {
        let mut e = self.entries();
        if e.get(host).is_some_and(|x| Arc::ptr_eq(&x.session, s)) {
            e.remove(host);
        }
    }

    /// Close every session (those still in use close when their last job
    /// lets go of them); later `get`s connect without pooling.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let all: Vec<Entry> = self.entries().drain().map(|(_, e)| e).collect();
        let sessions = all
            .into_iter()
            .filter_map(|e| Arc::try_unwrap(e.session).ok());
        crate::remote::connect::close_all(sessions).await;
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reusable(&self, h: &Host, fp: &str) -> Option<Arc<Session>> {
        let (session, idle_for) = {
            let mut e = self.entries();
            let entry = e.get_mut(&h.name)?;
            if entry.fingerprint != fp {
                e.remove(&h.name);
                return None;
            }
            let idle_for = entry.last_used.elapsed();
            entry.last_used = Instant::now();
            (entry.session.clone(), idle_for)
        };
        if idle_for < FRESH || alive(&session).await {
            return Some(session);
        }
        tracing::debug!("{}: pooled connection is gone; reconnecting", h.name);
        self.discard(&h.name, &session);
        None
    }
}

/// One D-Bus round trip: answers only if the ssh master, the forward and
/// the host's bus are all still there.
async fn alive(s: &Session) -> bool {
    let ping = s.systemd().connection().call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "GetNameOwner",
        &("org.freedesktop.systemd1"),
    );
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(Ok(_)) => true,
        // An error reply came back over the connection: it is alive.
        Ok(Err(zbus::Error::MethodError(..))) => true,
        Ok(Err(e)) => {
            tracing::debug!("{}: liveness check: {e}", s.host());
            false
        }
        Err(_) => false,
    }
}

/// Remove the sessions idle for longer than `idle` that no job holds.
fn take_idle(inner: &Inner, idle: Duration) -> Vec<Session> {
    let mut e = inner.entries.lock().unwrap_or_else(|p| p.into_inner());
    let stale: Vec<String> = e
        .iter()
        .filter(|(_, x)| x.last_used.elapsed() >= idle && Arc::strong_count(&x.session) == 1)
        .map(|(k, _)| k.clone())
        .collect();
    stale
        .into_iter()
        .filter_map(|k| e.remove(&k))
        .filter_map(|x| Arc::try_unwrap(x.session).ok())
        .collect()
}
