//! Safety across jobs and cleanup, offline: `group_by`/`max_unavailable`/
//! `require_healthy` and a module's `always` steps as written (each bad
//! form an error at its file, line, column and field, with a suggestion),
//! and what a plan shows of them (batches cut to the group limit, the
//! limit in words, the cleanup step).

use std::path::{Path, PathBuf};
use std::process::Command;

use drover::engine::job::Job;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

const INVENTORY: &str = "hosts:\n  a-1: { labels: { cluster: a } }\n  a-2: { labels: { cluster: a } }\n  a-3: { labels: { cluster: a } }\n  b-1: { labels: { cluster: b } }\n  lone: { labels: { role: x } }\n";

/// The error details of loading `playbook` over [`INVENTORY`].
fn error_of(dir: &Path, playbook: &str) -> String {
    let pb = write(dir, "p.yml", playbook);
    let inv = write(dir, "inv.yml", INVENTORY);
    match Job::load(&pb, &inv, None) {
        Ok(_) => panic!("loaded:\n{playbook}"),
        Err(e) => e.details(),
    }
}

fn step(extra: &str) -> String {
    format!("name: t\nsteps:\n  - id: roll\n    target: cluster:a\n    service: {{ name: demo, state: restarted }}\n{extra}")
}

#[test]
fn a_bad_group_limit_is_an_error_at_its_place_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "    group_by: labels.cluster\n",
            "steps[0].group_by: step `roll`: `group_by` needs `max_unavailable`",
            "did you mean `max_unavailable: 1`?",
            "6 15",
        ),
        (
            "    group_by: labels.cluster\n    max_unavailable: 0\n",
            "steps[0].max_unavailable: step `roll`: max_unavailable 0 lets no host be worked on",
            "",
            "7 22",
        ),
        (
            "    group_by: labels.cluster\n    max_unavailable: \"150%\"\n",
            "`150%` is more than 100%",
            "",
            "7 22",
        ),
        (
            "    group_by: cluster\n    max_unavailable: 1\n",
            "steps[0].group_by: step `roll`: `cluster` is not a label path",
            "did you mean `labels.cluster`?",
            "6 15",
        ),
        (
            "    max_unavailable: 1\n",
            "steps[0].max_unavailable: step `roll`: `max_unavailable` needs `group_by`",
            "did you mean `group_by: labels.cluster`?",
            "6 22",
        ),
        (
            "    require_healthy: true\n",
            "steps[0].require_healthy: step `roll`: `require_healthy` needs `group_by`",
            "",
            "3 9",
        ),
    ];
    for (extra, message, suggestion, at) in cases {
        let d = error_of(dir.path(), &step(extra));
        assert!(d.contains(message), "{extra}: {d}");
        assert!(d.contains(suggestion), "{extra}: {d}");
        let (line, col) = at.split_once(' ').unwrap();
        assert!(
            d.contains(&format!("p.yml line {line} column {col}")),
            "{extra}: {d}"
        );
    }
}

#[test]
fn every_host_of_a_grouped_step_carries_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let pb = "name: t\nsteps:\n  - id: roll\n    target: [cluster:a, lone]\n    service: { name: demo, state: restarted }\n    group_by: labels.clustr\n    max_unavailable: 1\n";
    let d = error_of(dir.path(), pb);
    assert!(d.contains("steps[0].group_by"), "{d}");
    assert!(d.contains("no label `clustr`"), "{d}");
    assert!(d.contains("did you mean `labels.cluster`?"), "{d}");
    let pb = pb.replace("clustr", "cluster");
    let d = error_of(dir.path(), &pb);
    assert!(d.contains("host lone has no label `cluster`"), "{d}");
}

const CLEANUP: &str = "params:\n  unit: { description: the unit }\nsteps:\n  - id: drain\n    maintenance: { enable: true, unit: \"{{ params.unit }}\", reason: r }\n  - id: restart\n    ignore_maintenance: true\n    service: { name: \"{{ params.unit }}\", state: restarted }\nalways:\n  - id: undrain\n    maintenance: { enable: false, unit: \"{{ params.unit }}\" }\n";

#[test]
fn a_module_call_with_group_by_needs_serial_and_cleanup_is_no_failure_step() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "modules/roll.yml", CLEANUP);
    let call = "name: t\nsteps:\n  - id: r\n    target: cluster:a\n    use: roll\n    with: { unit: demo }\n    group_by: labels.cluster\n    max_unavailable: 1\n";
    let d = error_of(dir.path(), call);
    assert!(d.contains("steps[0].group_by"), "{d}");
    assert!(d.contains("needs `serial`"), "{d}");
    assert!(d.contains("did you mean `serial: 1`?"), "{d}");
    assert!(d.contains("p.yml line 7 column 15"), "{d}");
    write(
        dir.path(),
        "modules/roll.yml",
        &CLEANUP.replace(
            "  - id: undrain\n",
            "  - id: undrain\n    on_failure: true\n",
        ),
    );
    let d = error_of(
        dir.path(),
        &call.replace("    group_by", "    serial: 1\n    group_by"),
    );
    assert!(d.contains("always[0].on_failure"), "{d}");
    assert!(d.contains("roll.yml line 10 column 9"), "{d}");
    write(
        dir.path(),
        "modules/roll.yml",
        &format!("{CLEANUP}always_timeout: soon\n"),
    );
    let d = error_of(
        dir.path(),
        &call.replace("    group_by", "    serial: 1\n    group_by"),
    );
    assert!(d.contains("always_timeout"), "{d}");
}

fn plan(dir: &Path, playbook: &str, format: &str) -> String {
    let pb = write(dir, "p.yml", playbook);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root)
        .args(["plan", "--format", format, "-i", "examples/inventory.yml"])
        .args(["--facts", "examples/facts.json", "--modules", "modules"])
        .arg(&pb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_plan_cuts_batches_to_the_group_limit_and_shows_limit_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let pb = "name: t\nsteps:\n  - id: web\n    target: role:web\n    use: drain-restart\n    with: { unit: demo-web }\n    serial: 3\n    group_by: labels.role\n    max_unavailable: \"34%\"\n    require_healthy: true\n";
    let json: serde_json::Value = serde_json::from_str(&plan(dir.path(), pb, "json")).unwrap();
    let steps = json["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "web.drain",
            "web.restart",
            "web.keep-drained",
            "web.undrain"
        ]
    );
    // 34% of three hosts is one: serial 3 is cut to one host per batch.
    let batches: Vec<u64> = steps[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, [1, 2, 3]);
    assert_eq!(
        steps[0]["group_limit"],
        "at most 34% per labels.role unavailable at once, the rest healthy"
    );
    assert_eq!(steps[3]["always"], "web");
    let undrained: Vec<&str> = steps[3]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(undrained, ["ok", "ok", "ok"]);
    let text = plan(dir.path(), pb, "text");
    assert!(
        text.contains("at most 34% per labels.role unavailable at once"),
        "{text}"
    );
    assert!(text.contains("always (cleanup of web)"), "{text}");
    let md = plan(dir.path(), pb, "markdown");
    assert!(
        md.contains("is cleanup: it runs on every host that began `web`"),
        "{md}"
    );
}
