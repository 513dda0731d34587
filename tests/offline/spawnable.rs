//! The engine's entry points make futures a multi-threaded runtime can
//! spawn (`Send + 'static` once their inputs are owned), so `drover serve`
//! runs each job as a tokio task and awaits reads in its handlers, with no
//! thread of its own per job and no blocking wrapper. This file fails to
//! compile when one of them stops being Send; the test then spawns each
//! on a runtime and checks it ran to its end.

use std::path::Path;
use std::sync::Arc;

use drover::engine::apply::{apply, ApplyOptions};
use drover::engine::events::{EventSink, NoEvents, StopFlag};
use drover::engine::health::{health, HealthRequest};
use drover::engine::job::Job;
use drover::engine::live::collect_facts;
use drover::engine::plan::{plan, FactsSource, PlanOptions};
use drover::engine::status::status;
use drover::model::facts::Facts;
use drover::model::inventory::Inventory;
use drover::remote::fanout::Reach;

/// Compiles only for a future a multi-threaded runtime can spawn.
fn spawnable<F>(f: F) -> F
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    f
}

/// Hosts nothing answers on: every read fails fast, as an unreachable host.
const INVENTORY: &str = r#"
defaults: { transport: ssh, connect_timeout: 1s }
hosts:
  gone-1: { address: 127.0.0.1, port: 1 }
  gone-2: { address: 127.0.0.1, port: 1 }
"#;

const PLAYBOOK: &str =
    "name: spawn\nsteps:\n  - id: roll\n    target: _all\n    serial: 1\n    service: { name: demo-web, state: restarted }\n";

fn job() -> Job {
    Job::from_text(
        PLAYBOOK,
        Path::new("<playbook>"),
        INVENTORY,
        Path::new("<inventory>"),
        None,
    )
    .unwrap()
}

fn inventory() -> Inventory {
    job().inventory
}

fn reach() -> Reach {
    Reach::new(2, std::time::Duration::from_secs(5))
}

fn no_facts() -> Facts {
    let doc = serde_json::json!({
        "version": 1,
        "collected_at": "2026-01-01T00:00:00Z",
        "hosts": {
            "gone-1": { "reachable": false, "error": "unreachable: test", "units": {} },
            "gone-2": { "reachable": false, "error": "unreachable: test", "units": {} }
        }
    });
    Facts::from_json(&doc.to_string(), Path::new("<memory>")).unwrap()
}

#[test]
fn the_engine_entry_points_are_spawnable_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events: Arc<dyn EventSink> = Arc::new(NoEvents);
    let opts = PlanOptions {
        reach: reach(),
        limit: None,
        allow_protected: false,
        keep_facts: false,
        carry: None,
    };

    let (job_live, o, ev) = (job(), opts.clone(), events.clone());
    let planned_live = spawnable(async move { plan(&job_live, FactsSource::Live, &o, &*ev).await });
    let (job_offline, o, ev) = (job(), opts.clone(), events.clone());
    let planned_offline = spawnable(async move {
        plan(
            &job_offline,
            FactsSource::Given {
                facts: no_facts(),
                label: String::new(),
            },
            &o,
            &*ev,
        )
        .await
    });
    let (job_apply, ev) = (job(), events.clone());
    let jobs_dir = tempfile::tempdir().unwrap();
    let apply_opts = ApplyOptions {
        forks: 2,
        report: Some(jobs_dir.path().join("report.json")),
        ..ApplyOptions::default()
    };
    let applied =
        spawnable(async move { apply(&job_apply, &apply_opts, &StopFlag::default(), &*ev).await });
    let (inv, ev) = (inventory(), events.clone());
    let read_status =
        spawnable(async move { status(&inv, None, &[], reach(), &*ev).await.map(|r| r.1) });
    let (inv, ev) = (inventory(), events.clone());
    let read_facts = spawnable(async move {
        collect_facts(&inv, Some("gone-1"), &[], reach(), &*ev)
            .await
            .map(|r| r.1.len())
    });
    let inv = inventory();
    let req = HealthRequest {
        unit: "demo-web".into(),
        target: None,
        http: Vec::new(),
        tcp: Vec::new(),
        command: Vec::new(),
        reach: reach(),
    };
    let checked = spawnable(async move { health(&inv, &req).await.map(|r| r.hosts.len()) });

    rt.block_on(async {
        let live = tokio::spawn(planned_live).await.unwrap().unwrap();
        assert!(live.incomplete, "a live plan over hosts nothing answers on");
        let offline = tokio::spawn(planned_offline).await.unwrap().unwrap();
        assert!(!offline.incomplete);
        let report = tokio::spawn(applied).await.unwrap().unwrap().report;
        assert_eq!(report.results.len(), 2, "{report:?}");
        assert!(tokio::spawn(read_status).await.unwrap().is_ok());
        assert_eq!(tokio::spawn(read_facts).await.unwrap().unwrap(), 1);
        assert_eq!(tokio::spawn(checked).await.unwrap().unwrap(), 2);
    });
}
