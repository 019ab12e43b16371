//! Server mode's process supervision, the way server-starter does it (spec dewy.md 8.5): the
//! ports are bound once here and every worker inherits them as fds 3, 4, ... with
//! `SERVER_STARTER_PORT=<port>=<fd>;...` and `SERVER_STARTER_GENERATION=<n>`, so a restart
//! is graceful: the new worker starts on the same sockets, then the old one gets SIGTERM.
//! A worker that dies on its own is respawned with backoff.
//!
//! STUB: the interface is frozen; the implementation is being written.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// The command (first argument after `--`); looked up in PATH when it has no `/`.
    pub command: String,
    pub args: Vec<String>,
    /// Ports to bind on all interfaces (empty: a job worker without ports).
    pub ports: Vec<u16>,
    /// Working directory of the workers.
    pub dir: PathBuf,
    /// How long the old worker keeps running after the new one started (server-starter's
    /// `KILL_OLD_DELAY`, default 0).
    pub kill_old_delay: Duration,
    /// How long a worker may take to exit after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
}

/// The supervisor: owns the listening sockets and the workers.
pub struct Supervisor {
    _private: (),
}

impl Supervisor {
    /// Checks the command and binds every port. Nothing runs yet.
    pub fn bind(config: Config) -> io::Result<Supervisor> {
        let _ = config;
        Err(io::Error::other("not implemented yet"))
    }

    /// Starts a worker: the first one, or a graceful restart (new worker, then SIGTERM to the
    /// old ones after `kill_old_delay`). Returns the new generation once it is spawned.
    pub async fn start_or_restart(&self) -> io::Result<u64> {
        Err(io::Error::other("not implemented yet"))
    }

    /// Whether a worker is meant to be running (started and not shut down).
    pub fn is_running(&self) -> bool {
        false
    }

    /// Waits until only the newest generation's worker is alive (the old ones exited), at
    /// most `timeout`. Returns whether that happened.
    pub async fn wait_single_worker(&self, timeout: Duration) -> bool {
        let _ = timeout;
        false
    }

    /// SIGTERM to every worker, SIGKILL after `stop_timeout`, waits for them; no respawn
    /// afterwards.
    pub async fn shutdown(&self) {}
}

/// Server mode's health check (Dewy #490): `GET http://127.0.0.1:<port><path>` every 2 s until
/// `timeout`; 2xx/3xx is healthy, redirects not followed. The error says what was seen last.
pub async fn probe(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let _ = (port, path, timeout);
    Err("not implemented yet".into())
}
