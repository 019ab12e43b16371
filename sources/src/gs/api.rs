//! The few GCS JSON API calls a Dewy registry needs: list (with and without delimiter, every
//! page), media download (ranged), media upload of an empty audit object.

use std::sync::Arc;

use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use crate::bucket::Object;
use crate::http::{self, HttpClient};
use crate::{ByteStream, SourceError};

const DEFAULT_BASE: &str = "https://storage.googleapis.com";
/// One listing page (1000 entries by default) is far below this.
const MAX_PAGE: usize = 16 * 1024 * 1024;
/// Entries kept from one listing (all pages): the listing is held in memory.
const MAX_ENTRIES: usize = 100_000;
/// Error bodies are read for their message only.
const MAX_ERROR_BODY: usize = 64 * 1024;

enum Auth {
    /// The emulator: no credentials, as the Go client does under `STORAGE_EMULATOR_HOST`.
    Anonymous,
    /// Application Default Credentials (key file, gcloud user, metadata server).
    Google(GcpCredentialProvider),
}

pub struct Api {
    pub(crate) http: HttpClient,
    base: Url,
    auth: Auth,
}

/// A listing's names: `prefixes` with a delimiter, `objects` without.
pub struct Listing {
    pub prefixes: Vec<String>,
    pub objects: Vec<Object>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    items: Vec<Item>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    /// A decimal string in the JSON API.
    size: Option<String>,
    #[serde(rename = "timeCreated")]
    time_created: Option<String>,
}

impl Api {
    pub fn new(
        http: &HttpClient,
        bucket: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Api, SourceError> {
        let emulator = env("STORAGE_EMULATOR_HOST").filter(|h| !h.is_empty());
        let (base, auth) = match emulator {
            Some(host) => {
                let base = if host.contains("://") {
                    host
                } else {
                    format!("http://{host}")
                };
                (base, Auth::Anonymous)
            }
            None => {
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(bucket)
                    .with_http_connector(crate::s3::SharedConnector::new(http));
                if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty())
                {
                    b = b.with_application_credentials(path);
                }
                let store = b.build().map_err(|e| {
                    SourceError::Permanent(format!("gs://{bucket}: Google credentials: {e}"))
                })?;
                (
                    DEFAULT_BASE.to_string(),
                    Auth::Google(Arc::clone(store.credentials())),
                )
            }
        };
        let base = Url::parse(&base)
            .map_err(|e| SourceError::Permanent(format!("STORAGE_EMULATOR_HOST {base:?}: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(SourceError::Permanent(format!(
                "STORAGE_EMULATOR_HOST {base}: not a base URL"
            )));
        }
        Ok(Api {
            http: http.clone(),
            base,
            auth,
        })
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            // Checked in `new`: the base can be a base. Segments are percent-encoded here,
            // `/` in an object name included, as the API wants.
            path.pop_if_empty().extend(segments);
        }
        u
    }

    pub(crate) async fn authed(
        &self,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, SourceError> {
        match &self.auth {
            Auth::Anonymous => Ok(request),
            Auth::Google(creds) => {
                let token = creds
                    .get_credential()
                    .await
                    .map_err(|e| SourceError::Transient {
                        message: format!("Google credentials: {e}"),
                        retry_after: None,
                    })?;
                Ok(if token.bearer.is_empty() {
                    request
                } else {
                    request.bearer_auth(&token.bearer)
                })
            }
        }
    }

    /// Every page of `objects.list` under `prefix`, with `/` as delimiter or recursive.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimited: bool,
    ) -> Result<Listing, SourceError> {
        let mut out = Listing {
            prefixes: Vec::new(),
            objects: Vec::new(),
        };
        let mut token: Option<String> = None;
        loop {
            let mut url = self.url(&["storage", "v1", "b", bucket, "o"]);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("prefix", prefix);
                // GCS's own page size, said explicitly: emulators default to everything at
                // once, which would leave our paging untested.
                q.append_pair("maxResults", "1000");
                if delimited {
                    q.append_pair("delimiter", "/");
                }
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let what = format!("gs://{bucket}/{prefix}");
            let response = self.send(self.http.client().get(url), &what).await?;
            let body = http::read_bounded(response, MAX_PAGE).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| {
                SourceError::Permanent(format!("{what}: malformed object listing: {e}"))
            })?;
            out.prefixes.extend(page.prefixes);
            for item in page.items {
                out.objects.push(Object {
                    size: item.size.and_then(|s| s.parse().ok()).unwrap_or(0),
                    time: item
                        .time_created
                        .as_deref()
                        .and_then(common::timefmt::parse_rfc3339),
                    key: item.name,
                });
            }
            if out.prefixes.len() + out.objects.len() > MAX_ENTRIES {
                return Err(SourceError::Permanent(format!(
                    "{what}: more than {MAX_ENTRIES} entries"
                )));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                // A server repeating its token would loop forever.
                Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    fn media_url(&self, bucket: &str, object: &str) -> Url {
        let mut url = self.url(&["storage", "v1", "b", bucket, "o", object]);
        url.query_pairs_mut().append_pair("alt", "media");
        url
    }

    /// A small object (checksum file) read whole, refusing more than `limit` bytes.
    pub async fn read_small(
        &self,
        bucket: &str,
        object: &str,
        limit: usize,
    ) -> Result<Vec<u8>, SourceError> {
        let what = format!("gs://{bucket}/{object}");
        let request = self.http.client().get(self.media_url(bucket, object));
        let response = self.send(request, &what).await?;
        http::read_bounded(response, limit).await
    }

    /// The object's bytes from `offset` on, streamed.
    pub async fn get(
        &self,
        bucket: &str,
        object: &str,
        offset: u64,
    ) -> Result<ByteStream, SourceError> {
        let what = format!("gs://{bucket}/{object}");
        let mut request = self.http.client().get(self.media_url(bucket, object));
        if offset > 0 {
            request = request.header(http::header::RANGE, http::range_from(offset));
        }
        let request = self.authed(request).await?;
        let response = self.http.send_stream(request).await?;
        let response = check(response, &what).await?;
        http::check_range(&response, offset)?;
        Ok(http::byte_stream(response))
    }

    /// An empty `text/plain` object (Dewy's audit record).
    pub async fn put_empty_text(&self, bucket: &str, name: &str) -> Result<(), SourceError> {
        let mut url = self.url(&["upload", "storage", "v1", "b", bucket, "o"]);
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", name);
        let request = self
            .http
            .client()
            .post(url)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Vec::new());
        self.send(request, &format!("gs://{bucket}/{name}")).await?;
        Ok(())
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, SourceError> {
        let request = self.authed(request).await?;
        let response = self.http.send_raw(request).await?;
        check(response, what).await
    }
}

/// A 2xx answer, or the API's error as a [`SourceError`] naming `what` and carrying the
/// API's own message (`The specified bucket does not exist.`).
pub(crate) async fn check(response: Response, what: &str) -> Result<Response, SourceError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let detail = http::read_bounded(response, MAX_ERROR_BODY)
        .await
        .ok()
        .and_then(|b| api_message(&b))
        .unwrap_or_default();
    let mut message = format!("{what}: HTTP {}", status.as_u16());
    if status == StatusCode::NOT_FOUND && detail.is_empty() {
        message.push_str(": not found");
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    Err(http::classify_status(status, &headers, message))
}

/// `error.message` of a JSON API error body, bounded for the log.
fn api_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    let w: Wrapper = serde_json::from_slice(body).ok()?;
    Some(w.error.message.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_base_and_encoded_object_names() {
        let http = HttpClient::new(&crate::http::HttpConfig::default()).unwrap();
        let env = |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:4443".to_string());
        let api = Api::new(&http, "b", &env).unwrap();
        assert_eq!(
            api.media_url("b", "rel/v1.0.0+blue/app.tar.gz").as_str(),
            "http://127.0.0.1:4443/storage/v1/b/b/o/rel%2Fv1.0.0+blue%2Fapp.tar.gz?alt=media"
        );
        let env = |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| "https://e:1/".to_string());
        let api = Api::new(&http, "b", &env).unwrap();
        assert_eq!(api.url(&["x"]).as_str(), "https://e:1/x");
    }

    #[test]
    fn api_error_message() {
        let body = br#"{"error":{"code":404,"message":"The specified bucket does not exist."}}"#;
        assert_eq!(
            api_message(body).as_deref(),
            Some("The specified bucket does not exist.")
        );
        assert_eq!(api_message(b"Not Found"), None);
    }
}
