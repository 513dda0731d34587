//! Validation of one step as written into a [`Step`]: ids, targets,
//! templates, gates and what the step does, each error at its position.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::model::error::{Error, Position, Result};
use crate::model::playbook::MaintenanceSpec;
use crate::model::playbook::Operation;
use crate::model::playbook::ServiceSpec;
use crate::model::playbook::ServiceState;
use crate::model::playbook::Source;
use crate::model::playbook::Step;
use crate::model::playbook::StepSpec;
use crate::model::playbook::UnitFileGoal;
use crate::model::playbook::UnitSource;
use crate::model::playbook::UnitSpec;
use crate::model::playbook::Wait;
use crate::model::playbook::MAX_UNIT_FILE;
use crate::model::playbook::WHAT;
use crate::model::target::Selector;
use crate::model::template::Templates;
use crate::model::yaml;

/// One step's spec validated into a [`Step`], field by field.
pub(super) struct StepParser<'a, 't> {
    pub(super) src: Source<'a>,
    pub(super) index: usize,
    /// Position of the step in its own file (playbook or module), for
    /// field paths.
    pub(super) file_index: usize,
    /// The script module a `use:` step runs.
    pub(super) script: Option<Arc<crate::model::playbook::module::ScriptModule>>,
    pub(super) spec: &'a StepSpec,
    pub(super) id: &'a str,
    pub(super) position: Position,
    pub(super) templates: &'t mut Templates,
    pub(super) inputs: &'t mut Vec<crate::model::Input>,
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

    pub(super) fn parse(mut self, seen: &mut HashSet<String>) -> Result<Step> {
        self.check_id(seen)?;
        let targets = self.targets()?;
        let when = self.when()?;
        let max_fail_percentage = self.max_fail_percentage()?;
        let wait = self.wait()?;
        let operation = self.operation()?;
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
            operation,
            group: None,
            on_failure: None,
            limit: None,
            always: None,
            timeout: None,
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
                // A target may read `vars` and `params` (a selector-typed
                // parameter): rendered once, here, then parsed as a selector.
                self.templates
                    .render_static(raw)
                    .and_then(|text| Selector::parse(&text))
                    .map_err(|m| {
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
    fn operation(&mut self) -> Result<Operation> {
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
            return Ok(Operation::Script(script.clone()));
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

    fn maintenance(&mut self, m: &MaintenanceSpec) -> Result<Operation> {
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
        Ok(Operation::Maintenance {
            enable: m.enable,
            reason,
            unit,
            name_position,
        })
    }

    fn unit(&mut self, u: &UnitSpec) -> Result<Operation> {
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
        Ok(Operation::Unit {
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

    fn service(&mut self, svc: &ServiceSpec) -> Result<Operation> {
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
        Ok(Operation::Service {
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
