//! NATS permissions per role, for jobs: the replica's and a region's
//! documented permissions run a job, and a region's credentials can
//! neither take nor publish another region's tasks.

use super::*;

/// The JetStream API subjects of the jobs stream a replica uses.
fn jobs_stream_api() -> String {
    [
        "STREAM.INFO.DROVER_JOBS",
        "STREAM.CREATE.DROVER_JOBS",
        "CONSUMER.CREATE.DROVER_JOBS",
        "CONSUMER.CREATE.DROVER_JOBS.>",
    ]
    .iter()
    .map(|s| format!("\"$JS.API.{s}\""))
    .collect::<Vec<_>>()
    .join(", ")
}

/// A client of the test's nats-server as `user`.
async fn client_as(port: u16, user: &str, pw: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), pw.into())
        .connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// A replica and an eu.west.1 worker under exactly the permissions the
/// cluster guide lists for jobs: a restart of an eu.west.1 host runs and
/// reports ok. A worker holding eu.west.1's credentials but told to work
/// eu.west.2 cannot take its tasks: that region's host is not restarted
/// (its InvocationID stays) and the job says no worker owns it. And a
/// message published on eu.west.2's task subject with eu.west.1's
/// credentials never reaches it (an observer sees nothing), while the same
/// message with the replica's credentials does.
#[tokio::test]
async fn a_region_s_credentials_run_its_jobs_and_cannot_take_or_publish_another_region_s_tasks() {
    let Some(lab) = lab() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let _fence = HOST_FENCE.lock().await;
    if !nats_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (own, other) = ("region:eu.west.1", "region:eu.west.2");
    let t = drover::model::cluster::token;
    let users = format!(
        "authorization {{ users = [\n\
         {{ user: replica, password: \"replica-pw-1\", permissions: {{\n\
           publish: [\"drover.read.>\", \"drover.task.>\", \"drover.jobs.>\", \"$KV.drover_clock.>\",\n\
                     \"$KV.drover_claims.>\", \"$KV.drover_rate.>\", \"$KV.drover_job_leases.>\",\n\
                     \"$JS.FC.>\", {replica_api}, {stream_api}],\n\
           subscribe: [\"_INBOX.>\"] }} }},\n\
         {{ user: eu1, password: \"eu1-pw-secret\", permissions: {{\n\
           publish: [\"$KV.drover_workers.>\", \"$KV.drover_leases.{r}.>\", \"_INBOX.>\", {worker_api}],\n\
           subscribe: [\"drover.read.{r}.>\", \"drover.task.{r}.>\", \"_INBOX.>\"] }} }},\n\
         {{ user: observer, password: \"observer-pw\", permissions: {{\n\
           publish: [\"_INBOX.>\"], subscribe: [\"drover.task.>\", \"_INBOX.>\"] }} }}\n\
         ] }}",
        r = t(own),
        replica_api = js_api(
            &["drover_workers", "drover_job_leases"],
            &["drover_clock", "drover_claims", "drover_rate", "drover_job_leases"]
        ),
        stream_api = jobs_stream_api(),
        worker_api = js_api(&["drover_workers"], &["drover_workers", "drover_leases"]),
    );
    let n = nats::single(dir.path(), &users);
    let url = |user: &str, pw: &str| format!("nats://{user}:{pw}@127.0.0.1:{}", n.port);
    let eu1 = url("eu1", "eu1-pw-secret");
    let good = Worker::start(
        dir.path(),
        "eu1",
        &eu1,
        &lab.inventory,
        &["--region", own, "--nats-replicas", "1"],
    );
    let rogue = Worker::start(
        dir.path(),
        "rogue",
        &eu1,
        &lab.inventory,
        &["--region", other, "--nats-replicas", "1"],
    );
    let (h1, h2) = (lab.host(0).to_string(), lab.host(1).to_string());
    let (s, keys) = replica(
        dir.path(),
        &url("replica", "replica-pw-1"),
        &lab.inventory,
        &h1,
    );
    // eu.west.1's host answers reads through its worker.
    let t0 = Instant::now();
    loop {
        let (st, _, b) = call(
            Method::GET,
            &s.url(&format!("/node/{h1}/service")),
            Some(&keys.read),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        if b[0]["error"].is_null() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{b}\n{}\n{}",
            good.log(),
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let invocation = |h: &str| {
        lab.ssh(h, "systemctl show -p InvocationID --value demo-web")
            .trim()
            .to_string()
    };
    // A job on eu.west.1's host runs under the documented permissions.
    let before = invocation(&h1);
    let (st, _, report) = call(
        Method::POST,
        &s.url(&format!("/node/{h1}/service/demo-web/restart?wait=60s")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(
        st,
        200,
        "{report}\nreplica: {}\nworker: {}",
        s.log(),
        good.log()
    );
    assert_eq!(report["results"][0]["status"], "ok", "{report}");
    assert_ne!(invocation(&h1), before, "{h1} was not restarted");
    // On eu.west.2's host nobody may take the task.
    let before = invocation(&h2);
    let (st, _, report) = call(
        Method::POST,
        &s.url(&format!("/node/{h2}/service/demo-web/restart?wait=60s")),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["results"][0]["status"], "failed", "{report}");
    assert!(
        report.to_string().contains("no drover worker owns"),
        "{report}\nrogue: {}",
        rogue.log()
    );
    assert_eq!(
        invocation(&h2),
        before,
        "{h2} was restarted through credentials that must not reach it"
    );

    // Publishing eu.west.2's tasks: refused to eu.west.1's credentials.
    let observer = client_as(n.port, "observer", "observer-pw").await;
    let mut seen = observer.subscribe("drover.task.>").await.unwrap();
    observer.flush().await.unwrap();
    let subject = drover::model::cluster::task_subject(other, &h2);
    let rogue_client = client_as(n.port, "eu1", "eu1-pw-secret").await;
    rogue_client
        .publish(subject.clone(), "forged".into())
        .await
        .unwrap();
    rogue_client.flush().await.unwrap();
    let replica_client = client_as(n.port, "replica", "replica-pw-1").await;
    replica_client
        .publish(subject.clone(), "allowed".into())
        .await
        .unwrap();
    replica_client.flush().await.unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut seen),
    )
    .await
    .expect("the replica's publish reached the observer")
    .unwrap();
    assert_eq!(
        &first.payload[..],
        b"allowed",
        "eu.west.1's credentials published on {subject}"
    );
    // No password in any log.
    for text in [good.log(), rogue.log(), s.log()] {
        assert!(
            !text.contains("eu1-pw-secret") && !text.contains("replica-pw-1"),
            "{text}"
        );
    }
}
