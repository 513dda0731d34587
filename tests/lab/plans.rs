//! Plans and approvals over HTTP against the lab: a plan made, approved by
//! a second key and applied restarts exactly the units it planned (their
//! InvocationIDs say so); drift behind drover's back between approval and
//! apply is refused with nothing run; `apply --server` runs as a job of
//! the server, holding its units against a concurrent HTTP job; an expired
//! plan is refused; the command line runs an `approval:` playbook as before.

use crate::common;
use crate::server;

use std::path::Path;

use common::{lab, Gate, Lab};
use reqwest::Method;
use server::{assert_error, call, Keys, Server};

use super::serve::{gated_runbook, serve};

async fn post(url: &str, key: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = call(Method::POST, url, Some(key)).await;
    (status, body)
}

/// Runbook `name` needing one approval: restart demo-worker on `restart`,
/// leave demo-idle stopped on the first of them.
fn approved_runbook(dir: &Path, name: &str, restart: &[&str]) {
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join(format!("{name}.yml")),
        format!(
            "name: {name}\napproval: {{ count: 1 }}\nsteps:\n  - id: restart\n    target: [{}]\n    service: {{ name: demo-worker, state: restarted }}\n  - id: idle\n    target: {}\n    service: {{ name: demo-idle, state: stopped }}\n",
            restart.join(", "),
            restart[0]
        ),
    )
    .unwrap();
}

/// Plan `name` with the operate key, approve it with the admin key: its
/// digest and the plan as made.
async fn planned_and_approved(s: &Server, keys: &Keys, name: &str) -> (String, serde_json::Value) {
    let (st, made) = post(&s.url(&format!("/runbook/{name}/plan")), &keys.operate).await;
    assert_eq!(st, 201, "{made}");
    let digest = made["digest"].as_str().unwrap().to_string();
    let (st, b) = post(&s.url(&format!("/plan/{digest}/approve")), &keys.operate).await;
    assert_eq!(st, 403, "the maker approving: {b}");
    let (st, b) = post(&s.url(&format!("/plan/{digest}/approve")), &keys.admin).await;
    assert_eq!(st, 200, "{b}");
    let (_, _, plan) = call(
        Method::GET,
        &s.url(&format!("/plan/{digest}")),
        Some(&keys.read),
    )
    .await;
    (digest, plan)
}

fn invocations(lab: &Lab, hosts: &[&str], unit: &str) -> Vec<String> {
    hosts.iter().map(|h| lab.invocation(h, unit)).collect()
}

#[tokio::test]
async fn an_approved_plan_restarts_exactly_the_planned_units() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(0));
    let (h0, h1, h2) = (lab.host(0), lab.host(1), lab.host(2));
    approved_runbook(dir.path(), "reviewed", &[h0, h1]);
    let s = serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let all = [h0, h1, h2];
    let worker = invocations(&lab, &all, "demo-worker");
    let web = invocations(&lab, &all, "demo-web");

    let (digest, plan) = planned_and_approved(&s, &keys, "reviewed").await;
    assert_eq!(plan["plan"]["summary"]["changes"], 2, "{plan}");
    // Planning restarted nothing.
    assert_eq!(invocations(&lab, &all, "demo-worker"), worker);
    let (st, report) = post(&s.url(&format!("/plan/{digest}/apply")), &keys.operate).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["outcome"], "completed", "{report}");

    // demo-worker restarted on the two planned hosts, nowhere else;
    // nothing else restarted.
    let after = invocations(&lab, &all, "demo-worker");
    assert_ne!(after[0], worker[0]);
    assert_ne!(after[1], worker[1]);
    assert_eq!(after[2], worker[2]);
    assert_eq!(invocations(&lab, &all, "demo-web"), web);
    assert_eq!(lab.show(h0, "demo-idle")["ActiveState"], "inactive");
    // Once.
    let (st, b) = post(&s.url(&format!("/plan/{digest}/apply")), &keys.operate).await;
    assert_eq!(st, 409, "{b}");
}

#[tokio::test]
async fn drift_after_approval_is_refused_with_nothing_run() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(0));
    let (h0, h1) = (lab.host(0), lab.host(1));
    approved_runbook(dir.path(), "drifting", &[h0, h1]);
    let s = serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (digest, _) = planned_and_approved(&s, &keys, "drifting").await;

    // Behind drover's back, after the review: demo-idle started on h0,
    // where the plan found it stopped and so planned nothing.
    let _undo = lab.undo_on_drop(h0, "systemctl stop demo-idle");
    lab.ssh(h0, "systemctl start demo-idle");
    let before = invocations(&lab, &[h0, h1], "demo-worker");
    let (st, b) = post(&s.url(&format!("/plan/{digest}/apply")), &keys.operate).await;
    assert_eq!(st, 409, "{b}");
    assert_error(st, &b);
    let details = b["details"].as_str().unwrap();
    assert!(
        details.contains(h0) && details.contains("demo-idle"),
        "names what drifted: {b}"
    );
    assert!(!details.contains("demo-worker"), "only what drifted: {b}");
    // Nothing ran: no restart, demo-idle left as it was found, no job.
    assert_eq!(invocations(&lab, &[h0, h1], "demo-worker"), before);
    assert_eq!(lab.show(h0, "demo-idle")["ActiveState"], "active");
    let (_, _, jobs) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(jobs, serde_json::json!([]), "{jobs}");
}

#[tokio::test]
async fn apply_server_is_a_server_job_that_holds_its_units() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(0));
    let h = lab.host(0).to_string();
    let gate = Gate::new();
    gated_runbook(dir.path(), "held", &h, &gate);
    let s = serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let book = dir.path().join("books/held.yml");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &keys.operate).unwrap();
    let child = lab
        .drover()
        .args(["apply", "--server", &s.url(""), "--key-file"])
        .arg(&key_file)
        .arg(&book)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gate.wait_reached();

    // A job of the server: listed, audited with its key.
    let (_, _, jobs) = call(Method::GET, &s.url("/job?status=running"), Some(&keys.read)).await;
    let id = jobs[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["playbook"], "held", "{jobs}");
    let (_, _, audit) = call(Method::GET, &s.url("/audit"), Some(&keys.admin)).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == "/runbook/held" && l["key"] == "oncall"),
        "{audit}"
    );
    // Its units are held against an HTTP job: 409 naming it.
    let (st, b) = post(
        &s.url(&format!("/node/{h}/service/demo-web/restart?wait=0s")),
        &keys.admin,
    )
    .await;
    assert_eq!(st, 409, "{b}");
    assert!(b["details"].as_str().unwrap().contains(&id), "{b}");
    // And a cron-style `drover apply` of the runbook's file meets its lock.
    let (code, _, err) = common::run(
        lab.drover()
            .args(["apply", "-i"])
            .arg(&lab.inventory)
            .arg(&book),
    );
    assert_eq!(code, 3, "{err}");

    gate.open();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(&format!("job {id}")), "{stdout}");
    for step in ["first", "hold", "last"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    assert!(stdout.contains("2 changed"), "{stdout}");
    assert!(!stdout.contains(&keys.operate));
}

/// The chapter (`docs/src/guide/plans.md`) as written: its server on the
/// default address with the lab's inventory, two keys, a plan made by one
/// and approved by the other, and `apply --server` both ways.
#[tokio::test]
async fn the_book_plans_examples_work_as_written() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let lines = crate::markdown::lab_script("docs/src/guide/plans.md");
    assert!(
        lines.iter().any(|l| l.contains("apply --server")),
        "{lines:#?}"
    );
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:7480") {
        panic!("127.0.0.1:7480, drover serve's default address, is taken ({e})");
    }
    let inventory = lab.inventory.to_string_lossy().into_owned();
    let stdout = super::serve::run_page_examples(
        "docs/src/guide/plans.md",
        &lines,
        &[("INVENTORY", &inventory), ("HOST", lab.host(0))],
    )
    .await;
    assert!(
        stdout.contains("approvals") && stdout.contains("completed"),
        "{stdout}"
    );
}

/// Runbook `name` needing one approval, held at `gate` on host `h`.
fn held_runbook(dir: &Path, name: &str, h: &str, gate: &Gate) {
    gated_runbook(dir, name, h, gate);
    let path = dir.join(format!("books/{name}.yml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\nsteps:", "\napproval: { count: 1 }\nsteps:", 1),
    )
    .unwrap();
}

/// An applied plan's job runs past `wait` (202 with its Location), holds
/// its runbook against another plan of it (409 naming it), and a plan
/// waiting for it is answered 503 when the server is told to stop.
#[tokio::test]
async fn a_plan_applied_past_its_wait_answers_202_and_holds_its_runbook() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(0));
    let h = lab.host(3).to_string();
    let gate = Gate::new();
    held_runbook(dir.path(), "slow", &h, &gate);
    let s = serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (first, _) = planned_and_approved(&s, &keys, "slow").await;
    // Another plan of it: the same runbook from the same facts is the same
    // plan (its digest), so this one is limited to its host.
    let url = s.url(&format!("/runbook/slow/plan?limit={h}"));
    let (st, made) = post(&url, &keys.operate).await;
    assert_eq!(st, 201, "{made}");
    let second = made["digest"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let (st, b) = post(&s.url(&format!("/plan/{second}/approve")), &keys.admin).await;
    assert_eq!(st, 200, "{b}");

    let (st, headers, b) = call(
        Method::POST,
        &s.url(&format!("/plan/{first}/apply?wait=0s")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{b}");
    let id = b["job_id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/job/{id}").as_str());
    gate.wait_reached();
    let url = s.url(&format!("/plan/{second}/apply?wait=0s"));
    let (st, b) = post(&url, &keys.operate).await;
    assert_eq!(st, 409, "{b}");
    assert!(b["details"].as_str().unwrap().contains(&id), "{b}");

    // Still appliable: it waits for the runbook, until the server stops.
    // The refused apply above logged its wait too: this one is the next.
    let held = |log: String| log.matches("held by another job").count();
    let seen = held(s.log());
    assert!(seen >= 1, "{}", s.log());
    let url = s.url(&format!("/plan/{second}/apply?wait=5m"));
    let key = keys.operate.clone();
    let waiting = tokio::spawn(async move { call(Method::POST, &url, Some(&key)).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while held(s.log()) == seen {
        assert!(
            !waiting.is_finished(),
            "answered before waiting: {}",
            s.log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never waited: {}",
            s.log()
        );
        // A poll of the log, not a stand-in for it.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    s.signal(libc::SIGTERM);
    gate.open();
    let (st, _, b) = waiting.await.unwrap();
    assert_eq!(st, 503, "{b}");
    assert_error(st, &b);
    assert_eq!(s.stop(), 0);
}

/// A plan approved in time but applied after `--plan-ttl` is refused
/// (410), with nothing run: no restart, no job; nor can it be approved.
#[tokio::test]
async fn an_expired_plan_is_refused_with_nothing_run() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(0));
    let (h0, h1) = (lab.host(0), lab.host(1));
    approved_runbook(dir.path(), "expiring", &[h0, h1]);
    let books = dir.path().join("books");
    let jobs = dir.path().join("jobs");
    let s = Server::start(
        &[
            "-v",
            "-i",
            lab.inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "--plan-ttl",
            "10s",
        ],
        &dir.path().join(format!("stderr-{}", std::process::id())),
    );
    let (digest, plan) = planned_and_approved(&s, &keys, "expiring").await;
    assert_eq!(plan["expired"], false, "{plan}");
    let before = invocations(&lab, &[h0, h1], "demo-worker");

    // Wait out the ttl this test set, on the clock: expiry is the subject.
    let expires = chrono::DateTime::parse_from_rfc3339(plan["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = expires.signed_duration_since(chrono::Utc::now());
    tokio::time::sleep(left.to_std().unwrap_or_default() + std::time::Duration::from_millis(50))
        .await;
    let (st, b) = post(&s.url(&format!("/plan/{digest}/apply")), &keys.operate).await;
    assert_eq!(st, 410, "{b}");
    assert_error(st, &b);
    let (st, b) = post(&s.url(&format!("/plan/{digest}/approve")), &keys.admin).await;
    assert_eq!(st, 410, "{b}");
    assert_eq!(invocations(&lab, &[h0, h1], "demo-worker"), before);
    let (_, _, jobs) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(jobs, serde_json::json!([]), "{jobs}");
    let (_, _, pending) = call(Method::GET, &s.url("/plan"), Some(&keys.read)).await;
    assert_eq!(
        pending,
        serde_json::json!([]),
        "expired is not pending: {pending}"
    );
    assert_eq!(s.stop(), 0);
}

/// `approval:` is a rule of the server: the command line's `plan --out`
/// and `apply --plan` run such a playbook as they always did.
#[tokio::test]
async fn the_cli_applies_a_playbook_needing_approval_as_before() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(2);
    approved_runbook(dir.path(), "cli", &[h]);
    let book = dir.path().join("books/cli.yml");
    let saved = dir.path().join("cli.json");
    let (code, _, err) = common::run(
        lab.drover()
            .args(["plan", "-i"])
            .arg(&lab.inventory)
            .arg(&book)
            .arg("--out")
            .arg(&saved),
    );
    assert_eq!(code, 0, "{err}");
    let before = lab.invocation(h, "demo-worker");
    let (code, out, err) = common::run(
        lab.drover()
            .args(["apply", "-i"])
            .arg(&lab.inventory)
            .arg("--plan")
            .arg(&saved)
            .arg(&book),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(lab.invocation(h, "demo-worker"), before);
}
