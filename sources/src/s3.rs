//! `s3://<region>/<bucket>/<prefix>`: Dewy releases in Amazon S3 or an S3-compatible store
//! (spec dewy.md 1.3, 1.7, 2.5, 3, 4).
//!
//! Requests, SigV4 and the credential chain come from `object_store` (env keys, web identity,
//! ECS, IMDS) plus our reading of the shared profile files ([`profile`]), which object_store
//! does not do. Its requests go through the shared reqwest client ([`crate::http`]).

mod error;
mod profile;
mod store;

use common::dewy::artifact::Platform;
use common::dewy::artifact_url::ArtifactUrl;
use common::dewy::url::RegistryUrl;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, GetRange, ObjectStore, PutOptions};

use crate::bucket::{self, Env, Object, Selection};
use crate::http::HttpClient;
use crate::{ByteStream, Layer, Release, SourceError};

pub use store::Endpoint;
pub(crate) use store::Shared as SharedConnector;
// The shared cache (`crate::cache`) keeps its objects in a bucket through the same client.
pub(crate) use store::S3Store;

/// The most objects one version directory may hold: the listing is kept in memory.
const MAX_OBJECTS_PER_VERSION: usize = 100_000;

/// A configured `s3://` registry.
pub struct S3Source {
    store: store::S3Store,
    selection: Selection,
    platform: Platform<'static>,
    http: HttpClient,
    env: Env,
}

impl S3Source {
    /// A source for an `s3://` registry URL. `env` is the process environment
    /// (`|k| std::env::var(k).ok()`); it is consulted for `AWS_ENDPOINT_URL` and the AWS
    /// credential chain, here and when fetching from another endpoint.
    pub fn new(url: &RegistryUrl, http: &HttpClient, env: Env) -> Result<S3Source, SourceError> {
        let RegistryUrl::S3 {
            region,
            bucket,
            prefix,
            opts,
        } = url
        else {
            return Err(SourceError::Permanent(format!(
                "not an s3:// registry: {url}"
            )));
        };
        let selection = Selection::new(
            prefix,
            opts.artifact.as_deref(),
            opts.pre_release,
            opts.calver.as_deref(),
        )?;
        let store = store::S3Store::new(region, bucket, opts.endpoint.as_deref(), http, &*env)?;
        Ok(S3Source {
            store,
            selection,
            platform: Platform::current(),
            http: http.clone(),
            env,
        })
    }

    /// Picks artifacts for `platform` instead of this machine's (tests, cross-deploys).
    pub fn with_platform(mut self, platform: Platform<'static>) -> S3Source {
        self.platform = platform;
        self
    }

    /// The newest release: version directories under the prefix, then the artifact in the
    /// chosen one (spec 2.5, 3.1-3.3).
    pub async fn current(&self) -> Result<Release, SourceError> {
        let prefixes = self.store.version_dirs(&self.selection.prefix).await?;
        let chosen = self.selection.choose_version(&prefixes)?;
        let objects = self.store.list_all(&chosen.dir).await?;
        let choice = self
            .selection
            .choose_artifact(&chosen, &objects, &self.platform)?;
        let checksums = match &choice.checksum {
            Some((file, _)) => Some(
                self.store
                    .read_small(&file.key, bucket::MAX_CHECKSUM_FILE)
                    .await?,
            ),
            None => None,
        };
        choice.release(&chosen, checksums.as_deref(), |key| {
            locator(
                &self.store.region,
                &self.store.bucket,
                key,
                self.store.endpoint.url_option(),
            )
        })
    }

    /// The layer's bytes from `offset` on (a ranged GET). The locator is an `s3://` artifact
    /// URL; one in another bucket or endpoint is fetched with a client of its own (a gRPC
    /// registry may point anywhere), with the same credential chain.
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        let (region, bucket, key, endpoint) = match ArtifactUrl::parse(&layer.locator) {
            Ok(ArtifactUrl::S3 {
                region,
                bucket,
                key,
                endpoint,
            }) => (region, bucket, key, endpoint),
            Ok(_) | Err(_) => {
                return Err(SourceError::Permanent(format!(
                    "not an s3 artifact URL: {}",
                    layer.locator
                )));
            }
        };
        if self.store.serves(&region, &bucket, endpoint.as_deref()) {
            self.store.get(&key, offset).await
        } else {
            let other = store::S3Store::new(
                &region,
                &bucket,
                endpoint.as_deref(),
                &self.http,
                &*self.env,
            )?;
            other.get(&key, offset).await
        }
    }

    /// Dewy's audit record of a successful deploy: an empty `text/plain` object
    /// `<prefix><tag>/<audit file name>` (spec 4). `info` is
    /// [`common::dewy::report::audit_info`]. Returns the key written.
    pub async fn report(&self, tag: &str, info: &str) -> Result<String, SourceError> {
        let key = format!(
            "{}{tag}/{}",
            self.selection.prefix,
            common::dewy::report::audit_file_name(info)
        );
        self.store.put_empty_text(&key).await?;
        Ok(key)
    }
}

/// Dewy's `ArtifactURL` text for an S3 object: `s3://<region>/<bucket>/<key>` with
/// `?endpoint=<url>` appended raw (never the endpoint from `AWS_ENDPOINT_URL`).
fn locator(region: &str, bucket: &str, key: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("s3://{region}/{bucket}/{key}?endpoint={e}"),
        None => format!("s3://{region}/{bucket}/{key}"),
    }
}

impl store::S3Store {
    /// The version directories under `prefix`: common prefixes of a `/`-delimited listing,
    /// every page, in key order.
    async fn version_dirs(&self, prefix: &str) -> Result<Vec<String>, SourceError> {
        let p = self.path(prefix)?;
        let listing = self
            .inner
            .list_with_delimiter(opt_path(&p))
            .await
            .map_err(|e| self.error(e, prefix))?;
        // object_store drops the trailing delimiter; the layout code works on Dewy's
        // `<prefix><name>/` form.
        Ok(listing
            .common_prefixes
            .iter()
            .map(|cp| format!("{}/", cp.as_ref()))
            .collect())
    }

    /// Every object under `dir`, recursively, in key order.
    async fn list_all(&self, dir: &str) -> Result<Vec<Object>, SourceError> {
        let p = self.path(dir)?;
        let mut stream = self.inner.list(opt_path(&p));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.error(e, dir))?;
            if out.len() == MAX_OBJECTS_PER_VERSION {
                return Err(SourceError::Permanent(format!(
                    "{}: more than {MAX_OBJECTS_PER_VERSION} objects under {dir}",
                    self.describe()
                )));
            }
            out.push(Object {
                key: meta.location.as_ref().to_string(),
                size: meta.size,
                time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(meta.last_modified.timestamp()) * 1_000_000_000
                        + i128::from(meta.last_modified.timestamp_subsec_nanos()),
                )
                .ok(),
            });
        }
        Ok(out)
    }

    /// A small object (checksum file) read whole, refusing more than `limit` bytes.
    async fn read_small(&self, key: &str, limit: usize) -> Result<Vec<u8>, SourceError> {
        let p = self.path(key)?;
        let got = self
            .inner
            .get_opts(&p, GetOptions::default())
            .await
            .map_err(|e| self.error(e, key))?;
        if got.meta.size > limit as u64 {
            return Err(SourceError::Permanent(format!(
                "{}: {key} is larger than {limit} bytes",
                self.describe()
            )));
        }
        let mut stream = got.into_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e, key))?;
            if out.len() + chunk.len() > limit {
                return Err(SourceError::Permanent(format!(
                    "{}: {key} is larger than {limit} bytes",
                    self.describe()
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A streaming GET from `offset` on; object_store checks that a ranged answer starts
    /// where we asked.
    async fn get(&self, key: &str, offset: u64) -> Result<ByteStream, SourceError> {
        let p = self.path(key)?;
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let got = self
            .inner
            .get_opts(&p, options)
            .await
            .map_err(|e| self.error(e, key))?;
        let described = self.describe();
        let key = key.to_string();
        let stream = got
            .into_stream()
            .map_err(move |e| std::io::Error::other(error::classify(e, &described, &key)));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn put_empty_text(&self, key: &str) -> Result<(), SourceError> {
        let p = self.path(key)?;
        let options = PutOptions {
            attributes: Attributes::from_iter([(Attribute::ContentType, "text/plain")]),
            ..PutOptions::default()
        };
        self.inner
            .put_opts(&p, Default::default(), options)
            .await
            .map_err(|e| self.error(e, key))?;
        Ok(())
    }

    /// A key as object_store's path, taken verbatim (no re-encoding). Keys with empty
    /// segments (`a//b`) cannot be expressed.
    fn path(&self, key: &str) -> Result<Path, SourceError> {
        Path::parse(key).map_err(|e| {
            SourceError::Permanent(format!("{}: unusable key {key:?}: {e}", self.describe()))
        })
    }

    fn error(&self, e: object_store::Error, key: &str) -> SourceError {
        error::classify(e, &self.describe(), key)
    }
}

fn opt_path(p: &Path) -> Option<&Path> {
    (!p.as_ref().is_empty()).then_some(p)
}
