//! Running a host program whose output may be larger than drover wants:
//! its stdout is read up to a cap, and then the program is let go of (its
//! channel closed, or killed locally) instead of failing the whole read,
//! as [`Session::run`] does past its bound. Used for journals, whose
//! size the host decides.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ssh::chain;
use super::{CarrierError, FailureKind, Link, Session};

/// Most bytes of stderr kept: enough for a program's complaint.
const STDERR_MAX: usize = 16 * 1024;

/// What a capped program did.
#[derive(Debug)]
pub struct Capped {
    /// Its exit code; None when it was cut off, or died of a signal.
    pub code: Option<i32>,
    /// Its stdout, at most the cap.
    pub stdout: Vec<u8>,
    /// The start of its stderr.
    pub stderr: Vec<u8>,
    /// Whether stdout went past the cap (and the program was let go of).
    pub cut: bool,
}

/// Read up to `cap` bytes; whether there was more.
async fn read_up_to<R: AsyncRead + Unpin>(r: Option<R>, cap: usize) -> io::Result<(Vec<u8>, bool)> {
    let Some(r) = r else {
        return Ok((Vec::new(), false));
    };
    let mut buf = Vec::new();
    r.take(cap as u64 + 1).read_to_end(&mut buf).await?;
    let cut = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, cut))
}

/// Keep the first [`STDERR_MAX`] bytes and drain the rest, so a program
/// that writes much to stderr never blocks on it.
async fn drain<R: AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = STDERR_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// stdout up to `cap` beside stderr; once stdout passes the cap, stderr is
/// no longer waited for (the program may never end on its own).
async fn both<O, E>(
    out: Option<O>,
    err: Option<E>,
    cap: usize,
) -> io::Result<(Vec<u8>, bool, Vec<u8>)>
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let err = drain(err);
    tokio::pin!(err);
    let out = read_up_to(out, cap);
    tokio::pin!(out);
    let mut stderr = None;
    let (stdout, cut) = loop {
        tokio::select! {
            o = &mut out => break o?,
            e = &mut err, if stderr.is_none() => stderr = Some(e),
        }
    };
    let stderr = match stderr {
        Some(e) => e,
        None if cut => Vec::new(),
        None => err.await,
    };
    Ok((stdout, cut, stderr))
}

impl Session {
    /// Run `program` with `args` on the host (each argument shell-quoted
    /// for the remote shell; locally no shell at all), stdin empty, and
    /// read at most `cap` bytes of its stdout. Past the cap the program
    /// is let go of: locally killed, over ssh its channel closed (the
    /// remote program then meets a closed pipe). `become` runs it under
    /// `sudo -n`, as [`Session::run`] does.
    pub async fn run_capped(
        &self,
        program: &str,
        args: &[&str],
        cap: usize,
    ) -> Result<Capped, CarrierError> {
        let failed =
            |e: String| CarrierError::new(FailureKind::Other, format!("cannot run {program}: {e}"));
        match &self.link {
            Link::Local => {
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| failed(e.to_string()))?;
                let (out, err) = (child.stdout.take(), child.stderr.take());
                let (stdout, cut, stderr) = both(out, err, cap)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let code = if cut {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    None
                } else {
                    child
                        .wait()
                        .await
                        .map_err(|e| failed(e.to_string()))?
                        .code()
                };
                Ok(Capped {
                    code,
                    stdout,
                    stderr,
                    cut,
                })
            }
            Link::Ssh(l) => {
                let (mut cmd, _permit) = l.command(program, self.become_).await?;
                cmd.args(args)
                    .stdin(openssh::Stdio::null())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::piped());
                let mut child = cmd.spawn().await.map_err(|e| failed(chain(&e)))?;
                let (out, err) = (child.stdout().take(), child.stderr().take());
                let (stdout, cut, stderr) = both(out, err, cap)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let code = if cut {
                    // Dropped unwaited: its channel closes, and nothing
                    // more is read from the host.
                    drop(child);
                    None
                } else {
                    child.wait().await.map_err(|e| failed(chain(&e)))?.code()
                };
                Ok(Capped {
                    code,
                    stdout,
                    stderr,
                    cut,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdout_is_cut_at_the_cap_and_stderr_not_awaited() {
        // A writer that never ends: only the cap ends the read.
        let (mut w, r) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while w.write_all(b"0123456789").await.is_ok() {}
        });
        let (_keep, err) = tokio::io::duplex(64);
        let (out, cut, e) = both(Some(r), Some(err), 25).await.unwrap();
        assert!(cut);
        assert_eq!(out, b"0123456789012345678901234");
        assert!(e.is_empty());
    }

    #[tokio::test]
    async fn short_output_is_whole_with_its_stderr() {
        let out: &[u8] = b"all of it";
        let err: &[u8] = b"a complaint";
        let (o, cut, e) = both(Some(out), Some(err), 1024).await.unwrap();
        assert_eq!((o.as_slice(), cut, e.as_slice()), (out, false, err));
        let big = vec![b'x'; STDERR_MAX * 3];
        let (_, _, e) = both(Some(out), Some(big.as_slice()), 1024).await.unwrap();
        assert_eq!(e.len(), STDERR_MAX);
    }
}
