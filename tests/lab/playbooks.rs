//! Every playbook under playbooks/ runs against the lab as shipped: exit 0,
//! no failed result, and the lab's units end up as the playbook says.

use crate::common;

use std::path::Path;

use common::{lab, run};
use serde_json::Value;

#[test]
fn every_bundled_playbook_applies_cleanly_to_the_lab() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut books: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    books.sort();
    assert!(books.len() >= 3, "{books:?}");
    for pb in &books {
        // systemd allows 5 starts per unit per 10 s; earlier tests used some.
        for h in &lab.hosts {
            lab.ssh(&h.name, "systemctl reset-failed");
        }
        let (code, out, err) = run(lab
            .drover()
            .args(["apply", "--format", "json", "-i"])
            .arg(&lab.inventory)
            .arg(pb));
        let report: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{}: no report ({e}): {out}\n{err}", pb.display()));
        let failed: Vec<&Value> = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "failed")
            .collect();
        assert!(failed.is_empty(), "{}: {failed:?}", pb.display());
        assert_eq!(code, 0, "{}: {err}", pb.display());
        assert!(!report["results"].as_array().unwrap().is_empty());
    }
    // What the last playbooks leave behind is the lab's baseline.
    for h in &lab.hosts {
        assert_eq!(
            lab.show(&h.name, "demo-web")["ActiveState"],
            "active",
            "{}",
            h.name
        );
        assert_eq!(
            lab.show(&h.name, "demo-worker")["ActiveState"],
            "active",
            "{}",
            h.name
        );
        assert_eq!(
            lab.show(&h.name, "demo-idle")["ActiveState"],
            "inactive",
            "{}",
            h.name
        );
    }
}
