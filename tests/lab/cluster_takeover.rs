//! The coordinating replica of a job killed (SIGKILL) mid-job: another
//! replica takes the job over from its lease and the jobs stream.

use super::*;

/// A rolling restart (one host at a time, 3 s each) coordinated by r1,
/// which is killed once a result is in the stream and the next host's
/// restart has begun on its worker. r2 takes the job over once r1's lease
/// expires: the job completes there, every host restarted exactly once
/// (the one in flight read again on the host, not restarted again), the
/// report has every host once and matches a single server's run of the
/// same runbook, and an event stream opened on r2 before the kill sees
/// every result exactly once, in order.
#[tokio::test]
async fn a_killed_coordinating_replica_s_job_is_taken_over_by_another_from_the_stream() {
    taken_over(false).await
}

/// As above with r1 stopped (SIGSTOP) instead of killed, and woken
/// (SIGCONT) once r2 has finished the job: r1 finds its lease taken, sends
/// no task and publishes nothing, so no host is restarted again and the
/// job stays as r2 ended it, on both replicas.
#[tokio::test]
async fn a_stopped_coordinating_replica_woken_after_the_takeover_acts_on_nothing() {
    taken_over(true).await
}

async fn taken_over(stop: bool) {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let _slow = SLOW_UNIT.lock().await;
    let hosts = install_slow(&lab);
    let keys = Keys::make(dir.path(), lab.host(0));
    let slow = "name: slow\nsteps:\n  - id: roll\n    target: _all\n    serial: 1\n    service: { name: drover-slow, state: restarted }\n";
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let urls = n.url();
    // Job leases and claims age out in 4 s: failover in seconds.
    let fast = ["--nats-replicas", "1", "--claim-ttl", "4s"];
    let replica = |name: &str| {
        replica_named(
            dir.path(),
            &lab,
            &keys,
            &[("slow", slow)],
            &urls,
            name,
            &fast,
        )
    };
    let (mut r1, r2) = (replica("r1"), replica("r2"));
    until_all_read(&r1, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let (st, _, started) = call(
        Method::POST,
        &r1.url("/runbook/slow?wait=0s"),
        Some(&keys.operate),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    // r2 shows the job; its events are followed from there, across the
    // takeover, to the end.
    loop {
        let (st, _, _) = call(
            Method::GET,
            &r2.url(&format!("/job/{id}")),
            Some(&keys.read),
        )
        .await;
        if st == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "r2 never showed the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = {
        let (url, key) = (r2.url(&format!("/job/{id}/events")), keys.read.clone());
        tokio::spawn(async move { sse(&url, &key, None, None).await })
    };
    // One result in the stream (seen on r2), and the second host's
    // restart under way: then r1 dies.
    let in_flight = loop {
        let (_, _, v) = call(
            Method::GET,
            &r2.url(&format!("/job/{id}")),
            Some(&keys.read),
        )
        .await;
        let done: Vec<String> = v["results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["hostname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if done.len() == 1 {
            let next = slow_starts(&lab, &hosts)
                .into_iter()
                .find(|(h, n)| !done.contains(h) && n == "1");
            if let Some((h, _)) = next {
                break h;
            }
        }
        assert!(done.len() <= 1, "r1 went on too far before the kill: {v}");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the job did not start: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let r1_pid = r1.child.id() as i32;
    if stop {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(r1_pid, libc::SIGSTOP) };
    } else {
        let _ = r1.child.kill();
        let _ = r1.child.wait();
    }

    let report = loop {
        let (st, _, v) = call(
            Method::GET,
            &r2.url(&format!("/job/{id}")),
            Some(&keys.read),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        if v["outcome"] != "running" {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the job was not taken over: {v}\nr2: {}",
            r2.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = r2.log();
    assert!(log.contains("taken over here"), "{log}");
    assert_eq!(report["outcome"], "completed", "{report}\nr2: {log}");
    let results = report["results"].as_array().unwrap().clone();
    let mut named: Vec<&str> = results
        .iter()
        .filter_map(|r| r["hostname"].as_str())
        .collect();
    named.sort();
    let mut all: Vec<&str> = hosts.iter().map(String::as_str).collect();
    all.sort();
    assert_eq!(named, all, "every host once: {report}");
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "ok" && r["changed"] == true),
        "{report}"
    );
    // The restart in flight at the kill was read on the host again.
    let read_again = results
        .iter()
        .find(|r| r["hostname"] == in_flight.as_str())
        .unwrap();
    assert!(
        read_again["msg"]
            .as_str()
            .is_some_and(|m| m.contains("not restarted again")),
        "{in_flight} was not read again after the takeover: {report}\nr2: {log}"
    );
    for (h, n) in slow_starts(&lab, &hosts) {
        assert_eq!(
            n, "1",
            "{h} started drover-slow {n} times: {report}\nr2: {log}"
        );
    }
    // Every result exactly once, in order, on the stream followed on r2.
    let (st, seen) = events.await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(seen.last().map(|e| e.1.as_str()), Some("done"), "{seen:?}");
    let streamed: Vec<&(String, String, Value)> = seen.iter().filter(|e| e.1 == "result").collect();
    let ids: Vec<String> = streamed.iter().map(|e| e.0.clone()).collect();
    let expected: Vec<String> = (1..=hosts.len()).map(|i| i.to_string()).collect();
    assert_eq!(
        ids, expected,
        "a gap or a repeat across the takeover: {seen:?}"
    );
    let mut hs: Vec<&str> = streamed
        .iter()
        .filter_map(|e| e.2["hostname"].as_str())
        .collect();
    hs.sort();
    assert_eq!(hs, all, "{seen:?}");
    assert!(!log.contains("panicked"), "{log}");
    if stop {
        let asleep = r1.log().len();
        // SAFETY: as above.
        unsafe { libc::kill(r1_pid, libc::SIGCONT) };
        let woke = loop {
            let l = r1.log();
            let woke = l.get(asleep..).unwrap_or("").to_string();
            if woke.contains("another replica took this job over") {
                break woke;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(150),
                "the woken replica never noticed its job was taken over:\n{l}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Its walk stopped without a task sent or a message published:
        // no host started again, and the job as r2 ended it, everywhere.
        let t1 = Instant::now();
        loop {
            let (st, _, on_r1) = call(
                Method::GET,
                &r1.url(&format!("/job/{id}")),
                Some(&keys.read),
            )
            .await;
            assert_eq!(st, 200, "{on_r1}");
            if on_r1 == report {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(20),
                "r1 shows the job otherwise than r2 ended it: {on_r1}\nr2: {report}\nr1 woke: {woke}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (h, n) in slow_starts(&lab, &hosts) {
            assert_eq!(
                n, "1",
                "{h} started drover-slow again after r1 woke:\n{woke}"
            );
        }
        let (_, _, on_r2) = call(
            Method::GET,
            &r2.url(&format!("/job/{id}")),
            Some(&keys.read),
        )
        .await;
        assert_eq!(on_r2, report, "r1 changed the job after it woke:\n{woke}");
        assert!(!woke.contains("panicked"), "{woke}");
    }

    // The same runbook on a single server reports the same, host for host
    // (the hosts restart at once this time: the unit's fast switch).
    std::thread::scope(|s| {
        for h in &hosts {
            let lab = &lab;
            s.spawn(move || lab.ssh(h, "touch /run/drover-slow.fast"));
        }
    });
    let single = single_server(dir.path(), &lab, &keys, &[("slow", slow)]);
    // Connected first: the comparison is of the jobs, not of a loaded
    // machine's cold connections.
    until_all_read(&single, &keys.read, lab.len(), Duration::from_secs(60)).await;
    let (st, _, direct) = call(
        Method::POST,
        &single.url("/runbook/slow?wait=2m"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{direct}");
    let shape = |v: &Value| -> Vec<(String, String, String, String, bool)> {
        let mut out: Vec<_> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (
                    s("hostname"),
                    s("step"),
                    s("name"),
                    s("status"),
                    r["changed"] == true,
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        shape(&report),
        shape(&direct),
        "taken over: {report}\nsingle: {direct}"
    );
    assert_eq!(report["outcome"], direct["outcome"]);
    remove_slow(&lab, &hosts);
}
