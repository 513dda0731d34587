//! What `drover serve` creates and trusts on disk: its jobs directory, its
//! report and audit files and its unix socket are private whatever the
//! umask, and an existing audit file or jobs directory that another user
//! owns or may write is refused before the server starts, saying how to
//! fix it. Another user is `nobody`: these tests chown, so they run as
//! root (and say so loudly otherwise).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::serve::offline;
use crate::server::{call, Keys, Server};

const NOBODY: u32 = 65534;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: serve_files needs root to chown a file to another user\n",
        );
    }
    root
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// `drover serve` with `extra` that must not start: (exit code, stderr).
fn refused(dir: &Path, extra: &[&str]) -> (i32, String) {
    let (inv, keys): (_, Keys) = offline(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "-i"])
        .arg(&inv)
        .arg("--keys")
        .arg(&keys.file)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "the server started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_audit_file_another_user_made_first_is_refused_and_left_alone() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A sticky shared directory, as /tmp, where that user made it first.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let audit = shared.join("audit.log");
    std::fs::write(&audit, "").unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&audit, NOBODY);
    let jobs = dir.path().join("jobs");
    let (code, err) = refused(
        dir.path(),
        &[
            "--audit",
            audit.to_str().unwrap(),
            "--jobs-dir",
            jobs.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    let want = format!(
        "--audit file {} belongs to uid {NOBODY}, not to us (uid 0)",
        audit.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains(&format!(
            "chown 0 {p} && chmod 600 {p}",
            p = audit.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&audit).unwrap().len(), 0, "written to");
    // Ours but writable by others: refused too, with the chmod.
    chown(&audit, 0);
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o662)).unwrap();
    let (code, err) = refused(dir.path(), &["--audit", audit.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("is writable by others (mode 662)")
            && err.contains(&format!("chmod 600 {}", audit.display())),
        "{err}"
    );
    // A link in its place is never followed.
    let link = shared.join("link.log");
    let target = dir.path().join("target");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, err) = refused(dir.path(), &["--audit", link.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is not a regular file"), "{err}");
}

#[test]
fn a_jobs_dir_others_may_write_or_own_is_refused_with_its_forged_reports() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o777)).unwrap();
    // What another user put there: refused before it is read.
    std::fs::write(jobs.join("forged.json"), "{}").unwrap();
    let (code, err) = refused(dir.path(), &["--jobs-dir", jobs.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "--jobs-dir {} is writable by others (mode 777): `chmod 700 {}`",
            jobs.display(),
            jobs.display()
        )),
        "{err}"
    );
    std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&jobs, NOBODY);
    let (code, err) = refused(dir.path(), &["--jobs-dir", jobs.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("belongs to uid {NOBODY}"))
            && err.contains(&format!("chown 0 {}", jobs.display())),
        "{err}"
    );
}

#[tokio::test]
async fn under_umask_000_what_serve_creates_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let (inv, keys) = offline(dir.path());
    let state = dir.path().join("state");
    let jobs = state.join("serve/jobs");
    let audit = dir.path().join("audit.log");
    let args = [
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--jobs-dir",
        jobs.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
    ];
    let s = Server::start_umask(&args, &dir.path().join("tcp.err"), 0);
    // A job (its hosts fail at once) writes a report and a journal.
    let (st, _, b) = call(
        reqwest::Method::POST,
        &s.url("/node/a/service/demo-web/restart"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let id = b["job_id"].as_str().unwrap();
    // Stopped at once: the signal is caught from "listening on" on.
    assert_eq!(s.stop(), 0, "SIGTERM is a clean exit");
    for d in [state.join("serve"), jobs.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let report = jobs.join(format!("{id}.json"));
    let journal = jobs.join(format!("{id}.json.journal"));
    for f in [&report, &journal, &audit] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert!(std::fs::metadata(&audit).unwrap().len() > 0);
    // The socket too.
    let sock = dir.path().join("drover.sock");
    let listen = format!("unix:{}", sock.display());
    let mut args = args.to_vec();
    args.extend(["--listen", &listen]);
    let s = Server::start_umask(&args, &dir.path().join("unix.err"), 0);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    assert_eq!(s.stop(), 0);
}

/// The packaged unit's `ExecStart=` is a `drover serve` the CLI accepts,
/// keeping its jobs and audit log in the directories systemd makes for
/// it, private to its user.
#[test]
fn the_packaged_unit_serves_from_its_own_private_directories() {
    use clap::Parser;
    use drover::cmd::args::{Cli, Command as Sub};
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/systemd/drover-serve.service"),
    )
    .unwrap();
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .collect()
    };
    let exec = setting("ExecStart").concat();
    // $DROVER_SERVE_OPTS (from /etc/default/drover-serve) may be empty.
    let words: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| !w.starts_with('$'))
        .collect();
    assert_eq!(words[0], "/usr/bin/drover");
    let mut argv = vec!["drover"];
    argv.extend(&words[1..]);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{exec}: {e}"));
    let Sub::Serve(a) = cli.command else {
        panic!("not a serve: {exec}")
    };
    let jobs = a.jobs_dir.expect("--jobs-dir");
    let audit = a.audit.expect("--audit");
    assert!(jobs.starts_with("/var/lib/drover-serve"), "{exec}");
    assert!(audit.starts_with("/var/log/drover-serve"), "{exec}");
    for (key, want) in [
        ("User", "drover-serve"),
        ("StateDirectory", "drover-serve"),
        ("StateDirectoryMode", "0700"),
        ("LogsDirectory", "drover-serve"),
        ("LogsDirectoryMode", "0700"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(setting(key), [want], "{key}=");
    }
    // Installed disabled: no maintainer script enables or starts it.
    let postinst =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/debian/postinst"))
            .unwrap();
    assert!(
        !postinst.contains("systemctl") && !postinst.contains("deb-systemd"),
        "{postinst}"
    );
}

/// `systemd-analyze security --offline` scores the unit file as shipped
/// (the lab test scores it loaded on a real host): below 3.0, "OK".
#[test]
fn the_packaged_unit_is_sandboxed_per_systemd_analyze() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/systemd/drover-serve.service");
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: no systemd-analyze here ({e}); the lab test scores the unit\n")
                    .as_bytes(),
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for drover-serve.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score < 3.0, "exposure {score}:\n{text}");
}
