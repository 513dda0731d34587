//! Plan = apply, on the lab's real systemd hosts.
//!
//! Each scenario sets the lab's units to a starting state (over plain
//! ssh + systemctl), then:
//! 1. `drover plan --format json --out plan.json` (live) must change
//!    nothing: every unit's InvocationID, ActiveEnterTimestamp and state
//!    are byte-identical before and after, on every host;
//! 2. `drover apply --plan plan.json --format json` (which also re-checks
//!    the saved plan for drift: there is none, so it must not refuse);
//! 3. for every step × host, the plan's predicted (status, changed) must
//!    equal what apply reports, and the set of step × host pairs must be
//!    the same; a few expectations per scenario pin what it exercises.
//!
//! State is restored after every scenario, under the lab lock. Only hosts
//! lab-1..lab-4 are named, so the scenarios run on any lab of 4+ hosts.
//! The drift refusal of `apply --plan` is tested at the end.

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

/// Back to the lab's baseline: web and worker enabled and running, idle
/// and broken disabled and stopped, no scenario leftovers, start limits reset.
const RESTORE: &str = r#"
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

const UNITS: &str = "demo-web demo-worker demo-idle demo-broken demo-extra";

struct Scenario {
    name: &'static str,
    /// (host, shell command) run in order before planning.
    setup: &'static [(&'static str, &'static str)],
    /// The playbook's steps (YAML, under `steps:`).
    steps: &'static str,
    /// `--limit`, when the scenario uses one.
    limit: Option<&'static str>,
    /// Spot checks: (step, host, status, changed) that apply must report.
    expect: &'static [(&'static str, &'static str, &'static str, bool)],
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "start an already active unit",
            setup: &[],
            steps: "  - id: web\n    target: role:web\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-1", "ok", false), ("web", "lab-3", "ok", false)],
        },
        Scenario {
            name: "start a stopped unit",
            setup: &[("lab-1", "systemctl stop demo-web"), ("lab-3", "systemctl stop demo-web")],
            steps: "  - id: web\n    target: [lab-1, lab-3, role:web]\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-1", "ok", true), ("web", "lab-3", "ok", true)],
        },
        Scenario {
            name: "start a failed unit",
            setup: &[("lab-2", "systemctl start demo-idle && systemctl kill -s KILL demo-idle; sleep 0.5; systemctl is-failed -q demo-idle")],
            steps: "  - id: idle\n    target: lab-2\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("idle", "lab-2", "ok", true)],
        },
        Scenario {
            name: "stop a failed unit (no change)",
            setup: &[("lab-2", "systemctl start demo-broken; systemctl is-failed -q demo-broken")],
            steps: "  - id: broken\n    target: lab-2\n    service: { name: demo-broken, state: stopped }\n",
            limit: None,
            expect: &[("broken", "lab-2", "ok", false)],
        },
        Scenario {
            name: "stop running units",
            setup: &[],
            steps: "  - id: worker\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: stopped }\n",
            limit: None,
            expect: &[("worker", "lab-2", "ok", true), ("worker", "lab-4", "ok", true)],
        },
        Scenario {
            name: "stop an already stopped unit everywhere",
            setup: &[],
            steps: "  - id: idle\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[("idle", "lab-1", "ok", false), ("idle", "lab-4", "ok", false)],
        },
        Scenario {
            name: "rolling restart, serial 2",
            setup: &[],
            steps: "  - id: restart\n    target: role:worker\n    serial: 2\n    service: { name: demo-worker, state: restarted }\n    wait: { active: true, timeout: 20s }\n",
            limit: None,
            expect: &[("restart", "lab-2", "ok", true), ("restart", "lab-4", "ok", true)],
        },
        Scenario {
            name: "reload a running unit that can reload",
            setup: &[("lab-2", RELOADABLE)],
            steps: "  - id: reload\n    target: lab-2\n    service: { name: demo-worker, state: reloaded }\n",
            limit: None,
            expect: &[("reload", "lab-2", "ok", true)],
        },
        Scenario {
            name: "reload a stopped unit starts it",
            setup: &[("lab-3", "systemctl stop demo-worker")],
            steps: "  - id: reload\n    target: lab-3\n    service: { name: demo-worker, state: reloaded }\n",
            limit: None,
            expect: &[("reload", "lab-3", "ok", true)],
        },
        Scenario {
            name: "enable a disabled unit",
            setup: &[],
            steps: "  - id: enable\n    target: [lab-1, lab-2]\n    service: { name: demo-idle, enabled: true }\n",
            limit: None,
            expect: &[("enable", "lab-1", "ok", true), ("enable", "lab-2", "ok", true)],
        },
        Scenario {
            name: "enable an enabled unit (no change)",
            setup: &[],
            steps: "  - id: enable\n    target: role:web\n    service: { name: demo-web, enabled: true }\n",
            limit: None,
            expect: &[("enable", "lab-1", "ok", false)],
        },
        Scenario {
            name: "disable an enabled unit; disable a disabled one",
            setup: &[],
            steps: "  - id: disable\n    target: [lab-4]\n    service: { name: demo-worker, enabled: false }\n  - id: disable-idle\n    target: [lab-4]\n    service: { name: demo-idle, enabled: false }\n",
            limit: None,
            expect: &[("disable", "lab-4", "ok", true), ("disable-idle", "lab-4", "ok", false)],
        },
        Scenario {
            name: "enable and start in one step",
            setup: &[("lab-3", "systemctl enable -q demo-idle")],
            steps: "  - id: idle\n    target: [lab-3, lab-4]\n    service: { name: demo-idle, state: started, enabled: true }\n",
            limit: None,
            expect: &[("idle", "lab-3", "ok", true), ("idle", "lab-4", "ok", true)],
        },
        Scenario {
            name: "stop and mask",
            setup: &[("lab-1", EXTRA), ("lab-1", "systemctl start demo-extra"), ("lab-2", EXTRA)],
            steps: "  - id: mask\n    target: [lab-1, lab-2]\n    service: { name: demo-extra, state: stopped, masked: true }\n",
            limit: None,
            expect: &[("mask", "lab-1", "ok", true), ("mask", "lab-2", "ok", true)],
        },
        Scenario {
            name: "unmask and start a masked unit",
            setup: &[("lab-3", EXTRA), ("lab-3", "systemctl mask -q demo-extra")],
            steps: "  - id: unmask\n    target: lab-3\n    service: { name: demo-extra, state: started, masked: false }\n",
            limit: None,
            expect: &[("unmask", "lab-3", "ok", true)],
        },
        Scenario {
            name: "start a masked unit fails; later steps skip the host",
            setup: &[("lab-1", EXTRA), ("lab-1", "systemctl mask -q demo-extra"), ("lab-3", EXTRA)],
            steps: "  - id: start\n    target: [lab-1, lab-3]\n    service: { name: demo-extra, state: started }\n  - id: after\n    target: [lab-1, lab-3]\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("start", "lab-1", "failed", false), ("start", "lab-3", "ok", true), ("after", "lab-1", "skipped", false)],
        },
        Scenario {
            name: "unit missing on a host",
            setup: &[("lab-2", EXTRA)],
            steps: "  - id: start\n    target: [lab-2, lab-4]\n    service: { name: demo-extra, state: started }\n  - id: stop-missing\n    needs: []\n    target: [lab-1]\n    service: { name: demo-extra, state: stopped }\n",
            limit: None,
            expect: &[("start", "lab-2", "ok", true), ("start", "lab-4", "failed", false), ("stop-missing", "lab-1", "ok", false)],
        },
        Scenario {
            name: "max_fail_percentage aborts the run",
            setup: &[("lab-1", EXTRA)],
            steps: "  - id: start\n    target: [lab-1, lab-3]\n    max_fail_percentage: 0\n    service: { name: demo-extra, state: started }\n  - id: next\n    target: [lab-1, lab-2]\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("start", "lab-3", "failed", false), ("next", "lab-2", "skipped", false)],
        },
        Scenario {
            name: "when false skips",
            setup: &[],
            steps: "  - id: idle\n    target: [lab-1, lab-2, lab-3, lab-4]\n    when: \"host.labels.role == 'worker'\"\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("idle", "lab-1", "skipped", false), ("idle", "lab-2", "ok", true)],
        },
        Scenario {
            name: "_any picks one worker",
            setup: &[],
            steps: "  - id: one\n    target: _any,role:worker\n    service: { name: demo-worker, state: restarted }\n",
            limit: None,
            expect: &[("one", "lab-2", "ok", true)],
        },
        Scenario {
            name: "_any after a failure picks the next host",
            setup: &[("lab-2", EXTRA)],
            steps: "  - id: extra\n    target: [lab-1, lab-2]\n    service: { name: demo-extra, state: started }\n  - id: any\n    target: _any,region:eu\n    service: { name: demo-idle, state: started }\n",
            limit: None,
            expect: &[("extra", "lab-1", "failed", false), ("any", "lab-2", "ok", true)],
        },
        Scenario {
            name: "selector with negation",
            setup: &[("lab-3", "systemctl stop demo-web")],
            steps: "  - id: web\n    target: role:web,!lab-1\n    service: { name: demo-web, state: started }\n",
            limit: None,
            expect: &[("web", "lab-3", "ok", true)],
        },
        Scenario {
            name: "stop then start the same unit (state threads through steps)",
            setup: &[],
            steps: "  - id: stop\n    target: lab-4\n    service: { name: demo-worker, state: stopped }\n  - id: start\n    target: lab-4\n    service: { name: demo-worker, state: started }\n  - id: again\n    target: lab-4\n    service: { name: demo-worker, state: started }\n",
            limit: None,
            expect: &[("stop", "lab-4", "ok", true), ("start", "lab-4", "ok", true), ("again", "lab-4", "ok", false)],
        },
        Scenario {
            name: "--limit intersects every step",
            setup: &[("lab-2", "systemctl stop demo-web"), ("lab-1", "systemctl stop demo-web")],
            steps: "  - id: web\n    service: { name: demo-web, state: started }\n  - id: idle\n    needs: []\n    service: { name: demo-idle, state: stopped }\n",
            limit: Some("!role:web"),
            expect: &[("web", "lab-2", "ok", true), ("web", "lab-4", "ok", false), ("idle", "lab-2", "ok", false)],
        },
        Scenario {
            name: "strategy free",
            setup: &[("lab-2", "systemctl stop demo-worker")],
            steps: "  - id: worker\n    target: [lab-2, lab-4]\n    service: { name: demo-worker, state: started }\n  - id: idle\n    target: [lab-2, lab-4]\n    service: { name: demo-idle, state: stopped }\n",
            limit: None,
            expect: &[("worker", "lab-2", "ok", true), ("worker", "lab-4", "ok", false)],
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
        },
    ]
}

/// The shipped modules (`use:` in the module scenarios).
fn modules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("modules")
}

fn playbook_text(s: &Scenario) -> String {
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

fn restore(lab: &Lab) -> Result<(), String> {
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
fn snapshot(lab: &Lab) -> BTreeMap<String, String> {
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
type Outcomes = BTreeMap<(String, String), Outcome>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: String,
    changed: bool,
    ops: String,
    error: Option<String>,
}

/// The results as Outcomes; a step × host reported twice is an error.
fn outcomes(results: impl Iterator<Item = Value>) -> Result<Outcomes, String> {
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
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("{} × {} is reported twice", key.0, key.1));
        }
    }
    Ok(out)
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
    std::fs::write(&pb, playbook_text(s)).map_err(|e| e.to_string())?;
    let limit: Vec<&str> = s.limit.map(|l| vec!["--limit", l]).unwrap_or_default();

    let before = snapshot(lab);
    let (code, out, err) = run(lab
        .drover()
        .arg("plan")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .arg("--modules")
        .arg(modules_dir())
        .args(["--format", "json", "--out"])
        .arg(&saved)
        .args(&limit));
    if code != 0 {
        return Err(format!("plan exited {code}: {out}\n{err}"));
    }
    let after = snapshot(lab);
    if before != after {
        let diff: Vec<String> = before
            .iter()
            .filter(|(h, v)| after.get(*h) != Some(v))
            .map(|(h, v)| format!("{h}:\n{v}\n---\n{}", after[h]))
            .collect();
        return Err(format!("the plan changed the hosts:\n{}", diff.join("\n")));
    }
    let plan: Value = serde_json::from_str(&out).map_err(|e| format!("plan json: {e}"))?;
    let planned = outcomes(
        plan["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|st| st["results"].as_array().cloned().unwrap_or_default()),
    )
    .map_err(|e| format!("plan: {e}"))?;

    let (code, out, err) = run(lab
        .drover()
        .arg("apply")
        .arg(&pb)
        .arg("-i")
        .arg(&lab.inventory)
        .arg("--modules")
        .arg(modules_dir())
        .args(["--format", "json", "--plan"])
        .arg(&saved));
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
    if planned != applied {
        let mut lines = Vec::new();
        for k in planned
            .keys()
            .chain(applied.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if planned.get(k) != applied.get(k) {
                lines.push(format!(
                    "  {} × {}: plan {:?}, apply {:?}",
                    k.0,
                    k.1,
                    planned.get(k),
                    applied.get(k)
                ));
            }
        }
        return Err(format!(
            "plan ≠ apply:\n{}\nplan: {out_plan}\napply: {report}",
            lines.join("\n"),
            out_plan = plan["steps"]
        ));
    }
    let any_failed = applied.values().any(|o| o.status == "failed");
    let want_code = if any_failed { 2 } else { 0 };
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
    Ok(applied.len())
}

#[test]
fn plan_equals_apply_across_scenarios() {
    let Some(lab) = lab() else { return };
    assert!(lab.len() >= 4, "the scenarios need lab-1..lab-4");
    let dir = tempfile::tempdir().unwrap();
    let all = scenarios();
    assert!(all.len() >= 20, "only {} scenarios", all.len());
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
