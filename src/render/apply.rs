//! Lines for people while a job runs and when it ends: one per result, the
//! job's header and its summary.

use std::path::Path;

use crate::model::outcome::Status;
use crate::model::report::{JobReport, JobResult};
use crate::render::paint;

/// One result as a line: host, step, unit, action, verdict, time, error.
pub fn result_line(r: &JobResult, color: bool) -> String {
    let word = match (r.status, r.changed) {
        (Status::Ok, true) => "changed",
        (Status::Ok, false) => "ok",
        (Status::Skipped, _) => "skipped",
        (Status::Failed, _) => "FAILED",
    };
    let word = paint(word, r.status, r.changed, color);
    let mut s = format!(
        "{:<14} {:<16} {:<24} {:<16} {} ({} ms)",
        r.hostname, r.step, r.name, r.action, word, r.duration_ms
    );
    if let Some(e) = &r.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// The first line of a run.
pub fn job_header(job_id: &str, name: &str) -> String {
    format!("job {job_id}: {name}")
}

/// The line when a step starts (plain output).
pub fn step_line(step: &str, hosts: usize) -> String {
    format!("step {step}: {hosts} host(s)")
}

/// The closing lines: counts, and where the report and journal are.
pub fn summary(report: &JobReport, report_file: Option<&Path>, journal: Option<&Path>) -> String {
    let (changed, ok, skipped, failed) = report.counts();
    let mut s = format!(
        "job {} {}: {changed} changed, {ok} ok, {skipped} skipped, {failed} failed\n",
        report.job_id, report.outcome
    );
    if let Some(r) = report_file {
        s.push_str(&format!("report: {}\n", r.display()));
    }
    if let Some(j) = journal {
        s.push_str(&format!("journal: {}\n", j.display()));
    }
    s
}
