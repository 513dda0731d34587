//! The offending line of a file under an error, with a caret under the
//! column, as rustc and cargo show theirs:
//!
//! ```text
//!   --> pb.yml:7:32
//!    |
//!  7 |     service: { name: x, stae: started }
//!    |                         ^^^^
//! ```

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::model::error::{Error, Position};
use crate::render::escape::one_line;

/// The snippet of an input error that points at a line of a file, or
/// None (an error without a position, or without the line's text).
pub fn render_error(e: &Error, color: bool) -> Option<String> {
    match e {
        Error::Parse(d) | Error::Invalid(d) => render(d.position.as_ref()?, color),
        _ => None,
    }
}

/// The snippet of one position.
pub fn render(pos: &Position, color: bool) -> Option<String> {
    let source = pos.source.as_ref()?;
    // Controls (a terminal escape in a program's output, a tab) are shown
    // as escapes; the caret follows the character it pointed at.
    let mut text = String::with_capacity(source.text.len());
    let mut start = None;
    for (i, c) in source.text.chars().enumerate() {
        if i + 1 == source.column {
            start = Some(text.len());
        }
        let mut buf = [0u8; 4];
        text.push_str(&one_line(c.encode_utf8(&mut buf)));
    }
    let start = start.unwrap_or(text.len());
    let end = start + token_len(&text[start..]);
    let path = one_line(&pos.file.display().to_string()).into_owned();
    let line = usize::try_from(pos.line).ok()?;
    let mut snippet = Snippet::source(text.as_str())
        .line_start(line)
        .fold(false)
        .annotation(AnnotationKind::Primary.span(start..end));
    // `--> file:line:column` counts columns in the text shown; once a
    // control is escaped that is no longer the file's column, which the
    // error's first line gives anyway.
    if text == source.text {
        snippet = snippet.path(path.as_str());
    }
    let report = &[Group::with_level(Level::ERROR).element(snippet)];
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    Some(renderer.render(report))
}

/// How many bytes the caret underlines: the word or quoted string that
/// starts there, at least one character (or none at the end of the line).
fn token_len(rest: &str) -> usize {
    let mut chars = rest.char_indices();
    let Some((_, first)) = chars.next() else {
        return 0;
    };
    if first == '"' || first == '\'' {
        return rest[1..].find(first).map_or(first.len_utf8(), |i| i + 2);
    }
    let word = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '$');
    if !word(first) {
        return first.len_utf8();
    }
    rest.find(|c: char| !word(c)).unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn caret_under_the_column_and_controls_escaped() {
        let text = "name: x\nsteps:\n  - { id: a, stae: started }\n";
        let pos = Position::at(Path::new("pb.yml"), text, 3, 14);
        let out = render(&pos, false).unwrap();
        assert_eq!(
            out,
            " --> pb.yml:3:14\n  |\n3 |   - { id: a, stae: started }\n  |              ^^^^"
        );
        let text = "\x1b[2J{\"a\": 1}";
        let pos = Position::at(Path::new("p (output)"), text, 1, 5);
        let out = render(&pos, false).unwrap();
        assert!(out.contains("\\u{1b}[2J{\"a\": 1}"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
        assert!(out.ends_with("|          ^"), "{out}");
        assert!(!out.contains("-->"), "{out}");
    }

    #[test]
    fn no_line_no_snippet() {
        let mut pos = Position::at(Path::new("f"), "one line", 5, 1);
        assert!(render(&pos, false).is_none());
        pos.source = None;
        assert!(render(&pos, false).is_none());
    }
}
