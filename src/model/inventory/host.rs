//! One host validated: its name, labels, address, bus and defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Source;
use crate::model::error::{Error, Result};
use crate::model::inventory::Host;
use crate::model::inventory::HostSpec;
use crate::model::inventory::Parsed;
use crate::model::inventory::Transport;
use crate::model::inventory::DEFAULT_CONNECT_TIMEOUT;
use crate::model::inventory::WHAT;
use crate::model::unit::UnitName;
use crate::model::yaml;

impl HostSpec {
    /// The keys this spec sets, as written in a file.
    pub(super) fn keys(&self) -> Vec<&'static str> {
        let set = [
            ("address", self.address.is_some()),
            ("port", self.port.is_some()),
            ("user", self.user.is_some()),
            ("transport", self.transport.is_some()),
            ("ssh_config", self.ssh_config.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("become", self.become_.is_some()),
            ("bus", self.bus.is_some()),
            ("labels", self.labels.is_some()),
            ("vars", self.vars.is_some()),
            ("protected", self.protected.is_some()),
        ];
        set.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }

    /// Take every key `other` sets and this one does not.
    pub(super) fn fill_from(&mut self, other: &HostSpec) {
        fn take<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        take(&mut self.address, &other.address);
        take(&mut self.port, &other.port);
        take(&mut self.user, &other.user);
        take(&mut self.transport, &other.transport);
        take(&mut self.ssh_config, &other.ssh_config);
        take(&mut self.connect_timeout, &other.connect_timeout);
        take(&mut self.become_, &other.become_);
        take(&mut self.bus, &other.bus);
        take(&mut self.labels, &other.labels);
        take(&mut self.vars, &other.vars);
        take(&mut self.protected, &other.protected);
    }
}

/// Give a post-parse validation error the position of its field path: in
/// the host's own document, else where the default it inherited is set,
/// else at the host's line.
pub(super) fn locate_error(
    e: Error,
    parts: &[(Source<'_>, Parsed)],
    host_part: usize,
    defaults_by: &BTreeMap<&'static str, usize>,
) -> Error {
    e.locate_with(|field| {
        let segs: Vec<&str> = field
            .split('.')
            .map(|s| s.split('[').next().unwrap_or(s))
            .collect();
        let src = &parts[host_part].0;
        let from_default = || {
            let key = *segs.get(2)?;
            let (key, &d) = defaults_by.get_key_value(key)?;
            let def = &parts[d].0;
            yaml::locate(def.text, def.name, &["defaults", key])
        };
        yaml::locate(src.text, src.name, &segs)
            .or_else(|| (parts.len() > 1).then(from_default).flatten())
            .or_else(|| yaml::locate(src.text, src.name, &segs[..segs.len().min(2)]))
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

pub(super) fn resolve_host(
    name: &str,
    spec: &HostSpec,
    defaults: &HostSpec,
    base: &Path,
    defaults_base: &Path,
) -> Result<Host> {
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
    let anchor = |p: &PathBuf, base: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        }
    };
    let ssh_config = match (&spec.ssh_config, &defaults.ssh_config) {
        (Some(p), _) => Some(anchor(p, base)),
        (None, Some(p)) => Some(anchor(p, defaults_base)),
        (None, None) => None,
    };
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
