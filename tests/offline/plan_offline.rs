//! The offline plan end to end: bundled playbook + inventory + facts
//! through the real binary, checking predictions, formats, determinism and
//! the detailed exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `drover plan` of the bundled playbook over the bundled facts.
pub(crate) fn plan(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args([
            "plan",
            "examples/nightly-restart.yml",
            "-i",
            "examples/inventory.yml",
            "--facts",
            "examples/facts.json",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn json_plan(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let out = plan(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn result<'a>(plan: &'a serde_json::Value, step: &str, host: &str) -> &'a serde_json::Value {
    plan["steps"]
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
        })
        .unwrap_or_else(|| panic!("no result for {step} on {host}"))
}

#[test]
fn predictions_follow_the_facts() {
    let p = json_plan(&[]);
    // A restart is always a change, even of a failed unit.
    for h in ["web-1", "web-2", "web-3"] {
        let r = result(&p, "restart-web", h);
        assert_eq!(r["status"], "ok");
        assert_eq!(r["changed"], true);
        assert_eq!(r["actions"], serde_json::json!(["restart"]));
        assert_eq!(r["name"], "demo-web.service");
    }
    // serial: 1 puts each host in its own batch.
    assert_eq!(result(&p, "restart-web", "web-3")["batch"], 3);
    // _any skips worker-1 (in maintenance) and picks worker-2, already running.
    let step = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "worker")
        .unwrap();
    assert_eq!(step["picked"], serde_json::json!(["worker-2"]));
    assert_eq!(step["results"].as_array().unwrap().len(), 1);
    assert_eq!(result(&p, "worker", "worker-2")["changed"], false);
    // Stopping a stopped unit is no change; stopping a running one is.
    assert_eq!(result(&p, "audit", "web-1")["changed"], false);
    assert_eq!(
        result(&p, "audit", "web-2")["actions"],
        serde_json::json!(["stop"])
    );
    // `when` false is skipped, with the reason.
    let r = result(&p, "audit", "db-1");
    assert_eq!(r["status"], "skipped");
    assert!(r["error"].as_str().unwrap().contains("when"));
    assert_eq!(p["summary"]["changes"], 4);
}

#[test]
fn limit_intersects_every_step() {
    let p = json_plan(&["--limit", "region:eu"]);
    let hosts: Vec<&str> = p["steps"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["web-1", "web-2"]);
    let bad = plan(&["--limit", "web-9"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `web-1`?"));
}

#[test]
fn output_is_deterministic_and_plain_off_a_tty() {
    for format in ["text", "markdown", "json"] {
        let a = plan(&["--format", format]);
        let b = plan(&["--format", format]);
        assert!(a.status.success());
        assert_eq!(a.stdout, b.stdout, "{format} output differs between runs");
        assert!(
            !a.stdout.contains(&0x1b),
            "{format} output has ANSI codes off a TTY"
        );
    }
    let text = String::from_utf8(plan(&[]).stdout).unwrap();
    assert!(text.starts_with("DRY RUN"), "{text}");
    assert!(text.contains("+  do: restart (restart-web)"), "{text}");
    assert!(
        text.contains("-  active: failed\n+  active: active"),
        "{text}"
    );
}

#[test]
fn markdown_is_review_ready() {
    let md = String::from_utf8(plan(&["--format", "markdown"]).stdout).unwrap();
    assert!(
        md.contains("| host | change | no change | skipped | failing | operations |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| `web-2` | 2 | 0 | 0 | 0 | restart demo-web.service, stop demo-idle.service |"
        ),
        "{md}"
    );
    assert!(
        md.contains("<details><summary><code>web-3</code>: 1 operation</summary>"),
        "{md}"
    );
    assert!(
        md.contains("```diff\n--- web-3 (now)\n+++ web-3 (planned)\n"),
        "{md}"
    );
    assert!(md.contains("**Dry run**"));
}

#[test]
fn detailed_exitcode_and_saved_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.json");
    let r = plan(&["--detailed-exitcode", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "changes pending");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved["schema"], "drover.plan/1");
    assert_eq!(saved["playbook"]["digest"].as_str().unwrap().len(), 64);
    // A playbook whose every step is already satisfied: exit 0.
    let pb = dir.path().join("noop.yml");
    std::fs::write(
        &pb,
        "name: noop\nsteps:\n  - { id: keep, target: role:web, service: { name: demo-web, state: started, enabled: true } }\n",
    )
    .unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("examples/facts.json")).unwrap())
            .unwrap();
    facts["hosts"]["web-3"]["units"]["demo-web.service"]["active_state"] = "active".into();
    let fp = dir.path().join("facts.json");
    std::fs::write(&fp, facts.to_string()).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args([
            "plan",
            "-i",
            "examples/inventory.yml",
            "--detailed-exitcode",
            "--facts",
        ])
        .arg(&fp)
        .arg(&pb)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
}

#[test]
fn facts_missing_a_unit_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("examples/facts.json")).unwrap())
            .unwrap();
    facts["hosts"]["web-2"]["units"]
        .as_object_mut()
        .unwrap()
        .remove("demo-web.service");
    let fp = dir.path().join("facts.json");
    std::fs::write(&fp, facts.to_string()).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args([
            "plan",
            "examples/nightly-restart.yml",
            "-i",
            "examples/inventory.yml",
            "--format",
            "json",
            "--facts",
        ])
        .arg(&fp)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(e["code"], 400);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("no facts for unit demo-web.service on host `web-2`"),
        "{e}"
    );
}

#[test]
fn unreachable_and_failing_hosts_are_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("examples/facts.json")).unwrap())
            .unwrap();
    facts["hosts"]["web-1"] =
        serde_json::json!({"reachable": false, "error": "connection timed out"});
    let fp = dir.path().join("facts.json");
    std::fs::write(&fp, facts.to_string()).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args([
            "plan",
            "examples/nightly-restart.yml",
            "-i",
            "examples/inventory.yml",
            "--format",
            "json",
            "--facts",
        ])
        .arg(&fp)
        .output()
        .unwrap();
    assert!(r.status.success());
    let p: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let r1 = result(&p, "restart-web", "web-1");
    assert_eq!(r1["status"], "failed");
    assert!(r1["error"].as_str().unwrap().starts_with("unreachable"));
    // max_fail_percentage 0 with serial 1: the later batches never start.
    let r2 = result(&p, "restart-web", "web-2");
    assert_eq!(r2["status"], "skipped");
    assert_eq!(r2["error"], "skipped: run aborted at step restart-web");
}
