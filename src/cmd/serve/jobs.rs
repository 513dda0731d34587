//! Jobs (list, report, live events, cancel), runbooks, and the server's
//! own routes (health, reload, audit).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::engine::claims::Claim;
use crate::engine::job_store::{JobQuery, JobStatus, JobView};
use crate::model::keys::Role;
use crate::model::params::ParamValues;

use super::audit::AuditLine;
use super::auth::{Caller, JobId};
use super::error::ApiError;
use super::extract::query;
use super::launch::{job_for, run_job, start_job_with, ChangeQuery, Continuation, Started};
use super::state::{valid_runbook_name, AppState};

/// Query of `GET /job`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Skip this many of the newest.
    pub offset: Option<usize>,
    /// running, completed, aborted, interrupted or failed.
    pub status: Option<String>,
}

/// `GET /job`: jobs newest first.
#[utoipa::path(get, path = "/job", params(JobsQuery),
    responses((status = 200, body = [JobView]), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let q = query(q)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(50);
    if limit > 1000 {
        return Err(ApiError::bad_request("limit: at most 1000"));
    }
    let within = caller.job_scope(&state.loaded().inventory);
    Ok(Json(state.jobs.list(&JobQuery {
        limit,
        offset: q.offset.unwrap_or(0),
        status,
        within,
        ..JobQuery::default()
    })))
}

/// The job `id` if this key may see it: a job on hosts outside a scoped
/// key's targets answers exactly as one that does not exist.
pub(crate) fn entry(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Arc<crate::engine::job_store::Entry>, ApiError> {
    let within = caller.job_scope(&state.loaded().inventory);
    state
        .jobs
        .get(id)
        .filter(|e| e.within(within.as_ref()))
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`; GET /job lists them")))
}

/// `GET /job/{id}`: the report, `outcome` running while it runs.
#[utoipa::path(get, path = "/job/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = entry(&state, &caller, &id)?;
    let mut r = Json(e.view()).into_response();
    r.extensions_mut().insert(JobId(id));
    Ok(r)
}

/// `GET /job/{id}/events`: a `result` event per result as it happens (all
/// of them, from the first, or from after `Last-Event-ID`), then `done`
/// with the outcome. A result's event id is its position in the job's
/// results (from 1): the same on every replica of a cluster, so a client
/// reconnecting anywhere with the last id it saw misses and repeats none.
#[utoipa::path(get, path = "/job/{id}/events", params(("id" = String, Path),
        ("Last-Event-ID" = Option<u64>, Header, description = "the id of the last `result` event seen: only those after it are sent")),
    responses((status = 200, description = "text/event-stream: `result` events (a job result each, its id its position from 1), then `done` ({job_id, outcome})", content_type = "text/event-stream"),
        (status = 400, description = "Last-Event-ID is not a number", body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn job_events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let e = entry(&state, &caller, &id)?;
    let from = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Last-Event-ID: the id of a `result` event (a number) was expected",
                )
            })?,
    };
    let mut shutdown = state.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        let mut rx = e.subscribe();
        let mut sent = from;
        loop {
            let (rest, done) = e.results_since(sent);
            for (i, r) in rest.iter().enumerate() {
                let ev = SseEvent::default()
                    .event("result")
                    .id((sent + i + 1).to_string())
                    .json_data(r);
                if let Ok(ev) = ev {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            sent += rest.len();
            if let Some(outcome) = done {
                let data = serde_json::json!({ "job_id": id, "outcome": outcome });
                if let Ok(ev) = SseEvent::default().event("done").json_data(data) {
                    let _ = tx.send(Ok(ev)).await;
                }
                return;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `POST /job/{id}/cancel`: as SIGTERM, nothing new starts and systemd jobs
/// in flight finish; answers 202 with the job as it is.
#[utoipa::path(post, path = "/job/{id}/cancel", params(("id" = String, Path)),
    responses((status = 202, body = JobView), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, description = "the job is not running, or (cluster mode) another replica coordinates it", body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let e = entry(&state, &caller, &id)?;
    state
        .limiter
        .check(&caller.name)
        .await
        .map_err(ApiError::rate_limited)?;
    // Run here (a job this replica took over shows as the stream holds
    // it); else seen from the jobs' stream: its walk runs on another
    // replica.
    let e = state.jobs.here(&id).unwrap_or(e);
    if let Some(by) = e.coordinator().filter(|_| e.view().outcome == JobStatus::Running) {
        return Err(ApiError::conflict(format!(
            "job {id} is coordinated by {by}: cancel it on that replica (this one only shows it)"
        )));
    }
    if !e.cancel() {
        return Err(ApiError::conflict(format!(
            "job {id} is not running; nothing to cancel"
        )));
    }
    let mut r = (StatusCode::ACCEPTED, Json(e.view())).into_response();
    r.extensions_mut().insert(JobId(id));
    Ok(r)
}

/// Optional body of `POST /job/{id}/retry` and `POST /job/{id}/resume`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinueBody {
    /// Go on although the runbook, the inventory or the params changed
    /// since the job ran (`--retry-changed`).
    #[serde(default)]
    pub changed: bool,
    /// Retry only: run the retried hosts' steps from the first one
    /// (`--retry-from-start`).
    #[serde(default)]
    pub from_start: bool,
    /// Parameter values over those the job ran with (its journal records
    /// all but the secret ones, which must be given again).
    #[serde(default)]
    pub params: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// `POST /job/{id}/retry`: a new job (`retry_of` this one) that runs again
/// only what did not end ok: its failed, unreachable and stopped hosts,
/// from the first step that did not end ok there.
#[utoipa::path(post, path = "/job/{id}/retry", params(("id" = String, Path), ChangeQuery),
    request_body(content = Option<ContinueBody>, description = "optional", content_type = "application/json"),
    responses(
        (status = 200, description = "the new job's report", body = crate::model::report::JobReport),
        (status = 202, body = JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the job is running, was not a runbook's, or its runbook, inventory or params changed", body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    continue_job(state, caller, id, q, body, Kind::Retry).await
}

/// `POST /job/{id}/resume`: the same job, continued from its journal: every
/// step × host without a final result runs; a restart that was under way
/// when it stopped is not repeated if it happened.
#[utoipa::path(post, path = "/job/{id}/resume", params(("id" = String, Path), ChangeQuery),
    request_body(content = Option<ContinueBody>, description = "optional", content_type = "application/json"),
    responses(
        (status = 200, description = "the job's report", body = crate::model::report::JobReport),
        (status = 202, body = JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the job is running or ended (nothing to resume), was not a runbook's, or its runbook, inventory or params changed", body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "jobs")]
pub async fn resume_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    continue_job(state, caller, id, q, body, Kind::Resume).await
}

/// Which continuation of an ended job.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A new job running again what did not end ok.
    Retry,
    /// The same job, from its journal.
    Resume,
}

/// Retry or resume job `id`: the runbook it ran, over the same hosts, with
/// what it already did carried over.
async fn continue_job(
    state: Arc<AppState>,
    caller: Caller,
    id: String,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
    kind: Kind,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    caller.require(Role::Operate)?;
    let body: ContinueBody = if body.is_empty() {
        ContinueBody::default()
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
        serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "the body: {e}; it is optional, and takes only {{\"changed\": BOOL, \"from_start\": BOOL, \"params\": {{\"NAME\": VALUE}}}}"
            ))
        })?
    };
    if q.dry_run.unwrap_or(false) {
        return Err(ApiError::bad_request(
            "dry_run is not offered here; `drover plan --retry REPORT` or `--resume JOURNAL` previews it",
        ));
    }
    Ok(continue_started(&state, &caller, &id, &q, body, kind, None)
        .await?
        .into_response())
}

/// Retry or resume job `id` as [`continue_job`] does, its request read:
/// the job it started (or continued). `narrow` (a selector) narrows the
/// hosts further, on top of the job's own `--limit`.
pub(super) async fn continue_started(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    q: &ChangeQuery,
    body: ContinueBody,
    kind: Kind,
    narrow: Option<&str>,
) -> Result<Started, ApiError> {
    if kind == Kind::Resume && body.from_start {
        return Err(ApiError::bad_request("from_start is for retry only"));
    }
    let e = entry(state, caller, id)?;
    let word = match kind {
        Kind::Retry => "retry",
        Kind::Resume => "resume",
    };
    if e.view().outcome == JobStatus::Running {
        return Err(ApiError::conflict(format!(
            "job {id} is running; {word} it once it ended (GET /job/{id})"
        )));
    }
    let journal = state.jobs.journal(id).ok_or_else(|| {
        ApiError::conflict(format!("job {id} has no journal left to {word} from"))
    })?;
    let header = crate::engine::journal::read_header(&journal)?;
    let loaded = state.loaded();
    let rb = header.files.playbook.as_deref().and_then(|p| {
        loaded
            .runbooks
            .values()
            .find(|rb| {
                std::path::absolute(&rb.path).is_ok_and(|a| a.as_path() == std::path::Path::new(p))
            })
            .cloned()
    });
    drop(loaded);
    let rb = rb.ok_or_else(|| {
        ApiError::conflict(format!(
            "job {id} did not run a runbook of this server: only runbook jobs can be retried or resumed over HTTP"
        ))
    })?;
    // What a retry or a resume would run was never reviewed as a plan.
    super::launch::needs_plan(&rb)?;
    let recorded = ParamValues::from_request(header.params.clone().into_iter().collect());
    let values = recorded.overlaid(ParamValues::from_request(body.params.unwrap_or_default()));
    let playbook = rb.playbook_with(&values)?;
    check_selector_params(state, caller, &playbook)?;
    let limit = match (header.files.limit.as_deref(), narrow) {
        (Some(l), Some(n)) => Some(format!("{l},{n}")),
        (l, n) => l.or(n).map(str::to_string),
    };
    let job = job_for(state, caller, playbook, limit.as_deref())?;
    let cont = match kind {
        Kind::Retry => {
            let parent = e.report().ok_or_else(|| {
                ApiError::conflict(format!("job {id} has no report to retry from"))
            })?;
            crate::engine::carry::check_inputs(
                &job,
                parent.inputs.as_ref(),
                "report",
                body.changed,
            )?;
            Continuation::Retry(crate::engine::carry::Carry::retry(
                &job,
                &parent,
                body.from_start,
            ))
        }
        Kind::Resume => Continuation::Resume {
            job_id: id.to_string(),
            journal,
            allow_changed: body.changed,
        },
    };
    start_job_with(
        state,
        caller,
        job,
        q,
        vec![Claim::Runbook(rb.name.clone())],
        Some(cont),
    )
    .await
}

/// A runbook as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunbookView {
    /// Its name (POST /runbook/{name}).
    pub name: String,
    /// The playbook's `name:`.
    pub title: String,
    /// SHA-256 of its file (what `drover apply --server` compares with
    /// the local playbook).
    pub digest: String,
    /// Approvals a plan of it needs before it runs (0: it runs without a
    /// plan).
    pub approvals: u32,
    /// Its parameters (`{"params": {...}}` of POST /runbook/{name}).
    pub params: Vec<crate::model::params::ParamView>,
    /// Its steps.
    pub steps: Vec<StepView>,
}

/// A step as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    /// Its id.
    pub id: String,
    /// Its targets, as written.
    pub target: Vec<String>,
    /// service, maintenance or unit.
    pub module: String,
}

/// `GET /runbook`: the playbooks of `--playbooks`, with their parameters
/// and steps.
#[utoipa::path(get, path = "/runbook",
    responses((status = 200, body = [RunbookView]), (status = 401, body = ApiError)),
    security(("bearer" = [])), tag = "runbooks")]
pub async fn list_runbooks(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<RunbookView>>, ApiError> {
    let loaded = state.loaded();
    let mut out = Vec::new();
    for rb in loaded.runbooks.values() {
        let pb = rb.declared()?;
        out.push(RunbookView {
            name: rb.name.clone(),
            title: pb.name.clone(),
            digest: pb.digest.clone(),
            approvals: pb.approval.unwrap_or(0),
            params: pb.declared.views(),
            steps: pb
                .steps
                .iter()
                .map(|s| StepView {
                    id: s.id.clone(),
                    target: s.targets.iter().map(|t| t.to_string()).collect(),
                    module: s.operation.kind().to_string(),
                })
                .collect(),
        });
    }
    Ok(Json(out))
}

/// Query of `POST /runbook/{name}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunbookQuery {
    /// Answer the plan and change nothing.
    pub dry_run: Option<bool>,
    /// Only these hosts (a selector), as `--limit`.
    pub limit: Option<String>,
    /// As for service operations: `30s` default, at most `10m`.
    pub wait: Option<String>,
    /// Admin keys only: stop, restart or mask protected units.
    pub allow_protected: Option<bool>,
    /// Admin keys only: run outside the runbook's maintenance window.
    pub ignore_window: Option<bool>,
}

/// Optional body of `POST /runbook/{name}`.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookBody {
    /// Only these hosts (a selector); the query's `limit` wins.
    pub limit: Option<String>,
    /// Values of the runbook's parameters (`GET /runbook` lists them), by
    /// name: checked against their declaration before anything is read
    /// (400 names the parameter). They are data: a template in a value is
    /// its text.
    #[schema(value_type = Option<Object>)]
    pub params: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// `POST /runbook/{name}`: run (or with dry_run=true, plan) one runbook.
#[utoipa::path(post, path = "/runbook/{name}", params(("name" = String, Path), RunbookQuery),
    request_body(content = Option<RunbookBody>, description = "optional", content_type = "application/json"),
    responses(
        (status = 200, description = "the job report, or with dry_run=true the plan (drover.plan/1)", body = crate::model::report::JobReport),
        (status = 202, body = JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 413, body = ApiError),
        (status = 429, body = ApiError),
        (status = 503, description = "the server is stopping; nothing was started", body = ApiError)),
    security(("bearer" = [])), tag = "runbooks")]
pub async fn run_runbook(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    q: Result<Query<RunbookQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let body: RunbookBody = if body.is_empty() {
        RunbookBody::default()
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
        serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "the body: {e}; it is optional, and takes {{\"limit\": \"SELECTOR\", \"params\": {{\"NAME\": VALUE}}}}"
            ))
        })?
    };
    if !valid_runbook_name(&name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is not a runbook name (letters, digits, `-`, `_`, `.`; never a path)"
        )));
    }
    let loaded = state.loaded();
    let rb = loaded.runbooks.get(&name).cloned().ok_or_else(|| {
        ApiError::not_found(format!("no runbook `{name}`; GET /runbook lists them"))
    })?;
    drop(loaded);
    if !q.dry_run.unwrap_or(false) {
        super::launch::needs_plan(&rb)?;
    }
    let limit = q.limit.or(body.limit);
    let values = ParamValues::from_request(body.params.unwrap_or_default());
    let playbook = rb.playbook_with(&values)?;
    check_selector_params(&state, &caller, &playbook)?;
    let job = job_for(&state, &caller, playbook, limit.as_deref())?;
    let change = ChangeQuery {
        dry_run: q.dry_run,
        wait: q.wait,
        allow_protected: q.allow_protected,
        ignore_window: q.ignore_window,
    };
    run_job(&state, &caller, job, &change, vec![Claim::Runbook(name)]).await
}

/// A selector-typed parameter names hosts: for a key with `targets`, all
/// of them must be inside its targets, or the request is refused as one
/// naming hosts outside them is (whatever the runbook does with the value).
pub(super) fn check_selector_params(
    state: &AppState,
    caller: &Caller,
    playbook: &crate::model::playbook::Playbook,
) -> Result<(), ApiError> {
    if caller.targets.is_none() {
        return Ok(());
    }
    let loaded = state.loaded();
    let inv = &loaded.inventory;
    for name in playbook.declared.selectors() {
        let Some(text) = playbook.params.values().get(name).and_then(|v| v.as_str()) else {
            continue;
        };
        let sel = crate::model::target::Selector::parse(text)
            .map_err(|m| ApiError::bad_request(format!("params.{name}: {m}")))?;
        let hosts: Vec<&crate::model::inventory::Host> =
            inv.hosts.iter().filter(|h| sel.matches(h)).collect();
        if hosts.is_empty() || !sel.unknown_hosts(inv).is_empty() {
            return Err(caller.selection(crate::model::error::Error::Usage(format!(
                "params.{name}: `{text}` names no host of the inventory"
            ))));
        }
        caller.check_hosts(hosts)?;
    }
    Ok(())
}

/// `GET /health`: the server is up (no key needed; for load balancers).
/// A cluster-mode replica adds its clock against the NATS server's.
#[utoipa::path(get, path = "/health", responses((status = 200,
    description = "{\"status\": \"ok\"}; in cluster mode also {\"cluster\": {\"clock\": ClockReport}}")), tag = "server")]
pub async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    match state.executor.clock() {
        Some(clock) => Json(serde_json::json!({ "status": "ok", "cluster": { "clock": clock } })),
        None => Json(serde_json::json!({ "status": "ok" })),
    }
}

/// `POST /reload`: re-read inventory, keys and runbooks (as SIGHUP);
/// invalid new files leave the old ones in place and answer 400.
#[utoipa::path(post, path = "/reload",
    responses((status = 200, description = "{hosts, keys, runbooks}"), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])), tag = "server")]
pub async fn reload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Admin)?;
    let l = super::live::reload(&state).await?;
    Ok(Json(serde_json::json!({
        "hosts": l.inventory.hosts.len(),
        "keys": l.keys.len(),
        "runbooks": l.runbooks.len(),
        "node": l.node,
    })))
}

/// Query of `GET /audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many lines (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// `GET /audit`: the newest audit lines (admin).
#[utoipa::path(get, path = "/audit", params(AuditQuery),
    responses((status = 200, body = [AuditLine]), (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])), tag = "server")]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditLine>>, ApiError> {
    caller.require(Role::Admin)?;
    let q = query(q)?;
    Ok(Json(state.audit.recent(q.limit.unwrap_or(100).min(1000))))
}
