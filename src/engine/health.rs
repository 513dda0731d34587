//! `health`: a unit's health on the selected hosts, its state plus the
//! checks asked for, aggregated by the model's rules
//! ([`crate::model::health`]).

use crate::engine::live::select_hosts;
use crate::model::error::{Error, Result};
use crate::model::facts::UnitFacts;
use crate::model::health::{
    aggregate, host_health, unit_health, Health, HealthReport, HostChecks, HostHealth,
};
use crate::model::inventory::{Host, Inventory};
use crate::model::template::Templates;
use crate::model::unit::UnitName;
use crate::remote::fanout::{fan_out, HostError, Reach};
use crate::remote::probe::check_host;

/// What to check: a unit on some hosts, with extra checks whose strings are
/// templates rendered per host (`{{ host.address }}`).
#[derive(Debug, Clone, Default)]
pub struct HealthRequest {
    /// The unit (a bare name gets `.service`).
    pub unit: String,
    /// Hosts (selector; all without one).
    pub target: Option<String>,
    /// HTTP checks from the controller.
    pub http: Vec<String>,
    /// TCP checks from the controller.
    pub tcp: Vec<String>,
    /// Commands run on the host.
    pub command: Vec<String>,
    /// Hosts checked in parallel, and the bound on one host's checks.
    pub reach: Reach,
}

/// Check a unit's health on every selected host. Every check is rendered
/// for every host before anything connects; bad input is an error.
pub async fn health(inv: &Inventory, req: &HealthRequest) -> Result<HealthReport> {
    let hosts = select_hosts(inv, req.target.as_deref())?;
    let unit = UnitName::parse(&req.unit)
        .map_err(|m| Error::Usage(format!("UNIT `{}`: {m}", req.unit)))?;
    let per_host = render_checks(req, &hosts)?;
    let (unit_ref, per_host_ref) = (&unit, &per_host);
    let results = fan_out(&hosts, req.reach.clone(), |i, session| async move {
        let sd = session.systemd();
        let (facts, maint) = tokio::join!(
            sd.unit_facts(std::slice::from_ref(unit_ref)),
            crate::remote::maintenance::read(&session)
        );
        let u = facts?
            .remove(unit_ref.as_str())
            .unwrap_or_else(UnitFacts::not_found);
        let state = match maint {
            Ok(m) => {
                let flag = m.host.as_ref().or_else(|| m.units.get(unit_ref.as_str()));
                unit_health(&u, flag)
            }
            Err(e) => (Health::Unknown, e),
        };
        Ok::<_, HostError>(check_host(Some(&session), state, unit_ref, &per_host_ref[i]).await)
    })
    .await;
    let hosts_health: Vec<HostHealth> = results
        .into_iter()
        .map(|r| match r.result {
            Ok(checks) => host_health(&r.host, checks),
            Err(e) => HostHealth {
                hostname: r.host.clone(),
                status: Health::Unknown,
                note: e.to_string(),
                checks: Vec::new(),
            },
        })
        .collect();
    Ok(aggregate(&unit, hosts_health))
}

/// The checks of every host, rendered from their templates.
fn render_checks(req: &HealthRequest, hosts: &[Host]) -> Result<Vec<HostChecks>> {
    let mut templates = Templates::new(&Default::default())?;
    let mut add = |flag: &str, v: &[String]| -> Result<Vec<usize>> {
        v.iter()
            .map(|s| {
                templates
                    .add_string(s)
                    .map_err(|m| Error::Usage(format!("--{flag} `{s}`: {m}")))
            })
            .collect()
    };
    let (http, tcp, command) = (
        add("http", &req.http)?,
        add("tcp", &req.tcp)?,
        add("command", &req.command)?,
    );
    hosts
        .iter()
        .map(|h| {
            let ctx = templates.host_context(h);
            let r = |ids: &[usize], flag: &str| -> Result<Vec<String>> {
                ids.iter()
                    .map(|t| {
                        templates.render(*t, &ctx).map_err(|m| {
                            Error::Usage(format!("--{flag} for host `{}`: {m}", h.name))
                        })
                    })
                    .collect()
            };
            Ok(HostChecks {
                http: r(&http, "http")?,
                tcp: r(&tcp, "tcp")?,
                command: r(&command, "command")?,
            })
        })
        .collect()
}
