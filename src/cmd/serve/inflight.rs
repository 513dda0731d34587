//! Host reads in flight: the table that joins identical reads, and the
//! bounds that keep one caller's flood of reads from holding the server.
//!
//! A read of an unreachable host waits for its connect timeout; without a
//! bound, hundreds of such requests from one key each hold a task and a
//! connection attempt while everyone else's reads queue behind them. So a
//! key has at most [`PER_KEY`] reads in flight and the server at most
//! [`DISTINCT`] different reads; past either, 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::engine::status::StatusReport;

use super::error::ApiError;

/// Read requests one key may have in flight (joined ones count too).
pub const PER_KEY: usize = 32;

/// Different reads in flight at once, over all keys.
pub const DISTINCT: usize = 128;

/// What a read answers.
pub type ReadResult = Result<Arc<StatusReport>, ApiError>;

/// A status read several requests may await.
pub type SharedRead = Shared<BoxFuture<'static, ReadResult>>;

/// Reads in flight, by what they read, and each key's count of them.
pub struct Inflight {
    table: Mutex<HashMap<String, SharedRead>>,
    per_key: Mutex<HashMap<String, usize>>,
    per_key_limit: usize,
    distinct_limit: usize,
}

impl Default for Inflight {
    fn default() -> Self {
        Self::with_limits(PER_KEY, DISTINCT)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request's place in its key's count; given back on drop, also when
/// the client goes away mid-read.
struct Slot<'a> {
    inflight: &'a Inflight,
    key: &'a str,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = lock(&self.inflight.per_key);
        if let Some(n) = m.get_mut(self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(self.key);
            }
        }
    }
}

/// Takes a read out of the table when its last waiter is done with it, or
/// goes away: an entry left behind by a client that disconnected would be
/// joined later and answer with what the hosts were then.
struct Entry<'a> {
    inflight: &'a Inflight,
    what: &'a str,
    read: SharedRead,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.inflight.table);
        let ours = t.get(self.what).is_some_and(|r| r.ptr_eq(&self.read));
        // The table's clone and ours: nobody else waits for it.
        let last = self.read.strong_count().is_none_or(|n| n <= 2);
        if ours && (last || self.read.peek().is_some()) {
            t.remove(self.what);
        }
    }
}

impl Inflight {
    /// A table with other bounds (tests).
    pub fn with_limits(per_key: usize, distinct: usize) -> Self {
        Self {
            table: Mutex::default(),
            per_key: Mutex::default(),
            per_key_limit: per_key,
            distinct_limit: distinct,
        }
    }

    /// Read `what` for the key `caller`: join the identical read in flight,
    /// or start one with `start`. 429 past the key's or the server's bound.
    pub async fn read(
        &self,
        caller: &str,
        what: &str,
        start: impl FnOnce() -> BoxFuture<'static, ReadResult>,
    ) -> ReadResult {
        let _slot = self.slot(caller)?;
        let read = {
            let mut t = lock(&self.table);
            match t.get(what) {
                Some(r) if r.peek().is_none() => r.clone(),
                _ => {
                    if t.len() >= self.distinct_limit {
                        return Err(busy("the server has too many host reads in flight"));
                    }
                    let r = start().shared();
                    t.insert(what.to_string(), r.clone());
                    r
                }
            }
        };
        let entry = Entry {
            inflight: self,
            what,
            read,
        };
        entry.read.clone().await
    }

    fn slot<'a>(&'a self, caller: &'a str) -> Result<Slot<'a>, ApiError> {
        let mut m = lock(&self.per_key);
        let n = m.entry(caller.to_string()).or_default();
        if *n >= self.per_key_limit {
            return Err(busy(&format!(
                "this key has {} host reads in flight, the most it may",
                self.per_key_limit
            )));
        }
        *n += 1;
        Ok(Slot {
            inflight: self,
            key: caller,
        })
    }

    /// Reads in the table now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).len()
    }

    /// Whether no read is in the table.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn busy(why: &str) -> ApiError {
    ApiError::busy(format!("{why}; retry in 1s"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn report() -> ReadResult {
        Ok(Arc::new(StatusReport {
            services: vec![],
            errors: vec![],
            maintenance: vec![],
        }))
    }

    /// A read that counts its starts and waits for `gate`.
    fn gated(
        starts: &Arc<AtomicUsize>,
        gate: &Arc<tokio::sync::Notify>,
    ) -> impl FnOnce() -> BoxFuture<'static, ReadResult> {
        let (starts, gate) = (starts.clone(), gate.clone());
        move || {
            async move {
                starts.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                report()
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_leaves_no_entry_to_join() {
        let t = Inflight::default();
        let starts = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        {
            let first = t.read("k", "web", gated(&starts, &gate));
            futures_util::pin_mut!(first);
            // Polled once: the read has started and waits.
            assert!(futures_util::poll!(first.as_mut()).is_pending());
            assert_eq!(starts.load(Ordering::SeqCst), 1);
            assert_eq!(t.len(), 1);
        } // The client disconnects: its request future is dropped.
        assert!(t.is_empty(), "the disconnected read stays to be joined");
        let second = t.read("k", "web", gated(&starts, &gate));
        futures_util::pin_mut!(second);
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "a fresh read, not the old one"
        );
        gate.notify_one();
        assert!(second.await.is_ok());
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn identical_reads_join_and_a_waiter_leaving_keeps_it_for_the_others() {
        let t = Inflight::default();
        let starts = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let a = t.read("k", "web", gated(&starts, &gate));
        let b = t.read("j", "web", gated(&starts, &gate));
        futures_util::pin_mut!(a, b);
        assert!(futures_util::poll!(a.as_mut()).is_pending());
        assert!(futures_util::poll!(b.as_mut()).is_pending());
        assert_eq!(starts.load(Ordering::SeqCst), 1, "joined");
        {
            let c = t.read("m", "web", gated(&starts, &gate));
            futures_util::pin_mut!(c);
            assert!(futures_util::poll!(c.as_mut()).is_pending());
        }
        assert_eq!(t.len(), 1, "a and b still wait for it");
        gate.notify_one();
        assert!(a.await.is_ok());
        assert!(b.await.is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_key_past_its_bound_gets_429_and_others_still_read() {
        let t = Inflight::with_limits(2, 3);
        let starts = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut a = Box::pin(t.read("flood", "1", gated(&starts, &gate)));
        let b = t.read("flood", "2", gated(&starts, &gate));
        futures_util::pin_mut!(b);
        assert!(futures_util::poll!(a.as_mut()).is_pending());
        assert!(futures_util::poll!(b.as_mut()).is_pending());
        let e = t
            .read("flood", "3", gated(&starts, &gate))
            .await
            .err()
            .map(|e| e.code);
        assert_eq!(e, Some(429));
        // Another key still reads; then the server's bound of 3 is reached.
        let c = t.read("admin", "4", gated(&starts, &gate));
        futures_util::pin_mut!(c);
        assert!(futures_util::poll!(c.as_mut()).is_pending());
        let e = t.read("admin", "5", gated(&starts, &gate)).await.err();
        assert_eq!(e.map(|e| e.code), Some(429));
        // Joining a read in flight costs no distinct slot.
        let d = t.read("admin", "4", gated(&starts, &gate));
        futures_util::pin_mut!(d);
        assert!(futures_util::poll!(d.as_mut()).is_pending());
        drop(a);
        // The flood's slot is given back when its request goes away.
        let e = t.read("flood", "6", gated(&starts, &gate));
        futures_util::pin_mut!(e);
        assert!(futures_util::poll!(e.as_mut()).is_pending());
    }
}
