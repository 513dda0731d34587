//! A job: a validated playbook over an inventory, everything checked
//! before the first connection. Built from files (the command line), from
//! text in memory (tests, a server's request), or generated for one ad-hoc
//! operation (`drover service`, `drover maintenance`).

use std::path::Path;

use crate::model::dag::Dag;
use crate::model::error::{Error, Result};
use crate::model::expand::{expand, ExpandedStep};
use crate::model::inventory::Inventory;
use crate::model::params::{ParamValues, Params};
use crate::model::playbook::{Operation, Playbook};
use crate::model::target::Selector;
use crate::model::template::CallerText;
use crate::model::unit::UnitName;

/// Everything validated before the first connection.
#[derive(Debug)]
pub struct Job {
    /// The playbook.
    pub playbook: Playbook,
    /// The inventory.
    pub inventory: Inventory,
    /// The DAG.
    pub dag: Dag,
    /// Steps with targets and templates resolved.
    pub expanded: Vec<ExpandedStep>,
    /// `--limit` as given.
    pub limit: Option<String>,
    /// The playbook's parameters as bound for this job (the playbook's
    /// own `params`): their digest and record leave secret ones out.
    pub params: Params,
}

impl Job {
    /// Digests of what this job runs: a retry or a resume refuses when
    /// they differ from the run it continues.
    pub fn inputs(&self) -> crate::model::report::Inputs {
        crate::model::report::Inputs {
            playbook: self.playbook.digest.clone(),
            inventory: self.inventory.digest.clone(),
            params: self.params_digest(),
        }
    }

    fn params_digest(&self) -> String {
        self.params.digest.clone()
    }

    /// The parameters' values, secret ones left out.
    pub fn params_record(&self) -> serde_json::Map<String, serde_json::Value> {
        self.params.record()
    }

    /// Load and validate playbook + inventory files (+ `--limit`).
    pub fn load(playbook: &Path, inventory: &Path, limit: Option<&str>) -> Result<Job> {
        Job::load_with_modules(playbook, inventory, limit, None)
    }

    /// [`Job::load`], with `--modules DIR` searched for `use:` modules.
    pub fn load_with_modules(
        playbook: &Path,
        inventory: &Path,
        limit: Option<&str>,
        modules: Option<&Path>,
    ) -> Result<Job> {
        Job::load_with(playbook, inventory, limit, modules, &ParamValues::none())
    }

    /// [`Job::load_with_modules`], with the caller's parameter values
    /// (`--param`, `--params-file`), checked against the playbook's
    /// `params:` before anything else is read.
    pub fn load_with(
        playbook: &Path,
        inventory: &Path,
        limit: Option<&str>,
        modules: Option<&Path>,
        values: &ParamValues,
    ) -> Result<Job> {
        let t = std::time::Instant::now();
        let playbook = Playbook::load_with(playbook, modules, values)?;
        let inventory = crate::engine::inventory::load(inventory)?;
        tracing::debug!(elapsed = ?t.elapsed(), hosts = inventory.hosts.len(), "model loaded");
        let job = Job::new(playbook, inventory, limit)?;
        tracing::debug!(elapsed = ?t.elapsed(), "targets and templates expanded");
        Ok(job)
    }

    /// Build a job from playbook and inventory text held in memory; the
    /// labels name them in errors (and anchor relative paths).
    pub fn from_text(
        playbook: &str,
        playbook_label: &Path,
        inventory: &str,
        inventory_label: &Path,
        limit: Option<&str>,
    ) -> Result<Job> {
        let values = ParamValues::none();
        Job::from_text_with(
            playbook,
            playbook_label,
            inventory,
            inventory_label,
            limit,
            &values,
        )
    }

    /// [`Job::from_text`], with the caller's parameter values.
    pub fn from_text_with(
        playbook: &str,
        playbook_label: &Path,
        inventory: &str,
        inventory_label: &Path,
        limit: Option<&str>,
        values: &ParamValues,
    ) -> Result<Job> {
        let playbook = Playbook::from_str_with(playbook, playbook_label, None, values)?;
        let inventory = Inventory::from_str(inventory, inventory_label)?;
        Job::new(playbook, inventory, limit)
    }

    /// DAG, limit and expansion of a parsed playbook over an inventory.
    pub fn new(playbook: Playbook, inventory: Inventory, limit: Option<&str>) -> Result<Job> {
        let dag = Dag::build(&playbook)?;
        let selector = limit.map(|l| parse_selector("--limit", l)).transpose()?;
        let expanded = expand(&playbook, &inventory, selector.as_ref())?;
        check_groups(&playbook, &inventory, &expanded)?;
        let params = playbook.params.clone();
        Ok(Job {
            playbook,
            inventory,
            dag,
            expanded,
            limit: limit.map(str::to_string),
            params,
        })
    }
}

/// Every host a step with `group_by` works on carries the label, so
/// none escapes its group's limit.
fn check_groups(
    playbook: &Playbook,
    inventory: &Inventory,
    expanded: &[ExpandedStep],
) -> Result<()> {
    for (step, ex) in playbook.steps.iter().zip(expanded) {
        let Some(limit) = &step.limit else { continue };
        let hosts = ex.tasks.iter().filter_map(|t| inventory.hosts.get(t.host));
        if let Err((m, sugg)) = crate::model::playbook::check_limit_hosts(limit, hosts) {
            return Err(Error::invalid(
                "playbook",
                format!("steps[{}].group_by", step.file_index),
                format!("step `{}`: {m}", step.id),
                Some(step.position.clone()),
            )
            .with_suggestion(sugg));
        }
    }
    Ok(())
}

/// Parse a `--limit`/`--target` selector given by the caller.
pub fn parse_selector(flag: &str, raw: &str) -> Result<Selector> {
    Selector::parse(raw).map_err(|m| Error::Usage(format!("{flag} `{raw}`: {m}")))
}

/// The ad-hoc service operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Start if not running.
    Start,
    /// Stop if running.
    Stop,
    /// Restart.
    Restart,
    /// Reload (start if not running).
    Reload,
    /// Enable the unit file (start at boot).
    Enable,
    /// Disable the unit file.
    Disable,
}

impl std::str::FromStr for ServiceAction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "start" => ServiceAction::Start,
            "stop" => ServiceAction::Stop,
            "restart" => ServiceAction::Restart,
            "reload" => ServiceAction::Reload,
            "enable" => ServiceAction::Enable,
            "disable" => ServiceAction::Disable,
            other => {
                return Err(format!(
                "`{other}` is not an action; use start, stop, restart, reload, enable or disable"
            ))
            }
        })
    }
}

/// One ad-hoc operation over selected hosts, as a one-step job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdHoc {
    /// `drover service ACTION UNIT --target SEL`.
    Service {
        /// What to do.
        action: ServiceAction,
        /// The unit as given (a bare name gets `.service`).
        unit: String,
        /// The hosts.
        target: String,
    },
    /// `drover maintenance enable|disable [UNIT] --target SEL`.
    Maintenance {
        /// On or off.
        enable: bool,
        /// The unit, or the whole host.
        unit: Option<String>,
        /// The hosts.
        target: String,
        /// Why (required to enable): the caller's text, kept verbatim.
        reason: Option<CallerText>,
    },
    /// Register a unit file (write this content) or deregister it (None:
    /// stop, disable, remove): the `unit:` module, for the server's
    /// unit-file routes.
    UnitFile {
        /// The unit as given (a bare name gets `.service`).
        unit: String,
        /// The hosts: the union of these selectors.
        targets: Vec<String>,
        /// The file's content, verbatim; None: no file.
        content: Option<String>,
        /// Who asks (`consul`, `osapi`): names the job and its label.
        by: &'static str,
    },
}

impl AdHoc {
    /// The operation's one-step playbook, validated; [`Job::new`] puts it
    /// over an inventory.
    pub fn playbook(&self) -> Result<Playbook> {
        let (text, label) = match self {
            AdHoc::Service {
                action,
                unit,
                target,
            } => (service_playbook(*action, unit, target)?, "<drover service>"),
            AdHoc::UnitFile {
                unit,
                targets,
                content,
                by,
            } => {
                let text = unit_file_playbook(unit, targets, content.as_deref(), by)?;
                return Playbook::from_str(&text, Path::new(&format!("<{by} register>")));
            }
            AdHoc::Maintenance {
                enable,
                unit,
                target,
                reason,
            } => {
                let text = maintenance_playbook(*enable, unit.as_deref(), target, reason.as_ref())?;
                let mut pb = Playbook::from_str(&text, Path::new("<drover maintenance>"))?;
                // The reason went into the text as a placeholder; the
                // caller's words take its place as a literal.
                if let (
                    Some(r),
                    Some(Operation::Maintenance {
                        reason: Some(id), ..
                    }),
                ) = (reason, pb.steps.first().map(|s| &s.operation))
                {
                    let id = *id;
                    pb.templates.set_literal(id, r).map_err(Error::Internal)?;
                }
                return Ok(pb);
            }
        };
        Playbook::from_str(&text, Path::new(label))
    }
}

/// The one-step playbook of an ad-hoc service operation. Values are
/// validated first and written as JSON strings, which YAML reads verbatim.
fn service_playbook(action: ServiceAction, unit: &str, target: &str) -> Result<String> {
    let unit = UnitName::parse(unit).map_err(|m| Error::Usage(format!("UNIT `{unit}`: {m}")))?;
    parse_selector("--target", target)?;
    let (state, field) = match action {
        ServiceAction::Start => ("started", "state: started"),
        ServiceAction::Stop => ("stopped", "state: stopped"),
        ServiceAction::Restart => ("restarted", "state: restarted"),
        ServiceAction::Reload => ("reloaded", "state: reloaded"),
        ServiceAction::Enable => ("enabled", "enabled: true"),
        ServiceAction::Disable => ("disabled", "enabled: false"),
    };
    let q = |v: &str| serde_json::Value::from(v).to_string();
    Ok(format!(
        "name: {}\nsteps:\n  - id: {}\n    target: {}\n    service: {{ name: {}, {field} }}\n",
        q(&format!("drover service {state} {unit}")),
        q(&format!(
            "{state}-{}",
            unit.as_str().replace(['@', ':', '\\'], "_")
        )),
        q(target),
        q(unit.as_str())
    ))
}

/// The one-step `unit:` playbook of a unit-file route. Values are
/// validated first and written as JSON strings, which YAML reads
/// verbatim: the content is the file's text, never a template.
fn unit_file_playbook(
    unit: &str,
    targets: &[String],
    content: Option<&str>,
    by: &str,
) -> Result<String> {
    let unit = UnitName::parse(unit).map_err(|m| Error::Usage(format!("unit `{unit}`: {m}")))?;
    for t in targets {
        parse_selector("target", t)?;
    }
    if targets.is_empty() {
        return Err(Error::Usage("a unit file needs at least one target".into()));
    }
    let q = |v: &str| serde_json::Value::from(v).to_string();
    let (word, body) = match content {
        Some(c) => ("register", format!("content: {}", q(c))),
        None => ("deregister", "state: absent".to_string()),
    };
    let targets: Vec<String> = targets.iter().map(|t| q(t)).collect();
    Ok(format!(
        "name: {}\nsteps:\n  - id: {}\n    target: [{}]\n    unit: {{ name: {}, {body} }}\n",
        q(&format!("{by} {word} {unit}")),
        q(&format!(
            "{word}-{}",
            unit.as_str().replace(['@', ':', '\\'], "_")
        )),
        targets.join(", "),
        q(unit.as_str()),
    ))
}

/// The one-step playbook of an ad-hoc `drover maintenance` command. Values
/// are validated first and written as JSON strings, which YAML reads verbatim.
fn maintenance_playbook(
    enable: bool,
    unit: Option<&str>,
    target: &str,
    reason: Option<&CallerText>,
) -> Result<String> {
    let unit = unit
        .map(|u| UnitName::parse(u).map_err(|m| Error::Usage(format!("UNIT `{u}`: {m}"))))
        .transpose()?;
    parse_selector("--target", target)?;
    if enable && reason.is_none_or(CallerText::is_blank) {
        return Err(Error::Usage(
            "`maintenance enable` needs --reason: say why, it is shown to everyone".into(),
        ));
    }
    let q = |v: &str| serde_json::Value::from(v).to_string();
    let word = if enable { "enable" } else { "disable" };
    let what = unit.as_ref().map_or("host", |u| u.as_str());
    let mut body = format!("enable: {enable}");
    if reason.is_some() {
        body.push_str(", reason: \"(the caller's reason)\"");
    }
    if let Some(u) = &unit {
        body.push_str(&format!(", unit: {}", q(u.as_str())));
    }
    Ok(format!(
        "name: {}\nsteps:\n  - id: {}\n    target: {}\n    maintenance: {{ {body} }}\n",
        q(&format!("drover maintenance {word} {what}")),
        q(&format!(
            "maintenance-{word}-{}",
            what.replace(['@', ':', '\\'], "_")
        )),
        q(target),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_hoc_playbooks_quote_everything() {
        let why = CallerText::new("x\"; rm -rf / #");
        let text = maintenance_playbook(true, Some("demo-web"), "lab-1", Some(&why)).unwrap();
        let pb = Playbook::from_str(&text, Path::new("t")).unwrap();
        assert_eq!(pb.steps.len(), 1);
        assert!(maintenance_playbook(true, None, "lab-1", None).is_err());
        assert!(maintenance_playbook(false, Some("bad name;"), "lab-1", None).is_err());
        let text = service_playbook(ServiceAction::Restart, "demo@a:b", "role:web,!x").unwrap();
        let pb = Playbook::from_str(&text, Path::new("t")).unwrap();
        assert_eq!(pb.steps[0].id, "restarted-demo_a_b.service");
    }

    /// A unit file's content is the file's text, kept as sent (template
    /// syntax, quotes and newlines included), over the union of targets.
    #[test]
    fn a_unit_files_content_is_verbatim_over_every_target() {
        let content = "[Unit]\nDescription={{ 7*7 }} \"q\" {% raw %}\n";
        let op = AdHoc::UnitFile {
            unit: "x-app".into(),
            targets: vec!["lab-1".into(), "role:web,!lab-2".into()],
            content: Some(content.into()),
            by: "osapi",
        };
        let pb = op.playbook().unwrap();
        assert_eq!(pb.name, "osapi register x-app.service");
        assert_eq!(pb.steps[0].targets.len(), 2);
        let Operation::Unit {
            source: crate::model::playbook::UnitSource::Content(c),
            ..
        } = &pb.steps[0].operation
        else {
            panic!("not a unit step with content");
        };
        assert_eq!(c, content);
        let gone = AdHoc::UnitFile {
            unit: "x-app".into(),
            targets: vec!["lab-1".into()],
            content: None,
            by: "consul",
        };
        assert_eq!(
            gone.playbook().unwrap().steps[0].id,
            "deregister-x-app.service"
        );
        for bad in [
            AdHoc::UnitFile {
                unit: "../x".into(),
                targets: vec!["lab-1".into()],
                content: None,
                by: "osapi",
            },
            AdHoc::UnitFile {
                unit: "x".into(),
                targets: vec![],
                content: None,
                by: "osapi",
            },
        ] {
            assert!(bad.playbook().is_err(), "{bad:?}");
        }
    }

    /// A reason is the caller's text: template syntax in it is stored and
    /// shown as sent, never evaluated (vars, host data, loops).
    #[test]
    fn a_maintenance_reason_is_never_a_template() {
        let inv = crate::model::inventory::Inventory::from_str(
            "hosts:\n  lab-1:\n    address: 10.0.0.1\n    vars: { secret: hunter2 }\n",
            Path::new("inv.yml"),
        )
        .unwrap();
        for sent in [
            "{{ 7*7 }}",
            "{{ host.vars }}",
            "{% for i in range(10) %}x{% endfor %}",
            "{# hidden #}",
            "{{",
        ] {
            let op = AdHoc::Maintenance {
                enable: true,
                unit: Some("demo-web".into()),
                target: "lab-1".into(),
                reason: Some(CallerText::new(sent)),
            };
            let pb = op.playbook().unwrap();
            let Operation::Maintenance {
                reason: Some(id), ..
            } = pb.steps[0].operation
            else {
                panic!("not a maintenance step");
            };
            let ctx = pb.templates.host_context(&inv.hosts[0]);
            assert_eq!(pb.templates.render(id, &ctx).unwrap(), sent);
        }
    }
}
