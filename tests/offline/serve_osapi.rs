//! osapi's `/api` routes with no lab: keys, roles, validation (objects,
//! job ids, list parameters) and osapi's shapes for hosts that cannot be
//! reached. What they do to real units is tested against the lab in
//! `tests/lab/osapi.rs`.

use crate::serve::{start, start_with};
use crate::server;

use reqwest::Method;
use serde_json::Value;
use server::{assert_error, call, client, Server};

/// Send `body` (JSON text) with `key`; (status, body as JSON).
async fn send(
    s: &Server,
    method: Method,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut r = client().request(method, s.url(path)).bearer_auth(key);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A request and what it must get: method, path, key, body, status, and
/// words of the error's details.
type Case<'a> = (Method, &'a str, &'a str, Option<String>, u16, &'a str);

/// A server with an object store holding `x-app.service`.
fn with_objects(dir: &std::path::Path) -> (Server, server::Keys) {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(
        objects.join("x-app.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    start_with(dir, "", &["--objects", objects.to_str().unwrap()])
}

#[tokio::test]
async fn every_api_route_needs_a_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _keys) = start(dir.path(), &[]);
    let id = "6f1c2d3e-0a4b-4c5d-8e9f-0a1b2c3d4e5f";
    for (m, path) in [
        (Method::GET, "/api/node/_all/service".to_string()),
        (Method::POST, "/api/node/a/service".to_string()),
        (Method::GET, "/api/node/a/service/demo-web".to_string()),
        (Method::PUT, "/api/node/a/service/demo-web".to_string()),
        (Method::DELETE, "/api/node/a/service/demo-web".to_string()),
        (
            Method::POST,
            "/api/node/a/service/demo-web/stop".to_string(),
        ),
        (Method::GET, "/api/job".to_string()),
        (Method::GET, format!("/api/job/{id}")),
        (Method::DELETE, format!("/api/job/{id}")),
        (Method::POST, format!("/api/job/{id}/retry")),
    ] {
        for key in [None, Some("drv_not-a-key")] {
            let (st, headers, b) = call(m.clone(), &s.url(&path), key).await;
            assert_eq!(st, 401, "{m} {path}: {b}");
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert_error(st, &b);
        }
    }
}

#[tokio::test]
async fn bad_api_requests_are_refused_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = with_objects(dir.path());
    let admin = keys.admin.as_str();
    let create = |object: &str| format!(r#"{{"name":"x-app","object":{}}}"#, Value::from(object));
    // An object is a file name of --objects, never a path.
    for (object, says) in [
        ("../x-app.service", "is a path"),
        ("/etc/passwd", "is a path"),
        ("..", "starts with `.`"),
        (".", "starts with `.`"),
        ("", "empty"),
        ("sub/x", "is a path"),
        ("x app", "character"),
        ("nosuch.service", "no such file"),
    ] {
        for (m, path, body) in [
            (Method::POST, "/api/node/a/service", create(object)),
            (
                Method::PUT,
                "/api/node/a/service/x-app",
                format!(r#"{{"object":{}}}"#, Value::from(object)),
            ),
        ] {
            let (st, b) = send(&s, m.clone(), path, admin, Some(&body)).await;
            assert_eq!(st, 400, "{m} {object:?}: {b}");
            assert_error(st, &b);
            assert!(
                b["details"].as_str().unwrap().contains(says),
                "{object:?}: {b}"
            );
        }
    }
    // Bodies, roles, names and targets.
    let cases: [Case; 12] = [
        (
            Method::POST,
            "/api/node/a/service",
            admin,
            Some(r#"{"name":"x-app"}"#.into()),
            400,
            "object",
        ),
        (
            Method::POST,
            "/api/node/a/service",
            admin,
            Some(r#"{"name":"x-app","object":"x-app.service","mode":"0644"}"#.into()),
            400,
            "mode",
        ),
        (
            Method::POST,
            "/api/node/a/service",
            admin,
            Some("not json".into()),
            400,
            "body",
        ),
        (
            Method::POST,
            "/api/node/a/service",
            &keys.operate,
            Some(create("x-app.service")),
            403,
            "admin",
        ),
        (
            Method::DELETE,
            "/api/node/a/service/x-app",
            &keys.operate,
            None,
            403,
            "admin",
        ),
        (
            Method::POST,
            "/api/node/a/service",
            admin,
            Some(r#"{"name":"bad name;","object":"x-app.service"}"#.into()),
            400,
            "bad name",
        ),
        (
            Method::POST,
            "/api/node/a,,b/service",
            admin,
            Some(create("x-app.service")),
            400,
            "selector",
        ),
        (
            Method::POST,
            "/api/node/a/service/demo-web/reload",
            admin,
            None,
            404,
            "start, stop, restart, enable or disable",
        ),
        (
            Method::POST,
            "/api/node/a/service/demo-web/stop",
            &keys.read,
            None,
            403,
            "may not",
        ),
        // A protected unit: refused for every key (no allow_protected here).
        (
            Method::POST,
            "/api/node/b/service/demo-web/stop",
            &keys.operate,
            None,
            403,
            "",
        ),
        (
            Method::POST,
            "/api/node/b/service/demo-web/stop",
            admin,
            None,
            403,
            "protect",
        ),
        (
            Method::GET,
            "/api/node/nosuch/service",
            &keys.read,
            None,
            400,
            "nosuch",
        ),
    ];
    for (m, path, key, body, want, says) in cases {
        let (st, b) = send(&s, m.clone(), path, key, body.as_deref()).await;
        assert_eq!(st, want, "{m} {path}: {b}");
        assert_error(st, &b);
        assert!(
            b["details"].as_str().unwrap().contains(says),
            "{m} {path}: {b}"
        );
    }
    // Jobs: ids are UUIDs; list parameters within osapi's bounds.
    let unknown = "6f1c2d3e-0a4b-4c5d-8e9f-0a1b2c3d4e5f";
    for (m, path, key, want) in [
        (
            Method::GET,
            "/api/job/not-a-uuid".to_string(),
            &keys.read,
            400,
        ),
        (
            Method::DELETE,
            "/api/job/not-a-uuid".to_string(),
            &keys.operate,
            400,
        ),
        (
            Method::POST,
            "/api/job/not-a-uuid/retry".to_string(),
            &keys.operate,
            400,
        ),
        (Method::GET, format!("/api/job/{unknown}"), &keys.read, 404),
        (
            Method::DELETE,
            format!("/api/job/{unknown}"),
            &keys.operate,
            404,
        ),
        (
            Method::DELETE,
            format!("/api/job/{unknown}"),
            &keys.read,
            403,
        ),
        (
            Method::POST,
            format!("/api/job/{unknown}/retry"),
            &keys.operate,
            404,
        ),
        (
            Method::POST,
            format!("/api/job/{unknown}/retry"),
            &keys.read,
            403,
        ),
        (
            Method::GET,
            "/api/job?status=running".to_string(),
            &keys.read,
            400,
        ),
        (Method::GET, "/api/job?limit=0".to_string(), &keys.read, 400),
        (
            Method::GET,
            "/api/job?limit=101".to_string(),
            &keys.read,
            400,
        ),
        (
            Method::GET,
            "/api/job?offset=-1".to_string(),
            &keys.read,
            400,
        ),
        (
            Method::GET,
            "/api/job?limit=ten".to_string(),
            &keys.read,
            400,
        ),
        (Method::GET, "/api/job?page=2".to_string(), &keys.read, 400),
    ] {
        let (st, b) = send(&s, m.clone(), &path, key, None).await;
        assert_eq!(st, want, "{m} {path}: {b}");
        assert_error(st, &b);
    }
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{unknown}/retry"),
        &keys.operate,
        Some(r#"{"target_hostname":"a,,"}"#),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    // Nothing ran: no job was recorded.
    let (st, b) = send(&s, Method::GET, "/api/job", &keys.admin, None).await;
    assert_eq!((st, b["total_items"].as_u64()), (200, Some(0)), "{b}");
}

#[tokio::test]
async fn a_server_without_objects_says_how_to_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let (st, b) = send(
        &s,
        Method::POST,
        "/api/node/a/service",
        &keys.admin,
        Some(r#"{"name":"x-app","object":"x-app.service"}"#),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert!(b["details"].as_str().unwrap().contains("--objects"), "{b}");
}

/// Hosts that cannot be reached are `failed` entries with their error, in
/// osapi's shapes; their jobs are listed, counted, shown and deleted.
#[tokio::test]
async fn unreachable_hosts_are_failed_entries_and_their_jobs_osapi_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = with_objects(dir.path());
    let (st, b) = send(&s, Method::GET, "/api/node/_all/service", &keys.read, None).await;
    assert_eq!(st, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{b}");
    for (r, h) in results.iter().zip(["a", "b"]) {
        assert_eq!(r["hostname"], h);
        assert_eq!(r["status"], "failed");
        assert!(r["error"].is_string() && r.get("services").is_none(), "{r}");
    }
    let (st, b) = send(
        &s,
        Method::GET,
        "/api/node/a/service/demo-web",
        &keys.read,
        None,
    )
    .await;
    assert_eq!(
        (st, b["results"][0]["status"].as_str()),
        (200, Some("failed")),
        "{b}"
    );
    // A change: each host failed, the job named.
    let (st, b) = send(
        &s,
        Method::POST,
        "/api/node/role:web/service/demo-worker/restart",
        &keys.operate,
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let entry = &b["results"][0];
    assert_eq!(
        (entry["hostname"].as_str(), entry["status"].as_str()),
        (Some("a"), Some("failed")),
        "{b}"
    );
    assert_eq!(entry["name"], "demo-worker", "the name as sent: {b}");
    assert!(
        entry.get("changed").is_none() && entry["error"].is_string(),
        "{b}"
    );
    let id = b["job_id"].as_str().unwrap().to_string();
    // Creating a unit file: read first, so no job runs where no host answered.
    let (st, b) = send(
        &s,
        Method::POST,
        "/api/node/_all/service",
        &keys.admin,
        Some(r#"{"name":"x-app","object":"x-app.service"}"#),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.get("job_id").is_none(), "{b}");
    assert_eq!(b["results"].as_array().unwrap().len(), 2, "{b}");
    assert!(
        b["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "failed"),
        "{b}"
    );
    // The job as osapi shows it.
    let (st, job) = send(&s, Method::GET, &format!("/api/job/{id}"), &keys.read, None).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(
        (job["id"].as_str(), job["status"].as_str()),
        (Some(id.as_str()), Some("failed")),
        "{job}"
    );
    assert_eq!(job["hostname"], "a", "one host: {job}");
    assert_eq!(job["changed"], false, "{job}");
    assert!(job["error"].as_str().unwrap().starts_with("a: "), "{job}");
    assert_eq!(job["responses"]["a"]["status"], "failed", "{job}");
    assert_eq!(
        job["responses"]["a"]["data"][0]["kind"], "unreachable",
        "{job}"
    );
    let (st, list) = send(&s, Method::GET, "/api/job?status=failed", &keys.read, None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["total_items"], 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["status_counts"]["failed"], 1, "{list}");
    for w in ["submitted", "processing", "completed", "partial_failure"] {
        assert_eq!(list["status_counts"][w], 0, "{w}: {list}");
    }
    let (st, list) = send(
        &s,
        Method::GET,
        "/api/job?status=completed",
        &keys.read,
        None,
    )
    .await;
    assert_eq!((st, list["total_items"].as_u64()), (200, Some(0)), "{list}");
    // Not retried: an ad-hoc job has no runbook to run again.
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{id}/retry"),
        &keys.operate,
        Some("{}"),
    )
    .await;
    assert_eq!(st, 409, "{b}");
    // Deleted: gone from the list and the directory.
    let report = dir.path().join("jobs").join(format!("{id}.json"));
    assert!(report.exists());
    let (st, b) = send(
        &s,
        Method::DELETE,
        &format!("/api/job/{id}"),
        &keys.operate,
        None,
    )
    .await;
    assert_eq!(st, 204, "{b}");
    assert!(!report.exists(), "the report is deleted");
    let (st, _) = send(&s, Method::GET, &format!("/api/job/{id}"), &keys.read, None).await;
    assert_eq!(st, 404);
    let (st, _) = send(
        &s,
        Method::DELETE,
        &format!("/api/job/{id}"),
        &keys.operate,
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (_, list) = send(&s, Method::GET, "/api/job", &keys.read, None).await;
    assert_eq!(list["total_items"], 0, "{list}");
}
