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

use anyhow::Context;
use common::dewy::url::RegistryUrl;
use common::digest::Hasher;
use sources::cache::{Backend, CacheConfig, Shared};
use sources::http::{HttpClient, HttpConfig};
use sources::{Layer, Source, SourceError};

use crate::cache::{BlobReader, Cache, LayerSource};
use crate::cli::Options;

mod resume;
pub use resume::fetch_unverified;

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
        write_current(dewy_dir, &common::dewy::cachekey::current_value(key))
    })();
    if let Err(e) = res {
        tracing::warn!(key, "cannot write the Dewy cache keys: {e:#}");
    }
}

/// What Dewy's `current` key holds, to put back if the deploy that replaces it is rolled back.
pub fn current_key(dewy_dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dewy_dir.join(common::dewy::cachekey::CURRENT_KEY)).ok()
}

/// Puts back what Dewy's `current` key held before a rolled-back deploy (none: removed), so a
/// Dewy sharing the cache sees the release that runs.
pub fn restore_current_key(dewy_dir: &Path, was: Option<&[u8]>) {
    let res = match was {
        Some(value) => write_current(dewy_dir, value),
        None => match std::fs::remove_file(dewy_dir.join(common::dewy::cachekey::CURRENT_KEY)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    };
    if let Err(e) = res {
        tracing::warn!("cannot put back the Dewy cache key current: {e:#}");
    }
}

fn write_current(dewy_dir: &Path, value: &[u8]) -> anyhow::Result<()> {
    let current = dewy_dir.join(common::dewy::cachekey::CURRENT_KEY);
    let tmp = dewy_dir.join(format!(".current.tmp-{:016x}", rand::random::<u64>()));
    std::fs::write(&tmp, value)?;
    std::fs::rename(&tmp, &current)?;
    Ok(())
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
