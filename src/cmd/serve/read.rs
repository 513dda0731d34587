//! Reading hosts' units for the routes: the targeted read of the node
//! API and the `--node` host's read of the Redis and Consul routes, both
//! through one joined read, and the per-host views the node API answers
//! with. The node, Redis and Consul routes share it so that their pollers
//! together read each host once per round, not once per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;

use crate::engine::status::StatusReport;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::selector;
use super::state::AppState;

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
    let read = read_targets(state, caller, target, units).await?;
    Ok(host_units(&read.report, &read.hosts))
}

/// What [`read_targets`] read: the status of the targeted hosts' units,
/// and those hosts in inventory order.
pub struct TargetRead {
    /// Every unit read, and the hosts that could not be read.
    pub report: Arc<StatusReport>,
    /// The targeted hosts the key may see.
    pub hosts: Vec<String>,
}

/// Read units of the targeted hosts the key may see (every loaded service
/// without `units`): 403 for hosts outside a scoped key's targets, 404 when
/// one unit is asked for and no host that answered knows it.
pub async fn read_targets(
    state: &AppState,
    caller: &Caller,
    target: &str,
    units: &[String],
) -> Result<TargetRead, ApiError> {
    let sel = selector(target)?;
    let loaded = state.loaded();
    let inv = if sel.is_any() {
        caller.inventory(&loaded.inventory)
    } else {
        let hosts = crate::engine::live::select_hosts(&loaded.inventory, Some(target))
            .map_err(|e| caller.selection(e))?;
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
    let report = shared_read(state, &caller.name, &scope, inv, target, units).await?;
    // One unit asked for and no host that answered knows it: 404, as for
    // an unknown job or runbook.
    let read: Vec<&String> = hosts
        .iter()
        .filter(|h| !report.errors.iter().any(|e| &e.hostname == *h))
        .collect();
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
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(TargetRead { report, hosts })
}

/// Read the units of the targeted hosts (over `inv`, the hosts the key of
/// `scope` sees), joining an identical read already in flight: under many
/// concurrent readers (a dashboard, health checks) the hosts are read once
/// per round, not once per request. A joined read started before the
/// request arrived, by less than one read's time. `who` is whose bound
/// the read counts against (a key's name).
pub(super) async fn shared_read(
    state: &AppState,
    who: &str,
    scope: &str,
    inv: crate::model::inventory::Inventory,
    target: &str,
    units: &[String],
) -> Result<Arc<StatusReport>, ApiError> {
    use futures_util::FutureExt;
    if let Some(f) = &state.live {
        if let Some(report) = super::live::answer(f, &inv, target, units) {
            return Ok(report);
        }
    }
    let what = format!(
        "{:p}\0{}\0{}\0{}",
        Arc::as_ptr(&state.loaded()),
        scope,
        target,
        units.join("\0")
    );
    let exec = state.executor.clone();
    let (target, wanted) = (target.to_string(), units.to_vec());
    state
        .reads
        .read(who, &what, move || {
            async move { exec.status(inv, Some(target), wanted).await.map(Arc::new) }.boxed()
        })
        .await
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
    let report = shared_read(state, &caller.name, "", inv, &node, units).await?;
    if let Some(e) = report.errors.first() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node unreachable",
            format!("{}: {}", e.hostname, e.error),
        ));
    }
    Ok((report, address))
}
