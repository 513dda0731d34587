//! Cluster mode against real NATS JetStream (a 3-node cluster and a leaf
//! node on loopback, `tests/common/nats.rs`) and the lab's real hosts:
//! `drover serve --nats` replicas hold no SSH key and ask `drover worker`s,
//! which own the hosts by leases in a KV bucket, for the hosts' state.
//! Workers are killed with SIGKILL; their hosts must be owned again.

use crate::common;
use crate::nats;
use crate::server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{lab, Lab};
use nats::NatsCluster;
use reqwest::Method;
use serde_json::Value;
use server::{assert_error, call, Keys, Server};

/// Short, so failover runs in seconds; production's default is 15 s.
const TTL: &str = "2s";

/// One NATS cluster at a time: four nats-servers per test, six tests at
/// once on two cores made JetStream's elections and the 2 s leases race
/// the machine rather than the code.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether nats-server is installed; without it a test is skipped,
/// loudly, or fails under DROVER_REQUIRE_LAB.
fn nats_here() -> bool {
    if nats::available() {
        return true;
    }
    assert!(
        std::env::var_os("DROVER_REQUIRE_LAB").is_none(),
        "nats-server is not installed: run tests/lab/lab.sh deps"
    );
    eprintln!("SKIPPED: nats-server is not installed (tests/lab/lab.sh deps installs it)");
    false
}

/// The cluster, or None (loudly) without nats-server; a failure under
/// DROVER_REQUIRE_LAB.
fn cluster(dir: &Path) -> Option<NatsCluster> {
    if !nats_here() {
        return None;
    }
    Some(NatsCluster::start(dir))
}

/// One JetStream server, or None (loudly) without nats-server: for
/// tests of what a replica answers, not of failover, which run beside
/// the others (one process, no elections).
fn one_node(dir: &Path) -> Option<nats::Node> {
    if !nats_here() {
        return None;
    }
    Some(nats::single(dir, ""))
}

/// A worker on one server whose leases outlast a loaded machine's
/// pauses: these tests are about answers, not failover.
const STEADY: [&str; 4] = ["--nats-replicas", "1", "--lease-ttl", "10s"];

/// A `drover worker` process; SIGKILLed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(dir: &Path, name: &str, nats: &str, inventory: &Path, extra: &[&str]) -> Worker {
        let log = dir.join(format!("worker-{name}.log"));
        let run = dir.join(format!("run-{name}"));
        std::fs::create_dir_all(&run).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["worker", "--nats", nats, "-i", inventory.to_str().unwrap()])
            .args(["--name", name])
            // TTL, unless told otherwise.
            .args(match extra.contains(&"--lease-ttl") {
                true => &[][..],
                false => &["--lease-ttl", TTL][..],
            })
            // R3 on the 3-node cluster, unless told otherwise.
            .args(match extra.contains(&"--nats-replicas") {
                true => &[][..],
                false => &["--nats-replicas", "3"][..],
            })
            .args(extra)
            .env("XDG_RUNTIME_DIR", &run)
            .env("RUST_LOG", "drover=info,drover::engine::cluster=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start drover worker");
        Worker { child, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A replica over `nats`, with the lab's inventory.
fn replica(dir: &Path, nats: &str, inventory: &Path, host: &str) -> (Server, Keys) {
    let keys = Keys::make(dir, host);
    let jobs = dir.join("jobs");
    let s = Server::start(
        &[
            "-i",
            inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--node",
            host,
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "--nats",
            nats,
            "--read-timeout",
            "3s",
        ],
        &dir.join("replica.log"),
    );
    (s, keys)
}

/// GET /node/_all/service until every host answers without an error
/// (within `within`); the last answer, and how long it took.
async fn until_all_read(
    s: &Server,
    key: &str,
    hosts: usize,
    within: Duration,
) -> (Value, Duration) {
    let t0 = Instant::now();
    loop {
        let (st, _, b) = call(Method::GET, &s.url("/node/_all/service"), Some(key)).await;
        let ok = st == 200
            && b.as_array().is_some_and(|a| {
                a.len() == hosts
                    && a.iter()
                        .all(|h| h.get("error").is_none() && h["units"].is_object())
            });
        if ok {
            return (b, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "not every host read through the workers within {within:?}: {st} {b}\nreplica: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes whose parent is `pid`, by name.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(
                head.split_once(" (")
                    .map(|(_, c)| c.to_string())
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// Wait (20 s at most) until both workers hold some of the buckets.
async fn share_buckets(a: &Worker, b: &Worker) {
    let t0 = Instant::now();
    while !(a.log().contains("lease taken") && b.log().contains("lease taken")) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the two workers did not share the buckets:\na: {}\nb: {}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker_of(lab: &Lab) -> &str {
    lab.host(0)
}

#[tokio::test]
async fn a_replica_reads_hosts_through_the_worker_that_owns_them_and_reaches_none() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(nc) = cluster(dir.path()) else {
        return;
    };
    // The worker reaches NATS through the leaf node, as a region behind a
    // bastion would; the replica through the hub.
    let _w = Worker::start(
        dir.path(),
        "a",
        &nc.leaf.url(),
        &lab.inventory,
        &["--nats-domain", "hub"],
    );
    let host = worker_of(&lab).to_string();
    let (s, keys) = replica(dir.path(), &nc.hub_urls(), &lab.inventory, &host);
    let (all, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(30)).await;
    eprintln!("every host read through the worker {took:?} after the replica started");
    assert_eq!(all.as_array().map(Vec::len), Some(lab.len()), "{all}");

    // What the replica answers is the host's own state.
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("/node/{host}/service/demo-web")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let web = &b[0]["units"]["demo-web.service"];
    assert_eq!(web["status"], "RUNNING", "{b}");
    let shown = lab.show(&host, "demo-web")["ActiveEnterTimestamp"].clone();
    let unix: i64 = shown.trim_start_matches('@').parse().unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(web["start_time"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((started - unix).abs() <= 1, "{started} vs {shown}");
    // Redis's listing of the --node host too.
    let (st, _, b) = call(Method::GET, &s.url("/v1/local/services"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["demo-web"]["status"], "RUNNING", "{b}");

    // The replica reached no host: no ssh of its own.
    let kids = children(s.child.id());
    assert!(
        !kids.iter().any(|c| c.contains("ssh")),
        "the replica runs {kids:?}"
    );
    // A change through the replica is done by the owner.
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/node/{host}/service/demo-web/restart?wait=1m")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"][0]["status"], "ok", "{b}");
    assert_eq!(b["results"][0]["changed"], true, "{b}");
    let kids = children(s.child.id());
    assert!(
        !kids.iter().any(|c| c.contains("ssh")),
        "the replica runs {kids:?}"
    );
}

#[tokio::test]
async fn malformed_reads_are_refused_and_logged_and_a_foreign_inventory_is_refused() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(nc) = cluster(dir.path()) else {
        return;
    };
    let w = Worker::start(dir.path(), "a", &nc.nodes[1].url(), &lab.inventory, &[]);
    let host = worker_of(&lab).to_string();
    let (s, keys) = replica(dir.path(), &nc.nodes[0].url(), &lab.inventory, &host);
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(30)).await;

    let client = async_nats::connect(nc.nodes[2].url()).await.unwrap();
    let subject = drover::model::cluster::read_subject("", &host);
    let ask = |payload: &'static [u8]| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            let m = client
                .request(subject, payload.into())
                .await
                .expect("the worker answers");
            serde_json::from_slice::<Value>(&m.payload).expect("a JSON answer")
        }
    };
    for bad in [&b"not json"[..], b"{\"protocol\":1}", b"\xff\xfe", b""] {
        let a = ask(bad).await;
        assert!(a["Refused"].is_string(), "{a}");
    }
    let a = ask(br#"{"protocol":1,"inventory":"0000","host":"lab-1","units":"loaded"}"#).await;
    assert!(
        a["Refused"].as_str().unwrap().contains("another inventory"),
        "{a}"
    );
    let a = ask(br#"{"protocol":99,"inventory":"0000","host":"lab-1","units":"loaded"}"#).await;
    assert!(a["Refused"].as_str().unwrap().contains("protocol"), "{a}");
    // Published without a reply subject: dropped, logged.
    client
        .publish(subject.clone(), "garbage".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Tasks the same: refused, logged, nothing done.
    let tasks = drover::model::cluster::task_subject("", &host);
    for bad in [
        &b"not json"[..],
        b"{\"protocol\":1}",
        b"\xff\xfe",
        br#"{"protocol":1,"job":{"job_id":"x","label":"l","text":"t","playbook":"0","inventory":"0","params_digest":"0","step_timeout_ms":1},"host":"lab-1","op":{"work":{"step":0}}}"#,
    ] {
        let m = client
            .request(tasks.clone(), bad.into())
            .await
            .expect("the worker answers a task");
        let a: Value = serde_json::from_slice(&m.payload).expect("a JSON answer");
        assert!(a["refused"].is_string(), "{a}");
    }
    // A forged task whose playbook text does not give its digest.
    let inv_digest = drover::engine::load_inventory(&lab.inventory)
        .unwrap()
        .digest;
    let forged = serde_json::json!({
        "protocol": 1,
        "job": {"job_id": "x", "label": "l", "text": "name: x\nsteps:\n  - {id: a, target: _all, service: {name: demo-web, state: restarted}}\n",
                "playbook": "0000", "inventory": inv_digest, "params_digest": "0", "step_timeout_ms": 1000},
        "host": host,
        "op": {"work": {"step": 0}},
    });
    let m = client
        .request(tasks.clone(), serde_json::to_vec(&forged).unwrap().into())
        .await
        .expect("the worker answers a task");
    let a: Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(
        a["refused"]
            .as_str()
            .unwrap()
            .contains("does not match its digest"),
        "{a}"
    );
    // The worker lives on and answers.
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(10)).await;
    let log = w.log();
    assert!(log.contains("malformed read request"), "{log}");
    assert!(log.contains("a malformed task"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_killed_worker_s_hosts_are_owned_again_and_a_killed_nats_server_loses_nothing() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nc) = cluster(dir.path()) else {
        return;
    };
    let mut a = Worker::start(
        dir.path(),
        "a",
        &nc.leaf.url(),
        &lab.inventory,
        &["--nats-domain", "hub"],
    );
    let b = Worker::start(dir.path(), "b", &nc.hub_urls(), &lab.inventory, &[]);
    let host = worker_of(&lab).to_string();
    let (s, keys) = replica(dir.path(), &nc.hub_urls(), &lab.inventory, &host);
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(30)).await;
    // Both work: each took some of the 64 buckets (rendezvous hashing).
    share_buckets(&a, &b).await;

    // kill -9 of a: its leases expire after the TTL, b takes them, and
    // every host reads again.
    a.kill();
    let (_, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
    eprintln!("kill -9 of a worker: every host read again after {took:?} (lease TTL {TTL})");

    // One of three NATS servers killed: the R3 buckets and the replica's
    // reads go on through the other two.
    nc.nodes[0].kill();
    let (_, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
    eprintln!("kill -9 of a NATS server: every host read again after {took:?}");
    // Reads go on for a while on the two left. A renewal JetStream did
    // not answer while it moved its leaders may drop a lease at the fence
    // for a moment; b takes its own lease back, and no host stays unread
    // for long.
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(3) {
        // A read sent while b's renewals wait on JetStream is not answered
        // (the fence) and waits out the replica's 8 s bound.
        let (_, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
        worst = worst.max(took);
    }
    eprintln!("after the NATS server's death: the longest wait for every host {worst:?}");
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[tokio::test]
async fn the_worker_answers_from_its_live_snapshot_and_sees_a_stop_within_2s() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let Some(nc) = cluster(dir.path()) else {
        return;
    };
    let host = worker_of(&lab).to_string();
    let w = Worker::start(dir.path(), "a", &nc.hub_urls(), &lab.inventory, &[]);
    let (s, keys) = replica(dir.path(), &nc.hub_urls(), &lab.inventory, &host);
    let health = s.url("/v1/agent/health/service/name/demo-worker");
    // Warm: the worker follows the unit once asked for it.
    let t0 = Instant::now();
    loop {
        let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
        if st == 200 && w.log().contains("read answered from the live snapshot") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the worker never answered from its snapshot: {st} {b}\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped behind drover's back: the replica says so within 2 s, from
    // the worker's snapshot (systemd's signals), not a poll of the host.
    let _undo = lab.undo_on_drop(&host, "systemctl start demo-worker");
    lab.ssh(&host, "systemctl stop demo-worker");
    let t0 = Instant::now();
    loop {
        let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
        if st == 503 {
            assert_eq!(b[0]["Checks"][0]["Status"], "critical", "{b}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "still {st} {b} 2 s after the stop\nworker: {}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a stop seen through cluster mode after {:?}", t0.elapsed());
    let log = w.log();
    let tail = log.rsplit("read from the host").next().unwrap_or_default();
    assert!(
        tail.contains("read answered from the live snapshot"),
        "the last answers were not from the snapshot:\n{log}"
    );
}

/// The JetStream API subjects drover needs, and no other: listing
/// (`CONSUMER.CREATE`) the `listed` buckets, and reading, writing and
/// making the `used` ones; as a NATS config list.
fn js_api(listed: &[&str], used: &[&str]) -> String {
    let mut v = Vec::new();
    for b in used {
        for api in ["STREAM.INFO", "STREAM.CREATE"] {
            v.push(format!("\"$JS.API.{api}.KV_{b}\""));
        }
        v.push(format!("\"$JS.API.DIRECT.GET.KV_{b}.>\""));
    }
    for b in listed {
        v.push(format!("\"$JS.API.STREAM.INFO.KV_{b}\""));
        v.push(format!("\"$JS.API.CONSUMER.CREATE.KV_{b}\""));
        // nats-server 2.10+ names the consumer and filter in the subject.
        v.push(format!("\"$JS.API.CONSUMER.CREATE.KV_{b}.>\""));
        v.push(format!("\"$JS.API.DIRECT.GET.KV_{b}.>\""));
    }
    v.sort();
    v.dedup();
    v.join(", ")
}

/// NATS permissions per role: a region's credentials may subscribe to its
/// own hosts' reads and write its own leases only. A worker holding the
/// eu.west.1 credentials but told to work eu.west.2 owns nothing there.
#[tokio::test]
async fn a_region_s_credentials_cannot_take_another_region_s_hosts() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    if !nats_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (own, other) = ("region:eu.west.1", "region:eu.west.2");
    let t = drover::model::cluster::token;
    let users = format!(
        "authorization {{ users = [\n\
         {{ user: replica, password: \"replica-pw-1\", permissions: {{\n\
           publish: [\"drover.read.>\", \"$KV.drover_clock.>\", {replica_api}],\n\
           subscribe: [\"_INBOX.>\"] }} }},\n\
         {{ user: eu1, password: \"eu1-pw-secret\", permissions: {{\n\
           publish: [\"$KV.drover_workers.>\", \"$KV.drover_leases.{r}.>\", \"_INBOX.>\", {worker_api}],\n\
           subscribe: [\"drover.read.{r}.>\", \"_INBOX.>\"] }} }}\n\
         ] }}",
        r = t(own),
        replica_api = js_api(&["drover_workers"], &["drover_clock"]),
        worker_api = js_api(&["drover_workers"], &["drover_workers", "drover_leases"]),
    );
    let n = nats::single(dir.path(), &users);
    let url = |user: &str, pw: &str| format!("nats://{user}:{pw}@127.0.0.1:{}", n.port);
    let eu1 = url("eu1", "eu1-pw-secret");
    let good = Worker::start(
        dir.path(),
        "eu1",
        &eu1,
        &lab.inventory,
        &["--region", own, "--nats-replicas", "1"],
    );
    let rogue = Worker::start(
        dir.path(),
        "rogue",
        &eu1,
        &lab.inventory,
        &["--region", other, "--nats-replicas", "1"],
    );
    let (h1, h2) = (lab.host(0).to_string(), lab.host(1).to_string());
    let (s, keys) = replica(
        dir.path(),
        &url("replica", "replica-pw-1"),
        &lab.inventory,
        &h1,
    );
    let read = |h: String| {
        let (url, key) = (s.url(&format!("/node/{h}/service")), keys.read.clone());
        async move {
            let (st, _, b) = call(Method::GET, &url, Some(&key)).await;
            assert_eq!(st, 200, "{b}");
            b[0]["error"].as_str().map(str::to_string)
        }
    };
    // Its own region's host answers.
    let t0 = Instant::now();
    while read(h1.clone()).await.is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{}\n{}",
            good.log(),
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The other region's host never does: the rogue worker may neither
    // write its lease nor listen for its reads.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let e = read(h2.clone()).await;
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("no drover worker owns")),
            "{h2} answered through a region's credentials it must not use: {e:?}\nrogue: {}",
            rogue.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = rogue.log();
    assert!(log.contains("cannot take a lease"), "{log}");
    assert!(!log.contains("lease taken"), "{log}");
    // The replica's documented permissions let it measure its clock.
    let t0 = Instant::now();
    loop {
        let (_, _, h) = call(Method::GET, &s.url("/health"), None).await;
        if h["cluster"]["clock"]["skew_ms"].is_i64() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{h}
{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No password in any log.
    for text in [good.log(), rogue.log(), s.log()] {
        assert!(
            !text.contains("eu1-pw-secret") && !text.contains("replica-pw-1"),
            "{text}"
        );
    }
}

/// The fence on the worker's own clock: a worker stopped (SIGSTOP) past
/// its TTL loses its leases to the other; woken (SIGCONT), it answers none
/// of the reads queued for it meanwhile, and answers again only after it
/// has taken a lease anew.
#[tokio::test]
async fn a_worker_woken_after_its_ttl_answers_nothing_before_it_holds_a_lease_again() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(nc) = cluster(dir.path()) else {
        return;
    };
    let a = Worker::start(dir.path(), "a", &nc.hub_urls(), &lab.inventory, &[]);
    let host = worker_of(&lab).to_string();
    let (s, keys) = replica(dir.path(), &nc.hub_urls(), &lab.inventory, &host);
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(30)).await;
    // b starts after a holds every bucket; both share them at its tick.
    let b = Worker::start(dir.path(), "b", &nc.hub_urls(), &lab.inventory, &[]);
    let t0 = Instant::now();
    while !b.log().contains("lease taken") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "b took nothing: {}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
    let pid = a.child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Past the TTL: b owns a's buckets, every host answers; the polls
    // also queue reads on a's subscriptions.
    let (_, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
    eprintln!("a stopped: every host read again through b after {took:?}");
    for _ in 0..10 {
        until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(10)).await;
    }
    let before = a.log().len();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Awake: reads go on; a answers nothing until it takes a lease anew.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(10)).await;
    }
    let log = a.log();
    let woke = &log[before..];
    let first_answer = ["read answered from the live snapshot", "read from the host"]
        .iter()
        .filter_map(|m| woke.find(m))
        .min();
    let retaken = woke.find("lease taken");
    if let Some(answered) = first_answer {
        assert!(
            retaken.is_some_and(|t| t < answered),
            "a answered a read before it held a lease again:\n{woke}"
        );
    }
    assert!(
        woke.contains("a read dropped") || woke.contains("no longer served"),
        "a never noticed its lease was stale:\n{woke}"
    );
}

/// Runbooks in `dir/books` (name, text) and the arguments of a server
/// on the lab's inventory serving them with `keys`, plus `extra`.
fn books_and_args(
    dir: &Path,
    lab: &Lab,
    keys: &Keys,
    books: &[(&str, &str)],
    extra: &[&str],
) -> Vec<String> {
    let dir_books = dir.join("books");
    std::fs::create_dir_all(&dir_books).unwrap();
    for (name, text) in books {
        std::fs::write(dir_books.join(format!("{name}.yml")), text).unwrap();
    }
    let mut v: Vec<String> = vec![
        "-i".into(),
        lab.inventory.to_str().unwrap().into(),
        "--keys".into(),
        keys.file.to_str().unwrap().into(),
        "--playbooks".into(),
        dir_books.to_str().unwrap().into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `drover serve ARGS`, its log in `dir/LOG.log`.
fn serve_args(dir: &Path, args: &[String], log: &str) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args, &dir.join(format!("{log}.log")))
}

/// A replica `name` over `nats` with a jobs directory of its own, serving
/// `books`, with `extra` arguments (a read bound of 3 s unless given).
fn replica_named(
    dir: &Path,
    lab: &Lab,
    keys: &Keys,
    books: &[(&str, &str)],
    nats: &str,
    name: &str,
    extra: &[&str],
) -> Server {
    let jobs = dir.join(format!("jobs-{name}"));
    let mut args = vec![
        "--nats",
        nats,
        "--read-timeout",
        "3s",
        "--jobs-dir",
        jobs.to_str().unwrap(),
    ];
    args.extend(extra);
    serve_args(dir, &books_and_args(dir, lab, keys, books, &args), name)
}

/// A server without --nats on the lab's inventory, serving `books`.
fn single_server(dir: &Path, lab: &Lab, keys: &Keys, books: &[(&str, &str)]) -> Server {
    let jobs = dir.join("single-jobs");
    let args = books_and_args(
        dir,
        lab,
        keys,
        books,
        &["--jobs-dir", jobs.to_str().unwrap()],
    );
    serve_args(dir, &args, "single")
}

/// `v` without the fields `keys`, at any depth: what differs between two
/// runs of the same plan or job (ids, times).
fn without(mut v: Value, keys: &[&str]) -> Value {
    fn strip(v: &mut Value, keys: &[&str]) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !keys.contains(&k.as_str()));
                m.values_mut().for_each(|v| strip(v, keys));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| strip(v, keys)),
            _ => {}
        }
    }
    strip(&mut v, keys);
    v
}

/// Drop what differs between two runs of the same plan (ids, times).
fn without_volatile(v: Value) -> Value {
    without(
        v,
        &["job_id", "generated_at", "created_at", "facts_collected_at"],
    )
}

/// A dry run on a replica is planned from the facts the hosts' owners
/// read (units, maintenance flags, unit files), and says exactly what a
/// single server's dry run on the same hosts says. A check-mode script
/// runs on the host, which workers do not do yet: 503, not a plan that
/// knows less.
#[tokio::test]
async fn a_replica_s_dry_run_is_the_single_server_s_plan() {
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let preview = "name: preview\nsteps:\n  - id: web\n    target: _all\n    serial: 2\n    service: { name: demo-web, state: restarted }\n  - id: idle\n    target: role:web\n    needs: [web]\n    service: { name: demo-idle, state: stopped }\n  - id: file\n    target: role:worker\n    needs: []\n    unit: { name: drover-preview, content: \"[Service]\\nExecStart=/bin/true\\n\" }\n";
    let checked = "name: checked\nsteps:\n  - id: probe\n    target: _all\n    use: probe\n";
    let books = [("preview", preview), ("checked", checked)];
    let module = dir.path().join("books/modules/probe");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(
        module.join("module.yml"),
        "description: probe\ncheck: true\n",
    )
    .unwrap();
    std::fs::write(
        module.join("run"),
        "#!/bin/sh\necho '{\"changed\": false}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(module.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let urls = n.url();
    let replica_args = ["--nats", urls.as_str(), "--read-timeout", "3s"];
    let r = serve_args(
        dir.path(),
        &books_and_args(dir.path(), &lab, &keys, &books, &replica_args),
        "replica",
    );
    let single = single_server(dir.path(), &lab, &keys, &books);
    until_all_read(&r, &keys.read, lab.len(), Duration::from_secs(30)).await;

    let dry = |s: &Server, book: &str| {
        let url = s.url(&format!("/runbook/{book}?dry_run=true"));
        let key = keys.operate.clone();
        async move { call(Method::POST, &url, Some(&key)).await }
    };
    let (st, _, via_workers) = dry(&r, "preview").await;
    assert_eq!(st, 200, "{via_workers}\nreplica: {}", r.log());
    let (st, _, direct) = dry(&single, "preview").await;
    assert_eq!(st, 200, "{direct}");
    // Not an empty agreement: the plan restarts demo-web everywhere and
    // creates the unit file on the workers.
    let text = direct.to_string();
    assert!(
        text.contains("demo-web.service") && text.contains("drover-preview.service"),
        "{direct}"
    );
    assert_eq!(
        without_volatile(via_workers),
        without_volatile(direct),
        "the replica's dry run differs from the single server's"
    );
    // The replica reached no host for it.
    let kids = children(r.child.id());
    assert!(
        !kids.iter().any(|c| c.contains("ssh")),
        "the replica runs {kids:?}"
    );

    let (st, _, b) = dry(&r, "checked").await;
    assert_eq!(st, 503, "{b}");
    assert_error(503, &b);
    assert!(b["details"].as_str().unwrap().contains("check-mode"), "{b}");
    // Its job needs the module's files, which workers do not hold.
    let (st, _, b) = call(
        Method::POST,
        &r.url("/runbook/checked?wait=10s"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 503, "{b}");
    assert_error(503, &b);
    assert!(
        b["details"].as_str().unwrap().contains("other files"),
        "{b}"
    );
}

/// Windows are read on the replica's clock. A replica an hour off (the
/// real clock shifted by libfaketime, monotonic time left alone) sees so
/// against the time JetStream stamps on its writes, says it on /health
/// and refuses dry runs; a replica on time plans.
#[tokio::test]
async fn a_replica_whose_clock_is_off_says_so_and_refuses_to_plan() {
    let Some(lab) = lab() else { return };
    let preload = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1");
    if !preload.exists() {
        assert!(
            std::env::var_os("DROVER_REQUIRE_LAB").is_none(),
            "faketime is not installed: run tests/lab/lab.sh deps"
        );
        eprintln!("SKIPPED: faketime is not installed (tests/lab/lab.sh deps installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let urls = n.url();
    let web = "name: web\nsteps:\n  - id: web\n    target: _all\n    service: { name: demo-web, state: restarted }\n";
    let args = books_and_args(
        dir.path(),
        &lab,
        &keys,
        &[("web", web)],
        &["--nats", urls.as_str(), "--read-timeout", "3s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _w = Worker::start(dir.path(), "a", &urls, &lab.inventory, &STEADY);
    let on_time = Server::start(&args, &dir.path().join("on-time.log"));
    let off = Server::start_prepared("http", &args, &dir.path().join("off.log"), |c| {
        c.env("LD_PRELOAD", preload)
            .env("FAKETIME", "+1h")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    });
    // Measured at start: poll /health (no key) until it has a skew.
    let clock_of = |s: &Server| {
        let url = s.url("/health");
        async move {
            let t0 = Instant::now();
            loop {
                let (st, _, b) = call(Method::GET, &url, None).await;
                assert_eq!(st, 200, "{b}");
                if b["cluster"]["clock"]["skew_ms"].is_i64() {
                    return b["cluster"]["clock"].clone();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "never measured: {b}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let good = clock_of(&on_time).await;
    let bad = clock_of(&off).await;
    eprintln!("on time: {good}\nan hour off: {bad}");
    assert!(good["skew_ms"].as_i64().unwrap().abs() < 1000, "{good}");
    assert_eq!(good["ok"], true, "{good}");
    let skew = bad["skew_ms"].as_i64().unwrap();
    assert!((skew - 3_600_000).abs() < 5_000, "{bad}");
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["bound_ms"], 2000, "{bad}");

    until_all_read(&on_time, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let dry = |s: &Server| {
        let url = s.url("/runbook/web?dry_run=true");
        let key = keys.operate.clone();
        async move { call(Method::POST, &url, Some(&key)).await }
    };
    let (st, _, b) = dry(&off).await;
    assert_eq!(st, 503, "{b}");
    assert_error(503, &b);
    assert!(b["details"].as_str().unwrap().contains("clock"), "{b}");
    let (st, _, b) = dry(&on_time).await;
    assert_eq!(st, 200, "{b}");
    assert!(off.log().contains("off the NATS server's"), "{}", off.log());
}

/// Unit logs on a replica: the owner reads the host's journal, the query
/// travels as the caller's fields and is validated again by the worker,
/// and the answer is the single server's, entry for entry.
#[tokio::test]
async fn a_replica_reads_unit_logs_through_the_owner() {
    use crate::logs::{messages, transient, unit_name, KNOWN};
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let host = worker_of(&lab).to_string();
    let unit = unit_name("cluster");
    transient(&lab, &host, &unit, "", KNOWN);
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let (r, keys) = replica(dir.path(), &n.url(), &lab.inventory, &host);
    let single = single_server(dir.path(), &lab, &keys, &[]);
    until_all_read(&r, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let get = |s: &Server, q: &str| {
        let url = s.url(&format!("/api/node/{host}/log/unit/{unit}{q}"));
        let key = keys.read.clone();
        async move { call(Method::GET, &url, Some(&key)).await }
    };
    for q in ["?lines=50", "?priority=err&since=1h", "?lines=2"] {
        let (st, _, via) = get(&r, q).await;
        assert_eq!(st, 200, "{q}: {via}\nreplica: {}", r.log());
        let (st, _, direct) = get(&single, q).await;
        assert_eq!(st, 200, "{q}: {direct}");
        assert_eq!(via, direct, "{q}");
    }
    let (_, _, v) = get(&r, "?lines=50").await;
    assert_eq!(
        messages(&v["results"][0], "drover-known-"),
        [
            "drover-known-first",
            "drover-known-error",
            "drover-known-last"
        ]
    );
    let (_, _, v) = get(&r, "?priority=err&since=1h").await;
    assert_eq!(
        messages(&v["results"][0], "drover-known-"),
        ["drover-known-error"]
    );
    // A bad query never leaves the replica.
    let (st, _, b) = get(&r, "?since=-1h").await;
    assert_eq!(st, 400, "{b}");
    assert_error(400, &b);
}

/// `drover apply --nats` claims every (host, unit) it may touch in the
/// cluster's KV, by compare-and-set: a run of another playbook (no file
/// lock in common, as from another machine) touching one of them is
/// refused naming the holder, or waits for it; one touching other units
/// runs. A run killed with SIGKILL frees its units once its claims age
/// out (--claim-ttl).
#[tokio::test]
async fn command_line_runs_on_the_same_units_exclude_each_other_through_nats() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let host = lab.host(2).to_string();
    let gate = common::Gate::new();
    let book = |name: &str, body: &str| {
        let p = dir.path().join(format!("{name}.yml"));
        std::fs::write(&p, format!("name: {name}\nsteps:\n{body}")).unwrap();
        p
    };
    let held = book(
        "held",
        &format!(
            "  - id: hold\n    target: {host}\n    service: {{ name: demo-worker, state: restarted }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n",
            gate.port
        ),
    );
    let same = book(
        "same",
        &format!("  - id: again\n    target: {host}\n    service: {{ name: demo-worker, state: started }}\n"),
    );
    let other = book(
        "other",
        &format!("  - id: idle\n    target: {host}\n    service: {{ name: demo-idle, state: stopped }}\n"),
    );
    let apply = |pb: &Path, extra: &[&str]| {
        let mut c = lab.drover();
        c.args(["apply", "--format", "json", "-i"])
            .arg(&lab.inventory)
            .arg(pb)
            .args(["--nats", &n.url(), "--claim-ttl", "3s"])
            .args(extra)
            .stdin(Stdio::null());
        c
    };

    let first = apply(&held, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    gate.wait_reached();
    let (code, out, err) = common::run(&mut apply(&same, &[]));
    assert_eq!(code, 3, "{out}{err}");
    // --format json: the error is a JSON document on stdout.
    let said = format!("{out}{err}");
    assert!(
        said.contains(&format!("demo-worker.service on {host}"))
            && said.contains("another run holds"),
        "{said}"
    );
    let (code, out, err) = common::run(&mut apply(&other, &[]));
    assert_eq!(code, 0, "another unit is free: {out}{err}");
    // The held run ends; its claims are given back before it exits.
    gate.open();
    let done = first.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let (code, out, err) = common::run(&mut apply(&same, &[]));
    assert_eq!(code, 0, "{out}{err}");

    // Killed while holding: its claims age out, a waiting run gets them.
    let gate = common::Gate::new();
    let held = book(
        "held2",
        &format!(
            "  - id: hold\n    target: {host}\n    service: {{ name: demo-worker, state: restarted }}\n    wait: {{ http: \"http://127.0.0.1:{}/\", timeout: 60s }}\n",
            gate.port
        ),
    );
    let mut killed = apply(&held, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    gate.wait_reached();
    let (code, _, err) = common::run(&mut apply(&same, &[]));
    assert_eq!(code, 3, "{err}");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let t0 = Instant::now();
    let (code, out, err) = common::run(&mut apply(&same, &["--wait-lock", "30s"]));
    assert_eq!(code, 0, "{out}{err}");
    let took = t0.elapsed();
    eprintln!("a killed run's claims were taken over after {took:?} (claim TTL 3s)");
    assert!(took < Duration::from_secs(20), "{took:?}");
    gate.open();
}

/// `group_by` room is counted in the claims bucket, not per process: two
/// `drover apply --nats` runs (no lock in common, as from two machines)
/// on different units of two hosts of one group, `max_unavailable: 1`.
/// While the first holds its batch, the second's batch finds the group
/// full and names the first's host; a run killed with SIGKILL frees its
/// room once its take ages out (--claim-ttl). Counted per process, the
/// second run would go through.
#[tokio::test]
async fn group_room_is_counted_across_runs_through_nats() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    // lab-1 and lab-3: two hosts of the group labels.role=web.
    let (first, second) = (lab.host(0).to_string(), lab.host(2).to_string());
    let book = |name: &str, host: &str, gate: Option<u16>| {
        let p = dir.path().join(format!("{name}.yml"));
        let wait = gate.map_or(String::new(), |port| {
            format!("    wait: {{ http: \"http://127.0.0.1:{port}/\", timeout: 60s }}\n")
        });
        std::fs::write(
            &p,
            format!(
                "name: {name}\nsteps:\n  - id: roll\n    target: {host}\n    group_by: labels.role\n    max_unavailable: 1\n    service: {{ name: demo-worker, state: restarted }}\n{wait}"
            ),
        )
        .unwrap();
        p
    };
    let apply = |pb: &Path, extra: &[&str]| {
        let mut c = lab.drover();
        c.args(["apply", "--format", "json", "-i"])
            .arg(&lab.inventory)
            .arg(pb)
            .args(["--nats", &n.url(), "--claim-ttl", "3s"])
            .args(extra)
            .stdin(Stdio::null());
        c
    };
    let other = book("other", &second, None);
    let full = |out: &str| {
        let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let r = &v["results"][0];
        assert_eq!(r["status"], "failed", "{v}");
        let e = r["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("group labels.role=web is full") && e.contains(&first),
            "{v}"
        );
    };

    let gate = common::Gate::new();
    let held = book("held", &first, Some(gate.port));
    let running = apply(&held, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    gate.wait_reached();
    let before = lab.invocation(&second, "demo-worker");
    let (code, out, err) = common::run(&mut apply(&other, &[]));
    assert_ne!(code, 0, "the group had no room: {out}{err}");
    full(&out);
    assert_eq!(
        lab.invocation(&second, "demo-worker"),
        before,
        "{second} was not restarted"
    );
    gate.open();
    let done = running.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Its room was given back as it ended.
    let (code, out, err) = common::run(&mut apply(&other, &[]));
    assert_eq!(code, 0, "{out}{err}");

    // Killed while holding room: its take ages out, a waiting run fits.
    let gate = common::Gate::new();
    let held = book("held2", &first, Some(gate.port));
    let mut killed = apply(&held, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    gate.wait_reached();
    let (code, out, _) = common::run(&mut apply(&other, &[]));
    assert_ne!(code, 0, "{out}");
    full(&out);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let t0 = Instant::now();
    let (code, out, err) = common::run(&mut apply(&other, &["--wait-lock", "30s"]));
    assert_eq!(code, 0, "{out}{err}");
    let took = t0.elapsed();
    eprintln!("a killed run's group room was free again after {took:?} (claim TTL 3s)");
    assert!(took < Duration::from_secs(20), "{took:?}");
    gate.open();
}

/// A real partition, not a closed connection: worker a reaches NATS
/// through a relay that is cut (silence both ways, nothing closed) while
/// a keeps running. Its leases move to b within the TTL and every host
/// reads again; healed, a answers nothing it holds from before, only
/// after it takes a lease anew.
#[tokio::test]
async fn a_worker_cut_off_by_a_partition_loses_its_hosts_and_acts_on_nothing_stale() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(nc) = cluster(dir.path()) else {
        return;
    };
    let relay = nats::Partition::to(nc.nodes[0].port);
    let a = Worker::start(dir.path(), "a", &relay.url(), &lab.inventory, &[]);
    let host = worker_of(&lab).to_string();
    let (s, keys) = replica(dir.path(), &nc.nodes[1].url(), &lab.inventory, &host);
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let b = Worker::start(dir.path(), "b", &nc.nodes[2].url(), &lab.inventory, &[]);
    share_buckets(&a, &b).await;
    until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;

    let at_cut = a.log().len();
    relay.cut();
    let (_, took) = until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(20)).await;
    eprintln!("a partitioned: every host read again through b after {took:?} (TTL {TTL})");
    // Reads meanwhile queue on a's side of the partition.
    for _ in 0..10 {
        until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(10)).await;
    }
    let during = a.log()[at_cut..].to_string();
    assert!(
        during.contains("no longer served") || during.contains("cannot renew a lease"),
        "a never noticed it was cut off:\n{during}"
    );
    let at_heal = a.log().len();
    relay.heal();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        until_all_read(&s, &keys.read, lab.len(), Duration::from_secs(10)).await;
    }
    let after = a.log()[at_heal..].to_string();
    let first_answer = ["read answered from the live snapshot", "read from the host"]
        .iter()
        .filter_map(|m| after.find(m))
        .min();
    if let Some(answered) = first_answer {
        assert!(
            after.find("lease taken").is_some_and(|t| t < answered),
            "a answered a read before it held a lease again:\n{after}"
        );
    }
    assert!(!a.log().contains("panicked") && !b.log().contains("panicked"));
}

/// Each host's InvocationID of `unit`, by host name.
fn invocations(lab: &Lab, unit: &str) -> Vec<(String, String)> {
    (0..lab.len())
        .map(|i| {
            let h = lab.host(i).to_string();
            let id = lab.ssh(
                &h,
                &format!("systemctl show -p InvocationID --value {unit}"),
            );
            (h, id.trim().to_string())
        })
        .collect()
}

/// Drop what differs between two runs of the same job (ids, times).
fn report_without_times(v: Value) -> Value {
    without(v, &["job_id", "started_at", "finished_at", "duration_ms"])
}

/// A job started on a replica is walked there (steps, rolling batches)
/// and each host's work is a task its owning worker does over its own
/// connection: every unit restarted exactly once, by the worker (the
/// replica runs no ssh), and the report is the single server's report of
/// the same runbook, result for result.
#[tokio::test]
async fn a_replica_s_job_is_worked_by_the_owners_and_reports_as_a_single_server() {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let roll = "name: roll\nsteps:\n  - id: web\n    target: _all\n    serial: 2\n    service: { name: demo-web, state: restarted }\n  - id: worker\n    target: role:worker\n    needs: [web]\n    service: { name: demo-worker, state: restarted }\n  - id: missing\n    target: role:web\n    needs: [web]\n    service: { name: drover-no-such-unit, state: restarted }\n";
    let books = [("roll", roll)];
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let urls = n.url();
    let replica_args = ["--nats", urls.as_str(), "--read-timeout", "3s"];
    let r = serve_args(
        dir.path(),
        &books_and_args(dir.path(), &lab, &keys, &books, &replica_args),
        "replica",
    );
    let single = single_server(dir.path(), &lab, &keys, &books);
    until_all_read(&r, &keys.read, lab.len(), Duration::from_secs(30)).await;

    let before = invocations(&lab, "demo-web");
    let (st, _, via_workers) = call(
        Method::POST,
        &r.url("/runbook/roll?wait=2m"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{via_workers}\nreplica: {}", r.log());
    let after = invocations(&lab, "demo-web");
    for ((h, b), (_, a)) in before.iter().zip(&after) {
        assert!(
            !a.is_empty() && a != b,
            "{h}: demo-web was not restarted ({b} -> {a})"
        );
    }
    // The replica reached no host for it.
    let kids = children(r.child.id());
    assert!(
        !kids.iter().any(|c| c.contains("ssh")),
        "the replica runs {kids:?}"
    );
    // The host itself refuses a change under an older lease than the one
    // it was last changed under: what a worker that was stopped (or cut
    // off) past its lease would send once it runs again.
    stale_owner_is_refused_by_the_host(&lab).await;

    // Listed and read back on the replica that ran it.
    let id = via_workers["job_id"].as_str().unwrap().to_string();
    let (st, _, got) = call(Method::GET, &r.url(&format!("/job/{id}")), Some(&keys.read)).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["outcome"], via_workers["outcome"], "{got}");

    let (st, _, direct) = call(
        Method::POST,
        &single.url("/runbook/roll?wait=2m"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{direct}");
    // Not an empty agreement: restarts everywhere, a failure on the web
    // hosts (no such unit), and what that failure says.
    let text = direct.to_string();
    assert!(
        text.contains("\"changed\":true") && text.contains("\"status\":\"failed\""),
        "{direct}"
    );
    assert_eq!(
        report_without_times(via_workers),
        report_without_times(direct),
        "the replica's job reports otherwise than the single server's\nreplica: {}",
        r.log()
    );
}

/// A worker's task restarting a unit no other test touches on a host,
/// sent with a fence token one revision older than the one the host keeps
/// (its owner's, or a newer one another test's worker wrote since): the
/// host refuses it, the unit is not restarted, and the answer says the
/// lease is stale. (That a current token goes through, every job test
/// shows.)
async fn stale_owner_is_refused_by_the_host(lab: &Lab) {
    use drover::engine::cluster::tasks::WorkerTasks;
    use drover::model::cluster::{TaskJob, TaskOp, TaskReply, TaskRequest, PROTOCOL};
    use drover::remote::fence::FenceToken;
    let host = lab.host(0).to_string();
    let unit = "drover-fence-probe";
    lab.ssh(
        &host,
        &format!("systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; systemd-run -q --unit {unit} /bin/sleep infinity"),
    );
    let playbook = format!(
        "name: fence-probe\nsteps:\n  - id: roll\n    target: {host}\n    service: {{ name: {unit}, state: restarted }}\n"
    );
    let kept = lab.ssh(&host, "cat /var/lib/drover/fence");
    let (epoch, revision) = kept
        .trim()
        .split_once(' ')
        .map(|(e, r)| (e.parse::<u64>().unwrap(), r.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("the worker wrote no fence on {host}: {kept:?}"));
    assert!(epoch > 0 && revision > 0, "{kept}");
    let inv_text = std::fs::read_to_string(&lab.inventory).unwrap();
    let job = drover::engine::Job::from_text(
        &playbook,
        Path::new("probe.yml"),
        &inv_text,
        &lab.inventory,
        None,
    )
    .unwrap();
    let inputs = job.inputs();
    let req = TaskRequest {
        protocol: PROTOCOL,
        job: TaskJob {
            job_id: "stale".into(),
            label: "probe.yml".into(),
            text: playbook.clone(),
            params: Default::default(),
            playbook: inputs.playbook,
            inventory: inputs.inventory,
            params_digest: inputs.params,
            limit: None,
            allow_protected: false,
            step_timeout_ms: 60_000,
            failure_logs: 0,
        },
        host: host.clone(),
        op: TaskOp::Work {
            step: 0,
            failed_at: None,
            again: false,
        },
    };
    let payload = serde_json::to_vec(&req).unwrap();
    let inv = drover::engine::load_inventory(&lab.inventory).unwrap();
    let tasks = WorkerTasks::new(std::sync::Arc::new(inv), None, 1);
    let show = format!("systemctl show -p InvocationID --value {unit}");
    let before = lab.ssh(&host, &show);
    assert!(!before.trim().is_empty(), "{unit} did not start on {host}");
    let stale = FenceToken {
        epoch,
        revision: revision - 1,
    };
    let answer = tasks.answer(&payload, |_| true, stale).await;
    let after = lab.ssh(&host, &show);
    lab.ssh(&host, &format!("systemctl stop {unit}"));
    assert!(
        matches!(&answer, TaskReply::Stale(why) if why.contains("newer lease")),
        "{answer:?}"
    );
    assert_eq!(before, after, "a stale owner restarted {unit} on {host}");
}

/// `kill -9` of the worker doing a host's restart, mid rolling restart:
/// the coordinator finds its successor not working on it, sends the work
/// again, and the successor reads the host instead of restarting again
/// (the intent the first owner left says the InvocationID before). The
/// job completes with every host restarted exactly once (each start of
/// the unit counted on the host).
#[tokio::test]
async fn a_killed_worker_s_in_flight_restart_is_read_again_not_done_again() {
    owner_lost_mid_restart(false).await;
}

/// The same with SIGSTOP instead of `kill -9`, the worker woken (SIGCONT)
/// once the job is over: its hosts were restarted once, and it changes
/// nothing after it wakes (its queued tasks are dropped on its own clock;
/// a change it had begun is refused by the host's fence).
#[tokio::test]
async fn a_worker_stopped_mid_restart_changes_nothing_after_it_wakes() {
    owner_lost_mid_restart(true).await;
}

/// A worker taking a host's restart is lost mid-change: killed, or
/// stopped (woken once the job is over).
async fn owner_lost_mid_restart(stop: bool) {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let _slow = SLOW_UNIT.lock().await;
    let hosts = install_slow(&lab);
    let keys = Keys::make(dir.path(), lab.host(0));
    let slow = "name: slow\nsteps:\n  - id: roll\n    target: _all\n    serial: 1\n    service: { name: drover-slow, state: restarted }\n";
    let fast_ttl = ["--nats-replicas", "1", "--lease-ttl", "2s"];
    let a = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &fast_ttl);
    let b = Worker::start(dir.path(), "b", &n.url(), &lab.inventory, &fast_ttl);
    share_buckets(&a, &b).await;
    let mut workers = [Some(a), Some(b)];
    let urls = n.url();
    let replica_args = ["--nats", urls.as_str(), "--read-timeout", "3s"];
    let r = serve_args(
        dir.path(),
        &books_and_args(dir.path(), &lab, &keys, &[("slow", slow)], &replica_args),
        "replica",
    );
    until_all_read(&r, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let (st, _, started) = call(
        Method::POST,
        &r.url("/runbook/slow?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    // Kill the worker that took the first host's work once systemd runs
    // its restart there (the unit counted a start), 3 s before it ends.
    let t0 = Instant::now();
    let (busy, host) = loop {
        let found = workers.iter().enumerate().find_map(|(i, w)| {
            let log = w.as_ref()?.log();
            let line = log.lines().find(|l| l.contains("op=Work { step: 0"))?;
            let host = line
                .split("host=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            Some((i, host))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no worker took the work"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while lab
        .ssh(&host, "cat /run/drover-slow.count 2>/dev/null | wc -l")
        .trim()
        != "1"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{host} did not begin its restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stopped = None;
    if stop {
        let pid = workers[busy].as_ref().map(|w| w.child.id() as i32).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        stopped = Some(pid);
    } else if let Some(mut w) = workers[busy].take() {
        w.kill();
    }
    let killed = busy;
    let report = loop {
        let (st, _, v) = call(Method::GET, &r.url(&format!("/job/{id}")), Some(&keys.read)).await;
        assert_eq!(st, 200, "{v}");
        if v["outcome"] != "running" {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the job did not end: {v}\nreplica: {}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let survivor = workers[1 - killed]
        .as_ref()
        .map(|w| w.log())
        .unwrap_or_default();
    assert_eq!(
        report["outcome"], "completed",
        "{report}\nsurvivor: {survivor}"
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), hosts.len(), "{report}");
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "ok" && r["changed"] == true),
        "{report}"
    );
    // The in-flight host was read again, not restarted again.
    let read_again = results
        .iter()
        .find(|r| r["hostname"] == host.as_str())
        .unwrap();
    assert!(
        read_again["msg"]
            .as_str()
            .is_some_and(|m| m.contains("not restarted again")),
        "{host} was not read again after the kill: {report}\nsurvivor: {survivor}"
    );
    for (h, n) in slow_starts(&lab, &hosts) {
        assert_eq!(n, "1", "{h} started drover-slow {n} times: {report}");
    }
    if let Some(pid) = stopped {
        let asleep = workers[killed].as_ref().map(|w| w.log().len()).unwrap_or(0);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        // Awake, past its TTL: whatever it had queued, it changes nothing.
        let log = loop {
            let log = workers[killed]
                .as_ref()
                .map(|w| w.log())
                .unwrap_or_default();
            let woke = log.get(asleep..).unwrap_or("").to_string();
            if woke.contains("no longer served")
                || woke.contains("dropped")
                || woke.contains("lease lost")
            {
                break woke;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(150),
                "the woken worker never noticed its leases were stale:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for (h, n) in slow_starts(&lab, &hosts) {
            assert_eq!(
                n, "1",
                "{h} started drover-slow again after the worker woke:\n{log}"
            );
        }
        assert!(!log.contains("panicked"), "{log}");
    }
    remove_slow(&lab, &hosts);
}

/// Tests whose jobs change lab hosts through workers, one at a time: each
/// test's NATS deployment has a lease epoch of its own, and a host's fence
/// refuses an older deployment's changes once a newer one's worker changed
/// it (as it must: see `remote::fence`). Taken after `ONE_AT_A_TIME`,
/// before `SLOW_UNIT`.
pub(crate) static HOST_FENCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test at a time uses `drover-slow` (the same unit and counter on
/// every host).
static SLOW_UNIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// On every lab host, `drover-slow`: 3 s to (re)start, each start counted
/// in /run/drover-slow.count (empty now). The hosts' names.
fn install_slow(lab: &Lab) -> Vec<String> {
    let unit = "[Unit]\nDescription=drover lab: slow to restart\n[Service]\nExecStartPre=/bin/sh -c 'echo x >> /run/drover-slow.count; [ -e /run/drover-slow.fast ] || sleep 3'\nExecStart=/bin/sleep infinity\n";
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(unit)
    };
    let hosts: Vec<String> = (0..lab.len()).map(|i| lab.host(i).to_string()).collect();
    std::thread::scope(|s| {
        for h in &hosts {
            let b64 = &b64;
            s.spawn(move || {
                lab.ssh(h, &format!("echo {b64} | base64 -d > /run/systemd/system/drover-slow.service && touch /run/drover-slow.fast && systemctl daemon-reload && systemctl restart drover-slow && rm -f /run/drover-slow.fast /run/drover-slow.count"));
            });
        }
    });
    hosts
}

/// How many times `drover-slow` started on each host since installed.
fn slow_starts(lab: &Lab, hosts: &[String]) -> Vec<(String, String)> {
    hosts
        .iter()
        .map(|h| {
            let n = lab.ssh(h, "cat /run/drover-slow.count 2>/dev/null | wc -l");
            (h.clone(), n.trim().to_string())
        })
        .collect()
}

fn remove_slow(lab: &Lab, hosts: &[String]) {
    std::thread::scope(|s| {
        for h in hosts {
            s.spawn(move || {
                lab.ssh(h, "systemctl stop drover-slow; rm -f /run/systemd/system/drover-slow.service /run/drover-slow.count; systemctl daemon-reload");
            });
        }
    });
}

/// One of three NATS servers killed (SIGKILL) mid-job, the one the
/// replica and the worker were connected to among others: both fail over
/// to the other two, the job completes with every host restarted once,
/// and a replica started afterwards reads the whole job from the R3
/// stream: no acked result was lost.
#[tokio::test]
async fn a_nats_server_killed_mid_job_loses_no_result() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nc) = cluster(dir.path()) else {
        return;
    };
    let _slow = SLOW_UNIT.lock().await;
    let hosts = install_slow(&lab);
    let keys = Keys::make(dir.path(), lab.host(0));
    let slow = "name: slow\nsteps:\n  - id: roll\n    target: _all\n    serial: 2\n    service: { name: drover-slow, state: restarted }\n";
    let urls = nc.hub_urls();
    let _w = Worker::start(dir.path(), "a", &urls, &lab.inventory, &[]);
    let replica = |name: &str, urls: &str| {
        let jobs = dir.path().join(format!("jobs-{name}"));
        let extra = [
            "--nats",
            urls,
            "--nats-replicas",
            "3",
            "--read-timeout",
            "3s",
            "--jobs-dir",
            jobs.to_str().unwrap(),
        ];
        serve_args(
            dir.path(),
            &books_and_args(dir.path(), &lab, &keys, &[("slow", slow)], &extra),
            name,
        )
    };
    let r1 = replica("r1", &urls);
    until_all_read(&r1, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let (st, _, started) = call(
        Method::POST,
        &r1.url("/runbook/slow?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    let job = |s: &Server| {
        let url = s.url(&format!("/job/{id}"));
        let key = keys.read.clone();
        async move { call(Method::GET, &url, Some(&key)).await }
    };
    // Mid-job: the first batch's results are in.
    let t0 = Instant::now();
    loop {
        let (_, _, v) = job(&r1).await;
        if v["results"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no result: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nc.nodes[0].kill();
    // The longest wait between two results from the kill on (printed: a
    // batch of this unit takes 3 s without any failure).
    let (killed, mut seen, mut last, mut longest) = (Instant::now(), 0, Instant::now(), 0.0f64);
    let report = loop {
        let (_, _, v) = job(&r1).await;
        let now = v["results"].as_array().map_or(0, Vec::len);
        if now > seen {
            longest = longest.max(last.elapsed().as_secs_f64());
            (seen, last) = (now, Instant::now());
        }
        if v["outcome"] != "running" {
            eprintln!(
                "a NATS server killed mid-job: the longest wait between two results after it {longest:.1} s (a batch takes 3 s); the job ended {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            );
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the job did not end: {v}\nreplica: {}",
            r1.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        report["outcome"],
        "completed",
        "{report}\nreplica: {}",
        r1.log()
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), hosts.len(), "{report}");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{report}");
    for (h, n) in slow_starts(&lab, &hosts) {
        assert_eq!(n, "1", "{h} started drover-slow {n} times: {report}");
    }
    // A replica that was not there reads the whole job from the stream.
    let left = format!("{},{}", nc.nodes[1].url(), nc.nodes[2].url());
    let r2 = replica("r2", &left);
    let t1 = Instant::now();
    loop {
        let (st, _, v) = job(&r2).await;
        if st == 200 && v == report {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the stream lost part of the job: {st} {v}\nwanted {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    remove_slow(&lab, &hosts);
}

/// Server-sent events of `url` from after `last` (Last-Event-ID): (id,
/// event, data) of each, until `done`, or until `results` result events
/// have come (then the connection is dropped).
async fn sse(
    url: &str,
    key: &str,
    last: Option<&str>,
    results: Option<usize>,
) -> (u16, Vec<(String, String, Value)>) {
    use futures_util::StreamExt;
    let mut req = reqwest::Client::new().get(url).bearer_auth(key);
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (String::new(), String::new(), String::new());
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = l.strip_prefix("event: ") {
                    ev = v.to_string();
                } else if let Some(v) = l.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if ev.is_empty() {
                continue;
            }
            let done = ev == "done";
            out.push((id, ev, serde_json::from_str(&data).unwrap()));
            let enough = results.is_some_and(|n| out.len() >= n);
            if done || enough {
                return (status, out);
            }
        }
    }
    (status, out)
}

/// Any replica shows any job: a job coordinated by one replica is listed
/// and read on another from the jobs' stream, and an event stream of it
/// served by a third replica that is killed (SIGKILL) mid-job resumes on
/// another with Last-Event-ID: every result exactly once, in order, and
/// the report the same on every replica.
#[tokio::test]
async fn any_replica_shows_any_job_and_an_event_stream_resumes_on_another() {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let roll = "name: roll\nsteps:\n  - id: web\n    target: _all\n    serial: 1\n    service: { name: demo-web, state: restarted }\n  - id: worker\n    target: role:worker\n    needs: [web]\n    serial: 1\n    service: { name: demo-worker, state: restarted }\n";
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let urls = n.url();
    let replica = |name: &str| {
        replica_named(
            dir.path(),
            &lab,
            &keys,
            &[("roll", roll)],
            &urls,
            name,
            &["--rate-limit", "3"],
        )
    };
    let (r1, mut r2, r3) = (replica("r1"), replica("r2"), replica("r3"));
    until_all_read(&r1, &keys.read, lab.len(), Duration::from_secs(30)).await;
    // A message on the jobs' subjects that is not drover's: dropped and
    // logged by every replica, which go on.
    let client = async_nats::connect(n.url()).await.unwrap();
    client
        .publish("drover.jobs.junk", "not a job message".into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let (st, _, started) = call(
        Method::POST,
        &r1.url("/runbook/roll?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    let shown = |s: &Server| {
        let url = s.url(&format!("/job/{id}"));
        let key = keys.read.clone();
        async move {
            let t0 = Instant::now();
            loop {
                let (st, _, v) = call(Method::GET, &url, Some(&key)).await;
                if st == 200 {
                    return v;
                }
                assert_eq!(st, 404, "{v}");
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the job is not shown"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    shown(&r2).await;
    // Two results from r2, which then dies.
    let events = format!("/job/{id}/events");
    let (st, first) = sse(&r2.url(&events), &keys.read, None, Some(2)).await;
    assert_eq!(st, 200);
    let _ = r2.child.kill();
    let _ = r2.child.wait();
    let last = first.last().unwrap().0.clone();
    // The rest from r3.
    shown(&r3).await;
    let (st, _) = sse(&r3.url(&events), &keys.read, Some("x"), None).await;
    assert_eq!(st, 400);
    let (st, rest) = sse(&r3.url(&events), &keys.read, Some(&last), None).await;
    assert_eq!(st, 200);
    assert_eq!(rest.last().map(|e| e.1.as_str()), Some("done"), "{rest:?}");

    let on_r1 = loop {
        let v = shown(&r1).await;
        if v["outcome"] != "running" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let results = on_r1["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), lab.len() + lab.len() / 2, "{on_r1}");
    let seen: Vec<(String, Value)> = first
        .iter()
        .chain(rest.iter().filter(|e| e.1 == "result"))
        .map(|(i, _, d)| (i.clone(), d.clone()))
        .collect();
    let ids: Vec<String> = seen.iter().map(|(i, _)| i.clone()).collect();
    let expected: Vec<String> = (1..=results.len()).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "a gap or a repeat across the two replicas");
    let data: Vec<Value> = seen.into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, results, "the events are not the report's results");
    // The same job on every replica still up, and listed.
    assert_eq!(shown(&r3).await, on_r1);
    let (st, _, list) = call(Method::GET, &r3.url("/job"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{list}");
    assert!(list.to_string().contains(&id), "{list}");
    // The rate limit (3 changes a minute per key) holds across the
    // replicas: the job was one, two more here and there, the fourth is
    // refused wherever it is asked.
    let stop = format!("/node/{}/service/demo-idle/stop?wait=30s", lab.host(0));
    for (s, want) in [(&r3, 200), (&r1, 200), (&r3, 429)] {
        let (st, _, b) = call(Method::POST, &s.url(&stop), Some(&keys.operate)).await;
        assert_eq!(st, want, "{b}");
    }
    let log = r3.log();
    assert!(log.contains("a malformed job message: dropped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[path = "cluster_takeover.rs"]
mod takeover;

#[path = "cluster_scenarios.rs"]
mod scenarios;

#[path = "cluster_permissions.rs"]
mod permissions;

#[path = "cluster_sessions.rs"]
mod sessions;
