//! Control directories a killed drover left behind.
//!
//! Each SSH connection gets a private `drover-ssh-*` directory for its
//! control socket, removed when the connection closes. A process killed
//! with SIGKILL (systemd's stop timeout, the OOM killer, `timeout -s
//! KILL` around a cron job) closes nothing: its directories stay, with a
//! master that lingers until ControlPersist ends it. A cron job that is
//! killed now and then would fill the runtime directory over months, so
//! each process sweeps what dead ones left, once, when it first connects.
//!
//! A directory names its owner in a file (`owner`: pid and the process's
//! start time, so a reused pid is not taken for the owner). It is swept
//! only when that owner is gone; one without the file (being created
//! right now, or left by a drover before the file existed) only once it
//! is an hour old.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// The directory's name starts with this.
pub(super) const PREFIX: &str = "drover-ssh-";
/// The file that names a directory's process.
const OWNER: &str = "owner";
/// How old a directory without an owner file must be to be swept: far
/// beyond the longest connect (twice the connect timeout and a grace).
const UNOWNED_AGE: Duration = Duration::from_secs(3600);

/// `pid starttime` of this process, for its directories' owner file,
/// read from /proc once; None without /proc.
fn owner_line() -> Option<&'static str> {
    static LINE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        let pid = std::process::id();
        start_time(pid).map(|t| format!("{pid} {t}"))
    })
    .as_deref()
}

/// Write the owner file into a directory just made: whole or not at all
/// (written aside, then renamed into place), since another process's
/// sweep may read it at any moment.
pub(super) fn claim(dir: &Path) -> std::io::Result<()> {
    let aside = dir.join(".owner.new");
    // Without /proc the line names no one, and no one sweeps.
    std::fs::write(&aside, owner_line().unwrap_or_default())?;
    std::fs::rename(&aside, dir.join(OWNER))
}

/// The first caller in a process gets the sweep of `runtime`'s
/// leftovers, on the blocking pool; later callers get nothing to wait for.
/// `kill` ends the ssh processes naming any of the directories given.
pub(super) fn first(
    runtime: &Path,
    kill: fn(&[&Path]),
) -> Option<tokio::task::JoinHandle<()>> {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::AcqRel) {
        return None;
    }
    // Without /proc no owner can be told alive: sweep nothing.
    owner_line()?;
    let runtime = runtime.to_path_buf();
    Some(tokio::task::spawn_blocking(move || {
        let n = sweep(&runtime, SystemTime::now(), &kill);
        if n > 0 {
            tracing::info!(
                dir = %runtime.display(),
                "removed {n} SSH control director{} left by killed drover processes",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }))
}

/// Remove the directories in `runtime` whose owner is gone, first ending
/// the ssh processes that still use them (`kill`, one pass for all);
/// returns how many went.
pub(super) fn sweep(runtime: &Path, now: SystemTime, kill: &dyn Fn(&[&Path])) -> usize {
    let Ok(entries) = std::fs::read_dir(runtime) else {
        return 0;
    };
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(PREFIX)) {
            continue;
        }
        let dir = entry.path();
        // Never follow a link, never touch another user's directory.
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != me {
            continue;
        }
        if abandoned(&dir, &meta, now) {
            stale.push(dir);
        }
    }
    if stale.is_empty() {
        return 0;
    }
    kill(&stale.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    // Another process sweeping at once may remove one first.
    stale
        .iter()
        .filter(|d| std::fs::remove_dir_all(d).is_ok())
        .count()
}

/// Whether no live process owns the directory. Without an owner line
/// that reads (none yet, or not one drover writes), only its age says.
fn abandoned(dir: &Path, meta: &std::fs::Metadata, now: SystemTime) -> bool {
    let owner = std::fs::read_to_string(dir.join(OWNER))
        .ok()
        .and_then(|line| owner_of(&line));
    match owner {
        Some((pid, started)) => start_time(pid) != Some(started),
        None => meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > UNOWNED_AGE),
    }
}

/// The pid and start time an owner line names.
fn owner_of(line: &str) -> Option<(u32, u64)> {
    let mut parts = line.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether the process an owner line names still runs.
#[cfg(test)]
fn alive(line: &str) -> bool {
    owner_of(line).is_some_and(|(pid, started)| start_time(pid) == Some(started))
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`
/// field 22): with the pid it names one process for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its last `)` start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn leftover(root: &Path, name: &str, owner: Option<&str>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(".ssh-connection1")).unwrap();
        std::fs::write(dir.join(".ssh-connection1/log"), "").unwrap();
        if let Some(line) = owner {
            std::fs::write(dir.join(OWNER), line).unwrap();
        }
        dir
    }

    #[test]
    fn only_directories_of_gone_owners_are_removed_and_their_ssh_ended_first() {
        let root = tempfile::tempdir().unwrap();
        let mine = leftover(root.path(), "drover-ssh-live", owner_line());
        // Our own pid with another start time: a process that had our pid
        // before us.
        let reused = leftover(
            root.path(),
            "drover-ssh-reused",
            Some(&format!("{} 1", std::process::id())),
        );
        // Unreadable (not drover's line): judged by age, and it is fresh.
        let torn = leftover(root.path(), "drover-ssh-torn", Some(""));
        let fresh = leftover(root.path(), "drover-ssh-fresh", None);
        let other = leftover(root.path(), "not-drover", Some("1 1"));
        let killed = RefCell::new(Vec::new());
        let n = sweep(root.path(), SystemTime::now(), &|dirs| {
            killed
                .borrow_mut()
                .extend(dirs.iter().map(|d| d.to_path_buf()))
        });
        assert_eq!(n, 1);
        assert!(mine.is_dir(), "a live owner's directory stays");
        assert!(!reused.exists());
        assert!(torn.is_dir(), "an owner line being written is no owner gone");
        assert!(fresh.is_dir(), "a directory being made stays");
        assert!(other.is_dir(), "only drover's directories are looked at");
        let mut k = killed.into_inner();
        k.sort();
        assert_eq!(k, vec![reused]);
    }

    #[test]
    fn a_directory_without_owner_goes_once_it_is_an_hour_old() {
        let root = tempfile::tempdir().unwrap();
        let old = leftover(root.path(), "drover-ssh-old", None);
        let later = SystemTime::now() + UNOWNED_AGE + Duration::from_secs(5);
        assert_eq!(sweep(root.path(), SystemTime::now(), &|_| {}), 0);
        assert_eq!(sweep(root.path(), later, &|_| {}), 1);
        assert!(!old.exists());
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(alive(owner_line().unwrap()));
        assert!(!alive("not a line"));
    }
}
