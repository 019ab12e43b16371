//! Command line: the original's flags with their defaults and help texts (spec 3.1), Go-style
//! parsing, plus our additions.

use std::path::PathBuf;
use std::time::Duration;

use common::goflag::{Flag, FlagError, FlagSet, GoDuration, Kind};

use crate::unpack::{Limits, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: String,
    pub cleanold: bool,
    pub dir: PathBuf,
    /// Accepted fingerprints (`-fp a,b` for rotation); empty with `-known-hosts`.
    pub fingerprints: Vec<String>,
    pub known_hosts: Option<PathBuf>,
    pub key: PathBuf,
    pub name: String,
    pub poll: Duration,
    /// Longest wait between polls after errors (Dewy's `--poll-backoff-max`; no flag of
    /// ours).
    pub max_backoff: Duration,
    /// `None` when `-script ""`.
    pub script: Option<String>,
    pub script_timeout: Option<Duration>,
    pub state: PathBuf,
    pub verbose: bool,
    pub once: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    pub io_timeout: Duration,
    pub policy: Policy,
    /// `-registry URL` (`ssh://`, or a Dewy registry); `None` means `-addr`/`-name`.
    pub registry: Option<String>,
    /// `-slot`: follow only releases of this slot (empty: any).
    pub slot: String,
    /// `-cache URL`: Dewy's cache backend (`file:///dir`, `s3://…`, `gs://…`, with
    /// `?registry-ttl=D` to share registry results); empty = the file cache in Dewy's
    /// default directory. Checked at parse time.
    pub cache: String,
    /// The host name reported to the registry after each poll (`status`); `None` with
    /// `-no-report`. Empty: the hostname, found when the agent starts.
    pub report_as: Option<String>,
}

pub fn flagset() -> FlagSet {
    let d = Limits::default();
    let s = |name, default, usage| Flag {
        name,
        kind: Kind::String { default },
        usage,
    };
    let b = |name, usage| Flag {
        name,
        kind: Kind::Bool,
        usage,
    };
    let dur = |name, secs, usage| Flag {
        name,
        kind: Kind::Duration {
            default: Duration::from_secs(secs),
        },
        usage,
    };
    let int = |name, default: u64, usage| Flag {
        name,
        kind: Kind::Int {
            default: default as i64,
        },
        usage,
    };
    FlagSet::new(
        "deploy-agent",
        vec![
            s("addr", "localhost:2022", "registry address (host:port)"),
            b(
                "allow-special",
                "as root, create device nodes and FIFOs and keep setuid/setgid/sticky bits and owners from layers",
            ),
            s(
                "cache",
                "",
                "with -registry: Dewy's cache `URL`: file:///dir, s3://<region>/<bucket>[/<prefix>][?endpoint=URL] or gs://<bucket>[/<prefix>], with ?registry-ttl=D to share registry results (default: the file cache)",
            ),
            b(
                "cleanold",
                "remove unreferenced unpacked files after successful switch",
            ),
            s(
                "dir",
                ".",
                "directory to store downloaded and unpacked files",
            ),
            s("fp", "", "registry server key fingerprint"),
            dur(
                "io-timeout",
                60,
                "give up on a registry request that makes no progress for this long",
            ),
            s("key", "id_ecdsa", "ssh private key to use"),
            s(
                "known-hosts",
                "",
                "OpenSSH known_hosts `file` to check the registry key with (instead of -fp)",
            ),
            s("log-format", "text", "log format: text or json"),
            s(
                "log-level",
                "info",
                "log level: error, warn, info, debug or trace",
            ),
            int(
                "max-entries",
                d.max_entries,
                "most archive entries a configuration may unpack",
            ),
            int(
                "max-ratio",
                d.max_ratio,
                "largest expansion ratio of a compressed layer",
            ),
            int(
                "max-unpack-bytes",
                d.max_bytes,
                "most bytes a configuration may unpack to",
            ),
            s("name", "", "configuration to track"),
            b(
                "no-report",
                "do not report to the registry what runs here (its status command)",
            ),
            b("once", "run one poll cycle and exit with its status"),
            dur("poll", 30, "registry poll interval"),
            s(
                "registry",
                "",
                "registry `URL`: ssh://host:port/<configuration>, ghr://, s3://, gs://, img:// or grpc:// (instead of -addr and -name); Dewy's command line: deploy-agent server|assets|container --help",
            ),
            s(
                "report-as",
                "",
                "host `name` the registry's status command lists this agent under (default: the hostname)",
            ),
            s("script", "./deploy.sh", "script to run on deploys"),
            dur(
                "script-timeout",
                600,
                "stop the deploy script after this long (0: no limit)",
            ),
            s(
                "slot",
                "",
                "with -registry: deploy only releases of this slot (blue/green)",
            ),
            s("state", "state.json", "file to save state to"),
            b("v", "be more chatty about what's happening"),
        ],
    )
}

/// What `main` should do with the command line.
pub enum Parse {
    Run(Box<Options>),
    /// Print to stderr and exit with the code (Go: 0 for `-h`, 2 for errors).
    Exit(String, u8),
}

pub fn parse(args: &[String]) -> Parse {
    let set = flagset();
    let p = match set.parse(args) {
        Ok(p) => p,
        Err(FlagError::Help) => return Parse::Exit(set.usage(), 0),
        Err(FlagError::Message(m)) => return Parse::Exit(format!("{m}\n{}", set.usage()), 2),
    };
    let dur = |name| match p.duration(&set, name) {
        GoDuration::Positive(d) => Some(d),
        GoDuration::NonPositive => None,
    };
    let log_format = match p.string(&set, "log-format").as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Parse::Exit(
                format!(
                    "invalid value {other:?} for flag -log-format: expecting text or json\n{}",
                    set.usage()
                ),
                2,
            );
        }
    };
    let positive = |name| u64::try_from(p.int(&set, name)).ok().filter(|v| *v > 0);
    let (Some(max_entries), Some(max_ratio), Some(max_bytes)) = (
        positive("max-entries"),
        positive("max-ratio"),
        positive("max-unpack-bytes"),
    ) else {
        return Parse::Exit(format!("limits must be positive\n{}", set.usage()), 2);
    };
    let script = p.string(&set, "script");
    let known_hosts = p.string(&set, "known-hosts");
    let registry = p.string(&set, "registry");
    let cache = p.string(&set, "cache");
    if let Err(e) = sources::cache::config::parse(&cache) {
        return Parse::Exit(
            format!(
                "invalid value {cache:?} for flag -cache: {e}\n{}",
                set.usage()
            ),
            2,
        );
    }
    Parse::Run(Box::new(Options {
        addr: p.string(&set, "addr"),
        cleanold: p.bool("cleanold"),
        dir: PathBuf::from(p.string(&set, "dir")),
        fingerprints: p
            .string(&set, "fp")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        known_hosts: (!known_hosts.is_empty()).then(|| PathBuf::from(known_hosts)),
        key: PathBuf::from(p.string(&set, "key")),
        name: p.string(&set, "name"),
        // The original turned a negative interval into 15 s; zero would spin, so it does too.
        poll: dur("poll").unwrap_or(Duration::from_secs(15)),
        max_backoff: crate::dewy::DEFAULT_MAX_BACKOFF,
        script: (!script.is_empty()).then_some(script),
        script_timeout: dur("script-timeout"),
        state: PathBuf::from(p.string(&set, "state")),
        verbose: p.bool("v"),
        once: p.bool("once"),
        log_format,
        log_level: p.string(&set, "log-level"),
        io_timeout: dur("io-timeout").unwrap_or(Duration::from_secs(60)),
        policy: Policy {
            limits: Limits {
                max_bytes,
                max_entries,
                max_ratio,
            },
            allow_special: p.bool("allow-special"),
            links_inside: false,
        },
        registry: (!registry.is_empty()).then_some(registry),
        slot: p.string(&set, "slot"),
        cache,
        report_as: (!p.bool("no-report")).then(|| p.string(&set, "report-as")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
            Parse::Run(o) => *o,
            Parse::Exit(m, c) => panic!("exit {c}: {m}"),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let o = run(&[]);
        assert_eq!(o.addr, "localhost:2022");
        assert_eq!(o.dir, PathBuf::from("."));
        assert_eq!(o.key, PathBuf::from("id_ecdsa"));
        assert_eq!(o.poll, Duration::from_secs(30));
        assert_eq!(o.script.as_deref(), Some("./deploy.sh"));
        assert_eq!(o.state, PathBuf::from("state.json"));
        assert_eq!(o.script_timeout, Some(Duration::from_secs(600)));
        assert!(!o.cleanold && !o.verbose && !o.once);
        assert!(o.fingerprints.is_empty());
    }

    #[test]
    fn go_style_values() {
        let o = run(&[
            "-poll=-1s",
            "--script",
            "",
            "-fp",
            "SHA256:a,SHA256:b",
            "-v",
            "-name=x",
        ]);
        assert_eq!(o.poll, Duration::from_secs(15));
        assert_eq!(o.script, None);
        assert_eq!(o.fingerprints, vec!["SHA256:a", "SHA256:b"]);
        assert!(o.verbose);
        assert_eq!(o.name, "x");
    }

    #[test]
    fn help_lists_original_flags_with_their_texts() {
        let usage = flagset().usage();
        assert!(usage.starts_with("Usage of deploy-agent:\n"));
        for line in [
            "  -addr string\n    \tregistry address (host:port) (default \"localhost:2022\")\n",
            "  -cleanold\n    \tremove unreferenced unpacked files after successful switch\n",
            "  -poll duration\n    \tregistry poll interval (default 30s)\n",
            "  -v\tbe more chatty about what's happening\n",
        ] {
            assert!(usage.contains(line), "missing {line:?} in\n{usage}");
        }
        assert!(matches!(parse(&["-h".to_string()]), Parse::Exit(_, 0)));
        assert!(matches!(parse(&["-nope".to_string()]), Parse::Exit(_, 2)));
    }

    #[test]
    fn cache_url_is_checked() {
        assert_eq!(run(&[]).cache, "");
        assert_eq!(
            run(&["-cache", "gs://b/p?registry-ttl=30s"]).cache,
            "gs://b/p?registry-ttl=30s"
        );
        match parse(&["-cache".to_string(), "redis://h".to_string()]) {
            Parse::Exit(m, 2) => assert!(
                m.starts_with("invalid value \"redis://h\" for flag -cache: unsupported cache scheme \"redis\"; supported schemes: file, s3, gs\n"),
                "{m}"
            ),
            _ => panic!("accepted redis://"),
        }
    }
}
