//! OCI / Docker v2 manifests: telling an index from an image manifest, picking this host's
//! platform out of an index, and turning an image manifest's layers into [`Layer`]s.

use serde::Deserialize;

use common::digest::Digest;

use crate::{Layer, LayerKind, SourceError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every kind we understand, for `Accept` (distribution 2.8 answers 404 for an OCI manifest
/// without the OCI type and down-converts Docker manifests to schema 1 without the Docker one).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types we can unpack (the unpacker tells gzip/zstd/plain apart by magic).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Non-distributable ("foreign") layers live outside the registry (Windows base layers).
const FOREIGN_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

/// An OCI platform (`os`/`architecture`/`variant`, Go's names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine: `linux` and Go's name for the CPU (`amd64`, `arm64`, ...).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest.
#[derive(Debug)]
pub enum Manifest {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest body; `content_type` is the response's, used when the body has no
/// `mediaType` (it is optional in OCI).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, SourceError> {
    let bad = |why: String| SourceError::Permanent(format!("manifest: {why}"));
    let raw: Raw = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    let media_type = raw
        .media_type
        .as_deref()
        .or(content_type)
        .unwrap_or_default();
    if raw.schema_version != Some(2) {
        return Err(bad(format!(
            "schema version {:?} ({media_type}) is not supported, only 2",
            raw.schema_version
        )));
    }
    let kind = match media_type {
        OCI_INDEX | DOCKER_LIST => "index",
        OCI_MANIFEST | DOCKER_MANIFEST => "image",
        // OCI allows omitting mediaType and a registry may answer a generic content type.
        _ if raw.manifests.is_some() => "index",
        _ if raw.layers.is_some() => "image",
        other => return Err(bad(format!("unsupported media type {other:?}"))),
    };
    if kind == "index" {
        return Ok(Manifest::Index(raw.manifests.unwrap_or_default()));
    }
    let config = raw
        .config
        .ok_or_else(|| bad("image manifest without config".into()))?;
    Ok(Manifest::Image {
        config,
        layers: raw.layers.unwrap_or_default(),
    })
}

/// The entry of an index for `want`: os and architecture equal; the variant equal if the entry
/// has one (arm64's `v8` is the same as none), preferring an exact variant match.
pub fn pick_platform<'a>(
    entries: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, SourceError> {
    let norm = |arch: &str, v: Option<&str>| -> Option<String> {
        match (arch, v) {
            ("arm64", Some("v8")) | (_, None) | (_, Some("")) => None,
            (_, Some(v)) => Some(v.to_string()),
        }
    };
    let wanted_variant = norm(&want.architecture, want.variant.as_deref());
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .collect();
    let variant_of = |d: &Descriptor| {
        d.platform
            .as_ref()
            .and_then(|p| norm(&p.architecture, p.variant.as_deref()))
    };
    let exact = candidates
        .iter()
        .find(|d| variant_of(d) == wanted_variant)
        .or_else(|| candidates.iter().find(|d| variant_of(d).is_none()));
    exact.copied().ok_or_else(|| {
        let have: Vec<String> = entries
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        SourceError::Permanent(format!(
            "image index has no manifest for {want} (it has: {})",
            if have.is_empty() {
                "none with a platform".to_string()
            } else {
                have.join(", ")
            }
        ))
    })
}

/// `sha256:<hex>` → [`Digest`]; other algorithms are refused (we could not verify them).
pub fn parse_digest(s: &str) -> Result<Digest, SourceError> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        SourceError::Permanent(format!("digest {s:?}: only sha256 digests are supported"))
    })?;
    Digest::parse_hex(hex).map_err(|e| SourceError::Permanent(format!("digest {s:?}: {e}")))
}

/// An image manifest's layers as [`Layer`]s, refusing what we could not unpack faithfully.
pub fn layers(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<Layer>, SourceError> {
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(SourceError::Permanent(format!(
            "not a container image: config media type {:?}",
            config.media_type
        )));
    }
    layers
        .iter()
        .map(|d| {
            let mt = d.media_type.as_str();
            if FOREIGN_TYPES.contains(&mt) || d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(SourceError::Permanent(format!(
                    "layer {} is non-distributable ({mt}): its bytes are not in the registry",
                    d.digest
                )));
            }
            if !LAYER_TYPES.contains(&mt) {
                return Err(SourceError::Permanent(format!(
                    "layer {} has unsupported media type {mt:?}",
                    d.digest
                )));
            }
            let digest = parse_digest(&d.digest)?;
            let size = u64::try_from(d.size).map_err(|_| {
                SourceError::Permanent(format!("layer {} has negative size", d.digest))
            })?;
            Ok(Layer {
                name: d.digest.clone(),
                digest: Some(digest),
                size: Some(size),
                kind: LayerKind::ImageLayer,
                locator: d.digest.clone(),
                checksum_url: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn desc(mt: &str, digest: &str, platform: Option<(&str, &str, Option<&str>)>) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: digest.into(),
            size: 10,
            platform: platform.map(|(os, a, v)| Platform {
                os: os.into(),
                architecture: a.into(),
                variant: v.map(String::from),
            }),
            urls: None,
        }
    }

    #[test]
    fn parse_kinds() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{H1}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(
            matches!(parse(index.as_bytes(), None).unwrap(), Manifest::Index(m) if m.len() == 1)
        );
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{H1}","size":3}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(image.as_bytes(), Some(OCI_MANIFEST)).unwrap(),
            Manifest::Image { .. }
        ));
        assert!(matches!(
            parse(image.as_bytes(), None).unwrap(),
            Manifest::Image { .. }
        ));
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let e = parse(
            schema1,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("schema version Some(1)"), "{e}");
        assert!(parse(b"[]", None).is_err());
    }

    #[test]
    fn platform_pick() {
        let entries = vec![
            desc(OCI_MANIFEST, H1, Some(("linux", "amd64", None))),
            desc(OCI_MANIFEST, H2, Some(("linux", "arm64", Some("v8")))),
            desc(OCI_MANIFEST, H2, Some(("unknown", "unknown", None))),
        ];
        let p = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(String::from),
        };
        assert_eq!(
            pick_platform(&entries, &p("amd64", None)).unwrap().digest,
            H1
        );
        assert_eq!(
            pick_platform(&entries, &p("arm64", Some("v8")))
                .unwrap()
                .digest,
            H2
        );
        assert_eq!(
            pick_platform(&entries, &p("arm64", None)).unwrap().digest,
            H2
        );
        let e = pick_platform(&entries, &p("riscv64", None)).unwrap_err();
        assert!(e.to_string().contains("linux/amd64, linux/arm64/v8"), "{e}");
        // arm/v7 host: a v6 entry is not a match, a variant-less one is.
        let arm = vec![
            desc(OCI_MANIFEST, H1, Some(("linux", "arm", Some("v6")))),
            desc(OCI_MANIFEST, H2, Some(("linux", "arm", None))),
        ];
        assert_eq!(
            pick_platform(&arm, &p("arm", Some("v7"))).unwrap().digest,
            H2
        );
        assert_eq!(
            pick_platform(&arm, &p("arm", Some("v6"))).unwrap().digest,
            H1
        );
        assert!(matches!(Platform::host().os.as_str(), "linux"));
    }

    #[test]
    fn layer_media_types() {
        let cfg = desc("application/vnd.oci.image.config.v1+json", H1, None);
        let ok = layers(
            &cfg,
            &[
                desc("application/vnd.oci.image.layer.v1.tar+gzip", H1, None),
                desc("application/vnd.oci.image.layer.v1.tar+zstd", H2, None),
                desc(
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    H1,
                    None,
                ),
                desc("application/vnd.oci.image.layer.v1.tar", H2, None),
            ],
        )
        .unwrap();
        assert_eq!(ok.len(), 4);
        assert_eq!(ok[1].locator, H2);
        assert_eq!(ok[1].digest, Some(parse_digest(H2).unwrap()));
        assert_eq!(ok[1].size, Some(10));
        assert_eq!(ok[1].kind, LayerKind::ImageLayer);

        let foreign = desc(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            H1,
            None,
        );
        let e = layers(&cfg, &[foreign]).unwrap_err();
        assert!(e.to_string().contains("non-distributable"), "{e}");
        let mut with_urls = desc("application/vnd.oci.image.layer.v1.tar+gzip", H1, None);
        with_urls.urls = Some(vec!["https://example/x".into()]);
        assert!(layers(&cfg, &[with_urls]).is_err());
        let e = layers(&cfg, &[desc("application/x-helm", H1, None)]).unwrap_err();
        assert!(e.to_string().contains("unsupported media type"), "{e}");
        let helm = desc("application/vnd.cncf.helm.config.v1+json", H1, None);
        let e = layers(&helm, &[]).unwrap_err();
        assert!(e.to_string().contains("not a container image"), "{e}");
        let e = layers(
            &cfg,
            &[desc(
                "application/vnd.oci.image.layer.v1.tar",
                "sha512:abcd",
                None,
            )],
        )
        .unwrap_err();
        assert!(e.to_string().contains("only sha256"), "{e}");
    }
}
