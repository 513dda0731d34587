//! Facts: the current state of each unit on each host, as systemd reports
//! it. Read live from hosts, or from a file written by `drover facts` so a
//! plan can be made without access to production.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Position, Result};
use crate::model::secret::Secrets;

/// The largest facts file read: `drover facts` of a 100,000-host fleet
/// with ten units each is about 300 MB.
pub const MAX_FACTS_BYTES: u64 = 1 << 30;

/// Version of the facts file format; bumped on incompatible change.
pub const FACTS_VERSION: u32 = 1;

/// One unit's state on one host (systemd's own words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFacts {
    /// LoadState: loaded, not-found, masked, error, ...
    pub load_state: String,
    /// ActiveState: active, inactive, failed, activating, deactivating, reloading.
    pub active_state: String,
    /// SubState: running, dead, exited, ...
    pub sub_state: String,
    /// UnitFileState: enabled, disabled, static, masked, ... ("" when unknown).
    pub unit_file_state: String,
    /// ActiveEnterTimestamp as RFC 3339, when the unit has been active.
    #[serde(default)]
    pub start_time: Option<String>,
    /// InvocationID (hex), empty when the unit never ran.
    #[serde(default)]
    pub invocation_id: String,
    /// MainPID, 0 when none.
    #[serde(default)]
    pub main_pid: u32,
    /// Type of the job queued for the unit when read (start, restart, ...),
    /// so `status` can tell STARTING from RESTARTING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The unit's Description= (empty when none or not read).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl UnitFacts {
    /// The state of a unit systemd does not know.
    pub fn not_found() -> Self {
        UnitFacts {
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            unit_file_state: String::new(),
            start_time: None,
            invocation_id: String::new(),
            main_pid: 0,
            job: None,
            description: String::new(),
        }
    }
}

/// A maintenance flag set on a host or unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Why.
    pub reason: String,
    /// When it was set (RFC 3339).
    pub since: String,
}

/// Everything known about one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// Whether drover could reach the host's systemd.
    pub reachable: bool,
    /// Why not, when unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Host-wide maintenance, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// Per-unit maintenance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unit_maintenance: BTreeMap<String, Maintenance>,
    /// Units by full name.
    #[serde(default)]
    pub units: BTreeMap<String, UnitFacts>,
    /// Content of the unit files a `unit:` step touches, by unit name
    /// (null: no file under /etc/systemd/system).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unit_files: BTreeMap<String, Option<String>>,
}

impl HostFacts {
    /// A reachable host of which nothing was read (no step touches it).
    pub fn unread() -> Self {
        HostFacts {
            reachable: true,
            error: None,
            maintenance: None,
            unit_maintenance: BTreeMap::new(),
            units: BTreeMap::new(),
            unit_files: BTreeMap::new(),
        }
    }

    /// Hide every secret value these facts hold: unit file content (a
    /// host may already hold a rendered secret), maintenance reasons, the
    /// error.
    pub fn redact(&mut self, secrets: &Secrets) {
        if secrets.is_empty() {
            return;
        }
        let hide = |s: &mut String| *s = secrets.redact_string(std::mem::take(s));
        if let Some(e) = &mut self.error {
            hide(e);
        }
        if let Some(m) = &mut self.maintenance {
            hide(&mut m.reason);
        }
        for m in self.unit_maintenance.values_mut() {
            hide(&mut m.reason);
        }
        for text in self.unit_files.values_mut().flatten() {
            hide(text);
        }
    }

    /// Facts of a host that could not be reached.
    pub fn unreachable(error: impl Into<String>) -> Self {
        HostFacts {
            reachable: false,
            error: Some(error.into()),
            ..HostFacts::unread()
        }
    }
}

/// The facts file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Format version, currently 1.
    pub version: u32,
    /// When the facts were read (RFC 3339).
    pub collected_at: String,
    /// Per host, by inventory name, in inventory order.
    pub hosts: IndexMap<String, HostFacts>,
}

impl Facts {
    /// An empty set of facts stamped now.
    pub fn new() -> Self {
        Facts {
            version: FACTS_VERSION,
            collected_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hosts: IndexMap::new(),
        }
    }

    /// These facts for exactly `hosts`, in that order: a host without facts
    /// here gets an empty reachable entry (one that nothing needed read).
    pub fn covering<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Facts {
        Facts {
            version: self.version,
            collected_at: self.collected_at.clone(),
            hosts: hosts
                .into_iter()
                .map(|h| {
                    let hf = self.hosts.get(h).cloned().unwrap_or_else(HostFacts::unread);
                    (h.to_string(), hf)
                })
                .collect(),
        }
    }

    /// Read a facts file (at most [`MAX_FACTS_BYTES`]), naming field, line
    /// and column on error.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::model::yaml::read_bounded_to(path, "facts file", MAX_FACTS_BYTES)?;
        Self::from_json(&text, path)
    }

    /// Parse facts JSON.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        // Fast path first; a failing file is parsed again to learn the field path.
        let facts: Facts = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(_) => {
                let de = &mut serde_json::Deserializer::from_str(text);
                return Err(Self::error_at(de, text, path));
            }
        };
        Self::check_version(facts)
    }

    fn error_at(
        de: &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
        text: &str,
        path: &Path,
    ) -> Error {
        match serde_path_to_error::deserialize::<_, Facts>(de).map_err(|e| {
            let inner = e.inner();
            let mut message = inner.to_string();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            Error::Parse(Box::new(crate::model::error::Diagnostic {
                what: "facts file",
                field: e.path().to_string().trim_start_matches('.').to_string(),
                message,
                suggestion: None,
                position: Some(Position::at(
                    path,
                    text,
                    inner.line() as u64,
                    inner.column() as u64,
                )),
            }))
        }) {
            Ok(_) => Error::Internal("facts file failed to parse once and then parsed".into()),
            Err(e) => e,
        }
    }

    fn check_version(facts: Facts) -> Result<Self> {
        if facts.version != FACTS_VERSION {
            return Err(Error::invalid(
                "facts file",
                "version",
                format!(
                    "version {} is not supported (this drover reads version {FACTS_VERSION}); re-run `drover facts`",
                    facts.version
                ),
                None,
            ));
        }
        Ok(facts)
    }
}

impl Default for Facts {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_have_positions() {
        let mut f = Facts::new();
        f.hosts
            .insert("h".into(), HostFacts::unreachable("timeout"));
        let json = serde_json::to_string_pretty(&f).unwrap();
        assert_eq!(Facts::from_json(&json, Path::new("f.json")).unwrap(), f);
        let bad = "{\"version\": 1, \"collected_at\": \"x\", \"hosts\": {\"h\": {\"reachable\": \"yes\"}}}";
        let e = Facts::from_json(bad, Path::new("f.json"))
            .unwrap_err()
            .details();
        assert!(e.starts_with("hosts.h.reachable: invalid type"), "{e}");
        assert!(e.contains("f.json line 1 column"), "{e}");
    }
}
