//! `drover serve` with many jobs held at a gate (needs the lab:
//! `tests/lab/lab.sh up`): how many OS threads and how much memory the
//! server uses while JOBS (default 200) jobs wait, each at a `wait: http`
//! gate served by this bench that answers only when it is opened.
//!
//! Each job is a runbook of its own that stops a unit no host has
//! (`drover-held-N.service`: nothing changes on the hosts, and no two jobs
//! claim the same unit), then waits at the gate. Prints the server's
//! `Threads`, `VmRSS` and `VmHWM` (from `/proc/PID/status`) idle, with
//! every job at the gate, and after the gate opened and every job ended.
//!
//! Run with `cargo bench --bench serve_held` (or `cargo test --bench
//! serve_held` for a debug build). Changes nothing on the hosts, so it does
//! not take the lab's lock.

mod common;

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{keygen, lab_hosts, Server, Usage};

/// An HTTP endpoint that reads each request and holds it unanswered until
/// opened; then answers every held and later request 200.
struct Gate {
    port: u16,
    held: Arc<AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    async fn new() -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("gate listener");
        let port = listener.local_addr().expect("gate address").port();
        let held = Arc::new(AtomicUsize::new(0));
        let (open, opened) = tokio::sync::watch::channel(false);
        let h = held.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let (h, mut opened) = (h.clone(), opened.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf).await;
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = opened.wait_for(|o| *o).await;
                    let _ = c
                        .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    h.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Gate { port, held, open }
    }
}

fn main() {
    let Some((dir, hosts)) = lab_hosts() else {
        eprintln!("BENCH SKIPPED: the lab is not up (tests/lab/lab.sh up)");
        return;
    };
    let jobs: usize = std::env::var("JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let gate = rt.block_on(Gate::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = keygen(tmp.path());
    let books = tmp.path().join("books");
    std::fs::create_dir_all(&books).expect("books");
    for i in 0..jobs {
        std::fs::write(
            books.join(format!("held-{i}.yml")),
            format!(
                "name: held-{i}\nsteps:\n  - id: hold\n    target: {}\n    service: {{ name: drover-held-{i}, state: stopped }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 10m }}\n",
                hosts[i % hosts.len()],
                gate.port
            ),
        )
        .expect("runbook");
    }
    let log = tmp.path().join("serve.log");
    let args: Vec<OsString> = vec![
        "serve".into(),
        "-i".into(),
        dir.join("inventory.yml").into(),
        "--keys".into(),
        tmp.path().join("keys.yml").into(),
        "--playbooks".into(),
        books.clone().into(),
        "--jobs-dir".into(),
        tmp.path().join("jobs").into(),
    ];
    let server = Server::start(args, &log);
    let (pid, base) = (server.pid(), server.base.clone());
    let idle = Usage::of(pid);
    let client = reqwest::Client::new();
    let t = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        let posts = (0..jobs).map(|i| {
            let (c, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                let r = c
                    .post(format!("{base}/runbook/held-{i}?wait=0s"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("POST");
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.expect("body");
                assert_eq!(status, 202, "{body}");
                body["job_id"].as_str().expect("a job id").to_string()
            }
        });
        futures_util::future::join_all(posts).await
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    while gate.held.load(Ordering::SeqCst) < jobs {
        assert!(
            Instant::now() < deadline,
            "only {} of {jobs} jobs reached the gate in 5 minutes; see {}",
            gate.held.load(Ordering::SeqCst),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let at_gate = Usage::of(pid);
    let reached = t.elapsed().as_secs_f64();
    let _ = gate.open.send(true);
    let t = Instant::now();
    rt.block_on(async {
        for id in &ids {
            loop {
                let r = client
                    .get(format!("{base}/job/{id}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("GET");
                let body: serde_json::Value = r.json().await.expect("job");
                match body["outcome"].as_str() {
                    Some("running") => tokio::time::sleep(Duration::from_millis(100)).await,
                    Some("completed") => break,
                    other => panic!("job {id} ended {other:?}: {body}"),
                }
            }
        }
    });
    let ended = t.elapsed().as_secs_f64();
    let after = Usage::of(pid);
    server.stop();
    let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "serve held bench: {jobs} jobs over {} hosts, {workers} cores (runtime workers)",
        hosts.len()
    );
    println!("idle            : {idle}");
    println!("{jobs} at the gate : {at_gate}   (all there {reached:.1} s after the first POST)");
    println!("all ended       : {after}   ({ended:.1} s after the gate opened)");
}
