//! The inventory file as written: the serde shapes read before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How drover reaches a host's systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `systemd-stdio-bridge` over one SSH ControlMaster.
    Ssh,
    /// The system bus of the machine drover runs on.
    Local,
}

/// Settings a host may carry; `defaults` holds the same keys.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Network address or ssh_config alias (default: the host's name).
    pub address: Option<String>,
    /// SSH port (default: ssh_config's, else 22).
    pub port: Option<u16>,
    /// SSH user (default: ssh_config's).
    pub user: Option<String>,
    /// ssh or local.
    pub transport: Option<Transport>,
    /// An ssh_config file used like `ssh -F`.
    pub ssh_config: Option<PathBuf>,
    /// Give up connecting after this long, e.g. `10s`.
    pub connect_timeout: Option<String>,
    /// Run the bridge through `sudo -n`.
    #[serde(rename = "become")]
    pub become_: Option<bool>,
    /// D-Bus address for `transport: local` (default: DBUS_SYSTEM_BUS_ADDRESS).
    pub bus: Option<String>,
    /// Key/value labels for selectors; values are dot-separated hierarchies.
    pub labels: Option<BTreeMap<String, String>>,
    /// Per-host template variables (`host.vars.*`).
    pub vars: Option<BTreeMap<String, serde_json::Value>>,
    /// Units that stop/restart/mask refuse without `--allow-protected`.
    pub protected: Option<Vec<String>>,
}

/// The inventory as written: a YAML file, and also the JSON a dynamic
/// inventory (an executable given to `-i`) prints: one schema for both.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// Applied to every host, overridden per host.
    #[serde(default)]
    pub defaults: HostSpec,
    /// Hosts in inventory order (which `_any` follows).
    #[schemars(with = "BTreeMap<String, Option<HostSpec>>")]
    #[serde(deserialize_with = "unique_hosts")]
    pub hosts: IndexMap<String, Option<HostSpec>>,
}

/// One file of an inventory directory: the same keys, each optional (a
/// file may hold only defaults, or only hosts).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InventoryPart {
    #[serde(default)]
    pub(super) defaults: HostSpec,
    #[serde(default, deserialize_with = "unique_hosts")]
    pub(super) hosts: IndexMap<String, Option<HostSpec>>,
}

/// A host written twice in one document is an error, in JSON too (where
/// a map would silently keep the last one).
fn unique_hosts<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> std::result::Result<IndexMap<String, Option<HostSpec>>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = IndexMap<String, Option<HostSpec>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of host names to host settings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = IndexMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let spec = map.next_value::<Option<HostSpec>>()?;
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "host `{}` is defined twice; each host may appear only once",
                        name.escape_default()
                    )));
                }
                out.insert(name, spec);
            }
            Ok(out)
        }
    }
    de.deserialize_map(Visit)
}
