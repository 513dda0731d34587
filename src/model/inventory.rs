//! The inventory: which hosts exist, how to reach them, and what they are
//! (labels) — resolved once, with defaults applied, before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::error::{suggest, Error, Result};
use crate::model::unit::UnitName;
use crate::model::yaml;

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

/// The inventory file as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// Applied to every host, overridden per host.
    #[serde(default)]
    pub defaults: HostSpec,
    /// Hosts in inventory order (which `_any` follows).
    #[schemars(with = "BTreeMap<String, Option<HostSpec>>")]
    pub hosts: IndexMap<String, Option<HostSpec>>,
}

/// A host with every default applied: what the rest of drover sees.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The inventory name, used in reports.
    pub name: String,
    /// What SSH connects to.
    pub address: String,
    /// SSH port, when set.
    pub port: Option<u16>,
    /// SSH user, when set.
    pub user: Option<String>,
    /// ssh or local.
    pub transport: Transport,
    /// ssh_config file, resolved against the inventory's directory.
    pub ssh_config: Option<PathBuf>,
    /// Connect timeout.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Use `sudo -n` for the bridge.
    pub become_: bool,
    /// D-Bus address for local transport.
    pub bus: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Variables.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Protected units.
    pub protected: Vec<UnitName>,
}

mod humantime_serde_compat {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// A loaded inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it came from.
    pub path: PathBuf,
    /// Hosts in file order.
    pub hosts: Vec<Host>,
    /// SHA-256 of the file, for saved plans.
    pub digest: String,
}

/// Default connect timeout, as DESIGN.md's example.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const WHAT: &str = "inventory";

impl Inventory {
    /// Read, parse and validate an inventory file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = yaml::read_bounded(path, WHAT)?;
        Self::from_str(&text, path)
    }

    /// Parse and validate inventory text; `path` names it in errors and
    /// anchors relative `ssh_config` paths.
    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        let file: InventoryFile = yaml::parse(text, path, WHAT)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if file.defaults.address.is_some() {
            return Err(Error::invalid(
                WHAT,
                "defaults.address",
                "an address belongs to one host, not to defaults",
                yaml::locate(text, path, &["defaults", "address"]),
            ));
        }
        if file.hosts.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "hosts",
                "no hosts: add at least one under `hosts:`",
                yaml::locate(text, path, &["hosts"]),
            ));
        }
        let mut hosts = Vec::with_capacity(file.hosts.len());
        for (name, spec) in &file.hosts {
            let spec = spec.clone().unwrap_or_default();
            let host = resolve_host(name, &spec, &file.defaults, base)
                .map_err(|e| locate_error(e, text, path))?;
            hosts.push(host);
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            digest: crate::model::digest(text.as_bytes()),
        })
    }

    /// Find a host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The closest hostname to a misspelled one.
    pub fn suggest_host(&self, name: &str) -> Option<String> {
        suggest(name, self.hosts.iter().map(|h| h.name.as_str()))
    }
}

/// Give a post-parse validation error the position of its field path.
fn locate_error(e: Error, text: &str, path: &Path) -> Error {
    e.locate_with(|field| {
        let segs: Vec<&str> = field
            .split('.')
            .map(|s| s.split('[').next().unwrap_or(s))
            .collect();
        // Fall back to the host's line when the field itself is not written
        // there (a value inherited from `defaults`).
        yaml::locate(text, path, &segs)
            .or_else(|| yaml::locate(text, path, &segs[..segs.len().min(2)]))
    })
}

/// Hostnames double as selector terms, so they may not contain selector syntax.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.starts_with('_') {
        return Err(format!(
            "`{name}` starts with `_`, reserved for `_all` and `_any`"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "`{}` contains `{}`; use letters, digits, `-`, `.` and `_`",
            name.escape_default(),
            c.escape_default()
        ));
    }
    Ok(())
}

/// Label keys and each dot-separated segment of a value share one grammar.
pub fn validate_label(key: &str, value: &str) -> std::result::Result<(), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    if !key.split('.').all(ok) {
        return Err(format!(
            "label key `{}` must be letters, digits, `-` and `_`",
            key.escape_default()
        ));
    }
    if !value.split('.').all(ok) {
        return Err(format!(
            "label value `{}` must be dot-separated segments of letters, digits, `-` and `_`",
            value.escape_default()
        ));
    }
    Ok(())
}

/// An address reaches ssh as its destination argument and, through
/// `%h`, inside a ProxyCommand that a shell runs (CVE-2023-51385): only
/// hostname and IP characters may pass, and nothing that ssh reads as an
/// option.
fn validate_address(address: &str) -> std::result::Result<(), String> {
    const ALLOWED: &str =
        "an address may hold only letters, digits, `.`, `-`, `_`, `:` (IPv6) and `[`/`]` around an IPv6 literal";
    let shown = address.escape_default();
    if address.is_empty() {
        return Err(format!(
            "an empty address is not a usable address; {ALLOWED}"
        ));
    }
    if address.starts_with('-') {
        return Err(format!(
            "`{shown}` is not a usable address: it starts with `-`, which ssh would read as an option"
        ));
    }
    // `[` and `]` only as the brackets of an IPv6 literal such as `[::1]`.
    let (body, ipv6_literal) = match address.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) if inner.contains(':') => (inner, true),
            _ => {
                return Err(format!(
                    "`{shown}` is not a usable address: brackets must enclose a whole IPv6 address such as `[::1]`"
                ))
            }
        },
        None => (address, false),
    };
    let ok = |c: char| {
        if ipv6_literal {
            c.is_ascii_hexdigit() || matches!(c, ':' | '.')
        } else {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
        }
    };
    if let Some(bad) = body.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "`{shown}` is not a usable address: it contains `{}`; {ALLOWED}",
            bad.escape_default()
        ));
    }
    Ok(())
}

/// `bus:` is handed to the D-Bus library as an address; a `unixexec:` or
/// `tcp:` address (or a `;`-separated list hiding one) would run a program
/// or leave the machine, so only one `unix:path=` socket is accepted.
fn validate_bus(bus: &str) -> std::result::Result<(), String> {
    let shown = bus.escape_default();
    let Some(path) = bus.strip_prefix("unix:path=") else {
        return Err(format!(
            "`{shown}` is not accepted: `bus` must be a `unix:path=` address such as `unix:path=/run/dbus/system_bus_socket`"
        ));
    };
    if path.is_empty() {
        return Err(
            "`unix:path=` names no socket; write e.g. `unix:path=/run/dbus/system_bus_socket`"
                .into(),
        );
    }
    // `;` would add a second address, `,` another key (such as a guid).
    if let Some(bad) = path
        .chars()
        .find(|c| matches!(c, ';' | ',') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{shown}` contains `{}`; `bus` is one `unix:path=` address, a socket path without `;`, `,` or whitespace",
            bad.escape_default()
        ));
    }
    Ok(())
}

fn resolve_host(name: &str, spec: &HostSpec, defaults: &HostSpec, base: &Path) -> Result<Host> {
    let field = |f: &str| format!("hosts.{name}.{f}");
    validate_name(name).map_err(|m| Error::invalid(WHAT, format!("hosts.{name}"), m, None))?;
    let mut labels = defaults.labels.clone().unwrap_or_default();
    labels.extend(spec.labels.clone().unwrap_or_default());
    for (k, v) in &labels {
        validate_label(k, v)
            .map_err(|m| Error::invalid(WHAT, field(&format!("labels.{k}")), m, None))?;
    }
    let mut vars = defaults.vars.clone().unwrap_or_default();
    vars.extend(spec.vars.clone().unwrap_or_default());
    let timeout_raw = spec
        .connect_timeout
        .as_ref()
        .or(defaults.connect_timeout.as_ref());
    let connect_timeout = match timeout_raw {
        Some(raw) => crate::model::parse_duration(raw)
            .map_err(|m| Error::invalid(WHAT, field("connect_timeout"), m, None))?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    let protected_raw = spec
        .protected
        .clone()
        .or_else(|| defaults.protected.clone())
        .unwrap_or_default();
    let mut protected = Vec::new();
    for (i, raw) in protected_raw.iter().enumerate() {
        protected.push(
            UnitName::parse(raw)
                .map_err(|m| Error::invalid(WHAT, field(&format!("protected[{i}]")), m, None))?,
        );
    }
    let address = spec.address.clone().unwrap_or_else(|| name.to_string());
    validate_address(&address).map_err(|m| Error::invalid(WHAT, field("address"), m, None))?;
    if let Some(bus) = spec.bus.as_ref().or(defaults.bus.as_ref()) {
        validate_bus(bus).map_err(|m| Error::invalid(WHAT, field("bus"), m, None))?;
    }
    if let Some(user) = spec.user.as_ref().or(defaults.user.as_ref()) {
        if user.is_empty()
            || user.starts_with('-')
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::invalid(
                WHAT,
                field("user"),
                format!("`{}` is not a valid user name", user.escape_default()),
                None,
            ));
        }
    }
    let ssh_config = spec
        .ssh_config
        .clone()
        .or_else(|| defaults.ssh_config.clone())
        .map(|p| if p.is_relative() { base.join(p) } else { p });
    Ok(Host {
        name: name.to_string(),
        address,
        port: spec.port.or(defaults.port),
        user: spec.user.clone().or_else(|| defaults.user.clone()),
        transport: spec
            .transport
            .or(defaults.transport)
            .unwrap_or(Transport::Ssh),
        ssh_config,
        connect_timeout,
        become_: spec.become_.or(defaults.become_).unwrap_or(false),
        bus: spec.bus.clone().or_else(|| defaults.bus.clone()),
        labels,
        vars,
        protected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "\
defaults:
  user: root
  connect_timeout: 3s
  labels: { dc: a }
hosts:
  web-1:
    address: 10.0.0.11
    labels: { role: web, region: eu.west.1 }
  web-2: { labels: { role: web, dc: b } }
  localhost: { transport: local }
";

    #[test]
    fn defaults_apply_and_order_is_kept() {
        let inv = Inventory::from_str(INV, Path::new("inv.yml")).unwrap();
        let names: Vec<_> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "localhost"]);
        assert_eq!(inv.hosts[0].address, "10.0.0.11");
        assert_eq!(inv.hosts[1].address, "web-2");
        assert_eq!(inv.hosts[1].labels["dc"], "b");
        assert_eq!(inv.hosts[0].labels["dc"], "a");
        assert_eq!(inv.hosts[2].transport, Transport::Local);
        assert_eq!(inv.hosts[0].connect_timeout, Duration::from_secs(3));
    }

    fn one_host(spec: &str) -> Result<Inventory> {
        Inventory::from_str(&format!("hosts:\n  web-1: {spec}\n"), Path::new("i.yml"))
    }

    #[test]
    fn addresses_are_hostnames_or_ips() {
        for good in [
            "10.0.0.11",
            "web-1.example.com",
            "under_score",
            "fe80::1",
            "[::1]",
            "[2001:db8::10]",
            "[::ffff:10.0.0.1]",
        ] {
            let inv = one_host(&format!("{{ address: \"{good}\" }}")).unwrap();
            assert_eq!(inv.hosts[0].address, good);
        }
        for bad in [
            "a;reboot",
            "$(reboot)",
            "`reboot`",
            "a b",
            "-oProxyCommand=x",
            "a%h",
            "user@host",
            "[web-1]",
            "[::1",
            "::1]",
            "a[::1]",
            "",
        ] {
            let e = one_host(&format!("{{ address: \"{bad}\" }}"))
                .unwrap_err()
                .details();
            assert!(e.starts_with("hosts.web-1.address: "), "{bad}: {e}");
            assert!(e.contains("i.yml line 2"), "{bad}: {e}");
        }
        let e = one_host("{ address: \"a;b\" }").unwrap_err().details();
        assert!(
            e.contains("contains `;`") && e.contains("letters, digits"),
            "{e}"
        );
    }

    #[test]
    fn bus_is_one_unix_path() {
        let inv = one_host("{ transport: local, bus: \"unix:path=/run/dbus/system_bus_socket\" }")
            .unwrap();
        assert_eq!(
            inv.hosts[0].bus.as_deref(),
            Some("unix:path=/run/dbus/system_bus_socket")
        );
        for bad in [
            "unixexec:path=/bin/sh,argv1=-c,argv2=reboot",
            "tcp:host=10.0.0.1,port=1",
            "unix:abstract=x",
            "unix:path=",
            "unix:path=/a;unixexec:path=/bin/sh",
            "unix:path=/a,guid=00",
            " unix:path=/a",
        ] {
            let e = one_host(&format!("{{ transport: local, bus: \"{bad}\" }}"))
                .unwrap_err()
                .details();
            assert!(e.starts_with("hosts.web-1.bus: "), "{bad}: {e}");
            assert!(e.contains("i.yml line 2"), "{bad}: {e}");
        }
        // A bus in defaults is checked for every host it reaches.
        let e = Inventory::from_str(
            "defaults: { bus: \"unixexec:path=/bin/true\" }\nhosts:\n  web-1: {}\n",
            Path::new("i.yml"),
        )
        .unwrap_err()
        .details();
        assert!(e.starts_with("hosts.web-1.bus: "), "{e}");
    }

    #[test]
    fn connect_timeout_is_capped() {
        assert_eq!(
            one_host("{ connect_timeout: 7d }").unwrap().hosts[0].connect_timeout,
            crate::model::MAX_DURATION
        );
        for long in ["8d", "500000000000y"] {
            let e = one_host(&format!("{{ connect_timeout: {long} }}"))
                .unwrap_err()
                .details();
            assert!(
                e.starts_with("hosts.web-1.connect_timeout: ") && e.contains("longer than 7 days"),
                "{long}: {e}"
            );
            assert!(e.contains("i.yml line 2"), "{long}: {e}");
        }
    }

    #[test]
    fn reserved_and_bad_names_are_refused() {
        for bad in ["_all", "a:b", "a,b", "!x", "a b"] {
            let text = format!("hosts:\n  '{bad}': {{}}\n");
            assert!(
                Inventory::from_str(&text, Path::new("i.yml")).is_err(),
                "{bad}"
            );
        }
    }
}
