//! The engine as a library, without the command line: a job built from
//! strings in memory, planned over facts held in memory, with typed values
//! back. Offline: nothing connects.

use std::path::Path;

use drover::engine::job::Job;
use drover::engine::plan::{plan, Plan, PlanOptions};
use drover::engine::NoEvents;
use drover::model::decide::check_protected;
use drover::model::error::Error;
use drover::model::facts::Facts;
use drover::model::outcome::{Kind, Status};

const INVENTORY: &str = r#"
defaults: { transport: ssh }
hosts:
  db-1: { labels: { role: db }, protected: [demo-worker.service] }
  db-2: { labels: { role: db } }
  db-3: { labels: { role: db } }
"#;

fn unit(active: &str) -> serde_json::Value {
    serde_json::json!({
        "load_state": "loaded", "active_state": active,
        "sub_state": if active == "active" { "running" } else { "dead" },
        "unit_file_state": "enabled", "invocation_id": "", "main_pid": 0
    })
}

fn facts() -> Facts {
    let host = |reachable: bool| {
        serde_json::json!({
            "reachable": reachable,
            "error": if reachable { serde_json::Value::Null } else { "unreachable: no route".into() },
            "units": { "demo-worker.service": unit("active"), "demo-web.service": unit("active") }
        })
    };
    let doc = serde_json::json!({
        "version": 1,
        "collected_at": "2026-01-01T00:00:00Z",
        "hosts": { "db-1": host(true), "db-2": host(true), "db-3": host(true) }
    });
    Facts::from_json(&doc.to_string(), Path::new("<memory>")).unwrap()
}

fn job(playbook: &str) -> Result<Job, Error> {
    Job::from_text(
        playbook,
        Path::new("<playbook>"),
        INVENTORY,
        Path::new("<inventory>"),
        None,
    )
}

fn plan_of(job: &Job) -> Plan {
    let opts = PlanOptions {
        reach: drover::remote::fanout::Reach::default(),
        limit: None,
        facts_label: "<memory>".into(),
        keep_facts: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let planned = rt
        .block_on(plan(job, Some(facts()), &opts, &NoEvents))
        .unwrap();
    assert!(!planned.incomplete);
    planned.plan
}

#[test]
fn a_job_from_strings_plans_without_the_command_line() {
    let job = job(
        "name: mem\nsteps:\n  - id: roll\n    target: role:db\n    serial: 1\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    let p = plan_of(&job);
    assert_eq!(p.steps.len(), 1);
    let rs = &p.steps[0].results;
    assert_eq!(rs.len(), 3);
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.status, Status::Ok);
        assert!(r.changed);
        assert_eq!(r.batch, i + 1, "serial: 1 is one host per batch");
    }
    assert_eq!(p.summary.changes, 3);
}

#[test]
fn any_does_not_pick_a_host_that_protects_the_unit() {
    let job = job(
        "name: any\nsteps:\n  - id: stop-one\n    target: _any\n    service: { name: demo-worker, state: stopped }\n",
    )
    .unwrap();
    // Not refused: `_any` has unprotected hosts to pick from.
    check_protected(&job.playbook, &job.inventory, &job.expanded, false).unwrap();
    let p = plan_of(&job);
    assert_eq!(p.steps[0].picked, ["db-2"]);
    let r = &p.steps[0].results[0];
    assert_eq!(
        (&*r.hostname, r.status, r.changed),
        ("db-2", Status::Ok, true)
    );
}

#[test]
fn explicit_targets_and_an_all_protected_any_are_refused() {
    let explicit = job(
        "name: x\nsteps:\n  - id: stop\n    target: db-1\n    service: { name: demo-worker, state: stopped }\n",
    )
    .unwrap();
    let e = check_protected(
        &explicit.playbook,
        &explicit.inventory,
        &explicit.expanded,
        false,
    )
    .unwrap_err();
    assert_eq!(e.code(), 403, "{}", e.details());
    assert!(e.details().contains("db-1"), "{}", e.details());
    check_protected(
        &explicit.playbook,
        &explicit.inventory,
        &explicit.expanded,
        true,
    )
    .unwrap();

    let only_protected = job(
        "name: x\nsteps:\n  - id: stop\n    target: _any\n    service: { name: demo-worker, state: stopped }\n",
    )
    .unwrap();
    let limited = Job::new(
        drover::model::playbook::Playbook::from_str(
            "name: x\nsteps:\n  - id: stop\n    target: _any\n    service: { name: demo-worker, state: stopped }\n",
            Path::new("<playbook>"),
        )
        .unwrap(),
        only_protected.inventory.clone(),
        Some("db-1"),
    )
    .unwrap();
    let e = check_protected(
        &limited.playbook,
        &limited.inventory,
        &limited.expanded,
        false,
    )
    .unwrap_err();
    assert_eq!(e.code(), 403);
}

#[test]
fn skips_carry_their_kind() {
    let job = job(
        "name: when\nsteps:\n  - id: web-only\n    target: _all\n    when: \"host.name == 'db-3'\"\n    service: { name: demo-web, state: stopped }\n",
    )
    .unwrap();
    let p = plan_of(&job);
    let kinds: Vec<Option<Kind>> = p.steps[0].results.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Some(Kind::When), Some(Kind::When), None]);
}

#[test]
fn bad_input_in_memory_is_a_positioned_error() {
    let e = job("name: bad\nsteps:\n  - id: a\n    target: db-9\n    service: { name: x, state: started }\n")
        .unwrap_err();
    assert_eq!(e.code(), 400);
    assert!(
        e.details().contains("unknown host `db-9`"),
        "{}",
        e.details()
    );
    assert!(e.details().contains("<playbook> line"), "{}", e.details());
}

#[test]
fn unit_file_steps_on_a_protected_unit_are_refused() {
    for module in [
        "unit: { name: demo-worker, state: absent }",
        "unit: { name: demo-worker, content: \"[Service]\\nExecStart=/bin/true\\n\" }",
    ] {
        let j = job(&format!(
            "name: x\nsteps:\n  - id: replace\n    target: db-1\n    {module}\n"
        ))
        .unwrap();
        let e = check_protected(&j.playbook, &j.inventory, &j.expanded, false).unwrap_err();
        assert_eq!(e.code(), 403, "{module}: {}", e.details());
        assert!(
            e.details()
                .contains("unit file of demo-worker.service on host `db-1`"),
            "{}",
            e.details()
        );
        check_protected(&j.playbook, &j.inventory, &j.expanded, true).unwrap();
    }
    // An unprotected unit is not refused.
    let j = job("name: x\nsteps:\n  - id: other\n    target: db-1\n    unit: { name: demo-web, state: absent }\n")
        .unwrap();
    check_protected(&j.playbook, &j.inventory, &j.expanded, false).unwrap();
}
