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
