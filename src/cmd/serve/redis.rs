//! Redis Enterprise-compatible routes: the services of the `--node` host
//! (`/v1/local/services`) and of every host (`/v1/services`), read and
//! changed through the same engine jobs as the node API. A service's name
//! is its unit's (`demo-web` for `demo-web.service`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::engine::job::{Job, ServiceAction};
use crate::model::keys::Role;
use crate::model::outcome::Status;
use crate::model::unit::UnitName;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{json_body, query};
use super::launch::{job_for, start_job, ChangeQuery, Started};
use super::read::{node_host, node_status, short_name};
use super::state::AppState;

/// What Redis Enterprise answers when asked to stop a required service.
pub const REQUIRED_WARNING: &str =
    "stopping or restarting a required service may cause the cluster to fail";

/// A service as Redis Enterprise's `/v1/local/services` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedisService {
    /// When it entered the active state (RFC 3339), while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// RUNNING, STOPPED, STARTING, RESTARTING or FAILED.
    pub status: String,
    /// `3 days, 0:58:59`, while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
}

/// `GET /v1/local/services`: the node's services by name.
#[utoipa::path(get, path = "/v1/local/services",
    responses((status = 429, description = "too many host reads in flight (per key or overall); retry after `Retry-After`", body = ApiError), (status = 200, body = BTreeMap<String, RedisService>), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, description = "no --node host", body = ApiError),
        (status = 503, description = "the node cannot be read", body = ApiError)),
    security(("bearer" = [])), tag = "redis")]
pub async fn local_services(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BTreeMap<String, RedisService>>, ApiError> {
    let (report, _) = node_status(&state, &caller, &[]).await?;
    Ok(Json(
        report
            .services
            .iter()
            .map(|s| {
                (
                    short_name(&s.name).to_string(),
                    RedisService {
                        start_time: s.start_time.clone(),
                        status: s.status.as_str().to_string(),
                        uptime: s.uptime.map(crate::render::status::format_uptime),
                    },
                )
            })
            .collect(),
    ))
}

/// Body of `POST /v1/local/services` and `POST /v1/services`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// stop, start or restart.
    pub operation_type: String,
    /// The services (unit names; a bare name gets `.service`).
    pub services: Vec<String>,
}

/// One step per service over `target`; values are JSON strings, which YAML
/// reads verbatim.
fn operation_job(
    state: &AppState,
    caller: &Caller,
    op: &Operation,
    target: &str,
) -> Result<(Job, Vec<(String, UnitName)>), ApiError> {
    let action: ServiceAction = match op.operation_type.as_str() {
        "stop" | "start" | "restart" => op.operation_type.parse().map_err(ApiError::bad_request)?,
        other => {
            return Err(ApiError::bad_request(format!(
                "operation_type `{other}`: expected stop, start or restart"
            )))
        }
    };
    if op.services.is_empty() {
        return Err(ApiError::bad_request("services: name at least one"));
    }
    // Every name as sent, for the answer; each unit once, for the job.
    let mut given: Vec<(String, UnitName)> = Vec::new();
    let mut units: Vec<UnitName> = Vec::new();
    for s in &op.services {
        let u = UnitName::parse(s)
            .map_err(|m| ApiError::bad_request(format!("services: `{s}`: {m}")))?;
        if !units.contains(&u) {
            units.push(u.clone());
        }
        given.push((s.clone(), u));
    }
    let state_word = match action {
        ServiceAction::Stop => "stopped",
        ServiceAction::Start => "started",
        _ => "restarted",
    };
    let q = |v: &str| serde_json::Value::from(v).to_string();
    let mut text = format!(
        "name: {}\nsteps:\n",
        q(&format!("redis services {}", op.operation_type))
    );
    for (i, u) in units.iter().enumerate() {
        text.push_str(&format!(
            "  - id: {}\n    target: {}\n    service: {{ name: {}, state: {state_word} }}\n",
            q(&format!(
                "{i}-{state_word}-{}",
                u.as_str().replace(['@', ':', '\\'], "_")
            )),
            q(target),
            q(u.as_str()),
        ));
    }
    let pb = crate::model::playbook::Playbook::from_str(
        &text,
        std::path::Path::new("<redis services>"),
    )?;
    Ok((job_for(state, caller, pb, None)?, given))
}

async fn operate(
    state: &Arc<AppState>,
    caller: &Caller,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: &[u8],
    target: &str,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    q.authorise(caller)?;
    let op: Operation = json_body(body)?;
    let (job, units) = operation_job(state, caller, &op, target)?;
    let allowed = q.allow_protected.unwrap_or(false) && caller.role == Role::Admin;
    // Before start_job, which refuses protected units too but in the
    // API's words, and first asks a non-admin's ?allow_protected for the
    // admin role: a Redis client hears about the unit, with the warning.
    if !allowed {
        crate::model::decide::check_protected(&job.playbook, &job.inventory, &job.expanded, false)
            .map_err(|e| {
                let what = match &e {
                    crate::model::error::Error::Refused(r) => r.what(),
                    other => other.details(),
                };
                ApiError::forbidden(format!(
                    "{what}: {REQUIRED_WARNING}; an admin key may add ?allow_protected=true"
                ))
            })?;
    }
    let started = start_job(state, caller, job, &q, Vec::new()).await?;
    let Started::Done(entry) = started else {
        return Ok(started.into_response());
    };
    let Some(report) = entry.report() else {
        return Ok(Started::Done(entry).into_response());
    };
    // A service succeeded where every host's result for it is ok; each
    // name answers as sent (`demo-web` and `demo-web.service` both).
    let answer: BTreeMap<String, bool> = units
        .iter()
        .map(|(given, u)| {
            let mine: Vec<_> = report
                .results
                .iter()
                .filter(|r| r.name == u.as_str())
                .collect();
            (
                given.clone(),
                !mine.is_empty() && mine.iter().all(|r| r.status == Status::Ok),
            )
        })
        .collect();
    let mut resp = Json(answer).into_response();
    resp.extensions_mut()
        .insert(super::auth::JobId(report.job_id.clone()));
    Ok(resp)
}

/// `POST /v1/local/services`: stop, start or restart services of the node.
#[utoipa::path(post, path = "/v1/local/services", request_body = Operation, params(ChangeQuery),
    responses((status = 200, description = "{NAME: true|false}: whether each service's operation succeeded (with dry_run=true: the plan)", body = BTreeMap<String, bool>),
        (status = 202, description = "still running past `wait`", body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "a required (protected) service, or the key may not", body = ApiError),
        (status = 404, description = "no --node host", body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = [])), tag = "redis")]
pub async fn local_operation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let node = node_host(&state, &caller)?;
    operate(&state, &caller, q, &body, &node).await
}

/// `POST /v1/services`: the same on every inventory host; true where all
/// hosts succeeded.
#[utoipa::path(post, path = "/v1/services", request_body = Operation, params(ChangeQuery),
    responses((status = 200, description = "{NAME: true|false}: true where every host succeeded (with dry_run=true: the plan)", body = BTreeMap<String, bool>),
        (status = 202, description = "still running past `wait`", body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "a required (protected) service, or a host the key may not reach", body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = [])), tag = "redis")]
pub async fn cluster_operation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    operate(&state, &caller, q, &body, "_all").await
}
