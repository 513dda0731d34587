//! Benchmark: `drover facts` from every lab host (30 wanted) against a
//! parallel `ssh HOST true` to the same hosts with fresh connections, in
//! the same run. Prints both times and their ratio (target: <= 1.2x).
//!
//! Run with the lab up: `tests/lab/lab.sh up 30 && cargo bench --bench facts`.
//! Without a lab it says so loudly and exits 0.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn main() {
    let dir =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    let hosts: Vec<String> = match std::fs::read_to_string(dir.join("hosts")) {
        Ok(t) => t
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect(),
        Err(e) => {
            eprintln!("**************************************************************");
            eprintln!(
                "BENCHMARK SKIPPED: the test lab is not up ({}: {e}).",
                dir.join("hosts").display()
            );
            eprintln!("Start it with `tests/lab/lab.sh up 30` (as root) and re-run.");
            eprintln!("**************************************************************");
            return;
        }
    };
    if hosts.len() < 30 {
        eprintln!(
            "note: the lab has {} hosts; the target is measured on 30 (lab.sh up 30)",
            hosts.len()
        );
    }
    let ssh_config = dir.join("ssh_config");
    let inventory = dir.join("inventory.yml");
    let out = std::env::temp_dir().join(format!("drover-bench-facts-{}.json", std::process::id()));
    let forks = hosts.len().to_string();

    let ssh_true = || {
        let t0 = Instant::now();
        let children: Vec<_> = hosts
            .iter()
            .map(|h| {
                Command::new("ssh")
                    .arg("-F")
                    .arg(&ssh_config)
                    // Fresh connections: never reuse a master someone left.
                    .args([
                        "-o",
                        "ControlMaster=no",
                        "-o",
                        "ControlPath=none",
                        h,
                        "true",
                    ])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn ssh")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("wait ssh").success(), "ssh failed");
        }
        t0.elapsed()
    };
    // `units` empty: every service unit (ListUnits + ListUnitFiles, then
    // each unit); else exactly those units, as a live plan reads them.
    let facts = |units: &[&str]| {
        let t0 = Instant::now();
        let st = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["-q", "facts", "-i"])
            .arg(&inventory)
            .arg("--out")
            .arg(&out)
            .args(["--forks", &forks])
            .args(units)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run drover");
        assert!(st.success(), "drover facts failed");
        t0.elapsed()
    };

    // Warm caches (binary, page cache) once, unmeasured.
    let demo = ["demo-web", "demo-worker", "demo-idle", "demo-broken"];
    ssh_true();
    facts(&[]);
    let mut a: Vec<Duration> = Vec::new();
    let mut b: Vec<Duration> = Vec::new();
    let mut c: Vec<Duration> = Vec::new();
    // Interleave so drift in machine load hits every side alike.
    for _ in 0..ROUNDS {
        a.push(ssh_true());
        c.push(facts(&demo));
        b.push(facts(&[]));
    }
    a.sort();
    b.sort();
    c.sort();
    let (ma, mb, mc) = (a[ROUNDS / 2], b[ROUNDS / 2], c[ROUNDS / 2]);
    let units = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| {
            v["hosts"]
                .as_object()
                .map(|h| {
                    h.values()
                        .map(|x| x["units"].as_object().map_or(0, |u| u.len()))
                        .sum::<usize>()
                })
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let _ = std::fs::remove_file(&out);
    println!("hosts: {}  rounds: {ROUNDS} (median)", hosts.len());
    println!(
        "parallel `ssh HOST true` (fresh):  {:>8.3} s",
        ma.as_secs_f64()
    );
    let ratio = |d: Duration| d.as_secs_f64() / ma.as_secs_f64();
    println!(
        "drover facts, 4 demo units a host:    {:>8.3} s  ratio {:.2}x (target <= 1.20x)",
        mc.as_secs_f64(),
        ratio(mc)
    );
    println!(
        "drover facts, every service ({units} units): {:>8.3} s  ratio {:.2}x",
        mb.as_secs_f64(),
        ratio(mb)
    );
}
