//! The SSH/SFTP client side shared by `deployctl` and `deploy-agent`: connect with a timeout,
//! verify the host key (fingerprint or known_hosts), authenticate (key file or ssh-agent), run
//! console commands, open tuned SFTP sessions.

use std::path::PathBuf;
use std::time::Duration;

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
    _private: (),
}

impl Connection {
    pub async fn connect(target: &Target) -> anyhow::Result<Connection> {
        let _ = target;
        todo!()
    }

    /// The server's host key fingerprint, `SHA256:...`.
    pub fn server_fingerprint(&self) -> &str {
        todo!()
    }

    /// Runs `line` (already quoted for the console) and copies its output to `stdout`/`stderr`
    /// as it arrives. Returns the exit status.
    pub async fn exec_to(
        &self,
        line: &str,
        stdout: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        stderr: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> anyhow::Result<u32> {
        let _ = (line, stdout, stderr);
        todo!()
    }

    /// Runs `line` and captures its output.
    pub async fn exec(&self, line: &str) -> anyhow::Result<ExecOutput> {
        let _ = line;
        todo!()
    }

    /// Opens an SFTP session tuned for throughput (large writes, many in flight).
    pub async fn sftp(&self) -> anyhow::Result<russh_sftp::client::SftpSession> {
        todo!()
    }

    pub async fn close(self) -> anyhow::Result<()> {
        todo!()
    }
}
