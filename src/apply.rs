//! `drover apply` and `drover service`: the unattended-safety wrapper
//! around the executor (window, protected units, lock, journal, signals,
//! report, exit code) and the person-facing progress.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use owo_colors::OwoColorize;

use crate::cli::{self, ApplyArgs, Loaded, ReportFormat, ServiceAction, ServiceArgs};
use crate::error::{Error, Result};
use crate::exec::{self, Progress, RunSpec, StopFlag};
use crate::plan::Status;
use crate::report::{JobReport, JobResult, Journal};

/// Off a TTY (cron, CI): one plain line per result, no colour, no bar.
struct PlainProgress {
    lines: bool,
}

impl Progress for PlainProgress {
    fn step_started(&self, step: &str, hosts: usize) {
        if self.lines {
            outln!("step {step}: {hosts} host(s)");
        }
    }
    fn result(&self, r: &JobResult) {
        if self.lines {
            outln!("{}", result_line(r, false));
        }
    }
    fn step_finished(&self, _step: &str) {}
}

/// On a TTY: a bar per step on stderr, result lines above the bars.
struct TtyProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for TtyProgress {
    fn step_started(&self, step: &str, hosts: usize) {
        let bar = self.multi.add(ProgressBar::new(hosts as u64));
        let style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(step.to_string());
        if let Ok(mut b) = self.bars.lock() {
            b.insert(step.to_string(), bar);
        }
    }
    fn result(&self, r: &JobResult) {
        let _ = self.multi.println(result_line(r, true));
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(&r.step).cloned()) {
            bar.inc(1);
        }
    }
    fn step_finished(&self, step: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(step).cloned()) {
            bar.finish_with_message("done");
        }
    }
}

/// No output while running (`--format json`: stdout is the report).
struct Silent;

impl Progress for Silent {
    fn step_started(&self, _: &str, _: usize) {}
    fn result(&self, _: &JobResult) {}
    fn step_finished(&self, _: &str) {}
}

fn result_line(r: &JobResult, color: bool) -> String {
    let word = match (r.status, r.changed) {
        (Status::Ok, true) => "changed",
        (Status::Ok, false) => "ok",
        (Status::Skipped, _) => "skipped",
        (Status::Failed, _) => "FAILED",
    };
    let word = match (color, r.status, r.changed) {
        (false, ..) => word.to_string(),
        (true, Status::Ok, true) => word.yellow().to_string(),
        (true, Status::Ok, false) => word.green().to_string(),
        (true, Status::Skipped, _) => word.dimmed().to_string(),
        (true, Status::Failed, _) => word.red().bold().to_string(),
    };
    let mut s = format!(
        "{:<14} {:<16} {:<24} {:<16} {} ({} ms)",
        r.hostname, r.step, r.name, r.action, word, r.duration_ms
    );
    if let Some(e) = &r.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// Where the journal goes without `--report`: the state directory.
fn default_journal(job_id: &str) -> PathBuf {
    let base = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/drover/jobs")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("drover/jobs")
    };
    base.join(format!("{job_id}.journal"))
}

/// How a run reports and where its files go.
pub struct Output {
    /// text or json on stdout.
    pub format: ReportFormat,
    /// Colour for people.
    pub color: bool,
    /// `--report FILE`.
    pub report: Option<PathBuf>,
    /// Hosts in flight.
    pub forks: usize,
    /// Bound on one host's work in one step.
    pub step_timeout: std::time::Duration,
}

/// Run a loaded model end to end and return the exit code.
pub fn run_loaded(l: &Loaded, out: &Output) -> Result<i32> {
    let job_id = uuid::Uuid::new_v4().to_string();
    let journal_path = match &out.report {
        Some(r) => Journal::beside(r),
        None => default_journal(&job_id),
    };
    let journal = match Journal::create(&journal_path, &job_id, &l.playbook.name) {
        Ok(j) => Some(j),
        // With --report a journal that cannot be written is fatal: the
        // promise is that a killed run loses nothing.
        Err(e) if out.report.is_some() => return Err(e),
        Err(e) => {
            tracing::warn!("no journal for this run: {}", e.details());
            None
        }
    };
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let progress: Box<dyn Progress> = match (out.format, tty) {
        (ReportFormat::Json, _) => Box::new(Silent),
        (ReportFormat::Text, true) => Box::new(TtyProgress {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }),
        (ReportFormat::Text, false) => Box::new(PlainProgress { lines: true }),
    };
    if out.format == ReportFormat::Text {
        outln!("job {job_id}: {}", l.playbook.name);
    }
    let rt = crate::live::runtime()?;
    let stop = Arc::new(StopFlag::default());
    let report = rt.block_on(async {
        let signals = tokio::spawn(watch_signals(stop.clone()));
        let report = exec::execute(RunSpec {
            loaded: l,
            forks: out.forks,
            stop: &stop,
            journal: journal.as_ref(),
            progress: progress.as_ref(),
            job_id: job_id.clone(),
            step_timeout: out.step_timeout,
        })
        .await;
        signals.abort();
        report
    });
    if let Some(path) = &out.report {
        report.save(path)?;
    }
    print_report(&report, out, journal.as_ref().map(|j| j.path.as_path()))?;
    Ok(report.exit_code())
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

fn print_report(report: &JobReport, out: &Output, journal: Option<&Path>) -> Result<()> {
    match out.format {
        ReportFormat::Json => {
            let text = serde_json::to_string_pretty(report)
                .map_err(|e| Error::Internal(format!("cannot serialise the report: {e}")))?;
            outln!("{text}");
        }
        ReportFormat::Text => {
            let (changed, ok, skipped, failed) = report.counts();
            outln!(
                "job {} {}: {changed} changed, {ok} ok, {skipped} skipped, {failed} failed",
                report.job_id,
                report.outcome
            );
            if let Some(r) = &out.report {
                outln!("report: {}", r.display());
            }
            if let Some(j) = journal {
                outln!("journal: {}", j.display());
            }
        }
    }
    Ok(())
}

fn parse_timeout(raw: &str) -> Result<std::time::Duration> {
    crate::parse_duration(raw).map_err(|m| Error::Usage(format!("--timeout: {m}")))
}

/// `drover apply`.
pub fn apply_cmd(a: &ApplyArgs, color: bool) -> Result<i32> {
    let saved = a
        .plan
        .as_deref()
        .map(crate::saved::SavedPlan::load)
        .transpose()?;
    let limit = match &saved {
        Some(s) => s.limit(a.limit.as_deref())?,
        None => a.limit.as_deref(),
    };
    let l = cli::load(&a.playbook, &a.inventory, limit)?;
    if let Some(s) = &saved {
        s.check_inputs(&l)?;
    }
    if let Some(w) = &l.playbook.window {
        if !a.ignore_window && !w.contains(chrono::Utc::now()) {
            return Err(Error::Refused(format!(
                "outside the window of {} ({}); pass --ignore-window to run anyway",
                a.playbook.display(),
                w.describe()
            )));
        }
    }
    exec::check_protected(&l, a.allow_protected)?;
    let wait = a
        .wait_lock
        .as_deref()
        .map(crate::parse_duration)
        .transpose()
        .map_err(|m| Error::Usage(format!("--wait-lock: {m}")))?;
    let _lock = crate::lock::acquire(&a.playbook, wait)?;
    // Drift is checked under the lock: no other apply of this playbook runs between.
    if let Some(s) = &saved {
        crate::saved::gate(&l, s, a.forks, a.allow_drift)?;
    }
    run_loaded(
        &l,
        &Output {
            format: a.format,
            color,
            report: a.report.clone(),
            forks: a.forks,
            step_timeout: parse_timeout(&a.timeout)?,
        },
    )
}

/// The one-step playbook of an ad-hoc `drover service` command. Values are
/// validated first and written as JSON strings, which YAML reads verbatim.
pub fn service_playbook(s: &ServiceArgs) -> Result<String> {
    let unit = crate::unit::UnitName::parse(&s.unit)
        .map_err(|m| Error::Usage(format!("UNIT `{}`: {m}", s.unit)))?;
    cli::parse_selector("--target", &s.target)?;
    let state = match s.action {
        ServiceAction::Start => "started",
        ServiceAction::Stop => "stopped",
        ServiceAction::Restart => "restarted",
        ServiceAction::Reload => "reloaded",
    };
    let q = |v: &str| serde_json::Value::from(v).to_string();
    Ok(format!(
        "name: {}\nsteps:\n  - id: {}\n    target: {}\n    service: {{ name: {}, state: {state} }}\n",
        q(&format!("drover service {state} {unit}")),
        q(&format!("{state}-{}", unit.as_str().replace(['@', ':', '\\'], "_"))),
        q(&s.target),
        q(unit.as_str())
    ))
}

/// `drover service ACTION UNIT --target SEL`.
pub fn service_cmd(s: &ServiceArgs, color: bool) -> Result<i32> {
    let l = cli::load_generated(&service_playbook(s)?, "<drover service>", &s.inventory)?;
    exec::check_protected(&l, s.allow_protected)?;
    if s.dry_run {
        let (facts, code) = crate::live::live_plan_facts(&l.inventory, &l.expanded, s.forks)?;
        let plan = crate::plan::simulate(
            &l.playbook,
            &l.inventory,
            &l.dag,
            &l.expanded,
            &facts,
            crate::plan::PlanLabels {
                facts_source: "live",
                limit: None,
            },
        )?;
        let format = match s.format {
            ReportFormat::Json => crate::diff::Format::Json,
            ReportFormat::Text => crate::diff::Format::Text,
        };
        out!("{}", crate::diff::render(&plan, format, color));
        return Ok(code);
    }
    run_loaded(
        &l,
        &Output {
            format: s.format,
            color,
            report: s.report.clone(),
            forks: s.forks,
            step_timeout: parse_timeout(&s.timeout)?,
        },
    )
}
