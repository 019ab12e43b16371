//! The SSH listener: accept loop, connection limit, handshake limit, graceful shutdown.
//!
//! We run our own accept loop around `russh::server::run_stream` rather than russh's
//! `run_on_socket`, because the latter disconnects every session the moment shutdown is asked
//! for; we want running commands and transfers to finish (spec B7). Shutdown, mini-redis style:
//! the `shutdown` future fires → the loop stops accepting and cancels `token` → each connection
//! disconnects once it has no running work (idle shells end at their next prompt) → `run`
//! waits on the `TaskTracker`, bounded by `-shutdown-timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use russh::keys::ssh_key::PrivateKey;
use russh::server::Config;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::keys::Keyring;
use crate::session::Connection;
use crate::store::Store;

/// Most client input waiting to be served, all sessions together: SFTP requests (at most
/// [`crate::sftp::stream::QUEUE_CAP`] per session) and console input (at most 8 MiB per
/// shell). Without it, every channel of every connection could hold its own cap (256 × 8 ×
/// 64 MiB at the default `-maxconn`).
pub const TOTAL_INPUT_CAP: usize = 256 << 20;

/// The room for waiting input that all sessions share, [`TOTAL_INPUT_CAP`] bytes, one
/// permit per byte: one per server.
pub fn input_room() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(TOTAL_INPUT_CAP))
}

/// How long input may wait for room in [`input_room`], and an SFTP reply for window while
/// the client's requests fill our queue ([`crate::sftp::server::Ended::Stuck`]): `-deadline`
/// (the idle limit), at most a minute. Past it the session is ended.
pub fn stall_limit(idle_limit: Option<Duration>) -> Duration {
    const MOST: Duration = Duration::from_secs(60);
    idle_limit.map_or(MOST, |d| d.min(MOST))
}

/// Time allowed from accept to successful authentication (the original's 20 s deadline).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(20);

/// What every connection shares.
pub struct Shared {
    pub store: Store,
    pub keys: Arc<Keyring>,
    /// Cancelled when shutdown starts.
    pub token: CancellationToken,
    /// Tracks connections and the work they spawn (consoles, transfers).
    pub tracker: TaskTracker,
    /// `-deadline`: the idle limit, `None` for none.
    pub idle_limit: Option<Duration>,
    /// The room for waiting input all sessions share ([`input_room`]).
    pub input_room: Arc<Semaphore>,
}

/// The russh configuration: public keys only, tuned windows, idle limit = `-deadline`.
pub fn ssh_config(host_key: PrivateKey, deadline: Option<Duration>) -> Config {
    Config {
        server_id: russh::SshId::Standard("SSH-2.0-deploy-registry".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH probes with "none" first; the default 1 s delay on it costs every login a
        // second (spike-russh.md section 8). Real rejections keep the constant delay.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: 16 << 20,
        maximum_packet_size: 65535,
        nodelay: true,
        // russh queues up to this many messages (each up to `maximum_packet_size`) per channel
        // before its session loop waits for us; every channel is read as soon as it opens, so
        // the queue fills only while we are behind. The default 100 let a connection hold
        // 8 × 6.4 MiB; 8 bounds it at 4 MiB, with no measurable effect on transfer speed
        // (1 GiB put and get, aes256-gcm, 4 vs 16 vs 100: same within the noise).
        channel_buffer_size: 8,
        // `-deadline` is an idle limit here: long transfers are not cut, and 0 means none (B6).
        inactivity_timeout: deadline,
        ..Default::default()
    }
}

/// Serves until `shutdown` completes, then drains for at most `drain_limit`.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shared: Arc<Shared>,
    maxconn: usize,
    drain_limit: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(maxconn));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(100);
                pair
            }
            Err(err) => {
                // Out of file descriptors and the like pass with time; do not spin.
                tracing::error!(cause = %err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(addr = %peer, maxconn, "connection refused: too many connections");
            drop(socket);
            continue;
        };
        let (config, shared2) = (config.clone(), shared.clone());
        shared.tracker.spawn(async move {
            serve_connection(socket, peer, config, shared2).await;
            drop(permit);
        });
    }
    drop(listener);
    shared.token.cancel();
    shared.tracker.close();
    if tokio::time::timeout(drain_limit, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown timeout ({}) reached, closing the remaining sessions",
            common::goflag::format_duration(drain_limit)
        );
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    shared: Arc<Shared>,
) {
    if let Err(err) = socket.set_nodelay(true) {
        tracing::debug!(addr = %peer, cause = %err, "set_nodelay failed");
    }
    // A second handle on the socket: russh's session task cannot be aborted from outside, and
    // a client stalled in the key exchange never reads a polite disconnect, so limits end the
    // connection by shutting the socket down under the session.
    let (socket, killer) = match split_killer(socket) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(addr = %peer, cause = %err, "connection dropped: cannot duplicate socket");
            return;
        }
    };
    let kill = || {
        let _ = killer.shutdown(std::net::Shutdown::Both);
    };
    // See `sftp::server::Ended::Stuck`.
    let cut_stuck = || {
        tracing::warn!(addr = %peer, "connection closed: the client stopped reading replies but kept sending SFTP requests");
        kill();
    };
    let (authed_tx, authed_rx) = oneshot::channel();
    let busy = Arc::new(AtomicUsize::new(0));
    let stuck = CancellationToken::new();
    let handler = Connection::new(shared.clone(), peer, authed_tx, busy.clone(), stuck.clone());
    let session = match tokio::time::timeout(
        HANDSHAKE_LIMIT,
        russh::server::run_stream(config, socket, handler),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => {
            log_connection_error(peer, &err);
            return;
        }
        Err(_) => {
            tracing::info!(addr = %peer, "connection closed: no SSH identification within {HANDSHAKE_LIMIT:?}");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    // Phase 1: authentication must complete within the handshake limit.
    let auth_deadline = tokio::time::sleep(HANDSHAKE_LIMIT);
    tokio::pin!(auth_deadline);
    let mut authed_rx = authed_rx;
    let mut authed = false;
    loop {
        tokio::select! {
            result = &mut session => {
                if let Err(err) = result {
                    log_connection_error(peer, &err);
                }
                return;
            }
            // An error means the handler is gone: the session is ending, its result comes next.
            _ = &mut authed_rx, if !authed => authed = true,
            () = &mut auth_deadline, if !authed => {
                tracing::info!(addr = %peer, "connection closed: authentication not completed within {HANDSHAKE_LIMIT:?}");
                disconnect(&handle, "authentication timeout").await;
                kill();
                return;
            }
            () = stuck.cancelled() => return cut_stuck(),
            () = shared.token.cancelled() => break,
        }
    }
    // Phase 2: shutting down. Let running work finish, then say goodbye.
    loop {
        if busy.load(Ordering::SeqCst) == 0 {
            disconnect(&handle, "server shutting down").await;
            if tokio::time::timeout(Duration::from_secs(2), &mut session)
                .await
                .is_err()
            {
                kill();
            }
            return;
        }
        tokio::select! {
            result = &mut session => {
                if let Err(err) = result {
                    log_connection_error(peer, &err);
                }
                return;
            }
            () = stuck.cancelled() => return cut_stuck(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn split_killer(socket: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = socket.into_std()?;
    let killer = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, killer))
}

async fn disconnect(handle: &russh::server::Handle, reason: &str) {
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            reason.to_string(),
            String::new(),
        )
        .await;
}

fn log_connection_error(peer: SocketAddr, err: &anyhow::Error) {
    // A peer that just goes away is not worth a log line (the original skipped io.EOF).
    if let Some(russh::Error::IO(io)) = err.downcast_ref::<russh::Error>()
        && matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        )
    {
        return;
    }
    match err.downcast_ref::<russh::Error>() {
        Some(russh::Error::Disconnect | russh::Error::HUP) => return,
        Some(russh::Error::InactivityTimeout) => {
            tracing::info!(addr = %peer, "connection closed: idle for longer than -deadline");
            return;
        }
        _ => {}
    }
    tracing::warn!(addr = %peer, "connection error: {err:#}");
}
