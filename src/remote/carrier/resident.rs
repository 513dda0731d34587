//! A program kept running on the host for the session's life, spoken to
//! in lines on its stdin and stdout. What drover runs before every change
//! in cluster mode (the host's fence) then costs one round trip on an
//! open channel, not a new SSH session each time: a session is a login
//! (PAM, a shell), about 100 ms of wall time when thirty hosts change at
//! once on a small machine.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::OwnedSemaphorePermit;

use crate::remote::carrier::ssh::chain;
use crate::remote::carrier::{CarrierError, FailureKind, Link, Session};

/// Longest line drover reads from a resident program: no host, however
/// broken, makes it hold more.
const LINE_MAX: u64 = 4096;

/// Most lines a resident program may print before its answer.
const LINES_MAX: usize = 64;

/// A resident program. Dropping it closes its stdin (and over SSH its
/// channel): the program reads end of file and goes; locally it is
/// killed.
pub struct Resident {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    stdout: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    _held: Held,
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resident")
    }
}

/// What keeps the program alive: the local child, or the SSH channel and
/// its place in the session's channel budget.
enum Held {
    Local(#[allow(dead_code)] tokio::process::Child),
    Ssh(
        #[allow(dead_code)] openssh::Child<Arc<openssh::Session>>,
        #[allow(dead_code)] OwnedSemaphorePermit,
    ),
}

impl Resident {
    /// Send `line` (one line, no newline in it) and read lines until one
    /// starts with `mark`: the lines before it (what the program said
    /// besides its answer, e.g. a command's complaint) and the rest of
    /// the marked line. End of file first is an error: the program went.
    pub async fn ask(&mut self, line: &str, mark: &str) -> io::Result<(Vec<String>, String)> {
        if line.contains('\n') {
            return Err(io::Error::other("a request is one line"));
        }
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let mut said = Vec::new();
        loop {
            let mut buf = String::new();
            let n = (&mut self.stdout)
                .take(LINE_MAX)
                .read_line(&mut buf)
                .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the host's resident program went",
                ));
            }
            let text = buf.trim_end_matches('\n');
            if let Some(rest) = text.strip_prefix(mark) {
                return Ok((said, rest.to_string()));
            }
            if said.len() >= LINES_MAX {
                return Err(io::Error::other(
                    "the host's resident program says too much",
                ));
            }
            said.push(text.to_string());
        }
    }
}

impl Session {
    /// The slot where this session keeps its resident program, started by
    /// its first user ([`Session::start_resident`]) and dropped by anyone
    /// who finds it broken.
    pub fn resident(&self) -> &tokio::sync::Mutex<Option<Resident>> {
        &self.resident
    }

    /// Start `program` with `args` on the host (each argument
    /// shell-quoted for the remote shell; locally no shell; under
    /// `sudo -n` with `become`), stdin and stdout piped, stderr dropped
    /// (a resident program says what it has to say on stdout). Over SSH it
    /// holds one channel of [`crate::remote::carrier::MAX_CHANNELS`] for
    /// as long as it lives.
    pub async fn start_resident(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<Resident, CarrierError> {
        let failed =
            |e: String| CarrierError::new(FailureKind::Other, format!("cannot start {program}: {e}"));
        match &self.link {
            Link::Local => {
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| failed(e.to_string()))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err(failed("no pipes".into()));
                };
                Ok(Resident {
                    stdin: Box::pin(stdin),
                    stdout: BufReader::new(Box::pin(stdout)),
                    _held: Held::Local(child),
                })
            }
            Link::Ssh(l) => {
                let (mut cmd, permit) = l.owned_command(program, self.become_).await?;
                cmd.args(args)
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::null());
                let mut child = cmd.spawn().await.map_err(|e| failed(chain(&e)))?;
                let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take())
                else {
                    return Err(failed("no pipes".into()));
                };
                Ok(Resident {
                    stdin: Box::pin(stdin),
                    stdout: BufReader::new(Box::pin(stdout)),
                    _held: Held::Ssh(child, permit),
                })
            }
        }
    }
}
