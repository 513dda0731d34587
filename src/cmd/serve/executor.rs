//! How the server's host work is reached: the reads (status of units,
//! unit logs) and the dry runs (plans from live facts) that serve asks
//! for. [`InProcess`]
//! reaches the hosts from this process with its connection pool; a server
//! that holds no SSH keys would send the same requests to the worker that
//! owns the hosts, behind the same trait.
//!
//! Running a job (apply) is reached through the job store
//! ([`crate::engine::job_store::JobStore::start`]), which owns the job
//! from its start to its report; the per-host work inside a run stays the
//! executor's walk, below this seam.

use async_trait::async_trait;

use crate::engine::events::NoEvents;
use crate::engine::job::Job;
use crate::engine::logs::HostLogs;
use crate::engine::plan::{FactsSource, PlanOptions, Planned};
use crate::engine::status::StatusReport;
use crate::model::inventory::{Host, Inventory};
use crate::model::logs::LogQuery;
use crate::remote::fanout::Reach;

use super::error::ApiError;

/// Where serve's reads and plans run.
#[async_trait]
pub trait HostExecutor: Send + Sync {
    /// The plan of `job` from the hosts' live state (a dry run); refused
    /// if it would disrupt a protected unit, unless `allow_protected`.
    /// `keep_facts`: the plan records the facts it was made on (a stored
    /// plan's drift is checked against them).
    async fn plan(&self, job: Job, allow_protected: bool, keep_facts: bool)
        -> Result<Planned, ApiError>;

    /// The state of `units` (all watched ones when empty) on the hosts of
    /// `inv` that `target` selects (all of them when None).
    async fn status(
        &self,
        inv: Inventory,
        target: Option<String>,
        units: Vec<String>,
    ) -> Result<StatusReport, ApiError>;

    /// The journal entries `q` asks for on `hosts` (with `any`, the first
    /// of them that answers), each host's failure its own result.
    async fn logs(&self, hosts: Vec<Host>, q: LogQuery, any: bool) -> Vec<HostLogs>;
}

/// Hosts reached from this process, over its pool.
pub struct InProcess {
    /// Forks, read timeout and the pool.
    pub reach: Reach,
}

#[async_trait]
impl HostExecutor for InProcess {
    async fn plan(
        &self,
        job: Job,
        allow_protected: bool,
        keep_facts: bool,
    ) -> Result<Planned, ApiError> {
        let opts = PlanOptions {
            reach: self.reach.clone(),
            limit: None,
            allow_protected,
            keep_facts,
            carry: None,
        };
        Ok(crate::engine::plan::plan(&job, FactsSource::Live, &opts, &NoEvents).await?)
    }

    async fn status(
        &self,
        inv: Inventory,
        target: Option<String>,
        units: Vec<String>,
    ) -> Result<StatusReport, ApiError> {
        let reach = self.reach.clone();
        let (report, _) =
            crate::engine::status::status(&inv, target.as_deref(), &units, reach, &NoEvents)
                .await?;
        Ok(report)
    }

    async fn logs(&self, hosts: Vec<Host>, q: LogQuery, any: bool) -> Vec<HostLogs> {
        crate::engine::logs::read_logs(&hosts, &q, self.reach.clone(), any)
            .await
            .0
    }
}
