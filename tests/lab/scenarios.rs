//! Plan = apply, on the lab's real systemd hosts.
//!
//! Each scenario sets the lab's units to a starting state (over plain
//! ssh + systemctl; maintenance flags and unit files too), then, over the
//! lab's inventory or an edited copy (protected units, a sudo user, a host
//! that refuses connections):
//! 1. `drover plan --format json --out plan.json` (live, or from a facts
//!    file `drover facts` wrote just before) must change nothing: every
//!    unit's InvocationID, ActiveEnterTimestamp and state are
//!    byte-identical before and after, on every host; it exits 0, or 4
//!    when it could not read a host;
//! 2. `drover apply --plan plan.json --format json --report FILE` (which
//!    also re-checks the saved plan for drift: there is none, so it must
//!    not refuse) exits with the code its report calls for;
//! 3. for every step × host, the plan's predicted status, changed,
//!    operations, error text and kind must equal what apply reports, and
//!    the set of step × host pairs must be the same; a few expectations
//!    per scenario pin what it exercises;
//! 4. batch numbers: apply's journal (results in the order they finished)
//!    has every host of a step's planned batch before any host of its next
//!    batch, and a scenario may pin the plan's numbers.
//!
//! State is restored after every scenario, under the lab lock. Only hosts
//! lab-1..lab-4 are named, so the scenarios run on any lab of 4+ hosts.
//! The drift refusal of `apply --plan` is tested at the end. Retry and
//! resume have their plan = apply cases in tests/lab/resume.rs: `plan
//! --retry` / `plan --resume` against what `apply --retry` / `--resume`
//! then report, step × host.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{lab, run, Lab};
use serde_json::Value;

/// A throwaway unit in /run (so `systemctl mask` works: the demo units
/// live in /etc/systemd/system, where a mask symlink cannot be created).
const EXTRA: &str = "printf '[Unit]\\nDescription=drover lab scenario unit\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /run/systemd/system/demo-extra.service && systemctl daemon-reload";

/// demo-worker gets an ExecReload (a runtime drop-in), so `reloaded` can work.
const RELOADABLE: &str = "mkdir -p /run/systemd/system/demo-worker.service.d && printf '[Service]\\nExecReload=/bin/true\\n' > /run/systemd/system/demo-worker.service.d/reload.conf && systemctl daemon-reload";

/// demo-worker in maintenance on a host (the state file drover keeps).
const UNIT_MAINT: &str = r#"mkdir -p /var/lib/drover && printf '%s' '{"version":1,"units":{"demo-worker.service":{"reason":"scenario drain","since":"2026-01-01T00:00:00Z"}}}' > /var/lib/drover/maintenance.json"#;

/// The whole host in maintenance.
const HOST_MAINT: &str = r#"mkdir -p /var/lib/drover && printf '%s' '{"version":1,"host":{"reason":"scenario host","since":"2026-01-01T00:00:00Z"},"units":{}}' > /var/lib/drover/maintenance.json"#;

/// The unit file the `unit:` scenarios write, already in place.
const SCEN_UNIT: &str = "printf '[Unit]\nDescription=drover scenario unit\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/demo-scen.service && systemctl daemon-reload";

/// Back to the lab's baseline: web and worker enabled and running, idle
/// and broken disabled and stopped, no scenario leftovers, start limits reset.
const RESTORE: &str = r#"
if [ -e /etc/systemd/system/demo-scen.service ] || [ -L /etc/systemd/system/multi-user.target.wants/demo-scen.service ]; then
  systemctl stop demo-scen 2>/dev/null
  systemctl disable -q demo-scen 2>/dev/null
  rm -f /etc/systemd/system/demo-scen.service /etc/systemd/system/multi-user.target.wants/demo-scen.service
  systemctl daemon-reload
fi
if [ -e /run/systemd/system/demo-extra.service ] || [ -L /etc/systemd/system/demo-extra.service ] || [ -d /run/systemd/system/demo-worker.service.d ]; then
  systemctl unmask -q demo-extra 2>/dev/null
  systemctl stop demo-extra 2>/dev/null
  systemctl disable -q demo-extra 2>/dev/null
  rm -rf /run/systemd/system/demo-extra.service /run/systemd/system/demo-worker.service.d
  systemctl daemon-reload
fi
systemctl reset-failed
# A scenario (or a test before it) may leave maintenance flags behind;
# later scenarios would then predict and apply skips, alike but untested.
rm -f /var/lib/drover/maintenance.json
systemctl stop demo-idle demo-broken
# enable/disable reload the manager: only when needed.
for u in demo-idle demo-broken; do
  [ "$(systemctl is-enabled $u)" = disabled ] || systemctl disable -q $u
done
for u in demo-web demo-worker; do
  [ "$(systemctl is-enabled $u)" = enabled ] || systemctl enable -q $u
done
systemctl start demo-web demo-worker
systemctl reset-failed
test "$(systemctl is-active demo-web demo-worker demo-idle | tr '\n' ' ')" = "active active inactive "
"#;

const UNITS: &str = "demo-web demo-worker demo-idle demo-broken demo-extra demo-scen";

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// (host, shell command) run in order before planning.
    pub(crate) setup: &'static [(&'static str, &'static str)],
    /// The playbook's steps (YAML, under `steps:`).
    pub(crate) steps: &'static str,
    /// `--limit`, when the scenario uses one.
    pub(crate) limit: Option<&'static str>,
    /// Spot checks: (step, host, status, changed) that apply must report.
    pub(crate) expect: &'static [(&'static str, &'static str, &'static str, bool)],
    /// The lab's inventory, changed (protected units, another user, a host
    /// that does not answer); None: the lab's own.
    pub(crate) inventory: Option<fn(&str) -> String>,
    /// Plan from a facts file collected just before (`drover facts`, then
    /// `plan --facts`) instead of reading the hosts live.
    pub(crate) facts_file: bool,
    /// Spot checks of the plan's batch numbers: (step, host, batch).
    pub(crate) batches: &'static [(&'static str, &'static str, usize)],
}

/// What a scenario does not say: the lab's inventory, a live plan, no
/// batch numbers pinned.
const BASE: Scenario = Scenario {
    name: "",
    setup: &[],
    steps: "",
    limit: None,
    expect: &[],
    inventory: None,
    facts_file: false,
    batches: &[],
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "start an already active unit",
            setup: &[],
            steps: "  - id: web\n    target: role:web\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-1", "ok", false), ("web", "lab-3", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "start a stopped unit",
            setup: &[("lab-1", "systemctl stop demo-web"), ("lab-3", "systemctl stop demo-web")],
            steps: "  - id: web\n    target: [lab-1, lab-3, role:web]\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-1", "ok", true), ("web", "lab-3", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "start a failed unit",
            setup: &[("lab-2", "systemctl start demo-idle && systemctl kill -s KILL demo-idle; sleep 0.5; systemctl is-failed -q demo-idle")],
            steps: "  - id: idle\n    target: lab-2\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("idle", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "stop a failed unit (no change)",
            setup: &[("lab-2", "systemctl start demo-broken; systemctl is-failed -q demo-broken")],
            steps: "  - id: broken\n    target: lab-2\n    service: { name: demo-broken, state: stopped }\n",
            limit: None,
            expect: &[("broken", "lab-2", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "stop running units",
            setup: &[],
            steps: "  - id: worker\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: stopped }\n",
            limit: None,
            expect: &[("worker", "lab-2", "ok", true), ("worker", "lab-4", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "stop an already stopped unit everywhere",
            setup: &[],
            steps: "  - id: idle\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[("idle", "lab-1", "ok", false), ("idle", "lab-4", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "rolling restart, serial 2",
            setup: &[],
            steps: "  - id: restart\n    target: role:worker\n    serial: 2\n    service: { name: demo-worker, state: restarted }\n    wait: { active: true, timeout: 20s }\n",
            limit: None,
            expect: &[("restart", "lab-2", "ok", true), ("restart", "lab-4", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "reload a running unit that can reload",
            setup: &[("lab-2", RELOADABLE)],
            steps: "  - id: reload\n    target: lab-2\n    service: { name: demo-worker, state: reloaded }\n",
            limit: None,
            expect: &[("reload", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "reload a stopped unit starts it",
            setup: &[("lab-3", "systemctl stop demo-worker")],
            steps: "  - id: reload\n    target: lab-3\n    service: { name: demo-worker, state: reloaded }\n",
            limit: None,
            expect: &[("reload", "lab-3", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "enable a disabled unit",
            setup: &[],
            steps: "  - id: enable\n    target: [lab-1, lab-2]\n    service: { name: demo-idle, enabled: true }\n",
            limit: None,
            expect: &[("enable", "lab-1", "ok", true), ("enable", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "enable an enabled unit (no change)",
            setup: &[],
            steps: "  - id: enable\n    target: role:web\n    service: { name: demo-web, enabled: true }\n",
            limit: None,
            expect: &[("enable", "lab-1", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "disable an enabled unit; disable a disabled one",
            setup: &[],
            steps: "  - id: disable\n    target: [lab-4]\n    service: { name: demo-worker, enabled: false }\n  - id: disable-idle\n    target: [lab-4]\n    service: { name: demo-idle, enabled: false }\n",
            limit: None,
            expect: &[("disable", "lab-4", "ok", true), ("disable-idle", "lab-4", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "enable and start in one step",
            setup: &[("lab-3", "systemctl enable -q demo-idle")],
            steps: "  - id: idle\n    target: [lab-3, lab-4]\n    service: { name: demo-idle, state: started, enabled: true }\n",
            limit: None,
            expect: &[("idle", "lab-3", "ok", true), ("idle", "lab-4", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "stop and mask",
            setup: &[("lab-1", EXTRA), ("lab-1", "systemctl start demo-extra"), ("lab-2", EXTRA)],
            steps: "  - id: mask\n    target: [lab-1, lab-2]\n    service: { name: demo-extra, state: stopped, masked: true }\n",
            limit: None,
            expect: &[("mask", "lab-1", "ok", true), ("mask", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "unmask and start a masked unit",
            setup: &[("lab-3", EXTRA), ("lab-3", "systemctl mask -q demo-extra")],
            steps: "  - id: unmask\n    target: lab-3\n    service: { name: demo-extra, state: started, masked: false }\n",
            limit: None,
            expect: &[("unmask", "lab-3", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "start a masked unit fails; later steps skip the host",
            setup: &[("lab-1", EXTRA), ("lab-1", "systemctl mask -q demo-extra"), ("lab-3", EXTRA)],
            steps: "  - id: start\n    target: [lab-1, lab-3]\n    service: { name: demo-extra, state: started }\n  - id: after\n    target: [lab-1, lab-3]\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("start", "lab-1", "failed", false), ("start", "lab-3", "ok", true), ("after", "lab-1", "skipped", false)],
            ..BASE
        },
        Scenario {
            name: "unit missing on a host",
            setup: &[("lab-2", EXTRA)],
            steps: "  - id: start\n    target: [lab-2, lab-4]\n    service: { name: demo-extra, state: started }\n  - id: stop-missing\n    needs: []\n    target: [lab-1]\n    service: { name: demo-extra, state: stopped }\n",
            limit: None,
            expect: &[("start", "lab-2", "ok", true), ("start", "lab-4", "failed", false), ("stop-missing", "lab-1", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "max_fail_percentage aborts the run",
            setup: &[("lab-1", EXTRA)],
            steps: "  - id: start\n    target: [lab-1, lab-3]\n    max_fail_percentage: 0\n    service: { name: demo-extra, state: started }\n  - id: next\n    target: [lab-1, lab-2]\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("start", "lab-3", "failed", false), ("next", "lab-2", "skipped", false)],
            ..BASE
        },
        Scenario {
            name: "when false skips",
            setup: &[],
            steps: "  - id: idle\n    target: [lab-1, lab-2, lab-3, lab-4]\n    when: \"host.labels.role == 'worker'\"\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("idle", "lab-1", "skipped", false), ("idle", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "_any picks one worker",
            setup: &[],
            steps: "  - id: one\n    target: _any,role:worker\n    service: { name: demo-worker, state: restarted }\n",
            limit: None,
            expect: &[("one", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "_any after a failure picks the next host",
            setup: &[("lab-2", EXTRA)],
            steps: "  - id: extra\n    target: [lab-1, lab-2]\n    service: { name: demo-extra, state: started }\n  - id: any\n    target: _any,region:eu\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("extra", "lab-1", "failed", false), ("any", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "selector with negation",
            setup: &[("lab-3", "systemctl stop demo-web")],
            steps: "  - id: web\n    target: role:web,!lab-1\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-3", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "stop then start the same unit (state threads through steps)",
            setup: &[],
            steps: "  - id: stop\n    target: lab-4\n    service: { name: demo-worker, state: stopped }\n  - id: start\n    target: lab-4\n    service: { name: demo-worker, state: started }\n  - id: again\n    target: lab-4\n    service: { name: demo-worker, state: started }\n",
            limit: None,
            expect: &[("stop", "lab-4", "ok", true), ("start", "lab-4", "ok", true), ("again", "lab-4", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "--limit intersects every step",
            setup: &[("lab-2", "systemctl stop demo-web"), ("lab-1", "systemctl stop demo-web")],
            steps: "  - id: web\n    service: { name: demo-web, state: started }\n  - id: idle\n    needs: []\n    service: { name: demo-idle, state: stopped }\n",
            limit: Some("!role:web"),
            expect: &[("web", "lab-2", "ok", true), ("web", "lab-4", "ok", false), ("idle", "lab-2", "ok", false)],
            ..BASE
        },
        Scenario {
            name: "strategy free",
            setup: &[("lab-2", "systemctl stop demo-worker")],
            steps: "  - id: worker\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: started }\n  - id: idle\n    target: [lab-2, lab-4]\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[("worker", "lab-2", "ok", true), ("worker", "lab-4", "ok", false)],
            ..BASE
        },
        // Free: a step's last reading also reads the host's next unit; these
        // chain steps on one unit, switch to enablement (which the carried
        // reading must include) and fail in the middle (a unit that does
        // not exist: a failure the plan predicts too).
        Scenario {
            name: "strategy free: one unit back to back",
            setup: &[("lab-4", "systemctl stop demo-idle")],
            steps: "  - id: stop\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: stopped }\n  - id: start\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: started }\n  - id: restart\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: restarted }\n  - id: start-again\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: started }\n  - id: disable\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, enabled: false }\n  - id: enable\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, enabled: true }\n  - id: idle\n    target: lab-4\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[
                ("stop", "lab-2", "ok", true),
                ("start", "lab-2", "ok", true),
                ("restart", "lab-4", "ok", true),
                ("start-again", "lab-4", "ok", false),
                ("disable", "lab-2", "ok", true),
                ("enable", "lab-2", "ok", true),
                ("idle", "lab-4", "ok", false),
            ],
            ..BASE
        },
        Scenario {
            name: "strategy free: a failure in the middle",
            setup: &[],
            steps: "  - id: web\n    target: [lab-1, lab-3]\n    service: { name: demo-web, state: restarted }\n  - id: missing\n    target: lab-1\n    service: { name: demo-missing, state: started }\n  - id: idle\n    target: [lab-1, lab-3]\n    service: { name: demo-idle, state: started }\n  - id: idle-stop\n    target: [lab-1, lab-3]\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[
                ("web", "lab-1", "ok", true),
                ("missing", "lab-1", "failed", false),
                ("idle", "lab-1", "skipped", false),
                ("idle", "lab-3", "ok", true),
                ("idle-stop", "lab-3", "ok", true),
            ],
            ..BASE
        },
        // Modules: a call's serial batches hosts through all its steps; the
        // plan must predict the same batches, skips and failures.
        Scenario {
            name: "module: drain-restart rolls two hosts",
            setup: &[],
            steps: "  - id: roll\n    target: [lab-1, lab-3]\n    use: drain-restart\n    with: { unit: demo-web, reason: scenario, timeout: 30s }\n    serial: 1\n  - id: after\n    target: lab-2\n    service: { name: demo-worker, state: started }\n",
            limit: None,
            expect: &[
                ("roll.drain", "lab-1", "ok", true),
                ("roll.restart", "lab-3", "ok", true),
                ("roll.undrain", "lab-3", "ok", true),
                ("roll.keep-drained", "lab-1", "skipped", false),
                ("after", "lab-2", "ok", false),
            ],
            ..BASE
        },
        // Safety across jobs: `group_by` cuts batches to the group limit,
        // and the plan predicts the same batches as apply runs.
        Scenario {
            name: "safety: group_by cuts a drain-restart's batches to max_unavailable",
            setup: &[],
            steps: "  - id: roll\n    target: [lab-1, lab-3]\n    use: drain-restart\n    with: { unit: demo-web, reason: scenario, timeout: 30s }\n    serial: 2\n    group_by: labels.role\n    max_unavailable: 1\n    require_healthy: true\n",
            limit: None,
            expect: &[
                ("roll.drain", "lab-1", "ok", true),
                ("roll.restart", "lab-3", "ok", true),
                ("roll.undrain", "lab-1", "ok", true),
                ("roll.undrain", "lab-3", "ok", true),
                ("roll.keep-drained", "lab-3", "skipped", false),
            ],
            batches: &[
                ("roll.drain", "lab-1", 1),
                ("roll.drain", "lab-3", 2),
                ("roll.undrain", "lab-3", 2),
            ],
            ..BASE
        },
        Scenario {
            name: "safety: group_by batches take one host of each group at a time",
            setup: &[],
            steps: "  - id: roll\n    target: [lab-1, lab-2, lab-3, lab-4]\n    serial: 4\n    group_by: labels.role\n    max_unavailable: \"50%\"\n    service: { name: demo-worker, state: restarted }\n",
            limit: None,
            expect: &[
                ("roll", "lab-1", "ok", true),
                ("roll", "lab-4", "ok", true),
            ],
            batches: &[
                ("roll", "lab-1", 1),
                ("roll", "lab-2", 1),
                ("roll", "lab-3", 2),
                ("roll", "lab-4", 2),
            ],
            ..BASE
        },
        Scenario {
            name: "module: drain-restart of a missing unit keeps the host drained",
            setup: &[],
            steps: "  - id: roll\n    target: [lab-1, lab-3]\n    use: drain-restart\n    with: { unit: demo-missing }\n    serial: 1\n    max_fail_percentage: 0\n",
            limit: None,
            expect: &[
                ("roll.drain", "lab-1", "ok", true),
                ("roll.restart", "lab-1", "failed", false),
                ("roll.undrain", "lab-1", "skipped", false),
                ("roll.keep-drained", "lab-1", "ok", true),
                ("roll.drain", "lab-3", "skipped", false),
            ],
            ..BASE
        },
        // Maintenance flags set before the run: a unit's flag skips steps
        // on that unit only, a host's every step there, and `_any` passes
        // over a host in maintenance; `ignore_maintenance` runs anyway.
        Scenario {
            name: "a unit already in maintenance is skipped",
            setup: &[("lab-2", UNIT_MAINT)],
            steps: "  - id: restart\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: restarted }\n  - id: idle\n    target: lab-2\n    service: { name: demo-idle, state: started }\n",
            expect: &[("restart", "lab-2", "skipped", false), ("restart", "lab-4", "ok", true), ("idle", "lab-2", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "ignore_maintenance runs a unit in maintenance",
            setup: &[("lab-2", UNIT_MAINT)],
            steps: "  - id: restart\n    target: [lab-2, lab-4]\n    ignore_maintenance: true\n    service: { name: demo-worker, state: restarted }\n",
            expect: &[("restart", "lab-2", "ok", true), ("restart", "lab-4", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "a host in maintenance: skipped, and _any passes it over",
            setup: &[("lab-2", HOST_MAINT)],
            steps: "  - id: one\n    target: _any,role:worker\n    service: { name: demo-worker, state: restarted }\n  - id: idle\n    target: [lab-2, lab-4]\n    service: { name: demo-idle, state: started }\n",
            expect: &[("one", "lab-4", "ok", true), ("idle", "lab-2", "skipped", false), ("idle", "lab-4", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "maintenance steps: flag a unit, clear a flag set before",
            setup: &[("lab-2", UNIT_MAINT)],
            steps: "  - id: on\n    target: [lab-1, lab-4]\n    maintenance: { enable: true, unit: demo-web, reason: scenario }\n  - id: web\n    target: [lab-1, lab-3]\n    service: { name: demo-web, state: restarted }\n  - id: off\n    target: lab-2\n    maintenance: { enable: false, unit: demo-worker }\n  - id: worker\n    target: lab-2\n    service: { name: demo-worker, state: restarted }\n",
            expect: &[("on", "lab-1", "ok", true), ("web", "lab-1", "skipped", false), ("web", "lab-3", "ok", true), ("off", "lab-2", "ok", true), ("worker", "lab-2", "ok", true)],
            ..BASE
        },
        // `unit:` steps: the file's content decides; a unit the run creates
        // is started by a later step of the same run.
        Scenario {
            name: "unit: a new unit file, then started and enabled",
            setup: &[],
            steps: "  - id: file\n    target: [lab-1, lab-3]\n    unit: { name: demo-scen, content: \"[Unit]\\nDescription=drover scenario unit\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n\" }\n  - id: start\n    target: [lab-1, lab-3]\n    service: { name: demo-scen, state: started, enabled: true }\n",
            expect: &[("file", "lab-1", "ok", true), ("start", "lab-1", "ok", true), ("start", "lab-3", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "unit: the same file is no change; absent removes a running one",
            setup: &[("lab-1", SCEN_UNIT), ("lab-3", SCEN_UNIT), ("lab-3", "systemctl start demo-scen")],
            steps: "  - id: same\n    target: lab-1\n    unit: { name: demo-scen, content: \"[Unit]\\nDescription=drover scenario unit\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n\" }\n  - id: gone\n    target: lab-3\n    unit: { name: demo-scen, state: absent }\n",
            expect: &[("same", "lab-1", "ok", false), ("gone", "lab-3", "ok", true)],
            ..BASE
        },
        // A check-capable script module: the live plan runs its check on
        // the hosts, apply runs it for real; they must agree.
        Scenario {
            name: "script module in check mode (journal-clean)",
            setup: &[],
            steps: "  - id: clean\n    target: [lab-1, lab-3]\n    use: journal-clean\n    with: { unit: demo-web }\n  - id: after\n    target: lab-1\n    service: { name: demo-idle, state: started }\n",
            expect: &[("clean", "lab-1", "ok", false), ("clean", "lab-3", "ok", false), ("after", "lab-1", "ok", true)],
            ..BASE
        },
        Scenario {
            name: "protected unit: _any picks a host that does not protect it",
            setup: &[],
            steps: "  - id: stop-one\n    target: _any,role:worker\n    service: { name: demo-worker, state: stopped }\n  - id: web\n    target: lab-2\n    service: { name: demo-web, state: restarted }\n",
            expect: &[("stop-one", "lab-4", "ok", true), ("web", "lab-2", "ok", true)],
            inventory: Some(|inv| inv.replacen("  lab-2:\n", "  lab-2:\n    protected: [demo-worker.service]\n", 1)),
            ..BASE
        },
        // A host that refuses connections (first in the inventory, so
        // `_any` must pass over it): failed as unreachable in both, exit 4.
        Scenario {
            name: "an unreachable host fails; _any passes it over",
            setup: &[],
            steps: "  - id: one\n    target: _any,role:worker\n    service: { name: demo-worker, state: started }\n  - id: web\n    target: [lab-gone, lab-1]\n    service: { name: demo-web, state: started }\n",
            expect: &[("one", "lab-2", "ok", false), ("web", "lab-gone", "failed", false), ("web", "lab-1", "ok", false)],
            inventory: Some(|inv| inv.replacen("hosts:\n", "hosts:\n  lab-gone:\n    address: 127.0.0.1\n    port: 1\n    labels: { role: worker, region: eu.gone, lab: \"yes\" }\n", 1)),
            ..BASE
        },
        Scenario {
            name: "wait gates: active, health, tcp and http pass",
            setup: &[],
            steps: "  - id: web\n    target: [lab-1, lab-3]\n    serial: 1\n    service: { name: demo-web, state: restarted }\n    wait: { active: true, health: passing, tcp: \"{{ host.vars.ip }}:8080\", http: \"http://{{ host.vars.ip }}:8080/\", timeout: 30s }\n",
            expect: &[("web", "lab-1", "ok", true), ("web", "lab-3", "ok", true)],
            batches: &[("web", "lab-1", 1), ("web", "lab-3", 2)],
            ..BASE
        },
        Scenario {
            name: "serial 50% rolls four hosts in two batches",
            setup: &[],
            steps: "  - id: roll\n    target: [lab-1, lab-2, lab-3, lab-4]\n    serial: \"50%\"\n    service: { name: demo-worker, state: restarted }\n",
            expect: &[("roll", "lab-1", "ok", true), ("roll", "lab-4", "ok", true)],
            batches: &[("roll", "lab-1", 1), ("roll", "lab-2", 1), ("roll", "lab-3", 2), ("roll", "lab-4", 2)],
            ..BASE
        },
        Scenario {
            name: "batch numbers: serial 1, a failure aborts the later batches",
            setup: &[("lab-1", EXTRA), ("lab-3", EXTRA)],
            steps: "  - id: roll\n    target: [lab-1, lab-2, lab-3, lab-4]\n    serial: 1\n    max_fail_percentage: 20\n    service: { name: demo-extra, state: restarted }\n  - id: next\n    target: lab-1\n    service: { name: demo-idle, state: started }\n",
            expect: &[("roll", "lab-1", "ok", true), ("roll", "lab-2", "failed", false), ("roll", "lab-3", "skipped", false), ("roll", "lab-4", "skipped", false), ("next", "lab-1", "skipped", false)],
            batches: &[("roll", "lab-1", 1), ("roll", "lab-2", 2), ("roll", "lab-3", 3), ("roll", "lab-4", 4)],
            ..BASE
        },
        Scenario {
            name: "become: a sudo user's steps, maintenance included",
            setup: &[],
            steps: "  - id: stop\n    target: lab-2\n    service: { name: demo-worker, state: stopped }\n  - id: idle\n    target: lab-4\n    service: { name: demo-idle, state: started, enabled: true }\n  - id: drain\n    target: lab-3\n    maintenance: { enable: true, unit: demo-web, reason: become scenario }\n  - id: web\n    target: [lab-1, lab-3]\n    service: { name: demo-web, state: restarted }\n",
            expect: &[("stop", "lab-2", "ok", true), ("idle", "lab-4", "ok", true), ("drain", "lab-3", "ok", true), ("web", "lab-3", "skipped", false), ("web", "lab-1", "ok", true)],
            inventory: Some(|inv| inv.replacen("  user: root\n", "  user: drover\n  become: true\n", 1)),
            ..BASE
        },
        Scenario {
            name: "offline: a plan from a facts file, then apply",
            setup: &[("lab-3", "systemctl stop demo-web")],
            steps: "  - id: web\n    target: role:web\n    service: { name: demo-web, state: started }\n  - id: worker\n    target: lab-2\n    service: { name: demo-worker, state: restarted }\n",
            expect: &[("web", "lab-1", "ok", false), ("web", "lab-3", "ok", true), ("worker", "lab-2", "ok", true)],
            facts_file: true,
            ..BASE
        },
        Scenario {
            name: "strategy free: unit files and maintenance, host by host",
            setup: &[],
            steps: "  - id: file\n    target: [lab-1, lab-3]\n    unit: { name: demo-scen, content: \"[Unit]\\nDescription=drover scenario unit\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n\" }\n  - id: start\n    target: [lab-1, lab-3]\n    service: { name: demo-scen, state: started }\n  - id: drain\n    target: lab-3\n    maintenance: { enable: true, unit: demo-scen, reason: scenario }\n  - id: restart\n    target: [lab-1, lab-3]\n    service: { name: demo-scen, state: restarted }\n",
            expect: &[("file", "lab-3", "ok", true), ("start", "lab-3", "ok", true), ("restart", "lab-1", "ok", true), ("restart", "lab-3", "skipped", false)],
            ..BASE
        },
    ]
}

/// The shipped modules (`use:` in the module scenarios).
fn modules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("modules")
}

pub(crate) fn playbook_text(s: &Scenario) -> String {
    let strategy = if s.name.starts_with("strategy free") {
        "strategy: free\n"
    } else {
        ""
    };
    format!(
        "name: \"scenario: {}\"\n{strategy}steps:\n{}",
        s.name, s.steps
    )
}

/// Run `cmd` on every host in parallel; (host, success, stderr).
fn on_all(lab: &Lab, cmd: &str) -> Vec<(String, bool, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .hosts
            .iter()
            .map(|h| {
                s.spawn(move || {
                    let o = lab.ssh_output(&h.name, cmd);
                    (
                        h.name.clone(),
                        o.status.success(),
                        String::from_utf8_lossy(&o.stderr).into_owned()
                            + &String::from_utf8_lossy(&o.stdout),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub(crate) fn restore(lab: &Lab) -> Result<(), String> {
    let bad: Vec<String> = on_all(lab, RESTORE)
        .into_iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(h, _, e)| format!("{h}: {e}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("restore failed: {}", bad.join("; ")))
    }
}

/// Every unit's identity and state on every host (InvocationID,
/// ActiveEnterTimestamp, states), one ssh per host.
pub(crate) fn snapshot(lab: &Lab) -> BTreeMap<String, String> {
    let cmd = format!(
        "systemctl show -p Id,InvocationID,ActiveEnterTimestamp,ActiveState,SubState,UnitFileState,LoadState,MainPID --timestamp=unix {UNITS}"
    );
    on_all(lab, &cmd)
        .into_iter()
        .map(|(h, ok, out)| {
            assert!(ok, "systemctl show on {h}: {out}");
            (h, out)
        })
        .collect()
}

/// Per (step, host): status, changed, the operations (`+`-joined, `none`
/// for none) and the error text, as both the plan and the report say them.
pub(crate) type Outcomes = BTreeMap<(String, String), Outcome>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: String,
    pub(crate) changed: bool,
    ops: String,
    error: Option<String>,
    kind: Option<String>,
}

impl Outcome {
    /// Whether the plan's prediction `self` is what apply reported. One
    /// difference in words only: a script module whose check says it
    /// changes nothing is planned with no operation, while apply reports
    /// that it ran the program (`run`); both say nothing changed.
    pub(crate) fn predicts(&self, applied: &Outcome) -> bool {
        self == applied
            || (self.ops == "none"
                && applied.ops == "run"
                && !applied.changed
                && Outcome {
                    ops: "run".into(),
                    ..self.clone()
                } == *applied)
    }
}

/// The results as Outcomes; a step × host reported twice is an error.
pub(crate) fn outcomes(results: impl Iterator<Item = Value>) -> Result<Outcomes, String> {
    let mut out = Outcomes::new();
    for r in results {
        // The plan lists `actions`, the report `action`: the same words.
        let ops = match r.get("actions").and_then(|a| a.as_array()) {
            Some(list) if list.is_empty() => "none".to_string(),
            Some(list) => list
                .iter()
                .map(|a| a.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join("+"),
            None => r["action"].as_str().unwrap_or("?").to_string(),
        };
        let key = (
            r["step"].as_str().unwrap_or("?").to_string(),
            r["hostname"].as_str().unwrap_or("?").to_string(),
        );
        let value = Outcome {
            status: r["status"].as_str().unwrap_or("?").to_string(),
            changed: r["changed"].as_bool().unwrap_or(false),
            ops,
            error: r["error"].as_str().map(str::to_string),
            kind: r["kind"].as_str().map(str::to_string),
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("{} × {} is reported twice", key.0, key.1));
        }
    }
    Ok(out)
}

fn drover_at(lab: &Lab, inventory: &Path, args: &[&str]) -> (i32, String, String) {
    run(lab
        .drover()
        .args(args)
        .arg("-i")
        .arg(inventory)
        .arg("--modules")
        .arg(modules_dir()))
}

fn run_scenario(lab: &Lab, s: &Scenario, dir: &Path) -> Result<usize, String> {
    for (host, cmd) in s.setup {
        let o = lab.ssh_output(host, cmd);
        if !o.status.success() {
            return Err(format!(
                "setup `{cmd}` on {host}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    let pb = dir.join("pb.yml");
    let saved = dir.join("plan.json");
    let report_file = dir.join("report.json");
    std::fs::write(&pb, playbook_text(s)).map_err(|e| e.to_string())?;
    let inventory = match s.inventory {
        Some(edit) => {
            let text = std::fs::read_to_string(&lab.inventory).map_err(|e| e.to_string())?;
            let path = dir.join("inventory.yml");
            std::fs::write(&path, edit(&text)).map_err(|e| e.to_string())?;
            path
        }
        None => lab.inventory.clone(),
    };
    let pb_arg = pb.to_string_lossy().into_owned();
    let saved_arg = saved.to_string_lossy().into_owned();
    let mut plan_args = vec!["plan", &pb_arg, "--format", "json", "--out", &saved_arg];
    if let Some(l) = s.limit {
        plan_args.extend(["--limit", l]);
    }

    let before = snapshot(lab);
    let facts = dir.join("facts.json").to_string_lossy().into_owned();
    if s.facts_file {
        let (code, out, err) = run(lab
            .drover()
            .args(["facts", "--out", &facts, "-i"])
            .arg(&inventory));
        if code != 0 {
            return Err(format!("facts exited {code}: {out}\n{err}"));
        }
        plan_args.extend(["--facts", &facts]);
    }
    let (plan_code, out, err) = drover_at(lab, &inventory, &plan_args);
    let after = snapshot(lab);
    if before != after {
        let diff: Vec<String> = before
            .iter()
            .filter(|(h, v)| after.get(*h) != Some(v))
            .map(|(h, v)| format!("{h}:\n{v}\n---\n{}", after[h]))
            .collect();
        return Err(format!("the plan changed the hosts:\n{}", diff.join("\n")));
    }
    let plan: Value = serde_json::from_str(&out)
        .map_err(|e| format!("plan printed no plan ({e}), exit {plan_code}: {out}\n{err}"))?;
    let plan_results: Vec<Value> = plan["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|st| st["results"].as_array().cloned().unwrap_or_default())
        .collect();
    let planned = outcomes(plan_results.iter().cloned()).map_err(|e| format!("plan: {e}"))?;
    // A live plan that could not read a host exits 4 (and shows the host
    // unreachable); otherwise 0.
    let unread = planned
        .values()
        .any(|o| o.kind.as_deref() == Some("unreachable"));
    let want_plan = if unread && !s.facts_file { 4 } else { 0 };
    if plan_code != want_plan {
        return Err(format!(
            "plan exited {plan_code}, expected {want_plan}: {out}\n{err}"
        ));
    }

    let report_arg = report_file.to_string_lossy().into_owned();
    let (code, out, err) = drover_at(
        lab,
        &inventory,
        &[
            "apply",
            &pb_arg,
            "--format",
            "json",
            "--plan",
            &saved_arg,
            "--report",
            &report_arg,
        ],
    );
    let report: Value = serde_json::from_str(&out)
        .map_err(|e| format!("apply printed no report ({e}), exit {code}: {out}\n{err}"))?;
    if report.get("results").is_none() {
        return Err(format!("apply did not run (exit {code}): {report}"));
    }
    let applied = outcomes(
        report["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter(),
    )
    .map_err(|e| format!("apply: {e}"))?;
    let keys: std::collections::BTreeSet<_> = planned.keys().chain(applied.keys()).collect();
    let mut lines = Vec::new();
    for k in keys {
        let same = match (planned.get(k), applied.get(k)) {
            (Some(p), Some(a)) => p.predicts(a),
            _ => false,
        };
        if !same {
            lines.push(format!(
                "  {} × {}: plan {:?}, apply {:?}",
                k.0,
                k.1,
                planned.get(k),
                applied.get(k)
            ));
        }
    }
    if !lines.is_empty() {
        return Err(format!(
            "plan ≠ apply:\n{}\nplan: {out_plan}\napply: {report}",
            lines.join("\n"),
            out_plan = plan["steps"]
        ));
    }
    let parsed: drover::model::report::JobReport =
        serde_json::from_value(report.clone()).map_err(|e| format!("report: {e}"))?;
    let want_code = drover::model::report::Verdict::of_report(&parsed).exit_code();
    if code != want_code {
        return Err(format!("apply exited {code}, expected {want_code}: {err}"));
    }
    if let Some(l) = s.limit {
        // Hosts outside the limit never appear (lab-1 is a web host).
        if l == "!role:web" && applied.keys().any(|(_, h)| h == "lab-1") {
            return Err(format!("--limit {l} ran on lab-1: {report}"));
        }
    }
    for (step, host, status, changed) in s.expect {
        let got = applied
            .get(&(step.to_string(), host.to_string()))
            .map(|o| (o.status.as_str(), o.changed));
        if got != Some((*status, *changed)) {
            return Err(format!(
                "expected {step} × {host} = ({status}, {changed}), apply reported {got:?}: {report}"
            ));
        }
    }
    check_batches(s, &plan_results, &report_file)?;
    Ok(applied.len())
}

/// The plan's batch numbers against what apply did: the pinned ones are
/// the plan's, and apply finished (its journal's order) every host of a
/// step's batch before any host of that step's next batch.
fn check_batches(s: &Scenario, plan_results: &[Value], report_file: &Path) -> Result<(), String> {
    let batch_of: BTreeMap<(String, String), u64> = plan_results
        .iter()
        .map(|r| {
            (
                (
                    r["step"].as_str().unwrap_or("?").to_string(),
                    r["hostname"].as_str().unwrap_or("?").to_string(),
                ),
                r["batch"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for (step, host, batch) in s.batches {
        let got = batch_of.get(&(step.to_string(), host.to_string()));
        if got != Some(&(*batch as u64)) {
            return Err(format!(
                "the plan puts {step} × {host} in batch {got:?}, expected {batch}"
            ));
        }
    }
    let journal = drover::engine::journal::Journal::beside(report_file);
    let text = std::fs::read_to_string(&journal)
        .map_err(|e| format!("journal {}: {e}", journal.display()))?;
    // Per step, the planned batch of the last host apply finished.
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let r: Value = serde_json::from_str(line).map_err(|e| format!("journal line: {e}"))?;
        if r["type"] != "result" {
            continue;
        }
        let (step, host) = (
            r["step"].as_str().unwrap_or("?").to_string(),
            r["hostname"].as_str().unwrap_or("?").to_string(),
        );
        let Some(&b) = batch_of.get(&(step.clone(), host.clone())) else {
            return Err(format!("apply ran {step} × {host}, which the plan has not"));
        };
        if let Some((before, other)) = last.get(&step) {
            if b < *before {
                return Err(format!(
                    "apply finished {step} × {host} (planned batch {b}) after {other} (planned batch {before})"
                ));
            }
        }
        last.insert(step, (b, host));
    }
    Ok(())
}

#[test]
fn plan_equals_apply_across_scenarios() {
    let Some(lab) = lab() else { return };
    assert!(lab.len() >= 4, "the scenarios need lab-1..lab-4");
    let dir = tempfile::tempdir().unwrap();
    let all = scenarios();
    assert!(all.len() >= 40, "only {} scenarios", all.len());
    // DROVER_SCENARIO=text runs only the scenarios whose name contains it.
    let only = std::env::var("DROVER_SCENARIO").ok();
    let all: Vec<Scenario> = all
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.name.contains(o)))
        .collect();
    assert!(
        !all.is_empty(),
        "DROVER_SCENARIO={} matches no scenario: nothing would be compared",
        only.unwrap_or_default()
    );
    let mut failures = Vec::new();
    let mut pairs = 0;
    {
        let _l = lab.lock();
        restore(&lab).expect("the lab's baseline");
    }
    for (i, s) in all.iter().enumerate() {
        let _l = lab.lock();
        let t = std::time::Instant::now();
        // Every scenario leaves the baseline behind (restored below); a
        // concurrent test does the same under the same lock.
        let outcome = run_scenario(&lab, s, dir.path());
        let restored = restore(&lab);
        match (&outcome, &restored) {
            (Ok(n), Ok(())) => {
                pairs += n;
                eprintln!(
                    "scenario {:>2} ok   {:<58} {n} step×host ({} ms)",
                    i + 1,
                    s.name,
                    t.elapsed().as_millis()
                );
            }
            _ => {
                let why = outcome.err().or(restored.err()).unwrap_or_default();
                eprintln!("scenario {:>2} FAIL {}: {why}", i + 1, s.name);
                failures.push(format!("{}: {why}", s.name));
            }
        }
    }
    let passed = all.len() - failures.len();
    let line = format!(
        "scenarios: {passed} passed, {} failed ({pairs} step×host results compared)\n",
        failures.len()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn apply_saved(lab: &Lab, pb: &Path, saved: &Path, extra: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(lab
        .drover()
        .arg("apply")
        .arg(pb)
        .arg("-i")
        .arg(&lab.inventory)
        .args(["--format", "json", "--plan"])
        .arg(saved)
        .args(extra));
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("no JSON from apply ({e}), exit {code}: {out}\n{err}"));
    (code, v)
}

#[test]
fn apply_plan_refuses_drift_that_changes_a_prediction() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    restore(&lab).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    let saved = dir.path().join("plan.json");
    std::fs::write(
        &pb,
        "name: drift\nsteps:\n  - id: idle\n    target: [lab-1, lab-2]\n    service: { name: demo-idle, state: started }\n  - id: web\n    target: lab-1\n    service: { name: demo-web, state: started }\n",
    )
    .unwrap();
    let (code, _, err) = run(lab
        .drover()
        .arg("plan")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .arg("--out")
        .arg(&saved));
    assert_eq!(code, 0, "{err}");

    // Harmless drift: demo-web restarted behind the plan's back is still
    // active, so `started` still does nothing there. Real drift: demo-idle
    // started on lab-2 turns the planned `start` into a no-op.
    lab.ssh("lab-1", "systemctl restart demo-web");
    lab.ssh("lab-2", "systemctl start demo-idle");
    let idle_before = lab.show("lab-1", "demo-idle");
    let (code, v) = apply_saved(&lab, &pb, &saved, &[]);
    let details = v["details"].as_str().unwrap_or_default().to_string();
    assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
    assert!(
        details
            .contains("lab-2 demo-idle.service: inactive/loaded/disabled → active/loaded/disabled"),
        "{details}"
    );
    assert!(
        !details.contains("demo-web"),
        "harmless drift listed: {details}"
    );
    assert!(!details.contains("lab-1 demo-idle"), "{details}");
    // Refused means nothing ran.
    assert_eq!(lab.show("lab-1", "demo-idle"), idle_before);

    // --allow-drift applies, and apply reports what really happened.
    let (code, v) = apply_saved(&lab, &pb, &saved, &["--allow-drift"]);
    assert_eq!(code, 0, "{v}");
    let r: Vec<(String, bool)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == "idle")
        .map(|r| {
            (
                r["hostname"].as_str().unwrap().to_string(),
                r["changed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        r,
        [("lab-1".to_string(), true), ("lab-2".to_string(), false)]
    );
    assert_eq!(lab.show("lab-1", "demo-idle")["ActiveState"], "active");
    restore(&lab).unwrap();
}
