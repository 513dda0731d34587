//! The plan: the engine's walk over the job ([`crate::engine::walk`]) with
//! each host's step predicted from facts ([`Predict`]), made into a
//! [`Plan`] with every host's before/after.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::engine::carry::Carry;
use crate::engine::events::NoEvents;
use crate::engine::job::Job;
use crate::engine::plan::predict::{Fleet, Predict};
use crate::engine::plan::step_plan;
use crate::engine::plan::HostChanges;
use crate::engine::plan::ModuleChecks;
use crate::engine::plan::Plan;
use crate::engine::plan::PlanLabels;
use crate::engine::plan::Source;
use crate::engine::plan::StepPlan;
use crate::engine::plan::UnitChange;
use crate::engine::plan::HOST_DOC;
use crate::engine::walk::{walk, WalkEnd, WalkOptions};
use crate::model::error::{Error, Result};
use crate::model::facts::{Facts, HostFacts, UnitFacts};
use crate::model::maintenance::{MaintenanceState, HOST_SCOPE};
use crate::model::secret::Secrets;
use crate::model::unit::UnitName;

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
    simulate_with_checks(job, facts, labels, &ModuleChecks::new(), None)
}

/// [`simulate`], with the check-mode reports of script modules and what
/// an earlier run settled (a retry's or a resume's preview).
pub fn simulate_with_checks(
    job: &Job,
    facts: &Facts,
    labels: PlanLabels<'_>,
    checks: &ModuleChecks,
    carry: Option<&Carry>,
) -> Result<Plan> {
    let host_facts = facts_per_host(job, facts)?;
    let predict = Predict::new(job, host_facts, checks);
    let opts = WalkOptions {
        // The plan shows what the protection refuses.
        allow_protected: false,
        stop: None,
        // A plan is not bound to the time it is made; apply checks.
        window: None,
        events: &NoEvents,
        lanes: 1,
        carry,
        // The plan claims nothing: it shows the limit, apply holds it.
        claims: None,
    };
    let end = run_now(walk(job, &predict, opts)).ok_or_else(|| {
        Error::Internal("the plan's walk waited for something; a prediction never waits".into())
    })??;
    let (host_facts, mut fleet) = predict.into_parts();
    let steps = step_plans(job, &end, &mut fleet);
    let hosts = host_changes(job, &host_facts, &mut fleet);
    let mut summary = fleet.summary;
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
        params: super::PlanParams::of(&job.params),
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

/// Each step's plan in DAG order (a module call's steps together, where
/// its first step is), with its results in inventory order.
fn step_plans(job: &Job, end: &WalkEnd, fleet: &mut Fleet) -> Vec<StepPlan> {
    let mut steps = Vec::with_capacity(job.playbook.steps.len());
    let mut groups_done = std::collections::HashSet::new();
    let mut one = |si: usize| {
        let step = &job.playbook.steps[si];
        let shape = &end.shapes[si];
        let picked = shape
            .picked
            .iter()
            .map(|&h| job.inventory.hosts[h].name.clone())
            .collect();
        // A step without `serial` shows no batch size; a module call's
        // steps show the call's.
        let size = if step.group.is_some() || step.serial.is_some() {
            shape.batch_size
        } else {
            0
        };
        let mut results = std::mem::take(&mut fleet.results[si]);
        // In order already, unless hosts walked on their own (free).
        if !results.is_sorted_by_key(|(h, _)| *h) {
            results.sort_by_key(|(h, _)| *h);
        }
        let results = results.into_iter().map(|(_, r)| r).collect();
        step_plan(job, si, picked, size, results)
    };
    for &si in job.dag.order() {
        match &job.playbook.steps[si].group {
            Some(g) => {
                if groups_done.insert(g.call.clone()) {
                    steps.extend(g.steps.iter().map(|&gs| one(gs)));
                }
            }
            None => steps.push(one(si)),
        }
    }
    steps
}

/// Poll a future that never waits to its end, here: the plan's walk,
/// whose every host is predicted from facts in memory. `None` if it
/// waited for something after all (nothing would ever wake it).
fn run_now<F: Future>(fut: F) -> Option<F::Output> {
    /// Set when the future asks to be polled again (a cooperative yield).
    struct Again(AtomicBool);
    impl Wake for Again {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let again = Arc::new(Again(AtomicBool::new(false)));
    let waker = Waker::from(again.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        again.0.store(false, Ordering::SeqCst);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return Some(out),
            Poll::Pending if again.0.load(Ordering::SeqCst) => continue,
            Poll::Pending => return None,
        }
    }
}

/// Per host (inventory order), the before/after of every unit it
/// touches; the actions noted move into the result.
fn host_changes(job: &Job, facts: &[&HostFacts], fleet: &mut Fleet) -> Vec<HostChanges> {
    let touched = std::mem::take(&mut fleet.touched);
    let mut modules = std::mem::take(&mut fleet.modules);
    let mut hosts = Vec::new();
    for (h, list) in touched.into_iter().enumerate() {
        let scripts = modules.get_mut(h).map(std::mem::take).unwrap_or_default();
        if list.is_empty() && scripts.is_empty() {
            continue;
        }
        let hf = facts[h];
        let file_of = |unit: &UnitName| fleet.files[h].iter().find(|(u, _)| u == unit);
        let secrets = &job.playbook.secrets;
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
                    &fleet.maint[h],
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
                after: fleet
                    .unit_now(hf, h, &unit)
                    .cloned()
                    .unwrap_or_else(UnitFacts::not_found),
                actions,
                module: false,
            })
            .chain(scripts)
            .collect();
        hosts.push(HostChanges {
            hostname: job.inventory.hosts[h].name.clone(),
            units,
        });
    }
    hosts
}
