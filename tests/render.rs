//! Snapshots of what people read: the plan as text, markdown and json, the
//! status table and the apply lines, each rendered by a pure function from
//! engine values built here (no lab, no clock). A change to any of them
//! shows up as a snapshot diff in review (`tests/snapshots/`).

use std::path::Path;

use drover::engine::job::Job;
use drover::engine::plan::{simulate, Plan, PlanLabels};
use drover::engine::status::{
    MaintenanceEntry, ServiceStatus, StatusEntry, StatusError, StatusReport,
};
use drover::model::facts::Facts;
use drover::model::outcome::{Failure, Outcome, SkipReason};
use drover::model::report::{JobReport, JobResult, RunOutcome};
use drover::render;

/// The bundled example: playbook, inventory and facts from examples/.
fn example_plan() -> Plan {
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

fn entry(host: &str, unit: &str, status: ServiceStatus, up: Option<u64>) -> StatusEntry {
    StatusEntry {
        hostname: host.into(),
        name: unit.into(),
        status,
        start_time: up.map(|_| "2026-11-27T01:00:00Z".to_string()),
        uptime: up,
        active_state: "active".into(),
        sub_state: "running".into(),
        load_state: "loaded".into(),
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

fn result(host: &str, step: &str, action: &str, ms: u64, outcome: Outcome) -> JobResult {
    let mut r = JobResult::new(host, step, "demo-web.service", &outcome);
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
    };
    text.push_str(&render::apply::summary(
        &report,
        Some(Path::new("/var/log/drover/report.json")),
        Some(Path::new("/var/log/drover/report.json.journal")),
    ));
    insta::assert_snapshot!(text);
}
