//! One run per playbook at a time: an flock on a file under /run/drover
//! (or $XDG_RUNTIME_DIR/drover), holding the holder's pid so a refused
//! second run can say who holds it. The kernel drops the lock when the
//! holder dies, so a crashed run never blocks the next one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::error::{Error, Result};

/// A held lock; released on drop (and by the kernel at exit).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Where lock files live: DROVER_LOCK_DIR, else /run/drover for root,
/// else $XDG_RUNTIME_DIR/drover, else the temp dir.
pub fn lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DROVER_LOCK_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/drover");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("drover"),
        None => std::env::temp_dir().join(format!("drover-{}", unsafe { libc::geteuid() })),
    }
}

/// The lock file of a playbook: named after the file, keyed by its
/// absolute path so two checkouts of one playbook do not collide.
pub fn lock_path(playbook: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(playbook).unwrap_or_else(|_| playbook.to_path_buf());
    let key = crate::model::digest(abs.to_string_lossy().as_bytes());
    let stem = playbook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "playbook".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    lock_dir().join(format!("{stem}-{}.lock", &key[..16]))
}

fn try_flock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Take the playbook's lock, or refuse (exit 3) naming the holder; with
/// `wait`, retry until it is free or the wait is over.
pub fn acquire(playbook: &Path, wait: Option<Duration>) -> Result<RunLock> {
    let path = lock_path(playbook);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        if try_flock(&file).map_err(|e| Error::io("lock", &path, e))? {
            break;
        }
        match deadline {
            Some(d) if Instant::now() < d => {
                // flock has no timeout; a short retry interval bounds the wait.
                std::thread::sleep(Duration::from_millis(100).min(d - Instant::now()));
            }
            _ => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Refused(format!(
                    "another `drover apply` of {} is running (lock {} held by pid {}); wait for it, or pass --wait-lock DURATION",
                    playbook.display(),
                    path.display(),
                    if holder.is_empty() { "unknown" } else { holder }
                )));
            }
        }
    }
    let pid = std::process::id().to_string();
    let written = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()))
        .and_then(|_| file.flush());
    written.map_err(|e| Error::io("write", &path, e))?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("DROVER_LOCK_DIR", dir.path());
        let pb = dir.path().join("nightly.yml");
        std::fs::write(&pb, "x").unwrap();
        let first = acquire(&pb, None).unwrap();
        let err = acquire(&pb, None).unwrap_err();
        assert_eq!(err.code(), 403);
        assert!(
            err.details()
                .contains(&format!("pid {}", std::process::id())),
            "{}",
            err.details()
        );
        let waited = acquire(&pb, Some(Duration::from_millis(300)));
        assert!(waited.is_err());
        drop(first);
        assert!(acquire(&pb, Some(Duration::from_millis(300))).is_ok());
    }
}
