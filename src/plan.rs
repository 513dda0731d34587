//! The plan: what each step will do on each host, predicted from facts
//! with the same decision function apply uses. Planning never changes
//! anything; with a facts file it does not even connect.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::dag::Dag;
use crate::error::{Error, Result};
use crate::facts::{Facts, HostFacts, UnitFacts};
use crate::inventory::Inventory;
use crate::maintenance::{decide_maintenance, MaintenanceGoal, MaintenanceState, HOST_SCOPE};
use crate::module::{decide_service, Action, ServiceGoal};
use crate::playbook::UnitFileGoal;
use crate::playbook::{Module, Playbook, Serial, UnitSource};
use crate::target::{Resolved, Selector};
use crate::template::host_error;
use crate::unit::UnitName;
use crate::unitfile::{decide_unit, predict, UnitFileWant};

/// A result's status, exactly as the job report spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Done (or nothing to do).
    Ok,
    /// The operation failed or the host was unreachable.
    Failed,
    /// Not attempted; `error` says why.
    Skipped,
}

/// Per step, which hosts it touches, before reachability is known.
#[derive(Debug, Clone, Default)]
pub struct StepTargets {
    /// Hosts named or matched directly (inventory indices, sorted).
    pub fixed: Vec<usize>,
    /// `_any` groups: exactly one host of each is picked at run time.
    pub any: Vec<Vec<usize>>,
}

impl StepTargets {
    /// Every host the step may work on (fixed, and every `_any`
    /// candidate), each once, sorted.
    pub fn candidates(&self) -> Vec<usize> {
        let mut all: BTreeSet<usize> = self.fixed.iter().copied().collect();
        all.extend(self.any.iter().flatten().copied());
        all.into_iter().collect()
    }
}

/// What a step does on one host, rendered from templates.
#[derive(Debug, Clone)]
pub struct HostTask {
    /// Inventory index of the host.
    pub host: usize,
    /// The unit, rendered and validated.
    pub unit: UnitName,
    /// Result of `when:` (true when absent).
    pub when: bool,
    /// A `unit:` step's file content or a `maintenance:` step's reason,
    /// rendered for this host.
    pub content: Option<Arc<str>>,
}

/// A step with its targets resolved and its templates rendered per host.
#[derive(Debug, Clone)]
pub struct ExpandedStep {
    /// Index into the playbook's steps.
    pub step: usize,
    /// Hosts before `_any` picks.
    pub targets: StepTargets,
    /// One task per candidate host, in inventory order.
    pub tasks: Vec<HostTask>,
    /// Whether the step is a `unit:` step (facts then need the unit files).
    pub reads_file: bool,
}

impl ExpandedStep {
    /// The task of a host, if the host is a candidate.
    pub fn task(&self, host: usize) -> Option<&HostTask> {
        self.tasks
            .binary_search_by_key(&host, |t| t.host)
            .ok()
            .map(|i| &self.tasks[i])
    }
}

/// Resolve every step's targets and render every template for every host:
/// all input errors surface here, before any connection.
pub fn expand(
    pb: &Playbook,
    inv: &Inventory,
    limit: Option<&Selector>,
) -> Result<Vec<ExpandedStep>> {
    if let Some(l) = limit {
        if l.is_any() {
            return Err(Error::Usage("`--limit` cannot contain `_any`".into()));
        }
        let unknown = l.unknown_hosts(inv);
        if let Some(h) = unknown.first() {
            return Err(Error::Usage(format!(
                "--limit names unknown host `{h}`{}",
                inv.suggest_host(h)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_default()
            )));
        }
        if !inv.hosts.iter().any(|h| l.matches(h)) {
            return Err(Error::Usage(format!(
                "--limit `{l}` matches no host of the inventory"
            )));
        }
    }
    // Host contexts are built once and shared by all steps (and threads).
    let per_host = pb.steps.iter().any(|st| {
        st.when.is_some_and(|w| pb.templates.is_per_host(w))
            || module_templates(&st.module)
                .into_iter()
                .any(|t| pb.templates.is_per_host(t))
    });
    let contexts: Vec<crate::template::HostContext> = if per_host {
        inv.hosts
            .iter()
            .map(|h| pb.templates.host_context(h))
            .collect()
    } else {
        // Without per-host templates one context serves every host.
        inv.hosts
            .iter()
            .take(1)
            .map(|h| pb.templates.host_context(h))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = pb.steps.len().div_ceil(threads).max(1);
    let results: Vec<Result<ExpandedStep>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pb
            .steps
            .chunks(chunk)
            .map(|steps| {
                let contexts = &contexts;
                scope.spawn(move || {
                    steps
                        .iter()
                        .map(|st| expand_step(pb, inv, limit, st, contexts))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(Error::Internal("expansion thread panicked".into()))]
                })
            })
            .collect()
    });
    // The first error in file order, so the message does not depend on threads.
    results.into_iter().collect()
}

fn expand_step(
    pb: &Playbook,
    inv: &Inventory,
    limit: Option<&Selector>,
    step: &crate::playbook::Step,
    contexts: &[crate::template::HostContext],
) -> Result<ExpandedStep> {
    let in_limit = |i: &usize| limit.is_none_or(|l| l.matches(&inv.hosts[*i]));
    let mut targets = StepTargets::default();
    let mut fixed = BTreeSet::new();
    for sel in &step.targets {
        if let Some(h) = sel.unknown_hosts(inv).first() {
            return Err(Error::invalid(
                "playbook",
                format!("steps[{}].target", step.index),
                format!(
                    "step `{}`: target `{sel}` names unknown host `{h}`",
                    step.id
                ),
                Some(step.position.clone()),
            )
            .with_suggestion(inv.suggest_host(h)));
        }
        let (Resolved::Hosts(v) | Resolved::AnyOf(v)) = &sel.resolve(inv);
        if v.is_empty() {
            return Err(Error::invalid(
                "playbook",
                format!("steps[{}].target", step.index),
                format!(
                    "step `{}`: target `{sel}` matches no host of {}",
                    step.id,
                    inv.path.display()
                ),
                Some(step.position.clone()),
            ));
        }
        match sel.resolve(inv) {
            Resolved::Hosts(v) => fixed.extend(v.into_iter().filter(in_limit)),
            Resolved::AnyOf(v) => {
                let v: Vec<usize> = v.into_iter().filter(in_limit).collect();
                if !v.is_empty() {
                    targets.any.push(v);
                }
            }
        }
    }
    targets.fixed = fixed.into_iter().collect();
    let mut candidates: BTreeSet<usize> = targets.fixed.iter().copied().collect();
    for g in &targets.any {
        candidates.extend(g.iter().copied());
    }
    let mut tasks = Vec::with_capacity(candidates.len());
    // Templates that do not read `host` render once per step, not once per host.
    let mut shared_when: Option<bool> = None;
    let mut shared_unit: Option<UnitName> = None;
    let mut shared_content: Option<Arc<str>> = None;
    for h in candidates {
        let host = &inv.hosts[h];
        let when = match step.when {
            Some(w) if !pb.templates.is_per_host(w) && shared_when.is_some() => {
                shared_when.unwrap_or(true)
            }
            Some(w) => {
                let ctx = contexts
                    .get(h)
                    .or(contexts.first())
                    .ok_or_else(|| Error::Internal("no host context".into()))?;
                let v = pb.templates.condition(w, ctx).map_err(|m| {
                    host_error(
                        &step.id,
                        &host.name,
                        &format!("steps[{}].when", step.index),
                        step.when_position.clone(),
                        m,
                    )
                })?;
                if !pb.templates.is_per_host(w) {
                    shared_when = Some(v);
                }
                v
            }
            None => true,
        };
        let (name, name_position, name_field) = match &step.module {
            Module::Service {
                name,
                name_position,
                ..
            } => (Some(*name), name_position, "service.name"),
            Module::Maintenance {
                unit,
                name_position,
                ..
            } => (*unit, name_position, "maintenance.unit"),
            Module::Unit {
                name,
                name_position,
                ..
            } => (Some(*name), name_position, "unit.name"),
        };
        let unit = match name {
            None => UnitName::parse(crate::maintenance::HOST_SCOPE).map_err(Error::Internal)?,
            Some(name) => match &shared_unit {
                Some(u) => u.clone(),
                None => {
                    let ctx = contexts
                        .get(h)
                        .or(contexts.first())
                        .ok_or_else(|| Error::Internal("no host context".into()))?;
                    let u = pb.templates.render_unit(name, ctx).map_err(|m| {
                        host_error(
                            &step.id,
                            &host.name,
                            &format!("steps[{}].{name_field}", step.index),
                            Some(name_position.clone()),
                            m,
                        )
                    })?;
                    if !pb.templates.is_per_host(name) {
                        shared_unit = Some(u.clone());
                    }
                    u
                }
            },
        };
        let content = match &step.module {
            Module::Unit {
                source: UnitSource::Content(c),
                ..
            } => Some(match &shared_content {
                Some(c) => Arc::clone(c),
                None => {
                    let c: Arc<str> = Arc::from(c.as_str());
                    shared_content = Some(c.clone());
                    c
                }
            }),
            Module::Unit {
                source: UnitSource::Template(t),
                name_position,
                ..
            } => Some(match &shared_content {
                Some(c) => Arc::clone(c),
                None => {
                    let ctx = contexts
                        .get(h)
                        .or(contexts.first())
                        .ok_or_else(|| Error::Internal("no host context".into()))?;
                    let mut text = pb.templates.render(*t, ctx).map_err(|m| {
                        host_error(
                            &step.id,
                            &host.name,
                            &format!("steps[{}].unit.template", step.index),
                            Some(name_position.clone()),
                            m,
                        )
                    })?;
                    // minijinja drops a template's final newline; a unit
                    // file keeps it.
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    let c: Arc<str> = Arc::from(text);
                    if !pb.templates.is_per_host(*t) {
                        shared_content = Some(c.clone());
                    }
                    c
                }
            }),
            Module::Maintenance {
                reason: Some(t),
                name_position,
                ..
            } => {
                let ctx = contexts
                    .get(h)
                    .or(contexts.first())
                    .ok_or_else(|| Error::Internal("no host context".into()))?;
                let r = pb.templates.render(*t, ctx).map_err(|m| {
                    host_error(
                        &step.id,
                        &host.name,
                        &format!("steps[{}].maintenance.reason", step.index),
                        Some(name_position.clone()),
                        m,
                    )
                })?;
                Some(Arc::from(r.as_str()))
            }
            _ => None,
        };
        tasks.push(HostTask {
            host: h,
            unit,
            when,
            content,
        });
    }
    Ok(ExpandedStep {
        step: step.index,
        targets,
        tasks,
        reads_file: matches!(step.module, Module::Unit { .. }),
    })
}

/// The template ids a module renders per host.
fn module_templates(m: &Module) -> Vec<usize> {
    match m {
        Module::Service { name, .. } => vec![*name],
        Module::Maintenance { reason, unit, .. } => reason.iter().chain(unit).copied().collect(),
        Module::Unit { name, source, .. } => match source {
            UnitSource::Template(t) => vec![*name, *t],
            _ => vec![*name],
        },
    }
}

/// The goal of a step's module (empty for modules other than `service`).
pub fn goal_of(module: &Module) -> ServiceGoal {
    match module {
        Module::Maintenance { .. } | Module::Unit { .. } => ServiceGoal::default(),
        Module::Service {
            state,
            enabled,
            masked,
            ..
        } => ServiceGoal {
            state: *state,
            enabled: *enabled,
            masked: *masked,
        },
    }
}

/// Pick the `_any` host of a group: the first in inventory order that is
/// reachable, not in maintenance and not already failed.
pub fn pick_any(group: &[usize], usable: impl Fn(usize) -> bool) -> Option<usize> {
    group.iter().copied().find(|h| usable(*h))
}

/// One predicted result, in the job report's shape plus prediction detail.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedResult {
    /// Inventory name.
    pub hostname: Arc<str>,
    /// ok, failed or skipped.
    pub status: Status,
    /// The unit.
    pub name: UnitName,
    /// Whether systemd state will change.
    pub changed: bool,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
}

/// The name of the host-wide entry in a host's diff (maintenance).
pub const HOST_DOC: &str = "(host)";

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
/// the file's content line by line.
fn extra_lines(unit: &UnitName, m: &MaintenanceState, file: Option<Option<String>>) -> Vec<String> {
    let mut v = Vec::new();
    let flag = if unit.as_str() == HOST_SCOPE {
        Some(m.host.as_ref())
    } else {
        m.units.get(unit.as_str()).map(Some)
    };
    match flag {
        Some(Some(f)) => v.push(format!("  maintenance: on ({})", f.reason)),
        Some(None) => v.push("  maintenance: off".to_string()),
        None => {}
    }
    match file {
        Some(Some(text)) => {
            v.push(format!("  file: {}", crate::unitfile::unit_path(unit)));
            v.extend(text.lines().map(|l| format!("    | {l}")));
        }
        Some(None) => v.push(format!(
            "  file: {} (absent)",
            crate::unitfile::unit_path(unit)
        )),
        None => {}
    }
    v
}

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

/// Predict every step × host result by running the decision function over
/// the facts, threading each unit's predicted state through the DAG.
pub fn simulate(
    pb: &Playbook,
    inv: &Inventory,
    dag: &Dag,
    expanded: &[ExpandedStep],
    facts: &Facts,
    labels: PlanLabels<'_>,
) -> Result<Plan> {
    let host_facts: Vec<&HostFacts> = inv
        .hosts
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
        .collect::<Result<_>>()?;
    // Predicted state per (host, unit), starting from facts.
    // A host touches few units, so a short list per host beats hashing.
    let mut sim: Vec<Vec<(UnitName, UnitFacts)>> = vec![Vec::new(); inv.hosts.len()];
    let mut failed_at: Vec<Option<String>> = vec![None; inv.hosts.len()];
    let mut aborted_at: Option<String> = None;
    let mut touched: Vec<Vec<(UnitName, Vec<String>)>> = vec![Vec::new(); inv.hosts.len()];
    // Maintenance flags and unit files as the run changes them.
    let mut maint: Vec<MaintenanceState> = host_facts
        .iter()
        .map(|hf| MaintenanceState::of_facts(hf))
        .collect();
    let mut files: Vec<Vec<(UnitName, Option<Arc<str>>)>> = vec![Vec::new(); inv.hosts.len()];
    let stamp = crate::report::now_rfc3339();
    let mut steps = Vec::with_capacity(pb.steps.len());
    let mut summary = Summary::default();
    // Shared names: half a million results must not mean a million strings.
    let host_names: Vec<Arc<str>> = inv
        .hosts
        .iter()
        .map(|h| Arc::from(h.name.as_str()))
        .collect();

    for &si in dag.order() {
        let step = &pb.steps[si];
        let ex = &expanded[si];
        let goal = goal_of(&step.module);
        let usable =
            |h: usize| host_facts[h].reachable && maint[h].host.is_none() && failed_at[h].is_none();
        let mut selected: BTreeSet<usize> = ex.targets.fixed.iter().copied().collect();
        let mut picked = Vec::new();
        for g in &ex.targets.any {
            // No usable host: fall back to the first, whose result shows why.
            let h = pick_any(g, usable).unwrap_or(g[0]);
            picked.push(inv.hosts[h].name.clone());
            selected.insert(h);
        }
        let hosts: Vec<usize> = selected.into_iter().collect();
        let batch_size = step
            .serial
            .map_or(hosts.len().max(1), |s: Serial| s.batch_size(hosts.len()));
        let mut results = Vec::with_capacity(hosts.len());
        let mut failed_here = 0usize;
        let step_id: Arc<str> = Arc::from(step.id.as_str());
        let mut step_abort = false;
        for (pos, &h) in hosts.iter().enumerate() {
            let batch = pos / batch_size + 1;
            if pos > 0
                && pos % batch_size == 0
                && failure_exceeded(failed_here, hosts.len(), step.max_fail_percentage)
            {
                step_abort = true;
            }
            let host = &inv.hosts[h];
            let hf = host_facts[h];
            let task = ex.task(h).ok_or_else(|| {
                Error::Internal(format!(
                    "no task for host {} in step {}",
                    host.name, step.id
                ))
            })?;
            let mut r = PlannedResult {
                hostname: host_names[h].clone(),
                status: Status::Skipped,
                name: task.unit.clone(),
                changed: false,
                error: None,
                step: step_id.clone(),
                actions: Vec::new(),
                batch,
            };
            if let Some(a) = aborted_at.as_ref() {
                r.error = Some(format!("skipped: run aborted at step {a}"));
            } else if step_abort {
                r.error = Some(format!("skipped: run aborted at step {}", step.id));
            } else if let Some(f) = failed_at[h].as_ref() {
                r.error = Some(format!("skipped: failed at step {f}"));
            } else if !task.when {
                r.error = Some("skipped: `when` condition is false".into());
            } else if !hf.reachable {
                r.status = Status::Failed;
                r.error = Some(format!(
                    "unreachable: {}",
                    hf.error.as_deref().unwrap_or("no connection")
                ));
            } else if let (Some(why), false) = (
                maint[h].skip_reason(task.unit.as_str()),
                step.ignore_maintenance || matches!(step.module, Module::Maintenance { .. }),
            ) {
                r.error = Some(why);
            } else if let Module::Maintenance { enable, .. } = &step.module {
                let goal = MaintenanceGoal {
                    enable: *enable,
                    reason: task.content.as_deref().unwrap_or_default().to_string(),
                    unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
                };
                let d = decide_maintenance(&goal, &maint[h], &stamp);
                r.status = Status::Ok;
                r.changed = d.action.is_some();
                r.actions = d.action.into_iter().collect();
                note_actions(&mut touched[h], &task.unit, &r.actions, &step.id);
                maint[h] = d.after;
            } else if let Module::Unit { state, .. } = &step.module {
                let file: Option<Option<Arc<str>>> =
                    match files[h].iter().find(|(u, _)| *u == task.unit) {
                        Some((_, f)) => Some(f.clone()),
                        None => hf
                            .unit_files
                            .get(task.unit.as_str())
                            .map(|f| f.as_deref().map(Arc::from)),
                    };
                let Some(file) = file else {
                    return Err(Error::invalid(
                        "facts file",
                        format!("hosts.{}.unit_files", host.name),
                        format!(
                            "no content of unit file {} on host `{}`; collect facts again with a live plan or `drover facts` for that unit",
                            task.unit, host.name
                        ),
                        None,
                    ));
                };
                let now = sim[h]
                    .iter()
                    .find(|(u, _)| *u == task.unit)
                    .map(|(_, u)| u.clone())
                    .or_else(|| hf.units.get(task.unit.as_str()).cloned())
                    .unwrap_or_else(UnitFacts::not_found);
                let present = *state == UnitFileGoal::Present;
                let content = task.content.clone().unwrap_or_else(|| Arc::from(""));
                let want = if present {
                    UnitFileWant::Present(&content)
                } else {
                    UnitFileWant::Absent
                };
                let actions = decide_unit(&want, file.as_deref(), &now);
                r.status = Status::Ok;
                r.changed = !actions.is_empty();
                note_actions(&mut touched[h], &task.unit, &actions, &step.id);
                if !actions.is_empty() {
                    let after = predict(&now, &actions, present);
                    match sim[h].iter_mut().find(|(u, _)| *u == task.unit) {
                        Some(slot) => slot.1 = after,
                        None => sim[h].push((task.unit.clone(), after)),
                    }
                    let new_file = present.then_some(content);
                    match files[h].iter_mut().find(|(u, _)| *u == task.unit) {
                        Some(slot) => slot.1 = new_file,
                        None => files[h].push((task.unit.clone(), new_file)),
                    }
                } else if !files[h].iter().any(|(u, _)| *u == task.unit) {
                    files[h].push((task.unit.clone(), file));
                }
                r.actions = actions;
            } else {
                let from_facts = hf.units.get(task.unit.as_str());
                let now = match sim[h].iter().find(|(u, _)| *u == task.unit) {
                    Some((_, u)) => u,
                    None => from_facts.ok_or_else(|| {
                        Error::invalid(
                            "facts file",
                            format!("hosts.{}.units", host.name),
                            format!(
                                "no facts for unit {} on host `{}`; collect facts again (`drover facts`) so they include it",
                                task.unit, host.name
                            ),
                            None,
                        )
                    })?,
                };
                let d = decide_service(task.unit.as_str(), &goal, now);
                r.changed = !d.actions.is_empty();
                if let Some(e) = d.error {
                    r.status = Status::Failed;
                    r.error = Some(e);
                    r.actions = d.actions;
                } else {
                    r.status = Status::Ok;
                    let list = &mut touched[h];
                    let entry = match list.iter().position(|(u, _)| *u == task.unit) {
                        Some(i) => &mut list[i],
                        None => {
                            list.push((task.unit.clone(), Vec::new()));
                            let last = list.len() - 1;
                            &mut list[last]
                        }
                    };
                    for a in &d.actions {
                        entry.1.push(format!("{a} ({})", step.id));
                    }
                    r.actions = d.actions;
                    if let Some(after) = d.after {
                        match sim[h].iter_mut().find(|(u, _)| *u == task.unit) {
                            Some(slot) => slot.1 = after,
                            None => sim[h].push((task.unit.clone(), after)),
                        }
                    }
                }
            }
            if r.status == Status::Failed {
                failed_here += 1;
                failed_at[h] = Some(step.id.clone());
            }
            match (r.status, r.changed) {
                (Status::Ok, true) => summary.changes += 1,
                (Status::Ok, false) => summary.unchanged += 1,
                (Status::Skipped, _) => summary.skipped += 1,
                (Status::Failed, _) => summary.failed += 1,
            }
            results.push(r);
        }
        if aborted_at.is_none()
            && (step_abort || failure_exceeded(failed_here, hosts.len(), step.max_fail_percentage))
        {
            aborted_at = Some(step.id.clone());
        }
        steps.push(StepPlan {
            id: step.id.clone(),
            target: step.targets.iter().map(|t| t.to_string()).collect(),
            needs: dag
                .dependencies(si)
                .iter()
                .map(|d| pb.steps[*d].id.clone())
                .collect(),
            picked,
            batch_size: if step.serial.is_some() { batch_size } else { 0 },
            results,
        });
    }
    let mut hosts = Vec::new();
    for (h, list) in touched.into_iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let hf = host_facts[h];
        let changes = list
            .into_iter()
            .map(|(unit, actions)| UnitChange {
                before_extra: extra_lines(
                    &unit,
                    &MaintenanceState::of_facts(hf),
                    files[h]
                        .iter()
                        .any(|(u, _)| *u == unit)
                        .then(|| hf.unit_files.get(unit.as_str()).cloned().flatten()),
                ),
                after_extra: extra_lines(
                    &unit,
                    &maint[h],
                    files[h]
                        .iter()
                        .find(|(u, _)| *u == unit)
                        .map(|(_, f)| f.as_deref().map(str::to_string)),
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
                after: sim[h]
                    .iter()
                    .find(|(u, _)| *u == unit)
                    .map(|(_, f)| f.clone())
                    .or_else(|| hf.units.get(unit.as_str()).cloned())
                    .unwrap_or_else(UnitFacts::not_found),
                actions,
            })
            .collect();
        hosts.push(HostChanges {
            hostname: inv.hosts[h].name.clone(),
            units: changes,
        });
    }
    summary.hosts = steps
        .iter()
        .flat_map(|s| s.results.iter().map(|r| &*r.hostname))
        .collect::<BTreeSet<_>>()
        .len();
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
        facts: None,
        steps,
        hosts,
        summary,
    })
}

/// Whether `failed` of `total` exceeds `max_pct` percent.
pub fn failure_exceeded(failed: usize, total: usize, max_pct: f64) -> bool {
    total > 0 && (failed as f64) * 100.0 / (total as f64) > max_pct
}
