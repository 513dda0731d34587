//! Safety across jobs and cleanup on real hosts: two runbooks with
//! `max_unavailable: 1` over the lab's three `role: web` hosts never have
//! two of them down at once (a sampler on each host reads the units'
//! states and the drain flag throughout, and the units also write when
//! they go down and come up, so no overlap can be missed);
//! `require_healthy` stops a batch while another host of its group is
//! down, and says so; a cancel (server) and a SIGTERM (`drover apply`) in
//! the middle of a drain-restart leave no host drained.
//!
//! The units are this file's own (`drover-safety-a`, `-b`), installed for
//! the test and removed after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::common::{lab, Lab};
use crate::server::{self, call};

/// Where the units write their transitions on each host.
const LOG: &str = "/var/tmp/drover-safety.log";

/// A unit that takes a second to start and writes `UNIT down NS` when it
/// stops and `UNIT up NS` once started, in nanoseconds of the clock the
/// lab's hosts share.
fn unit_file(name: &str) -> String {
    format!(
        "[Service]\nExecStartPre=/bin/sleep 1\nExecStart=/bin/sleep infinity\nExecStartPost=/bin/sh -c 'echo {name} up $(date +%%s%%N) >> {LOG}'\nExecStop=/bin/sh -c 'echo {name} down $(date +%%s%%N) >> {LOG}'\n"
    )
}

/// The lab's `role: web` hosts: one group of three under `labels.role`.
fn web_hosts(lab: &Lab) -> Vec<String> {
    let inv = std::fs::read_to_string(&lab.inventory).unwrap();
    let mut out = Vec::new();
    let mut current = None;
    for line in inv.lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("    ") && t.ends_with(':') {
            current = Some(t.trim_end_matches(':').to_string());
        }
        if t.starts_with("labels:") && t.contains("role: web") {
            out.extend(current.clone());
        }
    }
    assert_eq!(out.len(), 3, "the lab has three web hosts: {out:?}");
    out
}

/// The fixture units installed, started and logged afresh on `hosts`;
/// removed again when the guard drops.
struct Fixture<'a> {
    lab: &'a Lab,
    hosts: Vec<String>,
}

const UNITS: [&str; 2] = ["drover-safety-a", "drover-safety-b"];

impl<'a> Fixture<'a> {
    fn install(lab: &'a Lab, hosts: &[String]) -> Fixture<'a> {
        let f = Fixture {
            lab,
            hosts: hosts.to_vec(),
        };
        for h in hosts {
            let mut cmd = String::new();
            for u in UNITS {
                cmd.push_str(&format!(
                    "printf '%s' {} > /run/systemd/system/{u}.service; ",
                    shell_quote(&unit_file(u))
                ));
            }
            cmd.push_str(&format!(
                "systemctl daemon-reload && systemctl start {} && rm -f {LOG}",
                UNITS.join(" ")
            ));
            lab.ssh(h, &cmd);
        }
        f
    }

    /// Each host's down intervals (either unit), in nanoseconds.
    fn down_intervals(&self) -> BTreeMap<String, Vec<(u128, u128)>> {
        let mut out = BTreeMap::new();
        for h in &self.hosts {
            let text = self.lab.ssh(h, &format!("cat {LOG} 2>/dev/null || true"));
            let mut since: BTreeMap<&str, u128> = BTreeMap::new();
            let mut spans = Vec::new();
            for line in text.lines() {
                let mut it = line.split_whitespace();
                let (Some(unit), Some(what), Some(ns)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let ns: u128 = ns.parse().unwrap();
                match what {
                    "down" => {
                        since.insert(unit, ns);
                    }
                    "up" => {
                        // The first start after installing has no down.
                        if let Some(d) = since.remove(unit) {
                            spans.push((d, ns));
                        }
                    }
                    other => panic!("{h}: unexpected line {other}"),
                }
            }
            assert!(
                since.is_empty(),
                "{h}: a unit went down and never came up: {text}"
            );
            out.insert(h.clone(), spans);
        }
        out
    }
}

impl Drop for Fixture<'_> {
    fn drop(&mut self) {
        for h in &self.hosts {
            let units: Vec<String> = UNITS.iter().map(|u| format!("{u}.service")).collect();
            let _ = self.lab.ssh_output(
                h,
                &format!(
                    "systemctl stop {u}; rm -f {files}; systemctl daemon-reload; systemctl reset-failed; rm -f {LOG}; true",
                    u = UNITS.join(" "),
                    files = units
                        .iter()
                        .map(|u| format!("/run/systemd/system/{u}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            );
        }
    }
}

/// Where each host's sampler writes what it saw.
const SAMPLES: &str = "/var/tmp/drover-safety.samples";

/// On each host, a transient unit that reads the fixture units' states
/// and the drain flag about every 50 ms for as long as it lives: what an
/// observer outside drover sees, independent of the units' own log.
/// Stopped and removed when the guard drops.
struct Sampler<'a> {
    lab: &'a Lab,
    hosts: Vec<String>,
}

impl<'a> Sampler<'a> {
    fn start(lab: &'a Lab, hosts: &[String]) -> Sampler<'a> {
        let script = format!(
            "while :; do s=$(systemctl is-active {units} | tr '\\n' ' '); d=-; grep -qs drover-safety /var/lib/drover/maintenance.json && d=drained; echo \"$(date +%s%N) $s$d\"; sleep 0.05; done >> {SAMPLES}",
            units = UNITS.join(" ")
        );
        for h in hosts {
            lab.ssh(
                h,
                &format!(
                    "rm -f {SAMPLES}; systemd-run --quiet --collect --unit=drover-safety-sampler sh -c {}",
                    shell_quote(&script)
                ),
            );
        }
        Sampler {
            lab,
            hosts: hosts.to_vec(),
        }
    }

    /// Per host, the spans it was seen unavailable (a unit not active,
    /// or drained): from the first such sample to the last of each run of
    /// them, so a span is one the host really was in (no overlap is
    /// invented by the samplers' phases). Also how many samples there were.
    fn down_spans(&self) -> (BTreeMap<String, Vec<(u128, u128)>>, usize) {
        let mut out = BTreeMap::new();
        let mut samples = 0;
        for h in &self.hosts {
            let text = self.lab.ssh(h, &format!("cat {SAMPLES}"));
            let mut spans: Vec<(u128, u128)> = Vec::new();
            let mut open: Option<(u128, u128)> = None;
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let Some((ns, states)) = words.split_first() else {
                    continue;
                };
                let Ok(ns) = ns.parse::<u128>() else { continue };
                samples += 1;
                let down = states.iter().any(|w| *w != "active" && *w != "-");
                open = match (open, down) {
                    (None, true) => Some((ns, ns)),
                    (Some((a, _)), true) => Some((a, ns)),
                    (Some(span), false) => {
                        spans.push(span);
                        None
                    }
                    (None, false) => None,
                };
            }
            spans.extend(open);
            out.insert(h.clone(), spans);
        }
        (out, samples)
    }
}

impl Drop for Sampler<'_> {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = self.lab.ssh_output(
                h,
                &format!("systemctl stop drover-safety-sampler; rm -f {SAMPLES}; true"),
            );
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A runbook restarting `unit` on the web hosts, all at once but for the
/// group limit.
fn roll(name: &str, unit: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - id: roll\n    target: role:web\n    serial: 3\n    group_by: labels.role\n    max_unavailable: 1\n    service: {{ name: {unit}, state: restarted }}\n    wait: {{ active: true, timeout: 60s }}\n"
    )
}

/// A drain-restart of `unit` over the web hosts, one at a time.
fn drain_roll(name: &str, unit: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - id: web\n    target: role:web\n    use: drain-restart\n    with: {{ unit: {unit}, reason: test, timeout: 60s }}\n    serial: 1\n    group_by: labels.role\n    max_unavailable: 1\n"
    )
}

fn books(dir: &Path, files: &[(&str, String)]) {
    let books = dir.join("books");
    std::fs::create_dir_all(books.join("modules")).unwrap();
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/drain-restart.yml");
    std::fs::copy(module, books.join("modules/drain-restart.yml")).unwrap();
    for (name, text) in files {
        std::fs::write(books.join(format!("{name}.yml")), text).unwrap();
    }
}

/// No two hosts' down intervals overlap.
fn assert_one_down_at_a_time(spans: &BTreeMap<String, Vec<(u128, u128)>>) {
    let all: Vec<(&str, u128, u128)> = spans
        .iter()
        .flat_map(|(h, v)| v.iter().map(move |(a, b)| (h.as_str(), *a, *b)))
        .collect();
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            if x.0 != y.0 {
                assert!(
                    x.2 < y.1 || y.2 < x.1,
                    "two hosts down at once: {x:?} and {y:?} (all: {spans:?})"
                );
            }
        }
    }
}

#[tokio::test]
async fn two_runbooks_with_max_unavailable_one_never_take_two_hosts_of_a_group_down() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    let keys = server::Keys::make(dir.path(), &web[0]);
    books(
        dir.path(),
        &[
            ("roll-a", roll("roll-a", UNITS[0])),
            ("roll-b", drain_roll("roll-b", UNITS[1])),
        ],
    );
    let s = crate::serve::serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let sampler = Sampler::start(&lab, &web);
    let (url_a, url_b) = (
        s.url("/runbook/roll-a?wait=3m"),
        s.url("/runbook/roll-b?wait=3m"),
    );
    let (a, b) = tokio::join!(
        call(Method::POST, &url_a, Some(&keys.operate)),
        call(Method::POST, &url_b, Some(&keys.operate)),
    );
    for (st, _, report) in [&a, &b] {
        assert_eq!(*st, 200, "{report}");
        assert_eq!(report["outcome"], "completed", "{report}");
        for r in report["results"].as_array().unwrap() {
            assert_ne!(r["status"], "failed", "{report}");
        }
    }
    // Their batches took turns, and the reports say who waited and why.
    let waits: Vec<&str> = [&a.2, &b.2]
        .iter()
        .flat_map(|r| r["results"].as_array().unwrap())
        .filter_map(|r| r["msg"].as_str())
        .filter(|m| m.starts_with("waited "))
        .collect();
    assert!(!waits.is_empty(), "no batch waited: {} {}", a.2, b.2);
    for m in &waits {
        assert!(
            m.contains("for room in its group: group labels.role=web is full"),
            "{m}"
        );
    }
    // What the samplers saw while both ran: each host unavailable at
    // least once (so they were watching), never two at once.
    let (seen, samples) = sampler.down_spans();
    drop(sampler);
    assert!(samples > 3 * 20, "the samplers ran throughout: {samples}");
    for (h, v) in &seen {
        assert!(!v.is_empty(), "{h} was never seen down: {seen:?}");
    }
    assert_one_down_at_a_time(&seen);
    let spans = fixture.down_intervals();
    for (h, v) in &spans {
        assert_eq!(
            v.len(),
            2,
            "{h}: each runbook restarted its unit once: {spans:?}"
        );
    }
    assert_one_down_at_a_time(&spans);
}

#[tokio::test]
async fn require_healthy_stops_a_batch_while_another_host_of_its_group_is_down() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    let keys = server::Keys::make(dir.path(), &web[0]);
    let pb = format!(
        "name: careful\nsteps:\n  - id: roll\n    target: role:web\n    serial: 1\n    group_by: labels.role\n    max_unavailable: 1\n    require_healthy: true\n    service: {{ name: {}, state: restarted }}\n",
        UNITS[0]
    );
    books(dir.path(), &[("careful", pb)]);
    // The last web host is down: the first two batches may not start;
    // the last (that host itself, the others healthy) may.
    lab.ssh(&web[2], &format!("systemctl stop {}", UNITS[0]));
    let before: Vec<String> = web[..2]
        .iter()
        .map(|h| lab.invocation(h, UNITS[0]))
        .collect();
    let s = crate::serve::serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (st, _, report) = call(
        Method::POST,
        &s.url("/runbook/careful?wait=3s"),
        Some(&keys.operate),
    )
    .await;
    let report = match st {
        200 => report,
        202 => finished(&s, &keys, report["job_id"].as_str().unwrap()).await,
        _ => panic!("{st}: {report}"),
    };
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{report}");
    assert_eq!(results[2]["hostname"], web[2].as_str(), "{report}");
    assert_eq!(results[2]["status"], "ok", "{report}");
    for r in &results[..2] {
        assert_eq!(r["status"], "failed", "{report}");
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("require_healthy"), "{e}");
        assert!(e.contains(&web[2]), "names the host that is down: {e}");
        assert!(e.contains("did not start within 3s"), "{e}");
    }
    let after: Vec<String> = web[..2]
        .iter()
        .map(|h| lab.invocation(h, UNITS[0]))
        .collect();
    assert_eq!(before, after, "no batch started");
}

/// The job's report once it has ended.
async fn finished(s: &server::Server, keys: &server::Keys, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (st, _, view) =
            call(Method::GET, &s.url(&format!("/job/{id}")), Some(&keys.read)).await;
        assert_eq!(st, 200, "{view}");
        if view["outcome"] != "running" {
            return view;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `host` has `unit` drained (its maintenance flag is on).
fn wait_drained(lab: &Lab, host: &str, unit: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let flags = lab.ssh(
            host,
            "cat /var/lib/drover/maintenance.json 2>/dev/null || true",
        );
        if flags.contains(unit) {
            return;
        }
        assert!(Instant::now() < deadline, "{host} never drained {unit}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No web host is left with a flag on `unit`.
fn assert_none_drained(lab: &Lab, hosts: &[String], unit: &str) {
    for h in hosts {
        let flags = lab.ssh(
            h,
            "cat /var/lib/drover/maintenance.json 2>/dev/null || true",
        );
        assert!(!flags.contains(unit), "{h} left drained: {flags}");
    }
}

/// Which hosts the report shows drained, and that each of them was
/// undrained by the cleanup.
fn assert_drained_were_undrained(report: &Value) -> usize {
    let results = report["results"].as_array().unwrap();
    let of = |step: &str, h: &str| {
        results
            .iter()
            .find(|r| r["step"] == step && r["hostname"] == h)
            .unwrap_or_else(|| panic!("no {step} on {h}: {report}"))
    };
    let mut drained = 0;
    for r in results.iter().filter(|r| r["step"] == "web.drain") {
        let h = r["hostname"].as_str().unwrap();
        if r["status"] == "ok" {
            drained += 1;
            assert_eq!(of("web.undrain", h)["status"], "ok", "{h}: {report}");
        } else {
            assert_eq!(of("web.undrain", h)["status"], "skipped", "{h}: {report}");
        }
    }
    assert!(drained >= 1, "the stop came after a drain: {report}");
    assert!(drained < 3, "the stop came before the last drain: {report}");
    drained
}

#[tokio::test]
async fn a_cancel_in_the_middle_of_a_drain_restart_undrains_every_drained_host() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    let keys = server::Keys::make(dir.path(), &web[0]);
    books(
        dir.path(),
        &[
            ("drain", drain_roll("drain", UNITS[0])),
            ("other", roll("other", UNITS[1])),
        ],
    );
    let s = crate::serve::serve(&lab, dir.path(), &keys, &dir.path().join("jobs"));
    let (st, _, started) = call(
        Method::POST,
        &s.url("/runbook/drain?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    // The first host is drained and restarting (it takes a second).
    wait_drained(&lab, &web[0], UNITS[0]);
    // Its group is full: a job that cannot wait is refused, naming it.
    let (st, _, refused) = call(
        Method::POST,
        &s.url("/runbook/other?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 409, "{refused}");
    server::assert_error(st, &refused);
    let details = refused["details"].as_str().unwrap_or_default();
    assert!(details.contains(&format!("job {id} holds")), "{refused}");
    assert!(details.contains("max_unavailable"), "{refused}");
    let (st, _, b) = call(
        Method::POST,
        &s.url(&format!("/job/{id}/cancel")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 202, "{b}");
    let report = finished(&s, &keys, &id).await;
    assert_eq!(report["outcome"], "interrupted", "{report}");
    assert_drained_were_undrained(&report);
    assert_none_drained(&lab, &web, UNITS[0]);
}

#[test]
fn sigterm_in_the_middle_of_a_drain_restart_undrains_every_drained_host() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    books(dir.path(), &[("drain", drain_roll("drain", UNITS[1]))]);
    let child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(dir.path().join("books/drain.yml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_drained(&lab, &web[0], UNITS[1]);
    // SAFETY: signalling the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["outcome"], "interrupted", "{report}");
    assert_drained_were_undrained(&report);
    assert_none_drained(&lab, &web, UNITS[1]);
}

/// The `result` lines of a journal.
fn journal_results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "result")
        .collect()
}

fn find<'v>(results: &'v [Value], step: &str, h: &str) -> Option<&'v Value> {
    results
        .iter()
        .find(|r| r["step"] == step && r["hostname"] == h)
}

#[test]
fn a_resume_after_a_kill_mid_drain_restart_leaves_no_host_drained() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    books(dir.path(), &[("drain", drain_roll("drain", UNITS[0]))]);
    let pb = dir.path().join("books/drain.yml");
    let report = dir.path().join("drain.json");
    let journal = drover::engine::journal::Journal::beside(&report);
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["apply", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed outright once the first host's drain is on record, while its
    // restart (a second long) runs: no cleanup can run in that process.
    let deadline = Instant::now() + Duration::from_secs(60);
    while find(&journal_results(&journal), "web.drain", &web[0]).is_none() {
        assert!(
            Instant::now() < deadline,
            "no drain of {} journaled",
            web[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = journal_results(&journal);
    let mut drained = find(&killed, "web.drain", &web[0]).unwrap().clone();
    // A journal line is the report's result with its record type.
    drained.as_object_mut().unwrap().remove("type");
    assert_eq!(drained["status"], "ok", "{drained}");
    assert!(
        find(&killed, "web.undrain", &web[0]).is_none(),
        "the kill came before the undrain: {killed:?}"
    );
    wait_drained(&lab, &web[0], UNITS[0]);
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--resume")
        .arg(&journal)
        .output()
        .unwrap();
    let resumed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(resumed["outcome"], "completed", "{resumed}");
    let results = resumed["results"].as_array().unwrap();
    let of = |step: &str, h: &str| {
        find(results, step, h)
            .unwrap_or_else(|| panic!("no {step} on {h}: {resumed}"))
            .clone()
    };
    // The resume did not drain the first host again: its drain is the
    // killed run's result, carried over.
    assert_eq!(of("web.drain", &web[0]), drained, "{resumed}");
    for h in &web {
        assert_eq!(of("web.undrain", h)["status"], "ok", "{h}: {resumed}");
    }
    assert_none_drained(&lab, &web, UNITS[0]);
}

/// `unit` drained on `host` with `drover maintenance`, as another team's
/// work would leave it; undrained again when dropped.
struct Drained<'a> {
    lab: &'a Lab,
    host: String,
    unit: String,
}

impl<'a> Drained<'a> {
    fn on(lab: &'a Lab, host: &str, unit: &str) -> Drained<'a> {
        let d = Drained {
            lab,
            host: host.to_string(),
            unit: unit.to_string(),
        };
        d.maintenance(&["enable", unit, "--reason", "other work", "--target", host]);
        d
    }

    /// A flag drover itself leaves on `unit` of `host`, cleared on drop.
    fn left(lab: &'a Lab, host: &str, unit: &str) -> Drained<'a> {
        Drained {
            lab,
            host: host.to_string(),
            unit: unit.to_string(),
        }
    }

    fn maintenance(&self, args: &[&str]) -> std::process::Output {
        self.lab
            .drover()
            .arg("maintenance")
            .args(args)
            .arg("-i")
            .arg(&self.lab.inventory)
            .output()
            .unwrap()
    }
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        let _ = self.maintenance(&["disable", &self.unit, "--target", &self.host]);
    }
}

#[test]
fn a_drained_host_the_step_leaves_out_still_counts_against_its_group() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    let dir = tempfile::tempdir().unwrap();
    // The step works on two of the group's three hosts; the third is
    // drained: the group has no room left for max_unavailable 1.
    let pb = dir.path().join("two.yml");
    std::fs::write(
        &pb,
        format!(
            "name: two\nsteps:\n  - id: roll\n    target: [{}, {}]\n    serial: 1\n    group_by: labels.role\n    max_unavailable: 1\n    service: {{ name: {}, state: restarted }}\n",
            web[0], web[1], UNITS[0]
        ),
    )
    .unwrap();
    let apply = || {
        let out = lab
            .drover()
            .args(["apply", "--format", "json", "--wait-lock", "2s", "-i"])
            .arg(&lab.inventory)
            .arg(&pb)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr))
        });
        report
    };
    let before: Vec<String> = web[..2]
        .iter()
        .map(|h| lab.invocation(h, UNITS[0]))
        .collect();
    let drained = Drained::on(&lab, &web[2], UNITS[0]);
    let report = apply();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    for r in results {
        assert_eq!(r["status"], "failed", "{report}");
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("group labels.role=web is full"), "{e}");
        assert!(e.contains(&format!("{} is out of service", web[2])), "{e}");
        assert!(e.contains("did not start within 2s"), "{e}");
    }
    let after: Vec<String> = web[..2]
        .iter()
        .map(|h| lab.invocation(h, UNITS[0]))
        .collect();
    assert_eq!(before, after, "no batch started");
    // Undrained, the same run goes through.
    drop(drained);
    let report = apply();
    assert_eq!(report["outcome"], "completed", "{report}");
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["status"], "ok", "{report}");
    }
}

#[test]
fn an_abort_at_max_fail_still_undrains_the_hosts_that_were_drained() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let _fixture = Fixture::install(&lab, &web);
    // The unit cannot start on the middle host: its restart fails there.
    let dropin = format!("/run/systemd/system/{}.service.d", UNITS[0]);
    let _broken = lab.undo_on_drop(
        &web[1],
        &format!("rm -rf {dropin}; systemctl daemon-reload; systemctl reset-failed; true"),
    );
    lab.ssh(
        &web[1],
        &format!("mkdir -p {dropin} && printf '[Service]\\nExecStartPre=/bin/false\\n' > {dropin}/fail.conf && systemctl daemon-reload"),
    );
    let _kept = Drained::left(&lab, &web[1], UNITS[0]);
    let dir = tempfile::tempdir().unwrap();
    // No serial: every host is drained, then restarted; the failure
    // aborts the run (max_fail_percentage 0) before any undrain step.
    let pb = dir.path().join("abort.yml");
    std::fs::write(
        &pb,
        format!(
            "name: abort\nsteps:\n  - id: web\n    target: role:web\n    use: drain-restart\n    with: {{ unit: {}, reason: test, timeout: 20s }}\n    max_fail_percentage: 0\n",
            UNITS[0]
        ),
    )
    .unwrap();
    books(dir.path(), &[]);
    std::fs::rename(&pb, dir.path().join("books/abort.yml")).unwrap();
    let out = lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(dir.path().join("books/abort.yml"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["outcome"], "aborted", "{report}");
    let results = report["results"].as_array().unwrap();
    let of = |step: &str, h: &str| {
        find(results, step, h)
            .unwrap_or_else(|| panic!("no {step} on {h}: {report}"))
            .clone()
    };
    assert_eq!(of("web.restart", &web[1])["status"], "failed", "{report}");
    for h in [&web[0], &web[2]] {
        assert_eq!(of("web.drain", h)["status"], "ok", "{report}");
        assert_eq!(of("web.undrain", h)["status"], "ok", "{h}: {report}");
    }
    // The host that failed stays drained (its module's on_failure
    // decides what a failed host is left as); the others are not.
    assert_eq!(of("web.undrain", &web[1])["status"], "skipped", "{report}");
    assert_none_drained(&lab, &[web[0].clone(), web[2].clone()], UNITS[0]);
    let flags = lab.ssh(&web[1], "cat /var/lib/drover/maintenance.json");
    assert!(flags.contains(UNITS[0]), "{flags}");
}

#[test]
fn always_timeout_cuts_a_cleanup_that_hangs() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let web = web_hosts(&lab);
    let host = &web[0];
    let _fixture = Fixture::install(&lab, std::slice::from_ref(host));
    // A unit whose start never finishes: the cleanup that starts it hangs.
    let hang = "drover-safety-hang";
    let _hang = lab.undo_on_drop(
        host,
        &format!("systemctl stop {hang}; rm -f /run/systemd/system/{hang}.service; systemctl daemon-reload; true"),
    );
    lab.ssh(
        host,
        &format!("printf '[Service]\\nExecStartPre=/bin/sleep 300\\nExecStart=/bin/sleep infinity\\n' > /run/systemd/system/{hang}.service && systemctl daemon-reload"),
    );
    let _left = Drained::left(&lab, host, UNITS[0]);
    let dir = tempfile::tempdir().unwrap();
    books(
        dir.path(),
        &[(
            "stuck",
            format!("name: stuck\nsteps:\n  - id: s\n    target: {host}\n    use: stuck\n"),
        )],
    );
    std::fs::write(
        dir.path().join("books/modules/stuck.yml"),
        format!(
            "description: a cleanup that hangs\nsteps:\n  - id: drain\n    maintenance: {{ enable: true, unit: {u}, reason: test }}\nalways:\n  - id: hang\n    service: {{ name: {hang}, state: started }}\nalways_timeout: 2s\n",
            u = UNITS[0]
        ),
    )
    .unwrap();
    let out = lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(dir.path().join("books/stuck.yml"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(!out.status.success(), "{report}");
    let results = report["results"].as_array().unwrap();
    let drain = find(results, "s.drain", host).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(drain["status"], "ok", "{report}");
    // The cleanup ran and was cut at its own bound (2 s), not the step
    // timeout (10 m) nor the unit's 300 s start: the run ended.
    let hung = find(results, "s.hang", host).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(hung["status"], "failed", "{report}");
    let error = hung["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out after 2s"), "{error}");
    let ms = hung["duration_ms"].as_u64().unwrap_or(u64::MAX);
    assert!((2000..60_000).contains(&ms), "{ms} ms: {report}");
}
