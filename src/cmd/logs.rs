//! `drover logs`: its arguments, and the command that reads a unit's
//! journal on the targeted hosts and prints it, each line prefixed by its
//! host (or as JSON).

use std::io::IsTerminal;

use clap::Args;

use crate::model::error::{Error, Result};
use crate::model::logs::{parse_lines, LogQuery, Priority, Since};

use super::args::{InventoryArg, ReadTimeout, ReportFormat};
use super::{reach, runtime};

/// `drover logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The unit (a bare name gets `.service`).
    pub unit: String,
    /// Hosts (selector).
    #[arg(long, value_name = "SEL")]
    pub target: String,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// The newest N entries of each host (1 to 10000).
    #[arg(short = 'n', long, value_name = "N", default_value = "10", value_parser = parse_lines)]
    pub lines: u32,
    /// Only entries since T: a duration before now (`1h`, `30min`, `2d`),
    /// an RFC 3339 time (`2026-01-15T10:30:00Z`), a date and time on the
    /// host's clock (`2026-01-15 10:30:00`), `today` or `yesterday`.
    #[arg(long, value_name = "T", value_parser = Since::parse)]
    pub since: Option<Since>,
    /// Only entries at priority P or more urgent: 0 to 7, or emerg, alert,
    /// crit, err, warning, notice, info, debug.
    #[arg(short, long, value_name = "P", value_parser = Priority::parse)]
    pub priority: Option<Priority>,
    /// Output: lines prefixed by host, or JSON with every host's entries.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Hosts read in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
}

/// `drover logs UNIT --target SEL`: every host's entries, prefixed by
/// host; exit 4 if some host was unreachable, 2 if a read failed.
pub(super) fn logs(a: &LogsArgs, color: bool) -> Result<i32> {
    let unit = crate::model::unit::UnitName::parse(&a.unit)
        .map_err(|m| Error::Usage(format!("unit `{}`: {m}", a.unit.escape_default())))?;
    let query = LogQuery {
        unit,
        lines: a.lines,
        since: a.since.clone(),
        priority: a.priority,
    };
    let inv = crate::engine::inventory::load(&a.inv.inventory)?;
    let (report, verdict) = runtime()?.block_on(crate::engine::logs::logs(
        &inv,
        Some(&a.target),
        &query,
        reach(a.forks, a.read.timeout),
    ))?;
    if a.format == ReportFormat::Json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot serialise logs: {e}")))?;
        outln!("{text}");
    } else {
        let color = color && std::io::stdout().is_terminal();
        out!("{}", crate::render::logs::render_text(&report, color));
    }
    Ok(verdict.exit_code())
}
