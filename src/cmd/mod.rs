//! The command line: clap's arguments become plain values, the engine is
//! called, its values are rendered. The only layer that prints, picks exit
//! codes (through [`Verdict`]) and owns the tokio runtime.

/// `print!` to stdout that never panics: a closed stdout (`| head`, a
/// logger that died under cron) must not crash a run mid-way; the report
/// file and the journal are written regardless.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `println!` to stdout that never panics; see `out!`.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// The footer of a command's long help: the book page that explains it
/// (here, before the modules, so `args` and `serve` both see it).
macro_rules! book {
    ($page:literal, $title:literal) => {
        concat!(
            "Book: ",
            $title,
            ", docs/src/",
            $page,
            " in drover's source (`mdbook build docs` makes it a web page)."
        )
    };
}

mod apply;
mod cluster;
internal_mod! {
    args;
    logging;
    notify;
    serve;
}
mod docs;
mod observe;
mod plan;
mod progress;
mod read;
mod sent;
mod snapshot;

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::{CommandFactory, Parser};

use crate::model::error::{Error, Result};
use crate::model::report::Verdict;
use args::{Cli, Color, Command, PlanFormat, ReportFormat};

/// Whether stdout gets colour.
pub fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
    }
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, &std::env::args_os().skip(1).collect::<Vec<_>>()),
    };
    logging::init(cli.log_format, cli.quiet, cli.verbose);
    let json_errors = match &cli.command {
        Command::Check(a) => a.format == ReportFormat::Json,
        Command::Plan(a) => a.format == PlanFormat::Json,
        Command::Apply(a) => a.format == ReportFormat::Json,
        Command::Status(a) => a.format == ReportFormat::Json,
        Command::Service(a) => a.format == ReportFormat::Json,
        Command::Facts(_) | Command::Schema { .. } | Command::Serve(_) => false,
        Command::Worker(_) => false,
        Command::Completions { .. } | Command::Man { .. } | Command::DocsGen { .. } => false,
        Command::Maintenance(a) => a.format == ReportFormat::Json,
        Command::Health(a) => a.format == ReportFormat::Json,
        Command::Logs(a) => a.format == ReportFormat::Json,
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, json_errors, use_color(cli.color));
            // `health` follows the monitoring-plugin convention: 3 unknown.
            if matches!(cli.command, Command::Health(_)) {
                crate::model::health::Health::Unknown.exit_code()
            } else {
                Verdict::of_error(&e).exit_code()
            }
        }
    }
}

/// Print what clap says about a command line it did not run, and pick the
/// exit code.
///
/// clap exits 2 by itself, but 2 is drover's "a host failed" and, for
/// `plan --detailed-exitcode`, "changes pending": a cron wrapper or a CI
/// job would read a typo as pending changes. A usage error is invalid
/// input (1) like any other, and 3 (unknown) for `health`, which follows
/// the monitoring-plugin convention. `--help`, `--version` and `help`
/// print and succeed; a bare `drover` prints help too, but to stderr, and
/// is an error, since nothing asked for it ran.
fn usage_error(e: &clap::Error, args: &[OsString]) -> i32 {
    use clap::error::ErrorKind;
    // clap's own text: help and version on stdout, errors on stderr. A
    // closed stream is no reason to change the exit code.
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return 0;
    }
    if json_requested(args) {
        outln!("{}", Error::Usage(clap_details(e)).to_json());
    }
    if subcommand_of(args).is_some_and(|c| c == "health") {
        crate::model::health::Health::Unknown.exit_code()
    } else {
        Verdict::Invalid.exit_code()
    }
}

/// clap's message in one line, for the `details` of a JSON error. A
/// value its parser refused (a duration) reads `--flag: why`, as when
/// the flags were parsed after clap.
fn clap_details(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation {
        let flag = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg.split(' ').next(),
            _ => None,
        };
        if let (Some(flag), Some(why)) = (flag, std::error::Error::source(e)) {
            return format!("{flag}: {why}");
        }
    }
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
        .unwrap_or_else(|| "the command line could not be parsed".into())
}

/// Whether the command line asks for JSON (`--format json` or
/// `--format=json`), read from the raw arguments since clap gave up.
fn json_requested(args: &[OsString]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a == "--format=json" || (a == "--format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// The subcommand of a command line clap could not parse: the first
/// argument that is neither a flag nor the value of a global flag.
fn subcommand_of(args: &[OsString]) -> Option<String> {
    let cli = Cli::command();
    let global_takes_value = |flag: &str| {
        cli.get_arguments().any(|a| {
            a.get_action().takes_values()
                && (flag
                    .strip_prefix("--")
                    .is_some_and(|l| a.get_long() == Some(l))
                    || flag
                        .strip_prefix('-')
                        .and_then(|s| s.parse::<char>().ok())
                        .is_some_and(|s| a.get_short() == Some(s)))
        })
    };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            return args.next().map(|a| a.to_string_lossy().into_owned());
        }
        if !a.starts_with('-') || a == "-" {
            return Some(a.into_owned());
        }
        if !a.contains('=') && global_takes_value(&a) {
            args.next();
        }
    }
    None
}

/// Print an error in the one format drover uses.
fn report_error(e: &Error, json: bool, color: bool) {
    if json {
        outln!("{}", e.to_json());
    } else {
        use owo_colors::OwoColorize;
        let color = color && std::io::stderr().is_terminal();
        let head = if color {
            "error".red().bold().to_string()
        } else {
            "error".to_string()
        };
        eprintln!(
            "{head}: {e}: {}",
            crate::render::escape::one_line(&e.details())
        );
        if let Some(snippet) = crate::render::snippet::render_error(e, color) {
            eprintln!("{snippet}");
        }
    }
}

/// The one runtime of the process, for the commands that talk to hosts.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// A runtime on this thread alone, for work that connects to nothing.
fn local_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

fn run(cli: &Cli) -> Result<i32> {
    let color = use_color(cli.color);
    match &cli.command {
        Command::Check(a) => plan::check(a),
        Command::Schema { kind } => {
            out!("{}", crate::model::schema::generate((*kind).into())?);
            Ok(0)
        }
        Command::Plan(a) => plan::plan(a, color),
        Command::Apply(a) => apply::apply(a),
        Command::Service(a) => apply::service(a, color),
        Command::Maintenance(a) => apply::maintenance(a),
        Command::Status(a) => read::status(a, color),
        Command::Facts(a) => read::facts(a),
        Command::Health(a) => read::health(a, color),
        Command::Logs(a) => read::logs(a, color),
        Command::Serve(a) => serve::serve(a),
        Command::Worker(a) => cluster::worker(a),
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man { dir } => docs::man(dir),
        Command::DocsGen { dir } => docs::docs_gen(dir),
    }
}

/// How hosts are read: `--forks` at once, each bounded by `--timeout`.
fn reach(forks: usize, timeout: std::time::Duration) -> crate::remote::fanout::Reach {
    crate::remote::fanout::Reach::new(forks, timeout)
}
