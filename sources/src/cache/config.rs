//! Dewy's `--cache` URL (spec dewy.md 6.2): which backend keeps the artifact keys, and whether
//! registry results are shared (`registry-ttl`). No I/O here.

use std::path::PathBuf;
use std::time::Duration;

use common::goflag::{GoDuration, parse_duration};
use reqwest::Url;

/// Where the cache keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One file per key in a directory: the URL's path, or Dewy's default directory.
    File { dir: Option<PathBuf> },
    /// `s3://<region>/<bucket>[/<prefix>][?endpoint=E]`, staged locally.
    S3 {
        region: String,
        bucket: String,
        /// Empty or ending in `/`; object names are `<prefix><key>`.
        prefix: String,
        endpoint: Option<String>,
    },
    /// `gs://<bucket>[/<prefix>]`, staged locally.
    Gs { bucket: String, prefix: String },
}

/// A parsed `--cache` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub backend: Backend,
    /// `registry-ttl`; zero = registry results are not shared.
    pub registry_ttl: Duration,
}

impl CacheConfig {
    /// Dewy's default: the file cache, no shared registry results.
    pub fn default_file() -> CacheConfig {
        CacheConfig {
            backend: Backend::File { dir: None },
            registry_ttl: Duration::ZERO,
        }
    }

    /// Whether the backend can share registry results (it has compare-and-swap writes).
    pub fn is_atomic(&self) -> bool {
        !matches!(self.backend, Backend::File { .. })
    }
}

/// Parses a `--cache` URL; empty is the default file cache. Unknown query keys are ignored,
/// as Dewy reads only the keys it knows.
pub fn parse(text: &str) -> Result<CacheConfig, String> {
    if text.is_empty() {
        return Ok(CacheConfig::default_file());
    }
    let scheme = go_scheme(text).to_ascii_lowercase();
    if !matches!(scheme.as_str(), "file" | "s3" | "gs") {
        return Err(format!(
            "unsupported cache scheme {scheme:?}; supported schemes: file, s3, gs"
        ));
    }
    let url = Url::parse(text).map_err(|e| format!("invalid cache URL {text:?}: {e}"))?;
    let query = |k: &str| {
        url.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let registry_ttl = match query("registry-ttl") {
        None => Duration::ZERO,
        Some(v) => match parse_duration(&v) {
            Some(GoDuration::Positive(d)) => d,
            Some(GoDuration::NonPositive) if !v.starts_with('-') => Duration::ZERO,
            Some(GoDuration::NonPositive) => {
                return Err(format!("registry-ttl must be >= 0, got {v:?}"));
            }
            None => return Err(format!("invalid registry-ttl {v:?}: not a duration")),
        },
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let path = percent_decode(url.path());
    let backend = match scheme.as_str() {
        "file" => Backend::File {
            // `file://host/x` is `/x`, as Dewy takes only the URL path.
            dir: (!path.is_empty()).then(|| PathBuf::from(&path)),
        },
        "s3" => {
            let rest = path.trim_start_matches('/');
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() || bucket.is_empty() {
                return Err(format!(
                    "s3 cache needs s3://<region>/<bucket>[/<prefix>]: {text}"
                ));
            }
            Backend::S3 {
                region: host,
                bucket: bucket.to_string(),
                prefix: dir_prefix(prefix),
                endpoint: query("endpoint"),
            }
        }
        _ => {
            if host.is_empty() {
                return Err(format!("gs cache needs gs://<bucket>[/<prefix>]: {text}"));
            }
            Backend::Gs {
                bucket: host,
                prefix: dir_prefix(path.trim_start_matches('/')),
            }
        }
    };
    Ok(CacheConfig {
        backend,
        registry_ttl,
    })
}

/// Go's `url.Parse` scheme: the text before the first `:` when it is a valid scheme, else
/// empty (a plain path).
fn go_scheme(text: &str) -> &str {
    match text.split_once(':') {
        Some((s, _))
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            s
        }
        _ => "",
    }
}

fn dir_prefix(p: &str) -> String {
    if p.is_empty() || p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        assert_eq!(parse("").unwrap(), CacheConfig::default_file());
        let f = parse("file:///var/cache/dewy?registry-ttl=30s").unwrap();
        assert_eq!(
            f.backend,
            Backend::File {
                dir: Some("/var/cache/dewy".into())
            }
        );
        assert_eq!(f.registry_ttl, Duration::from_secs(30));
        assert!(!f.is_atomic());
        assert_eq!(
            parse("file://host/x").unwrap().backend,
            Backend::File {
                dir: Some("/x".into())
            }
        );
        let s = parse("s3://ap-northeast-3/dewy-testapp/.cache/v1-s3?registry-ttl=5m&endpoint=http://127.0.0.1:9000&x=1").unwrap();
        assert_eq!(
            s.backend,
            Backend::S3 {
                region: "ap-northeast-3".into(),
                bucket: "dewy-testapp".into(),
                prefix: ".cache/v1-s3/".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
            }
        );
        assert_eq!(s.registry_ttl, Duration::from_secs(300));
        assert_eq!(
            parse("s3://r/b").unwrap().backend,
            Backend::S3 {
                region: "r".into(),
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None
            }
        );
        assert_eq!(
            parse("gs://bkt/p/q/").unwrap().backend,
            Backend::Gs {
                bucket: "bkt".into(),
                prefix: "p/q/".into()
            }
        );
        assert_eq!(parse("gs://bkt").unwrap().registry_ttl, Duration::ZERO);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("redis://localhost:6379").unwrap_err(),
            "unsupported cache scheme \"redis\"; supported schemes: file, s3, gs"
        );
        assert_eq!(
            parse("x").unwrap_err(),
            "unsupported cache scheme \"\"; supported schemes: file, s3, gs"
        );
        assert!(parse("s3://r").is_err());
        assert!(parse("s3:///b").is_err());
        assert!(parse("gs:///p").is_err());
        assert!(
            parse("gs://b?registry-ttl=-1s")
                .unwrap_err()
                .contains(">= 0")
        );
        assert!(
            parse("gs://b?registry-ttl=soon")
                .unwrap_err()
                .contains("soon")
        );
        assert_eq!(
            parse("gs://b?registry-ttl=0").unwrap().registry_ttl,
            Duration::ZERO
        );
    }
}
