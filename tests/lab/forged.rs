//! A forged job result is never believed: while drover waits for a 2 s
//! start job, an unprivileged user on the host sends `JobRemoved ... done`
//! signals straight to drover's bus connection for the next job ids, and
//! drover still waits for systemd's own. Needs the lab (tests/lab).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab;
use drover::model::unit::UnitName;

const SLOW: &str = "drover-slow.service";

/// Kills the forging loop when dropped.
struct Forger(Child);

impl Drop for Forger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn forged_job_removed_signals_are_not_believed() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let host = lab.host(0).to_string();
    lab.ssh(
        &host,
        &format!("printf '[Service]\\nExecStartPre=/bin/sleep 2\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/{SLOW} && systemctl daemon-reload"),
    );
    let _slow = lab.undo_on_drop(
        &host,
        &format!(
            "systemctl stop {SLOW}; rm -f /etc/systemd/system/{SLOW}; systemctl daemon-reload"
        ),
    );
    let (rt, session) = lab.session(&host);
    // One job first: drover's connection then listens for job results
    // (its match is installed with the first job).
    let web = UnitName::parse("demo-web.service").unwrap();
    assert!(rt
        .block_on(session.systemd().start(&web))
        .expect("start")
        .ok());
    let me = session
        .systemd()
        .connection()
        .unique_name()
        .expect("a bus name")
        .to_string();
    // In one login (each login makes jobs of its own): learn the last job
    // id by queueing one as root and putting the unit back, then, as an
    // unprivileged user, forge `done` for the next 200 job ids straight to
    // drover's connection before drover queues its job: a client that
    // keeps results for jobs it has not seen yet would believe one.
    let inner = format!(
        "n=$1; for i in $(seq $((n + 1)) $((n + 200))); do \
         dbus-send --system --type=signal --dest=$2 /org/freedesktop/systemd1 \
         org.freedesktop.systemd1.Manager.JobRemoved uint32:$i \
         objpath:/org/freedesktop/systemd1/job/$i string:{SLOW} string:done || exit 1; done\n"
    );
    let outer = "set -e\n\
        j=$(busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
        org.freedesktop.systemd1.Manager StartUnit ss demo-idle.service replace)\n\
        n=${j##*/}; n=${n%\\\"}\n\
        systemctl stop demo-idle.service\n\
        runuser -u nofwd -- sh /tmp/drover-forge-inner.sh \"$n\" \"$1\"\n\
        echo \"forged $n\"\n";
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    lab.ssh(
        &host,
        &format!(
            "echo {} | base64 -d > /tmp/drover-forge-inner.sh && echo {} | base64 -d > /tmp/drover-forge.sh",
            b64.encode(inner),
            b64.encode(outer)
        ),
    );
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(&lab.ssh_config)
        .arg(&host)
        .arg(format!("sh /tmp/drover-forge.sh {me}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let forger = Forger(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(
        first.starts_with("forged "),
        "the forger could not send: {first}"
    );

    let unit = UnitName::parse(SLOW).unwrap();
    let t0 = Instant::now();
    let outcome = rt
        .block_on(session.systemd().restart(&unit))
        .expect("restart");
    let took = t0.elapsed();
    eprintln!(
        "{}; drover got {} after {took:?}",
        first.trim(),
        outcome.job
    );
    let state = lab.show(&host, SLOW)["ActiveState"].clone();
    drop(forger);
    rt.block_on(session.close());
    assert!(outcome.ok(), "{outcome:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "believed a forged result after {took:?}"
    );
    assert_eq!(
        state, "active",
        "drover returned before systemd's job ended"
    );
}
