//! Dewy's command line (spec dewy.md 8.1, 9.2, 9.4): `deploy-agent server|assets|container
//! [flags] [-- args]` with go-flags semantics, the `-p` grammars of server and container
//! mode, and the extra `docker run` arguments container mode refuses.
//!
//! go-flags rules kept here: `--long value`, `--long=value`, `-s value`, `-svalue`, `-s=value`,
//! clustered short booleans (`-hv`), options anywhere among the positional words, and
//! everything after `--` passed through. Positional words after the command word join `rest`,
//! as go-flags hands them to Dewy in the same list as the words after `--`.

use std::collections::BTreeSet;

use super::report::Command;

/// What the first word asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Mode(Command),
    /// `container list`: print the running containers from the admin API.
    ContainerList,
}

/// Dewy's flags, parsed. Durations are seconds as Dewy takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DewyArgs {
    pub word: Word,
    /// `--registry` (required except for `container list`).
    pub registry: String,
    /// `--interval/-i` seconds, default 10, always > 0.
    pub interval: u64,
    /// `--port/-p` values as given (grammar depends on the mode: [`server_ports`],
    /// [`container_ports`]).
    pub ports: Vec<String>,
    /// `--cache/-c` URL; empty = the file cache.
    pub cache: String,
    /// `--notifier` URL; empty = none.
    pub notifier: String,
    /// `--log-level/-l`, normalised to `debug|info|warn|error` (unknown → `info`, as Dewy).
    pub log_level: String,
    /// `--log-format/-f`: `text` or `json`.
    pub log_format: String,
    pub before_deploy_hook: String,
    pub after_deploy_hook: String,
    /// `--slot/-s`.
    pub slot: String,
    /// `--calver`.
    pub calver: String,
    pub telemetry: bool,
    /// `--admin-port`, default 17539.
    pub admin_port: u16,
    /// `--name/-n` (container app name).
    pub name: String,
    /// `--replicas`, default 1.
    pub replicas: u32,
    /// `--health-path` (container; server too, as Dewy after #490).
    pub health_path: String,
    /// `--health-timeout` seconds, default 30.
    pub health_timeout: u64,
    /// `--drain-time` seconds, default 30.
    pub drain_time: u64,
    /// `--runtime`: `docker` or `podman` (default docker).
    pub runtime: String,
    /// `--proxy-idle-timeout` seconds, default 300, 0 = off.
    pub proxy_idle_timeout: u64,
    /// `--poll-backoff-max` seconds (Dewy #481): the longest wait between polls after errors;
    /// 0 turns backoff off (Dewy's default). Not given: our default, backoff on up to 15
    /// minutes.
    pub poll_backoff_max: Option<u64>,
    /// `--cmd` (repeatable): the container's command.
    pub cmd: Vec<String>,
    /// Everything after `--`.
    pub rest: Vec<String>,
}

/// The result of [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<DewyArgs>),
    /// Print `text` (to stdout when `stdout`, else stderr) and exit with `code`.
    Exit {
        text: String,
        stdout: bool,
        code: u8,
    },
}

/// Whether `word` is one of Dewy's command words (so `main` routes the command line here).
pub fn is_command_word(word: &str) -> bool {
    matches!(word, "server" | "assets" | "container")
}

/// The smallest interval Dewy's scheduler accepts; 0 makes it fail and later panic.
const MIN_INTERVAL: u64 = 1;
pub const DEFAULT_INTERVAL: u64 = 10;
pub const DEFAULT_ADMIN_PORT: u16 = 17539;
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 30;
pub const DEFAULT_DRAIN_TIME: u64 = 30;
pub const DEFAULT_PROXY_IDLE_TIMEOUT: u64 = 300;
/// Dewy's `parsePortRange` limit: `B - A` at most this.
const MAX_RANGE_SPAN: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Takes a value; the last one given wins (go-flags for scalar fields).
    Value,
    /// Takes a value; every one is kept (go-flags for slice fields).
    List,
    /// Takes no value.
    Bool,
}

struct Flag {
    long: &'static str,
    short: Option<char>,
    kind: Kind,
}

const fn flag(long: &'static str, short: Option<char>, kind: Kind) -> Flag {
    Flag { long, short, kind }
}

/// Dewy v2.19's flag set and `--poll-backoff-max` (#481, after 2.19), plus the OTLP pair
/// which is recognised only to be refused clearly.
const FLAGS: &[Flag] = &[
    flag("registry", None, Kind::Value),
    flag("interval", Some('i'), Kind::Value),
    flag("poll-backoff-max", None, Kind::Value),
    flag("port", Some('p'), Kind::List),
    flag("cache", Some('c'), Kind::Value),
    flag("notifier", None, Kind::Value),
    flag("log-level", Some('l'), Kind::Value),
    flag("log-format", Some('f'), Kind::Value),
    flag("before-deploy-hook", None, Kind::Value),
    flag("after-deploy-hook", None, Kind::Value),
    flag("slot", Some('s'), Kind::Value),
    flag("calver", None, Kind::Value),
    flag("telemetry", None, Kind::Bool),
    flag("otlp-endpoint", None, Kind::Value),
    flag("otlp-insecure", None, Kind::Bool),
    flag("admin-port", None, Kind::Value),
    flag("name", Some('n'), Kind::Value),
    flag("replicas", None, Kind::Value),
    flag("health-path", None, Kind::Value),
    flag("health-timeout", None, Kind::Value),
    flag("drain-time", None, Kind::Value),
    flag("runtime", None, Kind::Value),
    flag("proxy-idle-timeout", None, Kind::Value),
    flag("cmd", None, Kind::List),
    flag("help", Some('h'), Kind::Bool),
    flag("version", Some('v'), Kind::Bool),
];

/// How go-flags names a flag in its messages: `-i, --interval` or `--registry`.
fn display(f: &Flag) -> String {
    match f.short {
        Some(s) => format!("-{s}, --{}", f.long),
        None => format!("--{}", f.long),
    }
}

/// The flags seen, by long name, in order.
#[derive(Default)]
struct Raw {
    values: Vec<(&'static str, String)>,
    bools: BTreeSet<&'static str>,
}

impl Raw {
    fn last(&self, long: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(l, _)| *l == long)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, long: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(l, _)| *l == long)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn str(&self, long: &str) -> String {
        self.last(long).unwrap_or_default().to_string()
    }

    fn has(&self, long: &str) -> bool {
        self.bools.contains(long)
    }
}

/// A value that looks like another option is a missing value to go-flags, except a negative
/// number (which the number check then refuses with its own text).
fn looks_like_option(v: &str) -> bool {
    v.len() > 1 && v.starts_with('-') && v[1..].parse::<i64>().is_err()
}

/// Splits the command line into flags, positional words and the words after `--`.
fn scan(args: &[String]) -> Result<(Raw, Vec<String>), String> {
    let mut raw = Raw::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let f = FLAGS
                .iter()
                .find(|f| f.long == name)
                .ok_or_else(|| format!("unknown flag `{name}'"))?;
            take(&mut raw, f, inline, args, &mut i)?;
        } else if arg.len() > 1 && arg.starts_with('-') {
            let body = &arg[1..];
            for (at, c) in body.char_indices() {
                let f = FLAGS
                    .iter()
                    .find(|f| f.short == Some(c))
                    .ok_or_else(|| format!("unknown flag `{c}'"))?;
                let tail = &body[at + c.len_utf8()..];
                if f.kind == Kind::Bool {
                    // go-flags splits `-h=x` only right after the first letter.
                    if at == 0 && tail.starts_with('=') {
                        return Err(format!(
                            "bool flag `{}' cannot have an argument",
                            display(f)
                        ));
                    }
                    raw.bools.insert(f.long);
                    continue;
                }
                let inline = match tail {
                    "" => None,
                    t if at == 0 && t.starts_with('=') => Some(&t[1..]),
                    t => Some(t),
                };
                take(&mut raw, f, inline, args, &mut i)?;
                break;
            }
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((raw, positional))
}

fn take(
    raw: &mut Raw,
    f: &'static Flag,
    inline: Option<&str>,
    args: &[String],
    i: &mut usize,
) -> Result<(), String> {
    if f.kind == Kind::Bool {
        if inline.is_some() {
            return Err(format!(
                "bool flag `{}' cannot have an argument",
                display(f)
            ));
        }
        raw.bools.insert(f.long);
        return Ok(());
    }
    let value = match inline {
        Some(v) => v.to_string(),
        None => match args.get(*i) {
            Some(v) if !looks_like_option(v) && v != "--" => {
                *i += 1;
                v.clone()
            }
            _ => return Err(format!("expected argument for flag `{}'", display(f))),
        },
    };
    raw.values.push((f.long, value));
    Ok(())
}

/// A number flag: absent → `default`, else a whole number that fits `T`.
fn number<T: std::str::FromStr>(raw: &Raw, long: &str, default: T) -> Result<T, String> {
    let Some(v) = raw.last(long) else {
        return Ok(default);
    };
    v.trim().parse::<T>().map_err(|_| {
        let f = FLAGS.iter().find(|f| f.long == long);
        let name = f.map(display).unwrap_or_else(|| format!("--{long}"));
        format!("invalid argument for flag `{name}' (expected a non-negative integer): {v}")
    })
}

fn err(text: impl std::fmt::Display) -> Parsed {
    Parsed::Exit {
        text: format!("Error: {text}\n"),
        stdout: false,
        code: 1,
    }
}

/// Dewy's slog levels: anything it does not know is INFO.
fn log_level(v: Option<&str>) -> String {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => "error".into(),
        Some(l @ ("debug" | "info" | "warn" | "error")) => l.into(),
        Some(_) => "info".into(),
    }
}

/// Parses `args` (without the program name; the first element is the command word).
pub fn parse(args: &[String], version: &str) -> Parsed {
    match parse_inner(args, version) {
        Ok(p) => p,
        Err(text) => err(text),
    }
}

fn parse_inner(args: &[String], version: &str) -> Result<Parsed, String> {
    let (raw, positional) = scan(args)?;
    if raw.has("help") {
        return Ok(Parsed::Exit {
            text: usage(),
            stdout: true,
            code: 1,
        });
    }
    if raw.has("version") {
        return Ok(Parsed::Exit {
            text: format!("deploy-agent version: {version}\n"),
            stdout: true,
            code: 0,
        });
    }
    let mut words = positional.into_iter();
    let word = match words.next().as_deref() {
        Some("server") => Word::Mode(Command::Server),
        Some("assets") => Word::Mode(Command::Assets),
        Some("container") => Word::Mode(Command::Container),
        _ => return Err("command is not available".into()),
    };
    let mut rest: Vec<String> = words.collect();
    let word =
        if word == Word::Mode(Command::Container) && rest.first().is_some_and(|w| w == "list") {
            rest.remove(0);
            Word::ContainerList
        } else {
            word
        };
    for refused in ["otlp-endpoint", "otlp-insecure"] {
        if raw.has(refused) || raw.last(refused).is_some() {
            return Err(format!(
                "--{refused} is not supported by deploy-agent (use --telemetry and scrape /metrics on the admin API)"
            ));
        }
    }

    // Dewy treats 0 as "not given" for these.
    let admin_port = match number(&raw, "admin-port", DEFAULT_ADMIN_PORT)? {
        0 => DEFAULT_ADMIN_PORT,
        p => p,
    };
    let registry = raw.str("registry");
    if word != Word::ContainerList && registry.is_empty() {
        return Err("--registry is not set".into());
    }
    let interval = number(&raw, "interval", DEFAULT_INTERVAL)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "--interval must be at least {MIN_INTERVAL} second (got {interval})"
        ));
    }
    let log_format = raw.last("log-format").unwrap_or("text").to_string();
    if log_format != "text" && log_format != "json" {
        return Err(format!(
            "--log-format must be text or json (got '{log_format}')"
        ));
    }
    let runtime = raw.last("runtime").unwrap_or("docker").to_string();
    if runtime != "docker" && runtime != "podman" {
        return Err(format!(
            "--runtime must be docker or podman (got '{runtime}')"
        ));
    }
    let ports = raw.all("port");
    match word {
        Word::Mode(Command::Server) => {
            let (parsed, _) =
                server_ports(&ports).map_err(|e| format!("invalid port specification: {e}"))?;
            // Dewy (#490) probes the lowest port, so a probe needs one.
            if parsed.is_empty() && !raw.str("health-path").is_empty() {
                return Err("--health-path requires --port".into());
            }
        }
        Word::Mode(Command::Assets) if !raw.str("health-path").is_empty() => {
            return Err("--health-path is not supported by the assets command".into());
        }
        Word::Mode(Command::Container) => {
            container_ports(&ports).map_err(|e| format!("failed to parse port mappings: {e}"))?;
            check_extra_args(&rest)?;
        }
        _ => {}
    }
    let or = |v: u64, default: u64| if v == 0 { default } else { v };
    Ok(Parsed::Run(Box::new(DewyArgs {
        word,
        registry,
        interval,
        ports,
        cache: raw.str("cache"),
        notifier: raw.str("notifier"),
        log_level: log_level(raw.last("log-level")),
        log_format,
        before_deploy_hook: raw.str("before-deploy-hook"),
        after_deploy_hook: raw.str("after-deploy-hook"),
        slot: raw.str("slot"),
        calver: raw.str("calver"),
        telemetry: raw.has("telemetry"),
        admin_port,
        name: raw.str("name"),
        replicas: number(&raw, "replicas", 1u32)?.max(1),
        health_path: raw.str("health-path"),
        health_timeout: or(
            number(&raw, "health-timeout", DEFAULT_HEALTH_TIMEOUT)?,
            DEFAULT_HEALTH_TIMEOUT,
        ),
        drain_time: or(
            number(&raw, "drain-time", DEFAULT_DRAIN_TIME)?,
            DEFAULT_DRAIN_TIME,
        ),
        runtime,
        proxy_idle_timeout: number(&raw, "proxy-idle-timeout", DEFAULT_PROXY_IDLE_TIMEOUT)?,
        poll_backoff_max: match raw.last("poll-backoff-max") {
            Some(_) => Some(number(&raw, "poll-backoff-max", 0u64)?),
            None => None,
        },
        cmd: raw.all("cmd"),
        rest,
    })))
}

/// The `--help` text (Dewy prints its help on stdout and exits 1).
pub fn usage() -> String {
    "\
Usage: deploy-agent server|assets|container [options] [-- args]
       deploy-agent container list [--admin-port N]

deploy-agent keeps an application up to date from a registry, with the command line of
linyows/dewy.

Commands:
  server           Keep the app server up to date; after -- comes the server's command
  assets           Keep assets up to date
  container        Keep a container image up to date with rolling, zero-downtime deploys;
                   after -- come extra `docker run` arguments
  container list   Show the containers a running container-mode agent manages

General Options:
  --registry=URL                   Registry URL: ghr://owner/repo, s3://region/bucket/prefix,
                                   gs://bucket/prefix, img://registry/repo, grpc://host:port
                                   (required)
  -i, --interval=seconds           Polling interval in seconds (default: 10, at least 1)
  --poll-backoff-max=seconds       Longest wait between polls after errors; 0 = no backoff
                                   (default: 900)
  -c, --cache=URL                  Cache backend URL, e.g. file:///path (default: local file)
  -s, --slot=NAME                  Deploy only tags whose build metadata is this slot
  --calver=FORMAT                  CalVer format of the tags, e.g. YYYY.0M.0D.MICRO
  --notifier=URL                   Notifier URL, e.g. slack://channel, mail://smtp:port/to
  -l, --log-level=(debug|info|warn|error)
                                   Log level (default: error; unknown values mean info)
  -f, --log-format=(text|json)     Log format on stderr (default: text)
  --before-deploy-hook=COMMAND     Shell command to run before a deploy
  --after-deploy-hook=COMMAND      Shell command to run after a successful deploy
  --health-path=PATH               HTTP path to probe after a deploy, e.g. /health
  --health-timeout=seconds         Health check budget in seconds (default: 30)
  --telemetry                      Serve Prometheus metrics on the admin API's /metrics
  --admin-port=N                   Admin API port, or the next free of the 9 after it
                                   (default: 17539)
  -h, --help                       Show this help and exit
  -v, --version                    Print the version and exit

Server Command Options:
  -p, --port=PORTS                 TCP ports to listen on: comma lists of N or A-B
                                   (repeatable)

Container Command Options:
  -p, --port=PROXY[:CONTAINER]     Proxy port, and the container's port unless it is
                                   detected from the image (repeatable, required)
  -n, --name=NAME                  Application name (default: from the registry URL)
  --replicas=N                     Number of replicas (default: 1)
  --cmd=ARG                        Command and arguments for the container (repeatable)
  --drain-time=seconds             Drain time after the traffic switch (default: 30)
  --runtime=(docker|podman)        Container runtime (default: docker)
  --proxy-idle-timeout=seconds     Proxy idle timeout in seconds (default: 300, 0 = off)
"
    .to_string()
}

/// One port number of a `-p` value, 1..65535.
fn port_number(text: &str) -> Result<u16, String> {
    let t = text.trim();
    if t.contains(':') {
        return Err(format!(
            "invalid port number: {t} (host:port is not accepted, only port numbers)"
        ));
    }
    let n: i64 = t
        .parse()
        .map_err(|_| format!("invalid port number: '{t}'"))?;
    if !(1..=65535).contains(&n) {
        return Err(format!("port number must be between 1 and 65535, got {n}"));
    }
    Ok(n as u16)
}

/// Server mode's `-p` values: comma lists of `N` or `A-B` (inclusive, B-A ≤ 100), 1..65535,
/// deduplicated and sorted. Returns the ports and warning texts (ports below 1024).
pub fn server_ports(values: &[String]) -> Result<(Vec<u16>, Vec<String>), String> {
    let mut ports = BTreeSet::new();
    for value in values {
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.contains(':') {
                port_number(item)?;
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    if b.contains('-') {
                        return Err(format!("invalid port range format: {item}"));
                    }
                    let a = port_number(a).map_err(|e| format!("range {item}: {e}"))?;
                    let b = port_number(b).map_err(|e| format!("range {item}: {e}"))?;
                    if a > b {
                        return Err(format!(
                            "start port ({a}) cannot be greater than end port ({b}) in {item}"
                        ));
                    }
                    if u32::from(b - a) > MAX_RANGE_SPAN {
                        return Err(format!(
                            "port range {item} too large ({} ports), maximum allowed is {MAX_RANGE_SPAN}",
                            u32::from(b - a) + 1
                        ));
                    }
                    ports.extend(a..=b);
                }
                None => {
                    ports.insert(port_number(item)?);
                }
            }
        }
    }
    let warnings = ports
        .iter()
        .filter(|p| **p < 1024)
        .map(|p| format!("Using privileged port {p} may require root privileges"))
        .collect();
    Ok((ports.into_iter().collect(), warnings))
}

/// One container-mode `-p proxy[:container]` mapping; `container == 0` means "detect from
/// the image's exposed ports".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub proxy: u16,
    pub container: u16,
}

/// Container mode's `-p` values (required, no lists or ranges, no duplicate proxy port).
pub fn container_ports(values: &[String]) -> Result<Vec<PortMapping>, String> {
    let mut out: Vec<PortMapping> = Vec::new();
    for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let mapping = match value.split_once(':') {
            Some((p, c)) => {
                if c.contains(':') {
                    return Err(format!(
                        "invalid port mapping format: {value} (expected proxy:container)"
                    ));
                }
                PortMapping {
                    proxy: port_number(p).map_err(|e| format!("proxy port in {value}: {e}"))?,
                    container: port_number(c)
                        .map_err(|e| format!("container port in {value}: {e}"))?,
                }
            }
            None => PortMapping {
                proxy: port_number(value).map_err(|e| format!("port {value}: {e}"))?,
                container: 0,
            },
        };
        if out.iter().any(|m| m.proxy == mapping.proxy) {
            return Err(format!("duplicate proxy port: {}", mapping.proxy));
        }
        out.push(mapping);
    }
    if out.is_empty() {
        return Err("--port option is required for container command".into());
    }
    Ok(out)
}

/// `docker run` options that would break what Dewy manages: detaching, terminals, published
/// ports (the proxy owns them), its labels, and privilege changes.
const FORBIDDEN_LONG: &[&str] = &[
    "detach",
    "interactive",
    "tty",
    "publish",
    "label-file",
    "privileged",
    "pid",
    "cap-add",
    "security-opt",
    "device",
    "userns",
    "cgroupns",
];

/// Refuses the extra `docker run` arguments of spec 9.4 (and `dewy.` labels).
pub fn check_extra_args(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if FORBIDDEN_LONG.contains(&name) {
                return Err(format!(
                    "extra argument {arg} is not allowed in container mode"
                ));
            }
            if name == "label" {
                let value = inline.or_else(|| args.get(i).map(String::as_str));
                check_label(arg, value)?;
            }
        } else if let Some(body) = arg.strip_prefix('-') {
            let Some(first) = body.chars().next() else {
                continue;
            };
            if matches!(first, 'd' | 'i' | 't' | 'p') {
                return Err(format!(
                    "extra argument {arg} is not allowed in container mode"
                ));
            }
            if first == 'l' {
                let value = match &body[1..] {
                    "" => args.get(i).map(String::as_str),
                    t => Some(t.strip_prefix('=').unwrap_or(t)),
                };
                check_label(arg, value)?;
            }
        }
    }
    Ok(())
}

fn check_label(arg: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.starts_with("dewy.") => Err(format!(
            "extra argument {arg}: label {v} is not allowed (labels starting with dewy. are deploy-agent's)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn run(args: &[&str]) -> DewyArgs {
        match parse(&v(args), "1.2.3") {
            Parsed::Run(a) => *a,
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    /// The stderr text of a refused command line (exit 1).
    fn error(args: &[&str]) -> String {
        match parse(&v(args), "1.2.3") {
            Parsed::Exit {
                text,
                stdout: false,
                code: 1,
            } => text,
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    const REG: &str = "--registry=ghr://o/r";

    #[test]
    fn cli_defaults() {
        let a = run(&["server", "--registry", "ghr://o/r"]);
        assert_eq!(a.word, Word::Mode(Command::Server));
        assert_eq!(a.registry, "ghr://o/r");
        assert_eq!(a.interval, 10);
        assert_eq!(a.log_level, "error");
        assert_eq!(a.log_format, "text");
        assert_eq!(a.admin_port, 17539);
        assert_eq!(a.health_timeout, 30);
        assert_eq!(a.drain_time, 30);
        assert_eq!(a.runtime, "docker");
        assert_eq!(a.proxy_idle_timeout, 300);
        assert_eq!(a.replicas, 1);
        assert!(!a.telemetry);
        assert!(a.ports.is_empty() && a.cmd.is_empty() && a.rest.is_empty());
        assert!(a.cache.is_empty() && a.notifier.is_empty() && a.slot.is_empty());
        assert_eq!(a.poll_backoff_max, None);
    }

    #[test]
    fn cli_poll_backoff_max() {
        assert_eq!(
            run(&["server", REG, "--poll-backoff-max", "300"]).poll_backoff_max,
            Some(300)
        );
        assert_eq!(
            run(&["assets", REG, "--poll-backoff-max=0"]).poll_backoff_max,
            Some(0),
            "0 is Dewy's \"off\", kept apart from not given"
        );
        assert_eq!(
            error(&["server", REG, "--poll-backoff-max", "5m"]),
            "Error: invalid argument for flag `--poll-backoff-max' (expected a non-negative integer): 5m\n"
        );
    }

    #[test]
    fn cli_long_forms_with_space_and_equals() {
        let a = run(&[
            "assets",
            "--registry",
            "s3://r/b",
            "--interval=7",
            "--cache",
            "file:///c",
            "--notifier=slack://x",
            "--log-level",
            "DeBuG",
            "--log-format=json",
            "--before-deploy-hook",
            "echo a=b",
            "--after-deploy-hook=echo c",
            "--slot=blue",
            "--calver",
            "YYYY.0M",
            "--telemetry",
            "--admin-port=18000",
        ]);
        assert_eq!(a.word, Word::Mode(Command::Assets));
        assert_eq!(a.registry, "s3://r/b");
        assert_eq!(a.interval, 7);
        assert_eq!(a.cache, "file:///c");
        assert_eq!(a.notifier, "slack://x");
        assert_eq!(a.log_level, "debug");
        assert_eq!(a.log_format, "json");
        assert_eq!(a.before_deploy_hook, "echo a=b");
        assert_eq!(a.after_deploy_hook, "echo c");
        assert_eq!(a.slot, "blue");
        assert_eq!(a.calver, "YYYY.0M");
        assert!(a.telemetry);
        assert_eq!(a.admin_port, 18000);
    }

    #[test]
    fn cli_short_forms() {
        let a = run(&[
            "server",
            REG,
            "-i",
            "10",
            "-i5",
            "-c=file:///x",
            "-lWARN",
            "-f",
            "json",
            "-s",
            "green",
            "-p",
            "8000",
            "-p8001,8002",
        ]);
        assert_eq!(a.interval, 5, "the last value wins");
        assert_eq!(a.cache, "file:///x");
        assert_eq!(a.log_level, "warn");
        assert_eq!(a.log_format, "json");
        assert_eq!(a.slot, "green");
        assert_eq!(a.ports, v(&["8000", "8001,8002"]));
        let c = run(&["container", REG, "-n", "web", "-p", "80:8080"]);
        assert_eq!(c.name, "web");
    }

    #[test]
    fn cli_clustered_short_booleans_then_value() {
        // `-vi` is --version and then -i without a value: go-flags reads the cluster in order.
        assert_eq!(
            error(&["server", REG, "-hi"]),
            "Error: expected argument for flag `-i, --interval'\n"
        );
        match parse(&v(&["server", "-vi3"]), "9") {
            Parsed::Exit { code: 0, .. } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_unknown_log_level_is_info() {
        assert_eq!(run(&["server", REG, "-l", "verbose"]).log_level, "info");
        assert_eq!(
            run(&["server", REG, "--log-level=Error"]).log_level,
            "error"
        );
    }

    #[test]
    fn cli_repeatable_port_and_cmd_and_rest() {
        let a = run(&[
            "container",
            REG,
            "--port",
            "8080:80",
            "-p=9090",
            "--cmd",
            "serve",
            "--cmd=--fast",
            "--",
            "-e",
            "A=1",
            "--name",
            "x",
        ]);
        assert_eq!(a.ports, v(&["8080:80", "9090"]));
        assert_eq!(a.cmd, v(&["serve", "--fast"]));
        assert_eq!(a.rest, v(&["-e", "A=1", "--name", "x"]));
        assert_eq!(a.name, "", "flags after -- belong to the rest");
    }

    #[test]
    fn cli_server_rest_keeps_child_flags() {
        let a = run(&[
            "server", REG, "-p", "3000", "--", "./app", "-v", "--port", "3000",
        ]);
        assert_eq!(a.rest, v(&["./app", "-v", "--port", "3000"]));
        assert_eq!(a.ports, v(&["3000"]));
    }

    #[test]
    fn cli_flags_after_the_command_word_and_before_it() {
        let a = run(&["--registry", "ghr://o/r", "-i", "3", "server"]);
        assert_eq!(a.word, Word::Mode(Command::Server));
        assert_eq!(a.interval, 3);
    }

    #[test]
    fn cli_container_list_needs_no_registry() {
        let a = run(&["container", "list"]);
        assert_eq!(a.word, Word::ContainerList);
        assert_eq!(a.admin_port, 17539);
        let a = run(&["container", "--admin-port", "18100", "list"]);
        assert_eq!(a.word, Word::ContainerList);
        assert_eq!(a.admin_port, 18100);
        // Another second word is container mode with a positional argument, as Dewy.
        assert_eq!(
            error(&["container", "ls"]),
            "Error: --registry is not set\n"
        );
    }

    #[test]
    fn cli_registry_required() {
        assert_eq!(error(&["server"]), "Error: --registry is not set\n");
        assert_eq!(
            error(&["assets", "-i", "5"]),
            "Error: --registry is not set\n"
        );
        assert_eq!(
            error(&["server", "--registry="]),
            "Error: --registry is not set\n"
        );
    }

    #[test]
    fn cli_command_not_available() {
        for args in [
            &["image", REG][..],
            &[REG][..],
            &[][..],
            &["Server", REG][..],
        ] {
            assert_eq!(error(args), "Error: command is not available\n", "{args:?}");
        }
    }

    #[test]
    fn cli_unknown_flags_are_named() {
        assert_eq!(
            error(&["server", REG, "--bogus"]),
            "Error: unknown flag `bogus'\n"
        );
        assert_eq!(
            error(&["server", REG, "--bogus=1"]),
            "Error: unknown flag `bogus'\n"
        );
        assert_eq!(error(&["server", REG, "-x"]), "Error: unknown flag `x'\n");
        // `-r` does not exist despite Dewy's docs.
        assert_eq!(
            error(&["server", "-r", "ghr://o/r"]),
            "Error: unknown flag `r'\n"
        );
        // The check runs before the command word is looked at, as go-flags does.
        assert_eq!(error(&["nope", "--bogus"]), "Error: unknown flag `bogus'\n");
    }

    #[test]
    fn cli_missing_values() {
        assert_eq!(
            error(&["server", "--registry"]),
            "Error: expected argument for flag `--registry'\n"
        );
        assert_eq!(
            error(&["server", REG, "-i"]),
            "Error: expected argument for flag `-i, --interval'\n"
        );
        assert_eq!(
            error(&["server", "--registry", "--telemetry"]),
            "Error: expected argument for flag `--registry'\n"
        );
        assert_eq!(
            error(&["server", "--registry", "--", "x"]),
            "Error: expected argument for flag `--registry'\n"
        );
    }

    #[test]
    fn cli_bool_flags_take_no_value() {
        let a = run(&["server", "--telemetry", REG]);
        assert!(a.telemetry);
        assert_eq!(
            error(&["server", REG, "--telemetry=true"]),
            "Error: bool flag `--telemetry' cannot have an argument\n"
        );
        assert_eq!(
            error(&["server", REG, "-h=1"]),
            "Error: bool flag `-h, --help' cannot have an argument\n"
        );
    }

    #[test]
    fn cli_bad_integers() {
        for (args, flag, val) in [
            (&["server", REG, "-i", "ten"][..], "-i, --interval", "ten"),
            (
                &["server", REG, "--interval=-5"][..],
                "-i, --interval",
                "-5",
            ),
            (&["server", REG, "-i", "-5"][..], "-i, --interval", "-5"),
            (
                &["server", REG, "--admin-port", "70000"][..],
                "--admin-port",
                "70000",
            ),
            (
                &["container", REG, "-p", "80", "--replicas", "x"][..],
                "--replicas",
                "x",
            ),
            (
                &["container", REG, "-p", "80", "--health-timeout=1.5"][..],
                "--health-timeout",
                "1.5",
            ),
            (
                &["container", REG, "-p", "80", "--drain-time="][..],
                "--drain-time",
                "",
            ),
            (
                &["container", REG, "-p", "80", "--proxy-idle-timeout", "5m"][..],
                "--proxy-idle-timeout",
                "5m",
            ),
        ] {
            assert_eq!(
                error(args),
                format!(
                    "Error: invalid argument for flag `{flag}' (expected a non-negative integer): {val}\n"
                ),
                "{args:?}"
            );
        }
    }

    #[test]
    fn cli_interval_zero_refused() {
        assert_eq!(
            error(&["server", REG, "--interval", "0"]),
            "Error: --interval must be at least 1 second (got 0)\n"
        );
        assert_eq!(run(&["server", REG, "-i1"]).interval, 1);
    }

    #[test]
    fn cli_zero_means_default_where_dewy_says_so() {
        let a = run(&[
            "container",
            REG,
            "-p",
            "80",
            "--admin-port=0",
            "--replicas=0",
            "--health-timeout=0",
            "--drain-time=0",
            "--proxy-idle-timeout=0",
        ]);
        assert_eq!(a.admin_port, 17539);
        assert_eq!(a.replicas, 1);
        assert_eq!(a.health_timeout, 30);
        assert_eq!(a.drain_time, 30);
        assert_eq!(a.proxy_idle_timeout, 0, "0 turns the idle timeout off");
        let b = run(&[
            "container",
            REG,
            "-p",
            "80",
            "--replicas",
            "3",
            "--runtime",
            "podman",
        ]);
        assert_eq!((b.replicas, b.runtime.as_str()), (3, "podman"));
    }

    #[test]
    fn cli_runtime_and_log_format_allow_lists() {
        assert_eq!(
            error(&["container", REG, "-p", "80", "--runtime", "nerdctl"]),
            "Error: --runtime must be docker or podman (got 'nerdctl')\n"
        );
        assert_eq!(
            error(&["server", REG, "-f", "xml"]),
            "Error: --log-format must be text or json (got 'xml')\n"
        );
    }

    #[test]
    fn cli_help_is_usage_on_stdout_exit_1() {
        let Parsed::Exit { text, stdout, code } = parse(&v(&["server", "--help"]), "1") else {
            panic!("help must exit");
        };
        assert!(stdout);
        assert_eq!(code, 1);
        assert_eq!(
            parse(&v(&["assets", "-h"]), "1"),
            parse(&v(&["server", "--help"]), "1")
        );
        assert!(text.contains("deploy-agent"));
        for word in ["server", "assets", "container", "container list"] {
            assert!(text.contains(&format!("  {word} ")), "{word}");
        }
        for f in FLAGS.iter().filter(|f| !f.long.starts_with("otlp")) {
            assert!(
                text.contains(&format!("--{}", f.long)),
                "--{} missing",
                f.long
            );
            if let Some(s) = f.short {
                assert!(
                    text.contains(&format!("-{s}, --{}", f.long)),
                    "-{s} missing"
                );
            }
        }
    }

    #[test]
    fn cli_version_on_stdout_exit_0() {
        for args in [&["server", "--version"][..], &["container", "-v"][..]] {
            assert_eq!(
                parse(&v(args), "0.9.1"),
                Parsed::Exit {
                    text: "deploy-agent version: 0.9.1\n".into(),
                    stdout: true,
                    code: 0
                }
            );
        }
    }

    #[test]
    fn cli_otlp_refused_clearly() {
        let e = error(&["server", REG, "--otlp-endpoint", "localhost:4317"]);
        assert!(
            e.starts_with("Error: --otlp-endpoint is not supported"),
            "{e}"
        );
        let e = error(&["server", REG, "--otlp-insecure"]);
        assert!(
            e.starts_with("Error: --otlp-insecure is not supported"),
            "{e}"
        );
    }

    #[test]
    fn cli_ports_checked_at_start() {
        assert_eq!(
            error(&["server", REG, "-p", "80-300"]),
            "Error: invalid port specification: port range 80-300 too large (221 ports), maximum allowed is 100\n"
        );
        assert_eq!(
            error(&["container", REG]),
            "Error: failed to parse port mappings: --port option is required for container command\n"
        );
        assert_eq!(
            error(&["container", REG, "-p", "80", "--", "-d"]),
            "Error: extra argument -d is not allowed in container mode\n"
        );
        // assets ignores -p, as Dewy.
        assert_eq!(run(&["assets", REG, "-p", "x"]).ports, v(&["x"]));
    }

    #[test]
    fn cli_health_path_rules() {
        assert_eq!(
            error(&["server", REG, "--health-path", "/h"]),
            "Error: --health-path requires --port\n"
        );
        assert_eq!(
            run(&["server", REG, "--health-path=/h", "-p", "80"]).health_path,
            "/h"
        );
        assert_eq!(
            error(&["assets", REG, "--health-path", "/h"]),
            "Error: --health-path is not supported by the assets command\n"
        );
    }

    fn sp(values: &[&str]) -> Result<(Vec<u16>, Vec<String>), String> {
        server_ports(&v(values))
    }

    #[test]
    fn server_ports_lists_ranges_dedupe_sort() {
        let (ports, warnings) = sp(&["8002,8000", "8001-8003", " 8000 ", ""]).unwrap();
        assert_eq!(ports, vec![8000, 8001, 8002, 8003]);
        assert!(warnings.is_empty());
        assert_eq!(sp(&[]).unwrap().0, Vec::<u16>::new());
        assert_eq!(sp(&["1-101"]).unwrap().0.len(), 101, "B-A = 100 is allowed");
        assert_eq!(sp(&["65535"]).unwrap().0, vec![65535]);
        assert_eq!(sp(&["5-5"]).unwrap().0, vec![5]);
        assert_eq!(sp(&["10 - 12"]).unwrap().0, vec![10, 11, 12]);
    }

    #[test]
    fn server_ports_warn_below_1024() {
        let (ports, warnings) = sp(&["80,443", "1023-1025"]).unwrap();
        assert_eq!(ports, vec![80, 443, 1023, 1024, 1025]);
        assert_eq!(
            warnings,
            vec![
                "Using privileged port 80 may require root privileges",
                "Using privileged port 443 may require root privileges",
                "Using privileged port 1023 may require root privileges",
            ]
        );
    }

    #[test]
    fn server_ports_refusals_name_the_item() {
        assert_eq!(
            sp(&["1-102"]).unwrap_err(),
            "port range 1-102 too large (102 ports), maximum allowed is 100"
        );
        assert_eq!(
            sp(&["90-80"]).unwrap_err(),
            "start port (90) cannot be greater than end port (80) in 90-80"
        );
        assert_eq!(
            sp(&["0"]).unwrap_err(),
            "port number must be between 1 and 65535, got 0"
        );
        assert_eq!(
            sp(&["65536"]).unwrap_err(),
            "port number must be between 1 and 65535, got 65536"
        );
        assert_eq!(
            sp(&["0-3"]).unwrap_err(),
            "range 0-3: port number must be between 1 and 65535, got 0"
        );
        assert_eq!(sp(&["80,abc"]).unwrap_err(), "invalid port number: 'abc'");
        assert_eq!(
            sp(&["1-2-3"]).unwrap_err(),
            "invalid port range format: 1-2-3"
        );
        assert_eq!(
            sp(&["x-3"]).unwrap_err(),
            "range x-3: invalid port number: 'x'"
        );
        assert_eq!(
            sp(&["127.0.0.1:8000"]).unwrap_err(),
            "invalid port number: 127.0.0.1:8000 (host:port is not accepted, only port numbers)"
        );
        assert_eq!(
            sp(&[":8000"]).unwrap_err(),
            "invalid port number: :8000 (host:port is not accepted, only port numbers)"
        );
    }

    fn cp(values: &[&str]) -> Result<Vec<PortMapping>, String> {
        container_ports(&v(values))
    }

    #[test]
    fn container_ports_grammar() {
        assert_eq!(
            cp(&["8080:80", " 9090 "]).unwrap(),
            vec![
                PortMapping {
                    proxy: 8080,
                    container: 80
                },
                PortMapping {
                    proxy: 9090,
                    container: 0
                },
            ]
        );
        assert_eq!(
            cp(&["8080:80", "8080:81"]).unwrap_err(),
            "duplicate proxy port: 8080"
        );
        assert_eq!(
            cp(&["8080", "8080"]).unwrap_err(),
            "duplicate proxy port: 8080"
        );
        assert_eq!(
            cp(&[]).unwrap_err(),
            "--port option is required for container command"
        );
        assert_eq!(
            cp(&[" "]).unwrap_err(),
            "--port option is required for container command"
        );
        assert_eq!(
            cp(&["8080,8081"]).unwrap_err(),
            "port 8080,8081: invalid port number: '8080,8081'"
        );
        assert_eq!(
            cp(&["8000-8001"]).unwrap_err(),
            "port 8000-8001: invalid port number: '8000-8001'"
        );
        assert_eq!(
            cp(&["0.0.0.0:80:80"]).unwrap_err(),
            "invalid port mapping format: 0.0.0.0:80:80 (expected proxy:container)"
        );
        assert_eq!(
            cp(&["80:0"]).unwrap_err(),
            "container port in 80:0: port number must be between 1 and 65535, got 0"
        );
        assert_eq!(
            cp(&["x:80"]).unwrap_err(),
            "proxy port in x:80: invalid port number: 'x'"
        );
    }

    fn extra(args: &[&str]) -> Result<(), String> {
        check_extra_args(&v(args))
    }

    #[test]
    fn extra_args_allowed() {
        extra(&[]).unwrap();
        extra(&[
            "-e",
            "A=1",
            "--env=B=2",
            "-v",
            "/a:/b",
            "--memory",
            "256m",
            "-u",
            "1000",
        ])
        .unwrap();
        extra(&[
            "--label",
            "team=x",
            "-l",
            "app.dewy=1",
            "--label=other",
            "-lfoo",
        ])
        .unwrap();
        extra(&["-P", "--rm", "--network", "host", "--detached-x"]).unwrap();
    }

    #[test]
    fn extra_args_forbidden_long_options() {
        for name in FORBIDDEN_LONG {
            let bare = format!("--{name}");
            assert_eq!(
                extra(&[&bare, "x"]).unwrap_err(),
                format!("extra argument {bare} is not allowed in container mode")
            );
            let eq = format!("--{name}=1");
            assert_eq!(
                extra(&["-e", "A=1", &eq]).unwrap_err(),
                format!("extra argument {eq} is not allowed in container mode")
            );
        }
    }

    #[test]
    fn extra_args_forbidden_short_flags() {
        for arg in [
            "-d",
            "-i",
            "-t",
            "-p",
            "-it",
            "-ti",
            "-p8080:80",
            "-dit",
            "-p=80",
        ] {
            assert_eq!(
                extra(&["--rm", arg]).unwrap_err(),
                format!("extra argument {arg} is not allowed in container mode")
            );
        }
    }

    #[test]
    fn extra_args_dewy_labels() {
        for args in [
            &["--label", "dewy.app=x"][..],
            &["--label=dewy.managed=true"][..],
            &["-l", "dewy.version=1"][..],
            &["-ldewy.x=1"][..],
            &["-l=dewy.x"][..],
        ] {
            let e = extra(args).unwrap_err();
            assert!(
                e.starts_with(&format!("extra argument {}: label dewy.", args[0])),
                "{e}"
            );
        }
    }
}
