//! How D-Bus reaches a lab host over ssh: a forwarded stream to the bus
//! socket by default (nothing runs on the host for it), the bridge when the
//! server refuses stream forwarding. Asserted on the host itself.

use crate::common;

use common::{lab, Lab};
use drover::model::inventory::Inventory;
use drover::model::unit::UnitName;
use drover::remote::carrier;
use drover::remote::systemd::StateRead;

/// Processes named systemd-stdio-bridge on the host right now.
fn bridges(lab: &Lab, host: &str) -> usize {
    // -f: the kernel truncates the process name to 15 characters.
    lab.ssh(host, "pgrep -c -f ^systemd-stdio-bridge || true")
        .trim()
        .parse()
        .expect("a count")
}

async fn read_web(session: &carrier::Session) -> String {
    let web = UnitName::parse("demo-web").expect("unit");
    session
        .systemd()
        .unit_state(&web, StateRead::default())
        .await
        .expect("read demo-web")
        .active_state
}

/// Connect to the first lab host as `user` (no become), read demo-web
/// through drover and check it against systemctl, and count the bridges
/// running on the host meanwhile.
async fn connect_as(lab: &Lab, user: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {}: {{ user: {user} }}\n", lab.host(0)),
    );
    let inv = Inventory::load(&inv).expect("inventory");
    let host = inv.hosts[0].clone();
    let session = carrier::connect(&host).await.expect("connect");
    let want = lab.show(&host.name, "demo-web.service")["ActiveState"].clone();
    assert_eq!(read_web(&session).await, want, "as {user}");
    let n = bridges(lab, &host.name);
    session.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_reaches_the_bus_without_a_process_on_the_host() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    assert_eq!(
        connect_as(&lab, "root").await,
        0,
        "no bridge while connected"
    );
    // A non-root login: the D-Bus handshake must name that user's uid.
    assert_eq!(connect_as(&lab, "drover").await, 0, "no bridge as drover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_stream_forwarding_gets_the_bridge() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    // The lab's sshd refuses stream forwarding to `nofwd` (tests/lab/lab.sh).
    assert_eq!(
        connect_as(&lab, "nofwd").await,
        1,
        "the bridge carries D-Bus"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn become_runs_jobs_through_the_bridge() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {}: {{ user: drover, become: true }}\n", lab.host(0)),
    );
    let inv = Inventory::load(&inv).expect("inventory");
    let host = inv.hosts[0].clone();
    let idle = UnitName::parse("demo-idle").expect("unit");
    let before = lab.show(&host.name, "demo-idle.service")["InvocationID"].clone();
    let session = carrier::connect(&host).await.expect("connect");
    assert_eq!(
        bridges(&lab, &host.name),
        1,
        "become goes through the bridge"
    );
    // The job is queued by the bridge's bus name (root, via sudo); its
    // JobRemoved must still reach us without Subscribe.
    let job = session.systemd().restart(&idle).await.expect("restart");
    assert_eq!(job.result, drover::remote::systemd::JobEnd::Done, "{job:?}");
    session.close().await;
    let after = lab.show(&host.name, "demo-idle.service");
    assert_eq!(after["ActiveState"], "active");
    assert_ne!(after["InvocationID"], before);
    lab.ssh(&host.name, "systemctl stop demo-idle");
}

/// dbus-daemon refuses a connection's 129th pending call with
/// LimitsExceeded, and while systemd reloads nothing is answered, so
/// every call sent meanwhile is pending: 400 Gets during a reload drew 73
/// refusals. The server's reads share one connection per host (the live
/// snapshot's full read, each route's read); a refused Get was once taken
/// for a missing value and a running unit was listed without its start
/// time. Bulk reads at once, round after round while the host reloads:
/// each answers in full (every unit up has its start time and
/// InvocationID) or not at all.
#[tokio::test]
async fn bulk_reads_sharing_a_connection_through_reloads_answer_in_full() {
    let Some(lab) = lab() else { return };
    // No other test starts or stops units meanwhile: a unit stopped between
    // ListUnits and its Gets would be a race of the test, not of the read.
    let _l = lab.lock();
    let inv = Inventory::load(&lab.inventory).expect("inventory");
    let host = inv
        .hosts
        .iter()
        .find(|h| h.name == lab.host(0))
        .expect("lab host")
        .clone();
    let session = carrier::connect(&host).await.expect("connect");
    let sd = session.systemd();
    let names: Vec<UnitName> = sd
        .all_service_facts(true)
        .await
        .expect("listing")
        .into_keys()
        .filter_map(|n| UnitName::parse(&n).ok())
        .collect();
    assert!(names.len() >= 40, "{names:?}");
    let reloader = {
        let (lab, host) = (lab.clone(), host.name.clone());
        tokio::task::spawn_blocking(move || {
            lab.ssh_output(
                &host,
                "for i in $(seq 10); do systemctl daemon-reload; done",
            )
        })
    };
    let mut rounds = 0;
    let mut up = 0;
    while !reloader.is_finished() {
        let (loaded, all, named) = futures_util::join!(
            sd.all_service_facts(true),
            sd.all_service_facts(false),
            sd.unit_facts(&names),
        );
        for (what, r) in [("loaded", loaded), ("all", all), ("named", named)] {
            let facts = r.unwrap_or_else(|e| panic!("round {rounds}, {what}: {e}"));
            for (u, f) in facts.iter().filter(|(_, f)| f.active_state == "active") {
                up += 1;
                assert!(
                    f.start_time.is_some() && !f.invocation_id.is_empty(),
                    "round {rounds}, {what}: {u} is active without its start time or InvocationID: {f:?}"
                );
            }
        }
        rounds += 1;
    }
    let reloaded = reloader.await.expect("reloader");
    assert!(reloaded.status.success(), "{reloaded:?}");
    assert!(rounds >= 2, "{rounds} rounds during the reloads");
    assert!(up > 0);
    session.close().await;
}

/// A drover killed with SIGKILL (systemd's stop timeout, the OOM killer,
/// `timeout -s KILL` around cron) leaves its SSH control directory and a
/// master that lingers until ControlPersist ends it. The next drover to
/// connect removes both, and nothing of a process still alive.
#[test]
fn a_killed_drovers_control_directories_are_swept_by_the_next_one() {
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let control_dirs = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&runtime)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("drover-ssh-"))
            })
            .collect();
        v.sort();
        v
    };
    let keys = crate::server::Keys::make(dir.path(), lab.host(0));
    let start = |name: &str| {
        crate::server::Server::start_prepared(
            "http",
            &[
                "-i",
                lab.inventory.to_str().unwrap(),
                "--keys",
                keys.file.to_str().unwrap(),
                // Kept until counted, however long a loaded machine
                // takes to read the other server's host.
                "--idle",
                "10m",
            ],
            &dir.path().join(format!("{name}.err")),
            |c| {
                c.env("XDG_RUNTIME_DIR", &runtime);
            },
        )
    };
    let (kept, killed) = (start("kept"), start("killed"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Each server connected (a read that answers 200 with the host's
    // error, a loaded machine's timeout, leaves no connection: read again).
    for (s, h) in [(&kept, lab.host(0)), (&killed, lab.host(1))] {
        let t0 = std::time::Instant::now();
        loop {
            let (st, _, body) = rt.block_on(crate::server::call(
                reqwest::Method::GET,
                &s.url(&format!("/node/{h}/service")),
                Some(&keys.read),
            ));
            assert_eq!(st, 200, "{body}");
            // A host's entry without an error (not an empty or other
            // answer, whose missing entry reads as no error either).
            if body[0]["hostname"] == h && body[0]["error"].is_null() {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "{h} never read: {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let both = control_dirs();
    assert_eq!(
        both.len(),
        2,
        "one control directory per connection: {both:?}"
    );
    let killed_pid = killed.child.id();
    let mut killed = killed;
    killed.signal(libc::SIGKILL);
    killed.child.wait().unwrap();
    // Which directory was the killed server's: the one whose owner file
    // names its pid.
    let (gone, live): (Vec<_>, Vec<_>) = both.into_iter().partition(|d| {
        std::fs::read_to_string(d.join("owner"))
            .unwrap_or_default()
            .starts_with(&format!("{killed_pid} "))
    });
    assert_eq!((gone.len(), live.len()), (1, 1));
    let gone_dir = gone[0].to_str().unwrap().to_string();
    assert!(
        !common::ssh_pids_mentioning(&gone_dir).is_empty(),
        "the killed server's master lingers"
    );

    let (code, out, err) = common::run(
        lab.drover()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["status", "-i", lab.inventory.to_str().unwrap(), "--target"])
            .arg(lab.host(2))
            .arg("demo-web"),
    );
    assert_eq!(code, 0, "{out}{err}");
    // The first connection waits for the sweep, so it is done by now; the
    // master got SIGTERM and ends on its own time.
    assert!(!gone[0].exists(), "the killed server's directory is swept");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !common::ssh_pids_mentioning(&gone_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed server's master did not end after the sweep"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(control_dirs(), live, "the live server's directory stays");
    assert!(!common::ssh_pids_mentioning(live[0].to_str().unwrap()).is_empty());
    drop(kept);
}
