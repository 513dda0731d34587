//! The model: file formats (inventory, playbook, facts), targets, the DAG,
//! templates, expansion, and the decisions plan and apply share. Pure: no
//! I/O beyond reading the files it is given (playbooks, inventories, facts
//! and the unit templates a playbook names).

pub mod cluster;
pub mod dag;
pub mod decide;
pub mod error;
pub mod expand;
pub mod facts;
pub mod health;
pub mod inventory;
pub mod journal;
pub mod keys;
pub mod logs;
pub mod maintenance;
pub mod outcome;
pub mod params;
pub mod playbook;
pub mod report;
pub mod schema;
pub mod secret;
pub mod service;
pub mod target;
pub mod template;
pub mod unit;
pub mod unitfile;
pub mod yaml;

use std::time::Duration;

use sha2::{Digest, Sha256};

/// A file that decides what apply does, by path and content digest: how a
/// saved plan recognises that what was reviewed is what will run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Input {
    /// Path as given (or as named in the file that names it).
    pub path: String,
    /// Hex SHA-256 of the content (`absent` when there is no such file).
    pub digest: String,
}

/// Hex SHA-256 of some bytes: how saved plans recognise their inputs.
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The longest duration a user may write (7 days). Timeouts are added to
/// clocks (`Instant + timeout`) and multiplied (`connect_timeout * 2`); a
/// value near `Duration::MAX` would panic there, and anything longer than a
/// week is a typo, not a timeout.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Parse a human duration such as `10s`, `1m30s` or `500ms`, at most
/// [`MAX_DURATION`]. Every duration from a file or a flag comes through here.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        format!("`{raw}` is not a duration ({e}); write e.g. `10s`, `2m` or `1m30s`")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{raw}` is longer than 7 days, the longest duration drover accepts; write e.g. `10m` or `2h`"
        ));
    }
    Ok(d)
}

/// Now, as RFC 3339 with milliseconds: how reports and flags are stamped.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_capped_at_seven_days() {
        assert_eq!(parse_duration("7d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        for long in ["8d", "7d 1s", "2w", "500000000000y"] {
            let e = parse_duration(long).unwrap_err();
            assert!(e.contains("longer than 7 days"), "{long}: {e}");
        }
        // Past what a Duration holds: humantime's own error, still no panic.
        let e = parse_duration("99999999999999999999999y").unwrap_err();
        assert!(e.contains("is not a duration"), "{e}");
    }
}
