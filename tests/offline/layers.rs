//! The layers of src/ import only downwards: cmd → render → engine →
//! remote → model. A file that names a layer above its own (`crate::cmd`
//! from the engine, `crate::remote` from the model, ...) fails this test,
//! and so do clap, printing or a tokio runtime below the command layer.
//! Offline: reads the source tree only.

use std::path::{Path, PathBuf};

/// Lowest first: a layer may use itself and those before it.
const LAYERS: [&str; 5] = ["model", "remote", "engine", "render", "cmd"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code lines (comments dropped: a doc link is no import).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("read source");
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.starts_with("//"))
        .collect()
}

/// Every layer a line names through `crate::LAYER`.
fn named_layers(line: &str) -> Vec<&'static str> {
    LAYERS
        .iter()
        .copied()
        .filter(|l| line.contains(&format!("crate::{l}")))
        .collect()
}

fn layer_files() -> Vec<(&'static str, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for layer in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer}/ has no Rust files");
        out.extend(files.into_iter().map(|f| (layer, f)));
    }
    out
}

#[test]
fn every_layer_imports_only_layers_below_it() {
    let mut wrong = Vec::new();
    for (layer, file) in layer_files() {
        let mine = rank(layer).unwrap_or(0);
        for (n, line) in code_lines(&file) {
            if line.contains("crate::{") {
                wrong.push(format!(
                    "{}:{n}: name the layer in each import: {line}",
                    file.display()
                ));
            }
            for other in named_layers(&line) {
                if rank(other).is_some_and(|r| r > mine) {
                    wrong.push(format!(
                        "{}:{n}: {layer} uses {other}: {line}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_command_layer_parses_arguments_prints_or_owns_a_runtime() {
    let forbidden = [
        "clap",
        "println!",
        "eprintln!",
        "print!(",
        "out!(",
        "outln!(",
        "runtime::Builder",
        "indicatif",
        "std::process::exit",
    ];
    let mut wrong = Vec::new();
    for (layer, file) in layer_files() {
        if layer == "cmd" {
            continue;
        }
        for (n, line) in code_lines(&file) {
            for f in forbidden {
                if line.contains(f) {
                    wrong.push(format!("{}:{n}: `{f}` in {layer}: {line}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "command-layer work below it:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn src_holds_only_the_layers_and_the_entry_points() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match name.as_deref() {
            Some("lib.rs" | "main.rs") => {}
            Some(n) if path.is_dir() && rank(n).is_some() => {}
            _ => stray.push(path.display().to_string()),
        }
    }
    assert!(stray.is_empty(), "files outside the layers: {stray:?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    // The checker itself must be able to fail.
    assert_eq!(named_layers("use crate::engine::job::Job;"), ["engine"]);
    assert!(rank("engine") > rank("remote"));
}

/// The sibling modules a line of a file in folder `dir` (module path
/// `module`, e.g. `crate::model`) names: `crate::model::X` and, from a
/// file directly in `dir`, `super::X` and `super::{X, Y}`.
fn siblings_named(line: &str, module: &str, direct: bool, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut prefixes = vec![format!("{module}::")];
    if direct {
        prefixes.push("super::".to_string());
    }
    for prefix in &prefixes {
        let mut rest = line;
        while let Some(i) = rest.find(prefix.as_str()) {
            // `crate::model::` must not match inside `crate::model::x::y` of
            // another folder's path: require a boundary before it.
            let before = rest[..i].chars().last();
            let after = &rest[i + prefix.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let group = after.strip_prefix('{');
            let idents: Vec<&str> = match group {
                Some(g) => g
                    .split(['}', ','])
                    .map(|s| s.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![after
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")],
            };
            for id in idents {
                if names.iter().any(|n| n == id) && !out.iter().any(|o| o == id) {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}

/// A cycle in `edges`, as the path that closes it, if there is one.
fn find_cycle(edges: &std::collections::BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

/// The import graph between the files and subfolders of each folder
/// (its mod.rs, the folder's own face, left out) has no cycle: a
/// newcomer can read a folder bottom-up.
#[test]
fn no_folder_has_an_import_circle_between_its_parts() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders = vec![src.clone()];
    let mut circles = Vec::new();
    while let Some(dir) = folders.pop() {
        let mut parts: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("read folder") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                folders.push(path.clone());
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                parts.push((name, path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                    parts.push((stem, path));
                }
            }
        }
        let rel = dir.strip_prefix(&src).unwrap();
        let module = std::iter::once("crate".to_string())
            .chain(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned()),
            )
            .collect::<Vec<_>>()
            .join("::");
        let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
        let mut edges = std::collections::BTreeMap::new();
        for (name, path) in &parts {
            let mut files = Vec::new();
            if path.is_dir() {
                rust_files(path, &mut files);
            } else {
                files.push(path.clone());
            }
            let mut named = Vec::new();
            for f in files {
                // `super::` means this folder only from a file directly in
                // it or from a subfolder's mod.rs.
                let direct = f.parent() == Some(dir.as_path())
                    || (f.file_name().is_some_and(|n| n == "mod.rs")
                        && f.parent().and_then(Path::parent) == Some(dir.as_path()));
                let text = std::fs::read_to_string(&f).expect("read source");
                // Unit tests may reach anywhere; the graph is of the code.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                    for s in siblings_named(line, &module, direct, &names) {
                        if &s != name && !named.contains(&s) {
                            named.push(s);
                        }
                    }
                }
            }
            edges.insert(name.clone(), named);
        }
        if let Some(c) = find_cycle(&edges) {
            circles.push(format!("{}: {}", dir.display(), c.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles inside a folder:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    let names = vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        siblings_named("use crate::model::b::X;", "crate::model", false, &names),
        ["b"]
    );
    assert_eq!(
        siblings_named("use super::{a::Y, b};", "crate::model", true, &names),
        ["a", "b"]
    );
    assert!(siblings_named(
        "use crate::engine::model::b;",
        "crate::model",
        false,
        &names
    )
    .is_empty());
    let mut edges = std::collections::BTreeMap::new();
    edges.insert("a".to_string(), vec!["b".to_string()]);
    edges.insert("b".to_string(), vec!["a".to_string()]);
    assert!(find_cycle(&edges).is_some());
    edges.insert("b".to_string(), vec![]);
    assert!(find_cycle(&edges).is_none());
}
