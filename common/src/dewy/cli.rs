//! Dewy's command line (spec dewy.md 8.1, 9.2, 9.4): `deploy-agent server|assets|container
//! [flags] [-- args]` with go-flags semantics, the `-p` grammars of server and container
//! mode, and the extra `docker run` arguments container mode refuses.
//!
//! STUB: the interface is frozen; the parsing is being written.

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

/// Parses `args` (without the program name; the first element is the command word).
pub fn parse(args: &[String], version: &str) -> Parsed {
    let _ = (args, version);
    Parsed::Exit {
        text: "Error: not implemented yet\n".into(),
        stdout: false,
        code: 1,
    }
}

/// Server mode's `-p` values: comma lists of `N` or `A-B` (inclusive, B-A ≤ 100), 1..65535,
/// deduplicated and sorted. Returns the ports and warning texts (ports below 1024).
pub fn server_ports(values: &[String]) -> Result<(Vec<u16>, Vec<String>), String> {
    let _ = values;
    Err("not implemented yet".into())
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
    let _ = values;
    Err("not implemented yet".into())
}

/// Refuses the extra `docker run` arguments of spec 9.4 (and `dewy.` labels).
pub fn check_extra_args(args: &[String]) -> Result<(), String> {
    let _ = args;
    Ok(())
}
