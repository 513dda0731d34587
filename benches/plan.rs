//! Offline planning at scale: 10,000 and 100,000 hosts × 50 steps through
//! the real `drover plan --facts` binary. Prints wall time and the child's
//! peak RSS for each size. Target: 10,000 hosts under 1 s and 300 MB on a
//! 2-core machine; 100,000 hosts must load and plan at all (a fixed YAML
//! node budget refused 20,000).
//!
//! Run: `cargo bench --bench plan` (HOSTS=10000,100000 STEPS=… to vary).

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

const UNITS: usize = 10;

fn main() {
    // A child measuring one format in a process of its own: the peak RSS
    // of waited-for children (getrusage) then covers that format alone.
    if let (Some(format), Some(files)) = (
        std::env::var_os("PLAN_BENCH_FORMAT"),
        std::env::var_os("PLAN_BENCH_FILES"),
    ) {
        let files = std::path::PathBuf::from(files);
        measure(&format.to_string_lossy(), &files);
        return;
    }
    let sizes: Vec<usize> = std::env::var("HOSTS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for hosts in sizes {
        bench(hosts);
    }
}

/// Generate an inventory, playbook and facts for `hosts` hosts; plan them
/// in each format, each in a process of its own.
fn bench(hosts: usize) {
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    // BENCH_DIR keeps the generated files for profiling.
    let keep = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from);
    let base = keep.clone().unwrap_or_else(|| dir.path().to_path_buf());
    let roles = ["web", "worker", "db", "cache"];
    let regions = [
        "eu.west.1",
        "eu.west.2",
        "eu.east.1",
        "us.east.1",
        "us.west.2",
    ];

    let mut inv = String::from("defaults:\n  user: root\n  connect_timeout: 5s\nhosts:\n");
    for h in 0..hosts {
        let _ = writeln!(
            inv,
            "  host-{h}: {{ address: 10.{}.{}.{}, labels: {{ role: {}, region: {} }}, vars: {{ port: {} }} }}",
            h / 65536 % 256,
            h / 256 % 256,
            h % 256,
            roles[h % roles.len()],
            regions[h / 7 % regions.len()],
            8000 + h % 3
        );
    }
    let mut pb = String::from("name: bench\nvars: { prefix: demo }\nsteps:\n");
    let states = ["restarted", "started", "stopped", "reloaded"];
    for s in 0..steps {
        let target = match s % 5 {
            0 => "_all".to_string(),
            1 => format!("role:{}", roles[s % roles.len()]),
            2 => "region:eu,!role:db".to_string(),
            3 => "[role:web, role:worker]".to_string(),
            _ => "_any,role:cache".to_string(),
        };
        let needs = if s % 7 == 3 { "\n    needs: []" } else { "" };
        let when = if s % 4 == 1 {
            "\n    when: \"host.labels.region != 'us.east.1'\""
        } else {
            ""
        };
        let serial = if s % 6 == 0 {
            "\n    serial: \"25%\""
        } else {
            ""
        };
        let _ = writeln!(
            pb,
            "  - id: step-{s}\n    target: {target}{needs}{when}{serial}\n    service: {{ name: \"{{{{ vars.prefix }}}}-{}\", state: {} }}",
            s % UNITS,
            states[s % states.len()]
        );
    }
    let mut facts =
        String::from("{\"version\":1,\"collected_at\":\"2026-11-25T00:00:00Z\",\"hosts\":{");
    for h in 0..hosts {
        if h > 0 {
            facts.push(',');
        }
        let _ = write!(facts, "\"host-{h}\":{{\"reachable\":true,\"units\":{{");
        for u in 0..UNITS {
            if u > 0 {
                facts.push(',');
            }
            let active = (h + u) % 3 != 0;
            let _ = write!(
                facts,
                "\"demo-{u}.service\":{{\"load_state\":\"loaded\",\"active_state\":\"{}\",\"sub_state\":\"{}\",\"unit_file_state\":\"enabled\",\"start_time\":{},\"invocation_id\":\"{:032x}\",\"main_pid\":{}}}",
                if active { "active" } else { "inactive" },
                if active { "running" } else { "dead" },
                if active { "\"2026-11-24T10:00:00Z\"" } else { "null" },
                h * 16 + u,
                if active { 1000 + u } else { 0 }
            );
        }
        facts.push_str("}}");
    }
    facts.push_str("}}");
    let (pi, pp, pf) = (
        base.join("inv.yml"),
        base.join("pb.yml"),
        base.join("facts.json"),
    );
    std::fs::write(&pi, &inv).expect("write inventory");
    std::fs::write(&pp, &pb).expect("write playbook");
    std::fs::write(&pf, &facts).expect("write facts");
    println!(
        "plan bench: {hosts} hosts x {steps} steps; inventory {} KB, playbook {} KB, facts {} KB",
        inv.len() / 1024,
        pb.len() / 1024,
        facts.len() / 1024
    );
    for format in ["text", "json"] {
        let status = Command::new(std::env::current_exe().expect("the bench's own path"))
            .env("PLAN_BENCH_FORMAT", format)
            .env("PLAN_BENCH_FILES", &base)
            .status()
            .expect("run the bench for one format");
        assert!(status.success(), "the {format} run failed: {status}");
    }
}

/// Plan the generated files in `format` three times; print the best wall
/// time and the peak RSS of those runs.
fn measure(format: &str, base: &std::path::Path) {
    let (pi, pp, pf) = (
        base.join("inv.yml"),
        base.join("pb.yml"),
        base.join("facts.json"),
    );
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["plan", "--format", format, "-i"])
            .arg(&pi)
            .arg("--facts")
            .arg(&pf)
            .arg(&pp)
            .stdout(Stdio::null())
            .status()
            .expect("run drover");
        let secs = start.elapsed().as_secs_f64();
        assert!(status.success(), "drover plan failed: {status}");
        best = best.min(secs);
    }
    println!(
        "plan --format {format:<5} wall {best:.3} s (best of 3), peak RSS {:.1} MB",
        peak_child_rss_mb()
    );
}

/// Largest resident set of any waited-for child, from getrusage.
fn peak_child_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    ru.ru_maxrss as f64 / 1024.0
}
