//! `drover check` and `drover plan`.

use crate::engine::events::NoEvents;
use crate::engine::files::write_atomic_with;
use crate::engine::job::Job;
use crate::engine::plan::{FactsSource, PlanOptions};
use crate::model::dag::Dag;
use crate::model::error::{Error, Result};
use crate::model::facts::Facts;
use crate::model::journal::Read;
use crate::model::params::ParamValues;
use crate::model::playbook::Playbook;
use crate::model::report::Verdict;
use crate::render::plan::{render_to, write_json, Format};

use crate::render::check::Checked;

use super::args::{CheckArgs, PlanArgs, ReportFormat};

/// `drover check`: validate, touch nothing. With `--format json` the
/// outcome is a diagnostics document on stdout, errors included; the exit
/// code is the same either way.
pub(super) fn check(a: &CheckArgs) -> Result<i32> {
    let checked = validate(a);
    if a.format == ReportFormat::Json {
        let (doc, code) = match &checked {
            Ok(c) => (crate::render::check::passed(c), 0),
            Err(e) => (
                crate::render::check::failed(e),
                Verdict::of_error(e).exit_code(),
            ),
        };
        outln!("{doc}");
        return Ok(code);
    }
    let c = checked?;
    match (&c.inventory, c.tasks, c.hosts) {
        (Some(inv), Some(tasks), Some(hosts)) => outln!(
            "ok: {} is valid: {} steps in {} waves, {tasks} host tasks over {hosts} hosts of {inv}",
            c.playbook,
            c.steps,
            c.waves,
        ),
        _ => outln!(
            "ok: {} is valid: {} steps in {} waves (add -i INVENTORY to check targets and templates)",
            c.playbook,
            c.steps,
            c.waves
        ),
    }
    Ok(0)
}

/// Load and validate what `check` names.
fn validate(a: &CheckArgs) -> Result<Checked> {
    let CheckArgs {
        playbook,
        inventory,
        ..
    } = a;
    // A runbook is checked without its values: a required parameter not
    // given is a sample of its type. Given values are checked as plan does.
    let values = a.params.values()?.overlaid(ParamValues::samples());
    match inventory {
        Some(inv) => {
            let job = Job::load_with(playbook, inv, None, a.modules.as_deref(), &values)?;
            Ok(Checked {
                playbook: playbook.display().to_string(),
                inventory: Some(inv.display().to_string()),
                steps: job.playbook.steps.len(),
                waves: job.dag.waves().len(),
                tasks: Some(job.expanded.iter().map(|e| e.tasks.len()).sum()),
                hosts: Some(job.inventory.hosts.len()),
            })
        }
        None => {
            let pb = Playbook::load_with(playbook, a.modules.as_deref(), &values)?;
            let dag = Dag::build(&pb)?;
            Ok(Checked {
                playbook: playbook.display().to_string(),
                inventory: None,
                steps: pb.steps.len(),
                waves: dag.waves().len(),
                tasks: None,
                hosts: None,
            })
        }
    }
}

/// `drover plan | head` closes the pipe early; that is not an error.
fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

/// The job, and the facts file's content when one is given: read side by
/// side, they are independent.
fn load(a: &PlanArgs, resumed: Option<&Read>) -> Result<(Job, FactsSource)> {
    let values = super::apply::recorded_params(a.retry.retry.as_deref(), resumed)
        .overlaid(a.params.values()?);
    let Some(facts_path) = &a.facts else {
        return Ok((
            Job::load_with(
                &a.playbook,
                &a.inv.inventory,
                a.limit.as_deref(),
                a.modules.as_deref(),
                &values,
            )?,
            FactsSource::Live,
        ));
    };
    let (job, facts) = std::thread::scope(|s| {
        let facts = s.spawn(|| Facts::load(facts_path));
        let job = Job::load_with(
            &a.playbook,
            &a.inv.inventory,
            a.limit.as_deref(),
            a.modules.as_deref(),
            &values,
        );
        let facts = facts
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("facts reader panicked".into())));
        (job, facts)
    });
    let source = FactsSource::Given {
        facts: facts?,
        label: facts_path.display().to_string(),
    };
    Ok((job?, source))
}

/// `drover plan`: predict, render, change nothing.
pub(super) fn plan(a: &PlanArgs, color: bool) -> Result<i32> {
    let format: Format = a.format.into();
    // A resume's journal is read once: its params, then what it keeps.
    let resumed = a
        .resume
        .as_deref()
        .map(crate::engine::journal::read)
        .transpose()?;
    let (job, source) = load(a, resumed.as_ref())?;
    let opts = PlanOptions {
        reach: super::reach(a.forks, a.read.timeout),
        limit: a.limit.clone(),
        // A plan shows what the protection refuses, host by host, rather
        // than refusing itself: `apply` refuses.
        allow_protected: true,
        keep_facts: a.out.is_some() || format == Format::Json,
        carry: match (&a.resume, resumed) {
            (Some(path), Some(read)) => {
                Some(super::apply::resume_journal(&job, path, read, a.retry.retry_changed)?.0)
            }
            _ => super::apply::retry_carry(&job, &a.retry)?,
        },
    };
    let rt = match source {
        // Facts from a file: nothing to connect to, one thread is enough.
        FactsSource::Given { .. } => super::local_runtime()?,
        FactsSource::Live => super::runtime()?,
    };
    let planned = rt.block_on(crate::engine::plan::plan(&job, source, &opts, &NoEvents))?;
    let (plan, incomplete) = (&planned.plan, planned.incomplete);
    tracing::debug!("plan simulated");
    if let Some(out) = &a.out {
        write_atomic_with(out, |w| write_json(plan, w))?;
    }
    {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        render_to(plan, format, color && format == Format::Text, &mut w)
            .and_then(|_| std::io::Write::flush(&mut w))
            .or_else(ignore_broken_pipe)
            .map_err(|e| Error::io("write", "stdout", e))?;
    }
    tracing::debug!("plan rendered");
    // A host without facts makes a live plan incomplete: exit 4 (DESIGN.md),
    // never 2, which --detailed-exitcode uses for "changes pending".
    let verdict = if incomplete {
        Verdict::Unreachable
    } else if a.detailed_exitcode && plan.has_changes() {
        Verdict::ChangesPending
    } else {
        Verdict::Ok
    };
    // The process ends here: freeing a 10,000-host plan piece by piece is
    // wasted time, so leave it to the OS.
    std::mem::forget((planned, job));
    Ok(verdict.exit_code())
}
