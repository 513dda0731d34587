//! The finished jobs a [`DirJobs`](super::DirJobs) keeps: summaries
//! indexed by start, finishing order and end time, and the retention that
//! expires them (their report and journal deleted), so neither memory nor
//! a listing's cost grows with the history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Entry, JobStatus};
use crate::engine::journal::Journal;
use crate::model::report::JobReport;

/// How many finished jobs a [`DirJobs`] keeps, and for how long. Running
/// jobs are never counted nor removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many finished jobs: past it, the one that finished
    /// first goes (its report and journal deleted from the directory).
    pub keep: usize,
    /// A finished job goes once it ended this long ago; None: no age limit.
    pub max_age: Option<Duration>,
}

/// `drover serve --keep-jobs`'s default.
pub const DEFAULT_KEEP_JOBS: usize = 1000;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: DEFAULT_KEEP_JOBS,
            max_age: None,
        }
    }
}

/// Listing order: newest start first, the id breaking ties.
pub(super) type Key = (String, String);

/// A finished job as the index holds it: what listing, filtering and
/// expiring need, and where its report is. Never its results: those are
/// read from the report for the page asked for.
#[derive(Debug)]
pub(super) struct Done {
    /// Order of finishing (at open: of `finished_at`); the lowest goes
    /// first when over the count.
    pub(super) seq: u64,
    pub(super) outcome: JobStatus,
    /// Sorted, deduplicated: what a scoped key's `within` is checked on.
    pub(super) hosts: Vec<String>,
    /// `finished_at` in Unix seconds; None (unreadable) is never too old.
    pub(super) finished: Option<i64>,
    pub(super) report: PathBuf,
}

/// Every job the store knows: the running ones whole, the finished ones as
/// summaries, bounded by the retention.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) running: Vec<Arc<Entry>>,
    pub(super) done: BTreeMap<Key, Done>,
    /// Job id to its key in `done`.
    pub(super) by_id: HashMap<String, String>,
    /// Finishing order to key: the oldest first.
    pub(super) by_seq: BTreeMap<u64, Key>,
    /// (finished, seq) of those with a readable `finished_at`: the first
    /// is the one to expire by age.
    pub(super) by_end: BTreeSet<(i64, u64)>,
    pub(super) next_seq: u64,
}

impl Index {
    /// Add a finished job; false (and nothing added) if its id is known.
    pub(super) fn insert(&mut self, job_id: &str, started_at: &str, mut done: Done) -> bool {
        if self.by_id.contains_key(job_id) {
            return false;
        }
        done.seq = self.next_seq;
        self.next_seq += 1;
        let key = (started_at.to_string(), job_id.to_string());
        self.by_id
            .insert(job_id.to_string(), started_at.to_string());
        self.by_seq.insert(done.seq, key.clone());
        if let Some(f) = done.finished {
            self.by_end.insert((f, done.seq));
        }
        self.done.insert(key, done);
        true
    }

    /// Drop a finished job's summary (its files stay).
    pub(super) fn forget(&mut self, job_id: &str) {
        let Some(started) = self.by_id.get(job_id).cloned() else {
            return;
        };
        if let Some(seq) = self.done.get(&(started, job_id.to_string())).map(|d| d.seq) {
            self.remove_seq(seq);
        }
    }

    pub(super) fn remove_seq(&mut self, seq: u64) -> Option<Done> {
        let key = self.by_seq.remove(&seq)?;
        let done = self.done.remove(&key)?;
        self.by_id.remove(&key.1);
        if let Some(f) = done.finished {
            self.by_end.remove(&(f, seq));
        }
        Some(done)
    }

    /// Remove the finished jobs past `r` at `now` (Unix seconds); returns
    /// their report files, to delete.
    pub(super) fn expire(&mut self, r: &Retention, now: i64) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        if let Some(age) = r.max_age {
            let cutoff = now.saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
            while let Some(&(f, seq)) = self.by_end.first() {
                if f >= cutoff {
                    break;
                }
                gone.extend(self.remove_seq(seq).map(|d| d.report));
            }
        }
        while self.done.len() > r.keep {
            let Some((&seq, _)) = self.by_seq.first_key_value() else {
                break;
            };
            gone.extend(self.remove_seq(seq).map(|d| d.report));
        }
        gone
    }
}

/// Delete expired jobs' reports and journals.
pub(super) fn delete(reports: Vec<PathBuf>) {
    if reports.is_empty() {
        return;
    }
    tracing::info!(
        jobs = reports.len(),
        "jobs dir: expired job reports deleted"
    );
    for report in reports {
        for path in [Journal::beside(&report), report] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("jobs dir: cannot delete {}: {e}", path.display()),
            }
        }
    }
}

fn unix_seconds(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

pub(super) fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The summary of a finished job whose report is at `report`.
pub(super) fn done_of(r: &JobReport, hosts: Vec<String>, report: PathBuf) -> Done {
    let mut hosts = hosts;
    hosts.sort();
    hosts.dedup();
    Done {
        seq: 0,
        outcome: r.outcome.into(),
        hosts,
        finished: unix_seconds(&r.finished_at),
        report,
    }
}

/// Whether every host is in `within` (None: no bound).
pub(super) fn inside(hosts: &[String], within: Option<&BTreeSet<String>>) -> bool {
    within.is_none_or(|w| hosts.iter().all(|h| w.contains(h)))
}
