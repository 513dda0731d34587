//! The server's job history: paging over the reports in `--jobs-dir`,
//! scoped keys paging only through their jobs, the list rebuilt from the
//! directory after a restart, and expiry (`--keep-jobs`,
//! `--keep-jobs-for`) deleting finished jobs' files but never a running
//! job's. Reports are written straight into the jobs dir, as the server
//! writes them; a job is held running by a bus socket that accepts and
//! never answers.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

use reqwest::Method;

use crate::serve::start;
use crate::server::{call, client, Keys, Server};

/// The id of seeded job `i`.
fn id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// 2024-01-01T00:00:00Z: seeded job `i` starts `i` minutes after it.
const BASE: i64 = 1_704_067_200;

/// A finished job's report in `jobs`: job `i`, started at `BASE + i`
/// minutes and ended at `ended` (Unix seconds), with one result per host.
fn seed(jobs: &Path, i: usize, hosts: &[&str], outcome: &str, ended: i64) {
    std::fs::create_dir_all(jobs).unwrap();
    let results: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            serde_json::json!({"hostname": h, "status": "ok", "name": "demo-web.service",
                "changed": false, "step": "s", "action": "none", "duration_ms": 1})
        })
        .collect();
    let report = serde_json::json!({
        "job_id": id(i), "playbook": format!("seeded {i}"),
        "started_at": rfc3339(BASE + 60 * i as i64), "finished_at": rfc3339(ended),
        "outcome": outcome, "results": results,
    });
    std::fs::write(jobs.join(format!("{}.json", id(i))), report.to_string()).unwrap();
}

/// Seeded job `i`, ended a minute after it started.
fn seed_at(jobs: &Path, i: usize, hosts: &[&str], outcome: &str) {
    seed(jobs, i, hosts, outcome, BASE + 60 * i as i64 + 60);
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

/// `GET path` with `key`, which must answer 200 with a list: its ids.
async fn list(s: &Server, path: &str, key: &str) -> Vec<String> {
    let (st, _, b) = call(Method::GET, &s.url(path), Some(key)).await;
    assert_eq!(st, 200, "{path}: {b}");
    ids(&b)
}

/// The report files (`*.json`) in `jobs`, sorted.
fn reports(jobs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(jobs)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn pages_are_newest_first_after_the_status_filter() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    for i in 0..30 {
        let outcome = if i % 3 == 0 { "aborted" } else { "completed" };
        seed_at(&jobs, i, &["a", "b"], outcome);
    }
    let (s, keys) = start(dir.path(), &[]);
    let k = keys.read.as_str();
    let newest_first: Vec<String> = (0..30).rev().map(id).collect();
    assert_eq!(list(&s, "/job", k).await, newest_first);
    let mut paged = Vec::new();
    for offset in (0..35).step_by(7) {
        let page = list(&s, &format!("/job?limit=7&offset={offset}"), k).await;
        assert_eq!(
            page.len(),
            7.min(30usize.saturating_sub(offset)),
            "{offset}"
        );
        paged.extend(page);
    }
    assert_eq!(paged, newest_first);
    // The offset counts jobs of the asked status only.
    let aborted: Vec<String> = (0..30).rev().filter(|i| i % 3 == 0).map(id).collect();
    assert_eq!(
        list(&s, "/job?status=aborted&limit=3&offset=2", k).await,
        aborted[2..5]
    );
    assert!(list(&s, "/job?status=running", k).await.is_empty());
    assert!(list(&s, "/job?offset=30", k).await.is_empty());
    assert!(list(&s, "/job?limit=0", k).await.is_empty());
    // A listed job is its whole report.
    let (st, _, page) = call(Method::GET, &s.url("/job?limit=1&offset=29"), Some(k)).await;
    assert_eq!(st, 200);
    assert_eq!(page[0]["playbook"], "seeded 0", "{page}");
    assert_eq!(page[0]["outcome"], "aborted", "{page}");
    assert_eq!(
        page[0]["results"].as_array().map(Vec::len),
        Some(2),
        "{page}"
    );
}

/// The limited key may act on `a` only: it lists, pages and gets only the
/// jobs all of whose hosts are `a`.
#[tokio::test]
async fn a_scoped_key_pages_only_through_its_own_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let hosts: [&[&str]; 3] = [&["a"], &["b"], &["a", "b"]];
    for i in 0..12 {
        seed_at(&jobs, i, hosts[i % 3], "completed");
    }
    let (s, keys) = start(dir.path(), &[]);
    let on_a: Vec<String> = (0..12).rev().filter(|i| i % 3 == 0).map(id).collect();
    let k = keys.limited.as_str();
    assert_eq!(list(&s, "/job", k).await, on_a);
    assert_eq!(list(&s, "/job?limit=2&offset=1", k).await, on_a[1..3]);
    assert!(list(&s, "/job?offset=4", k).await.is_empty());
    for hidden in [1, 2] {
        let (st, _, b) = call(
            Method::GET,
            &s.url(&format!("/job/{}", id(hidden))),
            Some(k),
        )
        .await;
        assert_eq!(st, 404, "{b}");
    }
    let (st, _, b) = call(Method::GET, &s.url(&format!("/job/{}", id(3))), Some(k)).await;
    assert_eq!(
        (st, b["job_id"].as_str()),
        (200, Some(id(3).as_str())),
        "{b}"
    );
    assert_eq!(list(&s, "/job", &keys.admin).await.len(), 12);
}

#[tokio::test]
async fn a_restarted_server_lists_the_jobs_dir_again_and_applies_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    for i in 0..5 {
        seed_at(&jobs, i, &["a"], "completed");
    }
    let (s, keys) = start(dir.path(), &[]);
    let k = keys.operate.as_str();
    let (st, _, ran) = call(
        Method::POST,
        &s.url("/node/b/service/demo-worker/restart"),
        Some(k),
    )
    .await;
    assert_eq!(st, 200, "{ran}");
    let ran_id = ran["job_id"].as_str().unwrap().to_string();
    let before = list(&s, "/job", k).await;
    assert_eq!(before.len(), 6);
    assert_eq!(before[0], ran_id);
    assert_eq!(s.stop(), 0);

    // Each start makes new keys.
    let (s, keys) = start(dir.path(), &[]);
    let k = keys.operate.as_str();
    assert_eq!(list(&s, "/job", k).await, before);
    let (st, _, job) = call(Method::GET, &s.url(&format!("/job/{ran_id}")), Some(k)).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["results"], ran["results"]);
    assert_eq!(s.stop(), 0);

    // A lower bound at the next start deletes the jobs that ended first.
    let (s, keys) = start(dir.path(), &["--keep-jobs", "2"]);
    let k = keys.operate.as_str();
    assert_eq!(list(&s, "/job", k).await, [ran_id.clone(), id(4)]);
    assert_eq!(
        reports(&jobs),
        [format!("{}.json", id(4)), format!("{ran_id}.json")]
    );
    assert!(!jobs.join(format!("{}.json", id(3))).exists());
    let (st, _, b) = call(Method::GET, &s.url(&format!("/job/{}", id(3))), Some(k)).await;
    assert_eq!(st, 404, "{b}");
}

#[tokio::test]
async fn jobs_that_ended_longer_ago_than_keep_jobs_for_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let now = chrono::Utc::now().timestamp();
    // Job 0 ended 40 days ago, job 1 an hour ago; started in the order
    // of their ids all the same.
    seed(&jobs, 0, &["a"], "completed", now - 40 * 86_400);
    seed(&jobs, 1, &["a"], "completed", now - 3_600);
    let (s, keys) = start(dir.path(), &["--keep-jobs-for", "30d"]);
    assert_eq!(list(&s, "/job", &keys.read).await, [id(1)]);
    assert_eq!(reports(&jobs), [format!("{}.json", id(1))]);
    drop(s);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "-i", "x", "--keys", "y", "--keep-jobs", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keep-jobs"), "{err}");
}

/// A D-Bus socket that accepts connections and answers nothing until
/// released; then it closes them, and the host they were for fails.
struct StalledBus {
    reached: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl StalledBus {
    fn new(path: &Path) -> StalledBus {
        let listener = UnixListener::bind(path).unwrap();
        let (reached_tx, reached) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = reached_tx.send(());
            let _ = release_rx.recv();
            drop(listener);
            let _ = conn.shutdown(std::net::Shutdown::Both);
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        });
        StalledBus { reached, release }
    }
}

#[tokio::test]
async fn past_keep_jobs_the_first_finished_go_and_a_running_job_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let bus = dir.path().join("stalled.sock");
    let stalled = StalledBus::new(&bus);
    let inv = dir.path().join("inventory.yml");
    std::fs::write(
        &inv,
        format!(
            "defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-test-bus\nhosts:\n  held:\n    bus: unix:path={}\n    connect_timeout: 5m\n  b: {{}}\n",
            bus.display()
        ),
    )
    .unwrap();
    let keys = Keys::make(dir.path(), "held");
    for i in 0..4 {
        seed_at(&jobs, i, &["b"], "completed");
    }
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "--keep-jobs",
            "2",
        ],
        &dir.path().join("stderr"),
    );
    let k = keys.operate.as_str();
    assert_eq!(list(&s, "/job", k).await, [id(3), id(2)]);
    assert_eq!(
        reports(&jobs),
        [format!("{}.json", id(2)), format!("{}.json", id(3))]
    );

    let (st, _, held) = call(
        Method::POST,
        &s.url("/node/held/service/demo-web/restart?wait=0s"),
        Some(k),
    )
    .await;
    assert_eq!(st, 202, "{held}");
    let held = held["job_id"].as_str().unwrap().to_string();
    stalled
        .reached
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the held job connects to its bus");
    let mut quick = Vec::new();
    for _ in 0..3 {
        let (st, _, b) = call(
            Method::POST,
            &s.url("/node/b/service/demo-worker/restart"),
            Some(k),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        quick.push(b["job_id"].as_str().unwrap().to_string());
    }
    // Two finished jobs kept, plus the running one, oldest of all.
    assert_eq!(
        list(&s, "/job", k).await,
        [quick[2].clone(), quick[1].clone(), held.clone()]
    );
    assert_eq!(
        list(&s, "/job?status=running", k).await,
        std::slice::from_ref(&held)
    );
    let mut kept = vec![format!("{}.json", quick[1]), format!("{}.json", quick[2])];
    kept.sort();
    assert_eq!(reports(&jobs), kept);
    assert!(!jobs.join(format!("{}.json.journal", quick[0])).exists());
    assert!(jobs.join(format!("{held}.json.journal")).exists());

    // Released, it fails and ends: the last to finish, so it is kept and
    // the first of the quick ones to end goes.
    let _ = stalled.release.send(());
    let text = client()
        .get(s.url(&format!("/job/{held}/events")))
        .bearer_auth(k)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: done"), "{text}");
    assert_eq!(list(&s, "/job", k).await, [quick[2].clone(), held.clone()]);
    let mut kept = vec![format!("{}.json", quick[2]), format!("{held}.json")];
    kept.sort();
    assert_eq!(reports(&jobs), kept);
    let (st, _, b) = call(Method::GET, &s.url(&format!("/job/{held}")), Some(k)).await;
    assert_eq!((st, b["outcome"].as_str()), (200, Some("completed")), "{b}");
}
