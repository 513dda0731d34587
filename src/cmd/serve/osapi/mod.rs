//! osapi's current API under `/api` (osapi-io/osapi, `pkg/sdk/client` and
//! `internal/controller/api/*/gen/api.yaml`): its node service routes and
//! its job routes, in osapi's own shapes, so that osapi's clients work
//! against drover with only their base URL changed. Every route goes
//! through the same reads, jobs, keys and rules as drover's own `/node`
//! and `/job` routes; only the shapes are osapi's.

pub mod job;
pub mod log;
mod objects;
pub mod service;
pub mod shapes;
pub mod unitfile;

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::auth::JobId;
use super::error::ApiError;
use super::launch::{ChangeQuery, Started};
use super::state::AppState;

use job::{delete_job, get_job, list_jobs, retry_job};
use service::{list_services, one_service, service_action};
use unitfile::{create_unit, delete_unit, update_unit};

use shapes::{EntryStatus, ServiceMutationEntry, ServiceMutationResponse};

/// The routes, for the server's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/node/{hostname}/service",
            get(list_services).post(create_unit),
        )
        .route(
            "/api/node/{hostname}/service/{name}",
            get(one_service).put(update_unit).delete(delete_unit),
        )
        .route(
            "/api/node/{hostname}/service/{name}/{action}",
            post(service_action),
        )
        .route("/api/job", get(list_jobs))
        .route("/api/job/{id}", get(get_job).delete(delete_job))
        .route("/api/job/{id}/retry", post(retry_job))
        .route("/api/node/{hostname}/log/unit/{name}", get(log::unit_log))
}

/// How long a change waits for its job: the longest `wait` drover offers.
/// osapi's client reads the answer's results and does not follow a 202, so
/// a change answers when its job has ended, within this bound.
fn change_query() -> ChangeQuery {
    ChangeQuery {
        wait: Some("10m".into()),
        ..ChangeQuery::default()
    }
}

/// A JSON answer that names its job for the audit line.
fn answer(
    status: axum::http::StatusCode,
    body: impl serde::Serialize,
    job: Option<String>,
) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Some(id) = job {
        r.extensions_mut().insert(JobId(id));
    }
    r
}

/// One entry of a change per result of its job, `name` as the request gave
/// it; hosts of a job still running past the bound are `skipped`, saying
/// where to follow it.
fn mutation_entries(started: &Started, name: &str) -> Result<Vec<ServiceMutationEntry>, ApiError> {
    let (entry, running) = match started {
        Started::Done(e) => (e, false),
        Started::Running(e) => (e, true),
        Started::Plan(_) => return Err(ApiError::internal("a change answered a plan")),
    };
    let view = match entry.report() {
        Some(r) => r.results,
        None => entry.view().results,
    };
    let mut out: Vec<ServiceMutationEntry> = view
        .iter()
        .map(|r| {
            let status = match r.status {
                crate::model::outcome::Status::Ok => EntryStatus::Ok,
                crate::model::outcome::Status::Failed => EntryStatus::Failed,
                crate::model::outcome::Status::Skipped => EntryStatus::Skipped,
            };
            ServiceMutationEntry {
                hostname: r.hostname.clone(),
                status,
                name: Some(name.to_string()),
                changed: (status == EntryStatus::Ok).then_some(r.changed),
                error: r.error.clone(),
            }
        })
        .collect();
    if running {
        let id = entry.view().job_id;
        for h in entry.hosts() {
            if !out.iter().any(|e| &e.hostname == h) {
                out.push(ServiceMutationEntry {
                    hostname: h.clone(),
                    status: EntryStatus::Skipped,
                    name: Some(name.to_string()),
                    changed: None,
                    error: Some(format!(
                        "still running after 10m; follow it with GET /api/job/{id}"
                    )),
                });
            }
        }
    }
    Ok(out)
}

/// The answer to a change that ran one job.
fn mutation(started: Started, name: &str) -> Result<Response, ApiError> {
    let results = mutation_entries(&started, name)?;
    let job_id = started.job_id();
    Ok(answer(
        axum::http::StatusCode::OK,
        ServiceMutationResponse {
            job_id: job_id.clone(),
            results,
        },
        job_id,
    ))
}
