//! Consul agent-compatible routes on the `--node` host: its services, their
//! health as a load balancer polls it, registration through the unit
//! module and maintenance through the maintenance module. A service's ID
//! and name are its unit's name (`demo-web` for `demo-web.service`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::engine::job::{AdHoc, Job};
use crate::engine::status::{StatusEntry, StatusReport};
use crate::model::facts::UnitFacts;
use crate::model::health::{unit_health, Health};
use crate::model::keys::Role;
use crate::model::template::CallerText;
use crate::model::unit::UnitName;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{json_body, query};
use super::launch::{job_for, run_job, ChangeQuery};
use super::read::{node_host, short_name};
use super::state::AppState;

/// Consul's reason when maintenance is enabled without one.
pub const DEFAULT_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// A service as Consul's agent shows it (`AgentService`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// The unit's name (`demo-web` for `demo-web.service`).
    #[serde(rename = "ID")]
    pub id: String,
    /// The same: one service per unit.
    pub service: String,
    /// Always empty: units have no tags.
    pub tags: Vec<String>,
    /// `unit` (full name), `host`, `status` (RUNNING…), `active_state`,
    /// `sub_state`, and `start_time`/`uptime` while up.
    pub meta: BTreeMap<String, String>,
    /// Always 0: a unit does not declare a port.
    pub port: u16,
    /// The host's inventory address.
    pub address: String,
    /// Consul's default weights.
    pub weights: Weights,
    /// Always false.
    pub enable_tag_override: bool,
}

/// Consul's DNS weights.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// 1.
    pub passing: u32,
    /// 1.
    pub warning: u32,
}

/// A health check as Consul's agent shows it (`HealthCheck`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    /// The node (the host's inventory name).
    pub node: String,
    /// `service:ID`, `_service_maintenance:ID` or `_node_maintenance`.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// What it checks.
    pub name: String,
    /// passing, warning or critical.
    pub status: String,
    /// A maintenance flag's reason.
    pub notes: String,
    /// The unit's state (`active (running)`) or the reason.
    pub output: String,
    /// The service (empty for the node's maintenance).
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// The same.
    pub service_name: String,
    /// Always empty.
    pub service_tags: Vec<String>,
    /// `systemd` for the unit's state, `maintenance` for a flag.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// A service's health as Consul's agent health endpoint shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceHealth {
    /// The worst of the checks: passing, warning or critical.
    pub aggregated_status: String,
    /// The service.
    pub service: AgentService,
    /// The unit's state, then any maintenance flag.
    pub checks: Vec<Check>,
}

fn word(h: Health) -> &'static str {
    match h {
        Health::Passing => "passing",
        Health::Warning => "warning",
        // Consul has no "unknown": a check that cannot run is critical.
        Health::Critical | Health::Unknown => "critical",
    }
}

fn service_of(e: &StatusEntry, address: &str) -> AgentService {
    let id = short_name(&e.name).to_string();
    let mut meta = BTreeMap::new();
    meta.insert("unit".into(), e.name.clone());
    meta.insert("host".into(), e.hostname.clone());
    meta.insert("status".into(), e.status.as_str().to_string());
    meta.insert("active_state".into(), e.active_state.clone());
    meta.insert("sub_state".into(), e.sub_state.clone());
    if let Some(t) = &e.start_time {
        meta.insert("start_time".into(), t.clone());
    }
    if let Some(u) = e.uptime {
        meta.insert("uptime".into(), crate::render::status::format_uptime(u));
    }
    AgentService {
        service: id.clone(),
        id,
        tags: Vec::new(),
        meta,
        port: 0,
        address: address.to_string(),
        weights: Weights {
            passing: 1,
            warning: 1,
        },
        enable_tag_override: false,
    }
}

/// The unit's health with Consul's checks: the unit's state by the
/// model's rules, and a critical check per maintenance flag.
fn health_of(e: &StatusEntry, report: &StatusReport, address: &str) -> ServiceHealth {
    let service = service_of(e, address);
    let id = service.id.clone();
    let facts = UnitFacts {
        load_state: e.load_state.clone(),
        active_state: e.active_state.clone(),
        sub_state: e.sub_state.clone(),
        ..UnitFacts::not_found()
    };
    let (level, output) = unit_health(&facts, None);
    let check = |check_id: String,
                 name: String,
                 status: Health,
                 notes: &str,
                 output: String,
                 sid: &str,
                 kind: &str| Check {
        node: e.hostname.clone(),
        check_id,
        name,
        status: word(status).to_string(),
        notes: notes.to_string(),
        output,
        service_id: sid.to_string(),
        service_name: sid.to_string(),
        service_tags: Vec::new(),
        kind: kind.to_string(),
    };
    let mut checks = vec![check(
        format!("service:{id}"),
        format!("Service '{id}' unit state"),
        level,
        "",
        output,
        &id,
        "systemd",
    )];
    for m in report
        .maintenance
        .iter()
        .filter(|m| m.hostname == e.hostname)
    {
        match &m.unit {
            None => checks.push(check(
                "_node_maintenance".into(),
                "Node Maintenance Mode".into(),
                Health::Critical,
                &m.reason,
                m.reason.clone(),
                "",
                "maintenance",
            )),
            Some(u) if *u == e.name => checks.push(check(
                format!("_service_maintenance:{id}"),
                "Service Maintenance Mode".into(),
                Health::Critical,
                &m.reason,
                m.reason.clone(),
                &id,
                "maintenance",
            )),
            Some(_) => {}
        }
    }
    let worst = checks
        .iter()
        .map(|c| match c.status.as_str() {
            "passing" => Health::Passing,
            "warning" => Health::Warning,
            _ => Health::Critical,
        })
        .fold(Health::Passing, Health::worst);
    ServiceHealth {
        aggregated_status: word(worst).to_string(),
        service,
        checks,
    }
}

/// A unit name from a path, 400 naming it when it is not one.
fn unit_of(raw: &str) -> Result<UnitName, ApiError> {
    UnitName::parse(raw).map_err(|m| ApiError::bad_request(format!("service `{raw}`: {m}")))
}

/// The node's status for one unit (every loaded service without one), and
/// the node's address.
async fn node_status(
    state: &AppState,
    caller: &Caller,
    unit: Option<&UnitName>,
) -> Result<(Arc<StatusReport>, String), ApiError> {
    let units: Vec<String> = unit.iter().map(|u| u.to_string()).collect();
    super::read::node_status(state, caller, &units).await
}

/// The one unit's entry, 404 when systemd does not know it.
fn known<'a>(report: &'a StatusReport, unit: &UnitName) -> Result<&'a StatusEntry, ApiError> {
    report
        .services
        .iter()
        .find(|s| s.name == unit.as_str() && s.load_state != "not-found")
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown service ID `{}`",
                short_name(unit.as_str())
            ))
        })
}

/// `GET /v1/agent/services`: every loaded service of the node by ID.
#[utoipa::path(get, path = "/v1/agent/services",
    responses((status = 429, description = "too many host reads in flight (per key or overall); retry after `Retry-After`", body = ApiError), (status = 200, body = BTreeMap<String, AgentService>), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, description = "no --node host", body = ApiError),
        (status = 503, description = "the node cannot be read", body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn services(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BTreeMap<String, AgentService>>, ApiError> {
    let (report, address) = node_status(&state, &caller, None).await?;
    Ok(Json(
        report
            .services
            .iter()
            .map(|e| (short_name(&e.name).to_string(), service_of(e, &address)))
            .collect(),
    ))
}

/// `GET /v1/agent/service/{id}`.
#[utoipa::path(get, path = "/v1/agent/service/{id}",
    params(("id" = String, Path, description = "the unit's name; a bare name gets `.service`")),
    responses((status = 429, description = "too many host reads in flight (per key or overall); retry after `Retry-After`", body = ApiError), (status = 200, body = AgentService), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn service(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AgentService>, ApiError> {
    let unit = unit_of(&id)?;
    let (report, address) = node_status(&state, &caller, Some(&unit)).await?;
    Ok(Json(service_of(known(&report, &unit)?, &address)))
}

/// Query of the health routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// `text`: the body is only `passing`, `warning` or `critical`.
    pub format: Option<String>,
}

fn wants_text(q: &HealthQuery, headers: &HeaderMap) -> bool {
    q.format.as_deref() == Some("text")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/plain")))
}

fn status_of(aggregated: &str) -> StatusCode {
    match aggregated {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn health(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    q: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    by_name: bool,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if let Some(f) = q.format.as_deref().filter(|f| *f != "text") {
        return Err(ApiError::bad_request(format!(
            "format `{f}`: the only format is `text`"
        )));
    }
    let unit = unit_of(raw)?;
    let (report, address) = node_status(state, caller, Some(&unit)).await?;
    let e = known(&report, &unit).map_err(|e| {
        if by_name {
            ApiError::not_found(format!("unknown service name `{raw}`"))
        } else {
            e
        }
    })?;
    let h = health_of(e, &report, &address);
    let code = status_of(&h.aggregated_status);
    let mut resp = if wants_text(&q, headers) {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            h.aggregated_status.clone(),
        )
            .into_response()
    } else if by_name {
        (code, Json(vec![h])).into_response()
    } else {
        (code, Json(h)).into_response()
    };
    // 429 and 503 here are health levels, not errors: their bodies stay.
    resp.extensions_mut().insert(super::error::KeepBody);
    Ok(resp)
}

/// `GET /v1/agent/health/service/name/{name}`: `[{AggregatedStatus, Service, Checks}]`.
#[utoipa::path(get, path = "/v1/agent/health/service/name/{name}",
    params(("name" = String, Path, description = "the unit's name"), HealthQuery),
    responses((status = 200, description = "passing", body = [ServiceHealth]),
        (status = 429, description = "warning", body = [ServiceHealth]),
        (status = 503, description = "critical (or the node cannot be read: then an error)", body = [ServiceHealth]),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "unknown service (or no --node host)", body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn health_by_name(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    q: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    health(&state, &caller, &name, q, &headers, true).await
}

/// `GET /v1/agent/health/service/id/{id}`: `{AggregatedStatus, Service, Checks}`.
#[utoipa::path(get, path = "/v1/agent/health/service/id/{id}",
    params(("id" = String, Path, description = "the unit's name"), HealthQuery),
    responses((status = 200, description = "passing", body = ServiceHealth),
        (status = 429, description = "warning", body = ServiceHealth),
        (status = 503, description = "critical (or the node cannot be read: then an error)", body = ServiceHealth),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "unknown service (or no --node host)", body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn health_by_id(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    health(&state, &caller, &id, q, &headers, false).await
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The service's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The unit's name (default: `Name`).
    #[serde(rename = "ID", default)]
    pub id: Option<String>,
    /// The unit file, written verbatim to `/etc/systemd/system/ID`.
    #[serde(rename = "Content")]
    pub content: String,
}

/// A one-step `unit:` playbook on the node.
fn unit_job(
    state: &AppState,
    caller: &Caller,
    node: &str,
    unit: &UnitName,
    content: Option<&str>,
) -> Result<Job, ApiError> {
    let op = AdHoc::UnitFile {
        unit: unit.to_string(),
        targets: vec![node.to_string()],
        content: content.map(str::to_string),
        by: "consul",
    };
    job_for(state, caller, op.playbook()?, None)
}

/// `PUT /v1/agent/service/register`: write the unit file (the unit module).
#[utoipa::path(put, path = "/v1/agent/service/register", request_body = Register, params(ChangeQuery),
    responses((status = 200, description = "the job report (or the plan with dry_run=true)", body = crate::model::report::JobReport),
        (status = 202, body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no --node host", body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn register(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if !q.dry_run.unwrap_or(false) {
        caller.require(Role::Admin)?;
    }
    let node = node_host(&state, &caller)?;
    let r: Register = json_body(&body)?;
    let raw = r.id.as_deref().unwrap_or(&r.name);
    let unit = unit_of(raw)?;
    let job = unit_job(&state, &caller, &node, &unit, Some(&r.content))?;
    // A registered service is polled next: the live snapshot follows it.
    if let (Some(f), Some(h)) = (&state.live, state.loaded().inventory.host(&node)) {
        f.watch(std::slice::from_ref(h), &[unit.to_string()]);
    }
    run_job(&state, &caller, job, &q, Vec::new()).await
}

/// `PUT /v1/agent/service/deregister/{id}`: stop, disable and remove the unit.
#[utoipa::path(put, path = "/v1/agent/service/deregister/{id}",
    params(("id" = String, Path, description = "the unit's name"), ChangeQuery),
    responses((status = 200, description = "the job report (or the plan with dry_run=true)", body = crate::model::report::JobReport),
        (status = 202, body = crate::engine::job_store::JobView),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn deregister(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if !q.dry_run.unwrap_or(false) {
        caller.require(Role::Admin)?;
    }
    let node = node_host(&state, &caller)?;
    let unit = unit_of(&id)?;
    let job = unit_job(&state, &caller, &node, &unit, None)?;
    run_job(&state, &caller, job, &q, Vec::new()).await
}

/// Query of `PUT /v1/agent/service/maintenance/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceQuery {
    /// `true` or `false` (required).
    pub enable: Option<String>,
    /// Why (default: Consul's default message).
    pub reason: Option<String>,
    /// As for every change: a duration such as `30s` (default).
    pub wait: Option<String>,
    /// Answer the plan and change nothing.
    pub dry_run: Option<bool>,
}

/// `PUT /v1/agent/service/maintenance/{id}?enable=&reason=`: the unit's
/// maintenance flag on the node (persistent, on the host).
#[utoipa::path(put, path = "/v1/agent/service/maintenance/{id}",
    params(("id" = String, Path, description = "the unit's name"), MaintenanceQuery),
    responses((status = 200, description = "the job report (or the plan with dry_run=true)", body = crate::model::report::JobReport),
        (status = 202, body = crate::engine::job_store::JobView),
        (status = 400, description = "`Missing value for enable` or an invalid value", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)),
    security(("bearer" = []), ("consul_token" = [])), tag = "consul")]
pub async fn maintenance(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<MaintenanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let enable = match q.enable.as_deref() {
        None | Some("") => return Err(ApiError::bad_request("Missing value for enable")),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for enable: `{v}` (true or false)"
                )))
            }
        },
    };
    let cq = ChangeQuery {
        dry_run: q.dry_run,
        wait: q.wait,
        allow_protected: None,
        ignore_window: None,
    };
    cq.authorise(&caller)?;
    let unit = unit_of(&id)?;
    let (report, _) = node_status(&state, &caller, Some(&unit)).await?;
    known(&report, &unit)?;
    let node = node_host(&state, &caller)?;
    let reason = enable.then(|| {
        CallerText::new(
            q.reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_REASON.to_string()),
        )
    });
    let op = AdHoc::Maintenance {
        enable,
        unit: Some(unit.to_string()),
        target: node,
        reason,
    };
    let job = job_for(&state, &caller, op.playbook()?, None)?;
    run_job(&state, &caller, job, &cq, Vec::new()).await
}
