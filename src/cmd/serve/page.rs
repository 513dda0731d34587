//! The status page at `GET /`: hosts, units, maintenance flags and recent
//! jobs rendered on the server, a little inline script that follows
//! running jobs over their event streams, and a dry-run form. The key is
//! given once in a login form and kept in an HttpOnly, SameSite=Strict
//! cookie; changes made with that cookie carry an HMAC of it under a
//! per-process secret (the CSRF token), which the page embeds. The key
//! itself is never written into the page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::engine::events::NoEvents;
use crate::engine::jobs::JobQuery;
use crate::engine::status::StatusReport;

use super::audit::AuditLine;
use super::auth::Caller;
use super::error::KeepBody;
use super::launch::{on_blocking_pool, reach};
use super::listen::Peer;
use super::session::{cookie_key, csrf_token, COOKIE};
use super::state::AppState;

/// Escape text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
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

/// An HTML answer with the page's headers: no caching, no framing, no
/// referrer, scripts only with this answer's nonce.
fn html(code: StatusCode, body: String, nonce: &str) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r.extensions_mut().insert(KeepBody);
    r
}

fn nonce() -> String {
    let mut n = [0u8; 16];
    let _ = getrandom::fill(&mut n);
    hex::encode(n)
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

fn login_form(code: StatusCode, message: Option<&str>) -> Response {
    let n = nonce();
    let mut b = head("drover: log in", &n);
    b.push_str("</head><body><h1>drover serve</h1>");
    if let Some(m) = message {
        let _ = write!(b, "<p class=\"err\" id=\"login-error\">{}</p>", esc(m));
    }
    b.push_str(
        "<form method=\"post\" action=\"/login\" id=\"login\"><label>Key <input type=\"password\" name=\"key\" id=\"key\" autocomplete=\"current-password\" required></label> <button type=\"submit\">Log in</button></form>\
         <p class=\"small\">The key is kept in an HttpOnly cookie of this site until you log out or close the browser.</p></body></html>",
    );
    html(code, b, &n)
}

/// Body of `POST /login` (a form).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The key, as `drover serve keygen` printed it.
    key: String,
}

/// `POST /login`: check the key, keep it in the session cookie, back to
/// the page; an unknown key gets the form again (401).
#[utoipa::path(post, path = "/login",
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "logged in: `Set-Cookie: drover_session=…; HttpOnly; SameSite=Strict`, `Location: /`"),
        (status = 400, description = "no key in the form (the form again, HTML)", content_type = "text/html"),
        (status = 401, description = "unknown key (the form again, HTML)", content_type = "text/html")),
    tag = "page")]
pub async fn login(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    form: std::result::Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t0 = std::time::Instant::now();
    let Ok(Form(form)) = form else {
        return login_form(StatusCode::BAD_REQUEST, Some("send the key in the form"));
    };
    let key = form.key.trim().to_string();
    let loaded = state.loaded();
    // A cookie value holds no spaces, `;`, `,` or quotes; keygen's keys
    // never do.
    let cookie_safe = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c));
    let Some(k) = loaded.keys.find(&key).filter(|_| cookie_safe) else {
        return login_form(StatusCode::UNAUTHORIZED, Some("unknown key"));
    };
    state.audit.record(AuditLine {
        time: crate::model::now_rfc3339(),
        key: k.name.clone(),
        role: k.role.as_str().to_string(),
        method: "POST".into(),
        path: "/login".into(),
        status: 303,
        job_id: None,
        dry_run: false,
        duration_ms: t0.elapsed().as_millis() as u64,
        peer: peer.map(|p| p.0 .0 .0.clone()).unwrap_or_default(),
    });
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    let secure = if state.settings.tls { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: forget the session cookie (a change: it needs the
/// page's CSRF token like any other).
#[utoipa::path(post, path = "/logout",
    params(("X-CSRF-Token" = String, Header, description = "the page's token (with the session cookie)")),
    responses((status = 303, description = "the cookie is emptied; `Location: /`"),
        (status = 401, body = super::error::ApiError), (status = 403, description = "no or a wrong X-CSRF-Token", body = super::error::ApiError)),
    security(("bearer" = []), ("session" = [])), tag = "page")]
pub async fn logout() -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("drover_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// `GET /`: the page, or the login form without a session.
#[utoipa::path(get, path = "/",
    responses((status = 200, description = "the status page, or without a session cookie the login form", content_type = "text/html")),
    security((), ("session" = [])), tag = "page")]
pub async fn page(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let Some(Extension(caller)) = caller else {
        return login_form(StatusCode::OK, None);
    };
    let Some(key) = cookie_key(&headers) else {
        // A bearer key reaches the page too, but the page's own requests
        // need the cookie: log in.
        return login_form(StatusCode::OK, None);
    };
    let csrf = csrf_token(&state, &key);
    let loaded = state.loaded();
    let inv = caller.inventory(&loaded.inventory);
    let hosts: Vec<(String, String)> = inv
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.clone()))
        .collect();
    let runbooks: Vec<String> = loaded.runbooks.keys().cloned().collect();
    drop(loaded);
    let r = reach(&state);
    let report = on_blocking_pool(move || async move {
        crate::engine::status::status(&inv, None, &[], r, &NoEvents).await
    })
    .await;
    let report: std::result::Result<StatusReport, String> = match report {
        Ok(Ok((rep, _))) => Ok(rep),
        Ok(Err(e)) => Err(format!("{e}: {}", e.details())),
        Err(e) => Err(e.details),
    };
    let jobs = state.jobs.list(&JobQuery {
        limit: 20,
        offset: 0,
        status: None,
    });
    let n = nonce();
    let mut b = head("drover status", &n);
    let _ = write!(
        b,
        "<meta name=\"csrf-token\" content=\"{}\"></head><body><header><h1>drover status</h1><form method=\"post\" action=\"/logout\" id=\"logout\"><span class=\"small\">{} ({})</span> <button type=\"submit\">Log out</button></form></header>",
        esc(&csrf),
        esc(&caller.name),
        caller.role.as_str()
    );
    b.push_str("<h2>Hosts</h2><div id=\"hosts\">");
    match &report {
        Err(e) => {
            let _ = write!(b, "<p class=\"err\">{}</p>", esc(e));
        }
        Ok(rep) => render_hosts(&mut b, &hosts, rep),
    }
    b.push_str("</div><h2>Maintenance</h2><ul id=\"maintenance\">");
    if let Ok(rep) = &report {
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
    for j in &jobs {
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
        b.push_str("</ul></td></tr>");
    }
    b.push_str("</tbody></table><h2>Dry run</h2>");
    if runbooks.is_empty() {
        b.push_str("<p class=\"small\">No runbooks are served (start the server with --playbooks DIR).</p>");
    } else {
        b.push_str("<form id=\"dryrun\"><select name=\"runbook\" id=\"runbook\">");
        for r in &runbooks {
            let _ = write!(b, "<option>{}</option>", esc(r));
        }
        b.push_str("</select> <input name=\"limit\" id=\"limit\" placeholder=\"limit (selector)\"> <button type=\"submit\">Plan</button></form><pre id=\"plan\" hidden></pre>");
    }
    let _ = write!(b, "<script nonce=\"{n}\">{SCRIPT}</script></body></html>");
    html(StatusCode::OK, b, &n)
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
        "<li class=\"result {s}\" data-host=\"{h}\">{h}: {step} {s}{e}</li>",
        h = esc(&r.hostname),
        step = esc(&r.step),
        s = esc(&word(&r.status)),
        e = r
            .error
            .as_deref()
            .map(|e| format!(" <span class=\"small\">{}</span>", esc(e)))
            .unwrap_or_default()
    )
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

/// The page's script: new jobs appear (GET /job every 2 s), a running
/// job's results arrive over its event stream, the dry-run form shows the
/// plan. Text from hosts only ever goes into `textContent`.
const SCRIPT: &str = r#"
(function(){
const csrf=document.querySelector('meta[name=csrf-token]').content;
const tbody=document.querySelector('#jobs tbody');
const following=new Set();
function li(r){const e=document.createElement('li');e.className='result '+r.status;e.dataset.host=r.hostname;
 e.textContent=r.hostname+': '+r.step+' '+r.status+(r.error?' ('+r.error+')':'');return e;}
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
const dr=document.getElementById('dryrun');
if(dr)dr.addEventListener('submit',ev=>{ev.preventDefault();const pre=document.getElementById('plan');pre.hidden=false;pre.textContent='planning…';
 const name=document.getElementById('runbook').value;const limit=document.getElementById('limit').value.trim();
 let url='/runbook/'+encodeURIComponent(name)+'?dry_run=true';if(limit)url+='&limit='+encodeURIComponent(limit);
 fetch(url,{method:'POST',headers:{'X-CSRF-Token':csrf}}).then(r=>r.text()).then(t=>{
  try{pre.textContent=JSON.stringify(JSON.parse(t),null,2);}catch(e){pre.textContent=t;}}).catch(e=>{pre.textContent=String(e);});});
})();
"#;
