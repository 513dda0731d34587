//! What `drover apply` leaves behind for monitoring besides its report:
//! the textfile that node_exporter's textfile collector reads
//! (`--metrics-file`), and the notifications of `--notify`. Neither changes
//! the run's exit code; a failure of either is a warning.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::job::Job;
use crate::model::error::{Error, Result};
use crate::model::report::{JobReport, Verdict};
use crate::render::metrics::{playbook_label, previous_success, textfile, LastRun};

use super::notify::{Notifier, NotifyArgs};

/// The metrics file and the notifier of one run.
#[derive(Debug)]
pub struct RunObserve {
    metrics_file: Option<PathBuf>,
    notifier: Option<Notifier>,
    started: Instant,
}

impl RunObserve {
    /// Nothing to leave (`drover service`, `drover maintenance`).
    pub fn none() -> RunObserve {
        RunObserve {
            metrics_file: None,
            notifier: None,
            started: Instant::now(),
        }
    }

    /// Checked before the run: the secret and URLs of `--notify`, and
    /// that `--metrics-file` names a `.prom` file or a directory.
    pub fn new(metrics_file: Option<&Path>, notify: &NotifyArgs) -> Result<RunObserve> {
        if let Some(p) = metrics_file {
            let named_prom = p.extension().is_some_and(|e| e == "prom");
            if !p.is_dir() && !named_prom {
                return Err(Error::Usage(format!(
                    "--metrics-file {}: node_exporter's textfile collector reads only *.prom files; name it NAME.prom, or give its directory",
                    p.display()
                )));
            }
        }
        Ok(RunObserve {
            metrics_file: metrics_file.map(Path::to_path_buf),
            notifier: Notifier::from_args(notify)?,
            started: Instant::now(),
        })
    }

    /// Write the metrics file of a run that ended with `ended` (a report,
    /// or the error that kept it from running).
    pub fn write_metrics(&self, job: &Job, ended: std::result::Result<&JobReport, &Error>) {
        let Some(given) = &self.metrics_file else {
            return;
        };
        let label = playbook_label(&job.playbook.path);
        // A directory gets one file per playbook, so that the runs of two
        // playbooks never overwrite each other's.
        let path = if given.is_dir() {
            given.join(format!("drover-{label}.prom"))
        } else {
            given.clone()
        };
        let exit_code = match ended {
            Ok(r) => Verdict::of_report(r).exit_code(),
            Err(e) => Verdict::of_error(e).exit_code(),
        };
        let now = chrono::Utc::now();
        let finished = now.timestamp_millis() as f64 / 1000.0;
        let before = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| previous_success(&t));
        let text = textfile(&LastRun {
            playbook: &label,
            finished,
            duration: self.started.elapsed().as_secs_f64(),
            exit_code,
            report: ended.ok(),
            last_success: if exit_code == 0 {
                Some(finished)
            } else {
                before
            },
        });
        // Readable by node_exporter, which runs as another user: the
        // file holds counts and times, never a host's text.
        let written = crate::engine::files::write_atomic_mode(&path, text.as_bytes(), 0o644);
        if let Err(e) = written {
            eprintln!(
                "drover: warning: --metrics-file not written: {e}: {}",
                crate::render::escape::one_line(&e.details())
            );
        }
    }

    /// Send the notifications of `report`, retrying within the bound.
    pub async fn notify(&self, report: &JobReport) {
        if let Some(n) = &self.notifier {
            n.deliver(report).await;
        }
    }
}
