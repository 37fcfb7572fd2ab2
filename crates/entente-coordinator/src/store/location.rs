//! Where the database lives: parsing the URL (or bare path) given to
//! [`super::Store::open`] into a backend and a URL sqlx can connect to.

use std::path::Path;

use super::StoreError;

/// The database product behind a URL; picks the migration folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A parsed database location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) backend: Backend,
    /// The URL handed to sqlx; for SQLite it always carries a `mode`.
    pub(crate) url: String,
}

impl Location {
    /// Accepts `sqlite:…`, `postgres://…`, `postgresql://…`, or a bare file
    /// path (SQLite). SQLite URLs without `mode=` get `mode=rwc`, so the file is
    /// created on first use.
    pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Location {
                backend: Backend::Sqlite,
                url: with_create_mode(url),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location {
                backend: Backend::Postgres,
                url: url.to_string(),
            });
        }
        if url.is_empty() || url.contains("://") {
            return Err(StoreError::UnsupportedUrl { url: redact(url) });
        }
        Ok(Location {
            backend: Backend::Sqlite,
            url: with_create_mode(&sqlite_url_for_path(Path::new(url))),
        })
    }

    /// The URL with any password replaced by `***`, for messages and logs.
    pub(crate) fn redacted(&self) -> String {
        redact(&self.url)
    }
}

/// `sqlite://` followed by the absolute form of `path`, with the characters
/// that would end or escape the path (`%`, `?`, `#`) percent-encoded.
pub(crate) fn sqlite_url_for_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = String::from("sqlite://");
    for c in absolute.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

fn with_create_mode(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|pair| pair.starts_with("mode=")) => {
            url.to_string()
        }
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

/// `url` as it may be shown (banners, logs, errors): the password of `scheme://user:password@host…`
/// and of a `password=` (or `sslpassword=`) query parameter replaced by `***`. A password may
/// hold `/`, `?`, `#` or `@` where it should have been percent-encoded: everything from the
/// user name's `:` up to the last `@` of the URL is masked, so such a password never shows,
/// not even in part (an `@` later in the URL masks more than the password).
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let rest = &out[start..];
        // The user name ends at the first ':'; there is a password only if that comes before
        // the first '@'.
        let first_at = rest.find('@');
        let colon = rest.find(':').filter(|&c| first_at.is_some_and(|a| c < a));
        if let (Some(colon), Some(first_at)) = (colon, first_at) {
            let at = rest.rfind('@').unwrap_or(first_at);
            out.replace_range(start + colon + 1..start + at, "***");
        }
    }
    if let Some((head, query)) = out.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".into(),
                Some((key, _)) if key.eq_ignore_ascii_case("sslpassword") => {
                    "sslpassword=***".into()
                }
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}?{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_backends() {
        let sqlite = Location::parse("sqlite:///var/lib/entente/a.db").unwrap();
        assert_eq!(sqlite.backend, Backend::Sqlite);
        assert_eq!(sqlite.url, "sqlite:///var/lib/entente/a.db?mode=rwc");

        let pg = Location::parse("postgres://u:p@db:5432/entente").unwrap();
        assert_eq!(pg.backend, Backend::Postgres);
        assert_eq!(pg.url, "postgres://u:p@db:5432/entente");
        assert_eq!(
            Location::parse("postgresql://db/x").unwrap().backend,
            Backend::Postgres
        );
    }

    #[test]
    fn explicit_sqlite_mode_is_kept() {
        assert_eq!(
            Location::parse("sqlite:///a.db?mode=ro").unwrap().url,
            "sqlite:///a.db?mode=ro"
        );
        assert_eq!(
            Location::parse("sqlite:///a.db?cache=shared").unwrap().url,
            "sqlite:///a.db?cache=shared&mode=rwc"
        );
    }

    #[test]
    fn bare_paths_are_sqlite_files() {
        let loc = Location::parse("/tmp/odd ?#%.db").unwrap();
        assert_eq!(loc.backend, Backend::Sqlite);
        assert_eq!(loc.url, "sqlite:///tmp/odd %3F%23%25.db?mode=rwc");
        let relative = Location::parse("fed.entente.db").unwrap();
        assert!(relative.url.starts_with("sqlite:///"), "{}", relative.url);
        assert!(relative.url.ends_with("/fed.entente.db?mode=rwc"));
    }

    #[test]
    fn other_schemes_are_refused_with_the_fix() {
        let err = Location::parse("mysql://root:hunter2@db/x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("use sqlite://PATH or postgres://"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:s3cret@host:5432/db?sslmode=require"),
            "postgres://user:***@host:5432/db?sslmode=require"
        );
        assert_eq!(redact("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(
            redact("postgres://host/db?user=u&password=s3cret"),
            "postgres://host/db?user=u&password=***"
        );
    }

    #[test]
    fn passwords_with_url_characters_never_show_in_part() {
        for (url, shown) in [
            (
                "postgres://u:se/cret@db:5432/e",
                "postgres://u:***@db:5432/e",
            ),
            ("postgres://u:pa@ss@db/e", "postgres://u:***@db/e"),
            ("postgres://u:p?w#d@db/e", "postgres://u:***@db/e"),
            ("postgres://u:p@s/s@db/e?x=1", "postgres://u:***@db/e?x=1"),
            ("postgres://u:p@ss?x@db/e", "postgres://u:***@db/e"),
            (
                "postgres://u:pw@db/e?application_name=a@b",
                "postgres://u:***@b",
            ),
            (
                "postgres://u@db:5432/e?PASSWORD=x&sslpassword=y",
                "postgres://u@db:5432/e?password=***&sslpassword=***",
            ),
            ("postgres://db:5432/e", "postgres://db:5432/e"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
