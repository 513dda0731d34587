//! The status page as an operator keeps it open during a maintenance
//! window, in a real headless Chromium over the DevTools protocol: the
//! fleet's tiles on the lab, filtered; a host's unit table and a
//! maintenance toggle; a rolling restart whose progress and timeline
//! advance on its page over its event stream (screenshots at three
//! steps), cancelled from the page; its place in the history; a dry run
//! with per-host diffs folded and "copy as markdown". Screenshots at
//! 1280×800 and at a phone's 375 px go to target/page-*.png.

use crate::browser::{chromium, Browser};
use crate::common;
use crate::server;

use common::{lab, Gate};
use serde_json::json;
use server::{Keys, Server};

/// The number of results the job page's timeline draws.
const DRAWN: &str =
    "Number((document.getElementById('timeline')||{dataset:{}}).dataset.results||-1)";

#[test]
fn fleet_timeline_cancel_and_dry_run_in_a_real_browser() {
    let Some(lab) = lab() else { return };
    let Some(bin) = chromium() else {
        let msg =
            "\n*** BROWSER TEST SKIPPED: no `chromium` on PATH (apt-get install -y chromium) ***\n";
        if std::env::var_os("DROVER_REQUIRE_LAB").is_some_and(|v| !v.is_empty()) {
            panic!("{msg}");
        }
        let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
        return;
    };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = (0..3.min(lab.len()))
        .map(|i| lab.host(i).to_string())
        .collect();
    let inv = lab.inventory_with(
        dir.path(),
        &hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("  {h}: {{ labels: {{ tier: t{} }} }}\n", i % 2))
            .collect::<String>(),
    );
    let keys = Keys::make(dir.path(), &hosts[0]);
    let (gate1, gate2) = (Gate::new(), Gate::new());
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    let all = hosts.join(", ");
    let h0 = &hosts[0];
    // Two rolling waves over the three hosts, a gate after each, then a
    // third wave the cancel keeps from starting.
    std::fs::write(
        books.join("rolling.yml"),
        format!(
            "name: rolling\nsteps:\n  - id: wave-1\n    target: [{all}]\n    serial: 1\n    service: {{ name: demo-worker, state: restarted }}\n  - id: hold-1\n    target: {h0}\n    needs: [wave-1]\n    service: {{ name: demo-web, state: started }}\n    wait: {{ http: \"http://127.0.0.1:{p1}/\", timeout: 60s }}\n  - id: wave-2\n    target: [{all}]\n    needs: [hold-1]\n    serial: 1\n    service: {{ name: demo-worker, state: restarted }}\n  - id: hold-2\n    target: {h0}\n    needs: [wave-2]\n    service: {{ name: demo-web, state: started }}\n    wait: {{ http: \"http://127.0.0.1:{p2}/\", timeout: 60s }}\n  - id: wave-3\n    target: [{all}]\n    needs: [hold-2]\n    serial: 1\n    service: {{ name: demo-worker, state: restarted }}\n",
            p1 = gate1.port,
            p2 = gate2.port
        ),
    )
    .unwrap();
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let mut b = Browser::start(&bin);
    b.cmd("Page.enable", json!({}));
    b.viewport(1280, 800, false);
    b.cmd("Page.navigate", json!({"url": s.url("/")}));
    b.until(
        "the login form",
        "document.getElementById('login') !== null",
    );
    let key = serde_json::to_string(&keys.operate).unwrap();
    b.eval(&format!(
        "document.getElementById('key').value = {key}; document.getElementById('login').submit(); true"
    ));

    // The grid: a tile per host, a state word on each, counts on top.
    b.until(
        "the tiles",
        "document.querySelectorAll('#tiles li.tile').length === 3",
    );
    let shown =
        b.eval("Array.from(document.querySelectorAll('#tiles li.tile')).map(d => d.dataset.host)");
    assert_eq!(shown, json!(hosts));
    let words = b.eval(
        "Array.from(document.querySelectorAll('#tiles li.tile')).every(t => t.querySelector('.word').textContent === t.dataset.state)",
    );
    assert_eq!(words, json!(true), "a word beside every colour");
    let counted = b.eval(
        "Array.from(document.querySelectorAll('#counts li b')).reduce((n, e) => n + Number(e.textContent), 0)",
    );
    assert_eq!(counted, json!(3));
    assert!(b
        .eval("document.getElementById('fleet-age').textContent")
        .as_str()
        .unwrap()
        .contains("ago"));
    // Keyboard: a tile is a real link that takes the focus.
    assert_eq!(
        b.eval("(a => { a.focus(); return document.activeElement === a; })(document.querySelector('#tiles li.tile a'))"),
        json!(true)
    );
    b.screenshot("fleet");
    b.viewport(375, 812, true);
    b.screenshot("fleet-phone");
    let wide = b.eval("document.documentElement.scrollWidth <= 375");
    assert_eq!(
        wide,
        json!(true),
        "the fleet page scrolls sideways on a phone"
    );
    b.viewport(1280, 800, false);

    // Filter by label, then by unit: server-side, in the URL.
    b.eval("document.getElementById('f-selector').value = 'tier:t0'; document.getElementById('filter').submit(); true");
    b.until(
        "the filtered tiles",
        "location.search.includes('selector=tier') && document.querySelectorAll('#tiles li.tile').length === 2",
    );
    b.eval("document.getElementById('f-selector').value = ''; document.getElementById('f-unit').value = 'demo-worker'; document.getElementById('filter').submit(); true");
    b.until(
        "the tiles of demo-worker",
        "location.search.includes('unit=demo-worker') && document.querySelectorAll('#tiles li.tile').length === 3",
    );

    // A host's units: failed first, stopped ones folded away; health.
    b.eval("document.querySelector('#tiles li.tile a').click(); true");
    b.until(
        "the host's unit table",
        "document.getElementById('units') !== null && document.querySelector('#units tr[data-unit=\"demo-web.service\"]') !== null",
    );
    assert_eq!(
        b.eval("document.getElementById('host').dataset.host"),
        json!(h0)
    );
    assert_eq!(
        b.eval("document.querySelector('#stopped') !== null && !document.querySelector('#stopped').open"),
        json!(true)
    );
    let health = b.eval(
        "document.querySelector('#units tr[data-unit=\"demo-web.service\"] td.h-passing') !== null",
    );
    assert_eq!(health, json!(true));
    // A maintenance flag on a unit, with a reason, and off again.
    let _undo = lab.undo_on_drop(h0, "rm -f /var/lib/drover/maintenance.json");
    b.eval("document.querySelector('#stopped').open = true; true");
    let form = "document.querySelector('tr[data-unit=\"demo-web.service\"] form.maint-form')";
    b.eval(&format!(
        "{form}.querySelector('input').value = 'page test'; {form}.requestSubmit(); true"
    ));
    b.until(
        "the unit's maintenance flag",
        "(r => r !== null && r.textContent.includes('page test'))(document.querySelector('tr[data-unit=\"demo-web.service\"]'))",
    );
    b.screenshot("host");
    b.eval(&format!("{form}.requestSubmit(); true"));
    b.until(
        "the flag gone",
        "(r => r !== null && !r.textContent.includes('page test') && r.querySelector('input[name=reason]') !== null)(document.querySelector('tr[data-unit=\"demo-web.service\"]'))",
    );

    // A rolling restart, followed on its page as it moves.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (st, _, started) = rt.block_on(server::call(
        reqwest::Method::POST,
        &s.url("/runbook/rolling?wait=0s"),
        Some(&keys.operate),
    ));
    assert_eq!(st, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    b.cmd(
        "Page.navigate",
        json!({"url": s.url(&format!("/page/job/{id}"))}),
    );
    b.until("the job page", "document.getElementById('job') !== null");
    gate1.wait_reached();
    b.until("the first wave on the timeline", &format!("{DRAWN} === 3"));
    let bars = b.eval("document.querySelectorAll('#timeline g.bar').length");
    assert_eq!(bars, json!(3));
    b.screenshot("job-1-first-wave");
    gate1.open();
    gate2.wait_reached();
    b.until(
        "the second wave",
        &format!("{DRAWN} === 7 && document.getElementById('progress').dataset.done === '7'"),
    );
    // Two waves over each host: two bars in every row.
    let rows = b.eval(
        "Array.from(document.querySelectorAll('#timeline g.row')).map(r => r.querySelectorAll('g.bar').length)",
    );
    assert_eq!(rows, json!([3, 2, 2]), "{rows}");
    b.screenshot("job-2-second-wave");
    // Cancel: the third wave never starts.
    b.eval("document.getElementById('cancel').click(); true");
    b.until(
        "the cancel asked",
        "document.getElementById('cancel').textContent.startsWith('cancel asked')",
    );
    gate2.open();
    b.until(
        "the job's end",
        "document.getElementById('outcome') !== null && document.getElementById('outcome').dataset.outcome === 'interrupted'",
    );
    let drawn = b.eval(DRAWN).as_i64().unwrap();
    assert!(drawn >= 7, "{drawn} results drawn at the end");
    // Over, read back from its report: still on the time scale.
    let desc = b.eval("document.getElementById('tl-desc').textContent");
    assert!(
        desc.as_str()
            .unwrap()
            .contains("Bars sit where each step ran"),
        "{desc}"
    );
    // The wave the cancel kept from starting reads as skipped.
    let wave3 = b.eval(
        "(e => e ? e.textContent : '')(document.querySelector('#progress span[data-step=\"wave-3\"]'))",
    );
    assert!(wave3.as_str().unwrap().contains("3 skipped"), "{wave3}");
    let fits = "document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(b.eval(fits), json!(true), "the job page scrolls sideways");
    b.screenshot("job-3-cancelled");
    b.viewport(375, 812, true);
    assert_eq!(
        b.eval(fits),
        json!(true),
        "the job page scrolls sideways on a phone"
    );
    b.screenshot("job-phone");
    b.viewport(1280, 800, false);

    // The history: the job, found by its outcome and its playbook.
    b.cmd(
        "Page.navigate",
        json!({"url": s.url("/page/jobs?outcome=interrupted&playbook=rolling")}),
    );
    b.until(
        "the job in the history",
        &format!("document.querySelector('#history tr[data-job=\"{id}\"]') !== null"),
    );
    b.cmd(
        "Page.navigate",
        json!({"url": s.url("/page/jobs?outcome=completed")}),
    );
    b.until(
        "the filtered history",
        "document.getElementById('history') !== null",
    );
    assert_eq!(
        b.eval(&format!(
            "document.querySelector('#history tr[data-job=\"{id}\"]') === null"
        )),
        json!(true)
    );

    // A dry run: per-host diffs, folded; the markdown copied.
    b.cmd("Page.navigate", json!({"url": s.url("/")}));
    b.until(
        "the dry-run form",
        "document.getElementById('dryrun') !== null",
    );
    b.eval("document.querySelector('#dryrun button').click(); true");
    b.until(
        "the plan",
        "document.getElementById('plan-out') !== null && document.querySelectorAll('#plan-out details.diff-host').length > 0",
    );
    assert_eq!(
        b.eval("Array.from(document.querySelectorAll('#plan-out details.diff-host')).every(d => !d.open)"),
        json!(true),
        "diffs folded by default"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#plan-out pre.diff span.add').length > 0"),
        json!(true),
        "a coloured diff"
    );
    b.eval("document.querySelector('#plan-out details.diff-host').open = true; true");
    b.screenshot("diff");
    b.eval("document.getElementById('copy-md').click(); true");
    b.until(
        "the copy done",
        "document.getElementById('copy-md').dataset.copied !== undefined",
    );
    let md = b.eval("document.getElementById('plan-md').value");
    let md = md.as_str().unwrap().to_string();
    assert!(md.starts_with("### drover plan: rolling"), "{md}");
    assert!(md.contains("Dry run"), "{md}");
    // The clipboard holds it when the browser let the page write it (a
    // headless browser may refuse to read it back).
    if b.eval("document.getElementById('copy-md').dataset.copied") == json!("yes") {
        let clip = b.eval("navigator.clipboard.readText().catch(e => 'unreadable: ' + e)");
        let clip = clip.as_str().unwrap_or_default();
        assert!(
            clip == md || clip.starts_with("unreadable"),
            "the clipboard holds something else: {clip}"
        );
    }
    b.viewport(375, 812, true);
    b.screenshot("diff-phone");
    assert!(!s.log().contains(&keys.operate), "the key is in the log");
}
