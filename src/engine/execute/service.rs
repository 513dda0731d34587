//! A `service:` step on one host: read, decide, act, read again.

use std::time::Instant;

use crate::engine::events::Event;
use crate::engine::execute::gate::gate_words;
use crate::engine::execute::gate::probe;
use crate::engine::execute::gate::wait_active;
use crate::engine::execute::really_changed;
use crate::engine::execute::step::joined;
use crate::engine::execute::step::reads_for;
use crate::engine::execute::step::Done;
use crate::engine::execute::step::Failed;
use crate::engine::execute::step::HostStep;
use crate::engine::execute::step::Reading;
use crate::engine::execute::step::CARRY_FRESH;
use crate::model::facts::UnitFacts;
use crate::model::outcome::Failure;
use crate::model::playbook::{ServiceState, Wait};
use crate::model::service::{decide_service, Action, ServiceGoal};
use crate::model::unit::UnitName;
use crate::remote::probe::{http_ok, tcp_ok};
use crate::remote::systemd::{StateRead, Systemd};

/// A `service:` step on one host: read, decide, act, gate, read again.
pub(super) struct ServiceStep<'s, 'r, 'a> {
    pub(super) hs: &'s HostStep<'r, 'a>,
    pub(super) sd: &'s Systemd,
    pub(super) goal: ServiceGoal,
}

impl ServiceStep<'_, '_, '_> {
    fn unit(&self) -> &UnitName {
        &self.hs.task.unit
    }

    fn fail(&self, changed: bool, actions: &[Action], failure: Failure) -> Failed {
        Failed {
            changed,
            action: joined(actions),
            failure,
        }
    }

    async fn read(&self, what: StateRead) -> Result<UnitFacts, Failure> {
        let unit = self.unit();
        self.sd.unit_state(unit, what).await.map_err(|e| {
            self.hs
                .systemd_failure(&e, format!("cannot read {unit}: {e}"))
        })
    }

    /// Whether anything changed since `before` (after a failure: `guess`
    /// when the unit cannot be read again).
    async fn changed_since(&self, before: &UnitFacts, what: StateRead, guess: bool) -> bool {
        self.read(what)
            .await
            .map(|now| really_changed(before, &now))
            .unwrap_or(guess)
    }

    /// Bring the unit to the goal, verifying with systemd at each step.
    pub(super) async fn apply(
        &self,
        carried: Option<Reading>,
        next: Option<(&UnitName, StateRead)>,
    ) -> Result<Done, Failed> {
        let unit = self.unit();
        let mut fs = reads_for(&self.goal);
        let (mut before, have_invocation) = self
            .before(carried, fs)
            .await
            .map_err(|f| self.fail(false, &[], f))?;
        let d = decide_service(unit.as_str(), &self.goal, &before);
        if let Some(f) = d.error {
            return Err(self.fail(false, &d.actions, f));
        }
        // Only a start or restart makes a new invocation; the InvocationID is
        // read (before and after) only then. Before and after must hold the
        // same properties, or an unread one would look changed.
        if d.actions
            .iter()
            .any(|a| matches!(a, Action::Start | Action::Restart))
        {
            fs.invocation = true;
            if !have_invocation {
                before.invocation_id = self.sd.invocation_id(unit).await.map_err(|e| {
                    let f = self
                        .hs
                        .systemd_failure(&e, format!("cannot read {unit}: {e}"));
                    self.fail(false, &[], f)
                })?;
            }
        } else {
            before.invocation_id.clear();
        }
        if !fs.file_state {
            before.unit_file_state.clear();
        }
        if self.restarted_since_intent(&d.actions, &before) {
            return self.restarted_before(before, fs, next).await;
        }
        let wait = self.hs.step.wait.as_ref();
        if d.actions.is_empty() && wait.is_none() {
            // Nothing to do and nothing to wait for: the reading stands.
            return Ok(Done {
                changed: false,
                action: joined(&[]),
                next: None,
                msg: None,
            });
        }
        let done = self.act(&d.actions, &before, fs).await?;
        if let Some(w) = wait {
            if let Err(e) = self.gate(w).await {
                let changed = self.changed_since(&before, fs, true).await;
                return Err(self.fail(changed, &done, Failure::Error(e)));
            }
        }
        self.after(&before, fs, done, next).await
    }

    /// The reading before deciding: the previous step's last reading if it
    /// covers what this step needs, else a fresh one. Says whether it
    /// holds the InvocationID.
    async fn before(
        &self,
        carried: Option<Reading>,
        fs: StateRead,
    ) -> Result<(UnitFacts, bool), Failure> {
        let carried = carried.filter(|c| {
            c.unit == *self.unit()
                && c.at.elapsed() < CARRY_FRESH
                && (c.what.file_state || !fs.file_state)
        });
        match carried {
            Some(c) => Ok((c.facts, c.what.invocation)),
            None => Ok((self.read(fs).await?, false)),
        }
    }

    /// Whether the run being resumed already restarted the unit: its
    /// journal says a restart was about to happen and the unit has had a
    /// new invocation since. A restart is the one operation that is not
    /// the same done twice; the others are decided from the state.
    fn restarted_since_intent(&self, actions: &[Action], now: &UnitFacts) -> bool {
        let Some(i) = self.hs.in_flight() else {
            return false;
        };
        actions.contains(&Action::Restart)
            && i.action.split('+').any(|a| a == "restart")
            && !i.invocation_id.is_empty()
            && !now.invocation_id.is_empty()
            && now.invocation_id != i.invocation_id
    }

    /// The restart happened before the run stopped: wait for the unit to
    /// settle (the job may still be running), pass the step's gate and
    /// report the change without doing it again.
    async fn restarted_before(
        &self,
        before: UnitFacts,
        fs: StateRead,
        next: Option<(&UnitName, StateRead)>,
    ) -> Result<Done, Failed> {
        let done = [Action::Restart];
        let timeout = self.hs.run.spec.step_timeout;
        if matches!(before.active_state.as_str(), "activating" | "reloading") {
            let deadline = tokio::time::Instant::now() + timeout;
            if let Err(e) = wait_active(self.sd, self.unit(), deadline, timeout).await {
                return Err(self.fail(true, &done, Failure::JobFailed(e)));
            }
        }
        if let Some(w) = self.hs.step.wait.as_ref() {
            if let Err(e) = self.gate(w).await {
                return Err(self.fail(true, &done, Failure::Error(e)));
            }
        }
        let mut d = self.after(&before, fs, done.to_vec(), next).await?;
        d.changed = true;
        d.action = format!("{} (before the resume)", d.action);
        Ok(d)
    }

    /// Run the decided operations in order; a failed one ends the step.
    async fn act(
        &self,
        actions: &[Action],
        before: &UnitFacts,
        fs: StateRead,
    ) -> Result<Vec<Action>, Failed> {
        let (sd, unit) = (self.sd, self.unit());
        self.hs
            .intend(unit.as_str(), joined(actions), &before.invocation_id);
        let mut done: Vec<Action> = Vec::new();
        for a in actions {
            let res = match a {
                Action::Unmask => sd.unmask(unit).await.map(|_| None),
                Action::Enable => sd.enable(unit).await.map(|_| None),
                Action::Disable => sd.disable(unit).await.map(|_| None),
                Action::Mask => sd.mask(unit).await.map(|_| None),
                Action::Start => sd.start(unit).await.map(Some),
                Action::Stop => sd.stop(unit).await.map(Some),
                Action::Restart => sd.restart(unit).await.map(Some),
                Action::Reload => sd.reload(unit).await.map(Some),
                other => {
                    return Err(self.fail(
                        false,
                        &done,
                        Failure::Error(format!("internal: `{other}` is not a service operation")),
                    ))
                }
            };
            done.push(*a);
            match res {
                Err(e) => {
                    let f = self.hs.systemd_failure(&e, format!("{a} {unit}: {e}"));
                    let changed = self.changed_since(before, fs, false).await;
                    return Err(self.fail(changed, &done, f));
                }
                Ok(Some(job)) if !job.ok() => {
                    let changed = self.changed_since(before, fs, true).await;
                    let why = job
                        .error_message()
                        .unwrap_or_else(|| format!("job {}", job.result));
                    return Err(self.fail(changed, &done, Failure::JobFailed(why)));
                }
                Ok(_) => {}
            }
        }
        Ok(done)
    }

    /// The last reading, and with it (same round trip) the first one of
    /// the host's next step; `changed` is decided from it.
    async fn after(
        &self,
        before: &UnitFacts,
        fs: StateRead,
        done: Vec<Action>,
        next: Option<(&UnitName, StateRead)>,
    ) -> Result<Done, Failed> {
        let unit = self.unit();
        let read_failed = |f: Failure| self.fail(!done.is_empty(), &done, f);
        let (after, next) = match next {
            Some((next_unit, next_what)) => {
                let mut both = self
                    .sd
                    .unit_states(&[(unit, fs), (next_unit, next_what)])
                    .await
                    .map_err(|e| {
                        read_failed(
                            self.hs
                                .systemd_failure(&e, format!("cannot read {unit}: {e}")),
                        )
                    })?;
                let next = both.pop().map(|facts| Reading {
                    unit: next_unit.clone(),
                    what: next_what,
                    facts,
                    at: Instant::now(),
                });
                match both.pop() {
                    Some(after) => (after, next),
                    None => {
                        return Err(read_failed(Failure::Error(format!(
                            "cannot read {unit}: no answer"
                        ))))
                    }
                }
            }
            None => (self.read(fs).await.map_err(read_failed)?, None),
        };
        // A unit that ended up failed is never a success, whatever the job said.
        if after.active_state == "failed"
            && self.goal.state.is_some_and(|s| s != ServiceState::Stopped)
        {
            return Err(self.fail(
                really_changed(before, &after),
                &done,
                Failure::JobFailed(format!(
                    "unit {unit} entered failed state ({})",
                    after.sub_state
                )),
            ));
        }
        // A reload changes no property systemd exposes but did happen.
        let changed = really_changed(before, &after) || done.contains(&Action::Reload);
        Ok(Done {
            changed,
            action: joined(&done),
            next,
            msg: None,
        })
    }

    /// The `wait:` gate: unit active, health, HTTP 2xx, TCP accepts — within
    /// the timeout.
    async fn gate(&self, w: &Wait) -> std::result::Result<(), String> {
        let (sd, unit) = (self.sd, self.unit());
        let run = self.hs.run;
        let job = run.job;
        run.spec.events.event(&Event::GateWaiting {
            step: self.hs.step.id.clone(),
            host: job.inventory.hosts[self.hs.h].name.clone(),
            gate: gate_words(w),
        });
        let deadline = tokio::time::Instant::now() + w.timeout;
        let ctx = job
            .playbook
            .templates
            .host_context(&job.inventory.hosts[self.hs.h]);
        if w.active {
            wait_active(sd, unit, deadline, w.timeout).await?;
        }
        if let Some(level) = w.health {
            // Health has no single signal to wait for: re-read until good enough.
            probe(
                deadline,
                w.timeout,
                &format!("health of {unit}"),
                || async move {
                    let u = sd
                        .unit_state(unit, StateRead::default())
                        .await
                        .map_err(|e| format!("cannot read {unit}: {e}"))?;
                    let (now, note) = crate::model::health::unit_health(&u, None);
                    if now.satisfies(level) {
                        Ok(())
                    } else {
                        Err(format!("{} ({note})", now.as_str()))
                    }
                },
            )
            .await?;
        }
        if let Some(t) = w.tcp {
            let addr = job.playbook.templates.render(t, &ctx)?;
            probe(deadline, w.timeout, &format!("tcp {addr}"), || {
                tcp_ok(&addr)
            })
            .await?;
        }
        if let Some(t) = w.http {
            let url = job.playbook.templates.render(t, &ctx)?;
            probe(deadline, w.timeout, &format!("http {url}"), || {
                http_ok(&url)
            })
            .await?;
        }
        Ok(())
    }
}
