//! The part of GitHub's REST API a release follower needs: list releases (paginated,
//! conditional), one release by tag, download an asset, upload an asset.
//!
//! Politeness matters more than speed here: a fleet polling every 10 s against one token's
//! 5000 requests/h is Dewy's best-known failure (spec 13). So:
//! - the first page is requested with `If-None-Match`; GitHub does not count a `304` against
//!   the rate limit, and an unchanged first page means no new release (newest come first);
//! - once GitHub says the budget is spent (`X-RateLimit-Remaining: 0`), no request is sent
//!   before `X-RateLimit-Reset`: the caller gets [`SourceError::Transient`] with the wait;
//! - `Retry-After` (secondary rate limits) is honoured the same way.
//!
//! The token only goes to the API origin (and GitHub's own upload host): pagination links and
//! upload URLs from responses are checked, and an asset download's redirect to the storage host
//! is followed without the `Authorization` header (reqwest strips it on a cross-origin
//! redirect; a test holds it to that).

use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::auth::Credentials;
use crate::SourceError;
use crate::http::{self, HttpClient, Method, Url, header};

/// Releases per page, GitHub's maximum.
const PER_PAGE: u32 = 100;
/// Pages we follow at most (10,000 releases): a bound on what a listing can make us do.
const MAX_PAGES: usize = 100;
/// Largest page body we read (100 releases with long notes and many assets fit well within).
const MAX_PAGE_BYTES: usize = 32 << 20;
/// Largest whole listing we read: what is kept in memory between polls.
const MAX_LISTING_BYTES: usize = 128 << 20;
/// Largest error, token or single-release body we read.
const MAX_SMALL_BYTES: usize = 1 << 20;
/// The public API.
pub const DEFAULT_API: &str = "https://api.github.com/";
/// GitHub's media type for JSON answers.
const ACCEPT_JSON: &str = "application/vnd.github+json";
const API_VERSION: (&str, &str) = ("X-GitHub-Api-Version", "2022-11-28");

/// One release as the API lists it (only the fields we read).
#[derive(Debug, Clone, Deserialize)]
pub struct GhRelease {
    pub id: u64,
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    /// Ignored for selection (Dewy goes by the tag), kept for logs.
    #[serde(default)]
    pub prerelease: bool,
    /// RFC 3339; null for drafts.
    #[serde(default)]
    pub published_at: Option<String>,
    #[serde(default)]
    pub assets: Vec<GhAsset>,
    /// `https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}`.
    #[serde(default)]
    pub upload_url: Option<String>,
}

/// One asset of a release.
#[derive(Debug, Clone, Deserialize)]
pub struct GhAsset {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// The answer to a conditional listing.
pub enum Listing {
    /// The first page still has the ETag we sent.
    NotModified,
    /// All releases in API order (newest first), and the first page's ETag.
    Releases {
        releases: Vec<GhRelease>,
        etag: Option<String>,
    },
}

/// A GitHub (or GitHub Enterprise) API endpoint with credentials.
pub struct GitHub {
    http: HttpClient,
    /// The API base, ending in `/`.
    api: Url,
    creds: Credentials,
    /// The App installation token and its expiry, when [`Credentials::App`].
    installation: Mutex<Option<(String, OffsetDateTime)>>,
    /// No request before this instant: the primary rate limit is spent.
    blocked_until: std::sync::Mutex<Option<OffsetDateTime>>,
}

impl GitHub {
    /// A client for `api` (GitHub Enterprise: `https://ghe.example/api/v3`); a trailing `/` is
    /// added as go-github does.
    pub fn new(http: HttpClient, api: &str, creds: Credentials) -> Result<GitHub, SourceError> {
        let with_slash = if api.ends_with('/') {
            api.to_string()
        } else {
            format!("{api}/")
        };
        let api = Url::parse(&with_slash)
            .map_err(|e| SourceError::Permanent(format!("GitHub API URL {api:?}: {e}")))?;
        if !matches!(api.scheme(), "http" | "https") || api.host_str().is_none() {
            return Err(SourceError::Permanent(format!(
                "GitHub API URL {api:?}: must be http(s)://host/..."
            )));
        }
        Ok(GitHub {
            http,
            api,
            creds,
            installation: Mutex::new(None),
            blocked_until: std::sync::Mutex::new(None),
        })
    }

    /// The endpoint and credentials from the environment: `GITHUB_API_URL`, else
    /// `GITHUB_ENDPOINT` (GitHub Actions and GHE conventions), else api.github.com.
    pub fn from_env(
        http: HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GitHub, SourceError> {
        let creds = Credentials::from_env(env)?;
        let api = env("GITHUB_API_URL")
            .filter(|v| !v.is_empty())
            .or_else(|| env("GITHUB_ENDPOINT").filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_API.to_string());
        GitHub::new(http, &api, creds)
    }

    /// `{api}repos/{owner}/{repo}/<rest...>`, each part one path segment.
    pub fn repo_url(&self, owner: &str, repo: &str, rest: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().push("repos").push(owner).push(repo);
            segs.extend(rest);
        }
        url
    }

    /// The API URL of an asset, the locator a layer carries.
    pub fn asset_url(&self, owner: &str, repo: &str, asset_id: u64) -> Url {
        self.repo_url(owner, repo, &["releases", "assets", &asset_id.to_string()])
    }

    /// Every release, newest first, following `Link: rel="next"`. With `etag`, a `304` on the
    /// first page ends the listing early ([`Listing::NotModified`]).
    pub async fn list_releases(
        &self,
        owner: &str,
        repo: &str,
        etag: Option<&str>,
    ) -> Result<Listing, SourceError> {
        let mut url = self.repo_url(owner, repo, &["releases"]);
        url.query_pairs_mut()
            .append_pair("per_page", &PER_PAGE.to_string());
        let what = format!("releases of {owner}/{repo}");
        let mut releases = Vec::new();
        let mut budget = MAX_LISTING_BYTES;
        let mut first_etag = None;
        for page in 0..MAX_PAGES {
            let mut req = self.request(Method::GET, url.clone()).await?;
            if page == 0
                && let Some(tag) = etag
            {
                req = req.header(header::IF_NONE_MATCH, tag);
            }
            let resp = self.send(req, &what).await?;
            if page == 0 && resp.status() == reqwest::StatusCode::NOT_MODIFIED {
                return Ok(Listing::NotModified);
            }
            let resp = self.expect_success(resp, &what).await?;
            if page == 0 {
                first_etag = resp
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let next = next_link(resp.headers());
            let body = http::read_bounded(resp, MAX_PAGE_BYTES.min(budget)).await?;
            budget -= body.len();
            let batch: Vec<GhRelease> = serde_json::from_slice(&body).map_err(|e| {
                SourceError::Permanent(format!("{what}: unexpected answer from GitHub: {e}"))
            })?;
            releases.extend(batch);
            match next {
                None => {
                    return Ok(Listing::Releases {
                        releases,
                        etag: first_etag,
                    });
                }
                Some(next) => url = self.same_origin(&next, "pagination link")?,
            }
        }
        Err(SourceError::Permanent(format!(
            "{what}: more than {} releases; refusing to page further",
            MAX_PAGES * PER_PAGE as usize
        )))
    }

    /// The release tagged `tag` (drafts included, as the listing would have them), or `None`.
    pub async fn release_by_tag(
        &self,
        owner: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<GhRelease>, SourceError> {
        let url = self.repo_url(owner, repo, &["releases", "tags", tag]);
        let what = format!("release {tag} of {owner}/{repo}");
        let req = self.request(Method::GET, url).await?;
        let resp = self.send(req, &what).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.expect_success(resp, &what).await?;
        let body = http::read_bounded(resp, MAX_PAGE_BYTES).await?;
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            SourceError::Permanent(format!("{what}: unexpected answer from GitHub: {e}"))
        })
    }

    /// The bytes of an asset from `offset` on. `asset_url` must be an API URL of ours
    /// ([`GitHub::asset_url`]). GitHub answers with a redirect to its storage host, which
    /// reqwest follows without our `Authorization` header.
    pub async fn download(
        &self,
        asset_url: &str,
        offset: u64,
    ) -> Result<reqwest::Response, SourceError> {
        let url = Url::parse(asset_url)
            .map_err(|e| SourceError::Permanent(format!("asset locator {asset_url:?}: {e}")))?;
        let url = self.same_origin(&url, "asset locator")?;
        let what = format!("asset {}", http::redact(&url));
        let mut req = self
            .request_accepting(Method::GET, url, "application/octet-stream")
            .await?;
        if offset > 0 {
            req = req.header(header::RANGE, http::range_from(offset));
        }
        self.note_wait()?;
        let resp = self
            .http
            .send_stream(req)
            .await
            .map_err(|e| prefix(e, &what))?;
        self.note_rate_limit(resp.headers());
        let resp = self.expect_success(resp, &what).await?;
        http::check_range(&resp, offset)?;
        Ok(resp)
    }

    /// Uploads `body` as asset `name` of `release` (the audit file), to the release's
    /// `upload_url`.
    pub async fn upload(
        &self,
        release: &GhRelease,
        name: &str,
        body: String,
    ) -> Result<(), SourceError> {
        let what = format!("upload of {name} to release {}", release.tag_name);
        let template = release.upload_url.as_deref().ok_or_else(|| {
            SourceError::Permanent(format!("{what}: the release has no upload_url"))
        })?;
        // RFC 6570 template: `.../assets{?name,label}`.
        let base = template.split('{').next().unwrap_or(template);
        let mut url = Url::parse(base)
            .map_err(|e| SourceError::Permanent(format!("{what}: upload_url {base:?}: {e}")))?;
        if !self.is_upload_host(&url) {
            return Err(SourceError::Permanent(format!(
                "{what}: upload_url host {} is neither the API host nor GitHub's upload host; not sending credentials there",
                url.host_str().unwrap_or("")
            )));
        }
        url.query_pairs_mut().clear().append_pair("name", name);
        let req = self
            .request(Method::POST, url)
            .await?
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body);
        let resp = self.send(req, &what).await?;
        self.expect_success(resp, &what).await.map(drop)
    }

    /// A request with GitHub's headers and our credentials.
    async fn request(
        &self,
        method: Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, SourceError> {
        self.request_accepting(method, url, ACCEPT_JSON).await
    }

    /// A request with GitHub's headers and our credentials. (`Accept` is set once: reqwest's
    /// `header()` appends, and with two `Accept` values GitHub answers JSON.)
    async fn request_accepting(
        &self,
        method: Method,
        url: Url,
        accept: &str,
    ) -> Result<reqwest::RequestBuilder, SourceError> {
        let token = self.token().await?;
        Ok(self
            .http
            .client()
            .request(method, url)
            .header(header::ACCEPT, accept)
            .header(API_VERSION.0, API_VERSION.1)
            .bearer_auth(token))
    }

    /// Sends an API request unless the rate limit is known to be spent, and remembers what the
    /// answer says about the budget.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, SourceError> {
        self.note_wait()?;
        let resp = self.http.send_raw(req).await.map_err(|e| prefix(e, what))?;
        self.note_rate_limit(resp.headers());
        Ok(resp)
    }

    /// `Transient` while the primary rate limit is spent.
    fn note_wait(&self) -> Result<(), SourceError> {
        let now = OffsetDateTime::now_utc();
        let until = *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some(t) if t > now => Err(rate_limited(t, now)),
            _ => Ok(()),
        }
    }

    fn note_rate_limit(&self, headers: &header::HeaderMap) {
        let mut blocked = self.blocked_until.lock().unwrap_or_else(|p| p.into_inner());
        *blocked = match rate_limit_reset(headers) {
            Some(reset) if remaining(headers) == Some(0) => Some(reset),
            _ => None,
        };
    }

    /// A 2xx response, or the error GitHub's answer means.
    async fn expect_success(
        &self,
        resp: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, SourceError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = http::read_bounded(resp, MAX_SMALL_BYTES)
            .await
            .unwrap_or_default();
        let github_says = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(sanitize));
        let detail = github_says.map(|m| format!(": {m}")).unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let rate = matches!(status.as_u16(), 403 | 429);
        if rate && remaining(&headers) == Some(0) {
            let reset = rate_limit_reset(&headers).unwrap_or(now + Duration::from_secs(60));
            return Err(rate_limited_what(what, reset, now));
        }
        if rate && let Some(wait) = http::retry_after(&headers) {
            return Err(SourceError::Transient {
                message: format!(
                    "{what}: GitHub asks to slow down (HTTP {status}, retry after {}s){detail}",
                    wait.as_secs()
                ),
                retry_after: Some(wait),
            });
        }
        let hint = match status.as_u16() {
            401 => " (the token or App credentials were rejected)",
            403 => " (the credentials lack access to this repository's releases)",
            404 => " (no such repository or release, or it is not visible to these credentials)",
            422 => " (GitHub refused the request as invalid)",
            _ => "",
        };
        Err(http::classify_status(
            status,
            &headers,
            format!("{what}: HTTP {status}{hint}{detail}"),
        ))
    }

    /// The bearer token for the next request: the configured token, or a valid App
    /// installation token (exchanged when absent or under 5 minutes from expiry).
    async fn token(&self) -> Result<String, SourceError> {
        let app = match &self.creds {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::App(app) => app,
        };
        let mut cached = self.installation.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some((token, expires)) = cached.as_ref()
            && *expires - now > super::auth::REFRESH_MARGIN
        {
            return Ok(token.clone());
        }
        let mut url = self.api.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([
                "app",
                "installations",
                &app.installation_id,
                "access_tokens",
            ]);
        }
        let what = "GitHub App installation token";
        let req = self
            .http
            .client()
            .post(url)
            .header(header::ACCEPT, ACCEPT_JSON)
            .header(API_VERSION.0, API_VERSION.1)
            .bearer_auth(app.jwt(now)?);
        let resp = self.send(req, what).await?;
        let resp = self.expect_success(resp, what).await?;
        let body = http::read_bounded(resp, MAX_SMALL_BYTES).await?;
        #[derive(Deserialize)]
        struct Minted {
            token: String,
            expires_at: String,
        }
        let minted: Minted = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Permanent(format!("{what}: unexpected answer: {e}")))?;
        let expires = common::timefmt::parse_rfc3339(&minted.expires_at).ok_or_else(|| {
            SourceError::Permanent(format!("{what}: bad expires_at {:?}", minted.expires_at))
        })?;
        *cached = Some((minted.token.clone(), expires));
        Ok(minted.token)
    }

    /// `url` if it is on the API's origin (scheme, host, port): only there do we send the
    /// token.
    fn same_origin(&self, url: &Url, what: &str) -> Result<Url, SourceError> {
        if url.origin() == self.api.origin() {
            Ok(url.clone())
        } else {
            Err(SourceError::Permanent(format!(
                "{what} {} is not on the GitHub API origin {}; not sending credentials there",
                http::redact(url),
                http::redact(&self.api)
            )))
        }
    }

    /// The API origin itself (GHE serves uploads under `/api/uploads`), or GitHub.com's
    /// upload host when we talk to api.github.com.
    fn is_upload_host(&self, url: &Url) -> bool {
        url.origin() == self.api.origin()
            || (self.api.host_str() == Some("api.github.com")
                && url.scheme() == "https"
                && url.host_str() == Some("uploads.github.com"))
    }
}

fn prefix(e: SourceError, what: &str) -> SourceError {
    match e {
        SourceError::Transient {
            message,
            retry_after,
        } => SourceError::Transient {
            message: format!("{what}: {message}"),
            retry_after,
        },
        SourceError::Permanent(m) => SourceError::Permanent(format!("{what}: {m}")),
        other => other,
    }
}

fn remaining(headers: &header::HeaderMap) -> Option<u64> {
    headers
        .get("x-ratelimit-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `X-RateLimit-Reset`: Unix seconds.
fn rate_limit_reset(headers: &header::HeaderMap) -> Option<OffsetDateTime> {
    let secs: i64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

fn rate_limited(reset: OffsetDateTime, now: OffsetDateTime) -> SourceError {
    rate_limited_what("GitHub API", reset, now)
}

fn rate_limited_what(what: &str, reset: OffsetDateTime, now: OffsetDateTime) -> SourceError {
    // At least a second, so a reset in the past does not turn into a busy loop; at most the
    // hour GitHub's windows last.
    let wait = (reset - now)
        .clamp(time::Duration::seconds(1), time::Duration::hours(1))
        .unsigned_abs();
    SourceError::Transient {
        message: format!(
            "{what}: GitHub API rate limit exceeded; it resets at {}",
            common::timefmt::rfc3339_secs(reset)
        ),
        retry_after: Some(wait),
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288, as GitHub writes it:
/// `<url>; rel="next", <url>; rel="last"`).
pub fn next_link(headers: &header::HeaderMap) -> Option<Url> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                Url::parse(target).ok()
            } else {
                None
            }
        })
}

/// A server-supplied message, made safe for one log line and bounded.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_next_is_found_among_others() {
        let mut h = header::HeaderMap::new();
        h.insert(
            header::LINK,
            r#"<https://api.github.com/repositories/1/releases?per_page=100&page=1>; rel="prev", <https://api.github.com/repositories/1/releases?per_page=100&page=3>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=9>; rel="last""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).unwrap().as_str(),
            "https://api.github.com/repositories/1/releases?per_page=100&page=3"
        );
        h.insert(header::LINK, r#"<https://x/>; rel="last""#.parse().unwrap());
        assert!(next_link(&h).is_none());
    }

    #[test]
    fn rate_limit_wait_is_bounded() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let wait = |reset: i64| match rate_limited(
            OffsetDateTime::from_unix_timestamp(reset).unwrap(),
            now,
        ) {
            SourceError::Transient { retry_after, .. } => retry_after.unwrap().as_secs(),
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(1_000_042), 42);
        assert_eq!(wait(999_000), 1);
        assert_eq!(wait(1_100_000), 3600);
    }
}
