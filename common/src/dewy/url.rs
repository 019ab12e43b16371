//! `--registry URL`: which source to follow and its options, parsed once at start-up.
//!
//! Dewy dispatches on the text before `://` and then hands the URL to Go's `url.Parse` and
//! gorilla/schema (see `goquery`), so each scheme accepts exactly its own query keys and
//! refuses any other with `schema: invalid path "<key>"`. We reproduce that grammar, the
//! defaults and the error texts (spec dewy.md 1.1-1.6), and add our own `ssh://` registry.
//!
//! Nothing here reads the environment. Where Dewy falls back to an environment variable
//! (`GITHUB_ARTIFACT`, the credential chains, `AWS_ENDPOINT_URL`) the parsed value says so:
//! [`RegistryUrl::env_vars`] lists what a source must look up, and
//! [`RegistryUrl::apply_env_defaults`] applies the one default that changes an option, given a
//! lookup function the caller supplies.
//!
//! Differences from Dewy v2.19, all on input Dewy mishandles:
//! - `ghr://` without an owner or repository, and `ssh://` problems, are refused here; Dewy
//!   accepts the former and fails on the first API call.
//! - A `calver` value is validated at parse time (Dewy fails every tick instead).
//! - When one key is given in two spellings (`artifact=a&ARTIFACT=b`) the later one wins;
//!   Go's choice depends on map iteration order.
//! - The post-2.19 additions of spec section 12 add no registry URL keys, so there is nothing
//!   of them to accept here (checksums are looked up among the release's assets, see
//!   [`crate::dewy::checksum`]).

use std::fmt;

use super::calver::CalVerFormat;
use super::goquery::{self, Kind, Value};

/// The `ssh://` registry's port when the URL names none: deploy-registry's default.
pub const SSH_DEFAULT_PORT: u16 = 2022;

/// The user an `ssh://` registry URL may name (and the agent always logs in as).
pub const SSH_USER: &str = "deploy-agent";

/// A registry URL, parsed. Field values are decoded (`%2F` in a path is `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryUrl {
    /// `ghr://<owner>/<repo>[/]?artifact=&pre-release=&calver=`: GitHub Releases.
    Ghr {
        /// The URL host.
        owner: String,
        /// The path without its leading `/` and one trailing `/`.
        repo: String,
        /// Query options.
        opts: GhrOptions,
    },
    /// `s3://<region>/<bucket>[/<prefix>][/]?region=&endpoint=&artifact=&pre-release=&calver=`.
    S3 {
        /// The URL host, or `?region=` when given (the query wins, as in Dewy).
        region: String,
        /// The first path segment.
        bucket: String,
        /// The rest of the path, ending in `/`, or empty.
        prefix: String,
        /// Query options.
        opts: S3Options,
    },
    /// `gs://<bucket>[/<prefix>]?artifact=&pre-release=&calver=`: Google Cloud Storage.
    Gs {
        /// The URL host.
        bucket: String,
        /// The path without its leading `/`, ending in `/`, or empty.
        prefix: String,
        /// Query options.
        opts: GsOptions,
    },
    /// `img://<registry-host[:port]>/<repository>?pre-release=&calver=&constraint=`: an OCI
    /// registry (container mode).
    Img {
        /// The registry host, Docker Hub's aliases normalised to `registry-1.docker.io`.
        host: String,
        /// The repository path, with `library/` added to a one-segment Docker Hub name.
        repo: String,
        /// Query options.
        opts: ImgOptions,
    },
    /// `grpc://<host:port>?no-tls=&artifact=&calver=`: a server implementing Dewy's
    /// `RegistryService`.
    Grpc {
        /// The URL host, as given to the gRPC dialer.
        target: String,
        /// Query options.
        opts: GrpcOptions,
    },
    /// `ssh://[deploy-agent@]<host>[:<port>]/<configuration>`: our deploy-registry, following
    /// one configuration. No query keys are accepted yet.
    Ssh {
        /// Host name or IP literal (an IPv6 literal keeps its brackets).
        host: String,
        /// The port, [`SSH_DEFAULT_PORT`] when absent.
        port: u16,
        /// The configuration name.
        config: String,
    },
}

/// `ghr://` query options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GhrOptions {
    /// `artifact`: the exact asset name; `None` selects by platform (spec 3.1). Dewy falls
    /// back to `$GITHUB_ARTIFACT` when unset: see [`RegistryUrl::apply_env_defaults`].
    pub artifact: Option<String>,
    /// `pre-release`: also consider tags with a `-pre` part. Default false.
    pub pre_release: bool,
    /// `calver`: select by this calendar-version format instead of SemVer.
    pub calver: Option<String>,
}

/// `s3://` query options (`region` is folded into [`RegistryUrl::S3::region`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `endpoint`: an S3-compatible endpoint; when set, requests use path-style addressing.
    /// When unset, path style is still used if `$AWS_ENDPOINT_URL` is set (the source's job).
    pub endpoint: Option<String>,
    /// `artifact`: exact object name relative to the version directory.
    pub artifact: Option<String>,
    /// `pre-release`. Default false.
    pub pre_release: bool,
    /// `calver`.
    pub calver: Option<String>,
}

/// `gs://` query options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GsOptions {
    /// `artifact`: exact object name relative to the version directory.
    pub artifact: Option<String>,
    /// `pre-release`. Default false.
    pub pre_release: bool,
    /// `calver`.
    pub calver: Option<String>,
}

/// `img://` query options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImgOptions {
    /// `pre-release`. Default false.
    pub pre_release: bool,
    /// `calver`.
    pub calver: Option<String>,
    /// `constraint`: accepted and kept, but Dewy never applies it (a TODO upstream).
    pub constraint: Option<String>,
    /// `insecure` (ours, not Dewy's): plain `http` to a registry that is not on loopback
    /// (Dewy uses `http` only for hosts starting with `localhost` / `127.0.0.1`). Default false.
    pub insecure: bool,
}

/// `grpc://` query options. There is no `pre-release`: the server chooses the version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcOptions {
    /// `no-tls`: dial without TLS. Dewy never implemented TLS, so only `true` works there.
    pub no_tls: bool,
    /// `artifact`: sent to the server as the wanted artifact name.
    pub artifact: Option<String>,
    /// `calver`: used only to read the slot from the returned tag.
    pub calver: Option<String>,
}

/// An environment variable a source reads, and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// What the source does with it.
    pub purpose: &'static str,
}

/// Why a registry URL was refused. Every variant's text is the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No registry has this scheme: `unsupported registry: <url>`.
    #[error("unsupported registry: {0}")]
    Unsupported(String),
    /// Go's `url.Parse` would refuse it: `parse "<url>": <reason>`.
    #[error("{0}")]
    Syntax(String),
    /// A query key or value gorilla/schema refuses (`schema: invalid path "x"`, ...).
    #[error("{0}")]
    Option(String),
    /// A required part is missing or malformed (`region is required: ...`, ...).
    #[error("{0}")]
    Invalid(String),
}

const S3_FORMAT: &str = "s3://<region>/<bucket>/<prefix>";
const GS_FORMAT: &str = "gs://<bucket>/<prefix>";

impl RegistryUrl {
    /// Parses `--registry URL`. See the variants for each grammar.
    pub fn parse(url: &str) -> Result<RegistryUrl, UrlError> {
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        // Dewy compares the scheme exactly: `GHR://` is not a registry.
        let parsed = match scheme {
            "ghr" | "s3" | "gs" | "img" | "grpc" | "ssh" => {
                goquery::parse(url).map_err(UrlError::Syntax)?
            }
            _ => return Err(UrlError::Unsupported(url.to_string())),
        };
        match scheme {
            "ghr" => parse_ghr(url, parsed),
            "s3" => parse_s3(parsed),
            "gs" => parse_gs(parsed),
            "img" => parse_img(url, parsed),
            "grpc" => parse_grpc(parsed),
            _ => parse_ssh(url, parsed),
        }
    }

    /// The scheme, as written before `://`.
    pub fn scheme(&self) -> &'static str {
        match self {
            RegistryUrl::Ghr { .. } => "ghr",
            RegistryUrl::S3 { .. } => "s3",
            RegistryUrl::Gs { .. } => "gs",
            RegistryUrl::Img { .. } => "img",
            RegistryUrl::Grpc { .. } => "grpc",
            RegistryUrl::Ssh { .. } => "ssh",
        }
    }

    /// The `artifact` option, for the schemes that have one.
    pub fn artifact(&self) -> Option<&str> {
        match self {
            RegistryUrl::Ghr { opts, .. } => opts.artifact.as_deref(),
            RegistryUrl::S3 { opts, .. } => opts.artifact.as_deref(),
            RegistryUrl::Gs { opts, .. } => opts.artifact.as_deref(),
            RegistryUrl::Grpc { opts, .. } => opts.artifact.as_deref(),
            RegistryUrl::Img { .. } | RegistryUrl::Ssh { .. } => None,
        }
    }

    /// The `pre-release` option (false for grpc and ssh, where the server decides).
    pub fn pre_release(&self) -> bool {
        match self {
            RegistryUrl::Ghr { opts, .. } => opts.pre_release,
            RegistryUrl::S3 { opts, .. } => opts.pre_release,
            RegistryUrl::Gs { opts, .. } => opts.pre_release,
            RegistryUrl::Img { opts, .. } => opts.pre_release,
            RegistryUrl::Grpc { .. } | RegistryUrl::Ssh { .. } => false,
        }
    }

    /// The `calver` format, already validated.
    pub fn calver(&self) -> Option<&str> {
        match self {
            RegistryUrl::Ghr { opts, .. } => opts.calver.as_deref(),
            RegistryUrl::S3 { opts, .. } => opts.calver.as_deref(),
            RegistryUrl::Gs { opts, .. } => opts.calver.as_deref(),
            RegistryUrl::Img { opts, .. } => opts.calver.as_deref(),
            RegistryUrl::Grpc { opts, .. } => opts.calver.as_deref(),
            RegistryUrl::Ssh { .. } => None,
        }
    }

    /// Applies `--calver FMT`. Dewy injects the flag into the URL query as `calver=FMT`, so it
    /// replaces a `?calver=` of the URL. An empty `fmt` changes nothing (an empty query value
    /// is ignored). `ssh://` registries have no versions to order, so they refuse it.
    pub fn set_calver(&mut self, fmt: &str) -> Result<(), UrlError> {
        if fmt.is_empty() {
            return Ok(());
        }
        CalVerFormat::parse(fmt).map_err(|e| UrlError::Option(e.to_string()))?;
        let slot = match self {
            RegistryUrl::Ghr { opts, .. } => &mut opts.calver,
            RegistryUrl::S3 { opts, .. } => &mut opts.calver,
            RegistryUrl::Gs { opts, .. } => &mut opts.calver,
            RegistryUrl::Img { opts, .. } => &mut opts.calver,
            RegistryUrl::Grpc { opts, .. } => &mut opts.calver,
            RegistryUrl::Ssh { .. } => {
                return Err(UrlError::Option(
                    "calver does not apply to ssh:// registries".to_string(),
                ));
            }
        };
        *slot = Some(fmt.to_string());
        Ok(())
    }

    /// Environment variables the source for this URL must consult (Dewy v2.19 behaviour; spec
    /// 1.2-1.5). Most are credentials for the source's client; `GITHUB_ARTIFACT` is handled by
    /// [`RegistryUrl::apply_env_defaults`].
    pub fn env_vars(&self) -> &'static [EnvVar] {
        const fn v(name: &'static str, purpose: &'static str) -> EnvVar {
            EnvVar { name, purpose }
        }
        const GHR: &[EnvVar] = &[
            v("GITHUB_ARTIFACT", "artifact name when ?artifact= is unset"),
            v("GITHUB_APP_ID", "GitHub App auth, preferred when set"),
            v(
                "GITHUB_APP_INSTALLATION_ID",
                "GitHub App installation (required with the app id)",
            ),
            v("GITHUB_APP_PRIVATE_KEY", "GitHub App RSA key, PEM text"),
            v(
                "GITHUB_APP_PRIVATE_KEY_PATH",
                "GitHub App RSA key file, when the PEM text is unset",
            ),
            v("GH_TOKEN", "personal access token, first choice"),
            v(
                "GITHUB_TOKEN",
                "personal access token, when GH_TOKEN is unset",
            ),
            v("GITHUB_API_URL", "GitHub Enterprise API base URL"),
            v(
                "GITHUB_ENDPOINT",
                "GitHub Enterprise API base URL, when GITHUB_API_URL is unset",
            ),
        ];
        const S3: &[EnvVar] = &[
            v(
                "AWS_ENDPOINT_URL",
                "endpoint when ?endpoint= is unset; also selects path-style",
            ),
            v("AWS_ACCESS_KEY_ID", "AWS default credential chain"),
            v("AWS_SECRET_ACCESS_KEY", "AWS default credential chain"),
            v("AWS_SESSION_TOKEN", "AWS default credential chain"),
            v("AWS_PROFILE", "AWS default credential chain"),
        ];
        const GS: &[EnvVar] = &[
            v(
                "GOOGLE_APPLICATION_CREDENTIALS",
                "Google application default credentials",
            ),
            v("STORAGE_EMULATOR_HOST", "GCS emulator endpoint"),
        ];
        const IMG: &[EnvVar] = &[
            v("DOCKER_USERNAME", "Basic auth for the registry API"),
            v("DOCKER_PASSWORD", "Basic auth for the registry API"),
            v(
                "GITHUB_TOKEN",
                "password for user `token` on hosts containing ghcr.io",
            ),
        ];
        match self {
            RegistryUrl::Ghr { .. } => GHR,
            RegistryUrl::S3 { .. } => S3,
            RegistryUrl::Gs { .. } => GS,
            RegistryUrl::Img { .. } => IMG,
            RegistryUrl::Grpc { .. } | RegistryUrl::Ssh { .. } => &[],
        }
    }

    /// Applies the environment defaults that change an option: for `ghr://` without
    /// `?artifact=`, a non-empty `GITHUB_ARTIFACT`. `lookup` is the caller's
    /// environment (`|k| std::env::var(k).ok()`), so this stays testable.
    pub fn apply_env_defaults(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let RegistryUrl::Ghr { opts, .. } = self
            && opts.artifact.is_none()
        {
            opts.artifact = lookup("GITHUB_ARTIFACT").filter(|a| !a.is_empty());
        }
    }
}

impl fmt::Display for RegistryUrl {
    /// A canonical form with only the options that differ from their defaults, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut q: Vec<String> = Vec::new();
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        };
        let head = match self {
            RegistryUrl::Ghr { owner, repo, opts } => {
                opt("artifact", &opts.artifact);
                opt("calver", &opts.calver);
                format!("ghr://{owner}/{repo}")
            }
            RegistryUrl::S3 {
                region,
                bucket,
                prefix,
                opts,
            } => {
                opt("endpoint", &opts.endpoint.as_deref().map(redact_userinfo));
                opt("artifact", &opts.artifact);
                opt("calver", &opts.calver);
                format!("s3://{region}/{bucket}/{prefix}")
            }
            RegistryUrl::Gs {
                bucket,
                prefix,
                opts,
            } => {
                opt("artifact", &opts.artifact);
                opt("calver", &opts.calver);
                format!("gs://{bucket}/{prefix}")
            }
            RegistryUrl::Img { host, repo, opts } => {
                opt("calver", &opts.calver);
                opt("constraint", &opts.constraint);
                if opts.insecure {
                    q.push("insecure=true".to_string());
                }
                format!("img://{host}/{repo}")
            }
            RegistryUrl::Grpc { target, opts } => {
                opt("artifact", &opts.artifact);
                opt("calver", &opts.calver);
                if opts.no_tls {
                    q.push("no-tls=true".to_string());
                }
                format!("grpc://{target}")
            }
            RegistryUrl::Ssh { host, port, config } => format!("ssh://{host}:{port}/{config}"),
        };
        if self.pre_release() {
            q.push("pre-release=true".to_string());
        }
        f.write_str(&head)?;
        if !q.is_empty() {
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

/// `scheme://user:secret@host/...` → `scheme://***@host/...`, so an endpoint carrying
/// credentials never reaches a log line.
fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The decoded options of one URL: a field is `None` unless the query set it.
struct Opts(Vec<(&'static str, Value)>);

impl Opts {
    fn decode(u: &goquery::GoUrl, fields: &[(&'static str, Kind)]) -> Result<Opts, UrlError> {
        let opts = Opts(goquery::decode(&u.query, fields).map_err(UrlError::Option)?);
        if let Some(fmt) = opts.str("calver") {
            CalVerFormat::parse(&fmt).map_err(|e| UrlError::Option(e.to_string()))?;
        }
        Ok(opts)
    }
    fn str(&self, name: &str) -> Option<String> {
        self.0.iter().rev().find_map(|(n, v)| match v {
            Value::Str(s) if *n == name => Some(s.clone()),
            _ => None,
        })
    }
    fn bool(&self, name: &str) -> bool {
        self.0
            .iter()
            .rev()
            .find_map(|(n, v)| match v {
                Value::Bool(b) if *n == name => Some(*b),
                _ => None,
            })
            .unwrap_or(false)
    }
}

const ARTIFACT: (&str, Kind) = ("artifact", Kind::Str);
const PRE_RELEASE: (&str, Kind) = ("pre-release", Kind::Bool);
const CALVER: (&str, Kind) = ("calver", Kind::Str);

fn parse_ghr(url: &str, u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    let path = u.path.strip_suffix('/').unwrap_or(&u.path);
    let repo = path.strip_prefix('/').unwrap_or(path).to_string();
    let o = Opts::decode(&u, &[ARTIFACT, PRE_RELEASE, CALVER])?;
    if u.host.is_empty() || repo.is_empty() {
        return Err(UrlError::Invalid(format!(
            "owner and repository are required: ghr://<owner>/<repo>, got {url}"
        )));
    }
    Ok(RegistryUrl::Ghr {
        owner: u.host,
        repo,
        opts: GhrOptions {
            artifact: o.str("artifact"),
            pre_release: o.bool("pre-release"),
            calver: o.str("calver"),
        },
    })
}

fn parse_s3(u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    let after = u.path.strip_prefix('/').unwrap_or(&u.path);
    let (bucket, prefix) = match after.split_once('/') {
        Some((b, rest)) => {
            let with_slash = if rest.ends_with('/') {
                rest.to_string()
            } else {
                format!("{rest}/")
            };
            (
                b,
                with_slash
                    .strip_prefix('/')
                    .unwrap_or(&with_slash)
                    .to_string(),
            )
        }
        None => (after, String::new()),
    };
    let o = Opts::decode(
        &u,
        &[
            ("region", Kind::Str),
            ("endpoint", Kind::Str),
            ARTIFACT,
            PRE_RELEASE,
            CALVER,
        ],
    )?;
    let region = o.str("region").unwrap_or_else(|| u.host.clone());
    if region.is_empty() {
        return Err(UrlError::Invalid(format!(
            "region is required: {S3_FORMAT}"
        )));
    }
    if bucket.is_empty() {
        return Err(UrlError::Invalid(format!(
            "bucket is required: {S3_FORMAT}"
        )));
    }
    Ok(RegistryUrl::S3 {
        region,
        bucket: bucket.to_string(),
        prefix,
        opts: S3Options {
            endpoint: o.str("endpoint"),
            artifact: o.str("artifact"),
            pre_release: o.bool("pre-release"),
            calver: o.str("calver"),
        },
    })
}

fn parse_gs(u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    let path = u.path.strip_prefix('/').unwrap_or(&u.path);
    let prefix = match path {
        "" => String::new(),
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    let o = Opts::decode(&u, &[ARTIFACT, PRE_RELEASE, CALVER])?;
    if u.host.is_empty() {
        return Err(UrlError::Invalid(format!(
            "bucket is required: {GS_FORMAT}"
        )));
    }
    Ok(RegistryUrl::Gs {
        bucket: u.host,
        prefix,
        opts: GsOptions {
            artifact: o.str("artifact"),
            pre_release: o.bool("pre-release"),
            calver: o.str("calver"),
        },
    })
}

fn parse_img(url: &str, u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    let o = Opts::decode(
        &u,
        &[
            PRE_RELEASE,
            CALVER,
            ("constraint", Kind::Str),
            ("insecure", Kind::Bool),
        ],
    )?;
    if u.host.is_empty() {
        return Err(UrlError::Invalid(format!(
            "invalid OCI URL {url}: registry host is required"
        )));
    }
    let repo = u.path.strip_prefix('/').unwrap_or(&u.path);
    if repo.is_empty() {
        return Err(UrlError::Invalid(format!(
            "invalid OCI URL {url}: repository is required"
        )));
    }
    let (host, repo) = normalize_docker_hub(&u.host, repo);
    Ok(RegistryUrl::Img {
        host,
        repo,
        opts: ImgOptions {
            pre_release: o.bool("pre-release"),
            calver: o.str("calver"),
            constraint: o.str("constraint"),
            insecure: o.bool("insecure"),
        },
    })
}

/// Docker Hub's API lives at `registry-1.docker.io`, and its official images under
/// `library/`: `docker.io/nginx` → (`registry-1.docker.io`, `library/nginx`). Other hosts,
/// including `localhost:5000`, are left alone.
pub fn normalize_docker_hub(host: &str, repo: &str) -> (String, String) {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            let repo = if repo.contains('/') {
                repo.to_string()
            } else {
                format!("library/{repo}")
            };
            ("registry-1.docker.io".to_string(), repo)
        }
        _ => (host.to_string(), repo.to_string()),
    }
}

fn parse_grpc(u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    let o = Opts::decode(&u, &[("no-tls", Kind::Bool), ARTIFACT, CALVER])?;
    if u.host.is_empty() {
        return Err(UrlError::Invalid(
            "target is required: grpc://<host:port>".to_string(),
        ));
    }
    Ok(RegistryUrl::Grpc {
        target: u.host,
        opts: GrpcOptions {
            no_tls: o.bool("no-tls"),
            artifact: o.str("artifact"),
            calver: o.str("calver"),
        },
    })
}

fn parse_ssh(url: &str, u: goquery::GoUrl) -> Result<RegistryUrl, UrlError> {
    const FORMAT: &str = "ssh://[deploy-agent@]<host>[:<port>]/<configuration>";
    let invalid = |why: &str| UrlError::Invalid(format!("{why}: {FORMAT}, got {url}"));
    // No options yet: every key is unknown, with gorilla's text for consistency.
    Opts::decode(&u, &[])?;
    // The registry gives a service session only to user deploy-agent; any other name would
    // be an operator login, so it is refused rather than silently replaced.
    if u.userinfo.as_deref().is_some_and(|user| user != SSH_USER) {
        return Err(invalid("the only user is deploy-agent"));
    }
    let (host, port) = split_host_port(&u.host);
    if host.is_empty() || host == "[]" {
        return Err(invalid("host is required"));
    }
    let port = match port {
        None | Some("") => SSH_DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(invalid("port must be 1-65535")),
        },
    };
    let config = u.path.strip_prefix('/').unwrap_or(&u.path);
    if config.is_empty() {
        return Err(invalid("configuration name is required"));
    }
    if config.contains('/')
        || config == "."
        || config == ".."
        || config.chars().any(char::is_control)
    {
        return Err(invalid("configuration name must be one path segment"));
    }
    Ok(RegistryUrl::Ssh {
        host: host.to_string(),
        port,
        config: config.to_string(),
    })
}

/// `host:port`, `[v6]:port`, or either without a port.
fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if hostport.starts_with('[') {
        return match hostport.find(']') {
            Some(end) => {
                let (h, rest) = hostport.split_at(end + 1);
                (h, rest.strip_prefix(':'))
            }
            None => (hostport, None),
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> RegistryUrl {
        RegistryUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn err(url: &str) -> String {
        RegistryUrl::parse(url).unwrap_err().to_string()
    }

    #[test]
    fn ghr() {
        assert_eq!(
            p("ghr://linyows/dewy/"),
            RegistryUrl::Ghr {
                owner: "linyows".into(),
                repo: "dewy".into(),
                opts: GhrOptions::default()
            }
        );
        assert_eq!(
            p("ghr://o/r?artifact=app.tar.gz&pre-release=on&calver=YYYY.0M.MICRO"),
            RegistryUrl::Ghr {
                owner: "o".into(),
                repo: "r".into(),
                opts: GhrOptions {
                    artifact: Some("app.tar.gz".into()),
                    pre_release: true,
                    calver: Some("YYYY.0M.MICRO".into()),
                }
            }
        );
        // Only one trailing slash goes.
        let RegistryUrl::Ghr { repo, .. } = p("ghr://o/r//") else {
            panic!()
        };
        assert_eq!(repo, "r/");
        assert_eq!(
            err("ghr://o/r?constraint=1"),
            r#"schema: invalid path "constraint""#
        );
        assert_eq!(
            err("ghr://o"),
            "owner and repository are required: ghr://<owner>/<repo>, got ghr://o"
        );
    }

    #[test]
    fn option_decoding_rules() {
        // Case-insensitive keys, last value wins, empty value ignored.
        let u = p("ghr://o/r?ARTIFACT=a&Artifact=b&artifact=&Pre-Release=1");
        assert_eq!(u.artifact(), Some("b"));
        assert!(u.pre_release());
        let u = p("ghr://o/r?artifact=a&artifact=b&artifact=");
        // The last value is the empty one, so the field stays unset: earlier values do not count.
        assert_eq!(u.artifact(), None);
        assert!(!p("ghr://o/r?pre-release=").pre_release());
        assert!(!p("ghr://o/r?pre-release=False").pre_release());
        assert_eq!(
            err("ghr://o/r?pre-release=yes"),
            r#"schema: error converting value for "pre-release""#
        );
        // Keys and values are query-decoded.
        assert_eq!(p("ghr://o/r?arti%66act=a+b%2Bc").artifact(), Some("a b+c"));
    }

    #[test]
    fn s3() {
        assert_eq!(
            p("s3://ap-northeast-1/bucket/path/to?endpoint=http://localhost:9000&pre-release=true"),
            RegistryUrl::S3 {
                region: "ap-northeast-1".into(),
                bucket: "bucket".into(),
                prefix: "path/to/".into(),
                opts: S3Options {
                    endpoint: Some("http://localhost:9000".into()),
                    artifact: None,
                    pre_release: true,
                    calver: None,
                }
            }
        );
        let parts = |u: &str| match p(u) {
            RegistryUrl::S3 {
                region,
                bucket,
                prefix,
                ..
            } => (region, bucket, prefix),
            other => panic!("{other:?}"),
        };
        assert_eq!(parts("s3://r/b/"), ("r".into(), "b".into(), "".into()));
        assert_eq!(parts("s3://r/b"), ("r".into(), "b".into(), "".into()));
        assert_eq!(parts("s3://r/b//p"), ("r".into(), "b".into(), "p/".into()));
        assert_eq!(parts("s3://r/b/p/"), ("r".into(), "b".into(), "p/".into()));
        // ?region= overrides the host, and can supply a missing one.
        assert_eq!(parts("s3://r/b?region=eu-west-1").0, "eu-west-1");
        assert_eq!(parts("s3:///b?region=eu-west-1").0, "eu-west-1");
        assert_eq!(
            err("s3:///b"),
            "region is required: s3://<region>/<bucket>/<prefix>"
        );
        assert_eq!(
            err("s3://r/"),
            "bucket is required: s3://<region>/<bucket>/<prefix>"
        );
        // Query errors come before the missing parts, as the decode runs first in Dewy.
        assert_eq!(err("s3:///?x=1"), r#"schema: invalid path "x""#);
    }

    #[test]
    fn gs() {
        assert_eq!(
            p("gs://bucket/a/b?artifact=x.zip"),
            RegistryUrl::Gs {
                bucket: "bucket".into(),
                prefix: "a/b/".into(),
                opts: GsOptions {
                    artifact: Some("x.zip".into()),
                    ..GsOptions::default()
                }
            }
        );
        let RegistryUrl::Gs { prefix, .. } = p("gs://bucket") else {
            panic!()
        };
        assert_eq!(prefix, "");
        let RegistryUrl::Gs { prefix, .. } = p("gs://bucket/") else {
            panic!()
        };
        assert_eq!(prefix, "");
        assert_eq!(err("gs:///p"), "bucket is required: gs://<bucket>/<prefix>");
        assert_eq!(err("gs://b?region=x"), r#"schema: invalid path "region""#);
        assert_eq!(
            err("gs://b?endpoint=x"),
            r#"schema: invalid path "endpoint""#
        );
    }

    #[test]
    fn img_and_docker_hub() {
        let hr = |u: &str| match p(u) {
            RegistryUrl::Img { host, repo, .. } => (host, repo),
            other => panic!("{other:?}"),
        };
        let hub = |r: &str| ("registry-1.docker.io".to_string(), r.to_string());
        assert_eq!(hr("img://docker.io/nginx"), hub("library/nginx"));
        assert_eq!(hr("img://index.docker.io/nginx"), hub("library/nginx"));
        assert_eq!(hr("img://registry-1.docker.io/nginx"), hub("library/nginx"));
        assert_eq!(hr("img://docker.io/bitnami/nginx"), hub("bitnami/nginx"));
        assert_eq!(
            hr("img://localhost:5000/nginx"),
            ("localhost:5000".into(), "nginx".into())
        );
        assert_eq!(
            hr("img://ghcr.io/o/app:v1"),
            ("ghcr.io".into(), "o/app:v1".into()),
            "a :tag is not parsed (Dewy quirk)"
        );
        let RegistryUrl::Img { opts, .. } =
            p("img://ghcr.io/o/app?constraint=%5E1.0&pre-release=t")
        else {
            panic!()
        };
        assert_eq!(
            opts,
            ImgOptions {
                pre_release: true,
                calver: None,
                constraint: Some("^1.0".into()),
                insecure: false,
            }
        );
        let RegistryUrl::Img { opts, .. } = p("img://reg.lan:5000/o/app?insecure=true") else {
            panic!()
        };
        assert!(opts.insecure);
        assert_eq!(
            err("img://reg.lan/o/app?insecure=maybe"),
            r#"schema: error converting value for "insecure""#
        );
        assert_eq!(
            err("img://ghcr.io/o/app?artifact=x"),
            r#"schema: invalid path "artifact""#
        );
        assert_eq!(
            err("img://ghcr.io/o/app?tag=v1"),
            r#"schema: invalid path "tag""#
        );
        // Dewy has no implicit Docker Hub: a bare name is a host without a repository.
        assert_eq!(
            err("img://nginx"),
            "invalid OCI URL img://nginx: repository is required"
        );
        assert_eq!(
            err("img:///nginx"),
            "invalid OCI URL img:///nginx: registry host is required"
        );
    }

    #[test]
    fn grpc() {
        assert_eq!(
            p("grpc://localhost:9000?no-tls=true&artifact=a.zip"),
            RegistryUrl::Grpc {
                target: "localhost:9000".into(),
                opts: GrpcOptions {
                    no_tls: true,
                    artifact: Some("a.zip".into()),
                    calver: None
                }
            }
        );
        assert_eq!(
            err("grpc://h:1?pre-release=true"),
            r#"schema: invalid path "pre-release""#
        );
        assert!(!p("grpc://h:1").pre_release());
    }

    #[test]
    fn ssh() {
        assert_eq!(
            p("ssh://registry.example/web"),
            RegistryUrl::Ssh {
                host: "registry.example".into(),
                port: SSH_DEFAULT_PORT,
                config: "web".into()
            }
        );
        assert_eq!(
            p("ssh://[::1]:2200/web"),
            RegistryUrl::Ssh {
                host: "[::1]".into(),
                port: 2200,
                config: "web".into()
            }
        );
        assert_eq!(p("ssh://deploy-agent@h/web"), p("ssh://h/web"));
        let RegistryUrl::Ssh { port, .. } = p("ssh://h:/web") else {
            panic!()
        };
        assert_eq!(port, 2022);
        assert_eq!(err("ssh://h/web?x=1"), r#"schema: invalid path "x""#);
        for bad in [
            "ssh://h",
            "ssh://h/",
            "ssh://h/a/b",
            "ssh://h/..",
            "ssh://h:0/web",
            "ssh://h:65536/web",
            "ssh:///web",
            "ssh://u@h/web",
            "ssh://deploy-agent:pw@h/web",
            "ssh://@h/web",
            "ssh://h/a%0Ab",
        ] {
            let e = err(bad);
            assert!(
                e.contains("ssh://[deploy-agent@]<host>[:<port>]/<configuration>")
                    || e.starts_with("parse "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unsupported_and_syntax() {
        for url in [
            "file:///tmp/x",
            "https://github.com/o/r",
            "docker://nginx",
            "oci://x/y",
            "GHR://o/r",
            "ghr:/o/r",
            "",
        ] {
            assert_eq!(err(url), format!("unsupported registry: {url}"));
        }
        assert_eq!(
            err("ghr://o/r%zz"),
            r#"parse "ghr://o/r%zz": invalid URL escape "%zz""#
        );
    }

    #[test]
    fn calver_is_validated_and_the_flag_overrides() {
        assert_eq!(
            err("gs://b?calver=X.Y"),
            "calver format \"X.Y\" contains no valid specifiers (expected YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D, or MICRO)"
        );
        let mut u = p("gs://b?calver=YYYY");
        u.set_calver("YY.MICRO").unwrap();
        assert_eq!(u.calver(), Some("YY.MICRO"));
        u.set_calver("").unwrap();
        assert_eq!(u.calver(), Some("YY.MICRO"));
        assert!(u.set_calver("nope").is_err());
        let mut grpc = p("grpc://h:1?no-tls=1");
        grpc.set_calver("YYYY.MICRO").unwrap();
        assert_eq!(grpc.calver(), Some("YYYY.MICRO"));
        assert!(p("ssh://h/web").set_calver("YYYY").is_err());
    }

    #[test]
    fn env_defaults_are_the_callers() {
        let env = |k: &str| (k == "GITHUB_ARTIFACT").then(|| "from-env.zip".to_string());
        let mut u = p("ghr://o/r");
        u.apply_env_defaults(env);
        assert_eq!(u.artifact(), Some("from-env.zip"));
        let mut u = p("ghr://o/r?artifact=mine.zip");
        u.apply_env_defaults(env);
        assert_eq!(u.artifact(), Some("mine.zip"));
        let mut u = p("ghr://o/r");
        u.apply_env_defaults(|_| Some(String::new()));
        assert_eq!(u.artifact(), None);
        let mut u = p("s3://r/b");
        u.apply_env_defaults(env);
        assert_eq!(u.artifact(), None);

        let names = |u: &str| p(u).env_vars().iter().map(|v| v.name).collect::<Vec<_>>();
        assert!(names("ghr://o/r").contains(&"GITHUB_ARTIFACT"));
        assert_eq!(names("ghr://o/r")[5..7], ["GH_TOKEN", "GITHUB_TOKEN"]);
        assert!(names("s3://r/b").contains(&"AWS_ENDPOINT_URL"));
        assert!(names("ssh://h/web").is_empty());
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(
            p("ghr://o/r/?Pre-Release=on&artifact=a").to_string(),
            "ghr://o/r?artifact=a&pre-release=true"
        );
        assert_eq!(p("ssh://h/web").to_string(), "ssh://h:2022/web");
        assert_eq!(p("s3://r/b").to_string(), "s3://r/b/");
        assert_eq!(
            p("s3://r/b?endpoint=http://key:secret@minio:9000/x%40y").to_string(),
            "s3://r/b/?endpoint=http://***@minio:9000/x@y"
        );
        // The canonical form parses back to the same value.
        for u in [
            "ghr://o/r?artifact=a&calver=YYYY&pre-release=1",
            "s3://r/b/p?endpoint=http://x:9000&pre-release=1",
            "gs://b/p?artifact=z",
            "img://docker.io/nginx?constraint=1",
            "grpc://h:1?no-tls=1&artifact=a",
            "ssh://[::1]:9/web",
        ] {
            let v = p(u);
            assert_eq!(p(&v.to_string()), v, "{u}");
        }
    }
}
