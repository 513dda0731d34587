//! Playbook parameters: what a runbook takes at run time (`params:`), the
//! values a caller gives (`--param`, `--params-file`, a request's body,
//! a saved plan), and the values bound to them. Values are typed and
//! checked against the declaration before anything runs; in templates they
//! are only ever data (`{{ params.x }}` renders the value, never evaluates
//! it). Secret parameters are hidden like `secret_vars`, and left out of
//! the digest and the record, since a hash of a weak secret lets anyone
//! check guesses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::error::{suggest, Error, Position, Result};
use crate::model::target::Selector;
use crate::model::unit::UnitName;
use crate::model::yaml;

/// What playbook files are called in errors.
const PLAYBOOK: &str = "playbook";

/// The longest value a parameter takes, in bytes.
const MAX_VALUE: usize = 4096;

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

/// One validated declaration.
#[derive(Debug, Clone)]
struct Decl {
    name: String,
    spec: ParamSpec,
    /// `pattern`, anchored at both ends.
    pattern: Option<regex::Regex>,
    /// `default`, checked against the type.
    default: Option<Value>,
    /// Where the declaration is, for "missing" errors.
    position: Option<Position>,
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

/// A secret value must be long enough to be hidden reliably.
fn check_secret(v: &Value) -> std::result::Result<(), String> {
    let text = crate::model::secret::rendered(v)?;
    let min = crate::model::secret::MIN_SECRET_CHARS;
    match text.chars().count() {
        n if n > 0 && n < min => Err(format!(
            "is shorter than {min} characters: a secret that short cannot be redacted reliably (the same characters occur in ordinary output)"
        )),
        _ => Ok(()),
    }
}

impl Decl {
    /// How a value is quoted in a message: never a secret's.
    fn shown(&self, v: &str) -> String {
        if self.spec.secret {
            return "the value".into();
        }
        let mut s: String = v.chars().take(80).flat_map(char::escape_default).collect();
        if v.chars().count() > 80 {
            s.push_str("...");
        }
        format!("`{s}`")
    }

    /// The value as this parameter's type: checked, and in its canonical
    /// form (a unit name with its suffix). `text` is a value typed on a
    /// command line, where `5` and `true` arrive as text.
    fn coerce(&self, v: &Value, text: bool) -> std::result::Result<Value, String> {
        let kind = self.spec.kind;
        let s = match (kind, v) {
            (ParamType::Integer, Value::Number(n)) => {
                return n.as_i64().map(Value::from).ok_or_else(|| {
                    format!("is `integer`, and {n} is not a whole number that fits 64 bits")
                })
            }
            (ParamType::Integer, Value::String(s)) if text => {
                return s.trim().parse::<i64>().map(Value::from).map_err(|_| {
                    format!("is `integer`, and {} is not a whole number", self.shown(s))
                })
            }
            (ParamType::Boolean, Value::Bool(b)) => return Ok(Value::Bool(*b)),
            (ParamType::Boolean, Value::String(s)) if text => {
                return match s.trim() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(format!(
                        "is `boolean`: `true` or `false`, not {}",
                        self.shown(s)
                    )),
                }
            }
            (ParamType::Integer | ParamType::Boolean, other) => {
                return Err(format!("is `{}`, not {}", kind.as_str(), json_kind(other)))
            }
            (_, Value::String(s)) => s,
            (_, Value::Number(_)) => {
                return Err(format!(
                    "is `{}`, not a number (quote it to give it as text)",
                    kind.as_str()
                ))
            }
            (_, other) => return Err(format!("is `{}`, not {}", kind.as_str(), json_kind(other))),
        };
        if s.len() > MAX_VALUE {
            return Err(format!("is longer than {MAX_VALUE} bytes"));
        }
        // A value is one line: a newline in a value rendered into a unit
        // file would add a directive of the caller's choosing.
        if s.chars().any(char::is_control) {
            return Err(
                "holds a control character (a newline, a tab...); a value is one line of text"
                    .into(),
            );
        }
        match kind {
            ParamType::String => match &self.pattern {
                Some(p) if !p.is_match(s) => Err(format!(
                    "must match `{}`, and {} does not",
                    self.spec.pattern.as_deref().unwrap_or_default(),
                    self.shown(s)
                )),
                _ => Ok(Value::String(s.clone())),
            },
            ParamType::Duration => crate::model::parse_duration(s)
                .map(|_| Value::String(s.trim().to_string()))
                .map_err(|m| format!("is `duration`: {m}")),
            ParamType::Selector => Selector::parse(s)
                .map(|sel| Value::String(sel.to_string()))
                .map_err(|m| format!("is `selector`: {m}")),
            ParamType::Unit => UnitName::parse(s.trim())
                .map(|u| Value::String(u.as_str().to_string()))
                .map_err(|m| format!("is `unit`: {m}")),
            ParamType::Enum => {
                let values = self.spec.values.as_deref().unwrap_or_default();
                if values.iter().any(|x| x == s) {
                    Ok(Value::String(s.clone()))
                } else {
                    let sugg = suggest(s, values.iter().map(String::as_str))
                        .map(|x| format!(", did you mean `{x}`?"))
                        .unwrap_or_default();
                    Err(format!(
                        "is one of {}, not {}{sugg}",
                        values
                            .iter()
                            .map(|x| format!("`{x}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.shown(s)
                    ))
                }
            }
            ParamType::Integer | ParamType::Boolean => Err("internal: not text".into()),
        }
    }

    /// A value of the type, for checking a playbook whose required
    /// parameters were not given (a server loading its runbooks).
    fn sample(&self) -> Value {
        match self.spec.kind {
            ParamType::String => Value::from("sample"),
            ParamType::Integer => Value::from(0),
            ParamType::Boolean => Value::Bool(false),
            ParamType::Duration => Value::from("1s"),
            ParamType::Selector => Value::from("_all"),
            ParamType::Unit => Value::from("sample.service"),
            ParamType::Enum => self
                .spec
                .values
                .as_ref()
                .and_then(|v| v.first())
                .map(|s| Value::from(s.as_str()))
                .unwrap_or(Value::Null),
        }
    }
}

/// What a JSON value is, in words.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Where a given value came from: errors point there.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `--param NAME=VALUE`.
    Flag,
    /// `--params-file FILE`: its path and text, for positions.
    File(Arc<(PathBuf, String)>),
    /// A request's `params`.
    Request,
    /// A saved plan's recorded values.
    Saved(PathBuf),
}

impl Origin {
    /// Whether values arrive as text (`--param n=5`).
    fn is_text(&self) -> bool {
        matches!(self, Origin::Flag)
    }

    /// An input error about parameter `name`, pointing where it was given.
    fn error(&self, name: &str, message: String) -> Error {
        match self {
            Origin::Flag => Error::invalid("--param", name.to_string(), message, None),
            Origin::File(f) => Error::invalid(
                "params file",
                name.to_string(),
                message,
                yaml::locate(&f.1, &f.0, &[name]),
            ),
            Origin::Request => Error::invalid("request", format!("params.{name}"), message, None),
            Origin::Saved(p) => Error::invalid(
                "saved plan",
                format!("params.{name}"),
                format!("{message} (recorded in {})", p.display()),
                None,
            ),
        }
    }
}

/// How a caller gives a parameter, for "missing" errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hint {
    /// The command line.
    #[default]
    Cli,
    /// A request's body.
    Request,
}

impl Hint {
    fn how(self, name: &str) -> String {
        match self {
            Hint::Cli => format!("give it with `--param {name}=VALUE` or in `--params-file`"),
            Hint::Request => format!("give it in the body: {{\"params\": {{\"{name}\": ...}}}}"),
        }
    }
}

struct Given {
    value: Value,
    origin: Origin,
}

/// The values a caller gave, by name, before they are checked against a
/// playbook's declaration ([`Declared::bind`]).
#[derive(Default)]
pub struct ParamValues {
    given: BTreeMap<String, Given>,
    /// Fill required parameters without a value with a sample of their
    /// type: to check a playbook, never to run it.
    samples: bool,
    hint: Hint,
}

// The values may be secret.
impl std::fmt::Debug for ParamValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.given.keys()).finish()
    }
}

impl ParamValues {
    /// No values: defaults only; a required parameter is missing.
    pub fn none() -> Self {
        ParamValues::default()
    }

    /// No values, required parameters filled with samples of their type:
    /// to validate a playbook that is run later with real values (a
    /// server's runbooks). Never run a playbook bound this way.
    pub fn samples() -> Self {
        ParamValues {
            samples: true,
            ..ParamValues::default()
        }
    }

    /// The values of a request's `params`.
    pub fn from_request(values: BTreeMap<String, Value>) -> Self {
        ParamValues {
            given: values
                .into_iter()
                .map(|(k, value)| {
                    let origin = Origin::Request;
                    (k, Given { value, origin })
                })
                .collect(),
            samples: false,
            hint: Hint::Request,
        }
    }

    /// The values a saved plan recorded.
    pub fn saved(values: &Map<String, Value>, plan: &Path) -> Self {
        let origin = Origin::Saved(plan.to_path_buf());
        ParamValues {
            given: values
                .iter()
                .map(|(k, v)| {
                    let g = Given {
                        value: v.clone(),
                        origin: origin.clone(),
                    };
                    (k.clone(), g)
                })
                .collect(),
            ..ParamValues::default()
        }
    }

    /// Read a `--params-file`: a YAML (or JSON) mapping of names to values.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = yaml::read_bounded(path, "params file")?;
        let map: BTreeMap<String, Value> = yaml::parse(&text, path, "params file")?;
        let origin = Origin::File(Arc::new((path.to_path_buf(), text)));
        Ok(ParamValues {
            given: map
                .into_iter()
                .map(|(k, value)| {
                    let origin = origin.clone();
                    (k, Given { value, origin })
                })
                .collect(),
            ..ParamValues::default()
        })
    }

    /// Add one `--param NAME=VALUE`; it wins over a `--params-file`'s
    /// value, and naming a parameter twice on the command line is an error.
    pub fn flag(&mut self, raw: &str) -> Result<()> {
        let Some((name, value)) = raw.split_once('=') else {
            return Err(Error::Usage(format!(
                "--param `{}`: write NAME=VALUE",
                raw.escape_default()
            )));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::Usage(
                "--param: the name before `=` is empty; write NAME=VALUE".into(),
            ));
        }
        if self
            .given
            .get(name)
            .is_some_and(|g| matches!(g.origin, Origin::Flag))
        {
            return Err(Error::Usage(format!(
                "--param {name} is given twice; give each parameter once"
            )));
        }
        self.given.insert(
            name.to_string(),
            Given {
                value: Value::String(value.to_string()),
                origin: Origin::Flag,
            },
        );
        Ok(())
    }

    /// These values, with `over`'s in place of any of the same name.
    pub fn overlaid(mut self, over: ParamValues) -> Self {
        self.given.extend(over.given);
        self.samples |= over.samples;
        self
    }

    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
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
mod tests {
    use super::*;

    fn declared(yaml_params: &str) -> Result<Declared> {
        let text = format!("params:\n{yaml_params}");
        #[derive(Deserialize)]
        struct F {
            params: BTreeMap<String, ParamSpec>,
        }
        let f: F = yaml::parse(&text, Path::new("pb.yml"), "playbook").unwrap();
        Declared::new(&f.params, &text, Path::new("pb.yml"))
    }

    fn flags(pairs: &[&str]) -> ParamValues {
        let mut v = ParamValues::none();
        for p in pairs {
            v.flag(p).unwrap();
        }
        v
    }

    const ALL: &str = "  unit: { description: u, type: unit }\n  n: { description: n, type: integer, default: 3 }\n  on: { description: b, type: boolean, default: false }\n  wait: { description: w, type: duration, default: 30s }\n  hosts: { description: h, type: selector, default: _all }\n  mode: { description: m, type: enum, values: [fast, safe], default: safe }\n  ticket: { description: t, pattern: \"[A-Z]+-[0-9]+\", default: OPS-1 }\n  token: { description: s, secret: true }\n";

    #[test]
    fn typed_values_bind_in_their_canonical_form() {
        let d = declared(ALL).unwrap();
        let p = d
            .bind(&flags(&[
                "unit=demo-web",
                "n=7",
                "on=true",
                "wait=1m",
                "hosts=role:web,!web-3",
                "mode=fast",
                "ticket=OPS-42",
                "token=s3cr3t-value",
            ]))
            .unwrap();
        let v = p.values();
        assert_eq!(v["unit"], "demo-web.service");
        assert_eq!(v["n"], 7);
        assert_eq!(v["on"], true);
        assert_eq!(v["wait"], "1m");
        assert_eq!(v["hosts"], "role:web,!web-3");
        assert_eq!(v["mode"], "fast");
        assert_eq!(v["token"], "s3cr3t-value");
        // Defaults fill what is not given.
        let p = d.bind(&flags(&["unit=x", "token=abcdefgh"])).unwrap();
        assert_eq!(p.values()["n"], 3);
        assert_eq!(p.values()["mode"], "safe");
    }

    #[test]
    fn bad_values_name_the_parameter_and_suggest() {
        let d = declared(ALL).unwrap();
        let err = |given: &[&str]| d.bind(&flags(given)).map(|_| ()).unwrap_err().details();
        let base = ["unit=x", "token=abcdefgh"];
        let with = |extra: &str| {
            let mut v = base.to_vec();
            v.push(extra);
            err(&v)
        };
        let e = with("n=seven");
        assert!(e.starts_with("n: `n` is `integer`"), "{e}");
        let e = with("on=yes");
        assert!(e.contains("`true` or `false`"), "{e}");
        let e = with("wait=soon");
        assert!(e.contains("is `duration`"), "{e}");
        let e = with("hosts=!_all");
        assert!(e.contains("is `selector`"), "{e}");
        let e = with("mode=fats");
        assert!(e.contains("did you mean `fast`?"), "{e}");
        let e = with("ticket=ops 1");
        assert!(e.contains("must match"), "{e}");
        let e = with("unti=x");
        assert!(e.contains("unknown parameter `unti`"), "{e}");
        assert!(e.contains("did you mean `unit`?"), "{e}");
        let e = err(&["unit=x"]);
        assert!(e.contains("missing required parameter `token`"), "{e}");
        assert!(e.contains("pb.yml line 9"), "{e}");
        let e = with("ticket=A-1\nExecStartPre=/bin/evil");
        assert!(e.contains("control character"), "{e}");
        // A secret's value is never quoted, even when it is refused.
        let e = err(&["unit=x", "token=abc"]);
        assert!(
            e.contains("cannot be redacted reliably") && !e.contains("abc`"),
            "{e}"
        );
        let d = declared("  token: { description: s, secret: true, pattern: \"x+\" }\n").unwrap();
        let e = d.bind(&flags(&["token=yyyyyyyy"])).unwrap_err().details();
        assert!(e.contains("must match `x+`") && !e.contains("yyyy"), "{e}");
    }

    #[test]
    fn declarations_are_checked_where_they_are_written() {
        for (bad, want) in [
            (
                "  n: { description: d, type: integer, default: many }\n",
                "the default",
            ),
            ("  m: { description: d, type: enum }\n", "needs `values`"),
            (
                "  m: { description: d, values: [a] }\n",
                "belongs to `type: enum`",
            ),
            (
                "  m: { description: d, pattern: \"(\" }\n",
                "not a regular expression",
            ),
            (
                "  s: { description: d, secret: true, default: abcdefgh }\n",
                "takes no default",
            ),
            (
                "  s: { description: d, type: integer, secret: true }\n",
                "is `type: string`",
            ),
            ("  \"a-b\": { description: d }\n", "not a parameter name"),
        ] {
            let e = declared(bad).unwrap_err().details();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.contains("pb.yml line 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn digests_and_records_leave_secrets_out() {
        let d = declared(
            "  a: { description: a, default: x }\n  s: { description: s, secret: true }\n",
        )
        .unwrap();
        let one = d.bind(&flags(&["s=first-secret"])).unwrap();
        let two = d.bind(&flags(&["s=other-secret"])).unwrap();
        assert_eq!(one.digest, two.digest, "a secret changes no digest");
        assert_eq!(one.record(), two.record());
        assert_eq!(
            serde_json::Value::Object(one.record()),
            serde_json::json!({"a": "x"})
        );
        // The digest is of the canonical JSON of the non-secret values.
        assert_eq!(one.digest, crate::model::digest(br#"{"a":"x"}"#));
        let three = d.bind(&flags(&["a=y", "s=first-secret"])).unwrap();
        assert_ne!(one.digest, three.digest);
        assert!(!format!("{one:?}").contains("first-secret"));
        assert_eq!(Params::default().digest, crate::model::digest(b"{}"));
        assert_eq!(one.shown(), ["a=x", "s=<secret params.s>"]);
    }

    #[test]
    fn files_point_at_the_line_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yml");
        std::fs::write(&f, "n: 4\nmode: fats\n").unwrap();
        let d = declared("  n: { description: n, type: integer }\n  mode: { description: m, type: enum, values: [fast, safe] }\n").unwrap();
        let e = d
            .bind(&ParamValues::from_file(&f).unwrap())
            .unwrap_err()
            .details();
        assert!(e.starts_with("mode: `mode` is one of"), "{e}");
        assert!(e.contains("p.yml line 2"), "{e}");
        let v = ParamValues::from_file(&f)
            .unwrap()
            .overlaid(flags(&["mode=fast"]));
        let p = d.bind(&v).unwrap();
        assert_eq!(p.values()["n"], 4);
        // A number in a file is a number; text is not an integer there.
        std::fs::write(&f, "n: \"4\"\nmode: fast\n").unwrap();
        let e = d
            .bind(&ParamValues::from_file(&f).unwrap())
            .unwrap_err()
            .details();
        assert!(e.contains("not text"), "{e}");
        let mut v = flags(&["n=1"]);
        assert!(v.flag("n=2").is_err());
        assert!(v.flag("novalue").is_err());
    }

    #[test]
    fn samples_fill_required_parameters_for_checking() {
        let d = declared(ALL).unwrap();
        let p = d.bind(&ParamValues::samples()).unwrap();
        assert_eq!(p.values()["unit"], "sample.service");
        assert_eq!(p.values()["n"], 3, "defaults still win");
    }
}
