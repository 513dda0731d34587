//! Apply on the lab against plain parallel ssh: the 8-operation playbook
//! (playbooks/eight-ops.yml) on every lab host, timed against the same
//! work done by `ssh host 'systemctl …'` over one fresh connection per
//! host, all hosts in parallel, in the same run. Prints both and the ratio
//! (target: drover at most 0.9x), for `strategy: free` (the playbook as
//! shipped: hosts independent, like the ssh loop) and `strategy: linear`
//! (every step finishes fleet-wide before the next). Needs the lab:
//! `tests/lab/lab.sh up 30`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SYSTEMCTL: &str = "systemctl restart demo-web && systemctl stop demo-worker && systemctl start demo-worker && systemctl restart demo-worker && systemctl stop demo-idle && systemctl start demo-idle && systemctl stop demo-idle && systemctl restart demo-web";

fn ssh(cfg: &Path, host: &str, cmd: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(cfg)
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
        .arg(host)
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// CPU time the whole machine has spent busy, in seconds (/proc/stat): the
/// lab's hosts share this machine, so this is both sides' work.
fn busy() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

/// A run's wall time and the machine's busy CPU time during it.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
}

fn timed(run: impl FnOnce()) -> Cost {
    let c0 = busy();
    let t = Instant::now();
    run();
    Cost {
        wall: t.elapsed().as_secs_f64(),
        cpu: busy() - c0,
    }
}

fn all(cfg: &Path, hosts: &[String], cmd: &str) -> f64 {
    let t = Instant::now();
    let children: Vec<_> = hosts
        .iter()
        .map(|h| ssh(cfg, h, cmd).spawn().expect("spawn ssh"))
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait ssh").success(), "ssh `{cmd}` failed");
    }
    t.elapsed().as_secs_f64()
}

fn drover(inv: &Path, pb: &Path, forks: usize, expect: usize) -> f64 {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "apply",
            "--format",
            "json",
            "--forks",
            &forks.to_string(),
            "-i",
        ])
        .arg(inv)
        .arg(pb)
        .stdin(Stdio::null())
        .output()
        .expect("run drover");
    let secs = t.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r["status"] != "ok")
        .take(3)
        .map(|r| format!("{} {}: {}", r["hostname"], r["step"], r["error"]))
        .collect();
    assert!(
        out.status.success() && bad.is_empty(),
        "drover apply failed: {bad:?}"
    );
    assert_eq!(results.len(), expect, "every host x operation reported");
    secs
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
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let free = root.join("playbooks/eight-ops.yml");
    let tmp = tempfile::tempdir().expect("tempdir");
    let linear = tmp.path().join("eight-ops-linear.yml");
    let text = std::fs::read_to_string(&free).expect("read playbook");
    std::fs::write(&linear, text.replace("strategy: free", "strategy: linear"))
        .expect("write playbook");
    let inv = dir.join("inventory.yml");
    let cfg = dir.join("ssh_config");
    let n = hosts.len();
    // systemd refuses more than 5 starts in 10 s per unit; the benchmark
    // starts each unit several times a round, so reset that between runs.
    let reset =
        "systemctl reset-failed; systemctl start demo-web demo-worker; systemctl stop demo-idle";
    println!("apply bench: {n} hosts x 8 operations, {rounds} rounds, runs interleaved");
    println!("(cpu: busy CPU seconds of the whole machine, lab hosts included)");
    let mut rows: Vec<[Cost; 3]> = Vec::new();
    for round in 1..=rounds {
        all(&cfg, &hosts, reset);
        let s = timed(|| {
            all(&cfg, &hosts, SYSTEMCTL);
        });
        all(&cfg, &hosts, reset);
        let f = timed(|| {
            drover(&inv, &free, n, n * 8);
        });
        all(&cfg, &hosts, reset);
        let l = timed(|| {
            drover(&inv, &linear, n, n * 8);
        });
        println!(
            "round {round}: ssh+systemctl {:.2} s (cpu {:.1}) | drover free {:.2} s (cpu {:.1}, x{:.2}) | drover linear {:.2} s (cpu {:.1}, x{:.2})",
            s.wall,
            s.cpu,
            f.wall,
            f.cpu,
            f.wall / s.wall,
            l.wall,
            l.cpu,
            l.wall / s.wall
        );
        rows.push([s, f, l]);
    }
    let best = |i: usize| rows.iter().map(|r| r[i].wall).fold(f64::MAX, f64::min);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let ratio = |i: usize| median(rows.iter().map(|r| r[i].wall / r[0].wall).collect());
    let cpu_ratio = |i: usize| median(rows.iter().map(|r| r[i].cpu / r[0].cpu).collect());
    println!(
        "best: ssh+systemctl {:.2} s, drover free {:.2} s (x{:.2}), drover linear {:.2} s (x{:.2})",
        best(0),
        best(1),
        best(1) / best(0),
        best(2),
        best(2) / best(0)
    );
    println!(
        "median of per-round ratios: drover free x{:.2} (cpu x{:.2}), drover linear x{:.2} (cpu x{:.2}); target <= 0.90",
        ratio(1),
        cpu_ratio(1),
        ratio(2),
        cpu_ratio(2)
    );
}
