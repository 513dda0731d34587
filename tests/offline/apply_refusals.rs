//! Refusals that happen before drover connects anywhere: a closed window,
//! a protected unit, bad ad-hoc input. Exit 3 (or 1) and nothing changes.

use std::process::Command;

fn drover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover"))
}

fn inventory(dir: &std::path::Path) -> std::path::PathBuf {
    // Addresses in TEST-NET-1: never contacted, the refusals come first.
    let p = dir.join("inv.yml");
    std::fs::write(
        &p,
        "hosts:\n  web-1: { address: 192.0.2.1, labels: { role: web }, protected: [demo-web] }\n  web-2: { address: 192.0.2.2, labels: { role: web } }\n",
    )
    .unwrap();
    p
}

#[test]
fn outside_the_window_is_refused_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    // A window that never opens: start == end.
    std::fs::write(
        &pb,
        "name: w\nwindow: { start: \"00:00\", end: \"00:00\", tz: UTC }\nsteps:\n  - { id: a, target: web-2, service: { name: demo-idle, state: stopped } }\n",
    )
    .unwrap();
    let out = drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(inventory(dir.path()))
        .arg(&pb)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["code"], 403);
    assert!(
        e["details"].as_str().unwrap().contains("--ignore-window"),
        "{e}"
    );
}

#[test]
fn protected_units_are_refused_without_allow_protected() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(&pb, "name: p\nsteps:\n  - { id: r, target: role:web, service: { name: demo-web, state: restarted } }\n").unwrap();
    let out = drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(inventory(dir.path()))
        .arg(&pb)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["code"], 403);
    let d = e["details"].as_str().unwrap();
    assert!(
        d.contains("demo-web.service") && d.contains("`web-1`") && d.contains("--allow-protected"),
        "{d}"
    );
    // Same for the ad-hoc command.
    let out = drover()
        .args(["service", "stop", "demo-web", "--target", "web-1", "-i"])
        .arg(inventory(dir.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn ad_hoc_input_is_validated_like_files() {
    let dir = tempfile::tempdir().unwrap();
    for (unit, target) in [
        ("x;reboot", "web-1"),
        ("demo-web", "web-9"),
        ("demo-web", "role:"),
        ("$(id)", "_all"),
    ] {
        let out = drover()
            .args(["service", "restart", unit, "--target", target, "-i"])
            .arg(inventory(dir.path()))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{unit} {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn durations_on_the_command_line_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    // A closed window as a safety net: were a flag accepted, apply would be
    // refused there, still before any connection.
    std::fs::write(
        &pb,
        "name: d\nwindow: { start: \"00:00\", end: \"00:00\", tz: UTC }\nsteps:\n  - { id: a, target: web-2, service: { name: demo-idle, state: stopped } }\n",
    )
    .unwrap();
    for (flag, value) in [
        ("--timeout", "500000000000y"),
        ("--timeout", "8d"),
        ("--wait-lock", "8d"),
    ] {
        let out = drover()
            .args(["apply", "--format", "json", flag, value, "-i"])
            .arg(inventory(dir.path()))
            .arg(&pb)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(e["code"], 400, "{e}");
        let d = e["details"].as_str().unwrap();
        assert!(
            d.starts_with(&format!("{flag}: ")) && d.contains("longer than 7 days"),
            "{d}"
        );
    }
}

#[test]
fn ignore_window_runs_outside_the_window() {
    // The same closed window; with --ignore-window the run goes on to the
    // hosts. The one host is this machine's bus at a socket that does not
    // exist, so "going on" is an unreachable result, never a refusal, and
    // nothing is contacted over the network.
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        format!(
            "hosts:\n  here: {{ transport: local, bus: \"unix:path={}/no-bus\" }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "name: w\nwindow: { start: \"00:00\", end: \"00:00\", tz: UTC }\nsteps:\n  - { id: a, target: here, service: { name: demo-idle, state: stopped } }\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        drover()
            .args(["apply", "--format", "json", "-i"])
            .arg(&inv)
            .arg(&pb)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_eq!(run(&[]).status.code(), Some(3), "refused inside no window");
    let out = run(&["--ignore-window"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["kind"], "unreachable", "{report}");
}
