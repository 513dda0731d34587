//! A live `drover plan` against the lab: it predicts from the hosts' real
//! state, and it changes nothing (every unit's InvocationID and
//! ActiveEnterTimestamp are identical before and after).

use crate::common;

use std::collections::BTreeMap;

use common::{lab, run};
use serde_json::Value;

const UNITS: [&str; 4] = [
    "demo-web.service",
    "demo-worker.service",
    "demo-idle.service",
    "demo-broken.service",
];

const PLAYBOOK: &str = "\
name: lab live plan
steps:
  - id: restart-web
    target: lab:yes
    service: { name: demo-web.service, state: restarted }
  - id: keep-idle-stopped
    target: lab:yes
    service: { name: demo-idle, state: stopped }
  - id: start-idle
    target: lab:yes
    service: { name: demo-idle, state: started, enabled: true }
  - id: worker
    target: lab:yes
    service: { name: demo-worker, state: started }
  - id: broken-stays-down
    target: lab:yes
    service: { name: demo-broken, state: stopped }
";

fn snapshot(
    lab: &common::Lab,
    hosts: &[String],
) -> BTreeMap<(String, String), (String, String, String)> {
    let mut out = BTreeMap::new();
    for h in hosts {
        for u in UNITS {
            let s = lab.show(h, u);
            out.insert(
                (h.clone(), u.to_string()),
                (
                    s["InvocationID"].clone(),
                    s["ActiveEnterTimestamp"].clone(),
                    s["ActiveState"].clone(),
                ),
            );
        }
    }
    out
}

#[test]
fn live_plan_predicts_from_real_state_and_changes_nothing() {
    let Some(lab) = lab() else { return };
    // Nothing may mutate the lab between the snapshots.
    let _guard = lab.lock();
    let hosts: Vec<String> = (0..3.min(lab.len()))
        .map(|i| lab.host(i).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let inv_hosts: String = hosts
        .iter()
        .map(|h| format!("  {h}: {{ labels: {{ lab: \"yes\" }} }}\n"))
        .collect();
    let inv = lab.inventory_with(dir.path(), &inv_hosts);
    let pb = dir.path().join("pb.yml");
    std::fs::write(&pb, PLAYBOOK).expect("write playbook");

    let before = snapshot(&lab, &hosts);
    let (code, out, err) = run(lab
        .drover()
        .args(["plan"])
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .args(["--format", "json", "--detailed-exitcode"]));
    let after = snapshot(&lab, &hosts);
    assert_eq!(before, after, "plan changed something on a host");
    assert_eq!(code, 2, "changes are pending: exit 2\n{err}\n{out}");
    let plan: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(plan["facts_source"], "live");

    let results = |step: &str| -> Vec<Value> {
        plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == step)
            .unwrap_or_else(|| panic!("step {step}"))["results"]
            .as_array()
            .expect("results")
            .clone()
    };
    for r in results("restart-web") {
        assert_eq!(
            (r["status"].as_str(), r["changed"].as_bool()),
            (Some("ok"), Some(true)),
            "{r}"
        );
        assert_eq!(r["actions"], serde_json::json!(["restart"]), "{r}");
        // The "before" state the plan used is the host's real state.
        let h = r["hostname"].as_str().expect("hostname").to_string();
        let (inv_id, _, active) = &before[&(h.clone(), "demo-web.service".to_string())];
        let unit = plan["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .find(|x| x["hostname"] == h.as_str())
            .and_then(|x| {
                x["units"]
                    .as_array()?
                    .iter()
                    .find(|u| u["name"] == "demo-web.service")
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no demo-web state for {h} in the plan"));
        assert_eq!(unit["before"]["invocation_id"], inv_id.as_str(), "{unit}");
        assert_eq!(unit["before"]["active_state"], active.as_str(), "{unit}");
    }
    for r in results("keep-idle-stopped") {
        assert_eq!(
            (r["status"].as_str(), r["changed"].as_bool()),
            (Some("ok"), Some(false)),
            "{r}"
        );
    }
    for r in results("start-idle") {
        assert_eq!(r["changed"], true, "{r}");
        let acts: Vec<&str> = r["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(acts.contains(&"start") && acts.contains(&"enable"), "{r}");
    }
    for r in results("worker") {
        assert_eq!(
            (r["status"].as_str(), r["changed"].as_bool()),
            (Some("ok"), Some(false)),
            "{r}"
        );
    }
    assert_eq!(results("restart-web").len(), hosts.len());
}

#[test]
fn live_plan_reports_an_unknown_host_key_per_host() {
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // An ssh_config for one host whose known_hosts is empty: the key is
    // unknown, so strict checking must refuse it.
    let empty = dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").expect("write");
    let lab_cfg = std::fs::read_to_string(&lab.ssh_config).expect("ssh_config");
    let cfg = dir.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host stranger\n  HostName {}\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n\n{lab_cfg}",
            lab.hosts[0].addr,
            lab.dir.join("id_ed25519").display(),
            empty.display()
        ),
    )
    .expect("write ssh_config");
    let inv = dir.path().join("inventory.yml");
    std::fs::write(
        &inv,
        format!(
            "defaults: {{ ssh_config: {}, connect_timeout: 5s }}\nhosts:\n  stranger: {{ labels: {{ lab: \"yes\" }} }}\n  {}: {{ labels: {{ lab: \"yes\" }} }}\n",
            cfg.display(),
            lab.host(1.min(lab.len() - 1))
        ),
    )
    .expect("write inventory");
    let pb = dir.path().join("pb.yml");
    std::fs::write(&pb, PLAYBOOK).expect("write playbook");
    let (code, out, err) = run(lab
        .drover()
        .arg("plan")
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .args(["--format", "json"])
        .env("XDG_RUNTIME_DIR", dir.path()));
    assert_eq!(code, 4, "unreachable host: exit 4\n{err}\n{out}");
    let plan: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let first = &plan["steps"][0]["results"];
    let stranger = first
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["hostname"] == "stranger")
        .expect("stranger");
    let msg = stranger["error"].as_str().unwrap_or_default();
    assert_eq!(stranger["status"], "failed", "{stranger}");
    assert!(
        msg.contains("host key not trusted") && msg.contains("Host key verification failed"),
        "{msg}"
    );
    let other = first
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["hostname"] != "stranger")
        .expect("other");
    assert_eq!(
        other["status"], "ok",
        "the other host is unaffected: {other}"
    );
    let left = common::ssh_pids_mentioning(&dir.path().display().to_string());
    assert!(left.is_empty(), "ssh processes left behind: {left:?}");
}

/// The saved-plan review of the book (`docs/src/guide/plan.md`), its
/// `sh,lab` block run as written with the lab's inventory as `INVENTORY`:
/// facts read from the hosts, a plan made from them offline, then `apply
/// --plan` on the live hosts. The apply really happens: every web host
/// the plan restarts gets a new demo-web invocation, no other host does.
#[test]
fn the_book_saved_plan_review_runs_as_written() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let lines = crate::markdown::lab_script("docs/src/guide/plan.md");
    assert!(
        lines.iter().any(|l| l.contains("drover apply ")),
        "{lines:#?}"
    );
    let hosts: Vec<String> = (0..lab.len()).map(|i| lab.host(i).to_string()).collect();
    let before: Vec<String> = hosts
        .iter()
        .map(|h| lab.show(h, "demo-web")["InvocationID"].clone())
        .collect();

    let sandbox = crate::markdown::Sandbox::new();
    let out = sandbox
        .command(&format!("set -e\n{}\n", lines.join("\n")))
        .env("INVENTORY", &lab.inventory)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docs/src/guide/plan.md's lab block failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = sandbox.dir.path();
    let md = std::fs::read_to_string(dir.join("plan.md")).unwrap();
    assert!(md.contains("<details>"), "the PR comment: {md}");
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["facts_source"], "facts.json", "planned offline");
    let restarted: Vec<&str> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "restart-web")
        .expect("the step restart-web")["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["hostname"].as_str().unwrap_or_default())
        .collect();
    assert!(!restarted.is_empty(), "{plan}");
    for (h, was) in hosts.iter().zip(&before) {
        let now = &lab.show(h, "demo-web")["InvocationID"];
        assert_eq!(
            now != was,
            restarted.contains(&h.as_str()),
            "{h}: demo-web restarted only where the plan said ({restarted:?})"
        );
    }
}
