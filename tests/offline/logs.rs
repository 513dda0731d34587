//! Unit logs without a host: `drover logs` refuses bad arguments before
//! connecting and reports each unreachable host on its own; the lines
//! under a failed result and the `logs` text are escaped (snapshots); the
//! log route checks keys and arguments before reading any host. Against
//! real journals: tests/lab/logs.rs.

use std::path::Path;

use drover::engine::logs::{HostLogs, LogsReport};
use drover::model::logs::LogEntry;
use drover::model::outcome::{Failure, Outcome, Status};
use drover::model::report::JobResult;
use drover::render;
use reqwest::Method;
use serde_json::Value;

use crate::common::run;
use crate::server::{assert_error, call};

/// Two local hosts whose bus does not exist: unreachable at once.
fn inventory(dir: &Path) -> std::path::PathBuf {
    let inv = dir.join("inventory.yml");
    std::fs::write(
        &inv,
        "defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-test-bus\nhosts:\n  a: {}\n  b: {}\n",
    )
    .unwrap();
    inv
}

fn drover() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    c.stdin(std::process::Stdio::null());
    c
}

#[test]
fn bad_arguments_are_refused_before_any_host_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path());
    for (args, says) in [
        (vec!["x;reboot"], "unit `x;reboot`"),
        (vec!["demo", "-n", "0"], "--lines"),
        (vec!["demo", "-n", "10001"], "--lines"),
        (vec!["demo", "--since", "soon"], "--since"),
        (vec!["demo", "--since=-1h"], "--since"),
        (vec!["demo", "--priority", "error"], "did you mean `err`"),
        (vec!["demo", "--target", "nope"], "unknown host `nope`"),
    ] {
        let mut c = drover();
        c.arg("logs").args(&args).arg("-i").arg(&inv);
        if !args.contains(&"--target") {
            c.args(["--target", "_all"]);
        }
        let (code, out, err) = run(&mut c);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("unreachable"),
            "{args:?}: nothing is reached: {err}"
        );
    }
    // With --format json, the error is JSON on stdout.
    let (code, out, _) = run(drover()
        .args([
            "logs", "demo", "--target", "_all", "-n", "0", "--format", "json", "-i",
        ])
        .arg(&inv));
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["code"], 400, "{v}");
    for flag in ["apply", "serve"] {
        let (code, _, err) = run(drover().args([flag, "--failure-logs", "1001"]));
        assert_eq!(code, 1, "{flag}: {err}");
        assert!(err.contains("--failure-logs"), "{flag}: {err}");
    }
}

#[test]
fn each_unreachable_host_is_its_own_error_and_the_exit_code_is_4() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path());
    let (code, out, err) = run(drover()
        .args([
            "logs", "demo-web", "--target", "_all", "--format", "json", "-i",
        ])
        .arg(&inv));
    assert_eq!(code, 4, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["unit"], "demo-web.service");
    for (i, h) in ["a", "b"].iter().enumerate() {
        let r = &v["results"][i];
        assert_eq!(
            (r["hostname"].as_str(), r["status"].as_str()),
            (Some(*h), Some("failed")),
            "{v}"
        );
        assert_eq!(r["unreachable"], true, "{v}");
        assert!(
            r["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("unreachable: "),
            "{v}"
        );
    }
    let (code, out, _) = run(drover()
        .args(["logs", "demo-web", "--target", "a", "-i"])
        .arg(&inv));
    assert_eq!(code, 4);
    assert!(out.starts_with("a: error: unreachable: "), "{out}");
}

fn entry(message: &str, priority: &str) -> LogEntry {
    LogEntry {
        timestamp: "2026-11-30T02:00:01.250000Z".into(),
        unit: "demo-web.service".into(),
        priority: priority.into(),
        message: message.into(),
        pid: Some(4242),
        hostname: Some("web-1".into()),
    }
}

/// What a unit may write: a screen clear, a title change, a forged line
/// after a newline, a bidi override, and bytes journalctl gave as not
/// UTF-8 (already U+FFFD here).
fn hostile_entries() -> Vec<LogEntry> {
    vec![
        entry("listening on :8080", "info"),
        entry("\x1b[2J\x1b]0;OWNED\x07cleared", "warning"),
        entry("fine\nweb-9: FAILED forged", "err"),
        entry("abc\u{202e}fed \u{fffd}\u{fffd}", "info"),
    ]
}

#[test]
fn logs_text_is_escaped_and_prefixed_by_host() {
    let report = LogsReport {
        unit: "demo-web.service".into(),
        results: vec![
            HostLogs {
                hostname: "web-1".into(),
                status: Status::Ok,
                entries: hostile_entries(),
                error: None,
                unreachable: false,
                truncated: true,
                unit_unknown: false,
            },
            HostLogs {
                hostname: "web-2".into(),
                status: Status::Ok,
                entries: vec![],
                error: None,
                unreachable: false,
                truncated: false,
                unit_unknown: true,
            },
            HostLogs {
                hostname: "web-3".into(),
                status: Status::Failed,
                entries: vec![],
                error: Some("journalctl failed (exit 1): \x1b[31mno".into()),
                unreachable: false,
                truncated: false,
                unit_unknown: false,
            },
        ],
    };
    let text = render::logs::render_text(&report, false);
    for l in text.lines() {
        assert!(
            ["web-1: ", "web-2: ", "web-3: "]
                .iter()
                .any(|p| l.starts_with(p)),
            "{l:?}"
        );
    }
    assert!(!text.chars().any(|c| c != '\n' && c.is_control()), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
    insta::assert_snapshot!(text);
    // With colour only the priority is painted; the text stays escaped.
    let color = render::logs::render_text(&report, true);
    assert!(color.contains("\x1b[") && color != text, "{color:?}");
    assert!(!color.contains("\x1b[2J"), "{color:?}");
}

#[test]
fn a_failed_result_shows_its_units_lines_below_it() {
    let mut r = JobResult::new(
        "web-1",
        "restart-web",
        "demo-web.service",
        &Outcome::failed(Failure::JobFailed(
            "job failed: unit entered failed state (Result=exit-code)".into(),
        )),
        &drover::model::secret::Secrets::new(),
    );
    r.action = "restart".into();
    r.duration_ms = 95;
    r.logs = hostile_entries();
    let line = render::apply::result_line(&r, false);
    assert_eq!(line.lines().count(), 1 + r.logs.len(), "{line}");
    assert!(
        line.lines().skip(1).all(|l| l.starts_with("    | ")),
        "{line}"
    );
    assert!(!line.chars().any(|c| c != '\n' && c.is_control()), "{line}");
    insta::assert_snapshot!(line);
    // In the report, `logs` is left out when there are none.
    r.logs.clear();
    let json = serde_json::to_value(&r).unwrap();
    assert!(json.get("logs").is_none(), "{json}");
}

#[tokio::test]
async fn the_log_route_checks_keys_and_arguments_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // Keys limited to role:web (host a); b is outside them.
    let (s, keys) = crate::serve::start(dir.path(), &[]);
    let url =
        |host: &str, unit: &str, q: &str| s.url(&format!("/api/node/{host}/log/unit/{unit}{q}"));
    let (st, _, v) = call(Method::GET, &url("a", "demo-web", ""), None).await;
    assert_eq!(st, 401, "{v}");
    assert_error(st, &v);
    for (host, unit, q) in [
        ("a", "demo-web", "?lines=0"),
        ("a", "demo-web", "?lines=x"),
        ("a", "demo-web", "?priority=7x"),
        ("a", "demo-web", "?since=tomorrow"),
        ("a", "demo-web", "?other=1"),
        ("a", "x%3Breboot", ""),
        ("%20", "demo-web", ""),
    ] {
        let (st, _, v) = call(Method::GET, &url(host, unit, q), Some(&keys.read)).await;
        assert_eq!(st, 400, "{host} {unit} {q}: {v}");
        assert_error(st, &v);
    }
    for host in ["b", "_all", "nope"] {
        let (st, _, v) = call(Method::GET, &url(host, "demo-web", ""), Some(&keys.limited)).await;
        assert_eq!(st, 403, "{host}: {v}");
    }
    // Inside the key's hosts: read, and an unreachable host is a result.
    let (st, _, v) = call(
        Method::GET,
        &url("a", "demo-web", "?lines=5"),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0]["hostname"], "a");
    assert_eq!(v["results"][0]["status"], "failed");
    assert!(v["results"][0].get("entries").is_none(), "{v}");
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("unreachable"),
        "{v}"
    );
    let (st, _, v) = call(
        Method::GET,
        &url("_any", "demo-web", ""),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(
        (st, v["results"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
}
