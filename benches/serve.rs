//! `drover serve`: listing stored jobs (no lab), then three numbers on the
//! lab (needs `tests/lab/lab.sh up 30`). `cargo bench --bench serve -- list`
//! or `-- lab` runs one part.
//!
//! (list) `GET /job?limit=20` with 100, 1,000, 10,000 and 100,000 job
//!     reports in the jobs dir (written straight into it before the server
//!     starts; `LIST_SIZES=100,1000` to choose): how long the server takes
//!     to start, the latency of one page (p50/p99), the CPU time a request
//!     costs the server, and its peak memory. A page must cost about the
//!     same however many jobs are stored.
//! (a) `POST /node/_all/service/demo-web/restart` on a fresh server (cold:
//!     it connects to every host) against `drover service restart
//!     demo-web --target _all`, in the same round; target <= 1.05.
//! (b) the same POST again within the server's idle time (its connections
//!     kept) against the cold one; target <= 0.3.
//! (c) `GET /node/_all/service/demo-web` from 50 concurrent clients for
//!     10 s: requests per second, p50/p99 latency, and how many SSH
//!     connections the server opened for all of them.
//!
//! The lab part holds the lab's test lock while it runs, so lab tests do
//! not disturb it.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{connections_opened, drover, keygen, lab_hosts, quantile, ssh_all, Server, Usage};

async fn restart(c: &reqwest::Client, s: &Server, key: &str, n: usize) -> f64 {
    let t = Instant::now();
    let r = c
        .post(format!(
            "{}/node/_all/service/demo-web/restart?wait=5m",
            s.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("report");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|r| r["status"] == "ok"), "{body}");
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    // `cargo bench --bench serve -- list` (or `-- lab`): one part only.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = |part: &str| {
        let named: Vec<&String> = args
            .iter()
            .filter(|a| *a == "list" || *a == "lab")
            .collect();
        named.is_empty() || named.iter().any(|a| *a == part)
    };
    if only("list") {
        list_bench();
    }
    if only("lab") {
        lab_bench();
    }
}

/// The same server start in the lab part: `-v` for its connection count.
fn lab_server(inv: &Path, dir: &Path, forks: usize) -> Server {
    let args: Vec<OsString> = vec![
        "-v".into(),
        "serve".into(),
        "-i".into(),
        inv.into(),
        "--keys".into(),
        dir.join("keys.yml").into(),
        "--jobs-dir".into(),
        dir.join("jobs").into(),
        "--forks".into(),
        forks.to_string().into(),
    ];
    Server::start(args, &dir.join("serve.log"))
}

fn lab_bench() {
    let Some((dir, hosts)) = lab_hosts() else {
        eprintln!("BENCH SKIPPED (lab part): the lab is not up (tests/lab/lab.sh up 30)");
        return;
    };
    let n = hosts.len();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let _lock = common::lab_lock(&dir);
    let (inv, cfg) = (dir.join("inventory.yml"), dir.join("ssh_config"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = keygen(tmp.path());
    let reset =
        "systemctl reset-failed; systemctl start demo-web demo-worker; systemctl stop demo-idle";
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    println!("serve bench: {n} hosts, {rounds} rounds, runs interleaved");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        ssh_all(&cfg, &hosts, reset);
        let t = Instant::now();
        let out = drover()
            .args([
                "service", "restart", "demo-web", "--target", "_all", "--format", "json", "--forks",
            ])
            .arg(n.to_string())
            .arg("-i")
            .arg(&inv)
            .output()
            .expect("drover service");
        let cli = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ssh_all(&cfg, &hosts, reset);
        let s = lab_server(&inv, tmp.path(), n);
        let cold = rt.block_on(restart(&client, &s, &key, n));
        ssh_all(&cfg, &hosts, reset);
        let warm = rt.block_on(restart(&client, &s, &key, n));
        let opened = connections_opened(&s.stop());
        println!(
            "round {round}: cli {cli:.3} s | serve cold {cold:.3} s (x{:.2} of cli) | serve warm {warm:.3} s (x{:.2} of cold) | connections opened {opened}",
            cold / cli,
            warm / cold
        );
        a.push(cold / cli);
        b.push(warm / cold);
    }
    println!(
        "(a) median serve cold / cli: x{:.2} (target <= 1.05); (b) median warm / cold: x{:.2} (target <= 0.30)",
        median(a),
        median(b)
    );

    // (c) 50 concurrent readers for 10 s.
    ssh_all(&cfg, &hosts, reset);
    let s = lab_server(&inv, tmp.path(), n);
    let secs: u64 = std::env::var("SECONDS_C")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let url = format!("{}/node/_all/service/demo-web", s.base);
    // One request first: the 30 cold connects are (a)'s business, not (c)'s.
    let cold = rt.block_on(async {
        let t = Instant::now();
        let r = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success());
        t.elapsed().as_secs_f64()
    });
    println!(
        "(c) first GET (connects to every host): {:.0} ms",
        cold * 1000.0
    );
    let (lat, errors) = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (c, url, key) = (client.clone(), url.clone(), key.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    // Why each failed request failed, counted.
                    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        let why = match c.get(&url).bearer_auth(&key).send().await {
                            Ok(r) if r.status().is_success() => {
                                let body: serde_json::Value = r.json().await.unwrap_or_default();
                                match body.as_array().map(Vec::len) {
                                    Some(len) if len == n => {
                                        lat.push(t.elapsed().as_secs_f64());
                                        continue;
                                    }
                                    other => format!("{other:?} hosts in the answer"),
                                }
                            }
                            Ok(r) => format!("status {}", r.status().as_u16()),
                            Err(e) => format!("request: {e}"),
                        };
                        *errors.entry(why).or_default() += 1;
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), BTreeMap::new());
        for t in tasks {
            let (l, e) = t.await.expect("reader");
            all.extend(l);
            for (why, k) in e {
                *errors.entry(why).or_insert(0usize) += k;
            }
        }
        (all, errors)
    });
    let opened = connections_opened(&s.stop());
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| quantile(&sorted, p) * 1000.0;
    println!(
        "(c) GET /node/_all/service/demo-web, 50 clients, {secs} s: {} requests ({:.1}/s), {} errors {errors:?}, p50 {:.1} ms, p99 {:.1} ms; SSH connections opened: {opened} for {n} hosts",
        sorted.len(),
        sorted.len() as f64 / secs as f64,
        errors.values().sum::<usize>(),
        pct(0.50),
        pct(0.99)
    );
}

/// Results per seeded report: 2 hosts x 5 steps, the size of a small
/// runbook's report.
const SEEDED_STEPS: usize = 5;

/// `n` finished job reports in `jobs`, one a second from 2024-01-01, as
/// the server writes them.
fn seed_jobs(jobs: &Path, n: usize) {
    std::fs::create_dir_all(jobs).expect("jobs dir");
    let base = 1_704_067_200i64;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for i in 0..n {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let results: Vec<serde_json::Value> = (0..SEEDED_STEPS)
            .flat_map(|step| {
                ["a", "b"].map(|h| {
                    serde_json::json!({
                        "hostname": h, "status": "ok", "name": "demo-web.service",
                        "changed": true, "step": format!("step-{step}"),
                        "action": "restart", "duration_ms": 1200,
                    })
                })
            })
            .collect();
        let report = serde_json::json!({
            "job_id": id,
            "playbook": "seeded",
            "started_at": at(base + i as i64),
            "finished_at": at(base + i as i64 + 5),
            "outcome": "completed",
            "results": results,
        });
        std::fs::write(jobs.join(format!("{id}.json")), report.to_string()).expect("report");
    }
}

/// `GET /job?limit=20` over 100 to 100,000 stored jobs.
fn list_bench() {
    let sizes: Vec<usize> = std::env::var("LIST_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000, 100_000]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    println!(
        "serve list bench: GET /job?limit=20, {} results a report; at most 200 requests or 10 s each",
        SEEDED_STEPS * 2
    );
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = keygen(tmp.path());
        let inv = tmp.path().join("inventory.yml");
        // Never reached: listing jobs reads no host.
        std::fs::write(
            &inv,
            "defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-bench-bus\nhosts:\n  a: {}\n  b: {}\n",
        )
        .expect("inventory");
        let jobs = tmp.path().join("jobs");
        seed_jobs(&jobs, n);
        let mut args: Vec<OsString> = vec!["serve".into(), "-i".into(), inv.into()];
        args.extend([
            "--keys".into(),
            tmp.path().join("keys.yml").into(),
            "--jobs-dir".into(),
            jobs.into(),
            // Every seeded job kept: the list is over all of them.
            "--keep-jobs".into(),
            n.max(1).to_string().into(),
        ]);
        let t = Instant::now();
        let s = Server::start(args, &tmp.path().join("serve.log"));
        let startup = t.elapsed().as_secs_f64();
        let url = format!("{}/job?limit=20", s.base);
        let get = || list_page(&client, &url, &key, n.min(20));
        let first = rt.block_on(get());
        let before = Usage::of(s.pid());
        let mut lat = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while lat.len() < 200 && (lat.len() < 3 || Instant::now() < end) {
            lat.push(rt.block_on(get()));
        }
        let after = Usage::of(s.pid());
        s.stop();
        lat.sort_by(f64::total_cmp);
        println!(
            "{n:>7} jobs: start {startup:>6.2} s | first {:>8.1} ms | p50 {:>8.2} ms | p99 {:>8.2} ms | server CPU {:>8.2} ms/request ({} requests) | VmHWM {:>7.1} MiB",
            first * 1000.0,
            quantile(&lat, 0.5) * 1000.0,
            quantile(&lat, 0.99) * 1000.0,
            (after.cpu_s - before.cpu_s) * 1000.0 / lat.len() as f64,
            lat.len(),
            after.hwm_kib as f64 / 1024.0,
        );
    }
}

/// One `GET` of `url`: its latency, after checking it listed `expect` jobs.
async fn list_page(client: &reqwest::Client, url: &str, key: &str, expect: usize) -> f64 {
    let t = Instant::now();
    let r = client.get(url).bearer_auth(key).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.expect("a list");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(body.as_array().map(Vec::len), Some(expect), "{body}");
    secs
}
