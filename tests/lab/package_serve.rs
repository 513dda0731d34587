//! The packaged `drover-serve.service` on a real Debian host: the .deb
//! (built as in `package.rs`) installs it disabled with its system user;
//! set up with the book's block ([drover serve as a systemd
//! service](docs/src/operations/serve-service.md), run as written: /etc/drover
//! gets a keys file with the entry `drover serve keygen` printed and an
//! inventory holding the host itself over the local bus) it starts in its
//! sandbox as that user, answers `/health`, reads and plans real units
//! over HTTP with the key, keeps its files private, logs to journald with
//! the job's fields (JOB_ID, HOST, UNIT, STEP, OUTCOME), and
//! `systemd-analyze security` rates it below [`MAX_EXPOSURE`], as the book
//! quotes it.
//! Everything is removed afterwards, user included.

use crate::common;
use crate::markdown;
use crate::package::{copy_to, install_as_the_book_says, package};
use crate::server::call;

use std::process::{Child, Command, Stdio};

use reqwest::Method;

/// The exposure `systemd-analyze security` may give the unit at most (its
/// "OK" band ends at 3.9; the README and the book quote the measured one).
const MAX_EXPOSURE: f64 = 3.0;

/// Where the book's `sudoedit` lines find what the test "types".
const EDITS: &str = "/tmp/drover-book-edits";

/// An ssh local forward to the host's loopback port, stopped when dropped:
/// the unit listens on loopback, as shipped.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Forward 127.0.0.1:`port` here to the host's: the book's `curl` line
/// runs here as written (the lab image has no curl).
fn forward(lab: &common::Lab, host: &str, port: u16) -> Forward {
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        panic!(
            "127.0.0.1:{port} is taken here ({e}); the book's curl line needs it for its tunnel"
        );
    }
    let child = Command::new("ssh")
        .arg("-F")
        .arg(&lab.ssh_config)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{port}:127.0.0.1:{port}"))
        .arg(host)
        .stdin(Stdio::null())
        .spawn()
        .expect("run ssh -L");
    Forward(child)
}

/// The book's set-up block, line by line as written, on `host` as root:
/// `sudoedit` gets an editor writing what an operator types (the entry
/// `drover serve keygen` printed, under `keys:`; the host itself,
/// `transport: local`), and the `curl` line runs here through the
/// tunnel. The key keygen printed, and what `/health` answered.
fn run_setup_block(lab: &common::Lab, host: &str) -> (String, serde_json::Value) {
    let lines = markdown::lab_script("docs/src/operations/serve-service.md");
    let tmp = tempfile::tempdir().unwrap();
    let mut key = None;
    let mut edits = std::collections::BTreeMap::new();
    edits.insert(
        "/etc/drover/inventory.yml",
        format!("hosts:\n  {host}:\n    transport: local\n"),
    );
    let mut health = None;
    for line in &lines {
        let cmd = markdown::commands(line).join(" ");
        if cmd.starts_with("curl ") {
            let (code, out, err) = common::run(Command::new("sh").arg("-c").arg(line));
            assert_eq!(code, 0, "`{line}`: {err}\n{}", lab.ssh(host, "systemctl status --no-pager -l drover-serve.service; journalctl --no-pager -n 30 -u drover-serve.service; true"));
            health = Some(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")));
        } else if let Some(path) = cmd.strip_prefix("sudoedit ") {
            let text = edits
                .get(path)
                .unwrap_or_else(|| panic!("the test has nothing to type into {path}; add it"));
            let name = path.replace('/', "_");
            let staged = format!("{EDITS}/{name}");
            std::fs::write(tmp.path().join(&name), text).unwrap();
            lab.ssh(host, &format!("mkdir -p {EDITS}"));
            copy_to(lab, host, &tmp.path().join(&name), &staged);
            lab.ssh(host, &format!("SUDO_EDITOR='cp {staged}' {line}"));
        } else if cmd.starts_with("drover serve keygen ") {
            let out = lab.ssh(host, line);
            key = out
                .lines()
                .find_map(|l| l.strip_prefix("key: "))
                .map(str::to_string);
            let entry = out
                .split_once("entry:\n")
                .map(|(_, e)| e)
                .unwrap_or_default();
            assert!(key.is_some() && !entry.is_empty(), "keygen printed: {out}");
            edits.insert("/etc/drover/keys.yml", format!("keys:\n{entry}"));
        } else {
            lab.ssh(host, line);
        }
    }
    (
        key.expect("the block makes a key with drover serve keygen"),
        health.expect("the block ends with a curl of /health"),
    )
}

/// The exposure of `systemd-analyze security`'s last line ("Overall
/// exposure level for drover-serve.service: 2.1 OK :-)").
fn exposure(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split_once("Overall exposure level for drover-serve.service:"))?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn the_packaged_serve_unit_runs_sandboxed_as_its_user_and_answers_with_a_key() {
    let Some(lab) = common::lab() else { return };
    let deb = package();
    let _l = lab.lock();
    let host = lab.host(lab.len() - 1).to_string();
    let before = lab.ssh_output(&host, "dpkg-query -W drover || getent passwd drover-serve");
    assert!(
        !before.status.success(),
        "{host} already has a drover package or a drover-serve user; the lab's baseline has neither"
    );
    let _undo = lab.undo_on_drop(
        &host,
        &format!(
            "systemctl disable --now drover-serve.service >/dev/null 2>&1; dpkg --purge drover >/dev/null 2>&1; \
             userdel drover-serve >/dev/null 2>&1; groupdel drover-serve >/dev/null 2>&1; \
             rm -rf /etc/drover /var/lib/drover-serve /var/log/drover-serve /tmp/drover-book-install {EDITS}; \
             systemctl daemon-reload"
        ),
    );
    install_as_the_book_says(&lab, &host, &deb);

    // Installed with its user, valid, and off.
    let user = lab.ssh(&host, "getent passwd drover-serve");
    assert!(user.contains(":/var/lib/drover-serve:"), "{user}");
    let verify = lab.ssh_output(
        &host,
        "systemd-analyze verify --man=no /usr/lib/systemd/system/drover-serve.service",
    );
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("drover-serve"),
        "systemd-analyze verify: {verify_err}"
    );
    let enabled = lab.ssh_output(&host, "systemctl is-enabled drover-serve.service");
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");

    // Set up as the book says; its curl goes through the tunnel.
    let _fwd = forward(&lab, &host, 7480);
    let (key, health) = run_setup_block(&lab, &host);
    assert_eq!(health["status"], "ok", "{health}");
    let base = "http://127.0.0.1:7480";

    // It runs as drover-serve, not root.
    let owner = lab.ssh(
        &host,
        "stat -c %U /proc/$(systemctl show -p MainPID --value drover-serve.service)",
    );
    assert_eq!(owner.trim(), "drover-serve");

    // A key reads real units through the system bus from inside the sandbox.
    let (st, _, b) = call(
        Method::GET,
        &format!("{base}/node/{host}/service/demo-web"),
        Some(&key),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b[0]["units"]["demo-web.service"]["status"], "RUNNING",
        "{b}"
    );
    // A job over HTTP: a plan of a restart, changing nothing.
    let (st, _, b) = call(
        Method::POST,
        &format!("{base}/node/{host}/service/demo-web/restart?dry_run=true"),
        Some(&key),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["schema"], "drover.plan/1", "{b}");
    assert!(b.to_string().contains("restart"), "{b}");
    // A job that runs: its report lands in the private jobs directory. The
    // drover user has no right to start units on the local bus (no polkit
    // rule), so systemd refuses it and the host's result says so.
    let (st, _, b) = call(
        Method::POST,
        &format!("{base}/node/{host}/service/demo-idle/start"),
        Some(&key),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let id = b["job_id"].as_str().expect("a job id").to_string();
    assert_eq!(b["results"][0]["status"], "failed", "{b}");
    assert_eq!(lab.show(&host, "demo-idle")["ActiveState"], "inactive");
    let modes = lab.ssh(
        &host,
        &format!(
            "stat -c '%U %a %n' /var/lib/drover-serve/jobs /var/lib/drover-serve/jobs/{id}.json /var/log/drover-serve/audit.jsonl"
        ),
    );
    let modes: Vec<&str> = modes.lines().collect();
    assert_eq!(
        modes,
        [
            "drover-serve 700 /var/lib/drover-serve/jobs".to_string(),
            format!("drover-serve 600 /var/lib/drover-serve/jobs/{id}.json"),
            "drover-serve 600 /var/log/drover-serve/audit.jsonl".to_string(),
        ],
    );
    let audit = lab.ssh(&host, "cat /var/log/drover-serve/audit.jsonl");
    assert!(audit.contains(&id) && !audit.contains(&key), "{audit}");

    // Its log is in the journal with the job's fields: under systemd
    // (JOURNAL_STREAM) it logs to journald, also from inside the sandbox.
    let journal = lab.ssh(
        &host,
        &format!("journalctl -o json --no-pager -u drover-serve.service JOB_ID={id}"),
    );
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let result = entries
        .iter()
        .find(|e| e["HOST"] == host.as_str())
        .unwrap_or_else(|| panic!("no result entry of job {id} in the journal:\n{journal}"));
    assert_eq!(result["UNIT"], "demo-idle.service", "{result}");
    assert_eq!(result["STEP"], "started-demo-idle.service", "{result}");
    assert_eq!(result["OUTCOME"], "failed", "{result}");
    assert_eq!(
        result["PRIORITY"], "4",
        "a failed result is a warning: {result}"
    );
    assert_eq!(result["SYSLOG_IDENTIFIER"], "drover", "{result}");
    assert!(
        entries
            .iter()
            .any(|e| e["OUTCOME"] == "completed" && e["HOST"].is_null()),
        "the job's end: {journal}"
    );
    let everything = lab.ssh(
        &host,
        "journalctl -o json --no-pager -u drover-serve.service",
    );
    assert!(!everything.contains(key.as_str()), "a key in the journal");

    // The sandbox, scored.
    let out = lab.ssh_output(
        &host,
        "systemd-analyze security --no-pager drover-serve.service",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&text).unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("lab_package_serve: systemd-analyze security exposure {score}\n").as_bytes(),
    );
    assert!(score < MAX_EXPOSURE, "exposure {score}:\n{text}");
    // The README and the book quote the score measured on systemd 252
    // (Debian bookworm, the lab's release).
    let systemd = lab.ssh(&host, "systemctl --version");
    if systemd.starts_with("systemd 252 ") {
        let quoted = format!("**{score:.1} OK**");
        for page in [
            "README.md",
            "docs/src/operations/install.md",
            "docs/src/operations/serve-service.md",
        ] {
            let text = std::fs::read_to_string(markdown::repo().join(page)).unwrap();
            assert!(
                text.contains(&quoted),
                "{page} should quote the exposure measured here, {quoted}"
            );
        }
    }

    // A stop is clean: running jobs end, the server exits 0.
    lab.ssh(&host, "systemctl stop drover-serve.service");
    let result = lab.ssh(
        &host,
        "systemctl show -p Result -p ExecMainStatus drover-serve.service",
    );
    assert!(
        result.contains("Result=success") && result.contains("ExecMainStatus=0"),
        "{result}"
    );
}
