//! Where results go while and after a run: a JSON-lines journal written as
//! each result happens (so a killed run loses nothing) and the report file
//! written atomically at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::engine::files::write_atomic_with;
use crate::model::error::{Error, Result};
use crate::model::journal::{Header, Intent, Record};
use crate::model::now_rfc3339;
use crate::model::report::{JobReport, JobResult, RunOutcome};

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
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
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
        j.line(&Record::Header(header.clone()));
        Ok(j)
    }

    /// Open an existing journal to continue it (a resume): what follows
    /// is appended after a `resumed` line.
    pub fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("write", path, e))?;
        let j = Journal {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        };
        // A line cut short by the kill that ended the last run must not
        // swallow the next one.
        j.raw(b"\n");
        j.line(&Record::Resumed { at: now_rfc3339() });
        Ok(j)
    }

    fn line(&self, v: &Record) {
        let Ok(mut text) = serde_json::to_string(v) else {
            return;
        };
        text.push('\n');
        self.raw(text.as_bytes());
    }

    fn raw(&self, bytes: &[u8]) {
        if let Ok(mut f) = self.file.lock() {
            // One write per line: a reader never sees half a result, and
            // the OS keeps what was written even if drover is killed.
            if let Err(e) = f.write_all(bytes) {
                tracing::warn!("journal {}: {e}", self.path.display());
            }
        }
    }

    /// Append one result.
    pub fn record(&self, r: &JobResult) {
        self.line(&Record::Result(r.clone()));
    }

    /// Say that a change is about to be made; written before it is.
    pub fn intent(&self, i: Intent) {
        self.line(&Record::Intent(i));
    }

    /// The run ended.
    pub fn end(&self, outcome: RunOutcome) {
        self.line(&Record::End {
            outcome,
            finished_at: now_rfc3339(),
        });
    }
}

/// The most a journal or a report read back may hold: a run over 100,000
/// hosts writes a few hundred megabytes; a file past this is not one.
const MAX_RUN_FILE_BYTES: u64 = 1 << 30;

/// Read a journal file back.
pub fn read(path: &Path) -> Result<crate::model::journal::Read> {
    let text = crate::model::yaml::read_bounded_to(path, "journal", MAX_RUN_FILE_BYTES)?;
    crate::model::journal::parse(path, &text)
}

/// Read only a journal's header line: what a retry needs of it (the
/// parameters it ran with), without reading every result.
pub fn read_header(path: &Path) -> Result<Header> {
    use std::io::{BufRead, Read};
    let file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut line = String::new();
    std::io::BufReader::new(file.take(MAX_RUN_FILE_BYTES))
        .read_line(&mut line)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(crate::model::journal::parse(path, &line)?.header)
}

/// Read a job report back.
pub fn load_report(path: &Path) -> Result<JobReport> {
    let text = crate::model::yaml::read_bounded_to(path, "job report", MAX_RUN_FILE_BYTES)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            "job report",
            "",
            e.to_string(),
            Some(crate::model::error::Position::at(
                path,
                &text,
                e.line() as u64,
                e.column() as u64,
            )),
        )
    })
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
        let header = Header {
            version: crate::model::journal::VERSION,
            job_id: "j".into(),
            playbook: "p".into(),
            started_at: String::new(),
            files: Default::default(),
            inputs: Default::default(),
            params: Default::default(),
            retry_of: None,
            hosts: Vec::new(),
            steps: Vec::new(),
        };
        assert!(Journal::create(&link, &header).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let path = dir.path().join("real.journal");
        Journal::create(&path, &header).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
