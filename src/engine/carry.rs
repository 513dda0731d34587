//! What a run takes over from an earlier one instead of doing again: a
//! retry keeps what already ended `ok` (and leaves the hosts that did
//! alone), a resume keeps every final result of the journal it continues
//! and knows which changes were in flight when that run died. Both are one
//! [`Carry`], which the walk consults before a host's work in a step, so
//! plan and apply, the command line, the server and a cluster's takeover
//! share one mechanism.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::engine::job::Job;
use crate::model::error::{Error, Refusal, Result};
use crate::model::journal::{Intent, Read};
use crate::model::outcome::{SkipReason, Status};
use crate::model::report::{Inputs, JobReport, JobResult};

/// What a step × host takes over.
#[derive(Debug, Clone)]
pub(crate) enum Carried {
    /// The earlier result stands.
    Result(JobResult),
    /// The host is not part of this retry and has no earlier result for
    /// the step: it is skipped.
    Skip(SkipReason),
}

/// Where the carried results come from, which decides whether they are
/// written again: a retry's journal is new, a resume's already holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--retry`: a new job, `retry_of` this one.
    Retry(String),
    /// `--resume`: the same job, continued.
    Resume,
    /// A cluster's takeover: the same job, continued by another replica
    /// from the results in the jobs stream. What its dead coordinator had
    /// in flight is not known there: every step × host without a result
    /// may have been under way, and its owner reads the host (the intent
    /// the change left on it) before doing anything.
    Takeover,
}

/// Results and in-flight changes taken over from an earlier run of the same
/// job, by (step index, host index).
#[derive(Debug, Clone)]
pub struct Carry {
    entries: HashMap<(usize, usize), Carried>,
    in_flight: HashMap<(usize, usize), Intent>,
    /// Where they come from.
    pub origin: Origin,
}

impl Carry {
    /// What a retry of `parent` keeps. Hosts whose results all ended `ok`
    /// (or skipped by `when`, maintenance or the selector) are left alone;
    /// on the others, what ended `ok` is kept unless it depends on a step
    /// that runs again (everything runs again with `from_start`). An `_any`
    /// step whose pick ended `ok` is kept; otherwise it picks again.
    pub fn retry(job: &Job, parent: &JobReport, from_start: bool) -> Carry {
        let index = Index::of(job);
        let order = job.dag.order();
        let mut by: BTreeMap<(usize, usize), &JobResult> = BTreeMap::new();
        for r in &parent.results {
            if let Some(k) = index.key(&r.step, &r.hostname) {
                by.insert(k, r);
            }
        }
        // The hosts to retry, and on each the steps that run again: those
        // that did not end ok there and the steps that depend on them (all
        // of them with `from_start`). A step beside them that ended ok (a
        // root that ran alongside) is not repeated.
        let mut retried: BTreeSet<usize> = BTreeSet::new();
        for (&(_, h), r) in &by {
            if r.needs_retry() {
                retried.insert(h);
            }
        }
        let deps: Vec<Vec<usize>> = (0..job.playbook.steps.len())
            .map(|si| job.dag.dependencies(si))
            .collect();
        let mut rerun: BTreeSet<(usize, usize)> = BTreeSet::new();
        for &h in &retried {
            for &si in order {
                let bad = by.get(&(si, h)).is_some_and(|r| r.needs_retry());
                let after_bad = deps[si].iter().any(|d| rerun.contains(&(h, *d)));
                if from_start || bad || after_bad {
                    rerun.insert((h, si));
                }
            }
        }
        let mut entries = HashMap::new();
        for &si in order {
            let ex = &job.expanded[si];
            // An `_any` group whose pick ended ok is done; one that did not
            // picks again, among all of its candidates.
            let mut repick: BTreeSet<usize> = BTreeSet::new();
            for g in &ex.targets.any {
                let kept = g
                    .iter()
                    .any(|&h| by.get(&(si, h)).is_some_and(|r| r.status == Status::Ok));
                if !kept {
                    repick.extend(g.iter().copied());
                }
            }
            for t in &ex.tasks {
                let h = t.host;
                let parent_result = by.get(&(si, h));
                let repicks =
                    repick.contains(&h) && !parent_result.is_some_and(|r| r.status == Status::Ok);
                let runs = rerun.contains(&(h, si)) || repicks;
                if runs {
                    continue;
                }
                let carried = match parent_result {
                    Some(r) => {
                        let mut r = (*r).clone();
                        r.carried_from.get_or_insert_with(|| parent.job_id.clone());
                        Carried::Result(r)
                    }
                    None if retried.contains(&h) => continue,
                    None => Carried::Skip(SkipReason::NotRetried(parent.job_id.clone())),
                };
                entries.insert((si, h), carried);
            }
        }
        Carry {
            entries,
            in_flight: HashMap::new(),
            origin: Origin::Retry(parent.job_id.clone()),
        }
    }

    /// What a resume of `journal` keeps: every final result, and the
    /// changes in flight when the run stopped (the unit is read again
    /// before one is repeated).
    pub fn resume(job: &Job, journal: &Read) -> Carry {
        let index = Index::of(job);
        let mut entries = HashMap::new();
        for r in journal.final_results() {
            if let Some(k) = index.key(&r.step, &r.hostname) {
                entries.insert(k, Carried::Result(r.clone()));
            }
        }
        let in_flight = journal
            .in_flight
            .values()
            .filter_map(|i| Some((index.key(&i.step, &i.host)?, i.clone())))
            .collect();
        Carry {
            entries,
            in_flight,
            origin: Origin::Resume,
        }
    }

    /// What the step × host takes over, if anything.
    pub(crate) fn get(&self, si: usize, h: usize) -> Option<&Carried> {
        self.entries.get(&(si, h))
    }

    /// The change that was under way on the step × host when the last run
    /// stopped.
    pub(crate) fn in_flight(&self, si: usize, h: usize) -> Option<&Intent> {
        self.in_flight.get(&(si, h))
    }

    /// The host an `_any` group of a step already picked: the one with a
    /// result or a change in flight there.
    pub(crate) fn picked(&self, si: usize, group: &[usize]) -> Option<usize> {
        group.iter().copied().find(|&h| {
            matches!(self.get(si, h), Some(Carried::Result(_))) || self.in_flight(si, h).is_some()
        })
    }

    /// Whether the step × host's work may have been under way when the
    /// last run stopped, and must be read before it is done again.
    pub(crate) fn maybe_in_flight(&self, si: usize, h: usize) -> bool {
        self.in_flight(si, h).is_some() || (self.origin == Origin::Takeover && !self.settles(si, h))
    }

    /// Whether nothing is left to do for the step × host.
    pub(crate) fn settles(&self, si: usize, h: usize) -> bool {
        self.get(si, h).is_some()
    }
}

/// Refuse to retry or resume when the playbook, the inventory or the
/// parameters changed since `then` (unless `allow`).
pub fn check_inputs(job: &Job, then: Option<&Inputs>, what: &str, allow: bool) -> Result<()> {
    if allow {
        return Ok(());
    }
    let now = job.inputs();
    let Some(then) = then else {
        return Err(Error::Refused(Refusal::InputsChanged(format!(
            "the {what} records no input digests (made by an older drover)"
        ))));
    };
    let mut changed = Vec::new();
    for (name, a, b) in [
        ("playbook", &then.playbook, &now.playbook),
        ("inventory", &then.inventory, &now.inventory),
        ("params", &then.params, &now.params),
    ] {
        if a != b {
            changed.push(name);
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(Refusal::InputsChanged(format!(
        "the {} changed since the {what} was written",
        changed.join(", ")
    ))))
}

/// Step ids and host names to indices.
struct Index<'a> {
    steps: HashMap<&'a str, usize>,
    hosts: HashMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn of(job: &'a Job) -> Self {
        Index {
            steps: job
                .playbook
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect(),
            hosts: job
                .inventory
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.name.as_str(), i))
                .collect(),
        }
    }

    fn key(&self, step: &str, host: &str) -> Option<(usize, usize)> {
        Some((*self.steps.get(step)?, *self.hosts.get(host)?))
    }
}
