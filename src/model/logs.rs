//! Unit logs: what a read of a unit's journal asks for, validated before
//! anything connects ([`LogQuery`]), the fixed `journalctl` arguments it
//! becomes, and the entries read back ([`LogEntry`], parsed from
//! journalctl's JSON output).
//!
//! Every value the caller chose (the unit, the line count, `since`, the
//! priority) is checked here against a closed grammar and rewritten in a
//! form drover controls before it becomes one argument of its own; none
//! is ever part of a shell command.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::unit::UnitName;

/// Most lines one read may ask for (osapi's bound too).
pub const MAX_LINES: u32 = 10_000;

/// The journal fields a read asks journalctl for: those an entry is made
/// of, and the ones that say which unit wrote it. journalctl adds its own
/// (`__REALTIME_TIMESTAMP`, the cursor); the rest of each record (30-odd
/// fields) would only fill the byte bound.
const FIELDS: &str = "MESSAGE,PRIORITY,_PID,_HOSTNAME,_SYSTEMD_UNIT";

/// syslog's priorities, as journalctl and osapi name them (0 to 7).
pub const PRIORITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// A priority: entries at it and more urgent ones are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority(u8);

impl Priority {
    /// `0`..`7` or a name of [`PRIORITY_NAMES`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        if let Some(i) = PRIORITY_NAMES.iter().position(|n| *n == t) {
            return Ok(Priority(i as u8));
        }
        if let Ok(n) = t.parse::<u8>() {
            if n <= 7 {
                return Ok(Priority(n));
            }
        }
        let hint = match t.to_ascii_lowercase().as_str() {
            "error" => " (did you mean `err`?)",
            "warn" => " (did you mean `warning`?)",
            "critical" => " (did you mean `crit`?)",
            "emergency" | "panic" => " (did you mean `emerg`?)",
            _ => "",
        };
        Err(format!(
            "`{}` is not a priority{hint}: give 0 to 7 or one of {}",
            t.escape_default(),
            PRIORITY_NAMES.join(", ")
        ))
    }

    /// The number (0 most urgent).
    pub fn level(self) -> u8 {
        self.0
    }

    /// The name (`err`).
    pub fn name(self) -> &'static str {
        PRIORITY_NAMES[usize::from(self.0.min(7))]
    }
}

/// Where a read starts in time, in the forms drover accepts and rewrites
/// into forms every supported journalctl parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// This long before the host's now (`1h`, `30min`, `2h ago`).
    Ago(Duration),
    /// A moment in UTC (RFC 3339 with an offset, or a date and time with
    /// ` UTC`), as `YYYY-MM-DD HH:MM:SS UTC`.
    Utc(chrono::NaiveDateTime),
    /// A date and time on the host's clock (`2026-01-15 10:30:00`,
    /// `2026-01-15 10:30`, `2026-01-15`).
    HostTime(chrono::NaiveDateTime),
    /// `today` or `yesterday`: midnight on the host's clock.
    Keyword(&'static str),
}

/// The furthest back a relative `since` may reach: ten years.
const MAX_AGO: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl Since {
    /// One of the accepted forms; anything else is refused naming them.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        let refuse = || {
            format!(
                "`{}` is not a time drover reads: give a duration before now (`1h`, `30min`, `2d`, `1h ago`), an RFC 3339 time (`2026-01-15T10:30:00Z`), a date and time on the host's clock (`2026-01-15 10:30:00`, `2026-01-15`), `today` or `yesterday`",
                t.escape_default()
            )
        };
        match t {
            "today" => return Ok(Since::Keyword("today")),
            "yesterday" => return Ok(Since::Keyword("yesterday")),
            _ => {}
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
            return Ok(Since::Utc(at.naive_utc()));
        }
        if let Some(local) = t.strip_suffix(" UTC") {
            return host_time(local).map(Since::Utc).ok_or_else(refuse);
        }
        if let Some(at) = host_time(t) {
            return Ok(Since::HostTime(at));
        }
        let span = t.strip_suffix(" ago").unwrap_or(t).trim();
        // A duration starts with a digit: `-1h` and `+1h` are refused
        // rather than read two ways.
        if !span.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(refuse());
        }
        match humantime::parse_duration(span) {
            Ok(d) if d <= MAX_AGO => Ok(Since::Ago(d)),
            Ok(_) => Err(format!(
                "`{}` reaches back more than ten years",
                t.escape_default()
            )),
            Err(_) => Err(refuse()),
        }
    }

    /// A form [`Since::parse`] reads back into the same journalctl value:
    /// how a query travels to the worker that reads the host.
    pub fn wire(&self) -> String {
        match self {
            // journalctl's `-3600s` is no duration drover reads.
            Since::Ago(d) => format!("{}s", d.as_secs().max(1)),
            _ => self.journalctl_value(),
        }
    }

    /// The value of journalctl's `--since=`: only digits, `-`, `:`, ` `,
    /// `s`, `UTC` and the two keywords, whatever the caller wrote.
    pub fn journalctl_value(&self) -> String {
        const FORMAT: &str = "%Y-%m-%d %H:%M:%S";
        match self {
            // At least one second: `-0s` is now, and reads nothing.
            Since::Ago(d) => format!("-{}s", d.as_secs().max(1)),
            Since::Utc(at) => format!("{} UTC", at.format(FORMAT)),
            Since::HostTime(at) => at.format(FORMAT).to_string(),
            Since::Keyword(k) => (*k).to_string(),
        }
    }
}

/// `YYYY-MM-DD[ HH:MM[:SS]]`.
fn host_time(t: &str) -> Option<chrono::NaiveDateTime> {
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Some(at);
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// The line count of a read: 1 to [`MAX_LINES`].
pub fn parse_lines(raw: &str) -> Result<u32, String> {
    let t = raw.trim();
    match t.parse::<u64>() {
        Ok(n) if (1..=u64::from(MAX_LINES)).contains(&n) => Ok(n as u32),
        Ok(_) => Err(format!("{t} lines: give 1 to {MAX_LINES}")),
        Err(_) => Err(format!(
            "`{}` is not a line count: give a whole number from 1 to {MAX_LINES}",
            t.escape_default()
        )),
    }
}

/// A read of one unit's journal, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// The unit (systemd's grammar: no glob, no shell text).
    pub unit: UnitName,
    /// The newest this many entries (1 to [`MAX_LINES`]).
    pub lines: u32,
    /// Only entries from then on.
    pub since: Option<Since>,
    /// Only entries at this priority or more urgent.
    pub priority: Option<Priority>,
}

impl LogQuery {
    /// Validate what a caller gave: a unit name (a bare name gets
    /// `.service`), a line count, and optionally `since` and a priority.
    /// The error names the field.
    pub fn parse(
        unit: &str,
        lines: u32,
        since: Option<&str>,
        priority: Option<&str>,
    ) -> Result<Self, String> {
        let unit = UnitName::parse(unit).map_err(|m| format!("unit: {m}"))?;
        if !(1..=MAX_LINES).contains(&lines) {
            return Err(format!("lines: {lines}: give 1 to {MAX_LINES}"));
        }
        let since = since
            .map(Since::parse)
            .transpose()
            .map_err(|m| format!("since: {m}"))?;
        let priority = priority
            .map(Priority::parse)
            .transpose()
            .map_err(|m| format!("priority: {m}"))?;
        Ok(LogQuery {
            unit,
            lines,
            since,
            priority,
        })
    }

    /// The last `lines` entries of `unit`, nothing else.
    pub fn last(unit: UnitName, lines: u32) -> Self {
        LogQuery {
            unit,
            lines: lines.clamp(1, MAX_LINES),
            since: None,
            priority: None,
        }
    }

    /// journalctl's arguments, each a `--flag=value` of its own: JSON, the
    /// fields entries are made of, newest first (so that a byte bound cuts
    /// the oldest lines, never the newest), no pager, no hints on stderr.
    pub fn journalctl_args(&self) -> Vec<String> {
        let mut args = vec![
            "--no-pager".to_string(),
            "--quiet".into(),
            // Fields over 4 KiB would be null without it; the byte bound
            // still holds.
            "--all".into(),
            "--output=json".into(),
            format!("--output-fields={FIELDS}"),
            "--reverse".into(),
            format!("--lines={}", self.lines),
            format!("--unit={}", self.unit),
        ];
        if let Some(s) = &self.since {
            args.push(format!("--since={}", s.journalctl_value()));
        }
        if let Some(p) = self.priority {
            args.push(format!("--priority={}", p.level()));
        }
        args
    }
}

/// One journal entry, in osapi's `LogEntryInfo` shape. The text is the
/// host's, kept as it was written: renderers escape it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// When it was logged (RFC 3339, UTC, microseconds).
    pub timestamp: String,
    /// The unit that wrote it (systemd's own lines about the unit carry
    /// the unit they are about).
    pub unit: String,
    /// `emerg`, `alert`, `crit`, `err`, `warning`, `notice`, `info` or `debug`.
    pub priority: String,
    /// The line. Bytes that are not UTF-8 are replaced (U+FFFD).
    pub message: String,
    /// The process that wrote it (absent when the journal has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pid: Option<u32>,
    /// The host's own name for itself (`_HOSTNAME`; absent when the
    /// journal has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hostname: Option<String>,
}

/// What a read of journalctl's output yields: the entries, oldest first,
/// and how many lines were not JSON drover could use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Oldest first.
    pub entries: Vec<LogEntry>,
    /// Lines skipped (not a JSON object).
    pub skipped: usize,
}

/// Parse journalctl's `--output=json --reverse` output (one object a line,
/// newest first) into entries, oldest first. With `cut` (the read stopped
/// at its byte bound) the last line is partial and dropped. `unit` is the
/// unit asked for: what an entry without a unit of its own is about.
pub fn parse_journal(out: &[u8], cut: bool, unit: &UnitName) -> Parsed {
    let mut lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
    if cut {
        lines.pop();
    }
    let mut parsed = Parsed::default();
    for line in lines {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
            Ok(fields) => parsed.entries.push(entry_of(&fields, unit)),
            Err(_) => parsed.skipped += 1,
        }
    }
    parsed.entries.reverse();
    parsed
}

fn entry_of(f: &serde_json::Map<String, serde_json::Value>, unit: &UnitName) -> LogEntry {
    let text = |k: &str| f.get(k).and_then(field_text);
    let timestamp = text("__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let priority = match text("PRIORITY") {
        Some(p) => match p.parse::<usize>().ok().and_then(|i| PRIORITY_NAMES.get(i)) {
            Some(name) => (*name).to_string(),
            None => p,
        },
        None => String::new(),
    };
    // journald sets `_SYSTEMD_UNIT` (a process cannot forge it); systemd's
    // own lines about a unit come from init.scope and are about the unit
    // asked for, as are coredumps and the like that `-u` matches.
    let unit = text("_SYSTEMD_UNIT")
        .filter(|u| u != "init.scope")
        .unwrap_or_else(|| unit.to_string());
    LogEntry {
        timestamp,
        unit,
        priority,
        message: text("MESSAGE").unwrap_or_default(),
        pid: text("_PID").and_then(|p| p.parse().ok()),
        hostname: text("_HOSTNAME"),
    }
}

/// A field's text. journalctl writes a field as a string when it is
/// printable UTF-8, as an array of byte values otherwise (binary, control
/// characters or not UTF-8), as an array of those when the entry has the
/// field more than once (the first is taken), and as null when it was too
/// large to show.
fn field_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let bytes: Vec<u8> = items
                .iter()
                .map(|b| {
                    b.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .unwrap_or(b'?')
                })
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(field_text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitName {
        UnitName::parse("demo-web").unwrap()
    }

    #[test]
    fn priorities_are_numbers_or_syslog_names() {
        assert_eq!(Priority::parse("err").unwrap().level(), 3);
        assert_eq!(Priority::parse("7").unwrap().name(), "debug");
        assert_eq!(Priority::parse(" warning ").unwrap().level(), 4);
        for bad in ["8", "-1", "ERR", "err;reboot", "", "3..5", "0x3"] {
            assert!(Priority::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Priority::parse("error")
            .unwrap_err()
            .contains("did you mean `err`"));
    }

    #[test]
    fn lines_are_bounded() {
        assert_eq!(parse_lines("10"), Ok(10));
        assert_eq!(parse_lines("10000"), Ok(10_000));
        for bad in ["0", "10001", "-5", "1e3", "ten", "", "99999999999999999999"] {
            assert!(parse_lines(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn since_forms_become_journalctl_forms() {
        let v = |s: &str| Since::parse(s).unwrap().journalctl_value();
        assert_eq!(v("1h"), "-3600s");
        assert_eq!(v("30min ago"), "-1800s");
        assert_eq!(v("0s"), "-1s");
        assert_eq!(v("2026-01-15T10:30:00Z"), "2026-01-15 10:30:00 UTC");
        assert_eq!(v("2026-01-15T12:30:00+02:00"), "2026-01-15 10:30:00 UTC");
        assert_eq!(v("2026-01-15 10:30:00 UTC"), "2026-01-15 10:30:00 UTC");
        assert_eq!(v("2026-01-15 10:30"), "2026-01-15 10:30:00");
        assert_eq!(v("2026-01-15"), "2026-01-15 00:00:00");
        assert_eq!(v("yesterday"), "yesterday");
        for bad in [
            "-1h",
            "+1h",
            "garbage",
            "1h; reboot",
            "$(reboot)",
            "2026-13-01",
            "2026-01-15 25:00",
            "now",
            "",
            "11y",
            "--unit=sshd",
        ] {
            assert!(Since::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queries_become_one_argument_per_flag() {
        let q = LogQuery::parse("demo-web", 50, Some("1h"), Some("err")).unwrap();
        assert_eq!(
            q.journalctl_args(),
            [
                "--no-pager",
                "--quiet",
                "--all",
                "--output=json",
                "--output-fields=MESSAGE,PRIORITY,_PID,_HOSTNAME,_SYSTEMD_UNIT",
                "--reverse",
                "--lines=50",
                "--unit=demo-web.service",
                "--since=-3600s",
                "--priority=3",
            ]
        );
        let e = LogQuery::parse("x;reboot", 5, None, None).unwrap_err();
        assert!(e.starts_with("unit: "), "{e}");
        let e = LogQuery::parse("a*", 5, None, None).unwrap_err();
        assert!(e.starts_with("unit: "), "globs are not unit names: {e}");
        assert!(LogQuery::parse("a", 0, None, None)
            .unwrap_err()
            .starts_with("lines: "));
        assert!(LogQuery::parse("a", 5, Some("soon"), None)
            .unwrap_err()
            .starts_with("since: "));
        assert!(LogQuery::parse("a", 5, None, Some("loud"))
            .unwrap_err()
            .starts_with("priority: "));
        assert_eq!(LogQuery::last(unit(), 0).lines, 1);
        assert_eq!(LogQuery::last(unit(), 99_999).lines, MAX_LINES);
    }

    #[test]
    fn journal_json_becomes_entries_oldest_first() {
        let out = concat!(
            r#"{"__REALTIME_TIMESTAMP":"1768473000123456","PRIORITY":"3","_PID":"42","_HOSTNAME":"web-1","_SYSTEMD_UNIT":"demo-web.service","MESSAGE":"second"}"#,
            "\n",
            r#"{"__REALTIME_TIMESTAMP":"1768473000000000","PRIORITY":"6","_PID":"1","_HOSTNAME":"web-1","_SYSTEMD_UNIT":"init.scope","MESSAGE":"Started demo-web.service."}"#,
            "\n",
        );
        let p = parse_journal(out.as_bytes(), false, &unit());
        assert_eq!(p.skipped, 0);
        assert_eq!(
            p.entries[0],
            LogEntry {
                timestamp: "2026-01-15T10:30:00.000000Z".into(),
                unit: "demo-web.service".into(),
                priority: "info".into(),
                message: "Started demo-web.service.".into(),
                pid: Some(1),
                hostname: Some("web-1".into()),
            }
        );
        assert_eq!(p.entries[1].message, "second");
        assert_eq!(p.entries[1].priority, "err");
        assert_eq!(p.entries[1].timestamp, "2026-01-15T10:30:00.123456Z");
    }

    #[test]
    fn byte_arrays_multiple_values_and_nulls_are_read() {
        // "a\x1b[31mb\xff": a control character and a byte that is not UTF-8.
        let out = concat!(
            r#"{"MESSAGE":[97,27,91,51,49,109,98,255],"PRIORITY":"4"}"#,
            "\n",
            r#"{"MESSAGE":["first",[104,105]],"_PID":"not a pid"}"#,
            "\n",
            r#"{"MESSAGE":null,"PRIORITY":"12"}"#,
            "\n",
            "not json\n",
            "[1,2]\n",
        );
        let p = parse_journal(out.as_bytes(), false, &unit());
        assert_eq!(p.skipped, 2);
        let m: Vec<&str> = p.entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(m, ["", "first", "a\u{1b}[31mb\u{fffd}"]);
        assert_eq!(p.entries[0].priority, "12");
        assert_eq!(p.entries[1].pid, None);
        assert_eq!(p.entries[1].priority, "");
        assert_eq!(p.entries[2].unit, "demo-web.service");
        assert_eq!(p.entries[2].timestamp, "");
    }

    #[test]
    fn a_cut_read_drops_its_partial_line() {
        let out = b"{\"MESSAGE\":\"newest\"}\n{\"MESSAGE\":\"older\"}\n{\"MESSA";
        let p = parse_journal(out, true, &unit());
        let m: Vec<&str> = p.entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(m, ["older", "newest"]);
        assert_eq!(p.skipped, 0);
        // Not cut: the same tail is a bad line, counted.
        assert_eq!(parse_journal(out, false, &unit()).skipped, 1);
    }
}
