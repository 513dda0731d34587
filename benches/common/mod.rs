//! What the serve benches share: the drover binary, an admin key, a server
//! on a free loopback port, the lab's hosts, and what `/proc` says about a
//! process. Each bench is its own crate and uses part of this.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The drover binary this bench was built with (or `DROVER_BENCH_BIN`,
/// to measure another build the same way), stdin closed.
pub fn drover() -> Command {
    let bin =
        std::env::var_os("DROVER_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_drover").into());
    let mut c = Command::new(bin);
    c.stdin(Stdio::null());
    c
}

/// An admin key, its entry written to `dir/keys.yml`.
pub fn keygen(dir: &Path) -> String {
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

/// The lab's directory (`DROVER_LAB_DIR`, else /run/drover-lab) and its
/// hosts, or None when it is not up.
pub fn lab_hosts() -> Option<(PathBuf, Vec<String>)> {
    let dir =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    let text = std::fs::read_to_string(dir.join("hosts")).ok()?;
    let hosts = text
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    Some((dir, hosts))
}

/// A running `drover serve`.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stderr.
    pub log: PathBuf,
}

impl Server {
    /// `drover ARGS --listen 127.0.0.1:0 --rate-limit 0` (ARGS name the
    /// `serve` subcommand), stderr to `log`; returns once it listens.
    pub fn start<I, S>(args: I, log: &Path) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = drover()
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--rate-limit", "0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("drover serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let Some(addr) = line.trim().strip_prefix("drover serve: listening on ") else {
            let _ = child.kill();
            panic!(
                "the server did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        Server {
            base: format!("http://{addr}"),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait, and what it logged.
    pub fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The SSH connections a server's log (`-v`) says it opened in its life.
pub fn connections_opened(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("connections_opened=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or(usize::MAX)
}

/// Threads, memory and CPU time of a process.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub threads: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
}

impl Usage {
    pub fn of(pid: u32) -> Usage {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime
        // are the 12th and 13th.
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Usage {
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            cpu_s: ticks as f64 / hz,
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

/// The value at quantile `p` of sorted `v`.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `cmd` on every host at once, each over a fresh ssh connection (no
/// ControlMaster), waiting for all.
pub fn ssh_all(cfg: &Path, hosts: &[String], cmd: &str) {
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

/// The lab's test lock in `dir`, held (exclusively) until the returned
/// file is dropped: lab tests do not run beside the bench.
pub fn lab_lock(dir: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".test.lock"))
        .expect("lab lock");
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    lock
}
