//! The layer cache: `cache/<sha256>`, one file per blob, named by the content's hash.
//!
//! A blob is downloaded to `cache/<sha256>.partial` while it is hashed, then checked,
//! `sync_data`ed, renamed into place and the directory fsynced, so a file named by its hash is
//! always complete and verified when it was written. An interrupted download is resumed: the
//! partial prefix is re-hashed and the transfer continues at its length (SFTP reads at an
//! offset). Layers in the cache never cross the network again; [`Cache::verify`] re-hashes a
//! cached blob before it is unpacked, so a blob damaged on disk is replaced, not trusted forever
//! (deploy-tools B15).

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use common::digest::Hasher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::unpack::StreamWriter;

/// A reader over one blob.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Where layer bytes come from (the registry's `files/<hash>` over SFTP, or a test double).
pub trait LayerSource: Sync {
    /// Opens the blob named `hash`, positioned at byte `offset`.
    fn open_blob(
        &self,
        hash: &str,
        offset: u64,
    ) -> impl Future<Output = anyhow::Result<BlobReader>> + Send;
}

const PARTIAL_SUFFIX: &str = ".partial";
const CHUNK: usize = 256 << 10;
/// Files not referenced by the current or pending configuration are kept this long, so that
/// a quick rollback does not download them again (the original's rule).
const UNREFERENCED_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "layer {hash}: downloaded content has sha256 {actual}, the partial download was removed"
    )]
    HashMismatch { hash: String, actual: String },
    #[error(
        "registry connection lost while downloading layer {hash} at byte {offset}, the partial download is kept for resuming"
    )]
    Network {
        hash: String,
        offset: u64,
        #[source]
        source: anyhow::Error,
    },
    #[error(
        "no data from the registry for {secs}s while downloading layer {hash} at byte {offset}"
    )]
    Stalled {
        hash: String,
        offset: u64,
        secs: u64,
    },
    #[error("disk full while writing {path:?}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| {
        if common::disk::is_full(&source) {
            CacheError::DiskFull {
                path: path.to_path_buf(),
                source,
            }
        } else {
            CacheError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What [`Cache::fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fetched {
    /// Bytes that crossed the network for this blob.
    pub downloaded: u64,
    /// Bytes of an earlier partial download that were reused.
    pub resumed_from: u64,
}

#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    io_timeout: Duration,
}

impl Cache {
    /// `dir` is `<-dir>/cache`. `io_timeout` bounds every single read from the source.
    pub fn new(dir: PathBuf, io_timeout: Duration) -> Cache {
        Cache { dir, io_timeout }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cache/<hash>`. `hash` must already be validated as 64 hex characters.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    pub fn contains(&self, hash: &str) -> bool {
        std::fs::symlink_metadata(self.path(hash)).is_ok_and(|m| m.is_file())
    }

    /// Makes sure `cache/<hash>` exists; downloads it (or the rest of it) if not.
    /// Returns `None` when the blob was already cached.
    pub async fn fetch<S: LayerSource>(
        &self,
        source: &S,
        hash: &str,
    ) -> Result<Option<Fetched>, CacheError> {
        self.fetch_into(source, hash, None).await
    }

    /// [`Cache::fetch`], also passing every byte of the blob (a resumed prefix included) to
    /// `tap` as it arrives, and telling it when the whole blob has verified.
    ///
    /// On a full disk the partial download is removed rather than kept for resuming: kept, it
    /// would hold the disk full for whatever else lives there (the running release, its logs)
    /// until the next attempt, which would fail the same way unless space was made.
    pub async fn fetch_into<S: LayerSource>(
        &self,
        source: &S,
        hash: &str,
        tap: Option<StreamWriter>,
    ) -> Result<Option<Fetched>, CacheError> {
        if self.contains(hash) {
            return Ok(None);
        }
        let partial = self.dir.join(format!("{hash}{PARTIAL_SUFFIX}"));
        let res = self.download(source, hash, &partial, tap).await;
        if let Err(CacheError::DiskFull { .. }) = &res {
            match tokio::fs::remove_file(&partial).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %partial.display(), error = %e, "cannot remove partial download");
                }
                _ => {}
            }
        }
        res
    }

    async fn download<S: LayerSource>(
        &self,
        source: &S,
        hash: &str,
        partial: &Path,
        mut tap: Option<StreamWriter>,
    ) -> Result<Option<Fetched>, CacheError> {
        create_dir(&self.dir)?;
        let final_path = self.path(hash);

        // Resume: the prefix must go through the hasher too, so the digest covers the file.
        let mut hasher = Hasher::new();
        let mut offset = match tokio::fs::File::open(partial).await {
            Ok(mut f) => {
                let mut buf = vec![0u8; CHUNK];
                let mut n_total = 0u64;
                loop {
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(io_err("cannot read", partial))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    if let Some(t) = &mut tap {
                        t.send(&buf[..n]).await;
                    }
                    n_total += n as u64;
                }
                n_total
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err("cannot open", partial)(e)),
        };
        let resumed_from = offset;
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(partial)
            .await
            .map_err(io_err("cannot create", partial))?;

        let mut reader =
            match tokio::time::timeout(self.io_timeout, source.open_blob(hash, offset)).await {
                Ok(Ok(r)) => r,
                Ok(Err(source)) => {
                    return Err(CacheError::Network {
                        hash: hash.into(),
                        offset,
                        source,
                    });
                }
                Err(_) => return Err(self.stalled(hash, offset)),
            };
        let mut buf = vec![0u8; CHUNK];
        // The last chunk handed to `out`, not yet to the unpacker: tokio's File writes in the
        // background and reports a failure only at the next operation, so a chunk goes on
        // once its write is done. The unpacker then only sees bytes the cache holds, and a
        // full disk is reported by whichever of the two met it first, not by a race between
        // them; the next read overlaps the write all the same.
        let mut held = vec![0u8; CHUNK];
        let mut held_len = 0;
        loop {
            let n = match tokio::time::timeout(self.io_timeout, reader.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    let _ = out.flush().await;
                    return Err(CacheError::Network {
                        hash: hash.into(),
                        offset,
                        source: e.into(),
                    });
                }
                Err(_) => {
                    let _ = out.flush().await;
                    return Err(self.stalled(hash, offset));
                }
            };
            if held_len > 0 {
                out.flush().await.map_err(io_err("cannot write", partial))?;
                if let Some(t) = &mut tap {
                    t.send(&held[..held_len]).await;
                }
            }
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .await
                .map_err(io_err("cannot write", partial))?;
            hasher.update(&buf[..n]);
            offset += n as u64;
            std::mem::swap(&mut buf, &mut held);
            held_len = n;
        }
        out.flush().await.map_err(io_err("cannot write", partial))?;
        let actual = hasher.finish().to_hex();
        if actual != hash {
            drop(out);
            let _ = tokio::fs::remove_file(partial).await;
            return Err(CacheError::HashMismatch {
                hash: hash.into(),
                actual,
            });
        }
        // The bytes are verified: the unpacker may finish this layer while the blob is made
        // durable (unless something needs the blob itself in place first).
        let tap = match tap {
            Some(t) if !t.is_once_stored() => {
                t.verified().await;
                None
            }
            other => other,
        };
        out.sync_data()
            .await
            .map_err(io_err("cannot sync", partial))?;
        drop(out);
        tokio::fs::rename(partial, &final_path)
            .await
            .map_err(io_err("cannot rename", partial))?;
        sync_dir(&self.dir)?;
        if let Some(t) = tap {
            t.verified().await;
        }
        Ok(Some(Fetched {
            downloaded: offset - resumed_from,
            resumed_from,
        }))
    }

    fn stalled(&self, hash: &str, offset: u64) -> CacheError {
        CacheError::Stalled {
            hash: hash.into(),
            offset,
            secs: self.io_timeout.as_secs(),
        }
    }

    /// Re-hashes `cache/<hash>`. A damaged blob is removed (so the next fetch downloads it
    /// again) and `false` returned.
    pub fn verify(&self, hash: &str) -> Result<bool, CacheError> {
        let path = self.path(hash);
        let actual = hash_file(&path).map_err(io_err("cannot read", &path))?;
        if actual == hash {
            return Ok(true);
        }
        tracing::error!(layer = hash, actual = %actual, "cached layer is corrupt, removing it");
        std::fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        Ok(false)
    }

    /// Removes cache files not named in `keep` (the layers of the current AND the pending
    /// configuration, B15): partial downloads and `temp-*` files at once unless they belong to
    /// a kept layer, anything else once it is older than an hour. A missing cache directory is
    /// not an error (B23).
    pub fn clean(&self, keep: &HashSet<String>) -> Result<usize, CacheError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("cannot read", &self.dir)(e)),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for ent in rd {
            let ent = ent.map_err(io_err("cannot read", &self.dir))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let Ok(meta) = ent.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let base = name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(&name);
            if keep.contains(base) {
                continue;
            }
            let scratch = name.starts_with("temp-") || name.ends_with(PARTIAL_SUFFIX);
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > UNREFERENCED_TTL);
            if scratch || old {
                let p = ent.path();
                std::fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn create_dir(dir: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("cannot create", dir))
}

/// fsync a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    let f = std::fs::File::open(dir).map_err(io_err("cannot open", dir))?;
    f.sync_all().map_err(io_err("cannot sync", dir))
}

fn hash_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish().to_hex());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests;
