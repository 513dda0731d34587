//! `drover completions` and `drover man`, offline, through the real
//! binary: the bash script loads into bash and completes subcommands and
//! flags, the zsh and fish scripts name every subcommand (and pass their
//! shell's syntax check where that shell is installed), and `drover man
//! DIR` writes one page per subcommand that `man` renders. The subcommand
//! list comes from the clap definition, so a new subcommand is checked
//! without editing this file.

use super::docs::{drover, has, stderr, stdout, subcommands};

use std::path::Path;
use std::process::{Command, Stdio};

fn completion_script(shell: &str) -> String {
    let o = drover(&["completions", shell]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    stdout(&o)
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
