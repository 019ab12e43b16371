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
//! WRITE queues its data for the upload's hashing and disk threads (see `store::Upload`), so
//! hashing and writing the previous chunks overlap with receiving the next ones; it waits only
//! when one of those threads is behind. A failed write (a limit, a full disk)
//! is reported on that WRITE or, when the disk thread meets it, on a later WRITE or at CLOSE;
//! the handle then answers that error to everything.

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
use tokio_util::task::TaskTracker;

use super::server::View;
use super::{MAX_HANDLES, bad_handle, denied, internal, path, store_failure, too_many_handles};
use crate::store::{Actor, Store, StoreError, Upload};

/// Serves one operator SFTP session until the client closes it.
// The frozen entry point; the session code uses `serve_then` (exit-status before close).
#[allow(dead_code)]
pub async fn serve(stream: ChannelStream<Msg>, store: Store, actor: Actor) {
    serve_on(stream, store, actor, super::Context::alone(async {})).await;
}

/// Like [`serve`], in the connection's context `cx`: its `before_close` runs after the session
/// ended and before the channel closes, the place to send `exit-status` 0 as sshd does, which
/// `scp` (SFTP mode) requires to report success.
pub async fn serve_then(
    stream: ChannelStream<Msg>,
    store: Store,
    actor: Actor,
    cx: super::Context<impl Future<Output = ()> + Send>,
) {
    serve_on(stream, store, actor, cx).await;
}

/// [`serve_then`] on any stream (tests drive it over an in-memory pipe).
pub async fn serve_on<S, F>(stream: S, store: Store, actor: Actor, cx: super::Context<F>)
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
    super::run(stream, handler, cx).await;
    // Uploads left open by the client are finishing on the blocking pool (see `Drop for
    // Operator`): the session (and a graceful shutdown waiting for it) is over only when they
    // are registered.
    writers.close();
    writers.wait().await;
}

struct Operator {
    store: Store,
    actor: Actor,
    uploads: HashMap<String, Slot>,
    next_handle: u64,
    /// Uploads being finished after the session ended, so that the session waits for them.
    writers: TaskTracker,
}

enum Slot {
    Open(Upload),
    /// A write failed: every later WRITE and the CLOSE get its error.
    Failed(StatusReply),
}

/// Finishes (hash tail, fsync, register) an upload and logs it. Blocking: run on the blocking
/// pool.
fn finish_upload(upload: Upload, actor: &Actor) -> Result<(Digest, u64), StoreError> {
    // How long CLOSE waits for the disk queue, the tail, fsync and registration: worth seeing
    // in the log.
    let finishing = std::time::Instant::now();
    let (digest, size) = upload.finish()?;
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

fn refused(actor: &Actor, err: StoreError) -> StatusReply {
    tracing::warn!(user = %actor.user, remote = %actor.remote_addr, cause = %err, "upload refused");
    store_failure(err)
}

/// The handler is dropped when the session ends (see `super::run`): uploads still open are
/// finished as the original did, on the tracker that `serve_on` waits for.
impl Drop for Operator {
    fn drop(&mut self) {
        for (_, slot) in self.uploads.drain() {
            if let Slot::Open(upload) = slot {
                let actor = self.actor.clone();
                let finish = move || {
                    if let Err(err) = finish_upload(upload, &actor) {
                        refused(&actor, err);
                    }
                };
                // Outside a runtime (a session dropped by a runtime being torn down) nothing
                // else can run meanwhile: finish here.
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.writers.spawn_blocking(finish);
                } else {
                    finish();
                }
            }
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
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
        let upload = match self.uploads.get_mut(&handle) {
            None => return Err(bad_handle()),
            Some(Slot::Failed(reply)) => return Err(reply.clone()),
            Some(Slot::Open(upload)) => upload,
        };
        match upload.write_bytes(offset, data).await {
            Ok(()) => Ok(ok(id)),
            Err(err) => {
                // Dropping the upload removes its file: a failed upload is never registered.
                let reply = refused(&self.actor, err);
                self.uploads.insert(handle, Slot::Failed(reply.clone()));
                Err(reply)
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
        let handle = self.next_handle.to_string();
        self.next_handle += 1;
        self.uploads.insert(handle.clone(), Slot::Open(upload));
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
            Some(Slot::Open(upload)) => {
                let actor = self.actor.clone();
                match tokio::task::spawn_blocking(move || {
                    finish_upload(upload, &actor).map_err(|err| refused(&actor, err))
                })
                .await
                {
                    Ok(Ok(_)) => Ok(ok(id)),
                    Ok(Err(reply)) => Err(reply),
                    Err(err) => Err(internal("upload finish", &err)),
                }
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
