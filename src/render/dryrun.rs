//! A dry run's plan as the status page shows it: the CLI's text (steps,
//! per-host results) and its per-host diff coloured as on a terminal,
//! each host folded away, and the CLI's markdown (`drover plan --format
//! markdown`) in a box the "copy as markdown" button copies from, for
//! pasting into a review. An HTML fragment the page's script puts in
//! place.

use std::fmt::Write as _;

use crate::engine::plan::Plan;

use super::html::esc;
use super::plan::{host_diff_cached, render_markdown, render_text, DiffCache};

/// One diff line with the class of its colour on a terminal.
fn diff_line(b: &mut String, line: &str) {
    let class = if line.starts_with("+++") || line.starts_with("---") {
        "hdr"
    } else {
        match line.chars().next() {
            Some('+') => "add",
            Some('-') => "del",
            Some('@') => "hunk",
            _ => "",
        }
    };
    if class.is_empty() {
        let _ = writeln!(b, "{}", esc(line));
    } else {
        let _ = writeln!(b, "<span class=\"{class}\">{}</span>", esc(line));
    }
}

/// The plan as an HTML fragment.
pub fn plan_fragment(plan: &Plan) -> String {
    let text = render_text(plan, false);
    // The CLI's steps and results; the per-host diffs are drawn below,
    // folded, rather than in one block.
    let steps = text
        .split("\nstate changes per host:")
        .next()
        .unwrap_or(&text);
    let s = plan.summary;
    let mut b = format!(
        "<div id=\"plan-out\" data-schema=\"{}\"><p class=\"maint\"><b>DRY RUN</b>: nothing was changed on any host.</p><p id=\"plan-summary\">Plan: {} to change, {} unchanged, {} skipped, {} failing, on {} hosts.</p>",
        esc(plan.schema),
        s.changes,
        s.unchanged,
        s.skipped,
        s.failed,
        s.hosts
    );
    let _ = write!(
        b,
        "<p><button type=\"button\" id=\"copy-md\">Copy as markdown</button> <span class=\"small\">for a review comment</span></p><label class=\"sr\" for=\"plan-md\">the plan as markdown</label><textarea id=\"plan-md\" class=\"md\" readonly rows=\"6\">{}</textarea>",
        esc(&render_markdown(plan))
    );
    let _ = write!(
        b,
        "<details id=\"plan-steps\"><summary>Steps and results</summary><pre>{}</pre></details><h3>Changes per host</h3>",
        esc(steps.trim_end())
    );
    let mut cache = DiffCache::default();
    let mut quiet = Vec::new();
    for h in &plan.hosts {
        let changes = h.units.iter().filter(|u| !u.actions.is_empty()).count();
        if changes == 0 {
            quiet.push(esc(&h.hostname));
            continue;
        }
        let _ = write!(
            b,
            "<details class=\"diff-host\" data-host=\"{n}\"><summary><b>{n}</b>: {changes} unit{s} to change</summary><pre class=\"diff\">",
            n = esc(&h.hostname),
            s = if changes == 1 { "" } else { "s" }
        );
        for line in host_diff_cached(h, &mut cache).lines() {
            diff_line(&mut b, line);
        }
        b.push_str("</pre></details>");
    }
    if !quiet.is_empty() {
        let _ = write!(
            b,
            "<p class=\"small\" id=\"plan-unchanged\">No change: {}</p>",
            quiet.join(", ")
        );
    }
    b.push_str("</div>");
    b
}
