//! Retry and resume on the lab's real hosts: a retry touches only the hosts
//! that did not end ok, a resume after SIGKILL finishes the roll without
//! restarting a host twice, and their plans predict what they do. Every
//! "not touched" is an InvocationID read from systemd inside the host.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::server;
use common::{lab, run, Lab};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// (step, host) -> (status, changed, kind) of a report's or a plan's results.
fn by_pair(results: &Value) -> BTreeMap<(String, String), (String, bool, String)> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["step"].as_str().unwrap().to_string(),
                    r["hostname"].as_str().unwrap().to_string(),
                ),
                (
                    r["status"].as_str().unwrap().to_string(),
                    r["changed"].as_bool().unwrap(),
                    r["kind"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn plan_results(plan: &Value) -> Value {
    Value::Array(
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["results"].as_array().unwrap().clone())
            .collect(),
    )
}

/// demo-web's InvocationID on each host.
fn web_invocations(lab: &Lab, hosts: &[&str]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| lab.invocation(h, "demo-web"))
        .collect()
}

/// After a resume of the roll over `hosts` that was killed while the
/// second host waited at its gate: the first (done before the kill) and
/// the second (its restart had happened) were not restarted again, the
/// third was restarted by the resume.
fn assert_no_restart_repeated(lab: &Lab, hosts: &[&str], before: &[String], mid: &[String]) {
    let after = web_invocations(lab, hosts);
    assert_eq!(
        after[0], mid[0],
        "a, done before the kill, was not restarted again"
    );
    assert_eq!(after[1], mid[1], "b's restart had happened: not repeated");
    assert_ne!(after[2], before[2], "c was restarted by the resume");
}

/// A loopback HTTP endpoint for `wait.http` that answers at once, except
/// for requests naming `hold` in their path: those are announced and held
/// until the test lets them go (dropping the gate lets them go too).
struct HostGate {
    port: u16,
    reached: mpsc::Receiver<()>,
    release: Option<mpsc::Sender<()>>,
}

impl HostGate {
    fn new(hold: &str) -> HostGate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (reached_tx, reached) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let hold = format!("/{hold} ");
        std::thread::spawn(move || {
            let mut released = false;
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { break };
                let mut buf = [0u8; 2048];
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !released && head.contains(&hold) {
                    let _ = reached_tx.send(());
                    // Held until released or the gate is dropped.
                    let _ = release_rx.recv();
                    released = true;
                }
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        HostGate {
            port,
            reached,
            release: Some(release),
        }
    }

    fn wait_reached(&self) {
        self.reached
            .recv_timeout(Duration::from_secs(60))
            .expect("the run never reached the held host's gate");
    }

    fn open(&mut self) {
        self.release.take();
    }
}

/// A rolling restart of demo-web over `hosts`, one at a time, each passing
/// the gate before the next starts.
fn roll(hosts: &[&str], port: u16) -> String {
    format!(
        "name: roll\nsteps:\n  - id: roll\n    target: [{}]\n    serial: 1\n    service: {{ name: demo-web, state: restarted }}\n    wait: {{ http: \"http://127.0.0.1:{port}/{{{{ host.name }}}}\", timeout: 60s }}\n  - id: after\n    target: [{}]\n    service: {{ name: demo-worker, state: started }}\n",
        hosts.join(", "),
        hosts.join(", ")
    )
}

#[test]
fn retry_touches_only_the_failed_and_the_unreachable_host() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    lab.restore_baseline();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (lab.host(0), lab.host(1), lab.host(2));
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {a}: {{ address: {a} }}\n  {b}: {{ address: {b} }}\n  {c}: {{ address: {c} }}\n  lab-gone: {{ address: 127.0.0.1, port: 1 }}\n"),
    );
    // demo-idle cannot start on b: its start fails there only.
    lab.ssh(b, common::IDLE_FAILS);
    let _undo = lab.undo_on_drop(b, common::IDLE_RESET);
    let _undo_a = lab.undo_on_drop(a, "systemctl stop demo-idle");
    let _undo_c = lab.undo_on_drop(c, "systemctl stop demo-idle");
    let pb = write(
        dir.path(),
        "retry.yml",
        &format!("name: retry\nsteps:\n  - id: restart-web\n    target: [{a}, {b}, {c}, lab-gone]\n    service: {{ name: demo-web, state: restarted }}\n  - id: start-idle\n    target: [{a}, {b}, {c}, lab-gone]\n    service: {{ name: demo-idle, state: started }}\n"),
    );
    let first = dir.path().join("first.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&inv)
        .arg(&pb)
        .arg("--report")
        .arg(&first));
    assert_ne!(code, 0, "{err}");
    let report: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    let got = by_pair(&report["results"]);
    assert_eq!(
        got[&("start-idle".into(), b.into())].0,
        "failed",
        "{report}"
    );
    assert_eq!(
        got[&("restart-web".into(), "lab-gone".into())].2,
        "unreachable"
    );
    assert!(report["inputs"]["playbook"].is_string(), "{report}");

    // b can start demo-idle now; the ghost is still gone.
    lab.ssh(b, common::IDLE_FIXED);
    let units = ["demo-web", "demo-idle", "demo-worker"];
    let before: BTreeMap<(String, &str), String> = [a, b, c]
        .iter()
        .flat_map(|h| {
            units
                .iter()
                .map(move |u| ((h.to_string(), *u), String::new()))
        })
        .map(|((h, u), _)| ((h.clone(), u), lab.invocation(&h, u)))
        .collect();

    let (code, plan_out, err) = run(lab
        .drover()
        .args(["plan", "--format", "json", "-i"])
        .arg(&inv)
        .arg(&pb)
        .arg("--retry")
        .arg(&first));
    assert_eq!(code, 4, "the ghost is still unreachable\n{err}");
    let plan: Value = serde_json::from_str(&plan_out).unwrap();

    let second = dir.path().join("second.json");
    let (code, _, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&inv)
        .arg(&pb)
        .arg("--report")
        .arg(&second)
        .arg("--retry")
        .arg(&first));
    assert_eq!(code, 4, "the ghost is still unreachable\n{err}");
    let retried: Value = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(retried["retry_of"], report["job_id"]);
    assert_ne!(retried["job_id"], report["job_id"]);
    let got = by_pair(&retried["results"]);
    // b ran again from its failed step only: its restart stands.
    assert_eq!(
        got[&("start-idle".into(), b.into())],
        ("ok".into(), true, String::new())
    );
    let b_restart = retried["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == "restart-web" && r["hostname"] == b)
        .unwrap();
    assert_eq!(b_restart["carried_from"], report["job_id"], "{b_restart}");
    assert_eq!(
        got[&("restart-web".into(), "lab-gone".into())].2,
        "unreachable"
    );
    // Every step × host once, as many as the first run had.
    assert_eq!(got.len(), by_pair(&report["results"]).len());
    for h in [a, b, c] {
        for u in units {
            let now = lab.invocation(h, u);
            let was = &before[&(h.to_string(), u)];
            if h == b && u == "demo-idle" {
                assert_ne!(&now, was, "b's demo-idle was started by the retry");
            } else {
                assert_eq!(&now, was, "{h} {u} was touched by the retry");
            }
        }
    }
    // The preview said exactly this.
    let planned = by_pair(&plan_results(&plan));
    for (pair, (status, _, kind)) in &got {
        let p = planned
            .get(pair)
            .unwrap_or_else(|| panic!("{pair:?} not in the plan"));
        assert_eq!(
            (&p.0, &p.2),
            (status, kind),
            "{pair:?}: plan {p:?}, apply {status} {kind}"
        );
    }
    assert_eq!(planned.len(), got.len());

    // A changed playbook is refused, naming what changed; nothing runs.
    std::fs::write(&pb, std::fs::read_to_string(&pb).unwrap() + "# edited\n").unwrap();
    let (code, _, err) = run(lab
        .drover()
        .args(["apply", "-i"])
        .arg(&inv)
        .arg(&pb)
        .arg("--retry")
        .arg(&first));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the playbook changed"), "{err}");
    assert!(err.contains("--retry-changed"), "{err}");
}

#[test]
fn resume_after_sigkill_mid_roll_restarts_no_host_twice() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    lab.restore_baseline();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (lab.host(0), lab.host(1), lab.host(2));
    let mut gate = HostGate::new(b);
    let pb = write(dir.path(), "roll.yml", &roll(&[a, b, c], gate.port));
    let report = dir.path().join("roll.json");
    let before: Vec<String> = web_invocations(&lab, &[a, b, c]);
    let mut child = lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // a is done; b restarted and waits at its gate: kill the run there.
    gate.wait_reached();
    child.kill().unwrap();
    child.wait().unwrap();
    gate.open();
    assert!(!report.exists(), "a killed run writes no report");
    let journal = drover::engine::journal::Journal::beside(&report);
    let mid: Vec<String> = web_invocations(&lab, &[a, b, c]);
    assert_ne!(mid[0], before[0]);
    assert_ne!(mid[1], before[1], "b's restart happened before the kill");
    assert_eq!(mid[2], before[2]);

    // The preview: a kept, b and c to do.
    let (code, plan_out, err) = run(lab
        .drover()
        .args(["plan", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--resume")
        .arg(&journal));
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&plan_out).unwrap();
    let planned = by_pair(&plan_results(&plan));

    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--resume")
        .arg(&journal));
    assert_eq!(code, 0, "{err}\n{out}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        printed["job_id"], saved["job_id"],
        "the resume writes the run's report"
    );
    assert_eq!(saved["outcome"], "completed");
    assert_no_restart_repeated(&lab, &[a, b, c], &before, &mid);
    let got = by_pair(&saved["results"]);
    assert_eq!(got.len(), 6, "every step × host once: {saved}");
    for h in [a, b, c] {
        assert_eq!(got[&("roll".into(), h.into())].0, "ok");
        assert!(
            got[&("roll".into(), h.into())].1,
            "{h}: the restart changed it"
        );
    }
    // The plan predicted the resume's statuses.
    for (pair, (status, _, kind)) in &got {
        let p = planned
            .get(pair)
            .unwrap_or_else(|| panic!("{pair:?} not in the plan"));
        assert_eq!((&p.0, &p.2), (status, kind), "{pair:?}");
    }
    // A finished run is not resumed again.
    let (code, _, err) = run(lab
        .drover()
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--resume")
        .arg(&journal));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing to resume"), "{err}");
}

async fn post(s: &server::Server, path: &str, key: &str) -> (u16, Value) {
    let (st, _, body) = server::call(reqwest::Method::POST, &s.url(path), Some(key)).await;
    (st, body)
}

#[tokio::test]
async fn serve_resumes_a_job_after_kill_9_and_retries_only_failed_hosts() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    lab.restore_baseline();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (lab.host(0), lab.host(1), lab.host(2));
    // The limited key sees only c: jobs on a and b are not its to see.
    let keys = server::Keys::make(dir.path(), c);
    let mut gate = HostGate::new(b);
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(books.join("roll.yml"), roll(&[a, b, c], gate.port)).unwrap();
    std::fs::write(
        books.join("idle.yml"),
        format!("name: idle\nsteps:\n  - id: start-idle\n    target: [{a}, {b}]\n    service: {{ name: demo-idle, state: started }}\n"),
    )
    .unwrap();
    let _undo_a = lab.undo_on_drop(a, "systemctl stop demo-idle");
    let _undo_b = lab.undo_on_drop(b, common::IDLE_RESET);
    let s = crate::serve::serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let before: Vec<String> = web_invocations(&lab, &[a, b, c]);

    let (st, started) = post(&s, "/runbook/roll?wait=0s", &keys.operate).await;
    assert_eq!(st, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    gate.wait_reached();
    // Running: neither resumed nor retried.
    for what in ["resume", "retry"] {
        let (st, body) = post(&s, &format!("/job/{id}/{what}"), &keys.operate).await;
        assert_eq!(st, 409, "{what} of a running job: {body}");
        server::assert_error(st, &body);
    }
    let mid: Vec<String> = web_invocations(&lab, &[a, b, c]);
    assert_ne!(mid[1], before[1], "b restarted and waits at its gate");
    s.signal(libc::SIGKILL);
    drop(s);
    gate.open();

    let s = crate::serve::serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (st, _, view) = server::call(
        reqwest::Method::GET,
        &s.url(&format!("/job/{id}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(view["outcome"], "interrupted", "{view}");
    // Who may not: a read key (403), a key that cannot see the job (404),
    // an unknown job (404), a dry run (400).
    let (st, body) = post(&s, &format!("/job/{id}/resume"), &keys.read).await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = post(&s, &format!("/job/{id}/resume"), &keys.limited).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = post(&s, "/job/no-such-job/resume", &keys.operate).await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = post(&s, &format!("/job/{id}/resume?dry_run=true"), &keys.operate).await;
    assert_eq!(st, 400, "{body}");

    let (st, report) = post(&s, &format!("/job/{id}/resume?wait=2m"), &keys.operate).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["job_id"], id.as_str(), "the same job, continued");
    assert_eq!(report["outcome"], "completed", "{report}");
    let got = by_pair(&report["results"]);
    assert_eq!(got.len(), 6, "every step × host once: {report}");
    assert_no_restart_repeated(&lab, &[a, b, c], &before, &mid);
    let (st, body) = post(&s, &format!("/job/{id}/resume"), &keys.operate).await;
    assert_eq!(st, 409, "nothing left to resume: {body}");

    // Retry: b cannot start demo-idle at first; after the fix only b runs.
    lab.ssh(b, common::IDLE_FAILS);
    let (st, first) = post(&s, "/runbook/idle?wait=2m", &keys.operate).await;
    assert_eq!(st, 200, "{first}");
    let first_id = first["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        by_pair(&first["results"])[&("start-idle".into(), b.into())].0,
        "failed"
    );
    lab.ssh(b, common::IDLE_FIXED);
    let a_idle = lab.invocation(a, "demo-idle");
    let (st, retried) = post(&s, &format!("/job/{first_id}/retry?wait=2m"), &keys.operate).await;
    assert_eq!(st, 200, "{retried}");
    assert_eq!(retried["retry_of"], first_id.as_str());
    let got = by_pair(&retried["results"]);
    assert_eq!(
        got[&("start-idle".into(), b.into())],
        ("ok".into(), true, String::new())
    );
    assert_eq!(
        lab.invocation(a, "demo-idle"),
        a_idle,
        "a ended ok: not touched"
    );
    let new_id = retried["job_id"].as_str().unwrap();
    let (_, _, view) = server::call(
        reqwest::Method::GET,
        &s.url(&format!("/job/{new_id}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(view["retry_of"], first_id.as_str(), "{view}");
    // A changed runbook is refused (409) unless the caller says so.
    let text = std::fs::read_to_string(books.join("idle.yml")).unwrap();
    std::fs::write(books.join("idle.yml"), text + "# edited\n").unwrap();
    let (st, _, _) =
        server::call(reqwest::Method::POST, &s.url("/reload"), Some(&keys.admin)).await;
    assert_eq!(st, 200);
    let (st, body) = post(&s, &format!("/job/{first_id}/retry"), &keys.operate).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("playbook changed"),
        "{body}"
    );
}
