//! The two SFTP views of the registry.
//!
//! - [`operator`]: upload-only. Any write-open is a fresh upload, hashed and registered before
//!   CLOSE is answered.
//! - [`service`]: what `deploy-agent` sees, read-only: `configs/<name>.json` and `files/<sha256>`.
//!
//! Both run our request loop ([`server`]) on [`stream::decoupled_parts`], which keeps reading
//! the channel while a reply waits for the client's window (the russh + russh-sftp deadlock,
//! spike-russh.md section 7).
//!
//! Errors: clients get a status code and a generic text; details (paths, causes) go to the log
//! only, so server paths never leak (deploy-tools A11).

pub mod operator;
pub mod path;
pub mod pool;
pub mod server;
pub mod service;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh_sftp::protocol::{ExtendedReply, Packet, StatusCode, Version};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// Largest SFTP packet we accept, length field excluded: 256 KiB as OpenSSH's sftp-server.
pub const MAX_PACKET: u32 = 256 << 10;
/// Largest READ answered / WRITE accepted, advertised through `limits@openssh.com`: OpenSSH's
/// 255 KiB, which leaves room for the packet header inside [`MAX_PACKET`]. Without the
/// extension OpenSSH `sftp` falls back to 32 KiB requests, measurably slower.
pub const MAX_READ_WRITE: u32 = MAX_PACKET - 1024;
/// Most handles one session may hold open at once.
pub const MAX_HANDLES: usize = 64;

const LIMITS_EXTENSION: &str = "limits@openssh.com";

/// The VERSION answer: protocol 3, advertising our limits.
fn version() -> Version {
    let mut extensions = HashMap::new();
    extensions.insert(LIMITS_EXTENSION.to_string(), "1".to_string());
    Version {
        version: 3,
        extensions,
    }
}

/// Answers the extended requests both views support (only `limits@openssh.com`).
fn extended(id: u32, request: &str) -> Result<Packet, StatusReply> {
    if request != LIMITS_EXTENSION {
        return Err(StatusCode::OpUnsupported.into());
    }
    let mut data = Vec::with_capacity(32);
    for v in [
        u64::from(MAX_PACKET),
        u64::from(MAX_READ_WRITE),
        u64::from(MAX_READ_WRITE),
        MAX_HANDLES as u64,
    ] {
        data.extend_from_slice(&v.to_be_bytes());
    }
    Ok(Packet::ExtendedReply(ExtendedReply { id, data }))
}

/// What the connection gives an SFTP session besides its stream.
pub struct Context<F> {
    /// Runs after the session ended, while the channel is still open (exit-status, EOF).
    pub before_close: F,
    /// See [`server::Ended::Stuck`].
    pub stall_limit: Duration,
    /// Cancelled when the session was stuck: the connection is to be dropped.
    pub stuck: CancellationToken,
    /// The room for waiting input that all sessions share ([`crate::server::input_room`]).
    pub input_room: Arc<Semaphore>,
}

impl<F> Context<F> {
    /// `before_close`, the stall limit for an idle limit of `idle_limit`, and the server's
    /// `stuck` token and `input_room`.
    pub fn new(
        before_close: F,
        idle_limit: Option<Duration>,
        stuck: CancellationToken,
        input_room: Arc<Semaphore>,
    ) -> Context<F> {
        Context {
            before_close,
            stall_limit: crate::server::stall_limit(idle_limit),
            stuck,
            input_room,
        }
    }

    /// A session on its own: no idle limit, nobody to tell it was stuck, room of its own.
    pub fn alone(before_close: F) -> Context<F> {
        Context::new(
            before_close,
            None,
            CancellationToken::new(),
            crate::server::input_room(),
        )
    }
}

/// Runs `handler` on `stream` (decoupled) until the client ends the session; then runs
/// `before_close` while the stream is still open, and closes it. The handler is dropped first,
/// which finishes what it holds (open uploads).
async fn run<S, H, F>(stream: S, handler: H, cx: Context<F>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: server::View,
    F: Future<Output = ()>,
{
    let (stream, reader) = stream::decoupled_parts(stream, cx.input_room);
    let (input, output) = stream.into_inner();
    let ended = server::serve(input, output, handler, MAX_PACKET, cx.stall_limit).await;
    // The reader task ends once the loop dropped the queue; the read half it returns keeps the
    // channel open for `before_close`.
    let read_half = reader.await;
    if ended == server::Ended::Stuck {
        // Dropping the channel unblocks russh's session loop, which waits to queue more of
        // it; `before_close` would wait on that loop, and the client would not read it.
        drop(read_half);
        cx.stuck.cancel();
        return;
    }
    cx.before_close.await;
    drop(read_half);
}

fn denied() -> StatusReply {
    StatusCode::PermissionDenied.with_message("Permission denied")
}

fn no_such_file() -> StatusReply {
    StatusCode::NoSuchFile.with_message("No such file")
}

fn failure(message: impl Into<String>) -> StatusReply {
    StatusCode::Failure.with_message(message)
}

fn bad_handle() -> StatusReply {
    failure("invalid handle")
}

fn too_many_handles() -> StatusReply {
    failure("too many open handles")
}

/// An I/O failure: the details are logged here, the client gets a generic text.
fn internal(what: &str, err: &dyn std::fmt::Display) -> StatusReply {
    tracing::warn!(cause = %err, "sftp: {what} failed");
    failure("internal error")
}

/// A store error as a status. Store texts are safe to show (they never hold paths); an
/// `Internal` error's cause is logged only.
fn store_failure(err: StoreError) -> StatusReply {
    match err {
        StoreError::Internal(cause) => internal("store", &format!("{cause:#}")),
        other => failure(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
