//! Messages for a manifest that cannot be read as TOML: where (line and column) and what, with
//! the offending line quoted but never whole when it is long.

use crate::text::{excerpt, truncate};

/// Longest parser message quoted (it lists the allowed keys, so it may be long, but it may
/// also quote a key of any length).
const MAX_MESSAGE: usize = 1024;

/// 1-based line and column (in characters) of byte `offset` of `bytes`, whose first `offset`
/// bytes are UTF-8.
fn position(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The message for manifest bytes that are not UTF-8 from byte `valid_up_to` on.
pub(super) fn not_utf8(bytes: &[u8], valid_up_to: usize) -> String {
    let (line, column) = position(bytes, valid_up_to);
    let byte = bytes.get(valid_up_to).copied().unwrap_or(0);
    format!(
        "line {line}, column {column}: not UTF-8 text (byte 0x{byte:02x} at byte offset \
         {valid_up_to}); a manifest is TOML, which is UTF-8: save the file as UTF-8"
    )
}

/// The message for `text` that the TOML parser (or the manifest's schema) refused.
pub(super) fn describe(text: &str, error: &toml::de::Error) -> String {
    let what = error.message().trim().replace('\n', "; ");
    let what = if what.len() > MAX_MESSAGE {
        format!("{}…", truncate(&what, MAX_MESSAGE))
    } else {
        what
    };
    let Some(span) = error.span() else {
        return what;
    };
    let (line, column) = position(text.as_bytes(), span.start);
    let source = text.lines().nth(line - 1).unwrap_or("").trim();
    format!(
        "line {line}, column {column}: {what} (in `{}`)",
        excerpt(source)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position(b"ab", 0), (1, 1));
        assert_eq!(position(b"a\nbc", 3), (2, 2));
        assert_eq!(position(b"a\n\xc3\xa9\xffx", 4), (2, 2));
    }
}
