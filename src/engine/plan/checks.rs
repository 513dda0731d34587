//! Script modules in check mode: run on the hosts while planning, their
//! reports folded into the plan.

use std::sync::Arc;

use crate::engine::job::Job;
use crate::engine::plan::ModuleChecks;
use crate::model::facts::Facts;
use crate::model::playbook::module::{ScriptModule, ScriptReport};
use crate::model::playbook::Operation;

/// Run every check-capable script module with `check: true` on the live
/// hosts it may run on (reachable, `when` true): one connection per host,
/// `forks` hosts at a time, each run bounded by the module's time limit.
/// The state it sees is the host's now, before the run's earlier steps.
pub(super) async fn module_checks(
    job: &Job,
    facts: &Facts,
    reach: crate::remote::fanout::Reach,
) -> ModuleChecks {
    use futures_util::stream::StreamExt;
    let mut per_host: std::collections::BTreeMap<usize, Vec<(usize, Arc<ScriptModule>)>> =
        std::collections::BTreeMap::new();
    for (si, step) in job.playbook.steps.iter().enumerate() {
        let Operation::Script(m) = &step.operation else {
            continue;
        };
        if !m.check {
            continue;
        }
        for t in job.expanded[si].tasks.iter().filter(|t| t.when) {
            let host = &job.inventory.hosts[t.host];
            if facts.hosts.get(&host.name).is_some_and(|f| f.reachable) {
                per_host.entry(t.host).or_default().push((si, m.clone()));
            }
        }
    }
    let runs = futures_util::stream::iter(per_host)
        .map(|(h, list)| async move {
            let host = &job.inventory.hosts[h];
            let mut out = Vec::new();
            let session = match crate::remote::fanout::connect_within(host, reach.timeout).await {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("cannot run the check: {e}");
                    for (si, _) in list {
                        out.push(((si, h), failed_check(&msg)));
                    }
                    return out;
                }
            };
            for (si, m) in list {
                let input = crate::model::playbook::module::input_json(&m.params, true, host);
                let limit = m.timeout.min(reach.timeout);
                let rep = match tokio::time::timeout(
                    limit + std::time::Duration::from_secs(10),
                    crate::remote::script::run(&session, &m.program, &input, limit),
                )
                .await
                {
                    Ok(Ok(ran)) => crate::model::playbook::module::read_report(
                        &m.name,
                        ran.code,
                        &ran.stdout,
                        &ran.stderr,
                    ),
                    Ok(Err(e)) => failed_check(&format!("module `{}`: {e}", m.name)),
                    Err(_) => failed_check(&format!(
                        "module `{}` did not finish within its time limit",
                        m.name
                    )),
                };
                out.push(((si, h), rep));
            }
            session.close().await;
            out
        })
        .buffer_unordered(reach.forks.max(1));
    runs.collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn failed_check(msg: &str) -> ScriptReport {
    ScriptReport {
        changed: false,
        failed: true,
        msg: msg.to_string(),
        diff: None,
    }
}
