//! Plans and approvals over HTTP: a runbook's plan stored under its digest
//! (`POST /runbook/{name}/plan`, or a `plan --out` file sent to `POST
//! /plan`), read as JSON, markdown or text, approved by other keys, and
//! applied exactly, with `apply --plan`'s drift refusal. A runbook with
//! `approval:` runs over HTTP only this way.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::engine::claims::Claim;
use crate::engine::plan_store::{valid_digest, Approval, NewPlan, PlanRefusal, PlanRun, StoredPlan};
use crate::engine::saved::SavedPlan;
use crate::model::keys::Role;
use crate::model::params::ParamValues;

use super::auth::Caller;
use super::error::{without_server_paths, ApiError};
use super::extract::{json_body, query};
use super::jobs::{check_selector_params, RunbookBody};
use super::launch::{job_for, start_job_with, ChangeQuery, Continuation};
use super::state::{valid_runbook_name, AppState, Runbook};

/// Answer of `POST /runbook/{name}/plan` and `POST /plan` (201).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanMade {
    /// The plan's name: SHA-256 of its `drover.plan/1` JSON.
    pub digest: String,
    /// The runbook it plans.
    pub runbook: String,
    /// Where it is: `GET` it, `POST` `/approve` and `/apply` under it.
    pub link: String,
    /// The plan as markdown, for review.
    pub markdown: String,
    /// When it expires (`serve --plan-ttl` after it was made).
    pub expires_at: String,
    /// Approvals the runbook needs before the plan may be applied.
    pub approvals_needed: u32,
}

/// A stored plan as `GET /plan` and `GET /plan/{digest}` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    /// SHA-256 of its `drover.plan/1` JSON.
    pub digest: String,
    /// The runbook it plans.
    pub runbook: String,
    /// The key that made it.
    pub made_by: String,
    /// When.
    pub made_at: String,
    /// When it expires.
    pub expires_at: String,
    /// Whether it expired (it can no longer be approved nor applied).
    pub expired: bool,
    /// Approvals the runbook needs now.
    pub approvals_needed: u32,
    /// Approvals given.
    pub approvals: Vec<Approval>,
    /// The job that applied it.
    pub applied: Option<PlanRun>,
    /// `GET /plan/{digest}` only: the `drover.plan/1` document.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
}

/// Query of `POST /runbook/{name}/plan`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MakeQuery {
    /// Only these hosts (a selector), as `--limit`.
    pub limit: Option<String>,
}

/// Query of `GET /plan/{digest}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// json (default), markdown or text; over the `Accept` header.
    pub format: Option<String>,
}

/// Query of `POST /plan/{digest}/apply`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    /// How long to wait for the job before answering 202 (`30s` default,
    /// at most `10m`).
    pub wait: Option<String>,
    /// Admin keys only: run outside the runbook's maintenance window.
    pub ignore_window: Option<bool>,
}

/// Optional body of `POST /plan/{digest}/apply`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// The values of the runbook's secret parameters (a plan records every
    /// other value, and refuses different ones).
    #[schema(value_type = Option<Object>)]
    pub params: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// What the store's refusals answer.
fn refused(r: PlanRefusal) -> ApiError {
    let details = r.to_string();
    match r {
        PlanRefusal::NotFound => ApiError::not_found(details),
        PlanRefusal::Expired(_) => ApiError::new(StatusCode::GONE, "plan expired", details),
        PlanRefusal::OwnPlan | PlanRefusal::NotApproved(..) => ApiError::forbidden(details),
        PlanRefusal::ApprovedAlready | PlanRefusal::Applied(_) => ApiError::conflict(details),
    }
}

/// The plan `digest` if this key may see it: one touching hosts outside a
/// scoped key's targets answers as one that does not exist.
fn visible(state: &AppState, caller: &Caller, digest: &str) -> Result<StoredPlan, ApiError> {
    if !valid_digest(digest) {
        return Err(ApiError::bad_request(format!(
            "`{digest}` is not a plan digest (64 lowercase hex digits)"
        )));
    }
    let p = state.plans.get(digest).ok_or_else(|| refused(PlanRefusal::NotFound))?;
    let within = caller.job_scope(&state.loaded().inventory);
    if within.is_some_and(|w| p.hosts.iter().any(|h| !w.contains(h))) {
        return Err(refused(PlanRefusal::NotFound));
    }
    Ok(p)
}

fn runbook(state: &AppState, name: &str) -> Result<Runbook, ApiError> {
    state.loaded().runbooks.get(name).cloned().ok_or_else(|| {
        ApiError::not_found(format!("no runbook `{name}`; GET /runbook lists them"))
    })
}

/// Approvals the runbook asks for now (0: none).
fn needed(rb: &Runbook) -> Result<u32, ApiError> {
    Ok(rb.approvals()?)
}

fn view(state: &AppState, p: StoredPlan, with_plan: bool) -> PlanView {
    let need = state
        .loaded()
        .runbooks
        .get(&p.runbook)
        .and_then(|rb| needed(rb).ok())
        .unwrap_or(0);
    let plan = with_plan.then(|| shown_json(&p.plan));
    PlanView {
        expired: p.expired(crate::engine::plan_store::now_ms()),
        digest: p.digest,
        runbook: p.runbook,
        made_by: p.made_by,
        made_at: p.made_at,
        expires_at: p.expires_at,
        approvals_needed: need,
        approvals: p.approvals,
        applied: p.applied,
        plan,
    }
}

/// The stored document as answered: the server's paths cut as in errors.
fn shown_json(text: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let hide = |p: &mut serde_json::Value| {
        if let Some(s) = p.as_str() {
            *p = serde_json::Value::from(without_server_paths(s));
        }
    };
    for k in ["playbook", "inventory"] {
        if let Some(p) = v.get_mut(k).and_then(|s| s.get_mut("path")) {
            hide(p);
        }
    }
    if let Some(inputs) = v.get_mut("inputs").and_then(|i| i.as_array_mut()) {
        for i in inputs {
            if let Some(p) = i.get_mut("path") {
                hide(p);
            }
        }
    }
    v
}

/// Store a plan made by this server and answer 201 with it.
fn store(
    state: &AppState,
    caller: &Caller,
    rb: &Runbook,
    hosts: Vec<String>,
    mut plan: crate::engine::plan::Plan,
) -> Result<Response, ApiError> {
    let json = crate::render::plan::render_json(&plan);
    // Paths as the server's answers show them, in what people read.
    plan.playbook.path = without_server_paths(&plan.playbook.path);
    plan.inventory.path = without_server_paths(&plan.inventory.path);
    for i in &mut plan.inputs {
        i.path = without_server_paths(&i.path);
    }
    let stored = state.plans.put(NewPlan {
        runbook: rb.name.clone(),
        made_by: caller.name.clone(),
        hosts,
        plan: json,
        markdown: crate::render::plan::render_markdown(&plan),
        text: crate::render::plan::render_text(&plan, false),
    })?;
    let link = format!("/plan/{}", stored.digest);
    let made = PlanMade {
        digest: stored.digest,
        runbook: stored.runbook,
        link: link.clone(),
        markdown: stored.markdown,
        expires_at: stored.expires_at,
        approvals_needed: needed(rb)?,
    };
    let mut r = (StatusCode::CREATED, Json(made)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&link) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `POST /runbook/{name}/plan`: plan the runbook from the hosts' live
/// state (params as `POST /runbook/{name}`) and store the plan.
#[utoipa::path(post, path = "/runbook/{name}/plan", params(("name" = String, Path), MakeQuery),
    request_body(content = Option<RunbookBody>, description = "optional", content_type = "application/json"),
    responses(
        (status = 201, body = PlanMade, description = "stored; `Location` is its link"),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 413, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn make_plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    q: Result<Query<MakeQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    caller.require(Role::Operate)?;
    let body: RunbookBody = if body.is_empty() {
        RunbookBody::default()
    } else {
        json_body(&body)?
    };
    if !valid_runbook_name(&name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is not a runbook name (letters, digits, `-`, `_`, `.`; never a path)"
        )));
    }
    let rb = runbook(&state, &name)?;
    state
        .limiter
        .check(&caller.name)
        .await
        .map_err(ApiError::rate_limited)?;
    let limit = q.limit.or(body.limit);
    let values = ParamValues::from_request(body.params.unwrap_or_default());
    let playbook = rb.playbook_with(&values)?;
    check_selector_params(&state, &caller, &playbook)?;
    let job = job_for(&state, &caller, playbook, limit.as_deref())?;
    let hosts = crate::engine::job_store::job_hosts(&job);
    let planned = state.executor.plan(job, false, true).await?;
    let mut plan = planned.plan;
    // The limit labels the plan, and is what its apply runs with.
    plan.limit = limit;
    store(&state, &caller, &rb, hosts, plan)
}

/// `POST /plan`: store a saved plan (`drover plan --out`'s file) of one of
/// the server's runbooks. It is read as data and checked: its playbook must
/// be a runbook's content and its inventory the server's, and its
/// predictions what that runbook predicts from the plan's own facts. The
/// server stores its own rendering of that plan.
#[utoipa::path(post, path = "/plan",
    request_body(content = Object, description = "a drover.plan/1 document with its facts (`drover plan --out`)", content_type = "application/json"),
    responses(
        (status = 201, body = PlanMade, description = "stored; `Location` is its link"),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 409, description = "no runbook has the plan's playbook, or the inventory or another input differs from the server's", body = ApiError),
        (status = 413, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn upload_plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
    let saved = SavedPlan::parse(text, "the request's plan")?;
    let rb = state
        .loaded()
        .runbooks
        .values()
        .find(|rb| crate::model::digest(rb.text.as_bytes()) == saved.playbook.digest)
        .cloned()
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "no runbook of this server has the content of the plan's playbook `{}` (sha256 {}); GET /runbook lists the runbooks with their digests",
                saved.playbook.path, saved.playbook.digest
            ))
        })?;
    state
        .limiter
        .check(&caller.name)
        .await
        .map_err(ApiError::rate_limited)?;
    let values = saved.param_values(FsPath::new("the request's plan"), ParamValues::none());
    let playbook = rb.playbook_with(&values)?;
    check_selector_params(&state, &caller, &playbook)?;
    let job = job_for(&state, &caller, playbook, saved.limit.as_deref())?;
    saved.check_inputs(&job)?;
    let facts = saved.saved_facts()?;
    let full = facts.covering(job.inventory.hosts.iter().map(|h| h.name.as_str()));
    // Its predictions must be this runbook's from its facts: a plan whose
    // results were edited, or made by another drover, is not what runs.
    let differs = crate::engine::saved::drift(&job, &saved, &full)?;
    if !differs.is_empty() {
        let list: Vec<String> = differs.iter().map(|d| d.to_string()).collect();
        return Err(ApiError::bad_request(format!(
            "the plan's results are not what runbook `{}` predicts from the plan's own facts: {}",
            rb.name,
            list.join("; ")
        )));
    }
    let opts = crate::engine::plan::PlanOptions {
        reach: crate::remote::fanout::Reach::new(1, crate::remote::fanout::Reach::DEFAULT_TIMEOUT),
        limit: saved.limit.clone(),
        allow_protected: false,
        keep_facts: true,
        carry: None,
    };
    let source = crate::engine::plan::FactsSource::Given {
        facts: full,
        label: "the uploaded plan's facts".into(),
    };
    let planned =
        crate::engine::plan::plan(&job, source, &opts, &crate::engine::events::NoEvents).await?;
    store(&state, &caller, &rb, crate::engine::job_store::job_hosts(&job), planned.plan)
}

/// `GET /plan`: the plans not yet applied nor expired, newest first.
#[utoipa::path(get, path = "/plan",
    responses((status = 200, body = [PlanView]), (status = 401, body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn list_plans(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<PlanView>> {
    Json(pending(&state, &caller).into_iter().map(|p| view(&state, p, false)).collect())
}

/// The pending plans this key may see.
pub(super) fn pending(state: &AppState, caller: &Caller) -> Vec<StoredPlan> {
    let within = caller.job_scope(&state.loaded().inventory);
    state
        .plans
        .pending()
        .into_iter()
        .filter(|p| within.as_ref().is_none_or(|w| p.hosts.iter().all(|h| w.contains(h))))
        .collect()
}

/// `GET /plan/{digest}`: the plan with its approvals (JSON), or the plan
/// as markdown or text: `?format=`, else the `Accept` header.
#[utoipa::path(get, path = "/plan/{digest}", params(("digest" = String, Path), ShowQuery),
    responses(
        (status = 200, body = PlanView, description = "JSON; `text/markdown` or `text/plain` when asked for"),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn get_plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
    q: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let format = match q.format.as_deref() {
        Some(f @ ("json" | "markdown" | "text")) => f,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: `{other}` is not one of json, markdown, text"
            )))
        }
        None => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if accept.contains("text/markdown") {
                "markdown"
            } else if accept.contains("text/plain") {
                "text"
            } else {
                "json"
            }
        }
    };
    let p = visible(&state, &caller, &digest)?;
    Ok(match format {
        "markdown" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            p.markdown,
        )
            .into_response(),
        "text" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], p.text).into_response(),
        _ => Json(view(&state, p, true)).into_response(),
    })
}

/// `POST /plan/{digest}/approve`: approve as this key, which must be an
/// operate key other than the one that made the plan.
#[utoipa::path(post, path = "/plan/{digest}/approve", params(("digest" = String, Path)),
    responses(
        (status = 200, body = PlanView),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "a read key, or the key that made the plan (two-person rule)", body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "this key approved it already, or it was applied", body = ApiError),
        (status = 410, description = "the plan expired", body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn approve_plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Role::Operate)?;
    visible(&state, &caller, &digest)?;
    let p = state
        .plans
        .approve(&digest, &caller.name)?
        .map_err(refused)?;
    tracing::info!(plan = %digest, key = %caller.name, runbook = %p.runbook, "plan approved");
    Ok(Json(view(&state, p, false)))
}

/// `POST /plan/{digest}/apply`: run exactly this plan, once: refused
/// without the runbook's approvals, and when the runbook, the inventory or
/// the params changed or the hosts drifted since it was made.
#[utoipa::path(post, path = "/plan/{digest}/apply", params(("digest" = String, Path), ApplyQuery),
    request_body(content = Option<ApplyBody>, description = "optional", content_type = "application/json"),
    responses(
        (status = 200, description = "the job's report", body = crate::model::report::JobReport),
        (status = 202, body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "a read key, or fewer approvals than the runbook needs", body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the hosts drifted (each drifted unit named) or the runbook, inventory or params changed since the plan: nothing ran; or the plan was applied; or another job holds its units", body = ApiError),
        (status = 410, description = "the plan expired", body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "plans")]
pub async fn apply_plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
    q: Result<Query<ApplyQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    caller.require(Role::Operate)?;
    let body: ApplyBody = if body.is_empty() {
        ApplyBody::default()
    } else {
        json_body(&body)?
    };
    let p = visible(&state, &caller, &digest)?;
    let rb = runbook(&state, &p.runbook)?;
    let need = needed(&rb)?;
    let saved = SavedPlan::parse(&p.plan, "the stored plan")?;
    let p = state
        .plans
        .begin_apply(&digest, &caller.name, need)?
        .map_err(refused)?;
    let started = async {
        let values = saved.param_values(
            FsPath::new("the stored plan"),
            ParamValues::from_request(body.params.unwrap_or_default()),
        );
        let playbook = rb.playbook_with(&values)?;
        check_selector_params(&state, &caller, &playbook)?;
        let job = job_for(&state, &caller, playbook, saved.limit.as_deref())?;
        let change = ChangeQuery {
            dry_run: None,
            wait: q.wait,
            allow_protected: None,
            ignore_window: q.ignore_window,
        };
        let claims = vec![Claim::Runbook(p.runbook.clone())];
        start_job_with(&state, &caller, job, &change, claims, Some(Continuation::Reviewed(Box::new(saved)))).await
    }
    .await;
    // A refusal (drift, claims) started nothing: the plan stays appliable.
    state
        .plans
        .end_apply(&digest, started.as_ref().ok().and_then(|s| s.job_id()))?;
    Ok(started?.into_response())
}
