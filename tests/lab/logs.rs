//! Unit logs against the lab's real journals: `drover logs` over ssh and
//! on a `transport: local` host, `apply --failure-logs` on a restart that
//! really fails, hostile output (controls, bytes that are not UTF-8, 10 MB
//! of lines) bounded and escaped, and osapi's log route over real HTTP.
//!
//! The units that write known lines are transient (`systemd-run --wait`),
//! and each test asks journald to take in everything written so far
//! (`journalctl --sync`) before reading: journald reads a unit's output
//! asynchronously, and a unit that ended may still have lines on the way.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common;
use crate::markdown;

use common::{lab, run, Lab};
use serde_json::Value;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unit name no other test (or run) uses.
pub(crate) fn unit_name(tag: &str) -> String {
    format!(
        "drover-logs-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `s` as one word of a POSIX shell.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run `script` as the transient service `unit` on `host`, wait for it to
/// end (`--wait`), then for journald to have taken in all it wrote.
pub(crate) fn transient(lab: &Lab, host: &str, unit: &str, props: &str, script: &str) {
    lab.ssh(
        host,
        &format!(
            "systemd-run --quiet --wait --collect --unit={unit} {props} sh -c {} >/dev/null; journalctl --sync",
            sq(script)
        ),
    );
}

/// Three known lines, the second at priority err (`<3>`: journald's
/// syslog prefix on a unit's output).
pub(crate) const KNOWN: &str =
    "echo drover-known-first; echo '<3>drover-known-error'; echo drover-known-last";

/// `drover logs ARGS --format json -i INV`: exit code and the JSON.
fn logs_json(lab: &Lab, inv: &Path, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(lab
        .drover()
        .arg("logs")
        .args(args)
        .args(["--format", "json", "-i"])
        .arg(inv));
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

/// The messages of a host's entries that start with `prefix`.
pub(crate) fn messages<'a>(host: &'a Value, prefix: &str) -> Vec<&'a str> {
    host["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries: {host}"))
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(prefix))
        .collect()
}

/// Every field of a journal entry as osapi's `LogEntryInfo` types it:
/// strings, an integer pid, a priority name, an RFC 3339 timestamp, and
/// nothing else.
pub(crate) fn assert_osapi_entry(e: &Value) {
    let fields = e
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {e}"));
    for k in fields.keys() {
        assert!(
            [
                "timestamp",
                "unit",
                "priority",
                "message",
                "pid",
                "hostname"
            ]
            .contains(&k.as_str()),
            "a field osapi does not have: {k} in {e}"
        );
    }
    for k in ["timestamp", "unit", "priority", "message"] {
        assert!(e[k].is_string(), "{k}: {e}");
    }
    assert!(e.get("hostname").is_none_or(Value::is_string), "{e}");
    assert!(e.get("pid").is_none_or(Value::is_u64), "{e}");
    let t = e["timestamp"].as_str().unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{e}");
    assert!(
        ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
            .contains(&e["priority"].as_str().unwrap_or_default()),
        "{e}"
    );
}

#[test]
fn logs_reads_known_lines_of_many_hosts_over_ssh() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    // role:web is lab-1, lab-3 and lab-5; the unit runs on the first two.
    let (h1, h3, h5) = (lab.host(0), lab.host(2), lab.host(4));
    let unit = unit_name("known");
    let service = format!("{unit}.service");
    transient(&lab, h1, &unit, "", KNOWN);
    transient(&lab, h3, &unit, "", KNOWN);

    let (code, v) = logs_json(
        &lab,
        &lab.inventory,
        &[&unit, "--target", "role:web", "-n", "50"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["unit"], service.as_str());
    let results = v["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .filter_map(|r| r["hostname"].as_str())
        .collect();
    assert_eq!(names, [h1, h3, h5], "every host, in inventory order");
    for r in &results[..2] {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(
            messages(r, "drover-known-"),
            [
                "drover-known-first",
                "drover-known-error",
                "drover-known-last"
            ],
            "oldest first: {r}"
        );
        let mine: Vec<&Value> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("drover-known-")
            })
            .collect();
        let pids: Vec<&Value> = mine.iter().map(|e| &e["pid"]).collect();
        for e in &mine {
            assert_osapi_entry(e);
            assert_eq!(e["unit"], service.as_str(), "{e}");
            assert_eq!(e["hostname"], r["hostname"], "the host names itself: {e}");
            assert_eq!(e["pid"], *pids[0], "one process wrote them: {e}");
            let want = if e["message"] == "drover-known-error" {
                "err"
            } else {
                "info"
            };
            assert_eq!(e["priority"], want, "{e}");
        }
    }
    // lab-5 never ran it: no entries, and systemd does not know it there.
    assert_eq!(results[2]["status"], "ok");
    assert_eq!(results[2]["entries"], serde_json::json!([]));
    assert_eq!(results[2]["unit_unknown"], true);

    // Filters: the newest line only; err and worse; a start in the future.
    let (_, v) = logs_json(&lab, &lab.inventory, &[&unit, "--target", h1, "-n", "1"]);
    assert_eq!(
        v["results"][0]["entries"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    let (_, v) = logs_json(
        &lab,
        &lab.inventory,
        &[&unit, "--target", h1, "-p", "err", "--since", "1h"],
    );
    let entries = v["results"][0]["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert!(
        entries.iter().any(|e| e["message"] == "drover-known-error"),
        "{v}"
    );
    assert!(
        entries
            .iter()
            .all(|e| ["emerg", "alert", "crit", "err"]
                .contains(&e["priority"].as_str().unwrap_or(""))),
        "{v}"
    );
    let (_, v) = logs_json(
        &lab,
        &lab.inventory,
        &[&unit, "--target", h1, "--since", "2099-01-01"],
    );
    assert_eq!(v["results"][0]["entries"], serde_json::json!([]), "{v}");

    // Text: each line prefixed by its host.
    let (code, out, err) = run(lab
        .drover()
        .args(["logs", &unit, "--target", "role:web", "-i"])
        .arg(&lab.inventory));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().all(|l| [h1, h3, h5]
            .iter()
            .any(|h| l.starts_with(&format!("{h}: ")))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{h1}: "))
            && out.contains(" err ")
            && out.contains("drover-known-error"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{h5}: no entries (no unit {service} on this host)"
        )),
        "{out}"
    );
}

#[test]
fn an_unreachable_host_is_its_own_error_and_exit_4() {
    let Some(lab) = lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = lab.host(0);
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {h}: {{}}\n  gone: {{ address: 127.0.0.1, port: 1, connect_timeout: 2s }}\n"),
    );
    let (code, v) = logs_json(&lab, &inv, &["demo-web", "--target", "_all", "-n", "3"]);
    assert_eq!(code, 4, "{v}");
    let r = &v["results"];
    assert_eq!(r[0]["status"], "ok", "{v}");
    assert_eq!(r[1]["status"], "failed", "{v}");
    assert_eq!(r[1]["unreachable"], true, "{v}");
    assert!(
        r[1]["error"].as_str().unwrap_or("").contains("unreachable"),
        "{v}"
    );
}

#[test]
fn a_local_host_reads_this_machines_journal_and_no_other() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.hosts[0].clone();
    let unit = unit_name("local");
    transient(&lab, &h.name, &unit, "", KNOWN);

    // From here, the lab host's bus is another machine's: its journal is
    // not on this one, and drover says so instead of reading the wrong one.
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(
        dir.path(),
        &format!(
            "  {n}-bus: {{ transport: local, bus: \"unix:path={b}\" }}\n",
            n = h.name,
            b = h.bus.display()
        ),
    );
    let (code, v) = logs_json(&lab, &inv, &[&unit, "--target", "_all"]);
    assert_eq!(code, 2, "a failed read: {v}");
    let error = v["results"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not on this machine") && error.contains("ssh"),
        "{v}"
    );

    // On the host itself, `transport: local` runs journalctl there.
    let remote = format!("/root/{unit}");
    let _gone = lab.undo_on_drop(&h.name, &format!("rm -rf {remote}"));
    lab.ssh(&h.name, &format!("mkdir -p {remote} && printf 'hosts:\\n  here: {{ transport: local }}\\n' > {remote}/inv.yml"));
    let bin = dir.path().join("drover");
    let (c, _, e) = run(std::process::Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(markdown::drover_bin()));
    assert_eq!(c, 0, "strip: {e}");
    crate::package::copy_to(&lab, &h.name, &bin, &format!("{remote}/drover"));
    let out = lab.ssh(
        &h.name,
        &format!("{remote}/drover logs {unit} --target here -i {remote}/inv.yml --format json"),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["results"][0]["hostname"], "here");
    assert_eq!(
        messages(&v["results"][0], "drover-known-"),
        [
            "drover-known-first",
            "drover-known-error",
            "drover-known-last"
        ],
        "{v}"
    );
}

/// demo-idle fails to start on a host, after its start-up printed two
/// known lines and a secret value.
pub(crate) fn idle_fails_loudly(secret: &str) -> String {
    format!(
        "mkdir -p /run/systemd/system/demo-idle.service.d && cat > /run/systemd/system/demo-idle.service.d/fail.conf <<'EOF'\n[Service]\nExecStartPre=/bin/sh -c 'echo drover-failure-1; echo \"token={secret}\"; echo drover-failure-2; exit 3'\nEOF\nsystemctl daemon-reload"
    )
}

const SECRET: &str = "tok-logs-7e1d0a2c-never-shown";

#[test]
fn a_failing_start_carries_the_units_last_lines_in_report_and_journal() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(1).to_string();
    lab.ssh(&h, &idle_fails_loudly(SECRET));
    let _undo = lab.undo_on_drop(&h, common::IDLE_RESET);
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("idle.yml");
    std::fs::write(
        &pb,
        format!("name: idle\nvars: {{ token: \"{SECRET}\" }}\nsecret_vars: [token]\nsteps:\n  - id: idle\n    target: {h}\n    service: {{ name: demo-idle, state: restarted }}\n"),
    )
    .unwrap();
    let apply = |report: &Path, extra: &[&str]| {
        run(lab
            .drover()
            .args(["apply", "-i"])
            .arg(&lab.inventory)
            .arg(&pb)
            .arg("--report")
            .arg(report)
            .args(extra))
    };
    let report = dir.path().join("report.json");
    let (code, out, err) = apply(&report, &["--failure-logs", "6"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let saved = std::fs::read_to_string(&report).unwrap();
    let journal = std::fs::read_to_string(dir.path().join("report.json.journal")).unwrap();
    let v: Value = serde_json::from_str(&saved).unwrap();
    let r = &v["results"][0];
    assert_eq!(
        (r["status"].as_str(), r["kind"].as_str()),
        (Some("failed"), Some("job-failed")),
        "{r}"
    );
    let logs = r["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs: {r}"));
    assert!(!logs.is_empty() && logs.len() <= 6, "{r}");
    let text: Vec<&str> = logs.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(
        text.contains(&"drover-failure-2"),
        "the unit's own last lines: {text:?}"
    );
    for e in logs {
        assert_osapi_entry(e);
        assert_eq!(e["unit"], "demo-idle.service", "{e}");
    }
    // The secret value the unit printed is a marker everywhere.
    assert!(
        text.iter()
            .any(|m| m.starts_with("token=<secret token sha256:")),
        "{text:?}"
    );
    for (what, t) in [("stdout", &out), ("report", &saved), ("journal", &journal)] {
        assert!(!t.contains(SECRET), "{what} shows the secret: {t}");
    }
    // The journal's result line carries them too; stdout shows them under
    // the failed line.
    let line: Value = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["type"] == "result")
        .expect("a result line");
    assert_eq!(line["logs"], r["logs"]);
    assert!(
        out.contains("    | ") && out.contains("drover-failure-2"),
        "{out}"
    );

    // --failure-logs 0: none.
    let report0 = dir.path().join("report0.json");
    let (code, _, _) = apply(&report0, &["--failure-logs", "0"]);
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report0).unwrap()).unwrap();
    assert!(v["results"][0].get("logs").is_none(), "{v}");
}

#[test]
fn hostile_output_is_bounded_and_escaped() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(2);
    let unit = unit_name("hostile");
    // Controls (a title change, a screen clear, a carriage return, a bell),
    // bytes that are not UTF-8, then 10 MB of lines, then a last line.
    let script =
        "printf 'ctl:\\033]0;OWNED\\007\\033[2J\\rx\\tEND\\n'; printf 'bin:\\377\\376\\n'; \
        head -c 10000000 /dev/zero | tr '\\0' x | fold -w 1000; echo hostile-last";
    let t0 = std::time::Instant::now();
    transient(&lab, h, &unit, "-p LogRateLimitIntervalSec=0", script);
    eprintln!("hostile unit ran and was synced in {:?}", t0.elapsed());

    let t0 = std::time::Instant::now();
    let (code, out, err) = run(lab
        .drover()
        .args([
            "logs", &unit, "--target", h, "-n", "10000", "--format", "json", "-i",
        ])
        .arg(&lab.inventory));
    let took = t0.elapsed();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["results"][0];
    let entries = r["entries"].as_array().expect("entries");
    eprintln!(
        "10 MB of lines: {} entries, {} bytes of JSON on stdout, in {took:?}",
        entries.len(),
        out.len()
    );
    assert_eq!(
        r["truncated"],
        true,
        "the 4 MiB bound cut the read: {}",
        entries.len()
    );
    assert!(
        entries.len() < 10_000 && entries.len() > 1000,
        "{}",
        entries.len()
    );
    assert!(out.len() < 8 << 20, "bounded output: {} bytes", out.len());
    // The newest lines are the ones kept; the oldest (the controls) are not.
    assert!(
        entries
            .iter()
            .rev()
            .take(5)
            .any(|e| e["message"] == "hostile-last"),
        "newest kept"
    );
    assert!(!out.contains("OWNED"), "the oldest lines were cut");

    // As text, the same 10 MB: every line the host's, no raw control.
    let (code, text, err) = run(lab
        .drover()
        .args(["logs", &unit, "--target", h, "-n", "10000", "-i"])
        .arg(&lab.inventory));
    assert_eq!(code, 0, "{err}");
    assert!(text.len() < 8 << 20, "bounded output: {} bytes", text.len());
    assert!(
        !text.chars().any(|c| c != '\n' && c.is_control()),
        "a raw control reached the terminal"
    );
    assert!(
        text.lines().all(|l| l.starts_with(&format!("{h}: "))),
        "a line not of the host"
    );
    assert!(text.contains("hostile-last"), "newest kept");
    // Read whole (a unit of a few lines): the controls are visible escapes.
    let small = unit_name("controls");
    transient(
        &lab,
        h,
        &small,
        "",
        "printf 'ctl:\\033]0;OWNED\\007\\033[2J\\rx\\tEND\\n'; printf 'bin:\\377\\376\\n'",
    );
    let (_, text, _) = run(lab
        .drover()
        .args(["logs", &small, "--target", h, "-n", "20", "-i"])
        .arg(&lab.inventory));
    for c in text.chars() {
        assert!(
            c == '\n' || !c.is_control(),
            "a raw control {c:?} reached the terminal: {text}"
        );
    }
    assert!(
        text.contains("ctl:\\u{1b}]0;OWNED\\u{7}\\u{1b}[2J\\rx\\tEND"),
        "{text}"
    );
    assert!(text.contains("bin:\u{fffd}\u{fffd}"), "{text}");
    let (_, v) = logs_json(&lab, &lab.inventory, &[&small, "--target", h]);
    assert_eq!(
        messages(&v["results"][0], "ctl:"),
        ["ctl:\u{1b}]0;OWNED\u{7}\u{1b}[2J\rx\tEND"],
        "JSON keeps the text"
    );
}

/// The book's page runs as written against the lab.
#[test]
fn the_book_logs_examples_work_as_written() {
    let Some(lab) = lab() else { return };
    let lines = markdown::lab_script("docs/src/guide/logs.md");
    let sandbox = markdown::Sandbox::new();
    let out = sandbox
        .command(&format!("set -e\n{}\n", lines.join("\n")))
        .env("INVENTORY", &lab.inventory)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docs/src/guide/logs.md's lab block failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("{}: ", lab.host(0)))),
        "{stdout}"
    );
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(sandbox.dir.path().join("logs.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["unit"], "demo-web.service", "{v}");
}
