//! The status page's other pages and fragments, under `/page/`: a host's
//! units, the job history, one job (and the live fragment its script
//! re-fetches while it runs), a dry run's plan as HTML, and the
//! maintenance toggle. The HTML is `render`'s; here: reading what they
//! show, under the same session, CSRF and CSP rules as `GET /`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use crate::engine::job::AdHoc;
use crate::engine::job_store::{JobQuery, JobStatus};
use crate::model::keys::Role;
use crate::model::params::ParamValues;
use crate::model::template::CallerText;
use crate::render;
use crate::render::history::{History, HistoryFilter, JobPage};
use crate::render::page::Chrome;
use crate::render::timeline::Live;

use super::auth::Caller;
use super::error::ApiError;
use super::fleet::{fleet_state, refresh_host};
use super::jobs::{check_selector_params, RunbookBody};
use super::launch::{job_for, start_job, ChangeQuery, Started};
use super::page::{chrome_parts, html, login_form, nonce};
use super::session::SessionId;
use super::state::{valid_runbook_name, AppState};

/// Jobs on one page of the history.
pub const JOBS_PER_PAGE: usize = 50;

/// A page that says why there is nothing to show (404), in the frame.
fn not_found(chrome: &Chrome<'_>, what: &str) -> Response {
    let n = nonce();
    let mut b = render::page::page_start("drover: not found", &n, chrome);
    b.push_str(&format!(
        "<main><h2>Not found</h2><p class=\"err\">{}</p><p><a href=\"/\">back to the fleet</a></p></main>",
        render::page::esc(what)
    ));
    render::page::page_end(&mut b, &n, &[]);
    html(StatusCode::NOT_FOUND, b, &n)
}

/// `GET /page/host/{name}`: one host's units.
#[utoipa::path(get, path = "/page/host/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "the host's page: its units (failed first, stopped ones folded), their health as Consul reports it, maintenance toggles for operate keys; without a session the login form", content_type = "text/html"),
        (status = 404, description = "no such host the key may see", content_type = "text/html")),
    security((), ("session" = [])), tag = "page")]
pub async fn host(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    session: Option<Extension<SessionId>>,
    Path(name): Path<String>,
) -> Response {
    let Some((caller, csrf)) = chrome_parts(caller, session) else {
        return login_form(StatusCode::OK, None);
    };
    let chrome = Chrome {
        key_name: &caller.name,
        role: caller.role,
        csrf: &csrf,
    };
    let fleet = fleet_state(&state, &caller, std::slice::from_ref(&name)).await;
    // A host outside the key's targets reads as one that does not exist.
    let Some(h) = fleet.hosts.first() else {
        return not_found(&chrome, &format!("no host `{name}` this key may see"));
    };
    let n = nonce();
    let body = render::fleet::host_page(
        &render::fleet::HostPage {
            chrome: &chrome,
            host: h,
            watched: &fleet.watched,
            read_at: fleet.read_at,
            now: chrono::Utc::now(),
        },
        &n,
    );
    html(StatusCode::OK, body, &n)
}

/// Query of `GET /page/jobs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// running, completed, aborted, interrupted or failed.
    pub outcome: Option<String>,
    /// Only this playbook's jobs (its name).
    pub playbook: Option<String>,
    /// Only jobs that touch this host.
    pub host: Option<String>,
    /// The page, 1-based (50 jobs a page).
    pub page: Option<usize>,
}

/// `GET /page/jobs`: the job history, paged and filtered.
#[utoipa::path(get, path = "/page/jobs", params(HistoryQuery),
    responses((status = 200, description = "the job history, newest first, 50 a page; without a session the login form", content_type = "text/html")),
    security((), ("session" = [])), tag = "page")]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    session: Option<Extension<SessionId>>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((caller, csrf)) = chrome_parts(caller, session) else {
        return login_form(StatusCode::OK, None);
    };
    let (q, mut filter_error) = match q {
        Ok(Query(q)) => (q, None),
        Err(e) => (HistoryQuery::default(), Some(format!("the filter: {e}"))),
    };
    let clean = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let filter = HistoryFilter {
        outcome: clean(q.outcome).unwrap_or_default(),
        playbook: clean(q.playbook).unwrap_or_default(),
        host: clean(q.host).unwrap_or_default(),
    };
    let status = match filter.outcome.as_str() {
        "" => None,
        o => match o.parse::<JobStatus>() {
            Ok(s) => Some(s),
            Err(m) => {
                filter_error = Some(m);
                None
            }
        },
    };
    let page = q.page.unwrap_or(1).max(1);
    let within = caller.job_scope(&state.loaded().inventory);
    let mut jobs = state.jobs.list(&JobQuery {
        limit: JOBS_PER_PAGE + 1,
        offset: (page - 1).saturating_mul(JOBS_PER_PAGE),
        status,
        within,
        playbook: (!filter.playbook.is_empty()).then(|| filter.playbook.clone()),
        host: (!filter.host.is_empty()).then(|| filter.host.clone()),
    });
    let has_next = jobs.len() > JOBS_PER_PAGE;
    jobs.truncate(JOBS_PER_PAGE);
    let chrome = Chrome {
        key_name: &caller.name,
        role: caller.role,
        csrf: &csrf,
    };
    let n = nonce();
    let body = render::history::history_page(
        &History {
            chrome: &chrome,
            jobs: &jobs,
            filter: &filter,
            filter_error: filter_error.as_deref(),
            page,
            has_next,
        },
        &n,
    );
    html(StatusCode::OK, body, &n)
}

/// `GET /page/job/{id}`: one job, live while it runs.
#[utoipa::path(get, path = "/page/job/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "the job's page: outcome, progress per step, timeline (SVG), report with failures first, a cancel button for operate keys while it runs; without a session the login form", content_type = "text/html"),
        (status = 404, description = "no such job the key may see", content_type = "text/html")),
    security((), ("session" = [])), tag = "page")]
pub async fn job(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    session: Option<Extension<SessionId>>,
    Path(id): Path<String>,
) -> Response {
    let Some((caller, csrf)) = chrome_parts(caller, session) else {
        return login_form(StatusCode::OK, None);
    };
    let chrome = Chrome {
        key_name: &caller.name,
        role: caller.role,
        csrf: &csrf,
    };
    let Ok(e) = super::jobs::entry(&state, &caller, &id) else {
        return not_found(&chrome, &format!("no job `{id}` this key may see"));
    };
    let (view, progress) = (e.view(), e.progress());
    let n = nonce();
    let body = render::history::job_page(
        &JobPage {
            chrome: &chrome,
            live: Live {
                job: &view,
                progress: &progress,
                hosts: e.hosts(),
            },
        },
        &n,
    );
    html(StatusCode::OK, body, &n)
}

/// `GET /page/job/{id}/live`: the live part of the job's page (outcome,
/// progress, timeline), which its script fetches on every result.
#[utoipa::path(get, path = "/page/job/{id}/live", params(("id" = String, Path)),
    responses((status = 200, description = "an HTML fragment: outcome, progress bars, timeline SVG", content_type = "text/html"),
        (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("session" = [])), tag = "page")]
pub async fn job_live(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(Extension(caller)) = caller else {
        return Err(ApiError::unauthorized());
    };
    let e = super::jobs::entry(&state, &caller, &id)?;
    let (view, progress) = (e.view(), e.progress());
    let body = render::timeline::live_fragment(&Live {
        job: &view,
        progress: &progress,
        hosts: e.hosts(),
    });
    Ok(html(StatusCode::OK, body, &nonce()))
}

/// `POST /page/dryrun/{name}`: a runbook's dry run as the page shows it:
/// the CLI's text and per-host diffs, folded, and its markdown to copy.
#[utoipa::path(post, path = "/page/dryrun/{name}", params(("name" = String, Path)),
    request_body(content = Option<RunbookBody>, description = "as for POST /runbook/{name}", content_type = "application/json"),
    responses((status = 200, description = "an HTML fragment: the plan (nothing is changed)", content_type = "text/html"),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError)),
    security(("session" = []), ("bearer" = [])), tag = "page")]
pub async fn dryrun(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RunbookBody = if body.is_empty() {
        RunbookBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body: {e}; it takes {{\"limit\": \"SELECTOR\", \"params\": {{\"NAME\": VALUE}}}}"
            ))
        })?
    };
    if !valid_runbook_name(&name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is not a runbook name (letters, digits, `-`, `_`, `.`; never a path)"
        )));
    }
    let rb = state.loaded().runbooks.get(&name).cloned().ok_or_else(|| {
        ApiError::not_found(format!("no runbook `{name}`; GET /runbook lists them"))
    })?;
    let values = ParamValues::from_request(body.params.unwrap_or_default());
    let playbook = rb.playbook_with(&values)?;
    check_selector_params(&state, &caller, &playbook)?;
    let job = job_for(&state, &caller, playbook, body.limit.as_deref())?;
    let q = ChangeQuery {
        dry_run: Some(true),
        ..ChangeQuery::default()
    };
    match start_job(&state, &caller, job, &q, Vec::new()).await? {
        Started::Plan(plan) => Ok(html(
            StatusCode::OK,
            render::dryrun::plan_fragment(&plan),
            &nonce(),
        )),
        _ => Err(ApiError::internal("a dry run started a job")),
    }
}

/// Body of `POST /page/maintenance`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceToggle {
    /// The host (inventory name).
    pub host: String,
    /// The unit; absent: the whole host.
    pub unit: Option<String>,
    /// On or off.
    pub enable: bool,
    /// Why (required to enable).
    pub reason: Option<String>,
}

/// `POST /page/maintenance`: set or clear a host's or unit's maintenance
/// flag (operate keys), as `drover maintenance` does; the page's snapshot
/// of the host is read again before the answer.
#[utoipa::path(post, path = "/page/maintenance",
    request_body(content = MaintenanceToggle, content_type = "application/json"),
    responses((status = 200, description = "the job report", body = crate::model::report::JobReport),
        (status = 202, body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("session" = []), ("bearer" = [])), tag = "page")]
pub async fn maintenance(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let t: MaintenanceToggle = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body: {e}; it takes {{\"host\": NAME, \"unit\": UNIT (optional), \"enable\": true|false, \"reason\": TEXT}}"
        ))
    })?;
    {
        let loaded = state.loaded();
        let host = loaded
            .inventory
            .host(&t.host)
            .ok_or_else(|| caller.selection(crate::model::error::Error::Usage(format!("no host `{}` in the inventory", t.host))))?;
        caller.check_hosts([host])?;
    }
    let unit = match t.unit.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => Some(
            crate::model::unit::UnitName::parse(u)
                .map_err(|m| ApiError::bad_request(format!("unit: {m}")))?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let reason = match (t.enable, t.reason.as_deref().map(str::trim)) {
        (true, Some(r)) if !r.is_empty() => Some(CallerText::new(r.to_string())),
        (true, _) => {
            return Err(ApiError::bad_request(
                "reason: say why the host or unit goes into maintenance",
            ))
        }
        (false, _) => None,
    };
    let op = AdHoc::Maintenance {
        enable: t.enable,
        unit,
        target: t.host.clone(),
        reason,
    };
    let job = job_for(&state, &caller, op.playbook()?, None)?;
    let started = start_job(&state, &caller, job, &ChangeQuery::default(), Vec::new()).await?;
    refresh_host(&state, &t.host).await;
    Ok(started.into_response())
}
