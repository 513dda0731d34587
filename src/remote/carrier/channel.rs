//! How D-Bus reaches the host's bus over the ssh connection: a stream
//! forwarded to the system bus socket, or `systemd-stdio-bridge` over one
//! channel, each after the maintenance preread.

use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::ssh::chain;
use crate::model::inventory::Host;
use crate::remote::carrier::ssh::SshLink;
use crate::remote::carrier::stream::stream_split;
use crate::remote::carrier::CarrierError;
use crate::remote::carrier::FailureKind;
use crate::remote::carrier::Preread;
use crate::remote::carrier::BRIDGE;

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
