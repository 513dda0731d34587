//! Playbook parameters: what a runbook takes at run time (`params:`), the
//! values a caller gives (`--param`, `--params-file`, a request's body,
//! a saved plan), and the values bound to them. Values are typed and
//! checked against the declaration before anything runs; in templates they
//! are only ever data (`{{ params.x }}` renders the value, never evaluates
//! it). Secret parameters are hidden like `secret_vars`, and left out of
//! the digest and the record, since a hash of a weak secret lets anyone
//! check guesses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::error::{suggest, Error, Result};
use crate::model::yaml;

mod given;
mod value;

pub use given::{Hint, Origin, ParamValues};
use value::{check_secret, Decl};

/// What playbook files are called in errors.
const PLAYBOOK: &str = "playbook";

/// The most parameters one playbook declares.
const MAX_PARAMS: usize = 64;

/// A parameter's type: what values it takes, and how they are checked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// One line of text (the default), matching `pattern` when given.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A duration such as `30s` or `1m30s` (at most 7 days).
    Duration,
    /// A host selector (`web-1`, `role:web,!web-3`); the server refuses one
    /// naming hosts outside the caller key's targets.
    Selector,
    /// A systemd unit name; a bare name gets `.service`.
    Unit,
    /// One of `values`.
    Enum,
}

impl ParamType {
    /// The type's word, as written in a playbook.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Duration => "duration",
            ParamType::Selector => "selector",
            ParamType::Unit => "unit",
            ParamType::Enum => "enum",
        }
    }
}

/// One parameter as declared in a playbook's `params:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// What the parameter means, for the people running the playbook.
    pub description: String,
    /// string (default), integer, boolean, duration, selector, unit or enum.
    #[serde(rename = "type", default)]
    #[schemars(rename = "type")]
    pub kind: ParamType,
    /// The value when none is given; without one the parameter is required.
    pub default: Option<Value>,
    /// `type: string` only: a regular expression the whole value must match.
    pub pattern: Option<String>,
    /// `type: enum` only: the values it takes.
    pub values: Option<Vec<String>>,
    /// Hidden in everything drover shows, like `secret_vars`, and left out
    /// of digests and records (`type: string`, no default, at least 4
    /// characters).
    #[serde(default)]
    pub secret: bool,
}

/// A parameter as `GET /runbook` lists it and the status page offers it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParamView {
    /// Its name (`params.NAME` in templates).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: ParamType,
    /// What it means.
    pub description: String,
    /// The value when none is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Whether a value must be given (no default).
    pub required: bool,
    /// Whether the value is hidden in everything drover shows.
    pub secret: bool,
    /// For `enum`: the values it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// For `string`: the regular expression the whole value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A playbook's validated `params:`, in name order.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    decls: Vec<Decl>,
}

/// A name a template reads as `params.NAME`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Declared {
    /// Validate the declarations of a playbook (`text` at `path`): names,
    /// what each type allows, patterns, and defaults against their type.
    pub fn new(specs: &BTreeMap<String, ParamSpec>, text: &str, path: &Path) -> Result<Declared> {
        let at = |segs: &[&str]| yaml::locate(text, path, segs);
        if specs.len() > MAX_PARAMS {
            return Err(Error::invalid(
                PLAYBOOK,
                "params",
                format!(
                    "{} parameters; a playbook declares at most {MAX_PARAMS}",
                    specs.len()
                ),
                at(&["params"]),
            ));
        }
        let mut decls = Vec::with_capacity(specs.len());
        for (name, spec) in specs {
            let bad = |field: &str, m: String| {
                let mut segs = vec!["params", name.as_str()];
                if !field.is_empty() {
                    segs.push(field);
                }
                let f = if field.is_empty() {
                    format!("params.{name}")
                } else {
                    format!("params.{name}.{field}")
                };
                Error::invalid(PLAYBOOK, f, m, at(&segs).or_else(|| at(&["params", name])))
            };
            if !valid_name(name) {
                return Err(bad(
                    "",
                    format!(
                        "`{}` is not a parameter name; use letters, digits and `_` (templates read it as `params.NAME`)",
                        name.escape_default()
                    ),
                ));
            }
            let kind = spec.kind;
            match (&spec.values, kind) {
                (Some(_), k) if k != ParamType::Enum => {
                    return Err(bad(
                        "values",
                        format!("`values` belongs to `type: enum`, not `{}`", k.as_str()),
                    ))
                }
                (None, ParamType::Enum) => {
                    return Err(bad(
                        "type",
                        "`type: enum` needs `values`: the values it takes".into(),
                    ))
                }
                (Some(v), _) => {
                    if v.is_empty() || v.iter().any(|s| s.is_empty()) {
                        return Err(bad(
                            "values",
                            "`values` lists at least one value, none of them empty".into(),
                        ));
                    }
                    let unique: BTreeSet<&String> = v.iter().collect();
                    if unique.len() != v.len() {
                        return Err(bad("values", "`values` lists a value twice".into()));
                    }
                }
                (None, _) => {}
            }
            let pattern = match &spec.pattern {
                Some(_) if kind != ParamType::String => {
                    return Err(bad(
                        "pattern",
                        format!(
                            "`pattern` belongs to `type: string`, not `{}`",
                            kind.as_str()
                        ),
                    ))
                }
                Some(p) => Some(
                    regex::RegexBuilder::new(&format!("^(?:{p})$"))
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| bad("pattern", format!("not a regular expression: {e}")))?,
                ),
                None => None,
            };
            if spec.secret && kind != ParamType::String {
                return Err(bad(
                    "secret",
                    format!(
                        "a secret parameter is `type: string`, not `{}`",
                        kind.as_str()
                    ),
                ));
            }
            if spec.secret && spec.default.is_some() {
                return Err(bad(
                    "default",
                    "a secret parameter takes no default: everyone who reads the playbook would know it (a value kept in the playbook belongs in `secret_vars`)".into(),
                ));
            }
            let mut decl = Decl {
                name: name.clone(),
                spec: spec.clone(),
                pattern,
                default: None,
                position: at(&["params", name]),
            };
            if let Some(d) = &spec.default {
                let v = decl
                    .coerce(d, false)
                    .map_err(|m| bad("default", format!("the default {m}")))?;
                decl.default = Some(v);
            }
            decls.push(decl);
        }
        Ok(Declared { decls })
    }

    /// No parameters declared.
    pub fn is_empty(&self) -> bool {
        self.decls.is_empty()
    }

    /// The declared names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.decls.iter().map(|d| d.name.as_str())
    }

    /// The names of the selector-typed parameters.
    pub fn selectors(&self) -> impl Iterator<Item = &str> {
        self.decls
            .iter()
            .filter(|d| d.spec.kind == ParamType::Selector)
            .map(|d| d.name.as_str())
    }

    /// The declarations as listed (`GET /runbook`, the status page).
    pub fn views(&self) -> Vec<ParamView> {
        self.decls
            .iter()
            .map(|d| ParamView {
                name: d.name.clone(),
                kind: d.spec.kind,
                description: d.spec.description.clone(),
                default: d.default.clone(),
                required: d.default.is_none(),
                secret: d.spec.secret,
                values: d.spec.values.clone(),
                pattern: d.spec.pattern.clone(),
            })
            .collect()
    }

    /// Bind the given values: unknown names (with the nearest declared
    /// one) and missing required ones are errors, each value is checked
    /// against its type, defaults fill the rest.
    pub fn bind(&self, given: &ParamValues) -> Result<Params> {
        for (name, g) in &given.given {
            if !self.decls.iter().any(|d| d.name == *name) {
                let declared = if self.decls.is_empty() {
                    "the playbook declares no parameters".to_string()
                } else {
                    format!(
                        "the playbook takes {}",
                        self.names()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(g
                    .origin
                    .error(name, format!("unknown parameter `{name}`; {declared}"))
                    .with_suggestion(suggest(name, self.names())));
            }
        }
        let mut values = Map::new();
        let mut secret = BTreeSet::new();
        for d in &self.decls {
            let v = match (given.given.get(&d.name), &d.default) {
                (Some(g), _) => {
                    let v = d
                        .coerce(&g.value, g.origin.is_text())
                        .map_err(|m| g.origin.error(&d.name, format!("`{}` {m}", d.name)))?;
                    if d.spec.secret {
                        check_secret(&v)
                            .map_err(|m| g.origin.error(&d.name, format!("`{}` {m}", d.name)))?;
                    }
                    v
                }
                (None, Some(v)) => v.clone(),
                (None, None) if given.samples => d.sample(),
                (None, None) => {
                    return Err(Error::invalid(
                        "params",
                        d.name.clone(),
                        format!(
                            "missing required parameter `{}` ({}); {}",
                            d.name,
                            d.spec.description.trim(),
                            given.hint.how(&d.name)
                        ),
                        d.position.clone(),
                    ))
                }
            };
            if d.spec.secret {
                secret.insert(d.name.clone());
            }
            values.insert(d.name.clone(), v);
        }
        Ok(Params::new(values, secret))
    }
}

/// The bound parameters of one job: every declared parameter's value
/// (given, or its default), checked against its type.
#[derive(Clone)]
pub struct Params {
    /// SHA-256 (hex) of the canonical JSON of the non-secret values:
    /// sorted keys, no white space. Secret parameters are left out, names
    /// and values, since a hash of a weak secret lets anyone check
    /// guesses.
    pub digest: String,
    values: Map<String, Value>,
    secret: BTreeSet<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params::new(Map::new(), BTreeSet::new())
    }
}

// Derived Debug would print secret values into any `{:?}` of a job.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("digest", &self.digest)
            .field("values", &self.record())
            .field("secret", &self.secret)
            .finish()
    }
}

impl Params {
    fn new(values: Map<String, Value>, secret: BTreeSet<String>) -> Self {
        let shown: BTreeMap<&String, &Value> = values
            .iter()
            .filter(|(k, _)| !secret.contains(*k))
            .collect();
        let canonical = serde_json::to_string(&shown).unwrap_or_default();
        Params {
            digest: crate::model::digest(canonical.as_bytes()),
            values,
            secret,
        }
    }

    /// The non-secret values as bound (defaults included): what a report,
    /// a journal or a saved plan records, and what a retry gives again.
    pub fn record(&self) -> Map<String, Value> {
        self.values
            .iter()
            .filter(|(k, _)| !self.secret.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every value, secret ones included: what templates see.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// The names of the secret parameters.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secret.iter().map(String::as_str)
    }

    /// No parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each parameter as shown to people: `name=value`, a secret one as
    /// its marker.
    pub fn shown(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(k, v)| {
                if self.secret.contains(k) {
                    format!("{k}={}", crate::model::secret::param_marker(k))
                } else {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{k}={text}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
