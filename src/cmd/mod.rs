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

mod apply;
pub mod args;
mod plan;
mod progress;
mod read;

use std::io::IsTerminal;

use clap::Parser;

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

fn init_logging(cli: &Cli) {
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("drover={default}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli);
    let json_errors = match &cli.command {
        Command::Check(a) => a.format == ReportFormat::Json,
        Command::Plan(a) => a.format == PlanFormat::Json,
        Command::Apply(a) => a.format == ReportFormat::Json,
        Command::Status(a) => a.format == ReportFormat::Json,
        Command::Service(a) => a.format == ReportFormat::Json,
        Command::Facts(_) | Command::Schema { .. } => false,
        Command::Maintenance(a) => a.format == ReportFormat::Json,
        Command::Health(a) => a.format == ReportFormat::Json,
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

/// Print an error in the one format drover uses.
fn report_error(e: &Error, json: bool, color: bool) {
    if json {
        outln!("{}", e.to_json());
    } else {
        use owo_colors::OwoColorize;
        let head = if color && std::io::stderr().is_terminal() {
            "error".red().bold().to_string()
        } else {
            "error".to_string()
        };
        eprintln!("{head}: {e}: {}", e.details());
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
    }
}

/// How hosts are read: `--forks` at once, each bounded by `--timeout`.
fn reach(forks: usize, timeout: &str) -> Result<crate::remote::fanout::Reach> {
    Ok(crate::remote::fanout::Reach::new(
        forks,
        duration_flag("--timeout", timeout)?,
    ))
}

/// Parse a `--timeout`-like duration flag.
fn duration_flag(flag: &str, raw: &str) -> Result<std::time::Duration> {
    crate::model::parse_duration(raw).map_err(|m| Error::Usage(format!("{flag}: {m}")))
}
