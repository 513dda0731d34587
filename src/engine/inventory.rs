//! Loading `-i`: a YAML file, a directory of them (both read by the
//! model), or a dynamic inventory, an executable that prints the inventory
//! as JSON, which is run here: with no arguments, from its own directory,
//! stdin closed, bounded in time and output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::model::error::{Diagnostic, Error, Position, Result};
use crate::model::inventory::{output_name, Inventory, Layout};
use crate::model::yaml::MAX_FILE_BYTES;

/// How long a dynamic inventory may run, unless [`TIMEOUT_ENV`] says
/// otherwise: long enough for a slow CMDB, short enough for cron.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that overrides [`DEFAULT_TIMEOUT`] (`10s`, `2m`).
pub const TIMEOUT_ENV: &str = "DROVER_INVENTORY_TIMEOUT";

/// How much of a failing program's stdout or stderr an error quotes.
const SHOWN: usize = 400;

/// How much stderr is kept at all: an error quotes its start.
const STDERR_KEPT: u64 = 64 * 1024;

const WHAT: &str = "inventory";

/// Load what `-i` names, whatever its [`Layout`].
pub fn load(path: &Path) -> Result<Inventory> {
    match Layout::of(path) {
        Layout::Program => {
            let output = run(path, timeout()?)?;
            Inventory::from_output(&output, path)
        }
        Layout::File | Layout::Directory => Inventory::load(path),
    }
}

/// The time limit: [`TIMEOUT_ENV`] when set, else [`DEFAULT_TIMEOUT`].
pub fn timeout() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Ok(raw) => crate::model::parse_duration(&raw)
            .map_err(|m| Error::Usage(format!("{TIMEOUT_ENV}: {m}"))),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

/// What a finished program left.
struct Ran {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Run a dynamic inventory and return its stdout, or an error naming the
/// program with what it printed.
pub fn run(program: &Path, limit: Duration) -> Result<String> {
    // An absolute path: the program runs from its own directory, where a
    // relative `-i` would no longer lead to it.
    let exe = std::fs::canonicalize(program).map_err(|e| Error::io("run", program, e))?;
    let dir = exe
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let ran = spawn_bounded(&exe, &dir, limit).map_err(|e| match e {
        Failure::Io(e) => Error::io("run", program, e),
        Failure::Timeout(stdout, stderr) => refuse(
            program,
            format!(
                "did not finish within {} (set {TIMEOUT_ENV} for a longer limit){}",
                humantime::format_duration(limit),
                printed(&stdout, &stderr)
            ),
        ),
        Failure::Oversize => refuse(
            program,
            format!("printed more than the {MAX_FILE_BYTES} bytes drover accepts"),
        ),
    })?;
    if !ran.status.success() {
        let how = match ran.status.code() {
            Some(c) => format!("exited with status {c}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!(
                    "was killed by signal {}",
                    ran.status.signal().unwrap_or_default()
                )
            }
        };
        return Err(refuse(
            program,
            format!("{how}{}", printed(&ran.stdout, &ran.stderr)),
        ));
    }
    let text = String::from_utf8(ran.stdout).map_err(|e| {
        refuse(
            program,
            format!(
                "printed something that is not UTF-8 text: {}",
                shown(e.as_bytes())
            ),
        )
    })?;
    // Bad JSON names what was printed; a wrong inventory in good JSON is
    // reported field by field by the model, like a file.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        if e.is_syntax() || e.is_eof() {
            let mut message = e.to_string();
            if let Some(idx) = message.rfind(" at line ") {
                message.truncate(idx);
            }
            return Err(Error::Parse(Box::new(Diagnostic {
                what: WHAT,
                field: String::new(),
                message: format!(
                    "{} printed no valid JSON inventory ({message}); it printed {}",
                    program.display(),
                    shown(text.as_bytes())
                ),
                suggestion: None,
                position: (e.line() > 0).then(|| {
                    Position::at(
                        &output_name(program),
                        &text,
                        e.line() as u64,
                        e.column().max(1) as u64,
                    )
                }),
            })));
        }
    }
    Ok(text)
}

/// A failure of the program that is not about what it printed.
fn refuse(program: &Path, message: String) -> Error {
    Error::invalid(
        WHAT,
        "",
        format!("the dynamic inventory {} {message}", program.display()),
        None,
    )
}

/// `; stderr: ...; stdout: ...` for the streams that hold something.
fn printed(stdout: &[u8], stderr: &[u8]) -> String {
    let mut s = String::new();
    if !stderr.iter().all(u8::is_ascii_whitespace) {
        s.push_str(&format!("; stderr: {}", shown(stderr)));
    }
    if !stdout.iter().all(u8::is_ascii_whitespace) {
        s.push_str(&format!("; stdout: {}", shown(stdout)));
    }
    if s.is_empty() {
        s.push_str("; it printed nothing");
    }
    s
}

/// Up to [`SHOWN`] bytes, escaped onto one line and quoted, with how much
/// was left out.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
    let escaped: String = text
        .trim_end()
        .chars()
        .flat_map(char::escape_default)
        .collect();
    if bytes.len() > SHOWN {
        format!("\"{escaped}\" (first {SHOWN} of {} bytes)", bytes.len())
    } else {
        format!("\"{escaped}\"")
    }
}

enum Failure {
    Io(std::io::Error),
    /// What it had printed when it was killed.
    Timeout(Vec<u8>, Vec<u8>),
    /// It printed more than [`MAX_FILE_BYTES`].
    Oversize,
}

/// Run `exe` in `dir` in a process group of its own, reading stdout (up to
/// one byte past the bound) and stderr on threads; past `limit` the whole
/// group is killed, so a shell script's children die with it.
fn spawn_bounded(exe: &Path, dir: &Path, limit: Duration) -> std::result::Result<Ran, Failure> {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + limit;
    let mut child = Command::new(exe)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(Failure::Io)?;
    let pid = child.id();
    // `drain`: read on past the bound into nothing, so a program chatty on
    // stderr never blocks on a full pipe (stdout past its bound is an
    // error instead, and the program is killed).
    let reader = |stream: Option<Box<dyn Read + Send>>, bound: u64, drain: bool| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut s) = stream {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.by_ref().take(bound).read_to_end(&mut buf);
                if drain {
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                }
                let _ = tx.send(buf);
            });
        }
        rx
    };
    let out_rx = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        MAX_FILE_BYTES + 1,
        false,
    );
    let err_rx = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        STDERR_KEPT,
        true,
    );
    let (status_tx, status_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let left = || deadline.saturating_duration_since(Instant::now());
    // Stdout first: it ends at the program's exit or at the bound, where
    // a program still writing would block forever.
    let stdout = out_rx.recv_timeout(left()).ok();
    if stdout
        .as_ref()
        .is_some_and(|o| o.len() as u64 > MAX_FILE_BYTES)
    {
        kill_group(pid);
        return Err(Failure::Oversize);
    }
    let status = stdout
        .as_ref()
        .and_then(|_| status_rx.recv_timeout(left()).ok());
    let stderr = status
        .as_ref()
        .and_then(|_| err_rx.recv_timeout(left()).ok());
    match (status, stdout, stderr) {
        (Some(status), Some(stdout), Some(stderr)) => Ok(Ran {
            status: status.map_err(Failure::Io)?,
            stdout,
            stderr,
        }),
        (_, stdout, _) => {
            kill_group(pid);
            // The pipes close once the group is dead; a process that left
            // the group and keeps them open is not waited for.
            let grace = Duration::from_secs(1);
            let stdout = stdout.or_else(|| out_rx.recv_timeout(grace).ok());
            let stderr = err_rx.recv_timeout(grace).unwrap_or_default();
            Err(Failure::Timeout(stdout.unwrap_or_default(), stderr))
        }
    }
}

/// Kill the program's process group: its id is the program's pid
/// (`process_group(0)`), and it holds what the program started too.
fn kill_group(pid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_output_is_escaped_and_truncated() {
        assert_eq!(shown(b"a\x1b[31m\n"), "\"a\\u{1b}[31m\"");
        let long = vec![b'x'; 1000];
        let s = shown(&long);
        assert!(s.ends_with("(first 400 of 1000 bytes)"), "{s}");
    }
}
