//! Plan = apply in cluster mode: the scenarios of `tests/lab/scenarios.rs`
//! run through a replica, whose dry run reads the hosts through their
//! owning worker and whose job the worker works. For each, the dry run
//! changes nothing on any host, and its predicted status, changed,
//! operations, error and kind for every step × host are what the job then
//! reports. Scenarios that cluster mode refuses by design are left out:
//! edited inventories (one inventory per deployment), modules and unit
//! files (files a worker does not hold).

use super::*;
use crate::scenarios::{outcomes, playbook_text, restore, scenarios, snapshot, Scenario};

/// Whether cluster mode runs the scenario.
fn in_cluster(s: &Scenario) -> bool {
    s.inventory.is_none() && !s.steps.contains("use:") && !s.steps.contains("\n    unit:")
}

/// A plan's or a report's results, flattened.
fn plan_results(plan: &Value) -> Vec<Value> {
    plan["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|st| st["results"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// POST `url` with `key`: (status, JSON body), or why not (the replica's
/// log's tail).
async fn post(r: &Server, url: &str, key: &str) -> Result<(u16, Value), String> {
    let resp = server::client().post(url).bearer_auth(key).send().await;
    match resp {
        Ok(resp) => {
            let st = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            Ok((
                st,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        }
        Err(e) => {
            let log = r.log();
            let from = (log.len().saturating_sub(6000)..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(0);
            let tail = &log[from..];
            Err(format!(
                "POST {url}: {e}\nreplica's log, last lines:\n{tail}"
            ))
        }
    }
}

async fn one(lab: &Lab, r: &Server, key: &str, book: &str, s: &Scenario) -> Result<usize, String> {
    for (host, cmd) in s.setup {
        let o = lab.ssh_output(host, cmd);
        if !o.status.success() {
            return Err(format!(
                "setup `{cmd}` on {host}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    let limit = s.limit.map(|l| format!("&limit={l}")).unwrap_or_default();
    let before = snapshot(lab);
    let (st, plan) = post(
        r,
        &r.url(&format!("/runbook/{book}?dry_run=true{limit}")),
        key,
    )
    .await?;
    let after = snapshot(lab);
    if before != after {
        return Err("the replica's dry run changed the hosts".into());
    }
    if st != 200 {
        return Err(format!("dry run answered {st}: {plan}"));
    }
    let planned = outcomes(plan_results(&plan).into_iter()).map_err(|e| format!("plan: {e}"))?;
    let (st, report) = post(r, &r.url(&format!("/runbook/{book}?wait=2m{limit}")), key).await?;
    let Some(results) = report["results"].as_array().cloned() else {
        return Err(format!("the job did not run ({st}): {report}"));
    };
    let applied = outcomes(results.into_iter()).map_err(|e| format!("apply: {e}"))?;
    let keys: std::collections::BTreeSet<_> = planned.keys().chain(applied.keys()).collect();
    let wrong: Vec<String> = keys
        .into_iter()
        .filter(
            |k| !matches!((planned.get(*k), applied.get(*k)), (Some(p), Some(a)) if p.predicts(a)),
        )
        .map(|k| {
            format!(
                "  {} × {}: plan {:?}, apply {:?}",
                k.0,
                k.1,
                planned.get(k),
                applied.get(k)
            )
        })
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "plan ≠ apply:\n{}\nplan: {}\napply: {report}",
            wrong.join("\n"),
            plan["steps"]
        ));
    }
    for (step, host, status, changed) in s.expect {
        let got = applied
            .get(&(step.to_string(), host.to_string()))
            .map(|o| (o.status.as_str(), o.changed));
        if got != Some((*status, *changed)) {
            return Err(format!(
                "expected {step} × {host} = ({status}, {changed}), the job reported {got:?}: {report}"
            ));
        }
    }
    Ok(applied.len())
}

#[tokio::test]
async fn plan_equals_apply_across_scenarios_through_a_replica() {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    assert!(lab.len() >= 4, "the scenarios need lab-1..lab-4");
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let all: Vec<(String, Scenario)> = scenarios()
        .into_iter()
        .enumerate()
        .filter(|(_, s)| in_cluster(s))
        .map(|(i, s)| (format!("s{i}"), s))
        .collect();
    assert!(
        all.len() >= 25,
        "only {} scenarios run in cluster mode",
        all.len()
    );
    let texts: Vec<(String, String)> = all
        .iter()
        .map(|(b, s)| (b.clone(), playbook_text(s)))
        .collect();
    let books: Vec<(&str, &str)> = texts
        .iter()
        .map(|(b, t)| (b.as_str(), t.as_str()))
        .collect();
    // Read on every request: a scenario's setup, made over plain ssh a
    // moment before, is what the plan must see.
    let _w = Worker::start(
        dir.path(),
        "a",
        &n.url(),
        &lab.inventory,
        &["--nats-replicas", "1", "--lease-ttl", "10s", "--no-live"],
    );
    let urls = n.url();
    let r = serve_args(
        dir.path(),
        &books_and_args(
            dir.path(),
            &lab,
            &keys,
            &books,
            &["--nats", urls.as_str(), "--read-timeout", "10s"],
        ),
        "replica",
    );
    until_all_read(&r, &keys.read, lab.len(), Duration::from_secs(30)).await;
    {
        let _l = lab.lock();
        restore(&lab).expect("the lab's baseline");
    }
    let (mut failures, mut pairs) = (Vec::new(), 0);
    for (i, (book, s)) in all.iter().enumerate() {
        let _l = lab.lock();
        let t = Instant::now();
        let outcome = one(&lab, &r, &keys.admin, book, s).await;
        let restored = restore(&lab);
        match (&outcome, &restored) {
            (Ok(n), Ok(())) => {
                pairs += n;
                eprintln!(
                    "cluster scenario {:>2} ok   {:<58} {n} step×host ({} ms)",
                    i + 1,
                    s.name,
                    t.elapsed().as_millis()
                );
            }
            _ => {
                let why = outcome.err().or(restored.err()).unwrap_or_default();
                eprintln!("cluster scenario {:>2} FAIL {}: {why}", i + 1, s.name);
                failures.push(format!("{}: {why}", s.name));
            }
        }
    }
    eprintln!(
        "cluster scenarios: {} passed, {} failed ({pairs} step×host results compared)",
        all.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}\nreplica: {}",
        failures.join("\n\n"),
        r.log()
    );
}
