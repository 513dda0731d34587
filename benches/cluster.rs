//! Cluster mode against single-process `drover serve`, on the lab (needs
//! `tests/lab/lab.sh up 30` and `nats-server`):
//!
//! (a) `POST /node/_all/service/demo-web/restart` through a replica whose
//!     hosts are worked by one `drover worker` (both fresh: cold, the
//!     worker connects to every host), against the same POST on a fresh
//!     single server, in the same round; target <= 1.10.
//! (b) the same POST again on both (connections kept: warm); target
//!     <= 1.15.
//! (c) submit -> first result: the time from the POST until the job's
//!     first result is listed (an upper bound on submit -> first task
//!     dispatched), p50/p99 over the warm runs; target p99 < 1 s.
//! (d) a Consul health poll through the replica
//!     (`GET /v1/agent/health/service/name/demo-web`, answered by the
//!     owners) from 20 clients for 10 s: p50/p99 latency; target p99 < 50 ms.
//!
//! (e), (f), (g): a result on another replica's event stream, the
//! coordinating replica's and a worker's death, on production TTLs (see
//! `cluster/failover.rs`).
//!
//! `QUICK=1` measures (a)-(c) only: what a change on the path to a host
//! moves.
//!
//! It holds the lab's test lock while it runs.

mod common;
#[path = "cluster/failover.rs"]
mod failover;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{drover, keygen, lab_hosts, quantile, ssh_all, Server};

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One JetStream nats-server on loopback; killed when dropped.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start(dir: &Path) -> Nats {
        let port = free_port();
        let store = dir.join("js");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `drover worker`; killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(nats: &str, inv: &Path, dir: &Path, forks: usize) -> Worker {
    worker_named(nats, inv, dir, forks, "bench")
}

/// A worker named `name`, its log `dir/worker-NAME.log` (`worker.log`
/// for "bench").
fn worker_named(nats: &str, inv: &Path, dir: &Path, forks: usize, name: &str) -> Worker {
    let log = match name {
        "bench" => dir.join("worker.log"),
        _ => dir.join(format!("worker-{name}.log")),
    };
    let child = drover()
        .args(["worker", "--nats", nats, "-i"])
        .arg(inv)
        .args(["--name", name, "--lease-ttl", "15s", "--forks"])
        .env("RUST_LOG", "drover=info")
        .arg(forks.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("drover worker");
    Worker(child)
}

fn server(
    inv: &Path,
    dir: &Path,
    node: &str,
    forks: usize,
    nats: Option<&str>,
    log: &str,
) -> Server {
    server_with(inv, dir, node, forks, nats, log, &[])
}

/// [`server`] with `extra` arguments.
fn server_with(
    inv: &Path,
    dir: &Path,
    node: &str,
    forks: usize,
    nats: Option<&str>,
    log: &str,
    extra: &[&str],
) -> Server {
    let mut args: Vec<OsString> = vec![
        "serve".into(),
        "--node".into(),
        node.into(),
        "-i".into(),
        inv.into(),
        "--keys".into(),
        dir.join("keys.yml").into(),
        "--jobs-dir".into(),
        dir.join(format!("jobs-{log}")).into(),
        "--forks".into(),
        forks.to_string().into(),
    ];
    if let Some(n) = nats {
        args.extend(["--nats".into(), n.into()]);
    }
    args.extend(extra.iter().map(OsString::from));
    Server::start(args, &dir.join(format!("{log}.log")))
}

/// The restart through `s`; its wall time, and when its first result was
/// listed (polling GET /job/{id} from a second client).
async fn restart(c: &reqwest::Client, s: &Server, key: &str, n: usize) -> (f64, f64) {
    let t = Instant::now();
    let r = c
        .post(format!(
            "{}/node/_all/service/demo-web/restart?wait=0s",
            s.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(status.is_success(), "{status} {v}");
    let id = v["job_id"].as_str().expect("job id").to_string();
    let mut first = None;
    loop {
        let v = get_json(c, &format!("{}/job/{id}", s.base), key).await;
        let results = v["results"].as_array().map_or(0, Vec::len);
        if results > 0 && first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
        if v["outcome"] != "running" {
            assert_eq!(results, n, "{v}");
            assert!(
                v["results"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|r| r["status"] == "ok")),
                "{v}"
            );
            return (t.elapsed().as_secs_f64(), first.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// GET `url` with `key`: its JSON body (null if it is not JSON).
async fn get_json(c: &reqwest::Client, url: &str, key: &str) -> serde_json::Value {
    c.get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .unwrap_or_default()
}

/// Wait until every host reads through the replica (the worker holds its
/// leases).
async fn until_owned(c: &reqwest::Client, s: &Server, key: &str, n: usize) {
    let t0 = Instant::now();
    loop {
        let v = get_json(c, &format!("{}/node/_all/service/demo-web", s.base), key).await;
        if v.as_array()
            .is_some_and(|a| a.len() == n && a.iter().all(|h| h.get("error").is_none()))
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "hosts not owned: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

fn main() {
    let Some((dir, hosts)) = lab_hosts() else {
        eprintln!("BENCH SKIPPED: the lab is not up (tests/lab/lab.sh up 30)");
        return;
    };
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("BENCH SKIPPED: nats-server is not installed (tests/lab/lab.sh deps)");
        return;
    }
    let n = hosts.len();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let quick = std::env::var("QUICK").is_ok_and(|v| v == "1");
    let _lock = common::lab_lock(&dir);
    let (inv, cfg) = (dir.join("inventory.yml"), dir.join("ssh_config"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = keygen(tmp.path());
    let reset =
        "systemctl reset-failed; systemctl start demo-web demo-worker; systemctl stop demo-idle";
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    println!(
        "cluster bench: {n} hosts, {rounds} rounds, one worker, one nats-server, runs interleaved"
    );
    let (mut cold_x, mut warm_x, mut firsts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Single process, cold then warm.
        ssh_all(&cfg, &hosts, reset);
        let s = server(&inv, tmp.path(), &hosts[0], n, None, "single");
        let (s_cold, _) = rt.block_on(restart(&client, &s, &key, n));
        ssh_all(&cfg, &hosts, reset);
        let (s_warm, f) = rt.block_on(restart(&client, &s, &key, n));
        firsts.push(("single", f));
        drop(s.stop());

        // Cluster: a fresh nats-server, worker and replica.
        let round_dir = tmp.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&round_dir).expect("dir");
        let nats = Nats::start(&round_dir);
        let w = worker(&nats.url, &inv, &round_dir, n);
        let r = server(&inv, tmp.path(), &hosts[0], n, Some(&nats.url), "replica");
        ssh_all(&cfg, &hosts, reset);
        // The worker holds its leases before the clock starts (it takes
        // every bucket in one tick), and has connected to no host yet.
        rt.block_on(async {
            let t0 = Instant::now();
            while !std::fs::read_to_string(round_dir.join("worker.log"))
                .unwrap_or_default()
                .contains("lease taken")
            {
                assert!(t0.elapsed() < Duration::from_secs(60), "no lease taken");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let (c_cold, _) = rt.block_on(restart(&client, &r, &key, n));
        ssh_all(&cfg, &hosts, reset);
        let (c_warm, f) = rt.block_on(restart(&client, &r, &key, n));
        firsts.push(("cluster", f));
        println!(
            "round {round}: single cold {s_cold:.3} s, warm {s_warm:.3} s | cluster cold {c_cold:.3} s (x{:.2}), warm {c_warm:.3} s (x{:.2})",
            c_cold / s_cold,
            c_warm / s_warm
        );
        cold_x.push(c_cold / s_cold);
        warm_x.push(c_warm / s_warm);
        if round == rounds && !quick {
            // (d) Consul health polls through the replica.
            rt.block_on(until_owned(&client, &r, &key, n));
            let secs = 10;
            let url = format!("{}/v1/agent/health/service/name/demo-web", r.base);
            let lat = rt.block_on(async {
                let end = Instant::now() + Duration::from_secs(secs);
                let tasks: Vec<_> = (0..20)
                    .map(|_| {
                        let (c, url, key) = (client.clone(), url.clone(), key.clone());
                        tokio::spawn(async move {
                            let mut lat = Vec::new();
                            while Instant::now() < end {
                                let t = Instant::now();
                                let r = c.get(&url).bearer_auth(&key).send().await;
                                if let Ok(r) = r {
                                    // Passing: demo-web runs.
                                    let ok = r.status().as_u16() == 200;
                                    let _ = r.bytes().await;
                                    if ok {
                                        lat.push(t.elapsed().as_secs_f64());
                                    }
                                }
                            }
                            lat
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.expect("poller"));
                }
                all
            });
            let mut sorted = lat;
            sorted.sort_by(f64::total_cmp);
            println!(
                "(d) Consul health poll through the replica, 20 clients, {secs} s: {} answers ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms)",
                sorted.len(),
                sorted.len() as f64 / secs as f64,
                quantile(&sorted, 0.5) * 1000.0,
                quantile(&sorted, 0.99) * 1000.0
            );
        }
        drop(r.stop());
        drop(w);
        drop(nats);
    }
    // (e), (f), (g): event streams across replicas and failover, on
    // production TTLs.
    if !quick {
        ssh_all(&cfg, &hosts, reset);
        failover::run(&rt, &key, &inv, tmp.path(), &hosts[0], n);
    }
    println!(
        "(a) median cluster cold / single cold: x{:.2} (target <= 1.10); (b) median cluster warm / single warm: x{:.2} (target <= 1.15)",
        median(cold_x),
        median(warm_x)
    );
    for who in ["single", "cluster"] {
        let mut v: Vec<f64> = firsts
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, f)| *f)
            .collect();
        v.sort_by(f64::total_cmp);
        println!(
            "(c) {who}: submit -> first result listed (warm): p50 {:.0} ms, max {:.0} ms over {} runs (target p99 < 1 s)",
            quantile(&v, 0.5) * 1000.0,
            quantile(&v, 1.0) * 1000.0,
            v.len()
        );
    }
}
