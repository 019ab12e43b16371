//! Dewy's notifications without I/O (spec dewy.md 7): the message texts, the error limiter,
//! the `slack://` and `mail://` URL grammars, and how hook results and messages are laid out.
//!
//! - [`limit`]: the error limiter and quiet mode (7.4).
//! - [`slack`]: `slack://` and the attachments (7.2).
//! - [`mail`]: `mail://`/`smtp://` and the mail texts (7.3).

use std::time::Duration;

pub mod limit;
pub mod mail;
pub mod slack;

pub use limit::{Class, ErrorLimiter};

/// Which hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    BeforeDeploy,
    AfterDeploy,
}

impl HookKind {
    /// `Before Deploy` / `After Deploy`.
    pub fn title(self) -> &'static str {
        match self {
            HookKind::BeforeDeploy => "Before Deploy",
            HookKind::AfterDeploy => "After Deploy",
        }
    }
}

/// What one hook run produced (Dewy's `HookResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub kind: HookKind,
    pub command: String,
    pub stdout: String,
    /// Trimmed, as Dewy.
    pub stderr: String,
    /// 1 when the process did not exit normally (Dewy's rule).
    pub exit_code: i32,
    pub duration: Duration,
    pub success: bool,
}

/// The message texts of spec 7.5 (backticks literal).
pub mod msg {
    pub fn started(version: &str, command: &str) -> String {
        format!("Automatic shipping started by *Dewy* (v{version}: {command})")
    }
    pub fn downloaded(tag: &str) -> String {
        format!("Downloaded artifact for `{tag}`")
    }
    pub fn server_started(tag: &str, has_port: bool) -> String {
        let suffix = if has_port { "" } else { " without port" };
        format!("Server started for `{tag}`{suffix}")
    }
    pub fn server_restarted(tag: &str, has_port: bool) -> String {
        let suffix = if has_port { "" } else { " without port" };
        format!("Server restarted for `{tag}`{suffix}")
    }
    pub fn restarted_by_usr1() -> String {
        "Restarted receiving by `SIGUSR1` signal".into()
    }
    /// `sig` is Go's name: `terminated`, `interrupt`, `quit`.
    pub fn stopped_by(sig: &str) -> String {
        format!("Stop receiving by `{sig}` signal")
    }
    pub fn pulled(tag: &str) -> String {
        format!("Pulled image for `{tag}`")
    }
    pub fn container_deployed(n: usize, total: usize, tag: &str) -> String {
        format!("Container deployed successfully: `{n}/{total}` replicas of `{tag}`")
    }
    /// Ours: the health check of a new release failed and the previous one runs again.
    pub fn rolled_back(failed: &str, restored: &str, reason: &str) -> String {
        format!("Rolled back from `{failed}` to `{restored}`: {reason}")
    }
}
