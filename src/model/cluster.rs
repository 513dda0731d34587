//! Cluster mode's pure rules: how names become NATS subject tokens and KV
//! keys, which worker owns a host (rendezvous hashing of host buckets over
//! the live workers of a region), and the messages replicas and workers
//! exchange. No I/O: `remote::nats` carries them, `engine::cluster` acts
//! on them. The subjects, buckets and leases are described in the book's
//! cluster page (docs/src/guide/cluster.md).

use serde::{Deserialize, Serialize};

use crate::model::facts::HostFacts;
use crate::model::logs::{LogEntry, LogQuery, Since};

/// Version of the messages below; a peer that speaks another is refused.
pub const PROTOCOL: u32 = 1;

/// The KV bucket of live workers: one entry per worker, put again every
/// third of the lease TTL, gone (the bucket's max age) when it stops.
pub const WORKERS_BUCKET: &str = "drover_workers";

/// The KV bucket of leases: one entry per (region, host bucket), holding
/// the owning worker; renewed by compare-and-set, gone when not renewed.
pub const LEASES_BUCKET: &str = "drover_leases";

/// The KV bucket a replica writes to, to learn the NATS server's clock
/// from the time JetStream stamps on the entry.
pub const CLOCK_BUCKET: &str = "drover_clock";

/// The KV bucket of claims: one key per (host, unit) or runbook a run
/// holds, taken by compare-and-set, renewed by its holder.
pub const CLAIMS_BUCKET: &str = "drover_claims";

/// The KV bucket of job leases: one entry per running job, holding the
/// replica that coordinates it and what another needs to take it over;
/// renewed by compare-and-set, gone when its replica stops renewing.
pub const JOB_LEASES_BUCKET: &str = "drover_job_leases";

/// A job lease's value: who coordinates the job, and the job as a
/// replica that takes it over rebuilds it (its results so far come from
/// the jobs stream).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLease {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The coordinating replica.
    pub by: String,
    /// The job as its tasks carry it, secret parameters left out (no
    /// bucket holds a secret): a job with one is not taken over.
    pub job: TaskJob,
    /// The hosts the job was built over when its key was scoped to some
    /// (None: the whole inventory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
    /// Run outside the playbook's window (an admin asked).
    #[serde(default)]
    pub ignore_window: bool,
    /// Secret parameters were bound, and are not here.
    #[serde(default)]
    pub secret: bool,
    /// The job it retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
}

// The lease holds parameter values.
impl std::fmt::Debug for JobLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLease")
            .field("by", &self.by)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// The JetStream stream of jobs: per job, its start, each result in
/// order and its end, on the job's subject ([`job_subject`]); every
/// replica follows it, so any replica shows any job.
pub const JOBS_STREAM: &str = "DROVER_JOBS";

/// A job's subject in [`JOBS_STREAM`].
pub fn job_subject(job_id: &str) -> String {
    format!("drover.jobs.{}", token(job_id))
}

/// What a job's subject carries, in order: its start, its results (each
/// with its index, so a result delivered twice is shown once), its end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JobMessage {
    /// The job started.
    Start {
        /// Its id.
        job_id: String,
        /// The playbook's name.
        playbook: String,
        /// When (RFC 3339).
        started_at: String,
        /// Every host it may touch.
        hosts: Vec<String>,
        /// The job it retries.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_of: Option<String>,
        /// The replica coordinating it.
        by: String,
    },
    /// Its `index`-th result (from 0).
    Result {
        /// The job.
        job_id: String,
        /// The result's index.
        index: usize,
        /// The result.
        result: crate::model::report::JobResult,
    },
    /// It ended with this report.
    End {
        /// The report.
        report: crate::model::report::JobReport,
    },
}

/// Host buckets per region: leases are taken per bucket, so a fleet of
/// 100,000 hosts renews 64 keys per region, not 100,000.
pub const HOST_BUCKETS: u32 = 64;

/// The subject a host's reads are asked on, in its region (the owning
/// workers' `--region` selector, empty for workers of every host); its
/// owner answers. The region comes first so that NATS permissions can
/// give a region's credentials `drover.read.<region>.>` and no more.
pub fn read_subject(region: &str, host: &str) -> String {
    format!("drover.read.{}.{}", token(region), token(host))
}

/// The subject a host's tasks (a job's work on it) are sent on, in its
/// region; its owner takes them. Beside reads, so that a region's
/// credentials get `drover.task.<region>.>` and no other region's.
pub fn task_subject(region: &str, host: &str) -> String {
    format!("drover.task.{}.{}", token(region), token(host))
}

/// Which of the regions the live workers announce a host is asked in:
/// the first (in name order) of the non-empty ones whose selector matches
/// it, else the empty region (workers of every host). `matches` says
/// whether a region's selector matches the host.
pub fn region_of(regions: &[String], matches: impl Fn(&str) -> bool) -> &str {
    regions
        .iter()
        .filter(|r| !r.is_empty() && matches(r))
        .min()
        .map(String::as_str)
        .unwrap_or("")
}

/// A name as one subject token or key segment: ASCII letters, digits and
/// `-` stay; every other byte (`.`, `*`, `>`, `_`, spaces, UTF-8) becomes
/// `_xx`. Injective, so two hosts never share a subject; never empty.
pub fn token(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is
/// not), so every replica and worker computes the same owners.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly: finish as splitmix64 does.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The host bucket a host falls in.
pub fn bucket_of(host: &str) -> u32 {
    (fnv(&[host.as_bytes()]) % u64::from(HOST_BUCKETS)) as u32
}

/// The worker that should own `bucket`: the highest score of the live
/// workers (rendezvous hashing), so a worker joining or leaving moves only
/// the buckets it wins or held.
pub fn owner_of<'a>(bucket: u32, workers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let b = bucket.to_be_bytes();
    workers
        .into_iter()
        .max_by_key(|w| (fnv(&[w.as_bytes(), &b]), *w))
}

/// The key of a region's bucket lease.
pub fn lease_key(region: &str, bucket: u32) -> String {
    format!("{}.{bucket}", token(region))
}

/// A worker, as it announces itself in [`WORKERS_BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInfo {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// Its name (unique among live workers).
    pub name: String,
    /// The selector of the hosts it works (empty: all).
    pub region: String,
    /// The inventory it holds (its digest).
    pub inventory: String,
}

/// A lease's value: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The worker's name.
    pub worker: String,
}

/// Which units a read asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadUnits {
    /// These (validated unit names).
    These(Vec<String>),
    /// Every loaded service.
    Loaded,
    /// Every service unit, loaded or not.
    All,
}

/// A read of one host, asked of its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The inventory the asker resolved the host in (its digest): a worker
    /// holding another refuses, rather than read a host by another address.
    pub inventory: String,
    /// The host (its inventory name).
    pub host: String,
    /// What to read.
    pub units: ReadUnits,
    /// The unit files to read too (a `unit:` step's), by unit name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Read the host itself, never the worker's snapshot: a dry run reads
    /// what an apply would find, as a single server's does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_host: bool,
    /// A read of the unit's journal instead of facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsAsk>,
}

/// A journal read as it travels: the fields a caller gives, validated
/// again by the worker (text from the network is data to check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsAsk {
    /// The unit.
    pub unit: String,
    /// The newest this many entries.
    pub lines: u32,
    /// Only entries from then on ([`Since::wire`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only entries at this priority (0 to 7) or more urgent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

impl LogsAsk {
    /// `q`, to send.
    pub fn of(q: &LogQuery) -> Self {
        LogsAsk {
            unit: q.unit.to_string(),
            lines: q.lines,
            since: q.since.as_ref().map(Since::wire),
            priority: q.priority.map(|p| p.level().to_string()),
        }
    }

    /// The query again, validated as a caller's is.
    pub fn query(&self) -> Result<LogQuery, String> {
        LogQuery::parse(
            &self.unit,
            self.lines,
            self.since.as_deref(),
            self.priority.as_deref(),
        )
    }
}

/// A worker's answer to a journal read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsReply {
    /// Oldest first.
    pub entries: Vec<LogEntry>,
    /// The read stopped at its byte or time bound.
    pub truncated: bool,
    /// No entry, and systemd on the host does not know the unit.
    pub unit_unknown: bool,
    /// Why the host could not be read.
    pub error: Option<String>,
    /// The host could not be reached (vs. a read that failed).
    pub unreachable: bool,
}

/// A worker's answer to a [`ReadRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ReadReply {
    /// The host's facts (unreachable hosts included, with their error).
    Facts {
        /// As `drover facts` records them.
        facts: HostFacts,
        /// The host could not be reached (vs. read and failed).
        unreachable: bool,
    },
    /// The unit's journal entries.
    Logs(LogsReply),
    /// The worker refused the request (why).
    Refused(String),
}

/// The job a task belongs to, as its coordinator holds it: the playbook's
/// text and bound parameter values travel with every task (never stored
/// in a bucket: secret parameters are among them); the worker parses them
/// again, once per job, and refuses a task whose digests they do not give.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskJob {
    /// The job's id.
    pub job_id: String,
    /// The playbook's label (its path on the coordinator), for errors.
    pub label: String,
    /// The playbook's text.
    pub text: String,
    /// The parameters as bound on the coordinator.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Digest of the playbook.
    pub playbook: String,
    /// Digest of the inventory.
    pub inventory: String,
    /// Digest of the bound parameters.
    pub params_digest: String,
    /// `--limit` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Stop/restart/mask protected units.
    #[serde(default)]
    pub allow_protected: bool,
    /// The step's time bound on the host, in milliseconds.
    pub step_timeout_ms: u64,
    /// Journal lines a failed service step's result carries.
    #[serde(default)]
    pub failure_logs: u32,
}

// Parameter values may be secret.
impl std::fmt::Debug for TaskJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskJob")
            .field("job_id", &self.job_id)
            .field("playbook", &self.playbook)
            .finish_non_exhaustive()
    }
}

/// What a task asks of a host's owner: one of the walk's questions about
/// one host, answered from the host by the worker's warm connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskOp {
    /// Connect, and read the host's maintenance flags (a linear walk's
    /// survey, or a free walk's first connection).
    Connect,
    /// Whether the host, or the unit, is in maintenance.
    Maintenance {
        /// The unit.
        unit: String,
    },
    /// Whether the host is in service for `unit` (`group_by`).
    InService {
        /// The unit.
        unit: String,
        /// A member of the group the step does not work on.
        member_only: bool,
    },
    /// The step's work on the host.
    Work {
        /// The step's index.
        step: usize,
        /// The step the host failed at (an `on_failure` step's text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_at: Option<String>,
        /// Sent again after its first owner went silent mid-work: the host
        /// is read first, and what the intent left on the host shows done
        /// is not done again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        again: bool,
    },
    /// Whether the owner is working on the step's work for the host now
    /// (a coordinator's check on a task that has not answered yet).
    Working {
        /// The step's index.
        step: usize,
    },
}

/// The name of the intent file a worker leaves on a host before it
/// changes it for `job`'s `step`: subject-token characters only, so it is
/// safe as a file name.
pub fn intent_name(job_id: &str, step: usize) -> String {
    format!("{}.{step}", token(job_id))
}

/// A task: one op of one job on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The job.
    pub job: TaskJob,
    /// The host (its inventory name).
    pub host: String,
    /// What to do.
    pub op: TaskOp,
}

/// A worker's answer to a [`TaskRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskReply {
    /// [`TaskOp::Connect`]: `Err` why the host is unreachable.
    Connected {
        /// Connected, or why not.
        result: Result<(), String>,
        /// The whole host is in maintenance (or its flags could not be
        /// read).
        in_maintenance: bool,
    },
    /// [`TaskOp::Maintenance`].
    Maintenance(Result<Option<crate::model::outcome::SkipReason>, String>),
    /// [`TaskOp::InService`].
    InService(Result<(), String>),
    /// [`TaskOp::Working`].
    Working(bool),
    /// [`TaskOp::Work`]: the outcome, the operations done, a module's
    /// message, the unit's last journal lines on failure.
    Worked {
        /// The outcome.
        outcome: crate::model::outcome::Outcome,
        /// Operations performed, `+`-joined.
        action: String,
        /// What a script module said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
        /// The unit's last journal lines.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logs: Vec<LogEntry>,
    },
    /// The worker refused the task (why): nothing was done.
    Refused(String),
    /// The host's fence holds a newer lease than this worker's: another
    /// worker owns the host now; nothing was done, and the task may be
    /// sent again (to the new owner).
    Stale(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_query_travels_to_the_same_journalctl_arguments() {
        for since in [
            None,
            Some("1h"),
            Some("90 min ago"),
            Some("1500ms"),
            Some("2026-01-15T10:30:00+02:00"),
            Some("2026-01-15 10:30:00 UTC"),
            Some("2026-01-15 10:30"),
            Some("2026-01-15"),
            Some("today"),
            Some("yesterday"),
        ] {
            for priority in [None, Some("err"), Some("7")] {
                let q = LogQuery::parse("demo-web", 42, since, priority).unwrap();
                let wire: LogsAsk =
                    serde_json::from_str(&serde_json::to_string(&LogsAsk::of(&q)).unwrap())
                        .unwrap();
                let back = wire.query().unwrap();
                assert_eq!(back.journalctl_args(), q.journalctl_args(), "{since:?}");
            }
        }
        let bad = LogsAsk {
            unit: "demo;rm -rf /".into(),
            lines: 10,
            since: None,
            priority: None,
        };
        assert!(bad.query().is_err());
    }

    #[test]
    fn tokens_are_subject_safe_and_distinct() {
        for name in ["web-1", "a.b", "a*b", "a>b", "a_b", "a b", "é", ""] {
            let t = token(name);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name} -> {t}"
            );
        }
        assert_eq!(token("web-1"), "web-1");
        assert_eq!(token("a.b"), "a_2eb");
        // `_` is escaped too, so no name's token is another's.
        assert_ne!(token("a_2eb"), token("a.b"));
        assert_eq!(read_subject("", "db.eu.1"), "drover.read._.db_2eeu_2e1");
        assert_eq!(read_subject("region:eu", "h"), "drover.read.region_3aeu.h");
        let regions = vec!["".to_string(), "b".into(), "a".into()];
        assert_eq!(region_of(&regions, |r| r == "b"), "b");
        assert_eq!(region_of(&regions, |_| true), "a");
        assert_eq!(region_of(&regions, |_| false), "");
    }

    #[test]
    fn owners_are_stable_and_move_only_with_their_worker() {
        let three = ["w1", "w2", "w3"];
        let two = ["w1", "w3"];
        let mut owned = [0usize; 3];
        for b in 0..HOST_BUCKETS {
            let o = owner_of(b, three).unwrap();
            owned[three.iter().position(|w| *w == o).unwrap()] += 1;
            // Order of the list does not matter.
            assert_eq!(owner_of(b, ["w3", "w2", "w1"]), Some(o));
            // w2 leaving moves only w2's buckets.
            if o != "w2" {
                assert_eq!(owner_of(b, two), Some(o));
            }
        }
        // Spread: each of three gets a fair share of 64.
        assert!(owned.iter().all(|&n| (10..=35).contains(&n)), "{owned:?}");
        assert_eq!(owner_of(0, []), None);
    }

    #[test]
    fn buckets_spread_hosts() {
        let mut seen = vec![0u32; HOST_BUCKETS as usize];
        for i in 0..6400 {
            seen[bucket_of(&format!("host-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
        assert_eq!(lease_key("role:web", 3), "role_3aweb.3");
        assert_eq!(lease_key("", 0), "_.0");
    }

    #[test]
    fn messages_refuse_unknown_fields() {
        let r: Result<ReadRequest, _> = serde_json::from_str(
            r#"{"protocol":1,"inventory":"x","host":"h","units":"loaded","extra":1}"#,
        );
        assert!(r.is_err());
        let r: ReadRequest = serde_json::from_str(
            r#"{"protocol":1,"inventory":"x","host":"h","units":{"these":["a.service"]}}"#,
        )
        .unwrap();
        assert_eq!(r.units, ReadUnits::These(vec!["a.service".into()]));
    }
}
