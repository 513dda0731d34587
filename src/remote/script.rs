//! Running a script module's program on a host: the program and its input
//! travel on stdin of one fixed command, so no parameter value is ever on
//! a command line, and nothing is left behind on the host.

use std::time::Duration;

use crate::remote::carrier::Session;

/// The fixed remote command. `$1` is the program's length in bytes, `$2`
/// the time limit in seconds (numbers drover computes, never user data).
/// `head -c` takes exactly the program off stdin into a private temporary
/// file; the rest of stdin (the input JSON) is the program's. Exit 124 is
/// `timeout`'s "time limit reached"; 125 a failure to set up.
const RUNNER: &str = r#"umask 077
f=$(mktemp "${TMPDIR:-/tmp}/drover-module.XXXXXXXX") || exit 125
trap 'rm -f "$f"' EXIT
trap 'exit 143' HUP INT TERM
head -c "$1" > "$f" || exit 125
chmod 700 "$f" || exit 125
timeout -k 5 "$2" "$f""#;

/// What the program did: exit code (None: a signal), stdout, stderr.
#[derive(Debug)]
pub struct Ran {
    /// Exit status.
    pub code: Option<i32>,
    /// What it printed (bounded by the carrier).
    pub stdout: Vec<u8>,
    /// Its errors (bounded by the carrier).
    pub stderr: Vec<u8>,
}

/// Run `program` on the session's host with `input` on its stdin, for at
/// most `limit` (whole seconds, at least one). `become` is the session's:
/// the carrier runs the command under `sudo -n` then.
pub async fn run(
    session: &Session,
    program: &[u8],
    input: &[u8],
    limit: Duration,
) -> Result<Ran, String> {
    let len = program.len().to_string();
    let secs = limit.as_secs().max(1).to_string();
    let mut stdin = Vec::with_capacity(program.len() + input.len());
    stdin.extend_from_slice(program);
    stdin.extend_from_slice(input);
    let out = session
        .run_input("sh", &["-c", RUNNER, "drover-module", &len, &secs], &stdin)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Ran {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
