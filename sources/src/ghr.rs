//! `ghr://<owner>/<repo>`: GitHub Releases (spec dewy.md 1.2, 1.7, 2, 3, 4).
//!
//! The newest non-draft release by tag (SemVer or CalVer; GitHub's `prerelease` flag is
//! ignored, as in Dewy) is the [`Release`]; its one layer is the asset chosen by
//! `?artifact=` or by platform. When the release publishes a checksum file for that asset
//! (Dewy post-2.19 #491), its digest becomes [`Layer::digest`] and the download is verified.
//!
//! The listing is kept with the first page's ETag, so an unchanged repository costs one `304`
//! per poll, which GitHub does not count against the rate limit.

pub mod api;
pub mod auth;

use std::collections::HashMap;
use std::sync::Arc;

use common::dewy::artifact::{self, ArtifactKind, Platform};
use common::dewy::artifact_url::ArtifactUrl;
use common::dewy::calver::CalVerFormat;
use common::dewy::checksum;
use common::dewy::report;
use common::dewy::url::RegistryUrl;
use common::dewy::version;
use common::digest::Digest;
use tokio::sync::Mutex;

use self::api::{GhRelease, GitHub, Listing};
use crate::http::{self, HttpClient};
use crate::{ByteStream, Layer, LayerKind, Release, SourceError};

/// Dewy's text when a repository has only drafts (or nothing).
pub const NO_RELEASES: &str = "no non-draft releases found";

/// Largest checksum file we read.
const MAX_CHECKSUM_BYTES: usize = 1 << 20;

/// A followed GitHub repository.
pub struct GhrSource {
    gh: Arc<GitHub>,
    owner: String,
    repo: String,
    artifact: Option<String>,
    pre_release: bool,
    calver: Option<CalVerFormat>,
    /// Go's names of the OS and architecture assets are matched against.
    os: String,
    arch: String,
    cache: Mutex<Cache>,
}

/// What the last listing said, to answer a `304` without asking again.
#[derive(Default)]
struct Cache {
    etag: Option<String>,
    releases: Vec<GhRelease>,
    /// Digest stated for an artifact, by (checksum asset id, artifact name): an asset's
    /// content cannot change without a new id.
    digests: HashMap<(u64, String), Digest>,
}

impl GhrSource {
    /// The source for a parsed `ghr://` URL. Credentials, the API endpoint and the
    /// `GITHUB_ARTIFACT` fallback come from `env` (pass `|k| std::env::var(k).ok()`).
    pub fn from_url(
        url: &RegistryUrl,
        http: HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GhrSource, SourceError> {
        let RegistryUrl::Ghr { owner, repo, opts } = url else {
            return Err(SourceError::Permanent(format!(
                "not a ghr:// registry: {}",
                url.scheme()
            )));
        };
        let calver = opts
            .calver
            .as_deref()
            .map(CalVerFormat::parse)
            .transpose()
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        let artifact = opts
            .artifact
            .clone()
            .or_else(|| env("GITHUB_ARTIFACT").filter(|a| !a.is_empty()));
        let platform = Platform::current();
        Ok(GhrSource {
            gh: Arc::new(GitHub::from_env(http, env)?),
            owner: owner.clone(),
            repo: repo.clone(),
            artifact,
            pre_release: opts.pre_release,
            calver,
            os: platform.os.to_string(),
            arch: platform.arch.to_string(),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Matches assets against another platform (Go names, e.g. `linux`, `arm64`).
    pub fn with_platform(mut self, os: &str, arch: &str) -> GhrSource {
        self.os = os.to_string();
        self.arch = arch.to_string();
        self
    }

    /// The API client, shared with a gRPC source that points at GitHub assets.
    pub fn github(&self) -> Arc<GitHub> {
        self.gh.clone()
    }

    /// The release that should run now.
    pub async fn current(&self) -> Result<Release, SourceError> {
        let mut cache = self.cache.lock().await;
        match self
            .gh
            .list_releases(&self.owner, &self.repo, cache.etag.as_deref())
            .await?
        {
            Listing::NotModified => {
                tracing::debug!(owner = %self.owner, repo = %self.repo, "releases unchanged (304)");
            }
            Listing::Releases { releases, etag } => {
                cache.releases = releases;
                cache.etag = etag;
            }
        }
        let published: Vec<&GhRelease> = cache.releases.iter().filter(|r| !r.draft).collect();
        if published.is_empty() {
            return Err(SourceError::Permanent(NO_RELEASES.into()));
        }
        let tags: Vec<&str> = published.iter().map(|r| r.tag_name.as_str()).collect();
        let (i, version) = version::pick_latest(&tags, self.pre_release, self.calver.as_ref())
            .ok_or(SourceError::NoVersion)?;
        let release = published[i].clone();
        let created_at = release
            .published_at
            .as_deref()
            .and_then(common::timefmt::parse_rfc3339);
        let names: Vec<&str> = release.assets.iter().map(|a| a.name.as_str()).collect();
        let platform = Platform {
            os: &self.os,
            arch: &self.arch,
        };
        let chosen =
            artifact::select(&names, self.artifact.as_deref(), &platform, "").map_err(|e| {
                SourceError::ArtifactNotFound {
                    message: e.to_string(),
                    release_time: created_at,
                }
            })?;
        let asset = &release.assets[chosen];
        let digest = match checksum::find_checksum_file(&asset.name, &names) {
            Some(c) => Some(
                self.stated_digest(&mut cache, &release.assets[c], &asset.name)
                    .await?,
            ),
            None => None,
        };
        Ok(Release {
            tag: release.tag_name.clone(),
            created_at,
            slot: version.slot().to_string(),
            layers: vec![Layer {
                name: asset.name.clone(),
                digest,
                size: asset.size,
                kind: LayerKind::Artifact(ArtifactKind::of(&asset.name)),
                locator: format!(
                    "ghr://{}/{}/tag/{}/{}",
                    self.owner, self.repo, release.tag_name, asset.name
                ),
                // A GitHub registry result is not shared through the cache.
                checksum_url: None,
            }],
        })
    }

    /// The digest the checksum asset `sums` states for `artifact`, read once per asset.
    async fn stated_digest(
        &self,
        cache: &mut Cache,
        sums: &api::GhAsset,
        artifact: &str,
    ) -> Result<Digest, SourceError> {
        let key = (sums.id, artifact.to_string());
        if let Some(d) = cache.digests.get(&key) {
            return Ok(*d);
        }
        let url = self.gh.asset_url(&self.owner, &self.repo, sums.id);
        let resp = self.gh.download(url.as_str(), 0).await?;
        let body = http::read_bounded(resp, MAX_CHECKSUM_BYTES).await?;
        let text = String::from_utf8_lossy(&body);
        let digest = checksum::expected_digest(artifact, &sums.name, &text)
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        cache.digests.insert(key, digest);
        Ok(digest)
    }

    /// The bytes of `layer` (as [`GhrSource::current`] made it) from `offset` on.
    /// The locator is Dewy's artifact URL `ghr://<owner>/<repo>/tag/<tag>/<name>` (the agent
    /// derives Dewy's cache key `<tag>--<name>` from it). The asset id comes from the cached
    /// listing when it has that release, else from the release of that tag.
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        let Ok(ArtifactUrl::Ghr {
            owner,
            repo,
            tag,
            name,
        }) = ArtifactUrl::parse(&layer.locator)
        else {
            return Err(SourceError::Permanent(format!(
                "not a ghr artifact URL: {}",
                layer.locator
            )));
        };
        let id = if owner == self.owner && repo == self.repo {
            let cache = self.cache.lock().await;
            cache
                .releases
                .iter()
                .find(|r| r.tag_name == tag && !r.draft)
                .and_then(|r| r.assets.iter().find(|a| a.name == name))
                .map(|a| a.id)
        } else {
            None
        };
        match id {
            Some(id) => {
                let url = self.gh.asset_url(&owner, &repo, id);
                let resp = self.gh.download(url.as_str(), offset).await?;
                Ok(http::byte_stream(resp))
            }
            None => fetch_artifact(&self.gh, &owner, &repo, &tag, &name, offset).await,
        }
    }

    /// Dewy's audit record of a successful deploy (spec 4): a release asset named
    /// [`report::audit_file_name`] of `info`, whose body is `info` itself, uploaded to the
    /// release tagged `tag`. `info` is [`report::audit_info`]. Returns the asset name.
    pub async fn report(&self, tag: &str, info: &str) -> Result<String, SourceError> {
        let name = report::audit_file_name(info);
        let release = self
            .gh
            .release_by_tag(&self.owner, &self.repo, tag)
            .await?
            .ok_or_else(|| SourceError::Permanent(format!("release not found: {tag}")))?;
        self.gh.upload(&release, &name, info.to_string()).await?;
        Ok(name)
    }
}

/// The bytes of a `ghr://<owner>/<repo>/tag/<tag>/<name>` artifact URL (what a gRPC registry
/// answers), found through the release of that tag.
pub async fn fetch_artifact(
    gh: &GitHub,
    owner: &str,
    repo: &str,
    tag: &str,
    name: &str,
    offset: u64,
) -> Result<ByteStream, SourceError> {
    let not_found = || SourceError::ArtifactNotFound {
        message: format!("artifact not found: {name} in release {tag} of {owner}/{repo}"),
        release_time: None,
    };
    let release = gh
        .release_by_tag(owner, repo, tag)
        .await?
        .ok_or_else(not_found)?;
    let asset = release
        .assets
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(not_found)?;
    let resp = gh
        .download(gh.asset_url(owner, repo, asset.id).as_str(), offset)
        .await?;
    Ok(http::byte_stream(resp))
}
