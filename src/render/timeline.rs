//! A job as it moves, as HTML the server draws: a progress bar per step
//! (hosts done of the step's hosts, rolling batches over), and a
//! timeline in SVG with one row per host and a bar per result, coloured
//! by outcome and marked with a sign, failures first. While the job runs
//! in this server the bars sit where the results ended in time, so the
//! waves of a rolling restart show (and after it ends, for the last
//! jobs that ended here); any other job read back from its report has
//! no times and its bars follow the order its results ended in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::engine::job_store::{JobProgress, JobStatus, JobView, StepProgress};
use crate::model::outcome::Status;
use crate::model::report::JobResult;

use super::html::{esc, word};

/// Rows the timeline draws at most (failed hosts first, so they stay).
pub const MAX_ROWS: usize = 200;

/// What the live part of a job page shows.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// The job.
    pub job: &'a JobView,
    /// Its steps and result times (empty for a job read from disk).
    pub progress: &'a JobProgress,
    /// Every host the job may touch, sorted.
    pub hosts: &'a [String],
}

/// A result's mark (colour is not the only signal) and word.
fn mark(r: &JobResult) -> (&'static str, &'static str) {
    match (r.status, r.changed) {
        (Status::Ok, true) => ("\u{2713}", "changed"),
        (Status::Ok, false) => ("\u{2713}", "ok"),
        (Status::Failed, _) => ("\u{2717}", "failed"),
        (Status::Skipped, _) => ("\u{2013}", "skipped"),
    }
}

fn fill(r: &JobResult) -> &'static str {
    match (r.status, r.changed) {
        (Status::Ok, true) => "#1b5e20",
        (Status::Ok, false) => "#66bb6a",
        (Status::Failed, _) => "#b00020",
        (Status::Skipped, _) => "#9e9e9e",
    }
}

/// The steps to show bars for: those the job's events announced, then
/// those only its results name (all of them for a job read from its
/// report; the steps a cancel skipped before they started), with the
/// hosts that have a result for each.
fn steps(live: &Live<'_>) -> Vec<StepProgress> {
    let announced = live.progress.steps.len();
    let mut out = live.progress.steps.clone();
    for r in &live.job.results {
        if out[..announced].iter().any(|s| s.step == r.step) {
            continue;
        }
        match out[announced..].iter_mut().find(|s| s.step == r.step) {
            Some(s) => s.hosts += 1,
            None => out.push(StepProgress {
                step: r.step.clone(),
                hosts: 1,
                batches_done: 0,
            }),
        }
    }
    out
}

/// The progress bars: one per step, hosts done of its hosts.
pub fn progress_html(b: &mut String, live: &Live<'_>) {
    let steps = steps(live);
    let running = live.job.outcome == JobStatus::Running;
    let done_of = |step: &str| {
        live.job
            .results
            .iter()
            .filter(|r| r.step == step)
            .count()
    };
    let count_of = |step: &str, status: Status| {
        live.job
            .results
            .iter()
            .filter(|r| r.step == step && r.status == status)
            .count()
    };
    let (done, total) = steps.iter().fold((0, 0), |(d, t), s| {
        let n = done_of(&s.step);
        (d + n, t + s.hosts.max(n))
    });
    let _ = write!(
        b,
        "<section id=\"progress\" aria-labelledby=\"progress-h\" data-done=\"{done}\" data-total=\"{total}\"><h3 id=\"progress-h\">Progress: {done} of {total} host steps{}</h3><div class=\"bars\">",
        if running { "" } else { " (over)" }
    );
    for s in &steps {
        let n = done_of(&s.step);
        let total = s.hosts.max(n);
        let failed = count_of(&s.step, Status::Failed);
        // A cancel's skips fill the bar too: say so, so a full bar does
        // not read as a wave that ran.
        let skipped = count_of(&s.step, Status::Skipped);
        let _ = write!(
            b,
            "<span><b>{step}</b></span><progress max=\"{total}\" value=\"{n}\" aria-label=\"{step}: {n} of {total} hosts\"></progress><span class=\"small\" data-step=\"{step}\">{n}/{total} hosts{batch}{failed}{skipped}</span>",
            step = esc(&s.step),
            batch = if s.batches_done > 0 {
                format!(", batch {} over", s.batches_done)
            } else {
                String::new()
            },
            failed = if failed > 0 {
                format!(", <span class=\"failed\">\u{2717} {failed} failed</span>")
            } else {
                String::new()
            },
            skipped = if skipped > 0 {
                format!(", <span class=\"skipped\">\u{2013} {skipped} skipped</span>")
            } else {
                String::new()
            }
        );
    }
    if steps.is_empty() {
        b.push_str("<span class=\"small\">no step has started yet</span>");
    }
    b.push_str("</div></section>");
}

/// Left column (host names) and plot width, in SVG units.
const LABEL_W: f64 = 150.0;
const PLOT_W: f64 = 600.0;
const ROW_H: f64 = 20.0;
const TOP: f64 = 24.0;

/// The timeline as SVG: a row per host (failed hosts first, then in the
/// order they first ended a step, then those still waiting), a bar per
/// result from its start to its end, with its mark after it.
pub fn timeline_svg(live: &Live<'_>) -> String {
    let results = &live.job.results;
    // Results the job's events did not carry (those its end adds, such
    // as the skips of a cancel) end where the last one did.
    let ended = &live.progress.ended_ms;
    let timed = !results.is_empty() && !ended.is_empty();
    let last = ended.iter().copied().max().unwrap_or(0);
    // (start, end) of every result, in ms or in result slots.
    let spans: Vec<(f64, f64)> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if timed {
                let end = ended.get(i).copied().unwrap_or(last) as f64;
                ((end - r.duration_ms as f64).max(0.0), end)
            } else {
                (i as f64, i as f64 + 1.0)
            }
        })
        .collect();
    let span = spans.iter().map(|s| s.1).fold(1.0_f64, f64::max);
    // Rows: failed hosts first, then in order of their first result,
    // then the hosts with no result yet.
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed: BTreeMap<&str, bool> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        first.entry(r.hostname.as_str()).or_insert(i);
        *failed.entry(r.hostname.as_str()).or_default() |= r.status == Status::Failed;
    }
    let mut rows: Vec<&str> = first.keys().copied().collect();
    rows.sort_by_key(|h| (!failed[h], first[h]));
    rows.extend(
        live.hosts
            .iter()
            .map(String::as_str)
            .filter(|h| !first.contains_key(h)),
    );
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);
    let height = TOP + ROW_H * rows.len().max(1) as f64 + 22.0;
    let ok = results.iter().filter(|r| r.status == Status::Ok).count();
    let bad = results.iter().filter(|r| r.status == Status::Failed).count();
    let skipped = results.len() - ok - bad;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"timeline\" id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-labelledby=\"tl-title tl-desc\" data-results=\"{n}\"><title id=\"tl-title\">Timeline of job {id}</title><desc id=\"tl-desc\">{rows} hosts, {n} results: {ok} ok, {bad} failed, {skipped} skipped. {how}</desc>",
        w = LABEL_W + PLOT_W + 30.0,
        n = results.len(),
        id = esc(&live.job.job_id),
        rows = rows.len() + hidden,
        how = if timed {
            "Bars sit where each step ran on its host."
        } else {
            "Bars follow the order the results ended in."
        }
    );
    let axis_end = if timed {
        format!("{:.1}s", span / 1000.0)
    } else {
        format!("result {}", results.len())
    };
    let _ = write!(
        s,
        "<text x=\"{LABEL_W}\" y=\"14\" font-size=\"11\" fill=\"#555\">{}</text><text x=\"{}\" y=\"14\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">{}</text>",
        if timed { "0s" } else { "first result" },
        LABEL_W + PLOT_W,
        esc(&axis_end)
    );
    for (row, host) in rows.iter().enumerate() {
        let y = TOP + ROW_H * row as f64;
        let _ = write!(
            s,
            "<g class=\"row\" data-host=\"{h}\"><text x=\"4\" y=\"{ty}\" font-size=\"12\" fill=\"#222\">{h}</text><line x1=\"{LABEL_W}\" x2=\"{x2}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"#eee\"/>",
            h = esc(host),
            ty = y + 14.0,
            x2 = LABEL_W + PLOT_W,
            ly = y + ROW_H - 1.0
        );
        if !first.contains_key(host) {
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#777\">waiting</text>",
                LABEL_W + 4.0,
                y + 14.0
            );
        }
        for (i, r) in results.iter().enumerate().filter(|(_, r)| r.hostname == *host) {
            let (x0, x1) = spans[i];
            let x = LABEL_W + x0 / span * PLOT_W;
            let w = ((x1 - x0) / span * PLOT_W).max(3.0);
            let (sign, word) = mark(r);
            let _ = write!(
                s,
                "<g class=\"bar {word}\" data-step=\"{step}\"><title>{h} \u{b7} {step} \u{b7} {word} \u{b7} {ms} ms{err}</title><rect x=\"{x:.1}\" y=\"{ry}\" width=\"{w:.1}\" height=\"{rh}\" rx=\"2\" fill=\"{f}\"/><text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"12\" fill=\"{f}\">{sign}</text></g>",
                h = esc(host),
                step = esc(&r.step),
                ms = r.duration_ms,
                err = r
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", esc(e)))
                    .unwrap_or_default(),
                ry = y + 3.0,
                rh = ROW_H - 7.0,
                f = fill(r),
                tx = x + w + 2.0,
                ty = y + 14.0,
            );
        }
        s.push_str("</g>");
    }
    let legend_y = TOP + ROW_H * rows.len().max(1) as f64 + 16.0;
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{legend_y}\" font-size=\"11\" fill=\"#555\">\u{2713} ok (dark: changed) \u{b7} \u{2717} failed \u{b7} \u{2013} skipped{}</text></svg>",
        if hidden > 0 {
            format!(" \u{b7} {hidden} more hosts not drawn")
        } else {
            String::new()
        }
    );
    s
}

/// The live part of a job page (what `GET /page/job/{id}/live` answers):
/// its outcome, progress bars, timeline and report.
pub fn live_fragment(live: &Live<'_>) -> String {
    let o = word(&live.job.outcome);
    let mut b = format!(
        "<p id=\"outcome\" data-outcome=\"{o}\">Outcome: <b class=\"{o}\">{}{o}</b>{}</p>",
        match live.job.outcome {
            JobStatus::Running => "\u{25B6} ",
            JobStatus::Completed => "\u{2713} ",
            _ => "\u{2717} ",
        },
        live.job
            .finished_at
            .as_deref()
            .map(|f| format!(" <span class=\"small\">finished {}</span>", esc(f)))
            .unwrap_or_default()
    );
    progress_html(&mut b, live);
    b.push_str("<h3>Timeline</h3><div class=\"tl-wrap\">");
    b.push_str(&timeline_svg(live));
    b.push_str("</div>");
    report_table(&mut b, live.job);
    b
}

/// The job's results so far, failures first.
fn report_table(b: &mut String, j: &JobView) {
    b.push_str("<section aria-labelledby=\"report-h\"><h3 id=\"report-h\">Report</h3><table id=\"report\"><thead><tr><th>Host</th><th>Step</th><th>Result</th><th class=\"wide\">Action</th><th class=\"wide\">Time</th><th>Why</th></tr></thead><tbody>");
    let mut results: Vec<&JobResult> = j.results.iter().collect();
    // Failures first; otherwise in the order they ended.
    results.sort_by_key(|r| r.status != Status::Failed);
    for r in results {
        let w = word(&r.status);
        let _ = write!(
            b,
            "<tr data-host=\"{h}\" data-status=\"{w}\"><td>{h}</td><td>{step}</td><td class=\"{w}\"><span aria-hidden=\"true\">{i}</span> {w}{c}</td><td class=\"wide\">{a}</td><td class=\"wide\">{ms} ms</td><td>{e}{logs}</td></tr>",
            h = esc(&r.hostname),
            step = esc(&r.step),
            i = match r.status {
                Status::Ok => "\u{2713}",
                Status::Failed => "\u{2717}",
                Status::Skipped => "\u{2013}",
            },
            c = if r.changed { " (changed)" } else { "" },
            a = esc(&r.action),
            ms = r.duration_ms,
            e = esc(r.error.as_deref().unwrap_or("")),
            logs = if r.logs.is_empty() {
                String::new()
            } else {
                let lines: Vec<String> = r
                    .logs
                    .iter()
                    .map(|e| esc(&crate::render::logs::entry_line(e, false)))
                    .collect();
                format!("<details><summary>journal</summary><pre class=\"logs\">{}</pre></details>", lines.join("\n"))
            }
        );
    }
    b.push_str("</tbody></table></section>");
}
