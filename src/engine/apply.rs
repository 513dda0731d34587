//! `apply`: the unattended-safety wrapper around the executor. Window,
//! protected units, the playbook's lock and a saved plan's drift are
//! checked before anything runs; the journal records each result as it
//! happens and the report is written at the end, also when interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::carry::{Carry, Origin};
use crate::engine::clock::Clock;
use crate::engine::events::{Event, EventSink, StopFlag};
use crate::engine::execute::{execute, RunSpec};
use crate::engine::job::Job;
use crate::engine::journal::{save_report, Journal};
use crate::engine::saved::{Drift, SavedPlan};
use crate::model::decide::check_protected;
use crate::model::error::{Error, Refusal, Result};
use crate::model::journal::{Files, Header, Read, StepShape};
use crate::model::report::JobReport;
use crate::remote::fanout::Reach;
use crate::remote::pool::Pool;

/// How to apply a job.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Hosts in flight at once.
    pub forks: usize,
    /// Bound on one host's work in one step.
    pub step_timeout: Duration,
    /// Stop/restart/mask protected units.
    pub allow_protected: bool,
    /// Run outside the playbook's window (and go on when it closes).
    pub ignore_window: bool,
    /// The time the window is checked against, before the run and before
    /// each batch: the system clock unless a caller sets one.
    pub clock: Clock,
    /// Take the playbook's run lock (a playbook file's path), waiting up
    /// to `wait_lock` for it; None: ad-hoc jobs, no lock.
    pub lock: Option<PathBuf>,
    /// How long to wait for the lock (None: refuse at once).
    pub wait_lock: Option<Duration>,
    /// Where the report goes (its journal beside it); None: the journal in
    /// the state directory, no report file.
    pub report: Option<PathBuf>,
    /// Apply only what this saved plan reviewed.
    pub saved: Option<SavedPlan>,
    /// With `saved`: apply although the hosts drifted.
    pub allow_drift: bool,
    /// Bound on one host's read before the run (a saved plan's drift
    /// check), which happens under the lock: a wedged host must not hold
    /// it.
    pub read_timeout: Duration,
    /// Connections kept between runs (the server); None: open and close.
    pub pool: Option<Pool>,
    /// The run's id, when the caller must know it before the run starts
    /// (the server answers with it); None: a new UUID.
    pub job_id: Option<String>,
    /// What an earlier run of this job already did: a retry's results to
    /// keep, or a resume's journal (see [`Carry`](crate::engine::Carry)).
    pub carry: Option<Carry>,
    /// Continue this journal instead of starting one (a resume): the job
    /// keeps its id, its start time and its journal.
    pub resume: Option<Continue>,
    /// When a service step fails on a host, the unit's last this many
    /// journal lines go into that host's result; 0: none.
    pub failure_logs: u32,
    /// Where every (host, unit) the job may touch is claimed before the
    /// run and held to its end: a store other machines share (`apply
    /// --nats`). None: not here (a server claims them before it starts
    /// the job; a lone command line has its lock).
    pub unit_claims: Option<std::sync::Arc<dyn crate::engine::claims::ClaimStore>>,
    /// Where `group_by` claims room: the server's, shared by its jobs;
    /// None: this run's own (its concurrent steps share it).
    pub claims: Option<std::sync::Arc<dyn crate::engine::claims::ClaimStore>>,
    /// How long a batch waits for room in its groups (the server: the
    /// request's `wait`; `drover apply`: `--wait-lock`).
    pub claim_wait: Duration,
    /// Where each host's work runs: None, from this process; else asked of
    /// the host's owner (a cluster's coordinator).
    pub tasks: Option<std::sync::Arc<dyn crate::engine::execute::HostTasks>>,
    /// The hosts the job was built over, when a key scoped to some made
    /// it over fewer than the inventory's: a cluster's takeover rebuilds
    /// it over the same ones. None: the whole inventory.
    pub scope: Option<Vec<String>>,
}

/// How many journal lines a failed result carries unless told otherwise.
pub const DEFAULT_FAILURE_LOGS: u32 = 10;

/// The journal a resume continues.
#[derive(Debug, Clone)]
pub struct Continue {
    /// Its path.
    pub journal: PathBuf,
    /// Its header.
    pub header: Header,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            forks: 16,
            step_timeout: Duration::from_secs(600),
            allow_protected: false,
            ignore_window: false,
            clock: Clock::system(),
            lock: None,
            wait_lock: None,
            report: None,
            saved: None,
            allow_drift: false,
            read_timeout: Reach::DEFAULT_TIMEOUT,
            pool: None,
            job_id: None,
            carry: None,
            resume: None,
            failure_logs: DEFAULT_FAILURE_LOGS,
            unit_claims: None,
            claims: None,
            claim_wait: Duration::ZERO,
            tasks: None,
            scope: None,
        }
    }
}

/// What an apply produced besides its report.
#[derive(Debug)]
pub struct Applied {
    /// The report (also in `report` when a path was given).
    pub report: JobReport,
    /// Where the journal is, if one could be written.
    pub journal: Option<PathBuf>,
    /// Drift of a saved plan let through by `allow_drift`.
    pub drift: Vec<Drift>,
}

/// Apply a job: refuse what must be refused before anything connects,
/// take the lock, run, write the report. `stop` ends the run gracefully.
pub async fn apply(
    job: &Job,
    opts: &ApplyOptions,
    stop: &StopFlag,
    events: &dyn EventSink,
) -> Result<Applied> {
    if let Some(s) = &opts.saved {
        s.check_inputs(job)?;
    }
    if let Some(w) = &job.playbook.window {
        if !opts.ignore_window && !w.contains(opts.clock.now()) {
            return Err(Error::Refused(Refusal::Window {
                playbook: job.playbook.path.clone(),
                window: w.describe(),
            }));
        }
    }
    check_protected(
        &job.playbook,
        &job.inventory,
        &job.expanded,
        opts.allow_protected,
    )?;
    let _lock = match &opts.lock {
        Some(path) => Some(take_lock(path, opts.wait_lock).await?),
        None => None,
    };
    // Drift is checked under the lock: no other apply of this playbook runs between.
    let drift = match &opts.saved {
        Some(s) => {
            let reach = Reach::new(opts.forks, opts.read_timeout).with_pool(opts.pool.clone());
            crate::engine::saved::gate(job, s, reach, opts.allow_drift).await?
        }
        None => Vec::new(),
    };
    let job_id = match &opts.resume {
        Some(c) => c.header.job_id.clone(),
        None => opts
            .job_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    };
    let retry_of = match (&opts.resume, opts.carry.as_ref().map(|c| &c.origin)) {
        (Some(c), _) => c.header.retry_of.clone(),
        (None, Some(Origin::Retry(parent))) => Some(parent.clone()),
        _ => None,
    };
    // After the lock (one run of this file at a time here), before the
    // journal: a refused run leaves nothing behind.
    let units = match &opts.unit_claims {
        Some(store) => {
            let wait = opts.wait_lock.unwrap_or_default();
            let held = store
                .take(crate::engine::claims::claims_of(job), &job_id, wait)
                .await
                .map_err(|b| {
                    Error::Refused(Refusal::Claimed {
                        claim: b.claim.to_string(),
                        job_id: b.job_id,
                    })
                })?;
            Some((store, held))
        }
        None => None,
    };
    let journal = match &opts.resume {
        Some(c) => Some(Journal::append(&c.journal)?),
        None => open_journal(job, opts, &job_id, retry_of.clone())?,
    };
    events.event(&Event::JobStarted {
        job_id: job_id.clone(),
        name: job.playbook.name.clone(),
    });
    let report = execute(RunSpec {
        job,
        forks: opts.forks,
        stop,
        journal: journal.as_ref(),
        events,
        job_id: job_id.clone(),
        step_timeout: opts.step_timeout,
        allow_protected: opts.allow_protected,
        pool: opts.pool.clone(),
        window: job.playbook.window.as_ref().filter(|_| !opts.ignore_window),
        clock: &opts.clock,
        carry: opts.carry.as_ref(),
        failure_logs: opts.failure_logs,
        claims: opts.claims.clone(),
        claim_wait: opts.claim_wait,
        tasks: opts.tasks.clone(),
    })
    .await;
    let mut report = report;
    report.inputs = Some(job.inputs());
    report.retry_of = retry_of;
    if let Some(c) = &opts.resume {
        report.started_at = c.header.started_at.clone();
    }
    if let Some(j) = &journal {
        j.end(report.outcome);
    }
    if let Some(path) = &opts.report {
        save_report(&report, path)?;
    }
    // Given back before the caller hears the run is over, so a run
    // started right after it finds the units free.
    if let Some((store, held)) = units {
        drop(held);
        store.settle().await;
    }
    events.event(&Event::Finished {
        job_id,
        outcome: report.outcome,
    });
    Ok(Applied {
        report,
        journal: journal.map(|j| j.path),
        drift,
    })
}

/// The playbook's lock; waiting for it blocks, so off the async threads.
async fn take_lock(path: &Path, wait: Option<Duration>) -> Result<crate::engine::lock::RunLock> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::engine::lock::acquire(&path, wait))
        .await
        .map_err(|e| Error::Internal(format!("lock task failed: {e}")))?
}

/// The run's journal: beside the report, else in the state directory.
fn open_journal(
    job: &Job,
    opts: &ApplyOptions,
    job_id: &str,
    retry_of: Option<String>,
) -> Result<Option<Journal>> {
    let path = match &opts.report {
        Some(r) => Journal::beside(r),
        None => Journal::default_path(job_id),
    };
    let mut header = header(job, job_id, retry_of);
    header.files.report = opts.report.as_ref().map(|r| absolute(r));
    match Journal::create(&path, &header) {
        Ok(j) => Ok(Some(j)),
        // With a report file a journal that cannot be written is fatal:
        // the promise is that a killed run loses nothing.
        Err(e) if opts.report.is_some() => Err(e),
        Err(e) => {
            tracing::warn!("no journal for this run: {}", e.details());
            Ok(None)
        }
    }
}

/// A journal's header for a run of `job`: its inputs, its hosts and each
/// step's shape, in DAG order.
pub fn header(job: &Job, job_id: &str, retry_of: Option<String>) -> Header {
    let names = |hs: &[usize]| -> Vec<String> {
        hs.iter()
            .map(|&h| job.inventory.hosts[h].name.clone())
            .collect()
    };
    let steps: Vec<StepShape> = job
        .dag
        .order()
        .iter()
        .map(|&si| {
            let step = &job.playbook.steps[si];
            let t = &job.expanded[si].targets;
            let n = t.fixed.len() + t.any.len();
            StepShape {
                step: step.id.clone(),
                hosts: names(&t.fixed),
                any: t.any.len(),
                serial: if step.serial.is_some() {
                    crate::model::decide::batch_size(step, n)
                } else {
                    0
                },
            }
        })
        .collect();
    let mut hosts = std::collections::BTreeSet::new();
    for ex in &job.expanded {
        hosts.extend(ex.targets.candidates());
    }
    let hosts: Vec<usize> = hosts.into_iter().collect();
    Header {
        version: crate::model::journal::VERSION,
        job_id: job_id.to_string(),
        playbook: job.playbook.name.clone(),
        started_at: crate::model::now_rfc3339(),
        files: Files {
            playbook: Some(absolute(&job.playbook.path)),
            inventory: Some(absolute(&job.inventory.path)),
            limit: job.limit.clone(),
            report: None,
        },
        inputs: job.inputs(),
        params: job.params_record(),
        retry_of,
        hosts: names(&hosts),
        steps,
    }
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Refuse to resume `journal` with `job` when its inputs or its hosts are
/// not those the journal was written for (unless `allow_changed`).
pub fn check_resume(job: &Job, header: &Header, allow_changed: bool) -> Result<()> {
    crate::engine::carry::check_inputs(job, Some(&header.inputs), "journal", allow_changed)?;
    let now = self::header(job, &header.job_id, None);
    if allow_changed || (now.hosts == header.hosts && shapes_equal(&now.steps, &header.steps)) {
        return Ok(());
    }
    Err(Error::Refused(Refusal::InputsChanged(
        "the job's hosts or steps are not those of the journal (another --limit?)".into(),
    )))
}

/// What resuming `read`, a journal of `job`, keeps, and its header; refused
/// as [`check_resume`] says. Whether its run ended (nothing to resume) is
/// for the caller to say in its own words.
pub fn resume_carry(job: &Job, read: Read, allow_changed: bool) -> Result<(Carry, Header)> {
    check_resume(job, &read.header, allow_changed)?;
    Ok((Carry::resume(job, &read), read.header))
}

fn shapes_equal(a: &[StepShape], b: &[StepShape]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.step == y.step && x.hosts == y.hosts && x.any == y.any && x.serial == y.serial
        })
}
