//! Usage errors through the real binary: a typo on the command line is
//! invalid input (exit 1; `health` 3, the monitoring convention for
//! unknown), never clap's own 2, which drover uses for "a host failed" and
//! `plan --detailed-exitcode` for "changes pending". Help and version
//! succeed. Offline: nothing here gets as far as reading a file.

use std::path::Path;
use std::process::{Command, Output};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PLAN: [&str; 6] = [
    "plan",
    "examples/nightly-restart.yml",
    "-i",
    "examples/inventory.yml",
    "--facts",
    "examples/facts.json",
];

#[test]
fn unknown_flag_exits_1_with_clap_text_on_stderr() {
    let o = drover(&["check", "examples/nightly-restart.yml", "--bogus"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--bogus"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "text errors go to stderr only");
}

#[test]
fn missing_argument_exits_1() {
    let o = drover(&["plan", "examples/nightly-restart.yml"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--inventory"), "{}", stderr(&o));
}

#[test]
fn bad_value_exits_1() {
    let o = drover(&["schema", "playbok"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    let o = drover(&["--color", "sometimes", "schema", "playbook"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let o = drover(&[]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    let o = drover(&["restart-everything"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
}

/// The case that matters to CI: 2 would read as "changes pending".
#[test]
fn detailed_exitcode_plan_with_a_typo_exits_1() {
    let mut args = PLAN.to_vec();
    args.extend(["--detailed-exitcode", "--limt", "role:web"]);
    let o = drover(&args);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    // The same command line without the typo does report pending changes.
    let mut args = PLAN.to_vec();
    args.push("--detailed-exitcode");
    assert_eq!(code(&drover(&args)), Some(2));
}

#[test]
fn health_usage_errors_exit_3() {
    let o = drover(&["health", "demo-web", "-i", "inv.yml", "--bogus"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--bogus"), "{}", stderr(&o));
    // Missing argument, and a global flag's value before the subcommand.
    let o = drover(&["--color", "never", "health", "demo-web"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    let o = drover(&["-v", "health"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["-V"],
        &["plan", "--help"],
        &["health", "--help"],
        &["help"],
        &["help", "plan"],
    ] {
        let o = drover(args);
        assert_eq!(code(&o), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty(), "{args:?} printed nothing on stdout");
    }
    let o = drover(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("drover "));
    let o = drover(&["plan", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--detailed-exitcode"));
}

#[test]
fn json_usage_error_is_the_json_error_document() {
    let mut args = PLAN.to_vec();
    args.extend(["--format", "json", "--bogus"]);
    let o = drover(&args);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {}", stderr(&o)));
    assert_eq!(v["error"], "invalid argument");
    assert_eq!(v["code"], 400);
    let details = v["details"].as_str().unwrap();
    assert!(details.contains("--bogus"), "{details}");
    assert!(!details.contains('\n'), "{details}");

    let o = drover(&["health", "demo-web", "--format=json", "--bogus"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["code"], 400);
}
