//! The plan: what each step will do on each host, predicted from facts
//! with the same decisions apply uses ([`crate::model::decide`],
//! [`crate::model::service`], ...). Planning never changes anything; with
//! a facts file it does not even connect.

mod checks;
mod predict;
mod simulate;

pub use simulate::{other_inputs, simulate, simulate_with_checks};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::engine::events::EventSink;
use crate::engine::job::Job;
use crate::engine::plan::checks::module_checks;
use crate::model::decide::check_protected;
use crate::model::error::Result;
use crate::model::facts::{Facts, UnitFacts};
use crate::model::outcome::{Kind, Status};
use crate::model::playbook::module::ScriptReport;
use crate::model::service::Action;

/// One predicted result, in the job report's shape plus prediction detail.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedResult {
    /// Inventory name.
    pub hostname: Arc<str>,
    /// ok, failed or skipped.
    pub status: Status,
    /// The unit (a script module's name for a script module).
    pub name: String,
    /// Whether systemd state will change.
    pub changed: bool,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure or skip (as in the job report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// The step id.
    pub step: Arc<str>,
    /// Operations, in order (empty: no change).
    pub actions: Vec<Action>,
    /// Rolling batch number within the step (1-based).
    pub batch: usize,
}

/// All predicted results of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    /// Step id.
    pub id: String,
    /// Targets as written.
    pub target: Vec<String>,
    /// Ids of the steps it waits for.
    pub needs: Vec<String>,
    /// Hosts `_any` picked.
    pub picked: Vec<String>,
    /// Hosts per batch (0: all at once).
    pub batch_size: usize,
    /// `group_by`/`max_unavailable` in words: apply claims room in each
    /// batch's groups across jobs (the batches already respect it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_limit: Option<String>,
    /// The module call this step cleans up after (`always`): it runs on
    /// every host that began the call, however the run ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always: Option<String>,
    /// Results in inventory order.
    pub results: Vec<PlannedResult>,
}

/// One unit's before/after on one host, over the whole run: the diff's input.
#[derive(Debug, Clone, Serialize)]
pub struct UnitChange {
    /// The unit.
    pub name: String,
    /// State now.
    pub before: UnitFacts,
    /// State after the run.
    pub after: UnitFacts,
    /// `step: action` lines, in run order.
    pub actions: Vec<String>,
    /// Extra state lines now (maintenance flag, unit file content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_extra: Vec<String>,
    /// Extra state lines after the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_extra: Vec<String>,
    /// A script module's entry (no unit state; its lines are its diff).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub module: bool,
}

/// Check-mode reports of script modules, per (step, host): what a live
/// plan learnt by running check-capable modules with `check: true`.
pub type ModuleChecks = std::collections::HashMap<(usize, usize), ScriptReport>;

/// The name of the host-wide entry in a host's diff (maintenance).
pub const HOST_DOC: &str = "(host)";

/// The units one host touches over the run.
#[derive(Debug, Clone, Serialize)]
pub struct HostChanges {
    /// Inventory name.
    pub hostname: String,
    /// Units in the order the run first touches them.
    pub units: Vec<UnitChange>,
}

/// Where a plan's inputs came from, so a saved plan can be checked later.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// Path as given.
    pub path: String,
    /// SHA-256 of the content.
    pub digest: String,
}

/// A plan's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct PlanParams {
    /// SHA-256 of the canonical JSON of the non-secret values.
    pub digest: String,
    /// The non-secret values as bound (defaults included).
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The names of the secret parameters: never their values, which
    /// `apply --plan` needs given again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
    /// Each parameter as people read it: `name=value`, a secret one as
    /// its marker.
    #[serde(skip)]
    pub shown: Vec<String>,
}

impl PlanParams {
    /// The plan's record of a job's parameters (None: it declares none).
    pub fn of(params: &crate::model::params::Params) -> Option<PlanParams> {
        (!params.is_empty()).then(|| PlanParams {
            digest: params.digest.clone(),
            values: params.record(),
            secret: params.secret_names().map(str::to_string).collect(),
            shown: params.shown(),
        })
    }
}

/// Totals for the summary line and the exit code.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Hosts touched by some step.
    pub hosts: usize,
    /// Results that change state.
    pub changes: usize,
    /// Results that are ok without change.
    pub unchanged: usize,
    /// Skipped results.
    pub skipped: usize,
    /// Predicted failures.
    pub failed: usize,
}

/// A complete plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Format id of this document.
    pub schema: &'static str,
    /// Playbook name.
    pub name: String,
    /// The playbook file.
    pub playbook: Source,
    /// The inventory file.
    pub inventory: Source,
    /// "live" or the facts file path.
    pub facts_source: String,
    /// When the facts were read.
    pub facts_collected_at: String,
    /// `--limit`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The playbook's parameters, when it declares any: what `apply
    /// --plan` runs with, and refuses to run with others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<PlanParams>,
    /// The other files that decide what apply does (unit templates, the
    /// inventory's ssh_config files), with their digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<crate::model::Input>,
    /// The facts the plan was made on, for the hosts and units it touches
    /// (in `--out` files and json output; `apply --plan` checks drift against them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    /// Steps in execution order.
    pub steps: Vec<StepPlan>,
    /// Per host (inventory order), the units it touches.
    pub hosts: Vec<HostChanges>,
    /// Totals.
    pub summary: Summary,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        self.summary.changes > 0
    }
}

/// Inputs of [`simulate`] that only label the output.
pub struct PlanLabels<'a> {
    /// "live" or the facts file.
    pub facts_source: &'a str,
    /// `--limit` as given.
    pub limit: Option<&'a str>,
}

impl Summary {
    fn count(&mut self, status: Status, changed: bool) {
        match (status, changed) {
            (Status::Ok, true) => self.changes += 1,
            (Status::Ok, false) => self.unchanged += 1,
            (Status::Skipped, _) => self.skipped += 1,
            (Status::Failed, _) => self.failed += 1,
        }
    }
}

/// Where a plan's facts come from.
#[derive(Debug, Clone)]
pub enum FactsSource {
    /// Read live from the hosts the job touches, `forks` at a time.
    Live,
    /// Given (a facts file): the plan connects to nothing.
    Given {
        /// The facts.
        facts: Facts,
        /// What they are called in the plan ("FILE").
        label: String,
    },
}

/// Plan a job over the facts of `source`. Refuses, as apply does, a
/// step that would disrupt a protected unit unless `opts.allow_protected`.
pub async fn plan(
    job: &Job,
    source: FactsSource,
    opts: &PlanOptions,
    events: &dyn EventSink,
) -> Result<Planned> {
    check_protected(
        &job.playbook,
        &job.inventory,
        &job.expanded,
        opts.allow_protected,
    )?;
    let (facts, source, incomplete, checks) = match source {
        FactsSource::Given { facts, label } => (facts, label, false, ModuleChecks::new()),
        FactsSource::Live => {
            let (f, incomplete) =
                crate::engine::live::plan_facts(job, opts.reach.clone(), events).await;
            let checks = module_checks(job, &f, opts.reach.clone()).await;
            (f, "live".to_string(), incomplete, checks)
        }
    };
    let mut plan = simulate_with_checks(
        job,
        &facts,
        PlanLabels {
            facts_source: &source,
            limit: opts.limit.as_deref(),
        },
        &checks,
        opts.carry.as_ref(),
    )?;
    if opts.keep_facts {
        plan.facts = Some(facts_used(job, &facts));
    }
    // Read here, not in `simulate`: the drift check of `apply --plan`
    // simulates again and needs no second read of the ssh_config files.
    plan.inputs = other_inputs(job);
    Ok(Planned {
        plan,
        facts,
        incomplete,
    })
}

/// A plan with the facts it was made on.
#[derive(Debug)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The facts (given, or read live).
    pub facts: Facts,
    /// Some host's facts could not be read (a live plan is incomplete).
    pub incomplete: bool,
}

/// How to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Hosts read in parallel, and the bound on one host's read (live).
    pub reach: crate::remote::fanout::Reach,
    /// `--limit` as given (labels the plan).
    pub limit: Option<String>,
    /// Plan a job that would stop, restart or mask a protected unit
    /// instead of refusing it whole (the simulation still shows such
    /// hosts' results as refused).
    pub allow_protected: bool,
    /// Record the facts used in the plan (saved plans, json output).
    pub keep_facts: bool,
    /// Preview a retry or a resume: what an earlier run settled is shown
    /// as carried over, not planned again.
    pub carry: Option<crate::engine::carry::Carry>,
}

/// A step's plan: its id, targets and dependencies as written, with what
/// the simulation decided.
fn step_plan(
    job: &Job,
    si: usize,
    picked: Vec<String>,
    batch_size: usize,
    results: Vec<PlannedResult>,
) -> StepPlan {
    let step = &job.playbook.steps[si];
    StepPlan {
        id: step.id.clone(),
        target: step.targets.iter().map(|t| t.to_string()).collect(),
        needs: job
            .dag
            .dependencies(si)
            .iter()
            .map(|d| job.playbook.steps[*d].id.clone())
            .collect(),
        picked,
        batch_size,
        group_limit: step.limit.as_ref().map(|l| l.describe()),
        always: step.always.clone(),
        results,
    }
}

/// The facts a plan used: per host with a task, exactly the units its
/// tasks touch (what `apply --plan` re-reads and compares), with secret
/// values hidden: a host may already hold a rendered secret in a unit
/// file, and these facts are shown and saved.
pub fn facts_used(job: &Job, facts: &Facts) -> Facts {
    let mut per_host: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for ex in &job.expanded {
        for t in &ex.tasks {
            per_host.entry(t.host).or_default().insert(t.unit.as_str());
        }
    }
    let mut out = Facts {
        version: facts.version,
        collected_at: facts.collected_at.clone(),
        hosts: Default::default(),
    };
    for (h, units) in per_host {
        let name = &job.inventory.hosts[h].name;
        let Some(hf) = facts.hosts.get(name) else {
            continue;
        };
        let mut hf = hf.clone();
        hf.units.retain(|u, _| units.contains(u.as_str()));
        hf.unit_maintenance
            .retain(|u, _| units.contains(u.as_str()));
        hf.redact(&job.playbook.secrets);
        out.hosts.insert(name.clone(), hf);
    }
    out
}
