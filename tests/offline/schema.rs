//! The shipped JSON Schemas (schema/*.schema.json) are exactly what the
//! Rust types generate: editing a playbook/inventory type without
//! regenerating the schema fails here, with the command that fixes it.

use std::process::Command;

fn generated(kind: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["schema", kind])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shipped_schemas_match_the_types() {
    for kind in ["playbook", "inventory", "module", "script-module"] {
        let path = format!("{}/schema/{kind}.schema.json", env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        let now = generated(kind);
        assert!(
            shipped == now,
            "{path} is out of sync with the Rust types; regenerate it with:\n    cargo run -q -- schema {kind} > schema/{kind}.schema.json"
        );
    }
}

#[test]
fn schemas_are_strict_and_describe_the_format() {
    let pb: serde_json::Value = serde_json::from_str(&generated("playbook")).unwrap();
    assert_eq!(pb["additionalProperties"], false);
    assert_eq!(pb["required"], serde_json::json!(["name", "steps"]));
    let step = &pb["$defs"]["StepSpec"];
    assert_eq!(step["additionalProperties"], false, "{step}");
    assert_eq!(step["required"], serde_json::json!(["id"]), "{step}");
    for key in ["target", "needs", "when", "serial", "service", "wait"] {
        assert!(
            step["properties"].get(key).is_some(),
            "step lacks {key}: {step}"
        );
    }
    let states: Vec<&str> = pb["$defs"]["ServiceState"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["const"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["started", "stopped", "restarted", "reloaded"]);
    // The hand-written parts: a target is a string or a non-empty list;
    // serial is a count or a percentage.
    assert_eq!(pb["$defs"]["Target"]["oneOf"][1]["minItems"], 1);
    assert_eq!(pb["$defs"]["Serial"]["oneOf"][0]["minimum"], 1);

    let inv: serde_json::Value = serde_json::from_str(&generated("inventory")).unwrap();
    assert_eq!(inv["additionalProperties"], false);
    let host = &inv["$defs"]["HostSpec"];
    assert!(host["properties"].get("become").is_some(), "{host}");
    assert!(host["properties"].get("become_").is_none(), "{host}");
    let t = inv["$defs"]["Transport"].to_string();
    assert!(t.contains("\"ssh\"") && t.contains("\"local\""), "{t}");
}
