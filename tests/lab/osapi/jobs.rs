//! The job routes over real jobs: a partial failure listed, counted,
//! shown and retried; a running job shown and not deleted until it ends.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use super::{
    client, common, error, job_detail, lab, send, serve, shape, Keys, Lab, Server,
    CREATE_JOB_RESPONSE, JOB_STATUSES, LIST_JOBS_RESPONSE,
};

/// Wait for job `id` to end: its event stream ends with it.
async fn ended(s: &Server, key: &str, id: &str) {
    let resp = client()
        .get(s.url(&format!("/job/{id}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: done"), "{text}");
}

/// A job's detail, its shape checked.
async fn job(s: &Server, key: &str, id: &str) -> Value {
    let (st, b) = send(s, Method::GET, &format!("/api/job/{id}"), Some(key), None).await;
    assert_eq!(st, 200, "{b}");
    job_detail(&b, "job");
    b
}

/// A page of `GET /api/job?QUERY`, its shape checked.
async fn jobs(s: &Server, key: &str, query: &str) -> Value {
    let (st, b) = send(
        s,
        Method::GET,
        &format!("/api/job?{query}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    shape(&b, LIST_JOBS_RESPONSE, "list");
    for w in JOB_STATUSES {
        assert!(b["status_counts"][w].is_u64(), "{w} counted: {b}");
    }
    for item in b["items"].as_array().unwrap() {
        job_detail(item, "list item");
    }
    b
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

/// A server whose runbook `idle` starts demo-idle on the first two hosts,
/// and the id of its job that failed on the second (where demo-idle cannot
/// start until `IDLE_FIXED`). The caller puts demo-idle back.
async fn partial_failure(lab: &Lab, dir: &Path, keys: &Keys) -> (Server, String) {
    let (h0, h1) = (lab.host(0), lab.host(1));
    std::fs::create_dir_all(dir.join("books")).unwrap();
    std::fs::write(
        dir.join("books/idle.yml"),
        format!("name: idle\nsteps:\n  - id: start-idle\n    target: [{h0}, {h1}]\n    service: {{ name: demo-idle, state: started }}\n"),
    )
    .unwrap();
    let s = serve(lab, dir, keys);
    lab.ssh(h1, common::IDLE_FAILS);
    let (st, report) = send(
        &s,
        Method::POST,
        "/runbook/idle?wait=2m",
        Some(&keys.operate),
        None,
    )
    .await;
    assert_eq!(st, 200, "{report}");
    let id = report["job_id"].as_str().unwrap().to_string();
    (s, id)
}

/// Set up a test of a partial failure: the lab's lock, demo-idle put back
/// on the first two hosts when done.
macro_rules! partial_failure_test {
    ($lab:ident, $dir:ident, $keys:ident, $s:ident, $id:ident, $h0:ident, $h1:ident) => {
        let Some($lab) = lab() else { return };
        let _l = $lab.lock();
        let ($h0, $h1) = ($lab.host(0).to_string(), $lab.host(1).to_string());
        let _undo: Vec<_> = [&$h0, &$h1]
            .iter()
            .map(|h| $lab.undo_on_drop(h, common::IDLE_RESET))
            .collect();
        let $dir = tempfile::tempdir().unwrap();
        let $keys = Keys::make($dir.path(), $lab.host(1));
        let ($s, $id) = partial_failure(&$lab, $dir.path(), &$keys).await;
    };
}

#[tokio::test]
async fn api_jobs_are_shown_listed_counted_and_paged() {
    partial_failure_test!(lab, dir, keys, s, id, h0, h1);
    let read = keys.read.as_str();
    let j = job(&s, read, &id).await;
    assert_eq!(
        (j["id"].as_str(), j["status"].as_str()),
        (Some(id.as_str()), Some("partial_failure")),
        "{j}"
    );
    assert_eq!(
        (
            j["operation"]["type"].as_str(),
            j["operation"]["data"]["playbook"].as_str()
        ),
        (Some("drover.playbook"), Some("idle")),
        "{j}"
    );
    assert_eq!(j["changed"], true, "{j}");
    assert!(j.get("hostname").is_none(), "two hosts: {j}");
    assert!(
        j["error"].as_str().unwrap().starts_with(&format!("{h1}: ")),
        "{j}"
    );
    assert!(
        j["created"].as_str().unwrap() <= j["updated_at"].as_str().unwrap(),
        "{j}"
    );
    let (r0, r1) = (&j["responses"][&h0], &j["responses"][&h1]);
    assert_eq!(
        (r0["status"].as_str(), r0["changed"].as_bool()),
        (Some("completed"), Some(true)),
        "{j}"
    );
    assert_eq!(r0["data"][0]["step"], "start-idle", "drover's results: {j}");
    assert_eq!(r1["status"], "failed", "{j}");
    assert!(r1["error"].is_string(), "{j}");

    // Listed, filtered, counted and paged.
    let all = jobs(&s, read, "limit=100").await;
    let counts: u64 = all["status_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(all["total_items"].as_u64(), Some(counts), "{all}");
    assert!(ids(&all).contains(&id), "{all}");
    let partial = jobs(&s, read, "status=partial_failure&limit=100").await;
    assert!(ids(&partial).contains(&id), "{partial}");
    assert_eq!(
        partial["total_items"], all["status_counts"]["partial_failure"],
        "{partial}"
    );
    assert!(partial["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "partial_failure"));
    assert!(!ids(&jobs(&s, read, "status=completed&limit=100").await).contains(&id));
    let (first, second) = (
        jobs(&s, read, "limit=1").await,
        jobs(&s, read, "limit=1&offset=1").await,
    );
    assert_eq!(
        (ids(&first).len(), first["total_items"].clone()),
        (1, all["total_items"].clone())
    );
    assert_ne!(ids(&first), ids(&second), "offset pages");
    // A key limited to h1 cannot see a job that touched h0.
    let (st, b) = send(
        &s,
        Method::GET,
        &format!("/api/job/{id}"),
        Some(&keys.limited),
        None,
    )
    .await;
    assert_eq!(st, 404, "{b}");
    error(st, &b, "scoped");
}

#[tokio::test]
async fn api_retry_runs_again_what_failed_on_the_hosts_asked() {
    partial_failure_test!(lab, dir, keys, s, id, h0, h1);
    let (read, op) = (keys.read.as_str(), keys.operate.as_str());
    let h2 = lab.host(2).to_string();
    // Retry, narrowed to h0 (which ended ok): h1 is not run again.
    lab.ssh(&h1, common::IDLE_FIXED);
    let h0_idle = lab.invocation(&h0, "demo-idle");
    let body = format!(r#"{{"target_hostname":"{h0}"}}"#);
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{id}/retry"),
        Some(op),
        Some(&body),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    shape(&b, CREATE_JOB_RESPONSE, "retry");
    assert_eq!(
        lab.show(&h1, "demo-idle")["ActiveState"],
        "inactive",
        "h1 not retried"
    );
    // Then all of it: only h1 runs, and ends ok.
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{id}/retry"),
        Some(op),
        Some("{}"),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    shape(&b, CREATE_JOB_RESPONSE, "retry");
    let new = b["job_id"].as_str().unwrap().to_string();
    ended(&s, read, &new).await;
    assert_eq!(
        lab.show(&h1, "demo-idle")["ActiveState"],
        "active",
        "h1 retried"
    );
    assert_eq!(
        lab.invocation(&h0, "demo-idle"),
        h0_idle,
        "h0 ended ok: not touched"
    );
    let j = job(&s, read, &new).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["operation"]["data"]["retry_of"].as_str()
        ),
        (Some("completed"), Some(id.as_str())),
        "{j}"
    );
    // Who may not retry, and what cannot be.
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{id}/retry"),
        Some(read),
        None,
    )
    .await;
    assert_eq!(st, 403, "{b}");
    error(st, &b, "retry by read");
    let (st, adhoc) = send(
        &s,
        Method::POST,
        &format!("/api/node/{h2}/service/demo-worker/restart"),
        Some(op),
        None,
    )
    .await;
    assert_eq!(st, 200, "{adhoc}");
    let adhoc = adhoc["job_id"].as_str().unwrap();
    assert_eq!(
        job(&s, read, adhoc).await["hostname"],
        h2.as_str(),
        "one host"
    );
    let (st, b) = send(
        &s,
        Method::POST,
        &format!("/api/job/{adhoc}/retry"),
        Some(op),
        None,
    )
    .await;
    assert_eq!(st, 409, "{b}");
    error(st, &b, "retry of an ad-hoc job");
}

#[tokio::test]
async fn api_a_running_job_is_processing_and_deleted_only_once_ended() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let h2 = lab.host(2).to_string();
    let gate = common::Gate::new();
    std::fs::create_dir_all(dir.path().join("books")).unwrap();
    std::fs::write(
        dir.path().join("books/hold.yml"),
        format!("name: hold\nsteps:\n  - id: hold\n    target: {h2}\n    service: {{ name: demo-worker, state: restarted }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n", gate.port),
    )
    .unwrap();
    let s = serve(&lab, dir.path(), &keys);
    let (read, op) = (keys.read.as_str(), keys.operate.as_str());
    let (st, b) = send(&s, Method::POST, "/runbook/hold?wait=0s", Some(op), None).await;
    assert_eq!(st, 202, "{b}");
    let held = b["job_id"].as_str().unwrap().to_string();
    gate.wait_reached();
    let j = job(&s, read, &held).await;
    assert_eq!(j["status"], "processing", "{j}");
    assert!(j.get("changed").is_none(), "not known while it runs: {j}");
    assert!(ids(&jobs(&s, read, "status=processing").await).contains(&held));
    let (st, b) = send(
        &s,
        Method::DELETE,
        &format!("/api/job/{held}"),
        Some(op),
        None,
    )
    .await;
    assert_eq!(st, 409, "{b}");
    error(st, &b, "delete while running");
    gate.open();
    ended(&s, read, &held).await;
    for (key, want) in [(read, 403), (op, 204), (op, 404)] {
        let (st, b) = send(
            &s,
            Method::DELETE,
            &format!("/api/job/{held}"),
            Some(key),
            None,
        )
        .await;
        assert_eq!(st, want, "{b}");
        if want != 204 {
            error(st, &b, "delete");
        }
    }
    let (st, _) = send(
        &s,
        Method::GET,
        &format!("/api/job/{held}"),
        Some(read),
        None,
    )
    .await;
    assert_eq!(st, 404);
    assert!(!ids(&jobs(&s, read, "limit=100").await).contains(&held));
}
