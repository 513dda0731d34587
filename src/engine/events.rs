//! What the engine tells its caller while it works: typed events, sent to
//! a sink the caller provides. The engine never prints; the command line
//! turns these into progress bars or plain lines, a server into a stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::job::Job;
use crate::model::report::{JobReport, JobResult, RunOutcome};

/// One thing that happened during a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A run began.
    JobStarted {
        /// Its UUID.
        job_id: String,
        /// The playbook's name.
        name: String,
    },
    /// A step begins on this many hosts.
    StepStarted {
        /// The step id.
        step: String,
        /// Hosts it works on.
        hosts: usize,
    },
    /// One host's result is final (and already in the journal).
    HostResult(JobResult),
    /// A rolling batch of a step is over.
    BatchDone {
        /// The step id.
        step: String,
        /// 1-based batch number.
        batch: usize,
        /// Hosts of the step that failed so far.
        failed: usize,
    },
    /// A host's step waits for its `wait:` gate.
    GateWaiting {
        /// The step id.
        step: String,
        /// The host.
        host: String,
        /// What it waits for.
        gate: String,
    },
    /// A step is over on every host.
    StepFinished {
        /// The step id.
        step: String,
    },
    /// A host's facts were read (or could not be): plan, status, facts.
    HostRead {
        /// The host.
        host: String,
        /// Why it has no facts, if it has none.
        error: Option<String>,
    },
    /// The run is over.
    Finished {
        /// Its UUID.
        job_id: String,
        /// How it ended.
        outcome: RunOutcome,
    },
}

/// Where events go. Called from the engine's tasks; must not block long.
pub trait EventSink: Send + Sync {
    /// Receive one event.
    fn event(&self, e: &Event);
}

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _: &Event) {}
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<Event> {
    fn event(&self, e: &Event) {
        // A caller that stopped listening does not stop the job.
        let _ = self.send(e.clone());
    }
}

/// Watches every job a job store runs (the server's metrics, logs and
/// notifications): a sink for each job's events, and its report once the
/// job has ended and the report is written.
pub trait JobObserver: Send + Sync {
    /// `job` (run as `job_id`) is about to start: where its events also
    /// go. A job refused before it starts (window, lock) never ends.
    fn sink(&self, job_id: &str, job: &Job) -> Arc<dyn EventSink>;
    /// A job that started has ended with `report` (on disk already).
    /// Called from the job's task: must not block.
    fn ended(&self, report: &JobReport);
}

/// Set by SIGINT/SIGTERM (or a cancel): start nothing new, let in-flight
/// systemd jobs end.
#[derive(Debug, Default)]
pub struct StopFlag {
    stopped: AtomicBool,
    why: Mutex<Option<String>>,
}

impl StopFlag {
    /// Request a graceful stop; the first reason is kept.
    pub fn stop(&self, why: &str) {
        if let Ok(mut w) = self.why.lock() {
            w.get_or_insert_with(|| why.to_string());
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// What stopped the run ("SIGTERM", "cancel", ...).
    pub fn reason(&self) -> String {
        self.why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "signal".into())
    }
}
