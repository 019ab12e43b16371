//! Durable uploads: `uploads/upload-<random>` files, registered by hash in the DB once closed.
//!
//! The content is hashed while it arrives, because SFTP clients write in order and re-reading a
//! 1 GiB upload at CLOSE would double its disk I/O. Any write that is not at the current end of
//! the hashed prefix (out of order, overlapping, sparse) turns that off, and `finish` re-reads
//! the file instead.
//!
//! Registration happens only after the file is fsynced, so a registered upload is always whole.
//! Uploads are registered in the DB and so survive a restart (spec B4) until they expire.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::{Ctx, Digest, Inner, Result, Store, StoreError, unix_nanos};

const PREFIX: &str = "upload-";
/// How much of an upload may be dirty in the page cache before its writeback is started.
const WRITEBACK_CHUNK: u64 = 8 << 20;
/// Buffer for re-reading and fsck hashing.
pub(super) const READ_BUF: usize = 1 << 20;

/// An upload in progress (one SFTP write-open). The SFTP layer calls `finish` on CLOSE and, as
/// the original does, for handles still open when the session ends. Dropped without `finish`,
/// the file stays in `uploads/` unregistered and expiry removes it.
pub struct Upload {
    inner: Arc<Inner>,
    file: File,
    /// File name inside `uploads/`.
    name: String,
    hasher: Sha256,
    /// Bytes `[0, hashed)` went through `hasher`, in order.
    hashed: u64,
    /// False once a write was not at `hashed`: `finish` must re-read.
    in_order: bool,
    /// Largest end offset written.
    size: u64,
    /// Writeback of `[0, written_back)` was started (see `start_writeback`).
    written_back: u64,
    /// Cleared by `finish`, so that `Drop` does not count the upload out twice.
    counted: bool,
}

impl Upload {
    /// Writes `data` at `offset`. Sequential writes are hashed as they arrive; out-of-order
    /// writes make `finish` re-read the file. Fails with `StoreError::Limit` past the size limit.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let limit = self.inner.options.max_upload_bytes;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= limit)
            .ok_or_else(|| {
                StoreError::Limit(format!("upload exceeds the size limit of {limit} bytes"))
            })?;
        self.file
            .write_all_at(data, offset)
            .ctx(|| format!("writing uploads/{} at offset {offset}", self.name))?;
        if self.in_order && offset == self.hashed {
            self.hasher.update(data);
            self.hashed = end;
            if self.hashed - self.written_back >= WRITEBACK_CHUNK {
                self.start_writeback();
            }
        } else if !data.is_empty() {
            self.in_order = false;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Asks the kernel to start writing `[written_back, hashed)` to disk now, without waiting
    /// for it. The fsync in `finish` runs before CLOSE is answered; without this it would find
    /// the whole upload dirty and the client would wait for all of it (hundreds of ms per GiB).
    fn start_writeback(&mut self) {
        let len = self.hashed - self.written_back;
        #[allow(unsafe_code)]
        // SAFETY: sync_file_range only reads its integer arguments; the fd is owned by
        // `self.file` and open for the duration of the call.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.written_back as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        // Only an optimisation: on failure (e.g. a filesystem without support) `finish`'s
        // fsync still makes the upload durable.
        if rc == 0 {
            self.written_back = self.hashed;
        }
    }

    /// Hashes (if not done while writing), fsyncs and registers the upload so that `addver
    /// -hash` finds it, even after a restart, until it expires. Returns its digest and size.
    pub fn finish(mut self) -> Result<(Digest, u64)> {
        let path = self.inner.uploads.join(&self.name);
        let (digest, size) = if self.in_order && self.hashed == self.size {
            let hasher = std::mem::take(&mut self.hasher);
            (Digest(hasher.finalize().into()), self.size)
        } else {
            hash_reader(&mut &self.file).ctx(|| format!("re-reading {}", path.display()))?
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
        // The newest upload of a content wins; the older file is now unreferenced. Removed
        // after the commit: a crash in between leaves a stray file that expiry deletes.
        if let Some(old) = replaced.filter(|old| *old != self.name) {
            remove_if_exists(&self.inner.uploads.join(old))?;
        }
        tracing::info!(upload = %self.name, %hash, size, "upload registered");
        self.release();
        Ok((digest, size))
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.inner.open_uploads.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.release();
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
        let opened = self.create_upload_file();
        match opened {
            Ok((file, name)) => Ok(Upload {
                inner: Arc::clone(&self.inner),
                file,
                name,
                hasher: Sha256::new(),
                hashed: 0,
                in_order: true,
                size: 0,
                written_back: 0,
                counted: true,
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
