//! The `status` listing as aligned columns.

use crate::engine::status::{ServiceStatus, StatusReport};
use crate::render::escape::one_line;

/// An uptime as Python's timedelta prints it: "3 days, 0:58:59", "0:00:07".
pub fn format_uptime(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// Render the report as aligned columns; `color` adds colour (on a TTY).
/// Every cell, error and reason is host text, escaped before it is
/// measured so the columns stay aligned.
pub fn render_status_text(r: &StatusReport, color: bool) -> String {
    use owo_colors::OwoColorize;
    let header = ["HOST", "UNIT", "STATUS", "START TIME", "UPTIME"];
    let mut rows: Vec<[String; 5]> = Vec::new();
    for s in &r.services {
        let mut name = one_line(&s.name).into_owned();
        if s.load_state != "loaded" {
            name.push_str(&format!(" ({})", one_line(&s.load_state)));
        }
        if s.maintenance.is_some() {
            name.push_str(" [maintenance]");
        }
        rows.push([
            one_line(&s.hostname).into_owned(),
            name,
            s.status.as_str().to_string(),
            s.start_time
                .as_deref()
                .map_or_else(|| "-".into(), |t| one_line(t).into_owned()),
            s.uptime.map(format_uptime).unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String; 5], status_painted: Option<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let text = match (i, &status_painted) {
                (2, Some(p)) => format!("{p}{}", " ".repeat(width[i].saturating_sub(c.len()))),
                _ => format!("{c:<w$}", w = width[i]),
            };
            out.push_str(&text);
            if i + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    let head = line(&header.map(String::from), None);
    if color {
        out.push_str(&head.bold().to_string());
    } else {
        out.push_str(&head);
    }
    out.push('\n');
    for (row, s) in rows.iter().zip(&r.services) {
        let painted = color.then(|| match s.status {
            ServiceStatus::Running => row[2].green().to_string(),
            ServiceStatus::Failed => row[2].red().bold().to_string(),
            ServiceStatus::Starting | ServiceStatus::Restarting => row[2].yellow().to_string(),
            ServiceStatus::Stopped => row[2].dimmed().to_string(),
        });
        out.push_str(&line(row, painted));
        out.push('\n');
    }
    for e in &r.errors {
        let word = if e.unreachable {
            "UNREACHABLE"
        } else {
            "ERROR"
        };
        let word = if color {
            word.red().bold().to_string()
        } else {
            word.to_string()
        };
        out.push_str(&format!(
            "{:<w$}  {word}  {}\n",
            one_line(&e.hostname),
            one_line(&e.error),
            w = width[0]
        ));
    }
    for m in &r.maintenance {
        let word = if color {
            "MAINTENANCE".yellow().bold().to_string()
        } else {
            "MAINTENANCE".to_string()
        };
        out.push_str(&format!(
            "{:<w$}  {word}  {}: {} (since {})\n",
            one_line(&m.hostname),
            one_line(m.unit.as_deref().unwrap_or("whole host")),
            one_line(&m.reason),
            one_line(&m.since),
            w = width[0]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_timedelta() {
        assert_eq!(format_uptime(7), "0:00:07");
        assert_eq!(format_uptime(3 * 86_400 + 3539), "3 days, 0:58:59");
        assert_eq!(format_uptime(86_400 + 1), "1 day, 0:00:01");
    }
}
