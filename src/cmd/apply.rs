//! `drover apply`, `drover service` and `drover maintenance`: one engine
//! run each, shown as it goes and summarised at the end. Signals become a
//! graceful stop here.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::engine::apply::{apply as run_apply, resume_carry, ApplyOptions, Continue};
use crate::engine::carry::{check_inputs, Carry};
use crate::engine::events::{EventSink, NoEvents, StopFlag};
use crate::engine::job::{AdHoc, Job};
use crate::engine::journal::Journal;
use crate::engine::plan::{FactsSource, PlanOptions};
use crate::engine::saved::SavedPlan;
use crate::model::error::{Error, Result};
use crate::model::journal::{Header, Read};
use crate::model::params::ParamValues;
use crate::model::report::Verdict;
use crate::model::template::CallerText;
use crate::render::apply::{job_header, summary};
use crate::render::escape::one_line;
use crate::render::plan::{render, Format};

use super::args::{
    ApplyArgs, MaintenanceAction, MaintenanceArgs, ReportFormat, RetryArgs, ServiceArgs,
};
use super::logging::{Both, JobLog};
use super::observe::RunObserve;
use super::progress::{Bars, Plain};
use super::runtime;

/// `drover apply`.
pub(super) fn apply(a: &ApplyArgs) -> Result<i32> {
    if let Some(url) = &a.server {
        return super::sent::apply(a, url);
    }
    let (Some(playbook), Some(inventory)) = (&a.playbook, &a.inventory) else {
        return Err(Error::Usage(
            "apply needs PLAYBOOK and -i INVENTORY (or --server URL)".into(),
        ));
    };
    let observe = RunObserve::new(a.metrics_file.as_deref(), &a.notify)?;
    let saved = a.plan.as_deref().map(SavedPlan::load).transpose()?;
    let limit = match &saved {
        Some(s) => s.limit(a.limit.as_deref())?,
        None => a.limit.as_deref(),
    };
    // A resume's journal is read once: its params, then what it keeps.
    let resumed = a
        .resume
        .as_deref()
        .map(crate::engine::journal::read)
        .transpose()?;
    let values =
        recorded_params(a.retry.retry.as_deref(), resumed.as_ref()).overlaid(a.params.values()?);
    let values = match (&saved, &a.plan) {
        (Some(s), Some(path)) => s.param_values(path, values),
        _ => values,
    };
    let job = Job::load_with(playbook, inventory, limit, a.modules.as_deref(), &values)?;
    let mut opts = ApplyOptions {
        forks: a.work.forks,
        step_timeout: a.timeout,
        // The drift re-read happens under the lock: bounded by --timeout
        // like the steps, and by the read commands' 60 s at most.
        read_timeout: a.timeout.min(crate::remote::fanout::Reach::DEFAULT_TIMEOUT),
        allow_protected: a.allow_protected,
        ignore_window: a.ignore_window,
        lock: Some(playbook.clone()),
        wait_lock: a.wait_lock,
        // A batch waits for room in its groups (`group_by`) as long as
        // the run would wait for its lock.
        claim_wait: a.wait_lock.unwrap_or_default(),
        report: a.report.clone(),
        saved,
        allow_drift: a.allow_drift,
        carry: retry_carry(&job, &a.retry)?,
        failure_logs: a.failure_logs,
        ..ApplyOptions::default()
    };
    if let (Some(path), Some(read)) = (&a.resume, resumed) {
        resume(&job, path, read, a.retry.retry_changed, &mut opts)?;
    }
    let nats = (!a.nats.nats.is_empty()).then_some((&a.nats, a.claim_ttl));
    run(&job, &opts, a.format, &observe, nats)
}

/// The parameter values a retry or a resume starts from: those its
/// journal recorded (all but the secret ones, which must be given again);
/// values given on the command line win.
pub(super) fn recorded_params(retry: Option<&Path>, resumed: Option<&Read>) -> ParamValues {
    let params = match (retry, resumed) {
        (_, Some(read)) => read.header.params.clone(),
        (Some(report), None) => {
            match crate::engine::journal::read_header(&Journal::beside(report)) {
                Ok(header) => header.params,
                // No journal beside a report: the values must be given
                // again, and the digest check says so if they differ.
                Err(_) => return ParamValues::none(),
            }
        }
        (None, None) => return ParamValues::none(),
    };
    ParamValues::from_request(params.into_iter().collect())
}

/// `--retry REPORT`: what the retry keeps of that report, refused when the
/// job's inputs changed since (unless `--retry-changed`).
pub(super) fn retry_carry(job: &Job, a: &RetryArgs) -> Result<Option<Carry>> {
    let Some(path) = &a.retry else {
        return Ok(None);
    };
    let parent = crate::engine::journal::load_report(path)?;
    check_inputs(job, parent.inputs.as_ref(), "report", a.retry_changed)?;
    Ok(Some(Carry::retry(job, &parent, a.retry_from_start)))
}

/// `--resume JOURNAL`: continue that journal, its job id and its report.
fn resume(
    job: &Job,
    path: &Path,
    read: Read,
    allow_changed: bool,
    opts: &mut ApplyOptions,
) -> Result<()> {
    let (carry, header) = resume_journal(job, path, read, allow_changed)?;
    opts.carry = Some(carry);
    if opts.report.is_none() {
        opts.report = header.files.report.as_deref().map(PathBuf::from);
    }
    opts.resume = Some(Continue {
        journal: path.to_path_buf(),
        header,
    });
    Ok(())
}

/// What resuming the journal at `path` (read as `read`) keeps, and its
/// header; refused when the run ended or its inputs changed.
pub(super) fn resume_journal(
    job: &Job,
    path: &Path,
    read: Read,
    allow_changed: bool,
) -> Result<(Carry, Header)> {
    if let Some(end) = read.ended() {
        return Err(Error::Usage(format!(
            "job {} in {} ended {end}: there is nothing to resume; to run again what did not end ok, use --retry with its report",
            read.header.job_id,
            path.display()
        )));
    }
    resume_carry(job, read, allow_changed)
}

/// `drover service ACTION UNIT --target SEL [--dry-run]`.
pub(super) fn service(a: &ServiceArgs, color: bool) -> Result<i32> {
    let op = AdHoc::Service {
        action: a.action.into(),
        unit: a.unit.clone(),
        target: a.target.clone(),
    };
    let job = Job::new(
        op.playbook()?,
        crate::engine::inventory::load(&a.inv.inventory)?,
        None,
    )?;
    if a.dry_run {
        let opts = PlanOptions {
            reach: super::reach(a.work.forks, a.timeout),
            limit: None,
            allow_protected: a.allow_protected,
            keep_facts: false,
            carry: None,
        };
        let planned = runtime()?.block_on(crate::engine::plan::plan(
            &job,
            FactsSource::Live,
            &opts,
            &NoEvents,
        ))?;
        let (plan, incomplete) = (planned.plan, planned.incomplete);
        let format = match a.format {
            ReportFormat::Json => Format::Json,
            ReportFormat::Text => Format::Text,
        };
        out!("{}", render(&plan, format, color));
        let verdict = if incomplete {
            Verdict::Unreachable
        } else {
            Verdict::Ok
        };
        return Ok(verdict.exit_code());
    }
    let opts = ApplyOptions {
        forks: a.work.forks,
        step_timeout: a.timeout,
        allow_protected: a.allow_protected,
        report: a.report.clone(),
        ..ApplyOptions::default()
    };
    run(&job, &opts, a.format, &RunObserve::none(), None)
}

/// `drover maintenance enable|disable [UNIT] --target SEL`: the same
/// engine and report as `apply`.
pub(super) fn maintenance(a: &MaintenanceArgs) -> Result<i32> {
    let op = AdHoc::Maintenance {
        enable: a.action == MaintenanceAction::Enable,
        unit: a.unit.clone(),
        target: a.target.clone(),
        reason: a.reason.clone().map(CallerText::new),
    };
    let job = Job::new(
        op.playbook()?,
        crate::engine::inventory::load(&a.inv.inventory)?,
        None,
    )?;
    let opts = ApplyOptions {
        forks: a.work.forks,
        step_timeout: a.timeout,
        report: a.report.clone(),
        ..ApplyOptions::default()
    };
    run(&job, &opts, a.format, &RunObserve::none(), None)
}

/// Run a job with a progress display fit for where stdout goes, print the
/// report or its summary, leave what `observe` asks for, and return the
/// exit code.
fn run(
    job: &Job,
    opts: &ApplyOptions,
    format: ReportFormat,
    observe: &RunObserve,
    nats: Option<(&crate::cmd::cluster::NatsArgs, Duration)>,
) -> Result<i32> {
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let sink: Box<dyn EventSink> = match (format, tty) {
        (ReportFormat::Json, _) => Box::new(NoEvents),
        (ReportFormat::Text, true) => Box::new(Bars::default()),
        (ReportFormat::Text, false) => Box::new(Plain),
    };
    let rt = runtime()?;
    let stop = Arc::new(StopFlag::default());
    let applied = rt.block_on(async {
        let signals = tokio::spawn(watch_signals(stop.clone()));
        let started = HeaderOnce::new(format == ReportFormat::Text, sink.as_ref());
        let log = JobLog::new(super::logging::for_machines());
        let mut opts = opts.clone();
        if let Some((n, ttl)) = nats {
            // Units and `group_by` room alike are counted where every
            // replica and every other `apply --nats` counts them.
            let store = cluster_claims(n, ttl).await?;
            opts.claims = Some(store.clone());
            opts.unit_claims = Some(store);
        }
        let applied = run_apply(job, &opts, &stop, &Both(&started, &log)).await;
        signals.abort();
        applied
    });
    observe.write_metrics(job, applied.as_ref().map(|a| &a.report));
    let applied = applied?;
    if !applied.drift.is_empty() {
        let list: Vec<String> = applied
            .drift
            .iter()
            .map(|d| one_line(&d.to_string()).into_owned())
            .collect();
        eprintln!(
            "drover: warning: {} unit(s) drifted since the plan was made, applying anyway (--allow-drift): {}",
            list.len(),
            list.join("; ")
        );
    }
    match format {
        ReportFormat::Json => {
            let text = serde_json::to_string_pretty(&applied.report)
                .map_err(|e| Error::Internal(format!("cannot serialise the report: {e}")))?;
            outln!("{text}");
        }
        ReportFormat::Text => out!(
            "{}",
            summary(
                &applied.report,
                opts.report.as_deref(),
                applied.journal.as_deref()
            )
        ),
    }
    // After the summary: retries may take a while, and never change the code.
    rt.block_on(observe.notify(&applied.report));
    Ok(Verdict::of_report(&applied.report).exit_code())
}

/// Prints the job's header line when the run starts, then passes events on.
struct HeaderOnce<'a> {
    text: bool,
    inner: &'a dyn EventSink,
}

impl<'a> HeaderOnce<'a> {
    fn new(text: bool, inner: &'a dyn EventSink) -> Self {
        HeaderOnce { text, inner }
    }
}

impl EventSink for HeaderOnce<'_> {
    fn event(&self, e: &crate::engine::events::Event) {
        if let (true, crate::engine::events::Event::JobStarted { job_id, name }) = (self.text, e) {
            outln!("{}", job_header(job_id, name));
        }
        self.inner.event(e);
    }
}

async fn watch_signals(stop: Arc<StopFlag>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; SIGTERM will kill the run");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if stop.is_stopped() {
            eprintln!("drover: {name} again: still waiting for in-flight systemd jobs to finish");
        } else {
            eprintln!("drover: {name}: starting nothing new, waiting for in-flight systemd jobs");
        }
        stop.stop(name);
    }
}

/// The cluster's claims bucket, as this command line (named by host and
/// pid in what it holds).
async fn cluster_claims(
    n: &crate::cmd::cluster::NatsArgs,
    ttl: Duration,
) -> Result<Arc<dyn crate::engine::claims::ClaimStore>> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let by = format!("drover apply on {} pid {}", host.trim(), std::process::id());
    let nats = n
        .options("drover-apply")
        .connect()
        .await
        .map_err(unclaimed)?;
    let store = crate::engine::cluster::claims::KvClaims::open(&nats, ttl, by)
        .await
        .map_err(unclaimed)?;
    Ok(Arc::new(store))
}

/// The claims could not be reached: the run does not start.
fn unclaimed(e: crate::remote::nats::NatsError) -> Error {
    Error::Internal(format!(
        "{e}; the run did not start and nothing changed (its units are claimed through --nats before any host is touched)"
    ))
}
