//! The ssh carrier: one OpenSSH ControlMaster per host (native mux),
//! strict host keys, and a master that never outlives drover. D-Bus
//! reaches the host's bus over it as a stream forwarded to the system bus
//! socket, or through `systemd-stdio-bridge` on one channel, each after
//! the maintenance preread.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::inventory::Host;
use crate::remote::carrier::local::bus_failure;
use crate::remote::carrier::stream::stream_split;
use crate::remote::carrier::CarrierError;
use crate::remote::carrier::FailureKind;
use crate::remote::carrier::Link;
use crate::remote::carrier::Preread;
use crate::remote::carrier::Session;
use crate::remote::carrier::BRIDGE;
use crate::remote::carrier::GUARD_GRACE;
use crate::remote::carrier::MASTER_EXIT_WAIT;
use crate::remote::carrier::MAX_CHANNELS;
use crate::remote::systemd::Systemd;

/// The SSH side of a session: the master, the bridge channel and the
/// channel budget. Dropping it without `close` still stops the master.
pub(super) struct SshLink {
    pub(super) ssh: Option<Arc<openssh::Session>>,
    pub(super) bridge: Option<openssh::Child<Arc<openssh::Session>>>,
    pub(super) master: Option<Master>,
    pub(super) control_dir: Option<tempfile::TempDir>,
    pub(super) channels: Arc<Semaphore>,
    pub(super) _bridge_permit: Option<OwnedSemaphorePermit>,
    pub(super) bridge_stderr: Arc<Mutex<String>>,
    /// The preamble's reading, until the Session takes it.
    pub(super) preread: Mutex<Option<Preread>>,
}

impl SshLink {
    /// `program` on the host, under `sudo -n` with `become` (host commands
    /// run as root like the bridge), and the channel permit it holds while
    /// it runs: what every command of the session starts from.
    pub(super) async fn command(
        &self,
        program: &str,
        become_: bool,
    ) -> Result<(openssh::Command<'_>, tokio::sync::SemaphorePermit<'_>), CarrierError> {
        let closed = || CarrierError::new(FailureKind::Other, "session is closed");
        let ssh = self.ssh.as_ref().ok_or_else(closed)?;
        let permit = self.channels.acquire().await.map_err(|_| closed())?;
        let cmd = if become_ {
            let mut c = ssh.command("sudo");
            c.arg("-n").arg(program);
            c
        } else {
            ssh.command(program)
        };
        Ok((cmd, permit))
    }

    /// [`SshLink::command`] for a program that outlives the borrow: the
    /// command owns its share of the session, the permit its channel.
    pub(super) async fn owned_command(
        &self,
        program: &str,
        become_: bool,
    ) -> Result<(openssh::OwningCommand<Arc<openssh::Session>>, OwnedSemaphorePermit), CarrierError>
    {
        let closed = || CarrierError::new(FailureKind::Other, "session is closed");
        let ssh = self.ssh.as_ref().ok_or_else(closed)?;
        let permit = self
            .channels
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let cmd = if become_ {
            let mut c = openssh::Session::to_command(ssh.clone(), "sudo");
            c.arg("-n").arg(program);
            c
        } else {
            openssh::Session::to_command(ssh.clone(), program)
        };
        Ok((cmd, permit))
    }

    pub(super) async fn shutdown(&mut self) {
        let t0 = std::time::Instant::now();
        // Our D-Bus stream is already closed, so the bridge has seen EOF;
        // drop the channel handle without waiting for its exit status.
        drop(self.bridge.take());
        self._bridge_permit.take();
        let ssh = self.ssh.take().and_then(|s| Arc::try_unwrap(s).ok());
        match self.master.take() {
            Some(master) => {
                // Stop the master directly, as `ssh -O exit` does: no mux
                // round trips, and the pidfd tells us when it is gone.
                // Detach first so openssh does not also ask the (dying)
                // master to stop.
                if let Some(s) = ssh {
                    let _ = s.detach();
                }
                master.signal(libc::SIGTERM);
                if !master.wait_gone(MASTER_EXIT_WAIT).await {
                    tracing::debug!(pid = master.pid, "ssh master ignored SIGTERM; killing it");
                    master.signal(libc::SIGKILL);
                    master.wait_gone(MASTER_EXIT_WAIT).await;
                }
            }
            None => {
                // Pid unknown (the alive check failed): ask politely, then
                // make sure by the control directory's name.
                if let Some(s) = ssh {
                    if let Err(e) = s.close().await {
                        tracing::debug!("closing ssh master: {}", chain(&e));
                    }
                }
                if let Some(dir) = self.control_dir.as_ref() {
                    kill_referencing(dir.path());
                }
            }
        }
        if let Some(dir) = self.control_dir.take() {
            let _ = dir.close();
        }
        tracing::debug!(elapsed = ?t0.elapsed(), "ssh session closed");
    }
}

impl Drop for SshLink {
    fn drop(&mut self) {
        // Reached only when `close` was not called (an error path or a
        // panic): stop the master by pid so no ssh process is left behind.
        if let Some(master) = self.master.take() {
            master.signal(libc::SIGTERM);
        }
        if let Some(dir) = self.control_dir.as_ref() {
            kill_referencing(dir.path());
        }
    }
}

/// The `ssh -F`-like builder for a host: strict host keys always.
fn session_builder(host: &Host, control_dir: &Path) -> openssh::SessionBuilder {
    let mut b = openssh::SessionBuilder::default();
    b.known_hosts_check(openssh::KnownHosts::Strict)
        // ssh's ConnectTimeout is whole seconds; never 0 (= system default).
        .connect_timeout(host.connect_timeout.max(Duration::from_secs(1)))
        .control_directory(control_dir)
        // A host that dies mid-run (no FIN, no RST) is noticed within ~16 s
        // instead of TCP's many minutes: ssh gives up at the 4th unanswered
        // keepalive (ServerAliveCountMax 3), the master exits, the stream
        // ends, and that host's pending D-Bus calls fail. 4 s keeps that
        // under the 20 s an unattended run promises.
        .server_alive_interval(Duration::from_secs(4))
        // A safety net if drover is SIGKILLed: an idle master exits by itself.
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
    if let Some(cfg) = &host.ssh_config {
        b.config_file(cfg);
    }
    if let Some(user) = &host.user {
        b.user(user.clone());
    }
    if let Some(port) = host.port {
        b.port(port);
    }
    b
}

pub(super) async fn connect_ssh(host: &Host) -> Result<Session, CarrierError> {
    if let Some(cfg) = &host.ssh_config {
        if !cfg.is_file() {
            return Err(CarrierError::new(
                FailureKind::Other,
                format!("ssh_config {} does not exist", cfg.display()),
            ));
        }
    }
    // A private directory per host for the control socket: its path names
    // exactly our ssh processes, which makes cleanup by pid certain.
    let runtime = runtime_dir();
    // The first connection of a process also sweeps what killed ones
    // left, beside its ssh handshake (milliseconds against tens of them).
    let sweep = super::sweep::first(&runtime, kill_referencing_any);
    let control_dir = tempfile::Builder::new()
        .prefix(super::sweep::PREFIX)
        .tempdir_in(&runtime)
        .and_then(|d| super::sweep::claim(d.path()).map(|()| d))
        .map_err(|e| {
            CarrierError::new(
                FailureKind::Other,
                format!(
                    "cannot create a control directory in {}: {e}",
                    runtime.display()
                ),
            )
        })?;
    let builder = session_builder(host, control_dir.path());
    let t0 = std::time::Instant::now();
    let guard = host.connect_timeout * 2 + GUARD_GRACE;
    let (launched, ()) = tokio::join!(
        tokio::time::timeout(guard, builder.launch_master(&host.address)),
        async {
            if let Some(sweep) = sweep {
                let _ = sweep.await;
            }
        }
    );
    let master = match launched {
        Ok(Ok(dir)) => dir,
        Ok(Err(e)) => {
            kill_referencing(control_dir.path());
            return Err(classify_ssh(&e));
        }
        Err(_) => {
            kill_referencing(control_dir.path());
            return Err(CarrierError::new(
                FailureKind::Timeout,
                format!(
                    "ssh did not connect within {}",
                    humantime::format_duration(guard)
                ),
            ));
        }
    };
    tracing::debug!(host = %host.name, elapsed = ?t0.elapsed(), "ssh master up");
    let ctl = master.path().join("master");
    let ssh = Arc::new(openssh::Session::new_native_mux(master));
    let mut link = SshLink {
        ssh: Some(ssh.clone()),
        bridge: None,
        master: None,
        control_dir: Some(control_dir),
        channels: Arc::new(Semaphore::new(MAX_CHANNELS)),
        _bridge_permit: None,
        bridge_stderr: Default::default(),
        preread: Default::default(),
    };
    // The master's pid, so close (and Drop) can make sure it is gone.
    link.master = master_pid(&ctl).await.and_then(Master::open);
    let setup = async {
        // Without `become`, D-Bus goes over a forwarded stream to the bus
        // socket: no process on the host. `become` needs root's bus
        // identity, which only the bridge under sudo has; a server that
        // refuses stream forwarding gets the bridge too.
        let conn = if host.become_ {
            start_bridge(&mut link, &ssh, host).await?
        } else {
            match open_forward(&mut link, &ssh, &ctl).await {
                Ok(conn) => conn,
                Err(fwd) => {
                    tracing::debug!(host = %host.name, "D-Bus forward unavailable ({fwd}); using {BRIDGE}");
                    start_bridge(&mut link, &ssh, host).await.map_err(|e| {
                        CarrierError::new(
                            e.kind,
                            format!("{} (tried first: {})", e.detail, fwd.detail),
                        )
                    })?
                }
            }
        };
        Systemd::new(conn).await.map_err(bus_failure)
    };
    let systemd =
        match tokio::time::timeout(host.connect_timeout.max(Duration::from_secs(1)), setup).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                link.shutdown().await;
                return Err(e);
            }
            Err(_) => {
                link.shutdown().await;
                return Err(CarrierError::new(
                    FailureKind::Bridge,
                    format!(
                        "{BRIDGE} did not answer within {}",
                        humantime::format_duration(host.connect_timeout)
                    ),
                ));
            }
        };
    tracing::debug!(host = %host.name, elapsed = ?t0.elapsed(), "D-Bus over ssh up");
    let preread = link.preread.lock().ok().and_then(|mut p| p.take());
    Ok(Session {
        host: host.name.clone(),
        systemd,
        link: Link::Ssh(Box::new(link)),
        preread: std::sync::Mutex::new(preread),
        resident: tokio::sync::Mutex::new(None),
        become_: host.become_,
    })
}

/// Where control directories go: $XDG_RUNTIME_DIR (private, tmpfs) when
/// set, else the system temp dir.
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

async fn master_pid(ctl: &Path) -> Option<u32> {
    let mut conn = openssh_mux_client::Connection::connect(ctl).await.ok()?;
    conn.send_alive_check().await.ok().map(|p| p.get())
}

/// The error and its sources on one line: openssh puts ssh's own message
/// (the useful part) in the source.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// Turn ssh's message into a failure kind an operator can act on.
pub(super) fn classify_ssh(e: &openssh::Error) -> CarrierError {
    let text = chain(e);
    let lower = text.to_lowercase();
    let kind = if lower.contains("host key verification failed")
        || lower.contains("remote host identification has changed")
        || lower.contains("host key is known")
        || lower.contains("no matching host key")
    {
        FailureKind::HostKey
    } else if lower.contains("timed out") {
        FailureKind::Timeout
    } else if lower.contains("connection refused") {
        FailureKind::Refused
    } else if lower.contains("permission denied")
        || lower.contains("too many authentication failures")
    {
        FailureKind::Auth
    } else if lower.contains("no route to host")
        || lower.contains("network is unreachable")
        || lower.contains("could not resolve")
        || lower.contains("name or service not known")
    {
        FailureKind::Unreachable
    } else {
        FailureKind::Other
    };
    let detail = match kind {
        FailureKind::HostKey => format!(
            "{text} (the host's key is not in known_hosts or has changed; drover checks host keys strictly and never accepts one silently: verify the key, then add it with ssh-keyscan or ssh)"
        ),
        _ => text,
    };
    CarrierError::new(kind, detail)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The ssh master process, held by a pidfd: a signal reaches that process
/// and never another that reused its pid after it exited.
pub(super) struct Master {
    pid: u32,
    fd: OwnedFd,
}

impl Master {
    /// Pin the process the master's alive check named, right away.
    fn open(pid: u32) -> Option<Master> {
        let raw = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
        // descriptor (or -1); no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the kernel just returned this descriptor to us alone.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Some(Master { pid, fd })
    }

    /// Send `signal` (0: only check); false once the process is gone.
    fn signal(&self, signal: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal(2) on a pidfd we own, with no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }

    fn alive(&self) -> bool {
        self.signal(0) && !is_zombie(self.pid)
    }

    /// Wait (bounded) for the master to exit. It is not our child, so
    /// there is no exit status to wait for; this checks every 10 ms and
    /// runs only while closing.
    async fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.alive() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// SIGTERM every `ssh` process whose command line names `dir` (our private
/// control directory): the master, or an ssh still connecting after a
/// timeout. Nothing else can name that directory.
pub(super) fn kill_referencing(dir: &Path) {
    kill_referencing_any(&[dir]);
}

/// [`kill_referencing`] for several directories in one pass over /proc.
fn kill_referencing_any(dirs: &[&Path]) {
    let needles: Vec<&[u8]> = dirs
        .iter()
        .map(|d| d.as_os_str().as_encoded_bytes())
        .filter(|n| !n.is_empty())
        .collect();
    if needles.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = || {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                return false;
            };
            let is_ssh = cmdline
                .split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0 == b"ssh" || argv0.ends_with(b"/ssh"));
            is_ssh
                && needles
                    .iter()
                    .any(|n| cmdline.windows(n.len()).any(|w| w == *n))
        };
        if !ours() {
            continue;
        }
        // Pin the process, then look again: the signal goes to the process
        // whose command line was read, never to one that reused its pid.
        if let Some(process) = Master::open(pid).filter(|_| ours()) {
            process.signal(libc::SIGTERM);
        }
    }
}

/// The preread script, as a literal so the bridge preamble can extend it.
/// Prints two lines: the login's uid (from /proc, shell builtins only: the
/// D-Bus EXTERNAL handshake over a forward must name the uid the remote bus
/// sees) and the maintenance state file as base64 (empty: no file; `!`:
/// unreadable). A constant: no user data.
macro_rules! preread_script {
    () => {
        "while read -r k v _; do if [ \"$k\" = Uid: ]; then printf %s \"$v\"; break; fi; \
done </proc/self/status; echo; \
f=/var/lib/drover/maintenance.json; \
if [ -f \"$f\" ]; then base64 -w0 \"$f\" 2>/dev/null || printf '!'; \
elif [ -e \"$f\" ] || [ -L \"$f\" ]; then printf '!'; fi; echo"
    };
}

/// Run in its own SSH session next to the D-Bus forward: see
/// [`preread_script`].
const PREREAD: &str = preread_script!();

/// Runs in the bridge's own SSH session: the preread lines, then it becomes
/// the bridge (which says nothing until it hears our AUTH).
const BRIDGE_PREAMBLE: &str = concat!(preread_script!(), "; exec systemd-stdio-bridge");

/// The remote system bus socket a forward connects to (the bridge's
/// default too).
const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The longest preamble line accepted (the state file is small).
const PREAMBLE_MAX: usize = 1 << 20;

/// D-Bus over a forwarded unix stream to the host's bus socket, with the
/// preread in a short session beside it (both on the one connection).
pub(super) async fn open_forward(
    link: &mut SshLink,
    ssh: &Arc<openssh::Session>,
    ctl: &Path,
) -> Result<zbus::Connection, CarrierError> {
    let fail = |what: String| CarrierError::new(FailureKind::Bus, what);
    let local = ctl.with_file_name("bus");
    let preread = async {
        let _permit = link
            .channels
            .acquire()
            .await
            .map_err(|_| CarrierError::new(FailureKind::Other, "channel budget closed"))?;
        let mut child = ssh
            .command("sh")
            .arg("-c")
            .arg(PREREAD)
            .stdin(openssh::Stdio::null())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::null())
            .spawn()
            .await
            .map_err(|e| fail(format!("reading the host's state: {}", chain(&e))))?;
        // Bounded like the bridge's preamble: a huge state file must not
        // fill our memory.
        let limit = PREAMBLE_MAX as u64 + 64;
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout().take() {
            stdout
                .take(limit)
                .read_to_end(&mut out)
                .await
                .map_err(|e| fail(format!("reading the host's state: {e}")))?;
        }
        if out.len() as u64 >= limit {
            return Err(fail("the maintenance state file is too large".into()));
        }
        let _ = child.wait().await;
        let mut lines = out.split(|b| *b == b'\n');
        let uid = lines
            .next()
            .and_then(|l| std::str::from_utf8(l).ok()?.trim().parse().ok());
        let state = lines.next().map(parse_preread);
        match (uid, state) {
            (Some(uid), Some(state)) => Ok((uid, state)),
            _ => Err(fail("reading the host's state: unexpected answer".into())),
        }
    };
    let forward = async {
        ssh.request_port_forward(
            openssh::ForwardType::Local,
            openssh::Socket::UnixSocket {
                path: local.as_path().into(),
            },
            openssh::Socket::UnixSocket {
                path: Path::new(SYSTEM_BUS_SOCKET).into(),
            },
        )
        .await
        .map_err(|e| fail(format!("forwarding {SYSTEM_BUS_SOCKET}: {}", chain(&e))))
    };
    let (pre, fwd) = tokio::join!(preread, forward);
    let (uid, state) = pre?;
    fwd?;
    let stream = tokio::net::UnixStream::connect(&local)
        .await
        .map_err(|e| fail(format!("connecting to the forward: {e}")))?;
    let (r, w) = stream.into_split();
    // Our own halves, not a unix socket to zbus: fds cannot cross ssh, so
    // zbus must not offer to pass them.
    let split = stream_split(r, w);
    // A server that refuses the forward closes the stream: the handshake
    // fails here and the caller falls back to the bridge.
    let conn = zbus::connection::Builder::socket(split)
        .user_id(uid)
        .build()
        .await
        .map_err(|e| fail(format!("D-Bus over the forward: {e}")))?;
    *link
        .preread
        .lock()
        .map_err(|_| CarrierError::new(FailureKind::Other, "poisoned"))? = Some(state);
    Ok(conn)
}

/// What a preread line says about the maintenance state file.
fn parse_preread(line: &[u8]) -> Preread {
    match line {
        b"" => Preread::Missing,
        b"!" => Preread::Unreadable,
        text => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Preread::Content(bytes),
                Err(_) => Preread::Unreadable,
            }
        }
    }
}

/// One line of the bridge's preamble, read a byte at a time so no D-Bus
/// byte after it is consumed. `None`: the stream ended first.
async fn preamble_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, CarrierError> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = r.read(&mut b).await.map_err(|e| {
            CarrierError::new(
                FailureKind::Bridge,
                format!("reading the bridge preamble: {e}"),
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        if b[0] == b'\n' {
            return Ok(Some(line));
        }
        if line.len() >= PREAMBLE_MAX {
            return Err(CarrierError::new(
                FailureKind::Bridge,
                "bridge preamble too long",
            ));
        }
        line.push(b[0]);
    }
}

/// `systemd-stdio-bridge` over one SSH channel (under `sudo -n` with
/// `become`), after the preread lines.
pub(super) async fn start_bridge(
    link: &mut SshLink,
    ssh: &Arc<openssh::Session>,
    host: &Host,
) -> Result<zbus::Connection, CarrierError> {
    let permit = link
        .channels
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| CarrierError::new(FailureKind::Other, "channel budget closed"))?;
    link._bridge_permit = Some(permit);
    let mut cmd = if host.become_ {
        let mut c = openssh::Session::to_command(ssh.clone(), "sudo");
        c.arg("-n").arg("sh").arg("-c").arg(BRIDGE_PREAMBLE);
        c
    } else {
        let mut c = openssh::Session::to_command(ssh.clone(), "sh");
        c.arg("-c").arg(BRIDGE_PREAMBLE);
        c
    };
    cmd.stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped());
    let mut child = cmd.spawn().await.map_err(|e| {
        CarrierError::new(
            FailureKind::Bridge,
            format!("cannot start {BRIDGE}: {}", chain(&e)),
        )
    })?;
    let stdin = child.stdin().take();
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();
    if let Some(mut err) = stderr {
        let sink = link.bridge_stderr.clone();
        // Keep the first few KiB of the bridge's complaints (sudo asking
        // for a password, bridge missing) to explain a failed handshake.
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    if s.len() < 4096 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
    }
    link.bridge = Some(child);
    let (Some(stdin), Some(mut stdout)) = (stdin, stdout) else {
        return Err(CarrierError::new(
            FailureKind::Bridge,
            "bridge has no stdio",
        ));
    };
    let stderr_text = |link: &SshLink| {
        link.bridge_stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    // The uid line is for forwards; the bridge authenticates us itself.
    let mut lines = Vec::new();
    for _ in 0..2 {
        match preamble_line(&mut stdout).await? {
            Some(l) => lines.push(l),
            None => {
                return Err(CarrierError::new(
                    FailureKind::Bridge,
                    format!("{BRIDGE} exited before starting: {}", stderr_text(link)),
                ))
            }
        }
    }
    *link
        .preread
        .lock()
        .map_err(|_| CarrierError::new(FailureKind::Other, "poisoned"))? =
        Some(parse_preread(&lines[1]));
    let split = stream_split(stdout, stdin);
    zbus::connection::Builder::socket(split)
        .build()
        .await
        .map_err(|e| {
            let stderr = stderr_text(link);
            let detail = if stderr.is_empty() {
                format!("{BRIDGE}: {e}")
            } else {
                format!("{BRIDGE}: {e}: {stderr}")
            };
            CarrierError::new(FailureKind::Bridge, detail)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn ssh_messages_are_classified() {
        let e = openssh::Error::Connect(io::Error::other("Host key verification failed."));
        assert_eq!(classify_ssh(&e).kind, FailureKind::HostKey);
        let e = openssh::Error::Connect(io::Error::other(
            "connect to host 10.77.0.99 port 22: Connection timed out",
        ));
        assert_eq!(classify_ssh(&e).kind, FailureKind::Timeout);
        let e = openssh::Error::Connect(io::Error::other(
            "connect to host x port 22: Connection refused",
        ));
        assert_eq!(classify_ssh(&e).kind, FailureKind::Refused);
    }
}
