//! The job report: the per-host result format of DESIGN.md, a JSON-lines
//! journal written while the run goes on (so a killed run loses nothing),
//! and the report file written atomically at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Status;

/// One result: the fields `hostname`, `status`, `name`, `changed` and
/// `error` mean exactly what DESIGN.md says; the rest is extra detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Inventory name of the host.
    pub hostname: String,
    /// ok, failed or skipped.
    pub status: Status,
    /// The unit.
    pub name: String,
    /// Whether systemd state really changed.
    pub changed: bool,
    /// Why not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step id.
    pub step: String,
    /// Operations performed, `+`-joined (`none` when nothing was needed).
    pub action: String,
    /// Wall time on this host for this step.
    pub duration_ms: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    /// UUID v4 of this run.
    pub job_id: String,
    /// The playbook's name (or the ad-hoc command).
    pub playbook: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// completed, aborted (max_fail_percentage) or interrupted (signal).
    pub outcome: String,
    /// Every step × host, in execution order.
    pub results: Vec<JobResult>,
}

impl JobReport {
    /// Exit code of DESIGN.md for this report: 2 when a host failed a step,
    /// 4 when hosts were only unreachable, 3 when interrupted with no
    /// failure, else 0.
    pub fn exit_code(&self) -> i32 {
        let failed = self.results.iter().filter(|r| r.status == Status::Failed);
        let mut any_failed = false;
        let mut any_unreachable = false;
        for r in failed {
            if r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("unreachable"))
            {
                any_unreachable = true;
            } else {
                any_failed = true;
            }
        }
        if any_failed {
            2
        } else if self.outcome == "interrupted" {
            3
        } else if any_unreachable {
            4
        } else {
            0
        }
    }

    /// Write the report atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::write_atomic_with(path, |w| {
            serde_json::to_writer_pretty(&mut *w, self).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })
    }

    /// Counts for the summary line: (ok changed, ok unchanged, skipped, failed).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for r in &self.results {
            match (r.status, r.changed) {
                (Status::Ok, true) => c.0 += 1,
                (Status::Ok, false) => c.1 += 1,
                (Status::Skipped, _) => c.2 += 1,
                (Status::Failed, _) => c.3 += 1,
            }
        }
        c
    }
}

/// Appends each result as one JSON line as soon as it exists.
#[derive(Debug)]
pub struct Journal {
    file: Mutex<File>,
    /// Where it is.
    pub path: PathBuf,
}

impl Journal {
    /// The journal beside a report file: `REPORT.journal`.
    pub fn beside(report: &Path) -> PathBuf {
        let mut p = report.as_os_str().to_owned();
        p.push(".journal");
        PathBuf::from(p)
    }

    /// Open (truncate) a journal and write its header line.
    pub fn create(path: &Path, job_id: &str, playbook: &str) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io("write", path, e))?;
        let j = Journal {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        };
        j.line(&serde_json::json!({ "job_id": job_id, "playbook": playbook, "started_at": now_rfc3339() }));
        Ok(j)
    }

    fn line(&self, v: &impl Serialize) {
        let Ok(mut text) = serde_json::to_string(v) else {
            return;
        };
        text.push('\n');
        if let Ok(mut f) = self.file.lock() {
            // One write per line: a reader never sees half a result, and
            // the OS keeps what was written even if drover is killed.
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::warn!("journal {}: {e}", self.path.display());
            }
        }
    }

    /// Append one result.
    pub fn record(&self, r: &JobResult) {
        self.line(r);
    }
}

/// Now, as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
