//! Every bundled playbook and inventory stays valid.

use std::process::Command;

#[test]
fn bundled_playbooks_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let inv = format!("{root}/tests/corpus/lab-like-inventory.yml");
    let mut n = 0;
    for dir in ["playbooks", "examples"] {
        for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if p.extension().is_none_or(|x| x != "yml") || !text.contains("steps:") {
                continue;
            }
            let inv = if dir == "examples" {
                format!("{root}/examples/inventory.yml")
            } else {
                inv.clone()
            };
            let out = Command::new(env!("CARGO_BIN_EXE_drover"))
                .args(["check", "-i", &inv])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} playbooks checked");
}
