//! `health` as text: the worst level with counts, then a line per host.

use crate::model::health::{Health, HealthReport};
use crate::render::escape::one_line;

/// Text: the worst level with counts, then one line per host. Notes are
/// host text (a check command's output, a maintenance reason): escaped.
pub fn render_text(r: &HealthReport, color: bool) -> String {
    use owo_colors::OwoColorize;
    let paint = |h: Health| {
        let w = h.as_str();
        if !color {
            return w.to_string();
        }
        match h {
            Health::Passing => w.green().to_string(),
            Health::Warning => w.yellow().to_string(),
            Health::Critical => w.red().bold().to_string(),
            Health::Unknown => w.magenta().to_string(),
        }
    };
    let count = |h: Health| r.hosts.iter().filter(|x| x.status == h).count();
    let mut out = format!(
        "HEALTH {} {}: {} passing, {} warning, {} critical, {} unknown\n",
        paint(r.status),
        one_line(&r.unit),
        count(Health::Passing),
        count(Health::Warning),
        count(Health::Critical),
        count(Health::Unknown)
    );
    let width = r
        .hosts
        .iter()
        .map(|h| one_line(&h.hostname).len())
        .max()
        .unwrap_or(0);
    for h in &r.hosts {
        let pad = " ".repeat(8usize.saturating_sub(h.status.as_str().len()));
        out.push_str(&format!(
            "{:<width$}  {}{pad}  {}\n",
            one_line(&h.hostname),
            paint(h.status),
            one_line(&h.note)
        ));
    }
    out
}
