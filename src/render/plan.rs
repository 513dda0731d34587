//! Rendering a plan for people: a per-host unified diff (similar) over a
//! small state document per unit, as terminal text, as markdown for a
//! code-review comment, or as JSON. Output is deterministic: the same plan
//! renders to the same bytes.

use std::fmt::Write;

use owo_colors::OwoColorize;
use similar::TextDiff;

use crate::engine::plan::{HostChanges, Plan, HOST_DOC};
use crate::model::facts::UnitFacts;
use crate::model::outcome::Status;
use crate::model::service::join_actions;
use crate::render::escape::one_line;
use crate::render::paint;

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a terminal (coloured on a TTY).
    Text,
    /// For a pull-request comment.
    Markdown,
    /// For machines; schema `drover.plan/1` (see README).
    Json,
}

fn enabled_word(u: &UnitFacts) -> &str {
    if u.load_state == "not-found" && u.unit_file_state.is_empty() {
        "not-found"
    } else if u.unit_file_state.is_empty() {
        "unknown"
    } else {
        &u.unit_file_state
    }
}

/// The state document of one unit: what the diff compares. Each line is
/// escaped on its own: states, maintenance reasons and unit file content
/// come from the host, and one of them must neither drive the terminal nor
/// add a line of its own to the document (unit file content arrives
/// already split into lines, so the file keeps its shape).
fn state_doc(
    name: &str,
    module: bool,
    u: &UnitFacts,
    extra: &[String],
    actions: &[String],
) -> String {
    let name = one_line(name);
    let mut s = if name == HOST_DOC || module {
        format!("{name}\n")
    } else {
        format!(
            "{name}\n  active: {}\n  enabled: {}\n",
            one_line(&u.active_state),
            one_line(enabled_word(u))
        )
    };
    for l in extra {
        let _ = writeln!(s, "{}", one_line(l));
    }
    for a in actions {
        let _ = writeln!(s, "  do: {}", one_line(a));
    }
    s
}

/// Fleets repeat themselves: hundreds of hosts share the same before and
/// after documents, so the hunks are computed once per distinct pair.
#[derive(Default)]
pub struct DiffCache {
    hunks: std::collections::HashMap<(String, String), String>,
}

/// [`host_diff`] with a cache shared across hosts.
pub fn host_diff_cached(h: &HostChanges, cache: &mut DiffCache) -> String {
    let mut before = String::new();
    let mut after = String::new();
    for u in &h.units {
        before.push_str(&state_doc(
            &u.name,
            u.module,
            &u.before,
            &u.before_extra,
            &[],
        ));
        after.push_str(&state_doc(
            &u.name,
            u.module,
            &u.after,
            &u.after_extra,
            &u.actions,
        ));
    }
    let host = one_line(&h.hostname);
    let header = format!("--- {host} (now)\n+++ {host} (planned)\n");
    let key = (before, after);
    if let Some(hunks) = cache.hunks.get(&key) {
        return format!("{header}{hunks}");
    }
    let hunks: String = TextDiff::from_lines(&key.0, &key.1)
        .unified_diff()
        .context_radius(3)
        .iter_hunks()
        .map(|h| h.to_string())
        .collect();
    let out = format!("{header}{hunks}");
    cache.hunks.insert(key, hunks);
    out
}

fn host_has_changes(h: &HostChanges) -> bool {
    h.units.iter().any(|u| !u.actions.is_empty())
}

fn result_word(status: Status, changed: bool) -> &'static str {
    match (status, changed) {
        (Status::Ok, true) => "change",
        (Status::Ok, false) => "no change",
        (Status::Skipped, _) => "skipped",
        (Status::Failed, _) => "FAIL",
    }
}

const BANNER: &str = "DRY RUN: drover plan changed nothing on any host.";

/// Terminal text; `color` only on a TTY. Everything not drover's own
/// words is escaped (see [`one_line`]).
pub fn render_text(plan: &Plan, color: bool) -> String {
    let mut o = String::new();
    let banner = if color {
        BANNER.bold().yellow().to_string()
    } else {
        BANNER.to_string()
    };
    let _ = writeln!(o, "{banner}");
    let _ = writeln!(
        o,
        "playbook: {} ({})",
        one_line(&plan.name),
        one_line(&plan.playbook.path)
    );
    let _ = writeln!(o, "inventory: {}", one_line(&plan.inventory.path));
    let _ = writeln!(
        o,
        "facts: {} (collected {})",
        one_line(&plan.facts_source),
        one_line(&plan.facts_collected_at)
    );
    if let Some(l) = &plan.limit {
        let _ = writeln!(o, "limit: {}", one_line(l));
    }
    if let Some(p) = &plan.params {
        let _ = writeln!(o, "params: {}", one_line(&p.shown.join(" ")));
    }
    for s in &plan.steps {
        let _ = write!(
            o,
            "\nstep {}  target {}",
            one_line(&s.id),
            one_line(&s.target.join(" | "))
        );
        if !s.needs.is_empty() {
            let _ = write!(o, "  after {}", one_line(&s.needs.join(", ")));
        }
        if s.batch_size > 0 {
            let _ = write!(o, "  serial {}", s.batch_size);
        }
        if !s.picked.is_empty() {
            let _ = write!(o, "  _any picks {}", one_line(&s.picked.join(", ")));
        }
        if let Some(l) = &s.group_limit {
            let _ = write!(o, "  {}", one_line(l));
        }
        if let Some(call) = &s.always {
            let _ = write!(o, "  always (cleanup of {})", one_line(call));
        }
        o.push('\n');
        if s.results.is_empty() {
            let _ = writeln!(o, "  (no hosts after --limit)");
        }
        let width = s
            .results
            .iter()
            .map(|r| one_line(&r.hostname).len())
            .max()
            .unwrap_or(0);
        for r in &s.results {
            let what = join_actions(&r.actions, "-");
            let word = paint(result_word(r.status, r.changed), r.status, r.changed, color);
            let batch = if s.batch_size > 0 {
                format!(" [batch {}]", r.batch)
            } else {
                String::new()
            };
            let _ = write!(
                o,
                "  {:width$}  {:<9} {}  {}{batch}",
                one_line(&r.hostname),
                what,
                one_line(r.name.as_str()),
                word
            );
            if let Some(e) = &r.error {
                let _ = write!(o, "  ({})", one_line(e));
            }
            o.push('\n');
        }
    }
    let changed_hosts: Vec<&HostChanges> =
        plan.hosts.iter().filter(|h| host_has_changes(h)).collect();
    if !changed_hosts.is_empty() {
        let _ = writeln!(o, "\nstate changes per host:");
        let mut cache = DiffCache::default();
        for h in changed_hosts {
            for line in host_diff_cached(h, &mut cache).lines() {
                let line = match (color, line.chars().next()) {
                    (true, Some('+')) => line.green().to_string(),
                    (true, Some('-')) => line.red().to_string(),
                    (true, Some('@')) => line.cyan().to_string(),
                    _ => line.to_string(),
                };
                let _ = writeln!(o, "{line}");
            }
        }
    }
    let s = plan.summary;
    let _ = writeln!(
        o,
        "\nPlan: {} to change, {} unchanged, {} skipped, {} failing, on {} hosts.",
        s.changes, s.unchanged, s.skipped, s.failed, s.hosts
    );
    o
}

/// Text for markdown prose or a table cell: one line (a newline would end
/// the table row), no cell break (`|`), no HTML and no link, and a
/// backslash of the content cannot escape drover's own characters (`\|`
/// would otherwise read as an escaped backslash and a cell break).
fn md_text(s: &str) -> String {
    let s = one_line(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Text inside HTML (the `<summary>` of a host's diff).
fn html_text(s: &str) -> String {
    one_line(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The longest run of backticks in `s`.
fn backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `s` as an inline code span that its own backticks cannot close: the
/// fence is longer than any run inside, padded with a space when the
/// content starts or ends with a backtick, as CommonMark allows. In a
/// table cell a `|` is escaped too: GFM splits cells before code spans.
fn md_code(s: &str, in_table: bool) -> String {
    let mut text = one_line(s).into_owned();
    if in_table {
        text = text.replace('|', "\\|");
    }
    if text.is_empty() {
        return text;
    }
    let ticks = "`".repeat(backtick_run(&text) + 1);
    let pad = if text.starts_with('`')
        || text.ends_with('`')
        || (text.starts_with(' ') && text.ends_with(' ') && !text.trim().is_empty())
    {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// A fenced code block that no line of `body` can close: the fence is
/// longer than any backtick run inside (at least three), as CommonMark
/// allows, so a unit file holding a ``` line stays inside the diff.
fn md_fence(info: &str, body: &str) -> String {
    let fence = "`".repeat(backtick_run(body).max(2) + 1);
    let nl = if body.is_empty() || body.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!("{fence}{info}\n{body}{nl}{fence}")
}

/// Markdown for a pull-request comment: summary table, then a collapsible
/// diff per host. Content from hosts and files cannot break out of its
/// cell, code span or fence, nor carry controls into a CI log.
pub fn render_markdown(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### drover plan: {}\n", md_text(&plan.name));
    let _ = writeln!(o, "> **Dry run**: nothing was changed on any host.");
    let _ = writeln!(
        o,
        "> Playbook {}, inventory {}, facts {} (collected {}).{}\n",
        md_code(&plan.playbook.path, false),
        md_code(&plan.inventory.path, false),
        if plan.facts_source == "live" {
            "read live".to_string()
        } else {
            md_code(&plan.facts_source, false)
        },
        md_text(&plan.facts_collected_at),
        plan.limit
            .as_ref()
            .map(|l| format!(" Limit {}.", md_code(l, false)))
            .unwrap_or_default()
    );
    if let Some(p) = &plan.params {
        let shown: Vec<String> = p.shown.iter().map(|s| md_code(s, false)).collect();
        let _ = writeln!(o, "> Params {}.\n", shown.join(", "));
    }
    let s = plan.summary;
    let _ = writeln!(
        o,
        "**{} to change, {} unchanged, {} skipped, {} failing, on {} hosts.**\n",
        s.changes, s.unchanged, s.skipped, s.failed, s.hosts
    );
    for st in &plan.steps {
        if let Some(l) = &st.group_limit {
            let _ = writeln!(
                o,
                "> Step {}: {}, across jobs.\n",
                md_code(&st.id, false),
                md_text(l)
            );
        }
        if let Some(call) = &st.always {
            let _ = writeln!(
                o,
                "> Step {} is cleanup: it runs on every host that began {}, however the run ends.\n",
                md_code(&st.id, false),
                md_code(call, false)
            );
        }
    }
    let _ = writeln!(
        o,
        "| host | change | no change | skipped | failing | operations |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---|");
    let mut rows: indexmap::IndexMap<&str, ([usize; 4], Vec<String>)> = indexmap::IndexMap::new();
    for st in &plan.steps {
        for r in &st.results {
            let row = rows
                .entry(&r.hostname)
                .or_insert_with(|| ([0; 4], Vec::new()));
            let slot = match (r.status, r.changed) {
                (Status::Ok, true) => 0,
                (Status::Ok, false) => 1,
                (Status::Skipped, _) => 2,
                (Status::Failed, _) => 3,
            };
            row.0[slot] += 1;
            for a in &r.actions {
                row.1.push(format!("{a} {}", r.name));
            }
        }
    }
    for (h, (c, ops)) in &rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            md_code(h, true),
            c[0],
            c[1],
            c[2],
            c[3],
            if ops.is_empty() {
                "-".to_string()
            } else {
                md_text(&ops.join(", "))
            }
        );
    }
    let _ = writeln!(o, "\n#### Steps\n");
    let _ = writeln!(
        o,
        "| step | target | host | unit | result | operations | note |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for st in &plan.steps {
        for r in &st.results {
            let ops: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md_code(&st.id, true),
                md_code(&st.target.join(" | "), true),
                md_code(&r.hostname, true),
                md_code(r.name.as_str(), true),
                result_word(r.status, r.changed),
                if ops.is_empty() {
                    "-".into()
                } else {
                    ops.join("+")
                },
                md_text(r.error.as_deref().unwrap_or(""))
            );
        }
    }
    let changed: Vec<&HostChanges> = plan.hosts.iter().filter(|h| host_has_changes(h)).collect();
    if !changed.is_empty() {
        let _ = writeln!(o, "\n#### State changes per host\n");
        let mut cache = DiffCache::default();
        for h in changed {
            let n: usize = h.units.iter().map(|u| u.actions.len()).sum();
            let _ = writeln!(
                o,
                "<details><summary><code>{}</code>: {n} operation{}</summary>\n",
                html_text(&h.hostname),
                if n == 1 { "" } else { "s" }
            );
            let _ = writeln!(
                o,
                "{}\n</details>\n",
                md_fence("diff", &host_diff_cached(h, &mut cache))
            );
        }
    }
    o
}

/// JSON, pretty-printed, schema `drover.plan/1`.
pub fn render_json(plan: &Plan) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail for I/O reasons, and the plan's
    // types always serialise.
    let _ = write_json(plan, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Stream the JSON plan into a writer: a 10,000-host plan never has to
/// exist as one string in memory.
pub fn write_json(plan: &Plan, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let results: usize = plan.steps.iter().map(|s| s.results.len()).sum();
    // A concrete buffer in front of the dyn writer: serde writes token by
    // token, and each token should not be a virtual call.
    let mut buf = std::io::BufWriter::with_capacity(1 << 16, w);
    // Indented for people up to a size people read; beyond it the plan is
    // read by machines and indentation would be a third of the bytes.
    if results <= PRETTY_JSON_MAX_RESULTS {
        serde_json::to_writer_pretty(&mut buf, plan).map_err(std::io::Error::other)?;
    } else {
        serde_json::to_writer(&mut buf, plan).map_err(std::io::Error::other)?;
    }
    std::io::Write::write_all(&mut buf, b"\n")?;
    std::io::Write::flush(&mut buf)
}

/// Plans with more step × host results than this are written as compact JSON.
pub const PRETTY_JSON_MAX_RESULTS: usize = 10_000;

/// Render in the chosen format into a string.
pub fn render(plan: &Plan, format: Format, color: bool) -> String {
    match format {
        Format::Text => render_text(plan, color),
        Format::Markdown => render_markdown(plan),
        Format::Json => render_json(plan),
    }
}

/// Render in the chosen format into a writer.
pub fn render_to(
    plan: &Plan,
    format: Format,
    color: bool,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    match format {
        Format::Text => w.write_all(render_text(plan, color).as_bytes()),
        Format::Markdown => w.write_all(render_markdown(plan).as_bytes()),
        Format::Json => write_json(plan, w),
    }
}
