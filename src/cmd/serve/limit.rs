//! Mutations per key: a token bucket each, so a runaway script or a
//! leaked key cannot restart a fleet in a loop. Reads are not limited.
//! [`RateLimiter`] is the seam the server holds; [`TokenBuckets`] counts
//! in this process (a limit shared by several servers implements it too).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How mutations are counted against a key.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Take one token for `key` (a key's name), or the whole seconds until
    /// there is one.
    async fn check(&self, key: &str) -> Result<(), u64>;
}

#[async_trait::async_trait]
impl RateLimiter for TokenBuckets {
    async fn check(&self, key: &str) -> Result<(), u64> {
        TokenBuckets::check(self, key)
    }
}

/// A cluster's limits: the replicas' shared buckets in NATS KV (opened at
/// first use); while NATS does not answer, this replica's own buckets
/// (each replica then allows the limit: degraded, never unlimited).
pub struct SharedBuckets {
    nats: crate::remote::nats::Nats,
    per_minute: u32,
    kv: tokio::sync::OnceCell<crate::engine::cluster::rate::KvRate>,
    local: TokenBuckets,
}

impl SharedBuckets {
    /// `per_minute` per key across the replicas on `nats`.
    pub fn new(nats: crate::remote::nats::Nats, per_minute: u32) -> Self {
        SharedBuckets {
            nats,
            per_minute,
            kv: tokio::sync::OnceCell::new(),
            local: TokenBuckets::new(per_minute),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for SharedBuckets {
    async fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let kv = self
            .kv
            .get_or_try_init(|| {
                crate::engine::cluster::rate::KvRate::open(&self.nats, self.per_minute)
            })
            .await;
        let taken = match kv {
            Ok(kv) => kv.take(key).await,
            Err(e) => Err(e),
        };
        match taken {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("shared rate limits unreachable ({e}); counting on this replica");
                self.local.check(key)
            }
        }
    }
}

/// Buckets by key name, in this process's memory.
pub struct TokenBuckets {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl TokenBuckets {
    /// `per_minute` mutations per key, in bursts of as many; 0: no limit.
    pub fn new(per_minute: u32) -> Self {
        TokenBuckets {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `key`, or the whole seconds until there is one.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = b.entry(key.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_limit_is_told_when_to_retry() {
        let l = TokenBuckets::new(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(l.check("b").is_ok(), "buckets are per key");
        assert!(TokenBuckets::new(0).check("a").is_ok());
    }
}
