//! Carriers: how drover's one systemd client reaches a host's systemd.
//!
//! - `local`: the system bus of this machine (`host.bus`, else
//!   `DBUS_SYSTEM_BUS_ADDRESS`, else the default socket).
//! - `ssh`: one OpenSSH ControlMaster per host (openssh crate, native mux).
//!   D-Bus travels over a stream forwarded to the host's system bus socket
//!   (no process on the host), with one short session beside it that reads
//!   the maintenance state file. With `become`, or when the server refuses
//!   stream forwarding, `systemd-stdio-bridge` runs over one channel
//!   instead (under `sudo -n` for `become`) and its stdin/stdout carry the
//!   stream. Either way zbus talks to the remote systemd exactly as it does
//!   locally, and unit names never reach a shell: they travel inside D-Bus
//!   messages.
//!
//! A host that cannot be reached is a [`CarrierError`] returned within its
//! connect timeout; it never hangs and never affects other hosts. A
//! [`Session`] closes its master on [`Session::close`] and, as a last
//! resort, when dropped, so no `ssh` process outlives drover.

mod capped;
mod local;
mod resident;
mod ssh;
mod stream;
mod sweep;


use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::inventory::{Host, Transport};
use crate::remote::carrier::local::connect_local;
use crate::remote::carrier::ssh::connect_ssh;
use crate::remote::carrier::ssh::SshLink;
use crate::remote::systemd::Systemd;
pub use resident::Resident;
use ssh::chain;

/// Channels drover opens per SSH connection at most. sshd refuses sessions
/// beyond MaxSessions (default 10); the D-Bus bridge takes one, extra
/// commands share the rest.
pub const MAX_CHANNELS: usize = 4;

/// The remote program that carries D-Bus over stdin/stdout.
pub const BRIDGE: &str = "systemd-stdio-bridge";

/// Extra time allowed beyond a host's connect timeout before drover gives
/// up on ssh itself (ssh's own ConnectTimeout normally fires first).
const GUARD_GRACE: Duration = Duration::from_secs(5);

/// How long `close` waits for the master to exit before signalling it.
const MASTER_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Why a host could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// No answer within the connect timeout.
    Timeout,
    /// The port refused the connection.
    Refused,
    /// The host key is unknown or changed; strict checking refused it.
    HostKey,
    /// The server rejected our credentials.
    Auth,
    /// No route, unknown name, network down.
    Unreachable,
    /// SSH worked but the D-Bus bridge did not start or handshake.
    Bridge,
    /// The D-Bus connection (local bus or via the bridge) failed.
    Bus,
    /// Anything else.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Timeout => "connection timed out",
            FailureKind::Refused => "connection refused",
            FailureKind::HostKey => "host key not trusted",
            FailureKind::Auth => "authentication failed",
            FailureKind::Unreachable => "host unreachable",
            FailureKind::Bridge => "D-Bus bridge failed",
            FailureKind::Bus => "D-Bus connection failed",
            FailureKind::Other => "connection failed",
        })
    }
}

/// A host could not be reached: what kind of failure, and the details
/// (ssh's own message, the bridge's stderr, the bus error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct CarrierError {
    /// The class of failure.
    pub kind: FailureKind,
    /// What happened, for the operator.
    pub detail: String,
}

impl CarrierError {
    fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        CarrierError {
            kind,
            detail: detail.into(),
        }
    }
}

/// An open connection to one host's systemd.
pub struct Session {
    host: String,
    systemd: Systemd,
    link: Link,
    /// The maintenance state file as it was when the session opened, read
    /// by the session's one short preread (or the bridge's preamble), so
    /// reading it costs no further login. Taken by the first reader.
    preread: std::sync::Mutex<Option<Preread>>,
    /// A program kept running on the host (see [`Resident`]).
    resident: tokio::sync::Mutex<Option<Resident>>,
    /// `become: true`: host commands run through `sudo -n`.
    become_: bool,
}

/// What the preread found at [`crate::model::maintenance::STATE_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preread {
    /// No file.
    Missing,
    /// Its bytes.
    Content(Vec<u8>),
    /// It exists but could not be read.
    Unreadable,
}

/// Most bytes a host command may print on each of stdout and stderr: no
/// host, however broken or hostile, makes drover hold more.
pub const OUTPUT_MAX: usize = 1 << 20;

/// Read a stream to its end, or fail once it passes [`OUTPUT_MAX`].
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> io::Result<Vec<u8>> {
    let Some(r) = r else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    r.take(OUTPUT_MAX as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > OUTPUT_MAX {
        return Err(io::Error::other(format!(
            "the command printed more than {} KiB; refusing the rest",
            OUTPUT_MAX / 1024
        )));
    }
    Ok(buf)
}

/// A command's stdout and stderr, read side by side (a full pipe on one
/// must not stall the other), each bounded.
async fn bounded_pair<O, E>(out: Option<O>, err: Option<E>) -> io::Result<(Vec<u8>, Vec<u8>)>
where
    O: tokio::io::AsyncRead + Unpin,
    E: tokio::io::AsyncRead + Unpin,
{
    let (o, e) = tokio::join!(read_bounded(out), read_bounded(err));
    Ok((o?, e?))
}

enum Link {
    Local,
    // Boxed: the SSH side is large and Local carries nothing.
    Ssh(Box<SshLink>),
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.host)
            .field(
                "transport",
                &match self.link {
                    Link::Local => "local",
                    Link::Ssh(_) => "ssh",
                },
            )
            .finish()
    }
}

impl Session {
    /// The inventory name of the host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is this machine (`transport: local`): its programs
    /// run here, without ssh.
    pub fn is_local(&self) -> bool {
        matches!(self.link, Link::Local)
    }

    /// The systemd client over this session's D-Bus connection.
    pub fn systemd(&self) -> &Systemd {
        &self.systemd
    }

    /// The maintenance state file read when the session opened, once:
    /// later readers must read the host again (a step may have changed it).
    pub fn take_preread(&self) -> Option<Preread> {
        self.preread.lock().ok().and_then(|mut p| p.take())
    }

    /// Run a program on the host (over an extra SSH channel, bounded by
    /// [`MAX_CHANNELS`]; locally for `transport: local`). Every argument is
    /// shell-quoted for the remote shell.
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<std::process::Output, CarrierError> {
        // An empty, closed stdin is what a command without input sees.
        self.run_input(program, args, &[]).await
    }

    /// Like [`Session::run`], with `input` fed to the program's stdin (then
    /// closed): how drover writes files on a host without putting their
    /// content on a command line.
    pub async fn run_input(
        &self,
        program: &str,
        args: &[&str],
        input: &[u8],
    ) -> Result<std::process::Output, CarrierError> {
        let failed =
            |e: String| CarrierError::new(FailureKind::Other, format!("cannot run {program}: {e}"));
        match &self.link {
            Link::Local => {
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| failed(e.to_string()))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(input)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                }
                let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
                let (out, err) = bounded_pair(stdout, stderr)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let status = child.wait().await.map_err(|e| failed(e.to_string()))?;
                Ok(std::process::Output {
                    status,
                    stdout: out,
                    stderr: err,
                })
            }
            Link::Ssh(l) => {
                let (mut cmd, _permit) = l.command(program, self.become_).await?;
                cmd.args(args)
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::piped());
                let mut child = cmd.spawn().await.map_err(|e| failed(chain(&e)))?;
                if let Some(mut stdin) = child.stdin().take() {
                    stdin
                        .write_all(input)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    stdin.shutdown().await.map_err(|e| failed(e.to_string()))?;
                }
                let (stdout, stderr) = (child.stdout().take(), child.stderr().take());
                // Over the bound, the child is dropped: its channel closes
                // and the remote command gets no further reader.
                let (out, err) = bounded_pair(stdout, stderr)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let status = child.wait().await.map_err(|e| failed(chain(&e)))?;
                Ok(std::process::Output {
                    status,
                    stdout: out,
                    stderr: err,
                })
            }
        }
    }

    /// Close the D-Bus connection, the bridge and the SSH master; returns
    /// once the master process is gone.
    pub async fn close(mut self) {
        let conn = self.systemd.connection().clone();
        // Closing our write half ends the forward (or the bridge's stdin:
        // it exits), and the channel with it.
        let _ = conn.close().await;
        if let Link::Ssh(l) = &mut self.link {
            l.shutdown().await;
        }
    }
}

/// Connect to a host's systemd over its transport. Returns within the
/// host's connect timeout (plus a few seconds' guard) whatever happens.
pub async fn connect(host: &Host) -> Result<Session, CarrierError> {
    match host.transport {
        Transport::Local => connect_local(host).await,
        Transport::Ssh => connect_ssh(host).await,
    }
}
