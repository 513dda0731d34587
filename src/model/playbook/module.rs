//! Modules: reusable runbook parts a playbook step calls with `use:`.
//!
//! A composite module (`modules/NAME.yml`) is steps in playbook syntax
//! with `params`; a call expands into those steps (ids `CALL.STEP`) when
//! the playbook is loaded, so the DAG, the plan and the executor see
//! ordinary steps. A script module (`modules/NAME/` with `module.yml` and
//! an executable `run`) is one step whose program runs on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::model::error::{suggest, Error, Result};
use crate::model::playbook::StepSpec;

/// What module files are called in errors.
pub const WHAT: &str = "module";

/// Largest script a script module may ship (it travels on stdin).
const MAX_SCRIPT: u64 = 1 << 20;

/// One parameter as declared.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// What the parameter means, for the people calling the module.
    pub description: String,
    /// The value when the call gives none; without one the parameter is
    /// required.
    pub default: Option<serde_json::Value>,
}

/// A composite module file (`modules/NAME.yml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositeFile {
    /// What the module does.
    pub description: Option<String>,
    /// Parameters, seen by the steps' templates as `params.NAME`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// The steps, in playbook syntax; they take their hosts, `when` and
    /// ordering from the call.
    pub steps: Vec<StepSpec>,
    /// Cleanup steps: they run after `steps` on every host that began the
    /// call, whether the run finished, was stopped (cancel, SIGTERM, the
    /// window), aborted at `max_fail_percentage` or failed elsewhere. A
    /// host that failed one of the call's steps runs them too unless the
    /// module has `on_failure` steps, which then decide what it is left as.
    #[serde(default)]
    pub always: Vec<StepSpec>,
    /// Bound on each `always` step on one host (default 60s): cleanup
    /// must end even when the host does not answer.
    pub always_timeout: Option<String>,
}

/// How long an `always` step may take on one host unless the module says.
pub const ALWAYS_TIMEOUT: Duration = Duration::from_secs(60);

/// A script module's `module.yml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptFile {
    /// What the module does.
    pub description: String,
    /// Parameters, passed to the program in its input JSON.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Whether the program honours `check: true` (changes nothing and
    /// says what it would do): then a plan runs it.
    #[serde(default)]
    pub check: bool,
    /// How long the program may run (default 60s).
    pub timeout: Option<String>,
}

/// A validated script module, ready to run on hosts.
#[derive(Debug, Clone)]
pub struct ScriptModule {
    /// The module's name (the report's `name`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The `run` program's bytes.
    pub program: Vec<u8>,
    /// Whether it honours `check: true`.
    pub check: bool,
    /// Its time limit.
    pub timeout: Duration,
    /// The call's parameters, defaults filled in.
    pub params: serde_json::Value,
}

/// Where a module was found.
#[derive(Debug, Clone)]
pub enum Found {
    /// `NAME.yml`.
    Composite(PathBuf),
    /// `NAME/` with `module.yml` and `run`.
    Script(PathBuf),
}

/// Module names: what can safely be a file name.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a module name; use lowercase letters, digits, `-` and `_`",
            name.escape_default()
        ))
    }
}

/// Find a module along the search path: the first directory holding
/// `NAME.yml` or `NAME/module.yml` wins.
pub fn find(name: &str, search: &[PathBuf]) -> Option<Found> {
    for dir in search {
        let file = dir.join(format!("{name}.yml"));
        if file.is_file() {
            return Some(Found::Composite(file));
        }
        let sub = dir.join(name);
        if sub.join("module.yml").is_file() {
            return Some(Found::Script(sub));
        }
    }
    None
}

/// Every module name along the search path, for "did you mean".
pub fn known(search: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for dir in search {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = if p.is_dir() && p.join("module.yml").is_file() {
                p.file_name().map(|n| n.to_string_lossy().into_owned())
            } else if p.extension().is_some_and(|x| x == "yml") {
                p.file_stem().map(|n| n.to_string_lossy().into_owned())
            } else {
                None
            };
            names.extend(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The call's `with:` checked against the module's params: unknown names
/// (with the nearest known one) and missing required ones are errors;
/// defaults fill the rest. `Err` is (param, message, suggestion).
pub fn bind_params(
    declared: &BTreeMap<String, ParamSpec>,
    with: &BTreeMap<String, serde_json::Value>,
) -> std::result::Result<serde_json::Value, (String, String, Option<String>)> {
    for k in with.keys() {
        if !declared.contains_key(k) {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            return Err((
                k.clone(),
                format!(
                    "unknown parameter `{k}`; the module takes {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                suggest(k, known.iter().copied()),
            ));
        }
    }
    let mut out = serde_json::Map::new();
    for (k, spec) in declared {
        match (with.get(k), &spec.default) {
            (Some(v), _) | (None, Some(v)) => {
                out.insert(k.clone(), v.clone());
            }
            (None, None) => {
                return Err((
                    k.clone(),
                    format!(
                        "missing required parameter `{k}` ({})",
                        spec.description.trim()
                    ),
                    None,
                ))
            }
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Read a script module's directory: `module.yml` parsed strictly, `run`
/// present, executable and at most 1 MiB.
pub fn load_script(dir: &Path) -> Result<(ScriptFile, Vec<u8>, Duration)> {
    let meta_path = dir.join("module.yml");
    let text = crate::model::yaml::read_bounded(&meta_path, WHAT)?;
    let file: ScriptFile = crate::model::yaml::parse(&text, &meta_path, WHAT)?;
    let timeout = match &file.timeout {
        Some(t) => crate::model::parse_duration(t).map_err(|m| {
            Error::invalid(
                WHAT,
                "timeout",
                m,
                crate::model::yaml::locate(&text, &meta_path, &["timeout"]),
            )
        })?,
        None => Duration::from_secs(60),
    };
    let run = dir.join("run");
    let bad = |m: String| Error::invalid(WHAT, "run", m, None);
    let meta = std::fs::metadata(&run).map_err(|e| {
        bad(format!(
            "{}: {e}; a script module needs an executable `run`",
            run.display()
        ))
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad(format!(
                "{} is not an executable file (chmod +x it; start it with a #! line)",
                run.display()
            )));
        }
    }
    if meta.len() > MAX_SCRIPT {
        return Err(bad(format!("{} is larger than 1 MiB", run.display())));
    }
    let program = std::fs::read(&run).map_err(|e| Error::io("read", &run, e))?;
    if program.len() as u64 > MAX_SCRIPT {
        return Err(bad(format!("{} is larger than 1 MiB", run.display())));
    }
    if !program.starts_with(b"#!") {
        return Err(bad(format!(
            "{} does not start with a #! line naming its interpreter",
            run.display()
        )));
    }
    Ok((file, program, timeout))
}

/// What a script module's program reported, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptReport {
    /// It changed something (or, in check mode, would).
    pub changed: bool,
    /// It failed; `msg` says why.
    pub failed: bool,
    /// What it said.
    pub msg: String,
    /// Before and after, as text, when it said.
    pub diff: Option<(String, String)>,
}

#[derive(Deserialize)]
struct Printed {
    #[serde(default)]
    changed: bool,
    #[serde(default)]
    failed: bool,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    diff: Option<PrintedDiff>,
}

#[derive(Deserialize)]
struct PrintedDiff {
    #[serde(default)]
    before: serde_json::Value,
    #[serde(default)]
    after: serde_json::Value,
}

/// The input document a script module reads on stdin.
pub fn input_json(
    params: &serde_json::Value,
    check: bool,
    host: &crate::model::inventory::Host,
) -> Vec<u8> {
    serde_json::json!({
        "params": params,
        "check": check,
        "host": {
            "name": host.name,
            "address": host.address,
            "labels": host.labels,
            "vars": host.vars,
        },
    })
    .to_string()
    .into_bytes()
}

/// At most this much of a module's output is quoted in an error.
const QUOTE_MAX: usize = 300;

/// Output quoted safely: lossy UTF-8, control characters escaped, cut.
pub fn quote_output(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(QUOTE_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > QUOTE_MAX {
        out.push_str("...");
    }
    out
}

/// Interpret what the program printed: exactly one JSON object on stdout.
/// A non-zero exit with a valid object is that object, failed.
pub fn read_report(module: &str, code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> ScriptReport {
    let text = String::from_utf8_lossy(stdout);
    let parsed: std::result::Result<Printed, _> = serde_json::from_str(text.trim());
    let fail = |msg: String| ScriptReport {
        changed: false,
        failed: true,
        msg,
        diff: None,
    };
    match (parsed, code) {
        (Ok(p), code) => {
            let show = |v: serde_json::Value| match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => serde_json::to_string_pretty(&other).unwrap_or_default(),
            };
            let exit_failed = code != Some(0);
            let mut msg = p.msg.unwrap_or_default();
            if exit_failed && !p.failed {
                msg = format!("module `{module}` exited with {}: {msg}", exit_words(code));
            }
            ScriptReport {
                changed: p.changed,
                failed: p.failed || exit_failed,
                msg,
                diff: p.diff.map(|d| (show(d.before), show(d.after))),
            }
        }
        (Err(_), Some(124)) => fail(format!("module `{module}` did not finish within its time limit")),
        (Err(e), code) => fail(format!(
            "module `{module}` printed no valid JSON object ({e}; {}): stdout: \"{}\" stderr: \"{}\"",
            exit_words(code),
            quote_output(stdout),
            quote_output(stderr)
        )),
    }
}

fn exit_words(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(default: Option<serde_json::Value>) -> ParamSpec {
        ParamSpec {
            description: "d".into(),
            default,
        }
    }

    #[test]
    fn params_bind_with_defaults_and_refuse_strangers() {
        let declared = BTreeMap::from([
            ("unit".to_string(), p(None)),
            ("timeout".to_string(), p(Some("60s".into()))),
        ]);
        let with = BTreeMap::from([("unit".to_string(), serde_json::json!("demo-web"))]);
        let v = bind_params(&declared, &with).unwrap();
        assert_eq!(v, serde_json::json!({"unit": "demo-web", "timeout": "60s"}));
        let (k, m, s) = bind_params(&declared, &BTreeMap::new()).unwrap_err();
        assert_eq!(k, "unit");
        assert!(m.contains("missing required"), "{m}");
        assert!(s.is_none());
        let with = BTreeMap::from([("unti".to_string(), serde_json::json!("x"))]);
        let (_, m, s) = bind_params(&declared, &with).unwrap_err();
        assert!(m.contains("unknown parameter `unti`"), "{m}");
        assert_eq!(s.as_deref(), Some("unit"));
    }

    #[test]
    fn reports_are_one_json_object() {
        let r = read_report(
            "m",
            Some(0),
            br#"{"changed": true, "msg": "ok", "diff": {"before": "a", "after": {"x": 1}}}"#,
            b"",
        );
        assert!(r.changed && !r.failed);
        assert_eq!(r.diff.as_ref().map(|d| d.0.as_str()), Some("a"));
        let r = read_report("m", Some(3), br#"{"msg": "no"}"#, b"");
        assert!(r.failed && r.msg.contains("exit status 3"), "{}", r.msg);
        let r = read_report("m", Some(0), b"hello\x1b[31m\n{}", b"oops");
        assert!(
            r.failed && r.msg.contains("printed no valid JSON"),
            "{}",
            r.msg
        );
        assert!(
            r.msg.contains("\\u{1b}") && r.msg.contains("oops"),
            "{}",
            r.msg
        );
        let long = vec![b'x'; 5000];
        let r = read_report("m", Some(0), &long, b"");
        assert!(
            r.msg.len() < 1000 && r.msg.contains("..."),
            "{}",
            r.msg.len()
        );
        assert!(read_report("m", Some(124), b"", b"")
            .msg
            .contains("time limit"));
    }

    #[test]
    fn names_are_plain() {
        assert!(validate_name("drain-restart").is_ok());
        for bad in ["", "../x", "a/b", "A", "-x", "a b", "a.yml"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
