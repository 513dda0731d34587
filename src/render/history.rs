//! Job history and one job's page, as HTML: the paged, filtered list of
//! jobs; and a job with its outcome, progress, timeline (live while it
//! runs, through the page's script) and report, failures first.

use std::fmt::Write as _;

use crate::engine::job_store::{JobStatus, JobView};
use crate::model::keys::Role;
use crate::model::report::HostTally;

use super::fleet::urlencode;
use super::html::{esc, page_end, page_start, word, Chrome};
use super::page_assets::JOB_SCRIPT;
use super::timeline::{live_fragment, Live};

/// The history's filter, as the form sent it (empty: any).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// running, completed, aborted, interrupted or failed.
    pub outcome: String,
    /// A playbook's name.
    pub playbook: String,
    /// A host the job touched.
    pub host: String,
}

impl HistoryFilter {
    fn query(&self, page: usize) -> String {
        let mut q = format!("?page={page}");
        for (k, v) in [
            ("outcome", &self.outcome),
            ("playbook", &self.playbook),
            ("host", &self.host),
        ] {
            if !v.is_empty() {
                let _ = write!(q, "&{k}={}", urlencode(v));
            }
        }
        q
    }
}

/// The history page's input.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// The page's frame.
    pub chrome: &'a Chrome<'a>,
    /// This page of jobs, newest first.
    pub jobs: &'a [JobView],
    /// The filter.
    pub filter: &'a HistoryFilter,
    /// Why the filter was refused, if it was.
    pub filter_error: Option<&'a str>,
    /// The page, 1-based.
    pub page: usize,
    /// Whether there are older jobs past this page.
    pub has_next: bool,
}

const OUTCOMES: [&str; 5] = ["running", "completed", "aborted", "interrupted", "failed"];

fn outcome_icon(o: JobStatus) -> &'static str {
    match o {
        JobStatus::Running => "\u{25B6}",
        JobStatus::Completed => "\u{2713}",
        _ => "\u{2717}",
    }
}

/// The history page: filter form, table, pager.
pub fn history_page(h: &History<'_>, nonce: &str) -> String {
    let mut b = page_start("drover: jobs", nonce, h.chrome);
    b.push_str("<main><h2>Jobs</h2><form method=\"get\" action=\"/page/jobs\" id=\"history-filter\" class=\"filter\"><label>Outcome <select name=\"outcome\" id=\"h-outcome\"><option value=\"\">any</option>");
    for o in OUTCOMES {
        let _ = write!(
            b,
            "<option{}>{o}</option>",
            if h.filter.outcome == o { " selected" } else { "" }
        );
    }
    let _ = write!(
        b,
        "</select></label> <label>Playbook <input name=\"playbook\" id=\"h-playbook\" value=\"{}\"></label> <label>Host <input name=\"host\" id=\"h-host\" value=\"{}\"></label> <button type=\"submit\">Filter</button> <a href=\"/page/jobs\">clear</a></form>",
        esc(&h.filter.playbook),
        esc(&h.filter.host)
    );
    if let Some(e) = h.filter_error {
        let _ = write!(b, "<p class=\"err\" role=\"alert\">{}</p>", esc(e));
    }
    b.push_str("<table id=\"history\"><thead><tr><th>Job</th><th>Playbook</th><th class=\"wide\">Started</th><th>Outcome</th><th>Hosts</th></tr></thead><tbody>");
    for j in h.jobs {
        let t = HostTally::of(&j.results);
        let o = word(&j.outcome);
        let _ = write!(
            b,
            "<tr data-job=\"{id}\" data-outcome=\"{o}\"><td><a href=\"/page/job/{id}\"><code>{short}</code></a></td><td>{pb}</td><td class=\"wide\">{st}</td><td class=\"{o}\"><span aria-hidden=\"true\">{i}</span> {o}</td><td>{ok} ok{f}{s}</td></tr>",
            id = esc(&j.job_id),
            short = esc(j.job_id.get(..8).unwrap_or(&j.job_id)),
            pb = esc(&j.playbook),
            st = esc(&j.started_at),
            i = outcome_icon(j.outcome),
            ok = t.ok,
            f = if t.failed > 0 {
                format!(", <span class=\"failed\">\u{2717} {} failed</span>", t.failed)
            } else {
                String::new()
            },
            s = if t.skipped > 0 {
                format!(", {} skipped", t.skipped)
            } else {
                String::new()
            },
        );
    }
    if h.jobs.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"small\">no job matches</td></tr>");
    }
    let _ = write!(
        b,
        "</tbody></table><nav class=\"pager\" aria-label=\"history pages\">page {}",
        h.page
    );
    if h.page > 1 {
        let _ = write!(
            b,
            " <a rel=\"prev\" href=\"/page/jobs{}\">newer</a>",
            esc(&h.filter.query(h.page - 1))
        );
    }
    if h.has_next {
        let _ = write!(
            b,
            " <a rel=\"next\" href=\"/page/jobs{}\">older</a>",
            esc(&h.filter.query(h.page + 1))
        );
    }
    b.push_str("</nav></main>");
    page_end(&mut b, nonce, &[]);
    b
}

/// One job's page's input.
#[derive(Debug, Clone, Copy)]
pub struct JobPage<'a> {
    /// The page's frame.
    pub chrome: &'a Chrome<'a>,
    /// The job, its progress and hosts.
    pub live: Live<'a>,
}

/// A job's page: what ran, a cancel button while it runs (operate keys),
/// its live part (outcome, progress, timeline, report with the failures
/// first), and where its plan is.
pub fn job_page(p: &JobPage<'_>, nonce: &str) -> String {
    let j = p.live.job;
    let short = j.job_id.get(..8).unwrap_or(&j.job_id);
    let mut b = page_start(&format!("drover: job {short}"), nonce, p.chrome);
    let _ = write!(
        b,
        "<main id=\"job\" data-job=\"{id}\" data-outcome=\"{o}\"><h2>Job <code>{short}</code>: {pb}</h2><p class=\"small\">{id} \u{b7} started {st}{retry}</p>",
        id = esc(&j.job_id),
        o = word(&j.outcome),
        short = esc(short),
        pb = esc(&j.playbook),
        st = esc(&j.started_at),
        retry = j
            .retry_of
            .as_deref()
            .map(|r| format!(" \u{b7} retries <a href=\"/page/job/{}\">{}</a>", esc(r), esc(r.get(..8).unwrap_or(r))))
            .unwrap_or_default()
    );
    if j.outcome == JobStatus::Running && p.chrome.role >= Role::Operate {
        b.push_str("<p><button type=\"button\" id=\"cancel\">Cancel the job</button> <span class=\"small\">nothing new starts; steps in flight finish</span></p>");
    }
    let _ = write!(
        b,
        "<div id=\"live\" aria-live=\"polite\">{}</div>",
        live_fragment(&p.live)
    );
    b.push_str("<section aria-labelledby=\"plan-h\"><h3 id=\"plan-h\">Plan</h3><p class=\"small\" id=\"job-plan\">A job the server runs plans and applies in one go: no plan is saved with it. Preview one with the dry run on the fleet page, or keep one with <code>drover plan --out</code>.</p></section></main>");
    page_end(&mut b, nonce, &[JOB_SCRIPT]);
    b
}
