//! `img://host/repo`: OCI Distribution registries (dewy.md 1.5). The newest version tag of
//! the repository is the release; its image (this host's platform out of an index) gives one
//! [`Layer`] per image layer, fetched as blobs by digest.
//!
//! Polite polling: tags-list pages are revalidated with `If-None-Match` when the registry
//! sends an `ETag`, and an unchanged tag costs one `HEAD` of its manifest (the digest is
//! compared with the last resolution) instead of the manifest GETs.

pub mod auth;
pub mod manifest;
pub mod tags;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use common::dewy::calver::CalVerFormat;
use common::dewy::url::RegistryUrl;
use common::dewy::version::pick_latest;
use common::digest::Digest;
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, LINK, RANGE,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};

use crate::http::{self, HttpClient, Url};
use crate::{ByteStream, Layer, Release, SourceError};

pub use auth::Credentials;
pub use manifest::Platform;

/// Manifests and tags-list pages are read into memory up to this size.
const MAX_MANIFEST: usize = 4 << 20;
const MAX_TAGS_PAGE: usize = 4 << 20;
/// Dewy follows at most 100 pages of tags.
const MAX_TAG_PAGES: usize = 100;
/// All pages together: tag names kept in memory.
const MAX_TAGS: usize = 100_000;

/// An `img://` source.
pub struct ImgSource {
    http: HttpClient,
    /// `http(s)://host[:port]/`
    base: Url,
    repo: String,
    pre_release: bool,
    calver: Option<CalVerFormat>,
    platform: Platform,
    creds: Option<Credentials>,
    // Boxed: keeps `Source`'s variants of similar size (clippy::large_enum_variant).
    state: Box<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The bearer token the registry's realm gave us, reused until a 401.
    token: Option<String>,
    /// Tags-list pages by URL: (ETag, tags, next page).
    pages: HashMap<String, (HeaderValue, Vec<String>, Option<Url>)>,
    /// The last resolution: tag, manifest digest by tag, release.
    resolved: Option<(String, String, Release)>,
}

impl ImgSource {
    /// From a parsed `img://` URL, with the process environment and Docker config for
    /// credentials.
    pub fn new(url: &RegistryUrl, http: HttpClient) -> Result<ImgSource, SourceError> {
        ImgSource::with_env(url, http, &|k| std::env::var(k).ok())
    }

    /// [`ImgSource::new`] with an explicit environment (`DOCKER_USERNAME`, `DOCKER_PASSWORD`,
    /// `GITHUB_TOKEN`, `DOCKER_CONFIG`, `HOME`).
    pub fn with_env(
        url: &RegistryUrl,
        http: HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ImgSource, SourceError> {
        let RegistryUrl::Img { host, repo, opts } = url else {
            return Err(SourceError::Permanent(format!("not an img:// URL: {url}")));
        };
        check_repo(repo)?;
        // Dewy: http when the host *starts with* localhost or 127.0.0.1; we add [::1] and the
        // explicit ?insecure=true.
        let plain = opts.insecure
            || host.starts_with("localhost")
            || host.starts_with("127.0.0.1")
            || host.starts_with("[::1]");
        let scheme = if plain { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{host}/"))
            .ok()
            .filter(|u| u.path() == "/" && u.username().is_empty() && u.query().is_none())
            .ok_or_else(|| {
                SourceError::Permanent(format!("img://: invalid registry host {host:?}"))
            })?;
        let calver = opts
            .calver
            .as_deref()
            .map(CalVerFormat::parse)
            .transpose()
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        Ok(ImgSource {
            http,
            base,
            repo: repo.clone(),
            pre_release: opts.pre_release,
            calver,
            platform: Platform::host(),
            creds: Credentials::lookup(host, env)?,
            state: Box::default(),
        })
    }

    /// Resolve indexes for another platform than this machine's (deployctl importing for a
    /// fleet of another architecture, tests).
    pub fn with_platform(mut self, platform: Platform) -> ImgSource {
        self.platform = platform;
        self
    }

    /// Replace the credentials found in the environment.
    pub fn with_credentials(mut self, creds: Option<Credentials>) -> ImgSource {
        self.creds = creds;
        self
    }

    pub async fn current(&self) -> Result<Release, SourceError> {
        let tags = self.list_tags().await?;
        let (index, version) = pick_latest(&tags, self.pre_release, self.calver.as_ref())
            .ok_or(SourceError::NoVersion)?;
        let tag = &tags[index];
        let mut release = self.resolve(tag).await?;
        release.slot = version.slot().to_string();
        Ok(release)
    }

    /// The image `reference` (a tag or `sha256:` digest) resolved for our platform, as a
    /// release named `reference`: what `deployctl import` needs without version picking.
    pub async fn resolve(&self, reference: &str) -> Result<Release, SourceError> {
        check_reference(reference)?;
        let cached = self
            .lock()
            .resolved
            .clone()
            .filter(|(tag, _, _)| tag == reference);
        if let Some((_, digest, release)) = cached
            && self.head_digest(reference).await?.as_deref() == Some(digest.as_str())
        {
            tracing::debug!(tag = reference, %digest, "img: manifest unchanged");
            return Ok(release);
        }
        let (digest, body, content_type) = self.get_manifest(reference, None).await?;
        let layers = match manifest::parse(&body, content_type.as_deref())? {
            manifest::Manifest::Image { config, layers } => manifest::layers(&config, &layers)?,
            manifest::Manifest::Index(entries) => {
                let entry = manifest::pick_platform(&entries, &self.platform)?;
                let (_, body, content_type) =
                    self.get_manifest(&entry.digest, Some(entry.size)).await?;
                match manifest::parse(&body, content_type.as_deref())? {
                    manifest::Manifest::Image { config, layers } => {
                        manifest::layers(&config, &layers)?
                    }
                    manifest::Manifest::Index(_) => {
                        return Err(SourceError::Permanent(format!(
                            "{}: index entry {} is itself an index",
                            self.name(),
                            entry.digest
                        )));
                    }
                }
            }
        };
        let release = Release {
            tag: reference.to_string(),
            created_at: None,
            slot: String::new(),
            layers,
        };
        self.lock().resolved = Some((reference.to_string(), digest, release.clone()));
        Ok(release)
    }

    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        manifest::parse_digest(&layer.locator)?;
        let url = self.url(&format!("blobs/{}", layer.locator))?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(RANGE, header_value(&http::range_from(offset))?);
        }
        let response = self.send(Method::GET, url, headers, true).await?;
        let response = self.check(response, &format!("blob {}", layer.locator))?;
        http::check_range(&response, offset)?;
        Ok(http::byte_stream(response))
    }

    /// `host/repo` for messages.
    fn name(&self) -> String {
        format!(
            "{}{}",
            self.base.host_str().unwrap_or_default(),
            self.base
                .port()
                .map(|p| format!(":{p}/"))
                .unwrap_or_else(|| "/".into())
        ) + &self.repo
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a cache: a panic elsewhere cannot leave it inconsistent in a way
        // that matters, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn url(&self, tail: &str) -> Result<Url, SourceError> {
        self.base
            .join(&format!("v2/{}/{tail}", self.repo))
            .map_err(|e| SourceError::Permanent(format!("{}: {tail}: {e}", self.name())))
    }

    async fn list_tags(&self) -> Result<Vec<String>, SourceError> {
        let mut url = self.url("tags/list")?;
        let mut all: Vec<String> = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let cached = self.lock().pages.get(url.as_str()).cloned();
            let mut headers = HeaderMap::new();
            if let Some((etag, _, _)) = &cached {
                headers.insert(IF_NONE_MATCH, etag.clone());
            }
            let response = self.send(Method::GET, url.clone(), headers, false).await?;
            let (page, next) = match cached {
                Some((_, page, next)) if response.status() == StatusCode::NOT_MODIFIED => {
                    (page, next)
                }
                _ => {
                    let response = self.check(response, "tags list")?;
                    let etag = response.headers().get(ETAG).cloned();
                    let next = match response.headers().get(LINK).map(|l| l.to_str()) {
                        Some(Ok(link)) => tags::next_link(link, &url)?,
                        _ => None,
                    };
                    let page =
                        tags::parse_page(&http::read_bounded(response, MAX_TAGS_PAGE).await?)?;
                    if let Some(etag) = etag {
                        self.lock()
                            .pages
                            .insert(url.to_string(), (etag, page.clone(), next.clone()));
                    }
                    (page, next)
                }
            };
            all.extend(page);
            if all.len() > MAX_TAGS {
                return Err(SourceError::Permanent(format!(
                    "{}: more than {MAX_TAGS} tags",
                    self.name()
                )));
            }
            match next {
                Some(n) => url = n,
                None => return Ok(all),
            }
        }
        tracing::warn!(
            repo = %self.name(),
            "img: tags list has more than {MAX_TAG_PAGES} pages; using the first {MAX_TAG_PAGES} (as Dewy)"
        );
        Ok(all)
    }

    /// The manifest digest of `reference` by `HEAD`, `None` if the registry does not say.
    async fn head_digest(&self, reference: &str) -> Result<Option<String>, SourceError> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let response = self
            .send(Method::HEAD, url, accept_manifests(), false)
            .await?;
        if !response.status().is_success() {
            // Some registries do not allow HEAD; a real problem shows on the GET.
            return Ok(None);
        }
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from))
    }

    /// GETs a manifest; returns its digest (verified against the body), body and content type.
    /// `expected_size` is the descriptor's size when fetching by digest.
    async fn get_manifest(
        &self,
        reference: &str,
        expected_size: Option<i64>,
    ) -> Result<(String, Vec<u8>, Option<String>), SourceError> {
        let what = format!("manifest {reference}");
        let url = self.url(&format!("manifests/{reference}"))?;
        let response = self
            .send(Method::GET, url, accept_manifests(), false)
            .await?;
        let response = self.check(response, &what)?;
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = http::read_bounded(response, MAX_MANIFEST).await?;
        let computed = format!("sha256:{}", Digest::of(&body).to_hex());
        let bad = |why: String| SourceError::Permanent(format!("{}: {what}: {why}", self.name()));
        if reference.starts_with("sha256:") && computed != reference {
            return Err(bad(format!("content has digest {computed}")));
        }
        if let Some(size) = expected_size
            && i64::try_from(body.len()).ok() != Some(size)
        {
            return Err(bad(format!("{} bytes, the index says {size}", body.len())));
        }
        if let Some(h) = &header_digest
            && h.starts_with("sha256:")
            && *h != computed
        {
            return Err(bad(format!(
                "Docker-Content-Digest {h} but the content has digest {computed}"
            )));
        }
        Ok((computed, body, content_type))
    }

    /// Maps a non-2xx answer to an error naming what we asked for.
    fn check(&self, response: Response, what: &str) -> Result<Response, SourceError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.creds.is_none() => {
                " (no credentials: set DOCKER_USERNAME/DOCKER_PASSWORD or log in with docker)"
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (credentials refused)",
            StatusCode::NOT_FOUND => " (not found)",
            _ => "",
        };
        Err(http::classify_status(
            status,
            response.headers(),
            format!("{}: {what}: HTTP {status}{hint}", self.name()),
        ))
    }

    /// Sends with our credentials: the cached bearer token, else Basic credentials if any.
    /// On a `401` with a Bearer challenge, gets a token from the realm and retries once.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        stream: bool,
    ) -> Result<Response, SourceError> {
        let mut fresh_token = false;
        loop {
            let token = self.lock().token.clone();
            let mut request = self
                .http
                .client()
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            request = match (&token, &self.creds) {
                (Some(t), _) => request.bearer_auth(t),
                (None, Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
                (None, None) => request,
            };
            let response = if stream {
                self.http.send_stream(request).await?
            } else {
                self.http.send_raw(request).await?
            };
            if response.status() != StatusCode::UNAUTHORIZED || fresh_token {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .find(|c| c.scheme == "bearer");
            let Some(challenge) = challenge else {
                return Ok(response);
            };
            let scope = format!("repository:{}:pull", self.repo);
            let token = auth::fetch_token(
                &self.http,
                &self.base,
                &challenge,
                &scope,
                self.creds.as_ref(),
            )
            .await?;
            self.lock().token = Some(token);
            fresh_token = true;
        }
    }
}

fn accept_manifests() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
    h
}

fn header_value(s: &str) -> Result<HeaderValue, SourceError> {
    HeaderValue::from_str(s).map_err(|e| SourceError::Permanent(format!("header {s:?}: {e}")))
}

/// Repository names per the distribution spec: lowercase path components of `[a-z0-9._-]`.
/// A `:tag` suffix (Dewy ignores it and then fails the lookup) gets a clear error here.
fn check_repo(repo: &str) -> Result<(), SourceError> {
    let ok = !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        return Ok(());
    }
    let hint = if repo.contains(':') {
        " (a :tag suffix is not supported: the newest version tag is picked)"
    } else {
        ""
    };
    Err(SourceError::Permanent(format!(
        "img://: invalid repository name {repo:?}{hint}"
    )))
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a `sha256:` digest: anything else would
/// change the URL path.
fn check_reference(r: &str) -> Result<(), SourceError> {
    if r.starts_with("sha256:") {
        return manifest::parse_digest(r).map(|_| ());
    }
    let ok = !r.is_empty()
        && r.len() <= 128
        && r.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SourceError::Permanent(format!("invalid image tag {r:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_reference_names() {
        for ok in ["library/nginx", "a", "o/app-x/y_z.1"] {
            check_repo(ok).unwrap();
        }
        for bad in ["", "A/b", "a//b", "a/../b", "-a", "a/b?x", "a b"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        let e = check_repo("o/app:v1").unwrap_err();
        assert!(e.to_string().contains(":tag suffix"), "{e}");
        for ok in [
            "v1.2.3",
            "latest",
            "_x",
            &format!("sha256:{}", "a".repeat(64)),
        ] {
            check_reference(ok).unwrap();
        }
        for bad in ["", ".x", "v1/2", "v1+blue", "sha256:abc", &"x".repeat(129)] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scheme_by_host() {
        let http = HttpClient::new(&Default::default()).unwrap();
        let env = |_: &str| None;
        let base = |u: &str| {
            let url = RegistryUrl::parse(u).unwrap();
            ImgSource::with_env(&url, http.clone(), &env)
                .unwrap()
                .base
                .to_string()
        };
        assert_eq!(base("img://localhost:5000/a"), "http://localhost:5000/");
        assert_eq!(base("img://127.0.0.1:5000/a"), "http://127.0.0.1:5000/");
        assert_eq!(
            base("img://reg.lan:5000/a?insecure=true"),
            "http://reg.lan:5000/"
        );
        assert_eq!(base("img://ghcr.io/o/a"), "https://ghcr.io/");
        assert_eq!(
            base("img://docker.io/nginx"),
            "https://registry-1.docker.io/"
        );
    }
}
