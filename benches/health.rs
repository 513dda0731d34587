//! Consul-style health polling as a load balancer does it: 200 requests
//! per second (open loop: a request starts on time whether or not the
//! last one answered) on `GET /v1/agent/health/service/name/demo-web` of a
//! `drover serve --node` on the first lab host, for 30 s. Prints p50/p99
//! latency, the SSH connections the server's pool opened (its debug log)
//! and the D-Bus method calls systemd received from the server's bus
//! connection (counted on the host by `dbus-monitor`). It must not open a
//! connection per request. Needs the lab (`tests/lab/lab.sh up 4`).
//!
//! `DROVER_BENCH_SECS` (default 30) and `DROVER_BENCH_RATE` (default 200)
//! change the run; the lab's first host is the node. `DROVER_BENCH_LIVE=0`
//! starts the server with `--no-live` (every poll reads the host: the
//! "before" of the live snapshot); otherwise the polls answer from it once
//! it is warm (the bench waits for that before timing).
//!
//! `DROVER_BENCH_CLUSTER=1` measures cluster mode: a `nats-server` with
//! JetStream on loopback, a `drover worker` holding the hosts (and their
//! live snapshot), and the polled server a `serve --nats` replica that
//! asks the worker over NATS. Target: p99 under 50 ms.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keygen(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "keygen", "--name", "bench", "--role", "read"])
        .output()
        .expect("keygen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("a key")
        .to_string();
    let entry = text.split_once("entry:\n").expect("an entry").1;
    std::fs::write(dir.join("keys.yml"), format!("keys:\n{entry}")).expect("write keys");
    key
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One poll, then (with the live snapshot) polls until the server says
/// it answered one from the snapshot (its metrics), within 30 s.
async fn warm_up(client: &reqwest::Client, addr: &str, url: &str, key: &str, live: bool) {
    let _ = client.get(url).header("X-Consul-Token", key).send().await;
    if !live {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let _ = client.get(url).header("X-Consul-Token", key).send().await;
        let scrape = match client
            .get(format!("http://{addr}/metrics"))
            .bearer_auth(key)
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let answered = scrape.lines().any(|l| {
            l.strip_prefix("drover_live_reads_total{source=\"snapshot\"}")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        });
        if answered {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the live snapshot never answered within 30 s: timing host reads");
}

/// Cluster mode: poll until the worker answers (it holds the lease and
/// has read the host), then 50 more so its snapshot is warm.
async fn warm_up_cluster(client: &reqwest::Client, url: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(url).header("X-Consul-Token", key).send().await;
        if r.is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no worker answered within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..50 {
        let _ = client.get(url).header("X-Consul-Token", key).send().await;
    }
}

fn main() {
    let lab =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    let hosts = std::fs::read_to_string(lab.join("hosts")).unwrap_or_default();
    let Some(node) = hosts.split_whitespace().next().map(str::to_string) else {
        eprintln!(
            "BENCH SKIPPED: the lab is not up at {} (tests/lab/lab.sh up 4)",
            lab.display()
        );
        return;
    };
    let secs = env_num("DROVER_BENCH_SECS", 30);
    let rate = env_num("DROVER_BENCH_RATE", 200).max(1);
    let live = env_num("DROVER_BENCH_LIVE", 1) != 0;
    let cluster = env_num("DROVER_BENCH_CLUSTER", 0) != 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keygen(dir.path());
    let log = dir.path().join("serve.log");
    // Cluster mode: NATS and a worker first; the server is a replica.
    let mut nats_args: Vec<String> = Vec::new();
    let mut _cluster: Vec<Killed> = Vec::new();
    if cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let nats = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (tests/lab/lab.sh deps installs it)");
        _cluster.push(Killed(nats));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("nats://127.0.0.1:{port}");
        let worker = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["worker", "--nats", &url, "-i"])
            .arg(lab.join("inventory.yml"))
            .args(if live { &[][..] } else { &["--no-live"][..] })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("worker.log")).expect("log"))
            .spawn()
            .expect("start drover worker");
        _cluster.push(Killed(worker));
        nats_args = vec!["--nats".into(), url];
    }
    let mut server = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "-i"])
        .arg(lab.join("inventory.yml"))
        .arg("--keys")
        .arg(dir.path().join("keys.yml"))
        .args(["--node", &node, "--listen", "127.0.0.1:0", "--jobs-dir"])
        .arg(dir.path().join("jobs"))
        .args(if live { &[][..] } else { &["--no-live"][..] })
        .args(&nats_args)
        .env("RUST_LOG", "drover::remote::pool=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start drover serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let server = Killed(server);
    let addr = line
        .trim()
        .strip_prefix("drover serve: listening on ")
        .expect("the server started")
        .to_string();
    let url = format!("http://{addr}/v1/agent/health/service/name/demo-web");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // Warm up before counting: the first connection (and with the live
    // snapshot, its first full read of the host) is not the steady state.
    if cluster {
        rt.block_on(warm_up_cluster(&client, &url, &key));
    } else {
        rt.block_on(warm_up(&client, &addr, &url, &key, live));
    }

    // systemd's incoming method calls on the node, while the bench runs.
    let mut monitor = Command::new("ssh")
        .arg("-F")
        .arg(lab.join("ssh_config"))
        .arg(&node)
        .arg(format!(
            "timeout {} stdbuf -oL dbus-monitor --system \"type='method_call',destination='org.freedesktop.systemd1'\"",
            secs + 60
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dbus-monitor");
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
    {
        let out = monitor.stdout.take().expect("monitor stdout");
        let calls = calls.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = first_tx.send(());
                if l.starts_with("method call") {
                    calls.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                }
            }
        });
    }
    let monitor = Killed(monitor);
    // dbus-monitor's first line (its NameAcquired) says it is listening.
    let _ = first_rx.recv_timeout(Duration::from_secs(10));

    let (lat, codes, wall) = rt.block_on(async {
        let total = secs * rate;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for _ in 0..total {
            tick.tick().await;
            let (c, u, k) = (client.clone(), url.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = c.get(&u).header("X-Consul-Token", k).send().await;
                let code = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                (t.elapsed().as_secs_f64() * 1000.0, code)
            }));
        }
        let mut lat = Vec::new();
        let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
        for t in tasks {
            if let Ok((ms, code)) = t.await {
                lat.push(ms);
                *codes.entry(code).or_default() += 1;
            }
        }
        (lat, codes, t0.elapsed().as_secs_f64())
    });
    // Where the answers came from (the live snapshot's counts).
    let scrape = rt.block_on(async {
        let r = client
            .get(format!("http://{addr}/metrics"))
            .bearer_auth(&key)
            .send()
            .await;
        match r {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    });
    drop(monitor);
    drop(server);
    for l in scrape.lines().filter(|l| l.starts_with("drover_live_")) {
        println!("server: {l}");
    }
    let mut sorted = lat.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let opened = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("pool opened a connection"))
        .count();
    let n = lat.len();
    println!(
        "health polling{}: {n} requests in {wall:.1}s ({:.0}/s asked {rate}/s) on {node}; statuses {codes:?}",
        if cluster { " through cluster mode (replica -> NATS -> worker)" } else { "" },
        n as f64 / wall
    );
    println!(
        "latency ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
    println!("ssh connections opened by the server's pool: {opened}");
    report_calls(&calls.lock().unwrap_or_else(|p| p.into_inner()), n, &node);
}

/// Print the D-Bus calls systemd received, those of the server's
/// connection (the busiest sender) per request.
fn report_calls(calls: &[String], n: usize, node: &str) {
    // Group the calls by sender: the server's connection is the busiest
    // (others on a shared lab host are listed apart).
    let mut by_sender: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in calls {
        let field = |name: &str| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("?")
                .trim_end_matches(';')
                .to_string()
        };
        *by_sender
            .entry(field("sender="))
            .or_default()
            .entry(field("member="))
            .or_default() += 1;
    }
    let ours = by_sender
        .iter()
        .max_by_key(|(_, m)| m.values().sum::<usize>())
        .map(|(s, m)| (s.clone(), m.clone()));
    match ours {
        Some((sender, members)) => {
            let total: usize = members.values().sum();
            println!(
                "D-Bus calls to systemd from the server's connection ({sender}): {total} ({:.2} per request): {members:?}",
                total as f64 / n.max(1) as f64
            );
            let others: usize = calls.len() - total;
            if others > 0 {
                println!("(other clients on {node} made {others} calls meanwhile)");
            }
        }
        None => println!("D-Bus calls to systemd: none seen (is dbus-monitor on the host?)"),
    }
}
