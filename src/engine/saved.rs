//! Saved plans: `plan --out plan.json` records the inputs' digests, the
//! `--limit` and the facts the plan was made on; `apply --plan plan.json`
//! refuses when the playbook or inventory changed since, re-reads the facts
//! of exactly the plan's hosts and units, and refuses when the hosts
//! drifted in a way that changes a predicted step × host result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::engine::events::NoEvents;
use crate::engine::job::Job;
use crate::engine::plan::{simulate, PlanLabels};
use crate::model::error::{Error, Refusal, Result};
use crate::model::facts::{Facts, HostFacts, UnitFacts};
use crate::model::outcome::Status;
use crate::model::service::{join_actions, Action};
use crate::model::unit::UnitName;
use crate::remote::fanout::Reach;

/// The schema id a saved plan must carry.
pub const PLAN_SCHEMA: &str = "drover.plan/1";

/// One input file of a saved plan.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedSource {
    /// Path as given when planning.
    pub path: String,
    /// SHA-256 of the content then.
    pub digest: String,
}

/// The parameters of a saved plan.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedParams {
    /// SHA-256 of the canonical JSON of the non-secret values.
    pub digest: String,
    /// The non-secret values.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// One predicted result of a saved plan (the fields apply compares).
#[derive(Debug, Clone, Deserialize)]
pub struct SavedResult {
    /// Inventory name.
    pub hostname: String,
    /// Predicted status.
    pub status: Status,
    /// The unit.
    pub name: String,
    /// Predicted `changed`.
    pub changed: bool,
    /// Predicted operations.
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// One step of a saved plan.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedStep {
    /// Step id.
    pub id: String,
    /// Predicted results.
    pub results: Vec<SavedResult>,
}

/// The parts of a `drover.plan/1` document that `apply --plan` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedPlan {
    /// Must be `PLAN_SCHEMA`.
    pub schema: String,
    /// The playbook it was made from.
    pub playbook: SavedSource,
    /// The inventory it was made from.
    pub inventory: SavedSource,
    /// `--limit` when planning.
    #[serde(default)]
    pub limit: Option<String>,
    /// The parameters it was made with (None: the playbook declared none).
    #[serde(default)]
    pub params: Option<SavedParams>,
    /// Unit templates and ssh_config files, with their digests then.
    #[serde(default)]
    pub inputs: Vec<crate::model::Input>,
    /// The facts it was made on (hosts and units it touches).
    #[serde(default)]
    pub facts: Option<Facts>,
    /// Predicted results.
    pub steps: Vec<SavedStep>,
}

impl SavedPlan {
    /// Read and parse a saved plan.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::model::yaml::read_bounded(path, "saved plan")?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse a saved plan's text (a file's, or a request's body: data,
    /// never a template); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let p: SavedPlan = serde_path_to_error::deserialize(de).map_err(|e| {
            Error::invalid(
                "saved plan",
                e.path().to_string(),
                format!("{} in {origin}", e.inner()),
                None,
            )
        })?;
        if p.schema != PLAN_SCHEMA {
            return Err(Error::invalid(
                "saved plan",
                "schema",
                format!(
                    "`{}` is not a plan this drover applies (it reads {PLAN_SCHEMA}); plan again with `drover plan --out`",
                    p.schema
                ),
                None,
            ));
        }
        if p.facts.is_none() {
            return Err(Error::invalid(
                "saved plan",
                "facts",
                format!(
                    "{origin} records no facts, so drift cannot be checked; plan again with `drover plan --out`"
                ),
                None,
            ));
        }
        Ok(p)
    }

    /// The `--limit` to apply with: the plan's; a different one on the
    /// command line is a usage error (the plan covers only its own hosts).
    pub fn limit<'a>(&'a self, cli: Option<&'a str>) -> Result<Option<&'a str>> {
        match (cli, self.limit.as_deref()) {
            (Some(c), p) if Some(c) != p => Err(Error::Usage(format!(
                "--limit `{c}` differs from the saved plan's limit ({}); omit --limit to apply the plan's",
                p.map_or_else(|| "none".to_string(), |p| format!("`{p}`"))
            ))),
            (_, p) => Ok(p),
        }
    }

    /// The parameter values to apply with: the plan's, with the command
    /// line's in place of any of the same name (a changed one is then
    /// refused by [`SavedPlan::check_inputs`]). Secret values are never
    /// recorded: they come from the command line.
    pub fn param_values(
        &self,
        path: &Path,
        cli: crate::model::params::ParamValues,
    ) -> crate::model::params::ParamValues {
        match &self.params {
            Some(p) => crate::model::params::ParamValues::saved(&p.values, path).overlaid(cli),
            None => cli,
        }
    }

    /// Refuse (403) when the parameters are not the planned ones.
    fn check_params(&self, job: &Job) -> Result<()> {
        let planned = self.params.as_ref();
        let now = &job.params;
        let planned_digest = planned.map_or_else(
            || crate::model::params::Params::default().digest,
            |p| p.digest.clone(),
        );
        if planned_digest == now.digest {
            return Ok(());
        }
        let record = now.record();
        let empty = serde_json::Map::new();
        let before = planned.map_or(&empty, |p| &p.values);
        let mut changed: Vec<String> = Vec::new();
        for (k, v) in &record {
            match before.get(k) {
                Some(b) if b == v => {}
                Some(b) => changed.push(format!("`{k}` planned {b}, now {v}")),
                None => changed.push(format!("`{k}` not planned, now {v}")),
            }
        }
        for k in before.keys().filter(|k| !record.contains_key(*k)) {
            changed.push(format!("`{k}` planned, now not a parameter"));
        }
        if changed.is_empty() {
            changed.push(format!(
                "their digest was sha256 {}, now sha256 {}",
                short(&planned_digest),
                short(&now.digest)
            ));
        }
        Err(Error::Refused(Refusal::StalePlan(format!(
            "the params changed since the plan was made: {}",
            changed.join("; ")
        ))))
    }

    /// Refuse (403) when the playbook, inventory or parameters are not
    /// what was planned.
    pub fn check_inputs(&self, job: &Job) -> Result<()> {
        // A directory inventory's files first: the refusal names the one
        // that changed, not only the directory.
        for input in &job.inventory.inputs {
            let planned = self.inputs.iter().find(|i| i.path == input.path);
            if planned.is_none_or(|p| p.digest != input.digest) {
                return Err(Error::Refused(Refusal::StalePlan(format!(
                    "the inventory file {} changed since the plan was made (planned: {}, now sha256 {})",
                    input.path,
                    planned.map_or_else(|| "not in the inventory".to_string(), |p| format!("sha256 {}", short(&p.digest))),
                    short(&input.digest)
                ))));
            }
        }
        let pairs = [
            (
                "playbook",
                &self.playbook,
                &job.playbook.digest,
                &job.playbook.path,
            ),
            (
                "inventory",
                &self.inventory,
                &job.inventory.digest,
                &job.inventory.path,
            ),
        ];
        for (what, saved, now, path) in pairs {
            if saved.digest != *now {
                return Err(Error::Refused(Refusal::StalePlan(format!(
                    "the {what} {} changed since the plan was made (planned from {} sha256 {}, now sha256 {})",
                    path.display(),
                    saved.path,
                    short(&saved.digest),
                    short(now)
                ))));
            }
        }
        let now = crate::engine::plan::other_inputs(job);
        for input in &now {
            let planned = self.inputs.iter().find(|i| i.path == input.path);
            if planned.is_none_or(|p| p.digest != input.digest) {
                return Err(Error::Refused(Refusal::StalePlan(format!(
                    "{} changed since the plan was made (planned: {}, now sha256 {})",
                    input.path,
                    planned.map_or_else(
                        || "not an input".to_string(),
                        |p| format!("sha256 {}", short(&p.digest))
                    ),
                    short(&input.digest)
                ))));
            }
        }
        if let Some(gone) = self
            .inputs
            .iter()
            .find(|i| !now.iter().any(|n| n.path == i.path))
        {
            return Err(Error::Refused(Refusal::StalePlan(format!(
                "{} decided the plan but is no longer an input",
                gone.path
            ))));
        }
        self.check_params(job)
    }

    /// The saved facts (present after [`SavedPlan::load`]).
    pub fn saved_facts(&self) -> Result<&Facts> {
        self.facts
            .as_ref()
            .ok_or_else(|| Error::Internal("saved plan without facts".into()))
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Read the facts of exactly the saved plan's hosts and units, live.
pub async fn reread(job: &Job, saved: &Facts, reach: Reach) -> Facts {
    let hosts: Vec<crate::model::inventory::Host> = saved
        .hosts
        .keys()
        .filter_map(|n| job.inventory.hosts.iter().find(|h| &h.name == n).cloned())
        .collect();
    let units: Vec<Vec<UnitName>> = hosts
        .iter()
        .map(|h| {
            saved
                .hosts
                .get(&h.name)
                .map(|hf| {
                    hf.units
                        .keys()
                        .filter_map(|u| UnitName::parse(u).ok())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    // The unit files a `unit:` step's prediction read, read again.
    let files: Vec<Vec<UnitName>> = hosts
        .iter()
        .map(|h| {
            saved
                .hosts
                .get(&h.name)
                .map(|hf| {
                    hf.unit_files
                        .keys()
                        .filter_map(|u| UnitName::parse(u).ok())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let (read, _) = crate::engine::live::read_facts_with(
        &hosts,
        reach,
        |i| crate::engine::live::UnitSet::These(units[i].clone()),
        |i| files[i].clone(),
        &NoEvents,
    )
    .await;
    read
}

/// One drifted unit: its state when planned and now, and what that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Inventory name.
    pub host: String,
    /// The unit.
    pub unit: String,
    /// State when planned, in short words.
    pub before: String,
    /// State now.
    pub now: String,
    /// The predictions that change: `step: planned → now`.
    pub effects: Vec<String>,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} → {} ({})",
            self.host,
            self.unit,
            self.before,
            self.now,
            self.effects.join("; ")
        )
    }
}

fn describe(hf: Option<&HostFacts>, unit: &str) -> String {
    match hf {
        None => "no facts".into(),
        Some(h) if !h.reachable => format!(
            "unreachable ({})",
            h.error.as_deref().unwrap_or("no connection")
        ),
        Some(h) => match h.units.get(unit) {
            None => "not read".into(),
            Some(u) => describe_unit(u),
        },
    }
}

fn describe_unit(u: &UnitFacts) -> String {
    let mut s = format!("{}/{}", u.active_state, u.load_state);
    if !u.unit_file_state.is_empty() {
        s.push('/');
        s.push_str(&u.unit_file_state);
    }
    s
}

fn prediction(status: Status, changed: bool, actions: &[Action]) -> String {
    let ops = join_actions(actions, "no change");
    let status = match status {
        Status::Ok if changed => "changed",
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    };
    format!("{ops}, {status}")
}

/// Re-simulate the loaded playbook on `now` (facts read live for the
/// plan's hosts and units) and list every unit whose drift changes a
/// predicted (status, changed, actions) of some step × host.
pub fn drift(job: &Job, saved: &SavedPlan, now: &Facts) -> Result<Vec<Drift>> {
    let saved_facts = saved.saved_facts()?;
    let full = now.covering(job.inventory.hosts.iter().map(|h| h.name.as_str()));
    let replan = simulate(
        job,
        &full,
        PlanLabels {
            facts_source: "live",
            limit: saved.limit.as_deref(),
        },
    )?;
    // A script module's prediction comes from running its check on the
    // host, not from facts: unit drift cannot change it, and a re-simulation
    // (which runs nothing) cannot reproduce it. Its steps are left out.
    let scripts: BTreeSet<&str> = job
        .playbook
        .steps
        .iter()
        .filter(|st| matches!(st.operation, crate::model::playbook::Operation::Script(_)))
        .map(|st| st.id.as_str())
        .collect();
    let mut planned: BTreeMap<(&str, &str), &SavedResult> = BTreeMap::new();
    for s in saved
        .steps
        .iter()
        .filter(|s| !scripts.contains(s.id.as_str()))
    {
        for r in &s.results {
            planned.insert((s.id.as_str(), r.hostname.as_str()), r);
        }
    }
    let mut out: Vec<Drift> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |host: &str, unit: &str, effect: String| {
        let key = (host.to_string(), unit.to_string());
        if seen.insert(key.clone()) {
            out.push(Drift {
                host: host.to_string(),
                unit: unit.to_string(),
                before: describe(saved_facts.hosts.get(host), unit),
                now: describe(full.hosts.get(host), unit),
                effects: vec![effect],
            });
        } else if let Some(d) = out.iter_mut().find(|d| d.host == key.0 && d.unit == key.1) {
            d.effects.push(effect);
        }
    };
    for s in replan
        .steps
        .iter()
        .filter(|s| !scripts.contains(s.id.as_str()))
    {
        for r in &s.results {
            let new = prediction(r.status, r.changed, &r.actions);
            match planned.remove(&(s.id.as_str(), &*r.hostname)) {
                Some(p) => {
                    if p.status != r.status || p.changed != r.changed || p.actions != r.actions {
                        let old = prediction(p.status, p.changed, &p.actions);
                        add(
                            &r.hostname,
                            r.name.as_str(),
                            format!("step {}: planned {old}, now {new}", s.id),
                        );
                    }
                }
                None => add(
                    &r.hostname,
                    r.name.as_str(),
                    format!("step {}: not planned here, now {new}", s.id),
                ),
            }
        }
    }
    for ((step, host), p) in planned {
        let old = prediction(p.status, p.changed, &p.actions);
        add(
            host,
            &p.name,
            format!("step {step}: planned {old}, now not targeted"),
        );
    }
    // A host's error text is shown in the refusal and the warning.
    let secrets = &job.playbook.secrets;
    for d in &mut out {
        d.before = secrets.redact_string(std::mem::take(&mut d.before));
        d.now = secrets.redact_string(std::mem::take(&mut d.now));
    }
    Ok(out)
}

/// The whole `apply --plan` gate after the model is loaded and before the
/// run: inputs unchanged, facts re-read, drift refused unless allowed.
/// Returns the drift that `allow_drift` let through (for a warning).
pub async fn gate(
    job: &Job,
    saved: &SavedPlan,
    reach: Reach,
    allow_drift: bool,
) -> Result<Vec<Drift>> {
    saved.check_inputs(job)?;
    let now = reread(job, saved.saved_facts()?, reach).await;
    let drifted = drift(job, saved, &now)?;
    if drifted.is_empty() || allow_drift {
        return Ok(drifted);
    }
    let list = drifted
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Refused(Refusal::Drift(list)))
}
