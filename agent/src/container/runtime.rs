//! The docker or podman CLI (spec 9.1): every call an argument vector (never a shell), with a
//! time limit, its output capped. Secrets go through stdin only and are never logged.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::parse::{self, Inspected, LABEL_APP, LABEL_MANAGED};

/// Output kept per stream: `ps`, `inspect` and `images` of a busy host fit easily.
const MAX_OUTPUT: u64 = 16 << 20;

/// Time limits per kind of call.
const QUICK: Duration = Duration::from_secs(60);
const PULL: Duration = Duration::from_secs(30 * 60);
/// `stop --time=N` waits N s itself before killing.
const STOP_SLACK: Duration = Duration::from_secs(60);

/// One runtime binary.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin: String,
}

/// What a finished call printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn text(&self) -> String {
        let s = format!("{} {}", self.stdout.trim(), self.stderr.trim());
        s.trim().to_string()
    }
}

impl Runtime {
    /// `--runtime`: `docker` or `podman`, found in PATH.
    pub fn new(name: &str) -> Result<Runtime> {
        if name != "docker" && name != "podman" {
            bail!("unsupported runtime: {name} (docker or podman)");
        }
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| is_executable(&d.join(name))));
        if !found {
            bail!("{name} not found in PATH");
        }
        Ok(Runtime {
            bin: name.to_string(),
        })
    }

    /// Runs `<bin> args...` with `stdin` fed (then closed), killed after `limit`.
    pub async fn exec(
        &self,
        args: &[String],
        stdin: Option<&str>,
        limit: Duration,
    ) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = args.first().map_or("", String::as_str);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {} {what}", self.bin))?;
        let input = stdin.map(str::to_string);
        let mut child_in = child.stdin.take();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let run = async {
            let feed = async {
                if let (Some(w), Some(text)) = (child_in.as_mut(), input) {
                    // A runtime that exits early closes the pipe: its status tells why.
                    let _ = w.write_all(text.as_bytes()).await;
                }
                drop(child_in.take());
            };
            let (_, o, e, status) = tokio::join!(
                feed,
                read_capped(out.take()),
                read_capped(err.take()),
                child.wait()
            );
            (o, e, status)
        };
        let (o, e, status) = tokio::time::timeout(limit, run)
            .await
            .map_err(|_| anyhow::anyhow!("{} {what}: no answer within {limit:?}", self.bin))?;
        let status = status.with_context(|| format!("{} {what}", self.bin))?;
        Ok(Output {
            ok: status.success(),
            stdout: o,
            stderr: e,
        })
    }

    /// [`Runtime::exec`] that fails with the runtime's words unless it exits 0.
    async fn ok(&self, args: &[String], limit: Duration) -> Result<String> {
        let out = self.exec(args, None, limit).await?;
        if !out.ok {
            bail!("{} {}: {}", self.bin, args.join(" "), out.text());
        }
        Ok(out.stdout)
    }

    /// IDs of the app's managed containers: running only, or all (`-a`) states.
    pub async fn managed(&self, app: &str, all: bool) -> Result<Vec<String>> {
        let mut a = v(&["ps", "-q", "--no-trunc"]);
        if all {
            a.push("-a".into());
        }
        a.extend(filters(app));
        Ok(parse::ids(&self.ok(&a, QUICK).await?))
    }

    /// Running containers of `app` from image `image_ref` (the skip check).
    pub async fn running_of(&self, image_ref: &str, app: &str) -> Result<Vec<String>> {
        let a = vec![
            "ps".into(),
            "--filter".into(),
            format!("ancestor={image_ref}"),
            "--filter".into(),
            format!("label={LABEL_APP}={app}"),
            "--filter".into(),
            "status=running".into(),
            "--format".into(),
            "{{.ID}}".into(),
        ];
        Ok(parse::ids(&self.ok(&a, QUICK).await?))
    }

    /// Exited managed containers of `app` (podman refuses `status=dead`, so exited only).
    pub async fn exited(&self, app: &str) -> Result<Vec<String>> {
        let mut a = v(&["ps", "-aq", "--no-trunc", "--filter", "status=exited"]);
        a.extend(filters(app));
        Ok(parse::ids(&self.ok(&a, QUICK).await?))
    }

    pub async fn inspect(&self, ids: &[String]) -> Result<Vec<Inspected>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut a = v(&["inspect", "--type", "container"]);
        a.extend(ids.iter().cloned());
        let out = self.exec(&a, None, QUICK).await?;
        // A container removed between `ps` and `inspect` fails the call but the others are
        // still printed.
        if out.stdout.trim().is_empty() {
            if out.ok {
                return Ok(Vec::new());
            }
            bail!("{} inspect: {}", self.bin, out.text());
        }
        parse::inspect(&out.stdout).map_err(anyhow::Error::msg)
    }

    /// `image inspect` output, or None when the image is not here.
    pub async fn image_inspect(&self, image_ref: &str) -> Result<Option<String>> {
        let out = self
            .exec(&v(&["image", "inspect", image_ref]), None, QUICK)
            .await?;
        Ok(out.ok.then_some(out.stdout))
    }

    /// `login -u <user> --password-stdin <registry>`; the password never on a command line.
    pub async fn login(&self, registry: &str, user: &str, password: &str) -> Result<()> {
        let a = v(&["login", "-u", user, "--password-stdin", registry]);
        let out = self.exec(&a, Some(password), QUICK).await?;
        if !out.ok {
            // The runtime's answer does not contain the password (it was never an argument).
            bail!("{} login {registry} as {user}: {}", self.bin, out.text());
        }
        Ok(())
    }

    /// `pull <ref>`: Ok(Err(text)) when the runtime refused (the caller decides on a retry).
    pub async fn pull(&self, image_ref: &str) -> Result<std::result::Result<(), String>> {
        let out = self.exec(&v(&["pull", image_ref]), None, PULL).await?;
        Ok(if out.ok { Ok(()) } else { Err(out.text()) })
    }

    /// `run ...`: the new container's ID.
    pub async fn run(&self, args: &[String]) -> Result<String> {
        let out = self.ok(args, PULL).await?;
        parse::ids(&out)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("{} run printed no container ID", self.bin))
    }

    /// The host port `container_port/tcp` of `id` is published on.
    pub async fn port(&self, id: &str, container_port: u16) -> Result<u16> {
        let out = self
            .ok(&v(&["port", id, &format!("{container_port}/tcp")]), QUICK)
            .await?;
        parse::port_line(&out)
            .ok_or_else(|| anyhow::anyhow!("{} port {id}: no published port in {out:?}", self.bin))
    }

    pub async fn stop(&self, id: &str, secs: u64) -> Result<()> {
        let limit = Duration::from_secs(secs) + STOP_SLACK;
        self.ok(&v(&["stop", &format!("--time={secs}"), id]), limit)
            .await
            .map(drop)
    }

    pub async fn rm(&self, id: &str) -> Result<()> {
        self.ok(&v(&["rm", "-f", id]), QUICK).await.map(drop)
    }

    /// `images --format ... <repo>` lines.
    pub async fn images(&self, repo: &str) -> Result<Vec<parse::ImageLine>> {
        let a = v(&[
            "images",
            "--format",
            "{{.ID}}|{{.Repository}}|{{.Tag}}|{{.CreatedAt}}|{{.Size}}",
            repo,
        ]);
        Ok(parse::image_lines(&self.ok(&a, QUICK).await?))
    }

    pub async fn rmi(&self, id: &str) -> Result<()> {
        self.ok(&v(&["rmi", "--force", id]), QUICK).await.map(drop)
    }
}

fn filters(app: &str) -> Vec<String> {
    vec![
        "--filter".into(),
        format!("label={LABEL_MANAGED}=true"),
        "--filter".into(),
        format!("label={LABEL_APP}={app}"),
    ]
}

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn read_capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let Some(r) = r else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut limited = r.take(MAX_OUTPUT);
    let _ = limited.read_to_end(&mut buf).await;
    // Drain the rest so the runtime is not blocked on a full pipe.
    let mut rest = limited.into_inner();
    let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_allow_listed() {
        let e = Runtime::new("sh").unwrap_err().to_string();
        assert!(e.contains("unsupported runtime: sh"), "{e}");
    }

    #[tokio::test]
    async fn login_gives_the_password_on_stdin_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("runtime");
        // Records how it was called, as a runtime binary would receive it.
        std::fs::write(
            &bin,
            "#!/bin/sh\nd=$(dirname \"$0\")\necho \"$@\" > \"$d/args\"\ncat > \"$d/stdin\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = Runtime {
            bin: bin.to_string_lossy().into_owned(),
        };
        // Another test thread forking while the script was open for writing makes exec fail
        // with ETXTBSY for a moment.
        let mut tries = 0;
        while let Err(e) = rt.login("reg.example:5000", "bob", "s3cret").await {
            tries += 1;
            assert!(tries < 50 && format!("{e:#}").contains("busy"), "{e:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert_eq!(args, "login -u bob --password-stdin reg.example:5000\n");
        let stdin = std::fs::read_to_string(dir.path().join("stdin")).unwrap();
        assert_eq!(stdin, "s3cret");
    }

    #[tokio::test]
    async fn exec_feeds_stdin_and_honours_the_limit() {
        // `sh` stands in for a runtime binary here: exec is the same for any program.
        let rt = Runtime { bin: "sh".into() };
        let out = rt
            .exec(
                &v(&["-c", "read x; echo got:$x; echo e >&2; exit 3"]),
                Some("secret\n"),
                QUICK,
            )
            .await
            .unwrap();
        assert!(!out.ok);
        assert_eq!(out.stdout, "got:secret\n");
        assert_eq!(out.stderr, "e\n");
        let slow = rt
            .exec(&v(&["-c", "sleep 5"]), None, Duration::from_millis(100))
            .await;
        assert!(slow.unwrap_err().to_string().contains("no answer within"));
    }
}
