//! The commands that only read hosts: `status`, `facts`, `health`, `logs`.

use std::io::IsTerminal;

use crate::engine::events::NoEvents;
use crate::engine::health::HealthRequest;
use crate::model::error::{Error, Result};
use crate::render::escape::one_line;
use crate::render::status::render_status_text;

use super::args::{FactsArgs, HealthArgs, LogsArgs, ReportFormat, StatusArgs};
use super::{reach, runtime};

/// `drover status`: exit 4 if some host was unreachable, 2 if a read failed.
pub(super) fn status(a: &StatusArgs, color: bool) -> Result<i32> {
    let inv = crate::engine::inventory::load(&a.inv.inventory)?;
    let (report, verdict) = runtime()?.block_on(crate::engine::status::status(
        &inv,
        a.target.as_deref(),
        &a.units,
        reach(a.forks, a.read.timeout),
        &NoEvents,
    ))?;
    if a.format == ReportFormat::Json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot serialise status: {e}")))?;
        outln!("{text}");
    } else {
        let color = color && std::io::stdout().is_terminal();
        out!("{}", render_status_text(&report, color));
    }
    Ok(verdict.exit_code())
}

/// `drover facts`: write the facts file; exit 4 if some host was unreachable.
pub(super) fn facts(a: &FactsArgs) -> Result<i32> {
    let inv = crate::engine::inventory::load(&a.inv.inventory)?;
    let (facts, results) = runtime()?.block_on(crate::engine::live::collect_facts(
        &inv,
        a.target.as_deref(),
        &a.units,
        reach(a.forks, a.read.timeout),
        &NoEvents,
    ))?;
    crate::engine::files::save_facts(&facts, &a.out)?;
    for r in &results {
        if let Err(e) = &r.result {
            eprintln!("{}: {}", r.host, one_line(&e.to_string()));
        }
    }
    let n_units: usize = facts.hosts.values().map(|h| h.units.len()).sum();
    let ok = results.iter().filter(|r| r.result.is_ok()).count();
    eprintln!(
        "facts: {n_units} units from {ok} of {} hosts written to {}",
        results.len(),
        a.out.display()
    );
    Ok(crate::engine::live::verdict(&results).exit_code())
}

/// `drover health UNIT`: exit 0 passing, 1 warning, 2 critical, 3 unknown.
pub(super) fn health(a: &HealthArgs, color: bool) -> Result<i32> {
    let inv = crate::engine::inventory::load(&a.inv.inventory)?;
    let req = HealthRequest {
        unit: a.unit.clone(),
        target: a.target.clone(),
        http: a.http.clone(),
        tcp: a.tcp.clone(),
        command: a.command.clone(),
        reach: reach(a.forks, a.read.timeout),
    };
    let report = runtime()?.block_on(crate::engine::health::health(&inv, &req))?;
    if a.format == ReportFormat::Json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot serialise health: {e}")))?;
        outln!("{text}");
    } else {
        out!(
            "{}",
            crate::render::health::render_text(&report, color && std::io::stdout().is_terminal())
        );
    }
    Ok(report.status.exit_code())
}

/// `drover logs UNIT --target SEL`: every host's entries, prefixed by
/// host; exit 4 if some host was unreachable, 2 if a read failed.
pub(super) fn logs(a: &LogsArgs, color: bool) -> Result<i32> {
    let unit = crate::model::unit::UnitName::parse(&a.unit)
        .map_err(|m| Error::Usage(format!("unit `{}`: {m}", a.unit.escape_default())))?;
    let query = crate::model::logs::LogQuery {
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
