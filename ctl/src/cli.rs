//! Command-line parsing, pure: global flags (spec 4.1) and the subcommand plan (spec 4.2).
//! Everything is decided before any connection is made.

use std::path::PathBuf;

use common::console::{self, Command, ParseError};
use common::goflag::{Flag, FlagError, FlagSet, Kind};

/// What the process should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Print `stderr` and exit with `code` (usage, validation errors).
    Exit { code: i32, stderr: String },
    /// Connect and run one console line.
    Exec { global: Global, line: String },
    /// Connect, upload `file` (already checked locally by the caller), register it.
    Upload {
        global: Global,
        name: String,
        version: String,
        file: PathBuf,
    },
    /// Connect and import an image as a configuration (`import`).
    Import {
        global: Global,
        args: crate::import::ImportArgs,
    },
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub addr: String,
    /// Empty: use `$HOME/.ssh/known_hosts`.
    pub fingerprints: Vec<String>,
    /// None: use ssh-agent.
    pub key: Option<PathBuf>,
}

/// Link-time defaults of the original (`-X main.defaultAddress=…`) are build-time
/// environment variables here: `DEPLOYCTL_DEFAULT_ADDR=… cargo build`.
const BUILD_ADDR: Option<&str> = option_env!("DEPLOYCTL_DEFAULT_ADDR");
const BUILD_FINGERPRINT: Option<&str> = option_env!("DEPLOYCTL_DEFAULT_FINGERPRINT");

/// The commands sent to the registry after local parsing; `addver` has its own path.
const CONSOLE_COMMANDS: &[&str] = &[
    "components",
    "configurations",
    "delver",
    "delcomp",
    "addconf",
    "delconf",
    "changeconf",
    "bumpconf",
    "showconf",
    "showcomp",
    "history",
    "rollback",
    "audit",
    "fsck",
    "status",
    "forget",
];

/// The global flag set. Its defaults are shown in the usage, so they are the effective ones:
/// the environment variable when set (even to ""), else the build-time value.
pub fn global_flags(env: &dyn Fn(&str) -> Option<String>) -> FlagSet {
    let addr = env("DEPLOYCTL_ADDR").unwrap_or_else(|| BUILD_ADDR.unwrap_or("").to_string());
    let fp =
        env("DEPLOYCTL_FINGERPRINT").unwrap_or_else(|| BUILD_FINGERPRINT.unwrap_or("").to_string());
    // goflag defaults are 'static; this runs once per process.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    FlagSet::new(
        "deployctl",
        vec![
            Flag {
                name: "addr",
                kind: Kind::String {
                    default: leak(addr),
                },
                usage: "$DEPLOYCTL_ADDR, registry host address (host:port)",
            },
            Flag {
                name: "fp",
                kind: Kind::String { default: leak(fp) },
                // The original said `sha256:...`, which never matched (spec B20); both
                // spellings of the prefix are accepted now.
                usage: "$DEPLOYCTL_FINGERPRINT, sha256 host key fingerprint (SHA256:...)",
            },
            Flag {
                name: "key",
                kind: Kind::String { default: "" },
                usage: "ssh private key to use; if not set, ssh-agent is used",
            },
        ],
    )
}

/// The global usage text (spec 4.1).
pub fn usage(set: &FlagSet) -> String {
    format!(
        "Usage: deployctl [flags] subcommand [subcommand flags]\n{}\nSubcommands:\n\n{}\n",
        set.defaults(),
        console::HELP_LISTING
    )
}

fn exit(code: i32, stderr: impl Into<String>) -> Plan {
    Plan::Exit {
        code,
        stderr: stderr.into(),
    }
}

/// Parses the whole command line (without argv[0]).
pub fn plan(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Plan {
    let set = global_flags(env);
    let parsed = match set.parse(args) {
        Ok(p) => p,
        // Go >= 1.15 exits 0 on -h; we follow it (spec 4.1 allows either).
        Err(FlagError::Help) => return exit(0, usage(&set)),
        Err(FlagError::Message(m)) => return exit(2, format!("{m}\n{}", usage(&set))),
    };
    let addr = parsed.string(&set, "addr");
    if addr.is_empty() {
        return exit(2, format!("addr should be set\n\n{}", usage(&set)));
    }
    let Some(cmd) = parsed.rest.first() else {
        return exit(2, usage(&set));
    };
    let fp = parsed.string(&set, "fp");
    let key = parsed.string(&set, "key");
    let global = Global {
        addr,
        // A comma-separated list allows a host key rotation window.
        fingerprints: fp
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        key: (!key.is_empty()).then(|| PathBuf::from(key)),
    };
    let rest = &parsed.rest;
    if cmd == "addver" {
        return plan_addver(global, &rest[1..]);
    }
    if cmd == "import" {
        return plan_import(global, &rest[1..]);
    }
    if !CONSOLE_COMMANDS.contains(&cmd.as_str()) {
        return exit(
            1,
            format!("unknown command: {}\n", common::gostr::quote(cmd)),
        );
    }
    match Command::parse(rest) {
        Ok(command) => Plan::Exec {
            global,
            line: command.to_line(),
        },
        Err(e) => parse_error(e),
    }
}

fn parse_error(e: ParseError) -> Plan {
    match e {
        ParseError::Usage { output } => exit(2, output),
        ParseError::Unknown(cmd) => exit(
            1,
            format!("unknown command: {}\n", common::gostr::quote(&cmd)),
        ),
        other => exit(1, format!("{other}\n")),
    }
}

fn addver_flags() -> FlagSet {
    FlagSet::new(
        "addver",
        vec![
            Flag {
                name: "name",
                kind: Kind::String { default: "" },
                usage: "component name",
            },
            Flag {
                name: "version",
                kind: Kind::String { default: "" },
                usage: "unique version id",
            },
            Flag {
                name: "file",
                kind: Kind::String { default: "" },
                usage: "tar.gz file to upload",
            },
            Flag {
                name: "hash",
                kind: Kind::String { default: "" },
                usage: "sha256 of content already stored in the registry (instead of -file)",
            },
        ],
    )
}

fn plan_addver(global: Global, args: &[String]) -> Plan {
    let set = addver_flags();
    let parsed = match set.parse(args) {
        Ok(p) => p,
        Err(FlagError::Help) => return exit(2, set.usage()),
        Err(FlagError::Message(m)) => return exit(2, format!("{m}\n{}", set.usage())),
    };
    let name = parsed.string(&set, "name");
    let version = parsed.string(&set, "version");
    let file = parsed.string(&set, "file");
    let hash = parsed.string(&set, "hash");
    if !hash.is_empty() {
        if !file.is_empty() {
            return exit(
                2,
                format!(
                    "-file and -hash are mutually exclusive: -file uploads, -hash names content already stored\n{}",
                    set.usage()
                ),
            );
        }
        // The registry's own grammar validates (same texts as `ssh host addver ...`).
        let words: Vec<String> = [
            "addver".to_string(),
            format!("-name={name}"),
            format!("-version={version}"),
            format!("-hash={hash}"),
        ]
        .into();
        return match Command::parse(&words) {
            Ok(command) => Plan::Exec {
                global,
                line: command.to_line(),
            },
            Err(e) => parse_error(e),
        };
    }
    if name.is_empty() || version.is_empty() || file.is_empty() {
        return exit(1, "name, version and file should all be set\n");
    }
    if name.contains(':') {
        return exit(1, "name cannot contain : symbol\n");
    }
    Plan::Upload {
        global,
        name,
        version,
        file: PathBuf::from(file),
    }
}

fn import_flags() -> FlagSet {
    FlagSet::new(
        "import",
        vec![
            Flag {
                name: "name",
                kind: Kind::String { default: "" },
                usage: "configuration name, derived from the image name and tag if not set",
            },
            Flag {
                name: "tag",
                kind: Kind::String { default: "" },
                usage: "image tag (img://: the newest version tag if not set; oci:/docker-archive: the only image)",
            },
            Flag {
                name: "platform",
                kind: Kind::String { default: "" },
                usage: "os/arch[/variant] to pick from a multi-platform image (default: this machine's)",
            },
            Flag {
                name: "layer",
                kind: Kind::Repeated {
                    check: check_extra_layer,
                },
                usage: "extra layer on top of the image's, in component:version format; can be set multiple times",
            },
        ],
    )
}

fn check_extra_layer(value: &str, previous: &[String]) -> Result<(), String> {
    let Some((component, _)) = value.split_once(':') else {
        return Err("invalid value".into());
    };
    if previous
        .iter()
        .any(|p| p.split_once(':').is_some_and(|(c, _)| c == component))
    {
        return Err(format!(
            "duplicate component {}",
            common::gostr::quote(component)
        ));
    }
    Ok(())
}

const IMPORT_USAGE: &str = "\
import [flags] SOURCE: upload an image's layers as components and create or update a configuration
SOURCE is img://host/repo[?pre-release=true&insecure=true], oci:DIR (OCI image layout)
or docker-archive:FILE (docker save output)
";

fn plan_import(global: Global, args: &[String]) -> Plan {
    let set = import_flags();
    let usage = || format!("{IMPORT_USAGE}{}", set.usage());
    let parsed = match set.parse(args) {
        Ok(p) => p,
        Err(FlagError::Help) => return exit(2, usage()),
        Err(FlagError::Message(m)) => return exit(2, format!("{m}\n{}", usage())),
    };
    let [source] = parsed.rest.as_slice() else {
        return exit(2, format!("exactly one SOURCE is needed\n{}", usage()));
    };
    let name = parsed.string(&set, "name");
    if name.contains('/') {
        return exit(1, "name cannot contain / symbol\n");
    }
    Plan::Import {
        global,
        args: crate::import::ImportArgs {
            source: source.clone(),
            name,
            tag: parsed.string(&set, "tag"),
            platform: parsed.string(&set, "platform"),
            extra: parsed
                .all("layer")
                .iter()
                .filter_map(|l| l.split_once(':'))
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests;
