//! The status page of `drover serve` as HTML: the login form and the
//! page of a session (hosts, units, maintenance flags, recent jobs, the
//! dry-run form, and the style and script that follow running jobs). Pure
//! functions from what the server read to the page's text; the server adds
//! the headers, the CSP nonce and the session. Every text from hosts, keys
//! and playbooks is escaped here, so the page cannot run what a host says.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::engine::job_store::JobView;
use crate::engine::status::StatusReport;
use crate::model::keys::Role;
use crate::model::params::{ParamType, ParamView};
use crate::model::report::JobResult;

/// What the status page shows to one session.
#[derive(Debug, Clone, Copy)]
pub struct StatusPage<'a> {
    /// The session key's name, beside the log-out button.
    pub key_name: &'a str,
    /// Its role.
    pub role: Role,
    /// The hosts the key may see, as (name, address), in inventory order.
    pub hosts: &'a [(String, String)],
    /// Their units, or why they could not be read.
    pub status: Result<&'a StatusReport, &'a str>,
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

/// The status page of a session: the key's hosts with their units,
/// maintenance flags, recent jobs and the dry-run form. `csrf` is the
/// session's token, which the page's script sends with every change;
/// `nonce` lets the page's own style and script past its CSP.
pub fn status_page(page: &StatusPage<'_>, nonce: &str, csrf: &str) -> String {
    let mut b = head("drover status", nonce);
    let _ = write!(
        b,
        "<meta name=\"csrf-token\" content=\"{}\"></head><body><header><h1>drover status</h1><form method=\"post\" action=\"/logout\" id=\"logout\"><span class=\"small\">{} ({})</span> <button type=\"submit\">Log out</button></form></header>",
        esc(csrf),
        esc(page.key_name),
        page.role.as_str()
    );
    b.push_str("<h2>Hosts</h2><div id=\"hosts\">");
    match page.status {
        Err(e) => {
            let _ = write!(b, "<p class=\"err\">{}</p>", esc(e));
        }
        Ok(rep) => render_hosts(&mut b, page.hosts, rep),
    }
    b.push_str("</div><h2>Maintenance</h2><ul id=\"maintenance\">");
    if let Ok(rep) = page.status {
        if rep.maintenance.is_empty() {
            b.push_str("<li class=\"small\">none</li>");
        }
        for m in &rep.maintenance {
            let _ = write!(
                b,
                "<li class=\"maint\"><b>{}</b> {}: {} <span class=\"small\">since {}</span></li>",
                esc(&m.hostname),
                esc(m.unit.as_deref().unwrap_or("(whole host)")),
                esc(&m.reason),
                esc(&m.since)
            );
        }
    }
    b.push_str("</ul><h2>Recent jobs</h2><table id=\"jobs\"><thead><tr><th>Job</th><th>Playbook</th><th class=\"wide\">Started</th><th>Outcome</th><th>Results</th></tr></thead><tbody>");
    for j in page.jobs {
        let _ = write!(
            b,
            "<tr id=\"job-{id}\" data-job=\"{id}\" data-outcome=\"{o}\"><td><code>{short}</code></td><td>{pb}</td><td class=\"wide\">{st}</td><td class=\"outcome {o}\">{o}</td><td><ul class=\"results\">",
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
        if page.role >= Role::Operate && retryable(j) {
            let _ = write!(
                b,
                "<button type=\"button\" class=\"retry\" data-retry=\"{}\">Retry failed hosts</button>",
                esc(&j.job_id)
            );
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table><h2>Dry run</h2>");
    if page.runbooks.is_empty() {
        b.push_str("<p class=\"small\">No runbooks are served (start the server with --playbooks DIR).</p>");
    } else {
        b.push_str("<form id=\"dryrun\"><select name=\"runbook\" id=\"runbook\">");
        for r in page.runbooks {
            let _ = write!(b, "<option>{}</option>", esc(&r.name));
        }
        b.push_str("</select> <input name=\"limit\" id=\"limit\" placeholder=\"limit (selector)\"> <button type=\"submit\">Plan</button>");
        for (i, r) in page.runbooks.iter().enumerate() {
            param_inputs(&mut b, r, i == 0);
        }
        b.push_str("</form><pre id=\"plan\" hidden></pre>");
    }
    let _ = write!(
        b,
        "<script nonce=\"{nonce}\">{SCRIPT}</script></body></html>"
    );
    b
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

/// Escape text for HTML (element content and quoted attributes).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;padding:0 .8em 2em;color:#222;background:#fafafa;max-width:70em}
h1{font-size:1.3em;margin:.6em 0}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{text-align:left;padding:.2em .4em;border-bottom:1px solid #eee;vertical-align:top}
.RUNNING,.ok,.passing,.completed{color:#17692b}.FAILED,.failed,.critical,.aborted,.interrupted{color:#b00020;font-weight:bold}
.STARTING,.RESTARTING,.running,.skipped{color:#a15c00}.STOPPED{color:#666}.maint{background:#fff3cd}
details{margin:.3em 0;background:#fff;border:1px solid #ddd;border-radius:4px;padding:.3em .5em}summary{cursor:pointer}
header{display:flex;justify-content:space-between;align-items:center;flex-wrap:wrap;gap:.5em}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #ddd;padding:.5em;font-size:.85em;max-height:30em;overflow:auto}
input,select,button{font-size:1em;padding:.3em}.err{color:#b00020}.small{font-size:.8em;color:#666}
@media (max-width:40em){td,th{padding:.2em}.wide{display:none}}
"#;

fn head(title: &str, nonce: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style nonce=\"{nonce}\">{STYLE}</style>",
        esc(title)
    )
}

/// A serialized enum's word (`running`, `ok`).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn result_li(r: &crate::model::report::JobResult) -> String {
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

fn render_hosts(b: &mut String, hosts: &[(String, String)], rep: &StatusReport) {
    let mut by_host: BTreeMap<&str, Vec<&crate::engine::status::StatusEntry>> = BTreeMap::new();
    for s in &rep.services {
        by_host.entry(&s.hostname).or_default().push(s);
    }
    for (name, address) in hosts {
        let error = rep.errors.iter().find(|e| e.hostname == *name);
        let units = by_host.get(name.as_str()).cloned().unwrap_or_default();
        let running = units
            .iter()
            .filter(|u| u.status.as_str() == "RUNNING")
            .count();
        let failed = units
            .iter()
            .filter(|u| u.status.as_str() == "FAILED")
            .count();
        let host_maint = rep
            .maintenance
            .iter()
            .find(|m| m.hostname == *name && m.unit.is_none());
        let _ = write!(
            b,
            "<details class=\"host\" data-host=\"{n}\"><summary><b>{n}</b> <span class=\"small\">{a}</span> ",
            n = esc(name),
            a = esc(address)
        );
        match error {
            Some(e) => {
                let _ = write!(b, "<span class=\"err\">{}</span>", esc(&e.error));
            }
            None => {
                let _ = write!(
                    b,
                    "{running} running{}",
                    if failed > 0 {
                        format!(", <span class=\"FAILED\">{failed} failed</span>")
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(m) = host_maint {
            let _ = write!(
                b,
                " <span class=\"maint\">maintenance: {}</span>",
                esc(&m.reason)
            );
        }
        b.push_str("</summary><table><thead><tr><th>Unit</th><th>Status</th><th>Uptime</th><th>Maintenance</th></tr></thead><tbody>");
        // Stopped units without a flag (most of a host's: one-shot set-up
        // units) are only named, below the table, to keep the page short.
        let (shown, quiet): (Vec<_>, Vec<_>) = units
            .into_iter()
            .partition(|u| u.status.as_str() != "STOPPED" || u.maintenance.is_some());
        for u in shown {
            let _ = write!(
                b,
                "<tr data-unit=\"{n}\"><td>{n}</td><td class=\"{s}\">{s}</td><td>{up}</td><td>{m}</td></tr>",
                n = esc(&u.name),
                s = u.status.as_str(),
                up = u
                    .uptime
                    .map(crate::render::status::format_uptime)
                    .unwrap_or_default(),
                m = u
                    .maintenance
                    .as_ref()
                    .map(|m| format!("<span class=\"maint\">{}</span>", esc(&m.reason)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</tbody></table>");
        if !quiet.is_empty() {
            let names: Vec<String> = quiet.iter().map(|u| esc(&u.name)).collect();
            let _ = write!(
                b,
                "<p class=\"small stopped\">STOPPED: {}</p>",
                names.join(", ")
            );
        }
        b.push_str("</details>");
    }
}

/// Whether a finished job has hosts a retry would run again.
fn retryable(j: &JobView) -> bool {
    j.outcome != crate::engine::job_store::JobStatus::Running
        && j.results.iter().any(JobResult::needs_retry)
}

/// The page's script: new jobs appear (GET /job every 2 s), a running
/// job's results arrive over its event stream, the dry-run form shows the
/// plan. Text from hosts only ever goes into `textContent`.
const SCRIPT: &str = r#"
(function(){
const csrf=document.querySelector('meta[name=csrf-token]').content;
const tbody=document.querySelector('#jobs tbody');
const following=new Set();
function li(r){const e=document.createElement('li');e.className='result '+r.status;e.dataset.host=r.hostname;
 e.textContent=r.hostname+': '+r.step+' '+r.status+(r.error?' ('+r.error+')':'');
 if(r.logs&&r.logs.length){const p=document.createElement('pre');p.className='logs';
  p.textContent=r.logs.map(l=>l.timestamp+' '+l.priority+' '+l.unit+(l.pid?' pid='+l.pid:'')+': '+l.message).join('\n');e.appendChild(p);}
 return e;}
function setOutcome(tr,o){tr.dataset.outcome=o;const c=tr.querySelector('.outcome');c.textContent=o;c.className='outcome '+o;}
function row(j){let tr=document.getElementById('job-'+j.job_id);if(tr)return tr;
 tr=document.createElement('tr');tr.id='job-'+j.job_id;tr.dataset.job=j.job_id;
 for(const [cls,text] of [['',j.job_id.slice(0,8)],['',j.playbook],['wide',j.started_at],['outcome',''],['','']]){
  const td=document.createElement('td');if(cls)td.className=cls;td.textContent=text;tr.appendChild(td);}
 tr.firstChild.innerHTML='';const code=document.createElement('code');code.textContent=j.job_id.slice(0,8);tr.firstChild.appendChild(code);
 const ul=document.createElement('ul');ul.className='results';tr.lastChild.appendChild(ul);
 setOutcome(tr,j.outcome);tbody.insertBefore(tr,tbody.firstChild);return tr;}
function follow(tr){const id=tr.dataset.job;if(following.has(id))return;following.add(id);
 const ul=tr.querySelector('.results');const es=new EventSource('/job/'+encodeURIComponent(id)+'/events');
 let n=0;es.addEventListener('result',ev=>{const r=JSON.parse(ev.data);n++;
  if(n>ul.children.length)ul.appendChild(li(r));});
 es.addEventListener('done',ev=>{setOutcome(tr,JSON.parse(ev.data).outcome);es.close();});
 es.onerror=()=>{es.close();following.delete(id);};}
function poll(){fetch('/job?limit=20',{credentials:'same-origin'}).then(r=>r.ok?r.json():[]).then(js=>{
 for(const j of js.slice().reverse()){const tr=row(j);
  if(j.outcome==='running'){follow(tr);continue;}
  if(following.has(tr.dataset.job))continue;
  const ul=tr.querySelector('.results');for(const r of j.results.slice(ul.children.length))ul.appendChild(li(r));
  setOutcome(tr,j.outcome);}
}).catch(()=>{}).finally(()=>setTimeout(poll,2000));}
document.querySelectorAll('#jobs tr[data-outcome=running]').forEach(follow);
poll();
const lo=document.getElementById('logout');
lo.addEventListener('submit',ev=>{ev.preventDefault();fetch('/logout',{method:'POST',headers:{'X-CSRF-Token':csrf}}).then(()=>location.reload());});
document.addEventListener('click',ev=>{const b=ev.target.closest('button[data-retry]');if(!b)return;
 b.disabled=true;b.textContent='retrying…';
 fetch('/job/'+encodeURIComponent(b.dataset.retry)+'/retry?wait=0s',{method:'POST',headers:{'X-CSRF-Token':csrf}})
 .then(r=>r.json().then(j=>{b.textContent=r.ok?'retry: '+String(j.job_id).slice(0,8):String(j.details||j.error);}))
 .catch(e=>{b.textContent=String(e);});});
const dr=document.getElementById('dryrun');
function showParams(){const name=document.getElementById('runbook').value;
 dr.querySelectorAll('fieldset.params').forEach(f=>{const on=f.dataset.runbook===name;f.hidden=!on;f.disabled=!on;});}
function params(){const out={};dr.querySelectorAll('fieldset.params:not([disabled]) [data-param]').forEach(e=>{
 const t=e.dataset.type;if(t==='boolean'){out[e.dataset.param]=e.checked;return;}
 if(e.value==='')return;out[e.dataset.param]=t==='integer'?Number(e.value):e.value;});return out;}
if(dr){document.getElementById('runbook').addEventListener('change',showParams);showParams();}
if(dr)dr.addEventListener('submit',ev=>{ev.preventDefault();const pre=document.getElementById('plan');pre.hidden=false;pre.textContent='planning…';
 const name=document.getElementById('runbook').value;const limit=document.getElementById('limit').value.trim();
 let url='/runbook/'+encodeURIComponent(name)+'?dry_run=true';if(limit)url+='&limit='+encodeURIComponent(limit);
 fetch(url,{method:'POST',headers:{'X-CSRF-Token':csrf,'Content-Type':'application/json'},body:JSON.stringify({params:params()})}).then(r=>r.text()).then(t=>{
  try{pre.textContent=JSON.stringify(JSON.parse(t),null,2);}catch(e){pre.textContent=t;}}).catch(e=>{pre.textContent=String(e);});});
})();
"#;
