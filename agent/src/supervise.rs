//! Server mode's process supervision, the way server-starter does it (spec dewy.md 8.5): the
//! ports are bound once here and every worker inherits them as fds 3, 4, ... with
//! `SERVER_STARTER_PORT=<port>=<fd>;...` and `SERVER_STARTER_GENERATION=<n>`, so a restart
//! is graceful: the new worker starts on the same sockets, then the old one gets SIGTERM,
//! and connections arriving in between wait in the sockets' backlog, which we keep open.
//! A worker of the newest generation that dies on its own is respawned with backoff.
//!
//! - [`listen`]: the command lookup and the listening sockets.
//! - [`spawn`]: forking a worker with its fds, signalling and reaping it.
//! - [`probe`]: the HTTP health check.

mod listen;
mod probe;
mod spawn;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use probe::probe;

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

/// The supervisor: owns the listening sockets and the workers. Dropping it stops the workers
/// (SIGTERM, no respawn); [`Supervisor::shutdown`] also waits for them.
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    program: PathBuf,
    /// The listening sockets, in port order; open for the supervisor's whole life, closed by
    /// its drop even while a task still holds `Inner` for a moment.
    listeners: Mutex<Option<Arc<Vec<OwnedFd>>>>,
    /// `SERVER_STARTER_PORT`'s value.
    port_env: String,
    _reserved: Vec<File>,
    /// One start, restart, respawn or shutdown at a time.
    ops: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// Bumped on every change of `state.workers`, to wait for workers to go.
    changed: watch::Sender<u64>,
    /// Cancelled on shutdown or drop: pending retirements and respawns give up (and let go of
    /// the sockets).
    stopped: CancellationToken,
}

#[derive(Default)]
struct State {
    /// The newest generation spawned (0: none yet).
    generation: u64,
    workers: Vec<Worker>,
    started: bool,
    stopping: bool,
    /// Consecutive early deaths of the newest generation, for the respawn backoff.
    crashes: u32,
}

#[derive(Clone)]
struct Worker {
    generation: u64,
    pid: u32,
    pidfd: Arc<OwnedFd>,
}

/// A worker that ran at least this long before dying resets the respawn backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// After SIGKILL, how long we wait for the kernel to end a worker before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The wait before respawning a worker that died `crashes` times in a row: 1 s doubling to
/// 30 s.
fn backoff(crashes: u32) -> Duration {
    Duration::from_secs((1u64 << crashes.min(5)).min(30))
}

/// `now + timeout`, or a far future when that does not fit (a huge `--health-timeout`).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

impl Supervisor {
    /// Checks the command and binds every port. Nothing runs yet.
    pub fn bind(config: Config) -> io::Result<Supervisor> {
        let program = listen::resolve_command(&config.command, &config.dir)?;
        let reserved = listen::reserve_low_fds(config.ports.len())?;
        let listeners = listen::bind_all(&config.ports)?;
        let port_env = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}={}", l.port, 3 + i))
            .collect::<Vec<_>>()
            .join(";");
        tracing::info!(
            ports = ?config.ports,
            command = %program.display(),
            "Listening for the server"
        );
        Ok(Supervisor {
            inner: Arc::new(Inner {
                config,
                program,
                listeners: Mutex::new(Some(Arc::new(
                    listeners.into_iter().map(|l| l.fd).collect(),
                ))),
                port_env,
                _reserved: reserved,
                ops: tokio::sync::Mutex::new(()),
                state: Mutex::new(State::default()),
                changed: watch::Sender::new(0),
                stopped: CancellationToken::new(),
            }),
        })
    }

    /// Starts a worker: the first one, or a graceful restart (new worker, then SIGTERM to the
    /// old ones after `kill_old_delay`). Returns the new generation once it is spawned.
    pub async fn start_or_restart(&self) -> io::Result<u64> {
        let _op = self.inner.ops.lock().await;
        {
            let mut st = self.inner.state();
            if st.stopping {
                return Err(io::Error::other("the server supervisor is shut down"));
            }
            st.crashes = 0;
        }
        self.inner.spawn_next().await
    }

    /// Whether a worker is meant to be running (started and not shut down).
    pub fn is_running(&self) -> bool {
        let st = self.inner.state();
        st.started && !st.stopping
    }

    /// Waits until only the newest generation's worker is alive (the old ones exited), at
    /// most `timeout`. Returns whether that happened.
    pub async fn wait_single_worker(&self, timeout: Duration) -> bool {
        self.inner
            .wait_until(timeout, |st| {
                st.workers.len() == 1 && st.workers[0].generation == st.generation
            })
            .await
    }

    /// SIGTERM to every worker, SIGKILL after `stop_timeout`, waits for them; no respawn
    /// afterwards.
    pub async fn shutdown(&self) {
        // First, so that a respawn waiting for `ops` gives up.
        self.inner.state().stopping = true;
        self.inner.stopped.cancel();
        let _op = self.inner.ops.lock().await;
        let all = self.inner.state().workers.clone();
        self.inner.stop(&all).await;
        self.inner.state().started = false;
        tracing::info!("Server stopped");
    }

    /// The newest generation started so far (0: none).
    pub fn generation(&self) -> u64 {
        self.inner.state().generation
    }

    /// The pids of the workers alive now, oldest first.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.state().workers.iter().map(|w| w.pid).collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.inner.stopped.cancel();
        drop(
            self.inner
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let mut st = self.inner.state();
        st.stopping = true;
        for w in &st.workers {
            spawn::signal(&w.pidfd, Signal::TERM);
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Spawns the next generation and retires the older ones. The caller holds `ops`.
    async fn spawn_next(self: &Arc<Self>) -> io::Result<u64> {
        let fds = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| io::Error::other("the server supervisor is shut down"))?;
        listen::check_executable(&self.program)?;
        let generation = self.state().generation + 1;
        let env = vec![
            ("SERVER_STARTER_PORT".into(), self.port_env.clone()),
            ("SERVER_STARTER_GENERATION".into(), generation.to_string()),
        ];
        let started = spawn::start(spawn::Spec {
            program: self.program.clone(),
            args: self.config.args.clone(),
            dir: self.config.dir.clone(),
            env,
            fds,
        })
        .await?;
        let pid = started.child.id();
        let pidfd = Arc::new(started.pidfd);
        let old: Vec<Worker> = {
            let mut st = self.state();
            st.generation = generation;
            st.started = true;
            let old = st.workers.clone();
            st.workers.push(Worker {
                generation,
                pid,
                pidfd: pidfd.clone(),
            });
            old
        };
        self.bump();
        tracing::info!(pid, generation, "worker started");
        tokio::spawn(self.clone().watch_boxed(started.child, pidfd, generation));
        if !old.is_empty() {
            let me = self.clone();
            tokio::spawn(async move {
                // A shutdown stops them itself, at once.
                tokio::select! {
                    _ = tokio::time::sleep(me.config.kill_old_delay) => me.stop(&old).await,
                    _ = me.stopped.cancelled() => {}
                }
            });
        }
        Ok(generation)
    }

    /// SIGTERM to `workers`, SIGKILL to those still there after `stop_timeout`; returns when
    /// they are all reaped (or the kernel did not end them within [`KILL_WAIT`]).
    async fn stop(&self, workers: &[Worker]) {
        if workers.is_empty() {
            return;
        }
        for w in workers {
            tracing::info!(pid = w.pid, generation = w.generation, "stopping worker");
            spawn::signal(&w.pidfd, Signal::TERM);
        }
        let gens: Vec<u64> = workers.iter().map(|w| w.generation).collect();
        let gone = |st: &State| !st.workers.iter().any(|w| gens.contains(&w.generation));
        if self.wait_until(self.config.stop_timeout, gone).await {
            return;
        }
        for w in workers {
            if self
                .state()
                .workers
                .iter()
                .any(|x| x.generation == w.generation)
            {
                tracing::warn!(
                    pid = w.pid,
                    generation = w.generation,
                    "worker still running {:?} after SIGTERM: SIGKILL",
                    self.config.stop_timeout
                );
                spawn::signal(&w.pidfd, Signal::KILL);
            }
        }
        if !self.wait_until(KILL_WAIT, gone).await {
            tracing::error!("a worker survived SIGKILL for {KILL_WAIT:?}");
        }
    }

    /// Whether `done(state)` held within `timeout`, checked at each change.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = deadline_after(timeout);
        loop {
            if done(&self.state()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (or, impossibly, the sender is gone): one last look.
                _ => return done(&self.state()),
            }
        }
    }

    /// [`Inner::watch`] behind a box: it calls back into `spawn_next` to respawn, and the
    /// compiler cannot prove such a recursive future `Send` without one.
    fn watch_boxed(
        self: Arc<Self>,
        child: std::process::Child,
        pidfd: Arc<OwnedFd>,
        generation: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.watch(child, pidfd, generation))
    }

    /// Waits for one worker to exit, reaps it, and respawns it if it was the newest
    /// generation and nobody asked it to stop.
    async fn watch(
        self: Arc<Self>,
        child: std::process::Child,
        pidfd: Arc<OwnedFd>,
        generation: u64,
    ) {
        let since = Instant::now();
        let pid = child.id();
        let status = spawn::wait(child, pidfd).await;
        let respawn_after = {
            let mut st = self.state();
            st.workers.retain(|w| w.generation != generation);
            if generation == st.generation && !st.stopping {
                if since.elapsed() >= STABLE_AFTER {
                    st.crashes = 0;
                }
                let delay = backoff(st.crashes);
                st.crashes = st.crashes.saturating_add(1);
                Some(delay)
            } else {
                None
            }
        };
        self.bump();
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        let Some(mut delay) = respawn_after else {
            tracing::info!(pid, generation, %status, "worker exited");
            return;
        };
        tracing::warn!(pid, generation, %status, "worker exited; respawning in {delay:?}");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stopped.cancelled() => return,
            }
            let _op = self.ops.lock().await;
            {
                let st = self.state();
                // A restart or a shutdown came in the meantime: nothing to respawn.
                if st.stopping || st.generation != generation {
                    return;
                }
            }
            match self.spawn_next().await {
                Ok(_) => return,
                Err(e) => {
                    let mut st = self.state();
                    delay = backoff(st.crashes);
                    st.crashes = st.crashes.saturating_add(1);
                    tracing::error!("cannot respawn the worker: {e}; next try in {delay:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_huge_timeout_is_a_far_deadline_not_a_panic() {
        assert!(deadline_after(Duration::MAX) > Instant::now() + Duration::from_secs(86_400));
    }
}
