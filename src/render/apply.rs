//! Lines for people while a job runs and when it ends: one per result, the
//! job's header and its summary.

use std::path::Path;

use crate::model::outcome::Status;
use crate::model::report::{JobReport, JobResult};
use crate::render::escape::one_line;
use crate::render::paint;

/// One result as a line: host, step, unit, action, verdict, time, error,
/// and below it the unit's journal lines that a failure carries. Every
/// field is escaped: the error carries host text (StatusText, stderr).
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
        one_line(&r.hostname),
        one_line(&r.step),
        one_line(&r.name),
        one_line(&r.action),
        word,
        r.duration_ms
    );
    if let Some(e) = &r.error {
        s.push_str(&format!(": {}", one_line(e)));
    }
    // A failed unit's last journal lines, under its line.
    for e in &r.logs {
        s.push_str(&format!(
            "\n    | {}",
            crate::render::logs::entry_line(e, color)
        ));
    }
    s
}

/// The first line of a run.
pub fn job_header(job_id: &str, name: &str) -> String {
    format!("job {}: {}", one_line(job_id), one_line(name))
}

/// The line when a step starts (plain output).
pub fn step_line(step: &str, hosts: usize) -> String {
    format!("step {}: {hosts} host(s)", one_line(step))
}

/// The closing lines: counts, and where the report and journal are.
pub fn summary(report: &JobReport, report_file: Option<&Path>, journal: Option<&Path>) -> String {
    let (changed, ok, skipped, failed) = report.counts();
    let mut s = format!(
        "job {} {}: {changed} changed, {ok} ok, {skipped} skipped, {failed} failed\n",
        one_line(&report.job_id),
        report.outcome
    );
    if let Some(r) = report_file {
        s.push_str(&format!("report: {}\n", one_line(&r.display().to_string())));
    }
    if let Some(j) = journal {
        s.push_str(&format!(
            "journal: {}\n",
            one_line(&j.display().to_string())
        ));
    }
    s
}
