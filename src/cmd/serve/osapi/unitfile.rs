//! osapi's unit-file routes: create, update and delete a service's unit
//! file on the targeted hosts, its content an object of the server's
//! `--objects` directory, through drover's `unit:` module (the same job
//! as Consul's register), its protected-unit rules and an admin key.
//!
//! osapi's create leaves a host's existing file alone, and its update
//! refuses a host without one; the `unit:` module writes whenever the
//! content differs. So create and update first read each host (the plan
//! of the unit step, which reads the file), settle the hosts that need no
//! job, and run the job on the rest.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;

use crate::engine::job::AdHoc;
use crate::model::keys::Role;
use crate::model::outcome::Status;
use crate::model::unit::UnitName;

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::extract::{json_body, selector};
use super::super::launch::{job_for, start_job};
use super::super::state::AppState;
use super::shapes::{
    EntryStatus, ServiceCreateRequest, ServiceMutationEntry, ServiceMutationResponse,
    ServiceUpdateRequest,
};
use super::{answer, change_query, mutation, mutation_entries};

/// Which of osapi's unit-file operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Write the file where there is none; leave an existing one.
    Create,
    /// Replace an existing file; a host without one fails.
    Update,
    /// Stop, disable and remove the unit.
    Delete,
}

/// `POST /api/node/{hostname}/service`: write a new unit file.
#[utoipa::path(post, path = "/api/node/{hostname}/service", request_body = ServiceCreateRequest,
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector")),
    responses(
        (status = 200, description = "per host: written (changed), already there (unchanged: PUT replaces it), or why not", body = ServiceMutationResponse),
        (status = 400, description = "a bad body, unit name, target or object (a file name of --objects, never a path)", body = ApiError),
        (status = 401, body = ApiError), (status = 403, description = "not an admin key, hosts outside its targets, or a protected unit", body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn create_unit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(hostname): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: ServiceCreateRequest = json_body(&body)?;
    let content = super::objects::read(state.settings.objects.as_deref(), &req.object)?;
    unit_file(
        &state,
        &caller,
        &hostname,
        &req.name,
        Some(content),
        Mode::Create,
    )
    .await
}

/// `PUT /api/node/{hostname}/service/{name}`: replace a unit file.
#[utoipa::path(put, path = "/api/node/{hostname}/service/{name}", request_body = ServiceUpdateRequest,
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector"),
        ("name" = String, Path, description = "the unit; a bare name gets `.service`; answered as sent")),
    responses(
        (status = 200, description = "per host: replaced (changed), the same content (unchanged), or why not (no file: POST creates it)", body = ServiceMutationResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no targeted host has the unit file", body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn update_unit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((hostname, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: ServiceUpdateRequest = json_body(&body)?;
    let content = super::objects::read(state.settings.objects.as_deref(), &req.object)?;
    unit_file(
        &state,
        &caller,
        &hostname,
        &name,
        Some(content),
        Mode::Update,
    )
    .await
}

/// `DELETE /api/node/{hostname}/service/{name}`: stop, disable and remove
/// the unit (unchanged where there is no file).
#[utoipa::path(delete, path = "/api/node/{hostname}/service/{name}",
    params(("hostname" = String, Path, description = "a host, `_any`, `_all`, `key:value` or any drover selector"),
        ("name" = String, Path, description = "the unit; a bare name gets `.service`; answered as sent")),
    responses((status = 200, body = ServiceMutationResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 409, body = ApiError), (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn delete_unit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((hostname, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    unit_file(&state, &caller, &hostname, &name, None, Mode::Delete).await
}

/// The `unit:` job of `name` over `targets`.
fn unit_op(name: &str, targets: Vec<String>, content: Option<&String>) -> AdHoc {
    AdHoc::UnitFile {
        unit: name.to_string(),
        targets,
        content: content.cloned(),
        by: "osapi",
    }
}

/// A host settled without a job.
fn settled(
    host: &str,
    name: &str,
    status: EntryStatus,
    error: Option<String>,
) -> ServiceMutationEntry {
    ServiceMutationEntry {
        hostname: host.to_string(),
        status,
        name: Some(name.to_string()),
        changed: (status == EntryStatus::Ok).then_some(false),
        error,
    }
}

async fn unit_file(
    state: &Arc<AppState>,
    caller: &Caller,
    target: &str,
    name: &str,
    content: Option<String>,
    mode: Mode,
) -> Result<Response, ApiError> {
    selector(target)?;
    let unit =
        UnitName::parse(name).map_err(|m| ApiError::bad_request(format!("unit `{name}`: {m}")))?;
    let job = job_for(
        state,
        caller,
        unit_op(name, vec![target.to_string()], content.as_ref()).playbook()?,
        None,
    )?;
    if mode == Mode::Delete {
        let started = start_job(state, caller, job, &change_query(), Vec::new()).await?;
        return mutation(started, name);
    }
    // Each host's file as it is now (and the hosts `_any` picks, the
    // unreachable ones, those in maintenance), as the unit step's plan
    // reads them; a protected unit is refused here.
    let planned = state.executor.plan(job, false, false).await?;
    let mut order = Vec::new();
    let mut done = Vec::new();
    let mut act = Vec::new();
    let mut missing = Vec::new();
    for r in planned.plan.steps.iter().flat_map(|s| &s.results) {
        let host = r.hostname.to_string();
        order.push(host.clone());
        let file = planned
            .facts
            .hosts
            .get(&host)
            .and_then(|h| h.unit_files.get(unit.as_str()))
            .is_some_and(Option::is_some);
        match (r.status, mode, file) {
            (Status::Failed, ..) => {
                done.push(settled(&host, name, EntryStatus::Failed, r.error.clone()))
            }
            (Status::Skipped, ..) => {
                done.push(settled(&host, name, EntryStatus::Skipped, r.error.clone()))
            }
            (_, Mode::Create, true) => done.push(settled(&host, name, EntryStatus::Ok, None)),
            (_, Mode::Update, false) => missing.push(host),
            _ => act.push(host),
        }
    }
    if !missing.is_empty() && act.is_empty() && done.is_empty() {
        return Err(ApiError::not_found(format!(
            "no unit file {} on {}; POST /api/node/{{hostname}}/service creates it",
            crate::model::unitfile::unit_path(&unit),
            missing.join(", ")
        )));
    }
    for h in &missing {
        done.push(settled(
            h,
            name,
            EntryStatus::Failed,
            Some(format!(
                "no unit file {}; POST /api/node/{{hostname}}/service creates it",
                crate::model::unitfile::unit_path(&unit)
            )),
        ));
    }
    let mut job_id = None;
    if !act.is_empty() {
        let job = job_for(
            state,
            caller,
            unit_op(name, act, content.as_ref()).playbook()?,
            None,
        )?;
        let started = start_job(state, caller, job, &change_query(), Vec::new()).await?;
        done.extend(mutation_entries(&started, name)?);
        job_id = started.job_id();
    }
    done.sort_by_key(|e| order.iter().position(|h| *h == e.hostname));
    Ok(answer(
        StatusCode::OK,
        ServiceMutationResponse {
            job_id: job_id.clone(),
            results: done,
        },
        job_id,
    ))
}
