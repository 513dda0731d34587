//! Shared helpers of the lab tests: find the running lab (or skip loudly),
//! talk to its hosts with plain `ssh`/`systemctl` to cross-check drover,
//! and serialise tests that mutate or stop hosts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One lab host, from the run dir's `hosts` file.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// e.g. lab-1.
    pub name: String,
    /// e.g. 10.77.0.11.
    pub addr: String,
    /// The host's system bus socket on this machine.
    pub bus: PathBuf,
}

/// The running lab.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The run dir (DROVER_LAB_DIR, default /run/drover-lab).
    pub dir: PathBuf,
    /// Its generated inventory.
    pub inventory: PathBuf,
    /// Its ssh_config (strict host keys, batch mode).
    pub ssh_config: PathBuf,
    /// Hosts in order.
    pub hosts: Vec<LabHost>,
}

/// The lab, or None (after a loud message) when it is not up. With
/// DROVER_REQUIRE_LAB set to anything non-empty (CI sets 1) a missing lab
/// is a failure, not a skip.
pub fn lab() -> Option<Lab> {
    let dir =
        PathBuf::from(std::env::var("DROVER_LAB_DIR").unwrap_or_else(|_| "/run/drover-lab".into()));
    match probe(&dir) {
        Ok(lab) => Some(lab),
        Err(why) => {
            if std::env::var_os("DROVER_REQUIRE_LAB").is_some_and(|v| !v.is_empty()) {
                panic!("DROVER_REQUIRE_LAB is set but the test lab is not usable: {why}; start it with `tests/lab/lab.sh up 4` (or run tests/run.sh)");
            }
            // Straight to fd 2, not eprintln!: libtest captures the macros'
            // output of passing tests, and a skip must never go unseen.
            let banner = format!(
                "\n**************************************************************************\n\
                 LAB TEST SKIPPED: the test lab is not up ({why}).\n\
                 This test did NOT run. Start the lab (tests/lab/lab.sh up 4, as root) or\n\
                 run tests/run.sh; set DROVER_REQUIRE_LAB=1 to make this a failure.\n\
                 **************************************************************************\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
            None
        }
    }
}

fn probe(dir: &Path) -> Result<Lab, String> {
    let hosts_file = dir.join("hosts");
    let text = std::fs::read_to_string(&hosts_file)
        .map_err(|e| format!("{}: {e}", hosts_file.display()))?;
    let hosts: Vec<LabHost> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(LabHost {
                name: it.next()?.to_string(),
                addr: it.next()?.to_string(),
                bus: PathBuf::from(it.next()?),
            })
        })
        .collect();
    if hosts.is_empty() {
        return Err(format!("{} lists no hosts", hosts_file.display()));
    }
    let lab = Lab {
        dir: dir.to_path_buf(),
        inventory: dir.join("inventory.yml"),
        ssh_config: dir.join("ssh_config"),
        hosts,
    };
    for f in [&lab.inventory, &lab.ssh_config] {
        if !f.is_file() {
            return Err(format!("{} is missing", f.display()));
        }
    }
    let first = &lab.hosts[0].name;
    let out = lab.ssh_output(first, "true");
    if !out.status.success() {
        return Err(format!(
            "`ssh {first} true` fails: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(lab)
}

/// Holds the cross-process test lock until dropped. When the test holding
/// it fails (drops it while panicking), the lab is put back to its
/// baseline first, so one failure does not cascade into the next tests.
pub struct LabLock<'a> {
    file: File,
    lab: &'a Lab,
}

/// The baseline of every lab host's demo units and drover state; run after
/// a failed test. Never fails (a drop must not panic).
const BASELINE: &str = "rm -f /var/lib/drover/maintenance.json; \
systemctl unmask -q demo-web demo-worker demo-idle demo-broken 2>/dev/null; \
systemctl reset-failed; systemctl stop demo-idle demo-broken; \
systemctl start demo-web demo-worker; true";

impl Drop for LabLock<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.lab.restore_baseline();
        }
        // SAFETY: flock on a file descriptor we own.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl Lab {
    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Name of the i-th host (0-based).
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i].name
    }

    /// Take the lab's test lock (flock on RUNDIR/.test.lock): tests that
    /// mutate units or stop hosts hold it so they never overlap, within a
    /// test binary or across processes.
    pub fn lock(&self) -> LabLock<'_> {
        let path = self.dir.join(".test.lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: flock on a file descriptor we own; blocks until ours.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        LabLock { file: f, lab: self }
    }

    /// Every host up and at its baseline (see [`BASELINE`]), best effort:
    /// a stopped host is started again. Used while a failed test unwinds,
    /// so nothing here may panic.
    pub fn restore_baseline(&self) {
        let script = std::env::var_os("DROVER_LAB_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh"));
        for h in &self.hosts {
            let up = self.ssh_output(&h.name, "true").status.success();
            if !up {
                let _ = Command::new(&script)
                    .args(["start-host", &h.name])
                    .env("DROVER_LAB_DIR", &self.dir)
                    .output();
            }
            let _ = self.ssh_output(&h.name, BASELINE);
        }
    }

    /// Run a command on a host with plain ssh (the lab's ssh_config).
    pub fn ssh_output(&self, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .arg("-o")
            .arg("ConnectTimeout=5")
            .arg(host)
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Run a command on a host; panic unless it succeeds; its stdout.
    pub fn ssh(&self, host: &str, cmd: &str) -> String {
        let out = self.ssh_output(host, cmd);
        assert!(
            out.status.success(),
            "ssh {host} {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show` of a unit inside the host, as a map.
    pub fn show(&self, host: &str, unit: &str) -> BTreeMap<String, String> {
        let text = self.ssh(
            host,
            &format!(
                "systemctl show -p Id,LoadState,ActiveState,SubState,UnitFileState,ActiveEnterTimestamp,InvocationID,MainPID --timestamp=unix {unit}"
            ),
        );
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A unit's InvocationID inside the host: it changes exactly when the
    /// unit starts, so an unchanged one proves the unit was not touched.
    pub fn invocation(&self, host: &str, unit: &str) -> String {
        self.show(host, unit)["InvocationID"].clone()
    }

    /// `systemctl show` for several units at once (one ssh per call).
    pub fn show_many(
        &self,
        host: &str,
        units: &[&str],
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        units
            .iter()
            .map(|u| (u.to_string(), self.show(host, u)))
            .collect()
    }

    /// Run tests/lab/lab.sh (or $DROVER_LAB_SCRIPT) with arguments; panic
    /// unless it succeeds.
    pub fn lab_sh(&self, args: &[&str]) {
        let script = std::env::var_os("DROVER_LAB_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh"));
        let out = Command::new(&script)
            .args(args)
            .env("DROVER_LAB_DIR", &self.dir)
            .output()
            .expect("run lab.sh");
        assert!(
            out.status.success(),
            "lab.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `cmd` on `host` when the returned guard drops (best effort):
    /// how a test puts back what it changed on a lab host, also when it
    /// fails half-way.
    pub fn undo_on_drop(&self, host: &str, cmd: &str) -> Undo<'_> {
        Undo {
            lab: self,
            host: host.to_string(),
            cmd: cmd.to_string(),
        }
    }

    /// A multi-threaded runtime and a session to `host` through drover's
    /// own carrier (the lab inventory's settings), for tests of the library.
    pub fn session(
        &self,
        host: &str,
    ) -> (tokio::runtime::Runtime, drover::remote::carrier::Session) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let inv = drover::model::inventory::Inventory::load(&self.inventory).expect("inventory");
        let h = inv.host(host).expect("a lab host").clone();
        let session = rt
            .block_on(drover::remote::carrier::connect(&h))
            .expect("connect");
        (rt, session)
    }

    /// A `drover` command (the binary under test).
    pub fn drover(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
        c.stdin(Stdio::null());
        c
    }

    /// Write an inventory with the given hosts section under `dir`; the
    /// defaults are the lab's (ssh_config, root, 5 s timeout).
    pub fn inventory_with(&self, dir: &Path, hosts_yaml: &str) -> PathBuf {
        let path = dir.join("inventory.yml");
        let text = format!(
            "defaults:\n  user: root\n  transport: ssh\n  ssh_config: {}\n  connect_timeout: 5s\nhosts:\n{hosts_yaml}",
            self.ssh_config.display()
        );
        std::fs::write(&path, text).expect("write inventory");
        path
    }
}

/// Run a command, returning (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// PIDs of `ssh` processes whose command line contains `needle`.
pub fn ssh_pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if text.starts_with("ssh ") && text.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// A loopback HTTP endpoint that holds each request until released: a
/// `wait.http` gate the test controls, so it knows exactly where the run is.
pub struct Gate {
    /// The loopback port it listens on.
    pub port: u16,
    reached: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl Gate {
    /// Listen on a free loopback port.
    pub fn new() -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut released = false;
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { break };
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = reached_tx.send(());
                if !released {
                    // Hold this request until the test says go.
                    released = release_rx.recv().is_ok();
                }
                let _ = std::io::Write::write_all(
                    &mut c,
                    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                );
            }
        });
        Gate {
            port,
            reached,
            release,
        }
    }

    /// Block until a request has arrived (a minute at most).
    pub fn wait_reached(&self) {
        self.reached
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the run never reached the gate");
    }

    /// Let the held request (and every later one) through.
    pub fn open(&self) {
        let _ = self.release.send(());
    }
}

/// Runs a command on a lab host when dropped; see [`Lab::undo_on_drop`].
pub struct Undo<'a> {
    lab: &'a Lab,
    host: String,
    cmd: String,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let _ = self.lab.ssh_output(&self.host, &self.cmd);
    }
}

/// demo-idle cannot start on a host (a runtime drop-in whose ExecStartPre
/// fails): a failure on that host only, for retry tests.
pub const IDLE_FAILS: &str = "mkdir -p /run/systemd/system/demo-idle.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' > /run/systemd/system/demo-idle.service.d/fail.conf && systemctl daemon-reload";

/// demo-idle can start again (the drop-in gone, its failure forgotten).
pub const IDLE_FIXED: &str = "rm -rf /run/systemd/system/demo-idle.service.d && systemctl daemon-reload && systemctl reset-failed demo-idle";

/// Back to the baseline for demo-idle: no drop-in, stopped, no failure.
pub const IDLE_RESET: &str = "rm -rf /run/systemd/system/demo-idle.service.d && systemctl daemon-reload; systemctl stop demo-idle; systemctl reset-failed";
