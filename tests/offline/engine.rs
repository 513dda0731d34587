//! The engine as a library, without the command line: a job built from
//! strings in memory, planned over facts held in memory, with typed values
//! back. Offline: nothing connects.

use std::path::Path;

use drover::engine::job::Job;
use drover::engine::plan::{plan, FactsSource, Plan, PlanOptions};
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

/// Facts from memory, labelled as the plan shows them.
fn memory(facts: Facts) -> FactsSource {
    FactsSource::Given {
        facts,
        label: "<memory>".into(),
    }
}

fn plan_of(job: &Job) -> Plan {
    let opts = PlanOptions {
        reach: drover::remote::fanout::Reach::default(),
        limit: None,
        allow_protected: true,
        keep_facts: false,
        carry: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let planned = rt
        .block_on(plan(job, memory(facts()), &opts, &NoEvents))
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

/// A host the facts say could not be reached fails as apply words it:
/// "unreachable: " once, then the connection's error.
#[test]
fn an_unreachable_host_fails_in_apply_s_words() {
    let job = job(
        "name: u\nsteps:\n  - id: web\n    target: [db-2, db-3]\n    service: { name: demo-web, state: started }\n",
    )
    .unwrap();
    let opts = PlanOptions {
        reach: drover::remote::fanout::Reach::default(),
        limit: None,
        allow_protected: true,
        keep_facts: false,
        carry: None,
    };
    let mut f = facts();
    for (host, error) in [
        ("db-2", "unreachable: connection refused: port 22"),
        ("db-3", "no route to host"),
    ] {
        let hf = f.hosts.get_mut(host).unwrap();
        hf.reachable = false;
        hf.error = Some(error.into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = rt
        .block_on(plan(&job, memory(f), &opts, &NoEvents))
        .unwrap()
        .plan;
    let errors: Vec<(Option<&str>, Option<Kind>)> = p.steps[0]
        .results
        .iter()
        .map(|r| (r.error.as_deref(), r.kind))
        .collect();
    assert_eq!(
        errors,
        [
            (
                Some("unreachable: connection refused: port 22"),
                Some(Kind::Unreachable)
            ),
            (
                Some("unreachable: no route to host"),
                Some(Kind::Unreachable)
            ),
        ]
    );
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

const TOKEN: &str = "tok-NEW-5b1f0c";
const TOKEN_BEFORE: &str = "tok-OLD-93ad2e";
const DB_PASSWORD: &str = "hunter2-but-longer";

/// A playbook whose secrets go into a unit template, a verbatim unit file,
/// a `wait.http` URL and a maintenance reason. `token_before` is the value
/// the hosts hold now, listed too (as a rotation would) so the diff can
/// show the change without showing either value.
fn secret_job(dir: &Path) -> Job {
    std::fs::write(
        dir.join("app.j2"),
        "[Service]\nEnvironment=TOKEN={{ vars.token }}\nExecStart=/usr/bin/app --db postgres://app:{{ vars.db_password }}@db/app\n",
    )
    .unwrap();
    let playbook = format!(
        r#"name: secrets
vars:
  token: {TOKEN}
  token_before: {TOKEN_BEFORE}
  db_password: "{DB_PASSWORD}"
secret_vars: [token, token_before, db_password]
steps:
  - id: app
    target: role:db
    unit: {{ name: drover-app, template: app.j2 }}
  - id: sidecar
    target: db-2
    unit: {{ name: drover-sidecar, content: "[Service]\nEnvironment=TOKEN={TOKEN}\n" }}
  - id: web
    target: role:db
    service: {{ name: demo-web, state: restarted }}
    wait: {{ http: "http://{{{{ host.name }}}}:8080/ready?token={{{{ vars.token }}}}", timeout: 5s }}
  - id: drain
    target: db-1
    maintenance: {{ enable: true, reason: "rotating {{{{ vars.token }}}}" }}
"#
    );
    Job::from_text(
        &playbook,
        &dir.join("pb.yml"),
        INVENTORY,
        Path::new("<inventory>"),
        None,
    )
    .unwrap()
}

/// db-1 holds the app's file rendered with the previous token, db-2 has
/// no files yet, db-3 is in maintenance for a reason quoting the token.
fn secret_facts() -> Facts {
    let old_file = format!(
        "[Service]\nEnvironment=TOKEN={TOKEN_BEFORE}\nExecStart=/usr/bin/app --db postgres://app:{DB_PASSWORD}@db/app\n"
    );
    let units = serde_json::json!({ "demo-web.service": unit("active") });
    let doc = serde_json::json!({
        "version": 1,
        "collected_at": "2026-01-01T00:00:00Z",
        "hosts": {
            "db-1": { "reachable": true, "units": units,
                      "unit_files": { "drover-app.service": old_file } },
            "db-2": { "reachable": true, "units": units,
                      "unit_files": { "drover-app.service": null, "drover-sidecar.service": null } },
            "db-3": { "reachable": true, "units": units,
                      "maintenance": { "reason": format!("rotating {TOKEN_BEFORE}"), "since": "2026-01-01T00:00:00Z" },
                      "unit_files": { "drover-app.service": null } }
        }
    });
    Facts::from_json(&doc.to_string(), Path::new("<memory>")).unwrap()
}

#[test]
fn secret_values_never_show_in_any_plan_format() {
    use drover::model::secret::marker;
    use drover::render::plan::{render, Format};
    let dir = tempfile::tempdir().unwrap();
    let job = secret_job(dir.path());
    let opts = PlanOptions {
        reach: drover::remote::fanout::Reach::default(),
        limit: None,
        allow_protected: true,
        keep_facts: true,
        carry: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = rt
        .block_on(plan(&job, memory(secret_facts()), &opts, &NoEvents))
        .unwrap()
        .plan;

    let (token, before) = (marker("token", TOKEN), marker("token_before", TOKEN_BEFORE));
    for (what, out) in [
        ("text", render(&p, Format::Text, false)),
        ("text in colour", render(&p, Format::Text, true)),
        ("markdown", render(&p, Format::Markdown, false)),
        ("json", render(&p, Format::Json, false)),
    ] {
        for value in [TOKEN, TOKEN_BEFORE, DB_PASSWORD] {
            assert!(!out.contains(value), "{what} shows {value}:\n{out}");
        }
        // The markers stand in: the unit files' lines, the maintenance
        // reason, the skip of the host in maintenance.
        for m in [&token, &before, &marker("db_password", DB_PASSWORD)] {
            assert!(out.contains(m.as_str()), "{what} lacks {m}:\n{out}");
        }
    }

    // The file changes only in the token, and the diff shows it: the
    // markers carry different digests.
    let app = p.hosts[0]
        .units
        .iter()
        .find(|u| u.name == "drover-app.service")
        .unwrap();
    let line = |lines: &[String]| {
        lines
            .iter()
            .find(|l| l.contains("Environment=TOKEN="))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        line(&app.before_extra),
        format!("    | Environment=TOKEN={before}")
    );
    assert_eq!(
        line(&app.after_extra),
        format!("    | Environment=TOKEN={token}")
    );
    let skipped = p.steps[0]
        .results
        .iter()
        .find(|r| &*r.hostname == "db-3")
        .unwrap();
    assert_eq!(
        skipped.error.as_deref(),
        Some(format!("skipped: in maintenance: rotating {before}").as_str())
    );
    // What the host receives is the real value.
    let db1 = job.expanded[0].task(0).unwrap();
    assert!(db1.content.as_deref().unwrap().contains(TOKEN));
}

#[test]
fn a_secret_in_a_unit_name_is_refused_and_errors_hide_it() {
    // A valid name would be shown everywhere: refused, without the value.
    let e = job(&format!(
        "name: x\nvars: {{ svc: {TOKEN} }}\nsecret_vars: [svc]\nsteps:\n  - id: a\n    target: db-1\n    service: {{ name: \"{{{{ vars.svc }}}}\", state: started }}\n"
    ))
    .unwrap_err();
    let d = e.details();
    assert_eq!(e.code(), 400);
    assert!(d.contains("contains the value of secret `svc`"), "{d}");
    assert!(!d.contains(TOKEN), "{d}");
    // An invalid one: the unit-name error would quote it.
    let e = job(
        "name: x\nvars: { svc: \"bad;name\" }\nsecret_vars: [svc]\nsteps:\n  - id: a\n    target: db-1\n    service: { name: \"{{ vars.svc }}\", state: started }\n",
    )
    .unwrap_err();
    let d = e.details();
    assert!(!d.contains("bad;name"), "{d}");
    assert!(
        d.contains(&drover::model::secret::marker("svc", "bad;name")),
        "{d}"
    );
}

/// A roll begun at 03:59 in a window that closes at 04:00: batch 1 starts,
/// the clock passes 04:00 while it runs, and no later batch (nor a later
/// step) starts; the report says why for each and the run is interrupted
/// (exit 3). The hosts are this machine's bus at sockets that do not
/// exist: unreachable at once, nothing is contacted, and the clock is set
/// instead of slept on.
#[test]
fn no_batch_starts_after_the_window_closes() {
    use chrono::{DateTime, Utc};
    use drover::engine::{apply, ApplyOptions, Clock, Event, EventSink, StopFlag};
    use drover::model::report::{RunOutcome, Verdict};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let bus = |h: &str| {
        format!(
            "  {h}: {{ transport: local, bus: \"unix:path={}/no-bus-{h}\" }}\n",
            dir.path().display()
        )
    };
    let inventory = format!("hosts:\n{}{}{}", bus("a"), bus("b"), bus("c"));
    let job = Job::from_text(
        "name: roll\nwindow: { start: \"02:00\", end: \"04:00\", tz: UTC }\nsteps:\n  - id: roll\n    target: [a, b, c]\n    serial: 1\n    service: { name: demo-web, state: restarted }\n  - id: after\n    target: b\n    service: { name: demo-idle, state: started }\n",
        Path::new("<playbook>"),
        &inventory,
        Path::new("<inventory>"),
        None,
    )
    .unwrap();
    let at = |t: &str| -> DateTime<Utc> { format!("2026-01-03T{t}Z").parse().unwrap() };

    /// Moves the clock to `then` when batch 1 is over.
    struct Roll {
        now: Arc<Mutex<DateTime<Utc>>>,
        then: DateTime<Utc>,
        events: Mutex<Vec<Event>>,
    }
    impl EventSink for Roll {
        fn event(&self, e: &Event) {
            if let Event::BatchDone { batch: 1, .. } = e {
                *self.now.lock().unwrap() = self.then;
            }
            self.events.lock().unwrap().push(e.clone());
        }
    }
    let roll = |then: &str, ignore_window: bool| {
        let now = Arc::new(Mutex::new(at("03:59:00")));
        let sink = Roll {
            now: now.clone(),
            then: at(then),
            events: Mutex::new(Vec::new()),
        };
        let opts = ApplyOptions {
            clock: Clock::new(move || *now.lock().unwrap()),
            ignore_window,
            report: Some(dir.path().join("report.json")),
            ..ApplyOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let applied = rt
            .block_on(apply(&job, &opts, &StopFlag::default(), &sink))
            .unwrap();
        let results: Vec<(String, String, Status, Option<String>)> = applied
            .report
            .results
            .iter()
            .map(|r| {
                (
                    r.step.clone(),
                    r.hostname.clone(),
                    r.status,
                    r.error.clone(),
                )
            })
            .collect();
        let batches = sink
            .events
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e, Event::BatchDone { .. }))
            .count();
        (applied.report, results, batches)
    };
    let row = |step: &str, host: &str, status, error: &str| {
        (
            step.to_string(),
            host.to_string(),
            status,
            Some(error.to_string()),
        )
    };
    // The window closes while batch 1 runs.
    let (report, results, batches) = roll("04:00:30", false);
    let closed = "skipped: the window (02:00-04:00 UTC) closed before this batch";
    assert_eq!(results.len(), 4, "{results:?}");
    assert_eq!(results[0].0, "roll");
    assert_eq!(results[0].2, Status::Failed, "batch 1 ran: {results:?}");
    assert!(results[0].3.as_deref().unwrap().starts_with("unreachable"));
    assert_eq!(
        results[1..],
        [
            row("roll", "b", Status::Skipped, closed),
            row("roll", "c", Status::Skipped, closed),
            row("after", "b", Status::Skipped, closed),
        ]
    );
    assert_eq!(report.results[1].kind, Some(Kind::Interrupted));
    assert_eq!(batches, 1, "no BatchDone for the batches never started");
    assert_eq!(report.outcome, RunOutcome::Interrupted);
    assert_eq!(Verdict::of_report(&report).exit_code(), 3);

    // Still 03:59:59 after batch 1: every batch and step starts.
    let (report, results, batches) = roll("03:59:59", false);
    assert_eq!(report.outcome, RunOutcome::Completed, "{results:?}");
    assert_eq!(batches, 4, "three of `roll`, one of `after`");
    let statuses: Vec<Status> = results.iter().map(|r| r.2).collect();
    assert_eq!(
        statuses,
        [
            Status::Failed,
            Status::Failed,
            Status::Failed,
            Status::Skipped
        ]
    );
    assert!(!format!("{results:?}").contains("window"), "{results:?}");

    // --ignore-window: the window's close changes nothing.
    let (report, _, batches) = roll("04:00:30", true);
    assert_eq!((report.outcome, batches), (RunOutcome::Completed, 4));
}
