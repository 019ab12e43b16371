//! Getting a release's layers into the content-addressed cache (`<dir>/cache/<sha256>`), and
//! Dewy's cache keys beside it.
//!
//! - A layer with a published digest (OCI, a checksums file) goes through [`Cache::fetch`]:
//!   verified while streaming, resumable, a mismatch never lands in the cache.
//! - A layer without one (GitHub/S3/GCS artifact, no checksums file) is downloaded to a
//!   `resume-*` file named after its locator while it is hashed, then renamed to
//!   `cache/<its sha256>`; an interrupted download continues while the object is unchanged
//!   ([`fetch_unverified`]).
//!
//! Dewy keys (spec dewy.md 6.2/6.3): for a one-artifact release the artifact is also at
//! `<dewy cache>/<tag>--<artifact>` (a hard link to the cache blob, a copy across
//! filesystems), and `<dewy cache>/current` holds that key after a deploy, so Go Dewy sharing
//! the directory finds the same bytes under its own names. The content-addressed cache is the
//! truth; the key files are a view of it. Because an artifact key names immutable bytes in
//! Dewy's model, a present key file also stands in for the download: it is hashed and linked
//! into the cache instead of fetched again.
//!
//! `-cache URL` (spec 6.2): `file:///dir` moves that directory; `s3://…`/`gs://…` put Dewy's
//! shared cache ([`sources::cache`]) in front of the source, with the directory as its local
//! staging, so the key files above are also what the bucket holds.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use common::dewy::url::RegistryUrl;
use common::digest::{Digest, Hasher};
use common::timefmt::OffsetDateTime;
use sources::cache::{Backend, CacheConfig, Shared};
use sources::http::{HttpClient, HttpConfig};
use sources::{Layer, Source, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::{BlobReader, Cache, LayerSource};
use crate::cli::Options;

/// A [`LayerSource`] over one layer of a [`Source`] (the cache asks by hash).
pub struct LayerBlob<'a> {
    pub source: &'a Source,
    pub layer: &'a Layer,
}

impl LayerSource for LayerBlob<'_> {
    async fn open_blob(&self, _hash: &str, offset: u64) -> anyhow::Result<BlobReader> {
        let s = self.source.fetch(self.layer, offset).await?;
        Ok(s)
    }
}

/// `$DEWY_CACHEDIR`, else `<dir>/.dewy/cache` (Dewy's `$PWD/.dewy/cache`: `-dir` is where our
/// `releases/` and `current` live, as Dewy's working directory holds its own).
pub fn dewy_cache_dir(dir: &Path) -> PathBuf {
    match std::env::var_os("DEWY_CACHEDIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => dir.join(".dewy").join("cache"),
    }
}

/// Dewy's cache directory under `-cache`: the URL's path for `file:///dir`, else
/// [`dewy_cache_dir`] (the local staging of an S3/GCS cache).
pub fn dewy_cache_dir_for(opts: &Options) -> PathBuf {
    match sources::cache::config::parse(&opts.cache) {
        Ok(CacheConfig {
            backend: Backend::File { dir: Some(d) },
            ..
        }) => d,
        _ => dewy_cache_dir(&opts.dir),
    }
}

/// The source for `url` with `-cache` applied: [`super::build_source`], then for an s3/gs
/// cache the shared cache in front of it (its registry entry is keyed by the `-registry`
/// text as given, as Dewy keys it by its `--registry`).
pub fn build_cached_source(url: &RegistryUrl, opts: &Options) -> Result<Source, SourceError> {
    let source = super::build_source(url)?;
    let config = sources::cache::config::parse(&opts.cache).map_err(SourceError::Permanent)?;
    let registry = opts.registry.clone().unwrap_or_else(|| url.to_string());
    let http = HttpClient::new(&HttpConfig::default())?;
    match Shared::open(
        &config,
        &registry,
        dewy_cache_dir_for(opts),
        opts.policy.limits.max_bytes,
        &http,
        sources::bucket::process_env(),
    )? {
        Some(shared) => Ok(source.with_shared_cache(shared)),
        None => Ok(source),
    }
}

/// A Dewy key must stay a file name in the cache directory.
pub fn key_is_safe(key: &str) -> bool {
    !key.is_empty() && !key.contains('/') && key != "." && key != ".." && key != "current"
}

/// Downloads a layer that has no published digest into the cache and returns its sha256.
/// An artifact larger than `max_bytes` (what it may unpack to) is refused: Dewy's cap on a
/// download, with our limit.
///
/// The bytes go to `cache/resume-<id>`, `<id>` derived from the layer's locator, so an
/// interrupted download (a dropped connection, a killed agent) continues where it stopped:
/// the partial prefix is re-hashed and the rest asked for from its length. Only when the
/// object is still the one the partial came from: `resume-<id>.meta` records the validator
/// the sources expose for it (its locator, listed size and time: S3 `LastModified`, GCS
/// `timeCreated`, the GitHub release's time; a re-uploaded GitHub asset gets a new asset
/// URL); otherwise the download starts from zero. Neither name is `temp-*`/`.partial`, so
/// the cache's grace rule for unreferenced files (an hour) removes abandoned ones.
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
    let validator = validator(layer, created_at);
    let dl = Download {
        source,
        layer,
        part: &part,
        io_timeout,
        max_bytes,
    };
    let mut resumed = resumable(&part, &meta, &validator, max_bytes, layer.size).await;
    let res = loop {
        let res = dl.run(resumed.take()).await;
        match res {
            Err(DlError::Resume(e)) => {
                tracing::info!(
                    layer = %layer.name,
                    "cannot resume the partial download ({e:#}), starting from zero"
                );
            }
            other => break other,
        }
        // Starting over: the partial and its record describe a download we gave up.
        let _ = std::fs::remove_file(&part);
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

/// Scratch files of resumable downloads (see [`fetch_unverified`]).
const RESUME_PREFIX: &str = "resume-";
/// A validator record is a few lines; a bigger file is not ours.
const MAX_META: u64 = 64 * 1024;

/// What must be unchanged for a partial download to be continued.
fn validator(layer: &Layer, created_at: Option<OffsetDateTime>) -> String {
    let size = layer.size.map_or("-".to_string(), |s| s.to_string());
    let time = created_at.map_or("-".to_string(), common::timefmt::rfc3339_nano);
    format!("v1\n{}\n{size}\n{time}\n", layer.locator)
}

/// A partial download that may be continued: its length and the hash of its bytes.
struct Resumed {
    len: u64,
    hasher: Hasher,
}

/// The partial to continue, if its record matches `validator`; otherwise a fresh record is
/// written (before any byte) and the download starts from zero.
async fn resumable(
    part: &Path,
    meta: &Path,
    validator: &str,
    max_bytes: u64,
    size: Option<u64>,
) -> Option<Resumed> {
    let recorded = std::fs::metadata(meta)
        .ok()
        .filter(|m| m.len() <= MAX_META)
        .and_then(|_| std::fs::read_to_string(meta).ok());
    if recorded.as_deref() == Some(validator) {
        match rehash(part).await {
            Ok(Some(r)) if r.len <= max_bytes && size.is_none_or(|s| r.len <= s) => {
                tracing::info!(bytes = r.len, "resuming a partial download");
                return Some(r);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read {}: {e}", part.display()),
        }
    } else if recorded.is_some() {
        tracing::info!("the artifact changed since the partial download, starting from zero");
    }
    let _ = std::fs::remove_file(part);
    let tmp = meta.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let written = std::fs::write(&tmp, validator).and_then(|()| std::fs::rename(&tmp, meta));
    if let Err(e) = written {
        // Without a record the partial is never resumed: still a correct download.
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("cannot write {}: {e}", meta.display());
    }
    None
}

async fn rehash(part: &Path) -> io::Result<Option<Resumed>> {
    let mut f = match tokio::fs::File::open(part).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(Resumed { len, hasher }));
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
}

/// How a download attempt failed, which decides what happens to the partial.
enum DlError {
    /// Asking for the rest failed: start again from zero.
    Resume(anyhow::Error),
    /// Interrupted: the partial is good for the next attempt.
    Keep(anyhow::Error),
    /// The bytes are unusable (too many, not the listed size).
    Drop(anyhow::Error),
}

struct Download<'a> {
    source: &'a Source,
    layer: &'a Layer,
    part: &'a Path,
    io_timeout: Duration,
    max_bytes: u64,
}

impl Download<'_> {
    async fn run(&self, resumed: Option<Resumed>) -> Result<String, DlError> {
        let (offset, mut hasher) = resumed.map_or((0, Hasher::new()), |r| (r.len, r.hasher));
        let keep = DlError::Keep;
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
                out.write_all(&buf[..n]).await.map_err(|e| keep(e.into()))?;
            }
        }
        if let Some(size) = self.layer.size.filter(|s| *s != total) {
            // The object changed under the download (or the listing lied): the bytes
            // are a mix of two objects at worst.
            return Err(DlError::Drop(anyhow::anyhow!(
                "got {total} bytes, the registry listed {size}"
            )));
        }
        out.flush().await.map_err(|e| keep(e.into()))?;
        out.sync_data().await.map_err(|e| keep(e.into()))?;
        Ok(hasher.finish().to_hex())
    }
}

/// The sha256 of the blob a present Dewy key file holds, linked into the cache; `None` when
/// the key is absent.
pub fn adopt_key(cache: &Cache, dewy_dir: &Path, key: &str) -> anyhow::Result<Option<String>> {
    if !key_is_safe(key) {
        return Ok(None);
    }
    let path = dewy_dir.join(key);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    let hash = hash_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if !cache.contains(&hash) {
        mkdir(cache.dir())?;
        link_or_copy(&path, &cache.path(&hash))?;
    }
    Ok(Some(hash))
}

/// Makes `<dewy cache>/<key>` the cache blob `hash` and records `current`. Failures are only
/// logged: Dewy's view is a convenience, the deploy does not depend on it.
pub fn write_keys(cache: &Cache, dewy_dir: &Path, key: &str, hash: &str) {
    if !key_is_safe(key) {
        tracing::warn!(key, "not a usable Dewy cache key, not written");
        return;
    }
    let res = (|| -> anyhow::Result<()> {
        mkdir(dewy_dir)?;
        let path = dewy_dir.join(key);
        if !path.is_file() {
            link_or_copy(&cache.path(hash), &path)?;
        }
        let current = dewy_dir.join(common::dewy::cachekey::CURRENT_KEY);
        let tmp = dewy_dir.join(format!(".current.tmp-{:016x}", rand::random::<u64>()));
        std::fs::write(&tmp, common::dewy::cachekey::current_value(key))?;
        std::fs::rename(&tmp, &current)?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::warn!(key, "cannot write the Dewy cache keys: {e:#}");
    }
}

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_file_name(format!(".link-{:016x}", rand::random::<u64>()));
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp)
            .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    }
    std::fs::rename(&tmp, to).with_context(|| format!("cannot rename to {}", to.display()))?;
    Ok(())
}

fn mkdir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

fn hash_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish().to_hex());
        }
        h.update(&buf[..n]);
    }
}
