//! The status page's load, at 30 hosts and at 1,000 (needs the lab:
//! `tests/lab/lab.sh up`). `cargo bench --bench page`; `-- 30` or
//! `-- 1000` runs one size. `DROVER_BENCH_BIN=/path/to/drover` measures
//! another build the same way (the "before" of a change).
//!
//! For each size: the server starts, a session logs in, then `GET /` is
//! loaded once cold (the server has read nothing yet) and LOADS times
//! (default 20) one after the other. Printed: the time until the whole
//! HTML has arrived (what a browser needs for its first render: the page
//! has no script-built content, its tiles are in the HTML), cold and
//! p50/p99 warm, and the server's CPU time (user + system) per warm
//! load.
//!
//! The hosts: 30 inventory names over SSH, `address: lab-N` in turn over
//! the lab's hosts (5 names for each of 6 hosts); 1,000 inventory names,
//! `transport: local` with `bus:` the lab hosts' system bus sockets in
//! turn (167 names for each host's bus): as many hosts to read as a
//! fleet of 1,000, without 1,000 sshd sessions on 6 containers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{drover, lab_hosts, quantile, Server, Usage};

/// An operate key; its entry written to `dir/keys.yml`.
fn operate_key(dir: &Path) -> String {
    let out = drover()
        .args(["serve", "keygen", "--name", "bench", "--role", "operate"])
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

/// The inventory of `n` names over the lab's hosts (see the top).
fn inventory(dir: &Path, lab: &Path, hosts: &[String], n: usize) -> std::path::PathBuf {
    let lines = std::fs::read_to_string(lab.join("hosts")).expect("lab hosts");
    let buses: Vec<String> = lines
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let mut text = format!(
        "defaults:\n  user: root\n  transport: ssh\n  ssh_config: {}\n  connect_timeout: 5s\nhosts:\n",
        lab.join("ssh_config").display()
    );
    for i in 0..n {
        let k = i % hosts.len();
        if n <= 100 {
            text.push_str(&format!(
                "  h{i:04}: {{ address: {}, labels: {{ role: r{} }} }}\n",
                hosts[k],
                i % 3
            ));
        } else {
            text.push_str(&format!(
                "  h{i:04}: {{ transport: local, bus: \"unix:path={}\", labels: {{ role: r{} }} }}\n",
                buses[k % buses.len()],
                i % 3
            ));
        }
    }
    let path = dir.join("inventory.yml");
    std::fs::write(&path, text).expect("inventory");
    path
}

async fn login(c: &reqwest::Client, base: &str, key: &str) -> String {
    let r = c
        .post(format!("{base}/login"))
        .form(&[("key", key)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303, "login refused");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    set.split(';').next().expect("cookie pair").to_string()
}

/// One load of the page: the time until its whole HTML arrived.
async fn load(c: &reqwest::Client, base: &str, cookie: &str) -> (f64, usize) {
    let t = Instant::now();
    let r = c
        .get(format!("{base}/"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET /");
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.expect("body");
    assert!(body.contains("csrf-token"), "not the page: {body:.200}");
    (t.elapsed().as_secs_f64(), body.len())
}

fn run(n: usize, lab: &Path, hosts: &[String], loads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = operate_key(dir.path());
    let inv = inventory(dir.path(), lab, hosts, n);
    let s = Server::start(
        [
            "serve",
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            dir.path().join("keys.yml").to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
            "--forks",
            "32",
        ],
        &dir.path().join("stderr"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    rt.block_on(async {
        let cookie = login(&c, &s.base, &key).await;
        let cpu0 = Usage::of(s.pid()).cpu_s;
        let (cold, bytes) = load(&c, &s.base, &cookie).await;
        let cpu1 = Usage::of(s.pid()).cpu_s;
        let mut warm = Vec::new();
        for _ in 0..loads {
            warm.push(load(&c, &s.base, &cookie).await.0);
        }
        let cpu2 = Usage::of(s.pid()).cpu_s;
        warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{n:>5} hosts | cold {:>8.1} ms (CPU {:>7.1} ms) | warm p50 {:>7.1} ms p99 {:>7.1} ms | CPU/load {:>6.1} ms | page {:>7} bytes | {}",
            cold * 1e3,
            (cpu1 - cpu0) * 1e3,
            quantile(&warm, 0.5) * 1e3,
            quantile(&warm, 0.99) * 1e3,
            (cpu2 - cpu1) * 1e3 / loads.max(1) as f64,
            bytes,
            Usage::of(s.pid())
        );
    });
    let _ = s.stop();
}

fn main() {
    let Some((lab, hosts)) = lab_hosts() else {
        eprintln!("page bench: no lab (tests/lab/lab.sh up); nothing measured");
        return;
    };
    if hosts.is_empty() {
        eprintln!("page bench: the lab has no hosts");
        return;
    }
    let loads = std::env::var("LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let only: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    println!(
        "GET / with a session: {} ({} warm loads each)",
        std::env::var("DROVER_BENCH_BIN").unwrap_or_else(|_| "this build".into()),
        loads
    );
    for n in [30, 1000] {
        if only.is_empty() || only.contains(&n) {
            run(n, &lab, &hosts, loads);
        }
    }
}
