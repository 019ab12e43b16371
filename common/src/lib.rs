//! Domain types and pure logic shared by `deploy-registry`, `deploy-agent` and `deployctl`.
//!
//! Nothing here does I/O. Each module is one definition of one thing:
//!
//! - [`dewy`]: Dewy compatibility: registry URLs, version choice, artifact pick, cache keys.
//! - [`disk`]: what an OS error says about the disk (full or not).
//! - [`digest`]: sha256 content addresses (`Digest`) and hashing helpers.
//! - [`timefmt`]: the Go time layouts the original used (RFC3339 seconds, RFC3339Nano trimmed).
//! - [`gojson`]: JSON bytes exactly as Go's `encoding/json` writes them.
//! - [`config`]: `Configuration` / `ComponentVersion`, their JSON, and the configuration hash.
//! - [`goerr`]: Go's texts for OS errors.
//! - [`goflag`]: the Go `flag` package's parsing and usage texts, for every command line we accept.
//! - [`shellwords`]: console line splitting (go-shellwords v1.0.10) and safe re-quoting.
//! - [`gostr`]: Go's `%q` quoting.
//! - [`tabwriter`]: Go's `text/tabwriter` as the console configures it.
//! - [`console`]: the console grammar: commands, flags, validation texts, help, output rendering.
//! - [`report`]: what an agent reports to the registry after each poll.

pub mod config;
pub mod console;
pub mod dewy;
pub mod digest;
pub mod disk;
pub mod goerr;
pub mod goflag;
pub mod gojson;
pub mod gostr;
pub mod report;
pub mod shellwords;
pub mod tabwriter;
pub mod timefmt;
