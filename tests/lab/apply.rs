//! `drover apply` and `drover service` on the lab's real hosts: every
//! assertion is checked against systemd inside the hosts (over plain ssh).
//! Tests that change state hold the lab lock and restore what they touch.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{lab, run, Gate, Lab};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn apply(lab: &Lab, pb: &Path, extra: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(pb)
        .args(extra));
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("apply printed no report ({e}): {out}\nstderr: {err}"));
    (code, report, err)
}

fn results<'a>(report: &'a Value, step: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == step)
        .collect()
}

#[test]
fn restart_role_web_changes_only_web_invocations() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "restart.yml",
        "name: restart web\nsteps:\n  - id: restart-web\n    target: role:web\n    service: { name: demo-web, state: restarted }\n    wait: { active: true, timeout: 30s }\n",
    );
    let names: Vec<String> = lab.hosts.iter().map(|h| h.name.clone()).collect();
    let before: Vec<(String, String)> = names
        .iter()
        .map(|h| {
            (
                lab.invocation(h, "demo-web"),
                lab.invocation(h, "demo-worker"),
            )
        })
        .collect();
    let (code, report, err) = apply(&lab, &pb, &[]);
    assert_eq!(code, 0, "{report}\n{err}");
    let web: Vec<usize> = (0..names.len()).filter(|i| i % 2 == 0).collect();
    let rs = results(&report, "restart-web");
    assert_eq!(rs.len(), web.len(), "{report}");
    for r in &rs {
        assert_eq!(r["status"], "ok");
        assert_eq!(r["changed"], true);
        assert_eq!(r["action"], "restart");
    }
    for (i, h) in names.iter().enumerate() {
        let (web_before, worker_before) = &before[i];
        let web_after = lab.invocation(h, "demo-web");
        if web.contains(&i) {
            assert_ne!(&web_after, web_before, "{h}: demo-web was not restarted");
            assert_eq!(lab.show(h, "demo-web")["ActiveState"], "active");
        } else {
            assert_eq!(
                &web_after, web_before,
                "{h}: demo-web restarted but is not role:web"
            );
        }
        assert_eq!(
            &lab.invocation(h, "demo-worker"),
            worker_before,
            "{h}: demo-worker touched"
        );
    }
}

#[test]
fn stopping_a_stopped_unit_is_ok_and_unchanged() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(1).to_string();
    assert_eq!(lab.show(&h, "demo-idle")["ActiveState"], "inactive");
    let pb = write(
        dir.path(),
        "stop.yml",
        &format!("name: stop idle\nsteps:\n  - id: stop-idle\n    target: {h}\n    service: {{ name: demo-idle, state: stopped }}\n"),
    );
    let (code, report, _) = apply(&lab, &pb, &[]);
    assert_eq!(code, 0, "{report}");
    let r = results(&report, "stop-idle");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["status"], "ok");
    assert_eq!(r[0]["changed"], false);
    assert_eq!(r[0]["action"], "none");
    assert!(r[0].get("error").is_none());
}

#[test]
fn starting_a_broken_unit_fails_with_systemds_reason() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(1).to_string();
    let pb = write(
        dir.path(),
        "broken.yml",
        &format!("name: broken\nsteps:\n  - id: start-broken\n    target: {h}\n    service: {{ name: demo-broken, state: started }}\n  - id: after\n    target: {h}\n    service: {{ name: demo-idle, state: stopped }}\n"),
    );
    let (code, report, _) = apply(&lab, &pb, &[]);
    let _ = lab.ssh_output(&h, "systemctl reset-failed demo-broken");
    assert_eq!(code, 2, "{report}");
    let r = results(&report, "start-broken");
    assert_eq!(r[0]["status"], "failed");
    let e = r[0]["error"].as_str().unwrap();
    assert!(e.contains("failed") && e.contains("exit-code"), "{e}");
    let later = results(&report, "after");
    assert_eq!(later[0]["status"], "skipped");
    assert_eq!(later[0]["error"], "skipped: failed at step start-broken");
}

#[test]
fn a_host_lost_mid_run_fails_alone_and_every_host_is_reported() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let victim = lab.host(lab.len() - 1).to_string();
    let others: Vec<String> = (0..2).map(|i| lab.host(i).to_string()).collect();
    let gate = Gate::new();
    let all = format!("[{}, {}, {victim}]", others[0], others[1]);
    let pb = write(
        dir.path(),
        "lost.yml",
        &format!(
            "name: lost host\nsteps:\n  - id: hold\n    target: {}\n    service: {{ name: demo-idle, state: stopped }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n  - id: restart-worker\n    target: {all}\n    service: {{ name: demo-worker, state: restarted }}\n",
            others[0], gate.port
        ),
    );
    let report_path = dir.path().join("report.json");
    let child = lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Every host is connected once the first step's gate is reached.
    gate.wait_reached();
    lab.lab_sh(&["stop-host", &victim, "--kill"]);
    let lost_at = std::time::Instant::now();
    gate.open();
    let out = child.wait_with_output().unwrap();
    let noticed_in = lost_at.elapsed();
    lab.lab_sh(&["start-host", &victim]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rs = results(&report, "restart-worker");
    assert_eq!(rs.len(), 3, "{report}");
    for r in rs {
        if r["hostname"] == victim.as_str() {
            assert_eq!(r["status"], "failed", "{r}");
            // A broken connection is the host's unreachability, typed as
            // such, not a read error of whatever call noticed it first.
            assert_eq!(r["kind"], "connection-lost", "{r}");
            let error = r["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("unreachable: connection lost during step restart-worker ("),
                "{r}"
            );
        } else {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["changed"], true);
        }
    }
    // README: a 5 s ServerAliveInterval notices a vanished host within
    // about 15 s; the run, from the host's loss to its end, stays under 20.
    assert!(
        noticed_in < Duration::from_secs(20),
        "the lost host took {noticed_in:?} to be reported"
    );
    // Unreachable, and no host failed otherwise: exit 4, not 2.
    assert_eq!(out.status.code(), Some(4));
    let saved: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(saved["results"], report["results"]);
}

#[test]
fn a_second_apply_of_the_same_playbook_is_refused_at_once() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let h = lab.host(0);
    let pb = write(
        dir.path(),
        "locked.yml",
        &format!("name: locked\nsteps:\n  - id: hold\n    target: {h}\n    service: {{ name: demo-idle, state: stopped }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n", gate.port),
    );
    let first = lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    gate.wait_reached();
    let started = std::time::Instant::now();
    let (code, _, err) = run(lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal was not immediate"
    );
    gate.open();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sigterm_finishes_in_flight_work_and_skips_the_rest() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let h = lab.host(0);
    let pb = write(
        dir.path(),
        "term.yml",
        &format!(
            "name: term\nsteps:\n  - id: hold\n    target: {h}\n    service: {{ name: demo-idle, state: stopped }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n  - id: later-1\n    target: {h}\n    service: {{ name: demo-worker, state: restarted }}\n  - id: later-2\n    target: role:web\n    service: {{ name: demo-web, state: restarted }}\n",
            gate.port
        ),
    );
    let report_path = dir.path().join("r.json");
    let web_before = lab.invocation(h, "demo-web");
    let child = lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report_path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    gate.wait_reached();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // The journal proves the signal arrived before the gate opens.
    gate.open();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["outcome"], "interrupted");
    assert_eq!(
        results(&report, "hold")[0]["status"],
        "ok",
        "in-flight work finishes"
    );
    for step in ["later-1", "later-2"] {
        let rs = results(&report, step);
        assert!(!rs.is_empty(), "{step} missing from the report");
        for r in rs {
            assert_eq!(r["status"], "skipped");
            assert_eq!(r["error"], "skipped: run interrupted by SIGTERM");
        }
    }
    assert_eq!(
        lab.invocation(h, "demo-web"),
        web_before,
        "nothing new started after SIGTERM"
    );
    let journal = std::fs::read_to_string(dir.path().join("r.json.journal")).unwrap();
    let types: Vec<String> = journal
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("header"));
    assert_eq!(types.last().map(String::as_str), Some("end"));
    assert_eq!(
        types.iter().filter(|t| *t == "result").count(),
        report["results"].as_array().unwrap().len()
    );
    // The stop in flight was announced before it was made.
    assert!(types.iter().any(|t| t == "intent"), "{journal}");
}

#[test]
fn serial_batches_stop_at_the_first_failure() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        lab.host(0).to_string(),
        lab.host(1).to_string(),
        lab.host(2).to_string(),
    );
    // On b a runtime drop-in makes the start fail there only.
    lab.ssh(
        &b,
        "mkdir -p /run/systemd/system/demo-idle.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' > /run/systemd/system/demo-idle.service.d/fail.conf && systemctl daemon-reload",
    );
    let pb = write(
        dir.path(),
        "serial.yml",
        &format!("name: serial\nsteps:\n  - id: start-idle\n    target: [{a}, {b}, {c}]\n    serial: 1\n    max_fail_percentage: 0\n    service: {{ name: demo-idle, state: started }}\n  - id: next\n    target: {a}\n    service: {{ name: demo-worker, state: restarted }}\n"),
    );
    let c_before = lab.show(&c, "demo-idle")["ActiveState"].clone();
    let (code, report, _) = apply(&lab, &pb, &[]);
    lab.ssh(
        &b,
        "rm -rf /run/systemd/system/demo-idle.service.d && systemctl daemon-reload && systemctl reset-failed demo-idle",
    );
    lab.ssh(&a, "systemctl stop demo-idle");
    assert_eq!(code, 2, "{report}");
    let by_host = |h: &str| {
        results(&report, "start-idle")
            .into_iter()
            .find(|r| r["hostname"] == h)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_host(&a)["status"], "ok");
    assert_eq!(by_host(&b)["status"], "failed");
    assert!(
        by_host(&b)["error"]
            .as_str()
            .unwrap()
            .starts_with("job failed"),
        "{report}"
    );
    assert_eq!(by_host(&c)["status"], "skipped");
    assert_eq!(
        by_host(&c)["error"],
        "skipped: run aborted at step start-idle"
    );
    assert_eq!(
        lab.show(&c, "demo-idle")["ActiveState"],
        c_before,
        "a later batch ran"
    );
    assert_eq!(results(&report, "next")[0]["status"], "skipped");
    assert_eq!(report["outcome"], "aborted");
}

#[test]
fn any_touches_exactly_one_host() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "any.yml",
        "name: any\nsteps:\n  - id: one-worker\n    target: _any,role:worker\n    service: { name: demo-worker, state: restarted }\n",
    );
    let names: Vec<String> = lab.hosts.iter().map(|h| h.name.clone()).collect();
    let before: Vec<String> = names
        .iter()
        .map(|h| lab.invocation(h, "demo-worker"))
        .collect();
    let (code, report, _) = apply(&lab, &pb, &[]);
    assert_eq!(code, 0, "{report}");
    let rs = results(&report, "one-worker");
    assert_eq!(rs.len(), 1, "{report}");
    let changed: Vec<&String> = names
        .iter()
        .zip(&before)
        .filter(|(h, b)| &lab.invocation(h, "demo-worker") != *b)
        .map(|(h, _)| h)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(rs[0]["hostname"], changed[0].as_str());
}

#[test]
fn ad_hoc_service_command_uses_the_same_engine() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(1).to_string();
    let before = lab.invocation(&h, "demo-worker");
    let (code, out, err) = run(lab
        .drover()
        .args([
            "service",
            "restart",
            "demo-worker",
            "--dry-run",
            "--target",
            &h,
            "-i",
        ])
        .arg(&lab.inventory));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restart"), "{out}");
    assert_eq!(
        lab.invocation(&h, "demo-worker"),
        before,
        "--dry-run changed something"
    );
    let (code, out, err) = run(lab
        .drover()
        .args([
            "service",
            "restart",
            "demo-worker",
            "--format",
            "json",
            "--target",
            &h,
            "-i",
        ])
        .arg(&lab.inventory));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["results"][0]["hostname"], h.as_str());
    assert_eq!(report["results"][0]["changed"], true);
    assert_ne!(lab.invocation(&h, "demo-worker"), before);
    assert_eq!(report["job_id"].as_str().unwrap().len(), 36);
}

/// Live ssh masters of a drover run (control dirs under `dir`) to `host`.
fn masters_to(dir: &Path, host: &str) -> usize {
    common::ssh_pids_mentioning(&dir.display().to_string())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.ends_with(&format!(" {host} ")))
        })
        .count()
}

#[test]
fn a_host_is_disconnected_as_soon_as_its_steps_are_done() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let (a, b) = (lab.host(0), lab.host(1));
    let pb = write(
        dir.path(),
        "release.yml",
        &format!(
            "name: release\nsteps:\n  - id: both\n    target: [{a}, {b}]\n    service: {{ name: demo-worker, state: started }}\n  - id: only-b\n    target: {b}\n    needs: [both]\n    service: {{ name: demo-worker, state: started }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n",
            gate.port
        ),
    );
    let child = lab
        .drover()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gate.wait_reached();
    // `b` is held in its second step; `a` has nothing left to do, so its
    // connection must go now, not when the run ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while masters_to(runtime.path(), a) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{a}'s ssh master still up while {b} works"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(masters_to(runtime.path(), b), 1, "{b} is still connected");
    gate.open();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"].as_array().unwrap().len(), 3);
    assert_eq!(
        masters_to(runtime.path(), b),
        0,
        "every master gone at exit"
    );
}

#[test]
fn a_closed_stdout_does_not_stop_the_run_or_lose_the_report() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(0);
    let pb = write(
        dir.path(),
        "pipe.yml",
        &format!(
            "name: pipe\nsteps:\n  - {{ id: one, target: {h}, service: {{ name: demo-idle, state: started }} }}\n  - {{ id: two, target: {h}, service: {{ name: demo-idle, state: stopped }} }}\n"
        ),
    );
    let report_path = dir.path().join("r.json");
    // `drover apply … | head -1`: the reader goes away after one line.
    let mut child = lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let statuses: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, ["ok", "ok"]);
    assert_eq!(
        lab.show(h, "demo-idle.service")["ActiveState"],
        "inactive",
        "the second step ran after stdout closed"
    );
}
