//! What a site may be called: one rule for the manifest and for the certificates the
//! federation CA issues, so that every site a valid manifest names can get a certificate.

/// The longest site name: one DNS label.
pub const MAX_SITE_NAME_LEN: usize = 63;

/// Why `name` is not a site name, if it is not: names are 1 to 63 letters, digits, `-`, `_`
/// or `.`, not starting with `-` (it would read as a command-line flag) and not only dots
/// (they name folders).
pub fn site_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_SITE_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else if name.bytes().all(|b| b == b'.') {
        Some("it is only dots, which name folders")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some("it contains a character other than a letter, digit, '-', '_' or '.'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_a_certificate_are_refused() {
        for ok in ["site-a", "a", "A.b_c-9", &"x".repeat(63)] {
            assert_eq!(site_name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(64), "longer than 63"),
            ("-site", "starts with '-'"),
            ("..", "only dots"),
            ("site a", "a character other"),
            ("sité", "a character other"),
        ] {
            let problem = site_name_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
    }
}
