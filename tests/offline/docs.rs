//! The documentation, offline, through the real binary.
//!
//! - `drover completions` and `drover man`: the bash script loads into bash
//!   and completes subcommands and flags, the zsh and fish scripts name
//!   every subcommand (and pass their shell's syntax check where that shell
//!   is installed), and `drover man DIR` writes one page per subcommand
//!   that `man` renders. The subcommand list comes from the clap
//!   definition, so a new subcommand is checked without editing this file.
//! - The README and the book (docs/): the generated reference pages are
//!   current, every shell block is run by a test (the offline ones here,
//!   the lab ones by tests/lab/serve.rs), every relative link and anchor
//!   resolves, `mdbook build` passes, and every `--help` ends with its
//!   book page.

use crate::markdown;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use drover::cmd::args::Cli;

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// drover's visible subcommands, from its clap definition.
fn subcommands() -> Vec<String> {
    let subs: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(subs.len() >= 10, "{subs:?}");
    subs
}

fn completion_script(shell: &str) -> String {
    let o = drover(&["completions", shell]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    stdout(&o)
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What bash's completion offers for `words` (the last one being the word
/// under the cursor) with drover's script loaded.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{}' || exit 9\n\
         complete -p drover || exit 8\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE='{}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _drover drover '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &line])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "bash: {}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let registered = lines.next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ") && registered.ends_with(" drover"),
        "complete -p drover: {registered}"
    );
    lines.map(str::to_string).collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("drover.bash");
    std::fs::write(&script, completion_script("bash")).unwrap();

    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "bash -n: {}", stderr(&syntax));

    let all = bash_complete(&script, &["drover", ""]);
    for sub in subcommands() {
        assert!(all.contains(&sub), "`drover <TAB>` lacks {sub}: {all:?}");
    }
    assert_eq!(bash_complete(&script, &["drover", "pla"]), ["plan"]);
    let flags = bash_complete(&script, &["drover", "plan", "--det"]);
    assert_eq!(flags, ["--detailed-exitcode"]);
    let shells = bash_complete(&script, &["drover", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_string()), "{shells:?}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, file, head, check) in [
        ("zsh", "_drover", "#compdef drover", ["zsh", "-n"]),
        (
            "fish",
            "drover.fish",
            "\ncomplete -c drover ",
            ["fish", "--no-execute"],
        ),
    ] {
        let script = completion_script(shell);
        assert!(script.contains(head), "{shell}: {script}");
        for sub in subcommands() {
            let named = match shell {
                "zsh" => format!("'{sub}:"),
                _ => format!(" -a \"{sub}\""),
            };
            assert!(script.contains(&named), "{shell} lacks {sub}");
        }
        // Neither shell is on a fresh Debian machine: the suite's set-up
        // (tests/lab/lab.sh deps) installs both, so under tests/run.sh a
        // missing shell is a failure; elsewhere the check says it skipped.
        if !has(check[0]) {
            assert!(
                std::env::var_os("DROVER_REQUIRE_LAB").is_none(),
                "{shell} is not installed: tests/lab/lab.sh deps installs it"
            );
            eprintln!("SKIPPED: {shell} syntax check ({shell} is not installed)");
        } else {
            let path = dir.path().join(file);
            std::fs::write(&path, &script).unwrap();
            let o = Command::new(check[0])
                .arg(check[1])
                .arg(&path)
                .output()
                .unwrap();
            assert!(o.status.success(), "{shell} syntax: {}", stderr(&o));
        }
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let o = drover(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("tcsh"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn man_writes_one_page_per_subcommand_that_man_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man/man1");
    let o = drover(&["man", out_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let mut expected = vec!["drover.1".to_string()];
    expected.extend(subcommands().iter().map(|s| format!("drover-{s}.1")));
    // Nested subcommands get theirs too.
    expected.extend([
        "drover-serve-keygen.1".to_string(),
        "drover-serve-openapi.1".to_string(),
    ]);
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(written, want, "no `help` page, nothing else");
    // Each path written is printed, the top page first.
    let listing = stdout(&o);
    let printed: Vec<&str> = listing.lines().collect();
    assert_eq!(printed.len(), expected.len(), "{printed:?}");
    assert!(printed[0].ends_with("/drover.1"), "{printed:?}");

    let top = std::fs::read_to_string(out_dir.join("drover.1")).unwrap();
    assert!(top.contains(".TH drover 1"), "{top}");
    for sub in subcommands() {
        let page = std::fs::read_to_string(out_dir.join(format!("drover-{sub}.1"))).unwrap();
        assert!(
            page.contains(&format!(".TH drover-{sub} 1")),
            "{sub}: {page}"
        );
        assert!(
            page.contains(&format!("drover {sub}")),
            "{sub} synopsis: {page}"
        );
        // The top page lists every subcommand.
        assert!(
            top.contains(&format!("drover\\-{sub}(1)")),
            "drover.1 lacks {sub}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(out_dir.join(format!("drover-{sub}.1")))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o644, "{sub}: readable by every man");
    }

    // man-db is not on every build machine; where it is, every page renders
    // without a single groff warning.
    if has("man") {
        for name in &expected {
            let o = Command::new("man")
                .args(["--warnings", "-l"])
                .arg(out_dir.join(name))
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(o.status.success(), "man -l {name}: {}", stderr(&o));
            assert!(stderr(&o).is_empty(), "man -l {name} warns: {}", stderr(&o));
            assert!(stdout(&o).contains("SYNOPSIS"), "{name}: {}", stdout(&o));
        }
    }
}

#[test]
fn man_into_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = drover(&["man", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&file.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// The markdown files a reader sees: the README, ARCHITECTURE.md and the
/// book's pages.
fn doc_files() -> Vec<PathBuf> {
    let root = markdown::repo();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    files.extend(markdown::book_pages());
    files
}

fn rel(p: &Path) -> String {
    p.strip_prefix(markdown::repo())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn generated_reference_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let o = drover(&["docs-gen", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written: Vec<PathBuf> = stdout(&o).lines().map(PathBuf::from).collect();
    assert!(written.len() >= 6, "{written:?}");
    let book = markdown::repo().join("docs/src");
    let mut stale = Vec::new();
    for path in &written {
        let page = path.strip_prefix(dir.path()).unwrap();
        let fresh = std::fs::read_to_string(path).unwrap();
        let committed = std::fs::read_to_string(book.join(page)).unwrap_or_default();
        if fresh != committed {
            stale.push(format!("docs/src/{}", page.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "generated pages are stale: {stale:?}; regenerate them with `cargo run -q -- docs-gen docs/src`"
    );
    // Every page that says it is generated is one the generator writes.
    for page in markdown::book_pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        if text.contains("<!-- Generated by `cargo run -q -- docs-gen docs/src`") {
            let p = page.strip_prefix(&book).unwrap();
            assert!(
                written.iter().any(|w| w.ends_with(p)),
                "{} says it is generated, but docs-gen no longer writes it",
                rel(&page)
            );
        }
    }
    // The CLI page holds every visible subcommand's long help.
    let cli = std::fs::read_to_string(book.join("reference/cli.md")).unwrap();
    for sub in subcommands() {
        assert!(
            cli.contains(&format!("## `drover {sub}`")),
            "cli.md lacks {sub}"
        );
    }
}

/// The languages of shell blocks, which some test must run.
const SHELL: [&str; 5] = ["sh", "bash", "shell", "console", "zsh"];

/// The lab tests' sources, where `lab_script("PAGE")` and
/// `lab_block("PAGE", "NAME")` name the blocks they run.
fn lab_sources() -> String {
    let dir = markdown::repo().join("tests/lab");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_shell_block_is_run_by_a_test() {
    let lab = lab_sources();
    let mut seen = 0;
    for file in doc_files() {
        let name = rel(&file);
        for b in markdown::blocks(&file) {
            assert!(
                !b.info.is_empty(),
                "{}: give the block a language (`text` for output that is not run)",
                b.place()
            );
            if !SHELL.contains(&b.lang()) {
                continue;
            }
            seen += 1;
            match (b.lang(), b.attrs().as_slice()) {
                ("sh" | "console", []) => {}
                // Only `cargo install` (checked_blocks_hold_only_cargo_install...).
                ("sh", ["checked"]) => {}
                ("sh", ["setup"] | ["excerpt"]) => {
                    assert_eq!(name, "README.md", "{}", b.place())
                }
                ("sh", ["lab"]) => assert!(
                    lab.contains(&format!("lab_script(\"{name}\")")),
                    "{}: an `sh,lab` block on a page no lab test runs with `lab_script(\"{name}\")`",
                    b.place()
                ),
                ("sh", ["lab", block]) => assert!(
                    lab.contains(&format!("lab_block(\"{name}\", \"{block}\")")),
                    "{}: no lab test runs it with `lab_block(\"{name}\", \"{block}\")`",
                    b.place()
                ),
                _ => panic!(
                    "{}: `{}` is not run by any test; use sh, sh,lab, console or text (tests/common/markdown.rs)",
                    b.place(),
                    b.info
                ),
            }
        }
        // An indented (unfenced) curl example would escape the tests.
        let text = std::fs::read_to_string(&file).unwrap();
        let mut fenced = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            assert!(
                fenced || !line.starts_with("    curl "),
                "{name}:{}: a curl example outside a fenced `sh` block",
                i + 1
            );
        }
    }
    assert!(seen >= 15, "{seen} shell blocks");
}

#[test]
fn readme_is_the_front_door_in_at_most_250_lines() {
    let readme = std::fs::read_to_string(markdown::repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; the book (docs/) takes the rest"
    );
    // The front door's parts (issue 21): the three uses, a plan, the
    // status page, install, the set-up commands, the tour, the book.
    for part in [
        "maintenance windows",
        "dry-run previews in code review",
        "unattended scheduled runs",
        "## What a plan looks like",
        "## The status page",
        "![The status page",
        "## Install",
        "```sh,setup",
        "## A five-minute tour",
        "](docs/src/SUMMARY.md)",
    ] {
        assert!(readme.contains(part), "README.md lacks {part:?}");
    }
}

/// The README's `sh,excerpt` lines are book commands, run where the book
/// runs them.
#[test]
fn readme_excerpts_are_commands_the_book_runs() {
    let mut book = BTreeSet::new();
    for page in markdown::book_pages() {
        for b in markdown::blocks(&page) {
            if b.lang() == "sh" {
                book.extend(markdown::commands(&b.text));
            }
        }
    }
    let mut n = 0;
    for b in markdown::blocks(&markdown::repo().join("README.md")) {
        if b.info != "sh,excerpt" {
            continue;
        }
        for cmd in markdown::commands(&b.text) {
            assert!(
                book.contains(&cmd),
                "{}: `{cmd}` is in no shell block of the book; copy it from one",
                b.place()
            );
            n += 1;
        }
    }
    assert!(n >= 3, "{n} excerpted commands");
}

/// The `$ COMMAND` lines of a console block, each with the output that
/// follows it.
fn console_steps(text: &str) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), String::new()));
        } else if let Some((_, out)) = steps.last_mut() {
            out.push_str(line);
            out.push('\n');
        } else {
            panic!("a console block must start with `$ `: {text}");
        }
    }
    steps
}

fn trim_lines(s: &str) -> String {
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

#[test]
fn shell_examples_of_the_readme_and_the_book_run_as_written() {
    let mut ran = 0;
    for file in doc_files() {
        let blocks: Vec<markdown::Block> = markdown::blocks(&file)
            .into_iter()
            .filter(|b| matches!(b.lang(), "sh" | "console"))
            .filter(|b| b.attrs().is_empty() || b.attrs() == ["setup"])
            .collect();
        if blocks.is_empty() {
            continue;
        }
        // One scratch directory per page: its blocks run in order, as a
        // reader following the page would run them.
        let sandbox = markdown::Sandbox::new();
        for b in blocks {
            match (b.lang(), b.attrs().as_slice()) {
                ("sh", ["setup"]) => {
                    let commands: Vec<&str> = b
                        .text
                        .lines()
                        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                        .collect();
                    let plan = "cargo run --release -- plan examples/nightly-restart.yml -i examples/inventory.yml --facts examples/facts.json";
                    assert_eq!(commands, [plan, "bash tests/run.sh"], "{}", b.place());
                    // The first runs here, with the binary cargo built...
                    let o = sandbox.sh(&plan.replace("cargo run --release --", "drover"));
                    assert!(o.status.success(), "{}: {}", b.place(), stderr(&o));
                    assert!(stdout(&o).contains("DRY RUN"), "{}", stdout(&o));
                    // ...the second is what CI runs.
                    // ...as the README says: lint, then tests/run.sh, which
                    // builds the book and requires the lab.
                    let ci = std::fs::read_to_string(markdown::repo().join(".ci/run")).unwrap();
                    for step in [
                        "cargo fmt --check",
                        "cargo clippy",
                        "-D warnings",
                        "bash tests/run.sh",
                    ] {
                        assert!(ci.contains(step), ".ci/run lacks `{step}`: {ci}");
                    }
                    let run =
                        std::fs::read_to_string(markdown::repo().join("tests/run.sh")).unwrap();
                    for step in ["mdbook build docs", "DROVER_REQUIRE_LAB=1"] {
                        assert!(run.contains(step), "tests/run.sh lacks `{step}`");
                    }
                }
                ("sh", _) => {
                    let o = sandbox.sh(&format!("set -e\n{}\n", b.text));
                    assert!(
                        o.status.success(),
                        "{} failed ({:?}):\n{}\nstderr: {}",
                        b.place(),
                        o.status.code(),
                        b.text,
                        stderr(&o)
                    );
                }
                _ => {
                    for (cmd, want) in console_steps(&b.text) {
                        let o = sandbox.sh(&format!("exec 2>&1\n{cmd}\n"));
                        assert_eq!(
                            trim_lines(&stdout(&o)),
                            trim_lines(&want),
                            "{}: `{cmd}` prints something else now; update the page",
                            b.place()
                        );
                    }
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 8, "{ran} blocks ran");
}

/// `sh,checked` holds `cargo install --path .` and nothing else (why:
/// tests/common/markdown.rs); what it relies on is checked here: the
/// crate has one binary, drover, and the page quotes its Rust version.
#[test]
fn checked_blocks_hold_only_cargo_install_and_what_it_needs_holds() {
    let manifest = std::fs::read_to_string(markdown::repo().join("Cargo.toml")).unwrap();
    let bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .map(|section| {
            section
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(bins, ["\"drover\""], "cargo install installs drover alone");
    let rust = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml's rust-version")
        .trim_matches('"');
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for b in markdown::blocks(&file) {
            if b.info != "sh,checked" {
                continue;
            }
            for cmd in markdown::commands(&b.text) {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                assert!(
                    words.starts_with(&["cargo", "install", "--path", "."])
                        && (words.len() == 4 || words[4..] == ["--root", "/usr/local"]),
                    "{}: `{cmd}` is run by no test; only `cargo install --path .` may be `sh,checked` (tests/common/markdown.rs)",
                    b.place()
                );
                checked += 1;
            }
            assert!(
                text.contains(&format!("Rust toolchain ({rust} or later)"))
                    || text.contains(&format!("Rust {rust} or later")),
                "{}: the page must say the Rust version cargo install needs: {rust} (Cargo.toml's rust-version)",
                b.place()
            );
        }
    }
    assert!(checked >= 1, "{checked} cargo install lines");
}

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

#[test]
fn mdbook_builds_the_book() {
    if !has("mdbook") {
        // tests/run.sh installs mdbook and builds the book before the tests.
        eprintln!("MDBOOK NOT INSTALLED: book build skipped here (tests/run.sh builds it)");
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

#[test]
fn every_long_help_ends_with_its_book_page() {
    /// `drover` and every visible subcommand below it, nested ones too.
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                walk(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
    }
    let mut top = Cli::command();
    top.build();
    let mut cmds = Vec::new();
    walk(&top, "drover".into(), &mut cmds);
    assert!(cmds.len() > subcommands().len() + 1, "nested ones too");
    for (name, mut cmd) in cmds {
        let help = cmd.render_long_help().to_string();
        // The footer is the last paragraph: `Book: TITLE, docs/src/PAGE in
        // drover's source (...)`, wrapped as clap wraps it.
        let last = help.trim_end().rsplit("\n\n").next().unwrap_or_default();
        let last = last.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            last.starts_with("Book: ") && last.ends_with("makes it a web page)."),
            "`{name} --help` ends with `{last}`, not with its book page"
        );
        let page = last
            .split_whitespace()
            .find_map(|w| w.strip_prefix("docs/src/"))
            .unwrap_or_else(|| panic!("{name}: {last}"));
        let file = markdown::repo().join("docs/src").join(page);
        assert!(file.is_file(), "{name}: no book page {page}");
        // The title quoted is the page's.
        let title = last
            .strip_prefix("Book: ")
            .and_then(|t| t.split(", docs/src/").next())
            .unwrap_or_default();
        let heading = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .to_string();
        assert_eq!(title, heading, "{name}: the book page's title");
    }
}
