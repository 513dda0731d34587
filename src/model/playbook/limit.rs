//! Safety across jobs, as a step writes it: `group_by: labels.KEY` with
//! `max_unavailable` (a count or a percentage of the group) and
//! `require_healthy`. The walk enforces it through the claims; this is
//! only what was written, validated at its position.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::error::{suggest, Error, Result};
use crate::model::inventory::Host;
use crate::model::playbook::{Serial, Source, StepSpec, WHAT};

/// The only label path a group is read from today.
const LABELS: &str = "labels.";

/// A validated group limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    /// The label whose value names a host's group (`cluster` of
    /// `labels.cluster`).
    pub label: String,
    /// At most this many hosts of one group worked on or out of service
    /// at once, across jobs.
    pub max_unavailable: Serial,
    /// A batch starts only while every other host of its groups is
    /// healthy.
    pub require_healthy: bool,
}

impl Limit {
    /// The claim name of the group `host` is in, or None when it lacks the
    /// label (refused when the job is built).
    pub fn group_of(&self, host: &Host) -> Option<String> {
        let v = host.labels.get(&self.label)?;
        Some(format!("labels.{}={v}", self.label))
    }

    /// How many of a group of `n` hosts may be unavailable at once (at
    /// least one: a percentage never rounds a group to a standstill).
    pub fn allowed(&self, n: usize) -> usize {
        self.max_unavailable.batch_size(n)
    }

    /// The limit in words, for plans and errors.
    pub fn describe(&self) -> String {
        let max = match self.max_unavailable {
            Serial::Count(c) => c.to_string(),
            Serial::Percent(p) => format!("{p}%"),
        };
        let healthy = if self.require_healthy {
            ", the rest healthy"
        } else {
            ""
        };
        format!(
            "at most {max} per labels.{} unavailable at once{healthy}",
            self.label
        )
    }
}

/// `max_unavailable:` as written: a number or a text such as "34%".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    /// A host count.
    Count(i64),
    /// A fractional number (refused: hosts are counted whole).
    Float(f64),
    /// A count or a percentage, as text.
    Text(String),
}

impl JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxUnavailable".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Hosts of one group that may be worked on or out of service at once, across jobs: a count (at least 1) or a percentage of the group such as \"34%\" (more than 0%, at most 100%).",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^\\s*([0-9]+|[0-9]+(\\.[0-9]+)?\\s*%)\\s*$" }
            ]
        })
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Float(x) => write!(f, "{x}"),
            Amount::Text(s) => write!(f, "{s}"),
        }
    }
}

/// The amount validated: at least one host, a percentage in (0, 100].
fn amount(a: &Amount) -> std::result::Result<Serial, String> {
    let zero = "max_unavailable 0 lets no host be worked on; use at least 1 (or drop `group_by`)";
    match a {
        Amount::Count(0) => Err(zero.into()),
        Amount::Count(n) if *n < 0 => Err(format!("{n} is negative; use at least 1")),
        Amount::Count(n) => Ok(Serial::Count(*n as usize)),
        Amount::Float(x) => Err(format!(
            "{x} is not a whole number of hosts; write a count such as 1 or a percentage such as \"34%\""
        )),
        Amount::Text(s) => {
            let t = s.trim();
            match t.strip_suffix('%') {
                Some(p) => match p.trim().parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 100.0 => Ok(Serial::Percent(v)),
                    Ok(v) if v <= 0.0 => Err(zero.into()),
                    Ok(_) => Err(format!(
                        "`{t}` is more than 100%; a group cannot lose more hosts than it has"
                    )),
                    Err(_) => Err(format!("`{t}` is not a percentage such as \"34%\"")),
                },
                None => match t.parse::<usize>() {
                    Ok(0) => Err(zero.into()),
                    Ok(n) => Ok(Serial::Count(n)),
                    Err(_) => Err(format!(
                        "`{t}` is not a host count or a percentage such as \"34%\""
                    )),
                },
            }
        }
    }
}

/// A step's (or a module call's) `group_by`/`max_unavailable`/
/// `require_healthy`, validated; `k` is its index in its file.
pub(super) fn parse_limit(src: Source<'_>, k: usize, spec: &StepSpec) -> Result<Option<Limit>> {
    let id = &spec.id.value;
    let at_step = src.pos(spec.id.referenced);
    let bad = |f: &str, m: String, at| {
        Error::invalid(
            WHAT,
            format!("steps[{k}].{f}"),
            format!("step `{id}`: {m}"),
            Some(at),
        )
    };
    let Some(by) = &spec.group_by else {
        if let Some(m) = &spec.max_unavailable {
            return Err(bad(
                "max_unavailable",
                "`max_unavailable` needs `group_by` naming the label that groups the hosts".into(),
                src.pos(m.referenced),
            )
            .with_suggestion(Some("group_by: labels.cluster".into())));
        }
        if spec.require_healthy == Some(true) {
            return Err(bad(
                "require_healthy",
                "`require_healthy` needs `group_by` and `max_unavailable`: it checks the other hosts of the batch's groups".into(),
                at_step,
            )
            .with_suggestion(Some("group_by: labels.cluster".into())));
        }
        return Ok(None);
    };
    let at = src.pos(by.referenced);
    let path = by.value.trim();
    let label = match path.strip_prefix(LABELS) {
        Some(l) if crate::model::inventory::validate_label(l, "x").is_ok() => l.to_string(),
        _ => {
            let tail = path.rsplit('.').next().unwrap_or(path);
            return Err(bad(
                "group_by",
                format!("`{path}` is not a label path; groups come from a host label, written `labels.KEY`"),
                at,
            )
            .with_suggestion(Some(format!("labels.{tail}"))));
        }
    };
    let Some(m) = &spec.max_unavailable else {
        return Err(bad(
            "group_by",
            "`group_by` needs `max_unavailable`: how many hosts of one group may be down at once"
                .into(),
            at,
        )
        .with_suggestion(Some("max_unavailable: 1".into())));
    };
    let max_unavailable =
        amount(&m.value).map_err(|msg| bad("max_unavailable", msg, src.pos(m.referenced)))?;
    Ok(Some(Limit {
        label,
        max_unavailable,
        require_healthy: spec.require_healthy.unwrap_or(false),
    }))
}

/// Every host a step with `limit` works on must carry its label: a host
/// without it would belong to no group and escape the limit. `Err` is
/// the message and the nearest label the hosts do carry.
pub fn check_hosts<'h>(
    limit: &Limit,
    hosts: impl IntoIterator<Item = &'h Host>,
) -> std::result::Result<(), (String, Option<String>)> {
    let mut known = BTreeSet::new();
    let mut missing = Vec::new();
    for h in hosts {
        known.extend(h.labels.keys().map(String::as_str));
        if !h.labels.contains_key(&limit.label) {
            missing.push(h.name.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = missing.iter().take(5).copied().collect();
    let more = missing.len().saturating_sub(shown.len());
    Err((
        format!(
            "group_by: labels.{}: host{} {}{} ha{} no label `{}`, so no group to count against",
            limit.label,
            if missing.len() == 1 { "" } else { "s" },
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            if missing.len() == 1 { "s" } else { "ve" },
            limit.label
        ),
        suggest(&limit.label, known).map(|l| format!("labels.{l}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_whole_hosts_or_a_share_of_the_group() {
        assert_eq!(amount(&Amount::Count(1)), Ok(Serial::Count(1)));
        assert_eq!(
            amount(&Amount::Text("34%".into())),
            Ok(Serial::Percent(34.0))
        );
        for bad in [
            Amount::Count(0),
            Amount::Count(-1),
            Amount::Float(1.5),
            Amount::Text("0%".into()),
            Amount::Text("150%".into()),
            Amount::Text("many".into()),
        ] {
            assert!(amount(&bad).is_err(), "{bad}");
        }
        let l = Limit {
            label: "cluster".into(),
            max_unavailable: Serial::Percent(34.0),
            require_healthy: false,
        };
        assert_eq!(l.allowed(3), 1);
        assert_eq!(l.allowed(6), 2);
    }
}
