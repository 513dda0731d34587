//! Reads of unit state, pipelined: every call for a batch of units is
//! sent before any reply is awaited.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedValue;

use crate::model::facts::UnitFacts;
use crate::model::unit::UnitName;
use crate::remote::systemd::proxy::UnitProps;
use crate::remote::systemd::timestamp_rfc3339;
use crate::remote::systemd::unit_object_path;
use crate::remote::systemd::Systemd;
use crate::remote::systemd::SystemdError;
use crate::remote::systemd::SystemdJobProxy;
use crate::remote::systemd::DEST;
use crate::remote::systemd::UNITS_IN_FLIGHT;

/// Per-run properties of one unit: name, InvocationID, ActiveEnterTimestamp,
/// MainPID and (when the file list lacked it) UnitFileState.
type RunHistory = (
    String,
    Option<String>,
    Option<u64>,
    Option<u32>,
    Option<String>,
);

/// Which optional properties [`Systemd::unit_state`] reads besides the
/// load/active/sub state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateRead {
    /// UnitFileState (enablement), for steps about `enabled`/`masked`.
    pub file_state: bool,
    /// InvocationID: the evidence of a restart (and of a oneshot start
    /// that is inactive again afterwards).
    pub invocation: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Systemd {
    /// The state of each unit, read in one round trip per batch of
    /// [`UNITS_IN_FLIGHT`] units: per unit, LoadUnit (so inactive units that
    /// are not loaded are found too), GetAll of the Unit interface and, for
    /// services, MainPID — all sent before any reply is awaited. A unit
    /// whose file does not exist reports `load_state: "not-found"`.
    pub async fn unit_facts(
        &self,
        units: &[UnitName],
    ) -> Result<BTreeMap<String, UnitFacts>, SystemdError> {
        // Bounded so the bus's per-connection limit on pending replies
        // (dbus-daemon: 128) is never hit; below it all reads overlap.
        // By index: a closure over `&UnitName` items makes the future not
        // provably Send (rust-lang/rust#102211), and the server spawns it.
        let reads: Vec<Result<UnitFacts, SystemdError>> =
            futures_util::stream::iter(0..units.len())
                .map(|i| self.read_unit(units[i].as_str()))
                .buffered(UNITS_IN_FLIGHT)
                .collect()
                .await;
        let mut out = BTreeMap::new();
        for (u, r) in units.iter().zip(reads) {
            out.insert(u.to_string(), r?);
        }
        Ok(out)
    }

    async fn read_unit(&self, unit: &str) -> Result<UnitFacts, SystemdError> {
        let _room = self.bulk_permit(3).await?;
        let path = unit_object_path(unit);
        let load = self.manager.load_unit(unit);
        let all = self.conn.call_method(
            Some(DEST),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &("org.freedesktop.systemd1.Unit",),
        );
        let pid = async {
            if !unit.ends_with(".service") {
                return Ok(None);
            }
            let v = self
                .property(&path, "org.freedesktop.systemd1.Service", "MainPID")
                .await?;
            Ok::<_, zbus::Error>(u32::try_from(v).ok())
        };
        let (load, all, pid) = futures_util::join!(load, all, pid);
        load.map_err(SystemdError::bus(format!("LoadUnit {unit}")))?;
        let reply = all.map_err(SystemdError::bus(format!("GetAll {unit}")))?;
        let props: UnitProps = reply
            .body()
            .deserialize()
            .map_err(SystemdError::bus(format!("GetAll {unit}")))?;
        // MainPID is best effort: a unit that is not a service (or a
        // not-found one) simply has none.
        let main_pid = pid.ok().flatten().unwrap_or(0);
        let mut facts = UnitFacts {
            load_state: props.load_state.unwrap_or_default(),
            active_state: props.active_state.unwrap_or_default(),
            sub_state: props.sub_state.unwrap_or_default(),
            unit_file_state: props.unit_file_state.unwrap_or_default(),
            start_time: props.active_enter_timestamp.and_then(timestamp_rfc3339),
            invocation_id: props.invocation_id.as_deref().map(hex).unwrap_or_default(),
            main_pid,
            job: None,
            description: props.description.unwrap_or_default(),
        };
        // A pending job decides STARTING vs RESTARTING in `status`; its type
        // costs one more round trip, paid only while a job is queued.
        if let Some((id, job_path)) = props.job.filter(|(id, _)| *id != 0) {
            let ty = match SystemdJobProxy::builder(&self.conn)
                .path(job_path)
                .map_err(SystemdError::bus(format!("job {id} of {unit}")))?
                .cache_properties(CacheProperties::No)
                .build()
                .await
            {
                // The job may have finished meanwhile; then there is none.
                Ok(p) => p.job_type().await.ok(),
                Err(_) => None,
            };
            facts.job = ty;
        }
        Ok(facts)
    }

    /// The state the executor decides and verifies on, in as little bus
    /// traffic as systemd allows: one ListUnitsByNames row (load, active and
    /// sub state), plus the InvocationID and UnitFileState when asked, sent
    /// together. Every message crosses ssh, the bridge and the bus, so a
    /// reading asks only for what its caller compares. Cheaper than
    /// [`Systemd::unit_facts`], which reads every Unit property.
    pub async fn unit_state(
        &self,
        unit: &UnitName,
        what: StateRead,
    ) -> Result<UnitFacts, SystemdError> {
        let mut all = self.unit_states(&[(unit, what)]).await?;
        Ok(all.pop().unwrap_or_else(UnitFacts::not_found))
    }

    /// [`Systemd::unit_state`] of several units at once: one
    /// ListUnitsByNames for all, their optional properties sent alongside
    /// (a single round trip). Results in the order asked.
    pub async fn unit_states(
        &self,
        asked: &[(&UnitName, StateRead)],
    ) -> Result<Vec<UnitFacts>, SystemdError> {
        let names: Vec<&str> = asked.iter().map(|(u, _)| u.as_str()).collect();
        // Up to two calls per unit, besides the listing: a refused one
        // would read as a unit without an InvocationID.
        let calls = asked
            .iter()
            .map(|(_, w)| u32::from(w.invocation) + u32::from(w.file_state))
            .sum::<u32>()
            + 1;
        let _room = self.bulk_permit(calls).await?;
        let rows = self.manager.list_units_by_names(&names);
        // By index, as below: a closure over `&(&UnitName, StateRead)` items
        // makes the future not provably Send (rust-lang/rust#102211).
        let extras = futures_util::future::join_all((0..asked.len()).map(|i| async move {
            let (unit, what) = &asked[i];
            let path = unit_object_path(unit.as_str());
            let inv = async {
                if what.invocation {
                    self.unit_property(&path, "InvocationID").await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let ufs = async {
                if what.file_state {
                    self.unit_property(&path, "UnitFileState").await.map(Some)
                } else {
                    Ok(None)
                }
            };
            futures_util::join!(inv, ufs)
        }));
        let (rows, extras) = futures_util::join!(rows, extras);
        let rows = rows.map_err(SystemdError::bus(format!(
            "ListUnitsByNames {}",
            names.join(" ")
        )))?;
        // One row per name, in the order asked (systemd loads each name;
        // an alias answers under its unit's own name, so match by position).
        // No row at all: systemd skipped names it finds invalid.
        if rows.is_empty() {
            return Ok(names.iter().map(|_| UnitFacts::not_found()).collect());
        }
        if rows.len() != names.len() {
            return Err(SystemdError::bus(format!(
                "ListUnitsByNames {}",
                names.join(" ")
            ))(zbus::Error::Failure(format!(
                "{} rows for {} names",
                rows.len(),
                names.len()
            ))));
        }
        let mut out = Vec::with_capacity(rows.len());
        for ((r, (inv, ufs)), name) in rows.into_iter().zip(extras).zip(&names) {
            // A unit without a file has no InvocationID worth reading.
            let invocation_id = inv
                .ok()
                .flatten()
                .and_then(|v| Vec::<u8>::try_from(v).ok())
                .map(|b| hex(&b))
                .unwrap_or_default();
            let unit_file_state = match ufs {
                Ok(Some(v)) => String::try_from(v).unwrap_or_default(),
                Ok(None) => String::new(),
                Err(e) => return Err(SystemdError::bus(format!("UnitFileState {name}"))(e)),
            };
            out.push(UnitFacts {
                load_state: r.2,
                active_state: r.3,
                sub_state: r.4,
                unit_file_state,
                start_time: None,
                invocation_id,
                main_pid: 0,
                job: None,
                description: r.1,
            });
        }
        Ok(out)
    }

    /// A unit's InvocationID alone (hex; empty when it has none).
    pub async fn invocation_id(&self, unit: &UnitName) -> Result<String, SystemdError> {
        let v = self
            .unit_property(&unit_object_path(unit.as_str()), "InvocationID")
            .await
            .map_err(SystemdError::bus(format!("InvocationID {unit}")))?;
        Ok(Vec::<u8>::try_from(v).map(|b| hex(&b)).unwrap_or_default())
    }

    /// One property of the Unit interface, by the unit's object path.
    async fn unit_property(&self, path: &str, prop: &str) -> zbus::Result<OwnedValue> {
        self.property(path, "org.freedesktop.systemd1.Unit", prop)
            .await
    }

    /// One property of an interface of a unit, by the unit's object path.
    async fn property(&self, path: &str, iface: &str, prop: &str) -> zbus::Result<OwnedValue> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, prop),
            )
            .await?;
        reply.body().deserialize()
    }

    /// Facts of every service unit (loaded units and unit files) — what
    /// `drover facts` records by default — in a few bulk calls instead of
    /// a full property read per unit: ListUnits and ListUnitFiles give names,
    /// states and jobs; ListUnitsByNames loads the rest in one message; only
    /// units with a runtime history (loaded before we asked) get their
    /// InvocationID, ActiveEnterTimestamp and MainPID read, pipelined.
    pub async fn all_service_facts(
        &self,
        loaded_only: bool,
    ) -> Result<BTreeMap<String, UnitFacts>, SystemdError> {
        self.all_service_facts_within(loaded_only, UNITS_IN_FLIGHT)
            .await
    }

    /// [`Systemd::all_service_facts`] with at most `in_flight` units' reads
    /// (4 calls each) pending at once: a background reader (the server's
    /// live snapshot) leaves the connection's bound on pending replies to
    /// the requests sharing it.
    pub async fn all_service_facts_within(
        &self,
        loaded_only: bool,
        in_flight: usize,
    ) -> Result<BTreeMap<String, UnitFacts>, SystemdError> {
        let (loaded, files) = futures_util::join!(self.manager.list_units(), async {
            if loaded_only {
                Ok(Vec::new())
            } else {
                self.manager
                    .list_unit_files_by_patterns(&[], &["*.service"])
                    .await
            }
        });
        let loaded = loaded.map_err(SystemdError::bus("ListUnits"))?;
        let files = files.map_err(SystemdError::bus("ListUnitFilesByPatterns"))?;
        let mut file_state: BTreeMap<String, String> = BTreeMap::new();
        for (path, state) in files {
            let base = path.rsplit('/').next().unwrap_or(&path).to_string();
            file_state.insert(base, state);
        }
        let mut out: BTreeMap<String, UnitFacts> = BTreeMap::new();
        let mut history: Vec<UnitName> = Vec::new();
        for u in &loaded {
            let Some(name) = service_name(&u.0) else {
                continue;
            };
            if u.2 == "not-found" {
                continue;
            }
            out.insert(
                name.to_string(),
                UnitFacts {
                    load_state: u.2.clone(),
                    active_state: u.3.clone(),
                    sub_state: u.4.clone(),
                    unit_file_state: file_state.get(name.as_str()).cloned().unwrap_or_default(),
                    start_time: None,
                    invocation_id: String::new(),
                    main_pid: 0,
                    job: (u.7 != 0).then(|| u.8.clone()),
                    description: u.1.clone(),
                },
            );
            history.push(name);
        }
        // Unit files systemd has not loaded: one call loads and lists them.
        let unloaded: Vec<String> = file_state
            .keys()
            .filter(|n| !out.contains_key(*n) && service_name(n).is_some())
            .cloned()
            .collect();
        if !unloaded.is_empty() {
            let refs: Vec<&str> = unloaded.iter().map(String::as_str).collect();
            let rows = self
                .manager
                .list_units_by_names(&refs)
                .await
                .map_err(SystemdError::bus("ListUnitsByNames"))?;
            for u in rows {
                let Some(name) = service_name(&u.0) else {
                    continue;
                };
                // Started since ListUnits answered (by someone else): it
                // has a run whose start time and InvocationID belong here.
                if u.3 != "inactive" {
                    history.push(name.clone());
                }
                out.insert(
                    name.to_string(),
                    UnitFacts {
                        load_state: u.2,
                        active_state: u.3,
                        sub_state: u.4,
                        unit_file_state: file_state.get(name.as_str()).cloned().unwrap_or_default(),
                        start_time: None,
                        invocation_id: String::new(),
                        main_pid: 0,
                        job: (u.7 != 0).then_some(u.8),
                        description: u.1,
                    },
                );
            }
        }
        // Loaded units may have run: read what distinguishes one run from
        // the next. Units without a listed file state (generated,
        // transient) get theirs from the unit itself.
        let file_state_ref = &file_state;
        // By index: a closure over `&UnitName` items makes the future not
        // provably Send (rust-lang/rust#102211), and the server spawns it.
        let history_ref = &history;
        let extra: Vec<Result<RunHistory, SystemdError>> =
            futures_util::stream::iter(0..history.len())
                .map(|i| async move {
                    let u = &history_ref[i];
                    let path = unit_object_path(u.as_str());
                    let get = |iface: &'static str, prop: &'static str| {
                        let path = path.clone();
                        async move {
                            self.property(&path, iface, prop)
                                .await
                                .map_err(SystemdError::bus(format!("Get {prop} {u}")))
                        }
                    };
                    let need_ufs = !file_state_ref.contains_key(u.as_str());
                    let _room = self.bulk_permit(if need_ufs { 4 } else { 3 }).await?;
                    // A failed Get is an error, not a missing value: a unit
                    // listed as running without its start time or
                    // InvocationID would be a lie (LimitsExceeded did that).
                    let (inv, ts, pid, ufs) = futures_util::join!(
                        get("org.freedesktop.systemd1.Unit", "InvocationID"),
                        get("org.freedesktop.systemd1.Unit", "ActiveEnterTimestamp"),
                        get("org.freedesktop.systemd1.Service", "MainPID"),
                        async {
                            if need_ufs {
                                get("org.freedesktop.systemd1.Unit", "UnitFileState")
                                    .await
                                    .map(Some)
                            } else {
                                Ok(None)
                            }
                        }
                    );
                    Ok((
                        u.to_string(),
                        Vec::<u8>::try_from(inv?).ok().map(|b| hex(&b)),
                        u64::try_from(ts?).ok(),
                        u32::try_from(pid?).ok(),
                        ufs?.and_then(|v| String::try_from(v).ok()),
                    ))
                })
                .buffered(in_flight.max(1))
                .collect()
                .await;
        for r in extra {
            let (name, inv, ts, pid, ufs) = r?;
            if let Some(f) = out.get_mut(&name) {
                f.invocation_id = inv.unwrap_or_default();
                f.start_time = ts.and_then(timestamp_rfc3339);
                f.main_pid = pid.unwrap_or(0);
                if let Some(ufs) = ufs {
                    f.unit_file_state = ufs;
                }
            }
        }
        Ok(out)
    }
}

/// A concrete (non-template) service unit name, validated.
pub(super) fn service_name(name: &str) -> Option<UnitName> {
    if !name.ends_with(".service") || name.contains("@.") {
        return None;
    }
    UnitName::parse(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_concrete_services_are_listed() {
        assert!(service_name("getty@.service").is_none());
        assert!(service_name("a.socket").is_none());
        assert_eq!(
            service_name("getty@tty1.service")
                .map(|u| u.to_string())
                .as_deref(),
            Some("getty@tty1.service")
        );
    }
}
