//! One step on one host, once the walk's checks let it work: the step's
//! module (maintenance, unit file, script; service steps in service.rs),
//! bounded by the step timeout, and the host's maintenance flags.

use crate::engine::execute::service::ServiceStep;
use crate::engine::execute::session_of;
use crate::engine::execute::step::joined;
use crate::engine::execute::step::reads_for;
use crate::engine::execute::step::Done;
use crate::engine::execute::step::Failed;
use crate::engine::execute::step::HostStep;
use crate::engine::execute::step::Reading;
use crate::engine::execute::Do;
use crate::model::decide::failure_text;
use crate::model::expand::goal_of;
use crate::model::facts::UnitFacts;
use crate::model::maintenance::{MaintenanceGoal, MaintenanceState, HOST_SCOPE};
use crate::model::outcome::{Failure, Outcome};
use crate::model::playbook::module::ScriptModule;
use crate::model::playbook::{Operation, ServiceState, UnitFileGoal};
use crate::model::service::Action;
use crate::model::unit::UnitName;
use crate::model::unitfile::UnitFileWant;
use crate::remote::carrier::Session;
use crate::remote::systemd::{StateRead, SystemdError};

impl HostStep<'_, '_> {
    /// The module's work, bounded by the step timeout: an unattended run
    /// must never hang, whatever systemd or the network does.
    pub(super) async fn work(
        &self,
        session: &Session,
        carried: Option<Reading>,
        next: Option<(UnitName, StateRead)>,
        carry: &mut Option<Reading>,
    ) -> (Outcome, String, Option<String>) {
        let work = async {
            match &self.step.operation {
                Operation::Service { .. } => {
                    let svc = ServiceStep {
                        hs: self,
                        sd: session.systemd(),
                        goal: goal_of(&self.step.operation),
                    };
                    svc.apply(carried, next.as_ref().map(|(u, w)| (u, *w)))
                        .await
                }
                Operation::Maintenance { enable, .. } => self.maintenance(session, *enable).await,
                Operation::Unit { state, .. } => self.unit_file(session, *state).await,
                Operation::Script(m) => self.script(session, m).await,
            }
        };
        // Cleanup (`always`) has its own, shorter bound.
        let timeout = self.step.timeout.unwrap_or(self.run.spec.step_timeout);
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(done)) => {
                *carry = done.next;
                (
                    Outcome::Ok {
                        changed: done.changed,
                    },
                    done.action,
                    done.msg,
                )
            }
            Ok(Err(f)) => (
                Outcome::Failed {
                    failure: f.failure,
                    changed: f.changed,
                },
                f.action,
                None,
            ),
            Err(_) => (
                Outcome::failed(Failure::Timeout(timeout)),
                "unknown".into(),
                None,
            ),
        }
    }

    /// A systemd error as a failure: a broken connection makes the host
    /// unreachable; anything else is the host's error, with `context`.
    pub(super) fn systemd_failure(&self, e: &SystemdError, context: String) -> Failure {
        if e.is_connection_lost() {
            Failure::ConnectionLost {
                step: self.step.id.clone(),
                detail: context,
            }
        } else {
            Failure::Error(context)
        }
    }

    /// A `maintenance:` step on one host.
    async fn maintenance(&self, session: &Session, enable: bool) -> Result<Done, Failed> {
        let (run, h, task) = (self.run, self.h, self.task);
        let goal = MaintenanceGoal {
            enable,
            reason: failure_text(
                self.step,
                task.content.as_deref().unwrap_or_default(),
                self.failed_at.as_deref(),
            ),
            unit: (task.unit.as_str() != HOST_SCOPE).then(|| task.unit.clone()),
        };
        let _w = run.maint_write[h].lock().await;
        let intent = if enable {
            "maintenance-on"
        } else {
            "maintenance-off"
        };
        self.intend(task.unit.as_str(), intent.into(), "");
        let (action, now) = crate::remote::maintenance::apply_goal_on(session, &goal)
            .await
            .map_err(|error| Failed {
                changed: false,
                action: if enable {
                    "maintenance-on"
                } else {
                    "maintenance-off"
                }
                .into(),
                failure: Failure::Error(error),
            })?;
        if let Ok(mut cache) = run.maint.lock() {
            if let Some(slot) = cache.get_mut(h) {
                *slot = Some(now);
            }
        }
        Ok(Done {
            changed: action.is_some(),
            action: joined(&action.into_iter().collect::<Vec<_>>()),
            next: None,
            msg: None,
        })
    }

    /// A script module on one host: its program runs there with the input
    /// JSON on stdin; its one JSON object is the result.
    async fn script(&self, session: &Session, m: &ScriptModule) -> Result<Done, Failed> {
        let host = &self.run.job.inventory.hosts[self.h];
        let input = crate::model::playbook::module::input_json(&m.params, false, host);
        let limit = m.timeout.min(self.run.spec.step_timeout);
        let action = joined(&[Action::Run]);
        self.intend(&m.name, action.clone(), "");
        let ran = crate::remote::script::run(session, &m.program, &input, limit)
            .await
            .map_err(|e| Failed {
                // Whether it ran is unknown: the host must be looked at.
                changed: true,
                action: action.clone(),
                failure: Failure::Error(format!("module `{}`: {e}", m.name)),
            })?;
        let rep = crate::model::playbook::module::read_report(
            &m.name,
            ran.code,
            &ran.stdout,
            &ran.stderr,
        );
        if rep.failed {
            return Err(Failed {
                changed: rep.changed,
                action,
                failure: Failure::Error(if rep.msg.is_empty() {
                    format!("module `{}` failed", m.name)
                } else {
                    rep.msg
                }),
            });
        }
        Ok(Done {
            changed: rep.changed,
            action,
            next: None,
            msg: (!rep.msg.is_empty()).then_some(rep.msg),
        })
    }

    /// A `unit:` step on one host.
    async fn unit_file(&self, session: &Session, state: UnitFileGoal) -> Result<Done, Failed> {
        let content = self.task.content.as_deref().unwrap_or_default();
        let want = match state {
            UnitFileGoal::Present => UnitFileWant::Present(content),
            UnitFileGoal::Absent => UnitFileWant::Absent,
        };
        self.intend(self.task.unit.as_str(), "unit-file".into(), "");
        let o = crate::remote::unitfile::apply_unit(session, &self.task.unit, &want).await;
        match o.error {
            Some(error) => Err(Failed {
                changed: o.changed,
                action: joined(&o.done),
                failure: Failure::Error(error),
            }),
            None => Ok(Done {
                changed: o.changed,
                action: joined(&o.done),
                next: None,
                msg: None,
            }),
        }
    }
}

/// What a host's next step would read first, if it is a service step that
/// runs there: its unit and the properties its goal needs.
pub(super) fn next_reading(run: &Do<'_>, si: usize, h: usize) -> Option<(UnitName, StateRead)> {
    let step = &run.job.playbook.steps[si];
    if !matches!(step.operation, Operation::Service { .. }) {
        return None;
    }
    let task = run.job.expanded[si].task(h).filter(|t| t.when)?;
    let goal = goal_of(&step.operation);
    Some((
        task.unit.clone(),
        StateRead {
            // A restart always needs the InvocationID before.
            invocation: goal.state == Some(ServiceState::Restarted),
            ..reads_for(&goal)
        },
    ))
}

/// A host's maintenance flags: from the run's cache, read from the host on
/// first use.
pub(super) async fn host_maintenance(
    run: &Do<'_>,
    h: usize,
) -> std::result::Result<MaintenanceState, String> {
    let limit = run.spec.step_timeout;
    tokio::time::timeout(limit, read_host_maintenance(run, h))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "cannot read the maintenance state: no answer within {}",
                humantime::format_duration(limit)
            ))
        })
}

async fn read_host_maintenance(
    run: &Do<'_>,
    h: usize,
) -> std::result::Result<MaintenanceState, String> {
    if let Some(m) = run
        .maint
        .lock()
        .ok()
        .and_then(|m| m.get(h).cloned().flatten())
    {
        return Ok(m);
    }
    let Some(session) = session_of(run, h) else {
        return Err("unreachable: no connection".into());
    };
    let m = crate::remote::maintenance::read(&session).await?;
    if let Ok(mut cache) = run.maint.lock() {
        if let Some(slot) = cache.get_mut(h) {
            *slot = Some(m.clone());
        }
    }
    Ok(m)
}

/// Whether systemd's state really differs between two readings.
pub fn really_changed(before: &UnitFacts, after: &UnitFacts) -> bool {
    before.active_state != after.active_state
        || before.unit_file_state != after.unit_file_state
        || before.load_state != after.load_state
        || before.invocation_id != after.invocation_id
}

/// Whether a host is in service for `unit`, read now (another job may have
/// drained it): the unit's health with its maintenance flags, warning
/// counting as in service. `Err` is the level and why. With `member_only`
/// a host that has no such unit is in service unless the whole host is
/// in maintenance.
pub(super) async fn host_in_service(
    run: &Do<'_>,
    h: usize,
    unit: &UnitName,
    member_only: bool,
) -> Result<(), String> {
    use crate::engine::walk::HostAction;
    use crate::model::health::{unit_health, Health};
    use crate::remote::fanout::open;
    // A host whose own steps are over has no connection left: one for
    // this look.
    let session = match run.connect(h).await {
        Ok(s) => s,
        Err(Failure::Unreachable(e)) => return Err(format!("unknown: unreachable: {e}")),
        Err(_) => open(&run.job.inventory.hosts[h], &run.spec.reach())
            .await
            .map_err(|e| format!("unknown: unreachable: {e}"))?,
    };
    let sd = session.systemd();
    let (facts, maint) = tokio::join!(
        sd.unit_facts(std::slice::from_ref(unit)),
        crate::remote::maintenance::read(&session)
    );
    let u = facts
        .map_err(|e| format!("unknown: {e}"))?
        .remove(unit.as_str())
        .unwrap_or_else(UnitFacts::not_found);
    let m = maint.map_err(|e| format!("unknown: {e}"))?;
    let flag = m.host.as_ref().or_else(|| m.units.get(unit.as_str()));
    if member_only && flag.is_none() && u.load_state == "not-found" {
        return Ok(());
    }
    match unit_health(&u, flag) {
        (Health::Passing | Health::Warning, _) => Ok(()),
        (level, note) => Err(format!("{}: {unit} {note}", level.as_str().to_lowercase())),
    }
}
