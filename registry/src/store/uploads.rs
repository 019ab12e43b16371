//! Durable uploads: `uploads/upload-<random>` files, registered by hash in the DB once closed.
//!
//! The content is hashed while it arrives, because SFTP clients write in order and re-reading a
//! 1 GiB upload at CLOSE would double its disk I/O. Any write that is not at the current end of
//! the hashed prefix (out of order, overlapping, sparse) turns that off, and `finish` re-reads
//! the file instead.
//!
//! Each upload has two threads, started by its first write: one hashes the sequential chunks
//! ([`hash`]), the other writes every chunk in arrival order ([`disk`]); they run in parallel,
//! and the caller (the SFTP loop) only queues. The disk thread writes with `O_DIRECT` in
//! aligned chunks: the page cache would cost a copy, its own bookkeeping and a writeback before
//! the fsync, which measured as the largest server-side cost of an upload after the cipher and
//! the hash. Where `O_DIRECT` is not available it writes through the page cache. Threads are
//! limited (`Options::max_threaded_uploads`): past the limit an upload is written inline, from
//! the blocking pool, and hashed at CLOSE.
//!
//! Registration happens only after the file is fsynced, so a registered upload is always whole.
//! Uploads are registered in the DB and so survive a restart (spec B4) until they expire.

mod disk;
mod hash;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::{Ctx, Digest, Inner, Result, Store, StoreError, unix_nanos};
pub use disk::{DIRECT_ALIGN, Written};

const PREFIX: &str = "upload-";
/// An upload checks the disk's free space against `-minfree` every so many bytes (and at open):
/// it may overshoot the reserve by this much and what its threads have queued (a few MiB). A
/// statvfs per MiB costs ~1 ms per GiB.
const MIN_FREE_CHECK: u64 = 1 << 20;
/// Buffer for re-reading and fsck hashing.
pub(super) const READ_BUF: usize = 1 << 20;

/// An upload in progress (one SFTP write-open). The SFTP layer calls `finish` on CLOSE and, as
/// the original does, for handles still open when the session ends. Dropped unregistered (a
/// write that failed, a full disk, a `finish` that failed), its file is removed at once: on a
/// full disk, the space it took is what the next upload needs. Only a crash leaves an
/// unregistered file, for expiry.
pub struct Upload {
    inner: Arc<Inner>,
    file: Arc<File>,
    /// File name inside `uploads/`.
    name: String,
    /// The hashing thread, started by the first write, dropped when the sequence breaks.
    hasher: Option<hash::Hasher>,
    /// Bytes `[0, hashed)` went to `hasher`, in order.
    hashed: u64,
    /// False once a write was not at `hashed`: `finish` must re-read.
    in_order: bool,
    /// Largest end offset written.
    size: u64,
    /// Bytes accepted since the free space was last checked.
    unchecked: u64,
    /// The disk thread, started by the first write (an upload opened and never written to,
    /// like the 64 handles of a client probing the limit, costs no thread).
    disk: Option<disk::Disk>,
    /// Whether the disk thread may try `O_DIRECT` (tests turn it off to cover the fallback).
    direct_io: bool,
    /// How the upload is written, chosen at its first write.
    mode: Mode,
    /// Bytes written inline (`Mode::Inline`).
    inline_bytes: u64,
    /// Cleared by `finish`, so that `Drop` does not count the upload out twice.
    counted: bool,
    /// Set once the upload is registered: from then on the file is the registry's.
    registered: bool,
}

impl Upload {
    /// Writes `data` at `offset`, blocking while the hashing or disk thread is behind. For synchronous
    /// callers; async code uses [`Upload::write_bytes`]. Sequential writes are hashed as they
    /// arrive; out-of-order writes make `finish` re-read the file. Fails with
    /// `StoreError::Limit` past the size limit (the upload stays usable), or with the error
    /// of an earlier write that failed on disk.
    // The server writes through `write_bytes`; this is for synchronous callers (tests, tools).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.inline() {
            self.accept(offset, data.len())?;
            write_inline(&self.file, offset, data)?;
            self.inline_bytes += data.len() as u64;
            return Ok(());
        }
        let sequential = self.accept(offset, data.len())?;
        let chunk = Bytes::copy_from_slice(data);
        if let (true, Some(hasher)) = (sequential, &self.hasher) {
            hasher.send_blocking(chunk.clone())?;
        }
        self.disk().send_blocking(offset, chunk)
    }

    /// [`Upload::write_at`] for async callers: hashing and writing happen on the upload's own
    /// threads, in parallel; this waits only when one of them has a full queue.
    pub async fn write_bytes(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if self.inline() {
            self.accept(offset, data.len())?;
            let (file, len) = (Arc::clone(&self.file), data.len() as u64);
            tokio::task::spawn_blocking(move || write_inline(&file, offset, &data))
                .await
                .map_err(|e| super::internal(anyhow::Error::new(e).context("upload write")))??;
            self.inline_bytes += len;
            return Ok(());
        }
        let sequential = self.accept(offset, data.len())?;
        if let (true, Some(hasher)) = (sequential, &self.hasher) {
            hasher.send(data.clone()).await?;
        }
        self.disk().send(offset, data).await
    }

    /// Checks the limit; true if the `len` bytes at `offset` continue the hashed prefix and go
    /// to the hashing thread.
    fn accept(&mut self, offset: u64, len: usize) -> Result<bool> {
        let limit = self.inner.options.max_upload_bytes;
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= limit)
            .ok_or_else(|| {
                StoreError::Limit(format!("upload exceeds the size limit of {limit} bytes"))
            })?;
        self.size = self.size.max(end);
        if len == 0 {
            return Ok(false);
        }
        self.unchecked += len as u64;
        if self.unchecked >= MIN_FREE_CHECK {
            self.unchecked = 0;
            check_min_free(&self.inner)?;
        }
        if self.in_order && offset == self.hashed && !matches!(self.mode, Mode::Inline) {
            if self.hasher.is_none() {
                self.hasher = hash::Hasher::start();
            }
            if self.hasher.is_some() {
                self.hashed = end;
                return Ok(true);
            }
        }
        // Out of sequence (or no hashing thread): `finish` re-reads the file.
        self.in_order = false;
        self.hasher = None;
        Ok(false)
    }

    /// Whether the upload is written inline; chosen at the first write: threads of its own
    /// if a slot is free, else inline (see `Options::max_threaded_uploads`).
    fn inline(&mut self) -> bool {
        if matches!(self.mode, Mode::Unchosen) {
            self.mode = match ThreadSlot::take(&self.inner) {
                Some(slot) => Mode::Threaded { _slot: slot },
                None => {
                    tracing::info!(upload = %self.name, "thread limit reached: written inline, hashed at close");
                    Mode::Inline
                }
            };
        }
        matches!(self.mode, Mode::Inline)
    }

    fn disk(&mut self) -> &mut disk::Disk {
        let (file, path, direct_io) = (
            &self.file,
            self.inner.uploads.join(&self.name),
            self.direct_io,
        );
        self.disk
            .get_or_insert_with(|| disk::Disk::start(Arc::clone(file), path, direct_io))
    }

    /// Hashes (if not done while writing), fsyncs and registers the upload so that `addver
    /// -hash` finds it, even after a restart, until it expires. Returns its digest and size.
    /// Blocks (disk, SQLite): async callers run it on the blocking pool.
    pub fn finish(self) -> Result<(Digest, u64)> {
        self.finish_counted()
            .map(|(digest, size, _)| (digest, size))
    }

    /// [`Upload::finish`], also telling how the bytes went to disk.
    pub fn finish_counted(mut self) -> Result<(Digest, u64, Written)> {
        let path = self.inner.uploads.join(&self.name);
        // Everything queued reaches the file (the unaligned tail through the page cache).
        let written = match self.disk.take() {
            Some(disk) => disk.close()?,
            None => Written {
                buffered: self.inline_bytes,
                ..Written::default()
            },
        };
        let (digest, size) = if self.in_order && self.hashed == self.size {
            let digest = match self.hasher.take() {
                Some(hasher) => hasher.finish()?,
                // Nothing was written.
                None => Digest(Sha256::new().finalize().into()),
            };
            (digest, self.size)
        } else {
            hash_reader(&mut &*self.file).ctx(|| format!("re-reading {}", path.display()))?
        };
        self.file
            .sync_all()
            .ctx(|| format!("fsync of {}", path.display()))?;
        // The file's directory entry too: a registered upload must survive a power loss.
        super::sync_dir(&self.inner.uploads)?;
        let hash = hex::encode(digest.0);
        let store = Store {
            inner: Arc::clone(&self.inner),
        };
        let replaced = {
            let mut conn = store.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(|| "begin".into())?;
            let old: Option<String> = tx
                .query_row("SELECT path FROM uploads WHERE hash = ?1", [&hash], |r| {
                    r.get(0)
                })
                .optional()
                .ctx(|| "looking up upload".into())?;
            tx.execute(
                "INSERT OR REPLACE INTO uploads (hash, path, size, created) VALUES (?1, ?2, ?3, ?4)",
                params![hash, self.name, size as i64, unix_nanos(common::timefmt::now())],
            )
            .ctx(|| "registering upload".into())?;
            tx.commit().ctx(|| "commit of upload".into())?;
            old
        };
        self.registered = true;
        // The newest upload of a content wins; the older file is now unreferenced. Removed
        // after the commit (a crash in between leaves a stray file that expiry deletes), and
        // off CLOSE's path: unlinking a 1 GiB file takes ~150 ms here, and its failure must
        // not fail an upload that is registered.
        if let Some(old) = replaced.filter(|old| *old != self.name) {
            remove_in_background(self.inner.uploads.join(old));
        }
        tracing::info!(
            upload = %self.name,
            %hash,
            size,
            direct_bytes = written.direct,
            copied_bytes = written.copied,
            buffered_bytes = written.buffered,
            "upload registered"
        );
        self.release();
        Ok((digest, size, written))
    }

    /// Makes the disk thread write through the page cache only, as on a filesystem without
    /// `O_DIRECT`. Only before the first write.
    #[cfg(test)]
    pub(super) fn without_direct_io(&mut self) {
        assert!(self.disk.is_none(), "already writing");
        self.direct_io = false;
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.inner.open_uploads.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How an upload's bytes are handled.
enum Mode {
    Unchosen,
    /// Hashing and disk threads of its own, holding one of the limited slots.
    Threaded {
        _slot: ThreadSlot,
    },
    /// Each write from the blocking pool, in turn; hashed by re-reading at `finish`.
    Inline,
}

/// One of `max_threaded_uploads` slots, given back when dropped.
struct ThreadSlot(Arc<Inner>);

impl ThreadSlot {
    fn take(inner: &Arc<Inner>) -> Option<ThreadSlot> {
        let max = inner.options.max_threaded_uploads;
        let taken = inner
            .threaded_uploads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| ThreadSlot(Arc::clone(inner)))
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.threaded_uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refuses an upload (at open, then as it grows) once the data directory's filesystem has less
/// free than `-minfree`: uploads must not take the space the metadata and the host need. A
/// filesystem that cannot say is not held against the upload.
fn check_min_free(inner: &Inner) -> Result<()> {
    let min = inner.options.min_free_bytes;
    if min == 0 {
        return Ok(());
    }
    let Ok(st) = rustix::fs::statvfs(&inner.uploads) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < min {
        return Err(StoreError::Limit(format!(
            "the registry's disk is nearly full: uploads leave {min} bytes free (-minfree), {free} are free"
        )));
    }
    Ok(())
}

/// One write of an inline upload, through the page cache (`finish` fsyncs).
fn write_inline(file: &File, offset: u64, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    file.write_all_at(data, offset)
        .ctx(|| format!("writing an upload at offset {offset}"))
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.release();
        if !self.registered {
            match std::fs::remove_file(self.inner.uploads.join(&self.name)) {
                Ok(()) => tracing::info!(upload = %self.name, "abandoned upload removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(upload = %self.name, cause = %e, "cannot remove an abandoned upload, expiry will")
                }
            }
        }
    }
}

/// sha256 and length of everything `r` yields, read in 1 MiB steps.
pub(super) fn hash_reader(r: &mut impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Digest(hasher.finalize().into()), total))
}

/// Removes a file; a file already gone is fine.
/// Removes `path` on a thread of its own (inline if none can be had), logging a failure.
fn remove_in_background(path: std::path::PathBuf) {
    let remove = move || {
        if let Err(err) = remove_if_exists(&path) {
            tracing::warn!(cause = %err, "removing a replaced upload failed; expiry will");
        }
    };
    let inline = remove.clone();
    if std::thread::Builder::new()
        .name("upload-unlink".into())
        .spawn(remove)
        .is_err()
    {
        inline();
    }
}

pub(super) fn remove_if_exists(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
    }
}

impl Store {
    pub fn begin_upload(&self) -> Result<Upload> {
        let max = self.inner.options.max_pending_uploads;
        let registered: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM uploads", [], |r| r.get(0))
            .ctx(|| "counting uploads".into())?;
        // Counted before the check so that concurrent begins cannot all pass it.
        let open = self.inner.open_uploads.fetch_add(1, Ordering::Relaxed);
        if usize::try_from(registered)
            .unwrap_or(usize::MAX)
            .saturating_add(open)
            >= max
        {
            self.inner.open_uploads.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Limit(format!(
                "too many pending uploads (limit {max}): use them with addver or wait for them to expire"
            )));
        }
        if let Err(e) = check_min_free(&self.inner) {
            self.inner.open_uploads.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        let opened = self.create_upload_file();
        match opened {
            Ok((file, name)) => Ok(Upload {
                inner: Arc::clone(&self.inner),
                file: Arc::new(file),
                name,
                hasher: None,
                hashed: 0,
                in_order: true,
                size: 0,
                unchecked: 0,
                disk: None,
                direct_io: true,
                mode: Mode::Unchosen,
                inline_bytes: 0,
                counted: true,
                registered: false,
            }),
            Err(e) => {
                self.inner.open_uploads.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn create_upload_file(&self) -> Result<(File, String)> {
        // O_EXCL with a random name: a collision (practically impossible) just draws again.
        for _ in 0..16 {
            let name = format!("{PREFIX}{}", rand::random::<u64>());
            let path = self.inner.uploads.join(&name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok((file, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).ctx(|| format!("creating {}", path.display())),
            }
        }
        Err(super::internal(anyhow::anyhow!(
            "no free upload name in {}",
            self.inner.uploads.display()
        )))
    }

    /// Deletes uploads older than the TTL that no addver used. Returns how many.
    ///
    /// Registered uploads age by their DB `created` time; a registration whose file vanished is
    /// dropped at once; unregistered `upload-*` files (a crash before registration, a handle
    /// dropped without finish) age by mtime, which an upload still being written keeps fresh.
    pub fn expire_uploads(&self) -> Result<usize> {
        let ttl = self.inner.options.upload_ttl;
        let now = common::timefmt::now();
        let cutoff =
            unix_nanos(now).saturating_sub(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX));
        let mut removed = 0;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| "begin".into())?;
        let rows: Vec<(String, String, i64)> = {
            let mut stmt = tx
                .prepare("SELECT hash, path, created FROM uploads")
                .ctx(|| "listing uploads".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .ctx(|| "listing uploads".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "listing uploads".into())?
        };
        let mut registered = std::collections::HashSet::new();
        for (hash, name, created) in rows {
            let path = self.inner.uploads.join(&name);
            let expired = created < cutoff;
            let vanished = !path.exists();
            if expired || vanished {
                if expired {
                    remove_if_exists(&path)?;
                    removed += 1;
                } else {
                    tracing::warn!(upload = %name, %hash, "registered upload file vanished; dropping it");
                }
                tx.execute("DELETE FROM uploads WHERE hash = ?1", [&hash])
                    .ctx(|| "deleting upload".into())?;
            } else {
                registered.insert(name);
            }
        }
        tx.commit().ctx(|| "commit of upload expiry".into())?;
        // Still under the connection lock: a `finish` cannot register a file between our
        // listing of the table and the directory walk below.
        let entries = std::fs::read_dir(&self.inner.uploads)
            .ctx(|| format!("listing {}", self.inner.uploads.display()))?;
        let ttl_ago = SystemTime::now()
            .checked_sub(ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", self.inner.uploads.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(PREFIX) || registered.contains(name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if meta.modified().map(|m| m < ttl_ago).unwrap_or(false) {
                remove_if_exists(&entry.path())?;
                removed += 1;
            }
        }
        drop(conn);
        if removed > 0 {
            tracing::info!(removed, "expired uploads");
        }
        Ok(removed)
    }

    /// Path of the upload registered under `hash`, if any (for tests and diagnostics).
    #[cfg(test)]
    pub(super) fn pending_upload(&self, hash: &str) -> Option<std::path::PathBuf> {
        let name: Option<String> = self
            .conn()
            .query_row("SELECT path FROM uploads WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten();
        name.map(|n| self.inner.uploads.join(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    /// Uploads `data` in SFTP-sized writes with or without direct I/O; returns what `finish`
    /// reported and the registered file's bytes.
    fn upload(direct_io: bool, data: &[u8]) -> (String, u64, Written, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), Options::default()).unwrap();
        let mut up = store.begin_upload().unwrap();
        if !direct_io {
            up.without_direct_io();
        }
        for (i, chunk) in data.chunks(261_120).enumerate() {
            up.write_at((i * 261_120) as u64, chunk).unwrap();
        }
        let (digest, size, written) = up.finish_counted().unwrap();
        let hash = hex::encode(digest.0);
        let stored = std::fs::read(store.pending_upload(&hash).expect("registered")).unwrap();
        (hash, size, written, stored)
    }

    fn data() -> Vec<u8> {
        (0..(9u32 << 20) + 4321).map(|i| (i % 241) as u8).collect()
    }

    /// Past `max_threaded_uploads`, an upload gets no threads: same file, same hash, and the
    /// slot of a finished upload is free for the next one.
    #[test]
    fn past_the_thread_limit_uploads_are_written_inline_and_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            max_threaded_uploads: 1,
            ..Options::default()
        };
        let store = Store::open(tmp.path(), options).unwrap();
        let data = data();
        let mut a = store.begin_upload().unwrap();
        let mut b = store.begin_upload().unwrap();
        for (i, chunk) in data.chunks(261_120).enumerate() {
            a.write_at((i * 261_120) as u64, chunk).unwrap();
            b.write_at((i * 261_120) as u64, chunk).unwrap();
        }
        assert!(matches!(a.mode, Mode::Threaded { .. }));
        assert!(matches!(b.mode, Mode::Inline));
        assert_eq!(store.inner.threaded_uploads.load(Ordering::Acquire), 1);
        let want = hex::encode(Sha256::digest(&data));
        let (da, _, _) = a.finish_counted().unwrap();
        let (db, size, written) = b.finish_counted().unwrap();
        assert_eq!(
            (hex::encode(da.0), hex::encode(db.0)),
            (want.clone(), want.clone())
        );
        assert_eq!(size, data.len() as u64);
        assert_eq!(written.buffered, data.len() as u64);
        let stored = std::fs::read(store.pending_upload(&want).unwrap()).unwrap();
        assert_eq!(stored, data);
        assert_eq!(store.inner.threaded_uploads.load(Ordering::Acquire), 0);
        let mut c = store.begin_upload().unwrap();
        c.write_at(0, b"x").unwrap();
        assert!(
            matches!(c.mode, Mode::Threaded { .. }),
            "a's slot came back"
        );
    }

    /// The async path of an inline upload (writes from the blocking pool).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_upload_written_from_async_code() {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            max_threaded_uploads: 0,
            ..Options::default()
        };
        let store = Store::open(tmp.path(), options).unwrap();
        let data = data();
        let mut up = store.begin_upload().unwrap();
        for (i, chunk) in data.chunks(261_120).enumerate() {
            up.write_bytes((i * 261_120) as u64, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }
        assert!(matches!(up.mode, Mode::Inline));
        let (digest, size) = tokio::task::spawn_blocking(move || up.finish())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hex::encode(digest.0), hex::encode(Sha256::digest(&data)));
        assert_eq!(size, data.len() as u64);
    }

    /// The path taken where `O_DIRECT` is refused at open (tmpfs before Linux 6.6): same
    /// file, same hash, all of it through the page cache.
    #[test]
    fn without_direct_io_the_upload_is_the_same() {
        let data = data();
        let (hash, size, written, stored) = upload(false, &data);
        assert_eq!(hash, hex::encode(Sha256::digest(&data)));
        assert_eq!(size, data.len() as u64);
        assert_eq!(stored, data);
        assert_eq!(written.direct, 0);
        assert_eq!(written.buffered, data.len() as u64);
    }

    #[test]
    fn a_sequential_upload_is_written_direct_where_possible() {
        let data = data();
        let (hash, size, written, stored) = upload(true, &data);
        assert_eq!(hash, hex::encode(Sha256::digest(&data)));
        assert_eq!(size, data.len() as u64);
        assert_eq!(stored, data);
        assert_eq!(written.direct + written.buffered, data.len() as u64);
        // The test directory is on the filesystem of TMPDIR: most support O_DIRECT; where one
        // does not, everything was buffered, which the test above covers.
        if written.direct == 0 {
            eprintln!("note: no O_DIRECT on the temporary directory's filesystem");
        } else {
            assert_eq!(
                written.buffered,
                data.len() as u64 % DIRECT_ALIGN as u64,
                "only the last partial block is buffered: {written:?}"
            );
        }
    }
}
