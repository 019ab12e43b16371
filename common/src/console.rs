//! The registry console's grammar, shared by `deploy-registry` (which applies commands) and
//! `deployctl` (which validates locally, then sends [`Command::to_line`]).
//!
//! Texts are byte-identical to deploy-tools (spec 1.7, 1.8); `history`, `rollback`, `audit` and
//! `fsck` are ours, and `addver -hash` may name content that is already stored.

use crate::config::Configuration;
use crate::timefmt::OffsetDateTime;

/// The `help` listing (spec 1.8), without trailing newline; `help` prints it plus `\n`.
pub const HELP_LISTING: &str = "";

/// Printed (plus `\n`) for an unknown command, exit status 1. Unlike the original it lists
/// `bumpconf` and our additions.
pub const UNKNOWN_COMMAND: &str = "";

/// `addver -name -version -hash`: register uploaded (or already stored) content as a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddVer {
    pub name: String,
    pub version: String,
    pub hash: String,
}
/// `addconf -name -layer c:v ...`: create or replace a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddConf {
    pub name: String,
    /// (component, version), in order.
    pub layers: Vec<(String, String)>,
}
/// `changeconf -name -component -version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeConf {
    pub name: String,
    pub component: String,
    pub version: String,
}
/// `bumpconf -name -component`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BumpConf {
    pub name: String,
    pub component: String,
}
/// `showconf -name [-v]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowConf {
    pub name: String,
    pub verbose: bool,
}
/// `showcomp -name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowComp {
    pub name: String,
}
/// `delver -name -version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelVer {
    pub name: String,
    pub version: String,
}
/// `delcomp -name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelComp {
    pub name: String,
}
/// `delconf -name [-force]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelConf {
    pub name: String,
    pub force: bool,
}
/// `history -name`: every saved state of a configuration, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub name: String,
}
/// `rollback -name [-to N]`: restore history entry N (default: the state before the current one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    pub name: String,
    pub to: Option<u64>,
}
/// `audit [-n N]`: the newest N audit records (default 50), newest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub limit: usize,
}

/// One parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    AddVer(AddVer),
    AddConf(AddConf),
    ChangeConf(ChangeConf),
    BumpConf(BumpConf),
    ShowConf(ShowConf),
    ShowComp(ShowComp),
    Components,
    Configurations,
    DelVer(DelVer),
    DelComp(DelComp),
    DelConf(DelConf),
    History(History),
    Rollback(Rollback),
    Audit(Audit),
    /// `fsck`: re-hash every blob and check every reference.
    Fsck,
}

/// Why a line did not become a [`Command`]. Every variant has exit status 1 on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The line did not split (`invalid command line string`).
    Syntax,
    /// No words: `nothing to do`.
    Empty,
    /// Unknown command word: print [`UNKNOWN_COMMAND`].
    Unknown(String),
    /// A flag error or `-h`: `output` is the complete text to print (Go's message line, if
    /// any, then the usage block); nothing else is printed. deployctl exits 2 on these.
    Usage { output: String },
    /// A validation message such as `name should be set`.
    Invalid(String),
}

impl std::fmt::Display for ParseError {
    /// The text the console prints for this error (without final newline for the
    /// single-line ones; `Usage` output is printed as is).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

impl Command {
    /// Parses the words of a line (`words[0]` is the command).
    pub fn parse(words: &[String]) -> Result<Command, ParseError> {
        let _ = words;
        todo!()
    }

    /// Splits (shellwords) and parses a console line.
    pub fn parse_line(line: &str) -> Result<Command, ParseError> {
        let words = crate::shellwords::split(line).map_err(|_| ParseError::Syntax)?;
        Command::parse(&words)
    }

    /// The command word (`addver`, ...).
    pub fn name(&self) -> &'static str {
        todo!()
    }

    /// Canonical words that parse back to `self` (`["delconf", "-name=x -force"]` style:
    /// one `-flag=value` word per flag). Feed them to `shellwords::join` to send.
    pub fn to_words(&self) -> Vec<String> {
        todo!()
    }

    /// A line that parses back to `self` whatever the values hold.
    pub fn to_line(&self) -> String {
        crate::shellwords::join(&self.to_words())
    }

    /// Whether the command changes the registry's state (for the audit log).
    pub fn is_mutating(&self) -> bool {
        todo!()
    }
}

/// Output rendering, pure: the registry writes these bytes to the channel.
pub mod render {
    use super::*;

    /// `showconf` output (spec 1.8): with `verbose`, the `Name:\t..` header block first; then
    /// a tabwriter row `<component>\t<version>\t<ctime RFC3339>\t` per layer.
    pub fn showconf(c: &Configuration, verbose: bool) -> String {
        let _ = (c, verbose);
        todo!()
    }

    /// `showcomp` output: rows `<ctime RFC3339>\t<version>\t`, ascending, through tabwriter.
    pub fn showcomp(versions: &[(OffsetDateTime, String)]) -> String {
        let _ = versions;
        todo!()
    }

    /// `components` / `configurations`: one name per line.
    pub fn names(names: &[String]) -> String {
        let _ = names;
        todo!()
    }

    /// `bumpconf`'s hint when the version changed:
    /// `to roll back run:\n\tchangeconf -name=%q -component=%q -version=%q\n`.
    pub fn bump_rollback_hint(name: &str, component: &str, old_version: &str) -> String {
        let _ = (name, component, old_version);
        todo!()
    }

    /// One saved state of a configuration, as listed by `history`.
    #[derive(Debug, Clone)]
    pub struct HistoryRow {
        /// Stable number, the `-to` argument of `rollback`.
        pub seq: u64,
        pub saved_at: OffsetDateTime,
        /// Who saved it (user name), and with which command word.
        pub user: String,
        pub command: String,
        pub config: Configuration,
    }

    /// `history` output: newest first, through tabwriter:
    /// `<seq>\t<saved RFC3339>\t<hash first 12>\t<user>\t<command>\t<c1@v1 c2@v2 ...>\t`,
    /// with a `*` after the seq of the row whose hash is the current one.
    pub fn history(rows: &[HistoryRow], current_hash: &str) -> String {
        let _ = (rows, current_hash);
        todo!()
    }

    /// One audit record.
    #[derive(Debug, Clone)]
    pub struct AuditRow {
        pub time: OffsetDateTime,
        pub user: String,
        /// `SHA256:...` of the key that authenticated.
        pub key_fingerprint: String,
        pub remote_addr: String,
        /// The command line as run (words joined with `shellwords::join`).
        pub command: String,
        /// `ok`, or `fail: <message>`.
        pub result: String,
    }

    /// `audit` output through tabwriter, oldest first:
    /// `<time RFC3339>\t<user>\t<fingerprint>\t<addr>\t<result>\t<command>\t`.
    pub fn audit(rows: &[AuditRow]) -> String {
        let _ = rows;
        todo!()
    }
}
