//! What every page of the status page shares: escaping, the document's
//! head (with the style under the answer's nonce), the frame of a
//! session's pages (navigation, log out, CSRF token) and its end (the
//! scripts).

use std::fmt::Write as _;

use crate::model::keys::Role;

use super::page_assets::{COMMON_SCRIPT, STYLE};

/// The frame every page of a session shares: who is logged in, and the
/// session's CSRF token, which the page's script sends with every change.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    /// The session key's name, beside the log-out button.
    pub key_name: &'a str,
    /// Its role.
    pub role: Role,
    /// The session's CSRF token.
    pub csrf: &'a str,
}

/// The head of every page of a session, through the header with its
/// navigation and log-out button; the caller adds `<main>`.
pub fn page_start(title: &str, nonce: &str, c: &Chrome<'_>) -> String {
    let mut b = head(title, nonce);
    let _ = write!(
        b,
        "<meta name=\"csrf-token\" content=\"{}\"></head><body><header><h1><a href=\"/\">drover</a></h1><nav aria-label=\"pages\"><a href=\"/\">Fleet</a> <a href=\"/page/jobs\">Jobs</a></nav><form method=\"post\" action=\"/logout\" id=\"logout\"><span class=\"small\">{} ({})</span> <button type=\"submit\">Log out</button></form></header>",
        esc(c.csrf),
        esc(c.key_name),
        c.role.as_str()
    );
    b
}

/// The end of every page: the shared script (logout, CSRF) and the
/// page's own, under the answer's nonce.
pub fn page_end(b: &mut String, nonce: &str, scripts: &[&str]) {
    let _ = write!(b, "<script nonce=\"{nonce}\">{COMMON_SCRIPT}");
    for s in scripts {
        b.push_str(s);
    }
    b.push_str("</script></body></html>");
}

/// Escape text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The document's head, with the page's style under `nonce`.
pub fn head(title: &str, nonce: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style nonce=\"{nonce}\">{STYLE}</style>",
        esc(title)
    )
}

/// A serialized enum's word (`running`, `ok`).
pub fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

