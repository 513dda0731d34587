//! osapi's node service API: service operations on targeted hosts, and
//! their units' status, through the same engine and report as `drover
//! service` and `drover status`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Json};

use crate::engine::job::{AdHoc, ServiceAction};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{query, selector};
use super::launch::{job_for, run_job, ChangeQuery};
use super::read::{read_units, HostUnits};
use super::state::AppState;

/// `POST /node/{target}/service/{name}/{action}`.
#[utoipa::path(post, path = "/node/{target}/service/{name}/{action}",
    params(
        ("target" = String, Path, description = "hostname, `_any`, `_all`, `key:value` or any selector (percent-encoded)"),
        ("name" = String, Path, description = "unit name; a bare name gets `.service`"),
        ("action" = String, Path, description = "start, stop, restart, reload, enable or disable"),
        ChangeQuery),
    responses(
        (status = 200, description = "the job report, or with dry_run=true the plan (drover.plan/1)", body = crate::model::report::JobReport),
        (status = 202, description = "still running past `wait`; `Location: /job/{id}`", body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 500, body = ApiError),
        (status = 503, description = "the server is stopping; nothing was started", body = ApiError)),
    security(("bearer" = [])), tag = "node")]
pub async fn service_action(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((target, name, action)): Path<(String, String, String)>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    q.authorise(&caller)?;
    let action: ServiceAction = action.parse().map_err(ApiError::bad_request)?;
    selector(&target)?;
    let op = AdHoc::Service {
        action,
        unit: name,
        target,
    };
    let playbook = op.playbook()?;
    let job = job_for(&state, &caller, playbook, None)?;
    run_job(&state, &caller, job, &q, Vec::new()).await
}

/// `GET /node/{target}/service`.
#[utoipa::path(get, path = "/node/{target}/service",
    params(("target" = String, Path, description = "hostname, `_any`, `_all` or a selector")),
    responses((status = 429, description = "too many host reads in flight (per key or overall); retry after `Retry-After`", body = ApiError), (status = 200, body = [HostUnits]), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])), tag = "node")]
pub async fn list_services(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(target): Path<String>,
) -> Result<Json<Vec<HostUnits>>, ApiError> {
    Ok(Json(read_units(&state, &caller, &target, &[]).await?))
}

/// `GET /node/{target}/service/{name}`.
#[utoipa::path(get, path = "/node/{target}/service/{name}",
    params(("target" = String, Path, description = "hostname, `_any`, `_all` or a selector"),
        ("name" = String, Path, description = "unit name; a bare name gets `.service`")),
    responses((status = 429, description = "too many host reads in flight (per key or overall); retry after `Retry-After`", body = ApiError), (status = 200, body = [HostUnits]), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])), tag = "node")]
pub async fn one_service(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((target, name)): Path<(String, String)>,
) -> Result<Json<Vec<HostUnits>>, ApiError> {
    Ok(Json(read_units(&state, &caller, &target, &[name]).await?))
}
