//! The HTTP client every HTTP source shares (timeouts, user agent, TLS, proxies), and the
//! mapping of HTTP outcomes onto [`SourceError`] so every source retries the same things.
//!
//! - Transport errors, timeouts, 408, 429 and 5xx are [`SourceError::Transient`] (with the
//!   server's `Retry-After` when it sent one); other 4xx are [`SourceError::Permanent`].
//! - Every body read into memory goes through [`read_bounded`]: a registry cannot make us
//!   allocate more than the caller's limit.
//! - Messages never carry a URL's query string (pre-signed URLs hold credentials there).

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::{ByteStream, SourceError};

pub use reqwest::{Method, Url, header};

/// `deploy-agent/<version>`: registries log it, and some (GitHub) reject requests without one.
pub const USER_AGENT: &str = concat!("deploy-agent/", env!("CARGO_PKG_VERSION"));

/// How long a `Retry-After` we honour may be; a longer one is clamped (a misconfigured server
/// must not park the agent for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Client settings. [`HttpConfig::default`] is what the agent uses.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// TCP + TLS connect.
    pub connect_timeout: Duration,
    /// Whole request, for API calls ([`HttpClient::send`]) whose bodies are small.
    pub request_timeout: Duration,
    /// Longest silence while streaming a download ([`HttpClient::send_stream`]): a download
    /// has no overall deadline (layers can be gigabytes), but a stalled one must end.
    pub read_idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A cheap-to-clone client (connection pool shared between clones).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    request_timeout: Duration,
}

impl HttpClient {
    pub fn new(config: &HttpConfig) -> Result<Self, SourceError> {
        install_crypto_provider();
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_idle_timeout)
            .build()
            .map_err(|e| SourceError::Permanent(format!("HTTP client: {e}")))?;
        Ok(HttpClient {
            inner,
            request_timeout: config.request_timeout,
        })
    }

    /// The underlying client, to build requests (`client().get(url)`).
    pub fn client(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends an API request with the overall request timeout; a non-2xx answer becomes an
    /// error ([`status_error`]). Use [`HttpClient::send_raw`] to look at non-2xx answers
    /// (304, 401 challenges, 404 meaning "absent").
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, SourceError> {
        let response = self.send_raw(request).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(&response))
        }
    }

    /// Sends with the overall request timeout; any HTTP answer is `Ok`, transport failures
    /// are [`SourceError::Transient`].
    pub async fn send_raw(&self, request: RequestBuilder) -> Result<Response, SourceError> {
        request
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(transport_error)
    }

    /// Sends a download request: no overall deadline (only connect and idle-read timeouts);
    /// any HTTP answer is `Ok`.
    pub async fn send_stream(&self, request: RequestBuilder) -> Result<Response, SourceError> {
        request.send().await.map_err(transport_error)
    }
}

/// Makes ring the process-wide rustls provider if none is set yet. Our client does not need
/// it (it carries its own config), but any other reqwest/rustls client in the process (a
/// library's internal one, `reqwest::Client::new()` in a test) panics without a default
/// provider, since the workspace builds rustls without aws-lc-rs.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// rustls with ring and the system's roots (the platform verifier reads the OS store, so
/// `ca-certificates` and corporate CAs installed there work).
fn tls_config() -> Result<rustls::ClientConfig, SourceError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Permanent(format!("TLS configuration: {e}")))?
        .with_platform_verifier()
        .map_err(|e| SourceError::Permanent(format!("TLS roots: {e}")))
        .map(|b| b.with_no_client_auth())
}

/// `scheme://host[:port]/path` of a URL: what messages and logs may show.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// A transport failure (connect, TLS, timeout, reset, body decode) as a [`SourceError`].
pub fn transport_error(e: reqwest::Error) -> SourceError {
    let what = e.url().map(redact);
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let permanent = e.is_builder();
    let detail = error_chain(&e.without_url());
    let message = match what {
        Some(url) => format!("{url}: {kind}: {detail}"),
        None => format!("{kind}: {detail}"),
    };
    if permanent {
        SourceError::Permanent(message)
    } else {
        SourceError::Transient {
            message,
            retry_after: None,
        }
    }
}

/// The whole `source()` chain: reqwest's own message ("error sending request") hides the
/// useful part ("Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A non-2xx answer as a [`SourceError`]: 408/429/5xx are transient (with `Retry-After`),
/// other statuses permanent.
pub fn status_error(response: &Response) -> SourceError {
    let message = format!("{}: HTTP {}", redact(response.url()), response.status());
    classify_status(response.status(), response.headers(), message)
}

/// [`status_error`] with the caller's message (e.g. one that names the object).
pub fn classify_status(status: StatusCode, headers: &HeaderMap, message: String) -> SourceError {
    if is_transient(status) {
        SourceError::Transient {
            message,
            retry_after: retry_after(headers),
        }
    } else {
        SourceError::Permanent(message)
    }
}

/// Whether retrying the same request later may succeed.
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` as a duration: delta-seconds or an HTTP-date (RFC 9110 10.2.3), clamped to
/// an hour; `None` when absent or unparsable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, time::OffsetDateTime::now_utc())
}

fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(value, format)
            .ok()?
            .assume_utc();
        let delta = at - now;
        if delta.is_negative() {
            Duration::ZERO
        } else {
            delta.unsigned_abs()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Reads a body into memory, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading, since the header can lie or be absent).
pub async fn read_bounded(mut response: Response, limit: usize) -> Result<Vec<u8>, SourceError> {
    let url = redact(response.url());
    let too_large = || SourceError::Permanent(format!("{url}: response larger than {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A response body as the agent's [`ByteStream`]. Transport errors surface as `io::Error`
/// whose inner error is the [`SourceError`] (`Transient`), so the cache can tell a dropped
/// connection (resume later) from a local disk error.
pub fn byte_stream(response: Response) -> ByteStream {
    let stream = response
        .bytes_stream()
        .map_err(|e| std::io::Error::other(transport_error(e)));
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// Checks that a ranged request was honoured: `offset > 0` needs `206 Partial Content`
/// starting at `offset`; a `200` would restart from byte 0 and corrupt the resumed file.
pub fn check_range(response: &Response, offset: u64) -> Result<(), SourceError> {
    if offset == 0 {
        return Ok(());
    }
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Err(SourceError::Transient {
            message: format!(
                "{}: asked for bytes from {offset}, got HTTP {} instead of 206",
                redact(response.url()),
                response.status()
            ),
            retry_after: None,
        });
    }
    // `Content-Range: bytes <first>-<last>/<total>`; absent is tolerated (some servers omit
    // it), a different start is not.
    if let Some(range) = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let first = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('-').next())
            .and_then(|f| f.trim().parse::<u64>().ok());
        if first != Some(offset) {
            return Err(SourceError::Permanent(format!(
                "{}: asked for bytes from {offset}, got Content-Range {range:?}",
                redact(response.url())
            )));
        }
    }
    Ok(())
}

/// The `Range` header value for a resume at `offset`.
pub fn range_from(offset: u64) -> String {
    format!("bytes={offset}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("999999", now),
            Some(MAX_RETRY_AFTER),
            "clamped"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn statuses_sorted_by_what_to_do() {
        let h = HeaderMap::new();
        for s in [500, 502, 503, 504, 429, 408] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(
                    classify_status(status, &h, String::new()),
                    SourceError::Transient { .. }
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 410] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(
                    classify_status(status, &h, String::new()),
                    SourceError::Permanent(_)
                ),
                "{s}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        match classify_status(StatusCode::TOO_MANY_REQUESTS, &h, "x".into()) {
            SourceError::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redact_drops_credentials_and_query() {
        let url =
            Url::parse("https://user:pw@bucket.s3.example/key?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact(&url), "https://bucket.s3.example/key");
    }

    #[test]
    fn client_builds_with_ring() {
        HttpClient::new(&HttpConfig::default()).unwrap();
    }
}
