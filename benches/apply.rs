//! Apply on the lab against plain parallel ssh: the 8-operation playbook
//! (playbooks/eight-ops.yml) on every lab host, timed against the same
//! work done by `ssh host 'systemctl …'` over one fresh connection per
//! host, all hosts in parallel, in the same run. Prints both and the ratio
//! (target: drover at most 0.9x). Needs the lab: `tests/lab/lab.sh up 30`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SYSTEMCTL: &str = "systemctl restart demo-web && systemctl stop demo-worker && systemctl start demo-worker && systemctl restart demo-worker && systemctl stop demo-idle && systemctl start demo-idle && systemctl stop demo-idle && systemctl restart demo-web";

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
    let pb = root.join("playbooks/eight-ops.yml");
    let inv = dir.join("inventory.yml");
    let cfg = dir.join("ssh_config");
    println!(
        "apply bench: {} hosts x 8 operations, {rounds} rounds each, alternating",
        hosts.len()
    );
    let (mut best_d, mut best_s) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["apply", "--format", "json", "--forks"])
            .arg(hosts.len().to_string())
            .arg("-i")
            .arg(&inv)
            .arg(&pb)
            .stdin(Stdio::null())
            .output()
            .expect("run drover");
        let d = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "drover apply failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        let n = report["results"].as_array().map_or(0, |r| r.len());
        assert_eq!(n, hosts.len() * 8, "every host x operation reported");

        let t = Instant::now();
        let children: Vec<_> = hosts
            .iter()
            .map(|h| {
                Command::new("ssh")
                    .arg("-F")
                    .arg(&cfg)
                    .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
                    .arg(h)
                    .arg(SYSTEMCTL)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn ssh")
            })
            .collect();
        for mut c in children {
            assert!(
                c.wait().expect("wait ssh").success(),
                "ssh systemctl failed"
            );
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: drover {d:.2} s, parallel ssh+systemctl {s:.2} s, ratio {:.2}",
            d / s
        );
        best_d = best_d.min(d);
        best_s = best_s.min(s);
    }
    println!(
        "best: drover {best_d:.2} s, parallel ssh+systemctl {best_s:.2} s, ratio {:.2} (target <= 0.90)",
        best_d / best_s
    );
}
