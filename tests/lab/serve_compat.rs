//! The Redis Enterprise- and Consul agent-compatible routes of `drover
//! serve` against the lab: real systemd, shapes compared field by field
//! with the seeds', every status code the routes answer.

use crate::common;
use crate::server;

use std::collections::BTreeSet;
use std::path::Path;

use common::{lab, Lab};
use reqwest::Method;
use serde_json::Value;
use server::{assert_error, call, client, Keys, Server};

/// A server over the first two lab hosts, node-local routes on the first;
/// the second protects demo-worker.
fn serve(lab: &Lab, dir: &Path) -> (Server, Keys) {
    let inv = lab.inventory_with(
        dir,
        &format!(
            "  {}: {{}}\n  {}:\n    protected: [demo-worker.service]\n",
            lab.host(0),
            lab.host(1)
        ),
    );
    let keys = Keys::make(dir, lab.host(1));
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--node",
            lab.host(0),
            "--jobs-dir",
            dir.join("jobs").to_str().unwrap(),
            // Flags the CLI writes behind the server's back show at the
            // live snapshot's next full read: soon, here.
            "--live-heal",
            "1s",
        ],
        &dir.join("stderr"),
    );
    (s, keys)
}

async fn send(m: Method, url: &str, key: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .request(m, url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn keys_of(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(v: &[&'a str]) -> BTreeSet<&'a str> {
    v.iter().copied().collect()
}

/// `3 days, 0:58:59` or `0:58:59`.
fn is_uptime(s: &str) -> bool {
    let hms = match s.split_once(", ") {
        Some((d, rest)) => {
            let (n, word) = d.split_once(' ').unwrap_or(("", ""));
            if n.parse::<u64>().is_err() || !(word == "day" || word == "days") {
                return false;
            }
            rest
        }
        None => s,
    };
    let parts: Vec<&str> = hms.split(':').collect();
    parts.len() == 3
        && parts[0].parse::<u64>().is_ok()
        && parts[1..]
            .iter()
            .all(|p| p.len() == 2 && p.parse::<u64>().is_ok_and(|n| n < 60))
}

#[tokio::test]
async fn redis_services_read_and_change_real_units() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path());
    let (h0, h1) = (lab.host(0).to_string(), lab.host(1).to_string());
    let local = s.url("/v1/local/services");

    // {NAME: {start_time, status, uptime}}, as Redis Enterprise shows it.
    let (st, _, b) = call(Method::GET, &local, Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    let web = &b["demo-web"];
    assert_eq!(
        keys_of(web),
        set(&["start_time", "status", "uptime"]),
        "{web}"
    );
    assert_eq!(web["status"], "RUNNING");
    assert!(is_uptime(web["uptime"].as_str().unwrap()), "{web}");
    let started = chrono::DateTime::parse_from_rfc3339(web["start_time"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let shown = lab.show(&h0, "demo-web")["ActiveEnterTimestamp"].clone();
    let unix: i64 = shown.trim_start_matches('@').parse().unwrap();
    assert!((started - unix).abs() <= 1, "{started} vs {shown}");
    // A stopped unit has a status and nothing else.
    let stopped: Vec<&Value> = b
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v["status"] == "STOPPED")
        .collect();
    assert!(!stopped.is_empty(), "{b}");
    for v in stopped {
        assert_eq!(keys_of(v), set(&["status"]), "{v}");
    }
    assert!(b.get("demo-web.service").is_none());

    // Restart two: {NAME: true}, and systemd really restarted them.
    let before = (
        lab.show(&h0, "demo-web")["InvocationID"].clone(),
        lab.show(&h0, "demo-worker")["InvocationID"].clone(),
        lab.show(&h1, "demo-web")["InvocationID"].clone(),
    );
    let (st, b) = send(
        Method::POST,
        &local,
        &keys.operate,
        r#"{"operation_type":"restart","services":["demo-web","demo-worker.service"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b,
        serde_json::json!({"demo-web": true, "demo-worker.service": true})
    );
    assert_ne!(lab.show(&h0, "demo-web")["InvocationID"], before.0);
    assert_ne!(lab.show(&h0, "demo-worker")["InvocationID"], before.1);
    assert_eq!(lab.show(&h1, "demo-web")["InvocationID"], before.2);

    // A service that fails to start: false.
    let _undo = lab.undo_on_drop(&h0, "systemctl reset-failed demo-broken");
    let (st, b) = send(
        Method::POST,
        &local,
        &keys.operate,
        r#"{"operation_type":"start","services":["demo-broken"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, serde_json::json!({"demo-broken": false}));
    let (_, _, b) = call(Method::GET, &local, Some(&keys.read)).await;
    assert_eq!(b["demo-broken"]["status"], "FAILED", "{b}");
    lab.ssh(&h0, "systemctl reset-failed demo-broken");

    // Every host: true where all succeeded.
    let (st, b) = send(
        Method::POST,
        &s.url("/v1/services"),
        &keys.operate,
        r#"{"operation_type":"restart","services":["demo-web"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, serde_json::json!({"demo-web": true}));
    assert_ne!(lab.show(&h1, "demo-web")["InvocationID"], before.2);

    // A unit that fails on one host only: false for it, over all hosts;
    // and each name answers as sent, the same unit under two names too.
    lab.ssh(
        &h1,
        "mkdir -p /run/systemd/system/demo-idle.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' >/run/systemd/system/demo-idle.service.d/fail.conf && systemctl daemon-reload",
    );
    let _unfail = lab.undo_on_drop(
        &h1,
        "rm -rf /run/systemd/system/demo-idle.service.d; systemctl daemon-reload; systemctl reset-failed demo-idle",
    );
    let _stop = lab.undo_on_drop(&h0, "systemctl stop demo-idle");
    let (st, b) = send(
        Method::POST,
        &s.url("/v1/services"),
        &keys.operate,
        r#"{"operation_type":"start","services":["demo-web","demo-web.service","demo-idle"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b,
        serde_json::json!({"demo-web": true, "demo-web.service": true, "demo-idle": false})
    );
    assert_eq!(lab.show(&h0, "demo-idle")["ActiveState"], "active");

    // A required service on one host: refused before anything runs.
    let worker = lab.show(&h0, "demo-worker")["InvocationID"].clone();
    let (st, b) = send(
        Method::POST,
        &s.url("/v1/services"),
        &keys.operate,
        r#"{"operation_type":"stop","services":["demo-worker"]}"#,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert_error(st, &b);
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .contains("may cause the cluster to fail"),
        "{b}"
    );
    assert_eq!(lab.show(&h0, "demo-worker")["InvocationID"], worker);
    assert_eq!(lab.show(&h0, "demo-worker")["ActiveState"], "active");

    // A dry run answers the plan and changes nothing.
    let (st, b) = send(
        Method::POST,
        &format!("{local}?dry_run=true"),
        &keys.read,
        r#"{"operation_type":"stop","services":["demo-web"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["schema"], "drover.plan/1");
    assert_eq!(lab.show(&h0, "demo-web")["ActiveState"], "active");

    // Bad input: 400 naming it.
    let (st, b) = send(
        Method::POST,
        &local,
        &keys.operate,
        r#"{"operation_type":"reload","services":["demo-web"]}"#,
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert!(b["details"].as_str().unwrap().contains("`reload`"));
}

fn check_keys() -> BTreeSet<&'static str> {
    set(&[
        "Node",
        "CheckID",
        "Name",
        "Status",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "Type",
    ])
}

async fn health_text(s: &Server, key: &str, id: &str) -> (u16, String) {
    let r = client()
        .get(s.url(&format!("/v1/agent/health/service/id/{id}")))
        .header("X-Consul-Token", key)
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn consul_services_health_maintenance_and_registration() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path());
    let h0 = lab.host(0).to_string();
    let token = |m: Method, path: &str, key: &str| {
        client()
            .request(m, s.url(path))
            .header("X-Consul-Token", key.to_string())
    };

    // The services, by ID, in Consul's AgentService shape.
    let r = token(Method::GET, "/v1/agent/services", &keys.read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let all: Value = r.json().await.unwrap();
    let web = &all["demo-web"];
    assert_eq!(
        keys_of(web),
        set(&[
            "ID",
            "Service",
            "Tags",
            "Meta",
            "Port",
            "Address",
            "Weights",
            "EnableTagOverride"
        ]),
        "{web}"
    );
    assert_eq!(web["ID"], "demo-web");
    assert_eq!(web["Service"], "demo-web");
    assert_eq!(web["Tags"], serde_json::json!([]));
    assert_eq!(web["Port"], 0);
    assert_eq!(web["Address"], h0.as_str());
    assert_eq!(
        web["Weights"],
        serde_json::json!({"Passing": 1, "Warning": 1})
    );
    assert_eq!(web["EnableTagOverride"], false);
    assert_eq!(web["Meta"]["unit"], "demo-web.service");
    assert_eq!(web["Meta"]["status"], "RUNNING");
    assert_eq!(all["demo-worker"]["ID"], "demo-worker");
    let (st, _, one) = call(
        Method::GET,
        &s.url("/v1/agent/service/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(one["ID"], web["ID"]);
    assert_eq!(one["Meta"]["start_time"], web["Meta"]["start_time"]);
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/service/no-such-unit"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    assert_error(st, &b);

    // passing: 200, by name an array, by id an object.
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/name/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let arr = b.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(
        keys_of(&arr[0]),
        set(&["AggregatedStatus", "Service", "Checks"])
    );
    assert_eq!(arr[0]["AggregatedStatus"], "passing");
    assert_eq!(arr[0]["Service"]["ID"], "demo-web");
    let checks = arr[0]["Checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{b}");
    assert_eq!(keys_of(&checks[0]), check_keys());
    assert_eq!(checks[0]["CheckID"], "service:demo-web");
    assert_eq!(checks[0]["Status"], "passing");
    assert_eq!(checks[0]["Node"], h0.as_str());
    assert_eq!(checks[0]["Output"], "active (running)");
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/id/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(b["AggregatedStatus"], "passing");
    assert_eq!(
        health_text(&s, &keys.read, "demo-web").await,
        (200, "passing".into())
    );
    let r = token(
        Method::GET,
        "/v1/agent/health/service/name/demo-web?format=text",
        &keys.read,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "passing");
    for path in [
        "/v1/agent/health/service/name/no-such-unit",
        "/v1/agent/health/service/id/no-such-unit",
    ] {
        let (st, _, b) = call(Method::GET, &s.url(path), Some(&keys.read)).await;
        assert_eq!(st, 404, "{path}: {b}");
    }

    // critical: a unit that failed.
    let _broken = lab.undo_on_drop(&h0, "systemctl reset-failed demo-broken");
    let _ = lab.ssh_output(&h0, "systemctl start demo-broken");
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/id/demo-broken"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 503, "{b}");
    assert_eq!(b["AggregatedStatus"], "critical");
    assert_eq!(b["Checks"][0]["Output"], "failed (failed)");
    assert_eq!(
        health_text(&s, &keys.read, "demo-broken").await,
        (503, "critical".into())
    );
    lab.ssh(&h0, "systemctl reset-failed demo-broken");

    // Register a unit whose start takes minutes (warning while it
    // starts), through the unit module: the file on the host.
    let unit = "drover-compat-slow";
    let _slow = lab.undo_on_drop(
        &h0,
        &format!("systemctl stop {unit}; rm -f /etc/systemd/system/{unit}.service; systemctl daemon-reload"),
    );
    let content = "[Unit]\nDescription=drover test: starts slowly\n\n[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n";
    let body = serde_json::json!({"Name": unit, "Content": content}).to_string();
    let (st, b) = send(
        Method::PUT,
        &s.url("/v1/agent/service/register"),
        &keys.operate,
        &body,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = send(
        Method::PUT,
        &s.url("/v1/agent/service/register"),
        &keys.admin,
        &body,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["status"], "ok", "{b}");
    assert_eq!(
        lab.ssh(&h0, &format!("cat /etc/systemd/system/{unit}.service")),
        content
    );
    lab.ssh(&h0, &format!("systemctl start --no-block {unit}"));
    // --no-block returns once the job is queued; the unit is `activating`
    // only when systemd runs the job. Wait for that on the host (bounded).
    lab.ssh(
        &h0,
        &format!(
            "timeout 20 sh -c 'until [ \"$(systemctl show -P ActiveState {unit})\" = activating ]; do sleep 0.1; done'"
        ),
    );
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/v1/agent/health/service/name/{unit}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 429, "{b}");
    assert_eq!(b[0]["AggregatedStatus"], "warning");
    assert_eq!(b[0]["Checks"][0]["Output"], "activating (start)");
    assert_eq!(
        health_text(&s, &keys.read, unit).await,
        (429, "warning".into())
    );
    // Deregister: stopped, file gone.
    let (st, _, b) = call(
        Method::PUT,
        &s.url(&format!("/v1/agent/service/deregister/{unit}")),
        Some(&keys.admin),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["status"], "ok", "{b}");
    assert_eq!(
        lab.ssh(
            &h0,
            &format!("test -e /etc/systemd/system/{unit}.service && echo yes || echo no")
        ),
        "no\n"
    );
    let (st, _, _) = call(
        Method::GET,
        &s.url(&format!("/v1/agent/service/{unit}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 404);

    // Maintenance on: critical with the reason (persistent: the host's
    // file holds it); Consul's default reason; off: passing again.
    let _maint = lab.undo_on_drop(&h0, "rm -f /var/lib/drover/maintenance.json");
    let m = |q: &str| format!("/v1/agent/service/maintenance/demo-web?{q}");
    let r = token(
        Method::PUT,
        &m("enable=true&reason=disk%20swap"),
        &keys.read,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = token(
        Method::PUT,
        &m("enable=true&reason=disk%20swap"),
        &keys.operate,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/id/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 503, "{b}");
    assert_eq!(b["AggregatedStatus"], "critical");
    let checks = b["Checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{b}");
    assert_eq!(checks[0]["Status"], "passing");
    assert_eq!(keys_of(&checks[1]), check_keys());
    assert_eq!(checks[1]["CheckID"], "_service_maintenance:demo-web");
    assert_eq!(checks[1]["Status"], "critical");
    assert_eq!(checks[1]["Notes"], "disk swap");
    assert!(lab
        .ssh(&h0, "cat /var/lib/drover/maintenance.json")
        .contains("disk swap"));
    let r = token(Method::PUT, &m("enable=true"), &keys.operate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, b) = call(
        Method::GET,
        &s.url("/v1/agent/health/service/name/demo-web"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(
        b[0]["Checks"][1]["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );
    // A host-wide flag is Consul's node maintenance.
    lab.ssh(&h0, "true");
    let (code, _, err) = common::run(
        lab.drover()
            .args([
                "maintenance",
                "enable",
                "--target",
                &h0,
                "--reason",
                "rack move",
                "-i",
            ])
            .arg(&lab.inventory),
    );
    assert_eq!(code, 0, "{err}");
    // Written behind the server's back: no signal says so; the live
    // snapshot's next full read (--live-heal 1s) does. Polled, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let node = loop {
        let (_, _, b) = call(
            Method::GET,
            &s.url("/v1/agent/health/service/id/demo-web"),
            Some(&keys.read),
        )
        .await;
        let node = b["Checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["CheckID"] == "_node_maintenance"))
            .cloned();
        if let Some(node) = node {
            break node;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(node["Notes"], "rack move");
    assert_eq!(node["ServiceID"], "");
    let (code, _, err) = common::run(
        lab.drover()
            .args(["maintenance", "disable", "--target", &h0, "-i"])
            .arg(&lab.inventory),
    );
    assert_eq!(code, 0, "{err}");
    let r = token(Method::PUT, &m("enable=false"), &keys.operate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        health_text(&s, &keys.read, "demo-web").await,
        (200, "passing".into())
    );
    let (st, _, b) = call(
        Method::PUT,
        &s.url("/v1/agent/service/maintenance/no-such-unit?enable=true"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    let (st, _, b) = call(Method::PUT, &s.url(&m("enable=yes")), Some(&keys.operate)).await;
    assert_eq!(st, 400, "{b}");
}

/// A Redis operation past its `wait` is a 202 with the job's Location; on
/// a unit another job holds, a 409 naming that job.
#[tokio::test]
async fn redis_operations_answer_202_and_409_like_every_change() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h0 = lab.host(0).to_string();
    let _idle = lab.undo_on_drop(&h0, "systemctl stop demo-idle");
    let gate = common::Gate::new();
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("held.yml"),
        format!(
            "name: held\nsteps:\n  - id: hold\n    target: {h0}\n    service: {{ name: demo-idle, state: started }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n",
            gate.port
        ),
    )
    .unwrap();
    let inv = lab.inventory_with(dir.path(), &format!("  {h0}: {{}}\n"));
    let keys = Keys::make(dir.path(), &h0);
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--node",
            &h0,
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let (st, _, held) = call(
        Method::POST,
        &s.url("/runbook/held?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{held}");
    let held_id = held["job_id"].as_str().unwrap().to_string();
    gate.wait_reached();
    let local = s.url("/v1/local/services");

    let (st, b) = send(
        Method::POST,
        &format!("{local}?wait=1s"),
        &keys.operate,
        r#"{"operation_type":"restart","services":["demo-idle"]}"#,
    )
    .await;
    assert_eq!(st, 409, "{b}");
    assert_error(st, &b);
    assert!(b["details"].as_str().unwrap().contains(&held_id), "{b}");

    let worker = lab.show(&h0, "demo-worker")["InvocationID"].clone();
    let r = client()
        .post(format!("{local}?wait=0s"))
        .bearer_auth(&keys.operate)
        .body(r#"{"operation_type":"restart","services":["demo-worker"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let b: Value = r.json().await.unwrap();
    let id = b["job_id"].as_str().unwrap();
    assert_eq!(location, format!("/job/{id}"));
    // The event stream ends with the job.
    let events = client()
        .get(s.url(&format!("{location}/events")))
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
    let (_, _, report) = call(Method::GET, &s.url(&location), Some(&keys.read)).await;
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["results"][0]["status"], "ok", "{report}");
    assert_ne!(lab.show(&h0, "demo-worker")["InvocationID"], worker);

    gate.open();
    let events = client()
        .get(s.url(&format!("/job/{held_id}/events")))
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
}
