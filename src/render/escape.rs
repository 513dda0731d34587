//! Text from hosts made safe for a terminal and a code review.
//!
//! Hosts choose much of what drover prints: any service can set systemd's
//! StatusText (it lands in job errors), and maintenance reasons, unit
//! states, unit file content, health notes and the stderr of host commands
//! all come from them. Printed raw, an escape sequence in any of them can
//! clear a reviewer's screen, recolour or hide lines, retitle the terminal,
//! or forge a line that looks like drover's own; a newline splits one field
//! into a fake second line. Every renderer passes such text through
//! [`one_line`], which shows controls as visible escapes instead.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a review as itself.
///
/// The C0 controls (newline and tab too: a field is one line), DEL and the
/// C1 controls (0x9b is a one-byte CSI on some terminals) are Unicode's
/// `Cc` category. The bidirectional overrides and isolates are added
/// because they reorder what a reviewer sees without changing the bytes
/// ("Trojan Source").
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character shown as an escape, as Rust's
/// `escape_debug` does (`\n`, `\r`, `\t`, `\u{1b}`), so it stays on one
/// line and cannot drive the terminal. Borrowed when nothing needs it,
/// which is nearly always: fleets of clean hosts pay no allocation.
///
/// Backslashes are kept as they are: systemd's own unit-name escapes
/// (`\x2d`) must read as systemd wrote them, and the `\u{..}` form does
/// not collide with them.
pub fn one_line(s: &str) -> Cow<'_, str> {
    // Printable ASCII is the common case and safe byte by byte; only text
    // with other bytes needs the per-character check.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(
            one_line("demo-web.service: active (ä, \\x2d)"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(
            one_line("a\x1b[2J\x1b[31mOWNED\nb\r\tc\x7f\u{9b}d\u{202e}e\0"),
            "a\\u{1b}[2J\\u{1b}[31mOWNED\\nb\\r\\tc\\u{7f}\\u{9b}d\\u{202e}e\\u{0}"
        );
    }
}
