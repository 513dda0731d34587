//! Reading live hosts: the facts of `facts`, `status`, a live `plan` and a
//! saved plan's drift check. Each connects to its hosts in parallel
//! (bounded by `forks`), reads everything it needs in one round trip per
//! host per batch of units, and never changes anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::events::{Event, EventSink};
use crate::engine::job::Job;
use crate::model::error::{Error, Result};
use crate::model::facts::{Facts, HostFacts, UnitFacts};
use crate::model::inventory::{Host, Inventory};
use crate::model::report::Verdict;
use crate::model::target::Selector;
use crate::model::unit::UnitName;
use crate::remote::fanout::{fan_out, HostError, HostResult, Reach};

/// The hosts a `--target` selector picks (all hosts without one), in
/// inventory order; unknown hostnames and empty matches are usage errors.
pub fn select_hosts(inv: &Inventory, target: Option<&str>) -> Result<Vec<Host>> {
    let Some(raw) = target else {
        return Ok(inv.hosts.clone());
    };
    let sel = Selector::parse(raw).map_err(|m| Error::Usage(format!("--target `{raw}`: {m}")))?;
    if sel.is_any() {
        return Err(Error::Usage(
            "--target cannot contain `_any` here: name the hosts to read".into(),
        ));
    }
    if let Some(h) = sel.unknown_hosts(inv).first() {
        return Err(Error::Usage(format!(
            "--target names unknown host `{h}`{}",
            inv.suggest_host(h)
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default()
        )));
    }
    let hosts: Vec<Host> = inv
        .hosts
        .iter()
        .filter(|h| sel.matches(h))
        .cloned()
        .collect();
    if hosts.is_empty() {
        return Err(Error::Usage(format!(
            "--target `{raw}` matches no host of {}",
            inv.path.display()
        )));
    }
    Ok(hosts)
}

/// Validate unit names from the command line (a bare name gets `.service`).
pub fn parse_units(raw: &[String]) -> Result<Vec<UnitName>> {
    raw.iter()
        .map(|u| {
            UnitName::parse(u)
                .map_err(|m| Error::Usage(format!("unit `{}`: {m}", u.escape_default())))
        })
        .collect()
}

/// Which units to read on a host.
#[derive(Debug, Clone)]
pub enum UnitSet {
    /// Exactly these.
    These(Vec<UnitName>),
    /// Every service unit (loaded units and unit files).
    AllServices,
    /// The loaded service units (what `systemctl list-units` shows).
    LoadedServices,
}

/// Read facts from `hosts`, `forks` at a time; `units(i)` says which units
/// to read on `hosts[i]`. Unreachable hosts get `reachable: false` and the
/// error; a host whose read fails is reported unreachable too (the plan
/// cannot use it either).
pub async fn read_facts(
    hosts: &[Host],
    reach: Reach,
    units: impl Fn(usize) -> UnitSet,
    events: &dyn EventSink,
) -> (Facts, Vec<HostResult<()>>) {
    read_facts_with(hosts, reach, units, |_| Vec::new(), events).await
}

/// [`read_facts`], also reading the maintenance state file (always) and
/// the unit files `files(i)` names on `hosts[i]` (for `unit:` steps).
pub async fn read_facts_with(
    hosts: &[Host],
    reach: Reach,
    units: impl Fn(usize) -> UnitSet,
    files: impl Fn(usize) -> Vec<UnitName>,
    events: &dyn EventSink,
) -> (Facts, Vec<HostResult<()>>) {
    let sets: Vec<UnitSet> = (0..hosts.len()).map(units).collect();
    let sets = &sets;
    let file_sets: Vec<Vec<UnitName>> = (0..hosts.len()).map(files).collect();
    let file_sets = &file_sets;
    let results = fan_out(hosts, reach, |i, session| async move {
        // The state file and unit files travel over other channels of the
        // same connection, alongside the D-Bus reads.
        let extra = async {
            let m = crate::remote::maintenance::read(&session)
                .await
                .map_err(HostError::Failed)?;
            let mut f = BTreeMap::new();
            for u in &file_sets[i] {
                let c = crate::remote::unitfile::read_file(&session, u)
                    .await
                    .map_err(HostError::Failed)?;
                f.insert(u.to_string(), c);
            }
            Ok::<_, HostError>((m, f))
        };
        let (units, extra) = tokio::join!(read_units(i, &session, sets), extra);
        let (m, f) = extra?;
        Ok::<_, HostError>((units?, m, f))
    })
    .await;
    let mut facts = Facts::new();
    let mut outcomes = Vec::with_capacity(results.len());
    for r in results {
        let hf = match &r.result {
            Ok((units, m, f)) => {
                let mut hf = HostFacts {
                    reachable: true,
                    error: None,
                    maintenance: None,
                    unit_maintenance: BTreeMap::new(),
                    units: units.clone(),
                    unit_files: f.clone(),
                };
                m.clone().into_facts(&mut hf);
                hf
            }
            Err(e) => HostFacts::unreachable(e.to_string()),
        };
        events.event(&Event::HostRead {
            host: r.host.clone(),
            error: hf.error.clone(),
        });
        facts.hosts.insert(r.host.clone(), hf);
        outcomes.push(HostResult {
            index: r.index,
            host: r.host,
            result: r.result.map(|_| ()),
        });
    }
    (facts, outcomes)
}

async fn read_units(
    i: usize,
    session: &crate::remote::carrier::Session,
    sets: &[UnitSet],
) -> std::result::Result<BTreeMap<String, UnitFacts>, HostError> {
    {
        let sd = session.systemd();
        let t0 = std::time::Instant::now();
        let facts = match &sets[i] {
            UnitSet::These(u) => sd.unit_facts(u).await?,
            UnitSet::AllServices => sd.all_service_facts(false).await?,
            UnitSet::LoadedServices => sd.all_service_facts(true).await?,
        };
        tracing::debug!(host = %session.host(), elapsed = ?t0.elapsed(), "unit facts read");
        Ok::<_, HostError>(facts)
    }
}

/// The verdict of per-host reads: a failed read beats an unreachable host.
pub fn verdict<T>(results: &[HostResult<T>]) -> Verdict {
    let kinds = results
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .map(|e| {
            Some(if e.is_unreachable() {
                crate::model::outcome::Kind::Unreachable
            } else {
                crate::model::outcome::Kind::Error
            })
        });
    Verdict::of_kinds(kinds, false)
}

/// `drover facts`: the facts of the selected hosts (every service unit,
/// or the named ones), with each host's read result.
pub async fn collect_facts(
    inv: &Inventory,
    target: Option<&str>,
    units: &[String],
    reach: Reach,
    events: &dyn EventSink,
) -> Result<(Facts, Vec<HostResult<()>>)> {
    let hosts = select_hosts(inv, target)?;
    let units = parse_units(units)?;
    Ok(read_facts(
        &hosts,
        reach,
        |_| {
            if units.is_empty() {
                UnitSet::AllServices
            } else {
                UnitSet::These(units.clone())
            }
        },
        events,
    )
    .await)
}

/// What a live plan reads of one host: the units its steps touch, and
/// the unit files of its `unit:` steps.
#[derive(Debug, Clone)]
pub struct PlanRead {
    /// The host's inventory index.
    pub host: usize,
    /// The units its steps touch.
    pub units: Vec<UnitName>,
    /// The units whose files a `unit:` step reads.
    pub files: Vec<UnitName>,
}

/// Per host the job touches, in inventory order, what its plan reads.
pub fn plan_reads(job: &Job) -> Vec<PlanRead> {
    let mut per_host: BTreeMap<usize, (BTreeSet<UnitName>, BTreeSet<UnitName>)> = BTreeMap::new();
    for ex in &job.expanded {
        for t in &ex.tasks {
            let (units, files) = per_host.entry(t.host).or_default();
            units.insert(t.unit.clone());
            if ex.reads_file {
                files.insert(t.unit.clone());
            }
        }
    }
    per_host
        .into_iter()
        .map(|(host, (units, files))| PlanRead {
            host,
            units: units.into_iter().collect(),
            files: files.into_iter().collect(),
        })
        .collect()
}

/// Facts for a live plan: per host, exactly the units the expanded steps
/// touch, read in parallel. Hosts no step touches are not contacted; they
/// get an empty (reachable) entry, which the plan never consults.
pub async fn plan_facts(job: &Job, reach: Reach, events: &dyn EventSink) -> (Facts, bool) {
    let inv = &job.inventory;
    let reads = plan_reads(job);
    let hosts: Vec<Host> = reads.iter().map(|r| inv.hosts[r.host].clone()).collect();
    let (read, results) = read_facts_with(
        &hosts,
        reach,
        |i| UnitSet::These(reads[i].units.clone()),
        |i| reads[i].files.clone(),
        events,
    )
    .await;
    let facts = read.covering(inv.hosts.iter().map(|h| h.name.as_str()));
    for r in &results {
        if let Err(e) = &r.result {
            tracing::warn!("{}: {e}", r.host);
        }
    }
    // For a plan any host without facts makes the plan incomplete.
    (facts, results.iter().any(|r| r.result.is_err()))
}
