//! The Debian package on a real Debian host, with the commands of the
//! book's [Installing drover](docs/src/operations/install.md): built with
//! its `pkg/build-deb.sh` line (cargo-deb) from the binary this test run
//! built, installed with its `dpkg -i` line on a lab host, used there
//! (`drover --version`, the man page, the bash completion, the disabled
//! timer), and removed with its `dpkg -r` line, leaving the host as it
//! was. The page's man and completions block runs on a lab host too.
//! `package_serve.rs` runs the server unit.
//!
//! DROVER_DEB=FILE tests that package instead of building one (e.g. the
//! release package CI built with pkg/build-deb.sh).

use crate::common;
use crate::markdown;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::CommandFactory;
use drover::cmd::args::Cli;

/// Where the book's `dpkg` lines run on a host: the .deb is copied to
/// the path they name below it.
const REMOTE_DIR: &str = "/tmp/drover-book-install";

/// The book's package block: build, install, remove.
struct BookDeb {
    build: String,
    install: String,
    remove: String,
}

fn book_deb() -> BookDeb {
    let lines = markdown::lab_block("docs/src/operations/install.md", "deb");
    let cmds = markdown::commands(&lines.join("\n"));
    let [build, install, remove] = <[String; 3]>::try_from(cmds.clone())
        .unwrap_or_else(|_| panic!("install.md's package block: build, install, remove: {cmds:?}"));
    assert_eq!(build, "pkg/build-deb.sh", "{cmds:?}");
    assert!(
        install.starts_with("sudo dpkg -i target/debian/") && install.ends_with(".deb"),
        "{install}"
    );
    assert_eq!(remove, "sudo dpkg -r drover", "{cmds:?}");
    BookDeb {
        build,
        install,
        remove,
    }
}

impl BookDeb {
    /// The .deb's path in the `dpkg -i` line (`target/debian/...`).
    fn deb_path(&self) -> &str {
        self.install.rsplit(' ').next().unwrap_or_default()
    }
}

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
    // The book's line, on the debug binary: its --profile and --no-build
    // (documented beside it) save a release build of ~10 CPU minutes.
    let book = book_deb();
    let out = Command::new(root().join(&book.build))
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
    // The name the book's `dpkg -i` line gives it (version, revision, arch).
    assert_eq!(
        deb.file_name(),
        Path::new(book.deb_path()).file_name(),
        "docs/src/operations/install.md names another .deb than pkg/build-deb.sh makes: update the page (and README.md)"
    );
    deb
}

/// Install the package on `host` with the book's `dpkg -i` line, run as
/// written from a directory holding the .deb where the line names it.
pub(crate) fn install_as_the_book_says(lab: &common::Lab, host: &str, deb: &Path) {
    let book = book_deb();
    let remote = format!("{REMOTE_DIR}/{}", book.deb_path());
    let parent = Path::new(&remote).parent().unwrap().display().to_string();
    lab.ssh(host, &format!("rm -rf {REMOTE_DIR} && mkdir -p {parent}"));
    copy_to(lab, host, deb, &remote);
    lab.ssh(host, &format!("cd {REMOTE_DIR} && {}", book.install));
}

/// Remove it with the book's `dpkg -r` line.
pub(crate) fn remove_as_the_book_says(lab: &common::Lab, host: &str) {
    let book = book_deb();
    lab.ssh(
        host,
        &format!(
            "{} && rm -rf {REMOTE_DIR} && systemctl daemon-reload",
            book.remove
        ),
    );
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

/// The package's files, as `dpkg -L` must list them.
fn expected_files() -> Vec<String> {
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
    expected
}

/// What bash's completion of `drover pla` offers on `host`, with the
/// script at `path` loaded; the first line is `complete -p drover`.
fn complete_pla(lab: &common::Lab, host: &str, path: &str) -> String {
    lab.ssh(
        host,
        &format!(
            "bash --norc --noprofile -c '. {path} && complete -p drover && \
             COMP_WORDS=(drover pla); COMP_CWORD=1; COMP_LINE=\"drover pla\"; COMP_POINT=10; \
             _drover drover pla drover && printf \"%s\\n\" \"${{COMPREPLY[@]}}\"'"
        ),
    )
}

fn assert_completes_pla(completed: &str) {
    let mut lines = completed.lines();
    let registered = lines.next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ") && registered.ends_with(" drover"),
        "{completed}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["plan"], "{completed}");
}

/// The installed man page is the one the binary generates, and `man`
/// renders it on the host (the lab image carries man-db for this).
fn check_man_page(lab: &common::Lab, host: &str) {
    let installed_page = lab.ssh(host, "gzip -dc /usr/share/man/man1/drover.1.gz");
    let here = tempfile::tempdir().unwrap();
    let (code, _, err) = common::run(lab.drover().arg("man").arg(here.path()));
    assert_eq!(code, 0, "{err}");
    let generated = std::fs::read_to_string(here.path().join("drover.1")).unwrap();
    assert_eq!(installed_page, generated);
    assert!(
        lab.ssh_output(host, "command -v man").status.success(),
        "{host} has no man: rebuild the lab image (tests/lab/lab.sh image)"
    );
    let rendered = lab.ssh(host, "MANPAGER=cat MANWIDTH=80 man drover");
    assert!(
        rendered.contains("SYNOPSIS") && rendered.contains("drover-plan(1)"),
        "{rendered}"
    );
}

/// The nightly timer and service are installed, valid, and off.
fn check_timer_disabled(lab: &common::Lab, host: &str) {
    // --man=no: verify checks Documentation=man:... with `man`, which the
    // lab's hosts lack.
    let verify = lab.ssh_output(
        host,
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
        let state = lab.ssh_output(host, &format!("systemctl is-enabled {unit}"));
        let state = String::from_utf8_lossy(&state.stdout);
        let want = if unit.ends_with(".timer") {
            "disabled"
        } else {
            "static"
        };
        assert_eq!(state.trim(), want, "{unit}");
        let active = lab.ssh_output(host, &format!("systemctl is-active {unit}"));
        assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive");
    }
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
            "dpkg --purge drover >/dev/null 2>&1; userdel drover-serve >/dev/null 2>&1; groupdel drover-serve >/dev/null 2>&1; rm -rf {REMOTE_DIR}; systemctl daemon-reload"
        ),
    );
    install_as_the_book_says(&lab, &host, &deb);

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
    let expected = expected_files();
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

    check_man_page(&lab, &host);
    // The installed bash completion registers and completes.
    assert_completes_pla(&complete_pla(
        &lab,
        &host,
        "/usr/share/bash-completion/completions/drover",
    ));
    check_timer_disabled(&lab, &host);

    // Removal leaves nothing of the package behind.
    remove_as_the_book_says(&lab, &host);
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

/// The directories the book's man and completions block writes below,
/// each removed afterwards unless it was there before.
const LOCAL_DIRS: [&str; 4] = [
    "/usr/local/share/man/man1",
    "/usr/local/share/bash-completion",
    "/usr/local/share/zsh",
    "/etc/fish",
];

/// The book's man and completions block (install.md, after `cargo install
/// --root /usr/local`), as written, as root on a lab host, with the test
/// run's binary in /usr/local/bin where cargo install would put it: `man
/// drover-plan` renders from /usr/local/share/man, the bash script
/// completes, the zsh and fish scripts are where those shells look.
#[test]
fn the_book_man_and_completions_block_runs_as_root_on_a_host() {
    let Some(lab) = common::lab() else { return };
    let lines = markdown::lab_block("docs/src/operations/install.md", "local");
    // The shells here look where the block writes (tests/lab/lab.sh deps
    // installs both; Debian's zsh and fish are the lab's).
    for (shell, list, dir) in [
        (
            "zsh",
            "print -l $fpath",
            "/usr/local/share/zsh/site-functions",
        ),
        (
            "fish",
            "printf '%s\\n' $fish_complete_path",
            "/etc/fish/completions",
        ),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("> {dir}/"))),
            "the block writes {shell}'s script into {dir}: {lines:#?}"
        );
        let o = Command::new(shell)
            .args([if shell == "zsh" { "-fc" } else { "-c" }, list])
            .stdin(Stdio::null())
            .output();
        match o {
            Ok(o) => assert!(
                String::from_utf8_lossy(&o.stdout).lines().any(|l| l == dir),
                "{shell} does not look in {dir}: {}",
                String::from_utf8_lossy(&o.stdout)
            ),
            Err(e) => note(&format!("SKIPPED: {shell} search path ({shell}: {e})")),
        }
    }

    let _l = lab.lock();
    let host = lab.host(lab.len() - 1).to_string();
    assert!(
        !lab.ssh_output(&host, "test -e /usr/local/bin/drover")
            .status
            .success(),
        "{host} already has /usr/local/bin/drover; the lab's baseline has none"
    );
    let existing = lab.ssh(
        &host,
        &format!(
            "for d in {}; do [ -e $d ] && echo $d; done; true",
            LOCAL_DIRS.join(" ")
        ),
    );
    let created: Vec<&str> = LOCAL_DIRS
        .iter()
        .copied()
        .filter(|d| !existing.lines().any(|l| l == *d))
        .collect();
    let _undo = lab.undo_on_drop(
        &host,
        &format!(
            "rm -f /usr/local/bin/drover /usr/local/share/man/man1/drover.1 /usr/local/share/man/man1/drover-*.1 \
             /usr/local/share/bash-completion/completions/drover /usr/local/share/zsh/site-functions/_drover \
             /etc/fish/completions/drover.fish; rm -rf {}",
            created.join(" ")
        ),
    );
    // A stripped copy: the debug binary is over 200 MB of symbols.
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("drover");
    let (code, _, err) = common::run(
        Command::new("strip")
            .arg("-o")
            .arg(&bin)
            .arg(markdown::drover_bin()),
    );
    assert_eq!(code, 0, "strip: {err}");
    copy_to(&lab, &host, &bin, "/usr/local/bin/drover");

    lab.ssh(&host, &format!("set -e\n{}", lines.join("\n")));

    let rendered = lab.ssh(&host, "MANPAGER=cat MANWIDTH=80 man drover-plan");
    assert!(
        rendered.contains("SYNOPSIS") && rendered.contains("drover-plan"),
        "{rendered}"
    );
    assert_completes_pla(&complete_pla(
        &lab,
        &host,
        "/usr/local/share/bash-completion/completions/drover",
    ));
    let heads = lab.ssh(
        &host,
        "head -n 1 /usr/local/share/zsh/site-functions/_drover && grep -m 1 -o 'complete -c drover' /etc/fish/completions/drover.fish",
    );
    assert!(
        heads.contains("#compdef drover") && heads.contains("complete -c drover"),
        "{heads}"
    );
}
