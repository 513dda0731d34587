//! Snapshots of what people read: the plan as text, markdown and json, the
//! status table, the apply lines and the server's status page, each
//! rendered by a pure function from engine values built here (no lab, no
//! clock). A change to any of them shows up as a snapshot diff in review
//! (`tests/snapshots/`).

use std::path::Path;

use drover::engine::job::Job;
use drover::engine::job_store::{JobStatus, JobView};
use drover::engine::plan::{simulate, Plan, PlanLabels};
use drover::engine::status::{
    MaintenanceEntry, ServiceStatus, StatusEntry, StatusError, StatusReport,
};
use drover::model::facts::{Facts, Maintenance};
use drover::model::keys::Role;
use drover::model::outcome::{Failure, Outcome, SkipReason};
use drover::model::params::{ParamType, ParamView};
use drover::model::report::{JobReport, JobResult, RunOutcome};
use drover::render;
use drover::render::page::PageRunbook;

use super::page_render::status_html;

/// A parameter as `GET /runbook` lists it.
pub(crate) fn param(name: &str, kind: ParamType, default: Option<serde_json::Value>) -> ParamView {
    ParamView {
        name: name.into(),
        kind,
        description: format!("the {name}"),
        required: default.is_none(),
        default,
        secret: false,
        values: None,
        pattern: None,
    }
}

pub(crate) fn runbook(name: &str, params: Vec<ParamView>) -> PageRunbook {
    PageRunbook {
        name: name.into(),
        params,
    }
}

/// The bundled example: playbook, inventory and facts from examples/.
pub(crate) fn example_plan() -> Plan {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).unwrap();
    let job = Job::load(
        Path::new("examples/nightly-restart.yml"),
        Path::new("examples/inventory.yml"),
        None,
    )
    .unwrap();
    let facts = Facts::load(Path::new("examples/facts.json")).unwrap();
    simulate(
        &job,
        &facts,
        PlanLabels {
            facts_source: "examples/facts.json",
            limit: None,
        },
    )
    .unwrap()
}

#[test]
fn plan_as_text() {
    insta::assert_snapshot!(render::plan::render_text(&example_plan(), false));
}

#[test]
fn plan_as_markdown() {
    insta::assert_snapshot!(render::plan::render_markdown(&example_plan()));
}

#[test]
fn plan_as_json() {
    insta::assert_snapshot!(render::plan::render_json(&example_plan()));
}

pub(crate) fn entry(host: &str, unit: &str, status: ServiceStatus, up: Option<u64>) -> StatusEntry {
    StatusEntry {
        hostname: host.into(),
        name: unit.into(),
        status,
        start_time: up.map(|_| "2026-11-27T01:00:00Z".to_string()),
        uptime: up,
        active_state: "active".into(),
        sub_state: "running".into(),
        load_state: "loaded".into(),
        unit_file_state: String::new(),
        main_pid: None,
        description: String::new(),
        maintenance: None,
    }
}

#[test]
fn status_table() {
    let mut missing = entry("web-2", "gone.service", ServiceStatus::Stopped, None);
    missing.load_state = "not-found".into();
    let report = StatusReport {
        services: vec![
            entry(
                "web-1",
                "demo-web.service",
                ServiceStatus::Running,
                Some(3 * 86_400 + 3539),
            ),
            entry("web-1", "demo-broken.service", ServiceStatus::Failed, None),
            entry(
                "web-2",
                "demo-web.service",
                ServiceStatus::Restarting,
                Some(7),
            ),
            missing,
        ],
        errors: vec![
            StatusError {
                hostname: "web-3".into(),
                error: "unreachable: connection refused: port 22".into(),
                unreachable: true,
            },
            StatusError {
                hostname: "db-1".into(),
                error: "cannot read units: access denied".into(),
                unreachable: false,
            },
        ],
        maintenance: vec![MaintenanceEntry {
            hostname: "web-2".into(),
            unit: None,
            reason: "disk swap".into(),
            since: "2026-11-29T22:00:00.000Z".into(),
        }],
    };
    insta::assert_snapshot!(
        "status_plain",
        render::status::render_status_text(&report, false)
    );
    insta::assert_snapshot!(
        "status_color",
        render::status::render_status_text(&report, true)
    );
}

pub(crate) fn result(host: &str, step: &str, action: &str, ms: u64, outcome: Outcome) -> JobResult {
    let mut r = JobResult::new(
        host,
        step,
        "demo-web.service",
        &outcome,
        &drover::model::secret::Secrets::new(),
    );
    r.action = action.into();
    r.duration_ms = ms;
    r
}

#[test]
fn apply_lines_and_summary() {
    let results = vec![
        result(
            "web-1",
            "restart-web",
            "restart",
            812,
            Outcome::Ok { changed: true },
        ),
        result(
            "web-2",
            "restart-web",
            "none",
            14,
            Outcome::Ok { changed: false },
        ),
        result(
            "web-3",
            "restart-web",
            "restart",
            1503,
            Outcome::failed(Failure::JobFailed(
                "job failed: unit entered failed state (Result=exit-code)".into(),
            )),
        ),
        result(
            "web-4",
            "restart-web",
            "none",
            0,
            Outcome::Skipped(SkipReason::Maintenance("disk swap".into())),
        ),
        result(
            "web-5",
            "restart-web",
            "none",
            11_020,
            Outcome::failed(Failure::ConnectionLost {
                step: "restart-web".into(),
                detail: "cannot read demo-web.service: I/O error".into(),
            }),
        ),
    ];
    let mut text: String = results
        .iter()
        .map(|r| render::apply::result_line(r, false) + "\n")
        .collect();
    let report = JobReport {
        job_id: "550e8400-e29b-41d4-a716-446655440000".into(),
        playbook: "nightly web restart".into(),
        started_at: "2026-11-30T02:00:00.000Z".into(),
        finished_at: "2026-11-30T02:00:03.000Z".into(),
        outcome: RunOutcome::Aborted,
        results,
        inputs: None,
        retry_of: None,
    };
    text.push_str(&render::apply::summary(
        &report,
        Some(Path::new("/var/log/drover/report.json")),
        Some(Path::new("/var/log/drover/report.json.journal")),
    ));
    insta::assert_snapshot!(text);
}

// Hostile hosts. Hosts choose much of what drover prints: systemd's
// StatusText (any service sets it; it lands in job errors), maintenance
// reasons, unit states, unit file content, command output. None of it may
// drive the reviewer's terminal, forge a line, or break out of a markdown
// cell, code span or fence.

/// A StatusText-like error: clears the screen, paints, and forges a line.
const STATUS_TEXT: &str = "Job for myapp.service failed: \x1b[2J\x1b[31mOWNED\nweb-9 ok";
/// A maintenance reason that returns the carriage to overwrite its line.
const REASON: &str = "disk swap\rall hosts healthy, nothing to see";
/// The current unit file on web-1: a line that would close a ``` fence,
/// a backtick run of 4, an escape sequence (terminal title) and a C1 CSI.
/// The fence line comes first so the diff's context shows the unit's
/// (hostile) active state too.
const UNIT_FILE: &str =
    "```\n[Service]\nExecStart=/bin/echo ````\nEnvironment=X=\x1b]0;pwned\x07\u{9b}2J\n";

/// A plan over three hosts that send hostile text: web-1 a unit file,
/// web-2 a maintenance reason, web-3 an unreachable error.
fn hostile_plan() -> Plan {
    let inventory = "hosts:\n  web-1: { address: 10.0.0.11 }\n  web-2: { address: 10.0.0.12 }\n  web-3: { address: 10.0.0.13 }\n";
    let playbook = r#"name: hostile hosts
steps:
  - id: register
    target: _all
    unit: { name: myapp, content: "[Service]\nExecStart=/usr/bin/myapp\n" }
  - id: lift
    target: web-2
    maintenance: { enable: false }
"#;
    let job = Job::from_text(
        playbook,
        Path::new("pb.yml"),
        inventory,
        Path::new("inv.yml"),
        None,
    )
    .unwrap();
    let unit = |active: &str| {
        serde_json::json!({
            "load_state": "loaded", "active_state": active, "sub_state": "running",
            "unit_file_state": "enabled",
        })
    };
    let facts = serde_json::json!({
        "version": 1,
        "collected_at": "2026-11-25T01:55:00Z",
        "hosts": {
            "web-1": {
                "reachable": true,
                "units": { "myapp.service": unit("active\u{1b}[8m") },
                "unit_files": { "myapp.service": UNIT_FILE },
            },
            "web-2": {
                "reachable": true,
                "maintenance": { "reason": REASON, "since": "2026-11-24T18:00:00Z" },
                "units": { "myapp.service": unit("active") },
                "unit_files": { "myapp.service": null },
            },
            "web-3": { "reachable": false, "error": STATUS_TEXT },
        }
    });
    let facts = Facts::from_json(&facts.to_string(), Path::new("facts.json")).unwrap();
    simulate(
        &job,
        &facts,
        PlanLabels {
            facts_source: "facts.json",
            limit: None,
        },
    )
    .unwrap()
}

/// What no terminal output may hold: ESC, CR, BEL, C1 controls, and a line
/// that starts with text a host forged after a newline.
fn assert_inert(what: &str, text: &str) {
    for c in text.chars() {
        assert!(
            c == '\n' || !c.is_control(),
            "{what}: raw control {c:?} in:\n{text}"
        );
    }
    for l in text.lines() {
        assert!(
            !l.starts_with("web-9") && !l.starts_with("all hosts healthy"),
            "{what}: a host forged a line: {l:?}"
        );
    }
}

#[test]
fn hostile_plan_as_text() {
    let text = render::plan::render_text(&hostile_plan(), false);
    assert_inert("plan text", &text);
    // The unit file keeps its line structure, each line escaped.
    assert!(text.contains("\n-    | ```\n"), "{text}");
    assert!(
        text.contains("\n-    | Environment=X=\\u{1b}]0;pwned\\u{7}\\u{9b}2J\n"),
        "{text}"
    );
    insta::assert_snapshot!(text);
    // Colour adds drover's own escapes, and only those.
    let color = render::plan::render_text(&hostile_plan(), true);
    assert!(!color.contains("\x1b[2J") && !color.contains("\x1b]0;") && !color.contains('\r'));
}

/// Cells of a GFM table row: `|` splits unless backslash-escaped, and a
/// backslash escapes the character after it (so `\\|` does split).
fn gfm_cells(row: &str) -> usize {
    let mut pipes = 0;
    let mut chars = row.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '|' => pipes += 1,
            _ => {}
        }
    }
    pipes - 1
}

/// Every table row has its header's cells, and every fenced block is
/// closed only by its own fence.
fn assert_markdown_holds(md: &str) {
    let mut header = None;
    let mut fence: Option<usize> = None;
    for l in md.lines() {
        // A closing fence may be indented by up to three spaces.
        let bare = l
            .strip_prefix("   ")
            .or(l.strip_prefix("  "))
            .or(l.strip_prefix(' '));
        let bare = bare.unwrap_or(l);
        let ticks = bare.len() - bare.trim_start_matches('`').len();
        match fence {
            Some(n) if ticks >= n && bare[ticks..].trim().is_empty() => fence = None,
            Some(_) => {}
            None if ticks >= 3 => fence = Some(ticks),
            None if l.starts_with('|') => {
                let n = gfm_cells(l);
                let h = *header.get_or_insert(n);
                assert_eq!(n, h, "row with {n} cells, header has {h}: {l}");
            }
            None => header = None,
        }
        if fence.is_some() && ticks < 3 {
            assert!(!l.starts_with("</details>"), "a fence swallowed its block");
        }
    }
    assert_eq!(fence, None, "a fence is left open");
}

#[test]
fn hostile_plan_as_markdown() {
    let md = render::plan::render_markdown(&hostile_plan());
    assert_inert("plan markdown", &md);
    assert_markdown_holds(&md);
    // The unit file holds runs of 3 and 4 backticks: a fence of 5.
    assert!(md.contains("\n`````diff\n"), "{md}");
    insta::assert_snapshot!(md);
}

#[test]
fn markdown_tables_keep_their_cells() {
    // A step with two targets joins them with `|` in a cell.
    assert_markdown_holds(&render::plan::render_markdown(&example_plan()));
}

#[test]
fn hostile_plan_as_json_stays_raw_and_escaped_by_serde() {
    let json = render::plan::render_json(&hostile_plan());
    assert!(!json.contains('\x1b') && !json.contains('\r'));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let errors: Vec<&str> = v["steps"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.ends_with(STATUS_TEXT)),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.ends_with(REASON)), "{errors:?}");
}

#[test]
fn hostile_status_table() {
    let mut odd = entry(
        "web-1",
        "evil\x1b[2J.service",
        ServiceStatus::Running,
        Some(7),
    );
    odd.start_time = Some("2026-11-27T01:00:00Z\r1999-01-01".into());
    let mut masked = entry("web-1", "demo-web.service", ServiceStatus::Stopped, None);
    masked.load_state = "masked\x1b[31m".into();
    let report = StatusReport {
        services: vec![odd, masked],
        errors: vec![StatusError {
            hostname: "web-3".into(),
            error: format!("cannot read units: {STATUS_TEXT}"),
            unreachable: false,
        }],
        maintenance: vec![MaintenanceEntry {
            hostname: "web-2".into(),
            unit: Some("demo\u{9b}web.service".into()),
            reason: REASON.into(),
            since: "2026-11-29T22:00:00.000Z\x07".into(),
        }],
    };
    let text = render::status::render_status_text(&report, false);
    assert_inert("status", &text);
    insta::assert_snapshot!(text);
}

#[test]
fn hostile_apply_lines() {
    let failed = result(
        "web-3",
        "restart-web",
        "restart",
        1503,
        Outcome::failed(Failure::JobFailed(STATUS_TEXT.into())),
    );
    let skipped = result(
        "web-4",
        "restart-web",
        "none",
        0,
        Outcome::Skipped(SkipReason::Maintenance(REASON.into())),
    );
    let mut odd = result(
        "web-5",
        "restart-web",
        "restart",
        1,
        Outcome::Ok { changed: true },
    );
    odd.name = "demo\tweb\x1b[1A.service".into();
    let text: String = [failed, skipped, odd]
        .iter()
        .map(|r| render::apply::result_line(r, false) + "\n")
        .collect();
    assert_inert("apply lines", &text);
    insta::assert_snapshot!(text);
}

#[test]
fn hostile_health_text() {
    use drover::model::health::{Health, HealthReport, HostHealth};
    let host = |name: &str, status: Health, note: &str| HostHealth {
        hostname: name.into(),
        status,
        note: note.into(),
        checks: Vec::new(),
    };
    let report = HealthReport {
        unit: "demo-web.service".into(),
        status: Health::Critical,
        hosts: vec![
            host(
                "web-1",
                Health::Critical,
                "command exited 2: \x1b[2J\x1b[32mPASSING\nweb-9 passing",
            ),
            host(
                "web-2",
                Health::Warning,
                &format!("in maintenance: {REASON}"),
            ),
        ],
    };
    let text = render::health::render_text(&report, false);
    assert_inert("health", &text);
    insta::assert_snapshot!(text);
}

/// The snippets under errors: a playbook typo, an inventory value, a
/// directory conflict and a dynamic inventory's bad JSON, plain (off a
/// TTY) and, for the first, coloured.
#[test]
fn error_snippets() {
    use drover::model::inventory::Inventory;
    use drover::model::playbook::Playbook;
    let snippet = |e: drover::model::error::Error, color: bool| {
        format!(
            "{}\n{}",
            e.details(),
            render::snippet::render_error(&e, color).expect("a snippet")
        )
    };
    let pb = Playbook::from_str(
        "name: x\nsteps:\n  - id: a\n    service: { name: demo-web, stae: started }\n",
        Path::new("pb.yml"),
    )
    .unwrap_err();
    let inv = Inventory::from_str(
        "hosts:\n  web-1:\n    address: \"a;reboot\"\n",
        Path::new("inv.yml"),
    )
    .unwrap_err();
    let dir = Inventory::from_texts(
        Path::new("inv.d"),
        &["inv.d/a.yml".into(), "inv.d/b.yml".into()],
        &[
            "hosts:\n  web-1: {}\n".into(),
            "hosts:\n  web-2: {}\n  web-1: {}\n".into(),
        ],
    )
    .unwrap_err();
    let json = Inventory::from_output(
        "{\n  \"hosts\": {\n    \"web-1\": { \"prot\": 22 }\n  }\n}\n",
        Path::new("cmdb-hosts"),
    )
    .unwrap_err();
    let plain = [&pb, &inv, &dir, &json]
        .into_iter()
        .map(|e| snippet(clone(e), false))
        .collect::<Vec<_>>()
        .join("\n\n");
    insta::assert_snapshot!("error_snippets", plain);
    let colored = snippet(pb, true);
    assert!(colored.contains("\u{1b}["), "{colored}");
    insta::assert_snapshot!("error_snippet_color", colored);
}

fn clone(e: &drover::model::error::Error) -> drover::model::error::Error {
    use drover::model::error::Error;
    match e {
        Error::Parse(d) => Error::Parse(d.clone()),
        Error::Invalid(d) => Error::Invalid(d.clone()),
        other => panic!("not an input error: {other}"),
    }
}

// The server's status page. The nonce and token are fixed here; the
// server draws the nonce per answer and derives the token from the session.
pub(crate) const NONCE: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const CSRF: &str = "5f1c0ffee5f1c0ffee5f1c0ffee5f1c0ffee5f1c0ffee5f1c0ffee5f1c0ffee0";

pub(crate) fn job(
    id: &str,
    playbook: &str,
    outcome: JobStatus,
    results: Vec<JobResult>,
) -> JobView {
    JobView {
        job_id: id.into(),
        playbook: playbook.into(),
        started_at: "2026-11-30T02:00:00.000Z".into(),
        finished_at: None,
        outcome,
        results,
        retry_of: None,
    }
}

fn hosts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

/// A journal line under a failed result.
pub(crate) fn log_line(message: &str) -> drover::model::logs::LogEntry {
    drover::model::logs::LogEntry {
        timestamp: "2026-11-30T02:00:01.250000Z".into(),
        unit: "demo-web.service".into(),
        priority: "err".into(),
        message: message.into(),
        pid: Some(4242),
        hostname: Some("web-3".into()),
    }
}

/// `r` with the unit's last journal lines, as `--failure-logs` attaches them.
pub(crate) fn with_logs(mut r: JobResult) -> JobResult {
    r.logs = vec![
        log_line("ExecStartPre: cannot open /etc/demo.conf"),
        log_line("demo-web.service: Failed with result 'exit-code'."),
    ];
    r
}

/// Every part of the page: running, failed, restarting and starting units,
/// quiet stopped ones, a unit and a host in maintenance, an unreachable
/// host, a host with no units, jobs running, completed and aborted.
#[test]
fn status_page() {
    let hosts = hosts(&[
        ("web-1", "10.0.0.11"),
        ("web-2", "10.0.0.12"),
        ("web-3", "10.0.0.13"),
        ("db-1", "10.0.1.1"),
    ]);
    let mut held = entry("web-2", "demo-web.service", ServiceStatus::Stopped, None);
    held.maintenance = Some(Maintenance {
        reason: "deploy".into(),
        since: "2026-11-29T22:00:00.000Z".into(),
    });
    let report = StatusReport {
        services: vec![
            entry(
                "web-1",
                "demo-web.service",
                ServiceStatus::Running,
                Some(3 * 86_400 + 3539),
            ),
            entry("web-1", "demo-broken.service", ServiceStatus::Failed, None),
            entry("web-1", "setup.service", ServiceStatus::Stopped, None),
            entry("web-1", "cleanup.service", ServiceStatus::Stopped, None),
            held,
            entry(
                "web-2",
                "demo-worker.service",
                ServiceStatus::Restarting,
                Some(7),
            ),
            entry("web-2", "demo-cache.service", ServiceStatus::Starting, None),
        ],
        errors: vec![StatusError {
            hostname: "web-3".into(),
            error: "unreachable: connection refused: port 22".into(),
            unreachable: true,
        }],
        maintenance: vec![
            MaintenanceEntry {
                hostname: "web-2".into(),
                unit: None,
                reason: "disk swap".into(),
                since: "2026-11-29T21:00:00.000Z".into(),
            },
            MaintenanceEntry {
                hostname: "web-2".into(),
                unit: Some("demo-web.service".into()),
                reason: "deploy".into(),
                since: "2026-11-29T22:00:00.000Z".into(),
            },
        ],
    };
    let jobs = vec![
        job(
            "550e8400-e29b-41d4-a716-446655440002",
            "nightly web restart",
            JobStatus::Running,
            vec![result(
                "web-1",
                "restart-web",
                "restart",
                812,
                Outcome::Ok { changed: true },
            )],
        ),
        job(
            "550e8400-e29b-41d4-a716-446655440001",
            "drain db",
            JobStatus::Completed,
            vec![
                result("db-1", "drain", "none", 14, Outcome::Ok { changed: false }),
                with_logs(result(
                    "web-3",
                    "drain",
                    "stop",
                    1503,
                    Outcome::failed(Failure::JobFailed(
                        "job failed: unit entered failed state (Result=exit-code)".into(),
                    )),
                )),
            ],
        ),
        job(
            "550e8400-e29b-41d4-a716-446655440000",
            "nightly web restart",
            JobStatus::Aborted,
            vec![result(
                "web-2",
                "restart-web",
                "none",
                0,
                Outcome::Skipped(SkipReason::Maintenance("disk swap".into())),
            )],
        ),
    ];
    // Each type of parameter is its own kind of input; the first
    // runbook's are shown, the others' hidden and disabled.
    let mut mode = param("mode", ParamType::Enum, Some("safe".into()));
    mode.values = Some(vec!["fast".into(), "safe".into()]);
    let mut ticket = param("ticket", ParamType::String, None);
    ticket.pattern = Some("[A-Z]+-[0-9]+".into());
    let mut token = param("token", ParamType::String, None);
    token.secret = true;
    let runbooks = vec![
        runbook(
            "drain-db",
            vec![
                param("unit", ParamType::Unit, None),
                param("batch", ParamType::Integer, Some(2.into())),
                param("force", ParamType::Boolean, Some(true.into())),
                param("pause", ParamType::Duration, Some("30s".into())),
                param("hosts", ParamType::Selector, None),
                mode,
                ticket,
                token,
            ],
        ),
        runbook(
            "restart-web",
            vec![param("note", ParamType::String, Some("{{ 7*7 }}".into()))],
        ),
    ];
    insta::assert_snapshot!(status_html(
        "oncall",
        Role::Operate,
        &hosts,
        Ok(&report),
        &jobs,
        &runbooks
    ));
}

/// The hosts could not be read at all; no runbooks are served; a job id
/// shorter than the 8 characters the page shows.
#[test]
fn status_page_unread() {
    let hosts = hosts(&[("web-1", "10.0.0.11")]);
    let jobs = vec![job("short", "p", JobStatus::Completed, vec![])];
    insta::assert_snapshot!(status_html(
        "ci-preview",
        Role::Read,
        &hosts,
        Err("unreachable: host unreachable: system bus: No such file or directory"),
        &jobs,
        &[]
    ));
}

#[test]
fn login_form() {
    insta::assert_snapshot!("login_form", render::page::login_page(None, NONCE));
    insta::assert_snapshot!(
        "login_form_refused",
        render::page::login_page(Some("unknown key"), NONCE)
    );
}

/// Markup in every text the page shows from hosts, keys and playbooks.
pub(crate) const MARKUP: &str = "<script>alert('x')</script> & \"quoted\"";

/// Hostile hosts, keys and playbooks against the page: their text is
/// escaped wherever it lands (element text and attributes alike), so the
/// only script the page runs is its own.
#[test]
fn hostile_status_page() {
    let hosts = vec![(
        format!("web-1{MARKUP}"),
        "10.0.0.1\"><img src=x onerror=alert(1)>".to_string(),
    )];
    let host = hosts[0].0.as_str();
    let mut flagged = entry(
        host,
        &format!("demo{MARKUP}.service"),
        ServiceStatus::Stopped,
        None,
    );
    flagged.maintenance = Some(Maintenance {
        reason: format!("reason {MARKUP}"),
        since: "2026-11-29T22:00:00.000Z".into(),
    });
    let quiet = entry(
        host,
        &format!("quiet{MARKUP}.service"),
        ServiceStatus::Stopped,
        None,
    );
    let report = StatusReport {
        services: vec![flagged, quiet],
        errors: vec![],
        maintenance: vec![MaintenanceEntry {
            hostname: host.into(),
            unit: None,
            reason: format!("host {MARKUP}"),
            since: format!("2026-11-29{MARKUP}"),
        }],
    };
    let mut failed = result(
        host,
        &format!("step{MARKUP}"),
        "restart",
        1,
        Outcome::failed(Failure::JobFailed(format!("status text {MARKUP}"))),
    );
    failed.name = format!("demo{MARKUP}");
    failed.logs = vec![log_line(&format!("said {MARKUP}\x1b[2J"))];
    let jobs = vec![job(
        &format!("<b>{MARKUP}"),
        &format!("playbook {MARKUP}"),
        JobStatus::Interrupted,
        vec![failed],
    )];
    let mut hostile = param(MARKUP, ParamType::Enum, Some(MARKUP.into()));
    hostile.description = MARKUP.into();
    hostile.values = Some(vec![MARKUP.into()]);
    let mut pattern = param("p", ParamType::String, Some(MARKUP.into()));
    pattern.pattern = Some(MARKUP.into());
    let runbooks = vec![runbook(&format!("runbook{MARKUP}"), vec![hostile, pattern])];
    let key_name = format!("key{MARKUP}");
    let html = status_html(
        &key_name,
        Role::Admin,
        &hosts,
        Ok(&report),
        &jobs,
        &runbooks,
    );
    assert!(!html.contains(MARKUP), "raw markup in the page");
    assert!(!html.contains("<img"), "raw markup in the page");
    assert_eq!(html.matches("<script").count(), 1, "only the page's script");
    let login = render::page::login_page(Some(MARKUP), NONCE);
    assert!(!login.contains(MARKUP), "raw markup in the login form");
    insta::assert_snapshot!(html);
}

/// Each family's samples sorted: a family keeps its series in a hash map,
/// in no fixed order.
fn stable_metrics(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("#")) {
        if line.starts_with('#') {
            run.sort();
            out.extend(run.drain(..).map(String::from));
            out.push(line.to_string());
        } else {
            run.push(line);
        }
    }
    out.pop();
    out.join("\n")
}

#[test]
fn metrics_textfile() {
    use drover::render::metrics::{previous_success, textfile, LastRun};
    let unreachable = Outcome::failed(Failure::Unreachable("connect refused".into()));
    let report = JobReport {
        job_id: "550e8400-e29b-41d4-a716-446655440000".into(),
        // Free text: never a label.
        playbook: "nightly \"web\" restart".into(),
        started_at: "2024-01-01T00:00:00Z".into(),
        finished_at: "2024-01-01T00:00:09Z".into(),
        outcome: RunOutcome::Completed,
        results: vec![
            result(
                "web-1",
                "roll",
                "restart",
                800,
                Outcome::Ok { changed: true },
            ),
            result("web-2", "roll", "none", 0, unreachable.clone()),
            result("web-3", "roll", "none", 0, unreachable),
        ],
        inputs: None,
        retry_of: None,
    };
    let text = textfile(&LastRun {
        playbook: "nightly-restart",
        finished: 1_700_000_009.25,
        duration: 9.5,
        exit_code: 4,
        report: Some(&report),
        last_success: Some(1_699_990_000.0),
    });
    assert!(!text.contains("web"), "{text}");
    assert_eq!(previous_success(&text), Some(1_699_990_000.0));
    insta::assert_snapshot!(stable_metrics(&text));
}
