//! Errors of every source, sorted by what the agent should do about them.

use std::time::Duration;

use common::timefmt::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No release with a usable version (`no valid versioned object found`).
    #[error("no valid versioned object found")]
    NoVersion,
    /// The newest release has no matching artifact (yet). Within 30 min of `release_time`
    /// this is not an error (Dewy's grace period).
    #[error("{message}")]
    ArtifactNotFound {
        message: String,
        release_time: Option<OffsetDateTime>,
    },
    /// Worth retrying later: network errors, 5xx, rate limits (`retry_after` when the server
    /// said), timeouts.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help until someone changes something: 401/403/404 of the registry
    /// itself, bad configuration, malformed answers.
    #[error("{0}")]
    Permanent(String),
}
