//! Downloads of layers without a published digest, resumable.
//!
//! The bytes go to `cache/resume-<id>`, `<id>` derived from the layer's locator, so an
//! interrupted download (a dropped connection, a killed agent) continues where it stopped:
//! the partial prefix is re-hashed and the rest asked for from its length. Only when the
//! object is still the one the partial came from: `resume-<id>.meta` records the validator
//! the sources expose for it (its locator, listed size and time: S3 `LastModified`, GCS
//! `timeCreated`, the GitHub release's time, the grpc answer's time); otherwise the
//! download starts from zero. The sources expose no ETag or generation, so a GitHub asset
//! re-uploaded with the same size into the same release, or an object replaced by one of the
//! same size within the same second, is not told apart. Neither name is
//! `temp-*`/`.partial`, so the cache's grace rule for unreferenced files (an hour) removes
//! abandoned ones.
//!
//! Nothing checks these bytes afterwards (there is no digest), so a partial is only trusted
//! up to what was fsynced: every [`CHECKPOINT`] bytes the file is synced and then its length
//! recorded in the meta file; a resume cuts the file back to that length. After a power cut
//! the unsynced tail may hold garbage; after a SIGKILL it is merely fetched again.

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use common::digest::{Digest, Hasher};
use common::timefmt::OffsetDateTime;
use sources::{Layer, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mkdir;
use crate::cache::Cache;

/// Scratch files of resumable downloads.
const RESUME_PREFIX: &str = "resume-";
/// A validator record is a few lines; a bigger file is not ours.
const MAX_META: u64 = 64 * 1024;
/// How much is downloaded between two fsync + record of the resumable length: at most this
/// much is fetched again after an interruption.
pub const CHECKPOINT: u64 = 4 << 20;

/// Downloads a layer that has no published digest into the cache and returns its sha256.
/// An artifact larger than `max_bytes` (what it may unpack to) is refused: Dewy's cap on a
/// download, with our limit. `created_at` is the release's listed time (part of the
/// validator).
pub async fn fetch_unverified(
    cache: &Cache,
    source: &Source,
    layer: &Layer,
    created_at: Option<OffsetDateTime>,
    io_timeout: Duration,
    max_bytes: u64,
) -> anyhow::Result<String> {
    if let Some(size) = layer.size.filter(|s| *s > max_bytes) {
        anyhow::bail!(
            "{} is {size} bytes, more than -max-unpack-bytes {max_bytes}",
            layer.name
        );
    }
    let dir = cache.dir();
    mkdir(dir)?;
    let id = &Digest::of(layer.locator.as_bytes()).to_hex()[..32];
    let part = dir.join(format!("{RESUME_PREFIX}{id}"));
    let meta = dir.join(format!("{RESUME_PREFIX}{id}.meta"));
    let dl = Download {
        source,
        layer,
        part: &part,
        meta: &meta,
        validator: validator(layer, created_at),
        io_timeout,
        max_bytes,
    };
    let mut resumed = dl.resumable().await;
    let res = loop {
        match dl.run(resumed.take()).await {
            Err(DlError::Resume(e)) => tracing::info!(
                layer = %layer.name,
                "cannot resume the partial download ({e:#}), starting from zero"
            ),
            other => break other,
        }
        // Starting over: what is there belongs to a download we gave up.
        let _ = std::fs::remove_file(&part);
        dl.record(0);
    };
    let hash = match res {
        Ok(h) => h,
        Err(DlError::Resume(e) | DlError::Keep(e)) => {
            return Err(e.context(format!("cannot download {}", layer.name)));
        }
        Err(DlError::Drop(e)) => {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&meta);
            return Err(e.context(format!("cannot download {}", layer.name)));
        }
    };
    let final_path = cache.path(&hash);
    if cache.contains(&hash) {
        let _ = std::fs::remove_file(&part);
    } else {
        std::fs::rename(&part, &final_path)
            .with_context(|| format!("cannot rename {}", part.display()))?;
        crate::cache::sync_dir(dir)?;
    }
    let _ = std::fs::remove_file(&meta);
    Ok(hash)
}

/// What must be unchanged for a partial download to be continued.
fn validator(layer: &Layer, created_at: Option<OffsetDateTime>) -> String {
    let size = layer.size.map_or("-".to_string(), |s| s.to_string());
    let time = created_at.map_or("-".to_string(), common::timefmt::rfc3339_nano);
    format!("v1\n{}\n{size}\n{time}\n", layer.locator)
}

/// The synced length a meta record states for `validator`; `None` when it is another
/// object's (or no record).
fn synced_len(record: &str, validator: &str) -> Option<u64> {
    record
        .strip_prefix(validator)?
        .strip_prefix("synced ")?
        .strip_suffix('\n')?
        .parse()
        .ok()
}

/// A partial download that may be continued: its length and the hash of its bytes.
struct Resumed {
    len: u64,
    hasher: Hasher,
}

/// How a download attempt failed, which decides what happens to the partial.
enum DlError {
    /// Asking for the rest failed: start again from zero.
    Resume(anyhow::Error),
    /// Interrupted: the partial is good for the next attempt.
    Keep(anyhow::Error),
    /// The bytes are unusable (too many, not the listed size), or a full disk.
    Drop(anyhow::Error),
}

struct Download<'a> {
    source: &'a Source,
    layer: &'a Layer,
    part: &'a Path,
    meta: &'a Path,
    validator: String,
    io_timeout: Duration,
    max_bytes: u64,
}

impl Download<'_> {
    /// The partial to continue, if its record matches the validator; otherwise a fresh
    /// record is written (before any byte) and the download starts from zero.
    async fn resumable(&self) -> Option<Resumed> {
        let record = std::fs::metadata(self.meta)
            .ok()
            .filter(|m| m.len() <= MAX_META)
            .and_then(|_| std::fs::read_to_string(self.meta).ok());
        match record.as_deref().map(|r| synced_len(r, &self.validator)) {
            Some(Some(len)) if len > 0 => match self.cut_and_rehash(len).await {
                Ok(Some(r)) => {
                    tracing::info!(bytes = r.len, "resuming a partial download");
                    return Some(r);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read {}: {e}", self.part.display()),
            },
            Some(None) => tracing::info!(
                layer = %self.layer.name,
                "the artifact changed since the partial download, starting from zero"
            ),
            Some(Some(_)) | None => {}
        }
        let _ = std::fs::remove_file(self.part);
        self.record(0);
        None
    }

    /// The partial cut back to its synced `len` and hashed; `None` when it is shorter or
    /// longer than the download may be.
    async fn cut_and_rehash(&self, len: u64) -> io::Result<Option<Resumed>> {
        if len > self.max_bytes || self.layer.size.is_some_and(|s| len > s) {
            return Ok(None);
        }
        let mut f = match tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.part)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if f.metadata().await?.len() < len {
            return Ok(None);
        }
        f.set_len(len).await?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut seen = 0u64;
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok((seen == len).then_some(Resumed { len, hasher }))
    }

    /// Records that the first `synced` bytes of the partial are durable. A record that
    /// cannot be written only costs a resume.
    fn record(&self, synced: u64) {
        let tmp = self
            .meta
            .with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let text = format!("{}synced {synced}\n", self.validator);
        let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, self.meta));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("cannot write {}: {e}", self.meta.display());
        }
    }

    async fn run(&self, resumed: Option<Resumed>) -> Result<String, DlError> {
        let (offset, mut hasher) = resumed.map_or((0, Hasher::new()), |r| (r.len, r.hasher));
        let keep = DlError::Keep;
        // A full disk drops the partial, as the layer cache does: kept for resuming, it would
        // hold the space (the running release's too) and the next attempt would fail the same.
        let io = |e: io::Error| {
            if common::disk::is_full(&e) {
                DlError::Drop(e.into())
            } else {
                DlError::Keep(e.into())
            }
        };
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.part)
            .await
            .with_context(|| format!("cannot open {}", self.part.display()))
            .map_err(keep)?;
        let secs = self.io_timeout.as_secs();
        let mut total = offset;
        // A partial as long as the listed size only missed its rename.
        if self.layer.size != Some(offset) || offset == 0 {
            let opened =
                tokio::time::timeout(self.io_timeout, self.source.fetch(self.layer, offset))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer for {secs}s"))
                    .and_then(|r| r.map_err(anyhow::Error::from));
            let mut reader = match opened {
                Ok(r) => r,
                Err(e) if offset > 0 => return Err(DlError::Resume(e)),
                Err(e) => return Err(keep(e)),
            };
            let mut buf = vec![0u8; 256 << 10];
            let mut synced = offset;
            loop {
                let n = tokio::time::timeout(self.io_timeout, reader.read(&mut buf))
                    .await
                    .map_err(|_| anyhow::anyhow!("no data for {secs}s"))
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .map_err(keep)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > self.max_bytes {
                    return Err(DlError::Drop(anyhow::anyhow!(
                        "more than -max-unpack-bytes {} bytes",
                        self.max_bytes
                    )));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(io)?;
                if total - synced >= CHECKPOINT {
                    out.flush().await.map_err(io)?;
                    out.sync_data().await.map_err(io)?;
                    self.record(total);
                    synced = total;
                }
            }
        }
        if let Some(size) = self.layer.size.filter(|s| *s != total) {
            // The object changed under the download (or the listing lied): the bytes
            // are a mix of two objects at worst.
            return Err(DlError::Drop(anyhow::anyhow!(
                "got {total} bytes, the registry listed {size}"
            )));
        }
        out.flush().await.map_err(io)?;
        out.sync_data().await.map_err(io)?;
        Ok(hasher.finish().to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_matches_only_its_validator() {
        let v = "v1\ns3://r/b/k\n10\n2026-01-01T00:00:00Z\n";
        assert_eq!(synced_len(&format!("{v}synced 4\n"), v), Some(4));
        let other = "v1\ns3://r/b/k\n10\n2026-01-01T00:00:01Z\n";
        assert_eq!(synced_len(&format!("{other}synced 4\n"), v), None);
        assert_eq!(synced_len(v, v), None);
        assert_eq!(synced_len(&format!("{v}synced x\n"), v), None);
    }
}
