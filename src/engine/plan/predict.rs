//! The plan's [`HostAction`]: what a step will do on a host, predicted
//! from facts with the module decisions apply uses, and each unit's
//! predicted state threaded from step to step. Nothing here waits: the
//! walk over it runs to its end in one go.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::job::Job;
use crate::engine::plan::ModuleChecks;
use crate::engine::plan::PlannedResult;
use crate::engine::plan::Summary;
use crate::engine::plan::UnitChange;
use crate::engine::walk::{Finished, HostAction, Presence, Work};
use crate::model::decide::failure_text;
use crate::model::error::{Error, Result};
use crate::model::expand::{goal_of, HostTask};
use crate::model::facts::{HostFacts, UnitFacts};
use crate::model::maintenance::{
    decide_maintenance, MaintenanceGoal, MaintenanceState, HOST_SCOPE,
};
use crate::model::outcome::{Failure, Outcome, SkipReason};
use crate::model::playbook::module::ScriptModule;
use crate::model::playbook::{Operation, Step, UnitFileGoal};
use crate::model::report::JobResult;
use crate::model::service::{decide_service, Action};
use crate::model::unit::UnitName;
use crate::model::unitfile::{decide_unit, predict, UnitFileWant};

/// Predicts each host's steps from facts.
pub(super) struct Predict<'a> {
    job: &'a Job,
    facts: Vec<&'a HostFacts>,
    checks: &'a ModuleChecks,
    stamp: String,
    /// Shared names: half a million results must not mean a million strings.
    names: Vec<Arc<str>>,
    step_ids: Vec<Arc<str>>,
    fleet: Mutex<Fleet>,
}

/// The predicted state of the fleet as the walk goes, and what it predicted.
pub(super) struct Fleet {
    /// Predicted unit state per host, starting from facts. A host touches
    /// few units, so a short list per host beats hashing.
    pub(super) units: Vec<Vec<(UnitName, UnitFacts)>>,
    /// Unit files as the run changes them (`unit:` steps).
    pub(super) files: Vec<Vec<(UnitName, Option<Arc<str>>)>>,
    /// Maintenance flags as the run changes them.
    pub(super) maint: Vec<MaintenanceState>,
    /// Per host, the units touched and the actions on them, for the diff.
    pub(super) touched: Vec<Vec<(UnitName, Vec<String>)>>,
    /// Per host, script module entries for the diff.
    pub(super) modules: Vec<Vec<UnitChange>>,
    pub(super) summary: Summary,
    /// Per step, its results with their host.
    pub(super) results: Vec<Vec<(usize, PlannedResult)>>,
}

impl Fleet {
    /// The unit's predicted state now: as an earlier step left it, else
    /// from facts.
    pub(super) fn unit_now<'f>(
        &'f self,
        facts: &'f HostFacts,
        h: usize,
        unit: &UnitName,
    ) -> Option<&'f UnitFacts> {
        self.units[h]
            .iter()
            .find(|(u, _)| u == unit)
            .map(|(_, f)| f)
            .or_else(|| facts.units.get(unit.as_str()))
    }

    fn set_unit(&mut self, h: usize, unit: &UnitName, after: UnitFacts) {
        match self.units[h].iter_mut().find(|(u, _)| u == unit) {
            Some(slot) => slot.1 = after,
            None => self.units[h].push((unit.clone(), after)),
        }
    }

    /// Record a step's actions against a unit of a host, for the diff.
    fn note_actions(&mut self, h: usize, unit: &UnitName, actions: &[Action], step: &str) {
        let list = &mut self.touched[h];
        let i = match list.iter().position(|(u, _)| u == unit) {
            Some(i) => i,
            None => {
                list.push((unit.clone(), Vec::new()));
                list.len() - 1
            }
        };
        for a in actions {
            list[i].1.push(format!("{a} ({step})"));
        }
    }
}

impl<'a> Predict<'a> {
    pub(super) fn new(job: &'a Job, facts: Vec<&'a HostFacts>, checks: &'a ModuleChecks) -> Self {
        let n = job.inventory.hosts.len();
        Predict {
            job,
            fleet: Mutex::new(Fleet {
                maint: facts
                    .iter()
                    .map(|hf| MaintenanceState::of_facts(hf))
                    .collect(),
                units: vec![Vec::new(); n],
                files: vec![Vec::new(); n],
                touched: vec![Vec::new(); n],
                modules: vec![Vec::new(); n],
                summary: Summary::default(),
                // Sized up front: growing them moved every result made
                // so far, a large struct, at each doubling.
                results: job
                    .expanded
                    .iter()
                    .map(|ex| Vec::with_capacity(ex.tasks.len()))
                    .collect(),
            }),
            facts,
            checks,
            stamp: crate::model::now_rfc3339(),
            names: job
                .inventory
                .hosts
                .iter()
                .map(|h| Arc::from(h.name.as_str()))
                .collect(),
            step_ids: job
                .playbook
                .steps
                .iter()
                .map(|s| Arc::from(s.id.as_str()))
                .collect(),
        }
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The facts and what the walk predicted from them.
    pub(super) fn into_parts(self) -> (Vec<&'a HostFacts>, Fleet) {
        let fleet = self.fleet.into_inner().unwrap_or_else(|p| p.into_inner());
        (self.facts, fleet)
    }

    /// A script module: its check-mode report when the plan ran one, else
    /// "will run; cannot predict".
    fn script(
        &self,
        f: &mut Fleet,
        si: usize,
        h: usize,
        m: &ScriptModule,
    ) -> (Outcome, Vec<Action>) {
        let step = &self.job.playbook.steps[si];
        let secrets = &self.job.playbook.secrets;
        let (outcome, before, after) = match self.checks.get(&(si, h)) {
            Some(rep) if rep.failed => (
                Outcome::Failed {
                    failure: Failure::Error(rep.msg.clone()),
                    changed: false,
                },
                Vec::new(),
                vec![format!("  check failed: {}", secrets.redact(&rep.msg))],
            ),
            Some(rep) => {
                let lines = |t: &str| -> Vec<String> {
                    secrets
                        .redact(t)
                        .lines()
                        .map(|l| format!("    | {l}"))
                        .collect()
                };
                let (b, a) = match &rep.diff {
                    Some((b, a)) => (lines(b), lines(a)),
                    None => (Vec::new(), Vec::new()),
                };
                let mut after = a;
                if !rep.msg.is_empty() {
                    after.push(format!("  check: {}", secrets.redact(&rep.msg)));
                }
                (
                    Outcome::Ok {
                        changed: rep.changed,
                    },
                    b,
                    after,
                )
            }
            None => (
                Outcome::Ok { changed: true },
                Vec::new(),
                vec!["  will run; cannot predict".to_string()],
            ),
        };
        let actions = if outcome.changed() || self.checks.get(&(si, h)).is_none() {
            vec![Action::Run]
        } else {
            Vec::new()
        };
        f.modules[h].push(UnitChange {
            name: format!("module {} ({})", m.name, step.id),
            before: UnitFacts::not_found(),
            after: UnitFacts::not_found(),
            actions: actions
                .iter()
                .map(|a| format!("{a} ({})", step.id))
                .collect(),
            before_extra: before,
            after_extra: after,
            module: true,
        });
        (outcome, actions)
    }

    fn maintenance(&self, f: &mut Fleet, w: &Work<'_>, enable: bool) -> (Outcome, Vec<Action>) {
        let (step, h, task) = (w.step, w.h, w.task);
        let goal = MaintenanceGoal {
            enable,
            reason: failure_text(
                step,
                task.content.as_deref().unwrap_or_default(),
                w.failed_at.as_deref(),
            ),
            unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
        };
        let d = decide_maintenance(&goal, &f.maint[h], &self.stamp);
        let actions: Vec<Action> = d.action.into_iter().collect();
        f.note_actions(h, &task.unit, &actions, &step.id);
        f.maint[h] = d.after;
        (
            Outcome::Ok {
                changed: !actions.is_empty(),
            },
            actions,
        )
    }

    fn unit_file(
        &self,
        f: &mut Fleet,
        step: &Step,
        h: usize,
        task: &HostTask,
        state: UnitFileGoal,
    ) -> Result<(Outcome, Vec<Action>)> {
        let hf = self.facts[h];
        let file: Option<Option<Arc<str>>> = match f.files[h].iter().find(|(u, _)| *u == task.unit)
        {
            Some((_, file)) => Some(file.clone()),
            None => hf
                .unit_files
                .get(task.unit.as_str())
                .map(|file| file.as_deref().map(Arc::from)),
        };
        let Some(file) = file else {
            let host = &self.job.inventory.hosts[h].name;
            return Err(Error::invalid(
                "facts file",
                format!("hosts.{host}.unit_files"),
                format!(
                    "no content of unit file {} on host `{host}`; collect facts again with a live plan or `drover facts` for that unit",
                    task.unit
                ),
                None,
            ));
        };
        let now = f
            .unit_now(hf, h, &task.unit)
            .cloned()
            .unwrap_or_else(UnitFacts::not_found);
        let present = state == UnitFileGoal::Present;
        let content = task.content.clone().unwrap_or_else(|| Arc::from(""));
        let want = if present {
            UnitFileWant::Present(&content)
        } else {
            UnitFileWant::Absent
        };
        let actions = decide_unit(&want, file.as_deref(), &now);
        f.note_actions(h, &task.unit, &actions, &step.id);
        if !actions.is_empty() {
            f.set_unit(h, &task.unit, predict(&now, &actions, present));
            let new_file = present.then_some(content);
            match f.files[h].iter_mut().find(|(u, _)| *u == task.unit) {
                Some(slot) => slot.1 = new_file,
                None => f.files[h].push((task.unit.clone(), new_file)),
            }
        } else if !f.files[h].iter().any(|(u, _)| *u == task.unit) {
            f.files[h].push((task.unit.clone(), file));
        }
        let changed = !actions.is_empty();
        Ok((Outcome::Ok { changed }, actions))
    }

    fn service(
        &self,
        f: &mut Fleet,
        step: &Step,
        h: usize,
        task: &HostTask,
    ) -> Result<(Outcome, Vec<Action>)> {
        let Some(now) = f.unit_now(self.facts[h], h, &task.unit) else {
            let host = &self.job.inventory.hosts[h].name;
            return Err(Error::invalid(
                "facts file",
                format!("hosts.{host}.units"),
                format!(
                    "no facts for unit {} on host `{host}`; collect facts again (`drover facts`) so they include it",
                    task.unit
                ),
                None,
            ));
        };
        let d = decide_service(task.unit.as_str(), &goal_of(&step.operation), now);
        let changed = !d.actions.is_empty();
        if let Some(failure) = d.error {
            return Ok((Outcome::Failed { failure, changed }, d.actions));
        }
        // A failed decision touches nothing; a good one is noted even when
        // it does nothing, so the unit shows in the host's diff.
        f.note_actions(h, &task.unit, &d.actions, &step.id);
        if let Some(after) = d.after {
            f.set_unit(h, &task.unit, after);
        }
        Ok((Outcome::Ok { changed }, d.actions))
    }
}

impl HostAction for Predict<'_> {
    type Conn = ();
    type Lane = ();
    type Detail = Vec<Action>;
    type Error = Error;
    const NEVER_WAITS: bool = true;

    fn presence(&self, h: usize) -> Presence {
        Presence {
            reachable: self.facts[h].reachable,
            in_maintenance: self.fleet().maint[h].host.is_some(),
        }
    }

    /// The facts are all there is to know.
    async fn survey(&self, _hosts: &[usize]) {}

    /// Whether another job or a failing check takes a host out of service
    /// is known only when a batch starts; the plan shows the limit.
    async fn in_service(
        &self,
        _h: usize,
        _unit: &UnitName,
        _member_only: bool,
    ) -> std::result::Result<(), String> {
        Ok(())
    }

    async fn connect(&self, h: usize) -> std::result::Result<(), Failure> {
        let hf = self.facts[h];
        if hf.reachable {
            return Ok(());
        }
        // Facts read live word a host that could not be reached as its
        // connection error does ("unreachable: connection refused: ...");
        // the failure says "unreachable: " itself, as apply's does.
        let why = hf.error.as_deref().unwrap_or("no connection");
        let why = why.strip_prefix("unreachable: ").unwrap_or(why);
        Err(Failure::Unreachable(why.to_string()))
    }

    async fn maintenance(
        &self,
        h: usize,
        unit: &UnitName,
    ) -> std::result::Result<Option<SkipReason>, String> {
        Ok(self.fleet().maint[h].skip_reason(unit.as_str()))
    }

    async fn work(
        &self,
        _conn: (),
        w: Work<'_>,
        _carried: (),
        _lane: &mut (),
    ) -> Result<(Outcome, Vec<Action>)> {
        let mut f = self.fleet();
        match &w.step.operation {
            Operation::Script(m) => Ok(self.script(&mut f, w.si, w.h, m)),
            Operation::Maintenance { enable, .. } => Ok(self.maintenance(&mut f, &w, *enable)),
            Operation::Unit { state, .. } => self.unit_file(&mut f, w.step, w.h, w.task, *state),
            Operation::Service { .. } => self.service(&mut f, w.step, w.h, w.task),
        }
    }

    fn record(&self, r: Finished<Vec<Action>>) {
        let job = self.job;
        let step = &job.playbook.steps[r.si];
        let name = match &step.operation {
            Operation::Script(m) => m.name.clone(),
            _ => job.expanded[r.si]
                .task(r.h)
                .map(|t| t.unit.to_string())
                .unwrap_or_default(),
        };
        let result = PlannedResult {
            hostname: self.names[r.h].clone(),
            status: r.outcome.status(),
            name,
            changed: r.outcome.changed(),
            // A skip or failure may quote a rendered value (a maintenance
            // reason, a host's unreachable text).
            error: r
                .outcome
                .error()
                .map(|e| job.playbook.secrets.redact_string(e)),
            kind: r.outcome.kind(),
            step: self.step_ids[r.si].clone(),
            actions: r.detail,
            batch: r.batch,
        };
        let mut f = self.fleet();
        f.summary.count(result.status, result.changed);
        f.results[r.si].push((r.h, result));
    }

    /// A result an earlier run settled: shown as it ended there, changing
    /// nothing now.
    fn carry(&self, si: usize, h: usize, batch: usize, r: &JobResult) {
        let from = r.carried_from.as_deref().unwrap_or("the journal");
        let result = PlannedResult {
            hostname: self.names[h].clone(),
            status: r.status,
            name: r.name.clone(),
            changed: false,
            error: Some(match &r.error {
                Some(e) => format!("carried over from {from}: {e}"),
                None => format!("carried over from {from}: {}", r.status),
            }),
            kind: r.kind,
            step: self.step_ids[si].clone(),
            actions: Vec::new(),
            batch,
        };
        let mut f = self.fleet();
        f.summary.count(result.status, result.changed);
        f.results[si].push((h, result));
    }

    fn release(&self, _h: usize) {}
}
