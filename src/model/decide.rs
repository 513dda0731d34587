//! The per-host decisions that `plan` and `apply` share, written once: who
//! skips a step and why, which host `_any` may pick, how hosts are batched,
//! when a run aborts, and what `protected` refuses. The plan calls these
//! over facts; the executor over what it reads from hosts. Keeping one copy
//! is what lets a plan promise what apply will do.

use crate::model::error::{Error, Refusal, Result};
use crate::model::expand::{goal_of, ExpandedStep, HostTask};
use crate::model::inventory::{Host, Inventory};
use crate::model::outcome::{Failure, SkipReason};
use crate::model::playbook::{Group, Operation, Playbook, ServiceState, Step};

/// Hosts per rolling batch of a module call with `serial` over `n` hosts.
pub fn group_batch_size(group: &Group, n: usize) -> usize {
    group.serial.batch_size(n).max(1)
}

/// Whether a step id is one of a module call's steps.
pub fn in_call(step: &str, call: &str) -> bool {
    step.strip_prefix(call).is_some_and(|r| r.starts_with('.'))
}

/// The text of an `on_failure` step with the step the host failed at (its
/// id inside the module) in place of `{{ failed_step }}`.
pub fn failure_text(step: &Step, text: &str, failed_at: Option<&str>) -> String {
    match (&step.on_failure, failed_at) {
        (Some(call), Some(at)) => {
            let local = at
                .strip_prefix(call.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .unwrap_or(at);
            crate::model::template::fill_failed_step(text, local)
        }
        _ => text.to_string(),
    }
}

/// Whether `failed` of `total` exceeds `max_pct` percent.
pub fn failure_exceeded(failed: usize, total: usize, max_pct: f64) -> bool {
    total > 0 && (failed as f64) * 100.0 / (total as f64) > max_pct
}

/// Hosts per rolling batch of a step over `n` hosts (all at once without
/// `serial`).
pub fn batch_size(step: &Step, n: usize) -> usize {
    step.serial.map_or(n.max(1), |s| s.batch_size(n)).max(1)
}

/// Whether a step stops, restarts or masks its unit, or replaces or
/// removes its unit file (a `unit:` step: `absent` stops, disables and
/// deletes; `present` overwrites): what `protected` guards against.
pub fn is_disruptive(step: &Step) -> bool {
    if let Operation::Unit { .. } = step.operation {
        return true;
    }
    let goal = goal_of(&step.operation);
    matches!(
        goal.state,
        Some(ServiceState::Stopped | ServiceState::Restarted)
    ) || goal.masked == Some(true)
}

/// Whether the step would stop, restart or mask a unit that the host's
/// inventory entry protects.
pub fn touches_protected(step: &Step, task: &HostTask, host: &Host) -> bool {
    task.when && is_disruptive(step) && host.protected.contains(&task.unit)
}

/// What `_any` knows of a candidate host when it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// A connection to it exists (or its facts were read).
    pub reachable: bool,
    /// The whole host is in maintenance.
    pub in_maintenance: bool,
    /// It failed an earlier step of this run.
    pub failed: bool,
    /// The step would stop, restart or mask a protected unit there (and
    /// `--allow-protected` was not given).
    pub protected: bool,
}

impl Candidate {
    /// Whether `_any` may pick this host.
    pub fn eligible(self) -> bool {
        self.reachable && !self.in_maintenance && !self.failed && !self.protected
    }
}

/// Pick the `_any` host of a group: the first in inventory order that is
/// eligible. With none eligible, the first candidate, whose result then
/// shows why (unreachable, in maintenance, refused).
pub fn pick_any(group: &[usize], candidate: impl Fn(usize) -> Candidate) -> Option<usize> {
    group
        .iter()
        .copied()
        .find(|h| candidate(*h).eligible())
        .or_else(|| group.first().copied())
}

/// The refusal of one host's step when it would touch a protected unit:
/// explicit targets are refused before anything runs
/// ([`check_protected`]); this catches an `_any` pick left with no
/// eligible host.
pub fn refuse_protected(step: &Step, task: &HostTask, host: &Host, allow: bool) -> Option<Failure> {
    (!allow && touches_protected(step, task, host))
        .then(|| Failure::Refused(protected_refusal(step, task, host).to_string()))
}

/// The refusal of a step that would disrupt a protected unit on `host`.
fn protected_refusal(step: &Step, task: &HostTask, host: &Host) -> Refusal {
    Refusal::Protected(format!(
        "step `{}` would {} {} on host `{}`, which the inventory marks protected",
        step.id,
        match step.operation {
            Operation::Unit { .. } => "replace or remove the unit file of",
            _ => "stop/restart/mask",
        },
        task.unit,
        host.name
    ))
}

/// Refuse (403, exit 3) before anything happens if a step would stop,
/// restart or mask a protected unit on a host it names explicitly, or on
/// every candidate of an `_any` (which otherwise picks an unprotected one).
pub fn check_protected(
    pb: &Playbook,
    inv: &Inventory,
    expanded: &[ExpandedStep],
    allow: bool,
) -> Result<()> {
    if allow {
        return Ok(());
    }
    for (step, ex) in pb.steps.iter().zip(expanded) {
        if !is_disruptive(step) {
            continue;
        }
        let protected = |h: usize| {
            ex.task(h)
                .is_some_and(|t| touches_protected(step, t, &inv.hosts[h]))
        };
        let refused = ex
            .targets
            .fixed
            .iter()
            .copied()
            .find(|h| protected(*h))
            .or_else(|| {
                ex.targets
                    .any
                    .iter()
                    .find(|g| g.iter().all(|h| protected(*h)))
                    .and_then(|g| g.first().copied())
            });
        if let (Some(h), Some(task)) = (refused, refused.and_then(|h| ex.task(h))) {
            return Err(Error::Refused(protected_refusal(step, task, &inv.hosts[h])));
        }
    }
    Ok(())
}

/// The failure bookkeeping of one run, the same for plan and apply: who
/// failed where, and whether a step's failures aborted the run.
#[derive(Debug, Clone, Default)]
pub struct FailureLedger {
    failed_at: Vec<Option<String>>,
    aborted_at: Option<String>,
}

impl FailureLedger {
    /// A run over `hosts` inventory hosts, nothing failed yet.
    pub fn new(hosts: usize) -> Self {
        FailureLedger {
            failed_at: vec![None; hosts],
            aborted_at: None,
        }
    }

    /// Why a batch must not start: the run was aborted.
    pub fn before_batch(&self) -> Option<SkipReason> {
        self.aborted_at.clone().map(SkipReason::Aborted)
    }

    /// Why a host skips a step before anything else is known of it: it
    /// failed an earlier step, or the step's `when:` is false for it.
    pub fn before_host(&self, h: usize, when: bool) -> Option<SkipReason> {
        if let Some(step) = self.failed_at(h) {
            return Some(SkipReason::FailedAt(step.to_string()));
        }
        (!when).then_some(SkipReason::WhenFalse)
    }

    /// [`FailureLedger::before_host`] for any step: an `on_failure` step of a
    /// module call runs only on the hosts that failed one of the call's
    /// steps (and skips hosts that failed before the call).
    pub fn before_step_host(&self, step: &Step, h: usize, when: bool) -> Option<SkipReason> {
        let Some(call) = &step.on_failure else {
            return self.before_host(h, when);
        };
        match self.failed_at(h) {
            Some(at) if in_call(at, call) => (!when).then_some(SkipReason::WhenFalse),
            Some(at) => Some(SkipReason::FailedAt(at.to_string())),
            None => Some(SkipReason::NoFailure(call.clone())),
        }
    }

    /// The step a host failed at, if it did.
    pub fn failed_at(&self, h: usize) -> Option<&str> {
        self.failed_at.get(h).and_then(|f| f.as_deref())
    }

    /// Record that a host failed a step; its later steps skip it.
    pub fn host_failed(&mut self, h: usize, step: &str) {
        if let Some(slot) = self.failed_at.get_mut(h) {
            slot.get_or_insert_with(|| step.to_string());
        }
    }

    /// After a batch: abort the run when the step's failures so far
    /// exceed its `max_fail_percentage` of its hosts.
    pub fn after_batch(&mut self, step: &Step, failed_in_step: usize, hosts_in_step: usize) {
        if failure_exceeded(failed_in_step, hosts_in_step, step.max_fail_percentage) {
            self.aborted_at.get_or_insert_with(|| step.id.clone());
        }
    }

    /// After a batch of a module call with `serial`: abort the run when the
    /// hosts that failed any of its steps so far exceed its threshold.
    pub fn after_group_batch(&mut self, group: &Group, failed: usize, hosts: usize) {
        if failure_exceeded(failed, hosts, group.max_fail_percentage) {
            self.aborted_at.get_or_insert_with(|| group.call.clone());
        }
    }

    /// The step whose failures aborted the run.
    pub fn aborted_at(&self) -> Option<&str> {
        self.aborted_at.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert!(!failure_exceeded(0, 0, 0.0));
        assert!(failure_exceeded(1, 4, 0.0));
        assert!(!failure_exceeded(1, 4, 25.0));
        assert!(failure_exceeded(2, 4, 25.0));
    }

    #[test]
    fn any_skips_ineligible_hosts_and_falls_back_to_the_first() {
        let c = |reachable, protected| Candidate {
            reachable,
            in_maintenance: false,
            failed: false,
            protected,
        };
        let table = [c(false, false), c(true, true), c(true, false)];
        assert_eq!(pick_any(&[0, 1, 2], |h| table[h]), Some(2));
        assert_eq!(pick_any(&[0, 1], |h| table[h]), Some(0));
        assert_eq!(pick_any(&[], |h| table[h]), None);
    }

    #[test]
    fn on_failure_steps_run_only_after_a_failure_in_their_call() {
        let pb = crate::model::playbook::Playbook::from_str(
            "name: t\nsteps:\n  - { id: a, service: { name: x, state: started } }\n",
            std::path::Path::new("p.yml"),
        )
        .unwrap();
        let mut step = pb.steps[0].clone();
        step.id = "roll.keep".into();
        step.on_failure = Some("roll".into());
        let mut b = FailureLedger::new(3);
        b.host_failed(0, "roll.restart");
        b.host_failed(1, "before");
        assert_eq!(b.before_step_host(&step, 0, true), None);
        assert_eq!(
            b.before_step_host(&step, 0, false),
            Some(SkipReason::WhenFalse)
        );
        assert_eq!(
            b.before_step_host(&step, 1, true),
            Some(SkipReason::FailedAt("before".into()))
        );
        assert_eq!(
            b.before_step_host(&step, 2, true),
            Some(SkipReason::NoFailure("roll".into()))
        );
        // `rollout.x` is not a step of `roll`.
        b.host_failed(2, "rollout.x");
        assert!(matches!(
            b.before_step_host(&step, 2, true),
            Some(SkipReason::FailedAt(_))
        ));
        let text = format!("failed at {}", crate::model::template::FAILED_STEP);
        assert_eq!(
            failure_text(&step, &text, b.failed_at(0)),
            "failed at restart"
        );
    }

    #[test]
    fn the_book_skips_failed_hosts_and_aborts() {
        let mut b = FailureLedger::new(3);
        assert_eq!(b.before_host(0, false), Some(SkipReason::WhenFalse));
        b.host_failed(1, "a");
        b.host_failed(1, "b");
        assert_eq!(
            b.before_host(1, true),
            Some(SkipReason::FailedAt("a".into()))
        );
        assert_eq!(b.before_batch(), None);
    }
}
