//! Where results go while and after a run: a JSON-lines journal written as
//! each result happens (so a killed run loses nothing) and the report file
//! written atomically at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::engine::files::write_atomic_with;
use crate::model::error::{Error, Result};
use crate::model::now_rfc3339;
use crate::model::report::{JobReport, JobResult};

/// Write a report atomically.
pub fn save_report(report: &JobReport, path: &Path) -> Result<()> {
    write_atomic_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, report).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
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

    /// Where the journal goes without a report file: the state directory.
    pub fn default_path(job_id: &str) -> PathBuf {
        // SAFETY: geteuid has no preconditions.
        let base = if unsafe { libc::geteuid() } == 0 {
            PathBuf::from("/var/lib/drover/jobs")
        } else {
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .unwrap_or_else(std::env::temp_dir)
                .join("drover/jobs")
        };
        base.join(format!("{job_id}.journal"))
    }

    /// Open (truncate) a journal and write its header line.
    pub fn create(path: &Path, job_id: &str, playbook: &str) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        // Private, and never through a link: a journal path in a shared
        // directory must not let anyone make drover truncate their pick.
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_journal_is_private_and_never_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("report.json.journal");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(Journal::create(&link, "j", "p").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let path = dir.path().join("real.journal");
        Journal::create(&path, "j", "p").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
