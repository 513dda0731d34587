//! How far a running job is: the steps its events announced (with how
//! many hosts each works on and how many rolling batches are over), and
//! when each of its results arrived. The status page draws its progress
//! bars and timeline from this; the report does not keep it, so a job
//! read back from disk has none (unless it ended in this process lately:
//! the store keeps the last few, see `history::KEEP_TIMINGS`) and the
//! page falls back to the order of its results.

use std::time::Instant;

use crate::engine::events::Event;

/// One step of a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProgress {
    /// The step id.
    pub step: String,
    /// Hosts it works on.
    pub hosts: usize,
    /// Rolling batches of it that are over.
    pub batches_done: usize,
}

/// What [`super::Entry::progress`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Steps in the order they started.
    pub steps: Vec<StepProgress>,
    /// For each result so far, in order: milliseconds from the job's start
    /// to its arrival (its end on the host, within an event's delivery).
    pub ended_ms: Vec<u64>,
}

/// The mutable record behind [`JobProgress`].
#[derive(Debug)]
pub(super) struct Progress {
    t0: Instant,
    seen: JobProgress,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            t0: Instant::now(),
            seen: JobProgress::default(),
        }
    }

    /// What a job that ended kept (no result arrives any more).
    pub(super) fn ended(seen: JobProgress) -> Self {
        Progress {
            t0: Instant::now(),
            seen,
        }
    }

    /// A result arrived now.
    pub(super) fn arrived(&mut self) {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.seen.ended_ms.push(ms);
    }

    /// A step started or a batch of it ended.
    pub(super) fn note(&mut self, e: &Event) {
        match e {
            Event::StepStarted { step, hosts } => self.seen.steps.push(StepProgress {
                step: step.clone(),
                hosts: *hosts,
                batches_done: 0,
            }),
            Event::BatchDone { step, batch, .. } => {
                if let Some(s) = self.seen.steps.iter_mut().rev().find(|s| s.step == *step) {
                    s.batches_done = s.batches_done.max(*batch);
                }
            }
            _ => {}
        }
    }

    pub(super) fn snapshot(&self) -> JobProgress {
        self.seen.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_batches_and_arrivals_are_kept_in_order() {
        let mut p = Progress::new();
        p.note(&Event::StepStarted {
            step: "roll".into(),
            hosts: 4,
        });
        p.arrived();
        p.note(&Event::BatchDone {
            step: "roll".into(),
            batch: 1,
            failed: 0,
        });
        p.arrived();
        // A batch of a step that never started is no step's.
        p.note(&Event::BatchDone {
            step: "other".into(),
            batch: 3,
            failed: 0,
        });
        let s = p.snapshot();
        assert_eq!(
            s.steps,
            [StepProgress {
                step: "roll".into(),
                hosts: 4,
                batches_done: 1
            }]
        );
        assert_eq!(s.ended_ms.len(), 2);
        assert!(s.ended_ms[0] <= s.ended_ms[1]);
    }
}
