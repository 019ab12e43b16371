//! Which file of a release to fetch, whether a missing one is still "too early" to report, and
//! how to unpack it (spec dewy.md 3.1-3.4).
//!
//! A release lists several files (one per platform, checksums, notes). Without `?artifact=`
//! Dewy takes the first archive whose lower-cased name contains both an architecture and an
//! OS string; with it, the exact name. The first-match-in-listing-order rule is kept exactly,
//! because operators rely on it to choose among lookalike assets.
//!
//! Our differences, both opt-outs of Dewy failures:
//! - `aarch64` names are accepted on arm64 (Dewy accepts only `arm64`), as `x86_64` already is
//!   on amd64. Listing order still decides between an `arm64` and an `aarch64` asset.
//! - An explicitly named artifact that is not an archive is a plain executable
//!   ([`ArtifactKind::Plain`]) instead of `unsupported archive format`. Automatic selection
//!   still requires an archive suffix, so checksum and text files are never picked.

use time::{Duration, OffsetDateTime};

/// How long after a release's creation a missing artifact is not an error: CI commonly
/// creates the release first and uploads assets later.
pub const GRACE_PERIOD: Duration = Duration::minutes(30);

/// The archive suffixes Dewy can extract, which automatic selection requires (lower-case
/// comparison).
pub const ARCHIVE_SUFFIXES: [&str; 8] = [
    ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip",
];

/// OS and architecture in Go's names (`linux`/`darwin`, `amd64`/`arm64`), the words release
/// assets are named with and the values Dewy sends to a gRPC registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform<'a> {
    /// `runtime.GOOS`.
    pub os: &'a str,
    /// `runtime.GOARCH`.
    pub arch: &'a str,
}

impl Platform<'static> {
    /// The platform this binary was built for, in Go's names.
    pub fn current() -> Platform<'static> {
        Platform {
            os: go_os(std::env::consts::OS),
            arch: go_arch(std::env::consts::ARCH),
        }
    }
}

fn go_os(rust: &'static str) -> &'static str {
    match rust {
        "macos" => "darwin",
        other => other,
    }
}

fn go_arch(rust: &'static str) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl Platform<'_> {
    /// Substrings that mean "our architecture" in an asset name.
    fn arch_words(&self) -> Vec<&str> {
        let mut words = vec![self.arch];
        match self.arch {
            "amd64" => words.push("x86_64"),
            // Our addition; Dewy v2.19 rejects aarch64 names (spec 3.1).
            "arm64" => words.push("aarch64"),
            _ => {}
        }
        words
    }

    /// Substrings that mean "our OS" in an asset name.
    fn os_words(&self) -> Vec<&str> {
        let mut words = vec![self.os];
        if self.os == "darwin" {
            words.push("macos");
        }
        words
    }

    /// Whether a lower-cased `name` contains one of our arch words and one of our OS words.
    /// A plain substring test, as in Dewy: on `arm`, `arm64` names match too.
    pub fn matches(&self, name: &str) -> bool {
        let n = name.to_lowercase();
        self.arch_words().iter().any(|w| n.contains(w))
            && self.os_words().iter().any(|w| n.contains(w))
    }
}

/// Whether `name` ends (case-insensitively) with one of [`ARCHIVE_SUFFIXES`].
pub fn is_archive(name: &str) -> bool {
    ArtifactKind::archive_of(name).is_some()
}

/// Dewy's automatic choice: the index of the first name that is an archive and matches
/// `platform`.
pub fn match_by_platform<S: AsRef<str>>(names: &[S], platform: &Platform<'_>) -> Option<usize> {
    names
        .iter()
        .position(|n| is_archive(n.as_ref()) && platform.matches(n.as_ref()))
}

/// No artifact: `artifact not found: <location><name>`.
///
/// `location` is empty for ghr and `<prefix><version>/` for s3/gs; `name` is the explicit
/// artifact, or empty for automatic selection. So ghr says `artifact not found: ` and s3 says
/// `artifact not found: releases/v1.2.3/`, as Dewy does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("artifact not found: {location}{name}")]
pub struct ArtifactNotFound {
    /// Where the source looked (see above).
    pub location: String,
    /// The explicit artifact name, or empty.
    pub name: String,
}

/// Chooses the artifact among `names` (listing order; for s3/gs relative to the version
/// directory): the exact `explicit` name when given (no suffix check), else
/// [`match_by_platform`]. Returns its index.
pub fn select<S: AsRef<str>>(
    names: &[S],
    explicit: Option<&str>,
    platform: &Platform<'_>,
    location: &str,
) -> Result<usize, ArtifactNotFound> {
    let found = match explicit {
        Some(want) => names.iter().position(|n| n.as_ref() == want),
        None => match_by_platform(names, platform),
    };
    found.ok_or_else(|| ArtifactNotFound {
        location: location.to_string(),
        name: explicit.unwrap_or_default().to_string(),
    })
}

/// Whether a missing artifact should be ignored for now: the release was created less than
/// [`GRACE_PERIOD`] before `now`. No release time means no grace. A release time in the
/// future (clock skew) is within the grace period, as in Dewy's `time.Since(t) < 30m`.
pub fn within_grace(release_time: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    release_time.is_some_and(|t| now - t < GRACE_PERIOD)
}

/// How to unpack a downloaded artifact, by the suffix of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// `.tar.gz`, `.tgz`.
    TarGz,
    /// `.tar.bz2`, `.tbz2`.
    TarBz2,
    /// `.tar.xz`, `.txz`.
    TarXz,
    /// `.tar`.
    Tar,
    /// `.zip`.
    Zip,
    /// Anything else: a single executable file (our addition; Dewy refuses it with
    /// `unsupported archive format`).
    Plain,
}

impl ArtifactKind {
    /// The kind of `name`, compared case-insensitively.
    pub fn of(name: &str) -> ArtifactKind {
        Self::archive_of(name).unwrap_or(ArtifactKind::Plain)
    }

    /// The archive kind of `name`, or `None` where Dewy says `unsupported archive format`.
    pub fn archive_of(name: &str) -> Option<ArtifactKind> {
        let n = name.to_lowercase();
        let kind = |suffixes: &[&str]| suffixes.iter().any(|s| n.ends_with(s));
        Some(if kind(&[".tar.gz", ".tgz"]) {
            ArtifactKind::TarGz
        } else if kind(&[".tar.bz2", ".tbz2"]) {
            ArtifactKind::TarBz2
        } else if kind(&[".tar.xz", ".txz"]) {
            ArtifactKind::TarXz
        } else if kind(&[".tar"]) {
            ArtifactKind::Tar
        } else if kind(&[".zip"]) {
            ArtifactKind::Zip
        } else {
            return None;
        })
    }
}

/// Dewy's text for an artifact that is not an archive.
pub const UNSUPPORTED_ARCHIVE_FORMAT: &str = "unsupported archive format";

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const LINUX_AMD64: Platform<'static> = Platform {
        os: "linux",
        arch: "amd64",
    };
    const LINUX_ARM64: Platform<'static> = Platform {
        os: "linux",
        arch: "arm64",
    };
    const DARWIN_ARM64: Platform<'static> = Platform {
        os: "darwin",
        arch: "arm64",
    };

    #[test]
    fn current_platform_uses_go_names() {
        let p = Platform::current();
        assert!(!["x86_64", "aarch64", "macos"].contains(&p.arch));
        assert_ne!(p.os, "macos");
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_os("macos"), "darwin");
    }

    #[test]
    fn automatic_pick_is_first_archive_matching_arch_and_os() {
        let names = [
            "checksums.txt",
            "app_linux_amd64.txt",
            "app_Linux_x86_64.tar.gz",
            "app_linux_amd64.tar.gz",
            "app_darwin_arm64.zip",
        ];
        assert_eq!(match_by_platform(&names, &LINUX_AMD64), Some(2));
        assert_eq!(match_by_platform(&names, &DARWIN_ARM64), Some(4));
        assert_eq!(match_by_platform(&names, &LINUX_ARM64), None);
        // macos counts for darwin; the substring test makes `arm` match `arm64` (Dewy quirk).
        assert_eq!(
            match_by_platform(&["app-macOS-arm64.TGZ"], &DARWIN_ARM64),
            Some(0)
        );
        assert_eq!(
            match_by_platform(
                &["app_linux_arm64.tar"],
                &Platform {
                    os: "linux",
                    arch: "arm"
                }
            ),
            Some(0)
        );
        // No other aliases.
        assert_eq!(
            match_by_platform(
                &["app_linux_x64.tar.gz", "app_linux_x86-64.zip"],
                &LINUX_AMD64
            ),
            None
        );
        // A plain binary is never picked automatically.
        assert_eq!(match_by_platform(&["app_linux_amd64"], &LINUX_AMD64), None);
    }

    #[test]
    fn aarch64_is_accepted_for_arm64_in_listing_order() {
        let names = ["app-aarch64-linux.tar.xz", "app_linux_arm64.tar.gz"];
        assert_eq!(match_by_platform(&names, &LINUX_ARM64), Some(0));
        assert_eq!(match_by_platform(&names[1..], &LINUX_ARM64), Some(0));
        assert_eq!(
            match_by_platform(&["app-aarch64-linux.zip"], &LINUX_AMD64),
            None
        );
    }

    #[test]
    fn explicit_and_not_found_texts() {
        let names = ["app.bin", "app_linux_amd64.tar.gz"];
        assert_eq!(select(&names, Some("app.bin"), &LINUX_AMD64, ""), Ok(0));
        assert_eq!(
            select(&names, Some("APP.bin"), &LINUX_AMD64, "")
                .unwrap_err()
                .to_string(),
            "artifact not found: APP.bin"
        );
        assert_eq!(
            select(&names, None, &DARWIN_ARM64, "")
                .unwrap_err()
                .to_string(),
            "artifact not found: "
        );
        assert_eq!(
            select(&names, None, &DARWIN_ARM64, "releases/v1.2.3/")
                .unwrap_err()
                .to_string(),
            "artifact not found: releases/v1.2.3/"
        );
        assert_eq!(
            select(&names, Some("x.zip"), &DARWIN_ARM64, "releases/v1.2.3/")
                .unwrap_err()
                .to_string(),
            "artifact not found: releases/v1.2.3/x.zip"
        );
    }

    #[test]
    fn grace_period_is_thirty_minutes() {
        let created = datetime!(2026-07-19 07:00:00 UTC);
        assert!(within_grace(
            Some(created),
            datetime!(2026-07-19 07:29:59 UTC)
        ));
        assert!(!within_grace(
            Some(created),
            datetime!(2026-07-19 07:30:00 UTC)
        ));
        assert!(within_grace(
            Some(created),
            datetime!(2026-07-19 06:00:00 UTC)
        ));
        // Offsets do not matter: 16:10 +09:00 is 07:10 UTC.
        assert!(within_grace(
            Some(created),
            datetime!(2026-07-19 16:10:00 +09:00)
        ));
        assert!(!within_grace(None, created));
    }

    #[test]
    fn kinds_by_suffix() {
        use ArtifactKind::*;
        for (name, kind) in [
            ("a.tar.gz", TarGz),
            ("a.TGZ", TarGz),
            ("a.tar.bz2", TarBz2),
            ("a.tbz2", TarBz2),
            ("a.tar.xz", TarXz),
            ("a.Txz", TarXz),
            ("a.tar", Tar),
            ("a.zip", Zip),
            ("a", Plain),
            ("a.gz", Plain),
            ("a.tar.zst", Plain),
            ("tar", Plain),
        ] {
            assert_eq!(ArtifactKind::of(name), kind, "{name}");
            assert_eq!(is_archive(name), kind != Plain, "{name}");
        }
        assert_eq!(ArtifactKind::archive_of("app.exe"), None);
        assert_eq!(ARCHIVE_SUFFIXES.iter().filter(|s| is_archive(s)).count(), 8);
    }
}
