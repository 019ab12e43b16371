//! A stand-in for GitHub's REST API (github.com cannot be reached from the tests), following
//! the documented shapes of the releases endpoints:
//! - `GET /repos/{o}/{r}/releases?per_page=&page=`: release objects newest first, a `Link`
//!   header with `rel="next"`/`rel="last"`, an `ETag`, `304` on a matching `If-None-Match`
//!   (not counted against the rate limit, as on GitHub);
//! - `GET /repos/{o}/{r}/releases/tags/{tag}`, `GET .../releases/assets/{id}` (JSON, or with
//!   `Accept: application/octet-stream` a `302` to a storage server on another port, which
//!   serves the bytes with `Range` support and records whether `Authorization` reached it);
//! - `POST <upload_url>?name=`: asset upload (the audit file);
//! - `POST /app/installations/{id}/access_tokens`: checks the App JWT's RS256 signature with
//!   the App's public key and mints an installation token;
//! - `X-RateLimit-*` headers on every answer, `403` when the budget is spent, `401`/`403`/`404`
//!   answers with GitHub's `{"message": ...}` bodies.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;

pub const OWNER: &str = "acme";
pub const REPO: &str = "app";

#[derive(Clone, Debug)]
pub struct Asset {
    pub id: u64,
    pub name: String,
    pub content: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Rel {
    pub id: u64,
    pub tag: String,
    pub draft: bool,
    pub prerelease: bool,
    pub published_at: OffsetDateTime,
    pub assets: Vec<Asset>,
}

/// One request the API port received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub status: u16,
}

/// How the App is set up: its id and the public key (DER RSAPublicKey) JWTs are checked with.
pub struct App {
    pub app_id: String,
    pub installation_id: String,
    pub public_key: Vec<u8>,
    /// Lifetime of minted installation tokens.
    pub token_ttl: time::Duration,
    pub minted: u32,
}

pub struct State {
    /// Newest first, as GitHub lists them.
    pub releases: Vec<Rel>,
    /// Largest page the stand-in serves (GitHub: 100), lowered to exercise pagination.
    pub max_page: usize,
    /// Accepted bearer tokens (a PAT; minted installation tokens are added).
    pub tokens: Vec<String>,
    pub app: Option<App>,
    pub rate_remaining: u64,
    pub rate_reset: i64,
    /// Answer every API request with this status (outage, 403 forbidden).
    pub fail_with: Option<(u16, &'static str)>,
    /// `Retry-After` seconds sent with `fail_with` (GitHub's secondary rate limits).
    pub retry_after: Option<u64>,
    pub seen: Vec<Seen>,
    /// `Authorization` headers (or None) the storage host received.
    pub storage_auth: Vec<Option<String>>,
    pub storage_ranges: Vec<Option<String>>,
    /// (release id, name, content type, body).
    pub uploads: Vec<(u64, String, String, String)>,
    next_id: u64,
}

impl State {
    pub fn add_release(
        &mut self,
        tag: &str,
        published_ago: time::Duration,
        assets: &[(&str, &[u8])],
    ) -> u64 {
        let id = self.id();
        let assets = assets
            .iter()
            .map(|(n, c)| Asset {
                id: self.id(),
                name: n.to_string(),
                content: c.to_vec(),
            })
            .collect();
        // Newest first.
        self.releases.insert(
            0,
            Rel {
                id,
                tag: tag.to_string(),
                draft: false,
                prerelease: false,
                published_at: OffsetDateTime::now_utc() - published_ago,
                assets,
            },
        );
        id
    }

    pub fn add_asset(&mut self, tag: &str, name: &str, content: &[u8]) {
        let id = self.id();
        let rel = self
            .releases
            .iter_mut()
            .find(|r| r.tag == tag)
            .expect("release");
        rel.assets.push(Asset {
            id,
            name: name.to_string(),
            content: content.to_vec(),
        });
    }

    pub fn release_mut(&mut self, tag: &str) -> &mut Rel {
        self.releases
            .iter_mut()
            .find(|r| r.tag == tag)
            .expect("release")
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn count(&self, status: u16, path_prefix: &str) -> usize {
        self.seen
            .iter()
            .filter(|s| s.status == status && s.path_and_query.starts_with(path_prefix))
            .count()
    }
}

pub struct GitHub {
    pub addr: SocketAddr,
    pub storage: SocketAddr,
    pub state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for GitHub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub const TOKEN: &str = "ghp_standin_token";

impl GitHub {
    pub async fn start() -> GitHub {
        let state = Arc::new(Mutex::new(State {
            releases: Vec::new(),
            max_page: 100,
            tokens: vec![TOKEN.to_string()],
            app: None,
            rate_remaining: 5000,
            rate_reset: OffsetDateTime::now_utc().unix_timestamp() + 3600,
            fail_with: None,
            retry_after: None,
            seen: Vec::new(),
            storage_auth: Vec::new(),
            storage_ranges: Vec::new(),
            uploads: Vec::new(),
            next_id: 1000,
        }));
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let storage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = api.local_addr().unwrap();
        let storage_addr = storage.local_addr().unwrap();
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            base: format!("http://{addr}"),
            storage_base: format!("http://{storage_addr}"),
        });
        let tasks = vec![serve(api, ctx.clone(), false), serve(storage, ctx, true)];
        GitHub {
            addr,
            storage: storage_addr,
            state,
            tasks,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The environment a token-authenticated agent would have.
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("GITHUB_API_URL".to_string(), self.base()),
            ("GH_TOKEN".to_string(), TOKEN.to_string()),
        ])
    }
}

struct Ctx {
    state: Arc<Mutex<State>>,
    base: String,
    storage_base: String,
}

fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    storage: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move {
                        Ok::<_, Infallible>(if storage {
                            storage_answer(&ctx, req)
                        } else {
                            api_answer(&ctx, req).await
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

fn message(status: u16, text: &str) -> Resp {
    let mut r = respond(
        status,
        serde_json::json!({"message": text, "documentation_url": "https://docs.github.com/rest"})
            .to_string(),
    );
    r.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    r
}

fn storage_answer(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let mut st = ctx.state.lock().unwrap();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    st.storage_auth.push(auth);
    let range = req
        .headers()
        .get("range")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    st.storage_ranges.push(range.clone());
    let Some(id) = req
        .uri()
        .path()
        .strip_prefix("/blob/")
        .and_then(|i| i.parse::<u64>().ok())
    else {
        return respond(404, "no such blob");
    };
    let Some(asset) = st
        .releases
        .iter()
        .flat_map(|r| &r.assets)
        .find(|a| a.id == id)
    else {
        return respond(404, "no such blob");
    };
    let content = asset.content.clone();
    match range.as_deref().and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    }) {
        Some(from) if from <= content.len() => {
            let mut r = respond(206, content[from..].to_vec());
            r.headers_mut().insert(
                "content-range",
                format!(
                    "bytes {from}-{}/{}",
                    content.len().saturating_sub(1),
                    content.len()
                )
                .parse()
                .unwrap(),
            );
            r
        }
        _ => respond(200, content),
    }
}

fn release_json(base: &str, r: &Rel) -> serde_json::Value {
    let assets: Vec<_> = r
        .assets
        .iter()
        .map(|a| {
            serde_json::json!({
                "url": format!("{base}/repos/{OWNER}/{REPO}/releases/assets/{}", a.id),
                "id": a.id,
                "name": a.name,
                "label": "",
                "content_type": "application/octet-stream",
                "state": "uploaded",
                "size": a.content.len(),
                "download_count": 0,
                "browser_download_url": format!("https://github.com/{OWNER}/{REPO}/releases/download/{}/{}", r.tag, a.name),
            })
        })
        .collect();
    let published = if r.draft {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(
            r.published_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        )
    };
    serde_json::json!({
        "url": format!("{base}/repos/{OWNER}/{REPO}/releases/{}", r.id),
        "upload_url": format!("{base}/repos/{OWNER}/{REPO}/releases/{}/assets{{?name,label}}", r.id),
        "id": r.id,
        "tag_name": r.tag,
        "name": r.tag,
        "draft": r.draft,
        "prerelease": r.prerelease,
        // GitHub's created_at is the date of the release's commit (or of its draft), often
        // long before publishing: a day earlier here, so that a source reading it instead of
        // published_at (Dewy #143) would see every release as past its grace period.
        "created_at": (r.published_at - time::Duration::days(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "published_at": published,
        "assets": assets,
    })
}

async fn api_answer(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut st = ctx.state.lock().unwrap();
    let mut resp = route(
        ctx,
        &mut st,
        &method,
        &path_and_query,
        authorization.as_deref(),
        &headers,
        body,
    );
    let status = resp.status().as_u16();
    // 304s are free on GitHub; everything else spends one request.
    if status != 304 && st.rate_remaining > 0 && status != 403 {
        st.rate_remaining -= 1;
    }
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", "5000".parse().unwrap());
    h.insert(
        "x-ratelimit-remaining",
        st.rate_remaining.to_string().parse().unwrap(),
    );
    h.insert(
        "x-ratelimit-reset",
        st.rate_reset.to_string().parse().unwrap(),
    );
    st.seen.push(Seen {
        method,
        path_and_query,
        authorization,
        status,
    });
    resp
}

fn route(
    ctx: &Ctx,
    st: &mut State,
    method: &str,
    pq: &str,
    authorization: Option<&str>,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Resp {
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let q: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["app", "installations", inst, "access_tokens"] = parts.as_slice() {
        return mint(st, inst, authorization);
    }
    let token = authorization.and_then(|a| a.strip_prefix("Bearer "));
    if !token.is_some_and(|t| st.tokens.iter().any(|k| k == t)) {
        return message(401, "Bad credentials");
    }
    if st.rate_remaining == 0 {
        return message(
            403,
            "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, please include the request ID",
        );
    }
    if let Some((status, text)) = st.fail_with {
        let mut r = message(status, text);
        if let Some(secs) = st.retry_after {
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        return r;
    }
    let repo_parts = match parts.as_slice() {
        ["repos", o, r, rest @ ..] if *o == OWNER && *r == REPO => rest.to_vec(),
        // GitHub's pagination links name the repository by id.
        ["repositories", "1", rest @ ..] => rest.to_vec(),
        _ => return message(404, "Not Found"),
    };
    match (method, repo_parts.as_slice()) {
        ("GET", ["releases"]) => list(ctx, st, &q, headers),
        ("GET", ["releases", "tags", tag]) => {
            let tag = percent_decode(tag);
            match st.releases.iter().find(|r| r.tag == tag && !r.draft) {
                Some(r) => json(200, release_json(&ctx.base, r)),
                None => message(404, "Not Found"),
            }
        }
        ("GET", ["releases", "assets", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(asset) = st
                .releases
                .iter()
                .flat_map(|r| &r.assets)
                .find(|a| a.id == id)
            else {
                return message(404, "Not Found");
            };
            let wants_bytes = headers
                .get("accept")
                .is_some_and(|a| a.to_str().unwrap_or("") == "application/octet-stream");
            if wants_bytes {
                let mut r = respond(302, "");
                r.headers_mut().insert(
                    "location",
                    format!("{}/blob/{}?sig=abc", ctx.storage_base, asset.id)
                        .parse()
                        .unwrap(),
                );
                r
            } else {
                json(200, serde_json::json!({"id": asset.id, "name": asset.name}))
            }
        }
        ("POST", ["releases", id, "assets"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(name) = q.get("name") else {
                return message(422, "name is required");
            };
            let name = percent_decode(name);
            if !st.releases.iter().any(|r| r.id == id) {
                return message(404, "Not Found");
            }
            let ct = headers
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            st.uploads.push((
                id,
                name.clone(),
                ct,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            json(
                201,
                serde_json::json!({"id": 1, "name": name, "state": "uploaded"}),
            )
        }
        _ => message(404, "Not Found"),
    }
}

fn json(status: u16, v: serde_json::Value) -> Resp {
    let mut r = respond(status, v.to_string());
    r.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    r
}

fn list(ctx: &Ctx, st: &State, q: &HashMap<&str, &str>, headers: &hyper::HeaderMap) -> Resp {
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .min(st.max_page)
        .max(1);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    // The API lists drafts to those who may see them; we are such a token.
    let all = &st.releases;
    let pages = all.len().div_ceil(per_page).max(1);
    let items: Vec<_> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| release_json(&ctx.base, r))
        .collect();
    let body = serde_json::Value::Array(items).to_string();
    let etag = format!(
        "W/\"{}\"",
        common::digest::Digest::of(body.as_bytes()).to_hex()
    );
    if headers
        .get("if-none-match")
        .is_some_and(|v| v.to_str().unwrap_or("") == etag)
    {
        let mut r = respond(304, "");
        r.headers_mut().insert("etag", etag.parse().unwrap());
        return r;
    }
    let mut r = json(200, serde_json::from_str(&body).unwrap());
    r.headers_mut().insert("etag", etag.parse().unwrap());
    let link = |p: usize, rel: &str| {
        format!(
            "<{}/repositories/1/releases?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            ctx.base
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
        links.push(link(1, "first"));
    }
    if page < pages {
        links.push(link(page + 1, "next"));
        links.push(link(pages, "last"));
    }
    if !links.is_empty() {
        r.headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    r
}

/// `POST /app/installations/{id}/access_tokens`: the JWT must be RS256-signed by the App's key,
/// name the App as `iss`, and be current.
fn mint(st: &mut State, inst: &str, authorization: Option<&str>) -> Resp {
    let Some(app) = st.app.as_mut() else {
        return message(404, "Not Found");
    };
    if inst != app.installation_id {
        return message(404, "Not Found");
    }
    let Some(jwt) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
        return message(401, "A JSON web token could not be decoded");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return message(401, "A JSON web token could not be decoded");
    };
    let Ok(sig) = BASE64URL_NOPAD.decode(s.as_bytes()) else {
        return message(401, "A JSON web token could not be decoded");
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public_key,
    );
    if key.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return message(401, "'Issuer' claim ('iss') must be an Integer");
    }
    let header: serde_json::Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(h.as_bytes()).unwrap_or_default())
            .unwrap_or_default();
    let claims: serde_json::Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(c.as_bytes()).unwrap_or_default())
            .unwrap_or_default();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let iat = claims["iat"].as_i64().unwrap_or(i64::MAX);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if header["alg"] != "RS256"
        || claims["iss"].as_str() != Some(app.app_id.as_str())
        || iat > now
        || exp <= now
        || exp - iat > 660
    {
        return message(
            401,
            "Expiration time' claim ('exp') is too far in the future",
        );
    }
    app.minted += 1;
    let token = format!("ghs_installation_{}", app.minted);
    let expires = OffsetDateTime::now_utc() + app.token_ttl;
    st.tokens.push(token.clone());
    json(
        201,
        serde_json::json!({
            "token": token,
            "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "permissions": {"contents": "write"},
            "repository_selection": "selected",
        }),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
