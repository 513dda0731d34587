//! Expansion: every step's targets resolved against the inventory and
//! every template rendered for every host it may touch. All input errors
//! surface here, before any connection.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::error::{Error, Result};
use crate::model::inventory::{Host, Inventory};
use crate::model::playbook::{Operation, Playbook, Step, UnitSource};
use crate::model::secret::Secrets;
use crate::model::service::ServiceGoal;
use crate::model::target::{Resolved, Selector};
use crate::model::template::{host_error, HostContext, Templates};
use crate::model::unit::UnitName;

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
        check_limit(l, inv)?;
    }
    let contexts = host_contexts(pb, inv);
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
                        .map(|st| {
                            expand_step(pb, inv, limit, st, contexts).map_err(|e| {
                                match &st.called_from {
                                    Some(note) => {
                                        e.in_call(crate::model::playbook::module::WHAT, note)
                                    }
                                    None => e,
                                }
                            })
                        })
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
    // The first error in file order, so the message does not depend on
    // threads; a rendered value it quotes may be a secret.
    results
        .into_iter()
        .collect::<Result<_>>()
        .map_err(|e| e.redacted(&pb.secrets))
}

/// `--limit` may not pick `_any`, name unknown hosts or match nothing.
fn check_limit(l: &Selector, inv: &Inventory) -> Result<()> {
    if l.is_any() {
        return Err(Error::Usage("`--limit` cannot contain `_any`".into()));
    }
    if let Some(h) = l.unknown_hosts(inv).first() {
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
    Ok(())
}

/// Host contexts, built once and shared by all steps (and threads);
/// without per-host templates one context serves every host.
fn host_contexts(pb: &Playbook, inv: &Inventory) -> Vec<HostContext> {
    let per_host = pb.steps.iter().any(|st| {
        st.when.is_some_and(|w| pb.templates.is_per_host(w))
            || module_templates(&st.operation)
                .into_iter()
                .any(|t| pb.templates.is_per_host(t))
    });
    let n = if per_host { inv.hosts.len() } else { 1 };
    inv.hosts
        .iter()
        .take(n)
        .map(|h| pb.templates.host_context(h))
        .collect()
}

fn expand_step(
    pb: &Playbook,
    inv: &Inventory,
    limit: Option<&Selector>,
    step: &Step,
    contexts: &[HostContext],
) -> Result<ExpandedStep> {
    let targets = resolve_targets(inv, limit, step)?;
    let mut render = StepRenderer {
        templates: &pb.templates,
        secrets: &pb.secrets,
        step,
        contexts,
        when: None,
        unit: None,
        content: None,
    };
    let tasks = targets
        .candidates()
        .into_iter()
        .map(|h| render.task(h, &inv.hosts[h]))
        .collect::<Result<Vec<_>>>()?;
    Ok(ExpandedStep {
        step: step.index,
        targets,
        tasks,
        reads_file: matches!(step.operation, Operation::Unit { .. }),
    })
}

/// A step's selectors against the inventory, intersected with `--limit`;
/// an unknown hostname or a selector matching nothing is an error naming
/// the step and the selector.
fn resolve_targets(inv: &Inventory, limit: Option<&Selector>, step: &Step) -> Result<StepTargets> {
    let in_limit = |i: &usize| limit.is_none_or(|l| l.matches(&inv.hosts[*i]));
    let mut targets = StepTargets::default();
    let mut fixed = BTreeSet::new();
    for sel in &step.targets {
        if let Some(h) = sel.unknown_hosts(inv).first() {
            return Err(Error::invalid(
                "playbook",
                format!("steps[{}].target", step.file_index),
                format!(
                    "step `{}`: target `{sel}` names unknown host `{h}`",
                    step.id
                ),
                Some(step.position.clone()),
            )
            .with_suggestion(inv.suggest_host(h)));
        }
        match sel.resolve(inv) {
            Resolved::Hosts(v) | Resolved::AnyOf(v) if v.is_empty() => {
                return Err(Error::invalid(
                    "playbook",
                    format!("steps[{}].target", step.file_index),
                    format!(
                        "step `{}`: target `{sel}` matches no host of {}",
                        step.id,
                        inv.path.display()
                    ),
                    Some(step.position.clone()),
                ));
            }
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
    Ok(targets)
}

/// Renders one step's templates host by host; a template that does not
/// read `host` renders once per step, not once per host.
struct StepRenderer<'a> {
    templates: &'a Templates,
    secrets: &'a Secrets,
    step: &'a Step,
    contexts: &'a [HostContext],
    when: Option<bool>,
    unit: Option<UnitName>,
    content: Option<Arc<str>>,
}

impl StepRenderer<'_> {
    fn task(&mut self, h: usize, host: &Host) -> Result<HostTask> {
        Ok(HostTask {
            host: h,
            when: self.when(h, host)?,
            unit: self.unit(h, host)?,
            content: self.content(h, host)?,
        })
    }

    fn context(&self, h: usize) -> Result<&HostContext> {
        self.contexts
            .get(h)
            .or(self.contexts.first())
            .ok_or_else(|| Error::Internal("no host context".into()))
    }

    /// A per-host template error, naming step, host and field.
    fn error(
        &self,
        host: &Host,
        field: &str,
        at: Option<crate::model::error::Position>,
    ) -> impl FnOnce(String) -> Error + '_ {
        let field = format!("steps[{}].{field}", self.step.file_index);
        let host = host.name.clone();
        move |m| host_error(&self.step.id, &host, &field, at, m)
    }

    fn when(&mut self, h: usize, host: &Host) -> Result<bool> {
        let Some(w) = self.step.when else {
            return Ok(true);
        };
        let shared = !self.templates.is_per_host(w);
        if let (true, Some(v)) = (shared, self.when) {
            return Ok(v);
        }
        let v = self
            .templates
            .condition(w, self.context(h)?)
            .map_err(self.error(host, "when", self.step.when_position.clone()))?;
        if shared {
            self.when = Some(v);
        }
        Ok(v)
    }

    fn unit(&mut self, h: usize, host: &Host) -> Result<UnitName> {
        let (name, name_position, field) = match &self.step.operation {
            Operation::Service {
                name,
                name_position,
                ..
            } => (Some(*name), name_position, "service.name"),
            Operation::Maintenance {
                unit,
                name_position,
                ..
            } => (*unit, name_position, "maintenance.unit"),
            Operation::Unit {
                name,
                name_position,
                ..
            } => (Some(*name), name_position, "unit.name"),
            // A script module's result is named after the module, not a
            // unit; the task carries the host scope.
            Operation::Script(_) => (None, &self.step.position, "use"),
        };
        let Some(name) = name else {
            return UnitName::parse(crate::model::maintenance::HOST_SCOPE).map_err(Error::Internal);
        };
        if let Some(u) = &self.unit {
            return Ok(u.clone());
        }
        let u = self
            .templates
            .render_unit(name, self.context(h)?)
            .map_err(self.error(host, field, Some(name_position.clone())))?;
        // A unit name is shown everywhere and must stay a valid name, so a
        // secret in it cannot be hidden: refuse it.
        if let Some(secret) = self.secrets.found_in(u.as_str()) {
            return Err(self.error(host, field, Some(name_position.clone()))(format!(
                "the unit name contains the value of secret `{secret}`; unit names are shown in plans and reports and cannot be redacted"
            )));
        }
        if !self.templates.is_per_host(name) {
            self.unit = Some(u.clone());
        }
        Ok(u)
    }

    fn content(&mut self, h: usize, host: &Host) -> Result<Option<Arc<str>>> {
        match &self.step.operation {
            Operation::Unit {
                source: UnitSource::Content(c),
                ..
            } => Ok(Some(
                self.content
                    .get_or_insert_with(|| Arc::from(c.as_str()))
                    .clone(),
            )),
            Operation::Unit {
                source: UnitSource::Template(t),
                name_position,
                ..
            } => {
                if let Some(c) = &self.content {
                    return Ok(Some(Arc::clone(c)));
                }
                let mut text = self
                    .templates
                    .render(*t, self.context(h)?)
                    .map_err(self.error(host, "unit.template", Some(name_position.clone())))?;
                // minijinja drops a template's final newline; a unit file
                // keeps it.
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                let c: Arc<str> = Arc::from(text);
                if !self.templates.is_per_host(*t) {
                    self.content = Some(c.clone());
                }
                Ok(Some(c))
            }
            Operation::Maintenance {
                reason: Some(t),
                name_position,
                ..
            } => {
                let r = self
                    .templates
                    .render(*t, self.context(h)?)
                    .map_err(self.error(host, "maintenance.reason", Some(name_position.clone())))?;
                Ok(Some(Arc::from(r.as_str())))
            }
            _ => Ok(None),
        }
    }
}

/// The template ids a module renders per host.
fn module_templates(m: &Operation) -> Vec<usize> {
    match m {
        Operation::Service { name, .. } => vec![*name],
        Operation::Maintenance { reason, unit, .. } => reason.iter().chain(unit).copied().collect(),
        Operation::Unit { name, source, .. } => match source {
            UnitSource::Template(t) => vec![*name, *t],
            _ => vec![*name],
        },
        Operation::Script(_) => Vec::new(),
    }
}

/// The goal of a step's module (empty for modules other than `service`).
pub fn goal_of(module: &Operation) -> ServiceGoal {
    match module {
        Operation::Maintenance { .. } | Operation::Unit { .. } | Operation::Script(_) => {
            ServiceGoal::default()
        }
        Operation::Service {
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
