//! The shared registry-result entry as Go Dewy writes it (spec dewy.md 6.4), its object name,
//! and the freshness and lock rules. No I/O here.
//!
//! Go's `encoding/json` writes the response struct with its field names (`ID`, `Tag`, ...),
//! times as RFC3339Nano, a nil `*time.Time` as `null` and the zero time as
//! `0001-01-01T00:00:00Z`; `response` and `locked_by` are omitted when empty.

use std::time::Duration;

use common::dewy::artifact::{ArtifactKind, Platform};
use common::digest::Digest;
use common::timefmt::{OffsetDateTime, parse_rfc3339, rfc3339_nano};
use serde::{Deserialize, Serialize};

use crate::{Layer, LayerKind, Release};

/// Go's `CurrentResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Tag", default)]
    pub tag: String,
    #[serde(rename = "ArtifactURL", default)]
    pub artifact_url: String,
    #[serde(rename = "CreatedAt", default, with = "opt_time")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(rename = "Slot", default)]
    pub slot: String,
    /// The checksum file of the artifact (Dewy #491, after 2.19): the hosts that take this
    /// response verify against it as the one that asked the registry did. Left out when
    /// empty, so an entry without it is 2.19's byte for byte.
    #[serde(
        rename = "ChecksumURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub checksum_url: String,
}

/// One `registry-cache/<hash>.json` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    #[serde(default = "zero", with = "go_time")]
    pub fetched_at: OffsetDateTime,
    #[serde(default = "zero", with = "go_time")]
    pub locked_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locked_by: String,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            response: None,
            fetched_at: zero(),
            locked_at: zero(),
            locked_by: String::new(),
        }
    }
}

/// Go's zero `time.Time`.
pub fn zero() -> OffsetDateTime {
    time::macros::datetime!(0001-01-01 00:00 UTC)
}

impl Entry {
    /// A response younger than `ttl`.
    pub fn is_fresh(&self, now: OffsetDateTime, ttl: Duration) -> bool {
        self.response.is_some() && age(now, self.fetched_at) < ttl
    }

    /// Another member holds the refresh lock.
    pub fn is_locked(&self, now: OffsetDateTime, lock_ttl: Duration) -> bool {
        self.locked_at != zero() && age(now, self.locked_at) < lock_ttl
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and times cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Entry, String> {
        // serde would also take an array for a struct; Go takes only an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err("malformed registry cache entry: not a JSON object".into());
        }
        serde_json::from_slice(bytes).map_err(|e| format!("malformed registry cache entry: {e}"))
    }
}

/// `now - t`; a time in the future counts as age zero, as Go's negative `time.Since` compares
/// below any positive TTL.
fn age(now: OffsetDateTime, t: OffsetDateTime) -> Duration {
    let d = now - t;
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// How long a refresh lock holds: twice the TTL, between 30 s and 5 min.
pub fn lock_ttl(ttl: Duration) -> Duration {
    ttl.saturating_mul(2)
        .clamp(Duration::from_secs(30), Duration::from_secs(300))
}

/// The entry's object key: `registry-cache/<16 hex>.json`, the first 8 bytes of
/// sha256(canonical URL | GOOS | GOARCH), so members on other platforms (other artifacts) keep
/// their own entries.
pub fn entry_key(registry_url: &str, platform: &Platform<'_>) -> String {
    let text = format!(
        "{}|{}|{}",
        common::dewy::canonical_url(registry_url),
        platform.os,
        platform.arch
    );
    let hex = Digest::of(text.as_bytes()).to_hex();
    format!("registry-cache/{}.json", &hex[..16])
}

/// The entry's view of a release; `None` for what Dewy's response cannot carry (an image with
/// several layers).
pub fn response_of(release: &Release, now: OffsetDateTime) -> Option<Response> {
    match release.layers.as_slice() {
        [
            Layer {
                kind: LayerKind::Artifact(_),
                locator,
                checksum_url,
                ..
            },
        ] => Some(Response {
            id: common::dewy::report::response_id(now.to_offset(time::UtcOffset::UTC)),
            tag: release.tag.clone(),
            artifact_url: locator.clone(),
            created_at: release.created_at,
            slot: release.slot.clone(),
            checksum_url: checksum_url.clone().unwrap_or_default(),
        }),
        _ => None,
    }
}

/// The release a shared response stands for. Its digest and size are unknown until the
/// checksum file it names is read ([`crate::Source::current`] does).
pub fn release_of(r: &Response) -> Release {
    let name = basename(&r.artifact_url).to_string();
    Release {
        tag: r.tag.clone(),
        created_at: r.created_at,
        slot: r.slot.clone(),
        layers: vec![Layer {
            kind: LayerKind::Artifact(ArtifactKind::of(&name)),
            name,
            digest: None,
            size: None,
            locator: r.artifact_url.clone(),
            checksum_url: (!r.checksum_url.is_empty()).then(|| r.checksum_url.clone()),
        }],
    }
}

/// The last path segment of an artifact URL without its query, as the sources name layers.
pub fn basename(url: &str) -> &str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let path = path.trim_end_matches('/');
    path.rsplit_once('/').map_or(path, |(_, b)| b)
}

mod go_time {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339_nano(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

mod opt_time {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&rfc3339_nano(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_rfc3339(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn go_shape() {
        let e = Entry {
            response: Some(Response {
                id: "20261122T100000Z".into(),
                tag: "v1.2.3".into(),
                artifact_url: "s3://r/b/v1.2.3/app_linux_amd64.tar.gz".into(),
                created_at: None,
                slot: String::new(),
                checksum_url: String::new(),
            }),
            fetched_at: datetime!(2026-11-22 10:00:00.5 UTC),
            locked_at: zero(),
            locked_by: String::new(),
        };
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"response":{"ID":"20261122T100000Z","Tag":"v1.2.3","ArtifactURL":"s3://r/b/v1.2.3/app_linux_amd64.tar.gz","CreatedAt":null,"Slot":""},"fetched_at":"2026-11-22T10:00:00.5Z","locked_at":"0001-01-01T00:00:00Z"}"#
        );
        let lock = Entry {
            locked_at: datetime!(2026-11-22 10:00 UTC),
            locked_by: "host:42".into(),
            ..Entry::default()
        };
        assert_eq!(
            String::from_utf8(lock.to_json()).unwrap(),
            r#"{"fetched_at":"0001-01-01T00:00:00Z","locked_at":"2026-11-22T10:00:00Z","locked_by":"host:42"}"#
        );
        assert_eq!(Entry::from_json(&lock.to_json()).unwrap(), lock);
        // Go writes local offsets; any RFC 3339 offset reads back.
        let go = br#"{"response":{"ID":"x","Tag":"v1","ArtifactURL":"gs://b/v1/a.zip","CreatedAt":"2026-11-22T19:00:00.123+09:00","Slot":"blue"},"fetched_at":"2026-11-22T19:00:00+09:00","locked_at":"0001-01-01T00:00:00Z"}"#;
        let e = Entry::from_json(go).unwrap();
        let r = e.response.unwrap();
        assert_eq!(r.created_at, Some(datetime!(2026-11-22 10:00:00.123 UTC)));
        assert_eq!(e.fetched_at, datetime!(2026-11-22 10:00 UTC));
        assert_eq!(r.checksum_url, "");
        // Dewy after #491 names the checksum file; Go writes the field even when empty.
        let go = br#"{"response":{"ID":"x","Tag":"v1","ArtifactURL":"gs://b/v1/a.zip","CreatedAt":null,"Slot":"","ChecksumURL":"gs://b/v1/checksums.txt"},"fetched_at":"2026-11-22T19:00:00+09:00","locked_at":"0001-01-01T00:00:00Z"}"#;
        let r = Entry::from_json(go).unwrap().response.unwrap();
        assert_eq!(r.checksum_url, "gs://b/v1/checksums.txt");
        assert!(
            String::from_utf8(
                Entry {
                    response: Some(r),
                    ..Entry::default()
                }
                .to_json()
            )
            .unwrap()
            .contains(r#","ChecksumURL":"gs://b/v1/checksums.txt"}"#)
        );
        assert!(Entry::from_json(b"{\"fetched_at\":\"yesterday\"}").is_err());
        assert!(Entry::from_json(b"not json").is_err());
        assert!(Entry::from_json(b"[]").is_err());
        assert_eq!(Entry::from_json(b" {}").unwrap(), Entry::default());
    }

    #[test]
    fn freshness_and_lock() {
        let now = datetime!(2026-11-22 10:00 UTC);
        let ttl = Duration::from_secs(30);
        let mut e = Entry {
            fetched_at: now - time::Duration::seconds(29),
            ..Entry::default()
        };
        assert!(!e.is_fresh(now, ttl), "no response is never fresh");
        e.response = Some(response_of(&sample(), now).unwrap());
        assert!(e.is_fresh(now, ttl));
        assert!(!e.is_fresh(now + time::Duration::seconds(1), ttl));
        assert!(!e.is_locked(now, lock_ttl(ttl)));
        e.locked_at = now - time::Duration::seconds(59);
        assert!(e.is_locked(now, lock_ttl(ttl)));
        assert!(!e.is_locked(now + time::Duration::seconds(1), lock_ttl(ttl)));
        assert_eq!(lock_ttl(Duration::from_secs(1)), Duration::from_secs(30));
        assert_eq!(lock_ttl(Duration::from_secs(100)), Duration::from_secs(200));
        assert_eq!(
            lock_ttl(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
    }

    fn sample() -> Release {
        Release {
            tag: "v1.0.0+blue".into(),
            created_at: Some(datetime!(2026-11-22 09:00 UTC)),
            slot: "blue".into(),
            layers: vec![Layer {
                name: "app_linux_amd64.tar.gz".into(),
                digest: Some(Digest::of(b"x")),
                size: Some(1),
                kind: LayerKind::Artifact(ArtifactKind::TarGz),
                locator: "s3://r/b/v1.0.0+blue/app_linux_amd64.tar.gz?endpoint=http://h:1".into(),
                checksum_url: Some("s3://r/b/v1.0.0+blue/checksums.txt?endpoint=http://h:1".into()),
            }],
        }
    }

    #[test]
    fn release_round_trip() {
        let now = datetime!(2026-11-22 10:00:01 UTC);
        let r = response_of(&sample(), now).unwrap();
        assert_eq!(r.id, "20261122T100001Z");
        let back = release_of(&r);
        let mut expected = sample();
        expected.layers[0].digest = None;
        expected.layers[0].size = None;
        assert_eq!(back, expected);
        let mut image = sample();
        image.layers[0].kind = LayerKind::ImageLayer;
        assert_eq!(response_of(&image, now), None);
    }

    #[test]
    fn keys_and_canonical_urls() {
        assert_eq!(
            common::dewy::canonical_url("ghr://o/r?pre-release=true&artifact=a b+c"),
            "ghr://o/r?artifact=a+b+c&pre-release=true"
        );
        assert_eq!(common::dewy::canonical_url("s3://r/b/p"), "s3://r/b/p");
        assert_eq!(
            common::dewy::canonical_url("s3://r/b?endpoint=http://h:9000/x&b=2&a=1&b=1"),
            "s3://r/b?a=1&b=2&b=1&endpoint=http%3A%2F%2Fh%3A9000%2Fx"
        );
        let linux = Platform {
            os: "linux",
            arch: "amd64",
        };
        let k = entry_key("ghr://o/r?b=1&a=2", &linux);
        assert_eq!(k, entry_key("ghr://o/r?a=2&b=1", &linux));
        assert!(k.starts_with("registry-cache/") && k.ends_with(".json"));
        assert_eq!(k.len(), "registry-cache/".len() + 16 + ".json".len());
        // sha256("ghr://o/r?a=2&b=1|linux|amd64")[:8], from sha256sum.
        assert_eq!(k, "registry-cache/83b37303d68818b7.json");
        let arm = Platform {
            os: "linux",
            arch: "arm64",
        };
        assert_ne!(k, entry_key("ghr://o/r?a=2&b=1", &arm));
    }
}
