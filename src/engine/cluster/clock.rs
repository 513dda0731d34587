//! A replica's clock against the NATS server's.
//!
//! Windows are read on the clock of whoever plans or coordinates: a
//! replica whose clock is an hour off would plan a roll the window
//! forbids. JetStream stamps each stored message with the server's time,
//! so a replica writes an entry to [`CLOCK_BUCKET`] and reads the stamp
//! back: the server stored it between the write's start and its ack, so
//! the midpoint of the two, on this clock, against the stamp is the skew,
//! within half the round trip. No client clock is compared with another
//! client's, and no entry's age is judged by this clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::cluster::CLOCK_BUCKET;
use crate::remote::nats::Nats;

/// How often the skew is measured.
const EVERY: Duration = Duration::from_secs(10);
/// Samples per measurement; the one with the shortest round trip counts.
const SAMPLES: usize = 3;
/// Bound on one write or read of the bucket.
const CALL: Duration = Duration::from_secs(5);

/// What `/health` says of the clock.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClockReport {
    /// This clock minus the NATS server's, in milliseconds (positive:
    /// this one is ahead). Absent until measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skew_ms: Option<i64>,
    /// How far the measurement may be off (half the round trip).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertainty_ms: Option<u64>,
    /// The skew beyond which this replica refuses to plan (`--max-clock-skew`).
    pub bound_ms: u64,
    /// When it was last measured (this clock, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<String>,
    /// Why the last measurement failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Within the bound (or not measured yet: unknown is not refused).
    pub ok: bool,
}

/// One measurement: skew and uncertainty in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// This clock minus the server's.
    pub skew_ms: i64,
    /// Half the round trip.
    pub uncertainty_ms: u64,
}

impl Skew {
    /// From a write begun at `sent` and acknowledged at `acked` (this
    /// clock), which the server stamped `stamped`.
    pub fn of(sent: DateTime<Utc>, acked: DateTime<Utc>, stamped: DateTime<Utc>) -> Skew {
        let half = (acked - sent) / 2;
        let mid = sent + half;
        Skew {
            skew_ms: (mid - stamped).num_milliseconds(),
            uncertainty_ms: u64::try_from(half.num_milliseconds()).unwrap_or(0),
        }
    }

    /// Certainly beyond `bound`: even the most favourable reading of the
    /// measurement is.
    pub fn beyond(&self, bound: Duration) -> bool {
        self.skew_ms.unsigned_abs().saturating_sub(self.uncertainty_ms)
            > u64::try_from(bound.as_millis()).unwrap_or(u64::MAX)
    }
}

struct Last {
    skew: Result<Skew, String>,
    at: DateTime<Utc>,
}

/// The replica's clock, measured in the background.
pub struct ClockWatch {
    bound: Duration,
    last: Mutex<Option<Last>>,
}

impl ClockWatch {
    /// Measure now and every 10 s, as `key` in the clock bucket.
    pub fn spawn(nats: Nats, key: String, bound: Duration) -> Arc<ClockWatch> {
        let watch = Arc::new(ClockWatch {
            bound,
            last: Mutex::new(None),
        });
        let w = watch.clone();
        tokio::spawn(async move {
            let mut store = None;
            loop {
                if store.is_none() {
                    match tokio::time::timeout(CALL, nats.bucket(CLOCK_BUCKET, Duration::from_secs(60)))
                        .await
                    {
                        Ok(Ok(s)) => store = Some(s),
                        Ok(Err(e)) => w.set(Err(e.to_string())),
                        Err(_) => w.set(Err("the clock bucket did not answer within 5s".into())),
                    }
                }
                if let Some(s) = &store {
                    let r = measure(s, &key).await;
                    if let Err(e) = &r {
                        tracing::warn!("cannot measure the clock against NATS: {e}");
                    }
                    w.set(r);
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        watch
    }

    fn set(&self, skew: Result<Skew, String>) {
        if let Ok(s) = &skew {
            if s.beyond(self.bound) {
                tracing::error!(
                    skew_ms = s.skew_ms,
                    "this clock is off the NATS server's by more than {}: dry runs are refused until it is set right",
                    humantime::format_duration(self.bound)
                );
            }
        }
        if let Ok(mut g) = self.last.lock() {
            *g = Some(Last {
                skew,
                at: Utc::now(),
            });
        }
    }

    /// For `/health`.
    pub fn report(&self) -> ClockReport {
        let bound_ms = u64::try_from(self.bound.as_millis()).unwrap_or(u64::MAX);
        let g = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = g.as_ref() else {
            return ClockReport {
                skew_ms: None,
                uncertainty_ms: None,
                bound_ms,
                measured_at: None,
                error: None,
                ok: true,
            };
        };
        let at = Some(last.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        match &last.skew {
            Ok(s) => ClockReport {
                skew_ms: Some(s.skew_ms),
                uncertainty_ms: Some(s.uncertainty_ms),
                bound_ms,
                measured_at: at,
                error: None,
                ok: !s.beyond(self.bound),
            },
            Err(e) => ClockReport {
                skew_ms: None,
                uncertainty_ms: None,
                bound_ms,
                measured_at: at,
                error: Some(e.clone()),
                ok: true,
            },
        }
    }

    /// Why this replica must not plan now: its clock was last measured
    /// beyond the bound.
    pub fn refusal(&self) -> Option<String> {
        let r = self.report();
        match (r.ok, r.skew_ms) {
            (false, Some(skew)) => Some(format!(
                "this replica's clock is {} ms off the NATS server's (bound {} ms), and windows are read on it: set its clock right (NTP), or use another replica",
                skew, r.bound_ms
            )),
            _ => None,
        }
    }
}

/// The best of [`SAMPLES`] writes: the one with the shortest round trip.
async fn measure(store: &async_nats::jetstream::kv::Store, key: &str) -> Result<Skew, String> {
    let mut best: Option<Skew> = None;
    for _ in 0..SAMPLES {
        let sent = Utc::now();
        match tokio::time::timeout(CALL, store.put(key, Vec::<u8>::new().into())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("writing to {CLOCK_BUCKET}: {e}")),
            Err(_) => return Err(format!("{CLOCK_BUCKET} did not answer within 5s")),
        }
        let acked = Utc::now();
        let entry = match tokio::time::timeout(CALL, store.entry(key)).await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => return Err(format!("{CLOCK_BUCKET}: the entry just written is gone")),
            Ok(Err(e)) => return Err(format!("reading {CLOCK_BUCKET}: {e}")),
            Err(_) => return Err(format!("{CLOCK_BUCKET} did not answer within 5s")),
        };
        let nanos = entry.created.unix_timestamp_nanos();
        let stamped = DateTime::<Utc>::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
        let s = Skew::of(sent, acked, stamped);
        if best.is_none_or(|b| s.uncertainty_ms < b.uncertainty_ms) {
            best = Some(s);
        }
    }
    best.ok_or_else(|| "no sample".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn the_skew_is_the_midpoint_against_the_stamp_within_half_the_trip() {
        // Sent at 0, acked at 10 (this clock); the server stamped 2 on its
        // own: this clock is 3 ms ahead, give or take 5.
        let s = Skew::of(at(0), at(10), at(2));
        assert_eq!(s, Skew { skew_ms: 3, uncertainty_ms: 5 });
        // An hour behind.
        let s = Skew::of(at(0), at(4), at(3_600_002));
        assert_eq!(s.skew_ms, -3_600_000);
        assert!(s.beyond(Duration::from_secs(2)));
    }

    #[test]
    fn only_a_skew_certainly_past_the_bound_is_beyond_it() {
        let bound = Duration::from_millis(1000);
        assert!(!Skew { skew_ms: 1400, uncertainty_ms: 500 }.beyond(bound));
        assert!(Skew { skew_ms: -1600, uncertainty_ms: 500 }.beyond(bound));
        assert!(!Skew { skew_ms: 1000, uncertainty_ms: 0 }.beyond(bound));
    }
}
