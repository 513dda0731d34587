//! `--notify` against a real HTTP receiver in this test, on a loopback
//! port: it checks the body and the signature, answers 500 first and sees
//! the retry; the secret's rules; the server's notifications and their
//! count in `GET /metrics`; and the JSON log a shipper reads.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use sha2::Sha256;

use crate::observability::{scrape, value};
use crate::server::call;

/// The signing secret of these tests.
pub(crate) const SECRET: &str = "0123456789abcdef-notify-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// A webhook receiver on a loopback port: records every request, answers
/// 500 to the first `fail_first`, then 200. The watch counts requests.
pub(crate) async fn receiver(
    fail_first: usize,
) -> (
    u16,
    Arc<Mutex<Vec<Got>>>,
    tokio::sync::watch::Receiver<usize>,
) {
    use axum::extract::State;
    type Shared = (
        Arc<Mutex<Vec<Got>>>,
        Arc<tokio::sync::watch::Sender<usize>>,
        usize,
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::post(
                |State((got, tx, fail)): State<Shared>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let n = {
                        let mut g = got.lock().unwrap();
                        g.push(Got {
                            headers,
                            body: body.to_vec(),
                        });
                        g.len()
                    };
                    tx.send_replace(n);
                    if n <= fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state((got.clone(), Arc::new(tx), fail_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got, rx)
}

/// What a receiver checks: the signature over `TIMESTAMP.BODY`, and a
/// timestamp within its replay window.
fn verify(g: &Got) {
    let h = |k: &str| {
        g.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ts: i64 = h("x-drover-timestamp").parse().expect("a timestamp");
    assert!(
        (chrono::Utc::now().timestamp() - ts).abs() < 300,
        "outside the window"
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&g.body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        h("x-drover-signature"),
        want,
        "the signature does not verify"
    );
    assert_eq!(h("x-drover-event"), "job.finished");
    assert_eq!(h("content-type"), "application/json");
}

#[tokio::test]
async fn apply_notifies_a_receiver_that_fails_first_and_keeps_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, _) = crate::serve::offline_with(tmp.path(), "");
    let pb = tmp.path().join("restart.yml");
    std::fs::write(
        &pb,
        "name: restart\nsteps:\n  - { id: roll, target: a, service: { name: demo-web, state: restarted } }\n",
    )
    .unwrap();
    let (port, got, _) = receiver(1).await;
    // Credentials in the URL: sent, never logged.
    let url = format!("http://hook-user:hunter2pw@127.0.0.1:{port}/hooks/SECRETPATH?token=tok3n");
    let report = tmp.path().join("report.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["-v", "apply"])
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .args(["--notify", &url, "--report"])
        .arg(&report)
        .env("DROVER_NOTIFY_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Unreachable: 4, whatever the notification did.
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one 500, then the retry: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let job_id = report["job_id"].as_str().unwrap();
    for (i, g) in got.iter().enumerate() {
        verify(g);
        let body: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body, report, "the body is the report");
        let h = |k: &str| g.headers[k].to_str().unwrap().to_string();
        assert_eq!(h("idempotency-key"), format!("{job_id}:job.finished"));
        assert_eq!(h("x-drover-job-id"), job_id);
        assert_eq!(h("x-drover-attempt"), (i + 1).to_string());
        // userinfo as basic auth: the receiver's credential works.
        assert!(h("authorization").starts_with("Basic "), "{:?}", g.headers);
    }
    assert!(stderr.contains("notification delivered"), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}/…")),
        "{stderr}"
    );
    for secret in ["hunter2pw", "SECRETPATH", "tok3n", "hook-user", SECRET] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "`{secret}` in the output:\n{stderr}{stdout}"
        );
    }

    // A receiver that refuses (4xx) is not retried, and the run's exit
    // code stays; a receiver nobody listens on is retried within the bound.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("apply")
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .args([
            "--notify",
            "http://127.0.0.1:9/closed",
            "--notify-timeout",
            "2s",
        ])
        .env("DROVER_NOTIFY_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("notification not delivered"), "{stderr}");
}

#[test]
fn notify_needs_a_secret_kept_off_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, keys) = crate::serve::offline_with(tmp.path(), "");
    let pb = tmp.path().join("p.yml");
    std::fs::write(
        &pb,
        "name: p\nsteps:\n  - { id: s, target: a, service: { name: x, state: started } }\n",
    )
    .unwrap();
    let run = |extra: &[&str], secret_env: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        c.arg("apply").arg(&pb).arg("-i").arg(&inv).args(extra);
        c.env_remove("DROVER_NOTIFY_SECRET");
        if let Some(s) = secret_env {
            c.env("DROVER_NOTIFY_SECRET", s);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let hook = ["--notify", "https://hooks.example.com/x"];
    let (code, err) = run(&hook, None);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("DROVER_NOTIFY_SECRET") && err.contains("--notify-secret-file"),
        "{err}"
    );
    let (code, err) = run(&hook, Some("short"));
    assert_eq!(code, Some(1));
    assert!(err.contains("at least 16"), "{err}");
    let file = tmp.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_file = [
        "--notify",
        "https://hooks.example.com/x",
        "--notify-secret-file",
        file.to_str().unwrap(),
    ];
    let (code, err) = run(&with_file, None);
    assert_eq!(code, Some(1));
    assert!(err.contains("chmod o-r"), "{err}");
    // The same for the server, before it listens.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "-i"])
        .arg(&inv)
        .arg("--keys")
        .arg(&keys.file)
        .args(["--listen", "127.0.0.1:0", "--notify", "ftp://u:pw@x/y"])
        .env("DROVER_NOTIFY_SECRET", SECRET)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("http://") && !err.contains("pw"), "{err}");
}

#[tokio::test]
async fn serve_notifies_each_job_end_and_counts_the_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, got, mut count) = receiver(0).await;
    let secret = tmp.path().join("notify.secret");
    std::fs::write(&secret, SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hook = format!("http://127.0.0.1:{port}/drover");
    let (srv, keys) = crate::serve::start(
        tmp.path(),
        &[
            "--notify",
            &hook,
            "--notify-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let (st, _, report) = call(
        Method::POST,
        &srv.url("/runbook/restart-web"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{report}");
    tokio::time::timeout(Duration::from_secs(30), count.wait_for(|n| *n >= 1))
        .await
        .expect("no notification within 30s")
        .unwrap();
    let g = got.lock().unwrap()[0].clone();
    verify(&g);
    let body: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(body["job_id"], report["job_id"]);
    assert_eq!(body["results"], report["results"]);
    assert_eq!(body["outcome"], "completed");
    // Counted once the delivery is over (just after the receiver answered).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, text) = scrape(&srv.url("/metrics"), Some(&keys.read)).await;
        if value(&text, r#"drover_notifications_total{result="delivered"}"#) == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!srv.log().contains(SECRET));
}

#[test]
fn json_logs_carry_the_job_fields_one_object_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, _) = crate::serve::offline_with(tmp.path(), "");
    let pb = tmp.path().join("p.yml");
    std::fs::write(
        &pb,
        "name: p\nvars: { token: s3cr3t-value }\nsecret_vars: [token]\nsteps:\n  - id: roll\n    target: _all\n    service: { name: demo-worker, state: restarted }\n",
    )
    .unwrap();
    let report = tmp.path().join("r.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["--log-format", "json", "apply"])
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let job_id =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap())
            .unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_string();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let results: Vec<&serde_json::Value> = lines.iter().filter(|l| l["host"].is_string()).collect();
    assert_eq!(results.len(), 2, "{stderr}");
    for r in results {
        assert_eq!(r["job_id"], job_id.as_str());
        assert_eq!(r["unit"], "demo-worker.service");
        assert_eq!(r["step"], "roll");
        assert_eq!(r["outcome"], "failed");
        assert_eq!(r["kind"], "unreachable");
        assert_eq!(r["level"], "WARN");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["job_id"] == job_id.as_str() && l["outcome"] == "completed"),
        "the job's end: {stderr}"
    );
    assert!(!stderr.contains("s3cr3t-value"));
}
