//! Command-line flags: the original's six with their defaults (spec 1.1), Go style, plus ours.

use std::path::PathBuf;
use std::time::Duration;

use common::goflag::{Flag, FlagError, FlagSet, GoDuration, Kind};

/// What the program was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub addr: String,
    pub dir: PathBuf,
    pub opauth: PathBuf,
    pub srvauth: PathBuf,
    /// `-viewauth`: authorized_keys of viewers (read-only console, no uploads); none if empty.
    pub viewauth: Option<PathBuf>,
    /// Versions to keep per component; `< 1` turns pruning off.
    pub maxver: i64,
    /// Idle limit of a connection; `None` for `-deadline 0` (no limit at all, fixing B6).
    pub deadline: Option<Duration>,
    pub maxconn: usize,
    pub maxupload: u64,
    /// History entries kept per configuration; 0 keeps all.
    pub maxhist: usize,
    /// Audit records kept; 0 keeps all.
    pub maxaudit: usize,
    pub minfree: u64,
    pub shutdown_timeout: Duration,
    pub log_json: bool,
    pub fsck: bool,
}

/// Why the program should stop right after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Print to stderr, exit with this status (usage: 0 for `-h`, 2 for a bad flag).
    Usage { text: String, status: u8 },
}

pub fn flag_set() -> FlagSet {
    FlagSet::new(
        "deploy-registry",
        vec![
            Flag {
                name: "addr",
                kind: Kind::String {
                    default: "localhost:2022",
                },
                usage: "address to listen",
            },
            Flag {
                name: "deadline",
                kind: Kind::Duration {
                    default: Duration::from_secs(30 * 60),
                },
                usage: "max.idle time of a connection; 0 means no limit",
            },
            Flag {
                name: "dir",
                kind: Kind::String {
                    default: "/var/lib/deploy-registry",
                },
                usage: "data directory",
            },
            Flag {
                name: "maxver",
                kind: Kind::Int { default: 10 },
                usage: "max.number of component versions to keep",
            },
            Flag {
                name: "opauth",
                kind: Kind::String {
                    default: "/etc/deploy-registry/operator.keys",
                },
                usage: "authorized_keys for operators",
            },
            Flag {
                name: "srvauth",
                kind: Kind::String {
                    default: "/etc/deploy-registry/service.keys",
                },
                usage: "authorized_keys for services",
            },
            Flag {
                name: "viewauth",
                kind: Kind::String { default: "" },
                usage: "authorized_keys for viewers: the console's read-only commands, no uploads (default: none)",
            },
            Flag {
                name: "maxconn",
                kind: Kind::Int { default: 256 },
                usage: "max.number of concurrent connections",
            },
            Flag {
                name: "maxupload",
                kind: Kind::Int { default: 64 << 30 },
                usage: "max.size of one uploaded file, bytes",
            },
            Flag {
                name: "maxhist",
                kind: Kind::Int { default: 20 },
                usage: "max.number of saved states kept per configuration (history, rollback); 0 keeps all",
            },
            Flag {
                name: "minfree",
                kind: Kind::Int { default: 1 << 30 },
                usage: "free space of the data directory's disk that uploads leave alone, bytes; 0: none",
            },
            Flag {
                name: "maxaudit",
                kind: Kind::Int { default: 100_000 },
                usage: "max.number of audit records kept; 0 keeps all",
            },
            Flag {
                name: "shutdown-timeout",
                kind: Kind::Duration {
                    default: Duration::from_secs(30),
                },
                usage: "on SIGTERM/SIGINT, how long running commands and transfers may take to finish",
            },
            Flag {
                name: "log-format",
                kind: Kind::String { default: "text" },
                usage: "log format: text or json",
            },
            Flag {
                name: "fsck",
                kind: Kind::Bool,
                usage: "check the data directory (re-hash every blob), print the report and exit",
            },
        ],
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Options, Exit> {
    let set = flag_set();
    let usage_error = |message: String| Exit::Usage {
        text: format!("{message}\n{}", set.usage()),
        status: 2,
    };
    let parsed = match set.parse(args) {
        Ok(p) => p,
        Err(FlagError::Help) => {
            return Err(Exit::Usage {
                text: set.usage(),
                status: 0,
            });
        }
        Err(FlagError::Message(m)) => return Err(usage_error(m)),
    };
    if let Some(extra) = parsed.rest.first() {
        return Err(usage_error(format!("unexpected argument {extra:?}")));
    }
    let log_json = match parsed.string(&set, "log-format").as_str() {
        "text" => false,
        "json" => true,
        other => {
            return Err(usage_error(format!(
                "invalid value {other:?} for flag -log-format: want text or json"
            )));
        }
    };
    let positive = |name: &str| -> Result<u64, Exit> {
        let v = parsed.int(&set, name);
        u64::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
            usage_error(format!(
                "invalid value \"{v}\" for flag -{name}: must be positive"
            ))
        })
    };
    let maxconn = usize::try_from(positive("maxconn")?).unwrap_or(usize::MAX);
    let maxupload = positive("maxupload")?;
    let non_negative = |name: &str| -> Result<usize, Exit> {
        let v = parsed.int(&set, name);
        usize::try_from(v).map_err(|_| {
            usage_error(format!(
                "invalid value \"{v}\" for flag -{name}: must not be negative"
            ))
        })
    };
    let maxhist = non_negative("maxhist")?;
    let maxaudit = non_negative("maxaudit")?;
    let minfree = non_negative("minfree")? as u64;
    let shutdown_timeout = match parsed.duration(&set, "shutdown-timeout") {
        GoDuration::Positive(d) => d,
        GoDuration::NonPositive => Duration::ZERO,
    };
    let deadline = match parsed.duration(&set, "deadline") {
        GoDuration::Positive(d) => Some(d),
        GoDuration::NonPositive => None,
    };
    Ok(Options {
        addr: parsed.string(&set, "addr"),
        dir: parsed.string(&set, "dir").into(),
        opauth: parsed.string(&set, "opauth").into(),
        srvauth: parsed.string(&set, "srvauth").into(),
        viewauth: Some(parsed.string(&set, "viewauth"))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        maxver: parsed.int(&set, "maxver"),
        deadline,
        maxconn,
        maxupload,
        maxhist,
        maxaudit,
        minfree,
        shutdown_timeout,
        log_json,
        fsck: parsed.bool("fsck"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_are_the_originals() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.addr, "localhost:2022");
        assert_eq!(o.dir, PathBuf::from("/var/lib/deploy-registry"));
        assert_eq!(
            o.opauth,
            PathBuf::from("/etc/deploy-registry/operator.keys")
        );
        assert_eq!(
            o.srvauth,
            PathBuf::from("/etc/deploy-registry/service.keys")
        );
        assert_eq!(o.maxver, 10);
        assert_eq!(o.deadline, Some(Duration::from_secs(1800)));
        assert_eq!(o.maxconn, 256);
        assert_eq!(o.maxupload, 64 << 30);
        assert_eq!((o.maxhist, o.maxaudit), (20, 100_000));
        assert_eq!(o.minfree, 1 << 30);
        assert_eq!(o.shutdown_timeout, Duration::from_secs(30));
        assert!(!o.log_json && !o.fsck);
    }

    #[test]
    fn go_spellings() {
        for line in ["-dir x", "-dir=x", "--dir x", "--dir=x"] {
            assert_eq!(
                parse(&args(line)).unwrap().dir,
                PathBuf::from("x"),
                "{line}"
            );
        }
        let o = parse(&args(
            "-deadline 0 -maxver 0 -fsck -log-format json -maxconn 3 -deadline=1h30m",
        ))
        .unwrap();
        assert_eq!(o.deadline, Some(Duration::from_secs(5400)));
        assert_eq!(
            (o.maxver, o.fsck, o.log_json, o.maxconn),
            (0, true, true, 3)
        );
        assert_eq!(parse(&args("-deadline 0")).unwrap().deadline, None);
    }

    #[test]
    fn help_and_errors() {
        let Err(Exit::Usage { text, status }) = parse(&args("-h")) else {
            panic!()
        };
        assert_eq!(status, 0);
        assert!(text.starts_with("Usage of deploy-registry:\n  -addr string\n    \taddress to listen (default \"localhost:2022\")\n"), "{text}");
        assert!(
            text.contains(
                "  -maxver int\n    \tmax.number of component versions to keep (default 10)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  -fsck\n"), "{text}");
        let Err(Exit::Usage { text, status }) = parse(&args("-nope")) else {
            panic!()
        };
        assert_eq!(status, 2);
        assert!(
            text.starts_with("flag provided but not defined: -nope\nUsage of deploy-registry:\n"),
            "{text}"
        );
        assert!(matches!(
            parse(&args("-maxver x")),
            Err(Exit::Usage { status: 2, .. })
        ));
        assert!(matches!(
            parse(&args("-log-format xml")),
            Err(Exit::Usage { status: 2, .. })
        ));
        assert!(matches!(
            parse(&args("-maxconn 0")),
            Err(Exit::Usage { status: 2, .. })
        ));
        assert!(matches!(
            parse(&args("stray")),
            Err(Exit::Usage { status: 2, .. })
        ));
        let Err(Exit::Usage { text, status: 2 }) = parse(&args("-maxhist -1")) else {
            panic!("a negative -maxhist must be refused");
        };
        assert!(
            text.starts_with("invalid value \"-1\" for flag -maxhist: must not be negative\n"),
            "{text}"
        );
        let o = parse(&args("-maxhist 0 -maxaudit=5")).unwrap();
        assert_eq!((o.maxhist, o.maxaudit), (0, 5));
    }
}
