//! Files drover writes on the controller (reports, facts, saved plans):
//! atomically, so a reader or a killed run never sees half of one.

use std::path::Path;

use crate::model::error::{Error, Result};

/// Write a file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming the content from a writer callback.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io("write", &tmp, e))?;
    let mut w = std::io::BufWriter::new(f);
    let written = fill(&mut w)
        .and_then(|_| w.flush())
        .and_then(|_| w.get_ref().sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io("write", path, e))
}

/// Write facts as pretty JSON, atomically.
pub fn save_facts(facts: &crate::model::facts::Facts, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(facts)
        .map_err(|e| Error::Internal(format!("cannot serialise facts: {e}")))?;
    write_atomic(path, text.as_bytes())
}
