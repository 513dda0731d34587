//! osapi's unit log route, `GET /api/node/{hostname}/log/unit/{name}`, in
//! osapi's `LogCollectionResponse` shape: a unit's journal on the targeted
//! hosts, read through the same carrier and bounds as `drover logs`.
//!
//! The key rules are those of the `/node` reads: any key may read, a key
//! with `targets` only the hosts inside them (an unknown host answers as
//! one outside them), and `_any` picks among those hosts only. Log reads
//! in flight are bounded over the whole server: past [`READS`], 429.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::engine::logs::HostLogs;
use crate::model::keys::Role;
use crate::model::logs::{parse_lines, LogEntry, LogQuery};
use crate::model::outcome::Status;

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::extract::{query, selector};
use super::super::state::AppState;

/// Log reads in flight at once, over all keys: each may hold up to 4 MiB
/// per host for up to its read timeout.
const READS: usize = 16;

static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS);

/// Lines read when the request does not say (osapi's default).
const DEFAULT_LINES: u32 = 100;

/// The query of the route, as osapi's spec has it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// The newest this many entries of each host: 1 to 10000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    #[serde(default)]
    pub lines: Option<String>,
    /// Only entries since: a duration before now (`1h`, `30min`), an RFC
    /// 3339 time, a date and time on the host's clock (`2026-01-01
    /// 00:00:00`), `today` or `yesterday`.
    #[serde(default)]
    pub since: Option<String>,
    /// Only entries at this priority or more urgent: emerg, alert, crit,
    /// err, warning, notice, info, debug (or 0 to 7).
    #[serde(default)]
    pub priority: Option<String>,
}

/// One host's result (osapi's `LogResultEntry`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogResultEntry {
    /// The host's inventory name.
    pub hostname: String,
    /// `ok`, or `failed` when the host could not be reached or read.
    pub status: Status,
    /// Its entries, oldest first (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub entries: Option<Vec<LogEntry>>,
    /// Why `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// osapi's `LogCollectionResponse`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogCollectionResponse {
    /// One per host, in inventory order.
    pub results: Vec<LogResultEntry>,
}

impl From<HostLogs> for LogResultEntry {
    fn from(h: HostLogs) -> Self {
        let ok = h.status == Status::Ok;
        LogResultEntry {
            hostname: h.hostname,
            status: h.status,
            entries: ok.then_some(h.entries),
            error: h.error,
        }
    }
}

/// `GET /api/node/{hostname}/log/unit/{name}`: a unit's journal on the
/// targeted hosts, in osapi's shape (any key; `targets` as for `/node`).
#[utoipa::path(get, path = "/api/node/{hostname}/log/unit/{name}",
    params(
        ("hostname" = String, Path, description = "hostname, `_any`, `_all`, `key:value` or any selector (percent-encoded)"),
        ("name" = String, Path, description = "unit name; a bare name gets `.service`"),
        LogParams),
    responses(
        (status = 200, description = "each host's entries; a host that could not be reached or read is `failed` with its `error`", body = LogCollectionResponse),
        (status = 400, description = "a bad target, unit name, `lines`, `since` or `priority`", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no host that answered knows the unit, nor has entries of it", body = ApiError),
        (status = 429, description = "too many log reads in flight; retry after `Retry-After`", body = ApiError),
        (status = 500, body = ApiError)),
    security(("bearer" = [])), tag = "osapi")]
pub async fn unit_log(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((hostname, name)): Path<(String, String)>,
    q: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<LogCollectionResponse>, ApiError> {
    caller.require(Role::Read)?;
    let q = query(q)?;
    let lines = match q.lines.as_deref() {
        Some(raw) => parse_lines(raw).map_err(|m| ApiError::bad_request(format!("lines: {m}")))?,
        None => DEFAULT_LINES,
    };
    let wanted = LogQuery::parse(&name, lines, q.since.as_deref(), q.priority.as_deref())
        .map_err(ApiError::bad_request)?;
    let sel = selector(&hostname)?;
    let loaded = state.loaded();
    // As the `/node` reads: `_any` picks among the key's hosts; any other
    // selection must lie inside them.
    let hosts = if sel.is_any() {
        let mine = caller.inventory(&loaded.inventory);
        mine.hosts.into_iter().filter(|h| sel.matches(h)).collect()
    } else {
        let hosts = crate::engine::live::select_hosts(&loaded.inventory, Some(&hostname))
            .map_err(|e| caller.selection(e))?;
        caller.check_hosts(hosts.iter())?;
        hosts
    };
    let digest = loaded.inventory.digest.clone();
    drop(loaded);
    if hosts.is_empty() {
        return Err(caller.selection(crate::model::error::Error::Usage(format!(
            "target `{hostname}` matches no host"
        ))));
    }
    let _permit = IN_FLIGHT.try_acquire().map_err(|_| {
        ApiError::busy(format!(
            "{READS} log reads are in flight; retry in a second"
        ))
    })?;
    let results = state
        .executor
        .logs(&digest, hosts, wanted.clone(), sel.is_any())
        .await;
    let answered: Vec<&HostLogs> = results.iter().filter(|h| h.status == Status::Ok).collect();
    if !answered.is_empty() && answered.iter().all(|h| h.unit_unknown) {
        return Err(ApiError::not_found(format!(
            "no unit `{}` on {}, and no journal entries of it",
            wanted.unit,
            answered
                .iter()
                .map(|h| h.hostname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Json(LogCollectionResponse {
        results: results.into_iter().map(LogResultEntry::from).collect(),
    }))
}
