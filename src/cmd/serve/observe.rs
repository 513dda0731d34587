//! What the server does around every job it runs, as the job store's
//! observer: the job's metrics and log lines from its events, and when it
//! ends, its outcome counted and its report sent to the `--notify`
//! receivers in the background (a slow receiver never holds a job).

use std::sync::Arc;

use crate::cmd::logging::JobLog;
use crate::cmd::notify::Notifier;
use crate::engine::events::{Event, EventSink, JobObserver};
use crate::engine::job::Job;
use crate::model::report::JobReport;

use super::metrics::{JobMetrics, Metrics};

/// The server's observer of jobs.
pub struct ServeObserver {
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// `--notify`, if given.
    pub notifier: Option<Arc<Notifier>>,
    /// The live snapshot: a host a job has worked on may have maintenance
    /// flags systemd does not signal.
    pub fleet: Option<crate::engine::fleet::Fleet>,
}

/// One job's metrics and log.
struct JobSinks {
    metrics: Arc<JobMetrics>,
    log: JobLog,
    fleet: Option<crate::engine::fleet::Fleet>,
}

impl EventSink for JobSinks {
    fn event(&self, e: &Event) {
        self.metrics.event(e);
        self.log.event(e);
        if let (Some(f), Event::HostResult(r)) = (&self.fleet, e) {
            f.invalidate(&r.hostname);
        }
    }
}

impl JobObserver for ServeObserver {
    fn sink(&self, job_id: &str, job: &Job) -> Arc<dyn EventSink> {
        Arc::new(JobSinks {
            metrics: self.metrics.job(job_id, job),
            log: JobLog::new(true),
            fleet: self.fleet.clone(),
        })
    }

    fn ended(&self, report: &JobReport) {
        self.metrics.job_ended(&report.job_id, report.outcome);
        if let Some(n) = &self.notifier {
            n.spawn(report.clone());
        }
    }
}
