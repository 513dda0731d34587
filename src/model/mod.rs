//! The model: file formats (inventory, playbook, facts), targets, the DAG,
//! templates, expansion, and the decisions plan and apply share. Pure: no
//! I/O beyond reading the files it is given (playbooks, inventories, facts
//! and the unit templates a playbook names).

pub mod dag;
pub mod decide;
pub mod error;
pub mod expand;
pub mod facts;
pub mod health;
pub mod inventory;
pub mod maintenance;
pub mod outcome;
pub mod playbook;
pub mod report;
pub mod schema;
pub mod service;
pub mod target;
pub mod template;
pub mod unit;
pub mod unitfile;
pub mod yaml;

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of some bytes: how saved plans recognise their inputs.
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse a human duration such as `10s`, `1m30s` or `500ms`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("`{raw}` is not a duration ({e}); write e.g. `10s`, `2m` or `1m30s`"))
}

/// Now, as RFC 3339 with milliseconds: how reports and flags are stamped.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
