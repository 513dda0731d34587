//! Property tests of the model, offline: maintenance windows against an
//! independent reading of README's rules, and the parsers a user's text
//! reaches (playbooks, inventories, selectors, templates, unit names) fed
//! arbitrary input, which they must refuse with an error, never a panic.
//!
//! Each property runs a bounded number of cases so the file stays well
//! under a minute on two cores.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use drover::model::inventory::{Host, Inventory};
use drover::model::playbook::{Playbook, Window};
use drover::model::target::Selector;
use drover::model::template::Templates;
use drover::model::unit::UnitName;
use proptest::prelude::*;

/// 256 cases a property; `PROPTEST_CASES=N` runs a longer hunt by hand.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

// ---------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// Zones with the shapes of DST there are: none, the usual hour (north and
/// south), half an hour (Lord Howe), an odd offset (Chatham, Kathmandu).
const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
];

/// A window as a user writes it.
#[derive(Debug, Clone)]
struct WindowCase {
    /// Bit i set: `DAYS[i]` is listed; 0: no `days:` key (every day).
    days: u8,
    start: u32,
    end: u32,
    tz: &'static str,
}

impl WindowCase {
    fn days(&self) -> Vec<Weekday> {
        (0..7)
            .filter(|i| self.days & (1 << i) != 0)
            .map(|i| DAYS[i].1)
            .collect()
    }

    fn yaml(&self) -> String {
        let days: Vec<&str> = (0..7)
            .filter(|i| self.days & (1 << i) != 0)
            .map(|i| DAYS[i].0)
            .collect();
        let days = if days.is_empty() {
            String::new()
        } else {
            format!("days: [{}], ", days.join(", "))
        };
        format!(
            "window: {{ {days}start: \"{:02}:{:02}\", end: \"{:02}:{:02}\", tz: {} }}\n",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60,
            self.tz
        )
    }

    /// The window through the real parsing path: a playbook's text.
    fn window(&self) -> Window {
        window_of(&self.yaml())
    }
}

fn window_of(window_yaml: &str) -> Window {
    let text = format!(
        "name: w\n{window_yaml}steps:\n  - {{ id: a, service: {{ name: x, state: started }} }}\n"
    );
    Playbook::from_str(&text, Path::new("w.yml"))
        .unwrap_or_else(|e| panic!("{}: {}", text, e.details()))
        .window
        .expect("the playbook has a window")
}

/// README's rules, written independently of `Window::contains`: times are
/// wall-clock times in `tz`; each listed day (every day without `days`)
/// the window opens at `start` and closes at the next `end` (the same day,
/// or the next when `end` is before `start`: it belongs to the day it
/// opened); `start == end` never opens. So `now` is inside when some
/// opening of today or yesterday (only yesterday's can still be running)
/// is at or before `now` and its closing after it.
fn reference(case: &WindowCase, now: DateTime<Utc>) -> bool {
    let tz: Tz = case.tz.parse().unwrap();
    let local: NaiveDateTime = now.with_timezone(&tz).naive_local();
    let days = case.days();
    let at = |d: NaiveDate, minute: u32| d.and_hms_opt(minute / 60, minute % 60, 0).unwrap();
    (0..=1).any(|back| {
        let day = local.date() - Days::new(back);
        if !days.is_empty() && !days.contains(&day.weekday()) {
            return false;
        }
        let open = at(day, case.start);
        let close = match case.end.cmp(&case.start) {
            std::cmp::Ordering::Greater => at(day, case.end),
            std::cmp::Ordering::Less => at(day + Days::new(1), case.end),
            std::cmp::Ordering::Equal => return false,
        };
        open <= local && local < close
    })
}

fn window_case() -> impl Strategy<Value = WindowCase> {
    // Whole and half hours are where people put windows and where DST
    // changes land; any minute covers the rest.
    let minute = prop_oneof![(0u32..48).prop_map(|h| h * 30), 0u32..1440,];
    (
        0u8..128,
        minute.clone(),
        minute,
        prop::sample::select(&ZONES[..]),
    )
        .prop_map(|(days, start, end, tz)| WindowCase {
            days,
            start,
            end,
            tz,
        })
}

/// Instants from 2020 to 2035, and many near DST changes (the nights where
/// a wall clock skips or repeats an hour).
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let lo = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let hi = Utc
        .with_ymd_and_hms(2035, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let changes: Vec<i64> = [
        (2026, 3, 29, 1),  // Europe/Berlin, spring
        (2026, 10, 25, 1), // Europe/Berlin, autumn
        (2026, 3, 8, 7),   // America/New_York, spring
        (2026, 11, 1, 6),  // America/New_York, autumn
        (2026, 4, 4, 15),  // Australia/Lord_Howe, half an hour back
        (2026, 10, 3, 15), // Australia/Lord_Howe, half an hour on
        (2026, 4, 4, 14),  // Pacific/Chatham
        (2026, 9, 26, 14), // Pacific/Chatham
    ]
    .iter()
    .map(|&(y, m, d, h)| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp())
    .collect();
    let near_change =
        (prop::sample::select(changes), -2 * 86_400i64..2 * 86_400).prop_map(|(c, off)| c + off);
    prop_oneof![lo..hi, near_change].prop_map(|t| DateTime::<Utc>::from_timestamp(t, 0).unwrap())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn window_contains_follows_the_readme(
        case in window_case(),
        instants in prop::collection::vec(instant(), 16),
    ) {
        let w = case.window();
        for now in instants {
            prop_assert_eq!(
                w.contains(now),
                reference(&case, now),
                "{} at {} ({} local)",
                case.yaml().trim(),
                now,
                now.with_timezone(&w.tz)
            );
        }
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

#[test]
fn a_window_over_midnight_belongs_to_the_day_it_opened() {
    assert_eq!(utc(2026, 11, 28, 0, 0).weekday(), Weekday::Sat);
    let w = window_of("window: { days: [sat], start: \"22:00\", end: \"02:00\", tz: UTC }\n");
    assert!(w.contains(utc(2026, 11, 28, 22, 0)), "Saturday night");
    assert!(
        w.contains(utc(2026, 11, 29, 1, 59)),
        "Saturday's window on Sunday"
    );
    assert!(!w.contains(utc(2026, 11, 29, 2, 0)), "closed at 02:00");
    assert!(!w.contains(utc(2026, 11, 28, 1, 0)), "Friday's window");
    assert!(!w.contains(utc(2026, 11, 29, 23, 0)), "Sunday night");
    assert!(!w.contains(utc(2026, 11, 28, 21, 59)), "before it opens");
}

#[test]
fn window_days_are_honoured() {
    assert_eq!(utc(2026, 11, 30, 0, 0).weekday(), Weekday::Mon);
    let w = window_of("window: { days: [mon, wed], start: \"02:00\", end: \"04:00\" }\n");
    assert!(w.contains(utc(2026, 11, 30, 3, 0)));
    assert!(!w.contains(utc(2026, 12, 1, 3, 0)), "Tuesday");
    assert!(w.contains(utc(2026, 12, 2, 2, 0)), "Wednesday, at opening");
    assert!(!w.contains(utc(2026, 12, 2, 4, 0)), "Wednesday, at closing");
    // Without `days`, every day.
    let w = window_of("window: { start: \"02:00\", end: \"04:00\" }\n");
    for d in 0..7 {
        assert!(w.contains(utc(2026, 11, 30, 3, 0) + chrono::Duration::days(d)));
    }
}

#[test]
fn window_tz_is_honoured() {
    let w = window_of("window: { start: \"02:00\", end: \"04:00\", tz: Europe/Berlin }\n");
    // Winter, CET = UTC+1.
    assert!(!w.contains(utc(2026, 1, 15, 0, 59)));
    assert!(w.contains(utc(2026, 1, 15, 1, 0)));
    assert!(w.contains(utc(2026, 1, 15, 2, 59)));
    assert!(!w.contains(utc(2026, 1, 15, 3, 0)));
    // Summer, CEST = UTC+2.
    assert!(w.contains(utc(2026, 7, 15, 0, 0)));
    assert!(w.contains(utc(2026, 7, 15, 1, 59)));
    assert!(!w.contains(utc(2026, 7, 15, 2, 0)));
    // A zone's date decides the day, not UTC's: Monday 01:00 in Auckland
    // (UTC+13 in November) is Sunday 12:00 UTC.
    let w = window_of(
        "window: { days: [mon], start: \"00:30\", end: \"01:30\", tz: Pacific/Auckland }\n",
    );
    assert_eq!(utc(2026, 11, 29, 0, 0).weekday(), Weekday::Sun);
    assert!(w.contains(utc(2026, 11, 29, 12, 0)));
    assert!(!w.contains(utc(2026, 11, 30, 12, 0)));
}

#[test]
fn window_across_the_spring_dst_change() {
    // Europe/Berlin, Sunday 2026-03-29: 02:00 CET jumps to 03:00 CEST at
    // 01:00 UTC.
    let w = window_of("window: { start: \"01:00\", end: \"04:00\", tz: Europe/Berlin }\n");
    assert!(!w.contains(utc(2026, 3, 28, 23, 59)), "00:59 CET");
    assert!(w.contains(utc(2026, 3, 29, 0, 0)), "01:00 CET");
    assert!(w.contains(utc(2026, 3, 29, 1, 0)), "03:00 CEST");
    assert!(w.contains(utc(2026, 3, 29, 1, 59)), "03:59 CEST");
    assert!(
        !w.contains(utc(2026, 3, 29, 2, 0)),
        "04:00 CEST: two real hours"
    );
    // A window inside the skipped hour does not open that night.
    let w = window_of("window: { start: \"02:00\", end: \"03:00\", tz: Europe/Berlin }\n");
    let night = utc(2026, 3, 28, 12, 0);
    for m in 0..24 * 60 {
        let t = night + chrono::Duration::minutes(m);
        assert!(!w.contains(t), "{t} is in the skipped hour's window");
    }
    assert!(
        w.contains(utc(2026, 3, 30, 0, 30)),
        "02:30 CEST the next night"
    );
    // Saturday's window over midnight into the change.
    let w =
        window_of("window: { days: [sat], start: \"23:00\", end: \"03:30\", tz: Europe/Berlin }\n");
    assert!(w.contains(utc(2026, 3, 28, 22, 0)), "Sat 23:00 CET");
    assert!(w.contains(utc(2026, 3, 29, 0, 59)), "Sun 01:59 CET");
    assert!(w.contains(utc(2026, 3, 29, 1, 29)), "Sun 03:29 CEST");
    assert!(!w.contains(utc(2026, 3, 29, 1, 30)), "Sun 03:30 CEST");
    assert!(!w.contains(utc(2026, 3, 29, 21, 30)), "Sun 23:30 CEST");
}

#[test]
fn window_across_the_autumn_dst_change() {
    // Europe/Berlin, Sunday 2026-10-25: 03:00 CEST falls back to 02:00 CET
    // at 01:00 UTC, so 02:00-03:00 happens twice; both count.
    let w = window_of("window: { start: \"02:00\", end: \"03:00\", tz: Europe/Berlin }\n");
    assert!(!w.contains(utc(2026, 10, 24, 23, 59)), "01:59 CEST");
    assert!(w.contains(utc(2026, 10, 25, 0, 0)), "02:00 CEST");
    assert!(w.contains(utc(2026, 10, 25, 0, 59)), "02:59 CEST");
    assert!(w.contains(utc(2026, 10, 25, 1, 0)), "02:00 CET, again");
    assert!(w.contains(utc(2026, 10, 25, 1, 59)), "02:59 CET");
    assert!(!w.contains(utc(2026, 10, 25, 2, 0)), "03:00 CET");
    // 01:00-04:00 lasts four real hours that night.
    let w = window_of("window: { start: \"01:00\", end: \"04:00\", tz: Europe/Berlin }\n");
    assert!(!w.contains(utc(2026, 10, 24, 22, 59)), "00:59 CEST");
    assert!(w.contains(utc(2026, 10, 24, 23, 0)), "01:00 CEST");
    assert!(w.contains(utc(2026, 10, 25, 2, 59)), "03:59 CET");
    assert!(!w.contains(utc(2026, 10, 25, 3, 0)), "04:00 CET");
}

// ---------------------------------------------------------------------
// Loaders
// ---------------------------------------------------------------------

const PLAYBOOK: &str = r#"name: nightly web restart
strategy: linear
window: { days: [sat, sun], start: "02:00", end: "04:00", tz: UTC }
vars: { svc: demo-web, list: &l [a, b] }
steps:
  - id: restart-web
    target: role:web
    service: { name: "{{ vars.svc }}", state: restarted }
    serial: 1
    max_fail_percentage: 0
    wait: { active: true, timeout: 60s, http: "http://{{ host.name }}/" }
  - id: worker
    target: _any,role:worker
    service: { name: demo-worker.service, state: started, enabled: true }
  - id: audit
    needs: []
    target: [role:web, "!region:us"]
    when: "host.labels.role == 'web'"
    service: { name: demo-idle.service, state: stopped }
  - id: drain
    needs: [audit]
    maintenance: { enable: true, reason: "swap {{ vars.list }}", unit: demo-web }
  - id: register
    unit: { name: myapp, content: "[Service]\nExecStart=/bin/true\n" }
"#;

const INVENTORY: &str = r#"defaults:
  user: root
  transport: ssh
  connect_timeout: 10s
  labels: &base { dc: a }
hosts:
  web-1:
    address: 10.0.0.11
    port: 22
    labels: { role: web, region: eu.west.1 }
    vars: { http_port: 8080 }
    protected: [sshd.service]
  web-2: { address: "[::1]", labels: { role: web } }
  localhost: { transport: local, bus: "unix:path=/run/dbus/system_bus_socket" }
"#;

/// Bits of YAML and of drover's own syntax, so random text reaches past
/// the tokenizer into the schema and the validators.
const YAML_BITS: &[&str] = &[
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    ": ",
    ", ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "---\n",
    "...\n",
    "#",
    "|\n",
    "> ",
    "? ",
    "%YAML 1.2\n",
    "\t",
    "name",
    "steps",
    "id",
    "target",
    "service",
    "state",
    "started",
    "restarted",
    "needs",
    "when",
    "serial",
    "25%",
    "0",
    "-1",
    "1e999",
    "max_fail_percentage",
    "wait",
    "timeout",
    "500000000000y",
    "8d",
    "window",
    "days",
    "start",
    "end",
    "tz",
    "02:00",
    "24:00",
    "sat",
    "Europe/Berlin",
    "vars",
    "hosts",
    "defaults",
    "address",
    "bus",
    "labels",
    "unit",
    "maintenance",
    "enable",
    "reason",
    "content",
    "true",
    "false",
    "yes",
    "null",
    "~",
    "{{ vars.x }}",
    "{{",
    "}}",
    "{%",
    "%}",
    "_any",
    "_all",
    "role:web",
    "!",
    "é",
    "\u{0}",
    "\u{feff}",
    "🦀",
];

fn yaml_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(YAML_BITS), 0..80).prop_map(|v| v.concat())
}

/// One edit of a text: what a typo, a bad merge or a fuzzer does.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Char(usize, char),
    SwapLines(usize, usize),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), prop::sample::select(YAML_BITS)).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Char(at, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Delete(at, len) => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            Edit::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Char(at, c) => {
                if !chars.is_empty() {
                    let at = at % chars.len();
                    chars[at] = c;
                }
            }
            Edit::SwapLines(a, b) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
                chars = lines.join("\n").chars().collect();
            }
            Edit::DuplicateLine(a) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let a = a % lines.len();
                lines.insert(a, lines[a]);
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn the_loader_fixtures_are_valid() {
    Playbook::from_str(PLAYBOOK, Path::new("pb.yml")).unwrap();
    Inventory::from_str(INVENTORY, Path::new("inv.yml")).unwrap();
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn loaders_survive_arbitrary_text(text in prop_oneof![any::<String>(), yaml_soup()]) {
        // Ok or Err, and an Err renders: the property is "no panic".
        if let Err(e) = Playbook::from_str(&text, Path::new("pb.yml")) {
            let _ = e.details();
        }
        if let Err(e) = Inventory::from_str(&text, Path::new("inv.yml")) {
            let _ = e.details();
        }
    }

    #[test]
    fn loaders_survive_mutated_files(edits in prop::collection::vec(edit(), 1..6)) {
        let pb = apply_edits(PLAYBOOK, &edits);
        if let Err(e) = Playbook::from_str(&pb, Path::new("pb.yml")) {
            let _ = e.details();
        }
        let inv = apply_edits(INVENTORY, &edits);
        if let Err(e) = Inventory::from_str(&inv, Path::new("inv.yml")) {
            let _ = e.details();
        }
    }
}

// ---------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------

fn hosts() -> Vec<Host> {
    Inventory::from_str(
        "hosts:\n  web-1: { labels: { role: web, region: eu.west.1 } }\n  web-2: { labels: { role: web, region: eu } }\n  db-1: { labels: { role: db, region: us.east } }\n  bare: {}\n",
        Path::new("inv.yml"),
    )
    .unwrap()
    .hosts
}

fn selector_text() -> impl Strategy<Value = String> {
    let term = prop_oneof![
        Just("_all".to_string()),
        Just("_any".to_string()),
        Just("_other".to_string()),
        "[a-z0-9._-]{0,6}",
        "[a-z_-]{0,5}:[a-z0-9._-]{0,8}",
        Just("web-1".to_string()),
        Just("role:web".to_string()),
        Just("region:eu".to_string()),
        "[ !,:;$`'\"\\t\\n]{1,3}",
    ];
    let spaced = ("[ ]{0,2}", "!?", "[ ]{0,2}", term, "[ ]{0,2}")
        .prop_map(|(a, neg, b, t, c)| format!("{a}{neg}{b}{t}{c}"));
    prop::collection::vec(spaced, 1..5).prop_map(|v| v.join(","))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn selectors_never_panic_and_round_trip(raw in prop_oneof![any::<String>(), selector_text()]) {
        if let Ok(sel) = Selector::parse(&raw) {
            let shown = sel.to_string();
            let again = Selector::parse(&shown);
            prop_assert_eq!(again.as_ref(), Ok(&sel), "{:?} shown as {:?}", raw, shown);
            let again = again.unwrap();
            for h in hosts() {
                prop_assert_eq!(sel.matches(&h), again.matches(&h), "{} on {}", shown, h.name);
            }
        }
    }
}

// ---------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------

const JINJA_BITS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{-",
    "-}}",
    " ",
    "x",
    "vars",
    "host",
    ".",
    "name",
    "labels",
    "role",
    "vars.svc",
    "host.vars.port",
    "host.labels.role",
    "[",
    "]",
    "(",
    ")",
    "'",
    "\"",
    "|",
    "shell_quote",
    "upper",
    "length",
    "default",
    "join",
    "if",
    "else",
    "endif",
    "for",
    "in",
    "endfor",
    "range(3)",
    "loop.index",
    "set",
    "=",
    "==",
    "~",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "not",
    "and",
    "or",
    "none",
    "true",
    "1",
    "0",
    "-1",
    "9999999999999999999999",
    "1.5",
    "raw",
    "endraw",
    "macro",
    "endmacro",
    "call",
    "m()",
    "include",
    "extends",
    "block",
    "endblock",
    "filter",
    "endfilter",
    "with",
    "endwith",
    ";",
    "$(",
    "`",
    "é",
    "\n",
];

fn jinja_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(JINJA_BITS), 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn templates_never_panic(src in prop_oneof![any::<String>(), jinja_soup()]) {
        let vars = BTreeMap::from([
            ("svc".to_string(), serde_json::json!("demo-web")),
            ("x".to_string(), serde_json::json!([1, "two", {"three": 3}])),
        ]);
        let host = hosts().remove(0);
        let mut t = Templates::new(&vars).unwrap();
        if let Ok(id) = t.add_string(&src) {
            let ctx = t.host_context(&host);
            let _ = t.render(id, &ctx);
        }
        if let Ok(id) = t.add_unit_name(&src) {
            let ctx = t.host_context(&host);
            if let Ok(u) = t.render_unit(id, &ctx) {
                prop_assert!(UnitName::parse(u.as_str()).is_ok());
            }
        }
        if let Ok(id) = t.add_expression(&src) {
            let ctx = t.host_context(&host);
            let _ = t.condition(id, &ctx);
        }
    }
}

// ---------------------------------------------------------------------
// Unit names
// ---------------------------------------------------------------------

/// Characters a POSIX shell treats specially outside quotes. The
/// backslash is not listed: it is systemd's own escape (`\x2d` in
/// `dev-disk-by\x2duuid-….device`), part of the unit-name grammar, and
/// values reach a remote shell only quoted.
const SHELL_META: &str = "|&;<>()$`\"' \t\n*?[]#~!{}%=^,";

fn unit_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:_.@\\\\-]{0,12}",
        "[a-zA-Z0-9:_.@\\\\-]{0,12}\\.(service|timer|socket|target|mount|slice|bogus)",
        "[a-z]{1,5}[;|&$`' \\t\\n()<>]{1,2}[a-z]{0,5}(\\.service)?",
        "[a-z]{250,260}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unit_names_are_stable_and_shell_inert(raw in prop_oneof![any::<String>(), unit_text()]) {
        if let Ok(u) = UnitName::parse(&raw) {
            let s = u.as_str();
            prop_assert_eq!(UnitName::parse(s), Ok(u.clone()), "{:?}", raw);
            prop_assert!(s.len() <= 255, "{:?}", s);
            prop_assert!(
                !s.chars().any(|c| SHELL_META.contains(c) || c.is_whitespace() || c.is_control()),
                "{:?} holds a shell metacharacter", s
            );
            prop_assert!(
                s.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c)),
                "{:?} is outside systemd's grammar", s
            );
            prop_assert!(s.matches('@').count() <= 1, "{:?}", s);
        }
    }
}
