//! The shipped dynamic inventory (inventory/from-list) and a directory
//! inventory reach real hosts: `drover status` through each reads the same
//! units in the same states as through a plain inventory file, with the
//! ssh_config named relatively (resolved against the program's directory
//! and against the defining file's). Read-only; holds the lab lock so no
//! other test changes a unit between the three reads.

use crate::common;

use std::path::Path;

use common::{lab, run, Lab};
use serde_json::Value;

const UNITS: [&str; 2] = ["demo-web.service", "demo-idle.service"];

/// (hostname, unit, status, active_state) of every service `status` listed.
fn status(lab: &Lab, inventory: &Path) -> Vec<(String, String, String, String)> {
    let mut cmd = lab.drover();
    // From elsewhere: the program must run from its own directory.
    cmd.current_dir("/")
        .args(["status", "-i"])
        .arg(inventory)
        .args(["--target", "_all", "--format", "json"])
        .args(UNITS);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{}: {out}\n{err}", inventory.display());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(v["errors"].as_array().is_some_and(Vec::is_empty), "{v}");
    let s = |x: &Value, k: &str| x[k].as_str().unwrap_or_default().to_string();
    let mut rows: Vec<_> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|x| {
            (
                s(x, "hostname"),
                s(x, "name"),
                s(x, "status"),
                s(x, "active_state"),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn status_through_a_program_and_a_directory_matches_the_file() {
    let Some(lab) = lab() else { return };
    assert!(lab.len() >= 2, "the lab needs at least 2 hosts");
    let _lock = lab.lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let names = [lab.host(0), lab.host(1)];

    let file = lab.inventory_with(
        dir.path(),
        &names
            .iter()
            .map(|n| format!("  {n}: {{}}\n"))
            .collect::<String>(),
    );

    // The shipped script, its list, and the lab's ssh_config beside it.
    let prog_dir = dir.path().join("dynamic");
    std::fs::create_dir(&prog_dir).expect("mkdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("inventory/from-list"), prog_dir.join("from-list")).expect("copy");
    std::fs::copy(&lab.ssh_config, prog_dir.join("ssh_config")).expect("copy");
    let list: String = names
        .iter()
        .map(|n| format!("{n} {n} role=web lab=yes\n"))
        .collect();
    std::fs::write(prog_dir.join("hosts.list"), list).expect("write");

    // A directory: defaults naming ../ssh_config relatively, hosts apart.
    let inv_dir = dir.path().join("inv.d");
    std::fs::create_dir(&inv_dir).expect("mkdir");
    std::fs::copy(&lab.ssh_config, dir.path().join("ssh_config")).expect("copy");
    std::fs::write(
        inv_dir.join("10-defaults.yml"),
        "defaults:\n  user: root\n  ssh_config: ../ssh_config\n  connect_timeout: 5s\n",
    )
    .expect("write");
    for (i, n) in names.iter().enumerate() {
        std::fs::write(
            inv_dir.join(format!("2{i}-{n}.yml")),
            format!("hosts:\n  {n}: {{ labels: {{ role: web }} }}\n"),
        )
        .expect("write");
    }

    let want = status(&lab, &file);
    assert_eq!(want.len(), names.len() * UNITS.len(), "{want:?}");
    assert_eq!(status(&lab, &prog_dir.join("from-list")), want);
    assert_eq!(status(&lab, &inv_dir), want);
}
