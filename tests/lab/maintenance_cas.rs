//! Two drovers updating one host's maintenance flags never drop each
//! other's: a drover that read the state file before another one wrote it
//! finds the file changed, reads it again and keeps both flags. Needs the
//! lab (tests/lab).

use crate::common;

use common::{lab, run};
use drover::model::maintenance::MaintenanceGoal;
use drover::model::unit::UnitName;

#[test]
fn a_stale_read_does_not_drop_another_drovers_flag() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let host = lab.host(0).to_string();
    const CLEAR: &str = "rm -f /var/lib/drover/maintenance.json";
    lab.ssh(&host, CLEAR);
    let _clean = lab.undo_on_drop(&host, CLEAR);
    // This session read the (absent) state file when it opened...
    let (rt, session) = lab.session(&host);
    // ...then another drover sets a flag on the host.
    let (code, out, err) = run(lab
        .drover()
        .args([
            "maintenance",
            "enable",
            "demo-web",
            "--target",
            &host,
            "--reason",
            "the other drover",
            "-i",
        ])
        .arg(&lab.inventory));
    assert_eq!(code, 0, "{out}\n{err}");
    // Our update, decided on the stale read, must not overwrite it.
    let goal = MaintenanceGoal {
        enable: true,
        reason: "this drover".into(),
        unit: Some(UnitName::parse("demo-worker").unwrap()),
    };
    let (action, now) = rt
        .block_on(drover::remote::maintenance::apply_goal_on(&session, &goal))
        .expect("update");
    rt.block_on(session.close());
    assert!(action.is_some());
    let file = lab.ssh(&host, "cat /var/lib/drover/maintenance.json");
    let state: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(
        state["units"]["demo-web.service"]["reason"], "the other drover",
        "{file}"
    );
    assert_eq!(
        state["units"]["demo-worker.service"]["reason"], "this drover",
        "{file}"
    );
    assert_eq!(now.units.len(), 2, "{now:?}");
}
