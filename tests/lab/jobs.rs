//! The systemd client's jobs against a lab host, through the library:
//! completion comes from JobRemoved with systemd's result string.

use crate::common;

use common::{lab, Lab};
use drover::model::inventory::Inventory;
use drover::model::unit::UnitName;
use drover::remote::carrier;
use drover::remote::systemd::JobEnd;

fn unit(s: &str) -> UnitName {
    UnitName::parse(s).expect("unit name")
}

/// A session to the second lab host (lab_plan reads the first three under
/// the same lock) and its name.
async fn second_host(lab: &Lab) -> (String, carrier::Session) {
    let inv = Inventory::load(&lab.inventory).expect("inventory");
    let host = inv.hosts[1.min(inv.hosts.len() - 1)].clone();
    let session = carrier::connect(&host).await.expect("connect");
    (host.name, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_a_failing_start_report_job_results() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let (name, session) = second_host(&lab).await;
    let sd = session.systemd();
    let idle = unit("demo-idle");
    let broken = unit("demo-broken");

    let was_active = lab.show(&name, "demo-idle.service")["ActiveState"] == "active";

    let started = sd.start(&idle).await.expect("start");
    assert_eq!(started.result, JobEnd::Done, "{started:?}");
    assert_eq!(
        lab.show(&name, "demo-idle.service")["ActiveState"],
        "active"
    );
    let facts = sd
        .unit_facts(std::slice::from_ref(&idle))
        .await
        .expect("facts");
    assert_eq!(facts["demo-idle.service"].active_state, "active");
    assert!(facts["demo-idle.service"].main_pid > 0);

    let stopped = sd.stop(&idle).await.expect("stop");
    assert_eq!(stopped.result, JobEnd::Done, "{stopped:?}");
    assert!(stopped.error_message().is_none());
    assert_eq!(
        lab.show(&name, "demo-idle.service")["ActiveState"],
        "inactive"
    );

    let failed = sd.start(&broken).await.expect("start broken");
    assert_eq!(failed.result, JobEnd::Failed, "{failed:?}");
    let msg = failed.error_message().expect("a message");
    assert!(
        msg.starts_with("job failed: unit entered failed state"),
        "{msg}"
    );
    assert!(msg.contains("Result=exit-code"), "{msg}");
    assert_eq!(
        lab.show(&name, "demo-broken.service")["ActiveState"],
        "failed"
    );

    // Restore: demo-broken back to inactive, demo-idle as it was.
    lab.ssh(&name, "systemctl reset-failed demo-broken.service");
    if was_active {
        sd.start(&idle).await.expect("restore");
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_disable_report_whether_anything_changed() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let (name, session) = second_host(&lab).await;
    let sd = session.systemd();
    let idle = unit("demo-idle");
    assert_eq!(sd.unit_file_state(&idle).await.expect("state"), "disabled");
    let on = sd.enable(&idle).await.expect("enable");
    assert!(!on.is_empty(), "enable changes something");
    assert!(
        sd.enable(&idle).await.expect("enable again").is_empty(),
        "enable is idempotent"
    );
    assert_eq!(sd.unit_file_state(&idle).await.expect("state"), "enabled");
    let off = sd.disable(&idle).await.expect("disable");
    assert!(!off.is_empty());
    assert_eq!(
        lab.ssh(&name, "systemctl is-enabled demo-idle.service || true")
            .trim(),
        "disabled"
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_one_connection_each_get_their_result() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let (name, session) = second_host(&lab).await;
    let sd = session.systemd();
    let web = unit("demo-web");
    let worker = unit("demo-worker");
    let before = lab.show(&name, "demo-web.service")["InvocationID"].clone();
    // Two identical restarts at once: systemd may merge the second into
    // the first job (same path); a different unit's job runs alongside.
    // One JobRemoved stream serves them all, each waiter gets its result.
    let (a, b, c) = tokio::join!(sd.restart(&web), sd.restart(&web), sd.restart(&worker));
    for r in [a, b, c] {
        let r = r.expect("job");
        assert_eq!(r.result, JobEnd::Done, "{r:?}");
    }
    let after = lab.show(&name, "demo-web.service");
    assert_eq!(after["ActiveState"], "active");
    assert_ne!(after["InvocationID"], before, "demo-web was restarted");
    assert_eq!(
        lab.show(&name, "demo-worker.service")["ActiveState"],
        "active"
    );
    session.close().await;
}
