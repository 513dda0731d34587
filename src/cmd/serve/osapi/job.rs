//! osapi's job routes over drover's jobs: list (with osapi's status words
//! and counts), get, delete and retry, in osapi's shapes. A job's status
//! word comes from how its hosts ended ([`HostTally`]), the rule a retry
//! reruns by.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::engine::job_store::{JobStatus, JobView, Removed};
use crate::model::keys::Role;
use crate::model::report::{HostEnd, HostTally, JobResult};

use super::super::auth::{Caller, JobId};
use super::super::error::ApiError;
use super::super::extract::{json_body, query, selector};
use super::super::jobs::{continue_started, entry, ContinueBody, Kind};
use super::super::launch::{ChangeQuery, Started};
use super::super::state::AppState;
use super::answer;
use super::shapes::{
    AgentResponse, CreateJobResponse, JobDetailResponse, ListJobsResponse, RetryJobRequest,
};

/// The statuses osapi's list filters on, and counts (osapi counts them all,
/// zero or not).
const STATUS_WORDS: [&str; 5] = [
    "submitted",
    "processing",
    "completed",
    "failed",
    "partial_failure",
];

/// osapi's word for a job: `processing` while it runs (drover starts a
/// job at once, so none is ever `submitted`); once ended, as osapi sums
/// its agents up: some hosts failed and some ok is `partial_failure`, only
/// failures `failed`, only skips `skipped`, else `completed`. An abort or
/// a stop left work undone: it counts as a failure; a job drover itself
/// failed is `failed`.
pub fn status_word(outcome: JobStatus, hosts: HostTally) -> &'static str {
    match outcome {
        JobStatus::Running => "processing",
        JobStatus::Failed => "failed",
        _ => {
            let undone = outcome != JobStatus::Completed && hosts.failed == 0;
            let failed = hosts.failed + usize::from(undone);
            if failed > 0 && hosts.ok > 0 {
                "partial_failure"
            } else if failed > 0 {
                "failed"
            } else if hosts.skipped > 0 && hosts.ok == 0 {
                "skipped"
            } else {
                "completed"
            }
        }
    }
}

/// A job's id from the path: osapi's ids are UUIDs, and so are drover's.
fn job_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad_request(format!("id `{}`: not a UUID", raw.escape_default())))
}

/// A job as osapi shows it.
fn detail(v: &JobView) -> JobDetailResponse {
    let tally = HostTally::of(&v.results);
    let status = status_word(v.outcome, tally);
    let running = v.outcome == JobStatus::Running;
    let mut hosts: Vec<&str> = Vec::new();
    for r in &v.results {
        if !hosts.contains(&r.hostname.as_str()) {
            hosts.push(&r.hostname);
        }
    }
    let why = |r: &JobResult| r.error.clone().unwrap_or_else(|| r.status.to_string());
    let responses: BTreeMap<String, AgentResponse> = hosts
        .iter()
        .map(|h| {
            let mine: Vec<JobResult> = v
                .results
                .iter()
                .filter(|r| r.hostname == *h)
                .cloned()
                .collect();
            let end = HostEnd::of(&mine);
            let errors: Vec<String> = mine.iter().filter(|r| r.needs_retry()).map(why).collect();
            let resp = AgentResponse {
                status: match end {
                    HostEnd::Ok => "completed",
                    HostEnd::Failed => "failed",
                    HostEnd::Skipped => "skipped",
                }
                .to_string(),
                changed: Some(mine.iter().any(|r| r.changed)),
                error: (!errors.is_empty()).then(|| errors.join("; ")),
                hostname: h.to_string(),
                data: mine,
            };
            (h.to_string(), resp)
        })
        .collect();
    let error = match status {
        "failed" | "partial_failure" => Some(
            v.results
                .iter()
                .rev()
                .find(|r| r.needs_retry())
                .map(|r| format!("{}: {}", r.hostname, why(r)))
                .unwrap_or_else(|| format!("the job ended {}", outcome_word(v.outcome))),
        ),
        _ => None,
    };
    let mut data = serde_json::Map::new();
    data.insert("playbook".into(), v.playbook.clone().into());
    if let Some(p) = &v.retry_of {
        data.insert("retry_of".into(), p.clone().into());
    }
    let mut operation = serde_json::Map::new();
    operation.insert("type".into(), "drover.playbook".into());
    operation.insert("data".into(), data.into());
    JobDetailResponse {
        id: v.job_id.clone(),
        status: status.to_string(),
        created: v.started_at.clone(),
        updated_at: v
            .finished_at
            .clone()
            .unwrap_or_else(|| v.started_at.clone()),
        operation,
        changed: (!running).then(|| v.results.iter().any(|r| r.changed)),
        error,
        hostname: match hosts.as_slice() {
            [only] => Some(only.to_string()),
            _ => None,
        },
        responses,
    }
}

fn outcome_word(o: JobStatus) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Query of `GET /api/job`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// submitted, processing, completed, failed or partial_failure.
    pub status: Option<String>,
    /// Jobs per page, 1 to 100 (default 10).
    pub limit: Option<i64>,
    /// Jobs to skip, newest first (default 0).
    pub offset: Option<i64>,
}

/// `GET /api/job`: the jobs this key may see, newest first.
#[utoipa::path(get, path = "/api/job", params(JobsQuery),
    responses((status = 200, body = ListJobsResponse),
        (status = 400, description = "a status, limit or offset out of range", body = ApiError),
        (status = 401, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListJobsResponse>, ApiError> {
    let q = query(q)?;
    if let Some(s) = q.status.as_deref() {
        if !STATUS_WORDS.contains(&s) {
            return Err(ApiError::bad_request(format!(
                "status `{}`: use submitted, processing, completed, failed or partial_failure",
                s.escape_default()
            )));
        }
    }
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit}: from 1 to 100"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request(format!(
            "offset {offset}: at least 0"
        )));
    }
    let within = caller.job_scope(&state.loaded().inventory);
    let all = state.jobs.summaries(within.as_ref());
    let mut status_counts: BTreeMap<String, usize> =
        STATUS_WORDS.iter().map(|w| (w.to_string(), 0)).collect();
    let mut matching = Vec::new();
    for s in &all {
        let word = status_word(s.outcome, s.hosts);
        *status_counts.entry(word.to_string()).or_default() += 1;
        if q.status.as_deref().is_none_or(|f| f == word) {
            matching.push(s);
        }
    }
    let items = matching
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        // Deleted or expired since the index was read: left out.
        .filter_map(|s| state.jobs.get(&s.job_id))
        .map(|e| detail(&e.view()))
        .collect();
    Ok(Json(ListJobsResponse {
        total_items: matching.len(),
        status_counts,
        items,
    }))
}

/// `GET /api/job/{id}`.
#[utoipa::path(get, path = "/api/job/{id}", params(("id" = String, Path, description = "the job's UUID")),
    responses((status = 200, body = JobDetailResponse),
        (status = 400, description = "not a UUID", body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let e = entry(&state, &caller, &id)?;
    Ok(answer(StatusCode::OK, detail(&e.view()), Some(id)))
}

/// `DELETE /api/job/{id}`: forget a job that has ended (its report and
/// journal are deleted).
#[utoipa::path(delete, path = "/api/job/{id}", params(("id" = String, Path, description = "the job's UUID")),
    responses((status = 204, description = "deleted"),
        (status = 400, description = "not a UUID", body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "not an operate key", body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "the job is running: cancel it (POST /job/{id}/cancel) first", body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let id = job_id(&id)?;
    entry(&state, &caller, &id)?;
    let gone = || ApiError::not_found(format!("no job `{id}`; GET /api/job lists them"));
    match state.jobs.remove(&id) {
        Removed::Deleted => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.extensions_mut().insert(JobId(id));
            Ok(r)
        }
        Removed::Running => Err(ApiError::conflict(format!(
            "job {id} is running; cancel it (POST /job/{id}/cancel) and delete it once it ended"
        ))),
        Removed::Unknown => Err(gone()),
    }
}

/// `POST /api/job/{id}/retry`: drover's retry (`POST /job/{id}/retry`): a
/// new job running again what did not end ok, optionally on fewer hosts.
#[utoipa::path(post, path = "/api/job/{id}/retry", params(("id" = String, Path, description = "the job's UUID")),
    request_body(content = Option<RetryJobRequest>, description = "optional", content_type = "application/json"),
    responses((status = 201, description = "the new job", body = CreateJobResponse),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the job is running, was not a runbook's, or its runbook, inventory or params changed", body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Operate)?;
    let id = job_id(&id)?;
    let req: RetryJobRequest = if body.is_empty() {
        RetryJobRequest::default()
    } else {
        json_body(&body)?
    };
    let narrow = match req.target_hostname.as_deref().map(str::trim) {
        None | Some("_any" | "_all") => None,
        Some(t) => {
            selector(t)?;
            Some(t.to_string())
        }
    };
    let started = continue_started(
        &state,
        &caller,
        &id,
        &ChangeQuery::default(),
        ContinueBody::default(),
        Kind::Retry,
        narrow.as_deref(),
    )
    .await?;
    let view = match &started {
        Started::Done(e) | Started::Running(e) => e.view(),
        Started::Plan(_) => return Err(ApiError::internal("a retry answered a plan")),
    };
    Ok(answer(
        StatusCode::CREATED,
        CreateJobResponse {
            job_id: view.job_id.clone(),
            status: status_word(view.outcome, HostTally::of(&view.results)).to_string(),
            timestamp: view.started_at.clone(),
        },
        Some(view.job_id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ok: usize, failed: usize, skipped: usize) -> HostTally {
        HostTally {
            ok,
            failed,
            skipped,
        }
    }

    #[test]
    fn drovers_outcomes_map_to_osapis_words() {
        use JobStatus::*;
        assert_eq!(status_word(Running, t(3, 1, 0)), "processing");
        assert_eq!(status_word(Completed, t(2, 0, 0)), "completed");
        assert_eq!(status_word(Completed, t(0, 0, 0)), "completed");
        assert_eq!(status_word(Completed, t(1, 1, 0)), "partial_failure");
        assert_eq!(status_word(Completed, t(0, 2, 1)), "failed");
        assert_eq!(status_word(Completed, t(0, 0, 2)), "skipped");
        assert_eq!(status_word(Completed, t(1, 0, 2)), "completed");
        assert_eq!(status_word(Interrupted, t(1, 0, 0)), "partial_failure");
        assert_eq!(status_word(Aborted, t(0, 0, 0)), "failed");
        assert_eq!(status_word(Failed, t(5, 0, 0)), "failed");
    }

    #[test]
    fn job_ids_are_uuids() {
        assert!(job_id("6f1c2d3e-0a4b-4c5d-8e9f-0a1b2c3d4e5f").is_ok());
        for bad in ["x", "", "../x", "6f1c2d3e-0a4b-4c5d-8e9f"] {
            assert_eq!(job_id(bad).unwrap_err().code, 400, "{bad}");
        }
    }
}
