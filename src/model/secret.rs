//! Secret variables: playbook `vars` named in `secret_vars`. Their values
//! still reach the hosts (a token in a unit file's `Environment=`), but
//! never what drover shows: every text that leaves the engine (plans,
//! saved plans, job results, journals, errors) passes through
//! [`Secrets::redact`], which puts a marker with a digest in place of each
//! value, so a reviewer still sees that a secret changed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

/// The shortest secret drover accepts, in characters. A shorter value
/// occurs by chance in ordinary text (a port, a word), so hiding it would
/// mangle output and still not hide it reliably.
pub const MIN_SECRET_CHARS: usize = 4;

struct Secret {
    name: String,
    value: String,
    marker: String,
}

/// The values of a playbook's secret variables, longest first, with the
/// marker shown in place of each.
#[derive(Default)]
pub struct Secrets {
    items: Vec<Secret>,
}

// Derived Debug would print the values into any `{:?}` of a playbook or job.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|s| &s.marker))
            .finish()
    }
}

/// The marker shown instead of a secret's value: its name and the first 8
/// hex digits of the value's SHA-256.
pub fn marker(name: &str, value: &str) -> String {
    let d = Sha256::digest(value.as_bytes());
    let hex: String = d.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("<secret {name} sha256:{hex}>")
}

/// The marker shown instead of a secret parameter's value: its name only.
/// A parameter's value comes from a caller at run time, often a weak one
/// (a password typed by hand); a digest of it, even a short one, would let
/// anyone who reads a plan check guesses.
pub fn param_marker(name: &str) -> String {
    format!("<secret params.{name}>")
}

/// The text a variable's value renders to in a template, which is the
/// text to hide. Only strings and numbers: `true` or a list would hide
/// every ordinary `true` and are not what a secret looks like.
pub fn rendered(value: &serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(_) => Ok(minijinja::Value::from_serialize(value).to_string()),
        serde_json::Value::Bool(_) => Err("is a boolean".into()),
        serde_json::Value::Null => Err("is null".into()),
        serde_json::Value::Array(_) => Err("is a list".into()),
        serde_json::Value::Object(_) => Err("is a mapping".into()),
    }
}

impl Secrets {
    /// No secrets: redaction changes nothing.
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Add one secret value (empty: nothing to hide, skipped).
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.insert_marked(name, value, marker(name, value))
    }

    /// Add a secret parameter's value, hidden by [`param_marker`].
    pub fn insert_param(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.insert_marked(name, value, param_marker(name))
    }

    fn insert_marked(&mut self, name: &str, value: &str, marker: String) -> Result<(), String> {
        if value.is_empty() {
            return Ok(());
        }
        let chars = value.chars().count();
        if chars < MIN_SECRET_CHARS {
            return Err(format!(
                "is {chars} character{} long; a secret shorter than {MIN_SECRET_CHARS} characters cannot be redacted reliably (the same characters occur in ordinary output), so use a longer value or drop `{name}` from `secret_vars`",
                if chars == 1 { "" } else { "s" }
            ));
        }
        if self.items.iter().any(|s| s.value == value) {
            return Ok(());
        }
        self.items.push(Secret {
            name: name.to_string(),
            value: value.to_string(),
            marker,
        });
        // Longest first: of two overlapping secrets the longer one is hidden
        // whole, never half of it beside the shorter one's marker.
        self.items
            .sort_by(|a, b| b.value.len().cmp(&a.value.len()).then(a.name.cmp(&b.name)));
        Ok(())
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The names of the secrets, longest value first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|s| s.name.as_str())
    }

    /// The name of a secret whose value occurs in `text`, if any.
    pub fn found_in(&self, text: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|s| text.contains(&s.value))
            .map(|s| s.name.as_str())
    }

    /// `text` with every occurrence of a secret value replaced by its
    /// marker. Longer secrets are placed first; an occurrence of a shorter
    /// one overlapping a placed one is already hidden in part and is left.
    /// Markers are never searched again, so a secret that happens to occur
    /// in a marker (a name, hex digits) cannot mangle it.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.items.is_empty() {
            return Cow::Borrowed(text);
        }
        // start -> (end, secret): placed occurrences, non-overlapping.
        let mut placed: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for (i, s) in self.items.iter().enumerate() {
            let mut from = 0;
            while let Some(p) = text.get(from..).and_then(|rest| rest.find(&s.value)) {
                let (start, end) = (from + p, from + p + s.value.len());
                let before = placed
                    .range(..=start)
                    .next_back()
                    .filter(|(_, (e, _))| *e > start);
                let after = placed.range(start..end).next();
                match before.or(after) {
                    // Every occurrence starting before the placed one ends
                    // overlaps it too: go on past it.
                    Some((_, (e, _))) => from = (*e).max(start + 1),
                    None => {
                        placed.insert(start, (end, i));
                        from = end;
                    }
                }
                // `from` may land inside a character (start + 1); `get`
                // then yields None only if it is past the end, so step to
                // the next boundary instead.
                while from < text.len() && !text.is_char_boundary(from) {
                    from += 1;
                }
            }
        }
        if placed.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, (end, i)) in placed {
            out.push_str(&text[at..start]);
            out.push_str(&self.items[i].marker);
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// [`Secrets::redact`] of an owned string, reusing it when nothing is
    /// hidden.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(o) => o,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        let mut s = Secrets::new();
        for (n, v) in pairs {
            s.insert(n, v).unwrap();
        }
        s
    }

    #[test]
    fn every_occurrence_becomes_a_marker_with_the_digest() {
        let s = secrets(&[("token", "s3cr3t-t0ken")]);
        // `printf s3cr3t-t0ken | sha256sum` begins with fe5f98c6.
        let m = marker("token", "s3cr3t-t0ken");
        assert_eq!(m, "<secret token sha256:fe5f98c6>");
        assert_eq!(
            s.redact("Environment=TOKEN=s3cr3t-t0ken\nurl=http://x/?t=s3cr3t-t0ken&u=1"),
            format!("Environment=TOKEN={m}\nurl=http://x/?t={m}&u=1")
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(
            Secrets::new().redact("s3cr3t-t0ken"),
            Cow::Borrowed(_)
        ));
        // Another value, another digest: a changed secret shows as a change.
        assert_ne!(m, marker("token", "s3cr3t-t0ken2"));
    }

    #[test]
    fn overlapping_secrets_hide_the_longer_one_whole() {
        let s = secrets(&[("short", "pass"), ("long", "password123")]);
        let (short, long) = (marker("short", "pass"), marker("long", "password123"));
        assert_eq!(
            s.redact("a=password123 b=pass c=passpass"),
            format!("a={long} b={short} c={short}{short}")
        );
        // Overlapping at different starts: the longer one is placed first,
        // the shorter one's overlapping occurrence is left.
        let s = secrets(&[("a", "abcdef"), ("b", "efghijklmn")]);
        assert_eq!(
            s.redact("abcdefghijklmn"),
            format!("abcd{}", marker("b", "efghijklmn"))
        );
        assert!(!s.redact("xxabcdefghijklmnxx").contains("efghijklmn"));
    }

    #[test]
    fn markers_are_not_redacted_again() {
        // A secret that occurs in another secret's marker: "secret" and the
        // names are in every marker.
        let s = secrets(&[("api", "sha256"), ("db", "<secret api")]);
        let out = s.redact("sha256 and <secret api");
        assert_eq!(
            out,
            format!(
                "{} and {}",
                marker("api", "sha256"),
                marker("db", "<secret api")
            )
        );
    }

    #[test]
    fn multibyte_text_and_secrets() {
        let s = secrets(&[("pw", "pässwörd"), ("x", "ééé€")]);
        assert_eq!(
            s.redact("€ pässwörd ééééé€ ü"),
            format!("€ {} éé{} ü", marker("pw", "pässwörd"), marker("x", "ééé€"))
        );
    }

    #[test]
    fn short_secrets_are_refused_and_empty_ones_skipped() {
        let mut s = Secrets::new();
        let e = s.insert("pin", "123").unwrap_err();
        assert!(
            e.contains("3 characters") && e.contains("cannot be redacted reliably"),
            "{e}"
        );
        assert!(s.insert("multi", "äöü").is_err(), "characters, not bytes");
        s.insert("empty", "").unwrap();
        s.insert("ok", "1234").unwrap();
        assert_eq!(s.names().collect::<Vec<_>>(), ["ok"]);
    }

    #[test]
    fn values_are_hidden_as_templates_render_them() {
        assert_eq!(
            rendered(&serde_json::json!("abcd-efgh")).unwrap(),
            "abcd-efgh"
        );
        assert_eq!(rendered(&serde_json::json!(123456)).unwrap(), "123456");
        for bad in [
            serde_json::json!(true),
            serde_json::json!(null),
            serde_json::json!(["a"]),
            serde_json::json!({ "a": "b" }),
        ] {
            assert!(rendered(&bad).is_err(), "{bad}");
        }
        let s = secrets(&[("token", "abcd-efgh"), ("port", "123456")]);
        assert_eq!(s.found_in("x 123456 y"), Some("port"));
        assert_eq!(s.found_in("x 12345 y"), None);
        // The values never show in a debug print of a playbook or job.
        assert!(!format!("{s:?}").contains("abcd-efgh"), "{s:?}");
    }
}
