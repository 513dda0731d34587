//! drover: a declarative batch runbook executor for systemd services.
//!
//! Data flows one way: files → model (inventory, playbook, targets) → DAG
//! → facts → plan → diff → executor → report.

// `Error` carries positions and suggestions by value; it is returned once
// per command, so its size costs nothing worth boxing for.

/// `print!` to stdout that never panics: a closed stdout (`| head`, a
/// logger that died under cron) must not crash a run mid-way; the report
/// file and the journal are written regardless.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `println!` to stdout that never panics; see `out!`.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

pub mod apply;
pub mod carrier;
pub mod cli;
pub mod dag;
pub mod diff;
pub mod error;
pub mod exec;
pub mod facts;
pub mod fanout;
pub mod health;
pub mod inventory;
pub mod live;
pub mod lock;
pub mod maintenance;
pub mod module;
pub mod plan;
pub mod playbook;
pub mod report;
pub mod saved;
pub mod schema;
pub mod systemd;
pub mod target;
pub mod template;
pub mod unit;
pub mod unitfile;
pub mod yaml;

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of some bytes: how saved plans recognise their inputs.
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse a human duration such as `10s`, `1m30s` or `500ms`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("`{raw}` is not a duration ({e}); write e.g. `10s`, `2m` or `1m30s`"))
}

/// Write a file atomically: a reader (or a killed run) never sees half of it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> error::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming the content from a writer callback.
pub fn write_atomic_with(
    path: &std::path::Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> error::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(|e| error::Error::io("write", &tmp, e))?;
    let mut w = std::io::BufWriter::new(f);
    let written = fill(&mut w)
        .and_then(|_| w.flush())
        .and_then(|_| w.get_ref().sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error::Error::io("write", path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| error::Error::io("write", path, e))
}
