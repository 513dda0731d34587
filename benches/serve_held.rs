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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn drover() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.stdin(Stdio::null());
    c
}

fn keygen(dir: &Path) -> String {
    let out = drover()
        .args(["serve", "keygen", "--name", "bench", "--role", "admin"])
        .output()
        .expect("keygen");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("a key")
        .to_string();
    let entry = text.split_once("entry:\n").expect("an entry").1;
    std::fs::write(dir.join("keys.yml"), format!("keys:\n{entry}")).expect("keys file");
    key
}

/// Threads, VmRSS and VmHWM (KiB) of a process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    threads: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Usage {
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threads {:>4} | VmRSS {:>7.1} MiB | VmHWM {:>7.1} MiB",
            self.threads,
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        )
    }
}

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
    let dir =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    let Ok(hosts_text) = std::fs::read_to_string(dir.join("hosts")) else {
        eprintln!(
            "BENCH SKIPPED: the lab is not up at {} (tests/lab/lab.sh up)",
            dir.display()
        );
        return;
    };
    let hosts: Vec<String> = hosts_text
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
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
    let mut child: Child = drover()
        .args(["serve", "-i"])
        .arg(dir.join("inventory.yml"))
        .arg("--keys")
        .arg(tmp.path().join("keys.yml"))
        .arg("--playbooks")
        .arg(&books)
        .arg("--jobs-dir")
        .arg(tmp.path().join("jobs"))
        .args(["--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("drover serve");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let base = format!(
        "http://{}",
        line.trim()
            .strip_prefix("drover serve: listening on ")
            .expect("the server started")
    );
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
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "serve held bench: {jobs} jobs over {} hosts, {workers} cores (runtime workers)",
        hosts.len()
    );
    println!("idle            : {idle}");
    println!("{jobs} at the gate : {at_gate}   (all there {reached:.1} s after the first POST)");
    println!("all ended       : {after}   ({ended:.1} s after the gate opened)");
}
