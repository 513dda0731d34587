//! The Redis- and Consul-compatible routes and the status page, with no
//! lab: everything decided before a host is reached (keys, roles, bodies,
//! queries, protected units, the node host, the page's session and CSRF
//! token). Their work on real hosts is tested in `tests/lab/serve_compat.rs`.

use crate::server;

use reqwest::Method;
use server::{assert_error, call, client, Keys, Server};

/// Two hosts whose bus does not exist; `b` protects demo-web.
fn start(dir: &std::path::Path, extra: &[&str]) -> (Server, Keys) {
    std::fs::create_dir_all(dir).unwrap();
    let inv = dir.join("inventory.yml");
    std::fs::write(
        &inv,
        "defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-test-bus\nhosts:\n  a:\n    labels: { role: web }\n  b:\n    labels: { role: db }\n    protected: [demo-web.service]\n",
    )
    .unwrap();
    let keys = Keys::make(dir, "role:web");
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("restart-web.yml"),
        "name: restart web\nsteps:\n  - id: restart\n    target: role:web\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    let (jobs, audit) = (dir.join("jobs"), dir.join("audit.log"));
    let mut args = vec![
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--playbooks",
        books.to_str().unwrap(),
        "--jobs-dir",
        jobs.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args, &dir.join("stderr")), keys)
}

/// Send `body` with a key; (status, body as JSON or a JSON string).
async fn send(
    m: Method,
    url: &str,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let resp = client()
        .request(m, url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

const NEW_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/local/services"),
    ("POST", "/v1/local/services"),
    ("POST", "/v1/services"),
    ("GET", "/v1/agent/services"),
    ("GET", "/v1/agent/service/demo-web"),
    ("GET", "/v1/agent/health/service/name/demo-web"),
    ("GET", "/v1/agent/health/service/id/demo-web"),
    ("PUT", "/v1/agent/service/register"),
    ("PUT", "/v1/agent/service/deregister/demo-web"),
    ("PUT", "/v1/agent/service/maintenance/demo-web?enable=true"),
    ("POST", "/logout"),
];

#[tokio::test]
async fn new_routes_need_a_key_and_node_routes_need_a_node() {
    let dir = tempfile::tempdir().unwrap();
    // Two local hosts: no default node.
    let (s, keys) = start(dir.path(), &[]);
    for (m, path) in NEW_ROUTES {
        let m: Method = m.parse().unwrap();
        for key in [None, Some("drv_not-a-key")] {
            let (st, h, b) = call(m.clone(), &s.url(path), key).await;
            assert_eq!(st, 401, "{m} {path}: {b}");
            assert_eq!(h["www-authenticate"], "Bearer");
            assert_error(st, &b);
        }
    }
    for (m, path) in &NEW_ROUTES[..10] {
        if *path == "/v1/services" {
            continue;
        }
        let (st, _, b) = call(m.parse().unwrap(), &s.url(path), Some(&keys.admin)).await;
        assert_eq!(st, 404, "{m} {path}: {b}");
        assert_error(st, &b);
        assert!(
            b["details"].as_str().unwrap().contains("--node"),
            "{path}: {b}"
        );
    }
    // X-Consul-Token is a key too (here: the 404 of no node, not a 401).
    let r = client()
        .get(s.url("/v1/agent/services"))
        .header("X-Consul-Token", &keys.read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn redis_bodies_names_operations_and_protected_units() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &["--node", "b"]);
    let url = s.url("/v1/local/services");
    let bad: &[(&[u8], &str)] = &[
        (b"{", "body"),
        (b"[]", "body"),
        (br#"{"operation_type":"stop"}"#, "services"),
        (
            br#"{"operation_type":"stop","services":["demo-web"],"force":true}"#,
            "force",
        ),
        (
            b"{\"operation_type\":\"st\xffop\",\"services\":[]}",
            "UTF-8",
        ),
        (
            br#"{"operation_type":"reboot","services":["demo-web"]}"#,
            "operation_type `reboot`",
        ),
        (
            br#"{"operation_type":"stop","services":["demo-web","bad name;"]}"#,
            "`bad name;`",
        ),
        (br#"{"operation_type":"stop","services":[]}"#, "services"),
    ];
    for (body, names) in bad {
        let (st, b) = send(Method::POST, &url, &keys.operate, body.to_vec()).await;
        assert_eq!(st, 400, "{}: {b}", String::from_utf8_lossy(body));
        assert_error(st, &b);
        assert!(
            b["details"].as_str().unwrap().contains(names),
            "{names}: {b}"
        );
    }
    // A required (protected) service: 403 with Redis's warning, for every
    // role but an admin who asks.
    let stop = r#"{"operation_type":"stop","services":["demo-web"]}"#;
    for key in [&keys.operate, &keys.admin] {
        let (st, b) = send(Method::POST, &url, key, stop).await;
        assert_eq!(st, 403, "{b}");
        assert_error(st, &b);
        let d = b["details"].as_str().unwrap();
        assert!(d.contains("may cause the cluster to fail"), "{b}");
        assert!(d.contains("demo-web.service"), "{b}");
    }
    let (st, b) = send(Method::POST, &s.url("/v1/services"), &keys.operate, stop).await;
    assert_eq!(st, 403, "{b}");
    assert!(b["details"].as_str().unwrap().contains("cluster to fail"));
    // A read key may not change anything; a limited key not every host.
    let start_body = r#"{"operation_type":"start","services":["demo-web"]}"#;
    let (st, b) = send(Method::POST, &url, &keys.read, start_body).await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = send(
        Method::POST,
        &s.url("/v1/services"),
        &keys.limited,
        start_body,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .contains("outside its targets"),
        "never naming the hosts outside: {b}"
    );
    // An unreachable node: a host's failure is a 200 with false.
    let (st, b) = send(Method::POST, &url, &keys.operate, start_body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, serde_json::json!({"demo-web": false}));
    // Reading an unreachable node: 503.
    let (st, _, b) = call(Method::GET, &url, Some(&keys.read)).await;
    assert_eq!(st, 503, "{b}");
    assert_error(st, &b);
}

#[tokio::test]
async fn consul_queries_bodies_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &["--node", "a"]);
    let m = |q: &str| s.url(&format!("/v1/agent/service/maintenance/demo-web{q}"));
    for (q, want) in [
        ("", "Missing value for enable"),
        ("?enable=", "Missing value for enable"),
        ("?enable=maybe", "Invalid value for enable"),
        ("?enable=true&color=red", "color"),
    ] {
        let (st, _, b) = call(Method::PUT, &m(q), Some(&keys.operate)).await;
        assert_eq!(st, 400, "{q}: {b}");
        assert_error(st, &b);
        assert!(b["details"].as_str().unwrap().contains(want), "{q}: {b}");
    }
    let (st, _, b) = call(
        Method::PUT,
        &s.url("/v1/agent/service/maintenance/bad%20name;?enable=true"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    // Authorised before any work: a read key's change is refused before
    // the (unreachable) node is read, which would answer 503; its dry run
    // is a read and goes on to that read.
    let (st, _, b) = call(Method::PUT, &m("?enable=true&reason=x"), Some(&keys.read)).await;
    assert_eq!(st, 403, "{b}");
    let (st, _, b) = call(
        Method::PUT,
        &m("?enable=true&reason=x&dry_run=true"),
        Some(&keys.read),
    )
    .await;
    assert_ne!(st, 403, "{b}");
    // A node that cannot be read: health is not known, 503 (an error).
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/name/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 503, "{b}");
    assert_error(st, &b);
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/id/demo-web?format=xml"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    // Register and deregister are admin's.
    let reg = s.url("/v1/agent/service/register");
    let body = r#"{"Name":"x-app","Content":"[Service]\nExecStart=/bin/true\n"}"#;
    let (st, b) = send(Method::PUT, &reg, &keys.operate, body).await;
    assert_eq!(st, 403, "{b}");
    assert!(b["details"].as_str().unwrap().contains("admin"), "{b}");
    let (st, _, b) = call(
        Method::PUT,
        &s.url("/v1/agent/service/deregister/x-app"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 403, "{b}");
    for (body, names) in [
        (r#"{"Name":"x-app"}"#, "Content"),
        (r#"{"Name":"x-app","Content":"","Port":80}"#, "Port"),
        (r#"{"Name":"bad name;","Content":""}"#, "`bad name;`"),
        (r#"{"Name":"x","ID":"../etc","Content":""}"#, "`../etc`"),
    ] {
        let (st, b) = send(Method::PUT, &reg, &keys.admin, body).await;
        assert_eq!(st, 400, "{body}: {b}");
        assert!(
            b["details"].as_str().unwrap().contains(names),
            "{body}: {b}"
        );
    }
    // The limited key's hosts are role:web = `a`, the node: allowed to
    // read (503: the node is unreachable), but a node outside them is 403.
    let (s2, keys2) = start(&dir.path().join("2"), &["--node", "b"]);
    let (st, _, b) = call(
        Method::GET,
        &s2.url("/v1/agent/services"),
        Some(&keys2.limited),
    )
    .await;
    assert_eq!(st, 403, "{b}");
    drop(s2);
    let (st, _, _) = call(
        Method::GET,
        &s.url("/v1/agent/services"),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(st, 503);
}

/// The page's session: the form, the cookie's attributes, the page's
/// requests with the cookie, its CSRF token, and the key written nowhere.
#[tokio::test]
async fn the_page_logs_in_with_a_cookie_and_guards_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p")).unwrap();
    let (s, keys) = start(&dir.path().join("p"), &["--node", "a"]);
    // No session: the login form, 200, as HTML.
    let r = client().get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = r.text().await.unwrap();
    assert!(text.contains("action=\"/login\""), "{text}");
    // A wrong key: the form again, 401.
    let r = client()
        .post(s.url("/login"))
        .form(&[("key", "drv_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("unknown key"));
    // Login CSRF: another site's page posting a right key would log the
    // browser into that key. Refused, with no cookie, whichever header
    // gives it away; this server's own origin is welcome.
    let own = s.url("");
    let own = own.trim_end_matches('/');
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        // Another port of this host: another user's server, perhaps.
        ("sec-fetch-site", "same-site"),
    ] {
        let r = client()
            .post(s.url("/login"))
            .header(name, value)
            .form(&[("key", keys.operate.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
        assert!(r.headers().get("set-cookie").is_none(), "{name}: {value}");
        assert!(r.text().await.unwrap().contains("another site"));
    }
    // This page's own form: its no-referrer policy makes a browser send
    // `Origin: null`, with `Sec-Fetch-Site: same-origin`.
    for origin in [own, "null"] {
        let r = client()
            .post(s.url("/login"))
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .form(&[("key", keys.operate.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303, "origin {origin}");
    }
    // The right key: a cookie that scripts cannot read and other sites
    // cannot send.
    let r = client()
        .post(s.url("/login"))
        .form(&[("key", keys.operate.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    // The cookie holds a random session id, never the key.
    let id = cookie.strip_prefix("drover_session=").expect(&set);
    assert_eq!(id.len(), 64, "{set}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{set}");
    assert!(!set.contains(&keys.operate), "the key is in the cookie");
    let with_cookie = |m: Method, path: &str| {
        client()
            .request(m, s.url(path))
            .header("cookie", cookie.clone())
    };
    let r = with_cookie(Method::GET, "/").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(!page.contains(&keys.operate), "the key is in the page");
    assert!(page.contains("id=\"tiles\""), "{page}");
    for h in ["data-host=\"a\"", "data-host=\"b\"", "restart-web"] {
        assert!(page.contains(h), "{h}: {page}");
    }
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    // The cookie is the key for the API's reads.
    let r = with_cookie(Method::GET, "/job").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A change needs the token: without it or with another, 403.
    for t in [None, Some("0".repeat(64))] {
        let mut rq = with_cookie(Method::POST, "/runbook/restart-web?dry_run=true");
        if let Some(t) = &t {
            rq = rq.header("x-csrf-token", t);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{t:?}");
        let b: serde_json::Value = r.json().await.unwrap();
        assert!(b["details"].as_str().unwrap().contains("X-CSRF-Token"));
    }
    let r = with_cookie(Method::POST, "/runbook/restart-web?dry_run=true")
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let plan: serde_json::Value = r.json().await.unwrap();
    assert_eq!(plan["schema"], "drover.plan/1", "{plan}");
    // Logging out needs the token too, and empties the cookie.
    let r = with_cookie(Method::POST, "/logout").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = with_cookie(Method::POST, "/logout")
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The session ended on the server: the old cookie, kept by a client
    // that ignores the emptied one, opens nothing.
    let r = with_cookie(Method::GET, "/job").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "the cookie outlived logout");
    let r = with_cookie(Method::GET, "/").send().await.unwrap();
    assert!(r.text().await.unwrap().contains("action=\"/login\""));
    // Bearer keys still work on the API, and API routes still answer 401
    // in JSON without one.
    let (st, _, b) = call(Method::GET, &s.url("/job"), None).await;
    assert_eq!(st, 401);
    assert_error(st, &b);
    // The key is in neither the log nor the audit log; the login is.
    let audit = std::fs::read_to_string(dir.path().join("p/audit.log")).unwrap();
    assert!(audit.contains("\"path\":\"/login\""), "{audit}");
    // The CSRF refusals above were audited too (two 403s on the runbook).
    let refused = audit
        .lines()
        .filter(|l| l.contains("\"path\":\"/runbook/restart-web\"") && l.contains("\"status\":403"))
        .count();
    assert!(refused >= 2, "{audit}");
    assert!(audit.contains("\"key\":\"oncall\""), "{audit}");
    assert!(!audit.contains(&keys.operate));
    assert!(!s.log().contains(&keys.operate));
}

/// Over TLS the session cookie is also `Secure`.
#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let keys = Keys::make(dir.path(), "role:web");
    let inv = dir.path().join("inventory.yml");
    std::fs::write(
        &inv,
        "hosts:\n  a: { transport: local, bus: \"unix:path=/nonexistent/x\" }\n",
    )
    .unwrap();
    let s = Server::start_scheme(
        "https",
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = tls
        .post(s.url("/login").replace("127.0.0.1", "localhost"))
        .form(&[("key", keys.read.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.ends_with("; Secure"), "{set}");
    // `__Host-`: no other site or subdomain can set or shadow it.
    assert!(set.starts_with("__Host-drover_session="), "{set}");
    assert!(set.contains("Path=/") && !set.contains("Domain"), "{set}");
    assert!(!set.contains(&keys.read), "the key is in the cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    let job = s.url("/job").replace("127.0.0.1", "localhost");
    let with = |c: String| tls.get(&job).header("cookie", c).send();
    assert_eq!(with(cookie.clone()).await.unwrap().status().as_u16(), 200);
    // Under TLS only the `__Host-` name counts: the same id planted
    // under the plain name opens nothing.
    let plain = cookie.replacen("__Host-", "", 1);
    assert_eq!(with(plain).await.unwrap().status().as_u16(), 401);
}

/// A session ends by itself after `--session-ttl`.
#[tokio::test]
async fn a_page_session_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(&dir.path().join("p"), &["--session-ttl", "2s"]);
    let cookie = server::login(&client(), &s.url("/login"), &keys.read).await;
    let job = s.url("/job");
    // One request right after login, well inside the 2s.
    let first = server::poll_status(&job, &cookie, 200, std::time::Duration::ZERO).await;
    assert_eq!(first, 200, "a fresh session answers");
    let after = server::poll_status(&job, &cookie, 401, std::time::Duration::from_secs(30)).await;
    assert_eq!(after, 401, "the session outlived --session-ttl 2s by 30s");
}

/// A reload that removes a key ends the sessions opened with it; the
/// other keys' sessions stay.
#[tokio::test]
async fn a_reload_that_removes_a_key_ends_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(&dir.path().join("p"), &[]);
    let gone = server::login(&client(), &s.url("/login"), &keys.operate).await;
    let kept = server::login(&client(), &s.url("/login"), &keys.read).await;
    let job = s.url("/job");
    let now = std::time::Duration::ZERO;
    assert_eq!(server::poll_status(&job, &gone, 200, now).await, 200);
    // The keys file without `oncall` (the operate key's entry).
    let text = std::fs::read_to_string(&keys.file).unwrap();
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with("  - ") {
            skip = line.contains("oncall");
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !out.contains("oncall") && out.contains("root-admin"),
        "{out}"
    );
    std::fs::write(&keys.file, out).unwrap();
    let (st, _, b) = call(Method::POST, &s.url("/reload"), Some(&keys.admin)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(server::poll_status(&job, &gone, 401, now).await, 401);
    assert_eq!(server::poll_status(&job, &kept, 200, now).await, 200);
}
