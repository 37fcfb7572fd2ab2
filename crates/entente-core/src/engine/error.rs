//! Errors that keep their kind: what failed, in words, and which of a few kinds of failure it
//! was, so that records, metrics and the audit log can tell a site that is over its privacy
//! budget from one that timed out without reading the words.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

/// The original error behind a failure, shared so that errors stay cheap to clone.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Which kind of failure an error is. Each kind has a stable snake_case name
/// ([`ErrorKind::as_str`]) used in round records, the store, the audit log, metrics and on
/// the wire; names are never reused for another kind.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The site's own policy refused the task (the manifest it agreed to, its data, a task it
    /// will not do): asking again will not help.
    Refused,
    /// The site refused because the task would take its privacy budget past its limit.
    OverBudget,
    /// No answer came before the deadline.
    TimedOut,
    /// The connection to the site failed or is gone.
    Transport,
    /// An answer came but could not be used: malformed, of the wrong kind, or failing the
    /// update checks (shapes, finite values, the norm bound, the claims).
    MalformedReply,
    /// Anything else: a failure inside the site or the coordinator, or a peer too old to say.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::OverBudget,
        ErrorKind::TimedOut,
        ErrorKind::Transport,
        ErrorKind::MalformedReply,
        ErrorKind::Internal,
    ];

    /// The kind's stable name: `refused`, `over_budget`, `timed_out`, `transport`,
    /// `malformed_reply` or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::OverBudget => "over_budget",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Transport => "transport",
            ErrorKind::MalformedReply => "malformed_reply",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind a remote site claims for its own refusal. A site can honestly report only
    /// what happened inside it (`refused`, `over_budget`, `malformed_reply`, `internal`);
    /// `timed_out` and `transport` are what the coordinator observes of a site, so a site that
    /// claims them, names a kind this version does not know (a newer peer's) or none at all
    /// (an older peer's) is read as [`ErrorKind::Internal`].
    pub fn claimed_by_site(name: &str) -> ErrorKind {
        match name.parse() {
            Ok(ErrorKind::TimedOut | ErrorKind::Transport) | Err(_) => ErrorKind::Internal,
            Ok(kind) => kind,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`ErrorKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a kind of error")]
pub struct UnknownKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| UnknownKind(name.to_string()))
    }
}

/// `message`, then the text of each error in the chain below it, joined by `: `.
fn with_causes(message: &str, source: Option<&Source>) -> String {
    let mut text = message.to_string();
    let mut next: Option<&(dyn std::error::Error + 'static)> =
        source.map(|s| s.as_ref() as &(dyn std::error::Error + 'static));
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// A part of the round engine other than a site failed: secure aggregation, the central
/// evaluation or the recording of a round.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Which kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in words.
    pub message: String,
    /// The error it came from, if any.
    #[source]
    pub source: Option<Source>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An [`ErrorKind::Internal`] failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The same failure, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The message followed by its causes, for records that keep only text.
    pub fn reason(&self) -> String {
        with_causes(&self.message, self.source.as_ref())
    }
}

/// A site could not do what it was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("site `{site}` failed ({kind}): {message}")]
pub struct SiteError {
    /// The site's name.
    pub site: String,
    /// Which kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in words.
    pub message: String,
    /// The error it came from, if any.
    #[source]
    pub source: Option<Source>,
}

impl SiteError {
    /// Site `site` failed with an error of `kind`.
    pub fn new(site: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            site: site.into(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The site's policy refused the task ([`ErrorKind::Refused`]).
    pub fn refused(site: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(site, ErrorKind::Refused, message)
    }

    /// The task would take the site past its privacy budget ([`ErrorKind::OverBudget`]).
    pub fn over_budget(site: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(site, ErrorKind::OverBudget, message)
    }

    /// The connection failed ([`ErrorKind::Transport`]).
    pub fn transport(site: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(site, ErrorKind::Transport, message)
    }

    /// Anything else ([`ErrorKind::Internal`]).
    pub fn internal(site: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(site, ErrorKind::Internal, message)
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The message followed by its causes, as round records keep it.
    pub fn reason(&self) -> String {
        with_causes(&self.message, self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_parses_back() {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "refused",
                "over_budget",
                "timed_out",
                "transport",
                "malformed_reply",
                "internal"
            ]
        );
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
    }

    #[test]
    fn a_site_claims_only_kinds_it_can_know() {
        for (claimed, read) in [
            ("refused", ErrorKind::Refused),
            ("over_budget", ErrorKind::OverBudget),
            ("malformed_reply", ErrorKind::MalformedReply),
            ("internal", ErrorKind::Internal),
            // What only the coordinator observes, an older peer's silence, a newer peer's name.
            ("timed_out", ErrorKind::Internal),
            ("transport", ErrorKind::Internal),
            ("", ErrorKind::Internal),
            ("out_of_coffee", ErrorKind::Internal),
        ] {
            assert_eq!(ErrorKind::claimed_by_site(claimed), read, "{claimed}");
        }
        assert!("Over_Budget".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn the_source_is_kept_and_named_in_the_reason() {
        let io = std::io::Error::other("disk full");
        let e = SiteError::internal("a", "could not save the model").with_source(io);
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(e.reason(), "could not save the model: disk full");
        assert_eq!(
            e.to_string(),
            "site `a` failed (internal): could not save the model"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "disk full");
        let f = Failure::internal("commit").with_source(e.clone());
        assert_eq!(
            f.reason(),
            "commit: site `a` failed (internal): could not save the model: disk full"
        );
    }
}
