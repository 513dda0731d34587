//! A secret var never reaches a report, a journal or stdout of a real run:
//! a gate whose URL holds the secret fails on a lab host, and every text
//! that quotes the URL shows the marker instead. Needs the lab (tests/lab).

use crate::common;

use common::{lab, run};

const TOKEN: &str = "tok-5b1f0c93-never-shown";

#[test]
fn a_secret_in_a_failing_gate_is_redacted_everywhere() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let host = lab.host(0).to_string();
    let _idle = lab.undo_on_drop(&host, "systemctl stop demo-idle");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("secret.yml");
    std::fs::write(
        &pb,
        format!(
            "name: secret gate\nvars: {{ token: \"{TOKEN}\" }}\nsecret_vars: [token]\nsteps:\n  - id: idle\n    target: {host}\n    service: {{ name: demo-idle, state: started }}\n    wait: {{ http: \"http://127.0.0.1:1/{{{{ vars.token }}}}\", timeout: 2s }}\n"
        ),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report));
    assert_eq!(code, 2, "the gate fails: {out}\n{err}");
    let journal = std::fs::read_to_string(dir.path().join("report.json.journal")).unwrap();
    let saved = std::fs::read_to_string(&report).unwrap();
    for (what, text) in [
        ("stdout", &out),
        ("stderr", &err),
        ("report", &saved),
        ("journal", &journal),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the secret: {text}");
    }
    assert!(saved.contains("<secret token sha256:"), "{saved}");
    assert!(journal.contains("<secret token sha256:"), "{journal}");
}
