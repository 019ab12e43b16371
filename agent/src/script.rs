//! The deploy script (spec 3.5): no arguments, the agent's cwd, a clean environment of exactly
//! `OLDID OLDROOT NEWID NEWROOT STATEFILE`, the eight passthrough variables and
//! `LAYER_<i>_NAME/VERSION`. Unlike the original (B17) its output is logged line by line, it has
//! a timeout, and it runs in its own process group so that stopping it (TERM, then KILL) reaches
//! its children too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::config::Configuration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const PASSTHROUGH: [&str; 8] = [
    "PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LC_ALL", "SHELL",
];
/// Between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// Everything the script is told.
pub struct Invocation<'a> {
    pub script: &'a str,
    pub old_id: &'a str,
    pub old_root: PathBuf,
    pub new_root: PathBuf,
    pub new: &'a Configuration,
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// `"<script>" call failure: <why>`, the original's text.
    #[error("{script:?} call failure: {why}")]
    Failed { script: String, why: String },
    #[error("{script:?} call failure: cannot write $STATEFILE: {source}")]
    StateFile {
        script: String,
        #[source]
        source: std::io::Error,
    },
}

/// The environment, in the original's order.
pub fn environment(inv: &Invocation<'_>, state_file: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("OLDID".to_string(), inv.old_id.to_string()),
        (
            "OLDROOT".to_string(),
            inv.old_root.to_string_lossy().into_owned(),
        ),
        ("NEWID".to_string(), inv.new.hash.clone()),
        (
            "NEWROOT".to_string(),
            inv.new_root.to_string_lossy().into_owned(),
        ),
        (
            "STATEFILE".to_string(),
            state_file.to_string_lossy().into_owned(),
        ),
    ];
    for k in PASSTHROUGH {
        if let Some(v) = std::env::var_os(k) {
            env.push((k.to_string(), v.to_string_lossy().into_owned()));
        }
    }
    for (i, l) in inv.new.layers.iter().enumerate() {
        env.push((format!("LAYER_{i}_NAME"), l.name.clone()));
        env.push((format!("LAYER_{i}_VERSION"), l.version.clone()));
    }
    env
}

/// Runs the script to completion. `cancel` (agent shutdown) stops it like a timeout does.
pub async fn run(inv: &Invocation<'_>, cancel: &CancellationToken) -> Result<(), ScriptError> {
    let failed = |why: String| ScriptError::Failed {
        script: inv.script.to_string(),
        why,
    };
    let tmpdir = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let state_file = tmpdir.join(format!("json-state-{}", rand::random::<u32>()));
    crate::state::write_durably(&state_file, inv.new.to_json().as_bytes(), 0o644).map_err(
        |source| ScriptError::StateFile {
            script: inv.script.to_string(),
            source,
        },
    )?;
    let _remove = RemoveOnDrop(state_file.clone());

    let mut cmd = Command::new(inv.script);
    cmd.env_clear()
        .envs(environment(inv, &state_file))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(go_exec_error(inv.script, &e)))?;
    let pgid = child.id().map(|p| p as i32);
    let hash = inv.new.hash.clone();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(log_lines(s, hash.clone(), "stdout")));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(log_lines(s, hash.clone(), "stderr")));

    let timeout = async {
        match inv.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| failed(e.to_string()))?,
        _ = timeout => {
            stop_group(&mut child, pgid).await;
            return Err(failed(format!(
                "timed out after {}",
                common::goflag::format_duration(inv.timeout.unwrap_or_default())
            )));
        }
        _ = cancel.cancelled() => {
            stop_group(&mut child, pgid).await;
            return Err(failed("agent is shutting down".into()));
        }
    };
    // The pipes close when every process holding them exits; a daemonized grandchild could keep
    // them open forever, so only wait a moment for the rest of the output.
    for t in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    if status.success() {
        return Ok(());
    }
    Err(failed(go_exit_status(&status)))
}

async fn log_lines(stream: impl tokio::io::AsyncRead + Unpin, config: String, which: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(config = %config, stream = which, "script: {line}");
    }
}

/// SIGTERM to the whole process group, SIGKILL after the grace period.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<i32>) {
    let Some(pgid) = pgid else { return };
    let group = rustix::process::Pid::from_raw(pgid);
    if let Some(g) = group {
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        if let Some(g) = group {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
        }
        let _ = child.wait().await;
    } else if let Some(g) = group {
        // The leader is gone; its children may not be.
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
    }
}

/// Go's `exec.ExitError` text: `exit status 3`, `signal: killed`.
fn go_exit_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(9) => "signal: killed".into(),
        Some(15) => "signal: terminated".into(),
        Some(s) => format!("signal: {s}"),
        None => status.to_string(),
    }
}

/// Go's `exec` start errors: `fork/exec ./deploy.sh: no such file or directory`, or for a bare
/// name looked up in PATH, `exec: "deploy.sh": executable file not found in $PATH`.
fn go_exec_error(script: &str, e: &std::io::Error) -> String {
    if !script.contains('/') && e.kind() == std::io::ErrorKind::NotFound {
        return format!("exec: {script:?}: executable file not found in $PATH");
    }
    format!("fork/exec {script}: {}", common::goerr::errno_text(e))
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ComponentVersion;

    fn config() -> Configuration {
        let t = common::timefmt::now();
        Configuration::new(
            "p".into(),
            t,
            vec![
                ComponentVersion::new("code".into(), "v1".into(), "a".repeat(64), t),
                ComponentVersion::new("conf".into(), "v2".into(), "b".repeat(64), t),
            ],
        )
    }

    fn script(dir: &Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("deploy.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[tokio::test]
    async fn exact_environment_and_statefile() {
        let tmp = tempfile::tempdir().unwrap();
        let dump = tmp.path().join("env.txt");
        let s = script(
            tmp.path(),
            &format!("env > {0}; cat \"$STATEFILE\" > {0}.state", dump.display()),
        );
        let c = config();
        let inv = Invocation {
            script: &s,
            old_id: "",
            old_root: "unpacked".into(),
            new_root: PathBuf::from("unpacked").join(&c.hash),
            new: &c,
            timeout: None,
        };
        run(&inv, &CancellationToken::new()).await.unwrap();
        let env = std::fs::read_to_string(&dump).unwrap();
        let mut keys: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        keys.sort();
        let mut want = vec![
            "LAYER_0_NAME",
            "LAYER_0_VERSION",
            "LAYER_1_NAME",
            "LAYER_1_VERSION",
            "NEWID",
            "NEWROOT",
            "OLDID",
            "OLDROOT",
            "STATEFILE",
        ];
        for k in PASSTHROUGH {
            if std::env::var_os(k).is_some() {
                want.push(k);
            }
        }
        // sh itself adds PWD (and may add SHLVL, _); they are not ours.
        keys.retain(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(k));
        want.sort();
        assert_eq!(keys, want);
        assert!(env.contains("LAYER_1_VERSION=v2\n"));
        assert!(env.contains("OLDROOT=unpacked\n"));
        assert!(env.contains(&format!("NEWID={}\n", c.hash)));
        assert_eq!(
            std::fs::read_to_string(format!("{}.state", dump.display())).unwrap(),
            c.to_json()
        );
        let sf = env
            .lines()
            .find_map(|l| l.strip_prefix("STATEFILE="))
            .unwrap();
        assert!(!Path::new(sf).exists(), "STATEFILE not removed");
    }

    #[tokio::test]
    async fn failure_text_matches_original() {
        let tmp = tempfile::tempdir().unwrap();
        let s = script(tmp.path(), "echo to-stderr >&2; exit 3");
        let c = config();
        let inv = Invocation {
            script: &s,
            old_id: "",
            old_root: "u".into(),
            new_root: "u/x".into(),
            new: &c,
            timeout: None,
        };
        let err = run(&inv, &CancellationToken::new()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{s:?} call failure: exit status 3")
        );
    }

    #[tokio::test]
    async fn missing_script_text_matches_go() {
        let c = config();
        let inv = |script| Invocation {
            script,
            old_id: "",
            old_root: "u".into(),
            new_root: "u/x".into(),
            new: &c,
            timeout: None,
        };
        let err = run(&inv("./no-such.sh"), &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"./no-such.sh\" call failure: fork/exec ./no-such.sh: no such file or directory"
        );
        let err = run(&inv("no-such-script-in-path"), &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"no-such-script-in-path\" call failure: exec: \"no-such-script-in-path\": executable file not found in $PATH"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("child.pid");
        let s = script(
            tmp.path(),
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
        );
        let c = config();
        let inv = Invocation {
            script: &s,
            old_id: "",
            old_root: "u".into(),
            new_root: "u/x".into(),
            new: &c,
            timeout: Some(Duration::from_millis(500)),
        };
        let err = run(&inv, &CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains("timed out after 500ms"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got the TERM too (reaped by init, so poll briefly).
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "grandchild {pid} survived");
    }
}
