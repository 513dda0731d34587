//! The status page's pages and fragments over a real server, with no
//! host to read (their bus does not exist): the fleet's tiles, filtered
//! and scoped to the key; a host's page; the history; the job page's
//! fragment; the dry run as HTML; the maintenance toggle's refusals.

use reqwest::Method;

use crate::server;
use server::{assert_error, call, client, login, Keys, Server};

/// Two unreachable hosts, `a` (role:web) and `b` (role:db); the limited
/// key sees `a` only.
fn start(dir: &std::path::Path) -> (Server, Keys) {
    let inv = dir.join("inventory.yml");
    std::fs::write(
        &inv,
        "defaults:\n  transport: local\n  bus: unix:path=/nonexistent/drover-test-bus\nhosts:\n  a:\n    labels: { role: web }\n  b:\n    labels: { role: db }\n",
    )
    .unwrap();
    let keys = Keys::make(dir, "role:web");
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("restart-web.yml"),
        "name: restart web\nsteps:\n  - id: restart\n    target: role:web\n    serial: 1\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    let jobs = dir.join("jobs");
    let args = [
        "-i",
        inv.to_str().unwrap(),
        "--keys",
        keys.file.to_str().unwrap(),
        "--playbooks",
        books.to_str().unwrap(),
        "--jobs-dir",
        jobs.to_str().unwrap(),
    ];
    (Server::start(&args, &dir.join("stderr")), keys)
}

async fn get(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `r` is the error `code`, in the API's error shape.
async fn refused(r: reqwest::Response, code: u16) {
    assert_eq!(r.status().as_u16(), code);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_error(code, &body);
}

fn tiles(page: &str) -> Vec<String> {
    page.split("<li class=\"tile ")
        .skip(1)
        .filter_map(|t| t.split("data-host=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_fleet_host_and_job_pages_filter_and_keep_to_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path());
    // Without a session the pages are the login form; a fragment is 401.
    let r = client().get(s.url("/page/jobs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("action=\"/login\""));
    let (st, _, body) = call(Method::GET, &s.url("/page/job/x/live"), None).await;
    assert_eq!(st, 401, "{body}");

    let cookie = login(&client(), &s.url("/login"), &keys.read).await;
    let (st, page) = get(&s, &cookie, "/").await;
    assert_eq!(st, 200);
    assert_eq!(tiles(&page), ["a", "b"]);
    assert!(
        page.contains("data-state=\"unreachable\"><span aria-hidden=\"true\">⊘</span> <b>2</b>"),
        "{page}"
    );
    assert!(
        page.contains("read 0s ago") || page.contains("s ago"),
        "{page}"
    );
    let (_, page) = get(&s, &cookie, "/?selector=role%3Adb").await;
    assert_eq!(tiles(&page), ["b"]);
    let (_, page) = get(&s, &cookie, "/?selector=role%3A").await;
    assert!(page.contains("id=\"filter-error\""), "{page}");
    assert_eq!(tiles(&page), ["a", "b"], "a refused filter filters nothing");
    let (_, page) = get(&s, &cookie, "/?unit=bad%20name").await;
    assert!(page.contains("id=\"filter-error\""), "{page}");

    let (st, page) = get(&s, &cookie, "/page/host/b").await;
    assert_eq!(st, 200);
    assert!(
        page.contains("data-host=\"b\"") && page.contains("unreachable"),
        "{page}"
    );
    assert!(
        !page.contains("class=\"maint-form\""),
        "a read key toggles nothing"
    );
    let (st, _) = get(&s, &cookie, "/page/host/nope").await;
    assert_eq!(st, 404);
    let (st, page) = get(&s, &cookie, "/page/jobs?outcome=bogus").await;
    assert_eq!(st, 200);
    assert!(page.contains("is not a job status"), "{page}");
    let (st, _) = get(&s, &cookie, "/page/job/nope").await;
    assert_eq!(st, 404);

    // The limited key's fleet is its targets; another host is not found.
    let limited = login(&client(), &s.url("/login"), &keys.limited).await;
    let (_, page) = get(&s, &limited, "/").await;
    assert_eq!(tiles(&page), ["a"]);
    let (st, _) = get(&s, &limited, "/page/host/b").await;
    assert_eq!(st, 404);

    // A job on the page: its page, its fragment, the history's filters.
    let (st, _, job) = call(
        Method::POST,
        &s.url("/runbook/restart-web?wait=1m"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{job}");
    let id = job["job_id"].as_str().unwrap();
    let (st, page) = get(&s, &cookie, &format!("/page/job/{id}")).await;
    assert_eq!(st, 200);
    assert!(page.contains("<svg class=\"timeline\""), "{page}");
    assert!(!page.contains("id=\"cancel\""), "over: nothing to cancel");
    let (st, frag) = get(&s, &cookie, &format!("/page/job/{id}/live")).await;
    assert_eq!(st, 200);
    assert!(frag.starts_with("<p id=\"outcome\""), "{frag}");
    for (q, shown) in [
        ("?host=a", true),
        ("?host=b", false),
        ("?playbook=restart%20web", true),
        ("?playbook=other", false),
        ("?outcome=completed", true),
        ("?outcome=aborted", false),
    ] {
        let (_, page) = get(&s, &cookie, &format!("/page/jobs{q}")).await;
        assert_eq!(page.contains(&format!("data-job=\"{id}\"")), shown, "{q}");
    }
}

#[tokio::test]
async fn the_dry_run_and_maintenance_routes_keep_the_rules_of_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path());
    // The dry run answers HTML: the plan, nothing changed.
    let r = client()
        .post(s.url("/page/dryrun/restart-web"))
        .bearer_auth(&keys.read)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let frag = r.text().await.unwrap();
    assert!(
        frag.contains("DRY RUN") && frag.contains("id=\"plan-md\""),
        "{frag}"
    );
    let (st, _, b) = call(Method::POST, &s.url("/page/dryrun/nope"), Some(&keys.read)).await;
    assert_eq!(st, 404, "{b}");

    // Maintenance: operate keys only, a reason to enable, hosts in reach.
    let toggle = |key: &str, body: &str| {
        client()
            .post(s.url("/page/maintenance"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = toggle(&keys.read, r#"{"host":"a","enable":true,"reason":"x"}"#)
        .await
        .unwrap();
    refused(r, 403).await;
    let r = toggle(&keys.operate, r#"{"host":"a","enable":true}"#)
        .await
        .unwrap();
    refused(r, 400).await;
    let r = toggle(&keys.limited, r#"{"host":"b","enable":true,"reason":"x"}"#)
        .await
        .unwrap();
    refused(r, 403).await;
    let r = toggle(
        &keys.operate,
        r#"{"host":"a","unit":"bad name","enable":false}"#,
    )
    .await
    .unwrap();
    refused(r, 400).await;
    // With the page's session, a change without its token is refused.
    let cookie = login(&client(), &s.url("/login"), &keys.operate).await;
    let r = client()
        .post(s.url("/page/maintenance"))
        .header("cookie", cookie)
        .header("content-type", "application/json")
        .body(r#"{"host":"a","enable":false}"#)
        .send()
        .await
        .unwrap();
    refused(r, 403).await;
}
