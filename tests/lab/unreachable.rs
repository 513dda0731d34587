//! A stopped lab host is reported unreachable (fast, exit 4) while the
//! other hosts are read normally; no ssh process is left behind.

use crate::common;

use std::time::{Duration, Instant};

use common::{lab, run, ssh_pids_mentioning};
use serde_json::Value;

/// Starts the host again even when the test fails.
struct Restart<'a>(&'a common::Lab, String);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        self.0.lab_sh(&["start-host", &self.1]);
    }
}

#[test]
fn stopped_host_is_unreachable_and_the_others_succeed() {
    let Some(lab) = lab() else { return };
    assert!(lab.len() >= 2, "the lab needs at least 2 hosts");
    let _guard = lab.lock();
    // The highest-numbered host is this test's own: nothing else stops it.
    let victim = lab.host(lab.len() - 1).to_string();
    let others: Vec<String> = (0..(lab.len() - 1).min(3))
        .map(|i| lab.host(i).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts: String = others
        .iter()
        .chain(std::iter::once(&victim))
        .map(|h| format!("  {h}: {{}}\n"))
        .collect();
    let inv = lab.inventory_with(dir.path(), &hosts);

    lab.lab_sh(&["stop-host", &victim]);
    let _restart = Restart(&lab, victim.clone());
    let t0 = Instant::now();
    let (code, out, err) = run(lab
        .drover()
        .args(["status", "-i"])
        .arg(&inv)
        .args(["--format", "json", "demo-web"])
        .env("XDG_RUNTIME_DIR", dir.path()));
    let took = t0.elapsed();
    assert_eq!(code, 4, "some host unreachable: exit 4\n{err}\n{out}");
    // connect_timeout is 5 s; the guard adds a few seconds at most.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["hostname"], victim.as_str());
    assert_eq!(errors[0]["unreachable"], true);
    let services = v["services"].as_array().expect("services");
    for h in &others {
        assert!(
            services
                .iter()
                .any(|s| s["hostname"] == h.as_str() && s["status"] == "RUNNING"),
            "{h} must be read: {v}"
        );
    }
    let left = ssh_pids_mentioning(&dir.path().display().to_string());
    assert!(left.is_empty(), "ssh processes left behind: {left:?}");

    // facts records the host as unreachable, with the error, and exits 4.
    let facts = dir.path().join("facts.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["facts", "-i"])
        .arg(&inv)
        .arg("--out")
        .arg(&facts)
        .arg("demo-web")
        .env("XDG_RUNTIME_DIR", dir.path()));
    assert_eq!(code, 4, "{err}");
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(&facts).expect("facts")).expect("json");
    assert_eq!(f["hosts"][&victim]["reachable"], false);
    assert!(f["hosts"][&victim]["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("unreachable")));
    for h in &others {
        assert_eq!(f["hosts"][h]["reachable"], true, "{h}");
    }
}
