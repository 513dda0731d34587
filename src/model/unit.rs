//! systemd unit names: the grammar systemd itself enforces, checked before
//! a name gets anywhere near a host.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Unit types systemd knows; a name must end in one of these.
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// systemd's limit on a unit name's length (UNIT_NAME_MAX).
const UNIT_NAME_MAX: usize = 255;

/// A unit name that passed systemd's grammar: safe to pass to D-Bus and,
/// quoted, to a remote shell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(Arc<str>);

impl UnitName {
    /// Validate `raw`; a name without a unit type suffix gets `.service`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = if has_known_suffix(raw) {
            raw.to_string()
        } else {
            format!("{raw}.service")
        };
        validate(&name)?;
        Ok(UnitName(name.into()))
    }

    /// The full name, e.g. `demo-web.service`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UnitName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        UnitName::parse(&s)
    }
}

impl From<UnitName> for String {
    fn from(u: UnitName) -> String {
        u.0.to_string()
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn has_known_suffix(raw: &str) -> bool {
    raw.rsplit_once('.')
        .is_some_and(|(_, ty)| UNIT_TYPES.contains(&ty))
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

/// systemd's unit_name_is_valid(): `prefix[@instance].type`, prefix and
/// instance of `[A-Za-z0-9:_.\-]`, at most 255 bytes.
fn validate(name: &str) -> Result<(), String> {
    if name.len() > UNIT_NAME_MAX {
        return Err(format!(
            "unit name is {} bytes long, systemd allows {UNIT_NAME_MAX}",
            name.len()
        ));
    }
    let Some((stem, ty)) = name.rsplit_once('.') else {
        return Err(format!("unit name `{name}` has no type suffix"));
    };
    if !UNIT_TYPES.contains(&ty) {
        return Err(format!("unit name `{name}` has an unknown type `.{ty}`"));
    }
    let (prefix, instance) = match stem.split_once('@') {
        Some((p, i)) => (p, Some(i)),
        None => (stem, None),
    };
    if prefix.is_empty() {
        return Err(format!("unit name `{name}` has an empty prefix"));
    }
    for part in std::iter::once(prefix).chain(instance) {
        if let Some(bad) = part.chars().find(|c| !valid_char(*c)) {
            return Err(format!(
                "unit name `{}` contains `{}`; systemd allows only letters, digits and `:-_.\\` (and one `@`)",
                name.escape_default(),
                bad.escape_default()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_become_services() {
        assert_eq!(UnitName::parse("nginx").unwrap().as_str(), "nginx.service");
        assert_eq!(
            UnitName::parse("getty@tty1.service").unwrap().as_str(),
            "getty@tty1.service"
        );
        assert_eq!(UnitName::parse("a.timer").unwrap().as_str(), "a.timer");
        assert_eq!(
            UnitName::parse("foo.bar").unwrap().as_str(),
            "foo.bar.service"
        );
    }

    #[test]
    fn shell_metacharacters_are_rejected() {
        for bad in [
            "x; rm -rf /",
            "$(reboot)",
            "a`b`",
            "a b",
            "a|b",
            "a&b",
            "a\nb",
            "'q'",
            "a>b",
            "@x.service",
            "",
            "a@b@c.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(UnitName::parse(&"a".repeat(300)).is_err());
    }
}
