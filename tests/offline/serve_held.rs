//! `drover serve` with work held in flight: a host whose bus accepts and
//! never answers ([`StuckBus`]) keeps reads and jobs waiting for as long as
//! the test wants, so what the server does meanwhile is seen without a
//! sleep. Reads are bounded per key and overall; a served runbook and a
//! command-line run of the same file exclude each other.

use crate::serve::start_with;
use crate::server;

use reqwest::Method;
use server::{assert_error, call, StuckBus};

/// The stuck host `s` (role `stuck`), waited on for two minutes at most.
fn stuck_host(bus: &StuckBus) -> String {
    format!(
        "  s:\n    labels: {{ role: stuck }}\n    bus: \"{}\"\n    connect_timeout: 120s\n",
        bus.address()
    )
}

/// Over the per-key bound (32), a key's reads get 429 with `Retry-After`
/// while its first 32 wait on the stuck host; meanwhile another key reads,
/// `/health` answers and the job list answers: nothing waits behind the
/// flood. Once the host lets go, every held read answers.
#[tokio::test]
async fn a_flood_of_reads_from_one_key_is_bounded_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let bus = StuckBus::new(dir.path());
    let (s, keys) = start_with(dir.path(), &stuck_host(&bus), &[]);
    let (flood, bound) = (100, 32);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..flood {
        // Different units: different reads, none joins another.
        let url = s.url(&format!("/node/s/service/unit-{i}"));
        let (key, tx) = (keys.read.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(call(Method::GET, &url, Some(&key)).await);
        });
    }
    let within = std::time::Duration::from_secs(60);
    // Those past the bound answer while the first ones wait on the host.
    for _ in 0..flood - bound {
        let (st, h, b) = tokio::time::timeout(within, rx.recv())
            .await
            .expect("the reads past the key's bound were not refused")
            .unwrap();
        assert_eq!(st, 429, "{b}");
        assert_error(st, &b);
        assert_eq!(h["retry-after"], "1");
        assert!(b["details"].as_str().unwrap().contains("in flight"), "{b}");
    }
    bus.wait_connections(1);
    // Meanwhile another key reads (its own slot), and health and the job
    // list answer.
    let url = s.url("/node/s/service/admin-unit");
    let admin_key = keys.admin.clone();
    let admin_read = tokio::spawn(async move { call(Method::GET, &url, Some(&admin_key)).await });
    assert_eq!(call(Method::GET, &s.url("/health"), None).await.0, 200);
    assert_eq!(
        call(Method::GET, &s.url("/job"), Some(&keys.operate))
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            Method::GET,
            &s.url("/node/s/service/one-more"),
            Some(&keys.read)
        )
        .await
        .0,
        429,
        "the key is still at its bound"
    );
    assert!(
        rx.try_recv().is_err(),
        "a held read answered before the host let go"
    );
    bus.release();
    for _ in 0..bound {
        let (st, _, b) = tokio::time::timeout(within, rx.recv())
            .await
            .expect("a held read never answered")
            .unwrap();
        assert_eq!(st, 200, "the host's failure, in a 200: {b}");
    }
    assert_eq!(admin_read.await.unwrap().0, 200);
}

/// A served runbook takes the playbook's file lock, as `drover apply`
/// does: while the server's job holds it, a command-line run of the same
/// file is refused (exit 3) naming the server's pid; while a command-line
/// run holds it, the server answers 409 naming that run's pid and no path
/// of its own.
#[tokio::test]
async fn a_served_runbook_and_a_cli_run_of_the_same_file_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let bus = StuckBus::new(dir.path());
    let (s, keys) = start_with(dir.path(), &stuck_host(&bus), &[]);
    let book = dir.path().join("books/hold.yml");
    std::fs::write(
        &book,
        "name: hold\nsteps:\n  - id: restart\n    target: s\n    service: { name: demo-web, state: restarted }\n",
    )
    .unwrap();
    assert_eq!(
        call(Method::POST, &s.url("/reload"), Some(&keys.admin))
            .await
            .0,
        200
    );
    let inv = dir.path().join("inventory.yml");
    let apply = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        c.arg("apply")
            .arg(&book)
            .arg("-i")
            .arg(&inv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };

    // The server's job holds the lock while it waits on the host.
    let url = s.url("/runbook/hold?wait=0s");
    let (st, _, b) = call(Method::POST, &url, Some(&keys.operate)).await;
    assert_eq!(st, 202, "{b}");
    bus.wait_connections(1);
    let out = apply().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("pid {}", s.child.id())), "{err}");
    bus.release();
    let job = format!("/job/{}", b["job_id"].as_str().unwrap());
    let (st, _, b) = call(
        Method::GET,
        &s.url(&format!("{job}?wait=60s")),
        Some(&keys.read),
    )
    .await;
    assert_eq!(st, 200, "{b}");

    // A command-line run holds it: the server refuses with 409.
    let bus = StuckBus::new(&dir.path().join("books"));
    let more = stuck_host(&bus);
    std::fs::write(
        &inv,
        std::fs::read_to_string(&inv)
            .unwrap()
            .replace(&stuck_host_of(&inv), &more),
    )
    .unwrap();
    assert_eq!(
        call(Method::POST, &s.url("/reload"), Some(&keys.admin))
            .await
            .0,
        200
    );
    let mut cli = apply().spawn().unwrap();
    // Held once its lock file names it (the server's pool may reconnect
    // to the new bus first, so a connection alone does not say so).
    let pid = cli.id().to_string();
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir("/run/drover")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with("hold-")
                && std::fs::read_to_string(e.path()).is_ok_and(|t| t.trim() == pid)
        })
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the command-line run never held its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    bus.wait_connections(1);
    let (st, _, b) = call(Method::POST, &s.url("/runbook/hold"), Some(&keys.operate)).await;
    assert_eq!(st, 409, "{b}");
    assert_error(st, &b);
    let details = b["details"].as_str().unwrap();
    assert!(details.contains(&format!("pid {}", cli.id())), "{b}");
    assert!(details.contains("hold.yml"), "{b}");
    assert!(
        !details.contains(dir.path().to_str().unwrap()),
        "a server path: {b}"
    );
    bus.release();
    assert!(cli.wait().is_ok());
}

/// The stuck host's lines as written in `inv`.
fn stuck_host_of(inv: &std::path::Path) -> String {
    let text = std::fs::read_to_string(inv).unwrap();
    let at = text.find("  s:\n").unwrap();
    text[at..].to_string()
}
