//! Starting a worker with the listeners on fds 3, 4, ... and waiting for it.
//!
//! Workers are forked from one long-lived thread of our own: `PR_SET_PDEATHSIG` fires when
//! the *thread* that forked the child ends, and a tokio blocking-pool thread ends after a few
//! idle seconds, which would kill a healthy worker.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;

/// What one worker is started with.
pub(super) struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    /// Set on top of our own environment, which the worker inherits.
    pub env: Vec<(String, String)>,
    /// Mapped onto 3, 4, ... in this order; all numbered at `3 + len` or above.
    pub fds: Arc<Vec<OwnedFd>>,
}

/// A started worker: the child (to reap it) and a pidfd (to signal exactly this process,
/// never a later one that reused its pid).
pub(super) struct Started {
    pub child: Child,
    pub pidfd: OwnedFd,
}

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Runs `job` on the spawner thread, starting that thread the first time.
fn on_spawner(job: Job) -> io::Result<()> {
    let mut guard = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = guard.as_ref() {
        // The thread never returns, so the receiver is alive.
        return tx
            .send(job)
            .map_err(|_| io::Error::other("the worker spawner thread is gone"));
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("worker-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })?;
    tx.send(job)
        .map_err(|_| io::Error::other("the worker spawner thread is gone"))?;
    *guard = Some(tx);
    Ok(())
}

/// Starts a worker. Its stdout and stderr are ours, stdin is `/dev/null`.
pub(super) async fn start(spec: Spec) -> io::Result<Started> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    on_spawner(Box::new(move || {
        let res = start_here(&spec);
        if let Err(Ok(mut orphan)) = tx.send(res) {
            // The caller went away (its future was dropped): nobody would supervise this
            // worker, so it must not live.
            let _ = rustix::process::pidfd_send_signal(&orphan.pidfd, Signal::KILL);
            let _ = orphan.child.wait();
        }
    }))?;
    rx.await
        .map_err(|_| io::Error::other("the worker spawner dropped the request"))?
}

fn start_here(spec: &Spec) -> io::Result<Started> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let pairs: Vec<(RawFd, RawFd)> = spec
        .fds
        .iter()
        .enumerate()
        .map(|(i, fd)| (fd.as_raw_fd(), 3 + i as RawFd))
        .collect();
    let first_free = 3 + spec.fds.len() as u32;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes raw system
    // calls (prctl, getppid, dup2, close_range): no allocation, no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || in_child(parent, &pairs, first_free));
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", spec.program.display()),
        )
    })?;
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("the worker has no valid pid"));
    match pid.and_then(|pid| {
        rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(io::Error::from)
    }) {
        Ok(pidfd) => Ok(Started { child, pidfd }),
        Err(e) => {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::new(
                e.kind(),
                format!("cannot watch the worker (pidfd_open needs Linux 5.3): {e}"),
            ))
        }
    }
}

/// The forked child, before exec.
#[allow(unsafe_code)]
fn in_child(parent: Pid, pairs: &[(RawFd, RawFd)], first_free: u32) -> io::Result<()> {
    // The worker dies with the agent, even a SIGKILLed one, so that no orphan keeps serving
    // an old release on the ports.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if rustix::process::getppid() != Some(parent) {
        // The agent died before the line above: the signal will never come.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    for &(from, to) in pairs {
        // SAFETY: both are descriptor numbers; `to` is below every `from` (listen.rs), so no
        // later source is overwritten. dup2 leaves the copy without close-on-exec.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Anything else a library opened without O_CLOEXEC stays with us. Kernels before 5.11
    // lack the flag; std opens everything close-on-exec already, so that is only a fallback.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}

/// Sends `signal` to the worker; a worker already gone is not an error.
pub(super) fn signal(pidfd: &OwnedFd, signal: Signal) {
    if let Err(e) = rustix::process::pidfd_send_signal(pidfd, signal)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!("cannot signal a worker: {e}");
    }
}

/// Waits for the worker to exit and reaps it.
pub(super) async fn wait(mut child: Child, pidfd: Arc<OwnedFd>) -> io::Result<ExitStatus> {
    // A pidfd turns readable when its process exits.
    // SAFETY: the AsyncFd holds its own `Arc` of the pidfd, so the descriptor stays open and
    // the same for the AsyncFd's whole life.
    #[allow(unsafe_code)]
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    match registered {
        Ok(fd) => loop {
            let mut ready = fd.readable().await?;
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            ready.clear_ready();
        },
        // No reactor for it: a blocking wait on the blocking pool instead.
        Err(_) => tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e))),
    }
}
