//! The registry console's grammar, shared by `deploy-registry` (which applies commands) and
//! `deployctl` (which validates locally, then sends [`Command::to_line`]).
//!
//! Texts are byte-identical to deploy-tools (spec 1.7, 1.8); `history`, `rollback`, `audit`,
//! `fsck`, `status` and `forget` are ours, and `addver -hash` may name content that is already
//! stored.

use crate::config::Configuration;
use crate::goflag::{Flag, FlagError, FlagSet, Kind, Parsed};
use crate::gostr::quote;
use crate::timefmt::OffsetDateTime;

/// The `help` listing (spec 1.8), without trailing newline; `help` prints it plus `\n`.
/// The original lines are kept byte for byte; ours follow `delconf` in the same layout.
pub const HELP_LISTING: &str = "\
addver          add new component version from previously uploaded file
addconf         add new configuration from existing component versions
bumpconf        update single layer of configuration to most recent uploaded version
changeconf      update single layer of configuration to specific version
showconf        show configuration
showcomp        show component versions
components      list all known components
configurations  list all known configurations
delver          delete component version
delcomp         delete all component versions
delconf         delete configuration
history         show saved states of configuration
rollback        restore configuration to one of its saved states
audit           show most recent console commands
fsck            verify stored files and references
status          show which configuration each agent runs
forget          forget hosts shown by status

use -h flag to get more help on a specific command";

/// Printed (plus `\n`) for an unknown command, exit status 1. Unlike the original it lists
/// `bumpconf` and our additions.
pub const UNKNOWN_COMMAND: &str = "Unknown command, supported commands are:
help, addver, addconf, changeconf, bumpconf, showconf, components, configurations, showcomp, delver, delcomp, delconf, history, rollback, audit, fsck, status, forget";

/// Validation messages (spec 1.8, `internal/shared/args.go`), and ours.
mod msg {
    pub const ADDVER_UNSET: &str = "name, version and hash should all be set";
    pub const NO_COLON: &str = "name cannot contain : symbol";
    pub const NO_SLASH: &str = "name cannot contain / symbol";
    pub const BAD_HASH: &str =
        "hash should be a hex representation of content sha256 sum, 64 chars long";
    pub const NAME_UNSET: &str = "name should be set";
    pub const NO_LAYERS: &str = "configuration should have at least one layer";
    pub const CHANGECONF_UNSET: &str = "name, component and version should all be set";
    pub const BUMPCONF_UNSET: &str = "both name and component should be set";
    pub const DELVER_UNSET: &str = "both name and version should be set";
    pub const BAD_TO: &str = "-to should be a positive history entry number";
    pub const BAD_N: &str = "-n should be a positive number";
    pub const FORGET_WHICH: &str = "either -host or -silent should be set";
}

/// `addver`'s answer when the hash names neither a pending upload nor stored content: the
/// cue for deployctl, which asks first, to upload.
pub const NO_UPLOAD: &str = "no uploaded file with given hash found";

/// The default of `audit -n`.
pub const AUDIT_DEFAULT_LIMIT: usize = 50;

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

/// `status [-name]`: what the agents (of one configuration) last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: Option<String>,
}

/// `forget`: drops hosts from `status` (a host that reports again shows again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// `forget -name N -host H`: one host of one configuration.
    Host { name: String, host: String },
    /// `forget -silent [-name N]`: every host (of one configuration) that has been silent
    /// for [`crate::report::SILENT_AFTER`].
    Silent { name: Option<String> },
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
    Status(Status),
    Forget(Forget),
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
        match self {
            ParseError::Syntax => f.write_str("invalid command line string"),
            ParseError::Empty => f.write_str("nothing to do"),
            ParseError::Unknown(_) => f.write_str(UNKNOWN_COMMAND),
            ParseError::Usage { output } => f.write_str(output),
            ParseError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ParseError {}

/// `-layer` values: `component:version`, split at the first `:`, one layer per component.
fn check_layer(value: &str, previous: &[String]) -> Result<(), String> {
    let Some((component, _)) = value.split_once(':') else {
        return Err("invalid value".to_string());
    };
    if previous
        .iter()
        .any(|p| p.split_once(':').is_some_and(|(c, _)| c == component))
    {
        return Err(format!("duplicate component {}", quote(component)));
    }
    Ok(())
}

fn string_flag(name: &'static str, usage: &'static str) -> Flag {
    Flag {
        name,
        kind: Kind::String { default: "" },
        usage,
    }
}

const CONFIGURATION_NAME: &str = "configuration name";
const COMPONENT_NAME: &str = "component name";

/// The flags of a console command, exactly as the original declared them (spec 1.8), or
/// `None` for a word that is not a command taking flags (`help`, `components`,
/// `configurations` ignore their arguments; unknown words are not commands).
pub fn flag_set(command: &str) -> Option<FlagSet> {
    let flags = match command {
        "addver" => vec![
            string_flag("name", COMPONENT_NAME),
            string_flag("version", "unique version id"),
            string_flag(
                "hash",
                "sha256 content hash in hex representation (64 chars)",
            ),
        ],
        "addconf" => vec![
            string_flag("name", CONFIGURATION_NAME),
            Flag {
                name: "layer",
                kind: Kind::Repeated { check: check_layer },
                usage: "layer in component:version format; can be set multiple times",
            },
        ],
        "changeconf" => vec![
            string_flag("name", CONFIGURATION_NAME),
            string_flag("component", "component name to update"),
            string_flag("version", "new version of selected component"),
        ],
        "bumpconf" => vec![
            string_flag("name", CONFIGURATION_NAME),
            string_flag("component", "component name to update"),
        ],
        "showconf" => vec![
            string_flag("name", CONFIGURATION_NAME),
            Flag {
                name: "v",
                kind: Kind::Bool,
                usage: "show extra details",
            },
        ],
        "showcomp" | "delcomp" => vec![string_flag("name", COMPONENT_NAME)],
        "delver" => vec![
            string_flag("name", COMPONENT_NAME),
            string_flag("version", "unique version id"),
        ],
        "delconf" => vec![
            string_flag("name", CONFIGURATION_NAME),
            Flag {
                name: "force",
                kind: Kind::Bool,
                usage: "remove configuration for real",
            },
        ],
        "history" => vec![string_flag("name", CONFIGURATION_NAME)],
        "rollback" => vec![
            string_flag("name", CONFIGURATION_NAME),
            Flag {
                name: "to",
                kind: Kind::Int { default: 0 },
                usage: "history entry to restore (default: the previous state)",
            },
        ],
        "audit" => vec![Flag {
            name: "n",
            kind: Kind::Int {
                default: AUDIT_DEFAULT_LIMIT as i64,
            },
            usage: "number of newest records to show",
        }],
        "fsck" => vec![],
        "status" => vec![string_flag("name", CONFIGURATION_NAME)],
        "forget" => vec![
            string_flag("name", CONFIGURATION_NAME),
            string_flag("host", "host name, as status shows it"),
            Flag {
                name: "silent",
                kind: Kind::Bool,
                usage: "every host that status shows as silent",
            },
        ],
        _ => return None,
    };
    Some(FlagSet::new(command, flags))
}

/// Parses flags the way the original's `flag.FlagSet(cmd, ContinueOnError)` did: a flag
/// error prints Go's message then the usage block; `-h` prints the usage block.
fn parse_flags(set: &FlagSet, args: &[String]) -> Result<Parsed, ParseError> {
    set.parse(args).map_err(|e| match e {
        FlagError::Help => ParseError::Usage {
            output: set.usage(),
        },
        FlagError::Message(m) => ParseError::Usage {
            output: format!("{m}\n{}", set.usage()),
        },
    })
}

fn invalid(m: &str) -> ParseError {
    ParseError::Invalid(m.to_string())
}

/// `name cannot contain / symbol`, checked in every configuration command.
fn check_config_name(name: &str) -> Result<(), ParseError> {
    if name.contains('/') {
        Err(invalid(msg::NO_SLASH))
    } else {
        Ok(())
    }
}

impl Command {
    /// Parses the words of a line (`words[0]` is the command).
    pub fn parse(words: &[String]) -> Result<Command, ParseError> {
        let Some((cmd, args)) = words.split_first() else {
            return Err(ParseError::Empty);
        };
        match cmd.as_str() {
            "help" => return Ok(Command::Help),
            "components" => return Ok(Command::Components),
            "configurations" => return Ok(Command::Configurations),
            _ => {}
        }
        let Some(set) = flag_set(cmd) else {
            return Err(ParseError::Unknown(cmd.clone()));
        };
        let p = parse_flags(&set, args)?;
        let s = |name: &str| p.string(&set, name);
        Ok(match cmd.as_str() {
            "addver" => {
                let (name, version, hash) = (s("name"), s("version"), s("hash"));
                if name.is_empty() || version.is_empty() || hash.is_empty() {
                    return Err(invalid(msg::ADDVER_UNSET));
                }
                if name.contains(':') {
                    return Err(invalid(msg::NO_COLON));
                }
                // Only the length, as the original: content is looked up by exact match later.
                if hash.len() != 64 {
                    return Err(invalid(msg::BAD_HASH));
                }
                Command::AddVer(AddVer {
                    name,
                    version,
                    hash,
                })
            }
            "addconf" => {
                let name = s("name");
                let layers: Vec<(String, String)> = p
                    .all("layer")
                    .iter()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(c, v)| (c.to_string(), v.to_string()))
                    .collect();
                if name.is_empty() {
                    return Err(invalid(msg::NAME_UNSET));
                }
                if layers.is_empty() {
                    return Err(invalid(msg::NO_LAYERS));
                }
                check_config_name(&name)?;
                Command::AddConf(AddConf { name, layers })
            }
            "changeconf" => {
                let (name, component, version) = (s("name"), s("component"), s("version"));
                if name.is_empty() || component.is_empty() || version.is_empty() {
                    return Err(invalid(msg::CHANGECONF_UNSET));
                }
                check_config_name(&name)?;
                Command::ChangeConf(ChangeConf {
                    name,
                    component,
                    version,
                })
            }
            "bumpconf" => {
                let (name, component) = (s("name"), s("component"));
                if name.is_empty() || component.is_empty() {
                    return Err(invalid(msg::BUMPCONF_UNSET));
                }
                check_config_name(&name)?;
                Command::BumpConf(BumpConf { name, component })
            }
            "showconf" => Command::ShowConf(ShowConf {
                name: config_name(s("name"))?,
                verbose: p.bool("v"),
            }),
            "showcomp" => {
                let name = s("name");
                if name.is_empty() {
                    return Err(invalid(msg::NAME_UNSET));
                }
                if name.contains(':') {
                    return Err(invalid(msg::NO_COLON));
                }
                Command::ShowComp(ShowComp { name })
            }
            "delver" => {
                let (name, version) = (s("name"), s("version"));
                if name.is_empty() || version.is_empty() {
                    return Err(invalid(msg::DELVER_UNSET));
                }
                if name.contains(':') {
                    return Err(invalid(msg::NO_COLON));
                }
                Command::DelVer(DelVer { name, version })
            }
            "delcomp" => {
                let name = s("name");
                if name.is_empty() {
                    return Err(invalid(msg::NAME_UNSET));
                }
                Command::DelComp(DelComp { name })
            }
            // `-force` is checked when the command runs, as in the original (deployctl does
            // not check it locally).
            "delconf" => Command::DelConf(DelConf {
                name: config_name(s("name"))?,
                force: p.bool("force"),
            }),
            "history" => Command::History(History {
                name: config_name(s("name"))?,
            }),
            "rollback" => {
                let name = config_name(s("name"))?;
                let to = if p.is_set("to") {
                    let to = u64::try_from(p.int(&set, "to")).ok().filter(|&n| n >= 1);
                    Some(to.ok_or_else(|| invalid(msg::BAD_TO))?)
                } else {
                    None
                };
                Command::Rollback(Rollback { name, to })
            }
            "audit" => {
                let limit = usize::try_from(p.int(&set, "n")).ok().filter(|&n| n >= 1);
                Command::Audit(Audit {
                    limit: limit.ok_or_else(|| invalid(msg::BAD_N))?,
                })
            }
            "fsck" => Command::Fsck,
            "status" => {
                let name = s("name");
                check_config_name(&name)?;
                Command::Status(Status {
                    name: (!name.is_empty()).then_some(name),
                })
            }
            "forget" => {
                let (name, host) = (s("name"), s("host"));
                match (host.is_empty(), p.bool("silent")) {
                    (false, false) => Command::Forget(Forget::Host {
                        name: config_name(name)?,
                        host,
                    }),
                    (true, true) => {
                        check_config_name(&name)?;
                        Command::Forget(Forget::Silent {
                            name: (!name.is_empty()).then_some(name),
                        })
                    }
                    _ => return Err(invalid(msg::FORGET_WHICH)),
                }
            }
            // `flag_set` knows no other command.
            other => return Err(ParseError::Unknown(other.to_string())),
        })
    }

    /// Splits (shellwords) and parses a console line.
    pub fn parse_line(line: &str) -> Result<Command, ParseError> {
        let words = crate::shellwords::split(line).map_err(|_| ParseError::Syntax)?;
        Command::parse(&words)
    }

    /// Whether the command only shows what is stored, cheaply: what a read-only key may run.
    /// (`fsck` changes nothing but re-reads every blob; it is kept for operators.)
    pub fn shows_only(&self) -> bool {
        matches!(
            self,
            Command::Help
                | Command::ShowConf(_)
                | Command::ShowComp(_)
                | Command::Components
                | Command::Configurations
                | Command::History(_)
                | Command::Audit(_)
                | Command::Status(_)
        )
    }

    /// The configuration the command names, if it names one.
    pub fn configuration(&self) -> Option<&str> {
        match self {
            Command::AddConf(AddConf { name, .. })
            | Command::ChangeConf(ChangeConf { name, .. })
            | Command::BumpConf(BumpConf { name, .. })
            | Command::ShowConf(ShowConf { name, .. })
            | Command::DelConf(DelConf { name, .. })
            | Command::History(History { name })
            | Command::Rollback(Rollback { name, .. })
            | Command::Forget(Forget::Host { name, .. }) => Some(name),
            Command::Status(Status { name }) | Command::Forget(Forget::Silent { name }) => {
                name.as_deref()
            }
            Command::Help
            | Command::AddVer(_)
            | Command::ShowComp(_)
            | Command::Components
            | Command::Configurations
            | Command::DelVer(_)
            | Command::DelComp(_)
            | Command::Audit(_)
            | Command::Fsck => None,
        }
    }

    /// The command word (`addver`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "help",
            Command::AddVer(_) => "addver",
            Command::AddConf(_) => "addconf",
            Command::ChangeConf(_) => "changeconf",
            Command::BumpConf(_) => "bumpconf",
            Command::ShowConf(_) => "showconf",
            Command::ShowComp(_) => "showcomp",
            Command::Components => "components",
            Command::Configurations => "configurations",
            Command::DelVer(_) => "delver",
            Command::DelComp(_) => "delcomp",
            Command::DelConf(_) => "delconf",
            Command::History(_) => "history",
            Command::Rollback(_) => "rollback",
            Command::Audit(_) => "audit",
            Command::Fsck => "fsck",
            Command::Status(_) => "status",
            Command::Forget(_) => "forget",
        }
    }

    /// Canonical words that parse back to `self` (`["delconf", "-name=x", "-force"]` style:
    /// one `-flag=value` word per flag). Feed them to `shellwords::join` to send.
    ///
    /// `-flag=value` in one word keeps a value that starts with `-` from being read as a flag.
    /// A layer whose component contains `:` cannot be expressed (the flag splits at the first
    /// `:`); such components cannot be created either.
    pub fn to_words(&self) -> Vec<String> {
        let f = |flag: &str, value: &str| format!("-{flag}={value}");
        let mut w = vec![self.name().to_string()];
        match self {
            Command::Help | Command::Components | Command::Configurations | Command::Fsck => {}
            Command::AddVer(c) => w.extend([
                f("name", &c.name),
                f("version", &c.version),
                f("hash", &c.hash),
            ]),
            Command::AddConf(c) => {
                w.push(f("name", &c.name));
                w.extend(
                    c.layers
                        .iter()
                        .map(|(comp, ver)| f("layer", &format!("{comp}:{ver}"))),
                );
            }
            Command::ChangeConf(c) => {
                w.extend([
                    f("name", &c.name),
                    f("component", &c.component),
                    f("version", &c.version),
                ]);
            }
            Command::BumpConf(c) => w.extend([f("name", &c.name), f("component", &c.component)]),
            Command::ShowConf(c) => {
                w.push(f("name", &c.name));
                if c.verbose {
                    w.push("-v".to_string());
                }
            }
            Command::ShowComp(c) => w.push(f("name", &c.name)),
            Command::DelVer(c) => w.extend([f("name", &c.name), f("version", &c.version)]),
            Command::DelComp(c) => w.push(f("name", &c.name)),
            Command::DelConf(c) => {
                w.push(f("name", &c.name));
                if c.force {
                    w.push("-force".to_string());
                }
            }
            Command::History(c) => w.push(f("name", &c.name)),
            Command::Rollback(c) => {
                w.push(f("name", &c.name));
                if let Some(to) = c.to {
                    w.push(f("to", &to.to_string()));
                }
            }
            Command::Audit(c) => w.push(f("n", &c.limit.to_string())),
            Command::Status(c) => w.extend(c.name.iter().map(|n| f("name", n))),
            Command::Forget(Forget::Host { name, host }) => {
                w.extend([f("name", name), f("host", host)])
            }
            Command::Forget(Forget::Silent { name }) => {
                w.extend(name.iter().map(|n| f("name", n)));
                w.push("-silent".to_string());
            }
        }
        w
    }

    /// A line that parses back to `self` whatever the values hold.
    pub fn to_line(&self) -> String {
        crate::shellwords::join(&self.to_words())
    }

    /// Whether the command changes the registry's state (for the audit log).
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Command::AddVer(_)
                | Command::AddConf(_)
                | Command::ChangeConf(_)
                | Command::BumpConf(_)
                | Command::DelVer(_)
                | Command::DelComp(_)
                | Command::DelConf(_)
                | Command::Rollback(_)
                | Command::Forget(_)
        )
    }
}

/// `name should be set`, then `name cannot contain / symbol`.
fn config_name(name: String) -> Result<String, ParseError> {
    if name.is_empty() {
        return Err(invalid(msg::NAME_UNSET));
    }
    check_config_name(&name)?;
    Ok(name)
}

/// Output rendering, pure: the registry writes these bytes to the channel.
pub mod render {
    use super::*;
    use crate::tabwriter;
    use crate::timefmt::rfc3339_secs;

    /// `showconf` output (spec 1.8): with `verbose`, the `Name:\t..` header block first; then
    /// a tabwriter row `<component>\t<version>\t<ctime RFC3339>\t` per layer.
    pub fn showconf(c: &Configuration, verbose: bool) -> String {
        let mut out = String::new();
        if verbose {
            out.push_str(&format!(
                "Name:\t{}\nMtime:\t{}\nHash:\t{}\n\n",
                c.name,
                rfc3339_secs(c.mtime),
                c.hash
            ));
        }
        let mut rows = String::new();
        for l in &c.layers {
            rows.push_str(&format!(
                "{}\t{}\t{}\t\n",
                l.name,
                l.version,
                rfc3339_secs(l.ctime)
            ));
        }
        out.push_str(&tabwriter::format(&rows));
        out
    }

    /// `showcomp` output: rows `<ctime RFC3339>\t<version>\t`, ascending, through tabwriter.
    /// Rows are written in the order given (the store's ascending `ctime#version` order).
    pub fn showcomp(versions: &[(OffsetDateTime, String)]) -> String {
        let rows: String = versions
            .iter()
            .map(|(t, v)| format!("{}\t{v}\t\n", rfc3339_secs(*t)))
            .collect();
        tabwriter::format(&rows)
    }

    /// `components` / `configurations`: one name per line.
    pub fn names(names: &[String]) -> String {
        names.iter().map(|n| format!("{n}\n")).collect()
    }

    /// `bumpconf`'s hint when the version changed:
    /// `to roll back run:\n\tchangeconf -name=%q -component=%q -version=%q\n`.
    pub fn bump_rollback_hint(name: &str, component: &str, old_version: &str) -> String {
        format!(
            "to roll back run:\n\tchangeconf -name={} -component={} -version={}\n",
            quote(name),
            quote(component),
            quote(old_version)
        )
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

    /// Text that came from an operator, made safe for one tabwriter cell on a terminal:
    /// control characters (TAB, newline, ESC...) are written as Go escapes (`\t`, `\n`,
    /// `\x1b`) so they can neither break the columns nor drive the reader's terminal.
    fn cell(text: &str) -> String {
        if !text.chars().any(char::is_control) {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 8);
        for ch in text.chars() {
            if ch.is_control() {
                let q = quote(&ch.to_string());
                out.push_str(&q[1..q.len() - 1]);
            } else {
                out.push(ch);
            }
        }
        out
    }

    /// A hash as the listings show it: its first 12 characters.
    fn short_hash(hash: &str) -> String {
        hash.chars().take(12).collect()
    }

    /// `history` output: newest first, through tabwriter:
    /// `<seq>\t<saved RFC3339>\t<hash first 12>\t<user>\t<command>\t<c1@v1 c2@v2 ...>` (the last column is not padded: it varies most),
    /// with a `*` after the seq of the row whose hash is the current one.
    /// Rows are sorted by `seq`, highest first, whatever order they come in.
    pub fn history(rows: &[HistoryRow], current_hash: &str) -> String {
        let mut sorted: Vec<&HistoryRow> = rows.iter().collect();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let mut text = String::new();
        for r in sorted {
            let mark = if r.config.hash == current_hash {
                "*"
            } else {
                ""
            };
            let hash = short_hash(&r.config.hash);
            let layers: Vec<String> = r
                .config
                .layers
                .iter()
                .map(|l| format!("{}@{}", l.name, l.version))
                .collect();
            text.push_str(&format!(
                "{}{mark}\t{}\t{}\t{}\t{}\t{}\n",
                r.seq,
                rfc3339_secs(r.saved_at),
                cell(&hash),
                cell(&r.user),
                cell(&r.command),
                cell(&layers.join(" "))
            ));
        }
        tabwriter::format(&text)
    }

    /// What an agent last reported for a configuration, as `status` lists it.
    #[derive(Debug, Clone)]
    pub struct StatusRow {
        pub config: String,
        pub host: String,
        /// The configuration hash it runs; empty before its first deploy.
        pub hash: String,
        /// Why its last poll failed; `None` when it succeeded.
        pub error: Option<String>,
        pub reported: OffsetDateTime,
        /// Where the report came from.
        pub remote_addr: String,
        /// The configuration's hash now; `None` once it was deleted.
        pub current: Option<String>,
    }

    /// `status` output through tabwriter, by configuration then host:
    /// `<configuration>\t<host>\t<state>\t<hash first 12>\t<reported RFC3339>\t<addr>\t<error>`
    /// (the last column, only for failed polls, unpadded). The state is `silent` (no report for
    /// [`crate::report::SILENT_AFTER`] before `now`), `failed` (its last poll failed), `current`
    /// (it runs the configuration's hash), `behind` (it runs another, or nothing yet: `-` for
    /// the hash) or `deleted` (the configuration is gone).
    pub fn status(rows: &[StatusRow], now: OffsetDateTime) -> String {
        let mut sorted: Vec<&StatusRow> = rows.iter().collect();
        sorted.sort_by(|a, b| (&a.config, &a.host).cmp(&(&b.config, &b.host)));
        let mut text = String::new();
        for r in sorted {
            let state = match (&r.error, &r.current) {
                _ if r.reported < crate::report::silent_before(now) => "silent",
                (Some(_), _) => "failed",
                (None, None) => "deleted",
                (None, Some(current)) if *current == r.hash => "current",
                (None, Some(_)) => "behind",
            };
            let hash = match r.hash.as_str() {
                "" => "-".to_string(),
                h => short_hash(h),
            };
            text.push_str(&format!(
                "{}\t{}\t{state}\t{}\t{}\t{}\t{}\n",
                cell(&r.config),
                cell(&r.host),
                cell(&hash),
                rfc3339_secs(r.reported),
                cell(&r.remote_addr),
                cell(r.error.as_deref().unwrap_or_default())
            ));
        }
        tabwriter::format(&text)
    }

    /// `forget` output: the `<configuration>\t<host>` of each forgotten row, through tabwriter.
    pub fn forgotten(rows: &[(String, String)]) -> String {
        let text: String = rows
            .iter()
            .map(|(config, host)| format!("{}\t{}\n", cell(config), cell(host)))
            .collect();
        tabwriter::format(&text)
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
    /// `<time RFC3339>\t<user>\t<fingerprint>\t<addr>\t<result>\t<command>` (last column unpadded).
    /// Rows are written in the order given.
    pub fn audit(rows: &[AuditRow]) -> String {
        let text: String = rows
            .iter()
            .map(|r| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    rfc3339_secs(r.time),
                    cell(&r.user),
                    cell(&r.key_fingerprint),
                    cell(&r.remote_addr),
                    cell(&r.result),
                    cell(&r.command)
                )
            })
            .collect();
        tabwriter::format(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::render::*;
    use super::*;
    use crate::config::ComponentVersion;
    use time::macros::datetime;

    const H: &str = "8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1";

    fn line(l: &str) -> Result<Command, ParseError> {
        Command::parse_line(l)
    }

    fn invalid_text(l: &str) -> String {
        match line(l) {
            Err(ParseError::Invalid(m)) => m,
            other => panic!("{l:?}: {other:?}"),
        }
    }

    fn usage_text(l: &str) -> String {
        match line(l) {
            Err(ParseError::Usage { output }) => output,
            other => panic!("{l:?}: {other:?}"),
        }
    }

    #[test]
    fn help_listing_keeps_original_lines_and_alignment() {
        let original = "addver          add new component version from previously uploaded file
addconf         add new configuration from existing component versions
bumpconf        update single layer of configuration to most recent uploaded version
changeconf      update single layer of configuration to specific version
showconf        show configuration
showcomp        show component versions
components      list all known components
configurations  list all known configurations
delver          delete component version
delcomp         delete all component versions
delconf         delete configuration
";
        assert!(HELP_LISTING.starts_with(original));
        assert!(HELP_LISTING.ends_with("\n\nuse -h flag to get more help on a specific command"));
        let commands: Vec<&str> = HELP_LISTING.lines().take_while(|l| !l.is_empty()).collect();
        for l in &commands {
            assert_eq!(&l[15..16], " ", "{l:?}");
            assert_ne!(&l[16..17], " ", "{l:?}");
        }
        let words: Vec<&str> = commands
            .iter()
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(
            &words[11..],
            ["history", "rollback", "audit", "fsck", "status", "forget"]
        );
        assert_eq!(HELP_LISTING, HELP_LISTING.trim());
    }

    #[test]
    fn every_listed_command_parses_or_asks_for_flags() {
        for l in HELP_LISTING.lines().take_while(|l| !l.is_empty()) {
            let word = l.split(' ').next().unwrap_or_default();
            assert!(!matches!(line(word), Err(ParseError::Unknown(_))), "{word}");
        }
    }

    #[test]
    fn unknown_command_lists_every_command() {
        assert_eq!(
            line("frobnicate -x"),
            Err(ParseError::Unknown("frobnicate".into()))
        );
        let (head, list) = UNKNOWN_COMMAND.split_once('\n').unwrap();
        assert_eq!(head, "Unknown command, supported commands are:");
        let listed: Vec<&str> = list.split(", ").collect();
        for c in [
            "help",
            "addver",
            "addconf",
            "changeconf",
            "bumpconf",
            "showconf",
            "components",
            "configurations",
            "showcomp",
            "delver",
            "delcomp",
            "delconf",
            "history",
            "rollback",
            "audit",
            "fsck",
            "status",
        ] {
            assert!(listed.contains(&c), "{c}");
        }
        assert_eq!(ParseError::Unknown("x".into()).to_string(), UNKNOWN_COMMAND);
    }

    #[test]
    fn empty_and_syntax_errors() {
        assert_eq!(line(""), Err(ParseError::Empty));
        assert_eq!(line("  ;rm"), Err(ParseError::Empty));
        assert_eq!(ParseError::Empty.to_string(), "nothing to do");
        assert_eq!(line("showconf -name 'x"), Err(ParseError::Syntax));
        assert_eq!(
            ParseError::Syntax.to_string(),
            "invalid command line string"
        );
    }

    #[test]
    fn argument_free_commands_ignore_everything() {
        assert_eq!(line("components -h"), Ok(Command::Components));
        assert_eq!(line("configurations -x y"), Ok(Command::Configurations));
        assert_eq!(line("help me"), Ok(Command::Help));
    }

    #[test]
    fn usage_blocks_as_observed() {
        let u = |c: &str| flag_set(c).unwrap().usage();
        assert_eq!(
            u("showconf"),
            "Usage of showconf:\n  -name string\n    \tconfiguration name\n  -v\tshow extra details\n"
        );
        assert_eq!(
            u("addver"),
            "Usage of addver:\n  -hash string\n    \tsha256 content hash in hex representation (64 chars)\n  -name string\n    \tcomponent name\n  -version string\n    \tunique version id\n"
        );
        assert_eq!(
            u("addconf"),
            "Usage of addconf:\n  -layer value\n    \tlayer in component:version format; can be set multiple times\n  -name string\n    \tconfiguration name\n"
        );
        assert_eq!(
            u("changeconf"),
            "Usage of changeconf:\n  -component string\n    \tcomponent name to update\n  -name string\n    \tconfiguration name\n  -version string\n    \tnew version of selected component\n"
        );
        assert_eq!(
            u("bumpconf"),
            "Usage of bumpconf:\n  -component string\n    \tcomponent name to update\n  -name string\n    \tconfiguration name\n"
        );
        assert_eq!(
            u("showcomp"),
            "Usage of showcomp:\n  -name string\n    \tcomponent name\n"
        );
        assert_eq!(
            u("delver"),
            "Usage of delver:\n  -name string\n    \tcomponent name\n  -version string\n    \tunique version id\n"
        );
        assert_eq!(
            u("delcomp"),
            "Usage of delcomp:\n  -name string\n    \tcomponent name\n"
        );
        assert_eq!(
            u("delconf"),
            "Usage of delconf:\n  -force\n    \tremove configuration for real\n  -name string\n    \tconfiguration name\n"
        );
    }

    #[test]
    fn usage_blocks_of_our_commands() {
        let u = |c: &str| flag_set(c).unwrap().usage();
        assert_eq!(
            u("history"),
            "Usage of history:\n  -name string\n    \tconfiguration name\n"
        );
        assert_eq!(
            u("rollback"),
            "Usage of rollback:\n  -name string\n    \tconfiguration name\n  -to int\n    \thistory entry to restore (default: the previous state)\n"
        );
        assert_eq!(
            u("audit"),
            "Usage of audit:\n  -n int\n    \tnumber of newest records to show (default 50)\n"
        );
        assert_eq!(u("fsck"), "Usage of fsck:\n");
    }

    #[test]
    fn dash_h_prints_only_the_usage() {
        assert_eq!(
            usage_text("showconf -h"),
            flag_set("showconf").unwrap().usage()
        );
        assert_eq!(
            usage_text("delconf -name x -help"),
            flag_set("delconf").unwrap().usage()
        );
        assert_eq!(usage_text("fsck -h"), "Usage of fsck:\n");
    }

    #[test]
    fn flag_errors_print_go_message_then_usage() {
        let show = flag_set("showconf").unwrap().usage();
        assert_eq!(
            usage_text("showconf -x"),
            format!("flag provided but not defined: -x\n{show}")
        );
        assert_eq!(
            usage_text("showconf -name"),
            format!("flag needs an argument: -name\n{show}")
        );
        assert_eq!(
            usage_text("showconf -v=maybe -name p"),
            format!("invalid boolean value \"maybe\" for -v: parse error\n{show}")
        );
        let add = flag_set("addconf").unwrap().usage();
        assert_eq!(
            usage_text("addconf -name p -layer code"),
            format!("invalid value \"code\" for flag -layer: invalid value\n{add}")
        );
        assert_eq!(
            usage_text("addconf -name p -layer code:v01 -layer code:v02"),
            format!(
                "invalid value \"code:v02\" for flag -layer: duplicate component \"code\"\n{add}"
            )
        );
        let audit = flag_set("audit").unwrap().usage();
        assert_eq!(
            usage_text("audit -n x"),
            format!("invalid value \"x\" for flag -n: parse error\n{audit}")
        );
        assert_eq!(
            usage_text("fsck -x"),
            "flag provided but not defined: -x\nUsage of fsck:\n"
        );
    }

    #[test]
    fn usage_error_display_is_the_output() {
        let e = line("showconf -h").unwrap_err();
        assert_eq!(e.to_string(), flag_set("showconf").unwrap().usage());
    }

    #[test]
    fn addver_parses_and_validates_in_order() {
        assert_eq!(
            line(&format!("addver -name code -version v01 -hash {H}")),
            Ok(Command::AddVer(AddVer {
                name: "code".into(),
                version: "v01".into(),
                hash: H.into()
            }))
        );
        assert_eq!(
            invalid_text("addver -name code -version v01"),
            "name, version and hash should all be set"
        );
        assert_eq!(
            invalid_text("addver -name a:b -version v -hash x"),
            "name cannot contain : symbol"
        );
        assert_eq!(
            invalid_text("addver -name a -version v -hash abc"),
            "hash should be a hex representation of content sha256 sum, 64 chars long"
        );
        // Only the length is checked.
        let upper_junk = "Z".repeat(64);
        assert!(line(&format!("addver -name a -version v -hash {upper_junk}")).is_ok());
    }

    #[test]
    fn addconf_layers_and_validation() {
        assert_eq!(
            line("addconf -name p -layer code:v01 -layer config:v:1 -layer empty:"),
            Ok(Command::AddConf(AddConf {
                name: "p".into(),
                layers: vec![
                    ("code".into(), "v01".into()),
                    ("config".into(), "v:1".into()),
                    ("empty".into(), "".into())
                ],
            }))
        );
        assert_eq!(invalid_text("addconf -layer a:b"), "name should be set");
        assert_eq!(
            invalid_text("addconf -name p"),
            "configuration should have at least one layer"
        );
        assert_eq!(
            invalid_text("addconf -name a/b -layer a:b"),
            "name cannot contain / symbol"
        );
    }

    #[test]
    fn changeconf_and_bumpconf_validation() {
        assert_eq!(
            line("changeconf -name p -component c -version v"),
            Ok(Command::ChangeConf(ChangeConf {
                name: "p".into(),
                component: "c".into(),
                version: "v".into()
            }))
        );
        assert_eq!(
            invalid_text("changeconf -name p -component c"),
            "name, component and version should all be set"
        );
        assert_eq!(
            invalid_text("changeconf -name p/q -component c -version v"),
            "name cannot contain / symbol"
        );
        assert_eq!(
            line("bumpconf -name p -component c:x"),
            Ok(Command::BumpConf(BumpConf {
                name: "p".into(),
                component: "c:x".into()
            }))
        );
        assert_eq!(
            invalid_text("bumpconf -name p"),
            "both name and component should be set"
        );
        assert_eq!(
            invalid_text("bumpconf -name / -component c"),
            "name cannot contain / symbol"
        );
    }

    #[test]
    fn showconf_positional_args_after_flags_ignored_before_flags_stop_parsing() {
        assert_eq!(
            line("showconf -name p extra positional"),
            Ok(Command::ShowConf(ShowConf {
                name: "p".into(),
                verbose: false
            }))
        );
        assert_eq!(invalid_text("showconf extra -name p"), "name should be set");
        assert_eq!(
            line("showconf -v -name p"),
            Ok(Command::ShowConf(ShowConf {
                name: "p".into(),
                verbose: true
            }))
        );
        assert_eq!(
            invalid_text("showconf -name a/b"),
            "name cannot contain / symbol"
        );
    }

    #[test]
    fn component_commands_validation() {
        assert_eq!(
            line("showcomp -name c"),
            Ok(Command::ShowComp(ShowComp { name: "c".into() }))
        );
        assert_eq!(invalid_text("showcomp"), "name should be set");
        assert_eq!(
            invalid_text("showcomp -name a:b"),
            "name cannot contain : symbol"
        );
        assert_eq!(
            line("delver -name c -version v"),
            Ok(Command::DelVer(DelVer {
                name: "c".into(),
                version: "v".into()
            }))
        );
        assert_eq!(
            invalid_text("delver -name c"),
            "both name and version should be set"
        );
        assert_eq!(
            invalid_text("delver -name c:d -version v"),
            "name cannot contain : symbol"
        );
        // delcomp does not check `:`.
        assert_eq!(
            line("delcomp -name a:b"),
            Ok(Command::DelComp(DelComp { name: "a:b".into() }))
        );
        assert_eq!(invalid_text("delcomp"), "name should be set");
    }

    #[test]
    fn delconf_force_is_checked_when_run_not_here() {
        assert_eq!(
            line("delconf -name p"),
            Ok(Command::DelConf(DelConf {
                name: "p".into(),
                force: false
            }))
        );
        assert_eq!(
            line("delconf -name p -force"),
            Ok(Command::DelConf(DelConf {
                name: "p".into(),
                force: true
            }))
        );
        assert_eq!(invalid_text("delconf -force"), "name should be set");
        assert_eq!(
            invalid_text("delconf -name a/b"),
            "name cannot contain / symbol"
        );
    }

    #[test]
    fn injection_of_the_original_is_one_name_here() {
        // spec A10: `deployctl delconf -name "x -force"` must not become a forced delete.
        let cmd = Command::DelConf(DelConf {
            name: "x -force".into(),
            force: false,
        });
        assert_eq!(line(&cmd.to_line()), Ok(cmd));
    }

    #[test]
    fn history_rollback_audit_fsck() {
        assert_eq!(
            line("history -name p"),
            Ok(Command::History(History { name: "p".into() }))
        );
        assert_eq!(invalid_text("history"), "name should be set");
        assert_eq!(
            invalid_text("history -name a/b"),
            "name cannot contain / symbol"
        );
        assert_eq!(
            line("rollback -name p"),
            Ok(Command::Rollback(Rollback {
                name: "p".into(),
                to: None
            }))
        );
        assert_eq!(
            line("rollback -name p -to 3"),
            Ok(Command::Rollback(Rollback {
                name: "p".into(),
                to: Some(3)
            }))
        );
        assert_eq!(
            invalid_text("rollback -name p -to 0"),
            "-to should be a positive history entry number"
        );
        assert_eq!(
            invalid_text("rollback -name p -to -2"),
            "-to should be a positive history entry number"
        );
        assert_eq!(invalid_text("rollback -to 2"), "name should be set");
        assert_eq!(line("audit"), Ok(Command::Audit(Audit { limit: 50 })));
        assert_eq!(line("audit -n 5"), Ok(Command::Audit(Audit { limit: 5 })));
        assert_eq!(invalid_text("audit -n 0"), "-n should be a positive number");
        assert_eq!(line("fsck"), Ok(Command::Fsck));
        assert_eq!(line("fsck extra"), Ok(Command::Fsck));
        assert_eq!(line("status"), Ok(Command::Status(Status { name: None })));
        assert_eq!(
            line("status -name web"),
            Ok(Command::Status(Status {
                name: Some("web".into())
            }))
        );
        assert_eq!(
            invalid_text("status -name a/b"),
            "name cannot contain / symbol"
        );
        assert_eq!(
            line("forget -name web -host web-3"),
            Ok(Command::Forget(Forget::Host {
                name: "web".into(),
                host: "web-3".into()
            }))
        );
        assert_eq!(
            line("forget -silent"),
            Ok(Command::Forget(Forget::Silent { name: None }))
        );
        assert_eq!(
            line("forget -silent -name web"),
            Ok(Command::Forget(Forget::Silent {
                name: Some("web".into())
            }))
        );
        let which = "either -host or -silent should be set";
        assert_eq!(invalid_text("forget -name web"), which);
        assert_eq!(invalid_text("forget -name web -host h -silent"), which);
        assert_eq!(invalid_text("forget -host h"), "name should be set");
        assert_eq!(
            invalid_text("forget -silent -name a/b"),
            "name cannot contain / symbol"
        );
    }

    #[test]
    fn names_and_mutation() {
        let read_only = [
            "help",
            "components",
            "configurations",
            "fsck",
            "audit",
            "history -name p",
            "showconf -name p",
            "showcomp -name c",
            "status",
            "status -name p",
        ];
        let addver = format!("addver -name c -version v -hash {H}");
        let mutating = [
            addver.as_str(),
            "addconf -name p -layer a:b",
            "changeconf -name p -component c -version v",
            "bumpconf -name p -component c",
            "delver -name c -version v",
            "delcomp -name c",
            "delconf -name p",
            "rollback -name p",
            "forget -name p -host h",
            "forget -silent",
        ];
        for (l, want) in read_only
            .iter()
            .map(|l| (l, false))
            .chain(mutating.iter().map(|l| (l, true)))
        {
            let c = line(l).unwrap();
            assert_eq!(Some(c.name()), l.split(' ').next());
            assert_eq!(c.is_mutating(), want, "{l}");
            let named = l
                .split_once("-name ")
                .map(|(_, n)| n.split(' ').next().unwrap());
            let configuration =
                named.filter(|_| !["addver", "showcomp", "delver", "delcomp"].contains(&c.name()));
            assert_eq!(c.configuration(), configuration, "{l}");
        }
    }

    const HOSTILE: &[&str] = &[
        "x -force",
        "a b",
        "it's",
        "\"q\"",
        ";",
        "a;rm -rf /",
        "-",
        "-force",
        "--",
        "-h",
        "=",
        "a=b",
        "\\",
        "$(x)",
        "`x`",
        "2>x",
        "tab\there",
        "new\nline",
        "héllo",
        "(",
        ")",
        " ",
        "'",
        "\\'",
    ];

    fn round_trip(cmd: Command) {
        let l = cmd.to_line();
        assert_eq!(line(&l), Ok(cmd.clone()), "line {l:?}");
        assert_eq!(Command::parse(&cmd.to_words()), Ok(cmd));
    }

    #[test]
    fn to_line_round_trips_hostile_values_everywhere() {
        for h in HOSTILE {
            let s = h.to_string();
            // Configuration names may hold anything but `/`.
            let n = h.replace('/', "|");
            round_trip(Command::AddVer(AddVer {
                name: s.clone(),
                version: s.clone(),
                hash: "h".repeat(64),
            }));
            round_trip(Command::AddConf(AddConf {
                name: n.clone(),
                layers: vec![
                    ("c".into(), s.clone()),
                    (s.clone(), "v".into()),
                    ("d".into(), format!("{s}:{s}")),
                ],
            }));
            round_trip(Command::ChangeConf(ChangeConf {
                name: n.clone(),
                component: s.clone(),
                version: s.clone(),
            }));
            round_trip(Command::BumpConf(BumpConf {
                name: n.clone(),
                component: s.clone(),
            }));
            round_trip(Command::ShowConf(ShowConf {
                name: n.clone(),
                verbose: false,
            }));
            round_trip(Command::ShowConf(ShowConf {
                name: n.clone(),
                verbose: true,
            }));
            round_trip(Command::ShowComp(ShowComp { name: s.clone() }));
            round_trip(Command::DelVer(DelVer {
                name: s.clone(),
                version: s.clone(),
            }));
            round_trip(Command::DelComp(DelComp { name: s.clone() }));
            round_trip(Command::DelConf(DelConf {
                name: n.clone(),
                force: false,
            }));
            round_trip(Command::DelConf(DelConf {
                name: n.clone(),
                force: true,
            }));
            round_trip(Command::History(History { name: n.clone() }));
            round_trip(Command::Rollback(Rollback {
                name: n.clone(),
                to: None,
            }));
            round_trip(Command::Rollback(Rollback {
                name: n.clone(),
                to: Some(7),
            }));
            round_trip(Command::Status(Status {
                name: Some(n.clone()),
            }));
            round_trip(Command::Forget(Forget::Host {
                name: n.clone(),
                host: n.clone(),
            }));
            round_trip(Command::Forget(Forget::Silent {
                name: Some(n.clone()),
            }));
        }
    }

    #[test]
    fn to_line_round_trips_argument_free_commands() {
        for c in [
            Command::Help,
            Command::Components,
            Command::Configurations,
            Command::Fsck,
            Command::Status(Status { name: None }),
            Command::Forget(Forget::Silent { name: None }),
            Command::Audit(Audit { limit: 3 }),
        ] {
            round_trip(c);
        }
    }

    #[test]
    fn to_words_shape() {
        let c = Command::DelConf(DelConf {
            name: "x -force".into(),
            force: false,
        });
        assert_eq!(c.to_words(), ["delconf", "-name=x -force"]);
        assert_eq!(c.to_line(), "delconf '-name=x -force'");
        let c = Command::AddConf(AddConf {
            name: "p".into(),
            layers: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        });
        assert_eq!(c.to_line(), "addconf -name=p -layer=a:1 -layer=b:2");
    }

    fn config() -> Configuration {
        Configuration::new(
            "project1".into(),
            datetime!(2026-11-22 07:26:29.184481867 UTC),
            vec![
                ComponentVersion::new(
                    "code".into(),
                    "v01".into(),
                    H.into(),
                    datetime!(2026-11-22 07:26:19.8 UTC),
                ),
                ComponentVersion::new(
                    "config".into(),
                    "v01".into(),
                    H.into(),
                    datetime!(2026-11-22 07:26:19.9 UTC),
                ),
            ],
        )
    }

    #[test]
    fn render_showconf_as_observed() {
        assert_eq!(
            showconf(&config(), false),
            "code     v01   2026-11-22T07:26:19Z   \nconfig   v01   2026-11-22T07:26:19Z   \n"
        );
    }

    #[test]
    fn render_showconf_verbose_header_has_raw_tabs() {
        let c = config();
        let out = showconf(&c, true);
        let head = format!(
            "Name:\tproject1\nMtime:\t2026-11-22T07:26:29Z\nHash:\t{}\n\ncode     v01",
            c.hash
        );
        assert!(out.starts_with(&head), "{out:?}");
    }

    #[test]
    fn render_showconf_without_layers_is_empty() {
        let c = Configuration::new("p".into(), datetime!(2026-11-22 07:26:29 UTC), vec![]);
        assert_eq!(showconf(&c, false), "");
    }

    #[test]
    fn render_showcomp_as_observed() {
        let rows = vec![
            (datetime!(2026-11-22 07:26:19 UTC), "v01".to_string()),
            (datetime!(2026-11-22 07:26:24 UTC), "v01-again".to_string()),
        ];
        assert_eq!(
            showcomp(&rows),
            "2026-11-22T07:26:19Z   v01         \n2026-11-22T07:26:24Z   v01-again   \n"
        );
        assert_eq!(showcomp(&[]), "");
    }

    #[test]
    fn render_names() {
        assert_eq!(names(&["a".into(), "b c".into()]), "a\nb c\n");
        assert_eq!(names(&[]), "");
    }

    #[test]
    fn render_bump_hint_as_observed() {
        assert_eq!(
            bump_rollback_hint("project1", "config", "v01"),
            "to roll back run:\n\tchangeconf -name=\"project1\" -component=\"config\" -version=\"v01\"\n"
        );
        assert_eq!(
            bump_rollback_hint("a\"b", "c d", "v\n"),
            "to roll back run:\n\tchangeconf -name=\"a\\\"b\" -component=\"c d\" -version=\"v\\n\"\n"
        );
    }

    #[test]
    fn render_history_newest_first_with_current_mark() {
        let c1 = config();
        let mut c2 = config();
        c2.layers.truncate(1);
        c2.hash = crate::config::config_hash([H]);
        let rows = vec![
            HistoryRow {
                seq: 1,
                saved_at: datetime!(2026-11-22 07:26:29 UTC),
                user: "alice".into(),
                command: "addconf".into(),
                config: c1.clone(),
            },
            HistoryRow {
                seq: 2,
                saved_at: datetime!(2026-11-22 08:00:00 UTC),
                user: "bob".into(),
                command: "changeconf".into(),
                config: c2.clone(),
            },
        ];
        let out = history(&rows, &c1.hash);
        let want = format!(
            "2    2026-11-22T08:00:00Z   {}   bob     changeconf   code@v01\n1*   2026-11-22T07:26:29Z   {}   alice   addconf      code@v01 config@v01\n",
            &c2.hash[..12],
            &c1.hash[..12]
        );
        assert_eq!(out, want);
    }

    #[test]
    fn render_audit_oldest_first_with_control_chars_escaped() {
        let rows = vec![
            AuditRow {
                time: datetime!(2026-11-22 07:00:00 UTC),
                user: "alice".into(),
                key_fingerprint: "SHA256:abc".into(),
                remote_addr: "127.0.0.1:5000".into(),
                command: "showconf -name=p".into(),
                result: "ok".into(),
            },
            AuditRow {
                time: datetime!(2026-11-22 07:00:01 UTC),
                user: "bob".into(),
                key_fingerprint: "SHA256:defg".into(),
                remote_addr: "[::1]:5001".into(),
                command: "delconf '-name=a\tb\x1b[2J'".into(),
                result: "fail: \"a\tb\" configuration not found".into(),
            },
        ];
        assert_eq!(
            audit(&rows),
            "2026-11-22T07:00:00Z   alice   SHA256:abc    127.0.0.1:5000   ok                                     showconf -name=p\n\
             2026-11-22T07:00:01Z   bob     SHA256:defg   [::1]:5001       fail: \"a\\tb\" configuration not found   delconf '-name=a\\tb\\x1b[2J'\n"
        );
        assert_eq!(audit(&[]), "");
    }

    #[test]
    fn render_status_by_configuration_and_host_with_states() {
        let h1 = "1".repeat(64);
        let h2 = "2".repeat(64);
        let row =
            |config: &str, host: &str, hash: &str, error: Option<&str>, current: Option<&str>| {
                StatusRow {
                    config: config.into(),
                    host: host.into(),
                    hash: hash.into(),
                    error: error.map(str::to_string),
                    reported: datetime!(2026-11-23 08:00:00 UTC),
                    remote_addr: "10.0.0.1:4000".into(),
                    current: current.map(str::to_string),
                }
            };
        let mut gone = row("web", "web-4", &h2, None, Some(&h2));
        gone.reported = datetime!(2026-11-23 07:29:59 UTC);
        let rows = vec![
            row("web", "web-2", &h1, Some("deploy script failed"), Some(&h2)),
            row("web", "web-1", &h2, None, Some(&h2)),
            row("db", "db\x1b[2J", &h1, None, Some(&h2)),
            row("old", "web-1", "", None, None),
            gone,
            row("web", "web-3", "", None, Some(&h2)),
        ];
        // Half an hour after 08:00 is not yet silent; web-4's report is older.
        let now = datetime!(2026-11-23 08:30:00 UTC);
        assert_eq!(
            status(&rows, now),
            "db    db\\x1b[2J   behind    111111111111   2026-11-23T08:00:00Z   10.0.0.1:4000   \n\
             old   web-1       deleted   -              2026-11-23T08:00:00Z   10.0.0.1:4000   \n\
             web   web-1       current   222222222222   2026-11-23T08:00:00Z   10.0.0.1:4000   \n\
             web   web-2       failed    111111111111   2026-11-23T08:00:00Z   10.0.0.1:4000   deploy script failed\n\
             web   web-3       behind    -              2026-11-23T08:00:00Z   10.0.0.1:4000   \n\
             web   web-4       silent    222222222222   2026-11-23T07:29:59Z   10.0.0.1:4000   \n"
        );
        assert_eq!(status(&[], now), "");
    }

    #[test]
    fn render_forgotten_rows_escaped() {
        let rows = [
            ("web".to_string(), "web-10".to_string()),
            ("db".to_string(), "db\n1".to_string()),
        ];
        assert_eq!(forgotten(&rows), "web   web-10\ndb    db\\n1\n");
        assert_eq!(forgotten(&[]), "");
    }
}
