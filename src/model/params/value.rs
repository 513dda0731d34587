//! The typing rules of parameters: what each type accepts, the canonical
//! form it binds to, how a value is quoted in an error (never a secret's),
//! and the samples that stand in for values not given when only checking.

use serde_json::Value;

use super::{ParamSpec, ParamType};
use crate::model::error::{suggest, Position};
use crate::model::target::Selector;
use crate::model::unit::UnitName;

/// The longest value a parameter takes, in bytes.
const MAX_VALUE: usize = 4096;

/// One validated declaration.
#[derive(Debug, Clone)]
pub(super) struct Decl {
    pub(super) name: String,
    pub(super) spec: ParamSpec,
    /// `pattern`, anchored at both ends.
    pub(super) pattern: Option<regex::Regex>,
    /// `default`, checked against the type.
    pub(super) default: Option<Value>,
    /// Where the declaration is, for "missing" errors.
    pub(super) position: Option<Position>,
}

/// A secret value must be long enough to be hidden reliably.
pub(super) fn check_secret(v: &Value) -> std::result::Result<(), String> {
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
    pub(super) fn coerce(&self, v: &Value, text: bool) -> std::result::Result<Value, String> {
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
    pub(super) fn sample(&self) -> Value {
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
