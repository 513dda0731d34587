//! osapi's node service API: service operations on targeted hosts, and
//! their units' status, through the same engine and report as `drover
//! service` and `drover status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::engine::apply::ApplyOptions;
use crate::engine::claims::{claims_of, Claim};
use crate::engine::events::NoEvents;
use crate::engine::job::{AdHoc, Job, ServiceAction};
use crate::engine::plan::PlanOptions;
use crate::engine::status::StatusReport;
use crate::model::keys::Role;
use crate::remote::fanout::Reach;

use super::auth::{Caller, JobId};
use super::error::ApiError;
use super::extract::{query, selector, wait_of};
use super::state::AppState;

/// Query of a change.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuery {
    /// Answer the plan (drover.plan/1) and change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// How long to wait for the job (and for a busy unit) before answering
    /// 202: a duration such as `30s` (default) or `2m`, at most `10m`.
    #[serde(default)]
    pub wait: Option<String>,
    /// Admin keys only: stop, restart or mask a protected unit.
    #[serde(default)]
    pub allow_protected: Option<bool>,
}

/// Refuse targets the key may not reach, then build the job over the
/// hosts the key may act on (so `_any` picks only among them).
pub fn job_for(
    state: &AppState,
    caller: &Caller,
    playbook: crate::model::playbook::Playbook,
    limit: Option<&str>,
) -> Result<Job, ApiError> {
    let loaded = state.loaded();
    let full = Job::new(playbook, loaded.inventory.clone(), limit)?;
    let mut fixed = Vec::new();
    for ex in &full.expanded {
        fixed.extend(ex.targets.fixed.iter().copied());
    }
    caller.check_hosts(fixed.iter().filter_map(|&h| full.inventory.hosts.get(h)))?;
    if caller.targets.is_none() {
        return Ok(full);
    }
    let Job { playbook, .. } = full;
    Ok(Job::new(
        playbook,
        caller.inventory(&loaded.inventory),
        limit,
    )?)
}

/// Plan (dry run) or start a job, then answer as DESIGN.md says: the plan;
/// the report within `wait`; or 202 with `Location` and the results so far.
pub async fn run_job(
    state: &Arc<AppState>,
    caller: &Caller,
    job: Job,
    q: &ChangeQuery,
    extra_claims: Vec<Claim>,
) -> Result<Response, ApiError> {
    Ok(start_job(state, caller, job, q, extra_claims)
        .await?
        .into_response())
}

/// What [`start_job`] got: a plan, a job that ended within `wait`, or one
/// still running.
pub enum Started {
    /// The plan of a dry run (drover.plan/1 JSON).
    Plan(String),
    /// The job ended within `wait`.
    Done(Arc<crate::engine::jobs::Entry>),
    /// Still running past `wait`.
    Running(Arc<crate::engine::jobs::Entry>),
}

impl Started {
    /// The job's id, when one was started.
    pub fn job_id(&self) -> Option<String> {
        match self {
            Started::Plan(_) => None,
            Started::Done(e) | Started::Running(e) => Some(e.view().job_id),
        }
    }

    /// The plan; the report; or 202 with `Location` and the results so far.
    pub fn into_response(self) -> Response {
        let id = self.job_id();
        let mut resp = match self {
            Started::Plan(body) => {
                return ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Started::Done(entry) => match entry.report() {
                Some(r) => Json(r).into_response(),
                None => Json(entry.view()).into_response(),
            },
            Started::Running(entry) => {
                let mut r = (StatusCode::ACCEPTED, Json(entry.view())).into_response();
                if let Ok(v) = header::HeaderValue::from_str(&format!(
                    "/job/{}",
                    id.as_deref().unwrap_or_default()
                )) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
        };
        if let Some(id) = id {
            resp.extensions_mut().insert(JobId(id));
        }
        resp
    }
}

/// Plan (dry run) or start a job and wait for it up to `wait`, under the
/// rules of every change: protected units, roles, rate limit, claims.
pub async fn start_job(
    state: &Arc<AppState>,
    caller: &Caller,
    job: Job,
    q: &ChangeQuery,
    extra_claims: Vec<Claim>,
) -> Result<Started, ApiError> {
    let allow_protected = q.allow_protected.unwrap_or(false);
    if allow_protected {
        caller.require(Role::Admin)?;
    }
    crate::model::decide::check_protected(
        &job.playbook,
        &job.inventory,
        &job.expanded,
        allow_protected,
    )
    .map_err(|e| match caller.role {
        Role::Admin => ApiError::from(e),
        _ => ApiError::forbidden(format!(
            "{}; only an admin key may, with ?allow_protected=true",
            e.details()
        )),
    })?;
    if q.dry_run.unwrap_or(false) {
        let opts = PlanOptions {
            reach: reach(state),
            limit: None,
            facts_label: String::new(),
            keep_facts: false,
        };
        let planned = engine(move || async move {
            crate::engine::plan::plan(&job, None, &opts, &NoEvents).await
        })
        .await??;
        return Ok(Started::Plan(crate::render::plan::render_json(
            &planned.plan,
        )));
    }
    caller.require(Role::Operate)?;
    state
        .limiter
        .check(&caller.name)
        .map_err(ApiError::rate_limited)?;
    let wait = wait_of(q.wait.as_deref())?;
    let t0 = tokio::time::Instant::now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut claims = claims_of(&job);
    claims.extend(extra_claims);
    // A server told to stop does not keep a request waiting for a unit
    // until its `wait` ends: that would hold the shutdown up to 10m.
    let mut stopping = state.shutdown.clone();
    if let Err(b) = state.claims.take(claims.clone(), &id, Duration::ZERO).await {
        tracing::info!(job = %id, holder = %b.job_id, "waiting for {} (held by another job)", b.claim);
    }
    let held = tokio::select! {
        taken = state.claims.take(claims, &id, wait) => taken.map_err(|b| {
            ApiError::conflict(format!(
                "job {} holds {}; retry when it ends (GET /job/{})",
                b.job_id, b.claim, b.job_id
            ))
        })?,
        _ = stopping.wait_for(|s| *s) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down",
                "the server is stopping; nothing was started; retry when it is back",
            ))
        }
    };
    let opts = ApplyOptions {
        forks: state.settings.forks,
        step_timeout: state.settings.step_timeout,
        read_timeout: state.settings.read_timeout,
        allow_protected,
        pool: Some(state.pool.clone()),
        job_id: Some(id.clone()),
        ..ApplyOptions::default()
    };
    let entry = state.jobs.start(job, opts, held, None).await?;
    let left = wait.saturating_sub(t0.elapsed());
    Ok(if entry.wait(left).await {
        Started::Done(entry)
    } else {
        Started::Running(entry)
    })
}

/// Run engine work on a blocking-pool thread driven by the server's
/// runtime. The engine's futures are not provably Send (closures over
/// borrowed hosts and units; rust-lang/rust#102211), which axum's handlers
/// must be; its I/O still runs on the runtime's reactor.
pub async fn engine<F, Fut, T>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(f()))
        .await
        .map_err(|e| ApiError::internal(format!("engine task: {e}")))
}

/// How the server reaches hosts for reads: its forks, read timeout and pool.
pub fn reach(state: &AppState) -> Reach {
    Reach::new(state.settings.forks, state.settings.read_timeout)
        .with_pool(Some(state.pool.clone()))
}

/// `POST /node/{target}/service/{name}/{action}`.
#[utoipa::path(post, path = "/node/{target}/service/{name}/{action}",
    params(
        ("target" = String, Path, description = "hostname, `_any`, `_all`, `key:value` or any selector (percent-encoded)"),
        ("name" = String, Path, description = "unit name; a bare name gets `.service`"),
        ("action" = String, Path, description = "start, stop, restart, reload, enable or disable"),
        ChangeQuery),
    responses(
        (status = 200, description = "the job report, or with dry_run=true the plan (drover.plan/1)", body = crate::model::report::JobReport),
        (status = 202, description = "still running past `wait`; `Location: /job/{id}`", body = crate::engine::jobs::JobView),
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

/// One unit of one host, as the node API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnitView {
    /// RUNNING, STOPPED, STARTING, RESTARTING or FAILED.
    pub status: String,
    /// When it entered the active state (RFC 3339), while up.
    pub start_time: Option<String>,
    /// `3 days, 0:58:59`, while up.
    pub uptime: Option<String>,
    /// The same in seconds.
    pub uptime_seconds: Option<u64>,
    /// Its (or its host's) maintenance flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceView>,
}

/// A maintenance flag.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MaintenanceView {
    /// Why.
    pub reason: String,
    /// Since when (RFC 3339).
    pub since: String,
}

/// One host's units.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostUnits {
    /// The host's inventory name.
    pub hostname: String,
    /// Its units by name.
    pub units: BTreeMap<String, UnitView>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Per-host views of a status report, in the order of `hosts`.
pub fn host_units(report: &StatusReport, hosts: &[String]) -> Vec<HostUnits> {
    let mut out: Vec<HostUnits> = hosts
        .iter()
        .map(|h| HostUnits {
            hostname: h.clone(),
            units: BTreeMap::new(),
            error: None,
        })
        .collect();
    let find = |out: &mut Vec<HostUnits>, h: &str| out.iter().position(|x| x.hostname == h);
    for s in &report.services {
        if let Some(i) = find(&mut out, &s.hostname) {
            out[i].units.insert(
                s.name.clone(),
                UnitView {
                    status: s.status.as_str().to_string(),
                    start_time: s.start_time.clone(),
                    uptime: s.uptime.map(crate::render::status::format_uptime),
                    uptime_seconds: s.uptime,
                    maintenance: s.maintenance.as_ref().map(|m| MaintenanceView {
                        reason: m.reason.clone(),
                        since: m.since.clone(),
                    }),
                },
            );
        }
    }
    for e in &report.errors {
        if let Some(i) = find(&mut out, &e.hostname) {
            out[i].error = Some(e.error.clone());
        }
    }
    out
}

/// Read units of the targeted hosts the key may see.
pub async fn read_units(
    state: &AppState,
    caller: &Caller,
    target: &str,
    units: &[String],
) -> Result<Vec<HostUnits>, ApiError> {
    let sel = selector(target)?;
    let loaded = state.loaded();
    let inv = if sel.is_any() {
        caller.inventory(&loaded.inventory)
    } else {
        let hosts = crate::engine::live::select_hosts(&loaded.inventory, Some(target))?;
        caller.check_hosts(hosts.iter())?;
        loaded.inventory.clone()
    };
    let hosts: Vec<String> = crate::engine::live::select_hosts(&inv, Some(target))?
        .into_iter()
        .map(|h| h.name)
        .collect();
    let scope = caller
        .targets
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let report = shared_read(state, &scope, inv, target, units).await?;
    let out = host_units(&report, &hosts);
    // One unit asked for and no host that answered knows it: 404, as for
    // an unknown job or runbook.
    let read: Vec<&HostUnits> = out.iter().filter(|h| h.error.is_none()).collect();
    if units.len() == 1 && !read.is_empty() {
        let unknown = report.services.iter().all(|s| s.load_state == "not-found");
        if unknown {
            return Err(ApiError::not_found(format!(
                "no unit `{}` on {}",
                report
                    .services
                    .first()
                    .map_or(units[0].as_str(), |s| s.name.as_str()),
                read.iter()
                    .map(|h| h.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(out)
}

/// Read the units of the targeted hosts (over `inv`, the hosts the key of
/// `scope` sees), joining an identical read already
/// in flight: under many concurrent readers (a dashboard, health checks)
/// the hosts are read once per round, not once per request. A joined read
/// started before the request arrived, by less than one read's time.
async fn shared_read(
    state: &AppState,
    scope: &str,
    inv: crate::model::inventory::Inventory,
    target: &str,
    units: &[String],
) -> Result<Arc<StatusReport>, ApiError> {
    use futures_util::FutureExt;
    let key = format!(
        "{:p}\0{}\0{}\0{}",
        Arc::as_ptr(&state.loaded()),
        scope,
        target,
        units.join("\0")
    );
    let read = {
        let mut m = state.reads.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.clone())
            .or_insert_with(|| {
                let (target, wanted, reach) = (target.to_string(), units.to_vec(), reach(state));
                engine(move || async move {
                    crate::engine::status::status(&inv, Some(&target), &wanted, reach, &NoEvents)
                        .await
                })
                .map(|r| match r {
                    Ok(Ok((report, _))) => Ok(Arc::new(report)),
                    Ok(Err(e)) => Err(ApiError::from(e)),
                    Err(e) => Err(e),
                })
                .boxed()
                .shared()
            })
            .clone()
    };
    let out = read.clone().await;
    let mut m = state.reads.lock().unwrap_or_else(|p| p.into_inner());
    if m.get(&key).is_some_and(|r| r.ptr_eq(&read)) {
        m.remove(&key);
    }
    out
}

/// `GET /node/{target}/service`.
#[utoipa::path(get, path = "/node/{target}/service",
    params(("target" = String, Path, description = "hostname, `_any`, `_all` or a selector")),
    responses((status = 200, body = [HostUnits]), (status = 400, body = ApiError),
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
    responses((status = 200, body = [HostUnits]), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])), tag = "node")]
pub async fn one_service(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((target, name)): Path<(String, String)>,
) -> Result<Json<Vec<HostUnits>>, ApiError> {
    Ok(Json(read_units(&state, &caller, &target, &[name]).await?))
}

/// The `--node` host, for the node-local routes (Redis `/v1/local/*`,
/// Consul `/v1/agent/*`): 404 without one, 403 when the key may not reach it.
pub fn node_host(state: &AppState, caller: &Caller) -> Result<String, ApiError> {
    let loaded = state.loaded();
    let Some(node) = loaded.node.clone() else {
        return Err(ApiError::not_found(
            "this server has no node host: start it with --node HOST (or an inventory with one `transport: local` host)",
        ));
    };
    caller.check_hosts(loaded.inventory.host(&node))?;
    Ok(node)
}

/// The name the Redis and Consul routes show for a unit: a service's
/// name without `.service` (what their clients send back), any other
/// unit's full name.
pub fn short_name(unit: &str) -> &str {
    unit.strip_suffix(".service").unwrap_or(unit)
}

/// The `--node` host's status (every loaded service, or `units`) and its
/// address, through the shared read: 503 when the node cannot be read, as
/// the agents these routes stand in for would be down.
pub async fn node_status(
    state: &AppState,
    caller: &Caller,
    units: &[String],
) -> Result<(Arc<StatusReport>, String), ApiError> {
    let node = node_host(state, caller)?;
    let loaded = state.loaded();
    let address = loaded
        .inventory
        .host(&node)
        .map(|h| h.address.clone())
        .unwrap_or_default();
    // The node host is inside the key's targets (node_host checked): the
    // whole inventory reads it as the key's own would.
    let inv = loaded.inventory.clone();
    drop(loaded);
    let report = shared_read(state, "", inv, &node, units).await?;
    if let Some(e) = report.errors.first() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node unreachable",
            format!("{}: {}", e.hostname, e.error),
        ));
    }
    Ok((report, address))
}
