//! The fenced code blocks of the README and the book, for the tests that
//! run them: `tests/offline/docs.rs` (offline) and the lab tests.
//!
//! A block's info string says who runs it, and
//! `every_shell_block_is_run_by_a_test` (tests/offline/docs.rs) holds
//! every shell block to one of these:
//!
//! - `sh`: run by tests/offline/docs.rs, offline, from a scratch copy of
//!   the repository's examples with `drover` on PATH ([`Sandbox`]);
//!   `console`: `$ ` commands whose output follows, run and compared there.
//! - `sh,lab`: the page's `sh,lab` blocks, in order, run as one script
//!   against the lab by the lab test that calls `lab_script("PAGE")`.
//! - `sh,lab,NAME`: one block run against the lab by the lab test that
//!   calls `lab_block("PAGE", "NAME")` (the package's blocks, run where
//!   the .deb is installed).
//! - `sh,setup`: the README's two set-up commands.
//! - `sh,excerpt`: the README repeating book commands: each of its command
//!   lines must be one of a book block's, which a test runs.
//! - `sh,checked`: `cargo install --path .` alone. It is a release build
//!   of the whole crate in a target directory of its own (cargo install
//!   resolves features without the dev-dependencies, so nothing of the
//!   test build is reused): about 10 CPU-minutes for the binary the test
//!   run already built, more than CI can spend on one line.
//!   tests/offline/docs.rs checks what it relies on instead (one `[[bin]]`
//!   named drover, the Rust version the page quotes) and refuses any other
//!   command in such a block.
//!
//! Anything else (`text`, `yaml`, `json`, ...) is not run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One fenced block.
#[derive(Debug, Clone)]
pub struct Block {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line of its opening fence.
    pub line: usize,
    /// The info string (`sh,lab`).
    pub info: String,
    /// Its lines, without the fence's indentation.
    pub text: String,
}

impl Block {
    /// The language: the info string up to its first comma.
    pub fn lang(&self) -> &str {
        self.info.split(',').next().unwrap_or("").trim()
    }

    /// The attributes after the language (`lab` of `sh,lab`).
    pub fn attrs(&self) -> Vec<&str> {
        self.info.split(',').skip(1).map(str::trim).collect()
    }

    /// Where it is, for messages: `docs/src/guide/serve.md:47`.
    pub fn place(&self) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rel = self.file.strip_prefix(root).unwrap_or(&self.file);
        format!("{}:{}", rel.display(), self.line)
    }
}

/// The fenced blocks of one markdown file.
pub fn blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((i + 1, indent, info.trim().to_string(), Vec::new()));
                }
            }
            Some((start, ind, info, lines)) => {
                if trimmed.trim_end() == "```" {
                    out.push(Block {
                        file: file.to_path_buf(),
                        line: *start,
                        info: info.clone(),
                        text: lines.join("\n"),
                    });
                    open = None;
                } else {
                    let cut = (*ind).min(indent);
                    lines.push(line[cut..].to_string());
                }
            }
        }
    }
    assert!(open.is_none(), "{}: a fence is not closed", file.display());
    out
}

/// The book's pages (docs/src/**/*.md), sorted.
pub fn book_pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("docs/src"), &mut out);
    out.sort();
    out
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `sh,lab` blocks of a book page (relative to the repository), in
/// order, as one script's lines: comments and blank lines dropped,
/// continued lines (`\`) kept as they are.
pub fn lab_script(page: &str) -> Vec<String> {
    let blocks: Vec<Block> = blocks(&repo().join(page))
        .into_iter()
        .filter(|b| b.lang() == "sh" && b.attrs() == ["lab"])
        .collect();
    assert!(!blocks.is_empty(), "{page} has no `sh,lab` block");
    blocks.iter().flat_map(script_lines).collect()
}

/// The lines of a page's one `sh,lab,NAME` block, as [`lab_script`] gives them.
pub fn lab_block(page: &str, name: &str) -> Vec<String> {
    let found: Vec<Block> = blocks(&repo().join(page))
        .into_iter()
        .filter(|b| b.lang() == "sh" && b.attrs() == ["lab", name])
        .collect();
    assert_eq!(found.len(), 1, "{page}: one `sh,lab,{name}` block");
    script_lines(&found[0])
}

fn script_lines(b: &Block) -> Vec<String> {
    b.text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A block's command lines: continued lines (`\`) joined, comments (a
/// whole-line `#`, or ` #` after the command) and blank lines dropped,
/// spaces trimmed.
pub fn commands(text: &str) -> Vec<String> {
    text.replace("\\\n", " ")
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The drover binary under test.
pub fn drover_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drover"))
}

/// A scratch copy of what the examples read (`examples/`, `playbooks/`,
/// `modules/`, `inventory/`, `schema/`), with `drover` on PATH: where a
/// page's blocks run, as from the repository's root.
pub struct Sandbox {
    /// The scratch directory (the blocks' working directory).
    pub dir: tempfile::TempDir,
    /// PATH with drover's directory first.
    pub path: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = repo();
        for d in ["examples", "playbooks", "modules", "inventory", "schema"] {
            let o = Command::new("cp")
                .arg("-r")
                .arg(root.join(d))
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "cp {d}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let bin = dir.path().join(".bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(drover_bin(), bin.join("drover")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Sandbox { dir, path }
    }

    /// `sh -c SCRIPT` in the sandbox, stdin closed, without colour.
    pub fn command(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Run `sh -c SCRIPT` in the sandbox; its output.
    pub fn sh(&self, script: &str) -> Output {
        self.command(script).output().unwrap()
    }
}
