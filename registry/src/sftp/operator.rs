//! Upload-only SFTP for operators (spec 1.9, fixed: durable uploads, size limits).
//!
//! Any open that asks to write starts a fresh upload; the requested name is ignored. CLOSE is
//! answered only once the upload is hashed, fsynced and registered, so `addver -hash` works as
//! soon as `put` returns. Handles still open when the session ends are finished the same way,
//! as the original did. Everything else (reads, listings, stat, mutations) is refused with
//! PERMISSION_DENIED, as the original refused it; `realpath` answers the cleaned path so that
//! `pwd` is `/`. One deliberate difference: FSETSTAT on an upload handle succeeds (and is
//! ignored), so that `scp` and `put -p` finish without an error.
//!
//! Each upload has a writer task: WRITE hands its data to it and is answered at once, so
//! hashing and writing the previous chunks overlap with receiving the next ones. A failed
//! write (a limit, a full disk) is reported on the next WRITE or at CLOSE.

use std::collections::HashMap;

use bytes::Bytes;

use common::digest::Digest;
use russh::ChannelStream;
use russh::server::Msg;
use russh_sftp::protocol::{
    File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::server::View;
use super::{MAX_HANDLES, bad_handle, denied, internal, path, store_failure, too_many_handles};
use crate::store::{Actor, Store, StoreError, Upload};

/// WRITE payloads queued for one upload's writer before WRITE replies wait (backpressure).
const QUEUED_WRITES: usize = 8;
/// Most queued writes handed to one blocking call.
const WRITE_BATCH: usize = 16;

/// Serves one operator SFTP session until the client closes it.
// The frozen entry point; the session code uses `serve_then` (exit-status before close).
#[allow(dead_code)]
pub async fn serve(stream: ChannelStream<Msg>, store: Store, actor: Actor) {
    serve_on(stream, store, actor, async {}).await;
}

/// Like [`serve`], then runs `before_close` after the session ended and before the channel
/// closes: the place to send `exit-status` 0 as sshd does, which `scp` (SFTP mode) requires
/// to report success.
pub async fn serve_then(
    stream: ChannelStream<Msg>,
    store: Store,
    actor: Actor,
    before_close: impl Future<Output = ()> + Send,
) {
    serve_on(stream, store, actor, before_close).await;
}

/// [`serve_then`] on any stream (tests drive it over an in-memory pipe).
pub async fn serve_on<S, F>(stream: S, store: Store, actor: Actor, before_close: F)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: Future<Output = ()>,
{
    let writers = TaskTracker::new();
    let handler = Operator {
        store,
        actor,
        uploads: HashMap::new(),
        next_handle: 0,
        writers: writers.clone(),
    };
    super::run(stream, handler, before_close).await;
    // Uploads left open by the client are finishing in their writers: the session (and a
    // graceful shutdown waiting for it) is over only when they are registered.
    writers.close();
    writers.wait().await;
}

struct Operator {
    store: Store,
    actor: Actor,
    uploads: HashMap<String, Slot>,
    next_handle: u64,
    /// The upload writers, so that the session waits for them.
    writers: TaskTracker,
}

enum Slot {
    Open(Writer),
    /// The writer stopped on an error: every later WRITE and the CLOSE get it.
    Failed(StatusReply),
}

struct Writer {
    chunks: mpsc::Sender<(u64, Bytes)>,
    /// Ends with the registered upload once `chunks` is dropped (CLOSE, or session end).
    done: JoinHandle<Result<(Digest, u64), StoreError>>,
}

/// Writes the queued chunks in arrival order, then finishes (hash, fsync, register) the upload
/// when the queue closes. Store calls block (disk, SQLite), so they run on the blocking pool:
/// measured, `block_in_place` here halved upload throughput (the worker it blocks also runs
/// the SSH session), while one `spawn_blocking` per batch of queued chunks costs little.
async fn write_upload(
    mut upload: Upload,
    mut chunks: mpsc::Receiver<(u64, Bytes)>,
    actor: Actor,
) -> Result<(Digest, u64), StoreError> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while chunks.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let todo = std::mem::replace(&mut batch, Vec::with_capacity(WRITE_BATCH));
        let (back, written) = tokio::task::spawn_blocking(move || {
            let r = todo
                .iter()
                .try_for_each(|(offset, data)| upload.write_at(*offset, data));
            (upload, r)
        })
        .await
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("upload writer: {e}")))?;
        upload = back;
        if let Err(err) = written {
            tracing::warn!(user = %actor.user, remote = %actor.remote_addr, cause = %err, "upload refused");
            return Err(err);
        }
    }
    // How long CLOSE waits for hashing the rest, fsync and registration: worth seeing in the log.
    let finishing = std::time::Instant::now();
    let (digest, size) = tokio::task::spawn_blocking(move || upload.finish())
        .await
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("upload finish: {e}")))??;
    tracing::info!(
        user = %actor.user,
        key = %actor.key_fingerprint,
        remote = %actor.remote_addr,
        hash = %digest,
        size,
        finish_ms = finishing.elapsed().as_millis() as u64,
        "upload registered"
    );
    Ok((digest, size))
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

/// What the writer's result becomes for the client.
fn finished(
    result: Result<Result<(Digest, u64), StoreError>, tokio::task::JoinError>,
) -> Result<(), StatusReply> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(store_failure(err)),
        Err(err) => Err(internal("upload task", &err)),
    }
}

impl Operator {
    /// The writer of `handle` stopped early: collect its error and remember it for the handle.
    async fn writer_failed(&mut self, handle: &str) -> StatusReply {
        let reply = match self.uploads.remove(handle) {
            Some(Slot::Open(w)) => {
                drop(w.chunks);
                match finished(w.done.await) {
                    Err(reply) => reply,
                    // The writer only stops early on an error; be safe if that ever changes.
                    Ok(()) => super::failure("upload already finished"),
                }
            }
            Some(Slot::Failed(reply)) => reply,
            None => bad_handle(),
        };
        self.uploads
            .insert(handle.to_string(), Slot::Failed(reply.clone()));
        reply
    }
}

impl View for Operator {
    async fn write_bytes(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Bytes,
    ) -> Result<Status, StatusReply> {
        match self.uploads.get(&handle) {
            None => Err(bad_handle()),
            Some(Slot::Failed(reply)) => Err(reply.clone()),
            Some(Slot::Open(w)) => {
                if w.chunks.send((offset, data)).await.is_ok() {
                    Ok(ok(id))
                } else {
                    Err(self.writer_failed(&handle).await)
                }
            }
        }
    }
}

impl russh_sftp::server::Handler for Operator {
    type Error = StatusReply;

    /// Every request this view does not serve is refused as the original's views refused
    /// them: PERMISSION_DENIED (write, setstat, remove, mkdir, rmdir, rename, readlink, symlink,
    /// ...). Unknown extended requests are OP_UNSUPPORTED (see `extended`).
    fn unimplemented(&self) -> StatusReply {
        denied()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, StatusReply> {
        Ok(super::version())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, StatusReply> {
        Ok(Name {
            id,
            files: vec![File::dummy(path::clean(&path))],
        })
    }

    async fn open(
        &mut self,
        id: u32,
        _filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, StatusReply> {
        let writes = OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        if !pflags.intersects(writes) {
            return Err(denied());
        }
        if self.uploads.len() >= MAX_HANDLES {
            return Err(too_many_handles());
        }
        let store = self.store.clone();
        let upload = tokio::task::spawn_blocking(move || store.begin_upload())
            .await
            .map_err(|e| internal("begin upload", &e))?
            .map_err(store_failure)?;
        let (chunks, queue) = mpsc::channel(QUEUED_WRITES);
        let done = self
            .writers
            .spawn(write_upload(upload, queue, self.actor.clone()));
        let handle = self.next_handle.to_string();
        self.next_handle += 1;
        self.uploads
            .insert(handle.clone(), Slot::Open(Writer { chunks, done }));
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, StatusReply> {
        self.write_bytes(id, handle, offset, Bytes::from(data))
            .await
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, StatusReply> {
        match self.uploads.remove(&handle) {
            None => Err(bad_handle()),
            Some(Slot::Failed(reply)) => Err(reply),
            Some(Slot::Open(w)) => {
                drop(w.chunks);
                finished(w.done.await).map(|()| ok(id))
            }
        }
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        _data: Vec<u8>,
    ) -> Result<Packet, StatusReply> {
        super::extended(id, &request)
    }

    // Everything below is refused, as in the original: operators upload, nothing else.

    async fn read(
        &mut self,
        _id: u32,
        _handle: String,
        _offset: u64,
        _len: u32,
    ) -> Result<russh_sftp::protocol::Data, StatusReply> {
        Err(denied())
    }

    async fn stat(
        &mut self,
        _id: u32,
        _path: String,
    ) -> Result<russh_sftp::protocol::Attrs, StatusReply> {
        Err(denied())
    }

    async fn lstat(
        &mut self,
        _id: u32,
        _path: String,
    ) -> Result<russh_sftp::protocol::Attrs, StatusReply> {
        Err(denied())
    }

    async fn fstat(
        &mut self,
        _id: u32,
        _handle: String,
    ) -> Result<russh_sftp::protocol::Attrs, StatusReply> {
        Err(denied())
    }

    /// Accepted and ignored on an upload handle: OpenSSH `scp` (SFTP mode) and `sftp put -p`
    /// set the mode after writing, and blobs are stored 0600 whatever they ask. The original
    /// refused it, which made both report an error although the upload went through.
    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        match self.uploads.get(&handle) {
            Some(Slot::Open(_)) => Ok(ok(id)),
            Some(Slot::Failed(reply)) => Err(reply.clone()),
            None => Err(bad_handle()),
        }
    }
}
