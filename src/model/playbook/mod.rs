//! The playbook: an ordered runbook of service operations, parsed strictly
//! and validated (ids, targets, unit names, templates) before anything runs.

mod cleanup;
mod limit;
mod loader;
pub mod module;
mod parse;
mod spec;
mod step;
mod window;

pub use limit::{check_hosts as check_limit_hosts, Amount, Limit};
pub use loader::module_search_path;
pub use spec::*;
pub use step::*;
pub use window::Window;

use std::path::{Path, PathBuf};

use crate::model::error::{suggest, Error, Position, Result};
use crate::model::params::{Declared, ParamValues, Params};
use crate::model::playbook::loader::Loader;
use crate::model::playbook::window::parse_window;
use crate::model::secret::{self, Secrets};
use crate::model::template::Templates;
use crate::model::yaml;

const WHAT: &str = "playbook";

/// Largest unit file or template drover writes (1 MiB).
const MAX_UNIT_FILE: usize = 1 << 20;

/// A validated playbook, ready to plan.
#[derive(Debug)]
pub struct Playbook {
    /// Where it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its window.
    pub window: Option<Window>,
    /// Approvals a plan needs before the server runs it (`approval.count`).
    pub approval: Option<u32>,
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
    /// The values of `secret_vars` and of secret parameters, hidden in
    /// everything drover shows.
    pub secrets: Secrets,
    /// The declared `params:`.
    pub declared: Declared,
    /// The parameters' values it was loaded with (templates read them).
    pub params: Params,
    /// The text it was parsed from: what a cluster's coordinator sends a
    /// worker, which parses it again and checks its digest.
    pub source: std::sync::Arc<str>,
}

impl Playbook {
    /// Read, parse and validate a playbook file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_modules(path, None)
    }

    /// Read a playbook whose module calls may also find modules in `modules`
    /// (`--modules DIR`).
    pub fn load_with_modules(path: &Path, modules: Option<&Path>) -> Result<Self> {
        Self::load_with(path, modules, &ParamValues::none())
    }

    /// Read a playbook with `--modules DIR` and the caller's parameter
    /// values.
    pub fn load_with(path: &Path, modules: Option<&Path>, values: &ParamValues) -> Result<Self> {
        let text = yaml::read_bounded(path, WHAT)?;
        Self::from_str_with(&text, path, modules, values)
    }

    /// Parse and validate playbook text.
    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        Self::from_str_with_modules(text, path, None)
    }

    /// Parse and validate playbook text, with `--modules DIR`.
    pub fn from_str_with_modules(text: &str, path: &Path, modules: Option<&Path>) -> Result<Self> {
        Self::from_str_with(text, path, modules, &ParamValues::none())
    }

    /// Parse and validate playbook text, with `--modules DIR` and the
    /// caller's parameter values (checked against `params:` first).
    pub fn from_str_with(
        text: &str,
        path: &Path,
        modules: Option<&Path>,
        values: &ParamValues,
    ) -> Result<Self> {
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
        let declared = Declared::new(&file.params, text, path)?;
        let params = declared.bind(values)?;
        let mut secrets = secrets_of(&file, src)?;
        for name in params.secret_names() {
            if let Some(v) = params.values().get(name) {
                let text = secret::rendered(v).map_err(Error::Internal)?;
                secrets.insert_param(name, &text).map_err(Error::Internal)?;
            }
        }
        let mut templates = Templates::new(&file.vars)?;
        templates.set_params(&params);
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
        let approval = file
            .approval
            .as_ref()
            .map(|a| check_approval(a, text, path))
            .transpose()?;
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
        // A message may quote a value rendered from a secret parameter (a
        // target, a timeout).
        let (steps, strategy) = loader
            .list(src, &file.steps, None, None)
            .and_then(|_| loader.finish())
            .and_then(|(steps, mfp_given)| {
                let strategy = file.strategy.unwrap_or_default();
                check_strategy(strategy, &steps, &mfp_given)?;
                Ok((steps, strategy))
            })
            .map_err(|e| e.redacted(&secrets))?;
        Ok(Playbook {
            path: path.to_path_buf(),
            name: file.name,
            window,
            approval,
            strategy,
            steps,
            templates,
            digest: crate::model::digest(text.as_bytes()),
            inputs,
            secrets,
            declared,
            params,
            source: text.into(),
        })
    }

    /// Whether the server must run it only as an approved plan.
    pub fn needs_approval(&self) -> bool {
        self.approval.is_some()
    }

    /// Find a step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// The text being parsed and its name, for positions in errors.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
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
/// Most approvals a playbook may ask for: past it, no team gets a plan run.
const MAX_APPROVALS: u32 = 10;

/// `approval.count`, between 1 and [`MAX_APPROVALS`].
fn check_approval(a: &ApprovalSpec, text: &str, path: &Path) -> Result<u32> {
    if (1..=MAX_APPROVALS).contains(&a.count) {
        return Ok(a.count);
    }
    Err(Error::invalid(
        WHAT,
        "approval.count",
        format!(
            "{} approvals: give 1 to {MAX_APPROVALS} (other keys than the plan's maker), or drop `approval:` to need none",
            a.count
        ),
        yaml::locate(text, path, &["approval", "count"]),
    ))
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < text.len())
        .collect()
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

    /// A parameter's value is data: what it holds is rendered as itself,
    /// wherever the playbook uses it (a unit file, a target, a module call).
    #[test]
    fn parameter_values_are_data_never_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        std::fs::write(
            dir.path().join("modules/note.yml"),
            "params: { text: { description: t } }\nsteps:\n  - id: m\n    maintenance: { enable: true, reason: \"{{ params.text }}\" }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("app.j2"),
            "[Unit]\nDescription={{ params.note }}\n",
        )
        .unwrap();
        let text = "name: p\nparams:\n  note: { description: n }\n  hosts: { description: h, type: selector }\nsteps:\n  - id: a\n    target: \"{{ params.hosts }}\"\n    unit: { name: app, template: app.j2 }\n  - id: b\n    use: note\n    with: { text: \"{{ params.note }}\" }\n";
        let mut values = ParamValues::none();
        values.flag("note={{ 7*7 }} {% raw %}").unwrap();
        values.flag("hosts=web-1").unwrap();
        let pb = Playbook::from_str_with(text, &dir.path().join("pb.yml"), None, &values).unwrap();
        assert_eq!(pb.steps[0].targets[0].to_string(), "web-1");
        let inv = crate::model::inventory::Inventory::from_str(
            "hosts:\n  web-1: { address: 10.0.0.1 }\n",
            Path::new("inv.yml"),
        )
        .unwrap();
        let ctx = pb.templates.host_context(&inv.hosts[0]);
        let Operation::Unit {
            source: UnitSource::Template(file),
            ..
        } = pb.steps[0].operation
        else {
            panic!("not a unit template");
        };
        assert_eq!(
            pb.templates.render(file, &ctx).unwrap(),
            "[Unit]\nDescription={{ 7*7 }} {% raw %}"
        );
        let Operation::Maintenance {
            reason: Some(reason),
            ..
        } = pb.steps[1].operation
        else {
            panic!("not a maintenance step");
        };
        assert_eq!(
            pb.templates.render(reason, &ctx).unwrap(),
            "{{ 7*7 }} {% raw %}"
        );
        // Outside a module call only declared parameters exist.
        let e = Playbook::from_str(
            "name: p\nparams: { unit: { description: u, default: x } }\nsteps:\n  - id: a\n    service: { name: \"{{ params.unti }}\", state: started }\n",
            Path::new("pb.yml"),
        )
        .unwrap_err()
        .details();
        assert!(
            e.contains("`params.unti` is not a declared parameter"),
            "{e}"
        );
        assert!(e.contains("did you mean `params.unit`?"), "{e}");
        assert!(e.contains("pb.yml line 5"), "{e}");
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
