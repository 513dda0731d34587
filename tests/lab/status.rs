//! `drover status` and `drover facts` against the lab, over ssh (3 hosts)
//! and over the local bus, cross-checked with `systemctl` inside the hosts.

use crate::common;

use std::collections::BTreeMap;

use common::{lab, run, ssh_pids_mentioning, Lab};
use serde_json::Value;

const UNITS: [&str; 4] = [
    "demo-web.service",
    "demo-worker.service",
    "demo-idle.service",
    "demo-broken.service",
];

/// The listing word systemctl's states must map to.
fn expected_status(show: &BTreeMap<String, String>) -> &'static str {
    match show["ActiveState"].as_str() {
        "active" => "RUNNING",
        "failed" => "FAILED",
        "activating" => "STARTING",
        "reloading" => "RESTARTING",
        _ => "STOPPED",
    }
}

/// RFC 3339 of `systemctl show --timestamp=unix` ("@1700000000").
fn unix_to_rfc3339(v: &str) -> Option<String> {
    let secs: i64 = v.strip_prefix('@')?.parse().ok()?;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn status_json(
    lab: &Lab,
    inventory: &std::path::Path,
    target: &str,
    env: &[(&str, String)],
) -> (i32, Value) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut cmd = lab.drover();
    cmd.args(["status", "-i"])
        .arg(inventory)
        .args(["--target", target, "--format", "json"])
        .args(UNITS)
        // A private runtime dir: its name lets us find any ssh left behind.
        .env("XDG_RUNTIME_DIR", scratch.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = run(&mut cmd);
    let leftover = ssh_pids_mentioning(&scratch.path().display().to_string());
    assert!(
        leftover.is_empty(),
        "ssh processes left behind: {leftover:?}"
    );
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("status json: {e}\nstdout: {out}\nstderr: {err}"));
    (code, v)
}

fn check_against_systemctl(lab: &Lab, host: &str, services: &[Value]) {
    let mine: Vec<&Value> = services.iter().filter(|s| s["hostname"] == host).collect();
    assert_eq!(mine.len(), UNITS.len(), "{host}: {services:?}");
    for s in mine {
        let unit = s["name"].as_str().expect("name");
        let show = lab.show(host, unit);
        assert_eq!(
            s["status"],
            expected_status(&show),
            "{host} {unit}: {s} vs {show:?}"
        );
        assert_eq!(
            s["active_state"],
            show["ActiveState"].as_str(),
            "{host} {unit}"
        );
        assert_eq!(s["sub_state"], show["SubState"].as_str(), "{host} {unit}");
        assert_eq!(s["load_state"], show["LoadState"].as_str(), "{host} {unit}");
        if show["ActiveState"] == "active" {
            let want = unix_to_rfc3339(&show["ActiveEnterTimestamp"]);
            assert_eq!(s["start_time"].as_str(), want.as_deref(), "{host} {unit}");
            assert!(s["uptime"].as_u64().is_some(), "{host} {unit}: uptime");
        } else {
            assert!(
                s["start_time"].is_null() && s["uptime"].is_null(),
                "{host} {unit}: {s}"
            );
        }
    }
}

#[test]
fn status_over_ssh_matches_systemctl_on_three_hosts() {
    let Some(lab) = lab() else { return };
    // Compares with systemctl: nothing may change the lab meanwhile.
    let _guard = lab.lock();
    assert!(lab.len() >= 3, "the lab needs at least 3 hosts");
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts: String = (0..3)
        .map(|i| format!("  {}: {{}}\n", lab.host(i)))
        .collect();
    let inv = lab.inventory_with(dir.path(), &hosts);
    let (code, v) = status_json(&lab, &inv, "_all", &[]);
    assert_eq!(code, 0, "{v}");
    assert!(v["errors"].as_array().expect("errors").is_empty(), "{v}");
    let services = v["services"].as_array().expect("services");
    for i in 0..3 {
        check_against_systemctl(&lab, lab.host(i), services);
    }
}

#[test]
fn status_over_the_local_bus_matches_systemctl() {
    let Some(lab) = lab() else { return };
    // Compares with systemctl: nothing may change the lab meanwhile.
    let _guard = lab.lock();
    let h = lab.hosts[0].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    // One host through an inventory `bus:` entry, one through the
    // environment variable (no `bus:`), both transport local.
    let inv = lab.inventory_with(
        dir.path(),
        &format!(
            "  {n}-bus: {{ transport: local, bus: \"unix:path={b}\" }}\n  {n}-env: {{ transport: local }}\n",
            n = h.name,
            b = h.bus.display()
        ),
    );
    let env = [(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", h.bus.display()),
    )];
    let (code, v) = status_json(&lab, &inv, "_all", &env);
    assert_eq!(code, 0, "{v}");
    let services = v["services"].as_array().expect("services").clone();
    for alias in [format!("{}-bus", h.name), format!("{}-env", h.name)] {
        let renamed: Vec<Value> = services
            .iter()
            .filter(|s| s["hostname"] == alias.as_str())
            .map(|s| {
                let mut s = s.clone();
                s["hostname"] = Value::from(h.name.clone());
                s
            })
            .collect();
        check_against_systemctl(&lab, &h.name, &renamed);
    }
}

#[test]
fn status_without_units_lists_loaded_services_in_text() {
    let Some(lab) = lab() else { return };
    // Compares with systemctl: nothing may change the lab meanwhile.
    let _guard = lab.lock();
    let (code, out, err) = run(lab
        .drover()
        .args(["status", "-i"])
        .arg(&lab.inventory)
        .args(["--target", lab.host(0)]));
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("HOST") && first.contains("STATUS") && first.contains("UPTIME"),
        "{out}"
    );
    for unit in [
        "demo-web.service",
        "demo-worker.service",
        "ssh.service",
        "dbus.service",
    ] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(unit))
            .unwrap_or_else(|| panic!("{unit} missing:\n{out}"));
        assert!(line.contains("RUNNING"), "{line}");
    }
    // Off a TTY: no colour escapes.
    assert!(!out.contains('\u{1b}'), "{out}");
}

#[test]
fn facts_file_matches_systemctl_and_reads_every_service() {
    let Some(lab) = lab() else { return };
    // Compares with systemctl: nothing may change the lab meanwhile.
    let _guard = lab.lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("facts.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["facts", "-i"])
        .arg(&lab.inventory)
        .args(["--target", "role:web", "--out"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read facts")).expect("json");
    let hosts = facts["hosts"].as_object().expect("hosts");
    assert!(!hosts.is_empty());
    let (host, hf) = hosts.iter().next().expect("a host");
    assert_eq!(hf["reachable"], true);
    let units = hf["units"].as_object().expect("units");
    // Loaded and unit-file-only services both appear; templates do not.
    assert!(
        units.contains_key("demo-idle.service") && units.contains_key("ssh.service"),
        "{units:?}"
    );
    assert!(!units.keys().any(|k| k.contains("@.")), "{units:?}");
    for unit in UNITS {
        let show = lab.show(host, unit);
        let u = &units[unit];
        assert_eq!(u["active_state"], show["ActiveState"].as_str(), "{unit}");
        assert_eq!(
            u["unit_file_state"],
            show["UnitFileState"].as_str(),
            "{unit}"
        );
        assert_eq!(u["invocation_id"], show["InvocationID"].as_str(), "{unit}");
        assert_eq!(
            u["main_pid"].as_u64().map(|p| p.to_string()).as_deref(),
            Some(show["MainPID"].as_str()),
            "{unit}"
        );
    }
    // A unit that does not exist is reported, not an error.
    let (code, _, err) = run(lab
        .drover()
        .args(["facts", "-i"])
        .arg(&lab.inventory)
        .args(["--target", lab.host(0), "--out"])
        .arg(&out)
        .arg("no-such-unit"));
    assert_eq!(code, 0, "{err}");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read facts")).expect("json");
    assert_eq!(
        facts["hosts"][lab.host(0)]["units"]["no-such-unit.service"]["load_state"],
        "not-found"
    );
}

#[test]
fn become_runs_the_bridge_through_sudo() {
    let Some(lab) = lab() else { return };
    // Compares with systemctl: nothing may change the lab meanwhile.
    let _guard = lab.lock();
    let dir = tempfile::tempdir().expect("tempdir");
    // User `drover` (passwordless sudo in the lab image) with become.
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {}: {{ user: drover, become: true }}\n", lab.host(0)),
    );
    let (code, v) = status_json(&lab, &inv, "_all", &[]);
    assert_eq!(code, 0, "{v}");
    check_against_systemctl(
        &lab,
        lab.host(0),
        v["services"].as_array().expect("services"),
    );
}
