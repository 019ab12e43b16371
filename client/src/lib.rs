//! The SSH/SFTP client side shared by `deployctl` and `deploy-agent`: connect with a timeout,
//! verify the host key (fingerprint or known_hosts), authenticate (key file or ssh-agent), run
//! console commands, open tuned SFTP sessions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;

mod auth;
pub mod hostkey;

/// How the server's host key is checked.
#[derive(Debug, Clone)]
pub enum HostCheck {
    /// Exact `SHA256:<base64>` (what `ssh-keygen -lf` prints); several may be accepted
    /// (key rotation).
    Fingerprints(Vec<String>),
    /// An OpenSSH known_hosts file (`[host]:port` entries for ports other than 22, hashed
    /// hosts, `@revoked`).
    KnownHosts(PathBuf),
}

/// How we authenticate.
#[derive(Debug, Clone)]
pub enum Identity {
    /// An unencrypted private key file (OpenSSH or PEM).
    KeyFile(PathBuf),
    /// Every identity of the ssh-agent at `$SSH_AUTH_SOCK`.
    Agent,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`
    pub addr: String,
    pub user: String,
    pub host_check: HostCheck,
    pub identity: Identity,
    /// Limit for TCP connect + handshake + auth.
    pub connect_timeout: Duration,
}

/// Exit status and captured output of a remote command.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One authenticated SSH connection. Sessions (exec, sftp) are opened on it as needed.
pub struct Connection {
    handle: russh::client::Handle<Handler>,
    fingerprint: String,
}

/// How long a dead server may stay silent before we give up: keepalives every
/// `KEEPALIVE_INTERVAL`, `KEEPALIVE_MAX` unanswered ones close the connection. The agent keeps
/// one connection across polls, so this is how it notices a server that vanished.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;

/// Connection tuning beyond [`Target`]; [`Connection::connect`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Silence from the server after which a keepalive is sent.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives after which the connection is closed ([`Connection::is_closed`]).
    pub keepalive_max: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_max: KEEPALIVE_MAX,
        }
    }
}

/// Large receive window: downloads (agent blob fetches) are not throttled by window updates
/// (spike-russh.md section 6).
const CLIENT_WINDOW: u32 = 16 * 1024 * 1024;

/// russh-sftp client tuning measured in spike-russh.md section 6: 256 KiB writes with 64 in
/// flight gave 466 MB/s against the russh registry, vs 264 MB/s with the defaults.
fn sftp_config() -> russh_sftp::client::Config {
    russh_sftp::client::Config {
        max_packet_len: 256 * 1024 + 1024,
        max_concurrent_reads: 64,
        max_concurrent_writes: 64,
        max_write_packet_len: 256 * 1024,
        // The registry hashes and registers an upload before it answers CLOSE; a large blob
        // takes longer than the default 10 s.
        request_timeout_secs: 300,
    }
}

impl Connection {
    pub async fn connect(target: &Target) -> anyhow::Result<Connection> {
        Connection::connect_tuned(target, &Tuning::default()).await
    }

    /// [`Connection::connect`] with explicit tuning.
    pub async fn connect_tuned(target: &Target, tuning: &Tuning) -> anyhow::Result<Connection> {
        let (host, port) = split_addr(&target.addr)?;
        let checker = hostkey::Checker::new(&target.host_check, &host, port);
        checker.preflight()?;
        // Read the identity before dialing: a bad key file is the caller's mistake, not the
        // network's.
        let identity = auth::Loaded::load(&target.identity).await?;
        let verdict = Arc::new(Mutex::new(None));
        let handler = Handler {
            checker,
            verdict: verdict.clone(),
        };
        let config = Arc::new(russh::client::Config {
            window_size: CLIENT_WINDOW,
            keepalive_interval: Some(tuning.keepalive_interval),
            keepalive_max: tuning.keepalive_max,
            nodelay: true,
            ..Default::default()
        });
        let addr = target.addr.clone();
        let user = target.user.clone();
        let work = async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
                anyhow::anyhow!("dial tcp {addr}: {}", common::goerr::errno_text(&e))
            })?;
            let _ = stream.set_nodelay(true);
            let mut handle = match russh::client::connect_stream(config, stream, handler).await {
                Ok(h) => h,
                Err(e) => {
                    let rejected = verdict.lock().ok().and_then(|mut v| v.take());
                    let why = match rejected {
                        Some(Verdict::Rejected(why)) => why,
                        _ => e.to_string(),
                    };
                    anyhow::bail!("ssh: handshake failed: {why}");
                }
            };
            let fingerprint = match verdict.lock().ok().and_then(|mut v| v.take()) {
                Some(Verdict::Accepted(fp)) => fp,
                _ => anyhow::bail!("ssh: handshake failed: host key was not checked"),
            };
            identity.authenticate(&mut handle, &user).await?;
            Ok(Connection {
                handle,
                fingerprint,
            })
        };
        match tokio::time::timeout(target.connect_timeout, work).await {
            Ok(r) => r,
            Err(_) => anyhow::bail!(
                "connect to {}: timed out after {:?}",
                target.addr,
                target.connect_timeout
            ),
        }
    }

    /// The server's host key fingerprint, `SHA256:...`.
    pub fn server_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Runs `line` (already quoted for the console) and copies its output to `stdout`/`stderr`
    /// as it arrives. Returns the exit status.
    pub async fn exec_to(
        &self,
        line: &str,
        stdout: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        stderr: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> anyhow::Result<u32> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| anyhow::anyhow!("cannot open session: {e}"))?;
        channel
            .exec(true, line.as_bytes())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start remote command: {e}"))?;
        let mut status = None;
        let mut signal = None;
        // Read until the channel closes: the exit status may come before or after EOF.
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
                ChannelMsg::Failure => anyhow::bail!("server refused to run the command"),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        match (status, signal) {
            (Some(s), _) => Ok(s),
            (None, Some(sig)) => anyhow::bail!("remote command killed by signal {sig:?}"),
            (None, None) => anyhow::bail!("remote command exited without an exit status"),
        }
    }

    /// Runs `line` and captures its output.
    pub async fn exec(&self, line: &str) -> anyhow::Result<ExecOutput> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let status = self.exec_to(line, &mut stdout, &mut stderr).await?;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Opens an SFTP session tuned for throughput (large writes, many in flight).
    pub async fn sftp(&self) -> anyhow::Result<russh_sftp::client::SftpSession> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| anyhow::anyhow!("cannot open session: {e}"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| anyhow::anyhow!("cannot start sftp: {e}"))?;
        russh_sftp::client::SftpSession::new_with_config(channel.into_stream(), sftp_config())
            .await
            .map_err(|e| anyhow::anyhow!("sftp: {e}"))
    }

    /// Whether the connection is gone (keepalives unanswered, server closed it).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    pub async fn close(self) -> anyhow::Result<()> {
        if self.handle.is_closed() {
            return Ok(());
        }
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| anyhow::anyhow!("disconnect: {e}"))
    }
}

/// Splits `host:port` (`[v6]:port` too); a missing port means 22, as ssh does.
fn split_addr(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("invalid address {addr:?}: missing ]"))?;
        (h, p.strip_prefix(':'))
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    let port = match port {
        None | Some("") => 22,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("invalid address {addr:?}: bad port {p:?}"))?,
    };
    if host.is_empty() {
        anyhow::bail!("invalid address {addr:?}: missing host");
    }
    Ok((host.to_string(), port))
}

/// What the host check decided during the handshake.
enum Verdict {
    Accepted(String),
    Rejected(String),
}

pub(crate) struct Handler {
    checker: hostkey::Checker,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl russh::client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = key.public_key();
        let verdict = match self.checker.check(&key) {
            Ok(()) => Verdict::Accepted(hostkey::fingerprint(&key)),
            Err(why) => Verdict::Rejected(why),
        };
        let ok = matches!(verdict, Verdict::Accepted(_));
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            split_addr("127.0.0.1:2022").unwrap(),
            ("127.0.0.1".into(), 2022)
        );
        assert_eq!(split_addr("host").unwrap(), ("host".into(), 22));
        assert_eq!(split_addr("[::1]:2022").unwrap(), ("::1".into(), 2022));
        assert!(split_addr("host:x").is_err());
        assert!(split_addr(":22").is_err());
    }
}
