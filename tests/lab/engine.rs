//! The engine as a library against the lab: a job built from strings,
//! applied through `drover::engine::apply` with an event channel, as a
//! server will call it. Needs the lab (tests/lab); says so loudly without.

use crate::common;

use std::path::Path;

use common::lab;
use drover::engine::job::Job;
use drover::engine::{apply, ApplyOptions, Event, StopFlag};
use drover::model::outcome::Status;
use drover::model::report::{RunOutcome, Verdict};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Apply `playbook` over `inventory` text; the report and every event.
fn apply_collecting(playbook: &str, inventory: &Path) -> (drover::engine::Applied, Vec<Event>) {
    let inv_text = std::fs::read_to_string(inventory).unwrap();
    let job = Job::from_text(playbook, Path::new("<memory>"), &inv_text, inventory, None).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = StopFlag::default();
    let applied = runtime()
        .block_on(apply(&job, &ApplyOptions::default(), &stop, &tx))
        .unwrap();
    drop(tx);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (applied, events)
}

#[test]
fn any_passes_over_a_host_that_protects_the_unit() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let (p, q) = (lab.host(0).to_string(), lab.host(1).to_string());
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory_with(
        dir.path(),
        &format!("  {p}: {{ protected: [demo-worker.service] }}\n  {q}: {{}}\n"),
    );
    let (applied, _) = apply_collecting(
        "name: any protected\nsteps:\n  - id: stop-one\n    target: _any\n    service: { name: demo-worker, state: stopped }\n",
        &inv,
    );
    let worker = |h: &str| lab.show(h, "demo-worker.service")["ActiveState"].clone();
    let (on_p, on_q) = (worker(&p), worker(&q));
    lab.ssh(&q, "systemctl start demo-worker");
    let r = &applied.report;
    assert_eq!(r.results.len(), 1, "{r:?}");
    assert_eq!(r.results[0].hostname, q, "{r:?}");
    assert_eq!(
        (r.results[0].status, r.results[0].changed),
        (Status::Ok, true)
    );
    assert_eq!(on_p, "active", "the protected host was not touched");
    assert_eq!(on_q, "inactive");
    assert_eq!(Verdict::of_report(r).exit_code(), 0);
}

#[test]
fn events_arrive_in_order_with_batches() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let (p, q) = (lab.host(0).to_string(), lab.host(1).to_string());
    let (applied, events) = apply_collecting(
        &format!("name: rolling\nsteps:\n  - id: roll\n    target: [{p}, {q}]\n    serial: 1\n    service: {{ name: demo-worker, state: restarted }}\n    wait: {{ active: true, timeout: 30s }}\n"),
        &lab.inventory,
    );
    assert_eq!(applied.report.outcome, RunOutcome::Completed);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::JobStarted { .. } => "job".into(),
            Event::StepStarted { step, hosts } => format!("step {step} {hosts}"),
            Event::GateWaiting { host, .. } => format!("gate {host}"),
            Event::HostResult(r) => format!("result {} {:?}", r.hostname, r.status),
            Event::BatchDone { batch, failed, .. } => format!("batch {batch} {failed}"),
            Event::StepFinished { step } => format!("done {step}"),
            Event::Finished { outcome, .. } => format!("end {outcome}"),
            Event::HostRead { .. } => "read".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "job".to_string(),
            "step roll 2".into(),
            format!("gate {p}"),
            format!("result {p} Ok"),
            "batch 1 0".into(),
            format!("gate {q}"),
            format!("result {q} Ok"),
            "batch 2 0".into(),
            "done roll".into(),
            "end completed".into(),
        ]
    );
    // The journal holds what the events carried.
    let journal = std::fs::read_to_string(applied.journal.unwrap()).unwrap();
    let types: Vec<String> = journal
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"].as_str().unwrap_or("?").to_string()
        })
        .collect();
    assert_eq!(
        types,
        ["header", "intent", "result", "intent", "result", "end"],
        "{journal}"
    );
}
