//! Text that others supplied, made fit for an error message or a log line: cut to a bounded
//! length, so that a 50 MB value in a manifest, a data file or a network message is named in an
//! error, never echoed whole, and with the characters that would steer a terminal or reorder
//! what it shows written out as escapes.

use std::borrow::Cow;

/// Longest user-supplied value, in bytes, that an error message quotes whole.
pub const MAX_QUOTED: usize = 80;

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` as an error message quotes it: whole when it is at most [`MAX_QUOTED`] bytes, else
/// its beginning followed by `… (N bytes in all)`.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTED {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!(
        "{}… ({} bytes in all)",
        truncate(text, MAX_QUOTED),
        text.len()
    ))
}

/// Whether `c` is a character another party's text must not put on a terminal or a page as
/// it is: control characters other than tab (they move the cursor, start escape sequences or
/// end a line the reader believes is one), and the bidirectional controls that reorder text.
pub fn is_disruptive(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with each [`is_disruptive`] character written as a Rust-style escape (`\u{1b}`), so
/// that a reason a site sent or a server's message can be printed to a terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_disruptive) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_disruptive(c) {
            out.extend(c.escape_unicode());
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
    fn cuts_at_a_character_boundary() {
        assert_eq!(truncate("short", 1024), "short");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it steps back before it.
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn long_values_are_named_not_echoed() {
        assert_eq!(excerpt("site-a"), "site-a");
        let long = "x".repeat(50_000_000);
        let shown = excerpt(&long);
        assert!(shown.len() < 2 * MAX_QUOTED, "{}", shown.len());
        assert!(shown.ends_with("… (50000000 bytes in all)"), "{shown}");
    }

    #[test]
    fn terminal_controls_and_bidi_overrides_are_written_out() {
        assert_eq!(printable("over budget\tby 2"), "over budget\tby 2");
        assert_eq!(
            printable("a\u{1b}[31mred\nfake line\u{202e}txt\u{7}"),
            "a\\u{1b}[31mred\\u{a}fake line\\u{202e}txt\\u{7}"
        );
        assert!(
            !printable("\u{9b}\u{2067}\u{61c}")
                .chars()
                .any(is_disruptive)
        );
    }
}
