//! minijinja templating of playbook strings and `when:` conditions.
//!
//! Templates are compiled once per playbook and rendered per host against a
//! context built once per host, so planning 10,000 hosts stays cheap.
//! Undefined variables are errors (strict), never empty strings.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectExt, Value};
use minijinja::{Environment, UndefinedBehavior};

use crate::model::error::{Error, Result};
use crate::model::inventory::Host;
use crate::model::unit::UnitName;

enum Item {
    /// No template syntax: used as is (unit names pre-validated).
    Literal(String),
    /// A template registered in the environment under this name; the flag
    /// says whether it reads `host` (else it renders the same everywhere).
    /// The last field is the module call whose `params` it sees.
    Template(String, bool, Option<usize>),
    /// A `when:` expression registered as a boolean-rendering template.
    Condition(String, bool, Option<usize>),
}

/// Text a caller sent (a request's query or body, a command-line value
/// such as `--reason`): data, never a template. It does not turn into a
/// `&str` for the template functions; the one way into a playbook is
/// [`Templates::set_literal`], which keeps it verbatim, so `{{ 7*7 }}`
/// sent as a reason is shown as `{{ 7*7 }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerText(String);

impl CallerText {
    /// Wrap what a caller sent.
    pub fn new(text: impl Into<String>) -> Self {
        CallerText(text.into())
    }

    /// Empty or only white space.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl std::fmt::Display for CallerText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compiled templates of one playbook.
pub struct Templates {
    env: Environment<'static>,
    items: Vec<Item>,
    vars: Value,
    /// The playbook's own parameters (`params.*` outside module calls).
    top: Value,
    /// Their names: a template outside a module call may read only these.
    declared: Vec<String>,
    /// What each module call's templates see besides vars and host
    /// (`params`, and `failed_step` in `on_failure` steps).
    params: Vec<Value>,
    /// The call whose steps are being compiled, if any.
    scope: Option<usize>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({} items)", self.items.len())
    }
}

/// Per-host values for rendering: `host.*` plus the playbook's `vars`.
pub struct HostContext {
    strict: Value,
    condition: Value,
}

/// Labels in `when:` conditions: a missing label is `none`, so
/// `host.labels.role == 'web'` is simply false on a host without a role.
#[derive(Debug)]
struct Labels(BTreeMap<String, String>);

impl Object for Labels {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        Some(
            self.0
                .get(k)
                .map(|v| Value::from(v.as_str()))
                .unwrap_or(Value::from(())),
        )
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.0.keys().cloned().map(Value::from)))
    }
}

/// What `{{ failed_step }}` renders as until the run knows the step: a
/// marker no user text contains, replaced by [`fill_failed_step`].
pub const FAILED_STEP: &str = "\u{1}drover-failed-step\u{1}";

/// Put the step a host failed at in place of [`FAILED_STEP`].
pub fn fill_failed_step(text: &str, step: &str) -> String {
    text.replace(FAILED_STEP, step)
}

/// Instructions one render may execute: a unit name or a reason takes a
/// few hundred; nested `range()` loops in a playbook would otherwise hold a
/// server's thread and memory for as long as they run.
const RENDER_FUEL: u64 = 2_000_000;

/// Nesting of loops, ifs and calls one render may reach.
const RENDER_RECURSION: usize = 100;

/// The most text one render may produce (1 MiB, the largest unit file).
const RENDER_MAX_BYTES: usize = 1 << 20;

/// Render `t`, stopping once the output passes [`RENDER_MAX_BYTES`].
fn render_bounded<S: serde::Serialize>(
    t: &minijinja::Template<'_, '_>,
    ctx: S,
) -> std::result::Result<String, minijinja::Error> {
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > RENDER_MAX_BYTES {
                return Err(std::io::Error::other("too long"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded(Vec::new());
    t.render_captured_to(ctx, &mut out)?;
    String::from_utf8(out.0).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::BadSerialization,
            "output is not UTF-8",
        )
    })
}

fn has_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl Templates {
    /// A template set with the playbook's variables.
    pub fn new(vars: &BTreeMap<String, serde_json::Value>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RENDER_RECURSION);
        // Templates render unit names and URLs, never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // A value spliced into `ExecStart=/bin/sh -c '...'` or a `--command`
        // must stay one word whatever it holds.
        env.add_filter("shell_quote", |v: Value| match v.as_str() {
            Some(s) => shell_quote(s),
            None => shell_quote(&v.to_string()),
        });
        Ok(Templates {
            env,
            items: Vec::new(),
            vars: Value::from_serialize(vars),
            top: Value::from_serialize(serde_json::Map::new()),
            declared: Vec::new(),
            params: Vec::new(),
            scope: None,
        })
    }

    /// The playbook's bound parameters, seen as `params.*` by the
    /// templates outside module calls (a call's steps see the call's).
    /// Set before any template is added: templates are checked against
    /// the declared names as they are added.
    pub fn set_params(&mut self, params: &crate::model::params::Params) {
        self.top = Value::from_serialize(params.values());
        self.declared = params.values().keys().cloned().collect();
    }

    /// Outside a module call, `params.NAME` must name a declared parameter.
    fn check_params(&self, name: &str) -> std::result::Result<(), String> {
        match self.env.get_template(name) {
            Ok(t) => self.check_params_of(&t),
            Err(_) => Ok(()),
        }
    }

    fn check_params_of(&self, t: &minijinja::Template<'_, '_>) -> std::result::Result<(), String> {
        if self.scope.is_some() {
            return Ok(());
        }
        let mut read: Vec<String> = t.undeclared_variables(true).into_iter().collect();
        read.sort();
        for v in read {
            let Some(p) = v.strip_prefix("params.") else {
                continue;
            };
            if !self.declared.iter().any(|d| d == p) {
                let known = if self.declared.is_empty() {
                    "the playbook declares no `params:`".to_string()
                } else {
                    format!(
                        "the playbook's `params:` declare {}",
                        self.declared
                            .iter()
                            .map(|d| format!("`{d}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let sugg =
                    crate::model::error::suggest(p, self.declared.iter().map(String::as_str))
                        .map(|s| format!(", did you mean `params.{s}`?"))
                        .unwrap_or_default();
                return Err(format!(
                    "`params.{p}` is not a declared parameter; {known}{sugg}"
                ));
            }
        }
        Ok(())
    }

    fn add_template(&mut self, src: &str) -> std::result::Result<usize, String> {
        let id = self.items.len();
        let name = format!("t{id}");
        self.env
            .add_template_owned(name.clone(), src.to_string())
            .map_err(|e| format!("template error: {}", e.detail().unwrap_or(&e.to_string())))?;
        self.check_params(&name)?;
        let per_host = self.reads_host(&name);
        self.items.push(Item::Template(name, per_host, self.scope));
        Ok(id)
    }

    /// Register a string field that may hold a template.
    pub fn add_string(&mut self, src: &str) -> std::result::Result<usize, String> {
        if has_syntax(src) {
            self.add_template(src)
        } else {
            self.items.push(Item::Literal(src.to_string()));
            Ok(self.items.len() - 1)
        }
    }

    /// Make item `id` the caller's text, verbatim: whatever it holds is
    /// rendered as itself, never evaluated.
    pub fn set_literal(&mut self, id: usize, text: &CallerText) -> std::result::Result<(), String> {
        match self.items.get_mut(id) {
            Some(item) => {
                *item = Item::Literal(text.0.clone());
                Ok(())
            }
            None => Err(format!("internal: no template {id}")),
        }
    }

    /// Register a unit name; a literal one is validated now.
    pub fn add_unit_name(&mut self, src: &str) -> std::result::Result<usize, String> {
        if has_syntax(src) {
            self.add_template(src)
        } else {
            let unit = UnitName::parse(src)?;
            self.items.push(Item::Literal(unit.as_str().to_string()));
            Ok(self.items.len() - 1)
        }
    }

    /// Register a `when:` expression.
    pub fn add_expression(&mut self, src: &str) -> std::result::Result<usize, String> {
        // minijinja's expression lexer (2.24) panics ("empty lexer stack")
        // when a `}}` closes the expression and text follows, as in
        // `-}}{{`; a condition never needs one, so it is refused first.
        if src.contains("}}") {
            return Err(
                "bad `when` expression: `}}` cannot appear in it; `when:` is already an expression, write it without `{{ }}` (e.g. `host.labels.role == 'web'`)"
                    .into(),
            );
        }
        // Parse it as an expression first so a condition cannot smuggle in
        // template blocks through the wrapper below.
        self.env.compile_expression(src).map_err(|e| {
            format!(
                "bad `when` expression: {}",
                e.detail().unwrap_or(&e.to_string())
            )
        })?;
        let id = self.items.len();
        let name = format!("w{id}");
        self.env
            .add_template_owned(
                name.clone(),
                format!("{{% if ({src}) %}}1{{% else %}}0{{% endif %}}"),
            )
            .map_err(|e| {
                format!(
                    "bad `when` expression: {}",
                    e.detail().unwrap_or(&e.to_string())
                )
            })?;
        self.check_params(&name)?;
        let per_host = self.reads_host(&name);
        self.items.push(Item::Condition(name, per_host, self.scope));
        Ok(id)
    }

    fn reads_host(&self, name: &str) -> bool {
        self.env
            .get_template(name)
            .map(|t| t.undeclared_variables(false).contains("host"))
            .unwrap_or(true)
    }

    /// Whether a registered item renders differently per host; if not,
    /// callers render it once and reuse the result.
    pub fn is_per_host(&self, id: usize) -> bool {
        match self.items.get(id) {
            Some(Item::Template(_, h, _) | Item::Condition(_, h, _)) => *h,
            _ => false,
        }
    }

    /// Build the context of one host, once.
    pub fn host_context(&self, host: &Host) -> HostContext {
        let host_value = |labels: Value| {
            let mut m = BTreeMap::new();
            m.insert("name", Value::from(host.name.as_str()));
            m.insert("address", Value::from(host.address.as_str()));
            m.insert("labels", labels);
            m.insert("vars", Value::from_serialize(&host.vars));
            Value::from_iter(m)
        };
        let ctx = |h: Value| {
            Value::from_iter([
                ("vars", self.vars.clone()),
                ("params", self.top.clone()),
                ("host", h),
            ])
        };
        HostContext {
            strict: ctx(host_value(Value::from_serialize(&host.labels))),
            condition: ctx(host_value(Value::from_object(Labels(host.labels.clone())))),
        }
    }
    /// Compile the templates added from now on (until [`Templates::leave_params`])
    /// with `params` in their context: the steps of one module call. Returns
    /// the scope to restore afterwards (calls nest).
    pub fn enter_params(&mut self, params: &serde_json::Value) -> Option<usize> {
        self.enter_scope(Value::from_iter([(
            "params",
            Value::from_serialize(params),
        )]))
    }

    /// Like [`Templates::enter_params`], keeping the current call's params
    /// and adding `failed_step`, rendered as [`FAILED_STEP`] until the run
    /// knows which step failed (a module's `on_failure` step).
    pub fn enter_failure_scope(&mut self) -> Option<usize> {
        let mut m = vec![("failed_step", Value::from(FAILED_STEP))];
        if let Some(p) = self.scope.and_then(|s| self.params.get(s)) {
            if let Ok(params) = p.get_attr("params") {
                m.push(("params", params));
            }
        }
        self.enter_scope(Value::from_iter(m))
    }

    fn enter_scope(&mut self, scope: Value) -> Option<usize> {
        self.params.push(scope);
        self.scope.replace(self.params.len() - 1)
    }

    /// Back to the scope [`Templates::enter_params`] returned.
    pub fn leave_params(&mut self, previous: Option<usize>) {
        self.scope = previous;
    }

    /// Render `src` once, now, with `vars` and the current call's `params`
    /// but no host: a module call's `with:` values and its steps' fixed
    /// fields (such as `wait.timeout`).
    pub fn render_static(&self, src: &str) -> std::result::Result<String, String> {
        if !has_syntax(src) {
            return Ok(src.to_string());
        }
        let vars = Value::from_iter([("vars", self.vars.clone()), ("params", self.top.clone())]);
        let ctx = match self.scope.and_then(|s| self.params.get(s)) {
            // The later map wins: a call's `params` hide the playbook's.
            Some(scope) => minijinja::value::merge_maps([vars, scope.clone()]),
            None => vars,
        };
        let t = self.env.template_from_str(src).map_err(render_error)?;
        self.check_params_of(&t)?;
        render_bounded(&t, ctx).map_err(|e| match e.kind() {
                minijinja::ErrorKind::UndefinedError => {
                    "undefined variable (here only `vars.*` and `params.*` exist; `host` is not known yet)".to_string()
                }
                _ => render_error(e),
            })
    }

    /// A host's context, with the module params of a template's scope.
    fn scoped(&self, base: &Value, scope: Option<usize>) -> Value {
        match scope.and_then(|s| self.params.get(s)) {
            // The later map wins: a call's `params` hide the playbook's.
            Some(scope) => minijinja::value::merge_maps([base.clone(), scope.clone()]),
            None => base.clone(),
        }
    }

    /// Render a registered string for one host.
    pub fn render(&self, id: usize, ctx: &HostContext) -> std::result::Result<String, String> {
        match self.items.get(id) {
            Some(Item::Literal(s)) => Ok(s.clone()),
            Some(Item::Template(name, _, scope)) => self
                .env
                .get_template(name)
                .and_then(|t| render_bounded(&t, self.scoped(&ctx.strict, *scope)))
                .map_err(render_error),
            Some(Item::Condition(..)) | None => {
                Err(format!("internal: template {id} is not a string"))
            }
        }
    }

    /// Render a unit name for one host and validate the result.
    pub fn render_unit(
        &self,
        id: usize,
        ctx: &HostContext,
    ) -> std::result::Result<UnitName, String> {
        let s = self.render(id, ctx)?;
        UnitName::parse(&s)
    }

    /// Evaluate a `when:` condition for one host.
    pub fn condition(&self, id: usize, ctx: &HostContext) -> std::result::Result<bool, String> {
        match self.items.get(id) {
            Some(Item::Condition(name, _, scope)) => self
                .env
                .get_template(name)
                .and_then(|t| render_bounded(&t, self.scoped(&ctx.condition, *scope)))
                .map(|s| s == "1")
                .map_err(render_error),
            _ => Err(format!("internal: template {id} is not a condition")),
        }
    }
}

/// Quote `s` as one word for a POSIX shell: wrapped in single quotes,
/// inside which nothing is special, and each `'` written as `'\''` (close
/// the quotes, an escaped quote, reopen). The `shell_quote` template filter.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn render_error(e: minijinja::Error) -> String {
    match e.kind() {
        minijinja::ErrorKind::OutOfFuel => format!(
            "the template takes too long to render (over {RENDER_FUEL} steps); simplify its loops"
        ),
        minijinja::ErrorKind::WriteFailure => format!(
            "the template renders more than {RENDER_MAX_BYTES} bytes; drover's rendered values are at most that"
        ),
        minijinja::ErrorKind::UndefinedError => {
            "undefined variable (check the name under `vars:` or the host's `vars`/`labels`)"
                .to_string()
        }
        _ => e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
    }
}

/// Turn a per-host template failure into an input error naming step and host.
pub fn host_error(
    step: &str,
    host: &str,
    field: &str,
    position: Option<crate::model::error::Position>,
    msg: String,
) -> Error {
    Error::invalid(
        "playbook",
        field.to_string(),
        format!("step `{step}` on host `{host}`: {msg}"),
        position,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A playbook's template cannot hold the process: nested loops run out
    /// of fuel, and a huge output is cut at the bound, each a clear error.
    #[test]
    fn a_runaway_template_fails_with_a_clear_error() {
        let mut t = Templates::new(&BTreeMap::new()).unwrap();
        let inv = crate::model::inventory::Inventory::from_str(
            "hosts:\n  h:\n    address: 10.0.0.1\n",
            std::path::Path::new("inv.yml"),
        )
        .unwrap();
        let ctx = t.host_context(&inv.hosts[0]);
        let spin = t
            .add_string(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            )
            .unwrap();
        let e = t.render(spin, &ctx).unwrap_err();
        assert!(e.contains("takes too long"), "{e}");
        let big = t
            .add_string(
                "{% for i in range(60000) %}0123456789012345678901234567890123456789{% endfor %}",
            )
            .unwrap();
        let e = t.render(big, &ctx).unwrap_err();
        assert!(e.contains("renders more than"), "{e}");
        let ok = t
            .add_string("{% for i in range(3) %}{{ i }}{% endfor %}")
            .unwrap();
        assert_eq!(t.render(ok, &ctx).unwrap(), "012");
    }
    use crate::model::inventory::Inventory;
    use std::path::Path;

    fn host() -> Host {
        Inventory::from_str(
            "hosts:\n  web-1: { labels: { role: web }, vars: { port: 8080 } }\n",
            Path::new("i.yml"),
        )
        .unwrap()
        .hosts
        .remove(0)
    }

    #[test]
    fn renders_vars_and_host() {
        let vars = BTreeMap::from([("svc".to_string(), serde_json::json!("demo-web"))]);
        let mut t = Templates::new(&vars).unwrap();
        let a = t.add_unit_name("{{ vars.svc }}").unwrap();
        let b = t
            .add_string("http://{{ host.name }}:{{ host.vars.port }}/")
            .unwrap();
        let c = t.add_expression("host.labels.role == 'web'").unwrap();
        let d = t.add_expression("host.labels.tier == 'db'").unwrap();
        let ctx = t.host_context(&host());
        assert_eq!(t.render_unit(a, &ctx).unwrap().as_str(), "demo-web.service");
        assert_eq!(t.render(b, &ctx).unwrap(), "http://web-1:8080/");
        assert!(t.condition(c, &ctx).unwrap());
        assert!(!t.condition(d, &ctx).unwrap());
    }

    #[test]
    fn module_params_are_seen_only_by_their_calls_templates() {
        let vars = BTreeMap::from([("svc".to_string(), serde_json::json!("shop"))]);
        let mut t = Templates::new(&vars).unwrap();
        // Outside a call, `params` are the playbook's, and it declares none.
        let e = t.add_string("{{ params.unit }}").unwrap_err();
        assert!(e.contains("not a declared parameter"), "{e}");
        let prev = t.enter_params(&serde_json::json!({"unit": "demo-web", "n": 2}));
        assert_eq!(
            t.render_static("{{ vars.svc }}-{{ params.n }}").unwrap(),
            "shop-2"
        );
        assert!(t
            .render_static("{{ host.name }}")
            .unwrap_err()
            .contains("`host` is not known"));
        let inside = t.add_unit_name("{{ params.unit }}").unwrap();
        let when = t
            .add_expression("params.n == 2 and host.name == 'web-1'")
            .unwrap();
        let outer = t.enter_failure_scope();
        let failure = t
            .add_string("{{ params.unit }} failed at {{ failed_step }}")
            .unwrap();
        t.leave_params(outer);
        t.leave_params(prev);
        let ctx = t.host_context(&host());
        assert_eq!(
            t.render_unit(inside, &ctx).unwrap().as_str(),
            "demo-web.service"
        );
        assert!(t.condition(when, &ctx).unwrap());
        let text = t.render(failure, &ctx).unwrap();
        assert_eq!(
            fill_failed_step(&text, "restart"),
            "demo-web failed at restart"
        );
    }

    #[test]
    fn undefined_is_an_error_not_empty() {
        let mut t = Templates::new(&BTreeMap::new()).unwrap();
        let a = t.add_string("{{ vars.nope }}").unwrap();
        let ctx = t.host_context(&host());
        assert!(t.render(a, &ctx).unwrap_err().contains("undefined"));
        let w = t.add_expression("vars.nope == 1").unwrap();
        assert!(t.condition(w, &ctx).is_err());
    }

    #[test]
    fn shell_quote_makes_one_word() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        let nasty = "a b;c|d&e$(f)`g`\"h\"'i'\\j\nk*?[l]<m>#~!{n}%=";
        assert_eq!(
            shell_quote(nasty),
            "'a b;c|d&e$(f)`g`\"h\"'\\''i'\\''\\j\nk*?[l]<m>#~!{n}%='"
        );
    }

    /// What `sh` makes of a quoted word: the original, as one argument.
    #[test]
    fn shell_quote_survives_a_real_shell() {
        let nasty = "a b;c|d&e$(echo f)`echo g`\"h\"'i'\\j\nk*?[l]<m>#~!{n}%=";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", shell_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    #[test]
    fn shell_quote_is_a_template_filter() {
        let vars = BTreeMap::from([
            ("msg".to_string(), serde_json::json!("it's $(reboot)")),
            ("n".to_string(), serde_json::json!(8080)),
        ]);
        let mut t = Templates::new(&vars).unwrap();
        let a = t
            .add_string(
                "ExecStart=/bin/echo {{ vars.msg | shell_quote }} {{ vars.n | shell_quote }}",
            )
            .unwrap();
        let ctx = t.host_context(&host());
        assert_eq!(
            t.render(a, &ctx).unwrap(),
            "ExecStart=/bin/echo 'it'\\''s $(reboot)' '8080'"
        );
    }

    #[test]
    fn rendered_unit_names_are_checked() {
        let vars = BTreeMap::from([("svc".to_string(), serde_json::json!("x; reboot"))]);
        let mut t = Templates::new(&vars).unwrap();
        let a = t.add_unit_name("{{ vars.svc }}").unwrap();
        let ctx = t.host_context(&host());
        assert!(t.render_unit(a, &ctx).is_err());
        assert!(t.add_expression("x %}{% raw").is_err());
    }

    /// Found by tests/prop_model.rs: these panicked inside minijinja's
    /// expression lexer instead of being refused.
    #[test]
    fn expressions_closing_early_are_refused_not_a_panic() {
        let mut t = Templates::new(&BTreeMap::new()).unwrap();
        for src in [
            "-}}{{",
            "1 }} x",
            "x }}{{ y",
            "{{ host.name == 'a' }}",
            "'}}' == x",
        ] {
            let e = t.add_expression(src).unwrap_err();
            assert!(e.contains("`}}` cannot appear"), "{src}: {e}");
        }
    }
}
