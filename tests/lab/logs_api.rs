//! osapi's unit log route over real HTTP against the lab, each answer
//! checked field by field against osapi's spec
//! (`internal/controller/api/node/log/gen/api.yaml` at osapi 63dd1cffa:
//! `LogCollectionResponse`, `LogResultEntry`, `LogEntryInfo`), written
//! here as drover's own expectations; its refusals (400, 401, 403, 404);
//! and `serve --failure-logs` on a job that fails.

use reqwest::Method;
use serde_json::Value;

use crate::common::{lab, IDLE_RESET};
use crate::logs::{assert_osapi_entry, idle_fails_loudly, messages, transient, unit_name, KNOWN};
use crate::server::{assert_error, call, Keys, Server};

/// osapi's `LogCollectionResponse`: `results` (required) and an optional
/// `job_id`, nothing else; each result a `LogResultEntry`.
fn assert_collection(v: &Value) -> &Vec<Value> {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert!(o.keys().all(|k| k == "results" || k == "job_id"), "{v}");
    let results = v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results: {v}"));
    for r in results {
        let o = r.as_object().unwrap_or_else(|| panic!("a result: {r}"));
        for k in o.keys() {
            assert!(
                ["hostname", "status", "entries", "error"].contains(&k.as_str()),
                "{k}: {r}"
            );
        }
        assert!(r["hostname"].is_string(), "hostname is required: {r}");
        assert!(
            ["ok", "failed", "skipped"].contains(&r["status"].as_str().unwrap_or("")),
            "{r}"
        );
        assert!(r.get("error").is_none_or(Value::is_string), "{r}");
        if let Some(entries) = r.get("entries") {
            for e in entries.as_array().unwrap_or_else(|| panic!("entries: {r}")) {
                assert_osapi_entry(e);
            }
        }
        if r["status"] == "ok" {
            assert!(r["entries"].is_array(), "an ok result has its entries: {r}");
        } else {
            assert!(r["error"].is_string(), "a failed result says why: {r}");
        }
    }
    results
}

#[tokio::test]
async fn the_log_route_answers_in_osapi_shapes_and_refuses_bad_requests() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let (h1, h2) = (lab.host(0).to_string(), lab.host(1).to_string());
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {h1}: {{}}\n  {h2}: {{}}\n  gone: {{ address: 127.0.0.1, port: 1, connect_timeout: 2s }}\n"),
    );
    let keys = Keys::make(dir.path(), &h2);
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
            "--failure-logs",
            "3",
        ],
        &dir.path().join("stderr"),
    );
    let unit = unit_name("api");
    transient(&lab, &h1, &unit, "", KNOWN);
    let route =
        |host: &str, name: &str, q: &str| s.url(&format!("/api/node/{host}/log/unit/{name}{q}"));

    // One host, its known lines, every field as osapi types it.
    let (st, _, v) = call(
        Method::GET,
        &route(&h1, &unit, "?lines=50"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let results = assert_collection(&v);
    assert_eq!(results.len(), 1);
    assert_eq!(
        (
            results[0]["hostname"].as_str(),
            results[0]["status"].as_str()
        ),
        (Some(h1.as_str()), Some("ok"))
    );
    assert_eq!(
        messages(&results[0], "drover-known-"),
        [
            "drover-known-first",
            "drover-known-error",
            "drover-known-last"
        ]
    );
    for e in results[0]["entries"].as_array().unwrap() {
        assert_eq!(e["unit"], format!("{unit}.service").as_str(), "{e}");
    }
    // priority and since as osapi's client sends them; lines bounds the count.
    let (st, _, v) = call(
        Method::GET,
        &route(&h1, &unit, "?priority=err&since=1h"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        messages(&assert_collection(&v)[0], "drover-known-"),
        ["drover-known-error"]
    );
    let (_, _, v) = call(
        Method::GET,
        &route(&h1, &unit, "?lines=2"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(
        assert_collection(&v)[0]["entries"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );

    // _all: every host, the unreachable one `failed` with its error (200).
    let (st, _, v) = call(Method::GET, &route("_all", &unit, ""), Some(&keys.admin)).await;
    assert_eq!(st, 200, "{v}");
    let results = assert_collection(&v);
    let status: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [(h1.as_str(), "ok"), (h2.as_str(), "ok"), ("gone", "failed")]
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );
    // _any: exactly one host, one that answered.
    let (st, _, v) = call(Method::GET, &route("_any", &unit, ""), Some(&keys.read)).await;
    assert_eq!(st, 200, "{v}");
    let results = assert_collection(&v);
    assert_eq!(
        (results.len(), results[0]["status"].as_str()),
        (1, Some("ok")),
        "{v}"
    );

    // 400: what the request carries is checked before any host is read.
    for q in [
        "?lines=0",
        "?lines=10001",
        "?lines=abc",
        "?priority=loud",
        "?priority=error",
        "?since=soon",
        "?since=1h%3B%20reboot",
        "?colour=red",
    ] {
        let (st, _, v) = call(Method::GET, &route(&h1, &unit, q), Some(&keys.read)).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_error(st, &v);
    }
    for bad in ["x%3Breboot", "a%20b", "%24(reboot)", "a*"] {
        let (st, _, v) = call(Method::GET, &route(&h1, bad, ""), Some(&keys.read)).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["details"].as_str().unwrap_or("").contains("unit"), "{v}");
    }
    let (st, _, v) = call(Method::GET, &route("nope", &unit, ""), Some(&keys.read)).await;
    assert_eq!(st, 400, "an unknown host, for a key without targets: {v}");
    // 401: no key, a wrong key.
    for key in [None, Some("not-a-key")] {
        let (st, _, v) = call(Method::GET, &route(&h1, &unit, ""), key).await;
        assert_eq!(st, 401, "{v}");
        assert_error(st, &v);
    }
    // 403: outside the key's targets, and an unknown host alike.
    for host in [h1.as_str(), "nope", "_all"] {
        let (st, _, v) = call(Method::GET, &route(host, &unit, ""), Some(&keys.limited)).await;
        assert_eq!(st, 403, "{host}: {v}");
        assert_error(st, &v);
    }
    let (st, _, v) = call(
        Method::GET,
        &route(&h2, "demo-web", "?lines=1"),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(st, 200, "inside its targets: {v}");
    // 404: no host knows the unit and no journal has it.
    let (st, _, v) = call(
        Method::GET,
        &route(&h1, &unit_name("never"), ""),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    assert_error(st, &v);

    // The route is in the server's OpenAPI document.
    let (_, _, doc) = call(Method::GET, &s.url("/openapi.json"), Some(&keys.read)).await;
    assert!(doc["paths"]["/api/node/{hostname}/log/unit/{name}"]["get"].is_object());

    // serve --failure-logs 3: a job that fails carries the unit's lines.
    lab.ssh(&h2, &idle_fails_loudly("tok-api-not-secret-here"));
    let _undo = lab.undo_on_drop(&h2, IDLE_RESET);
    let (st, _, v) = call(
        Method::POST,
        &s.url(&format!("/node/{h2}/service/demo-idle/start?wait=60s")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let r = &v["results"][0];
    assert_eq!(r["status"], "failed", "{v}");
    let logs = r["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs: {r}"));
    assert!((1..=3).contains(&logs.len()), "{r}");
    logs.iter().for_each(assert_osapi_entry);
}
