//! The bad-input corpus: every malformed or dangerous file under
//! tests/corpus must be refused by `drover check` with exit 1, a JSON error
//! of code 400, the expected message, field path and position — and the
//! generated hostile inputs (huge, deeply nested, alias bombs) likewise.

use std::path::{Path, PathBuf};
use std::process::Command;

fn drover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover"))
}

struct Expect {
    message: String,
    suggest: Option<String>,
    field: Option<String>,
    /// `# at: LINE:COLUMN`, required: every error points at its place.
    at: (u64, u64),
    /// `# file: NAME`: the name the position gives, when it is not the
    /// case's own (a file of a directory case, a program's output).
    file: Option<String>,
}

/// A case's header: the `# key: value` lines of the file, or of the
/// `EXPECT` file of a directory case (drover reads only `*.yml` there).
fn header(path: &Path) -> Expect {
    let text = if path.is_dir() {
        std::fs::read_to_string(path.join("EXPECT")).unwrap()
    } else {
        std::fs::read_to_string(path).unwrap()
    };
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {k}: ")))
            .map(str::to_string)
    };
    Expect {
        message: get("expect")
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display())),
        suggest: get("suggest"),
        field: get("field"),
        at: get("at")
            .and_then(|a| {
                let (l, c) = a.split_once(':')?;
                Some((l.parse().ok()?, c.parse().ok()?))
            })
            .unwrap_or_else(|| panic!("{} has no `# at: LINE:COLUMN` line", path.display())),
        file: get("file"),
    }
}

/// Run check and return (exit code, parsed JSON error).
fn check(playbook: &Path, inventory: &Path) -> (i32, serde_json::Value) {
    let out = drover()
        .args(["check", "--format", "json", "-i"])
        .arg(inventory)
        .arg(playbook)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: stdout is not a JSON error ({e}): {stdout} / stderr {}",
            playbook.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn assert_case(file: &Path, what: &str, code: i32, json: &serde_json::Value) {
    let shown = file.file_name().unwrap().to_string_lossy().into_owned();
    assert_case_shown(file, &shown, what, code, json)
}

/// [`assert_case`] for a corpus file checked under another name (a
/// script module's `module.yml`).
fn assert_case_shown(file: &Path, shown: &str, what: &str, code: i32, json: &serde_json::Value) {
    let exp = header(file);
    let name = file.display();
    assert_eq!(code, 1, "{name}: exit code");
    assert_eq!(json["code"], 400, "{name}: {json}");
    // The class: the file the error is about, never another one's.
    assert_eq!(
        json["error"],
        format!("{what} is invalid"),
        "{name}: {json}"
    );
    let details = json["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(&exp.message),
        "{name}: `{details}` lacks `{}`",
        exp.message
    );
    // Every error names a position in the file it is about.
    let fname = exp.file.clone().unwrap_or_else(|| shown.to_string());
    assert!(
        details.contains(&format!("{fname} line ")) && details.contains(" column "),
        "{name}: no position in `{details}`"
    );
    let (l, c) = exp.at;
    assert!(
        details.contains(&format!("{fname} line {l} column {c}")),
        "{name}: want line {l} column {c} in `{details}`"
    );
    if let Some(f) = &exp.field {
        assert!(
            details.starts_with(&format!("{f}: ")),
            "{name}: want field `{f}` in `{details}`"
        );
    }
    if let Some(s) = &exp.suggest {
        assert!(
            details.contains(&format!("did you mean `{s}`?")),
            "{name}: want suggestion `{s}` in `{details}`"
        );
    }
    // `check --format json` also lists the error as a diagnostic, with the
    // same position, field and suggestion as separate values.
    assert_eq!(json["ok"], false, "{name}: {json}");
    let d = &json["diagnostics"][0];
    assert!(
        d["file"].as_str().unwrap_or_default().ends_with(&fname),
        "{name}: diagnostic file in {d}"
    );
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(l), Some(c)),
        "{name}: {d}"
    );
    assert!(
        details.contains(d["message"].as_str().unwrap_or("?")),
        "{name}: diagnostic message in {d}"
    );
    if let Some(f) = &exp.field {
        assert_eq!(d["field"], f.as_str(), "{name}: {d}");
    }
    if let Some(s) = &exp.suggest {
        assert_eq!(d["suggestion"], s.as_str(), "{name}: {d}");
    }
}

fn corpus(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    v
}

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn bad_playbooks_are_refused_with_position() {
    let files = corpus("playbook");
    assert!(files.len() >= 30, "corpus shrank to {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let (code, json) = check(f, &base().join("inventory.yml"));
        if let Err(e) = std::panic::catch_unwind(|| assert_case(f, "playbook", code, &json)) {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_inventories_are_refused_with_position() {
    let files = corpus("inventory");
    let mut failures = Vec::new();
    for f in &files {
        let (code, json) = check(&base().join("ok.yml"), f);
        if let Err(e) = std::panic::catch_unwind(|| assert_case(f, "inventory", code, &json)) {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every entry of a corpus directory, whatever it is (executables, directories).
fn entries(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(base().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn bad_dynamic_and_directory_inventories_are_refused_with_position() {
    let exec = entries("inventory-exec");
    let dirs = entries("inventory-dir");
    assert!(exec.len() >= 3 && dirs.len() >= 3, "{exec:?} {dirs:?}");
    let mut failures = Vec::new();
    for f in exec.iter().chain(&dirs) {
        let (code, json) = check(&base().join("ok.yml"), f);
        if let Err(e) = std::panic::catch_unwind(|| assert_case(f, "inventory", code, &json)) {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bad module files: each is called by a one-step playbook; the error is
/// the module's, at its place in the module file.
#[test]
fn bad_modules_are_refused_with_position() {
    let mut failures = Vec::new();
    for f in corpus("module") {
        let dir = tempfile::tempdir().unwrap();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        std::fs::create_dir_all(dir.path().join("modules")).unwrap();
        std::fs::copy(&f, dir.path().join("modules").join(format!("{name}.yml"))).unwrap();
        let pb = dir.path().join("p.yml");
        std::fs::write(
            &pb,
            format!("name: t\nsteps:\n  - {{ id: c, use: {name} }}\n"),
        )
        .unwrap();
        let (code, json) = check(&pb, &base().join("inventory.yml"));
        if let Err(e) = std::panic::catch_unwind(|| assert_case(&f, "module", code, &json)) {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    for f in corpus("script-module") {
        let dir = tempfile::tempdir().unwrap();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let mdir = dir.path().join("modules").join(&name);
        std::fs::create_dir_all(&mdir).unwrap();
        std::fs::copy(&f, mdir.join("module.yml")).unwrap();
        std::fs::write(mdir.join("run"), "#!/bin/sh\necho '{}'\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(mdir.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pb = dir.path().join("p.yml");
        std::fs::write(
            &pb,
            format!("name: t\nsteps:\n  - {{ id: c, use: {name} }}\n"),
        )
        .unwrap();
        let (code, json) = check(&pb, &base().join("inventory.yml"));
        if let Err(e) =
            std::panic::catch_unwind(|| assert_case_shown(&f, "module.yml", "module", code, &json))
        {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn check_json_reports_ok_with_no_diagnostics() {
    let out = drover()
        .args(["check", "--format", "json", "-i"])
        .arg(base().join("inventory.yml"))
        .arg(base().join("ok.yml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["diagnostics"], serde_json::json!([]), "{v}");
    assert_eq!(v["hosts"], 3, "{v}");
    // A file that cannot be read is a diagnostic too, without a position.
    let out = drover()
        .args(["check", "--format", "json", "/nonexistent/pb.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "/nonexistent/pb.yml", "{v}");
    assert_eq!(d["line"], serde_json::Value::Null, "{v}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_good_files_pass() {
    let out = drover()
        .args(["check", "-i"])
        .arg(base().join("inventory.yml"))
        .arg(base().join("ok.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hostile(name: &str, text: &str) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    check(&p, &base().join("inventory.yml"))
}

#[test]
fn alias_bomb_is_bounded() {
    // A billion-laughs document hidden in `vars`, which accepts any value.
    let mut text = String::from("name: t\nvars:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        text.push_str(&format!(
            "  {cur}: &{cur} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    text.push_str("steps:\n  - { id: a, service: { name: x, state: started } }\n");
    let start = std::time::Instant::now();
    let (code, json) = hostile("bomb.yml", &text);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["code"], 400);
    let d = json["details"].as_str().unwrap();
    assert!(d.contains("alias") || d.contains("budget"), "{d}");
    assert!(d.contains("bomb.yml line "), "{d}");
    assert!(
        start.elapsed().as_secs() < 10,
        "alias bomb took {:?}",
        start.elapsed()
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "name: t\nvars: {{ v: {}1{} }}\nsteps: []\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (code, json) = hostile("deep.yml", &text);
    assert_eq!(code, 1, "{json}");
    let d = json["details"].as_str().unwrap();
    assert!(d.contains("deep.yml line 2"), "{d}");
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.yml");
    let f = std::fs::File::create(&p).unwrap();
    // Sparse: 40 MiB without writing them.
    f.set_len(40 * 1024 * 1024).unwrap();
    let (code, json) = check(&p, &base().join("inventory.yml"));
    assert_eq!(code, 1, "{json}");
    assert!(
        json["details"]
            .as_str()
            .unwrap()
            .contains("larger than the"),
        "{json}"
    );
}

#[test]
fn an_endless_file_is_read_only_up_to_the_bound() {
    // /dev/zero claims size 0 and never ends: the bound is on the bytes read.
    let start = std::time::Instant::now();
    let (code, json) = check(Path::new("/dev/zero"), &base().join("inventory.yml"));
    assert_eq!(code, 1, "{json}");
    assert!(
        json["details"]
            .as_str()
            .unwrap()
            .contains("larger than the"),
        "{json}"
    );
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, json) = check(
        Path::new("/nonexistent/pb.yml"),
        &base().join("inventory.yml"),
    );
    assert_eq!(code, 1);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/pb.yml"),
        "{json}"
    );
}

#[test]
fn text_errors_show_the_line_with_a_caret_and_no_colour_off_a_tty() {
    let out = drover()
        .current_dir(base())
        .args(["check", "-i", "inventory/bad-port.yml", "ok.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    // The first line as before; the snippet below it.
    assert!(
        lines[0].starts_with("error: inventory is invalid: hosts.web-1.port: ")
            && lines[0].ends_with("at inventory/bad-port.yml line 5 column 18"),
        "{err}"
    );
    assert_eq!(
        &lines[1..],
        [
            " --> inventory/bad-port.yml:5:18",
            "  |",
            "5 |   web-1: { port: 70000 }",
            "  |                  ^^^^^",
        ],
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err}");
}
