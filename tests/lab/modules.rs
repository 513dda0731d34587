//! Modules on the lab's real hosts: the shipped `drain-restart` moving
//! each host through every step before the next host starts, and leaving
//! a failing host drained; script modules run over ssh (check mode,
//! changed/failed, garbage and oversize output, time limit, shell
//! metacharacters in params that reach the program intact and never a
//! shell); the shipped `journal-clean`. Tests hold the lab lock and put
//! back what they touch.

use crate::common;

use std::path::{Path, PathBuf};

use common::{lab, run, Lab};
use serde_json::Value;

const STATE: &str = "/var/lib/drover/maintenance.json";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn script(dir: &Path, name: &str, meta: &str, program: &str) {
    write(dir, &format!("modules/{name}/module.yml"), meta);
    let run = write(dir, &format!("modules/{name}/run"), program);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn shipped_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("modules")
}

/// `drover apply --format json --report DIR/report.json`: exit code, the
/// report, and the journal's result lines in the order they happened.
fn apply(lab: &Lab, dir: &Path, playbook: &Path) -> (i32, Value, Vec<Value>) {
    let report = dir.join("report.json");
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "--modules"])
        .arg(shipped_modules())
        .arg("--report")
        .arg(&report)
        .arg("-i")
        .arg(&lab.inventory)
        .arg(playbook));
    let json: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("no report ({e}): {out}\n{err}"));
    let journal = std::fs::read_to_string(drover::engine::journal::Journal::beside(&report))
        .unwrap_or_default();
    let lines = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("hostname").is_some())
        .collect();
    (code, json, lines)
}

fn result<'a>(report: &'a Value, step: &str, host: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == step && r["hostname"] == host)
        .unwrap_or_else(|| panic!("no result for {host} in {step}: {report}"))
}

fn maintenance_of(lab: &Lab, host: &str) -> Value {
    let text = lab.ssh(host, &format!("cat {STATE} 2>/dev/null || echo '{{}}'"));
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn unit_flag<'a>(state: &'a Value, unit: &str) -> Option<&'a Value> {
    state
        .get("units")
        .and_then(|u| u.get(unit))
        .filter(|v| !v.is_null())
}

#[test]
fn drain_restart_takes_each_host_through_every_step_before_the_next_starts() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = ["lab-1", "lab-3", "lab-5"];
    let _undo: Vec<_> = web
        .iter()
        .map(|h| lab.undo_on_drop(h, &format!("rm -f {STATE}; systemctl start demo-web")))
        .collect();
    for h in web {
        lab.ssh(h, "systemctl reset-failed; systemctl start demo-web");
    }
    let before: Vec<String> = web
        .iter()
        .map(|h| lab.show(h, "demo-web")["InvocationID"].clone())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "p.yml",
        "name: rolling\nsteps:\n  - id: web\n    target: [lab-1, lab-3, lab-5]\n    use: drain-restart\n    with: { unit: demo-web, reason: lab rolling test, timeout: 30s }\n    serial: 1\n    max_fail_percentage: 0\n",
    );
    let (code, report, journal) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 0, "{report}");
    for (i, h) in web.iter().enumerate() {
        for step in ["web.drain", "web.restart", "web.undrain"] {
            let r = result(&report, step, h);
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["changed"], true, "{r}");
        }
        assert_eq!(result(&report, "web.keep-drained", h)["status"], "skipped");
        let now = lab.show(h, "demo-web");
        assert_eq!(now["ActiveState"], "active", "{h}");
        assert_ne!(now["InvocationID"], before[i], "{h} was restarted");
        assert!(
            unit_flag(&maintenance_of(&lab, h), "demo-web.service").is_none(),
            "{h} undrained"
        );
    }
    // The journal records results as they happen: every step of host 1,
    // then every step of host 2, then host 3 — never interleaved.
    let order: Vec<(String, String)> = journal
        .iter()
        .filter(|r| r["status"] == "ok")
        .map(|r| {
            (
                r["hostname"].as_str().unwrap().to_string(),
                r["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = web
        .iter()
        .flat_map(|h| {
            ["web.drain", "web.restart", "web.undrain"].map(|s| (h.to_string(), s.to_string()))
        })
        .collect();
    assert_eq!(order, want, "journal order");
    // And systemd's own clock agrees: each host's restart (ActiveEnterTimestamp,
    // in microseconds) happened strictly after the previous host's; in
    // between, drover had found that host healthy and undrained it.
    let entered: Vec<u64> = web
        .iter()
        .map(|h| {
            lab.ssh(
                h,
                "busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/demo_2dweb_2eservice org.freedesktop.systemd1.Unit ActiveEnterTimestamp",
            )
            .trim()
            .trim_start_matches("t ")
            .parse()
            .unwrap()
        })
        .collect();
    assert!(
        entered.windows(2).all(|w| w[0] < w[1]),
        "restart times out of order: {entered:?}"
    );
}

#[test]
fn drain_restart_leaves_a_failing_host_drained_and_stops_the_roll() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = ["lab-1", "lab-3", "lab-5"];
    let _undo: Vec<_> = web
        .iter()
        .map(|h| {
            lab.undo_on_drop(
                h,
                &format!("rm -f {STATE}; systemctl reset-failed; systemctl stop demo-broken"),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "p.yml",
        "name: rolling broken\nsteps:\n  - id: roll\n    target: [lab-1, lab-3, lab-5]\n    use: drain-restart\n    with: { unit: demo-broken, timeout: 10s }\n    serial: 1\n    max_fail_percentage: 0\n",
    );
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 2, "{report}");
    assert_eq!(result(&report, "roll.drain", "lab-1")["status"], "ok");
    assert_eq!(result(&report, "roll.restart", "lab-1")["status"], "failed");
    let undrain = result(&report, "roll.undrain", "lab-1");
    assert_eq!(undrain["status"], "skipped", "{undrain}");
    let kept = result(&report, "roll.keep-drained", "lab-1");
    assert_eq!(kept["status"], "ok", "{kept}");
    assert_eq!(kept["changed"], true, "{kept}");
    // The host stays drained, saying where it failed.
    let state = maintenance_of(&lab, "lab-1");
    let flag = unit_flag(&state, "demo-broken.service").unwrap_or_else(|| panic!("{state}"));
    assert_eq!(flag["reason"], "drain-restart failed at restart", "{state}");
    // max_fail_percentage 0: the next batches never start.
    for h in ["lab-3", "lab-5"] {
        for step in ["roll.drain", "roll.restart"] {
            let r = result(&report, step, h);
            assert_eq!(r["status"], "skipped", "{r}");
            assert!(r["error"].as_str().unwrap().contains("aborted"), "{r}");
        }
        // The cleanup is not stopped by the abort, but these hosts were
        // never drained: nothing to undo.
        let r = result(&report, "roll.undrain", h);
        assert_eq!(r["status"], "skipped", "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("never began roll"),
            "{r}"
        );
        assert!(
            unit_flag(&maintenance_of(&lab, h), "demo-broken.service").is_none(),
            "{h} untouched"
        );
    }
}

/// Echoes what it was given and where it runs: its input, and the command
/// lines of its ancestors (to prove no param reached any of them).
const ECHO: &str = r#"#!/usr/bin/env python3
import json, os, sys
doc = json.load(sys.stdin)
lines, pid = [], os.getppid()
for _ in range(6):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            lines.append(f.read().replace(b"\0", b" ").decode("utf-8", "replace"))
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        break
print(json.dumps({"changed": False, "msg": json.dumps({"input": doc, "ancestors": lines})}))
"#;

#[test]
fn script_params_full_of_shell_metacharacters_reach_the_program_intact_and_no_shell() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "echo",
        "description: echo\nparams:\n  text: { description: t }\n  n: { description: n, default: 3 }\n",
        ECHO,
    );
    let marker = "/tmp/drover-pwned-by-a-param";
    let _undo = lab.undo_on_drop("lab-2", &format!("rm -f {marker}"));
    let nasty = format!(
        "a'b\"c $(touch {marker}) `touch {marker}`; touch {marker} | & > < * ? ~ # \\ \\n ${{HOME}} %s \u{e9}"
    );
    let text = serde_json::to_string(&nasty).unwrap();
    let pb = write(
        dir.path(),
        "p.yml",
        &format!(
            "name: echo\nsteps:\n  - id: echo\n    target: lab-2\n    use: echo\n    with: {{ text: {text} }}\n"
        ),
    );
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 0, "{report}");
    let r = result(&report, "echo", "lab-2");
    assert_eq!(r["name"], "echo");
    assert_eq!(r["status"], "ok");
    assert_eq!(r["changed"], false);
    assert_eq!(r["action"], "run");
    let said: Value = serde_json::from_str(r["msg"].as_str().unwrap()).unwrap();
    assert_eq!(said["input"]["params"]["text"], nasty.as_str());
    assert_eq!(said["input"]["params"]["n"], 3, "the default");
    assert_eq!(said["input"]["check"], false);
    assert_eq!(said["input"]["host"]["name"], "lab-2");
    assert_eq!(said["input"]["host"]["labels"]["role"], "worker");
    let ancestors = said["ancestors"].as_array().unwrap();
    assert!(ancestors.len() >= 2, "{said}");
    for a in ancestors {
        let a = a.as_str().unwrap();
        assert!(
            !a.contains("pwned") && !a.contains("a'b"),
            "a param on a command line: {a}"
        );
    }
    let out = lab.ssh_output("lab-2", &format!("test -e {marker}"));
    assert!(!out.status.success(), "a shell ran the param");
    // Nothing left behind in the temporary directory.
    let left = lab.ssh("lab-2", "ls /tmp | grep -c drover-module || true");
    assert_eq!(left.trim(), "0", "temporary program files left: {left}");
}

/// Writes `params.content` to `params.path`; in check mode, says what it
/// would change without touching anything.
const WRITER: &str = r#"#!/bin/sh
python3 -c '
import json, os, sys
doc = json.load(sys.stdin)
p, want = doc["params"]["path"], doc["params"]["content"]
try:
    have = open(p).read()
except OSError:
    have = ""
changed = have != want
if changed and not doc["check"]:
    with open(p, "w") as f:
        f.write(want)
print(json.dumps({"changed": changed, "msg": "would write" if doc["check"] else "wrote",
                  "diff": {"before": have, "after": want}}))
'
"#;

#[test]
fn a_check_capable_script_is_previewed_by_a_live_plan_and_changes_on_apply() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let path = "/tmp/drover-module-writer-test";
    let _undo = lab.undo_on_drop("lab-4", &format!("rm -f {path}"));
    lab.ssh("lab-4", &format!("rm -f {path}"));
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "writer",
        "description: w\nparams:\n  path: { description: p }\n  content: { description: c }\ncheck: true\n",
        WRITER,
    );
    let pb = write(
        dir.path(),
        "p.yml",
        &format!("name: w\nsteps:\n  - id: w\n    target: lab-4\n    use: writer\n    with: {{ path: {path}, content: \"hello from drover\" }}\n"),
    );
    let (code, out, err) = run(lab
        .drover()
        .args(["plan", "-i"])
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("+    | hello from drover"), "the diff: {out}");
    assert!(out.contains("check: would write"), "{out}");
    let out = lab.ssh_output("lab-4", &format!("test -e {path}"));
    assert!(!out.status.success(), "the plan changed the host");
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 0, "{report}");
    let r = result(&report, "w", "lab-4");
    assert_eq!(
        (r["status"].as_str(), r["changed"].as_bool()),
        (Some("ok"), Some(true)),
        "{r}"
    );
    assert_eq!(
        lab.ssh("lab-4", &format!("cat {path}")),
        "hello from drover"
    );
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 0);
    assert_eq!(
        result(&report, "w", "lab-4")["changed"],
        false,
        "idempotent"
    );
    // With --facts nothing runs: the plan cannot predict.
    let facts = dir.path().join("facts.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["facts", "-i"])
        .arg(&lab.inventory)
        .arg("--out")
        .arg(&facts));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(lab
        .drover()
        .args(["plan", "--limit", "lab-4", "-i"])
        .arg(&lab.inventory)
        .arg("--facts")
        .arg(&facts)
        .arg(&pb));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("will run; cannot predict"), "{out}");
    // A saved plan with a script module applies: its check-mode prediction
    // is not mistaken for drift.
    lab.ssh("lab-4", &format!("rm -f {path}"));
    let saved = dir.path().join("plan.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["plan", "--out"])
        .arg(&saved)
        .arg("-i")
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "--plan"])
        .arg(&saved)
        .arg("-i")
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result(&report, "w", "lab-4")["changed"], true, "{report}");
    // A module changed after the review is refused like a changed playbook.
    let (code, _, err) = run(lab
        .drover()
        .args(["plan", "--out"])
        .arg(&saved)
        .arg("-i")
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 0, "{err}");
    let run_file = dir.path().join("modules/writer/run");
    let text = std::fs::read_to_string(&run_file).unwrap();
    std::fs::write(&run_file, format!("{text}\n# edited after the review\n")).unwrap();
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--plan"])
        .arg(&saved)
        .arg("-i")
        .arg(&lab.inventory)
        .arg(&pb));
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("modules/writer/run changed since the plan was made"),
        "names the changed file: {err}"
    );
}

#[test]
fn failing_garbage_oversize_and_slow_scripts_fail_clearly() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let meta = "description: d\n";
    script(
        dir.path(),
        "refuses",
        meta,
        "#!/bin/sh\necho '{\"failed\": true, \"changed\": false, \"msg\": \"disk is full\"}'\n",
    );
    script(
        dir.path(),
        "garbage",
        meta,
        "#!/bin/sh\nprintf 'hello \\033[31mred\\n'\necho oops >&2\n",
    );
    script(
        dir.path(),
        "huge",
        meta,
        "#!/bin/sh\nhead -c 3000000 /dev/zero | tr '\\0' x\n",
    );
    script(
        dir.path(),
        "slow",
        "description: d\ntimeout: 2s\n",
        "#!/bin/sh\nexec sleep 60\n",
    );
    let pb = write(
        dir.path(),
        "p.yml",
        "name: bad scripts\nsteps:\n  - { id: refuses, target: lab-6, use: refuses, needs: [] }\n  - { id: garbage, target: lab-6, use: garbage, needs: [] }\n  - { id: huge, target: lab-6, use: huge, needs: [] }\n  - { id: slow, target: lab-6, use: slow, needs: [] }\n",
    );
    let t0 = std::time::Instant::now();
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 2, "{report}");
    let error = |step: &str| {
        let r = result(&report, step, "lab-6");
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["name"], step);
        r["error"].as_str().unwrap().to_string()
    };
    assert_eq!(error("refuses"), "disk is full");
    let e = error("garbage");
    assert!(e.contains("printed no valid JSON"), "{e}");
    assert!(
        e.contains("hello \\u{1b}[31mred") && e.contains("oops"),
        "escaped: {e}"
    );
    let e = error("huge");
    assert!(e.contains("more than 1024 KiB"), "{e}");
    let e = error("slow");
    assert!(e.contains("did not finish within its time limit"), "{e}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(40),
        "the time limit held: {:?}",
        t0.elapsed()
    );
    let left = lab.ssh("lab-6", "pgrep -x -f 'sleep 60' | wc -l");
    assert_eq!(left.trim(), "0", "the slow program was killed");
}

#[test]
fn journal_clean_passes_a_quiet_unit_and_fails_a_noisy_one() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let _undo = lab.undo_on_drop(
        "lab-2",
        "systemctl stop drover-jc-quiet drover-jc-noisy 2>/dev/null; systemctl reset-failed drover-jc-quiet drover-jc-noisy 2>/dev/null; true",
    );
    lab.ssh(
        "lab-2",
        "systemd-run -q --unit=drover-jc-quiet /bin/sh -c 'echo all fine; exec sleep infinity'",
    );
    lab.ssh(
        "lab-2",
        "systemd-run -q --unit=drover-jc-noisy -p SyslogLevel=err /bin/sh -c 'echo disk on fire; exec sleep infinity'",
    );
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "p.yml",
        "name: journals\nsteps:\n  - { id: quiet, target: lab-2, use: journal-clean, with: { unit: drover-jc-quiet } }\n  - { id: noisy, target: lab-2, use: journal-clean, with: { unit: drover-jc-noisy }, needs: [] }\n",
    );
    // journald may take a moment to index the line: the plan (check mode)
    // and the apply both read it after it was written, so each sees it.
    lab.ssh("lab-2", "journalctl --sync");
    let (code, out, err) = run(lab
        .drover()
        .args(["plan", "--modules"])
        .arg(shipped_modules())
        .arg("-i")
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("disk on fire"),
        "the check's verdict in the plan: {out}"
    );
    let (code, report, _) = apply(&lab, dir.path(), &pb);
    assert_eq!(code, 2, "{report}");
    let quiet = result(&report, "quiet", "lab-2");
    assert_eq!(quiet["status"], "ok", "{quiet}");
    assert_eq!(quiet["name"], "journal-clean");
    assert!(
        quiet["msg"].as_str().unwrap().contains("no error-priority"),
        "{quiet}"
    );
    let noisy = result(&report, "noisy", "lab-2");
    assert_eq!(noisy["status"], "failed", "{noisy}");
    assert!(
        noisy["error"].as_str().unwrap().contains("disk on fire"),
        "{noisy}"
    );
}

#[test]
fn script_modules_honour_become() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "whoami",
        "description: who runs me\n",
        "#!/bin/sh\nprintf '{\"changed\": false, \"msg\": \"uid=%s\"}' \"$(id -u)\"\n",
    );
    let pb = write(
        dir.path(),
        "p.yml",
        "name: whoami\nsteps:\n  - { id: who, use: whoami }\n",
    );
    let h = lab.host(1).to_string();
    let uid_with = |become_: bool| {
        let inv = write(
            dir.path(),
            "inv.yml",
            &format!(
                "defaults: {{ user: drover, become: {become_}, transport: ssh, ssh_config: {}, connect_timeout: 5s }}\nhosts:\n  {h}: {{}}\n",
                lab.ssh_config.display()
            ),
        );
        let (code, out, err) = run(lab
            .drover()
            .args(["apply", "--format", "json", "-i"])
            .arg(&inv)
            .arg(&pb));
        assert_eq!(code, 0, "{out}\n{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        result(&report, "who", &h)["msg"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(uid_with(true), "uid=0", "become runs the program as root");
    assert_ne!(
        uid_with(false),
        "uid=0",
        "without become, as the login user"
    );
}
