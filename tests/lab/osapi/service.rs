//! The node service routes: reads (every field of every entry against
//! systemd's own answer) and the five actions, checked on the hosts.

use reqwest::Method;

use super::{
    described, error, lab, send, serve, service_response, Keys, SERVICE_GET_ENTRY,
    SERVICE_LIST_ENTRY, SERVICE_MUTATION_ENTRY,
};

#[tokio::test]
async fn api_service_reads_answer_in_osapis_shapes() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let s = serve(&lab, dir.path(), &keys);
    let h0 = lab.host(0).to_string();
    let read = Some(keys.read.as_str());

    // Every host, every loaded service.
    let (st, b) = send(&s, Method::GET, "/api/node/_all/service", read, None).await;
    assert_eq!(st, 200, "{b}");
    service_response(&b, SERVICE_LIST_ENTRY, "list");
    assert!(b.get("job_id").is_none(), "a read is no job: {b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), lab.len());
    let (desc, pid) = described(&lab, &h0, "demo-web");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            (r["hostname"].as_str(), r["status"].as_str()),
            (Some(lab.host(i)), Some("ok")),
            "{r}"
        );
        let find = |u: &str| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == u)
                .cloned()
        };
        let web = find("demo-web.service").expect("demo-web listed");
        assert_eq!(
            (web["status"].as_str(), web["enabled"].as_bool()),
            (Some("active"), Some(true)),
            "{web}"
        );
        assert_eq!(web["description"], desc.as_str(), "{web}");
    }
    assert_eq!(
        results[0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "demo-web.service")
            .unwrap()["pid"]
            .to_string(),
        pid
    );

    // A stopped, disabled unit (loaded to be read: the list shows loaded
    // units only, as osapi's `systemctl list-units --all` does).
    let (st, b) = send(
        &s,
        Method::GET,
        &format!("/api/node/{h0}/service/demo-idle"),
        read,
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    service_response(&b, SERVICE_GET_ENTRY, "get");
    let idle = &b["results"][0]["service"];
    assert_eq!(
        (
            idle["name"].as_str(),
            idle["status"].as_str(),
            idle["enabled"].as_bool()
        ),
        (Some("demo-idle"), Some("inactive"), Some(false)),
        "{b}"
    );
    assert!(idle.get("pid").is_none(), "a stopped unit has no pid: {b}");
    // One service, by label (drover's targets are osapi's `hostname`).
    let (st, b) = send(
        &s,
        Method::GET,
        "/api/node/role:web/service/demo-web",
        read,
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    service_response(&b, SERVICE_GET_ENTRY, "get");
    let results = b["results"].as_array().unwrap();
    assert!(
        !results.is_empty()
            && results
                .iter()
                .all(|r| r["status"] == "ok" && r["service"]["name"] == "demo-web"),
        "{b}"
    );
    for (path, key, want) in [
        (format!("/api/node/{h0}/service/no-such-unit"), read, 404),
        ("/api/node/no-such-host/service".to_string(), read, 400),
        (
            format!("/api/node/{h0}/service"),
            Some(keys.limited.as_str()),
            403,
        ),
        (format!("/api/node/{h0}/service"), None, 401),
    ] {
        let (st, b) = send(&s, Method::GET, &path, key, None).await;
        assert_eq!(st, want, "{path}: {b}");
        error(st, &b, &path);
    }
}

#[tokio::test]
async fn api_service_actions_change_real_units_and_answer_in_osapis_shapes() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let s = serve(&lab, dir.path(), &keys);
    let (h0, h1) = (lab.host(0).to_string(), lab.host(1).to_string());
    let read = Some(keys.read.as_str());

    // The five actions, each checked on the host.
    let _undo = lab.undo_on_drop(
        &h0,
        "systemctl disable -q demo-idle; systemctl stop demo-idle",
    );
    let op = Some(keys.operate.as_str());
    let before = lab.invocation(&h0, "demo-web");
    let act = |unit: &'static str, action: &'static str| {
        let path = format!("/api/node/{h0}/service/{unit}/{action}");
        let s = &s;
        async move { send(s, Method::POST, &path, op, None).await }
    };
    let (st, b) = act("demo-web", "restart").await;
    assert_eq!(st, 200, "{b}");
    service_response(&b, SERVICE_MUTATION_ENTRY, "restart");
    assert!(b["job_id"].is_string(), "{b}");
    let r = &b["results"][0];
    assert_eq!(
        (
            r["hostname"].as_str(),
            r["status"].as_str(),
            r["name"].as_str(),
            r["changed"].as_bool()
        ),
        (Some(h0.as_str()), Some("ok"), Some("demo-web"), Some(true)),
        "{b}"
    );
    assert_ne!(lab.invocation(&h0, "demo-web"), before, "restarted");
    for (action, state, key, value) in [
        ("start", true, "ActiveState", "active"),
        ("start", false, "ActiveState", "active"),
        ("stop", true, "ActiveState", "inactive"),
        ("stop", false, "ActiveState", "inactive"),
        ("enable", true, "UnitFileState", "enabled"),
        ("enable", false, "UnitFileState", "enabled"),
        ("disable", true, "UnitFileState", "disabled"),
    ] {
        let (st, b) = act("demo-idle.service", action).await;
        assert_eq!(st, 200, "{action}: {b}");
        service_response(&b, SERVICE_MUTATION_ENTRY, action);
        assert_eq!(b["results"][0]["name"], "demo-idle.service", "as sent: {b}");
        assert_eq!(b["results"][0]["changed"], state, "{action}: {b}");
        assert_eq!(lab.show(&h0, "demo-idle")[key], value, "{action}");
    }
    // Who may not, and what is no action.
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/node/{h0}/service/demo-web/restart"),
        read,
        None,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    error(st, &b, "read key");
    let (st, b) = act("demo-web", "reload").await;
    assert_eq!(st, 404, "{b}");
    error(st, &b, "reload");
    // `_any` for a key limited to one host picks that host.
    let (st, b) = send(
        &s,
        Method::POST,
        "/api/node/_any/service/demo-worker/restart",
        Some(&keys.limited),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["results"][0]["hostname"], h1.as_str(), "{b}");
}
