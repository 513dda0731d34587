//! Modules offline: how a `use:` call expands (ids, target, when, needs,
//! serial groups, params and their defaults), the errors of bad calls and
//! bad module files (file, line, call site, did-you-mean, recursion), and
//! how a plan from a facts file shows composite and script modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use drover::engine::job::Job;
use drover::model::playbook::Playbook;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

const INVENTORY: &str = "hosts:\n  web-1: { labels: { role: web } }\n  web-2: { labels: { role: web } }\n  db-1: { labels: { role: db } }\n";

const PAIR: &str = "params:\n  unit: { description: the unit }\n  timeout: { description: how long, default: 5s }\nsteps:\n  - id: one\n    service: { name: \"{{ params.unit }}\", state: restarted }\n    wait: { active: true, timeout: \"{{ params.timeout }}\" }\n  - id: two\n    when: \"host.name != 'web-2'\"\n    service: { name: \"{{ params.unit }}-side\", state: started }\n";

fn job(dir: &Path, playbook: &str) -> drover::model::error::Result<Job> {
    let pb = write(dir, "p.yml", playbook);
    let inv = write(dir, "inv.yml", INVENTORY);
    Job::load(&pb, &inv, None)
}

fn check_json(dir: &Path, playbook: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let pb = write(dir, "p.yml", playbook);
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(dir)
        .args(["check", "--format", "json"])
        .args(extra)
        .arg(&pb)
        .output()
        .unwrap();
    if out.status.success() {
        return (0, serde_json::Value::Null);
    }
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn details(json: &serde_json::Value) -> String {
    json["details"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_call_expands_into_namespaced_steps_that_take_the_calls_target_when_needs_and_serial() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "modules/pair.yml", PAIR);
    let job = job(
        dir.path(),
        "name: t\nsteps:\n  - { id: pre, target: db-1, service: { name: a, state: started } }\n  - id: roll\n    use: pair\n    target: role:web\n    when: \"host.name != 'db-1'\"\n    needs: [pre]\n    serial: 1\n    max_fail_percentage: 0\n    with: { unit: demo }\n  - { id: post, target: db-1, service: { name: b, state: started } }\n",
    )
    .unwrap();
    let pb = &job.playbook;
    let ids: Vec<&str> = pb.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["pre", "roll.one", "roll.two", "post"]);
    // The call's target and serial group cover every step of the module.
    for s in &pb.steps[1..3] {
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets[0].to_string(), "role:web");
        let g = s.group.as_ref().expect("a serial group");
        assert_eq!(g.call, "roll");
        assert_eq!(g.steps, vec![1, 2]);
        assert_eq!(g.max_fail_percentage, 0.0);
        assert!(s.serial.is_none(), "the group batches, not the step");
    }
    assert!(pb.steps[0].group.is_none() && pb.steps[3].group.is_none());
    // Ordering: the call's needs go to its first step, the steps after the
    // call wait for all of its steps.
    assert_eq!(job.dag.dependencies(1), vec![0]);
    assert_eq!(job.dag.dependencies(2), vec![1]);
    assert_eq!(job.dag.dependencies(3), vec![1, 2]);
    // Params (and their defaults) reach templates and fixed fields.
    let one = &job.expanded[1];
    assert_eq!(one.tasks.len(), 2);
    assert_eq!(one.tasks[0].unit.as_str(), "demo.service");
    assert_eq!(
        pb.steps[1].wait.as_ref().map(|w| w.timeout),
        Some(std::time::Duration::from_secs(5))
    );
    // `when` is the call's and the step's together.
    let two = &job.expanded[2];
    assert_eq!(two.tasks[0].unit.as_str(), "demo-side.service");
    let when: Vec<bool> = two.tasks.iter().map(|t| t.when).collect();
    assert_eq!(
        when,
        [true, false],
        "web-2 is excluded by the step's own when"
    );
}

#[test]
fn with_values_are_templates_over_vars_and_the_callers_params() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "modules/pair.yml", PAIR);
    write(
        dir.path(),
        "modules/outer.yml",
        "params:\n  svc: { description: s }\nsteps:\n  - { id: inner, use: pair, with: { unit: \"{{ params.svc }}-x\", timeout: 7s } }\n",
    );
    let job = job(
        dir.path(),
        "name: t\nvars: { svc: shop }\nsteps:\n  - { id: c, target: web-1, use: outer, with: { svc: \"{{ vars.svc }}\" } }\n",
    )
    .unwrap();
    let ids: Vec<&str> = job.playbook.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c.inner.one", "c.inner.two"]);
    assert_eq!(job.expanded[0].tasks[0].unit.as_str(), "shop-x.service");
    assert_eq!(
        job.playbook.steps[0].wait.as_ref().map(|w| w.timeout),
        Some(std::time::Duration::from_secs(7))
    );
}

#[test]
fn unknown_and_missing_params_name_the_call_site() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "modules/pair.yml", PAIR);
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - id: c\n    use: pair\n    with: { unti: demo }\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(json["error"], "playbook is invalid", "{json}");
    let d = details(&json);
    assert!(d.contains("unknown parameter `unti`"), "{d}");
    assert!(d.contains("did you mean `unit`?"), "{d}");
    assert!(d.contains("pair.yml"), "names the module file: {d}");
    assert!(d.contains("p.yml line 5"), "{d}");
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - id: c\n    use: pair\n",
        &[],
    );
    assert_eq!(code, 1);
    let d = details(&json);
    assert!(
        d.contains("missing required parameter `unit` (the unit)"),
        "{d}"
    );
    assert!(d.contains("p.yml line 3"), "{d}");
    // An unknown module: what was searched, and the nearest name.
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - id: c\n    use: piar\n",
        &[],
    );
    assert_eq!(code, 1);
    let d = details(&json);
    assert!(d.contains("unknown module `piar`"), "{d}");
    assert!(d.contains("did you mean `pair`?"), "{d}");
}

#[test]
fn errors_inside_a_module_name_its_file_and_line_and_the_call_site() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "modules/bad.yml",
        "params: {}\nsteps:\n  - id: go\n    service: { name: x, state: restartd }\n",
    );
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - id: first\n    service: { name: y, state: started }\n  - id: c\n    use: bad\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(json["error"], "module is invalid", "{json}");
    let d = details(&json);
    assert!(d.contains("bad.yml line 4"), "module file and line: {d}");
    assert!(
        d.contains("called by step `c` at ") && d.contains("p.yml line 5"),
        "call site: {d}"
    );
    assert!(d.contains("did you mean `restarted`?"), "{d}");
    // A module step's own needs are checked against the module's ids.
    write(
        dir.path(),
        "modules/bad.yml",
        "params: {}\nsteps:\n  - id: go\n    service: { name: x, state: started }\n  - id: two\n    needs: [goo]\n    service: { name: x, state: started }\n",
    );
    let (_, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - { id: c, use: bad }\n",
        &[],
    );
    let d = details(&json);
    assert!(
        d.contains("needs unknown step `goo`") && d.contains("did you mean `go`?"),
        "{d}"
    );
    assert!(d.contains("bad.yml line 6"), "{d}");
}

#[test]
fn a_module_calling_itself_is_an_error_naming_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "modules/selfish.yml",
        "steps:\n  - { id: again, use: selfish }\n",
    );
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - { id: c, use: selfish }\n",
        &[],
    );
    assert_eq!(code, 1);
    let d = details(&json);
    assert!(d.contains("module `selfish` calls itself"), "{d}");
    assert!(
        d.contains("p.yml line 3 column") && d.contains("step `again` ("),
        "{d}"
    );
    // Indirect: a -> b -> a.
    write(
        dir.path(),
        "modules/a.yml",
        "steps:\n  - { id: to-b, use: b }\n",
    );
    write(
        dir.path(),
        "modules/b.yml",
        "steps:\n  - { id: to-a, use: a }\n",
    );
    let (code, json) = check_json(dir.path(), "name: t\nsteps:\n  - { id: c, use: a }\n", &[]);
    assert_eq!(code, 1);
    let d = details(&json);
    assert!(d.contains("module `a` calls itself"), "{d}");
    let chain = d.find("uses `a` -> ").and_then(|i| {
        let rest = &d[i..];
        rest.find("uses `b` -> ")
            .and(rest.rfind("uses `a`"))
            .map(|_| ())
    });
    assert!(chain.is_some(), "the chain a -> b -> a: {d}");
    assert!(
        d.contains("a.yml line 2") && d.contains("b.yml line 2"),
        "{d}"
    );
}

#[test]
fn what_a_call_decides_cannot_be_set_again_in_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "steps:\n  - { id: s, target: db-1, service: { name: x, state: started } }\n",
            "name: t\nsteps:\n  - { id: c, use: m }\n",
            "take their hosts from the call",
        ),
        (
            "steps:\n  - { id: s, serial: 1, service: { name: x, state: started } }\n",
            "name: t\nsteps:\n  - { id: c, use: m, serial: 1 }\n",
            "batches hosts through all the module's steps",
        ),
        (
            "steps:\n  - { id: s, service: { name: x, state: started } }\n",
            "name: t\nsteps:\n  - { id: c, use: m, service: { name: x, state: started } }\n",
            "is the step's module",
        ),
        (
            "steps:\n  - { id: s, service: { name: x, state: started } }\n",
            "name: t\nsteps:\n  - { id: c, on_failure: true, service: { name: x, state: started } }\n",
            "`on_failure` belongs in a module's steps",
        ),
        (
            "steps:\n  - { id: s, service: { name: x, state: started } }\n",
            "name: t\nstrategy: free\nsteps:\n  - { id: c, use: m, serial: 1 }\n",
            "needs `strategy: linear`",
        ),
        (
            "steps: []\n",
            "name: t\nsteps:\n  - { id: c, use: m }\n",
            "has no steps",
        ),
    ];
    for (module, playbook, want) in cases {
        write(dir.path(), "modules/m.yml", module);
        let (code, json) = check_json(dir.path(), playbook, &[]);
        assert_eq!(code, 1, "{playbook}: {json}");
        let d = details(&json);
        assert!(d.contains(want), "{playbook}: want `{want}` in {d}");
        assert!(d.contains(" line "), "{d}");
    }
}

#[test]
fn modules_are_found_beside_the_playbook_then_in_modules_dir() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    write(elsewhere.path(), "pair.yml", PAIR);
    let playbook = "name: t\nsteps:\n  - { id: c, use: pair, with: { unit: u } }\n";
    let (code, _) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 1, "not found without --modules");
    let (code, json) = check_json(
        dir.path(),
        playbook,
        &["--modules", elsewhere.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{json}");
    // Beside the playbook wins over --modules.
    write(
        dir.path(),
        "modules/pair.yml",
        "params:\n  unit: { description: u }\nsteps:\n  - { id: mine, service: { name: x, state: started } }\n",
    );
    let pb =
        Playbook::load_with_modules(&dir.path().join("p.yml"), Some(elsewhere.path())).unwrap();
    assert_eq!(pb.steps[0].id, "c.mine");
}

#[test]
fn script_module_directories_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let meta = "description: d\nparams:\n  x: { description: x, default: 1 }\ncheck: true\n";
    write(dir.path(), "modules/s/module.yml", meta);
    let playbook = "name: t\nsteps:\n  - { id: c, use: s }\n";
    let (code, json) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 1);
    assert!(
        details(&json).contains("needs an executable `run`"),
        "{json}"
    );
    let run = write(dir.path(), "modules/s/run", "#!/bin/sh\necho '{}'\n");
    let (code, json) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 1);
    assert!(details(&json).contains("not an executable file"), "{json}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, json) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 0, "{json}");
    let (code, json) = check_json(
        dir.path(),
        "name: t\nsteps:\n  - { id: c, use: s, with: { y: 2 } }\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(details(&json).contains("unknown parameter `y`"), "{json}");
    write(dir.path(), "modules/s/run", "echo no shebang\n");
    let (code, json) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 1);
    assert!(details(&json).contains("#! line"), "{json}");
    write(
        dir.path(),
        "modules/s/module.yml",
        "description: d\ncheck: yes-please\n",
    );
    let (code, json) = check_json(dir.path(), playbook, &[]);
    assert_eq!(code, 1);
    assert_eq!(json["error"], "module is invalid", "{json}");
    assert!(details(&json).contains("module.yml line 2"), "{json}");
}

fn offline_plan(playbook: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args(["plan", "--format", "json", "-i", "examples/inventory.yml"])
        .args(["--facts", "examples/facts.json", "--modules", "modules"])
        .arg(playbook)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_offline_plan_batches_the_whole_call_and_cannot_predict_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "p.yml",
        "name: t\nsteps:\n  - id: web\n    target: role:web\n    use: drain-restart\n    with: { unit: demo-web }\n    serial: 2\n  - id: journal\n    target: web-1\n    use: journal-clean\n    with: { unit: demo-web }\n",
    );
    let plan = offline_plan(&pb);
    let steps = plan["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "web.drain",
            "web.restart",
            "web.keep-drained",
            "web.undrain",
            "journal"
        ]
    );
    for s in &steps[..4] {
        let batches: Vec<(&str, u64)> = s["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["hostname"].as_str().unwrap(),
                    r["batch"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(batches, [("web-1", 1), ("web-2", 1), ("web-3", 2)], "{s}");
    }
    let kept = &steps[2]["results"][0];
    assert_eq!(kept["status"], "skipped");
    assert!(kept["error"]
        .as_str()
        .unwrap()
        .contains("only after a failure"));
    let j = &steps[4]["results"][0];
    assert_eq!(j["name"], "journal-clean");
    assert_eq!(j["actions"], serde_json::json!(["run"]));
    let host = plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "web-1")
        .unwrap();
    let text = host.to_string();
    assert!(text.contains("will run; cannot predict"), "{text}");
}

#[test]
fn an_offline_plan_of_a_failing_serial_call_keeps_the_host_drained_and_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/facts.json")).unwrap())
            .unwrap();
    facts["hosts"]["web-1"]["units"]["demo-web.service"]["load_state"] = "not-found".into();
    let facts_path = write(dir.path(), "facts.json", &facts.to_string());
    let pb = write(
        dir.path(),
        "p.yml",
        "name: t\nsteps:\n  - id: web\n    target: role:web\n    use: drain-restart\n    with: { unit: demo-web }\n    serial: 1\n    max_fail_percentage: 0\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args(["plan", "--format", "json", "-i", "examples/inventory.yml"])
        .arg("--facts")
        .arg(&facts_path)
        .args(["--modules", "modules"])
        .arg(&pb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |step: &str, host: &str| -> (String, String) {
        let r = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .and_then(|s| {
                s["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["hostname"] == host)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no {step} on {host}"));
        (
            r["status"].as_str().unwrap().to_string(),
            r["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(status("web.drain", "web-1").0, "ok");
    assert_eq!(status("web.restart", "web-1").0, "failed");
    assert!(status("web.undrain", "web-1")
        .1
        .contains("failed at step web.restart"));
    assert_eq!(status("web.keep-drained", "web-1").0, "ok");
    for host in ["web-2", "web-3"] {
        for step in ["web.drain", "web.restart", "web.keep-drained"] {
            let (s, e) = status(step, host);
            assert_eq!(s, "skipped", "{step} {host}");
            assert!(e.contains("aborted at step web"), "{step} {host}: {e}");
        }
        // The cleanup has nothing to undo on hosts never drained.
        let (s, e) = status("web.undrain", host);
        assert_eq!(s, "skipped", "{host}");
        assert!(e.contains("never began web"), "{host}: {e}");
    }
    // The diff shows the flag the failing host keeps, with the failed step.
    let web1 = plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "web-1")
        .unwrap()
        .to_string();
    assert!(
        web1.contains("maintenance: on (drain-restart failed at restart)"),
        "{web1}"
    );
}

#[test]
fn a_bad_value_found_per_host_names_the_module_and_the_call_site() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "modules/pair.yml", PAIR);
    let e = job(
        dir.path(),
        "name: t\nsteps:\n  - id: first\n    service: { name: y, state: started }\n  - id: c\n    target: web-1\n    use: pair\n    with: { unit: \"bad;name\" }\n",
    )
    .unwrap_err()
    .details();
    assert!(e.contains("step `c.one` on host `web-1`"), "{e}");
    assert!(e.contains("pair.yml line 6"), "the module's line: {e}");
    assert!(
        e.contains("called by step `c` at ") && e.contains("p.yml line 5"),
        "the call site: {e}"
    );
}
