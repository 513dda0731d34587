//! The snapshot's pure rules: signals, merges, freshness and bounds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::snapshot::{FullRead, HostSnap, Need, MAX_NAMED};
use crate::model::facts::UnitFacts;
use crate::model::maintenance::MaintenanceState;
use crate::remote::systemd::{UnitChange, UnitEvent};

fn unit(active: &str, sub: &str) -> UnitFacts {
    UnitFacts {
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        unit_file_state: "enabled".into(),
        ..UnitFacts::not_found()
    }
}

fn read(listing: &[(&str, UnitFacts)], named: &[(&str, UnitFacts)]) -> FullRead {
    let m = |v: &[(&str, UnitFacts)]| {
        v.iter()
            .map(|(n, f)| (n.to_string(), f.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    FullRead {
        listing: m(listing),
        named: m(named),
        maintenance: MaintenanceState::default(),
    }
}

fn changed(u: &str, active: &str, sub: &str) -> UnitEvent {
    UnitEvent::Changed {
        unit: u.into(),
        change: UnitChange {
            active_state: Some(active.into()),
            sub_state: Some(sub.into()),
            ..UnitChange::default()
        },
    }
}

fn held(s: &HostSnap, u: &str) -> Option<String> {
    s.view(&[u.to_string()]).map(|v| v[u].active_state.clone())
}

#[test]
fn a_signal_changes_the_unit_and_a_stale_read_does_not_undo_it() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    s.want(&["web.service".into()], t0);
    s.merge_full(read(&[("web.service", unit("active", "running"))], &[]), 0, t0);
    assert_eq!(held(&s, "web.service").as_deref(), Some("active"));
    // A heal starts, the unit stops (signal), then the heal's reply,
    // read before the stop, arrives: the signal's state stays.
    let since = s.seq;
    assert_eq!(s.apply(changed("web.service", "inactive", "dead")), Need::Nothing);
    assert_eq!(held(&s, "web.service").as_deref(), Some("inactive"));
    s.merge_full(read(&[("web.service", unit("active", "running"))], &[]), since, t0);
    assert_eq!(held(&s, "web.service").as_deref(), Some("inactive"));
    // A read that began after the signal wins.
    s.merge_full(read(&[("web.service", unit("active", "running"))], &[]), s.seq, t0);
    assert_eq!(held(&s, "web.service").as_deref(), Some("active"));
}

#[test]
fn freshness_needs_a_read_a_recent_confirmation_and_known_flags() {
    let t0 = Instant::now();
    let bound = Duration::from_secs(5);
    let mut s = HostSnap::default();
    s.lost("not read yet".into());
    assert!(!s.fresh(t0, bound));
    // A ping before any read confirms nothing.
    s.confirm(t0);
    assert!(!s.fresh(t0, bound));
    s.merge_full(read(&[], &[]), 0, t0);
    assert!(s.fresh(t0 + Duration::from_secs(5), bound));
    assert!(!s.fresh(t0 + Duration::from_secs(6), bound));
    s.confirm(t0 + Duration::from_secs(6));
    assert!(s.fresh(t0 + Duration::from_secs(10), bound));
    assert_eq!(
        s.age(t0 + Duration::from_secs(10)),
        Some(Duration::from_secs(4))
    );
    // A job ran there: maintenance flags unknown until read again.
    s.invalidate();
    s.confirm(t0 + Duration::from_secs(10));
    assert!(!s.fresh(t0 + Duration::from_secs(10), bound));
    // A read of the flags that began before the job wrote them is stale.
    let before = s.seq - 1;
    s.set_maintenance(MaintenanceState::default(), before);
    s.confirm(t0 + Duration::from_secs(11));
    assert!(!s.fresh(t0 + Duration::from_secs(11), bound));
    s.merge_full(read(&[], &[]), before, t0 + Duration::from_secs(11));
    assert!(!s.fresh(t0 + Duration::from_secs(11), bound));
    // One that began after it is current.
    s.set_maintenance(MaintenanceState::default(), s.seq);
    s.confirm(t0 + Duration::from_secs(11));
    assert!(s.fresh(t0 + Duration::from_secs(11), bound));
    // A lost connection: stale at once.
    s.lost("connection closed".into());
    assert!(!s.fresh(t0 + Duration::from_secs(11), bound));
}

#[test]
fn listings_follow_units_loaded_and_collected() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    assert_eq!(s.view(&[]), None, "no listing before a full read");
    s.merge_full(
        read(
            &[("a.service", unit("active", "running"))],
            &[],
        ),
        0,
        t0,
    );
    assert_eq!(s.view(&[]).map(|v| v.len()), Some(1));
    // A service loaded later is read, then listed.
    assert_eq!(
        s.apply(UnitEvent::New("b.service".into())),
        Need::Units(vec!["b.service".into()])
    );
    assert_eq!(s.apply(UnitEvent::New("x.mount".into())), Need::Nothing);
    let since = s.seq;
    s.merge_units(
        [("b.service".to_string(), unit("inactive", "dead"))].into(),
        since,
        &["b.service".into()],
    );
    let v = s.view(&[]).unwrap();
    assert_eq!(v.keys().collect::<Vec<_>>(), ["a.service", "b.service"]);
    // Collected: gone from the listing, and a read in flight from before
    // does not bring it back.
    let before = s.seq;
    s.apply(UnitEvent::Removed("b.service".into()));
    s.merge_units(
        [("b.service".to_string(), unit("inactive", "dead"))].into(),
        before,
        &[],
    );
    assert_eq!(s.view(&[]).map(|v| v.len()), Some(1));
    // A burst of signals about a unit being read costs one more read,
    // not one each.
    assert_eq!(
        s.apply(UnitEvent::New("c.service".into())),
        Need::Units(vec!["c.service".into()])
    );
    for _ in 0..50 {
        assert_eq!(s.apply(changed("c.service", "activating", "start")), Need::Nothing);
    }
    let since = s.seq;
    assert_eq!(
        s.merge_units(
            [("c.service".to_string(), unit("activating", "start"))].into(),
            since,
            &["c.service".into()],
        ),
        Need::Units(vec!["c.service".into()])
    );
    assert_eq!(
        s.merge_units(
            [("c.service".to_string(), unit("active", "running"))].into(),
            s.seq,
            &["c.service".into()],
        ),
        Need::Nothing
    );
    assert_eq!(s.view(&[]).unwrap()["c.service"].active_state, "active");
    // A daemon-reload asks for a full read.
    assert_eq!(s.apply(UnitEvent::Reloaded), Need::Full);
}

#[test]
fn a_named_unit_collected_reads_as_stopped_and_stays_followed() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    assert_eq!(s.want(&["w.service".into()], t0), vec!["w.service"]);
    s.merge_full(
        read(
            &[("w.service", unit("active", "running"))],
            &[("w.service", unit("active", "running"))],
        ),
        0,
        t0,
    );
    assert_eq!(
        s.apply(UnitEvent::Removed("w.service".into())),
        Need::FileState("w.service".into())
    );
    // Whether a file still defines it is not known yet: the host is read.
    assert_eq!(s.view(&["w.service".into()]), None);
    s.file_state("w.service", Some("disabled".into()));
    let v = s.view(&["w.service".into()]).unwrap();
    assert_eq!(
        (v["w.service"].active_state.as_str(), v["w.service"].sub_state.as_str()),
        ("inactive", "dead")
    );
    assert_eq!(v["w.service"].load_state, "loaded");
    // Not in the listing once collected.
    assert!(s.view(&[]).unwrap().is_empty());
    // A transient unit collected is gone: not-found, as LoadUnit says.
    // Collected with its file: loaded again, it is as it was.
    assert_eq!(s.apply(UnitEvent::New("w.service".into())), Need::Nothing);
    s.apply(UnitEvent::Removed("w.service".into()));
    s.file_state("w.service", None);
    // Not found is never answered from the entry: the host is read.
    assert_eq!(s.view(&["w.service".into()]), None);
    // Loaded anew once not found: UnitNew alone is what our own read of
    // it sends too (reading on it would loop), and so is its collection.
    assert_eq!(s.apply(UnitEvent::New("w.service".into())), Need::Nothing);
    assert_eq!(s.apply(UnitEvent::Removed("w.service".into())), Need::Nothing);
    assert_eq!(s.apply(UnitEvent::New("w.service".into())), Need::Nothing);
    // A change next (a start's job: a file was written since): read, and
    // not answered from until that read is in.
    assert_eq!(
        s.apply(changed("w.service", "activating", "start")),
        Need::Units(vec!["w.service".into()])
    );
    assert_eq!(s.view(&["w.service".into()]), None);
    let since = s.seq;
    s.merge_units(
        [("w.service".to_string(), unit("active", "running"))].into(),
        since,
        &["w.service".into()],
    );
    assert_eq!(held(&s, "w.service").as_deref(), Some("active"));
    // A unit never asked for is not held: the caller reads the host.
    assert_eq!(s.view(&["other.service".into()]), None);
}

#[test]
fn a_queued_job_is_not_answered_until_its_type_is_known() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    s.want(&["w.service".into()], t0);
    s.merge_full(read(&[], &[("w.service", unit("active", "running"))]), 0, t0);
    let need = s.apply(UnitEvent::Changed {
        unit: "w.service".into(),
        change: UnitChange {
            active_state: Some("deactivating".into()),
            job: Some(Some("/org/freedesktop/systemd1/job/7".into())),
            ..UnitChange::default()
        },
    });
    assert_eq!(
        need,
        Need::JobType {
            unit: "w.service".into(),
            job: "/org/freedesktop/systemd1/job/7".into()
        }
    );
    assert_eq!(s.view(&["w.service".into()]), None);
    // A stale answer for another job is ignored; the right one is kept.
    s.job_type("w.service", "/org/freedesktop/systemd1/job/6", Some("stop".into()));
    assert_eq!(s.view(&["w.service".into()]), None);
    s.job_type("w.service", "/org/freedesktop/systemd1/job/7", Some("restart".into()));
    let v = s.view(&["w.service".into()]).unwrap();
    assert_eq!(v["w.service"].job.as_deref(), Some("restart"));
    s.apply(UnitEvent::JobRemoved("w.service".into()));
    assert_eq!(s.view(&["w.service".into()]).unwrap()["w.service"].job, None);
}

#[test]
fn named_units_are_bounded_forgetting_the_least_recently_asked() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    for i in 0..MAX_NAMED + 10 {
        let t = t0 + Duration::from_millis(i as u64);
        s.want(&[format!("u{i}.service")], t);
    }
    let named = s.named();
    assert_eq!(named.len(), MAX_NAMED);
    assert_eq!(named[0], format!("u{}.service", MAX_NAMED + 9));
    assert!(!named.contains(&"u0.service".to_string()));
}

#[test]
fn reading_a_unit_that_is_not_there_does_not_read_it_again_and_again() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    s.merge_full(read(&[], &[]), 0, t0);
    // Something loads gone.service for a moment: one read.
    assert_eq!(
        s.apply(changed("gone.service", "inactive", "dead")),
        Need::Units(vec!["gone.service".into()])
    );
    // Our read loads it too, and systemd says so while it is read.
    assert_eq!(s.apply(UnitEvent::New("gone.service".into())), Need::Nothing);
    let since = s.seq;
    let nf = [("gone.service".to_string(), UnitFacts::not_found())].into();
    assert_eq!(
        s.merge_units(nf, since, &["gone.service".into()]),
        Need::Nothing,
        "a not-found unit is not read again"
    );
    // Its later signals are ignored, until one says it loaded.
    assert_eq!(s.apply(UnitEvent::New("gone.service".into())), Need::Nothing);
    assert_eq!(
        s.apply(changed("gone.service", "inactive", "dead")),
        Need::Nothing
    );
    let loaded = UnitEvent::Changed {
        unit: "gone.service".into(),
        change: UnitChange {
            load_state: Some("loaded".into()),
            ..UnitChange::default()
        },
    };
    assert_eq!(s.apply(loaded), Need::Units(vec!["gone.service".into()]));
}

#[test]
fn a_read_that_began_earlier_and_ends_later_does_not_undo_a_newer_one() {
    let t0 = Instant::now();
    let mut s = HostSnap::default();
    s.merge_full(read(&[], &[]), 0, t0);
    // A full read begins (a daemon-reload), then the unit starts: its
    // signal asks for a read of it, which ends first.
    let full_since = s.seq;
    assert_eq!(
        s.apply(changed("w.service", "active", "running")),
        Need::Units(vec!["w.service".into()])
    );
    let since = s.seq;
    s.merge_units(
        [("w.service".to_string(), unit("active", "running"))].into(),
        since,
        &["w.service".into()],
    );
    assert_eq!(held(&s, "w.service").as_deref(), Some("active"));
    // The full read saw the unit before it started.
    s.merge_full(
        read(&[("w.service", unit("inactive", "dead"))], &[]),
        full_since,
        t0,
    );
    assert_eq!(held(&s, "w.service").as_deref(), Some("active"));
}

#[test]
fn a_daemon_reload_unloads_nothing_held_and_answers_nothing_until_read_again() {
    let t0 = Instant::now();
    let bound = Duration::from_secs(5);
    let mut s = HostSnap::default();
    s.want(&["w.service".into()], t0);
    s.merge_full(
        read(
            &[("w.service", unit("active", "running"))],
            &[("w.service", unit("active", "running"))],
        ),
        0,
        t0,
    );
    assert!(s.fresh(t0, bound));
    // systemd unloads every unit as the reload begins: running ones too.
    let before = s.seq;
    assert_eq!(s.apply(UnitEvent::Reloading), Need::Nothing);
    assert!(!s.fresh(t0, bound), "answered while reloading");
    assert_eq!(s.apply(UnitEvent::Removed("w.service".into())), Need::Nothing);
    assert_eq!(s.apply(UnitEvent::New("w.service".into())), Need::Nothing);
    assert_eq!(s.apply(UnitEvent::Reloaded), Need::Full);
    // A full read that began before the reload ended does not make it
    // current again; one that began after it does.
    s.merge_full(read(&[("w.service", unit("active", "running"))], &[]), before, t0);
    assert!(!s.fresh(t0, bound), "a read from before the reload answered");
    s.merge_full(
        read(
            &[("w.service", unit("active", "running"))],
            &[("w.service", unit("active", "running"))],
        ),
        s.seq,
        t0,
    );
    assert!(s.fresh(t0, bound));
    assert_eq!(held(&s, "w.service").as_deref(), Some("active"));
}
