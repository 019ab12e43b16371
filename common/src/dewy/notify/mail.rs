//! `mail://` / `smtp://` (spec dewy.md 7.3): the URL grammar with its `MAIL_*` fallbacks, and
//! the plain-text mails Dewy sends.
//!
//! Differences from Dewy, all on input Dewy mishandles:
//! - `user:password@` in the URL is refused with an error saying where credentials go. Dewy
//!   ignores it silently, and the password would sit in every log line that shows the URL.
//! - Port 0 or above 65535 is refused at start (Dewy fails at each send).
//! - Errors never quote the URL (it may hold `?password=`).

use super::HookResult;
use super::slack::strip_raw;
use crate::dewy::goquery::{self, Kind, Value};
use crate::goflag::format_duration;

pub const DEFAULT_PORT: u16 = 587;
/// The port where TLS starts before SMTP (implicit TLS); every other port uses STARTTLS.
pub const IMPLICIT_TLS_PORT: u16 = 465;
pub const DEFAULT_SUBJECT: &str = "Dewy Notification";

/// A parsed `mail://` URL with the environment fallbacks applied.
#[derive(Clone, PartialEq, Eq)]
pub struct MailConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub from: String,
    /// One address or a comma-separated list.
    pub to: String,
    pub subject: String,
    /// Parsed for compatibility; it changes nothing, as in Dewy (TLS is always used when the
    /// server offers it).
    pub tls: bool,
    pub quiet: bool,
}

impl std::fmt::Debug for MailConfig {
    // Keeps the password out of any `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("tls", &self.tls)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl MailConfig {
    /// Parses `mail://…` or `smtp://…`. `env` looks up `MAIL_USERNAME`, `MAIL_PASSWORD` and
    /// `MAIL_FROM` for what the URL leaves empty.
    pub fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<MailConfig, String> {
        let Some(rest) = url
            .strip_prefix("mail://")
            .or_else(|| url.strip_prefix("smtp://"))
        else {
            return Err("not a mail:// or smtp:// URL".into());
        };
        let raw = format!("smtp://{rest}");
        let u = goquery::parse(&raw).map_err(|e| strip_raw(&e, &raw))?;
        if u.userinfo.is_some() {
            return Err("credentials in the URL (user:password@) are not read: use ?username=&password= or MAIL_USERNAME and MAIL_PASSWORD".into());
        }
        let (host, port) = split_host_port(&u.host);
        let mut cfg = MailConfig {
            host: host.to_string(),
            port: DEFAULT_PORT,
            username: String::new(),
            password: String::new(),
            from: String::new(),
            to: String::new(),
            subject: DEFAULT_SUBJECT.into(),
            tls: true,
            quiet: false,
        };
        let mut port_text = port.map(str::to_string);
        let fields = [
            ("host", Kind::Str),
            ("port", Kind::Str),
            ("username", Kind::Str),
            ("password", Kind::Str),
            ("from", Kind::Str),
            ("to", Kind::Str),
            ("subject", Kind::Str),
            ("tls", Kind::Bool),
            ("quiet", Kind::Bool),
        ];
        for (name, value) in goquery::decode(&u.query, &fields)? {
            match (name, value) {
                ("host", Value::Str(s)) => cfg.host = s,
                ("port", Value::Str(s)) => port_text = Some(s),
                ("username", Value::Str(s)) => cfg.username = s,
                ("password", Value::Str(s)) => cfg.password = s,
                ("from", Value::Str(s)) => cfg.from = s,
                ("to", Value::Str(s)) => cfg.to = s,
                ("subject", Value::Str(s)) => cfg.subject = s,
                ("tls", Value::Bool(b)) => cfg.tls = b,
                ("quiet", Value::Bool(b)) => cfg.quiet = b,
                _ => {}
            }
        }
        if let Some(p) = port_text {
            cfg.port = match p.parse::<u64>() {
                Ok(n) if (1..=u64::from(u16::MAX)).contains(&n) => n as u16,
                Ok(_) => return Err(format!("invalid port: {p}")),
                Err(_) => return Err("schema: error converting value for \"port\"".into()),
            };
        }
        let fallback = |v: &mut String, key: &str| {
            if v.is_empty() {
                *v = env(key).unwrap_or_default();
            }
        };
        fallback(&mut cfg.username, "MAIL_USERNAME");
        fallback(&mut cfg.password, "MAIL_PASSWORD");
        fallback(&mut cfg.from, "MAIL_FROM");
        let path = u.path.strip_prefix('/').unwrap_or(&u.path);
        if !path.is_empty() {
            cfg.to = path.to_string();
        }
        if cfg.from.is_empty() {
            cfg.from = cfg.username.clone();
        }
        let required = [
            (
                &cfg.host,
                "mail host is required (mail://<host>/ or ?host=)",
            ),
            (
                &cfg.username,
                "mail username is required (?username= or MAIL_USERNAME)",
            ),
            (
                &cfg.password,
                "mail password is required (?password= or MAIL_PASSWORD)",
            ),
            (
                &cfg.from,
                "mail from address is required (?from=, MAIL_FROM or the username)",
            ),
            (
                &cfg.to,
                "mail to address is required (mail://<host>/<to> or ?to=)",
            ),
        ];
        if let Some((_, why)) = required.iter().find(|(v, _)| v.is_empty()) {
            return Err((*why).to_string());
        }
        Ok(cfg)
    }
}

/// Go's `URL.Hostname()` and `URL.Port()`.
fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((name, rest)) => (name, rest.strip_prefix(':').filter(|p| !p.is_empty())),
            None => (inner, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port).filter(|p| !p.is_empty())),
        None => (host, None),
    }
}

/// Whether credentials may cross an unencrypted connection to `host`: only to this machine,
/// the rule Go's `smtp.PlainAuth` applies (Dewy's library refuses elsewhere).
pub fn plaintext_auth_allowed(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where a mail was sent from, for its footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub hostname: String,
    /// The user's full name (GECOS), as Go's `user.Current().Name`.
    pub user: String,
    pub cwd: String,
}

fn footer(o: &Origin) -> String {
    format!(
        "Host: {}\nUser: {}\nWorking dir: {}\n\n--\nDewy: https://github.com/linyows/dewy",
        o.hostname, o.user, o.cwd
    )
}

/// The body of an ordinary message.
pub fn message_body(msg: &str, o: &Origin) -> String {
    format!("{msg}\n\n{}", footer(o))
}

/// The subject and body of a hook result.
pub fn hook_mail(r: &HookResult, o: &Origin) -> (String, String) {
    let status = if r.success { "SUCCESS" } else { "FAILED" };
    let kind = r.kind.title();
    let subject = format!("Dewy {kind} Hook {status}");
    let mut body = format!(
        "{kind} Hook {status}\n\nCommand: {}\nExit Code: {}\nDuration: {}\n\n",
        r.command,
        r.exit_code,
        format_duration(r.duration)
    );
    if !r.stdout.is_empty() {
        body.push_str(&format!("STDOUT:\n{}\n\n", r.stdout));
    }
    if !r.stderr.is_empty() {
        body.push_str(&format!("STDERR:\n{}\n\n", r.stderr));
    }
    body.push_str(&footer(o));
    (subject, body)
}

/// Go's `user.Current().Name` from `/etc/passwd` text: the GECOS field of `uid` up to its
/// first comma; `None` when the user has no entry.
pub fn passwd_full_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[2].parse::<u32>().ok()? != uid {
            return None;
        }
        Some(f[4].split(',').next().unwrap_or("").to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::dewy::notify::HookKind;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn p(url: &str) -> MailConfig {
        MailConfig::parse(url, &env(&[])).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn full_url() {
        let c = p(
            "mail://smtp.example.com:2525/ops@example.com?username=bot&password=s3cret&from=dewy@example.com&subject=Deploys&quiet=true&tls=false",
        );
        assert_eq!(c.host, "smtp.example.com");
        assert_eq!(c.port, 2525);
        assert_eq!(c.to, "ops@example.com");
        assert_eq!(c.username, "bot");
        assert_eq!(c.password, "s3cret");
        assert_eq!(c.from, "dewy@example.com");
        assert_eq!(c.subject, "Deploys");
        assert!(c.quiet && !c.tls);
    }

    #[test]
    fn defaults_and_env() {
        let e = env(&[("MAIL_USERNAME", "u@example.com"), ("MAIL_PASSWORD", "pw")]);
        let c = MailConfig::parse("smtp://mx.example.com/ops@example.com", &e).unwrap();
        assert_eq!(c.port, 587);
        assert_eq!(c.subject, "Dewy Notification");
        assert_eq!(c.from, "u@example.com");
        assert!(c.tls && !c.quiet);
        // The URL wins over the environment; MAIL_FROM over the username.
        let e = env(&[
            ("MAIL_USERNAME", "envuser"),
            ("MAIL_PASSWORD", "envpw"),
            ("MAIL_FROM", "from@example.com"),
        ]);
        let c = MailConfig::parse("mail://mx/ops@example.com?username=urluser", &e).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str(), c.from.as_str()),
            ("urluser", "envpw", "from@example.com")
        );
    }

    #[test]
    fn query_host_port_to_and_path_precedence() {
        let c = p(
            "mail://?host=mx.example.com&port=465&to=a@example.com&username=u&password=p&from=f@example.com",
        );
        assert_eq!((c.host.as_str(), c.port), ("mx.example.com", 465));
        assert_eq!(c.to, "a@example.com");
        let c = p("mail://mx/b@example.com?to=a@example.com&username=u&password=p");
        assert_eq!(c.to, "b@example.com");
        let c = p("mail://[::1]:25/b@example.com?username=u&password=p");
        assert_eq!((c.host.as_str(), c.port), ("::1", 25));
    }

    #[test]
    fn required_fields_are_named() {
        let err = |url: &str| MailConfig::parse(url, &env(&[])).unwrap_err();
        assert!(err("mail:///a@x?username=u&password=p").starts_with("mail host is required"));
        assert!(err("mail://mx/a@x?password=p").starts_with("mail username is required"));
        assert!(err("mail://mx/a@x?username=u").starts_with("mail password is required"));
        assert!(err("mail://mx?username=u&password=p").starts_with("mail to address is required"));
        assert_eq!(err("mail://mx/a@x?user=u"), "schema: invalid path \"user\"");
        assert_eq!(
            err("mail://mx:x/a@x?username=u&password=p"),
            "invalid port \":x\" after host"
        );
        assert_eq!(
            err("mail://mx/a@x?port=abc&username=u&password=p"),
            "schema: error converting value for \"port\""
        );
        assert_eq!(
            err("mail://mx:0/a@x?username=u&password=p"),
            "invalid port: 0"
        );
        assert_eq!(
            err("mail://mx:70000/a@x?username=u&password=p"),
            "invalid port: 70000"
        );
    }

    #[test]
    fn userinfo_is_refused_without_echoing_it() {
        let e = MailConfig::parse("mail://bob:hunter2@mx/a@x", &env(&[])).unwrap_err();
        assert!(e.contains("?username=&password="), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // A parse error does not quote the URL either.
        let e = MailConfig::parse("mail://mx/a@x?password=hunter2%zz", &env(&[])).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            !format!("{:?}", p("mail://mx/a@x?username=u&password=hunter2")).contains("hunter2")
        );
    }

    #[test]
    fn plaintext_auth_only_to_loopback() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(plaintext_auth_allowed(h), "{h}");
        }
        for h in ["mx.example.com", "10.0.0.1", "localhost.example.com", "::2"] {
            assert!(!plaintext_auth_allowed(h), "{h}");
        }
    }

    fn origin() -> Origin {
        Origin {
            hostname: "web-1".into(),
            user: "Deploy Bot".into(),
            cwd: "/srv/app".into(),
        }
    }

    #[test]
    fn message_body_footer() {
        assert_eq!(
            message_body("Server started for `v1`", &origin()),
            "Server started for `v1`\n\nHost: web-1\nUser: Deploy Bot\nWorking dir: /srv/app\n\n--\nDewy: https://github.com/linyows/dewy"
        );
    }

    #[test]
    fn hook_mails() {
        let mut r = HookResult {
            kind: HookKind::BeforeDeploy,
            command: "./check".into(),
            stdout: "fine\n".into(),
            stderr: "warn".into(),
            exit_code: 0,
            duration: Duration::from_millis(20),
            success: true,
        };
        let (subject, body) = hook_mail(&r, &origin());
        assert_eq!(subject, "Dewy Before Deploy Hook SUCCESS");
        assert_eq!(
            body,
            "Before Deploy Hook SUCCESS\n\nCommand: ./check\nExit Code: 0\nDuration: 20ms\n\nSTDOUT:\nfine\n\n\nSTDERR:\nwarn\n\nHost: web-1\nUser: Deploy Bot\nWorking dir: /srv/app\n\n--\nDewy: https://github.com/linyows/dewy"
        );
        r.success = false;
        r.exit_code = 1;
        r.stdout.clear();
        r.stderr.clear();
        let (subject, body) = hook_mail(&r, &origin());
        assert_eq!(subject, "Dewy Before Deploy Hook FAILED");
        assert!(body.starts_with("Before Deploy Hook FAILED\n\nCommand: ./check\nExit Code: 1\nDuration: 20ms\n\nHost: web-1\n"), "{body}");
    }

    #[test]
    fn full_name_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      bad line\n\
                      deploy:x:1000:1000:Deploy Bot,Room 1,,:/home/deploy:/bin/sh\n\
                      empty:x:1001:1001::/home/e:/bin/sh\n";
        assert_eq!(passwd_full_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(
            passwd_full_name(passwd, 1000).as_deref(),
            Some("Deploy Bot")
        );
        assert_eq!(passwd_full_name(passwd, 1001).as_deref(), Some(""));
        assert_eq!(passwd_full_name(passwd, 4242), None);
    }
}
