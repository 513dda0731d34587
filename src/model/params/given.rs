//! The values a caller gives, before they meet a declaration: from
//! `--param`, a `--params-file`, a request's body or a saved plan, each
//! remembering where it came from so that an error points there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::error::{Error, Result};
use crate::model::yaml;

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
    pub(super) fn is_text(&self) -> bool {
        matches!(self, Origin::Flag)
    }

    /// An input error about parameter `name`, pointing where it was given.
    pub(super) fn error(&self, name: &str, message: String) -> Error {
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
    pub(super) fn how(self, name: &str) -> String {
        match self {
            Hint::Cli => format!("give it with `--param {name}=VALUE` or in `--params-file`"),
            Hint::Request => format!("give it in the body: {{\"params\": {{\"{name}\": ...}}}}"),
        }
    }
}

pub(super) struct Given {
    pub(super) value: Value,
    pub(super) origin: Origin,
}

/// The values a caller gave, by name, before they are checked against a
/// playbook's declaration (`Declared::bind`).
#[derive(Default)]
pub struct ParamValues {
    pub(super) given: BTreeMap<String, Given>,
    /// Fill required parameters without a value with a sample of their
    /// type: to check a playbook, never to run it.
    pub(super) samples: bool,
    pub(super) hint: Hint,
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

    /// The values as a request's `params` carries them (`apply --server`).
    pub fn request_values(&self) -> Map<String, Value> {
        self.given
            .iter()
            .map(|(k, g)| (k.clone(), g.value.clone()))
            .collect()
    }

    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
    }
}
