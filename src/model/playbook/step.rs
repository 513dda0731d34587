//! A validated step: what it targets, when it runs, and what it does.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::model::error::Position;
use crate::model::playbook::Serial;
use crate::model::playbook::ServiceState;
use crate::model::playbook::UnitFileGoal;
use crate::model::playbook::UnitSource;
use crate::model::target::Selector;

/// A validated wait gate.
#[derive(Debug, Clone, Serialize)]
pub struct Wait {
    /// Require ActiveState=active.
    pub active: bool,
    /// Template id of an HTTP URL to probe.
    pub http: Option<usize>,
    /// Template id of a `host:port` to probe.
    pub tcp: Option<usize>,
    /// Deadline for the gate.
    pub timeout: Duration,
    /// Required aggregated health level.
    pub health: Option<crate::model::health::Health>,
}

/// What a step does on each host.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Drive a unit's run state, enablement and mask.
    Service {
        /// Template id of the unit name.
        name: usize,
        /// Where the name is written, for per-host template errors.
        name_position: Position,
        /// Desired run state.
        state: Option<ServiceState>,
        /// Desired enablement.
        enabled: Option<bool>,
        /// Desired mask.
        masked: Option<bool>,
    },
    /// Set or clear a maintenance flag on the host or a unit.
    Maintenance {
        /// On or off.
        enable: bool,
        /// Template id of the reason.
        reason: Option<usize>,
        /// Template id of the unit name; None: the whole host.
        unit: Option<usize>,
        /// Where the step is written.
        name_position: Position,
    },
    /// Register (write) or deregister (remove) a unit file.
    Unit {
        /// Template id of the unit name.
        name: usize,
        /// Where the name is written.
        name_position: Position,
        /// The content.
        source: UnitSource,
        /// present or absent.
        state: UnitFileGoal,
    },
    /// Run a script module's program on the host.
    Script(Arc<crate::model::playbook::module::ScriptModule>),
}

/// A module call with `serial`: its hosts go through all the module's
/// steps batch by batch (batch 1 runs every step, then batch 2), and
/// `max_fail_percentage` counts the hosts that failed any of them.
#[derive(Debug, Clone)]
pub struct Group {
    /// The call's id.
    pub call: String,
    /// Rolling batch size over the call's hosts.
    pub serial: Serial,
    /// Abort threshold in percent, per batch over the call's hosts.
    pub max_fail_percentage: f64,
    /// The steps the call expanded into, in file order.
    pub steps: Vec<usize>,
}

impl Operation {
    /// The module's name as a playbook writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Service { .. } => "service",
            Operation::Maintenance { .. } => "maintenance",
            Operation::Unit { .. } => "unit",
            Operation::Script(_) => "script",
        }
    }
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Position in the playbook's step list (module calls expanded).
    pub index: usize,
    /// Position in the file it is written in (the playbook, or a module),
    /// for field paths in errors.
    pub file_index: usize,
    /// Unique id.
    pub id: String,
    /// Where the id is written, for errors.
    pub position: Position,
    /// Union of these selectors.
    pub targets: Vec<Selector>,
    /// Explicit dependencies as written (None: the previous step).
    pub needs: Option<Vec<String>>,
    /// Template id of the `when` expression.
    pub when: Option<usize>,
    /// Where `when` is written.
    pub when_position: Option<Position>,
    /// Rolling batch size.
    pub serial: Option<Serial>,
    /// Abort threshold in percent (default 100: never abort).
    pub max_fail_percentage: f64,
    /// Gate.
    pub wait: Option<Wait>,
    /// Ignore maintenance.
    pub ignore_maintenance: bool,
    /// The operation.
    pub operation: Operation,
    /// The module call with `serial` this step belongs to, if any.
    pub group: Option<Arc<Group>>,
    /// An `on_failure` step of this module call: it runs only on hosts that
    /// failed one of the call's steps.
    pub on_failure: Option<String>,
    /// `group_by`/`max_unavailable`: its own, or its module call's.
    pub limit: Option<Arc<crate::model::playbook::Limit>>,
    /// An `always` step of this module call (its id): it runs on every
    /// host that began the call, however the run ends.
    pub always: Option<String>,
    /// This step's own bound on one host's work (an `always` step's);
    /// None: the run's step timeout.
    pub timeout: Option<Duration>,
    /// For a module's step: where the module was called from, added to
    /// errors found later (per-host templates, targets).
    pub called_from: Option<String>,
}
