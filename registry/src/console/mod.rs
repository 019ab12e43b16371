//! The operator console (spec 1.7, 1.8): one line in, text and an exit status out.
//!
//! [`execute`] is synchronous (the store is): the session calls it from `spawn_blocking`. It
//! splits and parses the line with the shared grammar (`common::console`), applies the command
//! to the store, renders the output, logs `command ok/fail: [...]` with who ran it (fixing A8),
//! and records the command in the audit table.
//!
//! - [`shell`]: the interactive line editor used over a pty.

pub mod shell;

use common::console::{Command, HELP_LISTING, ParseError, UNKNOWN_COMMAND, render};
use common::gostr;
use tokio_util::sync::CancellationToken;

use crate::keys::Restrictions;
use crate::store::{Actor, Store, StoreError};

/// Longest command line accepted, bytes. Longer lines are refused before parsing.
pub const MAX_LINE: usize = 64 * 1024;

/// What a console line produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for the client's stdout (the original wrote errors there too; scripts rely on it).
    pub output: String,
    /// Exit status: 0 or 1.
    pub status: u32,
}

impl Outcome {
    fn ok(output: String) -> Outcome {
        Outcome { output, status: 0 }
    }
    fn fail(output: String) -> Outcome {
        Outcome { output, status: 1 }
    }
}

/// What a console may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Only the commands that show ([`Command::shows_only`]): the keys of `-viewauth`.
    ReadOnly,
    /// An operator key with `configs=`: the configurations it names are the only ones it sees
    /// and changes. It uploads, and adds versions to components that no other configuration
    /// uses (another's `bumpconf` would take them), but deletes none, and runs neither `audit`
    /// (everybody's commands) nor `fsck` (every blob).
    Limited(Restrictions),
}

impl Access {
    /// Why `command` is refused, if it is (printed after `<command>: `).
    fn refusal(&self, command: &Command) -> Option<String> {
        match self {
            Access::Full => None,
            Access::ReadOnly => {
                (!command.shows_only()).then(|| "not allowed with a read-only key".to_string())
            }
            Access::Limited(_) => match (command.configuration(), command) {
                (Some(config), _) if !self.may_see(config) => Some(format!(
                    "configuration {} is not among this key's configs=",
                    gostr::quote(config)
                )),
                (Some(_), _) => None,
                (
                    None,
                    Command::DelVer(_) | Command::DelComp(_) | Command::Audit(_) | Command::Fsck,
                ) => Some("not allowed with a key limited by configs=".to_string()),
                (None, _) => None,
            },
        }
    }

    fn may_see(&self, config: &str) -> bool {
        match self {
            Access::Limited(r) => r.may_see(config),
            Access::Full | Access::ReadOnly => true,
        }
    }
}

/// Runs one console line for `actor`, with `access`. A long command (`fsck`) ends early once
/// `stop` is cancelled.
pub fn execute(
    store: &Store,
    actor: &Actor,
    line: &str,
    access: &Access,
    stop: &CancellationToken,
) -> Outcome {
    if line.len() > MAX_LINE {
        return Outcome::fail(format!(
            "command line too long: {} bytes, the limit is {MAX_LINE}\n",
            line.len()
        ));
    }
    let words = match common::shellwords::split(line) {
        Ok(words) => words,
        // As the original: a line that does not split is neither logged nor run.
        Err(_) => return Outcome::fail(format!("{}\n", ParseError::Syntax)),
    };
    let (outcome, failure) = match Command::parse(&words) {
        Ok(command) => match access.refusal(&command) {
            Some(why) => (
                Outcome::fail(format!("{}: {why}\n", command.name())),
                Some(why),
            ),
            None => run(store, actor, access, stop, command),
        },
        Err(err) => {
            let text = match &err {
                ParseError::Usage { output } => output.clone(),
                ParseError::Unknown(_) => format!("{UNKNOWN_COMMAND}\n"),
                other => format!("{other}\n"),
            };
            let reason = match &err {
                ParseError::Usage { output } => {
                    output.lines().next().unwrap_or("usage").to_string()
                }
                ParseError::Unknown(_) => "unknown command".to_string(),
                other => other.to_string(),
            };
            (Outcome::fail(text), Some(reason))
        }
    };
    log_and_audit(store, actor, &words, failure.as_deref());
    outcome
}

fn log_and_audit(store: &Store, actor: &Actor, words: &[String], failure: Option<&str>) {
    let shown = format!("[{}]", words.join(" "));
    let (user, key, addr) = (&actor.user, &actor.key_fingerprint, &actor.remote_addr);
    match failure {
        None => tracing::info!(%user, %key, %addr, "command ok: {shown}"),
        Some(reason) => tracing::info!(%user, %key, %addr, %reason, "command fail: {shown}"),
    }
    let row = render::AuditRow {
        time: common::timefmt::now(),
        user: actor.user.clone(),
        key_fingerprint: actor.key_fingerprint.clone(),
        remote_addr: actor.remote_addr.clone(),
        command: common::shellwords::join(words),
        result: failure.map_or_else(|| "ok".to_string(), |r| format!("fail: {r}")),
    };
    if let Err(err) = store.record_audit(&row) {
        tracing::error!(cause = ?err, "could not record audit entry");
    }
}

/// Applies a parsed command. Returns the outcome and, on failure, the reason for log and audit.
fn run(
    store: &Store,
    actor: &Actor,
    access: &Access,
    stop: &CancellationToken,
    command: Command,
) -> (Outcome, Option<String>) {
    let name = command.name();
    match apply(store, actor, access, stop, command) {
        Ok(Applied {
            output,
            problems: None,
        }) => (Outcome::ok(output), None),
        Ok(Applied {
            output,
            problems: Some(reason),
        }) => (Outcome::fail(output), Some(reason)),
        Err(err) => {
            if let StoreError::Internal(cause) = &err {
                tracing::error!("command failed: {cause:#}");
            }
            let text = err.to_string();
            // A refusal reads as the refusals checked before running (`Access::refusal`).
            let shown = match err {
                StoreError::SharedComponent { .. } => format!("{name}: {text}\n"),
                _ => format!("{text}\n"),
            };
            (Outcome::fail(shown), Some(text))
        }
    }
}

/// Output of a command that ran; `problems` makes it exit 1 with its output (fsck, delconf).
struct Applied {
    output: String,
    problems: Option<String>,
}

impl From<String> for Applied {
    fn from(output: String) -> Applied {
        Applied {
            output,
            problems: None,
        }
    }
}

/// Refusal to delete without `-force` (spec 1.8), exit 1.
pub const DELCONF_NEEDS_FORCE: &str = "Run command with -force flag to confirm removal";

fn apply(
    store: &Store,
    actor: &Actor,
    access: &Access,
    stop: &CancellationToken,
    command: Command,
) -> Result<Applied, StoreError> {
    let output = match command {
        Command::Help => format!("{HELP_LISTING}\n"),
        Command::AddVer(c) => {
            store.add_version_seen_by(&c.name, &c.version, &c.hash, actor, |config| {
                access.may_see(config)
            })?;
            String::new()
        }
        Command::AddConf(c) => {
            store.add_conf(&c.name, &c.layers, actor)?;
            String::new()
        }
        Command::ChangeConf(c) => {
            store.change_conf(&c.name, &c.component, &c.version, actor)?;
            String::new()
        }
        Command::BumpConf(c) => match store.bump_conf(&c.name, &c.component, actor)? {
            Some(old) => render::bump_rollback_hint(&c.name, &c.component, &old),
            None => String::new(),
        },
        Command::ShowConf(c) => render::showconf(&store.show_conf(&c.name)?, c.verbose),
        Command::ShowComp(c) => render::showcomp(&store.show_comp(&c.name)?),
        Command::Components => render::names(&store.components()?),
        Command::Configurations => {
            let mut names = store.configurations()?;
            names.retain(|n| access.may_see(n));
            render::names(&names)
        }
        Command::DelVer(c) => {
            store.del_ver(&c.name, &c.version, actor)?;
            String::new()
        }
        Command::DelComp(c) => {
            store.del_comp(&c.name, actor)?;
            String::new()
        }
        Command::DelConf(c) => {
            if !c.force {
                return Ok(Applied {
                    output: format!("{DELCONF_NEEDS_FORCE}\n"),
                    problems: Some(DELCONF_NEEDS_FORCE.to_string()),
                });
            }
            store.del_conf(&c.name, actor)?;
            String::new()
        }
        Command::History(c) => {
            let rows = store.history(&c.name)?;
            let current = store
                .show_conf(&c.name)
                .map(|conf| conf.hash)
                .unwrap_or_default();
            render::history(&rows, &current)
        }
        Command::Rollback(c) => {
            let conf = store.rollback(&c.name, c.to, actor)?;
            format!(
                "rolled back configuration {} to {}\n",
                gostr::quote(&c.name),
                conf.hash
            )
        }
        Command::Audit(c) => render::audit(&store.audit(c.limit)?),
        Command::Status(c) => {
            let mut rows = store.status(c.name.as_deref())?;
            rows.retain(|r| access.may_see(&r.config));
            render::status(&rows, common::timefmt::now())
        }
        Command::Forget(which) => {
            let now = common::timefmt::now();
            let gone = store.forget_status(&which, now, |config| access.may_see(config))?;
            tracing::info!(user = %actor.user, hosts = gone.len(), "agent reports forgotten");
            render::forgotten(&gone)
        }
        Command::Fsck => {
            let report = store.fsck(stop)?;
            let output = fsck_text(&report);
            let problems = (!report.problems.is_empty())
                .then(|| format!("fsck: {} problems", report.problems.len()));
            return Ok(Applied { output, problems });
        }
    };
    Ok(output.into())
}

/// The fsck report: one line per problem, then a summary line.
pub fn fsck_text(report: &crate::store::FsckReport) -> String {
    let mut out = String::new();
    for problem in &report.problems {
        out.push_str(problem);
        out.push('\n');
    }
    out.push_str(&format!(
        "checked {} blobs ({} bytes): {}\n",
        report.blobs_checked,
        report.bytes_checked,
        match report.problems.len() {
            0 => "no problems".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(store: &Store, actor: &Actor, access: &Access, line: &str) -> Outcome {
        execute(store, actor, line, access, &CancellationToken::new())
    }

    fn setup() -> (tempfile::TempDir, Store, Actor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::Options::default()).unwrap();
        let actor = Actor {
            user: "op".into(),
            key_fingerprint: "SHA256:x".into(),
            remote_addr: "127.0.0.1:1".into(),
        };
        (dir, store, actor)
    }

    #[test]
    fn read_only_access_runs_what_shows_and_refuses_the_rest() {
        let (_dir, store, actor) = setup();
        let ro = |line: &str| exec(&store, &actor, &Access::ReadOnly, line);
        assert_eq!(ro("components"), Outcome::ok(String::new()));
        assert_eq!(
            ro("showconf -name nope").output,
            "configuration \"nope\" not found\n"
        );
        for (line, word) in [
            ("addconf -name p -layer c:v", "addconf"),
            ("delconf -name p -force", "delconf"),
            ("rollback -name p", "rollback"),
            ("fsck", "fsck"),
        ] {
            assert_eq!(
                ro(line),
                Outcome::fail(format!("{word}: not allowed with a read-only key\n")),
                "{line}"
            );
        }
        // A line that does not parse gets its usual text, as for anyone.
        assert_eq!(ro("showconf").output, "name should be set\n");
        let audit = store.audit(100).unwrap();
        assert!(
            audit.iter().any(
                |r| r.command == "fsck" && r.result == "fail: not allowed with a read-only key"
            ),
            "{audit:?}"
        );
    }

    /// An operator key with `configs="web*"`: it sees and changes only the web
    /// configurations, adds versions, deletes none, and runs neither audit nor fsck.
    #[test]
    fn limited_access_sees_and_changes_only_its_configurations() {
        let (_dir, store, actor) = setup();
        crate::store::tests::with_versions(&store, "code", &[("v1", b"1"), ("v2", b"2")]);
        let full = |line: &str| exec(&store, &actor, &Access::Full, line);
        assert_eq!(full("addconf -name web -layer code:v1").status, 0);
        assert_eq!(full("addconf -name db -layer code:v1").status, 0);
        let limited = Access::Limited(Restrictions {
            configs: Some("web*".into()),
            ..Restrictions::default()
        });
        let run = |line: &str| exec(&store, &actor, &limited, line);
        for line in [
            "addconf -name web-eu -layer code:v1",
            "changeconf -name web -component code -version v2",
            "showconf -name web",
            "history -name web",
            "rollback -name web",
            "status -name web",
            "components",
            "showcomp -name code",
        ] {
            assert_eq!(run(line).status, 0, "{line}: {:?}", run(line));
        }
        assert_eq!(run("configurations"), Outcome::ok("web\nweb-eu\n".into()));
        for (line, word) in [
            ("addconf -name db2 -layer code:v1", "addconf"),
            (
                "changeconf -name db -component code -version v2",
                "changeconf",
            ),
            ("bumpconf -name db -component code", "bumpconf"),
            ("showconf -name db", "showconf"),
            ("delconf -name db -force", "delconf"),
            ("history -name db", "history"),
            ("rollback -name db", "rollback"),
            ("status -name db", "status"),
            ("forget -name db -host h", "forget"),
            ("forget -name db -silent", "forget"),
        ] {
            let config = line.split(' ').nth(2).unwrap();
            assert_eq!(
                run(line),
                Outcome::fail(format!(
                    "{word}: configuration \"{config}\" is not among this key's configs=\n"
                )),
                "{line}"
            );
        }
        for (line, word) in [
            ("delver -name code -version v1", "delver"),
            ("delcomp -name code", "delcomp"),
            ("audit", "audit"),
            ("fsck", "fsck"),
        ] {
            assert_eq!(
                run(line),
                Outcome::fail(format!(
                    "{word}: not allowed with a key limited by configs=\n"
                )),
                "{line}"
            );
        }
        assert_eq!(full("showconf -name db").status, 0, "db is still there");

        // Versions only of components that no other team's configuration uses.
        let h = crate::store::tests::upload(&store, b"3");
        assert_eq!(
            run(&format!("addver -name code -version v3 -hash {h}")),
            Outcome::fail(
                "addver: component \"code\" is used by configuration \"db\", which is not among this key's configs=\n".into()
            )
        );
        assert_eq!(
            run(&format!("addver -name web-assets -version v1 -hash {h}")),
            Outcome::ok(String::new())
        );
        assert_eq!(full("delconf -name db -force").status, 0);
        assert_eq!(
            run(&format!("addver -name code -version v3 -hash {h}")).status,
            0
        );

        // `status` and `forget -silent` without a name cover only its configurations.
        let h = "a".repeat(64);
        let agent = Actor {
            user: "deploy-agent".into(),
            ..actor.clone()
        };
        for config in ["web", "db"] {
            store
                .record_status(&common::report::Report::new(config, "h1", &h, None), &agent)
                .unwrap();
        }
        let status = run("status").output;
        assert!(
            status.starts_with("web ") && status.lines().count() == 1,
            "{status}"
        );
        assert_eq!(full("status").output.lines().count(), 2);
    }

    #[test]
    fn console_texts() {
        let (_dir, store, actor) = setup();
        let out = exec(&store, &actor, &Access::Full, "help");
        assert_eq!(out, Outcome::ok(format!("{HELP_LISTING}\n")));
        assert_eq!(
            exec(&store, &actor, &Access::Full, "showconf \"x").output,
            "invalid command line string\n"
        );
        assert_eq!(
            exec(&store, &actor, &Access::Full, "frobnicate").output,
            format!("{UNKNOWN_COMMAND}\n")
        );
        assert_eq!(
            exec(&store, &actor, &Access::Full, "showconf").output,
            "name should be set\n"
        );
        let out = exec(&store, &actor, &Access::Full, "delconf -name x");
        assert_eq!(
            out,
            Outcome::fail("Run command with -force flag to confirm removal\n".into())
        );
        assert_eq!(
            exec(&store, &actor, &Access::Full, "showconf -name nope").output,
            "configuration \"nope\" not found\n"
        );
        let out = exec(&store, &actor, &Access::Full, "showconf -x");
        assert!(
            out.output
                .starts_with("flag provided but not defined: -x\nUsage of showconf:\n"),
            "{out:?}"
        );
        assert_eq!(out.status, 1);
        assert_eq!(
            exec(&store, &actor, &Access::Full, "components"),
            Outcome::ok(String::new())
        );
        let long = format!("help {}", "a".repeat(MAX_LINE));
        assert!(
            exec(&store, &actor, &Access::Full, &long)
                .output
                .starts_with("command line too long")
        );
        // Every run command (not the unsplittable one) is in the audit log.
        let audit = store.audit(100).unwrap();
        assert!(
            audit
                .iter()
                .any(|r| r.command == "help" && r.result == "ok" && r.user == "op")
        );
        assert!(
            audit
                .iter()
                .any(|r| r.result.starts_with("fail: configuration"))
        );
    }

    #[test]
    fn fsck_summary() {
        let report = crate::store::FsckReport {
            blobs_checked: 2,
            bytes_checked: 10,
            problems: vec!["x".into()],
        };
        assert_eq!(
            fsck_text(&report),
            "x\nchecked 2 blobs (10 bytes): 1 problem\n"
        );
    }
}
