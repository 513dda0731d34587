//! Journal entries as lines for people: `drover logs` (each line prefixed
//! by its host) and the lines under a failed result of `apply`. Every
//! field is host text (a unit writes what it likes, escape sequences
//! included), shown through [`one_line`].

use crate::engine::logs::{HostLogs, LogsReport};
use crate::model::logs::LogEntry;
use crate::model::outcome::Status;
use crate::render::escape::one_line;

/// One entry: time, priority, unit, pid and the message, escaped. Urgent ones
/// (err and above) are red and warnings yellow when `color`.
pub fn entry_line(e: &LogEntry, color: bool) -> String {
    use owo_colors::OwoColorize;
    let priority = one_line(&e.priority);
    let priority = match (color, e.priority.as_str()) {
        (true, "emerg" | "alert" | "crit" | "err") => priority.red().bold().to_string(),
        (true, "warning") => priority.yellow().to_string(),
        _ => priority.into_owned(),
    };
    let pid = e.pid.map(|p| format!(" pid={p}")).unwrap_or_default();
    format!(
        "{} {priority} {}{pid}: {}",
        one_line(&e.timestamp),
        one_line(&e.unit),
        one_line(&e.message)
    )
}

/// `drover logs` as text: every line starts with its host, so the output
/// of many hosts greps and sorts; a host without entries says why.
pub fn render_text(r: &LogsReport, color: bool) -> String {
    let mut out = String::new();
    for h in &r.results {
        host_lines(&mut out, h, &r.unit, color);
    }
    out
}

fn host_lines(out: &mut String, h: &HostLogs, unit: &str, color: bool) {
    let host = one_line(&h.hostname);
    if h.status == Status::Failed {
        let error = one_line(h.error.as_deref().unwrap_or("failed"));
        out.push_str(&format!("{host}: error: {error}\n"));
        return;
    }
    if h.truncated {
        out.push_str(&format!(
            "{host}: (older entries left out: the read stopped at its byte or time bound)\n"
        ));
    }
    if h.entries.is_empty() {
        let why = if h.unit_unknown {
            format!("no unit {} on this host", one_line(unit))
        } else {
            "none matched".to_string()
        };
        out.push_str(&format!("{host}: no entries ({why})\n"));
    }
    for e in &h.entries {
        out.push_str(&format!("{host}: {}\n", entry_line(e, color)));
    }
}
