//! `drover serve` as its clients use it, with no lab: a real server on a
//! loopback port and a real HTTP client. Its hosts cannot be reached (a
//! bus socket that does not exist), which is all the routes below need:
//! keys, roles, validation and errors are decided before any connection,
//! and a host's failure is a 200 with that host failed. The routes that
//! change hosts are tested against the lab in `tests/lab/serve.rs`.

use crate::server;

use reqwest::Method;
use server::{assert_error, call, client, Keys, Server};

/// Two hosts that fail at once (their bus does not exist); `b` protects
/// demo-web.
pub(crate) fn offline(dir: &std::path::Path) -> (std::path::PathBuf, Keys) {
    offline_with(dir, "")
}

/// The same, with `more_hosts` (inventory YAML under `hosts:`) added.
pub(crate) fn offline_with(dir: &std::path::Path, more_hosts: &str) -> (std::path::PathBuf, Keys) {
    let inv = dir.join("inventory.yml");
    std::fs::write(
        &inv,
        format!("defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-test-bus\nhosts:\n  a:\n    labels: {{ role: web }}\n  b:\n    labels: {{ role: db }}\n    protected: [demo-web.service]\n{more_hosts}"),
    )
    .unwrap();
    let keys = Keys::make(dir, "role:web");
    (inv, keys)
}

pub(crate) fn start(dir: &std::path::Path, extra: &[&str]) -> (Server, Keys) {
    start_with(dir, "", extra)
}

/// A server over [`offline_with`]'s inventory, with the runbook
/// `restart-web` in `dir/books`.
pub(crate) fn start_with(
    dir: &std::path::Path,
    more_hosts: &str,
    extra: &[&str],
) -> (Server, Keys) {
    start_full(dir, more_hosts, extra, |_| {})
}

/// As [`start`], with `prepare` adjusting the server's command.
pub(crate) fn start_prepared(
    dir: &std::path::Path,
    extra: &[&str],
    prepare: impl FnOnce(&mut std::process::Command),
) -> (Server, Keys) {
    start_full(dir, "", extra, prepare)
}

fn start_full(
    dir: &std::path::Path,
    more_hosts: &str,
    extra: &[&str],
    prepare: impl FnOnce(&mut std::process::Command),
) -> (Server, Keys) {
    let (inv, keys) = offline_with(dir, more_hosts);
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("restart-web.yml"),
        "name: restart web\nsteps:\n  - id: restart\n    target: role:web\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    let jobs = dir.join("jobs");
    let mut args = vec![
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--playbooks",
        books.to_str().unwrap(),
        "--jobs-dir",
        jobs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let stderr = dir.join("stderr");
    (
        Server::start_prepared("http", &args, &stderr, prepare),
        keys,
    )
}

#[tokio::test]
async fn every_route_but_health_needs_a_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let (status, _, body) = call(Method::GET, &s.url("/health"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let routes = [
        (Method::GET, "/node/_all/service"),
        (Method::GET, "/node/a/service/demo-web"),
        (Method::POST, "/node/a/service/demo-web/restart"),
        (Method::GET, "/job"),
        (Method::GET, "/job/x"),
        (Method::GET, "/job/x/events"),
        (Method::POST, "/job/x/cancel"),
        (Method::GET, "/runbook"),
        (Method::POST, "/runbook/restart-web"),
        (Method::POST, "/reload"),
        (Method::GET, "/audit"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/no/such/route"),
    ];
    for (m, path) in routes {
        for key in [None, Some("drv_not-a-key"), Some("")] {
            let (status, headers, body) = call(m.clone(), &s.url(path), key).await;
            assert_eq!(status, 401, "{m} {path} with {key:?}: {body}");
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert_error(status, &body);
        }
    }
    // A known key in a scheme other than Bearer is no key.
    let resp = client()
        .get(s.url("/job"))
        .header("Authorization", format!("Basic {}", keys.read))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Consul's clients send X-Consul-Token.
    let resp = client()
        .get(s.url("/job"))
        .header("X-Consul-Token", &keys.read)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn roles_and_targets_decide_403_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let post = |path: &str, key: &str| {
        let (url, key) = (s.url(path), key.to_string());
        async move { call(Method::POST, &url, Some(&key)).await }
    };
    // read: GETs and dry runs only.
    let (st, _, b) = post("/node/a/service/demo-web/restart", &keys.read).await;
    assert_eq!(st, 403, "{b}");
    assert_error(st, &b);
    assert!(
        !b["details"].as_str().unwrap().contains("operate"),
        "never lists the key's permissions: {b}"
    );
    let (st, _, b) = post("/node/a/service/demo-web/restart?dry_run=true", &keys.read).await;
    assert_eq!(st, 200, "a read key may dry-run: {b}");
    assert_eq!(b["schema"], "drover.plan/1");
    let (st, _, _) = post("/runbook/restart-web", &keys.read).await;
    assert_eq!(st, 403);
    let (st, _, _) = post("/job/x/cancel", &keys.read).await;
    assert_eq!(st, 403);
    // operate limited to role:web: host b is outside.
    let (st, _, outside) = post("/node/b/service/demo-worker/restart", &keys.limited).await;
    assert_eq!(st, 403, "{outside}");
    let (st, _, b) = post("/node/_all/service/demo-worker/restart", &keys.limited).await;
    assert_eq!(st, 403, "_all reaches b: {b}");
    let (st, _, b) = call(Method::GET, &s.url("/node/b/service"), Some(&keys.limited)).await;
    assert_eq!(st, 403, "{b}");
    // For it, a host that does not exist, a label outside its targets and
    // a label matching nothing answer as a host outside them does: the
    // same 403 and words, so its answers do not tell which hosts exist.
    for (method, path) in [
        (Method::POST, "/node/nosuch/service/demo-worker/restart"),
        (Method::POST, "/node/role:db/service/demo-worker/restart"),
        (
            Method::POST,
            "/node/role:nosuch/service/demo-worker/restart",
        ),
        (Method::GET, "/node/b/service"),
        (Method::GET, "/node/nosuch/service"),
        (Method::GET, "/node/role:nosuch/service/demo-web"),
    ] {
        let (st, _, b) = call(method, &s.url(path), Some(&keys.limited)).await;
        assert_eq!((st, &b), (403, &outside), "{path}");
    }
    assert!(!outside.to_string().contains("`b`"), "{outside}");
    // An unscoped key still learns that a host does not exist (400).
    let (st, _, b) = call(
        Method::GET,
        &s.url("/node/nosuch/service"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    // Errors and plans over HTTP name no path of the server's.
    let server_dir = dir.path().to_str().unwrap();
    assert!(!b.to_string().contains(server_dir), "{b}");
    let (st, _, b) = post("/runbook/restart-web?dry_run=true", &keys.read).await;
    assert_eq!(st, 200, "{b}");
    assert!(!b.to_string().contains(server_dir), "{b}");
    assert_eq!(b["inventory"]["path"], "inventory.yml", "{b}");
    // ... but `_any` picks only among its hosts: a, whose failure is a
    // host result, not an HTTP error.
    let (st, _, b) = post("/node/_any/service/demo-worker/restart", &keys.limited).await;
    assert_eq!(st, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{b}");
    assert_eq!(results[0]["hostname"], "a");
    assert_eq!(results[0]["status"], "failed");
    // Protected units: operate keys never; admin only with allow_protected.
    let (st, _, b) = post("/node/b/service/demo-web/restart", &keys.operate).await;
    assert_eq!(st, 403, "{b}");
    let (st, _, b) = post(
        "/node/b/service/demo-web/restart?allow_protected=true",
        &keys.operate,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    let (st, _, b) = post("/node/b/service/demo-web/restart", &keys.admin).await;
    assert_eq!(st, 403, "{b}");
    assert!(b["details"].as_str().unwrap().contains("protect"), "{b}");
    let (st, _, b) = post(
        "/node/b/service/demo-web/restart?allow_protected=true",
        &keys.admin,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["status"], "failed", "{b}");
    assert_eq!(b["results"][0]["kind"], "unreachable", "{b}");
    // admin-only routes.
    for key in [&keys.read, &keys.operate] {
        assert_eq!(call(Method::GET, &s.url("/audit"), Some(key)).await.0, 403);
        assert_eq!(
            call(Method::POST, &s.url("/reload"), Some(key)).await.0,
            403
        );
    }
    assert_eq!(
        call(Method::GET, &s.url("/audit"), Some(&keys.admin))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn bad_requests_are_400_or_404_and_start_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &["--rate-limit", "0"]);
    let k = Some(keys.operate.as_str());
    let cases = [
        ("/node/nosuch/service/demo-web/restart", 400, "nosuch"),
        ("/node/%20/service/demo-web/restart", 400, "selector"),
        ("/node/a/service/bad%20name;/restart", 400, "bad name"),
        ("/node/a/service/demo-web/explode", 400, "explode"),
        ("/node/a/service/demo-web/restart?wait=forever", 400, "wait"),
        ("/node/a/service/demo-web/restart?wait=11m", 400, "10m"),
        ("/node/a/service/demo-web/restart?bogus=1", 400, "bogus"),
        (
            "/node/a/service/demo-web/restart?dry_run=maybe",
            400,
            "dry_run",
        ),
        ("/runbook/..%2Fetc%2Fpasswd", 400, "runbook name"),
        ("/runbook/nosuch", 404, "nosuch"),
        ("/runbook/restart-web?limit=role:nosuch", 400, "limit"),
        ("/job/nosuch/cancel", 404, "nosuch"),
    ];
    for (path, want, mentions) in cases {
        let (st, _, b) = call(Method::POST, &s.url(path), k).await;
        assert_eq!(st, want, "{path}: {b}");
        assert_error(st, &b);
        assert!(
            b["details"].as_str().unwrap().contains(mentions),
            "{path}: {b}"
        );
    }
    for path in ["/job/nosuch", "/job/nosuch/events", "/nowhere"] {
        let (st, _, b) = call(Method::GET, &s.url(path), k).await;
        assert_eq!(st, 404, "{path}: {b}");
        assert_error(st, &b);
    }
    let (st, _, b) = call(Method::GET, &s.url("/job?status=sleeping"), k).await;
    assert_eq!(st, 400, "{b}");
    let (st, _, b) = call(Method::DELETE, &s.url("/job"), k).await;
    assert_eq!(st, 405, "{b}");
    assert_error(st, &b);
    // Bodies: wrong types, unknown fields, not UTF-8, over 1 MiB.
    let send = |body: Vec<u8>| {
        let url = s.url("/runbook/restart-web");
        let key = keys.operate.clone();
        async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    for body in [
        br#"{"limit": 42}"#.to_vec(),
        br#"{"limit": "a", "vars": {}}"#.to_vec(),
        br#"{"limit": "#.to_vec(),
        b"{\"limit\": \"\xff\xfe\"}".to_vec(),
    ] {
        let (st, b) = send(body.clone()).await;
        assert_eq!(st, 400, "{}: {b}", String::from_utf8_lossy(&body));
        assert_error(st, &b);
    }
    let mut huge = br#"{"limit": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 10));
    huge.extend(br#""}"#);
    let (st, b) = send(huge).await;
    assert_eq!(st, 413, "{b}");
    assert_error(st, &b);
    let (_, _, jobs) = call(Method::GET, &s.url("/job"), k).await;
    assert_eq!(jobs, serde_json::json!([]), "no bad request started a job");
}

#[tokio::test]
async fn a_host_failure_is_200_and_the_job_is_listed_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let k = Some(keys.operate.as_str());
    let (st, headers, b) = call(
        Method::POST,
        &s.url("/node/_all/service/demo-worker/stop"),
        k,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let id = b["job_id"].as_str().unwrap().to_string();
    assert!(headers.get("location").is_none());
    let hosts: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["a", "b"]);
    for r in b["results"].as_array().unwrap() {
        assert_eq!(r["status"], "failed");
        assert!(
            r["error"].as_str().unwrap().starts_with("unreachable"),
            "{r}"
        );
    }
    // The report in the jobs dir is the one answered.
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("jobs").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["results"], b["results"]);
    let (st, _, job) = call(Method::GET, &s.url(&format!("/job/{id}")), k).await;
    assert_eq!(st, 200);
    assert_eq!(job["outcome"], "completed");
    let (_, _, list) = call(Method::GET, &s.url("/job?status=completed&limit=5"), k).await;
    assert_eq!(list[0]["job_id"], id.as_str());
    let (_, _, none) = call(Method::GET, &s.url("/job?status=running"), k).await;
    assert_eq!(none, serde_json::json!([]));
    // A finished job's events: every result, then done.
    let text = client()
        .get(s.url(&format!("/job/{id}/events")))
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events, ["result", "result", "done"], "{text}");
    // Cancelling a finished job is a conflict.
    let (st, _, b) = call(Method::POST, &s.url(&format!("/job/{id}/cancel")), k).await;
    assert_eq!(st, 409, "{b}");
}

#[tokio::test]
async fn runbooks_are_listed_with_their_steps_and_dry_run_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let (st, _, b) = call(Method::GET, &s.url("/runbook"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b[0]["name"], "restart-web", "{b}");
    assert_eq!(b[0]["title"], "restart web", "{b}");
    assert_eq!(b[0]["steps"][0]["id"], "restart", "{b}");
    assert_eq!(b[0]["steps"][0]["target"][0], "role:web", "{b}");
    assert_eq!(b[0]["steps"][0]["module"], "service", "{b}");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/runbook/restart-web?dry_run=true"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["schema"], "drover.plan/1", "{b}");
    assert_eq!(b["name"], "restart web", "{b}");
}

#[tokio::test]
async fn mutations_are_rate_limited_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &["--rate-limit", "2"]);
    let url = s.url("/node/a/service/demo-worker/restart");
    assert_eq!(call(Method::POST, &url, Some(&keys.operate)).await.0, 200);
    assert_eq!(call(Method::POST, &url, Some(&keys.operate)).await.0, 200);
    let (st, headers, b) = call(Method::POST, &url, Some(&keys.operate)).await;
    assert_eq!(st, 429, "{b}");
    assert_error(st, &b);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another key, reads and dry runs are not limited by this one.
    assert_eq!(call(Method::POST, &url, Some(&keys.admin)).await.0, 200);
    let dry = format!("{url}?dry_run=true");
    assert_eq!(call(Method::POST, &dry, Some(&keys.operate)).await.0, 200);
    assert_eq!(
        call(Method::GET, &s.url("/job"), Some(&keys.operate))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_audit_log_names_keys_and_never_holds_one() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (s, keys) = start(dir.path(), &["--audit", audit.to_str().unwrap()]);
    call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    call(
        Method::POST,
        &s.url("/node/a/service/demo-worker/restart?dry_run=true"),
        Some(&keys.operate),
    )
    .await;
    let (_, _, b) = call(
        Method::POST,
        &s.url("/node/a/service/demo-worker/restart"),
        Some(&keys.operate),
    )
    .await;
    call(Method::GET, &s.url("/job"), Some("drv_unknown")).await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "unauthenticated requests are not audited as a key: {text}"
    );
    assert_eq!(lines[0]["key"], "ci-preview");
    assert_eq!(lines[0]["role"], "read");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["dry_run"], true);
    assert_eq!(lines[2]["job_id"], b["job_id"]);
    for l in &lines {
        for f in [
            "time",
            "key",
            "role",
            "method",
            "path",
            "status",
            "dry_run",
            "duration_ms",
            "peer",
        ] {
            assert!(!l[f].is_null(), "{f} missing in {l}");
        }
    }
    let (_, _, recent) = call(Method::GET, &s.url("/audit"), Some(&keys.admin)).await;
    assert_eq!(recent[0]["key"], "oncall", "newest first: {recent}");
    let log = s.log();
    for k in [&keys.admin, &keys.operate, &keys.read, &keys.limited] {
        assert!(
            !text.contains(k.as_str()) && !log.contains(k.as_str()),
            "a key leaked"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_is_served_shipped_and_generated_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let (st, _, served) = call(Method::GET, &s.url("/openapi.json"), Some(&keys.read)).await;
    assert_eq!(st, 200);
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        served == shipped,
        "schema/openapi.json is stale: regenerate it with `drover serve openapi > schema/openapi.json`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    // Every route the server answers is documented.
    for p in [
        "/node/{target}/service/{name}/{action}",
        "/node/{target}/service",
        "/node/{target}/service/{name}",
        "/job",
        "/job/{id}",
        "/job/{id}/events",
        "/job/{id}/cancel",
        "/runbook",
        "/runbook/{name}",
        "/health",
        "/reload",
        "/audit",
        "/openapi.json",
        "/api/node/{hostname}/service",
        "/api/node/{hostname}/service/{name}",
        "/api/node/{hostname}/service/{name}/{action}",
        "/api/job",
        "/api/job/{id}",
        "/api/job/{id}/retry",
    ] {
        assert!(served["paths"][p].is_object(), "{p} is not documented");
    }
}

#[tokio::test]
async fn reload_keeps_the_old_files_when_the_new_ones_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let good = std::fs::read_to_string(&keys.file).unwrap();
    // Drop the read key: after a reload it no longer works.
    let without_read: String = {
        let mut out = String::new();
        let mut skip = false;
        for l in good.lines() {
            if l.starts_with("  - ") {
                skip = l.contains("ci-preview");
            }
            if !skip {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    };
    std::fs::write(&keys.file, &without_read).unwrap();
    let (st, _, b) = call(Method::POST, &s.url("/reload"), Some(&keys.admin)).await;
    assert_eq!((st, b["keys"].as_u64()), (200, Some(3)), "{b}");
    assert_eq!(
        call(Method::GET, &s.url("/job"), Some(&keys.read)).await.0,
        401
    );
    // An invalid file: 400 naming it, and the loaded keys stay.
    std::fs::write(
        &keys.file,
        "keys:\n  - name: x\n    sha256: nothex\n    role: read\n",
    )
    .unwrap();
    let (st, _, b) = call(Method::POST, &s.url("/reload"), Some(&keys.admin)).await;
    assert_eq!(st, 400, "{b}");
    assert!(b["details"].as_str().unwrap().contains("sha256"), "{b}");
    assert_eq!(
        call(Method::GET, &s.url("/job"), Some(&keys.operate))
            .await
            .0,
        200
    );
    // SIGHUP reloads too.
    std::fs::write(&keys.file, &good).unwrap();
    s.signal(libc::SIGHUP);
    let mut ok = false;
    for _ in 0..200 {
        if call(Method::GET, &s.url("/job"), Some(&keys.read)).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ok, "SIGHUP did not reload the keys: {}", s.log());
}

#[tokio::test]
async fn tls_unix_sockets_and_the_loopback_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (inv, keys) = offline(dir.path());
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let jobs = dir.path().join("jobs");
    let base = [
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--jobs-dir",
        jobs.to_str().unwrap(),
    ];
    // TLS: a client trusting the certificate gets answers; plain HTTP
    // gets nothing.
    let mut args = base.to_vec();
    args.extend([
        "--tls-cert",
        cert_pem.to_str().unwrap(),
        "--tls-key",
        key_pem.to_str().unwrap(),
    ]);
    let s = Server::start_scheme("https", &args, &dir.path().join("tls.err"));
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = s.url("/job").replace("127.0.0.1", "localhost");
    let r = tls.get(&url).bearer_auth(&keys.read).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(client()
        .get(s.url("/job").replace("https", "http"))
        .send()
        .await
        .is_err());
    drop(s);
    // Not loopback without TLS: refused unless --insecure-http.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--listen", "0.0.0.0:0"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("serve")
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
    args.push("--insecure-http");
    let s = Server::start(&args, &dir.path().join("insecure.err"));
    assert!(s.log().contains("in clear"), "{}", s.log());
    drop(s);
    // A unix socket.
    let sock = dir.path().join("drover.sock");
    let listen = format!("unix:{}", sock.display());
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--listen", &listen]);
    let s = Server::start(&args, &dir.path().join("unix.err"));
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    use std::io::{Read, Write};
    write!(
        c,
        "GET /job HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        keys.read
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(s.stop(), 0, "SIGTERM is a clean exit");
    assert!(!sock.exists(), "the socket is removed at exit");
}

#[test]
fn keygen_prints_a_key_once_and_an_entry_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), "role:web");
    let text = std::fs::read_to_string(&keys.file).unwrap();
    assert!(
        !text.contains(&keys.admin),
        "the file holds digests, never keys"
    );
    assert!(keys.admin.starts_with("drv_") && keys.admin.len() > 40);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "keygen", "--name", "x", "--role", "boss"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read, operate or admin"));
}

/// A runbook whose window is closed: 403 in HTTP's words (no command-line
/// flag in them); `?ignore_window=true` is an admin's, and runs it.
#[tokio::test]
async fn a_closed_window_is_refused_in_http_words_and_admin_may_ignore_it() {
    let dir = tempfile::tempdir().unwrap();
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    // A window that never opens: start == end.
    std::fs::write(
        books.join("closed.yml"),
        "name: closed\nwindow: { start: \"00:00\", end: \"00:00\", tz: UTC }\nsteps:\n  - id: restart\n    target: a\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let (st, _, b) = call(Method::POST, &s.url("/runbook/closed"), Some(&keys.operate)).await;
    assert_eq!(st, 403, "{b}");
    assert_error(st, &b);
    let details = b["details"].as_str().unwrap();
    assert!(details.contains("outside the window"), "{b}");
    assert!(details.contains("?ignore_window=true"), "{b}");
    assert!(!details.contains("--ignore-window"), "{b}");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/runbook/closed?ignore_window=true"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert!(b["details"].as_str().unwrap().contains("admin"), "{b}");
    // The admin's run goes on to the host, which cannot be reached: a
    // report (200), not a refusal.
    let (st, _, b) = call(
        Method::POST,
        &s.url("/runbook/closed?ignore_window=true"),
        Some(&keys.admin),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["hostname"], "a", "{b}");
}

/// A key scoped to `role:web` (host `a`) sees, follows and cancels only
/// jobs whose hosts are all inside its targets: a job on `b` is, for it,
/// a job that does not exist (404, as an unknown id), and it is not
/// listed. Unscoped and admin keys see every job.
#[tokio::test]
async fn a_scoped_key_sees_and_cancels_only_jobs_inside_its_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &[]);
    let post = |path: &str, key: &str| {
        let (url, key) = (s.url(path), key.to_string());
        async move { call(Method::POST, &url, Some(&key)).await }
    };
    let (st, _, on_b) = post("/node/b/service/demo-worker/restart", &keys.admin).await;
    assert_eq!(st, 200, "{on_b}");
    let (st, _, on_a) = post("/node/a/service/demo-worker/restart", &keys.limited).await;
    assert_eq!(st, 200, "{on_a}");
    let (id_b, id_a) = (
        on_b["job_id"].as_str().unwrap().to_string(),
        on_a["job_id"].as_str().unwrap().to_string(),
    );
    let ids = |b: &serde_json::Value| -> Vec<String> {
        b.as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, _, b) = call(Method::GET, &s.url("/job"), Some(&keys.limited)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(ids(&b), std::slice::from_ref(&id_a), "{b}");
    let (_, _, b) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert!(ids(&b).contains(&id_b) && ids(&b).contains(&id_a), "{b}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    for path in ["", "/events"] {
        let (st, _, hidden) = call(
            Method::GET,
            &s.url(&format!("/job/{id_b}{path}")),
            Some(&keys.limited),
        )
        .await;
        let (st2, _, none) = call(
            Method::GET,
            &s.url(&format!("/job/{unknown}{path}")),
            Some(&keys.limited),
        )
        .await;
        assert_eq!((st, st2), (404, 404), "{hidden} {none}");
        assert_eq!(
            hidden["details"].as_str().unwrap().replace(&id_b, "ID"),
            none["details"].as_str().unwrap().replace(unknown, "ID")
        );
    }
    let (st, _, b) = post(&format!("/job/{id_b}/cancel"), &keys.limited).await;
    assert_eq!(st, 404, "{b}");
    // Inside its targets: found (409, the job already ended).
    let (st, _, b) = post(&format!("/job/{id_a}/cancel"), &keys.limited).await;
    assert_eq!(st, 409, "{b}");
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/job/{id_b}")),
        Some(&keys.admin),
    )
    .await;
    assert_eq!(st, 200, "{b}");
}
