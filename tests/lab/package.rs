//! The Debian package on a real Debian host: built with pkg/build-deb.sh
//! (cargo-deb) from the binary this test run built, installed with
//! `dpkg -i` on a lab host, used there (`drover --version`, the man page,
//! the bash completion, the disabled timer), and removed with `dpkg -r`,
//! leaving the host as it was. `package_serve.rs` runs its server unit.
//!
//! DROVER_DEB=FILE tests that package instead of building one (e.g. the
//! release package CI built with pkg/build-deb.sh).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::CommandFactory;
use drover::cmd::args::Cli;

const REMOTE_DEB: &str = "/tmp/drover-package-test.deb";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Straight to fd 2: libtest captures eprintln! of passing tests, and the
/// build time and the man fallback are worth seeing.
fn note(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{text}\n").as_bytes());
}

/// The package, built once per test run for every test that installs it:
/// two builds at once would share (and delete) target/pkg-assets.
pub(crate) fn package() -> PathBuf {
    static DEB: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut deb = DEB.lock().unwrap_or_else(|p| p.into_inner());
    if deb.is_none() {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-deb");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        *deb = Some(build_package(&out));
    }
    deb.clone().unwrap()
}

/// Build the package from the debug binary `cargo test` just built: a
/// release build would add minutes on a small CI machine, and what is
/// tested here is the packaging, not the optimiser.
fn build_package(out_dir: &Path) -> PathBuf {
    if let Some(deb) = std::env::var_os("DROVER_DEB").filter(|v| !v.is_empty()) {
        return PathBuf::from(deb);
    }
    let started = Instant::now();
    let out = Command::new(root().join("pkg/build-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(out_dir)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("run pkg/build-deb.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pkg/build-deb.sh failed (tests/run.sh installs cargo-deb; by hand: cargo install cargo-deb --locked):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    note(&format!(
        "lab_package: pkg/build-deb.sh --profile dev took {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file() && deb.starts_with(out_dir),
        "last line is not the .deb: {stdout}"
    );
    deb
}

pub(crate) fn copy_to(lab: &common::Lab, host: &str, local: &Path, remote: &str) {
    let out = Command::new("scp")
        .arg("-F")
        .arg(&lab.ssh_config)
        .arg("-q")
        .arg(local)
        .arg(format!("{host}:{remote}"))
        .stdin(Stdio::null())
        .output()
        .expect("run scp");
    assert!(
        out.status.success(),
        "scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[test]
fn deb_installs_runs_documents_completes_and_removes_cleanly() {
    let Some(lab) = common::lab() else { return };
    let started = Instant::now();
    let deb = package();

    // Dependencies: the C library (found by dpkg-shlibdeps) and ssh.
    let depends = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Depends")
        .output()
        .expect("run dpkg-deb");
    let depends = String::from_utf8_lossy(&depends.stdout);
    assert!(
        depends.contains("libc6 (>=") && depends.contains("openssh-client"),
        "Depends: {depends}"
    );

    let _l = lab.lock();
    let host = lab.host(lab.len() - 1).to_string();
    // The baseline this test restores: no drover package on the host.
    let before = lab.ssh_output(&host, "dpkg-query -W drover");
    assert!(
        !before.status.success() && !lab.ssh(&host, "ls /usr/bin").contains("drover"),
        "{host} already has a drover package; the lab's baseline has none"
    );
    let _undo = lab.undo_on_drop(
        &host,
        &format!(
            "dpkg --purge drover >/dev/null 2>&1; userdel drover-serve >/dev/null 2>&1; groupdel drover-serve >/dev/null 2>&1; rm -f {REMOTE_DEB}; systemctl daemon-reload"
        ),
    );
    copy_to(&lab, &host, &deb, REMOTE_DEB);
    lab.ssh(&host, &format!("dpkg -i {REMOTE_DEB}"));

    // The binary runs on the host's glibc, with every library found.
    let ldd = lab.ssh(&host, "ldd /usr/bin/drover");
    assert!(!ldd.contains("not found"), "{ldd}");
    assert_eq!(
        lab.ssh(&host, "drover --version").trim(),
        format!("drover {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        lab.ssh(&host, "command -v drover").trim(),
        "/usr/bin/drover"
    );

    // Every file in its standard place, per dpkg.
    let listed = lab.ssh(&host, "dpkg -L drover");
    let mut expected: Vec<String> = [
        "/usr/bin/drover",
        "/usr/share/man/man1/drover.1.gz",
        "/usr/share/bash-completion/completions/drover",
        "/usr/share/zsh/vendor-completions/_drover",
        "/usr/share/fish/vendor_completions.d/drover.fish",
        "/usr/share/drover/schema/playbook.schema.json",
        "/usr/share/drover/schema/inventory.schema.json",
        "/usr/lib/systemd/system/drover-nightly-restart.service",
        "/usr/lib/systemd/system/drover-nightly-restart.timer",
        "/usr/lib/systemd/system/drover-serve.service",
        "/usr/lib/sysusers.d/drover-serve.conf",
        "/usr/share/doc/drover/examples/nightly-restart.yml",
    ]
    .map(String::from)
    .into();
    expected.extend(
        subcommands()
            .iter()
            .map(|s| format!("/usr/share/man/man1/drover-{s}.1.gz")),
    );
    for path in &expected {
        assert!(
            listed.lines().any(|l| l == path),
            "dpkg -L drover lacks {path}:\n{listed}"
        );
    }

    // The installed schemas are what the installed binary prints.
    for kind in ["playbook", "inventory"] {
        lab.ssh(
            &host,
            &format!("drover schema {kind} | cmp - /usr/share/drover/schema/{kind}.schema.json"),
        );
    }

    // The installed page is the one the binary generates, intact.
    let installed_page = lab.ssh(&host, "gzip -dc /usr/share/man/man1/drover.1.gz");
    let here = tempfile::tempdir().unwrap();
    let (code, _, err) = common::run(lab.drover().arg("man").arg(here.path()));
    assert_eq!(code, 0, "{err}");
    let generated = std::fs::read_to_string(here.path().join("drover.1")).unwrap();
    assert_eq!(installed_page, generated);
    // `man drover` on the host, as an operator would read it (the lab
    // image carries man-db for this).
    assert!(
        lab.ssh_output(&host, "command -v man").status.success(),
        "{host} has no man: rebuild the lab image (tests/lab/lab.sh image)"
    );
    let rendered = lab.ssh(&host, "MANPAGER=cat MANWIDTH=80 man drover");
    assert!(
        rendered.contains("SYNOPSIS") && rendered.contains("drover-plan(1)"),
        "{rendered}"
    );

    // The installed bash completion registers and completes.
    let completed = lab.ssh(
        &host,
        "bash --norc --noprofile -c '. /usr/share/bash-completion/completions/drover && complete -p drover && \
         COMP_WORDS=(drover pla); COMP_CWORD=1; COMP_LINE=\"drover pla\"; COMP_POINT=10; \
         _drover drover pla drover && printf \"%s\\n\" \"${COMPREPLY[@]}\"'",
    );
    let mut lines = completed.lines();
    let registered = lines.next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ") && registered.ends_with(" drover"),
        "{completed}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["plan"], "{completed}");

    // The nightly timer and service are installed, valid, and off.
    // --man=no: verify checks Documentation=man:... with `man`, which the
    // lab's hosts lack.
    let verify = lab.ssh_output(
        &host,
        "systemd-analyze verify --man=no /usr/lib/systemd/system/drover-nightly-restart.timer /usr/lib/systemd/system/drover-nightly-restart.service",
    );
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{verify_err}");
    assert!(
        !verify_err.contains("drover-nightly-restart"),
        "systemd-analyze verify warns: {verify_err}"
    );
    for unit in [
        "drover-nightly-restart.timer",
        "drover-nightly-restart.service",
    ] {
        let state = lab.ssh_output(&host, &format!("systemctl is-enabled {unit}"));
        let state = String::from_utf8_lossy(&state.stdout);
        let want = if unit.ends_with(".timer") {
            "disabled"
        } else {
            "static"
        };
        assert_eq!(state.trim(), want, "{unit}");
        let active = lab.ssh_output(&host, &format!("systemctl is-active {unit}"));
        assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive");
    }

    // Removal leaves nothing of the package behind.
    lab.ssh(&host, "dpkg -r drover && systemctl daemon-reload");
    let after = lab.ssh_output(&host, "dpkg-query -W -f='${Status}' drover");
    let status = String::from_utf8_lossy(&after.stdout);
    assert!(
        !after.status.success() || status.contains("not-installed"),
        "dpkg status after -r: {status}"
    );
    let left = lab.ssh(
        &host,
        &format!(
            "for f in {}; do [ -e \"$f\" ] && echo \"$f\"; done; true",
            expected.join(" ")
        ),
    );
    assert!(left.is_empty(), "left behind by dpkg -r: {left}");
    note(&format!(
        "lab_package: whole test {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}
