//! A wedged host never hangs a command: with one lab host's dbus-daemon
//! frozen (SIGSTOP), status, facts, a live plan, health and apply each
//! return within their `--timeout`, with the other host's results and the
//! frozen host as its own error. Needs the lab (tests/lab).

use crate::common;

use std::time::{Duration, Instant};

use common::{lab, run, Lab};
use serde_json::Value;

/// Run drover with `args`; exit code, stdout, stderr and how long it took.
fn timed(lab: &Lab, args: &[&str]) -> (i32, String, String, Duration) {
    let t0 = Instant::now();
    let (code, out, err) = run(lab.drover().args(args));
    (code, out, err, t0.elapsed())
}

#[test]
fn every_command_returns_in_bounded_time_around_a_frozen_bus() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let (p, q) = (lab.host(0).to_string(), lab.host(1).to_string());
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(dir.path(), &format!("  {p}: {{}}\n  {q}: {{}}\n"));
    let inv = inv.to_str().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "name: frozen\nsteps:\n  - id: web\n    service: { name: demo-web, state: started }\n",
    )
    .unwrap();
    let pb = pb.to_str().unwrap();
    let facts = dir.path().join("facts.json");
    let facts = facts.to_str().unwrap();
    // Generous against the 3 s bound: connect, the bound itself, the rest.
    let bound = Duration::from_secs(20);

    // A saved plan made while every host answers, applied while one does
    // not: the drift re-read (under the playbook's lock) is bounded too.
    let saved = dir.path().join("saved.json");
    let saved = saved.to_str().unwrap();
    let (code, out, err) =
        run(lab
            .drover()
            .args(["plan", pb, "-i", inv, "--out", saved, "--timeout", "30s"]));
    assert_eq!(code, 0, "plan --out: {err}\n{out}");

    // Frozen until `frozen` drops (thawed also when the test fails).
    lab.ssh(&p, "pkill -STOP -x dbus-daemon");
    let frozen = lab.undo_on_drop(&p, "pkill -CONT -x dbus-daemon");
    let status = timed(
        &lab,
        &[
            "status",
            "-i",
            inv,
            "--format",
            "json",
            "--timeout",
            "3s",
            "demo-web",
        ],
    );
    let facts_run = timed(
        &lab,
        &[
            "facts",
            "-i",
            inv,
            "--out",
            facts,
            "--timeout",
            "3s",
            "demo-web",
        ],
    );
    let plan = timed(
        &lab,
        &["plan", pb, "-i", inv, "--format", "json", "--timeout", "3s"],
    );
    let health = timed(
        &lab,
        &[
            "health",
            "demo-web",
            "-i",
            inv,
            "--format",
            "json",
            "--timeout",
            "3s",
        ],
    );
    let apply = timed(
        &lab,
        &[
            "apply",
            pb,
            "-i",
            inv,
            "--format",
            "json",
            "--timeout",
            "3s",
        ],
    );
    let drift = timed(
        &lab,
        &[
            "apply",
            pb,
            "-i",
            inv,
            "--plan",
            saved,
            "--format",
            "json",
            "--timeout",
            "3s",
        ],
    );
    drop(frozen);

    let (code, out, err, took) = status;
    assert_eq!(code, 4, "status: {err}\n{out}");
    assert!(took < bound, "status took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["hostname"], p.as_str(), "{v}");
    assert_eq!(v["errors"][0]["unreachable"], true, "{v}");
    assert!(
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["hostname"] == q.as_str()),
        "{v}"
    );

    let (code, out, err, took) = facts_run;
    assert_eq!(code, 4, "facts: {err}\n{out}");
    assert!(took < bound, "facts took {took:?}");
    let f: Value = serde_json::from_str(&std::fs::read_to_string(facts).unwrap()).unwrap();
    assert_eq!(f["hosts"][&p]["reachable"], false, "{f}");
    assert!(
        f["hosts"][&p]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer within 3s"),
        "{f}"
    );
    assert_eq!(f["hosts"][&q]["reachable"], true, "{f}");

    let (code, out, err, took) = plan;
    assert_eq!(code, 4, "plan: {err}\n{out}");
    assert!(took < bound, "plan took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let results = v["steps"][0]["results"].as_array().unwrap();
    let of = |h: &str| {
        results
            .iter()
            .find(|r| r["hostname"] == h)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(&p)["status"], "failed", "{v}");
    assert_eq!(of(&q)["status"], "ok", "{v}");

    let (code, out, err, took) = health;
    assert_eq!(code, 3, "health: {err}\n{out}");
    assert!(took < bound, "health took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hosts"][0]["status"], "unknown", "{v}");
    assert_eq!(v["hosts"][1]["status"], "passing", "{v}");

    let (code, out, err, took) = drift;
    assert_eq!(code, 3, "apply --plan refuses the drift: {err}\n{out}");
    assert!(took < bound, "apply --plan took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["details"]
            .as_str()
            .unwrap_or_default()
            .contains("drifted"),
        "{v}"
    );

    let (code, out, err, took) = apply;
    assert_eq!(code, 4, "apply: {err}\n{out}");
    assert!(took < bound, "apply took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let results = v["results"].as_array().unwrap();
    let of = |h: &str| {
        results
            .iter()
            .find(|r| r["hostname"] == h)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(&p)["error"], "unreachable: no answer within 3s", "{v}");
    assert_eq!(of(&p)["kind"], "unreachable", "{v}");
    assert_eq!(of(&q)["status"], "ok", "{v}");
}
