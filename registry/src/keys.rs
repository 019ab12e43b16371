//! Authorized keys: the operator and service key files (and the viewer file of `-viewauth`,
//! read-only operators: see [`Role`]), their options, and live reloading.
//!
//! Differences from deploy-tools (spec 1.5, A6, A9):
//! - comments (`#`) and blank lines are allowed; any other line that does not parse is an error
//!   naming the file and the line number (at startup: fatal; on reload: the old keys stay);
//! - the options `from="pattern-list"` and `expiry-time="timespec"` are enforced;
//! - on operator keys, `command="console line"` is enforced as sshd does: whatever the client
//!   asks to run (a command, a shell), that line runs instead, and SFTP is refused; `no-pty`
//!   and `restrict` (unless followed by `pty`) refuse a terminal (see [`Restrictions`]);
//! - `configs="pattern-list"` limits a key to the configurations whose names match (see
//!   [`Restrictions::may_see`]): on a service key, what the agent holding it sees (and their
//!   layers' blobs) and may report on; on an operator key, what its console shows and changes
//!   (`console::Access::Limited`). The original let every agent key read everything and every
//!   operator delete everything (A7);
//! - the files are re-read on SIGHUP, and on login when their mtime or size changed (checked at
//!   most every [`RECHECK_INTERVAL`]).
//!
//! Options that hold anyway are accepted ([`HOLD_ANYWAY`]: the registry never forwards
//! anything, runs no user rc and sets no environment); `command=` is accepted and ignored on
//! service keys, whose role runs no command (it would only forbid the SFTP tree, all that role
//! has). A `cert-authority` line authorizes nobody (we take no certificates: logged, skipped).
//! Any other option (`principals=`, `verify-required`, a misspelling) makes the line an
//! error, as sshd refuses it: a restriction must not be dropped silently.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use russh::keys::ssh_key::PublicKey;
use time::OffsetDateTime;

/// How often a login may stat the key files to notice an edit.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The user name that selects the service key file and role.
pub const SERVICE_USER: &str = "deploy-agent";

/// One usable line of an authorized_keys file.
#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    pub key: PublicKey,
    /// `from="..."`: OpenSSH pattern list the client address must match.
    pub from: Option<String>,
    /// `expiry-time="..."`: the key is refused from this instant on.
    pub expiry: Option<OffsetDateTime>,
    pub restrictions: Restrictions,
    /// 1-based line number, for logs.
    pub line: usize,
}

/// What a key's options forbid a session logged in with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// `command="..."`: the only console line the key may run.
    pub command: Option<String>,
    /// `no-pty`, or `restrict` not followed by `pty`.
    pub no_pty: bool,
    /// `configs="pattern-list"` (service and operator keys): the configurations the key may
    /// see.
    pub configs: Option<String>,
}

impl Restrictions {
    /// Whether the key may see configuration `name`: every one without `configs=`; else
    /// those that match the list: comma-separated wildcard patterns (`*`, `?`), a match of
    /// one negated with `!` denying outright, as in `from=`.
    pub fn may_see(&self, name: &str) -> bool {
        self.configs
            .as_deref()
            .is_none_or(|patterns| pattern_list(patterns, |p| wildcard_match(p, name)))
    }
}

/// sshd's key options that hold here without doing anything: the registry forwards nothing,
/// runs no user rc, sets no environment, and checks no FIDO touch flag.
const HOLD_ANYWAY: &[&str] = &[
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-x11-forwarding",
    "no-user-rc",
    "port-forwarding",
    "agent-forwarding",
    "x11-forwarding",
    "user-rc",
    "environment",
    "permitopen",
    "permitlisten",
    "tunnel",
    "no-touch-required",
];

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The original's text (spec 1.5).
    #[error("file {:?} should have at least one key", .0.display().to_string())]
    Empty(PathBuf),
}

/// Parses the text of an authorized_keys file.
pub fn parse_key_file(path: &Path, text: &str) -> Result<Vec<AuthorizedKey>, KeyFileError> {
    let mut keys = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| KeyFileError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        let (opts, key) = split_entry(line).map_err(bad)?;
        let mut from = None;
        let mut expiry = None;
        let mut restrictions = Restrictions::default();
        let mut cert_authority = false;
        // In order, as sshd reads them: `restrict` clears the permissions that a later `pty`
        // gives back.
        for opt in opts.iter() {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(unquote(v))),
                None => (opt.as_str(), None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("from", Some(v)) => from = Some(v),
                ("expiry-time", Some(v)) => {
                    expiry = Some(
                        parse_expiry(&v)
                            .ok_or_else(|| bad(format!("invalid expiry-time {v:?}")))?,
                    )
                }
                ("command", Some(v)) => restrictions.command = Some(v),
                ("configs", Some(v)) => restrictions.configs = Some(v),
                ("no-pty" | "restrict", None) => restrictions.no_pty = true,
                ("pty", None) => restrictions.no_pty = false,
                ("from" | "expiry-time" | "command" | "configs", None) => {
                    return Err(bad(format!("option {name} needs a value")));
                }
                ("cert-authority", None) => cert_authority = true,
                (known, _) if HOLD_ANYWAY.contains(&known) => {}
                // As sshd, which refuses such a line: a misspelt restriction must not leave
                // the key unrestricted, and one we cannot enforce must not be ignored.
                _ => return Err(bad(format!("unsupported option {name:?}"))),
            }
        }
        if cert_authority {
            // A certificate authority's key signs certificates, which we do not take; it does
            // not log in itself.
            tracing::warn!(file = %path.display(), line = index + 1, "cert-authority key ignored: certificates are not supported");
            continue;
        }
        keys.push(AuthorizedKey {
            key,
            from,
            expiry,
            restrictions,
            line: index + 1,
        });
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty(path.to_path_buf()));
    }
    Ok(keys)
}

/// Reads and parses a key file.
pub fn read_key_file(path: &Path) -> Result<Vec<AuthorizedKey>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key_file(path, &text)
}

/// `[options] keytype base64 [comment]`, the options as sshd splits them. (ssh-key's
/// `Entry` parser misreads an options field followed by a key without comment, and refuses the
/// `\"` that sshd allows inside a quoted value, as in `command="showconf -name \"a b\""`.)
fn split_entry(line: &str) -> Result<(Vec<String>, PublicKey), String> {
    let first = match PublicKey::from_openssh(line) {
        Ok(key) => return Ok((Vec::new(), key)),
        Err(e) => e,
    };
    let Some((opts, rest)) = split_options(line) else {
        return Err(format!("not a public key ({first})"));
    };
    let key = PublicKey::from_openssh(rest.trim_start())
        .map_err(|e| format!("not a public key ({e})"))?;
    Ok((options(opts)?, key))
}

/// Splits the options field off: blanks inside double quotes belong to a value.
fn split_options(line: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((&line[..i], &line[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The comma-separated options: commas inside double quotes belong to a value, and `\"` is a
/// quote inside one.
fn options(field: &str) -> Result<Vec<String>, String> {
    let mut all = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in field.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                all.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    all.push(current);
    if quoted {
        return Err("invalid options (unbalanced quotes)".into());
    }
    if all.iter().any(String::is_empty) {
        return Err("invalid options (an empty option)".into());
    }
    Ok(all)
}

fn unquote(v: &str) -> String {
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    v.replace("\\\"", "\"")
}

/// OpenSSH `expiry-time`: `YYYYMMDD[HHMM[SS]]`, optionally ending in `Z`. OpenSSH reads a time
/// without `Z` in the server's local zone; servers run in UTC here, so both are UTC.
pub fn parse_expiry(s: &str) -> Option<OffsetDateTime> {
    let digits = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 12 | 14) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|p| p.parse::<u32>().ok());
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8..10)?, num(10..12)?, 0),
        _ => (num(8..10)?, num(10..12)?, num(12..14)?),
    };
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// OpenSSH `from=` semantics (`match_host_and_ip`): a comma-separated list of patterns, each
/// a wildcard pattern (`*`, `?`) or a CIDR block, optionally negated with `!`. A matching
/// negated pattern denies outright; otherwise any positive match allows. Without reverse DNS
/// (OpenSSH's default `UseDNS no`) the host name is the address itself.
pub fn from_matches(patterns: &str, addr: IpAddr) -> bool {
    let ip = addr.to_canonical().to_string();
    pattern_list(patterns, |pattern| {
        if pattern.contains('/') {
            cidr_contains(pattern, addr.to_canonical())
        } else {
            wildcard_match(&pattern.to_ascii_lowercase(), &ip)
        }
    })
}

/// An OpenSSH pattern list (`match_pattern_list`): comma-separated patterns, each optionally
/// negated with `!`. A negated pattern that `hits` denies outright; otherwise any positive
/// one that hits allows.
fn pattern_list(patterns: &str, hits: impl Fn(&str) -> bool) -> bool {
    let mut allowed = false;
    for pattern in patterns.split(',').map(str::trim) {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if pattern.is_empty() || !hits(pattern) {
            continue;
        }
        if negated {
            return false;
        }
        allowed = true;
    }
    allowed
}

/// `*` matches any run of characters, `?` exactly one (OpenSSH `match_pattern`).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion blow-up.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn cidr_contains(block: &str, addr: IpAddr) -> bool {
    let Some((net, bits)) = block.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The role a login gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    /// A key of the `-viewauth` file: the console's read-only commands, no uploads.
    Viewer,
    Service,
}

impl Role {
    /// Whether the role gets the console (exec, shell, pty).
    pub fn has_console(self) -> bool {
        matches!(self, Role::Operator | Role::Viewer)
    }
}

/// Why a key was refused, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    From(String),
    Expired,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unknown => f.write_str("key not authorized"),
            Refusal::From(p) => write!(f, "address not allowed by from={p:?}"),
            Refusal::Expired => f.write_str("key expired (expiry-time)"),
        }
    }
}

/// A key file and what was last read from it.
struct Loaded {
    path: PathBuf,
    role: Role,
    keys: Arc<Vec<AuthorizedKey>>,
    stamp: Option<(SystemTime, u64)>,
}

impl Loaded {
    /// Reads the file of `role`'s keys.
    fn read(path: &Path, role: Role) -> Result<Loaded, KeyFileError> {
        let stamp = stamp(path);
        let keys = read_key_file(path)?;
        // A viewer sees every configuration: on its key the option would be a restriction
        // that nothing enforces.
        if let Some(k) = keys.iter().find(|k| k.restrictions.configs.is_some())
            && role == Role::Viewer
        {
            return Err(KeyFileError::Line {
                path: path.to_path_buf(),
                line: k.line,
                reason: "option configs= is for service and operator keys only".to_string(),
            });
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            role,
            keys: Arc::new(keys),
            stamp,
        })
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The key files, shared by every connection, reloadable in place.
pub struct Keyring {
    operator: RwLock<Loaded>,
    service: RwLock<Loaded>,
    /// `-viewauth`, when given.
    viewer: Option<RwLock<Loaded>>,
    last_check: Mutex<Instant>,
}

impl Keyring {
    /// Reads the operator file, then the service file (the original's order), then the viewer
    /// file if there is one.
    pub fn load(
        operator: &Path,
        service: &Path,
        viewer: Option<&Path>,
    ) -> Result<Keyring, KeyFileError> {
        Ok(Keyring {
            operator: RwLock::new(Loaded::read(operator, Role::Operator)?),
            service: RwLock::new(Loaded::read(service, Role::Service)?),
            viewer: viewer
                .map(|v| Loaded::read(v, Role::Viewer))
                .transpose()?
                .map(RwLock::new),
            last_check: Mutex::new(Instant::now()),
        })
    }

    fn slots(&self) -> impl Iterator<Item = &RwLock<Loaded>> {
        [&self.operator, &self.service]
            .into_iter()
            .chain(self.viewer.as_ref())
    }

    /// The role `user` logs in for with `key`: the service role for `deploy-agent`; else the
    /// operator role, or the viewer role for a key listed only in the viewer file.
    pub fn role_for(&self, user: &str, key: &PublicKey) -> Role {
        if user == SERVICE_USER {
            Role::Service
        } else if !self.is_listed(Role::Operator, key) && self.is_listed(Role::Viewer, key) {
            Role::Viewer
        } else {
            Role::Operator
        }
    }

    /// Re-reads the files. A file that fails keeps its previous keys; the error is logged.
    pub fn reload(&self) {
        for slot in self.slots() {
            let (path, role) = {
                let loaded = read_lock(slot);
                (loaded.path.clone(), loaded.role)
            };
            match Loaded::read(&path, role) {
                Ok(fresh) => {
                    tracing::info!(file = %path.display(), keys = fresh.keys.len(), "reloaded authorized keys");
                    *slot.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                }
                Err(err) => tracing::error!("keeping previous keys: {err}"),
            }
        }
    }

    /// Reloads the files whose mtime or size changed, at most once per [`RECHECK_INTERVAL`].
    pub fn reload_if_changed(&self) {
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < RECHECK_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        let changed = self.slots().any(|slot| {
            let loaded = read_lock(slot);
            stamp(&loaded.path) != loaded.stamp
        });
        if changed {
            self.reload();
        }
    }

    fn keys(&self, role: Role) -> Arc<Vec<AuthorizedKey>> {
        let slot = match role {
            Role::Operator => &self.operator,
            Role::Service => &self.service,
            Role::Viewer => match &self.viewer {
                Some(slot) => slot,
                None => return Arc::new(Vec::new()),
            },
        };
        read_lock(slot).keys.clone()
    }

    /// Whether `key` is listed for `role` at all (the cheap pre-signature check).
    pub fn is_listed(&self, role: Role, key: &PublicKey) -> bool {
        self.keys(role)
            .iter()
            .any(|k| k.key.key_data() == key.key_data())
    }

    /// Full check after the signature was verified: listed, address allowed, not expired.
    /// Returns the line of the matching entry and what its options forbid. Compares
    /// `key_data()` because `PublicKey ==` also compares comments.
    pub fn check(
        &self,
        role: Role,
        key: &PublicKey,
        addr: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<(usize, Restrictions), Refusal> {
        let keys = self.keys(role);
        let mut refusal = Refusal::Unknown;
        for entry in keys.iter().filter(|k| k.key.key_data() == key.key_data()) {
            if let Some(patterns) = &entry.from
                && !addr.is_some_and(|a| from_matches(patterns, a))
            {
                refusal = Refusal::From(patterns.clone());
                continue;
            }
            if entry.expiry.is_some_and(|e| now >= e) {
                refusal = Refusal::Expired;
                continue;
            }
            return Ok((entry.line, entry.restrictions.clone()));
        }
        Err(refusal)
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMh2LMPYmSdDTSAhDD6tZBdFhiu78ubEM8bRmjHzfw0g";

    fn p() -> &'static Path {
        Path::new("/etc/op.keys")
    }

    #[test]
    fn comments_blank_lines_and_options() {
        let text = format!(
            "# operators\n\n   \n{ED} alice@laptop\nfrom=\"10.0.0.0/8,!10.1.2.3\",no-pty {ED}\nexpiry-time=\"20300101\" {ED} bob\n"
        );
        let keys = parse_key_file(p(), &text).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].line, 4);
        assert_eq!(keys[0].from, None);
        assert_eq!(keys[1].from.as_deref(), Some("10.0.0.0/8,!10.1.2.3"));
        assert_eq!(keys[2].expiry, parse_expiry("20300101000000Z"));
        assert_eq!(
            keys[1].restrictions,
            Restrictions {
                no_pty: true,
                ..Restrictions::default()
            }
        );
        assert_eq!(keys[0].restrictions, Restrictions::default());
    }

    #[test]
    fn command_no_pty_restrict_and_pty() {
        let text = format!(
            "command=\"showconf -name \\\"web\\\"\" {ED}\nrestrict {ED}\nrestrict,pty,command=\"components\" {ED}\npty,restrict {ED}\n"
        );
        let keys = parse_key_file(p(), &text).unwrap();
        let got: Vec<_> = keys
            .iter()
            .map(|k| (k.restrictions.command.as_deref(), k.restrictions.no_pty))
            .collect();
        assert_eq!(
            got,
            [
                (Some("showconf -name \"web\""), false),
                (None, true),
                (Some("components"), false),
                (None, true),
            ]
        );
        let text = format!("command {ED}\n");
        assert!(matches!(
            parse_key_file(p(), &text),
            Err(KeyFileError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn unknown_options_refuse_the_line_and_cert_authorities_are_skipped() {
        let text = format!(
            "no-port-forwarding,no-X11-forwarding,environment=\"A=b\" {ED} a comment with spaces\ncert-authority {ED}\n"
        );
        let keys = parse_key_file(p(), &text).unwrap();
        assert_eq!(keys.len(), 1, "the CA line authorizes nobody");
        assert_eq!(
            (keys[0].line, keys[0].restrictions.clone()),
            (1, Restrictions::default())
        );
        for opt in ["no-ptty", "principals=\"alice\"", "verify-required"] {
            let err = parse_key_file(p(), &format!("{ED}\n{opt} {ED}\n")).unwrap_err();
            assert!(
                matches!(&err, KeyFileError::Line { line: 2, reason, .. } if reason.starts_with("unsupported option")),
                "{opt}: {err}"
            );
        }
        let err = parse_key_file(p(), &format!("cert-authority {ED}\n")).unwrap_err();
        assert!(matches!(err, KeyFileError::Empty(_)), "{err}");
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let text = format!("{ED}\n# ok\nnot a key at all\n");
        let err = parse_key_file(p(), &text).unwrap_err();
        assert!(matches!(err, KeyFileError::Line { line: 3, .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("\"/etc/op.keys\" line 3: "),
            "{err}"
        );
        let text = format!("expiry-time=\"2030\" {ED}\n");
        assert!(matches!(
            parse_key_file(p(), &text),
            Err(KeyFileError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn empty_file_is_the_original_error() {
        let err = parse_key_file(p(), "# nobody\n\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "file \"/etc/op.keys\" should have at least one key"
        );
    }

    #[test]
    fn patterns() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.*", "127.0.0.9", true),
            ("127.0.0.?", "127.0.0.10", false),
            ("10.*,127.*", "127.0.0.1", true),
            ("*,!127.0.0.1", "127.0.0.1", false),
            ("*,!127.0.0.1", "127.0.0.2", true),
            ("!127.0.0.1", "127.0.0.2", false),
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
            ("192.168.1.1", "::ffff:192.168.1.1", true),
            ("", "127.0.0.1", false),
        ];
        for (pattern, addr, want) in cases {
            assert_eq!(from_matches(pattern, v4(addr)), want, "{pattern} vs {addr}");
        }
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn expiry_forms() {
        assert!(parse_expiry("20301231").is_some());
        assert!(parse_expiry("203012312359").is_some());
        assert!(parse_expiry("20301231235959Z").is_some());
        assert!(parse_expiry("20301331").is_none());
        assert!(parse_expiry("2030123").is_none());
    }

    #[test]
    fn configs_limits_service_and_operator_keys_and_is_refused_on_viewer_keys() {
        let text = format!("configs=\"web*,!web-secret,db\" {ED}\n{ED}\n");
        let keys = parse_key_file(p(), &text).unwrap();
        let limited = &keys[0].restrictions;
        for (name, seen) in [
            ("web", true),
            ("web-eu", true),
            ("web-secret", false),
            ("db", true),
            ("db2", false),
            ("api", false),
        ] {
            assert_eq!(limited.may_see(name), seen, "{name}");
        }
        assert!(keys[1].restrictions.may_see("anything"));
        assert!(parse_key_file(p(), &format!("configs {ED}\n")).is_err());

        let dir = tempfile::tempdir().unwrap();
        let (op, srv, view) = (
            dir.path().join("op"),
            dir.path().join("srv"),
            dir.path().join("view"),
        );
        std::fs::write(&srv, &text).unwrap();
        std::fs::write(&op, format!("{ED}\n")).unwrap();
        std::fs::write(&view, format!("\nconfigs=\"web\" {ED}\n")).unwrap();
        assert!(Keyring::load(&op, &srv, None).is_ok());
        assert!(Keyring::load(&srv, &srv, None).is_ok());
        let err = Keyring::load(&op, &srv, Some(&view))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Line { line: 2, reason, .. } if reason.contains("service and operator keys only")),
            "{err}"
        );
    }

    #[test]
    fn check_compares_key_data_and_enforces_options() {
        let dir = tempfile::tempdir().unwrap();
        let op = dir.path().join("op");
        let srv = dir.path().join("srv");
        std::fs::write(&op, format!("from=\"10.*\" {ED} with comment\n")).unwrap();
        std::fs::write(&srv, format!("expiry-time=\"20000101\" {ED}\n")).unwrap();
        let ring = Keyring::load(&op, &srv, None).unwrap();
        let wire = PublicKey::from_openssh(ED).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(ring.is_listed(Role::Operator, &wire));
        assert_eq!(
            ring.check(
                Role::Operator,
                &wire,
                Some("10.1.1.1".parse().unwrap()),
                now
            ),
            Ok((1, Restrictions::default()))
        );
        assert!(matches!(
            ring.check(
                Role::Operator,
                &wire,
                Some("127.0.0.1".parse().unwrap()),
                now
            ),
            Err(Refusal::From(_))
        ));
        assert_eq!(
            ring.check(Role::Service, &wire, None, now),
            Err(Refusal::Expired)
        );
        // Without a viewer file nobody is a viewer; with one, a key listed only there is.
        assert_eq!(ring.role_for("op", &wire), Role::Operator);
        assert_eq!(ring.role_for("deploy-agent", &wire), Role::Service);
        let other =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let view = dir.path().join("view");
        std::fs::write(&view, format!("{other}\n{ED}\n")).unwrap();
        let with_viewers = Keyring::load(&op, &srv, Some(&view)).unwrap();
        let viewer = PublicKey::from_openssh(other).unwrap();
        assert_eq!(with_viewers.role_for("anyone", &viewer), Role::Viewer);
        assert_eq!(
            with_viewers.role_for("op", &wire),
            Role::Operator,
            "listed in both: the operator file wins"
        );
        assert_eq!(
            with_viewers.role_for("deploy-agent", &viewer),
            Role::Service
        );
        assert!(!ring.is_listed(Role::Viewer, &viewer));
        // A reload that fails keeps the old keys.
        std::fs::write(&op, "garbage\n").unwrap();
        ring.reload();
        assert!(ring.is_listed(Role::Operator, &wire));
        std::fs::write(&op, "# none\n").unwrap();
        ring.reload();
        assert!(ring.is_listed(Role::Operator, &wire));
    }
}
