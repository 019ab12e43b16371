//! Deploy hooks (spec dewy.md 8.4): `sh -c "<cmd>"` in the agent's working directory with the
//! agent's environment, output captured and logged. Unlike Dewy, a before-deploy hook that
//! fails aborts the deploy (as Dewy does since #495).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::dewy::notify::{HookKind, HookResult};
use tokio::process::Command;

/// The two hooks of a run.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    /// Working directory (Dewy's cwd).
    pub dir: PathBuf,
}

/// Output kept per stream; a hook printing more gets the first part kept and a marker.
const MAX_OUTPUT: usize = 1 << 20;

impl Hooks {
    /// Runs the hook of `kind`, if one is set, and logs the result.
    pub async fn run(&self, kind: HookKind) -> Option<HookResult> {
        let command = match kind {
            HookKind::BeforeDeploy => self.before.as_deref(),
            HookKind::AfterDeploy => self.after.as_deref(),
        }?;
        let result = run_sh(kind, command, &self.dir).await;
        if result.success {
            tracing::info!(
                hook = kind.title(),
                command,
                exit_code = result.exit_code,
                duration = %common::goflag::format_duration(result.duration),
                stdout = %result.stdout.trim_end(),
                stderr = %result.stderr,
                "Execute hook"
            );
        } else {
            tracing::error!(
                hook = kind.title(),
                command,
                exit_code = result.exit_code,
                duration = %common::goflag::format_duration(result.duration),
                stdout = %result.stdout.trim_end(),
                stderr = %result.stderr,
                "Execute hook failed"
            );
        }
        Some(result)
    }
}

async fn run_sh(kind: HookKind, command: &str, dir: &std::path::Path) -> HookResult {
    let start = Instant::now();
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let output = match spawned {
        Ok(child) => child.wait_with_output().await,
        Err(e) => Err(e),
    };
    let duration = start.elapsed();
    match output {
        Ok(out) => {
            let exit_code = out.status.code().unwrap_or(1);
            HookResult {
                kind,
                command: command.to_string(),
                stdout: text(&out.stdout),
                stderr: text(&out.stderr).trim().to_string(),
                exit_code,
                duration,
                success: out.status.success(),
            }
        }
        Err(e) => HookResult {
            kind,
            command: command.to_string(),
            stdout: String::new(),
            stderr: format!("cannot run sh: {e}"),
            exit_code: 1,
            duration: duration.max(Duration::ZERO),
            success: false,
        },
    }
}

fn text(bytes: &[u8]) -> String {
    if bytes.len() > MAX_OUTPUT {
        let mut s = String::from_utf8_lossy(&bytes[..MAX_OUTPUT]).into_owned();
        s.push_str(&format!("\n... ({} more bytes)", bytes.len() - MAX_OUTPUT));
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_status_and_runs_in_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "m").unwrap();
        let hooks = Hooks {
            before: Some("cat marker; echo oops >&2; exit 3".into()),
            after: None,
            dir: dir.path().to_path_buf(),
        };
        let r = hooks.run(HookKind::BeforeDeploy).await.unwrap();
        assert_eq!(r.stdout, "m");
        assert_eq!(r.stderr, "oops");
        assert_eq!(r.exit_code, 3);
        assert!(!r.success);
        assert!(hooks.run(HookKind::AfterDeploy).await.is_none());
    }

    #[tokio::test]
    async fn killed_hook_counts_as_exit_code_one() {
        let hooks = Hooks {
            before: Some("kill -9 $$".into()),
            after: None,
            dir: std::env::temp_dir(),
        };
        let r = hooks.run(HookKind::BeforeDeploy).await.unwrap();
        assert_eq!((r.exit_code, r.success), (1, false));
    }
}
