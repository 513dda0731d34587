//! The status page in a real headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol: log in through the form, see the
//! lab's hosts, start a job through the API and watch its results arrive
//! on the page, plan a runbook with the dry-run form (and its typed
//! parameters), retry a failed job. Screenshots go to target/page-*.png.
//! Needs the lab and `chromium` (tests/run.sh installs it); with
//! DROVER_REQUIRE_LAB set a missing chromium is a failure. The fleet's
//! tiles, a rolling restart's timeline and the phone layout are
//! page_fleet.rs's.

use crate::browser::{chromium, Browser};
use crate::common;
use crate::server;

use common::{lab, Gate};
use serde_json::json;
use server::{Keys, Server};

#[test]
fn the_status_page_in_a_real_browser() {
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
            .map(|h| format!("  {h}: {{}}\n"))
            .collect::<String>(),
    );
    let keys = Keys::make(dir.path(), &hosts[0]);
    let gate = Gate::new();
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("held.yml"),
        format!(
            "name: held\nsteps:\n  - id: first\n    target: {h}\n    service: {{ name: demo-worker, state: restarted }}\n  - id: hold\n    target: {h}\n    needs: [first]\n    service: {{ name: demo-web, state: started }}\n    wait: {{ http: \"http://127.0.0.1:{p}/\", timeout: 60s }}\n  - id: last\n    target: {h}\n    needs: [hold]\n    service: {{ name: demo-web, state: restarted }}\n",
            h = hosts[0],
            p = gate.port
        ),
    )
    .unwrap();
    // A runbook with parameters: the form offers them as typed inputs.
    std::fs::write(
        books.join("noted.yml"),
        format!(
            "name: noted\nparams:\n  batch: {{ description: hosts at once, type: integer, default: 1 }}\n  note: {{ description: why }}\nsteps:\n  - id: ensure\n    target: {h}\n    service: {{ name: demo-web, state: started }}\n",
            h = hosts[0]
        ),
    )
    .unwrap();
    let s = Server::start(
        &[
            "-i",
            inv.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--node",
            &hosts[0],
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            dir.path().join("jobs").to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let mut b = Browser::start(&bin);
    b.cmd("Page.enable", json!({}));
    b.cmd("Page.navigate", json!({"url": s.url("/")}));

    // The login form; the key typed in and posted, never in a URL.
    b.until(
        "the login form",
        "document.getElementById('login') !== null",
    );
    b.screenshot("login");
    let key = serde_json::to_string(&keys.operate).unwrap();
    b.eval(&format!(
        "document.getElementById('key').value = {key}; document.getElementById('login').submit(); true"
    ));
    b.until(
        "the hosts' tiles",
        "document.querySelectorAll('#tiles li.tile').length > 0",
    );
    let shown =
        b.eval("Array.from(document.querySelectorAll('#tiles li.tile')).map(d => d.dataset.host)");
    assert_eq!(shown, json!(hosts));
    assert_eq!(b.eval("location.href"), json!(s.url("/")));
    // The key is nowhere the page's scripts can see.
    assert_eq!(b.eval("document.cookie"), json!(""));
    assert_eq!(
        b.eval(&format!(
            "document.documentElement.outerHTML.includes({key})"
        )),
        json!(false)
    );
    b.screenshot("hosts");

    // A job started through the API appears, its first result arrives
    // while it is held at the gate, the rest when it goes on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (st, _, started) = rt.block_on(server::call(
        reqwest::Method::POST,
        &s.url("/runbook/held?wait=0s"),
        Some(&keys.operate),
    ));
    assert_eq!(st, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    gate.wait_reached();
    let row = format!("document.getElementById('job-{id}')");
    b.until(
        "the running job's first result",
        &format!("{row} !== null && {row}.dataset.outcome === 'running' && {row}.querySelectorAll('.results li').length === 1"),
    );
    let first = b.eval(&format!("{row}.querySelector('.results li').textContent"));
    assert!(
        first
            .as_str()
            .unwrap()
            .contains(&format!("{}: first ok", hosts[0])),
        "{first}"
    );
    b.screenshot("job-running");
    gate.open();
    b.until(
        "the job's end",
        &format!("{row}.dataset.outcome === 'completed' && {row}.querySelectorAll('.results li.ok').length === 3"),
    );
    b.screenshot("job-done");

    // The dry-run form shows the plan.
    b.eval("document.querySelector('#dryrun button').click(); true");
    b.until(
        "the plan",
        "document.getElementById('plan-out') !== null && document.getElementById('plan-out').dataset.schema === 'drover.plan/1'",
    );
    b.screenshot("dry-run");
    // Another runbook's typed inputs: a number goes as a number, a
    // template as its text.
    b.eval(
        "const sel=document.getElementById('runbook');sel.value='noted';sel.dispatchEvent(new Event('change'));\
         document.querySelector('[data-param=batch]').value='2';\
         document.querySelector('[data-param=note]').value='{{ 7*7 }}';\
         document.getElementById('plan').textContent='';\
         document.querySelector('#dryrun button').click(); true",
    );
    b.until(
        "the plan with the runbook's params",
        "(t => t.includes('batch=2') && t.includes('note={{ 7*7 }}'))(document.getElementById('plan').textContent)",
    );

    // A job that failed on a host offers "Retry failed hosts"; clicking it
    // runs a retry job, which appears and succeeds once the host is fixed.
    let h1 = &hosts[1];
    std::fs::write(
        books.join("idle.yml"),
        format!("name: idle\nsteps:\n  - id: start-idle\n    target: [{}, {h1}]\n    service: {{ name: demo-idle, state: started }}\n", hosts[0]),
    )
    .unwrap();
    let _undo = lab.undo_on_drop(h1, common::IDLE_RESET);
    let _undo0 = lab.undo_on_drop(&hosts[0], "systemctl stop demo-idle");
    lab.ssh(h1, common::IDLE_FAILS);
    let (st, _, _) = rt.block_on(server::call(
        reqwest::Method::POST,
        &s.url("/reload"),
        Some(&keys.admin),
    ));
    assert_eq!(st, 200);
    let (st, _, failed) = rt.block_on(server::call(
        reqwest::Method::POST,
        &s.url("/runbook/idle?wait=1m"),
        Some(&keys.operate),
    ));
    assert_eq!(st, 200, "{failed}");
    let failed_id = failed["job_id"].as_str().unwrap().to_string();
    lab.ssh(h1, common::IDLE_FIXED);
    b.cmd("Page.navigate", json!({"url": s.url("/")}));
    let button = format!("document.querySelector('button[data-retry=\"{failed_id}\"]')");
    b.until("the retry button", &format!("{button} !== null"));
    b.eval(&format!("{button}.click(); true"));
    b.until(
        "the retry job's id on the button",
        &format!("{button}.textContent.startsWith('retry: ')"),
    );
    let short = b.eval(&format!("{button}.textContent.slice(7)"));
    let short = short.as_str().unwrap().to_string();
    b.until(
        "the retry job, completed",
        &format!("Array.from(document.querySelectorAll('#jobs tr')).some(tr => (tr.dataset.job || '').startsWith('{short}') && tr.dataset.outcome === 'completed')"),
    );
    b.screenshot("retried");
    assert_eq!(lab.show(h1, "demo-idle")["ActiveState"], "active");
    let audit = s.log();
    assert!(!audit.contains(&keys.operate), "the key is in the log");
}
