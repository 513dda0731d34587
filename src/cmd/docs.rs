//! `drover completions` and `drover man`: shell completion scripts and
//! manual pages, both generated from the clap definition at run time, so
//! a new subcommand or flag appears in them without anyone editing a list.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::model::error::{Error, Result};

use super::args::{Cli, CompletionShell};

/// Print the completion script for `shell` on stdout.
pub fn completions(shell: CompletionShell) -> Result<i32> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "drover", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(0)
}

/// Write `drover.1` and one `drover-SUBCOMMAND.1` per visible subcommand
/// into `dir` (created if missing); print each path written.
pub fn man(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    for (name, page) in pages()? {
        let path = dir.join(name);
        write_page(&path, &page)?;
        outln!("{}", path.display());
    }
    Ok(0)
}

/// Every manual page as (file name, roff text): the top-level one first.
fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    // `help` is clap's, not drover's: its page would only say "print help".
    let mut top = Cli::command().disable_help_subcommand(true);
    // Building fills in each subcommand's display name (`drover-plan`),
    // which becomes its page's title and file name.
    top.build();
    let source = format!("drover {}", env!("CARGO_PKG_VERSION"));
    let mut pages = Vec::new();
    add_pages(top, &source, &mut pages)?;
    Ok(pages)
}

/// The page of `cmd`, then those of its visible subcommands, depth first.
fn add_pages(cmd: clap::Command, source: &str, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let man = clap_mangen::Man::new(cmd)
        .source(source)
        .manual("drover manual");
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| Error::Internal(format!("cannot render a manual page: {e}")))?;
    pages.push((man.get_filename(), page));
    for sub in subs {
        add_pages(sub, source, pages)?;
    }
    Ok(())
}

/// Write one page atomically, readable by everyone: a page installed
/// under /usr/share/man is read by every user's `man`, and the atomic
/// writer creates private (0600) files.
fn write_page(path: &Path, page: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::engine::files::write_atomic(path, page)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("chmod", PathBuf::from(path), e))
}
