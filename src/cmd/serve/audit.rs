//! The audit log: one JSON line per authenticated request, to a file
//! (`--audit`) or stderr, and the last ones kept for `GET /audit`. Lines
//! name the key, never hold it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// How many lines `GET /audit` can show.
const KEEP: usize = 1000;

/// One audited request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditLine {
    /// When it was answered (RFC 3339).
    pub time: String,
    /// The key's name.
    pub key: String,
    /// The key's role.
    pub role: String,
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The job it started or acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Time to answer.
    pub duration_ms: u64,
    /// Who asked (address, or the socket path).
    pub peer: String,
}

/// Where audit lines go.
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
    recent: Mutex<VecDeque<AuditLine>>,
}

impl Audit {
    /// Lines to `path` (appended; created 0600), or stderr without one. An
    /// existing file another user owns or may write is refused: its owner
    /// would read every line, and a writer could forge some.
    pub fn open(path: Option<&std::path::Path>) -> crate::model::error::Result<Audit> {
        let file = match path {
            Some(p) => Some(Mutex::new(crate::engine::private::append_private(
                "--audit file",
                p,
            )?)),
            None => None,
        };
        Ok(Audit {
            file,
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Record one line.
    pub fn record(&self, line: AuditLine) {
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            match &self.file {
                Some(f) => {
                    if let Ok(mut f) = f.lock() {
                        if let Err(e) = f.write_all(text.as_bytes()) {
                            tracing::error!("audit log: {e}");
                        }
                    }
                }
                None => {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                }
            }
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == KEEP {
            r.pop_front();
        }
        r.push_back(line);
    }

    /// The newest lines, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AuditLine> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().take(limit).cloned().collect()
    }
}
