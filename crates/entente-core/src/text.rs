//! Text that others supplied, made fit for an error message or a log line: cut to a bounded
//! length, so that a 50 MB value in a manifest, a data file or a network message is named in an
//! error, never echoed whole.

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
}
