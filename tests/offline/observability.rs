//! Observability with no lab: `GET /metrics` of a real server on a
//! loopback port (behind a key, and on `--metrics-listen` without one),
//! counted from real jobs whose hosts cannot be reached, 1,000 of them
//! over 30 hosts for the series count; the textfile of `drover apply
//! --metrics-file`; and the book's list of metrics against what is
//! served. `--notify` and the JSON log are tests/offline/notify.rs.
//! Prometheus itself scraping them is tests/lab/observability.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;

use crate::notify::{receiver, SECRET};
use crate::server::{call, client, Keys};

/// `GET /metrics` with `key` (None: without), its status and text.
pub(crate) async fn scrape(url: &str, key: Option<&str>) -> (u16, String, String) {
    let mut r = client().get(url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, resp.text().await.unwrap_or_default())
}

/// A sample's value: the line `series` (name and labels exactly as
/// served) is in `text`.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Metric families of a scrape: `# TYPE` name to its type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// The label names of one sample line (values may hold `{`, `,` or `"`).
fn sample_labels(line: &str) -> Vec<String> {
    let Some(mut rest) = line.split_once('{').map(|(_, r)| r) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut escaped = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            })
            .map(|(i, _)| i)
            .unwrap_or(after.len());
        if key != "le" {
            names.push(key.to_string());
        }
        rest = after[end..].trim_start_matches('"').trim_start_matches(',');
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// Label names of each family's samples (`le` of histogram buckets left out).
fn label_names(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let fams = families(text);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| fams.contains_key(*f)))
            .unwrap_or(name);
        let labels = out.entry(family.to_string()).or_default();
        labels.extend(sample_labels(line));
    }
    out
}

#[tokio::test]
async fn metrics_need_a_key_and_count_a_runbook_job_where_it_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let (srv, keys) = crate::serve::start(tmp.path(), &[]);
    let url = srv.url("/metrics");
    let (st, _, _) = scrape(&url, None).await;
    assert_eq!(st, 401);
    let (st, ctype, before) = scrape(&url, Some(&keys.read)).await;
    assert_eq!(st, 200, "{before}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert_eq!(value(&before, "drover_fleet_hosts"), Some(2.0), "{before}");
    assert_eq!(value(&before, "drover_jobs_running"), Some(0.0));

    let (st, _, report) = call(
        Method::POST,
        &srv.url("/runbook/restart-web"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{report}");
    let job_id = report["job_id"].as_str().unwrap().to_string();
    assert_eq!(report["results"][0]["kind"], "unreachable", "{report}");

    let (_, _, text) = scrape(&url, Some(&keys.read)).await;
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v(r#"drover_jobs_started_total{playbook="restart-web"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"drover_jobs_finished_total{playbook="restart-web",outcome="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"drover_job_duration_seconds_count{playbook="restart-web",outcome="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"drover_step_duration_seconds_count{playbook="restart-web",step="restart"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(
            r#"drover_host_results_total{playbook="restart-web",status="failed",kind="unreachable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(v("drover_hosts_unreachable"), Some(1.0));
    assert_eq!(v("drover_jobs_running"), Some(0.0));
    assert_eq!(v("drover_claims_held"), Some(0.0));
    assert_eq!(
        v(r#"drover_http_requests_total{route="/runbook/{name}",method="POST",status="200"}"#),
        Some(1.0)
    );
    // The 401 is counted too, by its route.
    assert_eq!(
        v(r#"drover_http_requests_total{route="/metrics",method="GET",status="401"}"#),
        Some(1.0)
    );
    assert!(!text.contains(&job_id), "a job id in a label:\n{text}");
    assert!(
        !text.contains("host=\""),
        "hostnames without --metrics-host-labels:\n{text}"
    );
    for k in [&keys.read, &keys.operate, &keys.admin] {
        assert!(!text.contains(k.as_str()));
    }
}

/// A server that also serves `GET /metrics` on `--metrics-listen`: both
/// lines it prints, then the server.
fn start_with_metrics_listen(
    dir: &Path,
    extra: &[&str],
) -> (std::process::Child, String, String, Keys) {
    use std::io::BufRead;
    let (inv, keys) = crate::serve::offline_with(dir, "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "-i"])
        .arg(&inv)
        .arg("--keys")
        .arg(&keys.file)
        .arg("--jobs-dir")
        .arg(dir.join("jobs"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let api = next();
    let metrics = next();
    let api = api
        .strip_prefix("drover serve: listening on ")
        .unwrap_or_else(|| panic!("{api:?}"))
        .to_string();
    let metrics = metrics
        .strip_prefix("drover serve: metrics on ")
        .and_then(|m| m.split(' ').next())
        .unwrap_or_else(|| panic!("{metrics:?}"))
        .to_string();
    (child, api, metrics, keys)
}

#[tokio::test]
async fn metrics_listen_answers_without_a_key_on_loopback_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, api, metrics, keys) =
        start_with_metrics_listen(tmp.path(), &["--metrics-host-labels"]);
    let (st, _, text) = scrape(&format!("http://{metrics}/metrics"), None).await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("drover_build_info{version=\""), "{text}");
    // Only /metrics there.
    let (st, _, _) = call(
        Method::GET,
        &format!("http://{metrics}/job"),
        Some(&keys.admin),
    )
    .await;
    assert_eq!(st, 404);
    // The API's own /metrics still needs a key.
    let (st, _, _) = scrape(&format!("http://{api}/metrics"), None).await;
    assert_eq!(st, 401);
    // With host labels, a host result names its (inventory) host.
    let (st, _, b) = call(
        Method::POST,
        &format!("http://{api}/node/a/service/demo-web/restart"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (_, _, text) = scrape(&format!("http://{metrics}/metrics"), None).await;
    assert_eq!(
        value(
            &text,
            r#"drover_host_results_total{playbook="drover-service",status="failed",kind="unreachable",host="a"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // An ad-hoc step's id holds the unit: its label is the module.
    assert!(
        text.contains(
            r#"drover_step_duration_seconds_count{playbook="drover-service",step="service"} 1"#
        ),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();

    let (inv, keys) = crate::serve::offline_with(tmp.path(), "");
    for addr in ["0.0.0.0:9480", "192.0.2.1:9480", "localhost"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["serve", "-i"])
            .arg(&inv)
            .arg("--keys")
            .arg(&keys.file)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", addr])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{addr}: {err}");
        assert!(err.contains("--metrics-listen"), "{err}");
        assert!(
            out.stdout.is_empty(),
            "nothing listened: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The metric names of the book's page: the first cell of its tables'
/// rows, `drover_...` in backticks; each with the labels of the second.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/operations/observability.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let mut out = BTreeMap::new();
    for row in text.lines().filter(|l| l.starts_with("| `drover_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "none")
            .collect();
        out.insert(name, labels);
    }
    assert!(out.len() > 10, "{}: no metric table", page.display());
    out
}

#[tokio::test]
async fn the_book_lists_every_metric_served_or_written_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, _, mut delivered) = receiver(0).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let (srv, keys) = crate::serve::start_prepared(
        tmp.path(),
        &["--metrics-host-labels", "--notify", &hook],
        |c| {
            c.env("DROVER_NOTIFY_SECRET", SECRET);
        },
    );
    let (st, _, b) = call(
        Method::POST,
        &srv.url("/runbook/restart-web"),
        Some(&keys.operate),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::timeout(Duration::from_secs(30), delivered.wait_for(|n| *n >= 1))
        .await
        .expect("no notification")
        .unwrap();
    let (_, _, served) = scrape(&srv.url("/metrics"), Some(&keys.read)).await;
    let (inv, _) = crate::serve::offline_with(tmp.path(), "");
    // A run that succeeds (skipped everywhere by its `when`), so that the
    // file has its last success too.
    let pb = tmp.path().join("skipped.yml");
    std::fs::write(
        &pb,
        "name: s\nsteps:\n  - { id: s, target: _all, when: \"false\", service: { name: x, state: started } }\n",
    )
    .unwrap();
    let prom = tmp.path().join("m.prom");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("apply")
        .arg(&pb)
        .arg("-i")
        .arg(&inv)
        .arg("--metrics-file")
        .arg(&prom)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&prom).unwrap();

    let doc = documented();
    let mut actual = label_names(&served);
    actual.extend(label_names(&written));
    // Names as `# TYPE` gives them: counters with their `_total`.
    let names: BTreeSet<String> = families(&served)
        .into_keys()
        .chain(families(&written).into_keys())
        .collect();
    let listed: BTreeSet<String> = doc.keys().cloned().collect();
    assert_eq!(
        names.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served or written, not in the book's tables"
    );
    assert_eq!(
        listed.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the book's tables, neither served nor written"
    );
    for (name, labels) in &doc {
        let used = actual.get(name).cloned().unwrap_or_default();
        assert!(
            used.is_subset(labels),
            "{name}: labels {used:?} served, the book says {labels:?}"
        );
    }
    // Every label the book names is on some series.
    let seen: BTreeSet<&String> = actual.values().flatten().collect();
    for label in doc.values().flatten() {
        assert!(
            seen.contains(label),
            "the book's label `{label}` is on no series"
        );
    }
}

#[test]
fn apply_writes_one_textfile_per_playbook_and_keeps_the_last_success() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (inv, _) = crate::serve::offline_with(dir, "");
    let prom_dir = dir.join("textfile");
    std::fs::create_dir(&prom_dir).unwrap();
    let nightly = dir.join("nightly.yml");
    // Skipped on every host by its `when`: nothing connects, exit 0.
    std::fs::write(
        &nightly,
        "name: nightly\nsteps:\n  - id: roll\n    target: _all\n    when: \"false\"\n    service: { name: demo-worker, state: restarted }\n",
    )
    .unwrap();
    let apply = |pb: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("apply")
            .arg(pb)
            .arg("-i")
            .arg(&inv)
            .arg("--metrics-file")
            .arg(&prom_dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = apply(&nightly);
    assert_eq!(code, Some(0), "{err}");
    let file = prom_dir.join("drover-nightly.prom");
    let first = std::fs::read_to_string(&file).unwrap();
    let at = |text: &str, series: &str| value(text, &format!("{series}{{playbook=\"nightly\"}}"));
    let success = at(&first, "drover_last_success_timestamp_seconds").expect("a success");
    assert_eq!(
        at(&first, "drover_last_run_timestamp_seconds"),
        Some(success)
    );
    assert_eq!(at(&first, "drover_last_run_success"), Some(1.0));
    assert_eq!(
        value(
            &first,
            r#"drover_last_run_results{playbook="nightly",status="skipped"}"#
        ),
        Some(2.0),
        "{first}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter runs as another user");

    // The same playbook failing: a new last run, the success kept.
    std::fs::write(
        &nightly,
        "name: nightly\nsteps:\n  - { id: roll, target: _all, service: { name: demo-worker, state: restarted } }\n",
    )
    .unwrap();
    let (code, err) = apply(&nightly);
    assert_eq!(code, Some(4), "{err}");
    let second = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        at(&second, "drover_last_success_timestamp_seconds"),
        Some(success),
        "{second}"
    );
    assert!(at(&second, "drover_last_run_timestamp_seconds").unwrap() >= success);
    assert_eq!(at(&second, "drover_last_run_success"), Some(0.0));
    assert_eq!(at(&second, "drover_last_run_exit_code"), Some(4.0));
    assert_eq!(
        value(
            &second,
            r#"drover_last_run_results{playbook="nightly",status="failed"}"#
        ),
        Some(2.0),
        "{second}"
    );

    // Another playbook: its own file; the first one's untouched.
    let other = dir.join("weekly.yml");
    std::fs::copy(&nightly, &other).unwrap();
    let (code, _) = apply(&other);
    assert_eq!(code, Some(4));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), second);
    let names: BTreeSet<String> = std::fs::read_dir(&prom_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "drover-nightly.prom".to_string(),
            "drover-weekly.prom".to_string()
        ]),
        "no temporary file left behind"
    );

    // A file node_exporter would never read is refused before the run.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("apply")
        .arg(&nightly)
        .arg("-i")
        .arg(&inv)
        .arg("--metrics-file")
        .arg(dir.join("metrics.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".prom"));
    assert!(!dir.join("metrics.txt").exists());
}

/// 1,000 jobs over 30 hosts through a real server, two runbooks at a
/// time (more would only starve the tests running beside it): the series
/// do not grow with the jobs (the unit test in
/// src/cmd/serve/metrics.rs does the same with host labels, from events).
#[tokio::test]
async fn a_thousand_jobs_over_thirty_hosts_leave_the_series_count_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts: String = (0..28)
        .map(|i| format!("  h{i:02}: {{ labels: {{ role: web }} }}\n"))
        .collect();
    let books = tmp.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    // Each its own unit: jobs of different runbooks claim nothing in common.
    for k in 0..2 {
        std::fs::write(
            books.join(format!("roll-{k}.yml")),
            format!("name: roll {k}\nsteps:\n  - {{ id: roll, target: role:web, service: {{ name: demo-{k}, state: restarted }} }}\n"),
        )
        .unwrap();
    }
    let (srv, keys) = crate::serve::start_with(tmp.path(), &hosts, &["--rate-limit", "0"]);
    let t0 = std::time::Instant::now();
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let run = |k: usize, jobs: usize| {
        let url = srv.url(&format!("/runbook/roll-{k}"));
        let key = keys.operate.clone();
        async move {
            for _ in 0..jobs {
                let (st, _, b) = call(Method::POST, &url, Some(&key)).await;
                assert_eq!(st, 200, "{b}");
            }
        }
    };
    // Every label value met once, and /metrics itself counted.
    futures_util::future::join_all((0..2).map(|k| run(k, 5))).await;
    scrape(&srv.url("/metrics"), Some(&keys.read)).await;
    let (_, _, text) = scrape(&srv.url("/metrics"), Some(&keys.read)).await;
    let early = series(&text);
    futures_util::future::join_all((0..2).map(|k| run(k, 495))).await;
    let (_, _, text) = scrape(&srv.url("/metrics"), Some(&keys.read)).await;
    let finished: f64 = (0..2)
        .filter_map(|k| {
            value(
                &text,
                &format!(
                    "drover_jobs_finished_total{{playbook=\"roll-{k}\",outcome=\"completed\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(finished, 1000.0, "{text}");
    assert_eq!(
        value(
            &text,
            r#"drover_host_results_total{playbook="roll-0",status="failed",kind="unreachable"}"#
        ),
        Some(500.0 * 29.0),
        "29 hosts of role web"
    );
    assert_eq!(series(&text), early, "series grew with the jobs:\n{text}");
    assert!(series(&text) < 200, "{text}");
    eprintln!(
        "observability: 1000 jobs over 30 hosts in {:.1}s, {} series",
        t0.elapsed().as_secs_f64(),
        series(&text)
    );
}

/// What a server holds, read at the scrape: a job stuck on a host that
/// never answers holds its claims and a running job; a second request for
/// the same runbook waits for them. Released, all of it goes back to 0.
#[tokio::test]
async fn claims_held_and_requests_waiting_are_read_at_the_scrape() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = crate::server::StuckBus::new(tmp.path());
    let stuck = format!(
        "  s:\n    labels: {{ role: web }}\n    bus: \"{}\"\n    connect_timeout: 120s\n",
        bus.address()
    );
    let (srv, keys) = crate::serve::start_with(tmp.path(), &stuck, &[]);
    let url = srv.url("/runbook/restart-web");
    let (st, _, b) = call(Method::POST, &format!("{url}?wait=1s"), Some(&keys.operate)).await;
    assert_eq!(st, 202, "{b}");
    bus.wait_connections(1);
    let (key, second_url) = (keys.operate.clone(), format!("{url}?wait=2m"));
    let second = tokio::spawn(async move { call(Method::POST, &second_url, Some(&key)).await });
    let metrics = srv.url("/metrics");
    let until = |want: &'static [(&'static str, f64)]| {
        let (metrics, key) = (metrics.clone(), keys.read.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (_, _, text) = scrape(&metrics, Some(&key)).await;
                if want.iter().all(|(s, v)| value(&text, s) == Some(*v)) {
                    return text;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not {want:?}:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The runbook, and demo-web on a and on s.
    until(&[
        ("drover_requests_waiting", 1.0),
        ("drover_claims_held", 3.0),
        ("drover_jobs_running", 1.0),
    ])
    .await;
    bus.release();
    let (st, _, b) = second.await.unwrap();
    assert_eq!(st, 200, "{b}");
    until(&[
        ("drover_requests_waiting", 0.0),
        ("drover_claims_held", 0.0),
        ("drover_jobs_running", 0.0),
        (
            r#"drover_jobs_finished_total{playbook="restart-web",outcome="completed"}"#,
            2.0,
        ),
    ])
    .await;
}
