//! The status page of `drover serve` as HTML: the login form and the
//! page of a session (hosts, units, maintenance flags, recent jobs, the
//! dry-run form, and the style and script that follow running jobs). Pure
//! functions from what the server read to the page's text; the server adds
//! the headers, the CSP nonce and the session. Every text from hosts, keys
//! and playbooks is escaped here, so the page cannot run what a host says.

use std::fmt::Write as _;

use crate::engine::job_store::JobView;
use crate::model::keys::Role;
use crate::model::params::{ParamType, ParamView};
use crate::model::report::JobResult;

use super::fleet::{FleetState, Grid};
pub use super::html::{esc, head, page_end, page_start, word, Chrome};
use super::page_assets::SCRIPT;

/// What the status page shows to one session. Each field is one section,
/// rendered by its own function in the order of [`status_page`].
#[derive(Debug, Clone, Copy)]
pub struct StatusPage<'a> {
    /// Key, role, CSRF token.
    pub chrome: &'a Chrome<'a>,
    /// The fleet: counts, filter, tiles.
    pub grid: &'a Grid<'a>,
    /// The newest jobs, newest first.
    pub jobs: &'a [JobView],
    /// The served runbooks, for the dry-run form.
    pub runbooks: &'a [PageRunbook],
}

/// A runbook the dry-run form offers, with its parameters.
#[derive(Debug, Clone)]
pub struct PageRunbook {
    /// Its name.
    pub name: String,
    /// Its parameters, each a typed input of the form.
    pub params: Vec<ParamView>,
}

/// The login form: the whole page at `GET /` without a session, and the
/// answer to a refused `POST /login`, with why it was refused.
pub fn login_page(message: Option<&str>, nonce: &str) -> String {
    let mut b = head("drover: log in", nonce);
    b.push_str("</head><body><h1>drover serve</h1>");
    if let Some(m) = message {
        let _ = write!(b, "<p class=\"err\" id=\"login-error\">{}</p>", esc(m));
    }
    b.push_str(
        "<form method=\"post\" action=\"/login\" id=\"login\"><label>Key <input type=\"password\" name=\"key\" id=\"key\" autocomplete=\"current-password\" required></label> <button type=\"submit\">Log in</button></form>\
         <p class=\"small\">The key is kept in an HttpOnly cookie of this site until you log out or close the browser.</p></body></html>",
    );
    b
}

/// The status page of a session: the fleet at a glance, maintenance
/// flags, recent jobs and the dry-run form, one section each. `nonce`
/// lets the page's own style and script past its CSP.
pub fn status_page(page: &StatusPage<'_>, nonce: &str) -> String {
    let mut b = page_start("drover status", nonce, page.chrome);
    b.push_str("<main>");
    super::fleet::grid_section(&mut b, page.grid);
    maintenance_section(&mut b, page.grid.fleet);
    jobs_section(&mut b, page);
    dryrun_section(&mut b, page);
    b.push_str("</main>");
    page_end(&mut b, nonce, &[SCRIPT]);
    b
}

/// Every maintenance flag of the hosts shown: host-wide ones, then units'.
fn maintenance_section(b: &mut String, fleet: &FleetState) {
    b.push_str("<section aria-labelledby=\"maint-h\"><h2 id=\"maint-h\">Maintenance</h2><ul id=\"maintenance\">");
    let mut any = false;
    for h in &fleet.hosts {
        if let Some(m) = &h.maintenance {
            any = true;
            let _ = write!(
                b,
                "<li class=\"maint\"><span aria-hidden=\"true\">\u{2699}</span> <a href=\"/page/host/{u}\"><b>{n}</b></a> (whole host): {r} <span class=\"small\">since {s}</span></li>",
                u = esc(&super::fleet::urlencode(&h.name)),
                n = esc(&h.name),
                r = esc(&m.reason),
                s = esc(&m.since)
            );
            continue;
        }
        for u in h.units.iter().filter(|u| u.maintenance.is_some()) {
            let Some(m) = &u.maintenance else { continue };
            any = true;
            let _ = write!(
                b,
                "<li class=\"maint\"><span aria-hidden=\"true\">\u{2699}</span> <a href=\"/page/host/{hu}\"><b>{n}</b></a> {unit}: {r} <span class=\"small\">since {s}</span></li>",
                hu = esc(&super::fleet::urlencode(&h.name)),
                n = esc(&h.name),
                unit = esc(&u.name),
                r = esc(&m.reason),
                s = esc(&m.since)
            );
        }
    }
    if !any {
        b.push_str("<li class=\"small\">none</li>");
    }
    b.push_str("</ul></section>");
}

fn jobs_section(b: &mut String, page: &StatusPage<'_>) {
    b.push_str("<section aria-labelledby=\"jobs-h\"><h2 id=\"jobs-h\">Recent jobs <a class=\"small\" href=\"/page/jobs\">all jobs</a></h2><table id=\"jobs\"><thead><tr><th>Job</th><th>Playbook</th><th class=\"wide\">Started</th><th>Outcome</th><th>Results</th></tr></thead><tbody>");
    for j in page.jobs {
        let _ = write!(
            b,
            "<tr id=\"job-{id}\" data-job=\"{id}\" data-outcome=\"{o}\"><td><a href=\"/page/job/{id}\"><code>{short}</code></a></td><td>{pb}</td><td class=\"wide\">{st}</td><td class=\"outcome {o}\">{o}</td><td><ul class=\"results\">",
            id = esc(&j.job_id),
            short = esc(j.job_id.get(..8).unwrap_or(&j.job_id)),
            pb = esc(&j.playbook),
            st = esc(&j.started_at),
            o = esc(&word(&j.outcome)),
        );
        for r in &j.results {
            b.push_str(&result_li(r));
        }
        b.push_str("</ul>");
        if page.chrome.role >= Role::Operate && retryable(j) {
            let _ = write!(
                b,
                "<button type=\"button\" class=\"retry\" data-retry=\"{}\">Retry failed hosts</button>",
                esc(&j.job_id)
            );
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table></section>");
}

fn dryrun_section(b: &mut String, page: &StatusPage<'_>) {
    b.push_str("<section aria-labelledby=\"dry-h\"><h2 id=\"dry-h\">Dry run</h2>");
    if page.runbooks.is_empty() {
        b.push_str("<p class=\"small\">No runbooks are served (start the server with --playbooks DIR).</p>");
    } else {
        b.push_str("<form id=\"dryrun\"><label>Runbook <select name=\"runbook\" id=\"runbook\">");
        for r in page.runbooks {
            let _ = write!(b, "<option>{}</option>", esc(&r.name));
        }
        b.push_str("</select></label> <label>Limit <input name=\"limit\" id=\"limit\" placeholder=\"selector\"></label> <button type=\"submit\">Plan</button>");
        for (i, r) in page.runbooks.iter().enumerate() {
            param_inputs(b, r, i == 0);
        }
        b.push_str("</form><div id=\"plan\" role=\"status\" aria-live=\"polite\"></div>");
    }
    b.push_str("</section>");
}

/// A runbook's parameters as typed inputs, in a fieldset the script shows
/// (and enables) while that runbook is selected: a disabled fieldset's
/// inputs are neither validated nor sent.
fn param_inputs(b: &mut String, r: &PageRunbook, selected: bool) {
    if r.params.is_empty() {
        return;
    }
    let _ = write!(
        b,
        "<fieldset class=\"params\" data-runbook=\"{}\"{}><legend>Parameters</legend>",
        esc(&r.name),
        if selected { "" } else { " hidden disabled" }
    );
    for p in &r.params {
        let name = esc(&p.name);
        let ty = p.kind.as_str();
        let default = match (&p.default, p.secret) {
            (_, true) | (None, _) => None,
            (Some(serde_json::Value::String(s)), _) => Some(s.clone()),
            (Some(v), _) => Some(v.to_string()),
        };
        let value = default
            .as_deref()
            .map(|d| format!(" value=\"{}\"", esc(d)))
            .unwrap_or_default();
        let required = if p.required { " required" } else { "" };
        let common = format!("name=\"{name}\" data-param=\"{name}\" data-type=\"{ty}\"");
        let _ = write!(b, "<label class=\"param\">{name} ");
        match p.kind {
            ParamType::Boolean => {
                let checked = matches!(p.default, Some(serde_json::Value::Bool(true)));
                let _ = write!(
                    b,
                    "<input type=\"checkbox\" {common}{}>",
                    if checked { " checked" } else { "" }
                );
            }
            ParamType::Enum => {
                let _ = write!(b, "<select {common}{required}>");
                if p.required {
                    b.push_str("<option value=\"\"></option>");
                }
                for v in p.values.iter().flatten() {
                    let sel = default.as_deref() == Some(v.as_str());
                    let _ = write!(
                        b,
                        "<option{}>{}</option>",
                        if sel { " selected" } else { "" },
                        esc(v)
                    );
                }
                b.push_str("</select>");
            }
            ParamType::Integer => {
                let _ = write!(
                    b,
                    "<input type=\"number\" step=\"1\" {common}{value}{required}>"
                );
            }
            _ if p.secret => {
                let _ = write!(
                    b,
                    "<input type=\"password\" autocomplete=\"off\" {common}{required}>"
                );
            }
            kind => {
                let hint = match kind {
                    ParamType::Duration => " placeholder=\"duration, e.g. 30s\"",
                    ParamType::Selector => " placeholder=\"selector, e.g. role:web\"",
                    ParamType::Unit => " placeholder=\"unit, e.g. demo-web\"",
                    _ => "",
                };
                let pattern = p
                    .pattern
                    .as_deref()
                    .map(|x| format!(" pattern=\"{}\"", esc(x)))
                    .unwrap_or_default();
                let _ = write!(
                    b,
                    "<input type=\"text\" {common}{value}{hint}{pattern}{required}>"
                );
            }
        }
        let _ = write!(
            b,
            "</label> <span class=\"small\">{}</span><br>",
            esc(&p.description)
        );
    }
    b.push_str("</fieldset>");
}

/// One result as a list item (the page's job rows).
pub fn result_li(r: &crate::model::report::JobResult) -> String {
    format!(
        "<li class=\"result {s}\" data-host=\"{h}\">{h}: {step} {s}{e}{l}</li>",
        h = esc(&r.hostname),
        step = esc(&r.step),
        s = esc(&word(&r.status)),
        e = r
            .error
            .as_deref()
            .map(|e| format!(" <span class=\"small\">{}</span>", esc(e)))
            .unwrap_or_default(),
        l = logs_pre(&r.logs)
    )
}

/// A failed result's journal lines, one per line: escaped for HTML, and
/// their controls shown as escapes as on a terminal.
fn logs_pre(logs: &[crate::model::logs::LogEntry]) -> String {
    if logs.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = logs
        .iter()
        .map(|e| esc(&crate::render::logs::entry_line(e, false)))
        .collect();
    format!("<pre class=\"logs\">{}</pre>", lines.join("\n"))
}

/// Whether a finished job has hosts a retry would run again.
fn retryable(j: &JobView) -> bool {
    j.outcome != crate::engine::job_store::JobStatus::Running
        && j.results.iter().any(JobResult::needs_retry)
}

