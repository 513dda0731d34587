//! The plan's walk: each step on each host predicted from facts, with the
//! same decisions the executor makes.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::engine::job::Job;
use crate::engine::plan::step_plan;
use crate::engine::plan::HostChanges;
use crate::engine::plan::ModuleChecks;
use crate::engine::plan::Plan;
use crate::engine::plan::PlanLabels;
use crate::engine::plan::PlannedResult;
use crate::engine::plan::Source;
use crate::engine::plan::StepPlan;
use crate::engine::plan::Summary;
use crate::engine::plan::UnitChange;
use crate::engine::plan::HOST_DOC;
use crate::model::decide::{
    batch_size, failure_text, group_batch_size, pick_any, refuse_protected, Candidate,
    FailureLedger,
};
use crate::model::error::{Error, Result};
use crate::model::expand::{goal_of, HostTask};
use crate::model::facts::{Facts, HostFacts, UnitFacts};
use crate::model::maintenance::{
    decide_maintenance, MaintenanceGoal, MaintenanceState, HOST_SCOPE,
};
use crate::model::outcome::{Failure, Outcome, SkipReason, Status};
use crate::model::playbook::module::ScriptModule;
use crate::model::playbook::{Group, Operation, Step, UnitFileGoal};
use crate::model::secret::Secrets;
use crate::model::service::{decide_service, Action};
use crate::model::unit::UnitName;
use crate::model::unitfile::{decide_unit, predict, UnitFileWant};

/// Record a step's actions against a unit of a host, for the diff.
fn note_actions(
    list: &mut Vec<(UnitName, Vec<String>)>,
    unit: &UnitName,
    actions: &[Action],
    step: &str,
) {
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

/// State lines beyond active/enabled: the maintenance flag of the unit (or
/// the host, for the host entry) and, for units a `unit:` step touches,
/// the file's content line by line; secret values shown as their markers
/// (the file written to the host keeps them).
fn extra_lines(
    unit: &UnitName,
    m: &MaintenanceState,
    file: Option<Option<String>>,
    secrets: &Secrets,
) -> Vec<String> {
    let mut v = Vec::new();
    let flag = if unit.as_str() == HOST_SCOPE {
        Some(m.host.as_ref())
    } else {
        m.units.get(unit.as_str()).map(Some)
    };
    match flag {
        Some(Some(f)) => v.push(format!("  maintenance: on ({})", secrets.redact(&f.reason))),
        Some(None) => v.push("  maintenance: off".to_string()),
        None => {}
    }
    match file {
        Some(Some(text)) => {
            v.push(format!(
                "  file: {}",
                crate::model::unitfile::unit_path(unit)
            ));
            // Redacted whole, so that a secret spanning lines is hidden too.
            v.extend(secrets.redact(&text).lines().map(|l| format!("    | {l}")));
        }
        Some(None) => v.push(format!(
            "  file: {} (absent)",
            crate::model::unitfile::unit_path(unit)
        )),
        None => {}
    }
    v
}

/// Predict every step × host result by running the shared decisions over
/// the facts, threading each unit's predicted state through the DAG.
pub fn simulate(job: &Job, facts: &Facts, labels: PlanLabels<'_>) -> Result<Plan> {
    simulate_with_checks(job, facts, labels, &ModuleChecks::new())
}

/// [`simulate`], with the check-mode reports of script modules.
pub fn simulate_with_checks(
    job: &Job,
    facts: &Facts,
    labels: PlanLabels<'_>,
    checks: &ModuleChecks,
) -> Result<Plan> {
    let host_facts = facts_per_host(job, facts)?;
    let mut sim = Simulation::new(job, host_facts);
    sim.checks = checks;
    let mut steps = Vec::with_capacity(job.playbook.steps.len());
    let mut groups_done = std::collections::HashSet::new();
    for &si in job.dag.order() {
        match &job.playbook.steps[si].group {
            Some(g) => {
                if groups_done.insert(g.call.clone()) {
                    steps.extend(sim.group(g)?);
                }
            }
            None => steps.push(sim.step(si)?),
        }
    }
    let hosts = sim.host_changes();
    let mut summary = sim.summary;
    summary.hosts = steps
        .iter()
        .flat_map(|s| s.results.iter().map(|r| &*r.hostname))
        .collect::<BTreeSet<_>>()
        .len();
    let (pb, inv) = (&job.playbook, &job.inventory);
    Ok(Plan {
        schema: "drover.plan/1",
        name: pb.name.clone(),
        playbook: Source {
            path: pb.path.display().to_string(),
            digest: pb.digest.clone(),
        },
        inventory: Source {
            path: inv.path.display().to_string(),
            digest: inv.digest.clone(),
        },
        facts_source: labels.facts_source.to_string(),
        facts_collected_at: facts.collected_at.clone(),
        limit: labels.limit.map(str::to_string),
        inputs: Vec::new(),
        facts: None,
        steps,
        hosts,
        summary,
    })
}

/// The inputs besides the playbook and the inventory that decide what apply
/// does: the unit templates the playbook read, the files of a directory
/// inventory (each, beside the directory's digest), the ssh_config files the
/// inventory names (which choose where a host name really leads), and the
/// unit file content rendered for each host (`HOST:UNIT (rendered)`).
pub fn other_inputs(job: &Job) -> Vec<crate::model::Input> {
    let mut inputs = job.playbook.inputs.clone();
    inputs.extend(job.inventory.inputs.iter().cloned());
    for ex in job.expanded.iter().filter(|ex| ex.reads_file) {
        for t in &ex.tasks {
            if let Some(content) = &t.content {
                inputs.push(crate::model::Input {
                    path: format!("{}:{} (rendered)", job.inventory.hosts[t.host].name, t.unit),
                    digest: crate::model::digest(content.as_bytes()),
                });
            }
        }
    }
    let configs: BTreeSet<&std::path::Path> = job
        .inventory
        .hosts
        .iter()
        .filter_map(|h| h.ssh_config.as_deref())
        .collect();
    for path in configs {
        // Bounded like every file drover reads; a missing file is recorded
        // as such, so that creating it later counts as a change too.
        let digest = crate::model::yaml::read_bounded(path, "ssh_config")
            .map(|text| crate::model::digest(text.as_bytes()))
            .unwrap_or_else(|_| "absent".into());
        inputs.push(crate::model::Input {
            path: path.display().to_string(),
            digest,
        });
    }
    inputs
}

/// Every inventory host's facts, or an error naming the host without any.
fn facts_per_host<'a>(job: &Job, facts: &'a Facts) -> Result<Vec<&'a HostFacts>> {
    let inv = &job.inventory;
    inv.hosts
        .iter()
        .map(|h| {
            facts.hosts.get(&h.name).ok_or_else(|| {
                Error::invalid(
                    "facts file",
                    format!("hosts.{}", h.name),
                    format!(
                        "no facts for host `{}` of the inventory; collect them with `drover facts -i {} --out FILE`",
                        h.name,
                        inv.path.display()
                    ),
                    None,
                )
            })
        })
        .collect()
}

/// The predicted state of the fleet as the plan walks the DAG.
struct Simulation<'a> {
    job: &'a Job,
    facts: Vec<&'a HostFacts>,
    /// Predicted unit state per host, starting from facts. A host touches
    /// few units, so a short list per host beats hashing.
    units: Vec<Vec<(UnitName, UnitFacts)>>,
    /// Unit files as the run changes them (`unit:` steps).
    files: Vec<Vec<(UnitName, Option<Arc<str>>)>>,
    /// Maintenance flags as the run changes them.
    maint: Vec<MaintenanceState>,
    /// Per host, the units touched and the actions on them, for the diff.
    touched: Vec<Vec<(UnitName, Vec<String>)>>,
    book: FailureLedger,
    stamp: String,
    /// Shared names: half a million results must not mean a million strings.
    names: Vec<Arc<str>>,
    summary: Summary,
    checks: &'a ModuleChecks,
    /// Per host, script module entries for the diff.
    modules: Vec<Vec<UnitChange>>,
}

static NO_CHECKS: std::sync::LazyLock<ModuleChecks> = std::sync::LazyLock::new(ModuleChecks::new);

impl<'a> Simulation<'a> {
    fn new(job: &'a Job, facts: Vec<&'a HostFacts>) -> Self {
        let n = job.inventory.hosts.len();
        Simulation {
            job,
            maint: facts
                .iter()
                .map(|hf| MaintenanceState::of_facts(hf))
                .collect(),
            facts,
            units: vec![Vec::new(); n],
            files: vec![Vec::new(); n],
            touched: vec![Vec::new(); n],
            book: FailureLedger::new(n),
            stamp: crate::model::now_rfc3339(),
            names: job
                .inventory
                .hosts
                .iter()
                .map(|h| Arc::from(h.name.as_str()))
                .collect(),
            summary: Summary::default(),
            checks: &NO_CHECKS,
            modules: vec![Vec::new(); n],
        }
    }

    /// A module call with `serial`: batch by batch through all its steps,
    /// as apply runs it (see `run_group` in the executor).
    fn group(&mut self, g: &Group) -> Result<Vec<StepPlan>> {
        let job = self.job;
        let Some(&first) = g.steps.first() else {
            return Ok(Vec::new());
        };
        let (hosts, picked) = self.step_hosts(first);
        let size = group_batch_size(g, hosts.len());
        let ids: Vec<Arc<str>> = g
            .steps
            .iter()
            .map(|&si| Arc::from(job.playbook.steps[si].id.as_str()))
            .collect();
        let mut results: Vec<Vec<PlannedResult>> = vec![Vec::new(); g.steps.len()];
        let mut failed = BTreeSet::new();
        for (b, batch) in hosts.chunks(size).enumerate() {
            for (k, &si) in g.steps.iter().enumerate() {
                let aborted = self.book.before_batch();
                for &h in batch {
                    if job.expanded[si].task(h).is_none() {
                        continue;
                    }
                    let r = self.host(si, h, b + 1, &ids[k], aborted.clone())?;
                    if r.status == Status::Failed {
                        failed.insert(h);
                        self.book.host_failed(h, &job.playbook.steps[si].id);
                    }
                    self.summary.count(r.status, r.changed);
                    results[k].push(r);
                }
            }
            if self.book.before_batch().is_none() {
                self.book.after_group_batch(g, failed.len(), hosts.len());
            }
        }
        Ok(g.steps
            .iter()
            .zip(results)
            .map(|(&si, results)| step_plan(job, si, picked.clone(), size, results))
            .collect())
    }

    /// A script module: its check-mode report when the plan ran one, else
    /// "will run; cannot predict".
    fn script(&mut self, si: usize, h: usize, m: &ScriptModule) -> (Outcome, Vec<Action>) {
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
        self.modules[h].push(UnitChange {
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

    /// One step over its hosts, batch by batch, as apply runs it.
    fn step(&mut self, si: usize) -> Result<StepPlan> {
        let job = self.job;
        let step = &job.playbook.steps[si];
        let (hosts, picked) = self.step_hosts(si);
        let size = batch_size(step, hosts.len());
        let step_id: Arc<str> = Arc::from(step.id.as_str());
        let mut results = Vec::with_capacity(hosts.len());
        let mut failed_here = 0usize;
        for (b, batch) in hosts.chunks(size).enumerate() {
            let aborted = self.book.before_batch();
            for &h in batch {
                let r = self.host(si, h, b + 1, &step_id, aborted.clone())?;
                if r.status == Status::Failed {
                    failed_here += 1;
                    self.book.host_failed(h, &step.id);
                }
                self.summary.count(r.status, r.changed);
                results.push(r);
            }
            if aborted.is_none() {
                self.book.after_batch(step, failed_here, hosts.len());
            }
        }
        let batch_size = if step.serial.is_some() { size } else { 0 };
        Ok(step_plan(job, si, picked, batch_size, results))
    }

    /// The hosts a step works on: its fixed targets plus one `_any` pick
    /// per group, chosen as apply chooses.
    fn step_hosts(&self, si: usize) -> (Vec<usize>, Vec<String>) {
        let job = self.job;
        let step = &job.playbook.steps[si];
        let ex = &job.expanded[si];
        let candidate = |h: usize| Candidate {
            reachable: self.facts[h].reachable,
            in_maintenance: self.maint[h].host.is_some(),
            failed: self.book.failed_at(h).is_some(),
            protected: ex.task(h).is_some_and(|t| {
                refuse_protected(step, t, &job.inventory.hosts[h], false).is_some()
            }),
        };
        let mut selected: BTreeSet<usize> = ex.targets.fixed.iter().copied().collect();
        let mut picked = Vec::new();
        for g in &ex.targets.any {
            if let Some(h) = pick_any(g, candidate) {
                picked.push(job.inventory.hosts[h].name.clone());
                selected.insert(h);
            }
        }
        (selected.into_iter().collect(), picked)
    }

    /// One host in one step: the checks in apply's order, then the module.
    fn host(
        &mut self,
        si: usize,
        h: usize,
        batch: usize,
        step_id: &Arc<str>,
        aborted: Option<SkipReason>,
    ) -> Result<PlannedResult> {
        let job = self.job;
        let step = &job.playbook.steps[si];
        let host = &job.inventory.hosts[h];
        let task = job.expanded[si].task(h).ok_or_else(|| {
            Error::Internal(format!(
                "no task for host {} in step {}",
                host.name, step.id
            ))
        })?;
        let hf = self.facts[h];
        let skip = aborted.or_else(|| self.book.before_step_host(step, h, task.when));
        let (outcome, actions) = if let Some(why) = skip {
            (Outcome::Skipped(why), Vec::new())
        } else if let Some(refused) = refuse_protected(step, task, host, false) {
            (Outcome::failed(refused), Vec::new())
        } else if !hf.reachable {
            let why = hf.error.as_deref().unwrap_or("no connection").to_string();
            (Outcome::failed(Failure::Unreachable(why)), Vec::new())
        } else if let Some(why) = self.maintenance_skip(step, h, task) {
            (Outcome::Skipped(why), Vec::new())
        } else {
            match &step.operation {
                Operation::Script(m) => self.script(si, h, m),
                Operation::Maintenance { enable, .. } => self.maintenance(step, h, task, *enable),
                Operation::Unit { state, .. } => self.unit_file(step, h, task, *state)?,
                Operation::Service { .. } => self.service(step, h, task)?,
            }
        };
        Ok(PlannedResult {
            hostname: self.names[h].clone(),
            status: outcome.status(),
            name: match &step.operation {
                Operation::Script(m) => m.name.clone(),
                _ => task.unit.to_string(),
            },
            changed: outcome.changed(),
            // A skip or failure may quote a rendered value (a maintenance
            // reason, a host's unreachable text).
            error: outcome
                .error()
                .map(|e| job.playbook.secrets.redact_string(e)),
            kind: outcome.kind(),
            step: step_id.clone(),
            actions,
            batch,
        })
    }

    fn maintenance_skip(&self, step: &Step, h: usize, task: &HostTask) -> Option<SkipReason> {
        let exempt =
            step.ignore_maintenance || matches!(step.operation, Operation::Maintenance { .. });
        (!exempt)
            .then(|| self.maint[h].skip_reason(task.unit.as_str()))
            .flatten()
    }

    fn maintenance(
        &mut self,
        step: &Step,
        h: usize,
        task: &HostTask,
        enable: bool,
    ) -> (Outcome, Vec<Action>) {
        let goal = MaintenanceGoal {
            enable,
            reason: failure_text(
                step,
                task.content.as_deref().unwrap_or_default(),
                self.book.failed_at(h),
            ),
            unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
        };
        let d = decide_maintenance(&goal, &self.maint[h], &self.stamp);
        let actions: Vec<Action> = d.action.into_iter().collect();
        note_actions(&mut self.touched[h], &task.unit, &actions, &step.id);
        self.maint[h] = d.after;
        (
            Outcome::Ok {
                changed: !actions.is_empty(),
            },
            actions,
        )
    }

    /// The unit's predicted state now: as an earlier step left it, else
    /// from facts.
    fn unit_now(&self, h: usize, unit: &UnitName) -> Option<&UnitFacts> {
        self.units[h]
            .iter()
            .find(|(u, _)| u == unit)
            .map(|(_, f)| f)
            .or_else(|| self.facts[h].units.get(unit.as_str()))
    }

    fn set_unit(&mut self, h: usize, unit: &UnitName, after: UnitFacts) {
        match self.units[h].iter_mut().find(|(u, _)| u == unit) {
            Some(slot) => slot.1 = after,
            None => self.units[h].push((unit.clone(), after)),
        }
    }

    fn unit_file(
        &mut self,
        step: &Step,
        h: usize,
        task: &HostTask,
        state: UnitFileGoal,
    ) -> Result<(Outcome, Vec<Action>)> {
        let hf = self.facts[h];
        let file: Option<Option<Arc<str>>> =
            match self.files[h].iter().find(|(u, _)| *u == task.unit) {
                Some((_, f)) => Some(f.clone()),
                None => hf
                    .unit_files
                    .get(task.unit.as_str())
                    .map(|f| f.as_deref().map(Arc::from)),
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
        let now = self
            .unit_now(h, &task.unit)
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
        note_actions(&mut self.touched[h], &task.unit, &actions, &step.id);
        if !actions.is_empty() {
            self.set_unit(h, &task.unit, predict(&now, &actions, present));
            let new_file = present.then_some(content);
            match self.files[h].iter_mut().find(|(u, _)| *u == task.unit) {
                Some(slot) => slot.1 = new_file,
                None => self.files[h].push((task.unit.clone(), new_file)),
            }
        } else if !self.files[h].iter().any(|(u, _)| *u == task.unit) {
            self.files[h].push((task.unit.clone(), file));
        }
        let changed = !actions.is_empty();
        Ok((Outcome::Ok { changed }, actions))
    }

    fn service(
        &mut self,
        step: &Step,
        h: usize,
        task: &HostTask,
    ) -> Result<(Outcome, Vec<Action>)> {
        let Some(now) = self.unit_now(h, &task.unit) else {
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
        note_actions(&mut self.touched[h], &task.unit, &d.actions, &step.id);
        if let Some(after) = d.after {
            self.set_unit(h, &task.unit, after);
        }
        Ok((Outcome::Ok { changed }, d.actions))
    }

    /// Per host (inventory order), the before/after of every unit it
    /// touches; the actions noted move into the result.
    fn host_changes(&mut self) -> Vec<HostChanges> {
        let touched = std::mem::take(&mut self.touched);
        let mut modules = std::mem::take(&mut self.modules);
        let mut hosts = Vec::new();
        for (h, list) in touched.into_iter().enumerate() {
            let scripts = modules.get_mut(h).map(std::mem::take).unwrap_or_default();
            if list.is_empty() && scripts.is_empty() {
                continue;
            }
            let hf = self.facts[h];
            let file_of = |unit: &UnitName| self.files[h].iter().find(|(u, _)| u == unit);
            let secrets = &self.job.playbook.secrets;
            let units = list
                .into_iter()
                .map(|(unit, actions)| UnitChange {
                    before_extra: extra_lines(
                        &unit,
                        &MaintenanceState::of_facts(hf),
                        file_of(&unit).map(|_| hf.unit_files.get(unit.as_str()).cloned().flatten()),
                        secrets,
                    ),
                    after_extra: extra_lines(
                        &unit,
                        &self.maint[h],
                        file_of(&unit).map(|(_, f)| f.as_deref().map(str::to_string)),
                        secrets,
                    ),
                    name: if unit.as_str() == HOST_SCOPE {
                        HOST_DOC.to_string()
                    } else {
                        unit.to_string()
                    },
                    before: hf
                        .units
                        .get(unit.as_str())
                        .cloned()
                        .unwrap_or_else(UnitFacts::not_found),
                    after: self
                        .unit_now(h, &unit)
                        .cloned()
                        .unwrap_or_else(UnitFacts::not_found),
                    actions,
                    module: false,
                })
                .chain(scripts)
                .collect();
            hosts.push(HostChanges {
                hostname: self.job.inventory.hosts[h].name.clone(),
                units,
            });
        }
        hosts
    }
}
