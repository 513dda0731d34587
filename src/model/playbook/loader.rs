//! Module calls expanded into the flat step list: composite modules'
//! steps with what the call hands down, script modules as one step.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::Source;
use super::WHAT;
use crate::model::error::{suggest, Error, Result};
use crate::model::playbook::limit::parse_limit;
use crate::model::playbook::line_starts;
use crate::model::playbook::parse::StepParser;
use crate::model::playbook::Group;
use crate::model::playbook::Limit;
use crate::model::playbook::Step;
use crate::model::playbook::StepSpec;
use crate::model::playbook::TargetSpec;
use crate::model::template::Templates;
use crate::model::yaml;

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
pub(super) struct Inherit {
    /// `CALL.` (nested: `OUTER.CALL.`).
    prefix: String,
    target: Option<Spanned<TargetSpec>>,
    when: Option<Spanned<String>>,
    ignore_maintenance: Option<bool>,
    max_fail_percentage: Option<Spanned<f64>>,
    /// The outermost call has `serial`: the steps are batched as a group.
    in_group: bool,
    /// The call's `group_by`/`max_unavailable`.
    limit: Option<Arc<Limit>>,
    /// The call site, appended to errors in the module.
    note: String,
}

/// A step as written: in which text, at which index, with which full id,
/// and what the module call it sits in hands down (None: the playbook's
/// own step).
#[derive(Clone, Copy)]
pub(super) struct StepSite<'a> {
    src: Source<'a>,
    k: usize,
    spec: &'a StepSpec,
    full_id: &'a str,
    inh: Option<&'a Inherit>,
}

/// Builds the flat step list, expanding module calls.
pub(super) struct Loader<'t> {
    pub(super) templates: &'t mut Templates,
    pub(super) inputs: &'t mut Vec<crate::model::Input>,
    pub(super) search: &'t [PathBuf],
    pub(super) steps: Vec<Step>,
    pub(super) mfp_given: Vec<bool>,
    /// A call's id → the ids of the steps it expanded into (`needs: [CALL]`).
    pub(super) aliases: std::collections::HashMap<String, Vec<String>>,
    /// The calls being expanded, outermost first: `step (file line N) uses NAME`.
    pub(super) chain: Vec<(String, String)>,
}

impl Loader<'_> {
    /// The steps, `needs` naming a call replaced by the call's steps.
    pub(super) fn finish(self) -> Result<(Vec<Step>, Vec<bool>)> {
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
    pub(super) fn list(
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
                Some(crate::model::playbook::module::Found::Composite(file)) => {
                    let entry = match needs {
                        Some(n) => n,
                        None => self
                            .steps
                            .last()
                            .map(|s| vec![s.id.clone()])
                            .unwrap_or_default(),
                    };
                    let site = StepSite {
                        src,
                        k,
                        spec,
                        full_id: &full_id,
                        inh,
                    };
                    let ids = self.call(site, &file, entry)?;
                    self.aliases.insert(full_id.clone(), ids.clone());
                    prev = Some(ids.clone());
                    ids
                }
                other => {
                    let script = match other {
                        Some(crate::model::playbook::module::Found::Script(dir)) => {
                            Some(self.script(src, k, spec, &dir)?)
                        }
                        _ => None,
                    };
                    let site = StepSite {
                        src,
                        k,
                        spec,
                        full_id: &full_id,
                        inh,
                    };
                    self.step(site, needs, script)?;
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
    ) -> Result<crate::model::playbook::module::Found> {
        let at = src.pos(u.referenced);
        let name = &u.value;
        crate::model::playbook::module::validate_name(name).map_err(|m| {
            Error::invalid(WHAT, "use", format!("step `{step}`: {m}"), Some(at.clone()))
        })?;
        crate::model::playbook::module::find(name, self.search).ok_or_else(|| {
            let known = crate::model::playbook::module::known(self.search);
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
        declared: &BTreeMap<String, crate::model::playbook::module::ParamSpec>,
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
        crate::model::playbook::module::bind_params(declared, &rendered).map_err(|(k, m, sugg)| {
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
    ) -> Result<Arc<crate::model::playbook::module::ScriptModule>> {
        let note = format!(
            "module {} called by step `{}` at {}",
            dir.display(),
            spec.id.value,
            src.pos(spec.id.referenced)
        );
        let (file, program, timeout) = crate::model::playbook::module::load_script(dir)
            .map_err(|e| e.in_call(crate::model::playbook::module::WHAT, &note))?;
        let params = self.bind(src, k, spec, &file.params, &dir.join("module.yml"))?;
        self.record_input(&dir.join("run"), &program);
        let name = spec
            .use_
            .as_ref()
            .map(|u| u.value.clone())
            .unwrap_or_default();
        Ok(Arc::new(crate::model::playbook::module::ScriptModule {
            name,
            dir: dir.to_path_buf(),
            program,
            check: file.check,
            timeout,
            params,
        }))
    }

    /// A plain step (or a script call), with what a call hands down.
    fn step(
        &mut self,
        site: StepSite<'_>,
        needs: Option<Vec<String>>,
        script: Option<Arc<crate::model::playbook::module::ScriptModule>>,
    ) -> Result<()> {
        let StepSite {
            src,
            k,
            spec,
            full_id,
            inh,
        } = site;
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
        let own = parse_limit(src, k, &spec)?.map(Arc::new);
        step.limit = own.or_else(|| inh.and_then(|i| i.limit.clone()));
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
    fn call(&mut self, site: StepSite<'_>, file: &Path, entry: Vec<String>) -> Result<Vec<String>> {
        let StepSite {
            src,
            k,
            spec,
            full_id,
            inh,
        } = site;
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
        let limit = parse_limit(src, k, spec)?.map(Arc::new);
        if limit.is_some() && spec.serial.is_none() && inh.is_none() {
            return Err(Error::invalid(
                WHAT,
                format!("steps[{k}].group_by"),
                format!("step `{}`: `group_by` on a module call needs `serial`, so a host's group stays claimed through all of the module's steps (drained to undrained)", spec.id.value),
                spec.group_by.as_ref().map(|g| src.pos(g.referenced)),
            )
            .with_suggestion(Some("serial: 1".into())));
        }
        let text = yaml::read_bounded(file, crate::model::playbook::module::WHAT)?;
        self.record_input(file, text.as_bytes());
        let note = format!(
            "in module {} called by step `{}` at {site}",
            file.display(),
            spec.id.value
        );
        let module: crate::model::playbook::module::CompositeFile =
            yaml::parse(&text, file, crate::model::playbook::module::WHAT)
                .map_err(|e| e.in_call(crate::model::playbook::module::WHAT, &note))?;
        if module.steps.is_empty() {
            return Err(Error::invalid(
                crate::model::playbook::module::WHAT,
                "steps",
                format!("module `{name}` has no steps"),
                yaml::locate(&text, file, &["steps"]),
            )
            .in_call(crate::model::playbook::module::WHAT, &note));
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
                limit: limit.clone().or_else(|| i.limit.clone()),
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
                limit: limit.clone(),
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
        let produced = match produced {
            Ok(ids) => self.always(msrc, &module, &child, full_id, ids),
            Err(e) => Err(e),
        };
        self.chain.pop();
        self.templates.leave_params(scope);
        let produced =
            produced.map_err(|e| e.in_call(crate::model::playbook::module::WHAT, &note))?;
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
    if i.in_group && spec.group_by.is_some() {
        return refuse(
            "group_by",
            "the call's `group_by` claims each batch's groups through all the module's steps; drop it here",
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
