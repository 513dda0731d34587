//! The playbook: an ordered runbook of service operations, parsed strictly
//! and validated (ids, targets, unit names, templates) before anything runs.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::model::error::{suggest, Error, Position, Result};
use crate::model::secret::{self, Secrets};
use crate::model::target::Selector;
use crate::model::template::Templates;
use crate::model::yaml;

const WHAT: &str = "playbook";

/// Largest unit file or template drover writes (1 MiB).
const MAX_UNIT_FILE: usize = 1 << 20;

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

/// A validated wait gate.
#[derive(Debug, Clone, Serialize)]
pub struct Wait {
    /// Require ActiveState=active.
    pub active: bool,
    /// Template id of an HTTP URL to probe.
    pub http: Option<usize>,
    /// Template id of a `host:port` to probe.
    pub tcp: Option<usize>,
    /// Deadline for the gate.
    pub timeout: Duration,
    /// Required aggregated health level.
    pub health: Option<crate::model::health::Health>,
}

/// What a step does on each host.
#[derive(Debug, Clone)]
pub enum Module {
    /// Drive a unit's run state, enablement and mask.
    Service {
        /// Template id of the unit name.
        name: usize,
        /// Where the name is written, for per-host template errors.
        name_position: Position,
        /// Desired run state.
        state: Option<ServiceState>,
        /// Desired enablement.
        enabled: Option<bool>,
        /// Desired mask.
        masked: Option<bool>,
    },
    /// Set or clear a maintenance flag on the host or a unit.
    Maintenance {
        /// On or off.
        enable: bool,
        /// Template id of the reason.
        reason: Option<usize>,
        /// Template id of the unit name; None: the whole host.
        unit: Option<usize>,
        /// Where the step is written.
        name_position: Position,
    },
    /// Register (write) or deregister (remove) a unit file.
    Unit {
        /// Template id of the unit name.
        name: usize,
        /// Where the name is written.
        name_position: Position,
        /// The content.
        source: UnitSource,
        /// present or absent.
        state: UnitFileGoal,
    },
    /// Run a script module's program on the host.
    Script(Arc<crate::model::module::ScriptModule>),
}

/// A module call with `serial`: its hosts go through all the module's
/// steps batch by batch (batch 1 runs every step, then batch 2), and
/// `max_fail_percentage` counts the hosts that failed any of them.
#[derive(Debug, Clone)]
pub struct Group {
    /// The call's id.
    pub call: String,
    /// Rolling batch size over the call's hosts.
    pub serial: Serial,
    /// Abort threshold in percent, per batch over the call's hosts.
    pub max_fail_percentage: f64,
    /// The steps the call expanded into, in file order.
    pub steps: Vec<usize>,
}

impl Module {
    /// The module's name as a playbook writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Module::Service { .. } => "service",
            Module::Maintenance { .. } => "maintenance",
            Module::Unit { .. } => "unit",
            Module::Script(_) => "script",
        }
    }
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Position in the playbook's step list (module calls expanded).
    pub index: usize,
    /// Position in the file it is written in (the playbook, or a module),
    /// for field paths in errors.
    pub file_index: usize,
    /// Unique id.
    pub id: String,
    /// Where the id is written, for errors.
    pub position: Position,
    /// Union of these selectors.
    pub targets: Vec<Selector>,
    /// Explicit dependencies as written (None: the previous step).
    pub needs: Option<Vec<String>>,
    /// Template id of the `when` expression.
    pub when: Option<usize>,
    /// Where `when` is written.
    pub when_position: Option<Position>,
    /// Rolling batch size.
    pub serial: Option<Serial>,
    /// Abort threshold in percent (default 100: never abort).
    pub max_fail_percentage: f64,
    /// Gate.
    pub wait: Option<Wait>,
    /// Ignore maintenance.
    pub ignore_maintenance: bool,
    /// The operation.
    pub module: Module,
    /// The module call with `serial` this step belongs to, if any.
    pub group: Option<Arc<Group>>,
    /// An `on_failure` step of this module call: it runs only on hosts that
    /// failed one of the call's steps.
    pub on_failure: Option<String>,
    /// For a module's step: where the module was called from, added to
    /// errors found later (per-host templates, targets).
    pub called_from: Option<String>,
}

/// A maintenance window, validated.
#[derive(Debug, Clone)]
pub struct Window {
    /// Allowed days (empty: all).
    pub days: Vec<Day>,
    /// Opening minute of the day.
    pub start_minute: u32,
    /// Closing minute of the day.
    pub end_minute: u32,
    /// Time zone.
    pub tz: chrono_tz::Tz,
}

/// A validated playbook, ready to plan.
#[derive(Debug)]
pub struct Playbook {
    /// Where it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its window.
    pub window: Option<Window>,
    /// Cross-host ordering.
    pub strategy: Strategy,
    /// Steps in file order.
    pub steps: Vec<Step>,
    /// Compiled templates, shared by all hosts.
    pub templates: Templates,
    /// SHA-256 of the file.
    pub digest: String,
    /// Files the playbook read besides itself (unit templates), with their
    /// digests: what a saved plan must also find unchanged.
    pub inputs: Vec<crate::model::Input>,
    /// The values of `secret_vars`, hidden in everything drover shows.
    pub secrets: Secrets,
}

impl Playbook {
    /// Read, parse and validate a playbook file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_modules(path, None)
    }

    /// Read a playbook whose module calls may also find modules in `modules`
    /// (`--modules DIR`).
    pub fn load_with_modules(path: &Path, modules: Option<&Path>) -> Result<Self> {
        let text = yaml::read_bounded(path, WHAT)?;
        Self::from_str_with_modules(&text, path, modules)
    }

    /// Parse and validate playbook text.
    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        Self::from_str_with_modules(text, path, None)
    }

    /// Parse and validate playbook text, with `--modules DIR`.
    pub fn from_str_with_modules(text: &str, path: &Path, modules: Option<&Path>) -> Result<Self> {
        let file: PlaybookFile = yaml::parse(text, path, WHAT)?;
        let starts = line_starts(text);
        let src = Source {
            text,
            path,
            starts: &starts,
        };
        if file.steps.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "steps",
                "no steps: a playbook needs at least one",
                yaml::locate(text, path, &["steps"]),
            ));
        }
        let secrets = secrets_of(&file, src)?;
        let mut templates = Templates::new(&file.vars)?;
        let window = file
            .window
            .as_ref()
            .map(parse_window)
            .transpose()
            .map_err(|e| {
                e.locate_with(|field| {
                    let segs: Vec<&str> = field.split('.').collect();
                    yaml::locate(text, path, &segs)
                })
            })?;
        let mut inputs = Vec::new();
        let search = module_search_path(path, modules);
        let mut loader = Loader {
            templates: &mut templates,
            inputs: &mut inputs,
            search: &search,
            steps: Vec::new(),
            mfp_given: Vec::new(),
            aliases: std::collections::HashMap::new(),
            chain: Vec::new(),
        };
        loader.list(src, &file.steps, None, None)?;
        let (steps, mfp_given) = loader.finish()?;
        let strategy = file.strategy.unwrap_or_default();
        check_strategy(strategy, &steps, &mfp_given)?;
        Ok(Playbook {
            path: path.to_path_buf(),
            name: file.name,
            window,
            strategy,
            steps,
            templates,
            digest: crate::model::digest(text.as_bytes()),
            inputs,
            secrets,
        })
    }

    /// Find a step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// The text being parsed and its name, for positions in errors.
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
    /// Byte offset of each line's start: every step keeps a position with
    /// its line, found here without rescanning the file per step.
    starts: &'a [usize],
}

impl Source<'_> {
    fn pos(&self, l: serde_saphyr::Location) -> Position {
        let line_text = usize::try_from(l.line())
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| {
                let start = *self.starts.get(n)?;
                let end = self.starts.get(n + 1).copied().unwrap_or(self.text.len());
                self.text.get(start..end)
            })
            .map(|t| t.trim_end_matches(['\n', '\r']));
        Position::on_line(self.path, line_text, l.line(), l.column())
    }
}

/// Byte offsets where the lines of `text` start.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < text.len())
        .collect()
}

/// One step's spec validated into a [`Step`], field by field.
struct StepParser<'a, 't> {
    src: Source<'a>,
    index: usize,
    /// Position of the step in its own file (playbook or module), for
    /// field paths.
    file_index: usize,
    /// The script module a `use:` step runs.
    script: Option<Arc<crate::model::module::ScriptModule>>,
    spec: &'a StepSpec,
    id: &'a str,
    position: Position,
    templates: &'t mut Templates,
    inputs: &'t mut Vec<crate::model::Input>,
}

impl StepParser<'_, '_> {
    fn field(&self, f: &str) -> String {
        format!("steps[{}].{f}", self.file_index)
    }

    /// An error at `at` naming the step.
    fn invalid(&self, f: &str, message: String, at: Position) -> Error {
        Error::invalid(
            WHAT,
            self.field(f),
            format!("step `{}`: {message}", self.id),
            Some(at),
        )
    }

    fn parse(mut self, seen: &mut HashSet<String>) -> Result<Step> {
        self.check_id(seen)?;
        let targets = self.targets()?;
        let when = self.when()?;
        let max_fail_percentage = self.max_fail_percentage()?;
        let wait = self.wait()?;
        let module = self.module()?;
        let spec = self.spec;
        Ok(Step {
            index: self.index,
            file_index: self.file_index,
            id: self.id.to_string(),
            position: self.position,
            targets,
            needs: spec.needs.as_ref().map(|n| n.value.clone()),
            when,
            when_position: spec.when.as_ref().map(|w| self.src.pos(w.referenced)),
            serial: spec.serial,
            max_fail_percentage,
            wait,
            ignore_maintenance: spec.ignore_maintenance.unwrap_or(false),
            module,
            group: None,
            on_failure: None,
            called_from: None,
        })
    }

    fn check_id(&self, seen: &mut HashSet<String>) -> Result<()> {
        let id = self.id;
        if let Err(m) = crate::model::inventory::validate_name(id) {
            return Err(Error::invalid(
                WHAT,
                self.field("id"),
                m,
                Some(self.position.clone()),
            ));
        }
        if !seen.insert(id.to_string()) {
            return Err(Error::invalid(
                WHAT,
                self.field("id"),
                format!("duplicate step id `{id}`; step ids must be unique"),
                Some(self.position.clone()),
            ));
        }
        Ok(())
    }

    /// The union of the step's selectors (`_all` without a target).
    fn targets(&self) -> Result<Vec<Selector>> {
        let Some(t) = &self.spec.target else {
            return Ok(vec![Selector::parse("_all").map_err(Error::Internal)?]);
        };
        t.value
            .0
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                Selector::parse(raw).map_err(|m| {
                    let f = if t.value.0.len() > 1 {
                        format!("target[{i}]")
                    } else {
                        "target".to_string()
                    };
                    self.invalid(&f, m, self.src.pos(t.referenced))
                })
            })
            .collect()
    }

    fn when(&mut self) -> Result<Option<usize>> {
        let Some(w) = &self.spec.when else {
            return Ok(None);
        };
        let at = self.src.pos(w.referenced);
        match self.templates.add_expression(&w.value) {
            Ok(t) => Ok(Some(t)),
            Err(m) => Err(self.invalid("when", m, at)),
        }
    }

    fn max_fail_percentage(&self) -> Result<f64> {
        match &self.spec.max_fail_percentage {
            Some(m) if !(0.0..=100.0).contains(&m.value) => Err(Error::invalid(
                WHAT,
                self.field("max_fail_percentage"),
                format!("{} is not between 0 and 100", m.value),
                Some(self.src.pos(m.referenced)),
            )),
            Some(m) => Ok(m.value),
            None => Ok(100.0),
        }
    }

    fn wait(&mut self) -> Result<Option<Wait>> {
        let Some(w) = &self.spec.wait else {
            return Ok(None);
        };
        let mut probe = |f: &str, raw: Option<&str>| -> Result<Option<usize>> {
            match raw.map(|t| self.templates.add_string(t)).transpose() {
                Ok(t) => Ok(t),
                Err(m) => Err(Error::invalid(
                    WHAT,
                    format!("steps[{}].{f}", self.file_index),
                    format!("step `{}`: {m}", self.id),
                    Some(self.position.clone()),
                )),
            }
        };
        let http = probe("wait.http", w.http.as_deref())?;
        let tcp = probe("wait.tcp", w.tcp.as_deref())?;
        let timeout = match &w.timeout {
            Some(t) => self
                .templates
                .render_static(t)
                .and_then(|t| crate::model::parse_duration(&t))
                .map_err(|m| {
                    let at =
                        yaml::locate(self.src.text, self.src.path, &["steps", self.id, "timeout"])
                            .unwrap_or_else(|| self.position.clone());
                    Error::invalid(WHAT, self.field("wait.timeout"), m, Some(at))
                })?,
            None => Duration::from_secs(60),
        };
        Ok(Some(Wait {
            active: w.active.unwrap_or(false),
            http,
            tcp,
            timeout,
            health: w.health,
        }))
    }

    /// Exactly one of `service:`, `maintenance:`, `unit:`.
    fn module(&mut self) -> Result<Module> {
        let spec = self.spec;
        let n_modules = spec.service.is_some() as u8
            + spec.maintenance.is_some() as u8
            + spec.unit.is_some() as u8
            + spec.use_.is_some() as u8;
        let whole_step = |message: String| {
            Error::invalid(
                WHAT,
                format!("steps[{}]", self.file_index),
                message,
                Some(self.position.clone()),
            )
        };
        if n_modules > 1 {
            return Err(whole_step(format!("step `{}` has several modules; use one of `service:`, `maintenance:`, `unit:`, `use:` per step", self.id)));
        }
        if let Some(script) = &self.script {
            return Ok(Module::Script(script.clone()));
        }
        match &spec.service {
            Some(svc) => self.service(svc),
            None => match (&spec.maintenance, &spec.unit) {
                (Some(m), _) => self.maintenance(m),
                (None, Some(u)) => self.unit(u),
                (None, None) => Err(whole_step(format!(
                    "step `{}` has no module; add `service:`, `maintenance:`, `unit:` or `use:`",
                    self.id
                ))),
            },
        }
    }

    fn maintenance(&mut self, m: &MaintenanceSpec) -> Result<Module> {
        let reason = match m.reason.as_deref() {
            Some(r) if !r.trim().is_empty() => match self.templates.add_string(r) {
                Ok(t) => Some(t),
                Err(e) => return Err(self.invalid("maintenance.reason", e, self.position.clone())),
            },
            _ if m.enable => {
                return Err(self.invalid(
                    "maintenance.reason",
                    "enabling maintenance needs a `reason` (it is shown to everyone)".into(),
                    self.position.clone(),
                ))
            }
            _ => None,
        };
        let (unit, name_position) = match &m.unit {
            Some(u) => {
                let at = self.src.pos(u.referenced);
                match self.templates.add_unit_name(&u.value) {
                    Ok(t) => (Some(t), at),
                    Err(e) => return Err(self.invalid("maintenance.unit", e, at)),
                }
            }
            None => (None, self.position.clone()),
        };
        Ok(Module::Maintenance {
            enable: m.enable,
            reason,
            unit,
            name_position,
        })
    }

    fn unit(&mut self, u: &UnitSpec) -> Result<Module> {
        let at = self.src.pos(u.name.referenced);
        let name = match self.templates.add_unit_name(&u.name.value) {
            Ok(n) => n,
            Err(e) => return Err(self.invalid("unit.name", e, at)),
        };
        let state = u.state.unwrap_or(UnitFileGoal::Present);
        let fail = |f: &str, m: &str| Err(self.invalid(f, m.to_string(), at.clone()));
        let source = match (state, &u.content, &u.template) {
            (_, Some(_), Some(_)) => return fail("unit", "give `content` or `template`, not both"),
            (UnitFileGoal::Absent, None, None) => UnitSource::Nothing,
            (UnitFileGoal::Absent, ..) => {
                return fail(
                    "unit",
                    "`state: absent` removes the file; drop `content`/`template`",
                )
            }
            (UnitFileGoal::Present, None, None) => {
                return fail("unit", "registering a unit needs `content` or `template`")
            }
            (UnitFileGoal::Present, Some(c), None) => {
                if c.len() > MAX_UNIT_FILE {
                    return fail("unit.content", "content is larger than 1 MiB");
                }
                UnitSource::Content(c.clone())
            }
            (UnitFileGoal::Present, None, Some(t)) => self.unit_template(t, &at)?,
        };
        Ok(Module::Unit {
            name,
            name_position: at,
            source,
            state,
        })
    }

    /// A unit template file, beside the playbook. It is rendered into a
    /// file under /etc/systemd/system as root, so it must come from the
    /// playbook's own directory (a reviewed runbook cannot pull in
    /// `/etc/shadow` or another user's files through `../`), and reading it
    /// is bounded (`/dev/zero` or a FIFO must not hang or exhaust memory).
    fn unit_template(&mut self, t: &str, at: &Position) -> Result<UnitSource> {
        let refuse = |message: String| Err(self.invalid("unit.template", message, at.clone()));
        if Path::new(t).is_absolute() {
            return refuse(format!(
                "template `{}` is an absolute path; name a file relative to the playbook's directory",
                t.escape_default()
            ));
        }
        let dir = match self.src.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file = dir.join(t);
        let (dir_real, file_real) = match (dir.canonicalize(), file.canonicalize()) {
            (Ok(d), Ok(f)) => (d, f),
            (_, Err(e)) | (Err(e), _) => {
                return refuse(format!("cannot read template {}: {e}", file.display()))
            }
        };
        if !file_real.starts_with(&dir_real) {
            return refuse(format!(
                "template {} resolves to {}, outside the playbook's directory {}; keep unit templates beside the playbook",
                file.display(),
                file_real.display(),
                dir_real.display()
            ));
        }
        let text = match read_template(&file_real) {
            Ok(text) => text,
            Err(why) => return refuse(format!("template {} {why}", file.display())),
        };
        let input = crate::model::Input {
            path: file.display().to_string(),
            digest: crate::model::digest(text.as_bytes()),
        };
        if !self.inputs.contains(&input) {
            self.inputs.push(input);
        }
        match self.templates.add_string(&text) {
            Ok(t) => Ok(UnitSource::Template(t)),
            Err(e) => Err(self.invalid(
                "unit.template",
                format!("{}: {e}", file.display()),
                at.clone(),
            )),
        }
    }

    fn service(&mut self, svc: &ServiceSpec) -> Result<Module> {
        let at = self.src.pos(svc.name.referenced);
        if svc.state.is_none() && svc.enabled.is_none() && svc.masked.is_none() {
            return Err(self.invalid(
                "service",
                "say what to do with `state`, `enabled` or `masked`".into(),
                at,
            ));
        }
        let starts = matches!(
            svc.state,
            Some(ServiceState::Started | ServiceState::Restarted | ServiceState::Reloaded)
        );
        if svc.masked == Some(true) && starts {
            return Err(self.invalid(
                "service.masked",
                "a masked unit cannot be started; drop `masked: true` or use `state: stopped`"
                    .into(),
                at,
            ));
        }
        let name = match self.templates.add_unit_name(&svc.name.value) {
            Ok(n) => n,
            Err(m) => return Err(self.invalid("service.name", m, at)),
        };
        Ok(Module::Service {
            name,
            name_position: at,
            state: svc.state,
            enabled: svc.enabled,
            masked: svc.masked,
        })
    }
}

/// Read a unit template: a regular file (judged on the opened file, so a
/// swap after the check does not count), at most [`MAX_UNIT_FILE`] bytes,
/// never reading more than one byte past that.
fn read_template(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking so that opening a FIFO returns at once and is refused
    // below instead of waiting forever for a writer; no effect on files.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_UNIT_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() > MAX_UNIT_FILE {
        return Err("is larger than 1 MiB".into());
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".into())
}

/// `secret_vars`: each names a key of `vars` whose value can be hidden
/// reliably (a string or a number, at least 4 characters).
fn secrets_of(file: &PlaybookFile, src: Source<'_>) -> Result<Secrets> {
    let mut secrets = Secrets::new();
    for (i, name) in file.secret_vars.iter().enumerate() {
        let at = src.pos(name.referenced);
        let Some(value) = file.vars.get(&name.value) else {
            return Err(Error::invalid(
                WHAT,
                format!("secret_vars[{i}]"),
                format!("`{}` is not a key of `vars`", name.value),
                Some(at),
            )
            .with_suggestion(suggest(&name.value, file.vars.keys().map(String::as_str))));
        };
        // The value is what to fix, so the error points at it.
        let bad = |why: String| {
            Error::invalid(
                WHAT,
                format!("vars.{}", name.value),
                format!("secret `{}` {why}", name.value),
                yaml::locate(src.text, src.path, &["vars", &name.value]).or(Some(at.clone())),
            )
        };
        let text = secret::rendered(value).map_err(|why| {
            bad(format!(
                "{why}; a secret must be a string or a number (give each secret value its own variable)"
            ))
        })?;
        secrets.insert(&name.value, &text).map_err(bad)?;
    }
    Ok(secrets)
}

/// `strategy: free` refuses what needs every host of a step at the same
/// point: `serial`, `max_fail_percentage`, `_any`.
fn check_strategy(strategy: Strategy, steps: &[Step], mfp_given: &[bool]) -> Result<()> {
    if strategy != Strategy::Free {
        return Ok(());
    }
    for (st, given) in steps.iter().zip(mfp_given) {
        let why = if st.serial.is_some() || st.group.is_some() {
            Some("serial")
        } else if *given {
            Some("max_fail_percentage")
        } else if st.targets.iter().any(|t| t.is_any()) {
            Some("an `_any` target")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::invalid(
                WHAT,
                format!("steps[{}]", st.file_index),
                format!("step `{}` uses {why}, which needs `strategy: linear` (hosts move through steps together)", st.id),
                Some(st.position.clone()),
            ));
        }
    }
    Ok(())
}

/// Where `use: NAME` looks: `modules/` beside the playbook, then
/// `--modules DIR`, then `modules/` beside the playbook's directory (the
/// repository layout of `playbooks/` next to `modules/`).
pub fn module_search_path(playbook: &Path, modules: Option<&Path>) -> Vec<PathBuf> {
    let dir = match playbook.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut v = vec![dir.join("modules")];
    v.extend(modules.map(Path::to_path_buf));
    v.push(dir.join("..").join("modules"));
    v
}

/// What a composite call hands down to the steps it expands into.
#[derive(Clone)]
struct Inherit {
    /// `CALL.` (nested: `OUTER.CALL.`).
    prefix: String,
    target: Option<Spanned<TargetSpec>>,
    when: Option<Spanned<String>>,
    ignore_maintenance: Option<bool>,
    max_fail_percentage: Option<Spanned<f64>>,
    /// The outermost call has `serial`: the steps are batched as a group.
    in_group: bool,
    /// The call site, appended to errors in the module.
    note: String,
}

/// Builds the flat step list, expanding module calls.
struct Loader<'t> {
    templates: &'t mut Templates,
    inputs: &'t mut Vec<crate::model::Input>,
    search: &'t [PathBuf],
    steps: Vec<Step>,
    mfp_given: Vec<bool>,
    /// A call's id → the ids of the steps it expanded into (`needs: [CALL]`).
    aliases: std::collections::HashMap<String, Vec<String>>,
    /// The calls being expanded, outermost first: `step (file line N) uses NAME`.
    chain: Vec<(String, String)>,
}

impl Loader<'_> {
    /// The steps, `needs` naming a call replaced by the call's steps.
    fn finish(self) -> Result<(Vec<Step>, Vec<bool>)> {
        let Loader {
            mut steps,
            aliases,
            mfp_given,
            ..
        } = self;
        for st in &mut steps {
            if let Some(needs) = &mut st.needs {
                let mut out = Vec::with_capacity(needs.len());
                for n in needs.drain(..) {
                    match aliases.get(&n) {
                        Some(ids) => out.extend(ids.iter().cloned()),
                        None => out.push(n),
                    }
                }
                out.dedup();
                *needs = out;
            }
        }
        Ok((steps, mfp_given))
    }

    /// One list of steps (the playbook's, or a module's under `inh`):
    /// returns the ids of every step it produced. `entry` is what a
    /// module's first step (and its `needs: []` steps) wait for.
    fn list(
        &mut self,
        src: Source<'_>,
        specs: &[StepSpec],
        inh: Option<&Inherit>,
        entry: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
        let prefix = inh.map_or("", |i| i.prefix.as_str());
        let local: Vec<&str> = specs.iter().map(|s| s.id.value.as_str()).collect();
        let mut produced = Vec::new();
        // What a step without `needs` waits for: None is the DAG's own rule
        // (the step before it in the flat list).
        let mut prev: Option<Vec<String>> = entry.clone();
        let mut seen_local = HashSet::new();
        for (k, spec) in specs.iter().enumerate() {
            let at = src.pos(spec.id.referenced);
            let field = |f: &str| format!("steps[{k}]{f}");
            if let Err(m) = crate::model::inventory::validate_name(&spec.id.value) {
                return Err(Error::invalid(WHAT, field(".id"), m, Some(at)));
            }
            if !seen_local.insert(spec.id.value.clone()) {
                return Err(Error::invalid(
                    WHAT,
                    field(".id"),
                    format!(
                        "duplicate step id `{}`; step ids must be unique",
                        spec.id.value
                    ),
                    Some(at),
                ));
            }
            let needs: Option<Vec<String>> = match &spec.needs {
                Some(n) => {
                    for (j, name) in n.value.iter().enumerate() {
                        if !local.contains(&name.as_str()) {
                            return Err(Error::invalid(
                                WHAT,
                                field(&format!(".needs[{j}]")),
                                format!("step `{}` needs unknown step `{name}`", spec.id.value),
                                Some(src.pos(n.referenced)),
                            )
                            .with_suggestion(suggest(name, local.iter().copied())));
                        }
                    }
                    if n.value.is_empty() && inh.is_some() {
                        // A root inside a module: it waits for what the call waits for.
                        Some(entry.clone().unwrap_or_default())
                    } else {
                        Some(n.value.iter().map(|n| format!("{prefix}{n}")).collect())
                    }
                }
                None => prev.clone(),
            };
            let full_id = format!("{prefix}{}", spec.id.value);
            let found = match &spec.use_ {
                Some(u) => Some(self.find(src, u, &spec.id.value)?),
                None => None,
            };
            let ids = match found {
                Some(crate::model::module::Found::Composite(file)) => {
                    let entry = match needs {
                        Some(n) => n,
                        None => self
                            .steps
                            .last()
                            .map(|s| vec![s.id.clone()])
                            .unwrap_or_default(),
                    };
                    let ids = self.call(src, k, spec, &full_id, &file, inh, entry)?;
                    self.aliases.insert(full_id.clone(), ids.clone());
                    prev = Some(ids.clone());
                    ids
                }
                other => {
                    let script = match other {
                        Some(crate::model::module::Found::Script(dir)) => {
                            Some(self.script(src, k, spec, &dir)?)
                        }
                        _ => None,
                    };
                    self.step(src, k, spec, &full_id, inh, needs, script)?;
                    prev = inh.map(|_| vec![full_id.clone()]);
                    vec![full_id]
                }
            };
            produced.extend(ids);
        }
        Ok(produced)
    }

    /// Find the module a `use:` names, or say which exist.
    fn find(
        &self,
        src: Source<'_>,
        u: &Spanned<String>,
        step: &str,
    ) -> Result<crate::model::module::Found> {
        let at = src.pos(u.referenced);
        let name = &u.value;
        crate::model::module::validate_name(name).map_err(|m| {
            Error::invalid(WHAT, "use", format!("step `{step}`: {m}"), Some(at.clone()))
        })?;
        crate::model::module::find(name, self.search).ok_or_else(|| {
            let known = crate::model::module::known(self.search);
            Error::invalid(
                WHAT,
                "use",
                format!(
                    "step `{step}` uses unknown module `{name}`; searched {}",
                    self.search
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(at),
            )
            .with_suggestion(suggest(name, known.iter().map(String::as_str)))
        })
    }

    /// Bind a call's `with:` to the module's params: values rendered now
    /// (with `vars` and the caller's own params), defaults filled in.
    fn bind(
        &self,
        src: Source<'_>,
        k: usize,
        spec: &StepSpec,
        declared: &BTreeMap<String, crate::model::module::ParamSpec>,
        module_file: &Path,
    ) -> Result<serde_json::Value> {
        let index = k;
        let with = spec.with.clone().unwrap_or_default();
        let mut rendered = BTreeMap::new();
        for (k, v) in with {
            let v = render_value(self.templates, v).map_err(|m| {
                Error::invalid(
                    WHAT,
                    format!("steps[{index}].with.{k}"),
                    format!("step `{}`: {m}", spec.id.value),
                    yaml::locate(src.text, src.path, &["with", &k])
                        .or_else(|| Some(src.pos(spec.id.referenced))),
                )
            })?;
            rendered.insert(k, v);
        }
        crate::model::module::bind_params(declared, &rendered).map_err(|(k, m, sugg)| {
            Error::invalid(
                WHAT,
                format!("steps[{index}].with.{k}"),
                format!(
                    "step `{}` calls module {}: {m}",
                    spec.id.value,
                    module_file.display()
                ),
                yaml::locate(src.text, src.path, &["with", &k])
                    .or_else(|| Some(src.pos(spec.id.referenced))),
            )
            .with_suggestion(sugg)
        })
    }

    fn record_input(&mut self, path: &Path, bytes: &[u8]) {
        let input = crate::model::Input {
            path: path.display().to_string(),
            digest: crate::model::digest(bytes),
        };
        if !self.inputs.contains(&input) {
            self.inputs.push(input);
        }
    }

    /// A `use:` of a script module: one step running the module's program.
    fn script(
        &mut self,
        src: Source<'_>,
        k: usize,
        spec: &StepSpec,
        dir: &Path,
    ) -> Result<Arc<crate::model::module::ScriptModule>> {
        let note = format!(
            "module {} called by step `{}` at {}",
            dir.display(),
            spec.id.value,
            src.pos(spec.id.referenced)
        );
        let (file, program, timeout) =
            crate::model::module::load_script(dir).map_err(|e| e.in_call(&note))?;
        let params = self.bind(src, k, spec, &file.params, &dir.join("module.yml"))?;
        self.record_input(&dir.join("run"), &program);
        let name = spec
            .use_
            .as_ref()
            .map(|u| u.value.clone())
            .unwrap_or_default();
        Ok(Arc::new(crate::model::module::ScriptModule {
            name,
            dir: dir.to_path_buf(),
            program,
            check: file.check,
            timeout,
            params,
        }))
    }

    /// A plain step (or a script call), with what a call hands down.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        src: Source<'_>,
        k: usize,
        spec: &StepSpec,
        full_id: &str,
        inh: Option<&Inherit>,
        needs: Option<Vec<String>>,
        script: Option<Arc<crate::model::module::ScriptModule>>,
    ) -> Result<()> {
        if spec.with.is_some() && spec.use_.is_none() {
            return Err(Error::invalid(
                WHAT,
                format!("steps[{k}].with"),
                format!("step `{}` has `with:` but no `use:`", spec.id.value),
                Some(src.pos(spec.id.referenced)),
            ));
        }
        let on_failure = spec.on_failure == Some(true);
        let spec = match inh {
            Some(i) => inherit(src, k, spec, i)?,
            None if on_failure => {
                return Err(Error::invalid(
                    WHAT,
                    format!("steps[{k}].on_failure"),
                    format!(
                        "step `{}`: `on_failure` belongs in a module's steps (it reacts to a failure of the module call)",
                        spec.id.value
                    ),
                    Some(src.pos(spec.id.referenced)),
                ))
            }
            None => spec.clone(),
        };
        let index = self.steps.len();
        let scope = on_failure.then(|| self.templates.enter_failure_scope());
        let mut seen = HashSet::new();
        let parser = StepParser {
            src,
            index,
            file_index: k,
            script,
            spec: &spec,
            id: full_id,
            position: src.pos(spec.id.referenced),
            templates: self.templates,
            inputs: self.inputs,
        };
        let step = parser.parse(&mut seen);
        if let Some(previous) = scope {
            self.templates.leave_params(previous);
        }
        let mut step = step?;
        if on_failure {
            step.on_failure = inh.map(|i| i.prefix.trim_end_matches('.').to_string());
        }
        step.called_from = inh.map(|i| i.note.clone());
        if self.steps.iter().any(|s| s.id == step.id) {
            return Err(Error::invalid(
                WHAT,
                format!("steps[{k}].id"),
                format!("duplicate step id `{}`; step ids must be unique", step.id),
                Some(step.position.clone()),
            ));
        }
        step.needs = needs;
        self.mfp_given.push(spec.max_fail_percentage.is_some());
        self.steps.push(step);
        Ok(())
    }

    /// Expand a composite module call into its steps.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        src: Source<'_>,
        k: usize,
        spec: &StepSpec,
        full_id: &str,
        file: &Path,
        inh: Option<&Inherit>,
        entry: Vec<String>,
    ) -> Result<Vec<String>> {
        let site = src.pos(spec.id.referenced);
        let name = spec
            .use_
            .as_ref()
            .map(|u| u.value.clone())
            .unwrap_or_default();
        let whole = |m: String| {
            Error::invalid(
                WHAT,
                format!("steps[{k}]"),
                format!("step `{}`: {m}", spec.id.value),
                Some(site.clone()),
            )
        };
        if spec.service.is_some() || spec.maintenance.is_some() || spec.unit.is_some() {
            return Err(whole(format!(
                "`use: {name}` is the step's module; drop `service:`/`maintenance:`/`unit:` or make them separate steps"
            )));
        }
        if spec.wait.is_some() {
            return Err(whole(format!(
                "a call of module `{name}` cannot `wait:`; gates belong to the module's steps"
            )));
        }
        if self.chain.iter().any(|(n, _)| *n == name) {
            let mut chain: Vec<String> = self.chain.iter().map(|(_, l)| l.clone()).collect();
            chain.push(format!("step `{}` ({site}) uses `{name}`", spec.id.value));
            return Err(whole(format!(
                "module `{name}` calls itself: {}",
                chain.join(" -> ")
            )));
        }
        if spec.serial.is_some() && inh.is_some() {
            return Err(whole(
                "`serial` on a call inside a module is not supported; put it on the playbook's call"
                    .into(),
            ));
        }
        if spec.target.is_some() && inh.is_some() {
            return Err(whole(
                "a call inside a module takes its hosts from the outer call; drop `target`".into(),
            ));
        }
        let text = yaml::read_bounded(file, crate::model::module::WHAT)?;
        self.record_input(file, text.as_bytes());
        let note = format!(
            "in module {} called by step `{}` at {site}",
            file.display(),
            spec.id.value
        );
        let module: crate::model::module::CompositeFile =
            yaml::parse(&text, file, crate::model::module::WHAT).map_err(|e| e.in_call(&note))?;
        if module.steps.is_empty() {
            return Err(Error::invalid(
                crate::model::module::WHAT,
                "steps",
                format!("module `{name}` has no steps"),
                yaml::locate(&text, file, &["steps"]),
            )
            .in_call(&note));
        }
        let params = self.bind(src, k, spec, &module.params, file)?;
        let mstarts = line_starts(&text);
        let msrc = Source {
            text: &text,
            path: file,
            starts: &mstarts,
        };
        let child = match inh {
            Some(i) => Inherit {
                prefix: format!("{full_id}."),
                when: join_when(i.when.clone(), spec.when.clone()),
                ignore_maintenance: join_ignore(i.ignore_maintenance, spec.ignore_maintenance),
                max_fail_percentage: spec
                    .max_fail_percentage
                    .clone()
                    .or_else(|| i.max_fail_percentage.clone()),
                note: format!("{note}; {}", i.note),
                ..i.clone()
            },
            None => Inherit {
                prefix: format!("{full_id}."),
                target: spec.target.clone(),
                when: spec.when.clone(),
                ignore_maintenance: spec.ignore_maintenance,
                // With `serial`, the threshold is the group's, per batch.
                max_fail_percentage: if spec.serial.is_some() {
                    None
                } else {
                    spec.max_fail_percentage.clone()
                },
                in_group: spec.serial.is_some(),
                note: note.clone(),
            },
        };
        let scope = self.templates.enter_params(&params);
        self.chain.push((
            name.clone(),
            format!("step `{}` ({site}) uses `{name}`", spec.id.value),
        ));
        let first = self.steps.len();
        let produced = self.list(msrc, &module.steps, Some(&child), Some(entry));
        self.chain.pop();
        self.templates.leave_params(scope);
        let produced = produced.map_err(|e| e.in_call(&note))?;
        if let (None, Some(serial)) = (inh, spec.serial) {
            let max = match &spec.max_fail_percentage {
                Some(m) if !(0.0..=100.0).contains(&m.value) => {
                    return Err(Error::invalid(
                        WHAT,
                        format!("steps[{k}].max_fail_percentage"),
                        format!("{} is not between 0 and 100", m.value),
                        Some(src.pos(m.referenced)),
                    ))
                }
                Some(m) => m.value,
                None => 100.0,
            };
            let group = Arc::new(Group {
                call: full_id.to_string(),
                serial,
                max_fail_percentage: max,
                steps: (first..self.steps.len()).collect(),
            });
            for st in &mut self.steps[first..] {
                st.group = Some(group.clone());
            }
            if let Some(g) = self.mfp_given.get_mut(first) {
                *g = spec.max_fail_percentage.is_some();
            }
        }
        Ok(produced)
    }
}

/// A module's step with the call's target, `when`, maintenance and
/// failure threshold applied; what the call decides may not be set again.
fn inherit(src: Source<'_>, k: usize, spec: &StepSpec, i: &Inherit) -> Result<StepSpec> {
    let at = src.pos(spec.id.referenced);
    let refuse = |f: &str, m: &str| {
        Err(Error::invalid(
            WHAT,
            format!("steps[{k}].{f}"),
            format!("step `{}`: {m}", spec.id.value),
            Some(at.clone()),
        ))
    };
    if spec.target.is_some() {
        return refuse(
            "target",
            "a module's steps take their hosts from the call's `target`; drop it here",
        );
    }
    if i.in_group && spec.serial.is_some() {
        return refuse(
            "serial",
            "the call's `serial` batches hosts through all the module's steps; drop it here",
        );
    }
    if i.in_group && spec.max_fail_percentage.is_some() {
        return refuse(
            "max_fail_percentage",
            "the call's `max_fail_percentage` counts per batch over all the module's steps; drop it here",
        );
    }
    let mut s = spec.clone();
    s.target = i.target.clone();
    s.when = join_when(i.when.clone(), spec.when.clone());
    s.ignore_maintenance = join_ignore(i.ignore_maintenance, spec.ignore_maintenance);
    s.max_fail_percentage = spec
        .max_fail_percentage
        .clone()
        .or_else(|| i.max_fail_percentage.clone());
    Ok(s)
}

/// Both conditions must hold.
fn join_when(
    outer: Option<Spanned<String>>,
    inner: Option<Spanned<String>>,
) -> Option<Spanned<String>> {
    match (outer, inner) {
        (Some(o), Some(mut i)) => {
            i.value = format!("({}) and ({})", o.value, i.value);
            Some(i)
        }
        (o, i) => o.or(i),
    }
}

fn join_ignore(outer: Option<bool>, inner: Option<bool>) -> Option<bool> {
    match (outer, inner) {
        (None, None) => None,
        (o, i) => Some(o.unwrap_or(false) || i.unwrap_or(false)),
    }
}

/// A `with:` value with every string rendered (vars, the caller's params).
fn render_value(
    t: &Templates,
    v: serde_json::Value,
) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value as V;
    Ok(match v {
        V::String(s) => V::String(t.render_static(&s)?),
        V::Array(a) => V::Array(
            a.into_iter()
                .map(|x| render_value(t, x))
                .collect::<std::result::Result<_, _>>()?,
        ),
        V::Object(o) => V::Object(
            o.into_iter()
                .map(|(k, x)| render_value(t, x).map(|x| (k, x)))
                .collect::<std::result::Result<_, _>>()?,
        ),
        other => other,
    })
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && (s.trim().len() == 5)).then_some(h * 60 + m)
}

fn parse_window(w: &WindowSpec) -> Result<Window> {
    let start_minute = parse_hhmm(&w.start).ok_or_else(|| {
        Error::invalid(
            WHAT,
            "window.start",
            format!("`{}` is not a time like \"02:00\"", w.start),
            None,
        )
    })?;
    let end_minute = parse_hhmm(&w.end).ok_or_else(|| {
        Error::invalid(
            WHAT,
            "window.end",
            format!("`{}` is not a time like \"04:00\"", w.end),
            None,
        )
    })?;
    let tz_raw = w.tz.as_deref().unwrap_or("UTC");
    let tz: chrono_tz::Tz = tz_raw.parse().map_err(|_| {
        Error::invalid(
            WHAT,
            "window.tz",
            format!("`{tz_raw}` is not an IANA time zone such as UTC or Europe/Berlin"),
            None,
        )
    })?;
    Ok(Window {
        days: w.days.clone().unwrap_or_default(),
        start_minute,
        end_minute,
        tz,
    })
}

impl Window {
    /// "sat, sun 02:00-04:00 UTC", for messages.
    pub fn describe(&self) -> String {
        let days: Vec<String> = self
            .days
            .iter()
            .map(|d| format!("{d:?}").to_lowercase())
            .collect();
        format!(
            "{}{:02}:{:02}-{:02}:{:02} {}",
            if days.is_empty() {
                String::new()
            } else {
                format!("{} ", days.join(", "))
            },
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60,
            self.tz
        )
    }

    /// Whether `now` falls inside the window. A window whose end is before
    /// its start spans midnight and belongs to the day it opened.
    pub fn contains(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let local = now.with_timezone(&self.tz);
        let minute = local.hour() * 60 + local.minute();
        let day_of = |d: chrono::Weekday| match d {
            chrono::Weekday::Mon => Day::Mon,
            chrono::Weekday::Tue => Day::Tue,
            chrono::Weekday::Wed => Day::Wed,
            chrono::Weekday::Thu => Day::Thu,
            chrono::Weekday::Fri => Day::Fri,
            chrono::Weekday::Sat => Day::Sat,
            chrono::Weekday::Sun => Day::Sun,
        };
        let day_ok = |d: chrono::Weekday| self.days.is_empty() || self.days.contains(&day_of(d));
        if self.start_minute <= self.end_minute {
            day_ok(local.weekday()) && minute >= self.start_minute && minute < self.end_minute
        } else if minute >= self.start_minute {
            day_ok(local.weekday())
        } else if minute < self.end_minute {
            day_ok(local.weekday().pred())
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A playbook with one `unit:` step whose template is `t`, in `dir`.
    fn with_template(dir: &Path, t: &str) -> Result<Playbook> {
        let text =
            format!("name: t\nsteps:\n  - id: a\n    unit: {{ name: app, template: \"{t}\" }}\n");
        Playbook::from_str(&text, &dir.join("pb.yml"))
    }

    fn refusal(dir: &Path, t: &str) -> String {
        let e = with_template(dir, t).unwrap_err().details();
        assert!(e.starts_with("steps[0].unit.template: "), "{t}: {e}");
        assert!(e.contains("pb.yml line 4"), "{t}: {e}");
        e
    }

    #[test]
    fn unit_templates_stay_in_the_playbook_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("book");
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("templates/app.j2"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        std::fs::write(root.path().join("secret"), "[Service]\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("link.j2")).unwrap();
        std::os::unix::fs::symlink("templates/app.j2", dir.join("inside.j2")).unwrap();

        assert!(with_template(&dir, "templates/app.j2").is_ok());
        assert!(with_template(&dir, "./templates/../templates/app.j2").is_ok());
        assert!(with_template(&dir, "inside.j2").is_ok());
        let e = refusal(&dir, "/etc/hostname");
        assert!(e.contains("is an absolute path"), "{e}");
        let e = refusal(&dir, "../secret");
        assert!(e.contains("outside the playbook's directory"), "{e}");
        let e = refusal(&dir, "link.j2");
        assert!(e.contains("outside the playbook's directory"), "{e}");
        let e = refusal(&dir, "missing.j2");
        assert!(e.contains("cannot read template"), "{e}");
    }

    #[test]
    fn unit_templates_must_be_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = refusal(dir.path(), "sub");
        assert!(e.contains("is not a regular file"), "{e}");
        // A FIFO without a writer: a blocking open would wait forever.
        let fifo = dir.path().join("fifo.j2");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = refusal(dir.path(), "fifo.j2");
        assert!(e.contains("is not a regular file"), "{e}");
    }

    /// Bytes this thread has read through read(2) so far.
    fn bytes_read_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn unit_templates_are_read_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        // Sparse: 256 MiB of zeros without writing them.
        let f = std::fs::File::create(dir.path().join("huge.j2")).unwrap();
        f.set_len(256 << 20).unwrap();
        let before = bytes_read_by_this_thread();
        let e = refusal(dir.path(), "huge.j2");
        let read = bytes_read_by_this_thread() - before;
        assert!(e.contains("larger than 1 MiB"), "{e}");
        assert!(
            read <= MAX_UNIT_FILE as u64 + 64 * 1024,
            "read {read} bytes of a 256 MiB template"
        );
        std::fs::write(dir.path().join("bin.j2"), [0xff, 0xfe, 0]).unwrap();
        let e = refusal(dir.path(), "bin.j2");
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn wait_timeout_is_capped() {
        let pb = |timeout: &str| {
            Playbook::from_str(
                &format!(
                    "name: t\nsteps:\n  - id: a\n    wait: {{ active: true, timeout: {timeout} }}\n    service: {{ name: x, state: started }}\n"
                ),
                Path::new("pb.yml"),
            )
        };
        let ok = pb("7d").unwrap();
        assert_eq!(
            ok.steps[0].wait.as_ref().map(|w| w.timeout),
            Some(crate::model::MAX_DURATION)
        );
        for long in ["8d", "500000000000y"] {
            let e = pb(long).unwrap_err().details();
            assert!(
                e.starts_with("steps[0].wait.timeout: ") && e.contains("longer than 7 days"),
                "{long}: {e}"
            );
            assert!(e.contains("pb.yml line "), "{long}: {e}");
        }
    }

    #[test]
    fn step_positions_keep_their_line() {
        let text = "name: x\r\nsteps:\r\n  - { id: a, service: { name: x, state: started } }\r\n  - { id: a, service: { name: y, state: started } }";
        let e = Playbook::from_str(text, Path::new("p.yml")).unwrap_err();
        let Error::Invalid(d) = e else {
            panic!("{e:?}")
        };
        let src = d.position.unwrap().source.unwrap();
        assert_eq!(
            src.text,
            "  - { id: a, service: { name: y, state: started } }"
        );
        assert_eq!(line_starts("a\nb\n"), [0, 2]);
        assert_eq!(line_starts(""), Vec::<usize>::new());
    }
}
