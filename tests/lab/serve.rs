//! `drover serve` against the lab: a real server on a loopback port, a
//! real HTTP client, real systemd on the hosts. Jobs are held at a point
//! the test controls with a `wait.http` gate, never with sleeps.

use crate::common;
use crate::markdown;
use crate::server;

use std::path::Path;

use common::{lab, Gate, Lab};
use futures_util::StreamExt;
use reqwest::Method;
use server::{assert_error, call, client, Keys, Server};

/// A server on the lab's inventory with `dir/books` as its runbooks.
pub(crate) fn serve(lab: &Lab, dir: &Path, keys: &Keys, jobs: &Path) -> Server {
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    Server::start(
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
        ],
        &dir.join(format!("stderr-{}", std::process::id())),
    )
}

/// A runbook on host `h`: restart demo-worker, then stop demo-idle and
/// wait at the gate, then restart demo-web.
pub(crate) fn gated_runbook(dir: &Path, name: &str, h: &str, gate: &Gate) {
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join(format!("{name}.yml")),
        format!(
            "name: {name}\nsteps:\n  - id: first\n    target: {h}\n    service: {{ name: demo-worker, state: restarted }}\n  - id: hold\n    target: {h}\n    needs: [first]\n    service: {{ name: demo-idle, state: stopped }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n  - id: last\n    target: {h}\n    needs: [hold]\n    service: {{ name: demo-web, state: restarted }}\n",
            gate.port
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn node_routes_read_and_change_real_units() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let s = serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (h0, h1) = (lab.host(0).to_string(), lab.host(1).to_string());

    // Every host, every loaded service.
    let (st, _, b) = call(Method::GET, &s.url("/node/_all/service"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    let hosts = b.as_array().unwrap();
    assert_eq!(hosts.len(), lab.len());
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(h["hostname"], lab.host(i));
        assert!(h.get("error").is_none(), "{h}");
        let web = &h["units"]["demo-web.service"];
        assert_eq!(web["status"], "RUNNING", "{h}");
        let secs = web["uptime_seconds"].as_u64().unwrap();
        let text = web["uptime"].as_str().unwrap();
        assert!(
            text.ends_with(&format!("{:02}", secs % 60)) || secs % 60 == 59 || secs % 60 == 0,
            "{text} vs {secs}"
        );
    }
    // A stopped unit has a status and no uptime.
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/node/{h0}/service/demo-idle")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b[0]["units"]["demo-idle.service"]["status"], "STOPPED",
        "{b}"
    );
    assert!(
        b[0]["units"]["demo-idle.service"]["uptime"].is_null(),
        "{b}"
    );
    // One unit on one host; a unit no host knows is 404.
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/node/{h0}/service/demo-web")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b.as_array().unwrap().len(), 1);
    assert_eq!(b[0]["units"].as_object().unwrap().len(), 1, "{b}");
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/node/{h0}/service/no-such-unit")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    assert_error(st, &b);

    // A dry run plans and changes nothing.
    let before = lab.invocation(&h0, "demo-web");
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{h0}/service/demo-web/stop?dry_run=true")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["schema"], "drover.plan/1");
    assert!(
        b.to_string().contains("stop"),
        "the plan says what would happen: {b}"
    );
    assert_eq!(lab.show(&h0, "demo-web")["ActiveState"], "active");
    assert_eq!(lab.invocation(&h0, "demo-web"), before);

    // A restart answers the job report once it is done, and it is done.
    let (st, headers, b) = call(
        Method::POST,
        &s.url(&format!("/node/{h0}/service/demo-web/restart")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(headers.get("location").is_none());
    assert_eq!(b["results"].as_array().unwrap().len(), 1, "{b}");
    let r = &b["results"][0];
    assert_eq!(
        (
            r["hostname"].as_str(),
            r["status"].as_str(),
            r["changed"].as_bool()
        ),
        (Some(h0.as_str()), Some("ok"), Some(true)),
        "{b}"
    );
    assert_eq!(r["name"], "demo-web.service");
    assert!(b["job_id"].is_string());
    assert_ne!(
        lab.invocation(&h0, "demo-web"),
        before,
        "the unit really restarted"
    );
    assert_eq!(lab.show(&h0, "demo-web")["ActiveState"], "active");

    // `_any` with a key limited to one host picks that host.
    let before1 = lab.invocation(&h1, "demo-worker");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/node/_any/service/demo-worker/restart"),
        Some(&keys.limited),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["hostname"], h1.as_str(), "{b}");
    assert_ne!(lab.invocation(&h1, "demo-worker"), before1);

    // enable/disable go through the unit file state.
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{h0}/service/demo-idle/enable")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let _undo = lab.undo_on_drop(&h0, "systemctl disable -q demo-idle");
    assert_eq!(lab.show(&h0, "demo-idle")["UnitFileState"], "enabled");
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{h0}/service/demo-idle/disable")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(lab.show(&h0, "demo-idle")["UnitFileState"], "disabled");
}

/// Collect a job's SSE stream: (event, data) pairs until it ends.
async fn events(url: String, key: String) -> Vec<(String, serde_json::Value)> {
    let resp = client().get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = None;
            let mut data = String::new();
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event: ") {
                    ev = Some(e.to_string());
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if let Some(e) = ev {
                out.push((e, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

/// A server whose runbook `gated` runs on host `i` and is held at its gate:
/// started with `wait=0s` (so answered 202), its first step done.
struct Held {
    dir: tempfile::TempDir,
    keys: Keys,
    gate: Gate,
    h: String,
    jobs: std::path::PathBuf,
    s: Server,
    id: String,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

async fn held(lab: &Lab, i: usize) -> Held {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let gate = Gate::new();
    let h = lab.host(i % lab.len()).to_string();
    gated_runbook(dir.path(), "gated", &h, &gate);
    let jobs = dir.path().join("jobs");
    let s = serve(lab, dir.path(), &keys, &jobs);
    let (st, headers, body) = call(
        Method::POST,
        &s.url("/runbook/gated?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    gate.wait_reached();
    Held {
        dir,
        keys,
        gate,
        h,
        jobs,
        s,
        id,
        headers,
        body,
    }
}

#[tokio::test]
async fn a_long_job_answers_202_streams_its_results_holds_its_units_and_can_be_cancelled() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let Held {
        dir: _dir,
        keys,
        gate,
        h,
        jobs: _jobs,
        s,
        id,
        headers,
        body: b,
    } = held(&lab, 0).await;
    assert_eq!(headers["location"], format!("/job/{id}").as_str());
    assert_eq!(b["outcome"], "running");
    let stream = tokio::spawn(events(
        s.url(&format!("/job/{id}/events")),
        keys.read.clone(),
    ));

    // What the job holds: its units on its host, and the runbook.
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{h}/service/demo-idle/restart?wait=0s")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 409, "{b}");
    assert_error(st, &b);
    assert!(
        b["details"].as_str().unwrap().contains(&id),
        "names the job: {b}"
    );
    let (st, _, b) = call(
        Method::POST,
        &s.url("/runbook/gated?wait=0s&limit=_all"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 409, "{b}");
    // ... and nothing else: another host's unit goes ahead.
    let other = lab.host(1);
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{other}/service/demo-web/restart")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");

    let (st, _, b) = call(Method::GET, &s.url(&format!("/job/{id}")), Some(&keys.read)).await;
    assert_eq!((st, b["outcome"].as_str()), (200, Some("running")), "{b}");
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/job/{id}/cancel")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{b}");
    gate.open();

    let got = stream.await.unwrap();
    let (_, _, report) = call(Method::GET, &s.url(&format!("/job/{id}")), Some(&keys.read)).await;
    assert_eq!(report["outcome"], "interrupted", "{report}");
    let results = report["results"].as_array().unwrap();
    let steps: Vec<&str> = results
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first", "hold", "last"], "{report}");
    assert_eq!(
        results[1]["status"], "ok",
        "the step in flight finished: {report}"
    );
    assert_eq!(
        results[2]["status"], "skipped",
        "nothing new started: {report}"
    );
    // The stream: one `result` per result, in the report's order, then `done`.
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["result", "result", "result", "done"], "{got:?}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(&got[i].1, r);
    }
    assert_eq!(got[3].1["outcome"], "interrupted");
    assert_eq!(got[3].1["job_id"], id.as_str());
    // The runbook is free again.
    let (st, _, b) = call(
        Method::POST,
        &s.url("/runbook/gated?dry_run=true"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn a_request_for_a_busy_unit_waits_for_it_within_its_wait() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let Held {
        dir: _dir,
        keys,
        gate,
        h,
        jobs: _jobs,
        s,
        id: first,
        headers: _headers,
        body: _b,
    } = held(&lab, 2).await;
    let url = s.url(&format!("/node/{h}/service/demo-web/restart?wait=60s"));
    let key = keys.operate.clone();
    let second = tokio::spawn(async move { call(Method::POST, &url, Some(&key)).await });
    // The second request is waiting for the unit (not answered yet) while
    // the first job holds it.
    let (_, _, running) = call(Method::GET, &s.url("/job?status=running"), Some(&keys.read)).await;
    assert_eq!(running.as_array().unwrap().len(), 1, "{running}");
    assert!(!second.is_finished());
    gate.open();
    let (st, _, b) = second.await.unwrap();
    assert_eq!(st, 200, "{b}");
    let (_, _, f) = call(
        Method::GET,
        &s.url(&format!("/job/{first}")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(f["outcome"], "completed", "{f}");
    assert!(
        b["started_at"].as_str().unwrap() >= f["finished_at"].as_str().unwrap(),
        "did not interleave: {f} / {b}"
    );
}

#[tokio::test]
async fn a_server_killed_mid_job_lists_it_interrupted_after_a_restart() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let Held {
        dir,
        keys,
        gate,
        h: _h,
        jobs,
        mut s,
        id,
        headers: _headers,
        body: _b,
    } = held(&lab, 3).await;
    s.signal(libc::SIGKILL);
    s.child.wait().unwrap();
    gate.open();
    let s = serve(&lab, dir.path(), &keys, &jobs);
    let (st, _, b) = call(Method::GET, &s.url(&format!("/job/{id}")), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["outcome"], "interrupted", "{b}");
    let steps: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first"], "the journal's results: {b}");
    let (_, _, list) = call(
        Method::GET,
        &s.url("/job?status=interrupted"),
        Some(&keys.read),
    )
    .await;
    assert_eq!(list[0]["job_id"], id.as_str());
}

#[tokio::test]
async fn sigterm_stops_running_jobs_and_writes_their_reports() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let Held {
        dir: _dir,
        keys,
        gate,
        h,
        jobs,
        s,
        id,
        headers: _headers,
        body: _b,
    } = held(&lab, 4).await;
    // A request waiting for the held unit is answered at once when the
    // server is told to stop, not when its wait ends.
    let url = s.url(&format!("/node/{h}/service/demo-web/restart?wait=5m"));
    let key = keys.operate.clone();
    let waiting = tokio::spawn(async move { call(Method::POST, &url, Some(&key)).await });
    // The server says when a request starts waiting for a held unit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !s.log().contains("held by another job") {
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
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jobs.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(report["outcome"], "interrupted", "{report}");
    let status: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "ok", "skipped"], "{report}");
}

/// Run a book page's `sh,lab` blocks (`lines`, from
/// [`markdown::lab_script`]) in one shell, in order, as a user
/// pasting them would, from a [`markdown::Sandbox`] (the repository's
/// examples and playbooks, `drover` on PATH) with `env` set; `set -e`
/// stops at the first that fails (curl -f: any status >= 400). A server
/// the blocks start in the background (`drover serve ... &`) is stopped
/// with SIGTERM when the script ends, however it ends.
pub(crate) async fn run_page_examples(
    page: &str,
    lines: &[String],
    env: &[(&str, &str)],
) -> String {
    let script = format!(
        "trap 'st=$?; [ -z \"$!\" ] || kill \"$!\" 2>/dev/null; exit $st' EXIT\nset -e\n{}\n",
        lines.join("\n")
    );
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        let sandbox = markdown::Sandbox::new();
        let mut cmd = sandbox.command(&script);
        cmd.envs(env);
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "an example of {page} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        &stdout[stdout.len().saturating_sub(2000)..]
    );
    stdout
}

/// The Serve chapter (`docs/src/guide/serve.md`) as written: its first
/// block makes a key and a keys file and starts `drover serve` on its
/// default address, 127.0.0.1:7480, with the lab's inventory; the curl
/// examples then run against that server.
#[tokio::test]
async fn the_book_serve_examples_work_as_written() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let lines = markdown::lab_script("docs/src/guide/serve.md");
    assert!(
        lines.iter().filter(|l| l.contains("curl ")).count() >= 15,
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("drover serve -i ")),
        "the page starts its server: {lines:#?}"
    );
    // The page's server takes the default port: a server already there
    // would answer the examples instead (the lab lock keeps this test's
    // runs apart).
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:7480") {
        panic!("127.0.0.1:7480, drover serve's default address, is taken ({e}): stop what listens there");
    }
    let inventory = lab.inventory.to_string_lossy().into_owned();
    let stdout = run_page_examples(
        "docs/src/guide/serve.md",
        &lines,
        &[("INVENTORY", &inventory), ("HOST", lab.host(0))],
    )
    .await;
    assert!(
        stdout.contains("event: done"),
        "the SSE example streamed the job"
    );
    assert!(
        stdout.contains("\"status\":\"ok\""),
        "/health answered: {stdout}"
    );
    lab.restore_baseline();
}

/// The Redis- and Consul-compatible examples of the book
/// (`docs/src/guide/compat.md`), on a server whose `--node` is `HOST`.
#[tokio::test]
async fn the_book_compat_examples_work_as_written() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let s = Server::start(
        &[
            "-i",
            lab.inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--node",
            lab.host(0),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let lines = markdown::lab_script("docs/src/guide/compat.md");
    let stdout = run_page_examples(
        "docs/src/guide/compat.md",
        &lines,
        &[
            ("DROVER_URL", &s.base),
            ("KEY", &keys.admin),
            ("HOST", lab.host(0)),
        ],
    )
    .await;
    assert!(stdout.contains("passing"), "{stdout}");
    lab.restore_baseline();
}
