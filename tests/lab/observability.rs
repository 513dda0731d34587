//! Prometheus, Debian's package, scraping what drover exposes after real
//! work on lab hosts: `drover serve`'s `GET /metrics` (with a read key,
//! as Prometheus's `authorization` sends it) after a runbook restarted a
//! unit on two hosts, and node_exporter's textfile collector reading what
//! a cron-style `drover apply --metrics-file` left. Each process runs on a
//! loopback port of its own for this test; the test asks Prometheus's
//! HTTP API, polling it until a deadline, whether the job's counters and
//! histograms arrived with the right labels.

use crate::common;
use crate::server::{call, client, Keys, Server};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A program of the machine's packages (tests/lab/lab.sh deps installs it).
fn need(program: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(program);
    assert!(
        path.is_file(),
        "{} is missing: run tests/lab/lab.sh deps (it installs prometheus and prometheus-node-exporter)",
        path.display()
    );
    path
}

fn start(program: &Path, args: &[String], log: &Path) -> Proc {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Proc(child)
}

/// The result vector of an instant query.
async fn query(prom: &str, q: &str) -> Result<Vec<Value>, String> {
    let r = client()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Poll `q` until it has exactly one series whose value is `want`, for at
/// most `within`; that series (its labels and value).
async fn wait_value(prom: &str, q: &str, want: f64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let last = query(prom, q).await;
        if let Ok(r) = &last {
            if let [one] = r.as_slice() {
                let v: Option<f64> = one["value"][1].as_str().and_then(|s| s.parse().ok());
                if v == Some(want) {
                    return one.clone();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "`{q}` is not {want} after {within:?}: {last:?}"
        );
        // Polled: Prometheus scrapes every second and answers at once.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The labels of a query's series, without the ones Prometheus adds.
fn labels(series: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = series["metric"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    out.sort();
    out
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn prometheus_scrapes_a_served_job_and_a_cron_runs_textfile() {
    let Some(lab) = common::lab() else { return };
    let prometheus = need("prometheus");
    let node_exporter = need("prometheus-node-exporter");
    let _l = lab.lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (h0, h1, h2) = (lab.host(0), lab.host(1), lab.host(2 % lab.len()));

    // The server, and a runbook restarting demo-worker on two hosts.
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("obs-roll.yml"),
        format!("name: observability roll\nsteps:\n  - id: roll\n    target: [{h0}, {h1}]\n    service: {{ name: demo-worker, state: restarted }}\n"),
    )
    .unwrap();
    let keys = Keys::make(dir, h0);
    let srv = Server::start(
        &[
            "-i",
            lab.inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            dir.join("jobs").to_str().unwrap(),
        ],
        &dir.join("serve.err"),
    );
    let (st, _, report) = call(
        Method::POST,
        &srv.url("/runbook/obs-roll?wait=2m"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["outcome"], "completed", "{report}");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{report}");

    // A cron-style run leaving its textfile.
    let textfiles = dir.join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let nightly = dir.join("obs-nightly.yml");
    std::fs::write(
        &nightly,
        format!("name: nightly\nsteps:\n  - {{ id: roll, target: {h2}, service: {{ name: demo-worker, state: restarted }} }}\n"),
    )
    .unwrap();
    let (code, out, err) = common::run(
        lab.drover()
            .arg("apply")
            .arg(&nightly)
            .arg("-i")
            .arg(&lab.inventory)
            .arg("--metrics-file")
            .arg(&textfiles),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(textfiles.join("drover-obs-nightly.prom").is_file());

    // node_exporter with only its textfile collector; Prometheus scraping
    // both every second, the server with the read key.
    let node_port = free_port();
    let _node = start(
        &node_exporter,
        &[
            format!("--web.listen-address=127.0.0.1:{node_port}"),
            "--collector.disable-defaults".into(),
            "--collector.textfile".into(),
            format!("--collector.textfile.directory={}", textfiles.display()),
        ],
        &dir.join("node.log"),
    );
    let key_file = dir.join("read.key");
    std::fs::write(&key_file, &keys.read).unwrap();
    let drover_target = srv.base.trim_start_matches("http://");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n\
             \x20 - job_name: drover\n\
             \x20   authorization: {{ type: Bearer, credentials_file: {} }}\n\
             \x20   static_configs: [{{ targets: [\"{drover_target}\"] }}]\n\
             \x20 - job_name: node\n\
             \x20   static_configs: [{{ targets: [\"127.0.0.1:{node_port}\"] }}]\n",
            key_file.display()
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prom = start(
        &prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let within = Duration::from_secs(60);

    // Both targets up: the key was accepted, the textfile parsed.
    wait_value(&prom, r#"up{job="drover"}"#, 1.0, within).await;
    wait_value(&prom, r#"up{job="node"}"#, 1.0, within).await;

    let finished = wait_value(
        &prom,
        r#"drover_jobs_finished_total{playbook="obs-roll"}"#,
        1.0,
        within,
    )
    .await;
    assert_eq!(
        labels(&finished),
        pairs(&[("playbook", "obs-roll"), ("outcome", "completed")])
    );
    let ok = wait_value(
        &prom,
        r#"drover_host_results_total{playbook="obs-roll",status="ok"}"#,
        2.0,
        within,
    )
    .await;
    assert_eq!(
        labels(&ok),
        pairs(&[("playbook", "obs-roll"), ("status", "ok"), ("kind", "none")])
    );
    let count = wait_value(
        &prom,
        r#"drover_job_duration_seconds_count{playbook="obs-roll"}"#,
        1.0,
        within,
    )
    .await;
    assert_eq!(
        labels(&count),
        pairs(&[("playbook", "obs-roll"), ("outcome", "completed")])
    );
    wait_value(
        &prom,
        r#"drover_job_duration_seconds_bucket{playbook="obs-roll",le="+Inf"}"#,
        1.0,
        within,
    )
    .await;
    // The job's duration, as Prometheus reads it back from the buckets.
    wait_value(
        &prom,
        r#"count(histogram_quantile(0.5, drover_job_duration_seconds_bucket{playbook="obs-roll"}) >= 0)"#,
        1.0,
        within,
    )
    .await;
    let step = wait_value(
        &prom,
        r#"drover_step_duration_seconds_count{playbook="obs-roll"}"#,
        1.0,
        within,
    )
    .await;
    assert_eq!(
        labels(&step),
        pairs(&[("playbook", "obs-roll"), ("step", "roll")])
    );
    wait_value(
        &prom,
        r#"drover_http_requests_total{route="/runbook/{name}",method="POST",status="200"}"#,
        1.0,
        within,
    )
    .await;
    wait_value(&prom, "drover_hosts_unreachable", 0.0, within).await;
    // No job id, unit or hostname became a label anywhere.
    let all = query(&prom, r#"{job="drover"}"#).await.unwrap();
    assert!(!all.is_empty());
    let text = serde_json::to_string(&all).unwrap();
    let job_id = report["job_id"].as_str().unwrap();
    for never in [job_id, h0, h1, "demo-worker"] {
        assert!(!text.contains(never), "`{never}` in a label: {text}");
    }

    // The cron run, through node_exporter.
    let success = wait_value(&prom, r#"drover_last_run_success{job="node"}"#, 1.0, within).await;
    assert_eq!(labels(&success), pairs(&[("playbook", "obs-nightly")]));
    wait_value(
        &prom,
        r#"count(time() - drover_last_success_timestamp_seconds{playbook="obs-nightly"} < 600)"#,
        1.0,
        within,
    )
    .await;
    wait_value(
        &prom,
        r#"drover_last_run_results{playbook="obs-nightly",status="ok"}"#,
        1.0,
        within,
    )
    .await;
}
