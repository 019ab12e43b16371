//! What an agent tells the registry after each poll, so that operators can see which hosts run
//! which configuration (deploy-tools B19 and C: the original's agents report nothing).
//!
//! An agent sends one exec line on its own connection, as the service user:
//! `report -name web -host web-3 -hash <running> [-error <why the last poll failed>]`, quoted
//! with [`crate::shellwords`]. The registry accepts no other exec line from a service key.

use std::time::Duration;

use crate::goflag::{Flag, FlagSet, Kind};
use crate::timefmt::OffsetDateTime;

/// The command word.
pub const COMMAND: &str = "report";
/// Longest host name accepted (DNS names are at most 253 bytes).
pub const MAX_HOST: usize = 255;
/// Longest error text accepted; the agent shortens longer ones ([`Report::new`]).
pub const MAX_ERROR: usize = 1024;
/// An agent reports when what it says changes, and at least this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(600);
/// A host whose last report is older than this has stopped polling (or reporting): `status`
/// says `silent` (three reports missed).
pub const SILENT_AFTER: Duration = Duration::from_secs(3 * REPORT_EVERY.as_secs());

/// Reports older than this are silent at `now` ([`SILENT_AFTER`]): `status` shows them so and
/// `forget -silent` drops them.
pub fn silent_before(now: OffsetDateTime) -> OffsetDateTime {
    now - SILENT_AFTER
}

/// One agent's state for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The configuration the agent tracks.
    pub name: String,
    /// The host, as the agent names itself (its hostname unless told otherwise).
    pub host: String,
    /// Hash of the configuration it runs; empty before its first deploy.
    pub hash: String,
    /// Why its last poll failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl Report {
    /// A report with the error made to fit: one line, at most [`MAX_ERROR`] bytes.
    pub fn new(name: &str, host: &str, hash: &str, error: Option<&str>) -> Report {
        Report {
            name: name.to_string(),
            host: host.to_string(),
            hash: hash.to_string(),
            error: error.map(fit_error),
        }
    }

    /// The exec line. `-flag=value` words, as the console's: a value that starts with `-`
    /// stays a value.
    pub fn to_line(&self) -> String {
        let mut words = vec![
            COMMAND.to_string(),
            format!("-name={}", self.name),
            format!("-host={}", self.host),
            format!("-hash={}", self.hash),
        ];
        if let Some(e) = &self.error {
            words.push(format!("-error={e}"));
        }
        crate::shellwords::join(&words)
    }

    /// Parses an exec line: `None` if it is not a report at all (another command), else the
    /// report or why it is refused.
    pub fn parse_line(line: &str) -> Option<Result<Report, String>> {
        let words = crate::shellwords::split(line).ok()?;
        let (first, args) = words.split_first()?;
        (first == COMMAND).then(|| parse(args))
    }
}

fn parse(args: &[String]) -> Result<Report, String> {
    let flag = |name| Flag {
        name,
        kind: Kind::String { default: "" },
        usage: "",
    };
    let set = FlagSet::new(
        COMMAND,
        vec![flag("name"), flag("host"), flag("hash"), flag("error")],
    );
    let p = set.parse(args).map_err(|e| match e {
        crate::goflag::FlagError::Help => "report: no help".to_string(),
        crate::goflag::FlagError::Message(m) => m,
    })?;
    let (name, host, hash) = (
        p.string(&set, "name"),
        p.string(&set, "host"),
        p.string(&set, "hash"),
    );
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err("report: -name should be a configuration name".to_string());
    }
    if host.is_empty() || host.len() > MAX_HOST || host.chars().any(char::is_control) {
        return Err(format!(
            "report: -host should be a name of at most {MAX_HOST} bytes"
        ));
    }
    if !(hash.is_empty()
        || (hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))))
    {
        return Err("report: -hash should be empty or 64 lowercase hex digits".to_string());
    }
    let error = p.is_set("error").then(|| p.string(&set, "error"));
    if let Some(e) = &error
        && (e.len() > MAX_ERROR || e.chars().any(char::is_control))
    {
        return Err(format!(
            "report: -error should be one line of at most {MAX_ERROR} bytes"
        ));
    }
    Ok(Report {
        name,
        host,
        hash,
        error,
    })
}

/// One line (control characters as spaces), cut at a character boundary to [`MAX_ERROR`].
fn fit_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR));
    for ch in text.chars() {
        let ch = if ch.is_control() { ' ' } else { ch };
        if out.len() + ch.len_utf8() > MAX_ERROR {
            break;
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "d334f1c85f5e0b6a8ad473770251c2032ce06028b01d64dba2be777479b0f4de";

    #[test]
    fn round_trips_through_the_line() {
        for r in [
            Report::new("web", "host-1", H, None),
            Report::new(
                "web",
                "a host; rm -rf /",
                "",
                Some("deploy script failed: 'x' \"y\""),
            ),
            Report::new("-w", "-host", H, Some("-name=x")),
        ] {
            assert_eq!(Report::parse_line(&r.to_line()), Some(Ok(r.clone())));
        }
        assert_eq!(
            Report::new("web", "h", H, None).to_line(),
            format!("report -name=web -host=h -hash={H}")
        );
    }

    #[test]
    fn other_lines_are_not_reports() {
        assert_eq!(Report::parse_line("showconf -name web"), None);
        assert_eq!(Report::parse_line(""), None);
        assert_eq!(Report::parse_line("report 'unbalanced"), None);
    }

    #[test]
    fn bad_fields_are_refused() {
        let refused = |line: &str| match Report::parse_line(line) {
            Some(Err(m)) => m,
            other => panic!("{line}: {other:?}"),
        };
        assert!(refused("report -host h").contains("-name"));
        assert!(refused("report -name a/b -host h").contains("-name"));
        assert!(refused("report -name web").contains("-host"));
        let long = "h".repeat(MAX_HOST + 1);
        assert!(refused(&format!("report -name web -host {long}")).contains("-host"));
        assert!(refused("report -name web -host h -hash abc").contains("-hash"));
        let long = "e".repeat(MAX_ERROR + 1);
        assert!(refused(&format!("report -name web -host h -error {long}")).contains("-error"));
        assert!(refused("report -name web -host h -error 'a\nb'").contains("-error"));
        assert!(refused("report -name web -host h -bogus 1").contains("bogus"));
    }

    #[test]
    fn errors_are_made_to_fit() {
        let r = Report::new(
            "web",
            "h",
            "",
            Some(&format!("a\nb{}", "é".repeat(MAX_ERROR))),
        );
        let e = r.error.unwrap();
        assert!(
            e.len() <= MAX_ERROR && e.len() > MAX_ERROR - 2,
            "{}",
            e.len()
        );
        assert!(e.starts_with("a b"));
        assert!(
            Report::parse_line(&Report::new("w", "h", "", Some(&e)).to_line())
                .unwrap()
                .is_ok()
        );
    }
}
