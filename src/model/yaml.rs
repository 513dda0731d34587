//! Strict YAML loading: one place that turns a file into a typed model or
//! into an error naming the file, line, column, field path and a suggestion.
//!
//! serde-saphyr is used (not serde_yaml) because it is maintained, pure
//! Rust, reports positions and bounds alias expansion; strict booleans keep
//! `yes`/`NO` strings (the "Norway problem").

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::model::error::{suggest, Error, Position, Result};

/// Files larger than this are refused before parsing: a runbook or an
/// inventory of this size is a mistake or an attack.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Read a file with a size bound, naming the file on failure. The bound
/// holds for what is read, not for what metadata claims: `/dev/zero`, a
/// pipe or a file growing meanwhile stop one byte past the limit.
pub fn read_bounded(path: &Path, what: &'static str) -> Result<String> {
    read_bounded_to(path, what, MAX_FILE_BYTES)
}

/// [`read_bounded`] with a bound of the caller's (a facts file of a large
/// fleet is larger than any runbook).
pub fn read_bounded_to(path: &Path, what: &'static str, limit: u64) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    // The claimed size, within the bound, saves regrowing a 20 MB facts
    // file's buffer; it decides nothing.
    let claimed = file.metadata().map_or(0, |m| m.len().min(limit));
    let mut bytes = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0) + 1);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            what,
            "",
            format!(
                "{} is larger than the {} bytes drover accepts",
                path.display(),
                limit
            ),
            None,
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::io(
            "read",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            ),
        )
    })
}

/// Parse YAML text into `T`, strictly.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path, what: &'static str) -> Result<T> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
        // Nodes and events scale with the text: every node costs at least
        // a byte of input (an event at most two), and the text is already
        // bounded by MAX_FILE_BYTES. What can multiply without input,
        // aliases, has fixed limits below. A fixed node budget refused a
        // 20,000-host inventory.
        budget: serde_saphyr::budget! {
            max_aliases: 1_000,
            max_recorded_anchor_events: 100_000,
            max_events: (2 * text.len()).max(5_000_000),
            max_nodes: text.len().max(250_000),
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    };
    // Fast path: plain deserialisation. Only a failing file pays for
    // field-path tracking, on a second parse.
    match serde_saphyr::from_str_with_options::<T>(text, options.clone()) {
        Ok(v) => Ok(v),
        Err(first) => {
            let mut field = String::new();
            let result =
                serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                        field = e.path().to_string();
                        e.into_inner()
                    })
                });
            match result {
                Ok(_) => Err(parse_error(&first, "", text, file, what)),
                Err(e) => Err(parse_error(&e, &field, text, file, what)),
            }
        }
    }
}

/// Turn a serde-saphyr error into drover's error, keeping the position.
fn parse_error(
    e: &serde_saphyr::Error,
    field: &str,
    text: &str,
    file: &Path,
    what: &'static str,
) -> Error {
    let position = e
        .location()
        .and_then(|l| (l.line() > 0).then(|| Position::at(file, text, l.line(), l.column())));
    let mut message = e.without_snippet().to_string();
    // The position is rendered by drover in one format; drop saphyr's copy.
    if let Some(idx) = message.rfind(" at line ") {
        message.truncate(idx);
    }
    // Speak to the user, not to a developer configuring serde-saphyr.
    message = message.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        "; each key may appear only once",
    );
    let field = clean_field(field);
    let suggestion = typo_suggestion(&message);
    Error::Parse(Box::new(crate::model::error::Diagnostic {
        what,
        field,
        message,
        suggestion,
        position,
    }))
}

/// Parse JSON text into `T`, strictly, with the same kind of errors as
/// [`parse`]: field path, position, suggestion. A dynamic inventory's
/// output comes through here.
pub fn parse_json<T: DeserializeOwned>(text: &str, file: &Path, what: &'static str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let (field, inner) = match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(v) => match de.end() {
            Ok(()) => return Ok(v),
            Err(e) => (String::new(), e),
        },
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    let mut message = inner.to_string();
    if let Some(idx) = message.rfind(" at line ") {
        message.truncate(idx);
    }
    if inner.is_syntax() || inner.is_eof() {
        message = format!("not valid JSON: {message}");
    } else if let Some((head, expected)) = message.split_once(", expected ") {
        // serde_json quotes each expected word; the YAML errors do not.
        message = format!("{head}, expected {}", expected.replace('`', ""));
    }
    let mut position = (inner.line() > 0).then(|| {
        Position::at(
            file,
            text,
            inner.line() as u64,
            inner.column().max(1) as u64,
        )
    });
    let field = if inner.is_syntax() || inner.is_eof() {
        String::new()
    } else {
        clean_field(&field)
    };
    // serde_json points past the key it rejects; the key's own start, on
    // the same line, is where YAML errors point too.
    if !field.is_empty() {
        let segs: Vec<&str> = field
            .split('.')
            .map(|s| s.split('[').next().unwrap_or(s))
            .collect();
        if let (Some(at), Some(key)) = (&mut position, locate(text, file, &segs)) {
            if key.line == at.line && key.column < at.column {
                *at = key;
            }
        }
    }
    let suggestion = typo_suggestion(&message);
    Err(Error::Parse(Box::new(crate::model::error::Diagnostic {
        what,
        field,
        message,
        suggestion,
        position,
    })))
}

/// serde_path_to_error's path as drover writes field paths.
fn clean_field(field: &str) -> String {
    let field = field
        .trim_start_matches('.')
        .replace(".?", "")
        .replace(".value", "")
        .trim_end_matches('?')
        .to_string();
    if field == "." {
        String::new()
    } else {
        field
    }
}

/// For "unknown field `x`, expected one of a, b" and "unknown variant" messages,
/// the nearest expected word.
fn typo_suggestion(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, tail) = rest.split_once('`')?;
    let expected = tail.split_once("expected")?.1;
    let candidates: Vec<&str> = expected
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty() && *w != "one" && *w != "of" && *w != "or")
        .collect();
    suggest(word, candidates)
}

/// Find where a key path such as `["hosts", "web-1", "labels"]` is written,
/// for errors found after parsing (when serde no longer has positions).
/// Each segment is searched after the previous one; good enough to point a
/// person at the right line.
pub fn locate(text: &str, file: &Path, path: &[&str]) -> Option<Position> {
    let mut from = 0usize;
    let mut found = None;
    for seg in path {
        // A number is an item of the block sequence that follows: the
        // n-th `- ` line at the first item's indentation.
        if let Ok(n) = seg.parse::<usize>() {
            let (i, c) = nth_item(text, from, n)?;
            from = i;
            found = Some(Position::at(file, text, i as u64 + 1, c as u64 + 1));
            continue;
        }
        let mut hit = None;
        for (i, line) in text.lines().enumerate().skip(from) {
            let trimmed = line.trim_start().trim_start_matches("- ");
            let candidates = [
                format!("{seg}:"),
                format!("\"{seg}\":"),
                format!("'{seg}':"),
            ];
            let mut col = None;
            for c in &candidates {
                if trimmed.starts_with(c.as_str()) {
                    col = Some(line.len() - trimmed.len());
                    break;
                }
                // Flow mappings: `{ key: value }`.
                for pat in [format!("{{ {c}"), format!("{{{c}"), format!(", {c}")] {
                    if let Some(p) = line.find(pat.as_str()) {
                        col = Some(p + pat.len() - c.len());
                        break;
                    }
                }
                if col.is_some() {
                    break;
                }
            }
            if let Some(c) = col {
                hit = Some((i, c));
                break;
            }
        }
        let (i, c) = hit?;
        from = i;
        found = Some(Position::at(file, text, i as u64 + 1, c as u64 + 1));
    }
    found
}

/// Line and column of item `n` of the block sequence starting at or after
/// line `from`.
fn nth_item(text: &str, from: usize, n: usize) -> Option<(usize, usize)> {
    let mut indent = None;
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(from) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let col = line.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if is_item => indent = Some(col),
            None => continue,
            // Back out of the sequence: it has no item `n`.
            Some(ind) if col < ind => return None,
            Some(_) => {}
        }
        if is_item && Some(col) == indent {
            if seen == n {
                return Some((i, col));
            }
            seen += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        flag: Option<bool>,
    }

    #[test]
    fn a_sequence_index_is_located_at_its_item() {
        let text = "keys:\n  - name: a\n    sha256: x\n  - name: b\n    sha256: y\nother: 1\n";
        let p = |path: &[&str]| locate(text, Path::new("k.yml"), path).map(|p| p.to_string());
        assert_eq!(
            p(&["keys", "1", "sha256"]).as_deref(),
            Some("k.yml line 5 column 5")
        );
        assert_eq!(p(&["keys", "0"]).as_deref(), Some("k.yml line 2 column 3"));
        assert_eq!(p(&["keys", "2"]), None);
    }

    #[test]
    fn unknown_key_names_field_position_and_suggestion() {
        let err = parse::<Doc>("name: x\nflgg: true\n", Path::new("f.yml"), "playbook")
            .unwrap_err()
            .details();
        assert!(err.contains("unknown field `flgg`"), "{err}");
        assert!(err.contains("did you mean `flag`?"), "{err}");
        assert!(err.contains("f.yml line 2 column 1"), "{err}");
    }

    #[test]
    fn norway_is_not_a_boolean() {
        let doc = parse::<Doc>("name: NO\n", Path::new("f.yml"), "playbook").unwrap();
        assert_eq!(doc.name, "NO");
        let err = parse::<Doc>("name: x\nflag: yes\n", Path::new("f.yml"), "playbook")
            .unwrap_err()
            .details();
        assert!(err.starts_with("flag: invalid boolean"), "{err}");
    }
}
