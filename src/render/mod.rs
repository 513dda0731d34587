//! Renderers: pure functions from engine values and events to text
//! (terminal, markdown, json, and the server's status page as HTML). They
//! print nothing; the command line and the server write what they return.
//! Their output is snapshot-tested.

pub mod apply;
pub mod check;
pub mod dryrun;
pub mod escape;
pub mod fleet;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod history;
pub mod html;
pub mod page;
pub mod page_plans;
pub mod page_assets;
pub mod plan;
pub mod snippet;
pub mod status;
pub mod timeline;

use owo_colors::OwoColorize;

use crate::model::outcome::Status;

/// A result's word in the colour of its status (changed yellow, ok green,
/// skipped dim, failed red), or plain.
pub fn paint(word: &str, status: Status, changed: bool, color: bool) -> String {
    match (color, status, changed) {
        (false, ..) => word.to_string(),
        (true, Status::Ok, true) => word.yellow().to_string(),
        (true, Status::Ok, false) => word.green().to_string(),
        (true, Status::Skipped, _) => word.dimmed().to_string(),
        (true, Status::Failed, _) => word.red().bold().to_string(),
    }
}
