//! The playbook file as written: the serde shapes (and their JSON Schema)
//! that YAML is read into before validation.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A day of the week, for maintenance windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// When `apply` may run, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Days the window opens on (default: every day).
    pub days: Option<Vec<Day>>,
    /// Opening time, `HH:MM`.
    pub start: String,
    /// Closing time, `HH:MM` (before `start`: the window spans midnight).
    pub end: String,
    /// IANA time zone (default UTC).
    pub tz: Option<String>,
}

/// Who must approve a plan of this playbook before the server runs it, as
/// written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// Approvals a plan needs, each by an operate key other than the one
    /// that made it (1 to 10).
    pub count: u32,
}

/// The desired run state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Running (start if not).
    Started,
    /// Not running (stop if running).
    Stopped,
    /// Restart, always.
    Restarted,
    /// Reload if running, start if not.
    Reloaded,
}

/// The `service:` module as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unit name or template; a bare name gets `.service`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Desired run state.
    pub state: Option<ServiceState>,
    /// Desired enablement.
    pub enabled: Option<bool>,
    /// Desired mask.
    pub masked: Option<bool>,
}

/// The `maintenance:` module as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSpec {
    /// Set (true) or clear (false) the flag.
    pub enable: bool,
    /// Why (template); required to enable.
    pub reason: Option<String>,
    /// A unit (template); without it the whole host.
    #[schemars(with = "Option<String>")]
    pub unit: Option<Spanned<String>>,
}

/// Whether a unit file should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnitFileGoal {
    /// Written with the given content.
    Present,
    /// Stopped, disabled and removed.
    Absent,
}

/// The `unit:` module as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// Unit name (template); a bare name gets `.service`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The unit file's content, verbatim.
    pub content: Option<String>,
    /// A minijinja template file (relative to the playbook) rendered per host.
    pub template: Option<String>,
    /// present (default) or absent.
    pub state: Option<UnitFileGoal>,
}

/// Where a `unit:` step's file content comes from.
#[derive(Debug, Clone)]
pub enum UnitSource {
    /// Inline, verbatim.
    Content(String),
    /// Template id of a rendered template file.
    Template(usize),
    /// None (`state: absent`).
    Nothing,
}

/// `wait:` — what must hold after the operation before the step counts as done.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// The unit must be `active`.
    pub active: Option<bool>,
    /// An HTTP URL that must answer 2xx (template).
    pub http: Option<String>,
    /// `host:port` that must accept a TCP connection (template).
    pub tcp: Option<String>,
    /// Give up after this long (default 60s).
    pub timeout: Option<String>,
    /// Aggregated health (unit state, maintenance, http/tcp checks) at
    /// least this good before the next batch.
    pub health: Option<crate::model::health::Health>,
}

/// `serial:` — rolling batch size, a count or a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Serial {
    /// At most this many hosts per batch.
    Count(usize),
    /// At most this share of the step's hosts per batch (at least one).
    Percent(f64),
}

impl Serial {
    /// Batch size for a step of `n` hosts.
    pub fn batch_size(&self, n: usize) -> usize {
        match *self {
            Serial::Count(c) => c.max(1),
            Serial::Percent(p) => ((n as f64 * p / 100.0).floor() as usize).max(1),
        }
    }
}

impl JsonSchema for Serial {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Serial".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Rolling batch size: a host count (at least 1) or a percentage of the step's hosts such as \"25%\".",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^\\s*([0-9]+|[0-9]+(\\.[0-9]+)?\\s*%)\\s*$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Serial;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a host count such as 2 or a percentage such as \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Serial, E> {
                if n == 0 {
                    return Err(E::custom("serial must be at least 1"));
                }
                Ok(Serial::Count(n as usize))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Serial, E> {
                if n < 1 {
                    return Err(E::custom("serial must be at least 1"));
                }
                Ok(Serial::Count(n as usize))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Serial, E> {
                let s = s.trim();
                if let Some(p) = s.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(v) if v > 0.0 && v <= 100.0 => Ok(Serial::Percent(v)),
                        _ => Err(E::custom(format!(
                            "`{s}` is not a percentage between 0% and 100%"
                        ))),
                    }
                } else {
                    match s.parse::<usize>() {
                        Ok(n) if n > 0 => Ok(Serial::Count(n)),
                        _ => Err(E::custom(format!(
                            "`{s}` is not a host count or a percentage like \"25%\""
                        ))),
                    }
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `target:` — one selector or a list of them (their union).
#[derive(Debug, Clone)]
pub struct TargetSpec(pub Vec<String>);

impl JsonSchema for TargetSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A selector (hostname, `_all`, `_any`, `key:value`; `,` joins terms that must all match; `!` negates) or a list of selectors (their union).",
            "oneOf": [
                { "type": "string", "minLength": 1 },
                { "type": "array", "items": { "type": "string", "minLength": 1 }, "minItems": 1 }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a selector string or a list of selector strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<TargetSpec, E> {
                Ok(TargetSpec(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<TargetSpec, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                if v.is_empty() {
                    return Err(de::Error::custom("an empty target list selects nothing"));
                }
                Ok(TargetSpec(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One step as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique id, used by `needs` and in reports.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// Free text for humans.
    pub name: Option<String>,
    /// Hosts (default `_all`).
    #[schemars(with = "Option<TargetSpec>")]
    pub target: Option<Spanned<TargetSpec>>,
    /// Explicit dependencies; `[]` makes a root.
    #[schemars(with = "Option<Vec<String>>")]
    pub needs: Option<Spanned<Vec<String>>>,
    /// Per-host condition (minijinja expression).
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// Rolling batch size.
    pub serial: Option<Serial>,
    /// Abort the run when more than this share of the step's hosts fail.
    #[schemars(with = "Option<f64>", range(min = 0, max = 100))]
    pub max_fail_percentage: Option<Spanned<f64>>,
    /// Gate after the operation.
    pub wait: Option<WaitSpec>,
    /// Run even on hosts or units in maintenance.
    pub ignore_maintenance: Option<bool>,
    /// The service module.
    pub service: Option<ServiceSpec>,
    /// The maintenance module.
    pub maintenance: Option<MaintenanceSpec>,
    /// The unit (file) module.
    pub unit: Option<UnitSpec>,
    /// Call a module: `modules/NAME.yml` (composite) or `modules/NAME/`
    /// (script), searched beside the playbook, then in `--modules`.
    #[serde(rename = "use")]
    #[schemars(rename = "use", with = "Option<String>")]
    pub use_: Option<Spanned<String>>,
    /// Inside a module only: run this step only on the hosts that failed
    /// an earlier step of the same call (to leave them marked), with
    /// `{{ failed_step }}` the id of the step they failed at.
    pub on_failure: Option<bool>,
    /// Group the step's hosts by a label, written `labels.KEY`: with
    /// `max_unavailable`, at most that many hosts of one group are worked
    /// on or out of service at once, across every job.
    #[schemars(with = "Option<String>")]
    pub group_by: Option<Spanned<String>>,
    /// With `group_by`: hosts of one group that may be worked on or out
    /// of service (maintenance, failing health) at once.
    #[schemars(with = "Option<crate::model::playbook::limit::Amount>")]
    pub max_unavailable: Option<Spanned<crate::model::playbook::limit::Amount>>,
    /// With `group_by`: a batch starts only while every other host of its
    /// groups is healthy (maintenance counts as not).
    pub require_healthy: Option<bool>,
    /// The called module's parameters.
    #[serde(rename = "with")]
    #[schemars(rename = "with")]
    pub with: Option<BTreeMap<String, serde_json::Value>>,
}

/// How steps are ordered across hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A step finishes on every host before the steps after it start
    /// (Ansible's default): the runbook's order holds across the fleet.
    #[default]
    Linear,
    /// Each host runs the steps in order as fast as it can, independent of
    /// the other hosts (Ansible's `free`): for per-host work.
    Free,
}

/// The playbook file as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookFile {
    /// Human name of the runbook.
    pub name: String,
    /// linear (default) or free.
    pub strategy: Option<Strategy>,
    /// Free text.
    pub description: Option<String>,
    /// When apply may run.
    pub window: Option<WindowSpec>,
    /// Served as a runbook, it runs only as a plan approved by other keys
    /// (`POST /runbook/{name}/plan`, `/plan/{digest}/approve`, `/apply`).
    pub approval: Option<ApprovalSpec>,
    /// Parameters given at run time (`--param`, `--params-file`, a
    /// request's `params`), seen by templates as `params.NAME`.
    #[serde(default)]
    pub params: BTreeMap<String, crate::model::params::ParamSpec>,
    /// Template variables (`vars.*`).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Names of `vars` whose values are secret (strings or numbers of at
    /// least 4 characters): hosts receive them, but plans, saved plans,
    /// reports, journals and errors show `<secret NAME sha256:XXXXXXXX>`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub secret_vars: Vec<Spanned<String>>,
    /// The steps, in runbook order.
    pub steps: Vec<StepSpec>,
}
