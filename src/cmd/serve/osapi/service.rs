//! osapi's node service routes: list and get (the shared targeted read),
//! and start, stop, restart, enable and disable (the ad-hoc service job of
//! `/node`), in osapi's shapes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};

use crate::engine::job::{AdHoc, ServiceAction};
use crate::engine::status::{StatusEntry, StatusReport};
use crate::model::keys::Role;

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::extract::selector;
use super::super::launch::{job_for, start_job};
use super::super::read::read_targets;
use super::super::state::AppState;
use super::shapes::{
    EntryStatus, ServiceGetEntry, ServiceGetResponse, ServiceInfo, ServiceListEntry,
    ServiceListResponse,
};
use super::{change_query, mutation};

/// A status entry as osapi shows a service, named `name`.
fn info(e: &StatusEntry, name: &str) -> ServiceInfo {
    ServiceInfo {
        name: name.to_string(),
        status: e.active_state.clone(),
        // `enabled-runtime` is enabled too, until the next boot.
        enabled: e.unit_file_state.starts_with("enabled"),
        description: e.description.clone(),
        pid: e.main_pid,
    }
}

/// Why `host` could not be read, if it could not.
fn read_error(report: &StatusReport, host: &str) -> Option<String> {
    report
        .errors
        .iter()
        .find(|e| e.hostname == host)
        .map(|e| e.error.clone())
}

/// `GET /api/node/{hostname}/service`: every loaded service of each host.
#[utoipa::path(get, path = "/api/node/{hostname}/service",
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector")),
    responses((status = 200, body = ServiceListResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 429, description = "too many host reads in flight; retry after `Retry-After`", body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn list_services(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(hostname): Path<String>,
) -> Result<Json<ServiceListResponse>, ApiError> {
    let read = read_targets(&state, &caller, &hostname, &[]).await?;
    let results = read
        .hosts
        .iter()
        .map(|h| match read_error(&read.report, h) {
            Some(error) => ServiceListEntry {
                hostname: h.clone(),
                status: EntryStatus::Failed,
                services: None,
                error: Some(error),
            },
            None => ServiceListEntry {
                hostname: h.clone(),
                status: EntryStatus::Ok,
                services: Some(
                    read.report
                        .services
                        .iter()
                        .filter(|s| &s.hostname == h)
                        .map(|s| info(s, &s.name))
                        .collect(),
                ),
                error: None,
            },
        })
        .collect();
    Ok(Json(ServiceListResponse { results }))
}

/// `GET /api/node/{hostname}/service/{name}`: one service on each host.
#[utoipa::path(get, path = "/api/node/{hostname}/service/{name}",
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector"),
        ("name" = String, Path, description = "the unit; a bare name gets `.service`")),
    responses((status = 200, body = ServiceGetResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no host that answered knows the unit", body = ApiError),
        (status = 429, description = "too many host reads in flight; retry after `Retry-After`", body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn one_service(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((hostname, name)): Path<(String, String)>,
) -> Result<Json<ServiceGetResponse>, ApiError> {
    let read = read_targets(&state, &caller, &hostname, std::slice::from_ref(&name)).await?;
    let results = read
        .hosts
        .iter()
        .map(|h| {
            let found = read.report.services.iter().find(|s| &s.hostname == h);
            let (status, service, error) = match (read_error(&read.report, h), found) {
                (Some(e), _) => (EntryStatus::Failed, None, Some(e)),
                (None, Some(s)) if s.load_state != "not-found" => {
                    (EntryStatus::Ok, Some(info(s, &name)), None)
                }
                (None, _) => (
                    EntryStatus::Failed,
                    None,
                    Some(format!("no unit `{name}` on {h}")),
                ),
            };
            ServiceGetEntry {
                hostname: h.clone(),
                status,
                service,
                error,
            }
        })
        .collect();
    Ok(Json(ServiceGetResponse { results }))
}

/// osapi's five actions (drover's `reload` is not one of them).
fn action_of(raw: &str) -> Result<ServiceAction, ApiError> {
    match raw {
        "start" | "stop" | "restart" | "enable" | "disable" => {
            raw.parse().map_err(ApiError::bad_request)
        }
        _ => Err(ApiError::not_found(format!(
            "no action `{raw}`; /api takes start, stop, restart, enable or disable (/node also takes reload)"
        ))),
    }
}

/// `POST /api/node/{hostname}/service/{name}/{action}`.
#[utoipa::path(post, path = "/api/node/{hostname}/service/{name}/{action}",
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector"),
        ("name" = String, Path, description = "the unit; a bare name gets `.service`; answered as sent"),
        ("action" = String, Path, description = "start, stop, restart, enable or disable")),
    responses(
        (status = 200, description = "the job ended (or is still running after 10m: those hosts `skipped`)", body = super::shapes::ServiceMutationResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "not an operate key, hosts outside its targets, or a protected unit", body = ApiError),
        (status = 404, description = "not one of the five actions", body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn service_action(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((hostname, name, action)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let action = action_of(&action)?;
    selector(&hostname)?;
    let op = AdHoc::Service {
        action,
        unit: name.clone(),
        target: hostname,
    };
    let job = job_for(&state, &caller, op.playbook()?, None)?;
    let started = start_job(&state, &caller, job, &change_query(), Vec::new()).await?;
    mutation(started, &name)
}
