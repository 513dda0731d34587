//! Directories and files only this user may change: the lock directory,
//! the server's jobs directory and its audit log. Created private whatever
//! the umask (0700, 0600); an existing one must be ours and writable by
//! nobody else, since whoever can write it can forge what drover reads back
//! (job reports) and whoever owns it can read what drover writes.

use std::fs::{File, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::model::error::{Error, Refusal, Result};

/// Why a directory or file is not ours alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOurs {
    /// Not what it should be (a link, a file for a directory, ...).
    Kind(&'static str),
    /// Another user owns it.
    Owner {
        /// Its owner.
        uid: u32,
        /// Us.
        me: u32,
    },
    /// Group or others may write it.
    Mode(u32),
}

impl std::fmt::Display for NotOurs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOurs::Kind(k) => write!(f, "is not {k} (a link?)"),
            NotOurs::Owner { uid, me } => write!(f, "belongs to uid {uid}, not to us (uid {me})"),
            NotOurs::Mode(m) => write!(f, "is writable by others (mode {m:o})"),
        }
    }
}

impl NotOurs {
    /// The command that makes `path` ours alone with `mode`, or "remove it".
    fn fix(&self, path: &Path, mode: u32) -> String {
        let p = path.display();
        match self {
            NotOurs::Kind(_) => format!("remove {p}"),
            NotOurs::Owner { me, .. } => format!(
                "if its content can be trusted `chown {me} {p} && chmod {mode:o} {p}`, else remove it"
            ),
            NotOurs::Mode(_) => format!("`chmod {mode:o} {p}`"),
        }
    }

    /// The refusal for `what` (e.g. "--audit file") at `path`, whose
    /// private mode is `mode`.
    pub fn refusal(&self, what: &'static str, path: &Path, mode: u32) -> Error {
        Error::Refused(Refusal::NotPrivate {
            what,
            path: path.to_path_buf(),
            why: format!("{self}: {}", self.fix(path, mode)),
        })
    }
}

fn me() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Why `meta` (of a directory when `dir`, else a regular file; not followed
/// through a link) is not ours alone, if it is not.
pub fn not_ours(meta: &Metadata, dir: bool) -> Option<NotOurs> {
    let me = me();
    if dir && !meta.file_type().is_dir() {
        Some(NotOurs::Kind("a directory"))
    } else if !dir && !meta.file_type().is_file() {
        Some(NotOurs::Kind("a regular file"))
    } else if meta.uid() != me {
        Some(NotOurs::Owner {
            uid: meta.uid(),
            me,
        })
    } else if meta.permissions().mode() & 0o022 != 0 {
        Some(NotOurs::Mode(meta.permissions().mode() & 0o777))
    } else {
        None
    }
}

/// Make `dir` ours alone: created 0700 with its missing parents (0700 too,
/// so a umask of 000 opens nothing on the way); an existing one must pass
/// [`not_ours`]. Err is an I/O failure, Ok(Some) what is wrong with it.
pub fn private_dir(dir: &Path) -> Result<Option<NotOurs>> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    match b.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create", dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("inspect", dir, e))?;
    // mkdir's mode is masked by the umask, never widened: 0700 stays.
    Ok(not_ours(&meta, true))
}

/// [`private_dir`] for a directory the user names as `what`: refused (with
/// what to do) unless it is ours alone.
pub fn private_dir_for(what: &'static str, dir: &Path) -> Result<()> {
    match private_dir(dir)? {
        None => Ok(()),
        Some(why) => Err(why.refusal(what, dir, 0o700)),
    }
}

/// Open `path` to append, as a file the user names as `what`: created 0600
/// when missing; an existing one must be a regular file (never followed
/// through a link), ours and writable by nobody else, or it is refused
/// before anything is written to it.
pub fn append_private(what: &'static str, path: &Path) -> Result<File> {
    let open = |create: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.append(true).custom_flags(libc::O_NOFOLLOW);
        if create {
            o.create_new(true).mode(0o600);
        }
        o.open(path)
    };
    // Looked at before opening: in a sticky directory the kernel may refuse
    // root an O_CREAT of another user's file (fs.protected_regular), which
    // would hide the reason behind "permission denied".
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if let Some(why) = not_ours(&meta, false) {
            return Err(why.refusal(what, path, 0o600));
        }
    }
    let file = match open(true) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(false),
        other => other,
    }
    .map_err(|e| Error::io("open", path, e))?;
    // And what was opened, which is what counts if it changed in between.
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    match not_ours(&meta, false) {
        Some(why) => Err(why.refusal(what, path, 0o600)),
        None => Ok(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_created_0600_and_a_shared_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        drop(append_private("--audit file", &p).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Reopened: appended to, not refused.
        assert!(append_private("--audit file", &p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = append_private("--audit file", &p).unwrap_err();
        assert_eq!(e.code(), 403);
        let text = e.details();
        assert!(
            text.contains("writable by others") && text.contains("chmod 600"),
            "{text}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = append_private("--audit file", &link).unwrap_err();
        assert!(
            e.details().contains("not a regular file"),
            "{}",
            e.details()
        );
    }

    #[test]
    fn a_dir_and_its_parents_are_created_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b/jobs");
        assert_eq!(private_dir(&d).unwrap(), None);
        for p in [dir.path().join("a"), dir.path().join("a/b"), d] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }
}
