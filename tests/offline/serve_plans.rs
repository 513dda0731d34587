//! Plans and approvals over HTTP with no lab: a real server on a loopback
//! port whose hosts cannot be reached. Every status code of the plan
//! routes that needs no host is reached here; that an approved plan
//! restarts exactly what it planned, and that drift is refused, is proven
//! against the lab in `tests/lab/plans.rs`.

use crate::server;

use reqwest::Method;
use server::{assert_error, call, client, Server};

use super::serve::start;

const GATED: &str = "name: gated restart\napproval:\n  count: 1\nsteps:\n  - id: restart\n    target: role:web\n    service: { name: demo-web, state: restarted }\n";

/// A server with the runbook `gated` (one approval) beside `restart-web`.
fn gated(dir: &std::path::Path, extra: &[&str]) -> (Server, server::Keys) {
    std::fs::create_dir_all(dir.join("books")).unwrap();
    std::fs::write(dir.join("books/gated.yml"), GATED).unwrap();
    start(dir, extra)
}

async fn post(url: &str, key: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut r = client().post(url).bearer_auth(key);
    if let Some(b) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test]
async fn a_gated_runbook_runs_only_as_a_plan_another_key_approved() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    // Not as a runbook: a preview is still offered.
    let (status, body) = post(&s.url("/runbook/gated"), &keys.operate, None).await;
    assert_eq!(status, 403, "{body}");
    assert_error(status, &body);
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("/runbook/gated/plan"),
        "{body}"
    );
    let (status, body) = post(&s.url("/runbook/gated?dry_run=true"), &keys.operate, None).await;
    assert_eq!(status, 200, "{body}");
    // GET /runbook says what it needs and its digest.
    let (_, _, books) = call(Method::GET, &s.url("/runbook"), Some(&keys.read)).await;
    let book = books
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "gated")
        .unwrap();
    assert_eq!(book["approvals"], 1);
    assert_eq!(book["digest"].as_str().unwrap().len(), 64);

    // A read key makes no plan; an unknown runbook has none.
    let (status, _) = post(&s.url("/runbook/gated/plan"), &keys.read, None).await;
    assert_eq!(status, 403);
    let (status, body) = post(&s.url("/runbook/nope/plan"), &keys.operate, None).await;
    assert_eq!(status, 404, "{body}");
    let resp = client()
        .post(s.url("/runbook/gated/plan"))
        .bearer_auth(&keys.operate)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let made: serde_json::Value = resp.json().await.unwrap();
    let digest = made["digest"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/plan/{digest}"));
    assert_eq!(made["link"], location);
    assert_eq!(made["approvals_needed"], 1);
    assert!(
        made["markdown"].as_str().unwrap().contains("gated restart"),
        "{made}"
    );

    // Read back three ways; nothing of the server's paths shows.
    let (status, _, plan) = call(Method::GET, &s.url(&location), Some(&keys.read)).await;
    assert_eq!(status, 200);
    assert_eq!(plan["plan"]["schema"], "drover.plan/1");
    assert_eq!(plan["made_by"], "oncall");
    assert_eq!(plan["expired"], false);
    assert!(plan["plan"]["facts"].is_object(), "{plan}");
    assert!(
        !plan.to_string().contains(dir.path().to_str().unwrap()),
        "{plan}"
    );
    let md = client()
        .get(s.url(&format!("{location}?format=markdown")))
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap();
    assert!(md.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    let text = client()
        .get(s.url(&location))
        .header("Accept", "text/plain")
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(!text.text().await.unwrap().contains('\u{1b}'));
    for (path, want) in [
        (format!("{location}?format=xml"), 400),
        ("/plan/..%2Fjobs".to_string(), 400),
        (format!("/plan/{}", "0".repeat(64)), 404),
    ] {
        let (status, _, body) = call(Method::GET, &s.url(&path), Some(&keys.read)).await;
        assert_eq!(status, want, "{path}: {body}");
        assert_error(status, &body);
    }

    // Not approved: refused. The maker may not approve it; a read key
    // neither; another operate key may, once.
    let apply = s.url(&format!("{location}/apply"));
    let approve = s.url(&format!("{location}/approve"));
    let (status, body) = post(&apply, &keys.operate, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("has 0"),
        "{body}"
    );
    let (status, body) = post(&approve, &keys.operate, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("two-person"),
        "{body}"
    );
    let (status, _) = post(&approve, &keys.read, None).await;
    assert_eq!(status, 403);
    let (status, body) = post(&approve, &keys.admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approvals"][0]["key"], "root-admin");
    let (status, body) = post(&approve, &keys.admin, None).await;
    assert_eq!(status, 409, "{body}");
    let (_, _, pending) = call(Method::GET, &s.url("/plan"), Some(&keys.read)).await;
    assert_eq!(pending[0]["digest"], digest.as_str(), "{pending}");

    // Applied (its host cannot be reached: the job fails there), once.
    let (status, report) = post(&apply, &keys.operate, None).await;
    assert_eq!(status, 200, "{report}");
    let job = report["job_id"].as_str().unwrap().to_string();
    let (status, body) = post(&apply, &keys.operate, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["details"].as_str().unwrap().contains(&job), "{body}");
    let (_, _, pending) = call(Method::GET, &s.url("/plan"), Some(&keys.read)).await;
    assert_eq!(pending, serde_json::json!([]));
    // Its job is not run again another way.
    for how in ["retry", "resume"] {
        let (status, body) = post(&s.url(&format!("/job/{job}/{how}")), &keys.operate, None).await;
        assert_eq!(status, 403, "{how}: {body}");
        assert!(
            body["details"].as_str().unwrap().contains("approval"),
            "{how}: {body}"
        );
    }

    // Audited: the refused approval and the approval, with their keys.
    let (_, _, audit) = call(Method::GET, &s.url("/audit"), Some(&keys.admin)).await;
    let lines = audit.as_array().unwrap();
    let approve_path = format!("{location}/approve");
    let by = |key: &str, status: u64| {
        lines
            .iter()
            .any(|l| l["path"] == approve_path.as_str() && l["key"] == key && l["status"] == status)
    };
    assert!(by("root-admin", 200) && by("oncall", 403), "{audit}");
    assert!(lines.iter().any(|l| l["job_id"] == job.as_str()), "{audit}");

    // Survives a restart, approvals and all.
    let args: Vec<String> = s.args[1..].to_vec();
    drop(s);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start(&args, &dir.path().join("stderr2"));
    let (status, _, plan) = call(Method::GET, &s.url(&location), Some(&keys.read)).await;
    assert_eq!(status, 200);
    assert_eq!(plan["approvals"][0]["key"], "root-admin");
    assert_eq!(plan["applied"]["job_id"], job.as_str());
    // Made again: a new plan, pending, needing its own approvals (the
    // same content as an applied plan too: `plan_store`'s tests).
    let (status, made) = post(&s.url("/runbook/gated/plan"), &keys.admin, None).await;
    assert_eq!(status, 201, "{made}");
    let (_, _, again) = call(
        Method::GET,
        &s.url(made["link"].as_str().unwrap()),
        Some(&keys.read),
    )
    .await;
    assert_eq!(again["made_by"], "root-admin", "{again}");
    assert_eq!(again["approvals"], serde_json::json!([]), "{again}");
    assert_eq!(again["applied"], serde_json::Value::Null, "{again}");
    let (_, _, pending) = call(Method::GET, &s.url("/plan"), Some(&keys.read)).await;
    assert_eq!(pending[0]["digest"], made["digest"], "{pending}");
}

#[tokio::test]
async fn an_expired_plan_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &["--plan-ttl", "1s"]);
    let (status, made) = post(&s.url("/runbook/gated/plan"), &keys.operate, None).await;
    assert_eq!(status, 201, "{made}");
    let location = made["link"].as_str().unwrap();
    // Wait out the ttl this test set, on the clock.
    let expires =
        chrono::DateTime::parse_from_rfc3339(made["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.signed_duration_since(chrono::Utc::now());
    tokio::time::sleep(left.to_std().unwrap_or_default() + std::time::Duration::from_millis(50))
        .await;
    let (status, body) = post(&s.url(&format!("{location}/approve")), &keys.admin, None).await;
    assert_eq!(status, 410, "{body}");
    assert_error(status, &body);
    let (status, body) = post(&s.url(&format!("{location}/apply")), &keys.operate, None).await;
    assert_eq!(status, 410, "{body}");
    let (status, _, plan) = call(Method::GET, &s.url(location), Some(&keys.read)).await;
    assert_eq!((status, &plan["expired"]), (200, &serde_json::json!(true)));
}

#[tokio::test]
async fn an_uploaded_plan_is_data_checked_against_the_runbooks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    let (status, body) = post(&s.url("/plan"), &keys.operate, Some("{\"schema\": 1}")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(&s.url("/plan"), &keys.read, Some("{}")).await;
    assert_eq!(status, 403);
    // A plan the server made, sent back: accepted as the same runbook's.
    let (_, made) = post(&s.url("/runbook/gated/plan"), &keys.operate, None).await;
    let (_, _, plan) = call(
        Method::GET,
        &s.url(made["link"].as_str().unwrap()),
        Some(&keys.read),
    )
    .await;
    let doc = plan["plan"].clone();
    let (status, body) = post(&s.url("/plan"), &keys.admin, Some(&doc.to_string())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["runbook"], "gated");
    // Of no runbook here: 409.
    let mut other = doc.clone();
    other["playbook"]["digest"] = serde_json::json!("0".repeat(64));
    let (status, body) = post(&s.url("/plan"), &keys.admin, Some(&other.to_string())).await;
    assert_eq!(status, 409, "{body}");
    // Its results edited: not what the runbook predicts from its facts.
    let mut forged = doc.clone();
    forged["steps"][0]["results"][0]["status"] = serde_json::json!("skipped");
    let (status, body) = post(&s.url("/plan"), &keys.admin, Some(&forged.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("predicts"),
        "{body}"
    );
    // A template in it is text, never rendered.
    let mut templ = doc.clone();
    templ["name"] = serde_json::json!("{{ 7 * 7 }}");
    let (status, body) = post(&s.url("/plan"), &keys.admin, Some(&templ.to_string())).await;
    assert_eq!(status, 201, "{body}");
    let (_, _, stored) = call(
        Method::GET,
        &s.url(body["link"].as_str().unwrap()),
        Some(&keys.read),
    )
    .await;
    assert_eq!(stored["plan"]["name"], "gated restart", "{stored}");
}

#[test]
fn approval_is_checked_with_its_place_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("name: x\napproval:\n  count: 0\n", "approval.count", ":3:3"),
        (
            "name: x\napproval: {cnt: 1}\n",
            "unknown field `cnt`",
            ":2:12",
        ),
        (
            "name: x\napproval: {count: many}\n",
            "approval.count",
            ":2:",
        ),
    ];
    for (head, want, at) in cases {
        let pb = dir.path().join("p.yml");
        std::fs::write(
            &pb,
            format!("{head}steps:\n  - id: r\n    target: all\n    service: {{ name: a, state: restarted }}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("check")
            .arg(&pb)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{head}");
        assert!(
            err.contains(want) && err.contains(&format!("p.yml{at}")),
            "{head}: {err}"
        );
    }
}

/// `drover apply --server` with `args`, the key in DROVER_KEY.
fn sent(args: &[&str], key: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("apply")
        .args(args)
        .env("DROVER_KEY", key)
        .output()
        .unwrap()
}

#[tokio::test]
async fn apply_server_runs_the_servers_runbook_as_a_job_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    let book = dir.path().join("books/restart-web.yml");
    let (book, base) = (book.to_str().unwrap(), s.url(""));
    let out = sent(&["--server", &base, book], &keys.operate);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Its one host cannot be reached: apply's exit code for that, apply's lines.
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    assert!(stdout.starts_with("job "), "{stdout}");
    assert!(
        stdout.contains("demo-web") && stdout.contains("FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 changed, 0 ok, 0 skipped, 1 failed"),
        "{stdout}"
    );
    assert!(!stdout.contains(&keys.operate) && !stderr.contains(&keys.operate));
    let id = stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let (_, _, jobs) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == id.as_str()),
        "{jobs}"
    );
    let (_, _, audit) = call(Method::GET, &s.url("/audit"), Some(&keys.admin)).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == "/runbook/restart-web"
                && l["key"] == "oncall"
                && l["job_id"] == id.as_str()),
        "{audit}"
    );

    // A local copy that differs from the server's is refused, nothing sent.
    let changed = dir.path().join("restart-web.yml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(book).unwrap() + "# edited\n",
    )
    .unwrap();
    let out = sent(
        &["--server", &base, changed.to_str().unwrap()],
        &keys.operate,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("differs from the server's runbook `restart-web`"),
        "{err}"
    );
    // A runbook needing approval is refused as a refusal (3), with the
    // server's words; a wrong key never shows.
    let gated = dir.path().join("books/gated.yml");
    let out = sent(&["--server", &base, gated.to_str().unwrap()], &keys.operate);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("/runbook/gated/plan"), "{err}");
    let out = sent(&["--server", &base, book], "drv_wrong-secret-key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("401") && !err.contains("drv_wrong-secret-key"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["apply", "--server", &base, book])
        .env_remove("DROVER_KEY")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-file"));
}

#[tokio::test]
async fn apply_server_plan_uploads_a_saved_plan_and_applies_the_servers_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    let (inv, book) = (
        dir.path().join("inventory.yml"),
        dir.path().join("books/gated.yml"),
    );
    let plan = dir.path().join("plan.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "plan",
            "-i",
            inv.to_str().unwrap(),
            book.to_str().unwrap(),
            "--out",
            plan.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(plan.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", keys.operate)).unwrap();
    let args = [
        "--server",
        &s.url(""),
        "--key-file",
        key_file.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
    ];
    let out = sent(&args, "");
    let err = String::from_utf8_lossy(&out.stderr);
    // Stored, then refused: the runbook needs an approval by another key.
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("stored the plan as") && err.contains("has 0"),
        "{err}"
    );
    let (_, _, pending) = call(Method::GET, &s.url("/plan"), Some(&keys.read)).await;
    let digest = pending[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["made_by"], "oncall");
    let (status, _) = post(
        &s.url(&format!("/plan/{digest}/approve")),
        &keys.admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The same file again is the same stored plan, now approved: it runs.
    let out = sent(&args, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

/// The page as the session of `key` sees it, and its CSRF token.
async fn page_of(s: &Server, key: &str) -> (String, String, String) {
    let cookie = server::login(&client(), &s.url("/login"), key).await;
    let page = client()
        .get(s.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    (page, cookie, token)
}

#[tokio::test]
async fn the_page_lists_pending_plans_with_approve_for_other_keys_and_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    let (status, made) = post(&s.url("/runbook/gated/plan"), &keys.operate, None).await;
    assert_eq!(status, 201);
    let digest = made["digest"].as_str().unwrap();
    let approve = format!("data-approve=\"{digest}\"");
    let apply = format!("data-apply=\"{digest}\"");
    // Its maker sees it and its diff, with neither button yet.
    let (page, _, _) = page_of(&s, &keys.operate).await;
    assert!(
        page.contains("Pending plans") && page.contains(&format!("id=\"plan-{digest}\"")),
        "{page}"
    );
    assert!(
        page.contains("demo-web") && page.contains("approvals 0/1"),
        "{page}"
    );
    assert!(!page.contains(&approve) && !page.contains(&apply), "{page}");
    // Another key gets Approve; its session's change needs the token.
    let (page, cookie, token) = page_of(&s, &keys.admin).await;
    assert!(page.contains(&approve) && !page.contains(&apply), "{page}");
    let url = s.url(&format!("/plan/{digest}/approve"));
    let r = client()
        .post(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client()
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Approved: Apply for every operate key, Approve no more for this one.
    let (page, _, _) = page_of(&s, &keys.admin).await;
    assert!(
        !page.contains(&approve)
            && page.contains(&apply)
            && page.contains("approvals 1/1 (root-admin)"),
        "{page}"
    );
    let (page, _, _) = page_of(&s, &keys.read).await;
    assert!(
        page.contains(&format!("id=\"plan-{digest}\"")) && !page.contains(&apply),
        "{page}"
    );
}

/// The plan routes' other answers: 401 without a key, 400 for a body or a
/// digest that is wrong, 404 for no such plan, 413 past the body bound,
/// 429 past the key's rate (making, sending and applying a plan; a refused
/// apply leaves the plan pending).
#[tokio::test]
async fn plan_routes_answer_401_400_404_413_and_429() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &["--rate-limit", "2"]);
    let none = "0".repeat(64);
    let routes = [
        (Method::POST, "/runbook/gated/plan".to_string()),
        (Method::POST, "/plan".to_string()),
        (Method::GET, "/plan".to_string()),
        (Method::GET, format!("/plan/{none}")),
        (Method::POST, format!("/plan/{none}/approve")),
        (Method::POST, format!("/plan/{none}/apply")),
    ];
    for (m, path) in &routes {
        let (status, _, body) = call(m.clone(), &s.url(path), None).await;
        assert_eq!(status, 401, "{m} {path}: {body}");
        assert_error(status, &body);
    }
    for action in ["approve", "apply"] {
        let (status, body) = post(
            &s.url(&format!("/plan/{none}/{action}")),
            &keys.operate,
            None,
        )
        .await;
        assert_eq!(status, 404, "{action}: {body}");
        let (status, body) = post(
            &s.url(&format!("/plan/not-a-digest/{action}")),
            &keys.operate,
            None,
        )
        .await;
        assert_eq!(status, 400, "{action}: {body}");
    }
    let (status, body) = post(
        &s.url("/runbook/gated/plan"),
        &keys.operate,
        Some("{\"params\": 3}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &s.url("/runbook/gated/plan"),
        &keys.operate,
        Some("{\"params\": {\"nope\": 1}}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &s.url(&format!("/plan/{none}/apply")),
        &keys.operate,
        Some("{\"params\": 3}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let big = format!("{{\"schema\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    for path in ["/plan", "/runbook/gated/plan"] {
        let (status, body) = post(&s.url(path), &keys.operate, Some(&big)).await;
        assert_eq!(status, 413, "{path}: {body}");
    }
    // Two plans a minute for this key: the third is 429 with Retry-After.
    let mut made_first = None;
    for _ in 0..2 {
        let (status, body) = post(&s.url("/runbook/gated/plan"), &keys.limited, None).await;
        assert_eq!(status, 201, "{body}");
        made_first = made_first.or(body["digest"].as_str().map(str::to_string));
    }
    let (status, headers, body) = call(
        Method::POST,
        &s.url("/runbook/gated/plan"),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    let digest = made_first.expect("a plan was made");
    let (status, body) = post(&s.url("/plan"), &keys.limited, Some("{}")).await;
    assert_eq!(status, 400, "a plan that is none costs no token: {body}");
    // A good plan sent back, and applying an approved one: 429 too.
    let (_, _, plan) = call(
        Method::GET,
        &s.url(&format!("/plan/{digest}")),
        Some(&keys.read),
    )
    .await;
    let (status, body) = post(
        &s.url("/plan"),
        &keys.limited,
        Some(&plan["plan"].to_string()),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = post(
        &s.url(&format!("/plan/{digest}/approve")),
        &keys.admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let apply = s.url(&format!("/plan/{digest}/apply"));
    let (status, headers, body) = call(Method::POST, &apply, Some(&keys.limited)).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Refused before it ran: the plan is still pending, not applied.
    let (_, _, plan) = call(
        Method::GET,
        &s.url(&format!("/plan/{digest}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(plan["applied"], serde_json::Value::Null, "{plan}");
    assert_eq!(plan["expired"], false, "{plan}");
}

/// A plan of a runbook that changed since (edited and reloaded) is refused
/// 409 naming the change, with no job and the plan still pending; a read
/// key may not apply at all.
#[tokio::test]
async fn a_plan_of_a_runbook_changed_since_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gated(dir.path(), &[]);
    let (status, made) = post(&s.url("/runbook/gated/plan"), &keys.operate, None).await;
    assert_eq!(status, 201, "{made}");
    let link = made["link"].as_str().unwrap().to_string();
    let (status, body) = post(&s.url(&format!("{link}/approve")), &keys.admin, None).await;
    assert_eq!(status, 200, "{body}");
    let apply = s.url(&format!("{link}/apply"));
    let (status, body) = post(&apply, &keys.read, None).await;
    assert_eq!(status, 403, "{body}");

    std::fs::write(
        dir.path().join("books/gated.yml"),
        GATED.replace("demo-web", "demo-worker"),
    )
    .unwrap();
    let (status, _, body) = call(Method::POST, &s.url("/reload"), Some(&keys.admin)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&apply, &keys.operate, None).await;
    assert_eq!(status, 409, "{body}");
    assert_error(status, &body);
    assert!(
        body["details"].as_str().unwrap().contains("gated.yml"),
        "names the changed runbook: {body}"
    );
    assert!(
        !body.to_string().contains(dir.path().to_str().unwrap()),
        "not the server's paths: {body}"
    );
    let (_, _, jobs) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(jobs, serde_json::json!([]), "nothing ran: {jobs}");
    let (_, _, plan) = call(Method::GET, &s.url(&link), Some(&keys.read)).await;
    assert_eq!(plan["applied"], serde_json::Value::Null, "{plan}");
}
