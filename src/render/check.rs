//! `drover check --format json`: the outcome of a check as diagnostics
//! that an editor or a CI job turns into annotations, beside the usual
//! error document's fields (`error`, `details`, `code`) so that readers of
//! either shape find theirs.

use serde_json::{json, Value};

use crate::model::error::Error;

/// What a successful check found (the text line's figures).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The playbook as named.
    pub playbook: String,
    /// The inventory as named, when one was given.
    pub inventory: Option<String>,
    /// Steps in the playbook.
    pub steps: usize,
    /// Waves of the DAG.
    pub waves: usize,
    /// Host tasks, when an inventory was given.
    pub tasks: Option<usize>,
    /// Hosts of the inventory, when one was given.
    pub hosts: Option<usize>,
}

/// The document of a check that passed: `ok`, no diagnostics, the figures.
pub fn passed(c: &Checked) -> Value {
    json!({
        "ok": true,
        "diagnostics": [],
        "playbook": c.playbook,
        "inventory": c.inventory,
        "steps": c.steps,
        "waves": c.waves,
        "tasks": c.tasks,
        "hosts": c.hosts,
    })
}

/// The document of a check that failed: `ok: false`, one diagnostic per
/// error found (drover stops at the first), and the error document's
/// `error`, `details` and `code`.
pub fn failed(e: &Error) -> Value {
    let mut doc = e.to_json();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("ok".into(), Value::Bool(false));
        obj.insert("diagnostics".into(), json!([diagnostic(e)]));
    }
    doc
}

/// One diagnostic: file, line, column, field path, message, suggestion
/// (null where unknown), and what kind of file it is about.
pub fn diagnostic(e: &Error) -> Value {
    match e {
        Error::Parse(d) | Error::Invalid(d) => {
            let pos = d.position.as_ref();
            json!({
                "file": pos.map(|p| p.file.display().to_string()),
                "line": pos.map(|p| p.line),
                "column": pos.map(|p| p.column),
                "field": (!d.field.is_empty()).then_some(&d.field),
                "message": d.message,
                "suggestion": d.suggestion,
                "what": d.what,
            })
        }
        Error::Io { path, .. } => json!({
            "file": path.display().to_string(),
            "line": null,
            "column": null,
            "field": null,
            "message": format!("{e}: {}", e.details()),
            "suggestion": null,
            "what": null,
        }),
        _ => json!({
            "file": null,
            "line": null,
            "column": null,
            "field": null,
            "message": format!("{e}: {}", e.details()),
            "suggestion": null,
            "what": null,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_diagnostic_names_file_position_field_and_suggestion() {
        let e = crate::model::playbook::Playbook::from_str(
            "name: x\nsteps:\n  - { id: a, service: { name: x, stae: started } }\n",
            Path::new("pb.yml"),
        )
        .unwrap_err();
        let doc = failed(&e);
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["code"], 400);
        assert_eq!(doc["error"], "playbook is invalid");
        let d = &doc["diagnostics"][0];
        assert_eq!(d["file"], "pb.yml");
        assert_eq!(d["line"], 3);
        assert_eq!(d["field"], "steps[0].service.stae");
        assert_eq!(d["suggestion"], "state");
        assert!(d["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown field `stae`"));
        let d = diagnostic(&Error::Usage("bad".into()));
        assert_eq!(d["file"], Value::Null);
        assert_eq!(d["message"], "invalid argument: bad");
    }
}
