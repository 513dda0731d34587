//! One run per playbook at a time: an flock on a file under /run/drover
//! (or $XDG_RUNTIME_DIR/drover), holding the holder's pid so a refused
//! second run can say who holds it. The kernel drops the lock when the
//! holder dies, so a crashed run never blocks the next one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::error::{Error, Refusal, Result};

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

/// The lock file's name: the playbook's stem and a hash of its absolute
/// path, so two checkouts of one playbook do not collide.
fn lock_name(playbook: &Path) -> String {
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
    format!("{stem}-{}.lock", &key[..16])
}

/// Make sure the lock directory is ours alone: created 0700 if missing; an
/// existing one must be a real directory (not a link), owned by us, and
/// writable by nobody else. Without `XDG_RUNTIME_DIR` the fallback lives in
/// the shared temp directory, where another user could have made it first.
fn private_dir(dir: &Path) -> Result<()> {
    match crate::engine::private::private_dir(dir)? {
        Some(why) => Err(Error::Refused(Refusal::LockDir {
            dir: dir.to_path_buf(),
            why: why.to_string(),
        })),
        None => Ok(()),
    }
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
    acquire_in(&lock_dir(), playbook, wait)
}

fn acquire_in(dir: &Path, playbook: &Path, wait: Option<Duration>) -> Result<RunLock> {
    private_dir(dir)?;
    let path = dir.join(lock_name(playbook));
    // Never through a link: in a shared directory a link planted in our
    // file's place would make the pid write below truncate another file.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
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
                // A holder writes its pid just after taking the lock:
                // read again for a moment rather than say "unknown".
                let mut holder = String::new();
                for _ in 0..10 {
                    holder.clear();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut holder);
                    if !holder.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let holder = holder.trim();
                return Err(Error::Refused(Refusal::Locked {
                    playbook: playbook.to_path_buf(),
                    lock: path.to_path_buf(),
                    holder: if holder.is_empty() { "unknown" } else { holder }.to_string(),
                }));
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

    #[test]
    fn a_shared_or_foreign_lock_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open).unwrap_err();
        assert!(
            e.details().contains("writable by others"),
            "{}",
            e.details()
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.details().contains("not a directory"), "{}", e.details());
        if unsafe { libc::geteuid() } == 0 {
            let foreign = dir.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
            let e = private_dir(&foreign).unwrap_err();
            assert!(
                e.details().contains("belongs to uid 65534"),
                "{}",
                e.details()
            );
        }
        let fresh = dir.path().join("fresh");
        private_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_link_in_place_of_the_lock_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let locks = dir.path().join("locks");
        private_dir(&locks).unwrap();
        let pb = dir.path().join("nightly.yml");
        std::fs::write(&pb, "x").unwrap();
        std::os::unix::fs::symlink(&victim, locks.join(lock_name(&pb))).unwrap();
        let e = acquire_in(&locks, &pb, None).unwrap_err();
        assert!(e.details().contains("symbolic links"), "{}", e.details());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A real lock directory and file work as before.
        std::fs::remove_file(locks.join(lock_name(&pb))).unwrap();
        acquire_in(&locks, &pb, None).unwrap();
    }
}
