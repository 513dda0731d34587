//! Starting a job for a request, as every route that changes hosts does:
//! the job over the hosts the key may act on, the rules of every change
//! (protected units, roles, rate limit, claims), the plan of a dry run,
//! and the answer within `wait`. Shared by the node, runbook, Redis and
//! Consul routes, so a change refused on one is refused alike on all.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::engine::apply::{resume_carry, ApplyOptions, Continue};
use crate::engine::carry::Carry;
use crate::engine::claims::{claims_of, group_room, Claim};
use crate::engine::job::Job;
use crate::model::keys::Role;

use super::auth::{Caller, JobId};
use super::error::ApiError;
use super::extract::wait_of;
use super::state::{AppState, Runbook};

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
    /// Admin keys only: run outside the playbook's maintenance window.
    #[serde(default)]
    pub ignore_window: Option<bool>,
}

impl ChangeQuery {
    /// Authorise before any work: a change needs an operate key (a dry
    /// run only reads), checked before a job is built or a host is read.
    pub fn authorise(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.dry_run.unwrap_or(false) {
            Ok(())
        } else {
            caller.require(Role::Operate)
        }
    }
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
    let full =
        Job::new(playbook, loaded.inventory.clone(), limit).map_err(|e| caller.selection(e))?;
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
    /// The plan of a dry run (answered as drover.plan/1 JSON).
    Plan(Box<crate::engine::plan::Plan>),
    /// The job ended within `wait`.
    Done(Arc<crate::engine::job_store::Entry>),
    /// Still running past `wait`.
    Running(Arc<crate::engine::job_store::Entry>),
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
            Started::Plan(plan) => {
                let body = crate::render::plan::render_json(&plan);
                return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
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

/// What a job continues: a retry keeps its parent's `ok` results; a resume
/// continues a journal, read only once the job's claims are held (so that
/// two resumes of one job cannot both start from the same point).
pub enum Continuation {
    /// A new job, `retry_of` the parent.
    Retry(Carry),
    /// The same job, continued from its journal.
    Resume {
        /// The job's id.
        job_id: String,
        /// The journal.
        journal: std::path::PathBuf,
        /// Go on although the playbook, inventory or params changed.
        allow_changed: bool,
    },
    /// A new job running exactly this reviewed plan: refused, before
    /// anything runs, when its inputs changed or the hosts drifted.
    Reviewed(Box<crate::engine::saved::SavedPlan>),
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
    start_job_with(state, caller, job, q, extra_claims, None).await
}

/// [`start_job`], continuing an earlier job (retry, resume).
pub async fn start_job_with(
    state: &Arc<AppState>,
    caller: &Caller,
    job: Job,
    q: &ChangeQuery,
    extra_claims: Vec<Claim>,
    cont: Option<Continuation>,
) -> Result<Started, ApiError> {
    // A replica reaches no host: a job's host work is done by the workers,
    // which hold the playbook's text and the inventory, and no other file.
    if state.cluster.is_some() && !q.dry_run.unwrap_or(false) && !job.playbook.inputs.is_empty() {
        return Err(super::executor::not_in_cluster_mode(
            "jobs of playbooks that read other files (modules, unit templates)",
        ));
    }
    let allow_protected = q.allow_protected.unwrap_or(false);
    if allow_protected {
        caller.require(Role::Admin)?;
    }
    // Plan and apply refuse this too, but a change's apply runs after the
    // rate limiter and the claims: a refused request must cost no token,
    // hold no claim; and a non-admin hears "forbidden", not the refusal.
    crate::model::decide::check_protected(
        &job.playbook,
        &job.inventory,
        &job.expanded,
        allow_protected,
    )
    .map_err(|e| match caller.role {
        Role::Admin => ApiError::from(e),
        _ => ApiError::forbidden(ApiError::from(e).details),
    })?;
    let ignore_window = q.ignore_window.unwrap_or(false);
    if ignore_window {
        caller.require(Role::Admin)?;
    }
    if q.dry_run.unwrap_or(false) {
        let mut plan = state.executor.plan(job, allow_protected, false).await?.plan;
        // The plan names its inputs as the server's files: below the
        // server's directories, as its errors do.
        let hide = super::error::without_server_paths;
        plan.playbook.path = hide(&plan.playbook.path);
        plan.inventory.path = hide(&plan.inventory.path);
        for i in &mut plan.inputs {
            i.path = hide(&i.path);
        }
        return Ok(Started::Plan(Box::new(plan)));
    }
    caller.require(Role::Operate)?;
    state
        .limiter
        .check(&caller.name)
        .await
        .map_err(ApiError::rate_limited)?;
    let wait = wait_of(q.wait.as_deref())?;
    let t0 = tokio::time::Instant::now();
    let id = match &cont {
        Some(Continuation::Resume { job_id, .. }) => job_id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    // A runbook's file lock is the one `drover apply` takes: a served run
    // and a cron run of the same file exclude each other.
    let lock = extra_claims
        .iter()
        .any(|c| matches!(c, Claim::Runbook(_)))
        .then(|| job.playbook.path.clone());
    let mut claims = claims_of(&job);
    claims.extend(extra_claims);
    // A server told to stop does not keep a request waiting for a unit
    // until its `wait` ends: that would hold the shutdown up to 10m.
    let mut stopping = state.shutdown.clone();
    let mut waiting = None;
    if let Err(b) = state.claims.take(claims.clone(), &id, Duration::ZERO).await {
        tracing::info!(job = %id, holder = %b.job_id, "waiting for {} (held by another job)", b.claim);
        waiting = Some(state.metrics.waiting());
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
    // A group another job fills for all of `wait` refuses the job now,
    // naming that job (the walk claims each batch's room as it goes).
    let room = group_room(&job);
    if !room.is_empty() {
        let left = wait.saturating_sub(t0.elapsed());
        let store = state.room();
        let probe = tokio::select! {
            taken = store.take_members(room, &id, left) => taken,
            _ = stopping.wait_for(|s| *s) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down",
                    "the server is stopping; nothing was started; retry when it is back",
                ))
            }
        };
        if let Err(b) = probe {
            return Err(ApiError::conflict(format!(
                "job {} holds {} (max_unavailable); retry when it ends (GET /job/{})",
                b.job_id, b.claim, b.job_id
            )));
        }
    }
    drop(waiting);
    let mut saved = None;
    let (carry, resume) = match cont {
        None => (None, None),
        // Its drift check reads the hosts from this process.
        Some(Continuation::Reviewed(_)) if state.cluster.is_some() => {
            return Err(super::executor::not_in_cluster_mode("applies of stored plans"));
        }
        Some(Continuation::Reviewed(plan)) => {
            saved = Some(*plan);
            (None, None)
        }
        Some(Continuation::Retry(carry)) => (Some(carry), None),
        Some(Continuation::Resume {
            journal,
            allow_changed,
            ..
        }) => {
            let (carry, header) = resume_from(&job, &journal, allow_changed)?;
            (Some(carry), Some(Continue { journal, header }))
        }
    };
    let opts = ApplyOptions {
        forks: state.settings.forks,
        step_timeout: state.settings.step_timeout,
        read_timeout: state.settings.read_timeout,
        allow_protected,
        ignore_window,
        pool: Some(state.pool.clone()),
        job_id: Some(id.clone()),
        lock,
        carry,
        resume,
        saved,
        failure_logs: state.settings.failure_logs,
        // `group_by` room is claimed where the units are (across
        // replicas in cluster mode), and waited for as long as the
        // request waits for them.
        claims: Some(state.room()),
        claim_wait: wait,
        // Cluster mode: the hosts are worked by their owners, and the
        // units are claimed where every replica and `drover apply --nats`
        // look (this replica's own claims above keep its jobs apart).
        tasks: state.cluster.as_ref().map(|c| c.tasks.clone()),
        unit_claims: state.cluster.as_ref().map(|c| c.units.clone()),
        scope: caller
            .targets
            .as_ref()
            .map(|_| job.inventory.hosts.iter().map(|h| h.name.clone()).collect()),
        ..ApplyOptions::default()
    };
    let entry = state.jobs.start(job, opts, held).await?;
    let left = wait.saturating_sub(t0.elapsed());
    Ok(if entry.wait(left).await {
        Started::Done(entry)
    } else {
        Started::Running(entry)
    })
}

/// What resuming the journal keeps: refused when its run ended (nothing to
/// resume) or its inputs changed.
fn resume_from(
    job: &Job,
    journal: &std::path::Path,
    allow_changed: bool,
) -> Result<(Carry, crate::model::journal::Header), ApiError> {
    let read = crate::engine::journal::read(journal)?;
    if let Some(end) = read.ended() {
        return Err(ApiError::conflict(format!(
            "job {} ended {end}: there is nothing to resume; POST /job/{}/retry runs again what did not end ok",
            read.header.job_id, read.header.job_id
        )));
    }
    Ok(resume_carry(job, read, allow_changed)?)
}

/// A runbook that needs approval runs only as an approved plan: what every
/// other route that would start it answers.
pub fn needs_plan(rb: &Runbook) -> Result<(), ApiError> {
    let need = rb.approvals()?;
    if need == 0 {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "runbook `{}` needs {need} approval(s) of a plan before it runs: POST /runbook/{}/plan, have another operate key POST /plan/{{digest}}/approve, then POST /plan/{{digest}}/apply",
        rb.name, rb.name
    )))
}
