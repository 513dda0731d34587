//! Where drover's log goes, and the log lines a job leaves.
//!
//! Under systemd (stderr connected to the journal, which systemd tells a
//! service in `JOURNAL_STREAM`) entries go to journald with structured
//! fields (`JOB_ID`, `HOST`, `UNIT`, `STEP`, `OUTCOME`, ...), through
//! `tracing-journald`; elsewhere stderr gets today's text lines, or one
//! JSON object a line with `--log-format json` for log shippers. The
//! fields are the same in every format. Nothing logged holds a key, a
//! secret variable's value (results carry their markers) or a
//! notification secret; results' host text is escaped.

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::engine::events::{Event, EventSink};
use crate::model::outcome::Status;
use crate::render::escape::one_line;
use crate::render::metrics::word;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// journald when stderr is the journal (a systemd service), else text.
    Auto,
    /// Lines for people on stderr.
    Text,
    /// One JSON object a line on stderr, fields at the top level.
    Json,
    /// Entries with structured fields to journald's socket.
    Journald,
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// device and inode of the stream it connects, and a child whose stderr
/// was redirected elsewhere inherits the variable but not the stream.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let meta = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    meta.is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The format the log was set up with.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether the log is for machines (journald, JSON) rather than a person
/// at a terminal, who reads a run's results in its own output.
pub fn for_machines() -> bool {
    FORMAT
        .get()
        .is_some_and(|f| matches!(f, LogFormat::Journald | LogFormat::Json))
}

/// The format `--log-format` asks for, `auto` decided.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    }
}

/// Set up the log as the command line asks (`--log-format`, `-q`, `-v`).
/// A terminal's text log shows warnings unless `-v`; the machine formats
/// show the jobs' info lines too, since a journal or a shipper filters by
/// level itself.
pub fn init(format: LogFormat, quiet: bool, verbose: u8) {
    let format = resolve(format);
    let _ = FORMAT.set(format);
    let quiet_default = if format == LogFormat::Text {
        "warn"
    } else {
        "info"
    };
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => quiet_default,
            1 => "info",
            _ => "debug",
        }
    };
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("drover={level}")))
    };
    match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                // No prefix: the fields are JOB_ID and HOST, as journalctl
                // users filter them (`journalctl JOB_ID=...`).
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("drover".into());
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
            }
            Err(e) => {
                text(filter());
                tracing::warn!("journald is not reachable ({e}); logging to stderr");
            }
        },
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Auto | LogFormat::Text => text(filter()),
    }
}

fn text(filter: EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A job's log lines, with their fields: its start, each result and its
/// end.
#[derive(Debug, Default)]
pub struct JobLog {
    job_id: OnceLock<String>,
    warn_failures: bool,
}

impl JobLog {
    /// A job's log; a failed result is a warning if `warn_failures`, else
    /// (the command line's text log, whose run prints its results) info.
    pub fn new(warn_failures: bool) -> JobLog {
        JobLog {
            job_id: OnceLock::new(),
            warn_failures,
        }
    }
}

impl EventSink for JobLog {
    fn event(&self, e: &Event) {
        match e {
            Event::JobStarted { job_id, name } => {
                let _ = self.job_id.set(job_id.clone());
                tracing::info!(
                    job_id = %job_id,
                    playbook = %one_line(name),
                    "job {job_id} started: {}",
                    one_line(name)
                );
            }
            Event::HostResult(r) => {
                let warn = r.status == Status::Failed && self.warn_failures;
                // Formatting costs more than the check: a busy server with
                // a quiet log does neither.
                let enabled = if warn {
                    tracing::enabled!(tracing::Level::WARN)
                } else {
                    tracing::enabled!(tracing::Level::INFO)
                };
                if !enabled {
                    return;
                }
                let job_id = self.job_id.get().map(String::as_str).unwrap_or_default();
                let status = word(r.status);
                let kind = r.kind.map(word).unwrap_or_default();
                let why = r
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", one_line(e)))
                    .unwrap_or_default();
                let (host, unit, step) =
                    (one_line(&r.hostname), one_line(&r.name), one_line(&r.step));
                macro_rules! result {
                    ($level:ident) => {
                        tracing::$level!(
                            job_id = %job_id,
                            host = %host,
                            unit = %unit,
                            step = %step,
                            outcome = %status,
                            kind = %kind,
                            changed = r.changed,
                            duration_ms = r.duration_ms,
                            "{host}: {unit} {}: {status}{why}",
                            one_line(&r.action)
                        )
                    };
                }
                if warn {
                    result!(warn);
                } else {
                    result!(info);
                }
            }
            Event::Finished { job_id, outcome } => {
                tracing::info!(
                    job_id = %job_id,
                    outcome = %outcome,
                    "job {job_id} {outcome}"
                );
            }
            _ => {}
        }
    }
}

/// Two sinks as one.
pub struct Both<'a>(pub &'a dyn EventSink, pub &'a dyn EventSink);

impl EventSink for Both<'_> {
    fn event(&self, e: &Event) {
        self.0.event(e);
        self.1.event(e);
    }
}
