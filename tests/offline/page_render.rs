//! The status page's pure renderers: the fleet's tiles (counts, filter,
//! pager), a host's page, a job's progress and timeline (SVG), the job
//! history and a job's page, a dry run's plan; and what the tiles make
//! of units' states. Snapshots, and hostile text escaped everywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use drover::engine::job_store::{JobProgress, JobStatus, JobView, StepProgress};
use drover::engine::status::{ServiceStatus, StatusEntry, StatusReport};
use drover::model::facts::Maintenance;
use drover::model::keys::Role;
use drover::model::outcome::{Failure, Outcome, SkipReason};
use drover::render;
use drover::render::fleet::{
    tile_state, FleetState, Grid, GridFilter, HostPage, HostState, TileState,
};
use drover::render::history::{History, HistoryFilter, JobPage};
use drover::render::page::{Chrome, PageRunbook, StatusPage};
use drover::render::timeline::Live;

use super::render::{example_plan, job, result, CSRF, MARKUP, NONCE};

fn now() -> chrono::DateTime<chrono::Utc> {
    "2026-11-30T02:00:12Z".parse().unwrap()
}

fn read_at() -> Option<chrono::DateTime<chrono::Utc>> {
    Some("2026-11-30T02:00:00Z".parse().unwrap())
}

/// A unit whose systemd states match its listing word.
fn unit(host: &str, name: &str, status: ServiceStatus) -> StatusEntry {
    let (active, sub) = match status {
        ServiceStatus::Running => ("active", "running"),
        ServiceStatus::Stopped => ("inactive", "dead"),
        ServiceStatus::Starting => ("activating", "start"),
        ServiceStatus::Restarting => ("activating", "auto-restart"),
        ServiceStatus::Failed => ("failed", "failed"),
    };
    StatusEntry {
        hostname: host.into(),
        name: name.into(),
        status,
        start_time: status.is_up().then(|| "2026-11-27T01:00:00Z".to_string()),
        uptime: status.is_up().then_some(3 * 86_400 + 3539),
        active_state: active.into(),
        sub_state: sub.into(),
        load_state: "loaded".into(),
        unit_file_state: String::new(),
        main_pid: None,
        description: String::new(),
        maintenance: None,
    }
}

fn host(name: &str, units: Vec<StatusEntry>) -> HostState {
    HostState {
        name: name.into(),
        address: format!("10.0.0.{}", name.len()),
        labels: vec!["role=web".into()],
        units: Arc::new(units),
        error: None,
        maintenance: None,
    }
}

fn flag(reason: &str) -> Maintenance {
    Maintenance {
        reason: reason.into(),
        since: "2026-11-29T22:00:00.000Z".into(),
    }
}

fn watched() -> Arc<BTreeSet<String>> {
    Arc::new(["demo-web.service".to_string()].into_iter().collect())
}

/// Five hosts, one in each tile state.
fn fleet() -> FleetState {
    let ok = host(
        "web-1",
        vec![
            unit("web-1", "demo-web.service", ServiceStatus::Running),
            unit("web-1", "setup.service", ServiceStatus::Stopped),
        ],
    );
    let warn = host(
        "web-2",
        vec![unit("web-2", "demo-web.service", ServiceStatus::Restarting)],
    );
    let crit = host(
        "web-3",
        vec![
            unit("web-3", "demo-web.service", ServiceStatus::Running),
            unit("web-3", "demo-broken.service", ServiceStatus::Failed),
        ],
    );
    let mut held = unit("db-1", "demo-web.service", ServiceStatus::Stopped);
    held.maintenance = Some(flag("deploy"));
    let maint = host("db-1", vec![held]);
    let mut gone = host("db-2", vec![]);
    gone.error = Some("unreachable: connection refused: port 22".into());
    FleetState {
        hosts: vec![ok, warn, crit, maint, gone],
        read_at: read_at(),
        error: None,
        watched: watched(),
    }
}

#[test]
fn tiles_take_the_worst_watched_unit_and_the_unit_filter_narrows_it() {
    let f = fleet();
    let states: Vec<TileState> = f
        .hosts
        .iter()
        .map(|h| tile_state(h, &f.watched, None))
        .collect();
    assert_eq!(
        states,
        [
            TileState::Passing,
            TileState::Warning,
            TileState::Critical,
            TileState::Maintenance,
            TileState::Unreachable
        ]
    );
    // An unwatched stopped unit does not count; filtered to the watched
    // unit, web-3's failed other unit no longer does either.
    assert_eq!(
        tile_state(&f.hosts[2], &f.watched, Some("demo-web.service")),
        TileState::Passing
    );
    // The whole host in maintenance outranks its units.
    let mut h = f.hosts[2].clone();
    h.maintenance = Some(flag("disk swap"));
    assert_eq!(tile_state(&h, &f.watched, None), TileState::Maintenance);
}

fn chrome(role: Role) -> Chrome<'static> {
    Chrome {
        key_name: "oncall",
        role,
        csrf: CSRF,
    }
}

/// The grid section alone, two tiles a page: counts over all five, the
/// second page's tiles, links to the others.
#[test]
fn fleet_tiles() {
    let f = fleet();
    let filter = GridFilter {
        selector: "role:web,!lab-3".into(),
        unit: String::new(),
    };
    let mut b = String::new();
    render::fleet::grid_section(
        &mut b,
        &Grid {
            fleet: &f,
            filter: &filter,
            filter_error: None,
            page: 2,
            per_page: 2,
            now: now(),
        },
    );
    assert_eq!(b.matches("class=\"tile ").count(), 2);
    assert!(
        b.contains("rel=\"prev\" href=\"/?page=1&amp;selector=role%3Aweb%2C%21lab-3\""),
        "{b}"
    );
    insta::assert_snapshot!(b);
}

/// The whole page: a refused filter says why.
#[test]
fn fleet_page_with_a_refused_filter() {
    let f = fleet();
    let filter = GridFilter {
        selector: "role:".into(),
        unit: String::new(),
    };
    let c = chrome(Role::Read);
    let grid = Grid {
        fleet: &f,
        filter: &filter,
        filter_error: Some("hosts `role:`: empty label value"),
        page: 1,
        per_page: 200,
        now: now(),
    };
    let html = render::page::status_page(
        &StatusPage {
            chrome: &c,
            grid: &grid,
            jobs: &[],
            runbooks: &[],
        },
        NONCE,
    );
    assert!(html.contains("id=\"filter-error\""));
    assert_eq!(html.matches("class=\"tile ").count(), 5);
    insta::assert_snapshot!(html);
}

/// A host's page for an operate key: failed first, stopped folded,
/// health per unit, maintenance toggles.
#[test]
fn host_page() {
    let mut h = fleet().hosts[2].clone();
    let mut units = (*h.units).clone();
    units.push(unit("web-3", "setup.service", ServiceStatus::Stopped));
    let mut flagged = unit("web-3", "demo-cache.service", ServiceStatus::Stopped);
    flagged.maintenance = Some(flag("cache rebuild"));
    units.push(flagged);
    h.units = Arc::new(units);
    let c = chrome(Role::Operate);
    let html = render::fleet::host_page(
        &HostPage {
            chrome: &c,
            host: &h,
            watched: &watched(),
            read_at: read_at(),
            now: now(),
        },
        NONCE,
    );
    let failed = html.find("demo-broken.service").unwrap();
    let running = html.find("data-unit=\"demo-web.service\"").unwrap();
    assert!(failed < running, "failed units first");
    let folded = html.find("<details id=\"stopped\">").unwrap();
    assert!(html.find("data-unit=\"setup.service\"").unwrap() > folded);
    assert_eq!(html.matches("class=\"maint-form\"").count(), 5);
    insta::assert_snapshot!(html);
}

/// A read key's host page has no toggles.
#[test]
fn host_page_for_a_read_key_has_no_toggles() {
    let h = fleet().hosts[0].clone();
    let c = chrome(Role::Read);
    let html = render::fleet::host_page(
        &HostPage {
            chrome: &c,
            host: &h,
            watched: &watched(),
            read_at: read_at(),
            now: now(),
        },
        NONCE,
    );
    assert!(!html.contains("class=\"maint-form\""));
}

/// A rolling restart of four hosts, two at a time, the second wave
/// still running: two bars early, one late, one host waiting.
fn rolling() -> (JobView, JobProgress, Vec<String>) {
    let results = vec![
        result(
            "web-1",
            "restart",
            "restart",
            900,
            Outcome::Ok { changed: true },
        ),
        result(
            "web-2",
            "restart",
            "restart",
            1100,
            Outcome::failed(Failure::JobFailed("unit entered failed state".into())),
        ),
        result(
            "web-3",
            "restart",
            "restart",
            800,
            Outcome::Ok { changed: true },
        ),
    ];
    let view = job(
        "550e8400-e29b-41d4-a716-446655440009",
        "rolling restart",
        JobStatus::Running,
        results,
    );
    let progress = JobProgress {
        steps: vec![StepProgress {
            step: "restart".into(),
            hosts: 4,
            batches_done: 1,
        }],
        ended_ms: vec![1000, 1200, 2100],
    };
    let hosts = ["web-1", "web-2", "web-3", "web-4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (view, progress, hosts)
}

#[test]
fn timeline_of_a_rolling_restart() {
    let (view, progress, hosts) = rolling();
    let live = Live {
        job: &view,
        progress: &progress,
        hosts: &hosts,
    };
    let svg = render::timeline::timeline_svg(&live);
    // Failed host first, the waiting one last.
    let rows: Vec<usize> = ["web-2", "web-1", "web-3", "web-4"]
        .iter()
        .map(|h| {
            svg.find(&format!("class=\"row\" data-host=\"{h}\""))
                .unwrap()
        })
        .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{svg}");
    assert!(svg.contains("\u{2717}") && svg.contains("waiting"));
    insta::assert_snapshot!("timeline_svg", svg);
    let mut b = String::new();
    render::timeline::progress_html(&mut b, &live);
    assert!(b.contains("data-done=\"3\" data-total=\"4\""), "{b}");
    insta::assert_snapshot!("progress_bars", b);
}

/// A job read back from its report has no times: bars in result order.
#[test]
fn timeline_from_a_report_follows_result_order() {
    let (mut view, _, hosts) = rolling();
    view.outcome = JobStatus::Completed;
    view.finished_at = Some("2026-11-30T02:01:00.000Z".into());
    let none = JobProgress::default();
    let live = Live {
        job: &view,
        progress: &none,
        hosts: &hosts,
    };
    let frag = render::timeline::live_fragment(&live);
    assert!(frag.contains("Bars follow the order the results ended in."));
    insta::assert_snapshot!(frag);
}

#[test]
fn job_page_with_cancel() {
    let (view, progress, hosts) = rolling();
    let c = chrome(Role::Operate);
    let html = render::history::job_page(
        &JobPage {
            chrome: &c,
            live: Live {
                job: &view,
                progress: &progress,
                hosts: &hosts,
            },
        },
        NONCE,
    );
    assert!(html.contains("id=\"cancel\""));
    let report = html.find("id=\"report\"").unwrap();
    let first_row = html[report..].find("<tr data-host=").unwrap() + report;
    assert!(
        html[first_row..].starts_with("<tr data-host=\"web-2\""),
        "failures first"
    );
    insta::assert_snapshot!(html);
}

#[test]
fn job_history() {
    let jobs = vec![
        rolling().0,
        job(
            "550e8400-e29b-41d4-a716-446655440001",
            "drain db",
            JobStatus::Aborted,
            vec![result(
                "db-1",
                "drain",
                "none",
                0,
                Outcome::Skipped(SkipReason::Maintenance("disk swap".into())),
            )],
        ),
    ];
    let filter = HistoryFilter {
        outcome: "running".into(),
        playbook: String::new(),
        host: "web-1".into(),
    };
    let c = chrome(Role::Read);
    let html = render::history::history_page(
        &History {
            chrome: &c,
            jobs: &jobs,
            filter: &filter,
            filter_error: None,
            page: 2,
            has_next: true,
        },
        NONCE,
    );
    assert!(html.contains("href=\"/page/jobs?page=3&amp;outcome=running&amp;host=web-1\""));
    insta::assert_snapshot!(html);
}

#[test]
fn dry_run_fragment() {
    let plan = example_plan();
    let html = render::dryrun::plan_fragment(&plan);
    // The markdown to copy is the CLI's, escaped once for HTML.
    let md = render::plan::render_markdown(&plan);
    let first = md.lines().next().unwrap();
    assert!(html.contains(first), "{first}");
    assert!(html.contains("<details class=\"diff-host\""));
    assert!(
        !html.contains("<details class=\"diff-host\" open"),
        "folded by default"
    );
    insta::assert_snapshot!(html);
}

/// Hostile names in every new page: escaped wherever they land.
#[test]
fn hostile_fleet_host_and_job_pages() {
    let name = format!("web{MARKUP}");
    let mut h = host(
        &name,
        vec![unit(
            &name,
            &format!("u{MARKUP}.service"),
            ServiceStatus::Failed,
        )],
    );
    h.maintenance = Some(flag(MARKUP));
    h.labels = vec![MARKUP.into()];
    let f = FleetState {
        hosts: vec![h.clone()],
        read_at: read_at(),
        error: Some(MARKUP.into()),
        watched: watched(),
    };
    let filter = GridFilter {
        selector: MARKUP.into(),
        unit: MARKUP.into(),
    };
    let c = Chrome {
        key_name: MARKUP,
        role: Role::Admin,
        csrf: CSRF,
    };
    let grid = Grid {
        fleet: &f,
        filter: &filter,
        filter_error: Some(MARKUP),
        page: 1,
        per_page: 200,
        now: now(),
    };
    let runbooks = vec![PageRunbook {
        name: MARKUP.into(),
        params: vec![],
    }];
    let mut failed = result(
        &name,
        MARKUP,
        "restart",
        1,
        Outcome::failed(Failure::JobFailed(MARKUP.into())),
    );
    failed.name = MARKUP.into();
    let view = job(MARKUP, MARKUP, JobStatus::Running, vec![failed]);
    let progress = JobProgress {
        steps: vec![StepProgress {
            step: MARKUP.into(),
            hosts: 1,
            batches_done: 0,
        }],
        ended_ms: vec![5],
    };
    let hosts = vec![name.clone()];
    let pages = [
        render::page::status_page(
            &StatusPage {
                chrome: &c,
                grid: &grid,
                jobs: std::slice::from_ref(&view),
                runbooks: &runbooks,
            },
            NONCE,
        ),
        render::fleet::host_page(
            &HostPage {
                chrome: &c,
                host: &h,
                watched: &watched(),
                read_at: read_at(),
                now: now(),
            },
            NONCE,
        ),
        render::history::job_page(
            &JobPage {
                chrome: &c,
                live: Live {
                    job: &view,
                    progress: &progress,
                    hosts: &hosts,
                },
            },
            NONCE,
        ),
        render::history::history_page(
            &History {
                chrome: &c,
                jobs: std::slice::from_ref(&view),
                filter: &HistoryFilter {
                    outcome: MARKUP.into(),
                    playbook: MARKUP.into(),
                    host: MARKUP.into(),
                },
                filter_error: Some(MARKUP),
                page: 1,
                has_next: false,
            },
            NONCE,
        ),
    ];
    for html in &pages {
        assert!(!html.contains(MARKUP), "raw markup in {html}");
        assert_eq!(html.matches("<script").count(), 1, "only the page's script");
    }
}

/// The old page's snapshot tests, through the new page: hosts and a
/// status report as the fleet snapshot would hold them.
pub(crate) fn status_html(
    key_name: &str,
    role: Role,
    hosts: &[(String, String)],
    status: Result<&StatusReport, &str>,
    jobs: &[JobView],
    runbooks: &[PageRunbook],
) -> String {
    let fleet = match status {
        Err(e) => FleetState {
            hosts: vec![],
            read_at: None,
            error: Some(e.into()),
            watched: watched(),
        },
        Ok(rep) => FleetState {
            hosts: hosts
                .iter()
                .map(|(n, a)| HostState {
                    name: n.clone(),
                    address: a.clone(),
                    labels: vec![],
                    units: Arc::new(
                        rep.services
                            .iter()
                            .filter(|s| s.hostname == *n)
                            .cloned()
                            .collect(),
                    ),
                    error: rep
                        .errors
                        .iter()
                        .find(|e| e.hostname == *n)
                        .map(|e| e.error.clone()),
                    maintenance: rep
                        .maintenance
                        .iter()
                        .find(|m| m.hostname == *n && m.unit.is_none())
                        .map(|m| Maintenance {
                            reason: m.reason.clone(),
                            since: m.since.clone(),
                        }),
                })
                .collect(),
            read_at: read_at(),
            error: None,
            watched: watched(),
        },
    };
    let c = Chrome {
        key_name,
        role,
        csrf: CSRF,
    };
    let filter = GridFilter::default();
    let grid = Grid {
        fleet: &fleet,
        filter: &filter,
        filter_error: None,
        page: 1,
        per_page: 200,
        now: now(),
    };
    render::page::status_page(
        &StatusPage {
            chrome: &c,
            grid: &grid,
            jobs,
            runbooks,
        },
        NONCE,
    )
}

/// Results the events did not carry (the skips a cancel adds at the end)
/// keep the timeline in time: they end where the last timed one did.
#[test]
fn results_added_at_the_end_stay_on_the_time_scale() {
    let (mut view, progress, hosts) = rolling();
    view.results.push(result(
        "web-4",
        "restart",
        "none",
        0,
        Outcome::Skipped(SkipReason::Interrupted("cancel".into())),
    ));
    let live = Live {
        job: &view,
        progress: &progress,
        hosts: &hosts,
    };
    let svg = render::timeline::timeline_svg(&live);
    assert!(svg.contains("Bars sit where each step ran"), "{svg}");
    assert!(svg.contains(">2.1s<"), "{svg}");
    assert!(!svg.contains("waiting"), "web-4 has its result: {svg}");
    // Its bar is full, and says the skip filled it.
    let mut bars = String::new();
    render::timeline::progress_html(&mut bars, &live);
    assert!(bars.contains("4/4 hosts"), "{bars}");
    assert!(bars.contains("\u{2013} 1 skipped"), "{bars}");
    // A step the cancel skipped before it started has a bar too.
    view.results.push(result(
        "web-1",
        "verify",
        "none",
        0,
        Outcome::Skipped(SkipReason::Interrupted("cancel".into())),
    ));
    let live = Live {
        job: &view,
        progress: &progress,
        hosts: &hosts,
    };
    let mut bars = String::new();
    render::timeline::progress_html(&mut bars, &live);
    assert!(
        bars.contains("data-step=\"verify\">1/1 hosts, <span class=\"skipped\">"),
        "{bars}"
    );
}
