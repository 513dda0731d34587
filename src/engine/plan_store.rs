//! The server's stored plans: a runbook's plan (the `drover.plan/1`
//! document `plan --out` writes, with its facts) kept under its digest
//! with who made it, who approved it, when it expires and the job that
//! applied it. One file per plan in a private directory beside the jobs,
//! so plans and their approvals survive a restart; bounded in count and
//! bytes, the oldest going first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};

/// Plans kept at most; past it the oldest is deleted.
pub const MAX_PLANS: usize = 200;

/// Bytes of stored plans at most (all files together); past it the
/// oldest are deleted. One plan larger than this is refused.
pub const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// One approval of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    /// The approving key's name.
    pub key: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The job that applied a plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanRun {
    /// The key that applied it.
    pub key: String,
    /// When (RFC 3339).
    pub at: String,
    /// The job (None while it is being started).
    #[serde(default)]
    pub job_id: Option<String>,
}

/// A stored plan: its document, its renderings and what happened to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPlan {
    /// SHA-256 of `plan`'s JSON text: its name.
    pub digest: String,
    /// The runbook it plans.
    pub runbook: String,
    /// The key that made (or uploaded) it.
    pub made_by: String,
    /// When (RFC 3339).
    pub made_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The same, in milliseconds since the epoch (what is compared).
    pub expires_ms: i64,
    /// The hosts the plan's job touches (a scoped key sees only plans
    /// inside its targets).
    pub hosts: Vec<String>,
    /// Approvals so far, oldest first.
    pub approvals: Vec<Approval>,
    /// The job that applied it, once applied.
    pub applied: Option<PlanRun>,
    /// The `drover.plan/1` document (JSON text, with its facts).
    pub plan: String,
    /// The plan as markdown (for review).
    pub markdown: String,
    /// The plan as terminal text, without colour.
    pub text: String,
}

impl StoredPlan {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// What a new plan is made of.
#[derive(Debug)]
pub struct NewPlan {
    /// The runbook.
    pub runbook: String,
    /// The key that made it.
    pub made_by: String,
    /// The hosts its job touches.
    pub hosts: Vec<String>,
    /// The `drover.plan/1` JSON.
    pub plan: String,
    /// Markdown.
    pub markdown: String,
    /// Text.
    pub text: String,
}

/// Why a stored plan cannot be approved or applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRefusal {
    /// No plan has this digest.
    NotFound,
    /// It expired at this time.
    Expired(String),
    /// The key that made it may not approve it.
    OwnPlan,
    /// This key approved it already.
    ApprovedAlready,
    /// Approvals needed, given.
    NotApproved(u32, u32),
    /// It was applied (or is being applied) by this job.
    Applied(Option<String>),
}

impl std::fmt::Display for PlanRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanRefusal::NotFound => write!(f, "no stored plan has this digest; GET /plan lists them"),
            PlanRefusal::Expired(at) => write!(f, "the plan expired at {at}; make a new plan and have it reviewed again"),
            PlanRefusal::OwnPlan => write!(f, "the key that made a plan may not approve it (two-person rule); another operate key must approve it"),
            PlanRefusal::ApprovedAlready => write!(f, "this key approved the plan already; another operate key must give the next approval"),
            PlanRefusal::NotApproved(need, have) => write!(f, "the runbook needs {need} approval(s) of this plan, it has {have}; POST /plan/{{digest}}/approve with another operate key"),
            PlanRefusal::Applied(Some(job)) => write!(f, "the plan was applied by job {job}; a plan runs once: make a new one"),
            PlanRefusal::Applied(None) => write!(f, "the plan is being applied; a plan runs once"),
        }
    }
}

/// Plans in a directory, read and written under one lock.
#[derive(Debug)]
pub struct PlanStore {
    dir: PathBuf,
    ttl: Duration,
    lock: Mutex<()>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A digest as plans are named: 64 lowercase hex digits (never a path).
pub fn valid_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PlanStore {
    /// Plans in `dir` (made private if new), expiring `ttl` after they
    /// were made.
    pub fn open(dir: &Path, ttl: Duration) -> Result<Self> {
        crate::engine::private::private_dir_for("the plans directory", dir)?;
        Ok(PlanStore {
            dir: dir.to_path_buf(),
            ttl,
            lock: Mutex::new(()),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.json"))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self, digest: &str) -> Option<StoredPlan> {
        if !valid_digest(digest) {
            return None;
        }
        let path = self.path(digest);
        let text = crate::model::yaml::read_bounded_to(&path, "stored plan", MAX_PLAN_BYTES).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, p: &StoredPlan) -> Result<()> {
        let text = serde_json::to_vec(p)
            .map_err(|e| Error::Internal(format!("cannot serialise a stored plan: {e}")))?;
        crate::engine::files::write_atomic(&self.path(&p.digest), &text)
    }

    /// Every stored plan with its file's size, oldest first.
    fn all(&self) -> Vec<(StoredPlan, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(StoredPlan, u64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                let size = e.metadata().ok()?.len();
                Some((self.read(&name)?, size))
            })
            .collect();
        out.sort_by(|a, b| a.0.made_at.cmp(&b.0.made_at));
        out
    }

    /// Store a new plan; delete those expired for longer than the ttl, then
    /// the oldest past [`MAX_PLANS`] or [`MAX_PLAN_BYTES`].
    pub fn put(&self, new: NewPlan) -> Result<StoredPlan> {
        let now = now_ms();
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let p = StoredPlan {
            digest: crate::model::digest(new.plan.as_bytes()),
            runbook: new.runbook,
            made_by: new.made_by,
            made_at: rfc3339(now),
            expires_at: rfc3339(now.saturating_add(ttl)),
            expires_ms: now.saturating_add(ttl),
            hosts: new.hosts,
            approvals: Vec::new(),
            applied: None,
            plan: new.plan,
            markdown: new.markdown,
            text: new.text,
        };
        let size = (p.plan.len() + p.markdown.len() + p.text.len()) as u64;
        if size > MAX_PLAN_BYTES {
            return Err(Error::Usage(format!(
                "the plan is {size} bytes, more than the {MAX_PLAN_BYTES} bytes the server keeps of plans; plan fewer hosts (limit)"
            )));
        }
        let _g = self.guard();
        // The same plan again is the one stored, approvals and all, while
        // it can still be approved and applied. Once it expired or ran, the
        // same content made again (same facts, same runbook) is a new plan
        // with a new maker, ttl and approvals: otherwise "make a new one"
        // would answer the dead one until it is forgotten.
        if let Some(same) = self.read(&p.digest) {
            let ran = same.applied.as_ref().is_some_and(|r| r.job_id.is_some());
            if !same.expired(now) && !ran {
                return Ok(same);
            }
        }
        let mut kept = self.all();
        kept.retain(|(old, _)| old.digest != p.digest);
        // Gone plans are answered 410 for a ttl after they expired, then
        // forgotten.
        kept.retain(|(old, _)| {
            let stale = old.expires_ms.saturating_add(ttl) <= now;
            if stale {
                let _ = std::fs::remove_file(self.path(&old.digest));
            }
            !stale
        });
        let mut bytes: u64 = kept.iter().map(|(_, s)| s).sum::<u64>() + size;
        let mut count = kept.len() + 1;
        for (old, s) in &kept {
            if count <= MAX_PLANS && bytes <= MAX_PLAN_BYTES {
                break;
            }
            let _ = std::fs::remove_file(self.path(&old.digest));
            count -= 1;
            bytes = bytes.saturating_sub(*s);
        }
        self.write(&p)?;
        Ok(p)
    }

    /// The plan of this digest, expired or not.
    pub fn get(&self, digest: &str) -> Option<StoredPlan> {
        let _g = self.guard();
        self.read(digest)
    }

    /// The plans not expired and not applied, newest first.
    pub fn pending(&self) -> Vec<StoredPlan> {
        let now = now_ms();
        let _g = self.guard();
        let mut v: Vec<StoredPlan> = self
            .all()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !p.expired(now) && p.applied.is_none())
            .collect();
        v.reverse();
        v
    }

    /// Change the plan of `digest` under the lock: refused when it is
    /// missing, expired or applied, or when `change` refuses.
    fn update(
        &self,
        digest: &str,
        change: impl FnOnce(&mut StoredPlan) -> std::result::Result<(), PlanRefusal>,
    ) -> Result<std::result::Result<StoredPlan, PlanRefusal>> {
        let _g = self.guard();
        let Some(mut p) = self.read(digest) else {
            return Ok(Err(PlanRefusal::NotFound));
        };
        if p.expired(now_ms()) {
            return Ok(Err(PlanRefusal::Expired(p.expires_at)));
        }
        if let Some(run) = &p.applied {
            return Ok(Err(PlanRefusal::Applied(run.job_id.clone())));
        }
        if let Err(r) = change(&mut p) {
            return Ok(Err(r));
        }
        self.write(&p)?;
        Ok(Ok(p))
    }

    /// Approve as `key`: never the key that made the plan, once per key.
    pub fn approve(&self, digest: &str, key: &str) -> Result<std::result::Result<StoredPlan, PlanRefusal>> {
        self.update(digest, |p| {
            if p.made_by == key {
                return Err(PlanRefusal::OwnPlan);
            }
            if p.approvals.iter().any(|a| a.key == key) {
                return Err(PlanRefusal::ApprovedAlready);
            }
            p.approvals.push(Approval {
                key: key.to_string(),
                at: crate::model::now_rfc3339(),
            });
            Ok(())
        })
    }

    /// Mark the plan as being applied by `key` if it has `need` approvals:
    /// a second apply of it is refused from now on.
    pub fn begin_apply(
        &self,
        digest: &str,
        key: &str,
        need: u32,
    ) -> Result<std::result::Result<StoredPlan, PlanRefusal>> {
        self.update(digest, |p| {
            let have = u32::try_from(p.approvals.len()).unwrap_or(u32::MAX);
            if have < need {
                return Err(PlanRefusal::NotApproved(need, have));
            }
            p.applied = Some(PlanRun {
                key: key.to_string(),
                at: crate::model::now_rfc3339(),
                job_id: None,
            });
            Ok(())
        })
    }

    /// The apply started job `job_id` (Some), or started nothing (None:
    /// the plan may be applied again).
    pub fn end_apply(&self, digest: &str, job_id: Option<String>) -> Result<()> {
        let _g = self.guard();
        let Some(mut p) = self.read(digest) else {
            return Ok(());
        };
        match job_id {
            Some(id) => {
                if let Some(run) = &mut p.applied {
                    run.job_id = Some(id);
                }
            }
            None => p.applied = None,
        }
        self.write(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(plan: &str, by: &str) -> NewPlan {
        NewPlan {
            runbook: "r".into(),
            made_by: by.into(),
            hosts: vec!["web1".into()],
            plan: plan.into(),
            markdown: String::new(),
            text: String::new(),
        }
    }

    #[test]
    fn two_keys_approve_and_a_plan_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::open(&dir.path().join("plans"), Duration::from_secs(60)).unwrap();
        let p = store.put(new("{}", "alice")).unwrap();
        assert!(valid_digest(&p.digest));
        assert_eq!(store.approve(&p.digest, "alice").unwrap().unwrap_err(), PlanRefusal::OwnPlan);
        assert_eq!(store.begin_apply(&p.digest, "alice", 1).unwrap().unwrap_err(), PlanRefusal::NotApproved(1, 0));
        store.approve(&p.digest, "bob").unwrap().unwrap();
        assert_eq!(store.approve(&p.digest, "bob").unwrap().unwrap_err(), PlanRefusal::ApprovedAlready);
        store.begin_apply(&p.digest, "alice", 1).unwrap().unwrap();
        assert_eq!(store.begin_apply(&p.digest, "alice", 1).unwrap().unwrap_err(), PlanRefusal::Applied(None));
        store.end_apply(&p.digest, Some("job-1".into())).unwrap();
        assert_eq!(
            store.approve(&p.digest, "carol").unwrap().unwrap_err(),
            PlanRefusal::Applied(Some("job-1".into()))
        );
        // Survives a new store over the same directory (a restart).
        let again = PlanStore::open(&dir.path().join("plans"), Duration::from_secs(60)).unwrap();
        assert_eq!(again.get(&p.digest).unwrap().approvals[0].key, "bob");
        assert!(again.get("../etc").is_none());
    }

    #[test]
    fn the_same_plan_made_again_is_new_once_it_ran_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let p = store.put(new("{}", "alice")).unwrap();
        store.approve(&p.digest, "bob").unwrap().unwrap();
        // Pending: the stored one, its maker and approval kept.
        let same = store.put(new("{}", "bob")).unwrap();
        assert_eq!((same.made_by.as_str(), same.approvals.len()), ("alice", 1));
        // Being applied: still the stored one (its apply is refused).
        store.begin_apply(&p.digest, "alice", 1).unwrap().unwrap();
        assert!(store.put(new("{}", "bob")).unwrap().applied.is_some());
        store.end_apply(&p.digest, Some("job-1".into())).unwrap();
        // Ran: made again, it is a new plan needing new approvals.
        let again = store.put(new("{}", "bob")).unwrap();
        assert_eq!(again.digest, p.digest);
        assert_eq!((again.made_by.as_str(), again.approvals.len()), ("bob", 0));
        assert!(again.applied.is_none());
        assert_eq!(store.get(&p.digest).unwrap().made_by, "bob");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Expired: likewise.
        let store = PlanStore::open(dir.path(), Duration::ZERO).unwrap();
        let q = store.put(new("{\"b\":1}", "alice")).unwrap();
        assert!(q.expired(now_ms()));
        let store = PlanStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let fresh = store.put(new("{\"b\":1}", "bob")).unwrap();
        assert!(!fresh.expired(now_ms()));
        assert_eq!(fresh.made_by, "bob");
    }

    #[test]
    fn an_expired_plan_is_refused_and_the_count_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::open(dir.path(), Duration::ZERO).unwrap();
        let p = store.put(new("{\"a\":1}", "alice")).unwrap();
        assert!(matches!(store.approve(&p.digest, "bob").unwrap(), Err(PlanRefusal::Expired(_))));
        let store = PlanStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        for i in 0..MAX_PLANS + 3 {
            store.put(new(&format!("{{\"n\":{i}}}"), "alice")).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), MAX_PLANS);
    }
}
