//! One step on one host: its context ([`HostStep`]), what it yields
//! ([`Done`], [`Failed`]) and the state read it carries to the next step
//! ([`Reading`]). Shared by the host worker and the service step.

use std::time::{Duration, Instant};

use crate::engine::execute::Do;
use crate::model::expand::HostTask;
use crate::model::facts::UnitFacts;
use crate::model::journal::Intent;
use crate::model::now_rfc3339;
use crate::model::outcome::Failure;
use crate::model::playbook::Step;
use crate::model::service::{join_actions, Action, ServiceGoal};
use crate::model::unit::UnitName;
use crate::remote::systemd::StateRead;

/// One host in one step: what every phase of its work needs.
pub(super) struct HostStep<'r, 'a> {
    pub(super) run: &'r Do<'a>,
    /// The step's index.
    pub(super) si: usize,
    pub(super) h: usize,
    pub(super) step: &'r Step,
    pub(super) task: &'r HostTask,
    /// The step the host failed at, if it did (an `on_failure` text).
    pub(super) failed_at: Option<String>,
}

impl HostStep<'_, '_> {
    /// Write to the journal, before a change is made, what is about to
    /// happen: a resume reads it to tell whether the change happened.
    pub(super) fn intend(&self, unit: &str, action: String, invocation_id: &str) {
        if let Some(j) = self.run.spec.journal {
            j.intent(Intent {
                step: self.step.id.clone(),
                host: self.run.job.inventory.hosts[self.h].name.clone(),
                unit: unit.to_string(),
                action,
                invocation_id: invocation_id.to_string(),
                at: now_rfc3339(),
            });
        }
    }

    /// The change that was under way here when the run being resumed
    /// stopped.
    pub(super) fn in_flight(&self) -> Option<&Intent> {
        self.run.spec.carry?.in_flight(self.si, self.h)
    }
}

pub(super) struct Done {
    pub(super) changed: bool,
    pub(super) action: String,
    /// What a script module said.
    pub(super) msg: Option<String>,
    /// The next step's unit, read together with this step's last reading.
    pub(super) next: Option<Reading>,
}

pub(super) struct Failed {
    pub(super) changed: bool,
    pub(super) action: String,
    pub(super) failure: Failure,
}

/// A unit's state read at the end of a host's step for that host's next
/// step (`strategy: free`): one round trip serves both.
pub(crate) struct Reading {
    pub(super) unit: UnitName,
    pub(super) what: StateRead,
    pub(super) facts: UnitFacts,
    pub(super) at: Instant,
}

/// How old a carried reading may be and still stand in for the next step's
/// own. It was taken by the same connection with no drover action since;
/// normally the next step starts microseconds later, but waiting for a
/// `forks` slot could take longer, and then the step reads again.
pub(super) const CARRY_FRESH: Duration = Duration::from_millis(250);

/// What a service step reads before deciding: enablement only when the
/// step is about it (less bus traffic, and the same reading before and
/// after); the InvocationID is added once the step knows it will act.
pub(super) fn reads_for(goal: &ServiceGoal) -> StateRead {
    StateRead {
        file_state: goal.enabled.is_some() || goal.masked.is_some(),
        invocation: false,
    }
}

pub(super) fn joined(actions: &[Action]) -> String {
    join_actions(actions, "none")
}
