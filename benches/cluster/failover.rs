//! The cluster bench's last part, on production TTLs (a worker's lease
//! 15 s, a job's lease and claims 30 s): two workers, two replicas, one
//! nats-server.
//!
//! (e) a result reaches an event stream on another replica: for each
//!     result of three restarts coordinated by r1, its arrival on a
//!     client of r2 minus its arrival on a client of r1; p50/p99; target
//!     p99 < 500 ms.
//! (f) the coordinating replica killed (SIGKILL) mid rolling restart:
//!     the time until r2 lists the job's next result, and until the job
//!     ends (every host ok).
//! (g) a worker killed: the time until every host reads through r2
//!     again; target <= 45 s.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{get_json, quantile, server_with, until_owned, worker_named, Nats};

/// Arrival of each result event (by its id) on `url`'s event stream,
/// until the job's `done`.
async fn arrivals(c: reqwest::Client, url: String, key: String) -> Vec<(String, Instant)> {
    let resp = c
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET events");
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let ev = block.lines().find_map(|l| l.strip_prefix("event: "));
            match ev {
                Some("result") => out.push((id.unwrap_or_default().to_string(), now)),
                Some("done") => return out,
                _ => {}
            }
        }
    }
    out
}

/// POST `path` on `base`: the job's id.
async fn start(c: &reqwest::Client, base: &str, path: &str, key: &str) -> String {
    let r = c
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(status.is_success(), "{status} {v}");
    v["job_id"].as_str().expect("job id").to_string()
}

/// Run (e), (f) and (g).
pub fn run(rt: &tokio::runtime::Runtime, key: &str, inv: &Path, dir: &Path, node: &str, n: usize) {
    let client = reqwest::Client::new();
    let keys_file = dir.join("keys.yml");
    let dir = dir.join("failover");
    let books = dir.join("books");
    std::fs::create_dir_all(&books).expect("dir");
    std::fs::copy(keys_file, dir.join("keys.yml")).expect("keys file");
    std::fs::write(
        books.join("roll.yml"),
        "name: roll\nsteps:\n  - id: web\n    target: _all\n    serial: 3\n    service: { name: demo-web, state: restarted }\n",
    )
    .expect("runbook");
    let nats = Nats::start(&dir);
    let mut wa = worker_named(&nats.url, inv, &dir, n, "a");
    let _wb = worker_named(&nats.url, inv, &dir, n, "b");
    let books_arg = books.to_str().expect("utf-8").to_string();
    let extra = ["--playbooks", books_arg.as_str()];
    let mut r1 = server_with(inv, &dir, node, n, Some(&nats.url), "r1", &extra);
    let r2 = server_with(inv, &dir, node, n, Some(&nats.url), "r2", &extra);
    rt.block_on(until_owned(&client, &r1, key, n));
    rt.block_on(until_owned(&client, &r2, key, n));

    // (e)
    let mut lag = Vec::new();
    for _ in 0..3 {
        let id = rt.block_on(start(
            &client,
            &r1.base,
            "/node/_all/service/demo-web/restart?wait=0s",
            key,
        ));
        let url = |base: &str| format!("{base}/job/{id}/events");
        let (on1, on2) = rt.block_on(async {
            let a = tokio::spawn(arrivals(client.clone(), url(&r1.base), key.to_string()));
            let b = tokio::spawn(arrivals(client.clone(), url(&r2.base), key.to_string()));
            (a.await.expect("r1 events"), b.await.expect("r2 events"))
        });
        assert_eq!(on1.len(), n, "r1's events");
        assert_eq!(on2.len(), n, "r2's events");
        for ((i1, t1), (i2, t2)) in on1.iter().zip(&on2) {
            assert_eq!(i1, i2, "the replicas number results alike");
            lag.push(t2.saturating_duration_since(*t1).as_secs_f64());
        }
    }
    lag.sort_by(f64::total_cmp);
    println!(
        "(e) a result on another replica's event stream, after the coordinator's: p50 {:.1} ms, p99 {:.1} ms over {} results (target p99 < 500 ms)",
        quantile(&lag, 0.5) * 1000.0,
        quantile(&lag, 0.99) * 1000.0,
        lag.len()
    );

    // (f)
    let id = rt.block_on(start(&client, &r1.base, "/runbook/roll?wait=0s", key));
    let job = format!("{}/job/{id}", r2.base);
    let (killed, had) = rt.block_on(async {
        loop {
            let v = get_json(&client, &job, key).await;
            let had = v["results"].as_array().map_or(0, Vec::len);
            if had >= 3 {
                let _ = r1.child.kill();
                let _ = r1.child.wait();
                return (Instant::now(), had);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (next, end, v) = rt.block_on(async {
        let mut next = None;
        loop {
            let v = get_json(&client, &job, key).await;
            let now = v["results"].as_array().map_or(0, Vec::len);
            if now > had && next.is_none() {
                next = Some(killed.elapsed().as_secs_f64());
            }
            if v["outcome"] != "running" {
                return (next.unwrap_or_default(), killed.elapsed().as_secs_f64(), v);
            }
            assert!(
                killed.elapsed() < Duration::from_secs(180),
                "not taken over: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let ok = v["results"]
        .as_array()
        .is_some_and(|a| a.len() == n && a.iter().all(|r| r["status"] == "ok"));
    assert!(ok, "{v}");
    println!(
        "(f) the coordinating replica killed after {had} results: its job's next result on another replica after {next:.1} s, the job complete after {end:.1} s, every host ok (job lease and claims 30 s)"
    );

    // (g)
    let _ = wa.0.kill();
    let _ = wa.0.wait();
    let t = Instant::now();
    rt.block_on(until_owned(&client, &r2, key, n));
    println!(
        "(g) a worker killed: every host read again through a replica after {:.1} s (lease 15 s; target <= 45 s)",
        t.elapsed().as_secs_f64()
    );
    drop(r2.stop());
}
