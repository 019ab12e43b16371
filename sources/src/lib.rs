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
//! and async methods stay plain `async fn`.

pub mod bucket;
pub mod error;
pub mod ghr;
pub mod grpc;
pub mod gs;
pub mod http;
pub mod img;
pub mod s3;

pub use error::SourceError;

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
    Img(img::ImgSource),
    S3(s3::S3Source),
    Gs(gs::GsSource),
    Ghr(ghr::GhrSource),
    Grpc(grpc::GrpcSource),
}

impl Source {
    /// The release that should run now.
    pub async fn current(&self) -> Result<Release, SourceError> {
        match self {
            Source::Img(s) => s.current().await,
            Source::S3(s) => s.current().await,
            Source::Gs(s) => s.current().await,
            Source::Ghr(s) => s.current().await,
            Source::Grpc(s) => s.current().await,
        }
    }

    /// The bytes of `layer`, starting at `offset` (to resume an interrupted download).
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        match self {
            Source::Img(s) => s.fetch(layer, offset).await,
            Source::S3(s) => s.fetch(layer, offset).await,
            Source::Gs(s) => s.fetch(layer, offset).await,
            Source::Ghr(s) => s.fetch(layer, offset).await,
            Source::Grpc(s) => s.fetch(layer, offset).await,
        }
    }
}
