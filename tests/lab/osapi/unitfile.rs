//! The unit-file routes: objects of `--objects` written, left alone,
//! replaced and removed as osapi's create, update and delete do.

use reqwest::Method;
use serde_json::Value;

use super::{
    error, lab, send, serve, service_response, Keys, Lab, Server, SERVICE_GET_ENTRY,
    SERVICE_MUTATION_ENTRY,
};

/// The file of a unit on a host, or None.
fn unit_file(lab: &Lab, host: &str, unit: &str) -> Option<String> {
    let out = lab.ssh_output(host, &format!("cat /etc/systemd/system/{unit}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `POST /api/node/{host}/service` of `osapi-demo` from `object`.
async fn create(s: &Server, key: &str, host: &str, object: &str) -> (u16, Value) {
    let body = format!(r#"{{"name":"osapi-demo","object":"{object}"}}"#);
    send(
        s,
        Method::POST,
        &format!("/api/node/{host}/service"),
        Some(key),
        Some(&body),
    )
    .await
}

/// `PUT /api/node/{host}/service/osapi-demo` from `object`.
async fn update(s: &Server, key: &str, host: &str, object: &str) -> (u16, Value) {
    let body = format!(r#"{{"object":"{object}"}}"#);
    send(
        s,
        Method::PUT,
        &format!("/api/node/{host}/service/osapi-demo"),
        Some(key),
        Some(&body),
    )
    .await
}

/// A mutation's entries as (host, status, changed), its shape checked.
fn entries(b: &Value) -> Vec<(String, String, Option<bool>)> {
    service_response(b, SERVICE_MUTATION_ENTRY, "unit file");
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["name"], "osapi-demo", "as sent: {b}");
            (
                r["hostname"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["changed"].as_bool(),
            )
        })
        .collect()
}

fn ok(h: &str, changed: bool) -> (String, String, Option<bool>) {
    (h.to_string(), "ok".to_string(), Some(changed))
}

#[tokio::test]
async fn api_unit_files_come_from_the_object_store() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let s = serve(&lab, dir.path(), &keys);
    let (h0, h1, h2) = (
        lab.host(0).to_string(),
        lab.host(1).to_string(),
        lab.host(2).to_string(),
    );
    // The first two hosts, by label (eu.west.1, eu.west.2), not the third.
    let pair = &format!("region:eu.west,!{h2}");
    let v1 = "[Unit]\nDescription=osapi demo v1\n[Service]\nExecStart=/bin/sleep infinity\n";
    let v2 = "[Unit]\nDescription=osapi demo v2\n[Service]\nExecStart=/bin/sleep infinity\n";
    std::fs::write(dir.path().join("objects/demo-v1.service"), v1).unwrap();
    std::fs::write(dir.path().join("objects/demo-v2.service"), v2).unwrap();
    let cleanup = "systemctl stop osapi-demo 2>/dev/null; rm -f /etc/systemd/system/osapi-demo.service; systemctl daemon-reload";
    let _undo: Vec<_> = [&h0, &h1]
        .iter()
        .map(|h| lab.undo_on_drop(h, cleanup))
        .collect();
    let admin = keys.admin.as_str();

    // Refused: a path for an object, a missing object, a non-admin key.
    for (object, key, want) in [
        ("../demo-v1.service", admin, 400),
        ("/etc/passwd", admin, 400),
        ("nosuch", admin, 400),
        ("demo-v1.service", keys.operate.as_str(), 403),
    ] {
        let (st, b) = create(&s, key, &h0, object).await;
        assert_eq!(st, want, "{object}: {b}");
        error(st, &b, object);
    }
    assert_eq!(
        unit_file(&lab, &h0, "osapi-demo.service"),
        None,
        "nothing was written"
    );

    // Create, then create again: written once, then left alone.
    let (st, b) = create(&s, admin, &h0, "demo-v1.service").await;
    assert_eq!((st, entries(&b)), (200, vec![ok(&h0, true)]), "{b}");
    assert_eq!(
        unit_file(&lab, &h0, "osapi-demo.service").as_deref(),
        Some(v1)
    );
    assert_eq!(
        lab.show(&h0, "osapi-demo")["LoadState"],
        "loaded",
        "daemon-reloaded"
    );
    let (st, b) = create(&s, admin, &h0, "demo-v2.service").await;
    assert_eq!((st, entries(&b)), (200, vec![ok(&h0, false)]), "{b}");
    assert!(b.get("job_id").is_none(), "no host needed a job: {b}");
    assert_eq!(
        unit_file(&lab, &h0, "osapi-demo.service").as_deref(),
        Some(v1),
        "create leaves a file alone"
    );

    // Update: where there is no file, 404; on a pair with one, that host
    // changes and the other fails.
    let (st, b) = update(&s, admin, &h2, "demo-v2.service").await;
    assert_eq!(st, 404, "{b}");
    error(st, &b, "update without a file");
    let (st, b) = update(&s, admin, pair, "demo-v2.service").await;
    assert_eq!(st, 200, "{b}");
    let failed = (h1.clone(), "failed".to_string(), None);
    assert_eq!(entries(&b), [ok(&h0, true), failed], "{b}");
    assert!(
        b["results"][1]["error"].as_str().unwrap().contains("POST"),
        "{b}"
    );
    assert_eq!(
        unit_file(&lab, &h0, "osapi-demo.service").as_deref(),
        Some(v2)
    );
    let (st, b) = update(&s, admin, &h0, "demo-v2.service").await;
    assert_eq!((st, entries(&b)), (200, vec![ok(&h0, false)]), "{b}");

    // Create on the pair: the new host gets v1, the other keeps v2.
    let (st, b) = create(&s, admin, pair, "demo-v1.service").await;
    assert_eq!(
        (st, entries(&b)),
        (200, vec![ok(&h0, false), ok(&h1, true)]),
        "{b}"
    );
    assert!(b["job_id"].is_string(), "{b}");
    assert_eq!(
        unit_file(&lab, &h1, "osapi-demo.service").as_deref(),
        Some(v1)
    );
    let (st, b) = send(
        &s,
        Method::GET,
        &format!("/api/node/{pair}/service/osapi-demo"),
        Some(&keys.read),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    service_response(&b, SERVICE_GET_ENTRY, "get");
    let descs: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service"]["description"].as_str().unwrap())
        .collect();
    assert_eq!(descs, ["osapi demo v2", "osapi demo v1"], "{b}");

    // Started, then deleted: stopped and removed; deleted again: unchanged.
    let path = |h: &str, rest: &str| format!("/api/node/{h}/service/osapi-demo{rest}");
    let (st, b) = send(&s, Method::POST, &path(&h0, "/start"), Some(admin), None).await;
    assert_eq!((st, entries(&b)), (200, vec![ok(&h0, true)]), "{b}");
    let (st, b) = send(
        &s,
        Method::DELETE,
        &path(&h0, ""),
        Some(&keys.operate),
        None,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    error(st, &b, "delete by operate");
    let (st, b) = send(&s, Method::DELETE, &path(pair, ""), Some(admin), None).await;
    assert_eq!(
        (st, entries(&b)),
        (200, vec![ok(&h0, true), ok(&h1, true)]),
        "{b}"
    );
    for h in [&h0, &h1] {
        assert_eq!(unit_file(&lab, h, "osapi-demo.service"), None, "{h}");
        assert_eq!(lab.show(h, "osapi-demo")["ActiveState"], "inactive", "{h}");
    }
    let (st, b) = send(&s, Method::DELETE, &path(&h0, ""), Some(admin), None).await;
    assert_eq!((st, entries(&b)), (200, vec![ok(&h0, false)]), "{b}");
}
