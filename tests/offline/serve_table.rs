//! Every route × {no key, read, operate scoped to `role:web`, admin} ×
//! {inside, outside the scoped key's targets}: the status each answers.
//! Host `a` (role web) is inside, `b` (role db) outside; the node routes
//! run against a server whose `--node` is `a` (inside) or `b` (outside).
//! The hosts cannot be reached, so a read answers 200 with the host's
//! error (503 where the route stands in for an agent that is down) and a
//! change 200 with the host failed (Consul's maintenance reads the node
//! first: 503): what is checked is who may do what.

use crate::serve::start_with;
use crate::server;

use reqwest::Method;
use server::{client, Keys, Server};

/// Expected statuses: no key, read, scoped inside, scoped outside, admin.
/// The read and admin keys have no targets: inside and outside alike.
struct Row {
    method: &'static str,
    /// `{h}`: the host; `{job}`: a job on it.
    path: &'static str,
    body: &'static str,
    /// Answered by the `--node` host: inside/outside is the server's node.
    node: bool,
    expect: [u16; 5],
}

const fn row(method: &'static str, path: &'static str, expect: [u16; 5]) -> Row {
    Row {
        method,
        path,
        body: "",
        node: false,
        expect,
    }
}

const fn node(
    method: &'static str,
    path: &'static str,
    body: &'static str,
    expect: [u16; 5],
) -> Row {
    Row {
        method,
        path,
        body,
        node: true,
        expect,
    }
}

/// A non-node route with a body.
const fn body(
    method: &'static str,
    path: &'static str,
    body: &'static str,
    expect: [u16; 5],
) -> Row {
    Row {
        method,
        path,
        body,
        node: false,
        expect,
    }
}

const ROWS: &[Row] = &[
    row("GET", "/node/{h}/service", [401, 200, 200, 403, 200]),
    row(
        "GET",
        "/node/{h}/service/demo-worker",
        [401, 200, 200, 403, 200],
    ),
    row(
        "POST",
        "/node/{h}/service/demo-worker/restart",
        [401, 403, 200, 403, 200],
    ),
    row(
        "POST",
        "/node/{h}/service/demo-worker/restart?dry_run=true",
        [401, 200, 200, 403, 200],
    ),
    row("GET", "/job", [401, 200, 200, 200, 200]),
    row("GET", "/job/{job}", [401, 200, 200, 404, 200]),
    row("GET", "/job/{job}/events", [401, 200, 200, 404, 200]),
    // The job has ended: 409 for those who may cancel it.
    row("POST", "/job/{job}/cancel", [401, 403, 409, 404, 409]),
    // osapi's routes: reads for every key, changes for operate keys, unit
    // files for admin keys; a scoped key neither reaches nor sees `b`.
    row("GET", "/api/node/{h}/service", [401, 200, 200, 403, 200]),
    row(
        "GET",
        "/api/node/{h}/service/demo-worker",
        [401, 200, 200, 403, 200],
    ),
    row(
        "POST",
        "/api/node/{h}/service/demo-worker/restart",
        [401, 403, 200, 403, 200],
    ),
    body(
        "POST",
        "/api/node/{h}/service",
        r#"{"name":"x-app","object":"x-app.service"}"#,
        [401, 403, 403, 403, 200],
    ),
    body(
        "PUT",
        "/api/node/{h}/service/x-app",
        r#"{"object":"x-app.service"}"#,
        [401, 403, 403, 403, 200],
    ),
    row(
        "DELETE",
        "/api/node/{h}/service/x-app",
        [401, 403, 403, 403, 200],
    ),
    row("GET", "/api/job", [401, 200, 200, 200, 200]),
    row("GET", "/api/job/{job}", [401, 200, 200, 404, 200]),
    // An ad-hoc job: no runbook to run again.
    row("POST", "/api/job/{job}/retry", [401, 403, 409, 404, 409]),
    row("GET", "/runbook", [401, 200, 200, 200, 200]),
    row("POST", "/runbook/restart-{h}", [401, 403, 200, 403, 200]),
    row("POST", "/reload", [401, 403, 403, 403, 200]),
    row("GET", "/audit", [401, 403, 403, 403, 200]),
    row("GET", "/openapi.json", [401, 200, 200, 200, 200]),
    row("GET", "/health", [200, 200, 200, 200, 200]),
    // No route panics on request in the binary (the panic's 500 is proven
    // by a unit test of the layers).
    row("GET", "/debug/panic", [401, 404, 404, 404, 404]),
    // The page answers its login form to whoever has no session.
    row("GET", "/", [200, 200, 200, 200, 200]),
    // A bearer key has no session to end (and no cookie for a CSRF token
    // to guard): back to the page.
    row("POST", "/logout", [401, 303, 303, 303, 303]),
    node("GET", "/v1/local/services", "", [401, 503, 503, 403, 503]),
    node(
        "POST",
        "/v1/local/services",
        r#"{"operation_type":"start","services":["demo-worker"]}"#,
        [401, 403, 200, 403, 200],
    ),
    // Every host: `b` is outside the scoped key's targets, wherever the node.
    node(
        "POST",
        "/v1/services",
        r#"{"operation_type":"start","services":["demo-worker"]}"#,
        [401, 403, 403, 403, 200],
    ),
    node("GET", "/v1/agent/services", "", [401, 503, 503, 403, 503]),
    node(
        "GET",
        "/v1/agent/service/demo-worker",
        "",
        [401, 503, 503, 403, 503],
    ),
    node(
        "GET",
        "/v1/agent/health/service/name/demo-worker",
        "",
        [401, 503, 503, 403, 503],
    ),
    node(
        "GET",
        "/v1/agent/health/service/id/demo-worker",
        "",
        [401, 503, 503, 403, 503],
    ),
    node(
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name":"x-app","Content":"[Service]\nExecStart=/bin/true\n"}"#,
        [401, 403, 403, 403, 200],
    ),
    node(
        "PUT",
        "/v1/agent/service/deregister/x-app",
        "",
        [401, 403, 403, 403, 200],
    ),
    node(
        "PUT",
        "/v1/agent/service/maintenance/demo-worker?enable=true&reason=table",
        "",
        // The node is read first: unreachable, the agent is down.
        [401, 403, 503, 403, 503],
    ),
];

struct Side {
    server: Server,
    keys: Keys,
    host: &'static str,
    job: String,
}

async fn send(s: &Server, row: &Row, path: &str, key: Option<&str>) -> (u16, String) {
    let mut r = client().request(row.method.parse::<Method>().unwrap(), s.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if !row.body.is_empty() {
        r = r
            .header("content-type", "application/json")
            .body(row.body.to_string());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    // An event stream of an ended job ends: read it whole.
    (status, resp.text().await.unwrap_or_default())
}

/// A server with `--node HOST`, runbooks `restart-a` and `restart-b`, an
/// audit file, an object `x-app.service`, and one ended job on HOST.
async fn side(dir: &std::path::Path, host: &'static str) -> Side {
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    for (h, role) in [("a", "web"), ("b", "db")] {
        std::fs::write(
            books.join(format!("restart-{h}.yml")),
            format!("name: restart {h}\nsteps:\n  - id: restart\n    target: role:{role}\n    service: {{ name: demo-worker, state: restarted }}\n"),
        )
        .unwrap();
    }
    let audit = dir.join("audit.log");
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(
        objects.join("x-app.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let (server, keys) = start_with(
        dir,
        "",
        &[
            "--node",
            host,
            "--audit",
            audit.to_str().unwrap(),
            "--objects",
            objects.to_str().unwrap(),
        ],
    );
    let job = restart(&server, &keys, host).await;
    Side {
        server,
        keys,
        host,
        job,
    }
}

#[tokio::test]
async fn every_route_by_key_and_target_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let inside = side(&dir.path().join("a"), "a").await;
    let outside = side(&dir.path().join("b"), "b").await;
    let job_on_b = restart(&inside.server, &inside.keys, "b").await;
    let mut wrong = Vec::new();
    for row in ROWS {
        for (side, is_inside) in [(&inside, true), (&outside, false)] {
            // Non-node routes run on the inside server, with host `b` and
            // its job for "outside".
            let (server, keys) = if row.node {
                (&side.server, &side.keys)
            } else {
                (&inside.server, &inside.keys)
            };
            let job = if row.node || is_inside {
                &inside.job
            } else {
                &job_on_b
            };
            let path = row.path.replace("{h}", side.host).replace("{job}", job);
            let cases: [(Option<&str>, u16); 4] = [
                (None, row.expect[0]),
                (Some(&keys.read), row.expect[1]),
                (
                    Some(&keys.limited),
                    row.expect[if is_inside { 2 } else { 3 }],
                ),
                (Some(&keys.admin), row.expect[4]),
            ];
            for (i, (key, want)) in cases.into_iter().enumerate() {
                let (got, body) = send(server, row, &path, key).await;
                if got != want {
                    let who = ["no key", "read", "scoped", "admin"][i];
                    let side = if is_inside { "inside" } else { "outside" };
                    wrong.push(format!(
                        "{} {path} ({who}, {side}): {got}, expected {want}: {}",
                        row.method,
                        body.chars().take(200).collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// An admin's restart on `host`, ended: its job id.
async fn restart(server: &Server, keys: &Keys, host: &str) -> String {
    let resp = client()
        .post(server.url(&format!("/node/{host}/service/demo-worker/restart")))
        .bearer_auth(&keys.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    report["job_id"].as_str().unwrap().to_string()
}
