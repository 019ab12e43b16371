//! `gs://<bucket>/<prefix>`: Dewy releases in Google Cloud Storage (spec dewy.md 1.4, 1.7,
//! 2.5, 3, 4).
//!
//! Spoken over the JSON API with the shared HTTP client ([`api`]): object_store's GCS client
//! uses the XML API, which emulators (fake-gcs-server) do not serve, and `timeCreated` (what
//! Dewy reports) is only in the JSON API. Google's credentials (ADC) still come from
//! object_store's token providers.

// The shared cache (`crate::cache`) reads and writes its objects through the same client.
pub(crate) mod api;

use common::dewy::artifact::Platform;
use common::dewy::artifact_url::ArtifactUrl;
use common::dewy::url::RegistryUrl;

use crate::bucket::{self, Env, Selection};
use crate::http::HttpClient;
use crate::{ByteStream, Layer, Release, SourceError};

/// A configured `gs://` registry.
pub struct GsSource {
    api: api::Api,
    bucket: String,
    selection: Selection,
    platform: Platform<'static>,
}

impl GsSource {
    /// A source for a `gs://` registry URL. `env` is the process environment
    /// (`|k| std::env::var(k).ok()`): `STORAGE_EMULATOR_HOST` (then no credentials, as the Go
    /// client does) and `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn new(url: &RegistryUrl, http: &HttpClient, env: Env) -> Result<GsSource, SourceError> {
        let RegistryUrl::Gs {
            bucket,
            prefix,
            opts,
        } = url
        else {
            return Err(SourceError::Permanent(format!(
                "not a gs:// registry: {url}"
            )));
        };
        let selection = Selection::new(
            prefix,
            opts.artifact.as_deref(),
            opts.pre_release,
            opts.calver.as_deref(),
        )?;
        Ok(GsSource {
            api: api::Api::new(http, bucket, &*env)?,
            bucket: bucket.clone(),
            selection,
            platform: Platform::current(),
        })
    }

    /// Picks artifacts for `platform` instead of this machine's (tests, cross-deploys).
    pub fn with_platform(mut self, platform: Platform<'static>) -> GsSource {
        self.platform = platform;
        self
    }

    /// The newest release (spec 2.5, 3.1-3.3).
    pub async fn current(&self) -> Result<Release, SourceError> {
        let listing = self
            .api
            .list(&self.bucket, &self.selection.prefix, true)
            .await?;
        let chosen = self.selection.choose_version(&listing.prefixes)?;
        let objects = self
            .api
            .list(&self.bucket, &chosen.dir, false)
            .await?
            .objects;
        let choice = self
            .selection
            .choose_artifact(&chosen, &objects, &self.platform)?;
        let checksums = match &choice.checksum {
            Some((file, _)) => Some(
                self.api
                    .read_small(&self.bucket, &file.key, bucket::MAX_CHECKSUM_FILE)
                    .await?,
            ),
            None => None,
        };
        choice.release(&chosen, checksums.as_deref(), |key| {
            format!("gs://{}/{key}", self.bucket)
        })
    }

    /// The layer's bytes from `offset` on. The locator is a `gs://` artifact URL (any bucket:
    /// a gRPC registry may point anywhere).
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        match ArtifactUrl::parse(&layer.locator) {
            Ok(ArtifactUrl::Gs { bucket, object }) => self.api.get(&bucket, &object, offset).await,
            Ok(_) | Err(_) => Err(SourceError::Permanent(format!(
                "not a gs artifact URL: {}",
                layer.locator
            ))),
        }
    }

    /// Dewy's audit record of a successful deploy: an empty `text/plain` object
    /// `<prefix><tag>/<audit file name>` (spec 4). `info` is
    /// [`common::dewy::report::audit_info`]. Returns the object name written.
    pub async fn report(&self, tag: &str, info: &str) -> Result<String, SourceError> {
        let name = format!(
            "{}{tag}/{}",
            self.selection.prefix,
            common::dewy::report::audit_file_name(info)
        );
        self.api.put_empty_text(&self.bucket, &name).await?;
        Ok(name)
    }
}
