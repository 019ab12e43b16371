//! Dewy's release layout in an object store, shared by `s3://` and `gs://` (spec dewy.md 2.5,
//! 3.1-3.3): `<prefix><version>/<artifact>`. The stores differ only in how they list and read;
//! which version, which artifact, which checksum file and which release time are decided here
//! from plain listings, so both schemes decide alike.

use common::dewy::artifact::{self, ArtifactKind, Platform};
use common::dewy::calver::CalVerFormat;
use common::dewy::listing;
use common::dewy::version::{self, Version};
use common::timefmt::OffsetDateTime;

use crate::{Layer, LayerKind, Release, SourceError};

/// The environment a source reads (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`,
/// `STORAGE_EMULATOR_HOST`): a lookup, so tests need not change the process environment.
pub type Env = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment as an [`Env`].
pub fn process_env() -> Env {
    std::sync::Arc::new(|k: &str| std::env::var(k).ok())
}

/// The most a checksum file may weigh: a GoReleaser `checksums.txt` for hundreds of assets is
/// a few tens of KiB, and the whole file is read into memory.
pub const MAX_CHECKSUM_FILE: usize = 1024 * 1024;

/// One object of a recursive listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The full key / object name.
    pub key: String,
    pub size: u64,
    /// s3: `LastModified`; gs: `timeCreated` (what Dewy reads for each).
    pub time: Option<OffsetDateTime>,
}

/// The options of a bucket registry URL that decide what is picked.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `<prefix>`: empty or ending in `/`.
    pub prefix: String,
    pub artifact: Option<String>,
    pub pre_release: bool,
    pub calver: Option<CalVerFormat>,
}

/// The version chosen among the directories under the prefix.
#[derive(Debug, Clone)]
pub struct ChosenVersion {
    /// `<prefix><listed name>/`: where its objects live (the listed spelling, even where the
    /// reported tag is re-rendered, as in Dewy).
    pub dir: String,
    pub version: Version,
}

impl Selection {
    /// Builds the selection from a URL's options; a bad calver format is a configuration error.
    pub fn new(
        prefix: &str,
        artifact: Option<&str>,
        pre_release: bool,
        calver: Option<&str>,
    ) -> Result<Selection, SourceError> {
        let calver = calver
            .map(CalVerFormat::parse)
            .transpose()
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        Ok(Selection {
            prefix: prefix.to_string(),
            artifact: artifact.map(str::to_string),
            pre_release,
            calver,
        })
    }

    /// The newest version among the common prefixes of a delimiter listing under
    /// [`Selection::prefix`], in listing order (the first wins a tie).
    pub fn choose_version(&self, common_prefixes: &[String]) -> Result<ChosenVersion, SourceError> {
        let dirs = listing::version_dirs(common_prefixes, &self.prefix);
        let names: Vec<&str> = dirs.iter().map(|(name, _)| *name).collect();
        let (i, version) = version::pick_latest(&names, self.pre_release, self.calver.as_ref())
            .ok_or(SourceError::NoVersion)?;
        let full = dirs[i].1;
        // A common prefix always ends in the delimiter; keep the invariant even if a store
        // answered without it.
        let dir = if full.ends_with('/') {
            full.to_string()
        } else {
            format!("{full}/")
        };
        Ok(ChosenVersion { dir, version })
    }

    /// The artifact (and its checksum file, if one is published) among the objects under the
    /// chosen version's directory, in listing order. No artifact is
    /// [`SourceError::ArtifactNotFound`] carrying the first object's time (the grace period).
    pub fn choose_artifact<'a>(
        &self,
        chosen: &ChosenVersion,
        objects: &'a [Object],
        platform: &Platform<'_>,
    ) -> Result<Choice<'a>, SourceError> {
        let names: Vec<&str> = objects
            .iter()
            .map(|o| listing::name_under(&o.key, &chosen.dir))
            .collect();
        let i = artifact::select(&names, self.artifact.as_deref(), platform, &chosen.dir).map_err(
            |e| SourceError::ArtifactNotFound {
                message: e.to_string(),
                release_time: objects.first().and_then(|o| o.time),
            },
        )?;
        let checksum = common::dewy::checksum::find_checksum_file(names[i], &names)
            .filter(|&c| c != i)
            .map(|c| (&objects[c], names[c].to_string()));
        Ok(Choice {
            artifact: &objects[i],
            name: names[i].to_string(),
            checksum,
        })
    }
}

/// What [`Selection::choose_artifact`] found.
#[derive(Debug)]
pub struct Choice<'a> {
    pub artifact: &'a Object,
    /// Its name relative to the version directory (`app.tar.gz`, `sub/app.tar.gz`).
    pub name: String,
    /// The checksum file covering it and its relative name.
    pub checksum: Option<(&'a Object, String)>,
}

impl Choice<'_> {
    /// The artifact's file name (last segment): what the unpacker goes by.
    pub fn file_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    pub fn kind(&self) -> ArtifactKind {
        ArtifactKind::of(self.file_name())
    }

    /// The release this choice makes: one layer, the artifact (at `locate(its key)`), whose
    /// digest is the one `checksums` (the bytes of [`Choice::checksum`]'s file, read by the
    /// caller's store) states for it.
    pub fn release(
        &self,
        chosen: &ChosenVersion,
        checksums: Option<&[u8]>,
        locate: impl Fn(&str) -> String,
    ) -> Result<Release, SourceError> {
        let digest = match (&self.checksum, checksums) {
            (Some((_, name)), Some(bytes)) => {
                let file_name = name.rsplit('/').next().unwrap_or(name);
                Some(expected_digest(self.file_name(), file_name, bytes)?)
            }
            _ => None,
        };
        Ok(Release {
            tag: chosen.version.render(),
            created_at: self.artifact.time,
            slot: chosen.version.slot().to_string(),
            layers: vec![Layer {
                name: self.file_name().to_string(),
                digest,
                size: Some(self.artifact.size),
                kind: LayerKind::Artifact(self.kind()),
                locator: locate(&self.artifact.key),
                checksum_url: digest
                    .and(self.checksum.as_ref())
                    .map(|(file, _)| locate(&file.key)),
            }],
        })
    }
}

/// The digest a checksum file states for `artifact`; a checksum file that does not cover it
/// or is malformed fails the release (Dewy #491 refuses to deploy unverifiable bytes).
pub fn expected_digest(
    artifact: &str,
    file_name: &str,
    bytes: &[u8],
) -> Result<common::digest::Digest, SourceError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SourceError::Permanent(format!("checksum file {file_name} is not UTF-8")))?;
    common::dewy::checksum::expected_digest(artifact, file_name, text)
        .map_err(|e| SourceError::Permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX: Platform<'static> = Platform {
        os: "linux",
        arch: "amd64",
    };

    fn obj(key: &str, t: Option<OffsetDateTime>) -> Object {
        Object {
            key: key.to_string(),
            size: 1,
            time: t,
        }
    }

    #[test]
    fn version_dir_keeps_the_listed_spelling() {
        let sel = Selection::new("rel/", None, false, None).unwrap();
        let cps: Vec<String> = ["rel/1.2.0/", "rel/v01.10.0/", "rel/v2.0.0-rc.1/", "rel/x/"]
            .map(String::from)
            .to_vec();
        let c = sel.choose_version(&cps).unwrap();
        assert_eq!(c.dir, "rel/v01.10.0/");
        assert_eq!(c.version.render(), "v1.10.0");
        let pre = Selection::new("rel/", None, true, None).unwrap();
        assert_eq!(pre.choose_version(&cps).unwrap().dir, "rel/v2.0.0-rc.1/");
        assert!(matches!(
            sel.choose_version(&["rel/latest/".to_string()]),
            Err(SourceError::NoVersion)
        ));
    }

    #[test]
    fn artifact_checksum_and_release_time() {
        let sel = Selection::new("", None, false, None).unwrap();
        let chosen = sel.choose_version(&["v1.0.0/".to_string()]).unwrap();
        let t = time::macros::datetime!(2026-11-22 10:00 UTC);
        let objects = [
            obj("v1.0.0/app_darwin_arm64.tar.gz", Some(t)),
            obj("v1.0.0/app_linux_amd64.tar.gz", None),
            obj("v1.0.0/checksums.txt", None),
        ];
        let c = sel.choose_artifact(&chosen, &objects, &LINUX).unwrap();
        assert_eq!(c.name, "app_linux_amd64.tar.gz");
        assert_eq!(
            c.checksum.as_ref().map(|(_, n)| n.as_str()),
            Some("checksums.txt")
        );
        assert_eq!(c.kind(), ArtifactKind::TarGz);

        let other = Platform {
            os: "windows",
            arch: "amd64",
        };
        match sel.choose_artifact(&chosen, &objects, &other) {
            Err(SourceError::ArtifactNotFound {
                message,
                release_time,
            }) => {
                assert_eq!(message, "artifact not found: v1.0.0/");
                assert_eq!(release_time, Some(t), "first object's time");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nested_names_and_explicit_pick() {
        let sel = Selection::new("p/", Some("sub/tool"), false, None).unwrap();
        let chosen = sel.choose_version(&["p/1.0.0/".to_string()]).unwrap();
        let objects = [
            obj("p/1.0.0/sub/tool", None),
            obj("p/1.0.0/sub/tool.sha256", None),
        ];
        let c = sel.choose_artifact(&chosen, &objects, &LINUX).unwrap();
        assert_eq!((c.name.as_str(), c.file_name()), ("sub/tool", "tool"));
        assert_eq!(c.kind(), ArtifactKind::Plain);
        // Per-artifact files are found by the artifact's relative name.
        assert_eq!(
            c.checksum.as_ref().map(|(o, _)| o.key.as_str()),
            Some("p/1.0.0/sub/tool.sha256")
        );
    }
}
