//! No host makes drover read without bound: a unit file or the maintenance
//! state file that is a link to /dev/zero is refused, not read, and a
//! health command that prints megabytes is cut off at 1 MiB. Needs the
//! lab (tests/lab).

use crate::common;

use common::{lab, run};
use serde_json::Value;

#[test]
fn special_files_and_floods_from_a_host_are_refused() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let (p, q) = (lab.host(0).to_string(), lab.host(1).to_string());
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(dir.path(), &format!("  {p}: {{}}\n  {q}: {{}}\n"));
    let inv = inv.to_str().unwrap();

    // A unit file that is a link to /dev/zero: the plan's read refuses it.
    lab.ssh(
        &p,
        "ln -sf /dev/zero /etc/systemd/system/drover-zero.service",
    );
    let _unit = lab.undo_on_drop(&p, "rm -f /etc/systemd/system/drover-zero.service");
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "name: zero\nsteps:\n  - id: reg\n    unit: { name: drover-zero, content: \"[Service]\\nExecStart=/bin/true\\n\" }\n",
    )
    .unwrap();
    let (code, out, err) = run(lab
        .drover()
        .args(["plan", "--format", "json", "--timeout", "30s", "-i", inv])
        .arg(&pb));
    assert_eq!(code, 4, "{err}\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let results = v["steps"][0]["results"].as_array().unwrap();
    let on_p = results
        .iter()
        .find(|r| r["hostname"] == p.as_str())
        .unwrap();
    assert!(
        on_p["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is not a regular file"),
        "{on_p}"
    );
    let on_q = results
        .iter()
        .find(|r| r["hostname"] == q.as_str())
        .unwrap();
    assert_eq!(on_q["status"], "ok", "{on_q}");

    // The maintenance state file as a link to /dev/zero: an error for that
    // host, never "no maintenance", and never read.
    lab.ssh(
        &p,
        "mkdir -p /var/lib/drover && mv -f /var/lib/drover/maintenance.json /var/lib/drover/maintenance.json.keep 2>/dev/null; ln -sf /dev/zero /var/lib/drover/maintenance.json",
    );
    let _state = lab.undo_on_drop(&p, "rm -f /var/lib/drover/maintenance.json; mv -f /var/lib/drover/maintenance.json.keep /var/lib/drover/maintenance.json 2>/dev/null; true");
    let (code, out, err) = run(lab.drover().args([
        "status",
        "-i",
        inv,
        "--format",
        "json",
        "--timeout",
        "30s",
        "demo-web",
    ]));
    assert_eq!(code, 2, "a failed read, not unreachable: {err}\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["hostname"], p.as_str(), "{v}");
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("maintenance.json"),
        "{v}"
    );

    // A health command that floods its output is cut off at 1 MiB.
    let (code, out, err) = run(lab.drover().args([
        "health",
        "demo-web",
        "-i",
        inv,
        "--target",
        &q,
        "--format",
        "json",
        "--command",
        "head -c 3000000 /dev/zero",
    ]));
    assert_eq!(code, 3, "{err}\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let checks = v["hosts"][0]["checks"].as_array().unwrap();
    let cmd = checks.iter().find(|c| c["check"] == "command").unwrap();
    assert_eq!(cmd["status"], "unknown", "{cmd}");
    assert!(
        cmd["note"]
            .as_str()
            .unwrap_or_default()
            .contains("more than 1024 KiB"),
        "{cmd}"
    );
}
