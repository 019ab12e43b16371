//! Where releases come from. Every source answers the same two questions the agent asks —
//! "what should run now?" ([`Source::current`]) and "give me the bytes of layer X"
//! ([`Source::fetch`]) — so the agent has one pipeline (cache → unpack → activate) whatever the
//! source (design.md: "everything is a layered release").
//!
//! - A Dewy release (one GitHub / S3 / GCS artifact) is a [`Release`] with one layer.
//! - An OCI image ([`img`]) is a [`Release`] with one layer per image layer.
//! - `ssh://` (our own registry) lives in the agent (it needs the SSH client); it maps a
//!   configuration to a [`Release`] the same way.
//!
//! Dispatch is an enum ([`Source`]) rather than a trait object: the set of schemes is closed,
//! and async methods stay plain `async fn`. Each variant's source is wrapped in [`Cached`],
//! which may carry Dewy's shared cache ([`cache`]); it derefs to the source, so scheme-specific
//! calls (`report`) reach it unchanged.

pub mod bucket;
pub mod cache;
pub mod error;
pub mod ghr;
pub mod grpc;
pub mod gs;
pub mod http;
pub mod img;
pub mod s3;

pub use error::SourceError;

/// This host's name as Go's `os.Hostname` reads it on Linux (`/proc/sys/kernel/hostname`);
/// `None` when unreadable or empty. Dewy puts it in audit reports, lock owners and
/// notifications.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

use common::dewy::artifact::ArtifactKind;
use common::digest::Digest;
use common::timefmt::OffsetDateTime;

/// What a source says should run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The version tag as the source lists it (`v1.2.3`, `1.2.3+blue`, an image tag).
    pub tag: String,
    /// When the release was published/created, if the source knows (grace period, reports).
    pub created_at: Option<OffsetDateTime>,
    /// Build metadata slot (`blue` in `v1.2.3+blue`), empty when none.
    pub slot: String,
    /// Layers in unpack order.
    pub layers: Vec<Layer>,
}

/// One layer of a release and how to get its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Human name for logs and the cache key (artifact file name, OCI layer digest).
    pub name: String,
    /// The content's sha256 when the source publishes it (OCI digests, checksum files):
    /// downloads are verified against it while streaming.
    pub digest: Option<Digest>,
    /// Size in bytes when known.
    pub size: Option<u64>,
    /// How to unpack it.
    pub kind: LayerKind,
    /// Source-specific locator (asset URL, object key, blob digest); opaque to the agent.
    pub locator: String,
    /// The checksum file that `digest` came from, located as `locator` locates the layer
    /// (s3/gs): Dewy shares it with the hosts that take the registry result from the shared
    /// cache (`ChecksumURL`), so that they verify too.
    pub checksum_url: Option<String>,
}

/// How a layer's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// An artifact named by its file name (Dewy): archive or plain executable.
    Artifact(ArtifactKind),
    /// An OCI/Docker image layer: a tar, possibly gzip/zstd-compressed, with whiteouts.
    ImageLayer,
}

/// A byte stream of one layer.
pub type ByteStream = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A configured source.
pub enum Source {
    Img(Cached<img::ImgSource>),
    S3(Cached<s3::S3Source>),
    Gs(Cached<gs::GsSource>),
    Ghr(Cached<ghr::GhrSource>),
    Grpc(Cached<grpc::GrpcSource>),
}

/// A source and the shared cache in front of it, if any.
pub struct Cached<T> {
    source: T,
    shared: Option<std::sync::Arc<cache::Shared>>,
}

impl<T> From<T> for Cached<T> {
    fn from(source: T) -> Cached<T> {
        Cached {
            source,
            shared: None,
        }
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.source
    }
}

impl Source {
    /// The release that should run now: through the shared registry result when the cache
    /// has `registry-ttl`.
    pub async fn current(&self) -> Result<Release, SourceError> {
        match self.shared() {
            Some(shared) => {
                let mut release = shared.current(|| self.upstream_current()).await?;
                self.read_checksums(shared, &mut release).await?;
                Ok(release)
            }
            None => self.upstream_current().await,
        }
    }

    /// The digests of a release taken from the shared registry result, from the checksum
    /// files it names (Dewy #491): every host verifies what it deploys, not only the one that
    /// asked the registry. A checksum file that cannot be read or does not cover the artifact
    /// fails the release, as it does for that host.
    async fn read_checksums(
        &self,
        shared: &cache::Shared,
        release: &mut Release,
    ) -> Result<(), SourceError> {
        use tokio::io::AsyncReadExt;
        for layer in &mut release.layers {
            let (None, Some(url)) = (layer.digest, &layer.checksum_url) else {
                continue;
            };
            if let Some(known) = shared.known_digest(url, &layer.name) {
                layer.digest = Some(known);
                continue;
            }
            let file = Layer {
                name: cache::entry::basename(url).to_string(),
                digest: None,
                size: None,
                kind: LayerKind::Artifact(ArtifactKind::Plain),
                locator: url.clone(),
                checksum_url: None,
            };
            let limit = bucket::MAX_CHECKSUM_FILE;
            let mut bytes = Vec::new();
            self.upstream_fetch(&file, 0)
                .await?
                .take(limit as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| SourceError::Transient {
                    message: format!("{url}: {e}"),
                    retry_after: None,
                })?;
            if bytes.len() > limit {
                return Err(SourceError::Permanent(format!(
                    "{url}: larger than {limit} bytes"
                )));
            }
            let digest = bucket::expected_digest(&layer.name, &file.name, &bytes)?;
            shared.remember_digest(url, &layer.name, digest);
            layer.digest = Some(digest);
        }
        Ok(())
    }

    /// The bytes of `layer`, starting at `offset` (to resume an interrupted download):
    /// through the shared artifact cache when there is one.
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        match self.shared() {
            Some(shared) => {
                shared
                    .fetch(layer, offset, |o| self.upstream_fetch(layer, o))
                    .await
            }
            None => self.upstream_fetch(layer, offset).await,
        }
    }

    /// Puts Dewy's shared cache (`--cache s3://…|gs://…`) in front of this source.
    pub fn with_shared_cache(mut self, shared: cache::Shared) -> Source {
        let shared = Some(std::sync::Arc::new(shared));
        match &mut self {
            Source::Img(c) => c.shared = shared,
            Source::S3(c) => c.shared = shared,
            Source::Gs(c) => c.shared = shared,
            Source::Ghr(c) => c.shared = shared,
            Source::Grpc(c) => c.shared = shared,
        }
        self
    }

    fn shared(&self) -> Option<&cache::Shared> {
        match self {
            Source::Img(c) => c.shared.as_deref(),
            Source::S3(c) => c.shared.as_deref(),
            Source::Gs(c) => c.shared.as_deref(),
            Source::Ghr(c) => c.shared.as_deref(),
            Source::Grpc(c) => c.shared.as_deref(),
        }
    }

    async fn upstream_current(&self) -> Result<Release, SourceError> {
        match self {
            Source::Img(s) => s.current().await,
            Source::S3(s) => s.current().await,
            Source::Gs(s) => s.current().await,
            Source::Ghr(s) => s.current().await,
            Source::Grpc(s) => s.current().await,
        }
    }

    async fn upstream_fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        match self {
            Source::Img(s) => s.fetch(layer, offset).await,
            Source::S3(s) => s.fetch(layer, offset).await,
            Source::Gs(s) => s.fetch(layer, offset).await,
            Source::Ghr(s) => s.fetch(layer, offset).await,
            Source::Grpc(s) => s.fetch(layer, offset).await,
        }
    }
}
