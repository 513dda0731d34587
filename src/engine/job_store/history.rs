//! The finished jobs a [`DirJobs`](super::DirJobs) keeps: summaries
//! indexed by start, finishing order and end time, and the retention that
//! expires them (their report and journal deleted), so neither memory nor
//! a listing's cost grows with the history. Every job as a summary, and a
//! finished job deleted on request, come from the same index.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{DirJobs, Entry, JobProgress, JobStatus};
use crate::engine::journal::Journal;
use crate::model::report::{HostTally, JobReport};

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
    /// The playbook's name, for the page's history filter.
    pub(super) playbook: String,
    /// Sorted, deduplicated: what a scoped key's `within` is checked on.
    pub(super) hosts: Vec<String>,
    /// `finished_at` in Unix seconds; None (unreadable) is never too old.
    pub(super) finished: Option<i64>,
    pub(super) report: PathBuf,
    /// How its hosts ended.
    pub(super) tally: HostTally,
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
    /// The steps and result times of the last [`KEEP_TIMINGS`] jobs that
    /// ended in this process, oldest first: the report does not keep
    /// them, and without them a job's page would lose its timeline's time
    /// scale the moment the job ends.
    timings: VecDeque<(String, Arc<JobProgress>)>,
}

/// Finished jobs whose timings an [`Index`] keeps: a bound on memory
/// (a job's are a number per result), enough for the jobs an operator is
/// watching when they end.
pub(super) const KEEP_TIMINGS: usize = 32;

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

    /// Keep the timings of a job that just ended here (the oldest kept go
    /// past [`KEEP_TIMINGS`]).
    pub(super) fn keep_timing(&mut self, job_id: &str, progress: JobProgress) {
        self.timings.retain(|(id, _)| id != job_id);
        if self.timings.len() >= KEEP_TIMINGS {
            self.timings.pop_front();
        }
        self.timings
            .push_back((job_id.to_string(), Arc::new(progress)));
    }

    /// The timings kept for `job_id`, if it ended here recently.
    pub(super) fn timing(&self, job_id: &str) -> Option<Arc<JobProgress>> {
        self.timings
            .iter()
            .find(|(id, _)| id == job_id)
            .map(|(_, p)| p.clone())
    }

    /// Drop a finished job's summary (its files stay).
    pub(super) fn forget(&mut self, job_id: &str) {
        self.timings.retain(|(id, _)| id != job_id);
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

/// Delete jobs' reports and journals: `why` they go, for the log.
pub(super) fn delete(reports: Vec<PathBuf>, why: &str) {
    if reports.is_empty() {
        return;
    }
    tracing::info!(jobs = reports.len(), "jobs dir: {why} job reports deleted");
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
        playbook: r.playbook.clone(),
        hosts,
        finished: unix_seconds(&r.finished_at),
        report,
        tally: HostTally::of(&r.results),
    }
}

/// Whether every host is in `within` (None: no bound).
pub(super) fn inside(hosts: &[String], within: Option<&BTreeSet<String>>) -> bool {
    within.is_none_or(|w| hosts.iter().all(|h| w.contains(h)))
}

/// A job as [`JobStore::summaries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// Its id.
    pub job_id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Where it is.
    pub outcome: JobStatus,
    /// How its hosts ended (so far, while it runs).
    pub hosts: HostTally,
}

/// What [`JobStore::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The job's report and journal are deleted; it is no longer listed.
    Deleted,
    /// The job is running: nothing was deleted.
    Running,
    /// No such job.
    Unknown,
}

impl DirJobs {
    /// Every job within `within`, newest first, from the index alone.
    pub fn summaries(&self, within: Option<&BTreeSet<String>>) -> Vec<JobSummary> {
        let idx = self.index();
        let mut out: Vec<JobSummary> = idx
            .running
            .iter()
            .filter(|e| e.within(within))
            .map(|e| {
                let s = e.state();
                JobSummary {
                    job_id: s.view.job_id.clone(),
                    started_at: s.view.started_at.clone(),
                    outcome: s.view.outcome,
                    hosts: HostTally::of(&s.view.results),
                }
            })
            .collect();
        out.extend(
            idx.done
                .iter()
                .filter(|(_, d)| inside(&d.hosts, within))
                .map(|((started_at, job_id), d)| JobSummary {
                    job_id: job_id.clone(),
                    started_at: started_at.clone(),
                    outcome: d.outcome,
                    hosts: d.tally,
                }),
        );
        // Newest first, as listings are; the id breaks ties.
        out.sort_by(|a, b| (&b.started_at, &b.job_id).cmp(&(&a.started_at, &a.job_id)));
        out
    }

    /// Delete a finished job's report and journal, under the index's lock
    /// (so a listing never shows a job whose files are gone).
    pub fn remove(&self, id: &str) -> Removed {
        let mut idx = self.index();
        if idx.running.iter().any(|e| e.state().view.job_id == id) {
            return Removed::Running;
        }
        let Some(started) = idx.by_id.get(id).cloned() else {
            return Removed::Unknown;
        };
        let Some(seq) = idx.done.get(&(started, id.to_string())).map(|d| d.seq) else {
            return Removed::Unknown;
        };
        if let Some(d) = idx.remove_seq(seq) {
            delete(vec![d.report], "requested");
        }
        Removed::Deleted
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::journal::save_report;
    use crate::model::report::{JobResult, RunOutcome};

    /// A finished job's report in `dir`: started at `started`, with one
    /// result per (host, failed).
    fn report_in(dir: &Path, id: &str, started: &str, results: &[(&str, bool)]) {
        use crate::model::outcome::{Failure, Outcome};
        let secrets = crate::model::secret::Secrets::new();
        let results = results
            .iter()
            .map(|(h, failed)| {
                let o = if *failed {
                    Outcome::failed(Failure::JobFailed("job failed".into()))
                } else {
                    Outcome::Ok { changed: true }
                };
                JobResult::new(h, "s", "u.service", &o, &secrets)
            })
            .collect();
        let r = JobReport {
            job_id: id.into(),
            playbook: "p".into(),
            started_at: started.into(),
            finished_at: started.into(),
            outcome: RunOutcome::Completed,
            results,
            inputs: None,
            retry_of: None,
        };
        save_report(&r, &dir.join(format!("{id}.json"))).unwrap();
        std::fs::write(Journal::beside(&dir.join(format!("{id}.json"))), "{}\n").unwrap();
    }

    #[test]
    fn summaries_tally_hosts_and_a_removed_job_is_gone_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        report_in(dir.path(), "old", "2024-01-01T00:00:00Z", &[("a", false)]);
        report_in(
            dir.path(),
            "new",
            "2024-01-02T00:00:00Z",
            &[("a", false), ("b", true), ("b", false)],
        );
        let jobs = DirJobs::open(dir.path(), Retention::default()).unwrap();
        let all = jobs.summaries(None);
        let ids: Vec<&str> = all.iter().map(|s| s.job_id.as_str()).collect();
        assert_eq!(ids, ["new", "old"]);
        assert_eq!(
            all[0].hosts,
            HostTally {
                ok: 1,
                failed: 1,
                skipped: 0
            }
        );
        assert_eq!(all[1].outcome, JobStatus::Completed);
        let only_a = BTreeSet::from(["a".to_string()]);
        assert_eq!(jobs.summaries(Some(&only_a)).len(), 1);
        assert_eq!(jobs.remove("new"), Removed::Deleted);
        assert!(!dir.path().join("new.json").exists());
        assert!(!Journal::beside(&dir.path().join("new.json")).exists());
        assert!(jobs.get("new").is_none());
        assert_eq!(jobs.remove("new"), Removed::Unknown);
        assert_eq!(jobs.summaries(None).len(), 1);
        assert!(dir.path().join("old.json").exists());
    }

    #[test]
    fn a_job_that_ended_here_keeps_its_timings_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        report_in(dir.path(), "j", "2024-01-01T00:00:00Z", &[("a", false)]);
        report_in(dir.path(), "k", "2024-01-02T00:00:00Z", &[("a", false)]);
        let jobs = DirJobs::open(dir.path(), Retention::default()).unwrap();
        let timed = JobProgress {
            steps: Vec::new(),
            ended_ms: vec![40],
        };
        jobs.index().keep_timing("j", timed.clone());
        assert_eq!(jobs.get("j").unwrap().progress(), timed);
        // Read from its report only: no times.
        assert_eq!(jobs.get("k").unwrap().progress(), JobProgress::default());
        // Past the bound the oldest kept go first.
        for i in 0..KEEP_TIMINGS {
            jobs.index().keep_timing(&format!("x{i}"), JobProgress::default());
        }
        assert_eq!(jobs.get("j").unwrap().progress(), JobProgress::default());
        assert_eq!(jobs.index().timings.len(), KEEP_TIMINGS);
    }
}
