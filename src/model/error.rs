//! Every way drover can fail, as one enum rendered in one place.
//!
//! Each variant knows its class (invalid input, refused, internal), which
//! fixes both the JSON `code` and the process exit code (through the
//! report's `Verdict`, which sits above this file), so callers never pick
//! exit codes by hand.

use std::fmt;
use std::path::PathBuf;

/// A position in a user's file, so every input error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file as the user named it.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The line it points into, for a snippet under the error (None when
    /// the text is not at hand).
    pub source: Option<SourceLine>,
}

/// The line an error points at, as written: cut to a window around the
/// column when it is very long (a one-line JSON document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The line's text (or the window of it), raw: renderers escape it.
    pub text: String,
    /// 1-based column of the position within `text`, in characters.
    pub column: usize,
}

/// How many characters of a long line a snippet keeps on each side of the
/// column.
const WINDOW: usize = 200;

impl Position {
    /// The position at `line`:`column` (1-based) of `text`, keeping that
    /// line for a snippet.
    pub fn at(file: &std::path::Path, text: &str, line: u64, column: u64) -> Position {
        let line_text = usize::try_from(line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| text.lines().nth(l));
        Position::on_line(file, line_text, line, column)
    }

    /// The position at `line`:`column` (1-based), whose line's text the
    /// caller already has (a parser that indexed its lines once).
    pub fn on_line(
        file: &std::path::Path,
        line_text: Option<&str>,
        line: u64,
        column: u64,
    ) -> Position {
        let source = line_text.map(|l| {
            let col = usize::try_from(column).unwrap_or(1).max(1);
            let start = col.saturating_sub(WINDOW + 1);
            SourceLine {
                text: l.chars().skip(start).take(2 * WINDOW).collect(),
                column: col - start,
            }
        });
        Position {
            file: file.to_path_buf(),
            line,
            column,
            source,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} column {}",
            self.file.display(),
            self.line,
            self.column
        )
    }
}

/// The class of an error: decides the JSON `code` and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The user's input is wrong (code 400, exit 1).
    Invalid,
    /// drover refuses to act on purpose (code 403, exit 3).
    Refused,
    /// drover itself or its environment failed (code 500, exit 1).
    Internal,
}

impl Class {
    /// The HTTP status of an error of this class.
    pub fn http_status(self) -> u16 {
        match self {
            Class::Invalid => 400,
            Class::Refused => 403,
            Class::Internal => 500,
        }
    }
}

/// What is wrong with a user's file, and where: the payload of input errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// "playbook", "inventory", "facts file", ...
    pub what: &'static str,
    /// Dotted field path such as `steps[2].service.state`.
    pub field: String,
    /// The message, without position.
    pub message: String,
    /// Nearest valid key or value, when there is one.
    pub suggestion: Option<String>,
    /// Where in the file, when known.
    pub position: Option<Position>,
}

/// Why drover refused to act, on purpose: nothing was changed, and the
/// operator decides (exit 3, HTTP 403). Each kind says what happened and,
/// apart, what to do about it from the command line, so another front end
/// (the server) can offer its own remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the playbook's maintenance window.
    Window {
        /// The playbook.
        playbook: PathBuf,
        /// The window, described.
        window: String,
    },
    /// Another `drover apply` of the same playbook holds its lock.
    Locked {
        /// The playbook.
        playbook: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid as the lock file says it ("unknown" if empty).
        holder: String,
    },
    /// The lock directory is not private to this user.
    LockDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A directory or file drover writes and reads back (the server's
    /// jobs directory, its audit log) is not private to this user.
    NotPrivate {
        /// What it is, as the user named it ("--audit file").
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong with it, and the command that fixes it.
        why: String,
    },
    /// A step would disrupt a unit the inventory marks protected.
    Protected(String),
    /// A saved plan's inputs (playbook, inventory, templates) changed since
    /// it was made.
    StalePlan(String),
    /// The hosts drifted from the facts a saved plan was made from.
    Drift(String),
    /// A retry's or a resume's playbook, inventory or parameters are not
    /// those of the run it continues.
    InputsChanged(String),
    /// A drover server refused what `apply --server` sent (its answer's
    /// words: no approved plan, drift, claims held).
    Server(String),
    /// Another run, on this machine or another (`--nats`), holds a unit
    /// this one may touch.
    Claimed {
        /// What it holds ("demo-web.service on web-1").
        claim: String,
        /// The job holding it.
        job_id: String,
    },
}

impl Refusal {
    /// What to do about it, from the command line.
    pub fn remedy(&self) -> &'static str {
        match self {
            Refusal::Window { .. } => "pass --ignore-window to run anyway",
            Refusal::Locked { .. } => "wait for it, or pass --wait-lock DURATION",
            Refusal::LockDir { .. } => "remove it or set DROVER_LOCK_DIR to a private directory",
            Refusal::NotPrivate { .. } => "or name another path",
            Refusal::Protected(_) => "pass --allow-protected if that is intended",
            Refusal::StalePlan(_) => "plan again and review the new plan",
            Refusal::Drift(_) => "plan again, or pass --allow-drift to apply anyway",
            Refusal::InputsChanged(_) => {
                "pass --retry-changed to run what is left with the changed files, or start a new run"
            }
            Refusal::Server(_) => "the server's answer says what to do",
            Refusal::Claimed { .. } => "wait for it, or pass --wait-lock DURATION",
        }
    }

    /// What happened, without the remedy.
    pub fn what(&self) -> String {
        match self {
            Refusal::Window { playbook, window } => {
                format!("outside the window of {} ({window})", playbook.display())
            }
            Refusal::Locked {
                playbook,
                lock,
                holder,
            } => format!(
                "another drover run of {} (an apply, or a server job of it) holds its lock {} (pid {holder})",
                playbook.display(),
                lock.display()
            ),
            Refusal::LockDir { dir, why } => format!("lock directory {} {why}", dir.display()),
            Refusal::NotPrivate { what, path, why } => format!("{what} {} {why}", path.display()),
            Refusal::Protected(m)
            | Refusal::StalePlan(m)
            | Refusal::InputsChanged(m)
            | Refusal::Server(m) => m.clone(),
            Refusal::Drift(hosts) => format!(
                "the hosts drifted since the plan was made, so apply would not do what was reviewed: {hosts}"
            ),
            Refusal::Claimed { claim, job_id } => {
                format!("another run holds {claim} (job {job_id})")
            }
        }
    }

    /// The texts that may quote a rendered value, for redaction.
    fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Refusal::Window { window, .. } => vec![window],
            Refusal::Locked { holder, .. } => vec![holder],
            Refusal::LockDir { why, .. } | Refusal::NotPrivate { why, .. } => vec![why],
            Refusal::Protected(m)
            | Refusal::StalePlan(m)
            | Refusal::Drift(m)
            | Refusal::InputsChanged(m)
            | Refusal::Server(m) => vec![m],
            Refusal::Claimed { claim, .. } => vec![claim],
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.what(), self.remedy())
    }
}

/// Everything that stops a drover command before or outside per-host work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A YAML or JSON file did not match drover's schema.
    #[error("{} is invalid", .0.what)]
    Parse(Box<Diagnostic>),
    /// A file parsed but says something drover cannot accept.
    #[error("{} is invalid", .0.what)]
    Invalid(Box<Diagnostic>),
    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// "read", "write", ...
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command-line argument is wrong.
    #[error("invalid argument")]
    Usage(String),
    /// drover refuses to act (window, lock, protected unit, drift).
    #[error("refused")]
    Refused(Refusal),
    /// A subcommand that a later release implements.
    #[error("not implemented yet")]
    NotImplemented(&'static str),
    /// A bug or an environment failure that is not the user's input.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// The class, which fixes code and exit status.
    pub fn class(&self) -> Class {
        match self {
            Error::Parse(_) | Error::Invalid(_) | Error::Usage(_) => Class::Invalid,
            Error::Refused(_) => Class::Refused,
            Error::Io { .. } | Error::NotImplemented(_) | Error::Internal(_) => Class::Internal,
        }
    }

    /// The HTTP-like code used in JSON error output (its class's, which
    /// `Verdict::http_status` agrees with).
    pub fn code(&self) -> u16 {
        self.class().http_status()
    }

    /// The one-line details: field path, message, suggestion and position.
    pub fn details(&self) -> String {
        match self {
            Error::Parse(d) | Error::Invalid(d) => {
                let Diagnostic {
                    field,
                    message,
                    suggestion,
                    position,
                    ..
                } = &**d;
                let mut s = String::new();
                if !field.is_empty() {
                    s.push_str(field);
                    s.push_str(": ");
                }
                s.push_str(message);
                if let Some(sugg) = suggestion {
                    s.push_str(&format!(", did you mean `{sugg}`?"));
                }
                if let Some(pos) = position {
                    s.push_str(&format!(" at {pos}"));
                }
                s
            }
            Error::Io { source, .. } => source.to_string(),
            Error::Usage(m) | Error::Internal(m) => m.clone(),
            Error::Refused(r) => r.to_string(),
            Error::NotImplemented(what) => {
                format!("`{what}` needs a later drover release; use `drover plan --facts FILE` meanwhile")
            }
        }
    }

    /// The JSON document of DESIGN.md's error format.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.to_string(),
            "details": self.details(),
            "code": self.code(),
        })
    }

    /// Shorthand for a validation error with no suggestion.
    pub fn invalid(
        what: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
        position: Option<Position>,
    ) -> Self {
        Error::Invalid(Box::new(Diagnostic {
            what,
            field: field.into(),
            message: message.into(),
            suggestion: None,
            position,
        }))
    }

    /// Fill in a missing position from a locator (which sees the field path).
    pub fn locate_with(mut self, f: impl FnOnce(&str) -> Option<Position>) -> Self {
        if let Error::Invalid(d) | Error::Parse(d) = &mut self {
            if d.position.is_none() {
                d.position = f(&d.field);
            }
        }
        self
    }
    /// Add where a module was called from to an input error found in the
    /// module's file: the error is the module's, keeps the module file's
    /// position and names the call site too.
    /// `what` names the module's kind of file.
    pub fn in_call(mut self, what: &'static str, note: &str) -> Self {
        match &mut self {
            Error::Parse(d) | Error::Invalid(d) => {
                d.what = what;
                d.message.push_str("; ");
                d.message.push_str(note);
            }
            Error::Usage(m) | Error::Internal(m) => {
                m.push_str("; ");
                m.push_str(note);
            }
            // Loading a module refuses nothing; a refusal keeps its words.
            Error::Refused(_) | Error::Io { .. } | Error::NotImplemented(_) => {}
        }
        self
    }

    /// Attach a suggestion to a validation error.
    pub fn with_suggestion(mut self, sugg: Option<String>) -> Self {
        if let Error::Invalid(d) | Error::Parse(d) = &mut self {
            d.suggestion = sugg;
        }
        self
    }

    /// The error with every secret value in its texts replaced by its
    /// marker: a message may quote a rendered value (a unit name, a URL).
    pub fn redacted(mut self, secrets: &crate::model::secret::Secrets) -> Self {
        let redact = |m: &mut String| *m = secrets.redact_string(std::mem::take(m));
        match &mut self {
            Error::Parse(d) | Error::Invalid(d) => redact(&mut d.message),
            Error::Usage(m) | Error::Internal(m) => redact(m),
            Error::Refused(r) => r.texts_mut().into_iter().for_each(redact),
            Error::Io { .. } | Error::NotImplemented(_) => {}
        }
        self
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// drover's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The nearest candidate to `word` by edit distance, if it is close enough
/// to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for cand in candidates {
        let score = strsim::jaro_winkler(word, cand);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, cand));
        }
    }
    match best {
        Some((score, cand)) if score >= 0.8 => Some(cand.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_happened_then_what_to_do() {
        let r = Refusal::Window {
            playbook: "nightly.yml".into(),
            window: "daily 02:00-04:00 UTC".into(),
        };
        assert_eq!(
            r.to_string(),
            "outside the window of nightly.yml (daily 02:00-04:00 UTC); pass --ignore-window to run anyway"
        );
        assert!(!r.what().contains("--ignore-window"));
        let e = Error::Refused(r);
        assert_eq!(e.class(), Class::Refused);
        assert_eq!(e.code(), 403);
    }

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("stae", ["name", "state"]), Some("state".into()));
        assert_eq!(
            suggest("restart", ["started", "stopped", "restarted", "reloaded"]),
            Some("restarted".into())
        );
        assert_eq!(suggest("zzzz", ["name", "state"]), None);
    }

    #[test]
    fn classes_map_to_codes_and_exits() {
        let e = Error::Refused(Refusal::Drift("web-1".into()));
        assert_eq!(e.code(), 403);
        let e = Error::Usage("bad".into());
        assert_eq!(e.code(), 400);
    }
}
