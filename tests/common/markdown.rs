//! The fenced code blocks of the README and the book, for the tests that
//! run them: `tests/offline/docs.rs` (offline) and `tests/lab/serve.rs` (the lab).
//!
//! A block's info string says who runs it: `sh` (tests/offline/docs.rs, offline),
//! `sh,lab` (tests/lab/serve.rs, against the lab), `sh,checked` (needs
//! root, a package build or live hosts: tests/offline/docs.rs parses its drover
//! command lines and checks its paths), `sh,setup` (the README's set-up
//! commands), `console` (`$ ` commands whose output follows, compared by
//! tests/offline/docs.rs); anything else (`text`, `yaml`, `json`, ...) is not run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
    blocks
        .iter()
        .flat_map(|b| b.text.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}
