//! Maintenance mode, unit registration and health on the lab's real hosts.
//! Every assertion is cross-checked inside the hosts over plain ssh. Tests
//! hold the lab lock and restore what they touch.

use crate::common;

use std::path::{Path, PathBuf};

use common::{lab, run, Lab};
use serde_json::Value;

const STATE: &str = "/var/lib/drover/maintenance.json";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json_of(out: &str, err: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("no JSON ({e}): {out}\nstderr: {err}"))
}

fn drover_json(lab: &Lab, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(lab.drover().args(args));
    (code, json_of(&out, &err))
}

fn maintenance(lab: &Lab, args: &[&str]) -> Value {
    let inv = lab.inventory.to_str().unwrap();
    let mut a = vec!["maintenance"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-i", inv, "--format", "json"]);
    let (code, report) = drover_json(lab, &a);
    assert_eq!(code, 0, "drover {a:?}: {report}");
    report
}

/// Remove the state file on these hosts (test set-up and clean-up).
fn clear_state(lab: &Lab, hosts: &[&str]) {
    for h in hosts {
        lab.ssh(h, &format!("rm -f {STATE}"));
    }
}

fn results<'a>(report: &'a Value, step: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == step)
        .collect()
}

fn result_of<'a>(report: &'a Value, step: &str, host: &str) -> &'a Value {
    results(report, step)
        .into_iter()
        .find(|r| r["hostname"] == host)
        .unwrap_or_else(|| panic!("no result for {host} in step {step}: {report}"))
}

#[test]
fn maintenance_survives_a_host_reboot() {
    let Some(lab) = lab() else { return };
    let _lock = lab.lock();
    let h = lab.host(lab.len() - 1).to_string();
    clear_state(&lab, &[&h]);

    let r = maintenance(
        &lab,
        &[
            "enable",
            "demo-worker",
            "--target",
            &h,
            "--reason",
            "reboot test",
        ],
    );
    assert_eq!(r["results"][0]["status"], "ok", "{r}");
    assert_eq!(r["results"][0]["changed"], true, "{r}");
    // Idempotent: the same flag again changes nothing.
    let again = maintenance(
        &lab,
        &[
            "enable",
            "demo-worker",
            "--target",
            &h,
            "--reason",
            "reboot test",
        ],
    );
    assert_eq!(again["results"][0]["changed"], false, "{again}");
    let on_host = lab.ssh(&h, &format!("cat {STATE}"));
    assert!(on_host.contains("reboot test"), "{on_host}");

    lab.lab_sh(&["stop-host", &h]);
    lab.lab_sh(&["start-host", &h]);

    let inv = lab.inventory.to_str().unwrap();
    let (code, status) = drover_json(
        &lab,
        &[
            "status",
            "demo-worker",
            "--target",
            &h,
            "-i",
            inv,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{status}");
    let flags = status["maintenance"].as_array().unwrap();
    assert_eq!(flags.len(), 1, "{status}");
    assert_eq!(flags[0]["unit"], "demo-worker.service");
    assert_eq!(flags[0]["reason"], "reboot test");
    assert!(
        flags[0]["since"].as_str().unwrap().starts_with("20"),
        "{status}"
    );
    assert_eq!(
        status["services"][0]["maintenance"]["reason"],
        "reboot test"
    );
    let (_, text, _) = run(lab
        .drover()
        .args(["status", "demo-worker", "--target", &h, "-i", inv]));
    assert!(
        text.contains("MAINTENANCE  demo-worker.service: reboot test (since"),
        "{text}"
    );

    let off = maintenance(&lab, &["disable", "demo-worker", "--target", &h]);
    assert_eq!(off["results"][0]["changed"], true, "{off}");
    let on_host = lab.ssh(&h, &format!("cat {STATE}"));
    assert!(!on_host.contains("reboot test"), "{on_host}");
    clear_state(&lab, &[&h]);
}

#[test]
fn later_steps_skip_hosts_and_units_in_maintenance() {
    let Some(lab) = lab() else { return };
    let _lock = lab.lock();
    // Three web hosts: A host-wide maintenance, B demo-web in maintenance,
    // C put in maintenance by the playbook itself.
    let (a, b, c) = (
        lab.host(0).to_string(),
        lab.host(2).to_string(),
        lab.host(4).to_string(),
    );
    clear_state(&lab, &[&a, &b, &c]);
    maintenance(&lab, &["enable", "--target", &a, "--reason", "host A down"]);
    maintenance(
        &lab,
        &[
            "enable",
            "demo-web",
            "--target",
            &b,
            "--reason",
            "B drained",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "pb.yml",
        &format!(
            r#"name: maintenance skips
steps:
  - id: drain
    target: {c}
    maintenance: {{ enable: true, reason: "pb drain", unit: demo-web }}
  - id: touch
    target: [{a}, {b}, {c}]
    service: {{ name: demo-web, state: started }}
  - id: forced
    target: {a}
    ignore_maintenance: true
    service: {{ name: demo-web, state: started }}
  - id: pick
    target: "_any,role:web"
    service: {{ name: demo-worker, state: stopped }}
  - id: undrain
    target: {c}
    maintenance: {{ enable: false, unit: demo-web }}
"#
        ),
    );
    let inv = lab.inventory.to_str().unwrap();
    let pbs = pb.to_str().unwrap();

    // The plan predicts the same skips, including the one the run creates.
    let (code, plan) = drover_json(&lab, &["plan", pbs, "-i", inv, "--format", "json"]);
    assert_eq!(code, 0, "{plan}");
    let step = |id: &str| {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    let touch = step("touch");
    let planned = |host: &str| {
        touch["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == host)
            .unwrap()
            .clone()
    };
    assert_eq!(planned(&a)["error"], "skipped: in maintenance: host A down");
    assert_eq!(planned(&b)["error"], "skipped: in maintenance: B drained");
    assert_eq!(planned(&c)["error"], "skipped: in maintenance: pb drain");
    assert_ne!(step("pick")["picked"][0], a.as_str(), "{plan}");
    assert_eq!(step("drain")["results"][0]["actions"][0], "maintenance-on");

    let (code, report) = drover_json(&lab, &["apply", pbs, "-i", inv, "--format", "json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(result_of(&report, "drain", &c)["changed"], true);
    for (h, why) in [(&a, "host A down"), (&b, "B drained"), (&c, "pb drain")] {
        let r = result_of(&report, "touch", h);
        assert_eq!(r["status"], "skipped", "{r}");
        assert_eq!(r["error"], format!("skipped: in maintenance: {why}"), "{r}");
    }
    let forced = result_of(&report, "forced", &a);
    assert_eq!(forced["status"], "ok", "{forced}");
    let pick = results(&report, "pick");
    assert_eq!(pick.len(), 1, "{report}");
    assert_ne!(
        pick[0]["hostname"],
        a.as_str(),
        "_any picked a host in maintenance"
    );
    assert_eq!(result_of(&report, "undrain", &c)["changed"], true);
    // The flag the playbook set is gone again; the others stay.
    assert!(!lab.ssh(&c, &format!("cat {STATE}")).contains("pb drain"));
    assert!(lab.ssh(&a, &format!("cat {STATE}")).contains("host A down"));

    // Restore: the picked host's worker, and the flags.
    let picked = pick[0]["hostname"].as_str().unwrap().to_string();
    lab.ssh(&picked, "systemctl start demo-worker");
    clear_state(&lab, &[&a, &b, &c]);
}

#[test]
fn health_aggregates_passing_warning_critical() {
    let Some(lab) = lab() else { return };
    let _lock = lab.lock();
    let (p, w, c) = (
        lab.host(1).to_string(),
        lab.host(3).to_string(),
        lab.host(5).to_string(),
    );
    clear_state(&lab, &[&p, &w, &c]);
    lab.ssh(&w, "touch /run/drover-health-warn");
    maintenance(
        &lab,
        &[
            "enable",
            "demo-worker",
            "--target",
            &c,
            "--reason",
            "health test",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {p}: {{}}\n  {w}: {{}}\n  {c}: {{}}\n"),
    );
    let inv = inv.to_str().unwrap();
    let check = "test ! -e /run/drover-health-warn || { echo degraded; exit 1; }";
    let health = |target: &str| {
        drover_json(
            &lab,
            &[
                "health",
                "demo-worker",
                "--target",
                target,
                "-i",
                inv,
                "--command",
                check,
                "--format",
                "json",
            ],
        )
    };
    let (code, all) = health("_all");
    assert_eq!(code, 2, "{all}");
    assert_eq!(all["status"], "critical");
    let host = |h: &str| {
        all["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["hostname"] == h)
            .unwrap()
            .clone()
    };
    assert_eq!(host(&p)["status"], "passing", "{all}");
    assert_eq!(host(&w)["status"], "warning", "{all}");
    assert!(
        host(&w)["note"].as_str().unwrap().contains("degraded"),
        "{all}"
    );
    assert_eq!(host(&c)["status"], "critical", "{all}");
    assert_eq!(host(&c)["note"], "in maintenance: health test");
    assert_eq!(health(&format!("!{c}")).0, 1);
    assert_eq!(health(&p).0, 0);
    let (code, text, _) = run(lab.drover().args([
        "health",
        "demo-worker",
        "--target",
        &w,
        "-i",
        inv,
        "--command",
        check,
    ]));
    assert_eq!(code, 1);
    assert!(
        text.starts_with("HEALTH WARNING demo-worker.service"),
        "{text}"
    );

    lab.ssh(&w, "rm -f /run/drover-health-warn");
    clear_state(&lab, &[&c]);
}

#[test]
fn unit_register_plan_apply_deregister() {
    let Some(lab) = lab() else { return };
    let _lock = lab.lock();
    let h = lab.host(1).to_string();
    let unit = "drover-test.service";
    let path = format!("/etc/systemd/system/{unit}");
    lab.ssh(
        &h,
        &format!(
            "systemctl disable --now {unit} 2>/dev/null; rm -f {path}; systemctl daemon-reload"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory.to_str().unwrap();
    write(
        dir.path(),
        "unit.j2",
        "[Unit]\nDescription=drover test on {{ host.name }}\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    );
    let register = write(
        dir.path(),
        "register.yml",
        &format!(
            "name: register\nsteps:\n  - id: reg\n    target: {h}\n    unit: {{ name: drover-test, template: unit.j2 }}\n"
        ),
    );
    let reg = register.to_str().unwrap();
    let expected = format!(
        "[Unit]\nDescription=drover test on {h}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    );

    // Plan: the file's content appears in the diff, nothing changes.
    let (code, text, err) = run(lab.drover().args(["plan", reg, "-i", inv]));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&format!("+    | Description=drover test on {h}")),
        "{text}"
    );
    assert!(
        text.contains("write-unit (reg)") && text.contains("daemon-reload (reg)"),
        "{text}"
    );
    assert!(lab.ssh_output(&h, &format!("test -e {path}")).status.code() == Some(1));

    // Apply: the file is written, systemd has re-read it.
    let (code, report) = drover_json(&lab, &["apply", reg, "-i", inv, "--format", "json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["results"][0]["changed"], true);
    assert_eq!(report["results"][0]["action"], "write-unit+daemon-reload");
    assert_eq!(lab.ssh(&h, &format!("cat {path}")), expected);
    let show = lab.ssh(
        &h,
        &format!("systemctl show -p Description,NeedDaemonReload,FragmentPath {unit}"),
    );
    assert!(
        show.contains(&format!("Description=drover test on {h}")),
        "{show}"
    );
    assert!(show.contains("NeedDaemonReload=no"), "{show}");
    assert!(show.contains(&format!("FragmentPath={path}")), "{show}");

    // Same content again: no write, no reload, not changed.
    let (_, again) = drover_json(&lab, &["apply", reg, "-i", inv, "--format", "json"]);
    assert_eq!(again["results"][0]["changed"], false, "{again}");
    assert_eq!(again["results"][0]["action"], "none");
    let (code, _, _) = run(lab
        .drover()
        .args(["plan", reg, "-i", inv, "--detailed-exitcode"]));
    assert_eq!(code, 0);

    // A changed inline content: the diff shows old and new lines.
    let v2 = write(
        dir.path(),
        "v2.yml",
        &format!(
            "name: v2\nsteps:\n  - id: v2\n    target: {h}\n    unit:\n      name: drover-test\n      content: |\n        [Unit]\n        Description=drover test v2\n        [Service]\n        ExecStart=/bin/sleep infinity\n        [Install]\n        WantedBy=multi-user.target\n  - id: run\n    service: {{ name: drover-test, state: started, enabled: true }}\n    target: {h}\n"
        ),
    );
    let (code, text, err) = run(lab.drover().args(["plan", v2.to_str().unwrap(), "-i", inv]));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&format!("-    | Description=drover test on {h}")),
        "{text}"
    );
    assert!(text.contains("+    | Description=drover test v2"), "{text}");
    let (code, report) = drover_json(
        &lab,
        &["apply", v2.to_str().unwrap(), "-i", inv, "--format", "json"],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(result_of(&report, "v2", &h)["changed"], true);
    let show = lab.show(&h, unit);
    assert_eq!(show["ActiveState"], "active", "{show:?}");
    assert_eq!(show["UnitFileState"], "enabled", "{show:?}");
    assert!(lab
        .ssh(&h, &format!("systemctl show -p Description {unit}"))
        .contains("drover test v2"));

    // Deregister: stopped, disabled, removed, reloaded; then a no-op.
    let absent = write(
        dir.path(),
        "absent.yml",
        &format!("name: absent\nsteps:\n  - id: gone\n    target: {h}\n    unit: {{ name: drover-test, state: absent }}\n"),
    );
    let (code, report) = drover_json(
        &lab,
        &[
            "apply",
            absent.to_str().unwrap(),
            "-i",
            inv,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["results"][0]["action"],
        "stop+disable+remove-unit+daemon-reload"
    );
    assert_eq!(report["results"][0]["changed"], true);
    assert_eq!(
        lab.ssh_output(&h, &format!("test -e {path}")).status.code(),
        Some(1)
    );
    assert_eq!(lab.show(&h, unit)["LoadState"], "not-found");
    let (_, again) = drover_json(
        &lab,
        &[
            "apply",
            absent.to_str().unwrap(),
            "-i",
            inv,
            "--format",
            "json",
        ],
    );
    assert_eq!(again["results"][0]["changed"], false, "{again}");
}

#[test]
fn wait_health_gates_the_next_batch() {
    let Some(lab) = lab() else { return };
    let _lock = lab.lock();
    let (a, b) = (lab.host(1).to_string(), lab.host(3).to_string());
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory.to_str().unwrap();
    // demo-idle stays inactive (critical): the health gate fails on the
    // first batch and the second batch never starts.
    let pb = write(
        dir.path(),
        "pb.yml",
        &format!(
            "name: gate\nsteps:\n  - id: restart\n    target: [{a}, {b}]\n    serial: 1\n    max_fail_percentage: 0\n    service: {{ name: demo-worker, state: restarted }}\n    wait: {{ health: passing, timeout: 20s }}\n  - id: idle\n    target: [{a}, {b}]\n    serial: 1\n    max_fail_percentage: 0\n    service: {{ name: demo-idle, state: stopped }}\n    wait: {{ health: warning, timeout: 2s }}\n"
        ),
    );
    let (code, report) = drover_json(
        &lab,
        &["apply", pb.to_str().unwrap(), "-i", inv, "--format", "json"],
    );
    assert_eq!(code, 2, "{report}");
    for h in [&a, &b] {
        assert_eq!(result_of(&report, "restart", h)["status"], "ok", "{report}");
    }
    let first = result_of(&report, "idle", &a);
    assert_eq!(first["status"], "failed", "{report}");
    let why = first["error"].as_str().unwrap();
    assert!(
        why.contains("health of demo-idle.service") && why.contains("CRITICAL"),
        "{why}"
    );
    let second = result_of(&report, "idle", &b);
    assert_eq!(second["status"], "skipped", "{report}");
}

#[test]
fn maintenance_with_become_writes_the_state_file_as_root() {
    let Some(lab) = common::lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(1).to_string();
    // A non-root login that becomes root through `sudo -n`.
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        format!(
            "defaults: {{ user: drover, become: true, transport: ssh, ssh_config: {}, connect_timeout: 5s }}\nhosts:\n  {h}: {{}}\n",
            lab.ssh_config.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = lab
            .drover()
            .args(args)
            .arg("-i")
            .arg(&inv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "maintenance",
        "enable",
        "--reason",
        "become test",
        "--target",
        &h,
    ]);
    let owner = lab.ssh(&h, "stat -c %U /var/lib/drover/maintenance.json");
    let shown = run(&["status", "--format", "json", "demo-web"]);
    run(&["maintenance", "disable", "--target", &h]);
    assert_eq!(owner.trim(), "root");
    assert!(shown.contains("become test"), "{shown}");
    let after = run(&["status", "--format", "json", "demo-web"]);
    assert!(!after.contains("become test"), "{after}");
}
