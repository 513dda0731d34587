//! Showing a running job to a person: the engine's events drawn as
//! progress bars on a TTY, as plain lines off one (cron), or not at all
//! (`--format json`, where stdout is the report).

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::engine::events::{Event, EventSink};
use crate::render::apply::{result_line, step_line};
use crate::render::escape::one_line;

/// Off a TTY (cron, CI): one plain line per step and per result, no
/// colour, no bar.
pub struct Plain;

impl EventSink for Plain {
    fn event(&self, e: &Event) {
        match e {
            Event::StepStarted { step, hosts } => outln!("{}", step_line(step, *hosts)),
            Event::HostResult(r) => outln!("{}", result_line(r, false)),
            _ => {}
        }
    }
}

/// On a TTY: a bar per step on stderr, result lines above the bars.
#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, step: &str) -> Option<ProgressBar> {
        self.bars.lock().ok().and_then(|b| b.get(step).cloned())
    }
}

impl EventSink for Bars {
    fn event(&self, e: &Event) {
        match e {
            Event::StepStarted { step, hosts } => {
                let bar = self.multi.add(ProgressBar::new(*hosts as u64));
                let style =
                    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg}")
                        .map(|s| s.progress_chars("=> "))
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_prefix(step.to_string());
                if let Ok(mut b) = self.bars.lock() {
                    b.insert(step.to_string(), bar);
                }
            }
            Event::HostResult(r) => {
                let _ = self.multi.println(result_line(r, true));
                if let Some(bar) = self.bar(&r.step) {
                    bar.inc(1);
                }
            }
            Event::GateWaiting { step, host, gate } => {
                if let Some(bar) = self.bar(step) {
                    bar.set_message(format!("{}: waiting for {gate}", one_line(host)));
                }
            }
            Event::StepFinished { step } => {
                if let Some(bar) = self.bar(step) {
                    bar.finish_with_message("done");
                }
            }
            _ => {}
        }
    }
}
