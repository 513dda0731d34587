//! `plan --retry` over the bundled facts, connecting to nothing: which
//! step × host a retry keeps from its parent report and which it plans
//! again, `_any` included. The lab tests (tests/lab/resume.rs) check that
//! apply does what these previews say.

use serde_json::{json, Value};

fn r(host: &str, step: &str, status: &str, kind: Option<&str>) -> Value {
    let mut v = json!({"hostname": host, "status": status, "name": "demo-web.service",
        "changed": status == "ok", "step": step, "action": "restart", "duration_ms": 5});
    if let Some(k) = kind {
        v["kind"] = k.into();
        v["error"] = format!("{status}: {k}").into();
    }
    v
}

/// The parent: web-2 failed its restart, which aborted the roll (web-3
/// skipped); the `_any` worker pick failed; the audit ended ok (db-1 by
/// `when`).
fn parent(worker: &str) -> Value {
    json!({
        "job_id": "parent-job", "playbook": "nightly web restart",
        "started_at": "2026-12-01T02:00:00Z", "finished_at": "2026-12-01T02:01:00Z",
        "outcome": "aborted",
        "results": [
            r("web-1", "restart-web", "ok", None),
            r("web-2", "restart-web", "failed", Some("job-failed")),
            r("web-3", "restart-web", "skipped", Some("aborted")),
            if worker == "ok" { r("worker-2", "worker", "ok", None) } else { r("worker-2", "worker", "failed", Some("timeout")) },
            r("web-1", "audit", "ok", None),
            r("web-2", "audit", "ok", None),
            r("web-3", "audit", "ok", None),
            r("db-1", "audit", "skipped", Some("when")),
        ]
    })
}

fn plan_retry(parent: &Value, extra: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("parent.json");
    std::fs::write(&report, parent.to_string()).unwrap();
    let report = report.to_str().unwrap();
    let mut args = vec!["--format", "json", "--retry", report];
    args.extend_from_slice(extra);
    let out = crate::plan_offline::plan(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let plan = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), plan, stderr)
}

/// (step, host) -> carried over (its error says so) or planned.
fn carried(plan: &Value) -> Vec<(String, String, bool)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["results"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["hostname"].as_str().unwrap().to_string(),
                r["error"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("carried over from parent-job"),
            )
        })
        .collect()
}

fn has(list: &[(String, String, bool)], step: &str, host: &str, kept: bool) -> bool {
    list.iter()
        .any(|(s, h, c)| s == step && h == host && *c == kept)
}

#[test]
fn a_retry_plans_only_what_did_not_end_ok() {
    // The report has no input digests: without --retry-changed it is refused.
    // (With --format json the error is JSON on stdout.)
    let (code, refused, err) = plan_retry(&parent("failed"), &[]);
    assert_eq!(code, 3, "{err}");
    let details = refused["details"].as_str().unwrap_or_default();
    assert!(details.contains("records no input digests"), "{refused}");
    assert!(details.contains("--retry-changed"), "{refused}");

    let (code, plan, err) = plan_retry(&parent("failed"), &["--retry-changed"]);
    assert_eq!(code, 0, "{err}");
    let list = carried(&plan);
    // web-1's restart ended ok: kept; web-2 and web-3 are planned again.
    assert!(has(&list, "restart-web", "web-1", true), "{list:?}");
    assert!(has(&list, "restart-web", "web-2", false), "{list:?}");
    assert!(has(&list, "restart-web", "web-3", false), "{list:?}");
    // The audit ended ok everywhere (db-1 skipped by `when`): all kept.
    for h in ["web-1", "web-2", "web-3", "db-1"] {
        assert!(has(&list, "audit", h, true), "{h}: {list:?}");
    }
    // The `_any` pick failed: the step picks again, and is planned.
    assert!(list.iter().any(|(s, _, c)| s == "worker" && !c), "{list:?}");
    // Nothing is planned twice.
    assert_eq!(list.len(), 8, "{list:?}");

    // An `_any` pick that ended ok stays done.
    let (code, plan, err) = plan_retry(&parent("ok"), &["--retry-changed"]);
    assert_eq!(code, 0, "{err}");
    let list = carried(&plan);
    assert!(has(&list, "worker", "worker-2", true), "{list:?}");

    // --retry-from-start plans web-2 and web-3 from their first step; the
    // audit, a root step they already passed, is run again on them too.
    let (code, plan, err) = plan_retry(&parent("ok"), &["--retry-changed", "--retry-from-start"]);
    assert_eq!(code, 0, "{err}");
    let list = carried(&plan);
    assert!(has(&list, "restart-web", "web-1", true), "{list:?}");
    assert!(has(&list, "audit", "web-2", false), "{list:?}");
    assert!(has(&list, "audit", "web-1", true), "{list:?}");

    // --out is not offered with --retry (a saved plan records no carry).
    let (code, _, err) = plan_retry(&parent("ok"), &["--out", "/dev/null"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot be used with '--out"), "{err}");
}
