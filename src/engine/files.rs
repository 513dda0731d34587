//! Files drover writes on the controller (reports, facts, saved plans):
//! atomically, so a reader or a killed run never sees half of one, and
//! private (0600): they hold hosts' states and errors. The temporary file
//! has a random name and is created exclusively, and the rename replaces
//! whatever is at the path (a link included) without following it.

use std::path::Path;

use crate::model::error::{Error, Result};

/// Write a file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], for a file other users must read (metrics for
/// node_exporter): `mode` is set before the file appears at `path`.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_as(path, Some(mode), |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming the content from a writer callback.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    write_atomic_as(path, None, fill)
}

fn write_atomic_as(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // tempfile creates with O_EXCL and mode 0600 under a random name: no
    // link planted at a guessable name is ever written through.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("write", dir, e))?;
    let mut w = std::io::BufWriter::new(tmp);
    let written = fill(&mut w)
        .and_then(|_| w.flush())
        .and_then(|_| match mode {
            Some(m) => w
                .get_ref()
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(m)),
            None => Ok(()),
        })
        .and_then(|_| w.get_ref().as_file().sync_all());
    if let Err(e) = written {
        return Err(Error::io("write", path, e));
    }
    let tmp = w
        .into_inner()
        .map_err(|e| Error::io("write", path, e.into_error()))?;
    tmp.persist(path)
        .map(|_| ())
        .map_err(|e| Error::io("write", path, e.error))
}

/// Write facts as pretty JSON, atomically.
pub fn save_facts(facts: &crate::model::facts::Facts, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(facts)
        .map_err(|e| Error::Internal(format!("cannot serialise facts: {e}")))?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_are_private_and_replace_a_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let report = dir.path().join("report.json");
        std::os::unix::fs::symlink(&victim, &report).unwrap();
        write_atomic(&report, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&report).unwrap();
        assert!(meta.file_type().is_file(), "the link was replaced");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "{}");
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
