//! `drover serve` on the lab, three numbers (needs `tests/lab/lab.sh up 30`):
//!
//! (a) `POST /node/_all/service/demo-web/restart` on a fresh server (cold:
//!     it connects to every host) against `drover service restart
//!     demo-web --target _all`, in the same round; target <= 1.05.
//! (b) the same POST again within the server's idle time (its connections
//!     kept) against the cold one; target <= 0.3.
//! (c) `GET /node/_all/service/demo-web` from 50 concurrent clients for
//!     10 s: requests per second, p50/p99 latency, and how many SSH
//!     connections the server opened for all of them.
//!
//! Holds the lab's test lock while it runs, so lab tests do not disturb it.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ssh_all(cfg: &Path, hosts: &[String], cmd: &str) {
    let children: Vec<Child> = hosts
        .iter()
        .map(|h| {
            Command::new("ssh")
                .arg("-F")
                .arg(cfg)
                .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
                .arg(h)
                .arg(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("ssh")
        })
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
}

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

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(inv: &Path, dir: &Path, forks: usize) -> Server {
        let log = dir.join("serve.log");
        let mut child = drover()
            .args(["-v", "serve", "-i"])
            .arg(inv)
            .arg("--keys")
            .arg(dir.join("keys.yml"))
            .arg("--jobs-dir")
            .arg(dir.join("jobs"))
            .args(["--listen", "127.0.0.1:0", "--rate-limit", "0", "--forks"])
            .arg(forks.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("drover serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("drover serve: listening on ")
            .expect("the server started")
            .to_string();
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// SIGTERM, wait, and the connections it opened in its life.
    fn stop(mut self) -> usize {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split("connections_opened=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .next_back()
            .unwrap_or(usize::MAX)
    }
}

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
    let dir =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    let Ok(hosts_text) = std::fs::read_to_string(dir.join("hosts")) else {
        eprintln!(
            "BENCH SKIPPED: the lab is not up at {} (tests/lab/lab.sh up 30)",
            dir.display()
        );
        return;
    };
    let hosts: Vec<String> = hosts_text
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let n = hosts.len();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".test.lock"))
        .expect("lab lock");
    // SAFETY: flock on a descriptor we own; held until the process exits.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
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
        let s = Server::start(&inv, tmp.path(), n);
        let cold = rt.block_on(restart(&client, &s, &key, n));
        ssh_all(&cfg, &hosts, reset);
        let warm = rt.block_on(restart(&client, &s, &key, n));
        let opened = s.stop();
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
    let s = Server::start(&inv, tmp.path(), n);
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
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    while Instant::now() < end {
                        let t = Instant::now();
                        match c.get(&url).bearer_auth(&key).send().await {
                            Ok(r) if r.status().is_success() => {
                                let body: serde_json::Value = r.json().await.unwrap_or_default();
                                if body.as_array().map(Vec::len) == Some(n) {
                                    lat.push(t.elapsed().as_secs_f64());
                                } else {
                                    errors += 1;
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.expect("reader");
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    let opened = s.stop();
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] * 1000.0;
    println!(
        "(c) GET /node/_all/service/demo-web, 50 clients, {secs} s: {} requests ({:.1}/s), {errors} errors, p50 {:.1} ms, p99 {:.1} ms; SSH connections opened: {opened} for {n} hosts",
        sorted.len(),
        sorted.len() as f64 / secs as f64,
        pct(0.50),
        pct(0.99)
    );
}
