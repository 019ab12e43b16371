//! The bucket half of Dewy's S3 and GCS caches (spec dewy.md 6.1-6.3): objects `<prefix><key>`,
//! plain reads and writes for artifacts and `current`, and the versioned read and
//! compare-and-swap write the shared registry entry needs (S3: ETag with `If-Match` /
//! `If-None-Match: *`; GCS: generation with `ifGenerationMatch`, 0 = absent).

use std::path::Path;

use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::SourceError;
use crate::gs::api::{self, Api};
use crate::http;
use crate::s3::S3Store;

/// A compare-and-swap write's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// Written; the object's new version token.
    Written(String),
    /// Someone else wrote first.
    Conflict,
}

pub enum Bucket {
    S3(S3Store),
    Gs { api: Api, bucket: String },
}

/// A bucket and the prefix of the cache's objects in it.
pub struct Remote {
    pub bucket: Bucket,
    pub prefix: String,
}

#[derive(Deserialize)]
struct GcsObject {
    generation: Option<String>,
}

impl Remote {
    /// `s3://<region>/<bucket>/<prefix>` or `gs://<bucket>/<prefix>`, for messages.
    pub fn describe(&self) -> String {
        match &self.bucket {
            Bucket::S3(s) => format!("{}/{}", s.describe(), self.prefix),
            Bucket::Gs { bucket, .. } => format!("gs://{bucket}/{}", self.prefix),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A small object and its version token; `None` when absent. More than `limit` bytes is
    /// an error.
    pub async fn read_versioned(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, String)>, SourceError> {
        let name = self.name(key);
        match &self.bucket {
            Bucket::S3(s) => {
                let p = s3_path(s, &name)?;
                let got = match s.inner.get_opts(&p, GetOptions::default()).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(s3_error(s, &name, e)),
                };
                let etag = got.meta.e_tag.clone().unwrap_or_default();
                if got.meta.size > limit as u64 {
                    return Err(too_big(&self.describe(), key, limit as u64));
                }
                let mut stream = got.into_stream();
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| s3_error(s, &name, e))?;
                    if out.len() + chunk.len() > limit {
                        return Err(too_big(&self.describe(), key, limit as u64));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(Some((out, etag)))
            }
            Bucket::Gs { api, bucket } => {
                let Some(response) = gcs_get(api, bucket, &name).await? else {
                    return Ok(None);
                };
                let generation = response
                    .headers()
                    .get("x-goog-generation")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if generation.is_empty() {
                    return Err(SourceError::Permanent(format!(
                        "gs://{bucket}/{name}: no x-goog-generation in the answer"
                    )));
                }
                let body = http::read_bounded(response, limit).await?;
                Ok(Some((body, generation)))
            }
        }
    }

    /// Writes `data` if the object is still at `version` (`""`: only if absent).
    pub async fn write_if_match(
        &self,
        key: &str,
        version: &str,
        data: Vec<u8>,
    ) -> Result<Swap, SourceError> {
        let name = self.name(key);
        match &self.bucket {
            Bucket::S3(s) => {
                let p = s3_path(s, &name)?;
                let mode = if version.is_empty() {
                    PutMode::Create
                } else {
                    PutMode::Update(UpdateVersion {
                        e_tag: Some(version.to_string()),
                        version: None,
                    })
                };
                let options = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                match s.inner.put_opts(&p, PutPayload::from(data), options).await {
                    Ok(r) => Ok(Swap::Written(r.e_tag.unwrap_or_default())),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => Ok(Swap::Conflict),
                    Err(e) => Err(s3_error(s, &name, e)),
                }
            }
            Bucket::Gs { api, bucket } => {
                let generation = if version.is_empty() { "0" } else { version };
                match gcs_upload(api, bucket, &name, data, Some(generation)).await? {
                    Some(g) => Ok(Swap::Written(g)),
                    None => Ok(Swap::Conflict),
                }
            }
        }
    }

    /// Writes `data` unconditionally.
    pub async fn write(&self, key: &str, data: Vec<u8>) -> Result<(), SourceError> {
        let name = self.name(key);
        match &self.bucket {
            Bucket::S3(s) => {
                let p = s3_path(s, &name)?;
                s.inner
                    .put_opts(&p, PutPayload::from(data), PutOptions::default())
                    .await
                    .map_err(|e| s3_error(s, &name, e))?;
                Ok(())
            }
            Bucket::Gs { api, bucket } => {
                gcs_upload(api, bucket, &name, data, None).await?;
                Ok(())
            }
        }
    }

    /// Streams the object into `to` (created, mode 0600), refusing more than `limit` bytes;
    /// `false` when the object is absent (nothing is created then).
    pub async fn read_to_file(
        &self,
        key: &str,
        to: &Path,
        limit: u64,
    ) -> Result<bool, SourceError> {
        let name = self.name(key);
        let what = format!("{}{key}", self.describe());
        let mut stream: crate::ByteStream = match &self.bucket {
            Bucket::S3(s) => {
                let p = s3_path(s, &name)?;
                let got = match s.inner.get_opts(&p, GetOptions::default()).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => return Ok(false),
                    Err(e) => return Err(s3_error(s, &name, e)),
                };
                if got.meta.size > limit {
                    return Err(too_big(&self.describe(), key, limit));
                }
                let stream = got.into_stream().map(|r| r.map_err(std::io::Error::other));
                Box::pin(tokio_util::io::StreamReader::new(stream))
            }
            Bucket::Gs { api, bucket } => match gcs_get(api, bucket, &name).await? {
                Some(r) => http::byte_stream(r),
                None => return Ok(false),
            },
        };
        let res = async {
            let mut out = tokio::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(to)
                .await?;
            let mut limited = tokio::io::AsyncReadExt::take(&mut stream, limit + 1);
            let n = tokio::io::copy(&mut limited, &mut out).await?;
            if n > limit {
                return Err(std::io::Error::other(format!("more than {limit} bytes")));
            }
            out.sync_data().await?;
            std::io::Result::Ok(())
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(to).await;
            return Err(SourceError::Transient {
                message: format!("{what}: {e}"),
                retry_after: None,
            });
        }
        Ok(true)
    }
}

fn s3_path(s: &S3Store, name: &str) -> Result<StorePath, SourceError> {
    StorePath::parse(name).map_err(|e| {
        SourceError::Permanent(format!("{}: unusable key {name:?}: {e}", s.describe()))
    })
}

fn s3_error(s: &S3Store, name: &str, e: object_store::Error) -> SourceError {
    SourceError::Transient {
        message: format!("{}/{name}: {e}", s.describe()),
        retry_after: None,
    }
}

fn too_big(store: &str, key: &str, limit: u64) -> SourceError {
    SourceError::Permanent(format!("{store}{key} is larger than {limit} bytes"))
}

/// A media GET; `None` on 404.
async fn gcs_get(
    api: &Api,
    bucket: &str,
    name: &str,
) -> Result<Option<reqwest::Response>, SourceError> {
    let what = format!("gs://{bucket}/{name}");
    let mut url = api.url(&["storage", "v1", "b", bucket, "o", name]);
    url.query_pairs_mut().append_pair("alt", "media");
    let request = api.authed(api.http.client().get(url)).await?;
    let response = api.http.send_stream(request).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    api::check(response, &what).await.map(Some)
}

/// A multipart upload (what Go's client sends for small objects, and the form emulators check
/// `ifGenerationMatch` on), conditional on `if_generation` when given. `Ok(None)` is a failed
/// precondition; `Ok(Some(generation))` a write.
async fn gcs_upload(
    api: &Api,
    bucket: &str,
    name: &str,
    data: Vec<u8>,
    if_generation: Option<&str>,
) -> Result<Option<String>, SourceError> {
    let what = format!("gs://{bucket}/{name}");
    let mut url = api.url(&["upload", "storage", "v1", "b", bucket, "o"]);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("uploadType", "multipart");
        if let Some(g) = if_generation {
            q.append_pair("ifGenerationMatch", g);
        }
    }
    let boundary = boundary_for(&data);
    let meta = serde_json::json!({ "name": name }).to_string();
    let mut body = Vec::with_capacity(data.len() + meta.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let request = api
        .http
        .client()
        .post(url)
        .header(
            http::header::CONTENT_TYPE,
            format!("multipart/related; boundary={boundary}"),
        )
        .body(body);
    let request = api.authed(request).await?;
    let response = api.http.send_raw(request).await?;
    if response.status() == StatusCode::PRECONDITION_FAILED {
        return Ok(None);
    }
    let response = api::check(response, &what).await?;
    let body = http::read_bounded(response, 64 * 1024).await?;
    let object: GcsObject = serde_json::from_slice(&body)
        .map_err(|e| SourceError::Permanent(format!("{what}: malformed upload answer: {e}")))?;
    Ok(Some(object.generation.unwrap_or_default()))
}

/// A multipart boundary that does not occur in `data`.
fn boundary_for(data: &[u8]) -> String {
    let mut n: u64 = 0x5eed_cafe_f00d_0001 ^ data.len() as u64;
    loop {
        let b = format!("dewy-{n:016x}");
        if !data.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
}
