//! SHA-256 checksum files published next to release artifacts (Dewy post-2.19, PR #491; spec
//! dewy.md 12): finding the one that covers our artifact, and reading the expected digest.
//!
//! Accepted names, compared case-insensitively, in this order of preference:
//! 1. a per-artifact file `<artifact>.sha256`, `.sha256sum`, `.sha256.txt` or `.sha256sums`;
//! 2. an aggregate `checksums.txt`, `SHA256SUMS` or `*_checksums.txt` (GoReleaser's
//!    `<project>_<version>_checksums.txt`).
//!
//! Within each group the first in listing order wins. The contents are `sha256sum` output:
//! `<hex>  <name>` (text mode) or `<hex> *<name>` (binary mode), plus the `\`-escaped form
//! sha256sum writes for names with a backslash or newline. A per-artifact file may also hold
//! the bare hex digest alone. Hex may be upper-case.

use std::collections::HashMap;

use crate::digest::Digest;

/// Suffixes of a per-artifact checksum file.
pub const PER_ARTIFACT_SUFFIXES: [&str; 4] =
    [".sha256", ".sha256sum", ".sha256.txt", ".sha256sums"];

/// Why no expected digest could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// A line that is neither blank nor `<hex> <name>`.
    #[error("invalid checksum file {file}: line {line} is not \"<sha256>  <name>\"")]
    BadLine {
        /// The checksum file's name.
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// The file is well-formed but does not list the artifact.
    #[error("checksum for {artifact} not found in {file}")]
    Missing {
        /// The artifact looked up.
        artifact: String,
        /// The checksum file's name.
        file: String,
    },
}

/// The index of the checksum file for `artifact` among `names`, by the rules in the module
/// doc; `None` when the release publishes none (verification is then skipped, as in Dewy).
pub fn find_checksum_file<S: AsRef<str>>(artifact: &str, names: &[S]) -> Option<usize> {
    let artifact = artifact.to_lowercase();
    let lower: Vec<String> = names.iter().map(|n| n.as_ref().to_lowercase()).collect();
    let per_artifact = lower.iter().position(|n| {
        n.strip_prefix(artifact.as_str())
            .is_some_and(|suffix| PER_ARTIFACT_SUFFIXES.contains(&suffix))
    });
    per_artifact.or_else(|| {
        lower.iter().position(|n| {
            n == "checksums.txt" || n == "sha256sums" || n.ends_with("_checksums.txt")
        })
    })
}

/// Parses `sha256sum` output into name → digest. Blank lines and `#` comments are skipped;
/// for a repeated name the last line wins, as `sha256sum -c` would check both.
pub fn parse_sums(file: &str, text: &str) -> Result<HashMap<String, Digest>, ChecksumError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || ChecksumError::BadLine {
            file: file.to_string(),
            line: i + 1,
        };
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hex, rest) = line.split_once(' ').ok_or_else(bad)?;
        let digest = parse_hex(hex).ok_or_else(bad)?;
        // Text mode has a second space, binary mode a `*`.
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(bad)?;
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_string()
        };
        if name.is_empty() {
            return Err(bad());
        }
        out.insert(name, digest);
    }
    Ok(out)
}

/// The digest `file` (named `file_name`, with contents `text`) states for `artifact`.
/// Entries are matched by exact name, then by their last path component (`./dist/a.tgz`).
/// A per-artifact file may instead hold just the digest.
pub fn expected_digest(
    artifact: &str,
    file_name: &str,
    text: &str,
) -> Result<Digest, ChecksumError> {
    let is_per_artifact = file_name
        .to_lowercase()
        .strip_prefix(&artifact.to_lowercase())
        .is_some_and(|s| PER_ARTIFACT_SUFFIXES.contains(&s));
    if is_per_artifact {
        let mut words = text.split_whitespace();
        if let (Some(only), None) = (words.next(), words.next()) {
            return parse_hex(only).ok_or(ChecksumError::BadLine {
                file: file_name.to_string(),
                line: 1,
            });
        }
    }
    let sums = parse_sums(file_name, text)?;
    if let Some(d) = sums.get(artifact) {
        return Ok(*d);
    }
    let by_base = sums
        .iter()
        .filter(|(name, _)| name.rsplit('/').next() == Some(artifact))
        .map(|(_, d)| *d)
        .collect::<Vec<_>>();
    match by_base.as_slice() {
        [d] => Ok(*d),
        // Two different paths with our basename: refusing beats guessing.
        _ => Err(ChecksumError::Missing {
            artifact: artifact.to_string(),
            file: file_name.to_string(),
        }),
    }
}

fn parse_hex(s: &str) -> Option<Digest> {
    Digest::parse_hex(&s.to_ascii_lowercase()).ok()
}

/// sha256sum's name escaping: `\\` and `\n`.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const B: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn d(hex: &str) -> Digest {
        Digest::parse_hex(hex).unwrap()
    }

    #[test]
    fn finds_per_artifact_file_first() {
        let names = [
            "app_1.0_checksums.txt",
            "app_linux_amd64.tar.gz",
            "APP_linux_amd64.tar.gz.SHA256",
        ];
        assert_eq!(
            find_checksum_file("app_linux_amd64.tar.gz", &names),
            Some(2)
        );
        assert_eq!(find_checksum_file("app_darwin_arm64.zip", &names), Some(0));
        for agg in [
            "checksums.txt",
            "SHA256SUMS",
            "sha256sums",
            "x_CHECKSUMS.txt",
        ] {
            assert_eq!(
                find_checksum_file("a.zip", &["a.zip", agg]),
                Some(1),
                "{agg}"
            );
        }
        for suffix in PER_ARTIFACT_SUFFIXES {
            let name = format!("a.zip{suffix}");
            assert_eq!(
                find_checksum_file("a.zip", &["SHA256SUMS", name.as_str()]),
                Some(1)
            );
        }
        for not in [
            "checksums.txt.sig",
            "mychecksums.txt",
            "SHA256SUMS.asc",
            "b.zip.sha256",
            "a.zip.md5",
        ] {
            assert_eq!(find_checksum_file("a.zip", &["a.zip", not]), None, "{not}");
        }
    }

    #[test]
    fn parses_text_binary_and_escaped_lines() {
        let text = format!(
            "{A}  app.tar.gz\r\n{} *bin.zip\n{A}  *star\n\n# comment\n\\{B}  dir\\\\we\\nird\n{B} *other\n",
            B.to_uppercase()
        );
        let sums = parse_sums("SHA256SUMS", &text).unwrap();
        assert_eq!(sums.len(), 5);
        assert_eq!(sums["app.tar.gz"], d(A));
        assert_eq!(sums["bin.zip"], d(B));
        // Two spaces: text mode, so the `*` belongs to the name.
        assert_eq!(sums["*star"], d(A));
        assert_eq!(sums["dir\\we\nird"], d(B));
        assert_eq!(sums["other"], d(B));
    }

    #[test]
    fn bad_lines_name_the_line() {
        for text in [
            format!("{A}  ok\nnot a line\n"),
            format!("{A}  ok\n{}  short\n", &A[1..]),
            format!("{A}  ok\n{A}\n"),
            format!("{A}  ok\n{A}  \n"),
            format!("{A}  ok\n{A}x  name\n"),
        ] {
            assert_eq!(
                parse_sums("sums", &text).unwrap_err().to_string(),
                "invalid checksum file sums: line 2 is not \"<sha256>  <name>\"",
                "{text:?}"
            );
        }
    }

    #[test]
    fn expected_digest_lookup() {
        let agg = format!("{A}  a.zip\n{B}  ./dist/b.zip\n");
        assert_eq!(expected_digest("a.zip", "checksums.txt", &agg), Ok(d(A)));
        assert_eq!(expected_digest("b.zip", "checksums.txt", &agg), Ok(d(B)));
        assert_eq!(
            expected_digest("c.zip", "checksums.txt", &agg)
                .unwrap_err()
                .to_string(),
            "checksum for c.zip not found in checksums.txt"
        );
        let twice = format!("{A}  x/c.zip\n{B}  y/c.zip\n");
        assert!(expected_digest("c.zip", "checksums.txt", &twice).is_err());
        // Per-artifact files: a bare digest, or a sums line.
        assert_eq!(
            expected_digest("a.zip", "a.zip.sha256", &format!("{A}\n")),
            Ok(d(A))
        );
        assert_eq!(
            expected_digest("a.zip", "a.zip.sha256", &format!("{B} *a.zip\n")),
            Ok(d(B))
        );
        assert!(expected_digest("a.zip", "a.zip.sha256", "nothex\n").is_err());
        // A bare digest is not accepted from an aggregate file.
        assert!(expected_digest("a.zip", "checksums.txt", &format!("{A}\n")).is_err());
    }
}
