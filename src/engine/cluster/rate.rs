//! Rate limits shared by a cluster's replicas: one token bucket per API
//! key in the KV bucket [`RATE_BUCKET`], taken from by compare-and-set, so
//! N replicas allow a key its limit once, not N times. The refill is
//! reckoned on the replicas' clocks, which `/health` shows within
//! `--max-clock-skew` of the NATS server's: a skew of seconds moves a
//! per-minute bucket by a fraction of a token.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::model::cluster::token;
use crate::remote::nats::{Nats, NatsError};

/// The KV bucket of the replicas' token buckets.
pub const RATE_BUCKET: &str = "drover_rate";
/// An idle key's bucket is full again long before its entry ages out.
const IDLE_AGE: Duration = Duration::from_secs(600);
/// Compare-and-set attempts before a take gives up (another replica took
/// from the same bucket in between each time).
const TRIES: usize = 8;
/// Bound on one KV call.
const CALL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Bucket {
    tokens: f64,
    /// When it was last taken from (ms since the Unix epoch).
    at_ms: u64,
}

/// Token buckets in NATS KV.
#[derive(Clone)]
pub struct KvRate {
    store: kv::Store,
    per_minute: u32,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl KvRate {
    /// The buckets over `nats`, `per_minute` mutations per key in bursts of
    /// as many.
    pub async fn open(nats: &Nats, per_minute: u32) -> Result<KvRate, NatsError> {
        let store = tokio::time::timeout(CALL * 3, nats.bucket(RATE_BUCKET, IDLE_AGE))
            .await
            .map_err(|_| NatsError(format!("KV bucket {RATE_BUCKET} did not answer")))??;
        Ok(KvRate { store, per_minute })
    }

    /// Take one token for `key`: Ok(Ok) taken, Ok(Err(s)) none for `s`
    /// seconds, Err: the buckets could not be reached.
    pub async fn take(&self, key: &str) -> Result<Result<(), u64>, NatsError> {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let k = token(key);
        for _ in 0..TRIES {
            let entry = tokio::time::timeout(CALL, self.store.entry(&k))
                .await
                .map_err(|_| NatsError("rate limits: no answer".into()))?
                .map_err(|e| NatsError(format!("rate limits: {e}")))?
                .filter(|e| e.operation == kv::Operation::Put);
            let now = now_ms();
            let (tokens, revision) = match &entry {
                Some(e) => match serde_json::from_slice::<Bucket>(&e.value) {
                    Ok(b) => {
                        let gained = now.saturating_sub(b.at_ms) as f64 / 1000.0 * rate;
                        ((b.tokens + gained).min(cap), Some(e.revision))
                    }
                    Err(_) => (cap, Some(e.revision)),
                },
                None => (cap, None),
            };
            if tokens < 1.0 {
                return Ok(Err(((1.0 - tokens) / rate).ceil().max(1.0) as u64));
            }
            let next = serde_json::to_vec(&Bucket {
                tokens: tokens - 1.0,
                at_ms: now,
            })
            .map_err(|e| NatsError(e.to_string()))?;
            let written = match revision {
                Some(rev) => tokio::time::timeout(CALL, self.store.update(&k, next.into(), rev))
                    .await
                    .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                None => tokio::time::timeout(CALL, self.store.create(&k, next.into()))
                    .await
                    .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            };
            match written {
                Ok(Ok(())) => return Ok(Ok(())),
                // Another replica wrote first: read again.
                Ok(Err(_)) => continue,
                Err(_) => return Err(NatsError("rate limits: no answer".into())),
            }
        }
        Err(NatsError("rate limits: too many concurrent takers".into()))
    }
}
