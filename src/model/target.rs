//! Target selectors: which hosts a step runs on.
//!
//! A selector is `,`-joined terms that must all match (AND); a term is a
//! hostname, `_all`, `_any`, or `key:value`, optionally negated with `!`.
//! Label values are hierarchical: `region:eu` matches `eu`, `eu.west` and
//! `eu.west.1`, never `europe`. A list of selectors is their union.

use std::fmt;

use crate::model::inventory::{validate_label, validate_name, Host, Inventory};

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    All,
    Any,
    Host(String),
    Label { key: String, value: String },
}

/// A parsed selector such as `role:web,!region:us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    raw: String,
    terms: Vec<(bool, Term)>,
}

/// What a selector resolves to before reachability is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// These hosts (inventory indices, inventory order).
    Hosts(Vec<usize>),
    /// Exactly one of these candidates, picked at run time: the first
    /// reachable one not in maintenance.
    AnyOf(Vec<usize>),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Selector {
    /// Parse a selector string; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw_trim = raw.trim();
        if raw_trim.is_empty() {
            return Err("empty selector".into());
        }
        let mut terms = Vec::new();
        for part in raw_trim.split(',') {
            let part = part.trim();
            let (neg, body) = match part.strip_prefix('!') {
                Some(b) => (true, b.trim()),
                None => (false, part),
            };
            if body.is_empty() {
                return Err(format!("empty term in selector `{raw_trim}`"));
            }
            let term = match body {
                "_all" => Term::All,
                "_any" => Term::Any,
                _ => match body.split_once(':') {
                    Some((k, v)) => {
                        validate_label(k, v)?;
                        Term::Label {
                            key: k.to_string(),
                            value: v.to_string(),
                        }
                    }
                    None => {
                        if body.starts_with('_') {
                            return Err(format!(
                                "unknown reserved target `{body}`; use `_all` or `_any`"
                            ));
                        }
                        validate_name(body)?;
                        Term::Host(body.to_string())
                    }
                },
            };
            if neg && matches!(term, Term::All | Term::Any) {
                return Err(format!("`!{body}` cannot be negated"));
            }
            terms.push((neg, term));
        }
        Ok(Selector {
            raw: raw_trim.to_string(),
            terms,
        })
    }

    /// Whether this selector contains `_any`.
    pub fn is_any(&self) -> bool {
        self.terms.iter().any(|(_, t)| *t == Term::Any)
    }

    /// Whether `host` matches every term (ignoring `_any`, which picks later).
    pub fn matches(&self, host: &Host) -> bool {
        self.terms.iter().all(|(neg, term)| {
            let m = match term {
                Term::All | Term::Any => true,
                Term::Host(name) => host.name == *name,
                Term::Label { key, value } => host
                    .labels
                    .get(key)
                    .is_some_and(|v| hierarchical_match(value, v)),
            };
            m != *neg
        })
    }

    /// Hostnames this selector names that the inventory lacks.
    pub fn unknown_hosts<'a>(&'a self, inv: &Inventory) -> Vec<&'a str> {
        self.terms
            .iter()
            .filter_map(|(_, t)| match t {
                Term::Host(n) if inv.host(n).is_none() => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Resolve against the inventory: matching host indices in order.
    pub fn resolve(&self, inv: &Inventory) -> Resolved {
        let hosts: Vec<usize> = inv
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| self.matches(h))
            .map(|(i, _)| i)
            .collect();
        if self.is_any() {
            Resolved::AnyOf(hosts)
        } else {
            Resolved::Hosts(hosts)
        }
    }
}

/// `want` (from a selector) matches `have` (a label value) when `want`'s
/// dot-separated segments are a prefix of `have`'s.
pub fn hierarchical_match(want: &str, have: &str) -> bool {
    match have.strip_prefix(want) {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn inv() -> Inventory {
        Inventory::from_str(
            "hosts:
  web-1: { labels: { role: web, region: eu.west.1 } }
  web-2: { labels: { role: web, region: europe.north } }
  db-1: { labels: { role: db, region: eu.east } }
  db-2: { labels: { role: db, region: us.east.1 } }
",
            Path::new("i.yml"),
        )
        .unwrap()
    }

    fn names(sel: &str) -> Vec<String> {
        let inv = inv();
        let s = Selector::parse(sel).unwrap();
        let idx = match s.resolve(&inv) {
            Resolved::Hosts(v) | Resolved::AnyOf(v) => v,
        };
        idx.into_iter().map(|i| inv.hosts[i].name.clone()).collect()
    }

    #[test]
    fn hierarchy_is_by_segment_not_by_prefix() {
        assert_eq!(names("region:eu"), ["web-1", "db-1"]);
        assert_eq!(names("region:eu.west"), ["web-1"]);
        assert_eq!(names("region:europe"), ["web-2"]);
        assert_eq!(names("region:eu.west.1"), ["web-1"]);
        assert!(names("region:eu.west.10").is_empty());
        assert!(hierarchical_match("eu", "eu"));
        assert!(!hierarchical_match("eu", "europe"));
        assert!(!hierarchical_match("eu.west", "eu.westfalen"));
    }

    #[test]
    fn and_negation_and_hostnames() {
        assert_eq!(names("role:web,region:eu"), ["web-1"]);
        assert_eq!(names("role:db,!region:us"), ["db-1"]);
        assert_eq!(names("!role:web"), ["db-1", "db-2"]);
        assert_eq!(names("_all,!db-2"), ["web-1", "web-2", "db-1"]);
        assert_eq!(names("db-2"), ["db-2"]);
        assert_eq!(names("_all").len(), 4);
    }

    #[test]
    fn any_resolves_to_candidates() {
        let inv = inv();
        let s = Selector::parse("_any,role:db").unwrap();
        assert_eq!(s.resolve(&inv), Resolved::AnyOf(vec![2, 3]));
    }

    #[test]
    fn bad_selectors_are_errors() {
        for bad in [
            "",
            "!_all",
            "_some",
            "role:",
            ":web",
            "a b",
            "role:we$b",
            "x,,y",
            "!",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
        let inv = inv();
        assert_eq!(
            Selector::parse("web-9").unwrap().unknown_hosts(&inv),
            ["web-9"]
        );
    }
}
