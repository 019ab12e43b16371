//! Artifact URLs: where a registry says the bytes of a release are (spec dewy.md 1.2-1.7).
//!
//! A registry answers with `ArtifactURL`, and Dewy picks the downloader by *that* URL's
//! scheme, not the registry's: a gRPC registry may point at a GitHub asset, an S3 object or an
//! image. So the same four forms are built by the ghr/s3/gs/img sources and parsed again
//! before every download, and a gRPC server's answer must use one of them:
//!
//! - `ghr://<owner>/<repo>/tag/<tag>/<name>`: exactly five `/`-separated parts, not decoded
//!   (so a tag containing `/` cannot be expressed, as in Dewy);
//! - `s3://<region>/<bucket>/<key>[?endpoint=<url>]`: the endpoint appended unencoded;
//! - `gs://<bucket>/<object>`: the object path has at least two segments (`<ver>/<name>`);
//! - `img://<registry>/<repository>:<tag>`: handed to `docker pull` without the scheme.
//!
//! Anything else is `unsupported scheme: <url>`: notably `http(s)://` is not downloadable.

use std::fmt;

use super::goquery::{self, Kind, Value};

/// A parsed artifact URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactUrl {
    /// A GitHub release asset.
    Ghr {
        /// Repository owner.
        owner: String,
        /// Repository name.
        repo: String,
        /// The release's tag name.
        tag: String,
        /// The asset's name.
        name: String,
    },
    /// An S3 object.
    S3 {
        /// The region (URL host).
        region: String,
        /// The bucket (first path segment).
        bucket: String,
        /// The object key (the rest of the path).
        key: String,
        /// `?endpoint=`: an S3-compatible endpoint, addressed path-style.
        endpoint: Option<String>,
    },
    /// A Google Cloud Storage object.
    Gs {
        /// The bucket (URL host).
        bucket: String,
        /// The object name.
        object: String,
    },
    /// A container image, for container mode.
    Img {
        /// `registry/repository:tag`, as `docker pull` takes it.
        reference: String,
    },
}

/// Why an artifact URL cannot be downloaded; the texts are Dewy's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactUrlError {
    /// Not one of the four schemes.
    #[error("unsupported scheme: {0}")]
    UnsupportedScheme(String),
    /// A `ghr://` URL without exactly five parts: `invalid artifact url: <url>, []string{...}`.
    #[error("invalid artifact url: {url}, []string{{{}}}", .parts.iter().map(|p| crate::gostr::quote(p)).collect::<Vec<_>>().join(", "))]
    BadGhr {
        /// The URL.
        url: String,
        /// Its parts after `ghr://`, split on `/`.
        parts: Vec<String>,
    },
    /// A `gs://` URL without a bucket or a two-segment object.
    #[error("url parse error: {0} (format: gs://<bucket>/<object>)")]
    BadGs(String),
    /// An `s3://` URL without a bucket and key (Dewy panics on it).
    #[error("url parse error: {0} (format: s3://<region>/<bucket>/<key>)")]
    BadS3(String),
    /// An `img://` URL with nothing after the scheme.
    #[error("url parse error: {0} (format: img://<registry>/<repository>:<tag>)")]
    BadImg(String),
    /// Go's `url.Parse` or the query decoder refused it.
    #[error("{0}")]
    Syntax(String),
}

impl ArtifactUrl {
    /// Parses an artifact URL by Dewy's per-scheme rules (module doc).
    pub fn parse(url: &str) -> Result<ArtifactUrl, ArtifactUrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(ArtifactUrlError::UnsupportedScheme(url.to_string()));
        };
        match scheme {
            "ghr" => {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts.as_slice() {
                    [owner, repo, _tag_word, tag, name] => Ok(ArtifactUrl::Ghr {
                        owner: owner.to_string(),
                        repo: repo.to_string(),
                        tag: tag.to_string(),
                        name: name.to_string(),
                    }),
                    _ => Err(ArtifactUrlError::BadGhr {
                        url: url.to_string(),
                        parts: parts.iter().map(|p| p.to_string()).collect(),
                    }),
                }
            }
            "s3" => {
                let u = goquery::parse(url).map_err(ArtifactUrlError::Syntax)?;
                let opts = goquery::decode(&u.query, &[("endpoint", Kind::Str)])
                    .map_err(ArtifactUrlError::Syntax)?;
                let path = u.path.strip_prefix('/').unwrap_or(&u.path);
                let Some((bucket, key)) = path.split_once('/') else {
                    return Err(ArtifactUrlError::BadS3(url.to_string()));
                };
                if bucket.is_empty() || key.is_empty() {
                    return Err(ArtifactUrlError::BadS3(url.to_string()));
                }
                Ok(ArtifactUrl::S3 {
                    region: u.host,
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    endpoint: opts.into_iter().find_map(|(_, v)| match v {
                        Value::Str(s) => Some(s),
                        Value::Bool(_) => None,
                    }),
                })
            }
            "gs" => {
                let u = goquery::parse(url).map_err(ArtifactUrlError::Syntax)?;
                let object = u.path.strip_prefix('/').unwrap_or(&u.path);
                if u.host.is_empty() || !object.contains('/') {
                    return Err(ArtifactUrlError::BadGs(url.to_string()));
                }
                Ok(ArtifactUrl::Gs {
                    bucket: u.host,
                    object: object.to_string(),
                })
            }
            "img" if !rest.is_empty() => Ok(ArtifactUrl::Img {
                reference: rest.to_string(),
            }),
            "img" => Err(ArtifactUrlError::BadImg(url.to_string())),
            _ => Err(ArtifactUrlError::UnsupportedScheme(url.to_string())),
        }
    }

    /// The artifact's file name: the last segment of its name or key (for img, the whole
    /// reference). This is the name extraction and [`super::artifact::ArtifactKind`] go by.
    pub fn file_name(&self) -> &str {
        let last = |s: &'_ str| -> usize { s.rfind('/').map_or(0, |i| i + 1) };
        match self {
            ArtifactUrl::Ghr { name, .. } => name,
            ArtifactUrl::S3 { key, .. } => &key[last(key)..],
            ArtifactUrl::Gs { object, .. } => &object[last(object)..],
            ArtifactUrl::Img { reference } => reference,
        }
    }
}

impl fmt::Display for ArtifactUrl {
    /// The URL as Dewy's registries build it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactUrl::Ghr {
                owner,
                repo,
                tag,
                name,
            } => write!(f, "ghr://{owner}/{repo}/tag/{tag}/{name}"),
            ArtifactUrl::S3 {
                region,
                bucket,
                key,
                endpoint,
            } => {
                write!(f, "s3://{region}/{bucket}/{key}")?;
                match endpoint {
                    // Appended raw, as Dewy does; it round-trips for ordinary endpoint URLs.
                    Some(e) => write!(f, "?endpoint={e}"),
                    None => Ok(()),
                }
            }
            ArtifactUrl::Gs { bucket, object } => write!(f, "gs://{bucket}/{object}"),
            ArtifactUrl::Img { reference } => write!(f, "img://{reference}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> ArtifactUrl {
        ArtifactUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn round_trips() {
        for url in [
            "ghr://linyows/dewy/tag/v1.2.3/dewy_linux_amd64.tar.gz",
            "s3://ap-northeast-1/bucket/pre/fix/v1.2.3/app.zip",
            "s3://us-east-1/b/v1/app.tgz?endpoint=http://localhost:9000",
            "gs://bucket/v1.2.3/app.tar.gz",
            "gs://bucket/pre/v1.2.3/sub/app.tar.gz",
            "img://registry-1.docker.io/library/nginx:1.27.0",
        ] {
            assert_eq!(p(url).to_string(), url);
        }
    }

    #[test]
    fn parts_and_file_names() {
        assert_eq!(
            p("ghr://o/r/tag/v1/a.zip"),
            ArtifactUrl::Ghr {
                owner: "o".into(),
                repo: "r".into(),
                tag: "v1".into(),
                name: "a.zip".into()
            }
        );
        assert_eq!(
            p("s3://r/b/p/v1/a.zip?endpoint=http://h:9000"),
            ArtifactUrl::S3 {
                region: "r".into(),
                bucket: "b".into(),
                key: "p/v1/a.zip".into(),
                endpoint: Some("http://h:9000".into())
            }
        );
        assert_eq!(p("s3://r/b/p/v1/a.zip").file_name(), "a.zip");
        assert_eq!(p("gs://b/v1/sub/a.tgz").file_name(), "a.tgz");
        assert_eq!(p("ghr://o/r/tag/v1/a.zip").file_name(), "a.zip");
        assert_eq!(p("img://ghcr.io/o/app:v1").file_name(), "ghcr.io/o/app:v1");
    }

    #[test]
    fn dewys_refusals() {
        let err = |u: &str| ArtifactUrl::parse(u).unwrap_err().to_string();
        assert_eq!(
            err("ghr://o/r/tag/feature/x/a.zip"),
            r#"invalid artifact url: ghr://o/r/tag/feature/x/a.zip, []string{"o", "r", "tag", "feature", "x", "a.zip"}"#
        );
        assert_eq!(
            err("ghr://o/r/v1"),
            r#"invalid artifact url: ghr://o/r/v1, []string{"o", "r", "v1"}"#
        );
        assert_eq!(
            err("gs://b/a.zip"),
            "url parse error: gs://b/a.zip (format: gs://<bucket>/<object>)"
        );
        assert!(err("gs:///v1/a.zip").starts_with("url parse error"));
        assert!(err("s3://r/b").starts_with("url parse error"));
        assert!(err("s3://r/b/").starts_with("url parse error"));
        assert_eq!(
            err("s3://r/b/k?region=x"),
            r#"schema: invalid path "region""#
        );
        assert!(err("img://").starts_with("url parse error"));
        for url in [
            "https://example.com/a.zip",
            "file:///a.zip",
            "docker://nginx",
            "a.zip",
        ] {
            assert_eq!(err(url), format!("unsupported scheme: {url}"));
        }
    }
}
