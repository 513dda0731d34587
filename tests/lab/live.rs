//! The server's live snapshot against real systemd: a change made behind
//! drover's back (systemctl on the host) is seen through systemd's
//! signals within 2 s, in health, the node routes and the status page,
//! answered from memory (the answers say their age, and the server's
//! count of reads that had to read the hosts barely moves: other tests'
//! daemon-reloads on the host send a few reads there); a unit that
//! appears is
//! listed; a killed connection makes the host stale, then the watch
//! reconnects; the periodic full read heals what systemd does not signal.
//! Units of its own (`drover-live-*`), so other tests' units are never
//! touched.

use crate::common;
use crate::server;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{lab, Lab};
use reqwest::Method;
use serde_json::Value;
use server::{call, Keys, Server};

/// A unit file of this test's own, installed (and started) on `host`,
/// removed when the guard drops.
fn own_unit<'a>(lab: &'a Lab, host: &str, unit: &str) -> common::Undo<'a> {
    lab.ssh(
        host,
        &format!(
            "printf '[Unit]\\nDescription=drover live test\\n[Service]\\nExecStart=/bin/sleep infinity\\n' > /run/systemd/system/{unit} && systemctl daemon-reload && systemctl start {unit}"
        ),
    );
    lab.undo_on_drop(
        host,
        &format!(
            "systemctl stop {unit}; rm -f /run/systemd/system/{unit}; systemctl daemon-reload"
        ),
    )
}

/// A server over one lab host (its node), its runtime dir private so its
/// ssh processes can be found; `extra` flags appended.
fn serve(lab: &Lab, dir: &Path, host: &str, extra: &[&str]) -> (Server, Keys) {
    let inv = lab.inventory_with(dir, &format!("  {host}: {{}}\n"));
    let keys = Keys::make(dir, host);
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let jobs = dir.join("jobs");
    let mut args = vec![
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--node",
        host,
        "--jobs-dir",
        jobs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = Server::start_prepared("http", &args, &dir.join("stderr"), |cmd| {
        cmd.env("XDG_RUNTIME_DIR", &run)
            .env("RUST_LOG", "drover::engine::fleet=debug");
    });
    (s, keys)
}

/// A series' value in a scrape (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(s: &Server, key: &str) -> String {
    let (st, _, b) = call(Method::GET, &s.url("/metrics"), Some(key)).await;
    assert_eq!(st, 200, "{b}");
    b.as_str().unwrap_or_default().to_string()
}

const FROM_SNAPSHOT: &str = "drover_live_reads_total{source=\"snapshot\"}";
const FROM_HOSTS: &str = "drover_live_reads_total{source=\"hosts\"}";

/// Poll `url` until `done` holds for its (status, body), within `limit`;
/// the time it took, and whether that answer came from the snapshot
/// (it says how old it is).
async fn until(
    url: &str,
    key: &str,
    limit: Duration,
    done: impl Fn(u16, &Value, Option<f64>) -> bool,
) -> Result<(Duration, Option<f64>), (u16, Value)> {
    let t0 = Instant::now();
    loop {
        let (st, h, b) = call(Method::GET, url, Some(key)).await;
        let age = live_age(&h);
        if done(st, &b, age) {
            return Ok((t0.elapsed(), age));
        }
        if t0.elapsed() > limit {
            return Err((st, b));
        }
        // Polling, as the load balancer does: the wait is for the next
        // poll, not for the state.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the server answers `url` from its snapshot (its first
/// answers read the host while the watch starts).
async fn warm(s: &Server, key: &str, url: &str) {
    let before = metric(&scrape(s, key).await, FROM_SNAPSHOT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        call(Method::GET, url, Some(key)).await;
        if metric(&scrape(s, key).await, FROM_SNAPSHOT) > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never answered from the snapshot: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The age an answer from the snapshot says it has (None: read from the
/// host).
fn live_age(h: &reqwest::header::HeaderMap) -> Option<f64> {
    h.get("x-drover-live-age")?.to_str().ok()?.parse().ok()
}

fn status_of(b: &Value, unit: &str) -> String {
    b[0]["units"][unit]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The status the status page's host page shows for `unit` (its unit
/// table row's `data-status`; empty when the row is missing).
async fn page_status(url: &str, cookie: &str, unit: &str) -> String {
    let r = server::client()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    let html = r.text().await.unwrap();
    let row = format!("data-unit=\"{unit}\" data-status=\"");
    html.split_once(&row)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(st, _)| st.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_unit_stopped_behind_drovers_back_shows_within_2s_from_the_snapshot() {
    let Some(lab) = lab() else { return };
    let host = lab.host(lab.len() - 1).to_string();
    let unit = "drover-live-stop.service";
    let _undo = own_unit(&lab, &host, unit);
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path(), &host, &[]);
    let health = s.url("/v1/agent/health/service/name/drover-live-stop");
    let node = s.url(&format!("/node/{host}/service/{unit}"));
    warm(&s, &keys.read, &health).await;
    warm(&s, &keys.read, &node).await;
    let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    let (_, _, b) = call(Method::GET, &node, Some(&keys.read)).await;
    assert_eq!(status_of(&b, unit), "RUNNING", "{b}");
    let cookie = server::login(&server::client(), &s.url("/login"), &keys.read).await;
    let page = s.url(&format!("/page/host/{host}"));
    assert_eq!(page_status(&page, &cookie, unit).await, "RUNNING");

    let stopped = Instant::now();
    lab.ssh(&host, &format!("systemctl stop {unit}"));
    let (t, age) = until(&health, &keys.read, Duration::from_secs(2), |st, b, age| {
        // Shown by the snapshot (a poll or two while systemd's stop job
        // is queued and its type unread reads the host).
        st == 503 && b[0]["AggregatedStatus"] == "critical" && age.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("health did not turn critical within 2 s: {e:?}"));
    // The answer that showed it came from the snapshot, which says how
    // old it is: within the freshness bound.
    let age = age.unwrap_or_default();
    assert!((0.0..=5.0).contains(&age), "{age}");
    // The node route shows it too (from the snapshot, or from the host if
    // a busy machine let the host's freshness lapse: either way stopped).
    let (_, _, b) = call(Method::GET, &node, Some(&keys.read)).await;
    assert_eq!(status_of(&b, unit), "STOPPED", "{b}");
    assert_eq!(
        b[0]["units"][unit]["uptime"],
        Value::Null,
        "a stopped unit has no uptime: {b}"
    );
    // While systemd's stop job was queued and its type not read yet (is
    // the unit stopping or restarting?) polls read the host: how many
    // depends on how long the job waited, on a loaded machine many. Once
    // the stop is in, the polls are answered from the snapshot: of 20,
    // at most 2 read the host (a freshness lapse on a loaded machine).
    let text = scrape(&s, &keys.read).await;
    assert!(metric(&text, "drover_live_signals_total") > 0.0, "{text}");
    // The status page's host page too, within 2 s of the stop.
    loop {
        let st = page_status(&page, &cookie, unit).await;
        if st == "STOPPED" {
            break;
        }
        assert!(
            stopped.elapsed() <= Duration::from_secs(2),
            "the page still says {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the stop is in, polls are answered from the snapshot: in a
    // window of 20 polls at most 2 read the host. A daemon-reload on the
    // host (other tests reload it often) makes the entry answer nothing
    // until the read after it is in, so up to 5 windows are tried; with
    // no snapshot every poll of every window reads the host.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let text = scrape(&s, &keys.read).await;
        let hosts0 = metric(&text, FROM_HOSTS);
        for _ in 0..20 {
            let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
            assert_eq!(st, 503, "{b}");
        }
        let text = scrape(&s, &keys.read).await;
        seen.push(metric(&text, FROM_HOSTS) - hosts0);
        if seen.last().is_some_and(|&n| n <= 2.0) {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|&n| n <= 2.0),
        "host reads per window of 20 polls: {seen:?}"
    );
    eprintln!("stop seen after {t:?}");

    // And started again behind its back: passing again.
    lab.ssh(&host, &format!("systemctl start {unit}"));
    until(&health, &keys.read, Duration::from_secs(2), |st, _, _| {
        st == 200
    })
    .await
    .unwrap_or_else(|e| panic!("health did not pass again within 2 s: {e:?}"));
}

#[tokio::test]
async fn a_unit_that_appears_is_listed_and_one_collected_is_not() {
    let Some(lab) = lab() else { return };
    let host = lab.host(lab.len() - 1).to_string();
    let unit = "drover-live-new.service";
    let _undo = lab.undo_on_drop(&host, &format!("systemctl stop {unit} 2>/dev/null; true"));
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path(), &host, &[]);
    let list = s.url(&format!("/node/{host}/service"));
    warm(&s, &keys.read, &list).await;
    let (_, _, b) = call(Method::GET, &list, Some(&keys.read)).await;
    assert!(b[0]["units"].get(unit).is_none(), "{b}");

    // A transient unit: systemd announces it with UnitNew, no reload.
    // Each change is shown by the snapshot (the answer says its age)
    // within 2 s; polls meanwhile may read the host while another test's
    // daemon-reload on it is being read in.
    lab.ssh(
        &host,
        &format!("systemd-run -q --unit={unit} /bin/sleep infinity"),
    );
    until(&list, &keys.read, Duration::from_secs(2), |_, b, age| {
        status_of(b, unit) == "RUNNING" && age.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("the new unit was not listed within 2 s: {e:?}"));
    // Stopped, a transient unit is collected (UnitRemoved): unlisted.
    lab.ssh(&host, &format!("systemctl stop {unit}"));
    until(&list, &keys.read, Duration::from_secs(2), |_, b, age| {
        b[0]["units"].is_object() && b[0]["units"].get(unit).is_none() && age.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("the collected unit stayed listed: {e:?}\nlog: {}", s.log()));
}

#[tokio::test]
async fn a_unit_that_is_not_there_is_read_from_the_host_without_a_read_loop() {
    let Some(lab) = lab() else { return };
    let host = lab.host(lab.len() - 1).to_string();
    let _unit = own_unit(&lab, &host, "drover-live-known.service");
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path(), &host, &[]);
    let known = s.url("/v1/agent/health/service/name/drover-live-known");
    let missing = s.url("/v1/agent/health/service/name/drover-live-nowhere");
    warm(&s, &keys.read, &known).await;
    // "No such unit" is never answered from the snapshot (a unit file
    // written and started since may be running): each poll reads the host.
    let hosts0 = metric(&scrape(&s, &keys.read).await, FROM_HOSTS);
    for _ in 0..3 {
        let (st, h, b) = call(Method::GET, &missing, Some(&keys.read)).await;
        assert_eq!(st, 404, "{b}");
        assert_eq!(live_age(&h), None, "answered from the snapshot: {b}");
    }
    let text = scrape(&s, &keys.read).await;
    assert_eq!(metric(&text, FROM_HOSTS) - hosts0, 3.0, "{text}");
    // Reading a unit that is not there loads it for a moment, and systemd
    // signals that: those signals must not ask for another read, and that
    // one for another. Over a second of polls of a known unit, a bounded
    // number of signals: a loop applied 4,182 in a second; alone this
    // host sends under 10, and other tests' daemon-reloads on it up to
    // a few hundred.
    let signals0 = metric(&text, "drover_live_signals_total");
    for _ in 0..20 {
        let (st, _, b) = call(Method::GET, &known, Some(&keys.read)).await;
        assert_eq!(st, 200, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = scrape(&s, &keys.read).await;
    let signals = metric(&text, "drover_live_signals_total") - signals0;
    assert!(signals <= 1500.0, "{signals} signals in a second: {text}");
}

#[tokio::test]
async fn a_killed_connection_makes_the_host_stale_and_the_watch_comes_back() {
    let Some(lab) = lab() else { return };
    let host = lab.host(lab.len() - 1).to_string();
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path(), &host, &[]);
    let health = s.url("/v1/agent/health/service/name/demo-web");
    warm(&s, &keys.read, &health).await;
    let fresh = "drover_live_hosts{state=\"fresh\"}";
    assert_eq!(metric(&scrape(&s, &keys.read).await, fresh), 1.0);

    // The server's own ssh processes (its private runtime dir names them).
    let run = dir.path().join("run").display().to_string();
    let pids = common::ssh_pids_mentioning(&run);
    assert!(!pids.is_empty(), "no ssh process of the server found");
    for p in pids {
        // SAFETY: kill(2) on an ssh process this test's server started.
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&s, &keys.read).await;
        if metric(&text, "drover_live_hosts{state=\"stale\"}") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "never stale: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reads go on meanwhile (from the host), and the watch reconnects.
    let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
    assert!(st == 200 || st == 503, "{st} {b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&s, &keys.read).await;
        if metric(&text, fresh) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "never fresh again: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warm(&s, &keys.read, &health).await;
}

#[tokio::test]
async fn the_periodic_full_read_heals_what_systemd_does_not_signal() {
    let Some(lab) = lab() else { return };
    // Maintenance flags are the host's state file: shared with other
    // tests, so under the lab's lock, and only when none is set.
    let _l = lab.lock();
    let host = lab.host(lab.len() - 1).to_string();
    let unit = "drover-live-heal.service";
    let _unit = own_unit(&lab, &host, unit);
    let present = lab.ssh(
        &host,
        "test -e /var/lib/drover/maintenance.json && echo yes || echo no",
    );
    if present.trim() == "yes" {
        eprintln!("TEST SKIPPED: {host} has maintenance flags set");
        return;
    }
    let _flags = lab.undo_on_drop(&host, "rm -f /var/lib/drover/maintenance.json");
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve(&lab, dir.path(), &host, &["--live-heal", "2s"]);
    let health = s.url("/v1/agent/health/service/name/drover-live-heal");
    warm(&s, &keys.read, &health).await;
    let (st, _, b) = call(Method::GET, &health, Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");

    // A flag written by hand: no signal says so; the next full read does.
    lab.ssh(
        &host,
        &format!(
            "mkdir -p /var/lib/drover && printf '%s' '{{\"version\":1,\"units\":{{\"{unit}\":{{\"reason\":\"by hand\",\"since\":\"2026-01-01T00:00:00Z\"}}}}}}' > /var/lib/drover/maintenance.json"
        ),
    );
    let flagged = |st: u16, b: &Value| {
        st == 503
            && b[0]["Checks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["Notes"] == "by hand"))
    };
    // Shown by the snapshot (it says how old it is): a poll that read
    // the host (while another test's daemon-reload made the entry not
    // fresh) shows the flag too, but says nothing of the heal.
    let (t, _) = until(
        &health,
        &keys.read,
        Duration::from_secs(10),
        |st, b, age| flagged(st, b) && age.is_some(),
    )
    .await
    .unwrap_or_else(|e| panic!("the heal never showed the flag: {e:?}"));
    // Within a heal interval (2 s) and the answer's freshness (5 s).
    assert!(t <= Duration::from_secs(8), "{t:?}; log: {}", s.log());
}
