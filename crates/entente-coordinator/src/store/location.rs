//! Where the database lives: parsing the URL (or bare path) given to
//! [`super::Store::open`] into a backend and a URL sqlx can connect to.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

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
    /// The SQLite database file (`None` for PostgreSQL and in-memory SQLite).
    pub(crate) file: Option<PathBuf>,
}

impl Location {
    /// Accepts `sqlite:…`, `postgres://…`, `postgresql://…`, or a bare file
    /// path (SQLite). SQLite URLs without `mode=` get `mode=rwc`, so the file is
    /// created on first use.
    pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(sqlite(with_create_mode(url)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location {
                backend: Backend::Postgres,
                url: url.to_string(),
                file: None,
            });
        }
        if url.is_empty() || url.contains("://") {
            return Err(StoreError::UnsupportedUrl { url: redact(url) });
        }
        Ok(sqlite(with_create_mode(&sqlite_url_for_path(Path::new(
            url,
        )))))
    }

    /// The same database, for reading only: SQLite opens it with `mode=ro`, which never
    /// creates a file.
    pub(crate) fn read_only(&self) -> Location {
        match self.backend {
            Backend::Sqlite => sqlite(with_mode(&self.url, "ro")),
            Backend::Postgres => self.clone(),
        }
    }

    /// The URL for every connection after the first: a SQLite URL that would create a missing
    /// file (`mode=rwc`) opens it read-write only (`mode=rw`), so a connection made after the
    /// file was deleted fails instead of starting an empty store in its place.
    pub(crate) fn existing_url(&self) -> String {
        match self.backend {
            Backend::Sqlite if mode(&self.url) == Some("rwc") => with_mode(&self.url, "rw"),
            _ => self.url.clone(),
        }
    }

    /// The URL with any password replaced by `***`, for messages and logs; a SQLite URL
    /// without the `mode=` this module adds to it.
    pub(crate) fn redacted(&self) -> String {
        let shown = match self.backend {
            Backend::Sqlite => without_mode(&self.url),
            Backend::Postgres => self.url.clone(),
        };
        redact(&shown)
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

/// A SQLite location for `url`, with the file it names (as sqlx reads the URL).
fn sqlite(url: String) -> Location {
    let in_memory = mode(&url) == Some("memory") || url.contains(":memory:");
    let file = SqliteConnectOptions::from_str(&url)
        .ok()
        .filter(|_| !in_memory)
        .map(|options| options.get_filename().to_path_buf());
    Location {
        backend: Backend::Sqlite,
        url,
        file,
    }
}

/// The value of the URL's `mode=` parameter, if it has one.
fn mode(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("mode="))
}

fn with_create_mode(url: &str) -> String {
    match mode(url) {
        Some(_) => url.to_string(),
        None => with_mode(url, "rwc"),
    }
}

/// `url` without its `mode=` parameter.
fn without_mode(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("mode="))
        .collect();
    if rest.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", rest.join("&"))
    }
}

/// `url` with its `mode=` parameter set to `mode` (replaced, or added).
fn with_mode(url: &str, mode: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return format!("{url}?mode={mode}");
    };
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.starts_with("mode="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("mode={mode}"));
    format!("{head}?{}", pairs.join("&"))
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
    fn shown_urls_leave_out_the_mode_entente_adds() {
        let l = Location::parse("sqlite:///tmp/a.db").unwrap();
        assert!(l.url.contains("mode=rwc"));
        assert_eq!(l.redacted(), "sqlite:///tmp/a.db");
        assert_eq!(l.read_only().redacted(), "sqlite:///tmp/a.db");
        let l = Location::parse("sqlite:///tmp/a.db?cache=shared").unwrap();
        assert_eq!(l.redacted(), "sqlite:///tmp/a.db?cache=shared");
    }

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
    fn read_only_and_later_connections_never_create_the_file() {
        let loc = Location::parse("sqlite:///srv/a.db?cache=shared").unwrap();
        assert_eq!(loc.file.as_deref(), Some(Path::new("/srv/a.db")));
        assert_eq!(
            loc.existing_url(),
            "sqlite:///srv/a.db?cache=shared&mode=rw"
        );
        assert_eq!(
            loc.read_only().url,
            "sqlite:///srv/a.db?cache=shared&mode=ro"
        );
        let explicit = Location::parse("sqlite:///srv/a.db?mode=rwc&cache=shared").unwrap();
        assert_eq!(
            explicit.read_only().url,
            "sqlite:///srv/a.db?cache=shared&mode=ro"
        );
        assert_eq!(Location::parse("sqlite::memory:").unwrap().file, None);
        let pg = Location::parse("postgres://u:p@db/x").unwrap();
        assert_eq!((pg.file.clone(), pg.existing_url()), (None, pg.url.clone()));
    }

    #[test]
    fn bare_paths_are_sqlite_files() {
        let loc = Location::parse("/tmp/odd ?#%.db").unwrap();
        assert_eq!(loc.backend, Backend::Sqlite);
        assert_eq!(loc.url, "sqlite:///tmp/odd %3F%23%25.db?mode=rwc");
        assert_eq!(loc.file.as_deref(), Some(Path::new("/tmp/odd ?#%.db")));
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
