//! What the README and the book point at, offline: every relative link
//! and anchor resolves, every repository path and bench they name exists,
//! the hand-written reference pages name what the code has, and `mdbook
//! build` passes without a warning.

use super::docs::{doc_files, has, rel, stderr};
use crate::markdown;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// The anchors mdbook gives a page's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let id: String = title
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_ascii_lowercase())
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        // A repeated heading gets `-1`, `-2`, ... as mdbook numbers them.
        let mut unique = id.clone();
        let mut n = 0;
        while out.contains(&unique) {
            n += 1;
            unique = format!("{id}-{n}");
        }
        out.insert(unique);
    }
    out
}

/// The targets of a page's markdown links, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: `[x](y)` inside backticks is not a link.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            match after.find(')') {
                Some(j) => {
                    out.push(after[..j].to_string());
                    rest = &after[j..];
                }
                None => break,
            }
        }
    }
    out
}

#[test]
fn links_in_the_readme_and_the_book_resolve() {
    let mut count = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            count += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                target.exists(),
                "{}: the link `{link}` points at nothing",
                rel(&file)
            );
            if !anchor.is_empty() {
                let page = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&page).contains(anchor),
                    "{}: `{link}`: {} has no heading `#{anchor}` (it has {:?})",
                    rel(&file),
                    rel(&target),
                    anchors(&page)
                );
            }
        }
    }
    assert!(count >= 50, "{count} links");
    // Every page of the book is in its table of contents.
    let book = markdown::repo().join("docs/src");
    let summary = std::fs::read_to_string(book.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in markdown::book_pages() {
        let p = page.strip_prefix(&book).unwrap().display().to_string();
        assert!(
            p == "SUMMARY.md" || listed.contains(&p),
            "docs/src/{p} is not in SUMMARY.md"
        );
    }
}

/// Repository paths the README and the book name in code spans
/// (`tests/lab/package.rs`, `examples/facts.json`, ...) exist, and every
/// `cargo bench --bench NAME` names a bench of Cargo.toml: prose that
/// points at a file or a command is checked like a link.
#[test]
fn files_and_benches_the_docs_name_exist() {
    const ROOTS: [&str; 10] = [
        "src/",
        "tests/",
        "examples/",
        "playbooks/",
        "modules/",
        "inventory/",
        "schema/",
        "pkg/",
        "benches/",
        "docs/",
    ];
    let manifest = std::fs::read_to_string(markdown::repo().join("Cargo.toml")).unwrap();
    let benches: Vec<&str> = manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    let (mut paths, mut bench_runs, mut missing) = (0, 0, Vec::new());
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        // Code spans of the prose, and whole lines of shell and text
        // blocks (not code: a Rust string is not a path).
        let mut fence: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            if let Some(info) = line.trim_start().strip_prefix("```") {
                fence = match fence {
                    None => Some(info.split(',').next().unwrap_or("").to_string()),
                    Some(_) => None,
                };
                continue;
            }
            let spans: Vec<&str> = match fence.as_deref() {
                None => line.split('`').skip(1).step_by(2).collect(),
                Some("sh" | "console" | "text") => vec![line],
                Some(_) => Vec::new(),
            };
            for span in spans {
                let words: Vec<&str> = span.split_whitespace().collect();
                for (j, w) in words.iter().enumerate() {
                    let w = w.trim_end_matches([',', '.', ';', ':', ')', '"', '\'']);
                    let w = w.trim_start_matches(['(', '"', '\'']);
                    // docs/book/ is what `mdbook build docs` writes.
                    if ROOTS.iter().any(|r| w.starts_with(r))
                        && !w.starts_with("docs/book/")
                        && !w.contains(['{', '*', '<', '$', '['])
                        && !w.chars().any(|c| c.is_ascii_uppercase())
                    {
                        paths += 1;
                        if !markdown::repo().join(w).exists() {
                            missing.push(format!("{}:{}: `{w}`", rel(&file), i + 1));
                        }
                    }
                    if w == "--bench" && j >= 2 && words[j - 1] == "bench" {
                        let name = words.get(j + 1).copied().unwrap_or_default();
                        bench_runs += 1;
                        assert!(
                            benches.contains(&name),
                            "{}:{}: `cargo bench --bench {name}`: Cargo.toml has no such bench ({benches:?})",
                            rel(&file),
                            i + 1
                        );
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not in the repository: {missing:#?}"
    );
    assert!(paths >= 40, "{paths} paths");
    assert!(bench_runs >= 5, "{bench_runs} benches");
}

/// The code spans of a markdown table row's cells: `| `a`, `b` | x |` →
/// [["a", "b"], [...]].
fn row_spans(row: &str) -> Vec<Vec<String>> {
    row.trim()
        .trim_matches('|')
        .split(" | ")
        .map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The hand-written reference pages, held to the code where the code can
/// say: every result `kind` (the enum, through schema/openapi.json, which
/// a test keeps equal to the code) is in the troubleshooting catalogue's
/// table and on the report page, and the JSON plan page documents every
/// field a real plan has, and no top-level field it lacks.
#[test]
fn hand_written_references_name_what_the_code_has() {
    let book = markdown::repo().join("docs/src");
    let openapi: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(markdown::repo().join("schema/openapi.json")).unwrap(),
    )
    .unwrap();
    let kinds: BTreeSet<String> = openapi["components"]["schemas"]["Kind"]["enum"]
        .as_array()
        .expect("Kind in the OpenAPI document")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(kinds.len() >= 10, "{kinds:?}");
    let catalogue = std::fs::read_to_string(book.join("guide/troubleshooting.md")).unwrap();
    let table: BTreeSet<String> = catalogue
        .lines()
        .skip_while(|l| !l.starts_with("| result `kind`"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| row_spans(l).into_iter().next().unwrap_or_default())
        .collect();
    assert_eq!(table, kinds, "guide/troubleshooting.md's result kinds");
    let report = std::fs::read_to_string(book.join("reference/report.md")).unwrap();
    for k in &kinds {
        assert!(
            report.contains(&format!("`{k}`")),
            "reference/report.md lacks the kind `{k}`"
        );
    }

    let o = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "plan",
            "examples/nightly-restart.yml",
            "-i",
            "examples/inventory.yml",
            "--facts",
            "examples/facts.json",
            "--limit",
            "web-1",
            "--format",
            "json",
        ])
        .current_dir(markdown::repo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let page = std::fs::read_to_string(book.join("reference/plan-json.md")).unwrap();
    let rows: Vec<Vec<Vec<String>>> = page
        .lines()
        .skip_while(|l| !l.starts_with("| field |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(row_spans)
        .collect();
    let row = |field: &str| -> BTreeSet<String> {
        let r = rows
            .iter()
            .find(|r| r[0].iter().any(|f| f == field))
            .unwrap_or_else(|| panic!("reference/plan-json.md has no row for `{field}`"));
        r.iter().flatten().cloned().collect()
    };
    let top: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r[0].iter())
        .filter(|f| !f.contains('.'))
        .map(|f| f.trim_end_matches("[]").to_string())
        .collect();
    let real: BTreeSet<String> = plan.as_object().unwrap().keys().cloned().collect();
    // `inputs` is absent when nothing but the playbook and inventory
    // decides, `params` when the playbook declares none.
    let optional: BTreeSet<String> = ["inputs".to_string(), "params".to_string()].into();
    assert!(
        real.is_subset(&top) && top.difference(&real).all(|f| optional.contains(f)),
        "reference/plan-json.md documents {top:?}; a plan has {real:?}"
    );
    for (field, value) in [
        ("steps[]", &plan["steps"][0]),
        ("steps[].results[]", &plan["steps"][0]["results"][0]),
        ("hosts[]", &plan["hosts"][0]),
        ("hosts[]", &plan["hosts"][0]["units"][0]),
        ("summary", &plan["summary"]),
    ] {
        let documented = row(field);
        for key in value.as_object().expect(field).keys() {
            assert!(
                documented.contains(key),
                "reference/plan-json.md: `{field}` does not name `{key}`: {value}"
            );
        }
    }
}

#[test]
fn mdbook_builds_the_book() {
    if !has("mdbook") {
        // tests/run.sh installs mdbook (and sets DROVER_REQUIRE_LAB), so in
        // CI a missing mdbook is a failure; elsewhere the skip says so.
        assert!(
            std::env::var_os("DROVER_REQUIRE_LAB").is_none(),
            "mdbook is not installed: tests/run.sh installs it"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"MDBOOK NOT INSTALLED: book build skipped here (tests/run.sh builds it)\n",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("mdbook")
        .arg("build")
        .arg(markdown::repo().join("docs"))
        .arg("-d")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "mdbook build: {}", stderr(&o));
    let log = stderr(&o);
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "mdbook build warns: {log}"
    );
    assert!(dir.path().join("guide/serve.html").is_file());
}
