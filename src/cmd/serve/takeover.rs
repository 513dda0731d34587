//! Cluster mode: taking over a job whose coordinating replica died. The
//! job is rebuilt from its lease (the playbook's text, the parameters,
//! the digests, the key's hosts), its journal from the results in the
//! jobs stream, and it goes on as a resume goes on: what ended stands,
//! and every step × host without a result is read on the host (the intent
//! a change leaves there) before anything is done again.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::apply::{header, ApplyOptions, Continue};
use crate::engine::carry::{Carry, Origin};
use crate::engine::claims::claims_of;
use crate::engine::cluster::coordination::Takeover;
use crate::engine::cluster::jobs::ClusterJobs;
use crate::engine::job::Job;
use crate::engine::job_store::JobStatus;
use crate::engine::journal::Journal;
use crate::model::cluster::JobLease;
use crate::model::journal::is_final;
use crate::model::params::ParamValues;
use crate::model::playbook::Playbook;
use crate::model::report::{JobReport, RunOutcome};
use crate::remote::nats::Nats;

use super::state::AppState;

/// How long a takeover waits to have followed the stream to its end.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Take `t`'s job over on this replica.
pub async fn take_over(state: Arc<AppState>, jobs: Arc<ClusterJobs>, nats: Nats, t: Takeover) {
    let id = t.lease.job.job_id.clone();
    if !jobs.caught_up(&nats, CATCH_UP).await {
        tracing::warn!(job = %id, "the jobs stream is not followed to its end yet: results missing here are read on their hosts again");
    }
    let mirrored = jobs.mirrored(&id);
    if let Some(e) = mirrored.as_ref().filter(|e| e.view().outcome != JobStatus::Running) {
        tracing::info!(job = %id, outcome = ?e.view().outcome, "the job had ended before its coordinator died: its lease is given back");
        jobs.give_back(t.holding).await;
        return;
    }
    let (results, started_at) = match &mirrored {
        Some(e) => (e.results_since(0).0, e.view().started_at),
        None => (Vec::new(), crate::model::now_rfc3339()),
    };
    let job = match rebuild(&state, &t.lease) {
        Ok(j) => j,
        Err(why) => {
            tracing::error!(job = %id, from = %t.from, "the job cannot be taken over: {why}");
            let report = JobReport {
                job_id: id.clone(),
                playbook: mirrored.map(|e| e.view().playbook).unwrap_or_default(),
                started_at,
                finished_at: crate::model::now_rfc3339(),
                outcome: RunOutcome::Interrupted,
                results,
                inputs: None,
                retry_of: t.lease.retry_of.clone(),
            };
            jobs.abandon(t.holding, report).await;
            return;
        }
    };
    let path = jobs.journal_path(&id);
    let mut head = header(&job, &id, t.lease.retry_of.clone());
    head.started_at = started_at;
    let carry = match Journal::create(&path, &head) {
        Ok(journal) => {
            for r in results.iter().filter(|r| is_final(r)) {
                journal.record(r);
            }
            drop(journal);
            crate::engine::journal::read(&path).map(|read| {
                let mut c = Carry::resume(&job, &read);
                c.origin = Origin::Takeover;
                c
            })
        }
        Err(e) => Err(e),
    };
    let carry = match carry {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(job = %id, "the job's journal cannot be written here: {}; the lease is given back for another replica", e.details());
            jobs.give_back(t.holding).await;
            return;
        }
    };
    let carried: HashSet<(String, String)> = results
        .iter()
        .filter(|r| is_final(r))
        .map(|r| (r.step.clone(), r.hostname.clone()))
        .collect();
    // The dead coordinator's claims age out within the TTL.
    let wait = t.ttl * 2 + Duration::from_secs(5);
    let held = match state.claims.take(claims_of(&job), &id, wait).await {
        Ok(h) => h,
        Err(b) => {
            tracing::error!(job = %id, holder = %b.job_id, "the job's units stay claimed by another job: the lease is given back");
            jobs.give_back(t.holding).await;
            return;
        }
    };
    let cluster = state.cluster.as_ref();
    let opts = ApplyOptions {
        forks: state.settings.forks,
        step_timeout: Duration::from_millis(t.lease.job.step_timeout_ms),
        read_timeout: state.settings.read_timeout,
        allow_protected: t.lease.job.allow_protected,
        ignore_window: t.lease.ignore_window,
        pool: Some(state.pool.clone()),
        job_id: Some(id.clone()),
        carry: Some(carry),
        resume: Some(Continue {
            journal: path,
            header: head,
        }),
        failure_logs: t.lease.job.failure_logs,
        claims: Some(state.room()),
        claim_wait: wait,
        wait_lock: Some(wait),
        tasks: cluster.map(|c| c.tasks.clone()),
        unit_claims: cluster.map(|c| c.units.clone()),
        scope: t.lease.scope.clone(),
        ..ApplyOptions::default()
    };
    let have = results.len();
    match jobs
        .continue_taken(job, opts, held, t.holding, carried, have)
        .await
    {
        Ok(_) => tracing::info!(job = %id, from = %t.from, carried = have, "job taken over: it goes on here"),
        Err(e) => tracing::error!(job = %id, "the job taken over did not start here: {}", e.details()),
    }
}

/// The job as its lease describes it, checked against its digests.
fn rebuild(state: &AppState, l: &JobLease) -> Result<Job, String> {
    if l.secret {
        return Err(format!(
            "it was started with secret parameters, which no bucket holds: POST /job/{}/retry with them",
            l.job.job_id
        ));
    }
    let loaded = state.loaded();
    if loaded.inventory.digest != l.job.inventory {
        return Err("this replica holds another inventory than the job's: reload the replicas from the same file".into());
    }
    let values = ParamValues::from_request(l.job.params.clone().into_iter().collect());
    let pb = Playbook::from_str_with(&l.job.text, Path::new(&l.job.label), None, &values)
        .map_err(|e| format!("its playbook does not load here: {}", e.details()))?;
    if pb.digest != l.job.playbook {
        return Err("its playbook text does not match its digest".into());
    }
    let mut inventory = loaded.inventory.clone();
    if let Some(scope) = &l.scope {
        let scope: HashSet<&str> = scope.iter().map(String::as_str).collect();
        inventory.hosts.retain(|h| scope.contains(h.name.as_str()));
    }
    let job = Job::new(pb, inventory, l.job.limit.as_deref())
        .map_err(|e| format!("it does not load here: {}", e.details()))?;
    if job.inputs().params != l.job.params_digest {
        return Err("its parameters do not match their digest".into());
    }
    Ok(job)
}
