//! Dewy's shared cache (spec dewy.md 6): `--cache s3://…` / `gs://…` keeps the artifact keys
//! (`<tag>--<artifact>`, `current`) in a bucket with local staging, so a fleet downloads each
//! release once, and with `registry-ttl` one member asks the registry per TTL for everyone
//! ([`registry`]). Object names and values are Go Dewy's, so both can share a bucket.
//!
//! It sits between the agent and a [`crate::Source`] (see [`crate::Cached`]):
//! - [`Shared::current`] answers from the shared registry entry or the registry, and
//!   remembers each artifact's key;
//! - [`Shared::fetch`] serves an artifact from the staging directory, else from the bucket
//!   (staged first), else from the registry, teed into staging and then written to the bucket
//!   with `current` (Dewy's download path).
//!
//! Better than Dewy: bytes read from the bucket or staging are checked against the release's
//! sha256 when the registry published one (a poisoned bucket is skipped, the registry's bytes
//! replace it); reads are capped at the agent's byte limit.

pub mod config;
pub mod entry;
pub mod registry;
pub mod remote;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use common::dewy::artifact::Platform;
use common::dewy::cachekey;
use common::digest::{Digest, Hasher};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use crate::bucket::Env;
use crate::http::HttpClient;
use crate::{ByteStream, Layer, LayerKind, Release, SourceError};
pub use config::{Backend, CacheConfig};
use registry::RegistryCache;
use remote::{Bucket, Remote};

/// Our log line when an artifact downloaded from the registry went into the bucket (the
/// agent logs Dewy's `Cached artifact` itself, once per deploy).
pub const WRITTEN_LOG: &str = "Artifact written to the shared cache";
/// Our log line when an artifact came from the shared bucket instead of the registry.
pub const SHARED_HIT_LOG: &str = "Artifact read from the shared cache";

/// The largest `current` value read back (an artifact key).
const MAX_CURRENT: usize = 4096;

/// An S3 or GCS cache in use.
pub struct Shared {
    remote: Arc<Remote>,
    staging: PathBuf,
    max_bytes: u64,
    registry: Option<RegistryCache>,
    /// Artifact URL → cache key, for the releases [`Shared::current`] returned.
    keys: Mutex<HashMap<String, String>>,
    /// (checksum file URL, artifact) → the digest read from it for a shared answer: read once
    /// per release, not at every poll (the shared answer is there to spare the registry).
    /// A file republished with other sums is not seen until a restart; the new artifact is
    /// then refused, never taken unverified.
    digests: Mutex<HashMap<(String, String), Digest>>,
}

impl Shared {
    /// The shared cache of `config`, or `None` for the file backend (the agent keeps the
    /// keys in its own directory then; a `registry-ttl` there is ignored with a warning, as
    /// Dewy does). `registry_url` is the registry URL as given; `staging` Dewy's cache
    /// directory; `max_bytes` the most an artifact may weigh.
    pub fn open(
        config: &CacheConfig,
        registry_url: &str,
        staging: PathBuf,
        max_bytes: u64,
        http: &HttpClient,
        env: Env,
    ) -> Result<Option<Shared>, SourceError> {
        let remote = match &config.backend {
            Backend::File { .. } => {
                if !config.registry_ttl.is_zero() {
                    tracing::warn!(
                        "registry-ttl is ignored with the file cache (it cannot write atomically); use an s3:// or gs:// cache to share registry results"
                    );
                }
                return Ok(None);
            }
            Backend::S3 {
                region,
                bucket,
                prefix,
                endpoint,
            } => Remote {
                bucket: Bucket::S3(crate::s3::S3Store::new(
                    region,
                    bucket,
                    endpoint.as_deref(),
                    http,
                    &*env,
                )?),
                prefix: prefix.clone(),
            },
            Backend::Gs { bucket, prefix } => Remote {
                bucket: Bucket::Gs {
                    api: crate::gs::api::Api::new(http, bucket, &*env)?,
                    bucket: bucket.clone(),
                },
                prefix: prefix.clone(),
            },
        };
        let mut registry = (!config.registry_ttl.is_zero())
            .then(|| RegistryCache::new(registry_url, &Platform::current(), config.registry_ttl));
        if registry.is_some() && registry_url.starts_with("img://") {
            // Our image releases are their layers, which Dewy's entry (one artifact URL)
            // cannot carry: every member would poll anyway, and rewrite the entry each time.
            tracing::warn!("registry-ttl is not used with img:// registries");
            registry = None;
        }
        Ok(Some(Shared {
            remote: Arc::new(remote),
            staging,
            max_bytes,
            registry,
            keys: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
        }))
    }

    /// Replaces `host:pid` in the registry lock (tests run two members in one process).
    pub fn with_owner(mut self, owner: &str) -> Shared {
        self.registry = self.registry.map(|r| r.with_owner(owner.to_string()));
        self
    }

    /// The shared registry entry's key, when `registry-ttl` is on.
    pub fn registry_key(&self) -> Option<String> {
        self.registry
            .as_ref()
            .map(|r| format!("{}{}", self.remote.prefix, r.key()))
    }

    /// The release to deploy: from the shared registry entry when `registry-ttl` is on, else
    /// from `upstream`.
    pub async fn current<F, Fut>(&self, upstream: F) -> Result<Release, SourceError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Release, SourceError>>,
    {
        let release = match &self.registry {
            Some(r) => r.current(&self.remote, upstream).await?,
            None => upstream().await?,
        };
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() > 64 {
            keys.clear();
        }
        for l in &release.layers {
            if matches!(l.kind, LayerKind::Artifact(_)) {
                keys.insert(
                    l.locator.clone(),
                    cachekey::artifact_key(&release.tag, &l.locator),
                );
            }
        }
        Ok(release)
    }

    /// The digest read earlier from checksum file `url` for `artifact`.
    pub fn known_digest(&self, url: &str, artifact: &str) -> Option<Digest> {
        let digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        digests
            .get(&(url.to_string(), artifact.to_string()))
            .copied()
    }

    pub fn remember_digest(&self, url: &str, artifact: &str, digest: Digest) {
        let mut digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        if digests.len() > 64 {
            digests.clear();
        }
        digests.insert((url.to_string(), artifact.to_string()), digest);
    }

    /// The bytes of `layer` from `offset` on: staging, bucket, then `upstream`.
    pub async fn fetch<F, Fut>(
        &self,
        layer: &Layer,
        offset: u64,
        upstream: F,
    ) -> Result<ByteStream, SourceError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<ByteStream, SourceError>>,
    {
        let key = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&layer.locator)
            .cloned();
        let Some(key) = key.filter(|k| key_is_safe(k)) else {
            return upstream(offset).await;
        };
        if let Err(e) = mkdir(&self.staging) {
            tracing::warn!(dir = %self.staging.display(), "cannot create the cache directory, not caching: {e}");
            return upstream(offset).await;
        }
        let path = self.staging.join(&key);
        if path.is_file() {
            match verify(&path, layer.digest).await {
                Ok(true) => return open_at(&path, offset).await,
                Ok(false) => {
                    tracing::warn!(
                        key,
                        "staged artifact does not match the release's sha256, removed"
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => tracing::warn!(key, "cannot read the staged artifact: {e}"),
            }
        }
        let tmp = self.staging.join(format!(".fetch-{}", unique()));
        match self.remote.read_to_file(&key, &tmp, self.max_bytes).await {
            Ok(true) => match verify(&tmp, layer.digest).await {
                Ok(true) => {
                    std::fs::rename(&tmp, &path).map_err(|e| local_error(&path, e))?;
                    tracing::info!(key, cache = %self.remote.describe(), "{SHARED_HIT_LOG}");
                    write_current(&self.remote, &self.staging, &key).await;
                    return open_at(&path, offset).await;
                }
                res => {
                    let _ = std::fs::remove_file(&tmp);
                    match res {
                        Ok(_) => {
                            tracing::warn!(key, cache = %self.remote.describe(), "the shared cache's artifact does not match the release's sha256; downloading it from the registry")
                        }
                        Err(e) => tracing::warn!(
                            key,
                            "cannot read the artifact from the shared cache: {e}"
                        ),
                    }
                }
            },
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(
                    key,
                    "cannot read the artifact from the shared cache, downloading it from the registry: {e}"
                );
            }
        }
        if offset > 0 {
            // A resumed download is not teed: the cache only takes whole artifacts.
            return upstream(offset).await;
        }
        let stream = upstream(0).await?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| local_error(&tmp, e))?;
        Ok(Box::pin(Tee {
            inner: stream,
            file: Some(file),
            tmp,
            path,
            key,
            hasher: Hasher::new(),
            total: 0,
            max: self.max_bytes,
            expected: layer.digest,
            remote: self.remote.clone(),
            staging: self.staging.clone(),
            finish: None,
            done: false,
            caching: true,
        }))
    }
}

/// Dewy's key rules for a file in the staging directory.
fn key_is_safe(key: &str) -> bool {
    !key.is_empty() && !key.contains('/') && !key.starts_with('.') && key != cachekey::CURRENT_KEY
}

/// The registry's bytes passed through to the caller while they are written to staging; at
/// their end they are checked, renamed to the key and written to the bucket with `current`
/// before the reader sees the end, so a run that exits right after its deploy has shared
/// them.
struct Tee {
    inner: ByteStream,
    file: Option<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    key: String,
    hasher: Hasher,
    total: u64,
    max: u64,
    expected: Option<Digest>,
    remote: Arc<Remote>,
    staging: PathBuf,
    finish: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    done: bool,
    /// Cleared when staging failed: the rest passes through untouched.
    caching: bool,
}

impl Tee {
    /// The staged file in place; the bucket write still to do.
    fn seal(&mut self) -> io::Result<()> {
        use std::io::Write;
        if let Some(mut f) = self.file.take() {
            f.flush()?;
            f.sync_data()?;
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some(want) = self.expected
            && want != actual
        {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(io::Error::other(format!(
                "checksum mismatch for {}: expected sha256 {}, downloaded {}; not cached",
                self.key,
                want.to_hex(),
                actual.to_hex()
            )));
        }
        std::fs::rename(&self.tmp, &self.path)?;
        let (remote, staging, key, path) = (
            self.remote.clone(),
            self.staging.clone(),
            self.key.clone(),
            self.path.clone(),
        );
        self.finish = Some(Box::pin(async move {
            match tokio::fs::read(&path).await {
                Ok(bytes) => match remote.write(&key, bytes).await {
                    Ok(()) => {
                        write_current(&remote, &staging, &key).await;
                        tracing::info!(key, cache = %remote.describe(), "{WRITTEN_LOG}");
                    }
                    Err(e) => {
                        tracing::warn!(key, "cannot write the artifact to the shared cache: {e}")
                    }
                },
                Err(e) => tracing::warn!(key, "cannot read the staged artifact: {e}"),
            }
        }));
        Ok(())
    }
}

impl AsyncRead for Tee {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(Ok(()));
            }
            if let Some(f) = this.finish.as_mut() {
                ready!(f.as_mut().poll(cx));
                this.finish = None;
                this.done = true;
                continue;
            }
            let before = buf.filled().len();
            ready!(this.inner.as_mut().poll_read(cx, buf))?;
            let new = &buf.filled()[before..];
            if new.is_empty() {
                if !this.caching {
                    this.done = true;
                    continue;
                }
                if let Err(e) = this.seal() {
                    this.done = true;
                    return Poll::Ready(Err(e));
                }
                continue;
            }
            this.total += new.len() as u64;
            if this.total > this.max {
                // An error must come with no bytes read.
                buf.set_filled(before);
                this.file = None;
                let _ = std::fs::remove_file(&this.tmp);
                this.done = true;
                return Poll::Ready(Err(io::Error::other(format!(
                    "{} is larger than {} bytes",
                    this.key, this.max
                ))));
            }
            this.hasher.update(new);
            if let Some(f) = this.file.as_mut() {
                use std::io::Write;
                if let Err(e) = f.write_all(new) {
                    // The caller still gets the bytes; only the cache copy is lost.
                    tracing::warn!(file = %this.tmp.display(), "cannot stage the artifact: {e}");
                    this.file = None;
                    let _ = std::fs::remove_file(&this.tmp);
                    this.caching = false;
                }
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped before its end (cancelled, failed): the partial file goes.
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `current` = `key`, in staging and in the bucket (Dewy writes it on every download and
/// every switch to a cached artifact). Failures are logged: it is Dewy's view only.
async fn write_current(remote: &Remote, staging: &Path, key: &str) {
    let value = cachekey::current_value(key);
    let local = staging.join(cachekey::CURRENT_KEY);
    let tmp = staging.join(format!(".current.tmp-{}", unique()));
    let res = std::fs::write(&tmp, &value).and_then(|_| std::fs::rename(&tmp, &local));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(file = %local.display(), "cannot write current: {e}");
    }
    match remote
        .read_versioned(cachekey::CURRENT_KEY, MAX_CURRENT)
        .await
    {
        Ok(Some((v, _))) if v == value => {}
        _ => {
            if let Err(e) = remote.write(cachekey::CURRENT_KEY, value).await {
                tracing::warn!("cannot write current to the shared cache: {e}");
            }
        }
    }
}

/// Whether the file's sha256 is `digest` (always, when no digest is known).
async fn verify(path: &Path, digest: Option<Digest>) -> io::Result<bool> {
    let Some(want) = digest else {
        return Ok(true);
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finish() == want);
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(io::Error::other)?
}

async fn open_at(path: &Path, offset: u64) -> Result<ByteStream, SourceError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| local_error(path, e))?;
    if offset > 0 {
        f.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(|e| local_error(path, e))?;
    }
    Ok(Box::pin(f))
}

fn local_error(path: &Path, e: io::Error) -> SourceError {
    SourceError::Permanent(format!("{}: {e}", path.display()))
}

/// A name no other temporary file of this process or another has.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

fn mkdir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}
