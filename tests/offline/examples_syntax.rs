//! The unattended and code-review examples stay valid: the GitHub Actions
//! workflow parses and runs drover the way the CLI accepts, the cron line
//! has five valid time fields and a drover command the CLI accepts, and the
//! systemd timer + service pass `systemd-analyze verify` on a lab host
//! (there is no systemd here; the test skips loudly without the lab).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use drover::cmd::args::{Cli, Command as Sub};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A drover command line as the CLI parses it: panics with clap's message.
fn parse_drover(words: &[&str]) -> Cli {
    Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

#[test]
fn ci_workflow_parses_and_posts_a_markdown_plan_from_the_facts_snapshot() {
    let wf: Value = serde_saphyr::from_str(&read("examples/ci/drover-plan.yml"))
        .expect("examples/ci/drover-plan.yml is valid YAML");
    assert!(wf["on"]["pull_request"].is_object(), "{wf}");
    assert_eq!(wf["permissions"]["pull-requests"], "write");
    let steps = wf["jobs"]["plan"]["steps"]
        .as_array()
        .expect("jobs.plan.steps");
    for s in steps {
        assert!(
            s.get("uses").is_some() || s.get("run").is_some(),
            "a step needs `uses` or `run`: {s}"
        );
    }
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    let plan_line = runs
        .iter()
        .flat_map(|r| r.lines())
        .find(|l| l.contains("drover --color never plan"))
        .expect("a drover plan line");
    // The very command CI runs, on the bundled playbook, offline.
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("plan.json");
    let cmd = plan_line
        .trim()
        .split(" >> ")
        .next()
        .unwrap()
        .replace(
            "\"plan-$(basename \"$pb\" .yml).json\"",
            saved.to_str().unwrap(),
        )
        .replace("\"$pb\"", "examples/nightly-restart.yml");
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let cli = parse_drover(&words);
    let Sub::Plan(p) = cli.command else {
        panic!("not a plan: {cmd}")
    };
    assert_eq!(p.facts.as_deref(), Some(Path::new("examples/facts.json")));
    assert!(root().join("examples/facts.json").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args(&words[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("<details>") && md.contains("| host |"), "{md}");
    assert!(!md.contains('\u{1b}'), "ANSI in the comment");
    assert!(saved.is_file(), "the saved plan for the artifact");
    assert!(
        runs.iter()
            .any(|r| r.contains("gh pr comment") && r.contains("--body-file plan.md")),
        "{runs:?}"
    );
}

/// One cron time field: `*`, numbers, ranges, lists and `/step`, in range.
fn cron_field_ok(field: &str, lo: u32, hi: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step_ok = step.is_none_or(|s| s.parse::<u32>().is_ok_and(|n| n >= 1 && n <= hi));
        let range_ok = range == "*"
            || match range.split_once('-') {
                Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                    (Ok(a), Ok(b)) => lo <= a && a <= b && b <= hi,
                    _ => false,
                },
                None => range.parse::<u32>().is_ok_and(|n| lo <= n && n <= hi),
            };
        step_ok && range_ok
    })
}

#[test]
fn cron_parser_rejects_bad_fields() {
    assert!(cron_field_ok("*/5", 0, 59));
    assert!(cron_field_ok("1-5,7", 0, 7));
    assert!(!cron_field_ok("60", 0, 59));
    assert!(!cron_field_ok("5-1", 0, 59));
    assert!(!cron_field_ok("sat", 0, 7));
    assert!(!cron_field_ok("*/0", 0, 59));
}

#[test]
fn cron_entry_has_five_time_fields_and_a_valid_drover_command() {
    let text = read("examples/cron/drover.cron");
    let jobs: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        // NAME=value lines set the environment.
        .filter(|l| !l.split_whitespace().next().unwrap_or("").contains('='))
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let f: Vec<&str> = jobs[0].split_whitespace().collect();
    assert!(f.len() > 5, "5 time fields and a command: {}", jobs[0]);
    let limits = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (i, (lo, hi)) in limits.iter().enumerate() {
        assert!(cron_field_ok(f[i], *lo, *hi), "field {} `{}`", i + 1, f[i]);
    }
    assert!(
        !jobs[0].contains('%'),
        "% is a newline in a crontab command"
    );
    assert!(
        f[5].starts_with('/') && f[5].ends_with("/drover"),
        "{}",
        f[5]
    );
    let mut words = vec!["drover"];
    words.extend(&f[6..]);
    let Sub::Apply(a) = parse_drover(&words).command else {
        panic!("not an apply: {}", jobs[0])
    };
    assert!(a.report.is_some(), "unattended runs keep a report");
    assert!(a.wait_lock.is_some(), "uses the lock with --wait-lock");
}

/// The `ExecStart=` command of the service, parsed by drover's CLI.
#[test]
fn systemd_service_runs_a_valid_drover_apply() {
    let unit = read("examples/systemd/drover-nightly-restart.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let f: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        f[0].starts_with('/'),
        "systemd needs an absolute path: {}",
        f[0]
    );
    let mut words = vec!["drover"];
    words.extend(&f[1..]);
    let Sub::Apply(a) = parse_drover(&words).command else {
        panic!("not an apply: {exec}")
    };
    assert!(a.report.is_some() && a.wait_lock.is_some(), "{exec}");
    let timer = read("examples/systemd/drover-nightly-restart.timer");
    assert!(timer.contains("Unit=drover-nightly-restart.service"));
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_on_a_lab_host() {
    let Some(lab) = common::lab() else { return };
    // It briefly puts a stub at /usr/local/bin/drover on the host.
    let _l = lab.lock();
    let host = lab.host(0).to_string();
    let dir = "/tmp/drover-examples-verify";
    // The service's ExecStart must exist for verify; a stub stands in for
    // drover on the host when none is installed (removed afterwards).
    lab.ssh(
        &host,
        &format!("rm -rf {dir} && mkdir -p {dir} && if [ ! -e /usr/local/bin/drover ]; then printf '#!/bin/sh\\n' > /usr/local/bin/drover && chmod 755 /usr/local/bin/drover && touch {dir}/.stub; fi"),
    );
    for name in [
        "drover-nightly-restart.service",
        "drover-nightly-restart.timer",
    ] {
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(&lab.ssh_config)
            .arg(&host)
            .arg(format!("cat > {dir}/{name}"))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            read(&format!("examples/systemd/{name}")).as_bytes(),
        )
        .unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "copy {name}");
    }
    let out = lab.ssh_output(
        &host,
        &format!("cd {dir} && systemd-analyze verify ./drover-nightly-restart.timer ./drover-nightly-restart.service; rc=$?; systemd-analyze calendar 'Sat,Sun *-*-* 02:30:00 UTC' >/dev/null || rc=9; [ -e {dir}/.stub ] && rm -f /usr/local/bin/drover; rm -rf {dir}; exit $rc"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // verify exits 0 on some warnings; none are acceptable here.
    let noise: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("drover-nightly-restart"))
        .collect();
    assert!(noise.is_empty(), "systemd-analyze verify warns: {err}");
}
