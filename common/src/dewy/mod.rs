//! Dewy compatibility: the pure rules every `deploy-agent --registry URL` source shares.
//!
//! `deploy-agent` follows the same registries as linyows/dewy v2.19 (GitHub Releases, S3,
//! GCS, OCI, gRPC) plus our `ssh://` deploy-registry. Each source only lists candidates and
//! fetches bytes; what the listing *means* is decided here, once, so that every source agrees
//! with Dewy and with each other (spec: `/work/shared/spec/dewy.md`):
//!
//! - [`url`]: `--registry` URL grammar, query options and their error texts (1.1-1.6).
//! - [`version`]: SemVer tags, the newest-release choice, slots (2.1, 2.2, 2.4).
//! - [`calver`]: calendar-version formats (2.3).
//! - [`artifact`]: which file of a release to fetch, the grace period, unpacking kind (3.1-3.4).
//! - [`artifact_url`]: the `ghr://` `s3://` `gs://` `img://` URLs artifacts are fetched by (1.7).
//! - [`listing`]: version and artifact names from s3/gs listings (2.5).
//! - [`report`]: response IDs and audit file names of a successful deploy (1.2, 4).
//! - [`checksum`]: SHA-256 checksum files next to artifacts (post-2.19, 12).
//! - [`cachekey`]: cache keys, release directory names, which releases to keep (3.4, 6.3, 8.3).
//! - [`cli`]: the `server`/`assets`/`container` command line and its `-p` grammars (8.1, 9.2, 9.4).
//! - [`notify`]: notification texts, the error limiter, slack/mail URLs and layouts (7).
//!
//! Nothing here does I/O or reads the clock or the environment: callers pass listings, times
//! and lookups in, which keeps every rule testable against Dewy's behaviour.

pub mod artifact;
pub mod artifact_url;
pub mod cachekey;
pub mod calver;
pub mod checksum;
pub mod cli;
mod goquery;
pub use goquery::canonical_url;
pub mod listing;
pub mod notify;
#[cfg(test)]
mod oracle_tests;
pub mod report;
pub mod url;
pub mod version;
