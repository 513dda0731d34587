//! The bodies of osapi's `/api` routes, field for field as osapi's spec
//! (`internal/controller/api/*/gen/api.yaml`) names and types them: what
//! osapi's SDK decodes. Optional fields are left out when empty, as osapi's
//! own server does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::report::JobResult;

/// How one host's part of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Done.
    Ok,
    /// Not done: `error` says why.
    Failed,
    /// Left alone (maintenance, a `when`, ...): `error` says why.
    Skipped,
}

/// A systemd service on one host.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    /// The unit's name.
    pub name: String,
    /// systemd's ActiveState: active, inactive, failed, activating, ...
    pub status: String,
    /// Whether its unit file is enabled (starts at boot).
    pub enabled: bool,
    /// Its Description=.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its main process, while it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// One host's services.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceListEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// ok, or failed when the host could not be read.
    pub status: EntryStatus,
    /// Every loaded service of the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceInfo>>,
    /// Why the host could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/node/{hostname}/service`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceListResponse {
    /// One entry per targeted host.
    pub results: Vec<ServiceListEntry>,
}

/// One service on one host.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceGetEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// ok; failed when the host could not be read or does not know the unit.
    pub status: EntryStatus,
    /// The service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceInfo>,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/node/{hostname}/service/{name}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceGetResponse {
    /// One entry per targeted host.
    pub results: Vec<ServiceGetEntry>,
}

/// What a change did on one host.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceMutationEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// ok, failed or skipped.
    pub status: EntryStatus,
    /// The service's name as the request gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether systemd state (or the unit file) really changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to every change of `/api/node/{hostname}/service`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceMutationResponse {
    /// The drover job that made the change (`GET /api/job/{id}`); absent
    /// when no host needed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// One entry per targeted host.
    pub results: Vec<ServiceMutationEntry>,
}

/// Body of `POST /api/node/{hostname}/service`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCreateRequest {
    /// The unit's name (a bare name gets `.service`).
    pub name: String,
    /// The name of a file in the server's `--objects` directory: the unit
    /// file's content. A name, never a path.
    pub object: String,
}

/// Body of `PUT /api/node/{hostname}/service/{name}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdateRequest {
    /// The name of a file in the server's `--objects` directory.
    pub object: String,
}

/// One host's part of a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentResponse {
    /// completed, failed or skipped.
    pub status: String,
    /// The host's results in drover's report shape, in execution order.
    pub data: Vec<JobResult>,
    /// Whether the job changed anything on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why the host failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The host's inventory name.
    pub hostname: String,
}

/// A job as osapi shows one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobDetailResponse {
    /// The job's id (a UUID).
    pub id: String,
    /// processing, completed, failed, partial_failure or skipped.
    pub status: String,
    /// When it started (RFC 3339).
    pub created: String,
    /// When it ended, or started while it runs (RFC 3339).
    pub updated_at: String,
    /// What it runs: `{"type": "drover.playbook", "data": {"playbook": NAME}}`.
    #[schema(value_type = Object)]
    pub operation: serde_json::Map<String, serde_json::Value>,
    /// Whether it changed anything; absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why it failed (the last failure), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its host, when it ran on exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Each host's part, by host.
    pub responses: BTreeMap<String, AgentResponse>,
}

/// `GET /api/job`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListJobsResponse {
    /// Jobs matching the filter.
    pub total_items: usize,
    /// Every job this key may see, by status (submitted, processing,
    /// completed, failed, partial_failure, and skipped when some are).
    pub status_counts: BTreeMap<String, usize>,
    /// The page asked for, newest first.
    pub items: Vec<JobDetailResponse>,
}

/// Optional body of `POST /api/job/{id}/retry`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryJobRequest {
    /// Only these of the job's hosts (a selector, as `--limit`); `_any`,
    /// `_all` or none: every host the job ran on.
    pub target_hostname: Option<String>,
}

/// `POST /api/job/{id}/retry`: the new job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreateJobResponse {
    /// The new job's id.
    pub job_id: String,
    /// Its status when answered (processing, or how it ended).
    pub status: String,
    /// When it started (RFC 3339).
    pub timestamp: String,
}
