//! Names Dewy puts on disk and in its cache (spec dewy.md 3.4, 6.3, 8.3 step 9), so that an
//! agent can share a cache directory or bucket with Go Dewy and finds the same releases.

use std::cmp::Ordering;

use time::OffsetDateTime;

/// The cache key whose value is the artifact key of the deployed release.
pub const CURRENT_KEY: &str = "current";

/// How many release directories Dewy keeps after a deploy.
pub const KEEP_RELEASES: usize = 7;

/// The cache key of an artifact: `<tag>--<basename of the artifact URL without its query>`,
/// e.g. `v1.2.3--app_linux_amd64.tar.gz` for
/// `s3://ap-northeast-1/bucket/v1.2.3/app_linux_amd64.tar.gz?endpoint=http://x`.
/// The basename is Go's `path.Base`: trailing slashes are ignored, and an empty path is `.`.
pub fn artifact_key(tag: &str, artifact_url: &str) -> String {
    format!("{tag}--{}", url_basename(artifact_url))
}

fn url_basename(url: &str) -> &str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" };
    }
    trimmed.rsplit_once('/').map_or(trimmed, |(_, base)| base)
}

/// The bytes stored under [`CURRENT_KEY`]: the artifact key as plain text, no newline.
pub fn current_value(artifact_key: &str) -> Vec<u8> {
    artifact_key.as_bytes().to_vec()
}

/// The artifact key stored under [`CURRENT_KEY`], compared verbatim as Dewy does (no
/// trimming); `None` when it is not UTF-8 and so cannot equal any key.
pub fn parse_current_value(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok()
}

/// A release directory's name, `20060102T150405Z` of `t` in UTC: `20260719T073215Z`.
/// Two deploys within one second get the same name, as in Dewy.
pub fn release_dir_name(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Which entries of `releases/` to remove after a deploy: all but the `keep` newest by
/// modification time, ties broken by name (the later name is the newer). `entries` are
/// (name, mtime) of the entries that could be stat'ed; the ones that could not are simply
/// not passed, and so are never removed. Returns indices into `entries`, newest-first order
/// of what goes. With `()` as every mtime the choice is by name alone, which for our
/// `20060102T150405Z` directory names is creation order.
pub fn releases_to_remove<N: AsRef<str>, T: Ord>(entries: &[(N, T)], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| newest_first(&entries[a], &entries[b]));
    order.into_iter().skip(keep).collect()
}

fn newest_first<N: AsRef<str>, T: Ord>(a: &(N, T), b: &(N, T)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| b.0.as_ref().cmp(a.0.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn artifact_keys() {
        assert_eq!(
            artifact_key("v1.2.3", "ghr://o/r/tag/v1.2.3/app_linux_amd64.tar.gz"),
            "v1.2.3--app_linux_amd64.tar.gz"
        );
        assert_eq!(
            artifact_key(
                "v1.2.3",
                "s3://ap-northeast-1/b/p/v1.2.3/app.zip?endpoint=http://localhost:9000/x"
            ),
            "v1.2.3--app.zip"
        );
        assert_eq!(
            artifact_key("2024.1", "gs://b/2024.1/sub/a.tgz"),
            "2024.1--a.tgz"
        );
        assert_eq!(artifact_key("t", "gs://b/dir/"), "t--dir");
        assert_eq!(artifact_key("t", ""), "t--.");
        assert_eq!(artifact_key("t", "a"), "t--a");
    }

    #[test]
    fn current_round_trip() {
        let key = artifact_key("v1.0.0", "ghr://o/r/tag/v1.0.0/a.tar.gz");
        let stored = current_value(&key);
        assert_eq!(stored, b"v1.0.0--a.tar.gz");
        assert_eq!(parse_current_value(&stored), Some(key.as_str()));
        assert_eq!(parse_current_value(b"v1--a\n"), Some("v1--a\n"));
        assert_eq!(parse_current_value(&[0xff]), None);
    }

    #[test]
    fn release_dir_names_are_utc() {
        assert_eq!(
            release_dir_name(datetime!(2026-07-19 07:32:15.9 UTC)),
            "20260719T073215Z"
        );
        assert_eq!(
            release_dir_name(datetime!(2026-07-19 16:32:15 +09:00)),
            "20260719T073215Z"
        );
        assert_eq!(
            release_dir_name(datetime!(0999-01-02 03:04:05 UTC)),
            "09990102T030405Z"
        );
    }

    #[test]
    fn keeps_the_newest_seven() {
        let entries: Vec<(String, u32)> = (0..10).map(|i| (format!("r{i}"), i)).collect();
        let mut gone = releases_to_remove(&entries, KEEP_RELEASES);
        gone.sort();
        assert_eq!(gone, vec![0, 1, 2]);
        assert!(releases_to_remove(&entries[..7], KEEP_RELEASES).is_empty());
        assert!(releases_to_remove::<&str, u32>(&[], KEEP_RELEASES).is_empty());
    }

    #[test]
    fn by_name_alone() {
        let names = ["20260103T000000Z", "20260101T000000Z", "20260102T000000Z"];
        let entries: Vec<(&str, ())> = names.iter().map(|n| (*n, ())).collect();
        assert_eq!(releases_to_remove(&entries, 2), vec![1]);
    }

    #[test]
    fn mtime_decides_and_name_breaks_ties() {
        // Name order would keep b; mtime says a is newer.
        let entries = [("b", 1), ("a", 2)];
        assert_eq!(releases_to_remove(&entries, 1), vec![0]);
        let tied = [
            ("20260101T000001Z", 5),
            ("20260101T000000Z", 5),
            ("20260101T000002Z", 5),
        ];
        assert_eq!(releases_to_remove(&tied, 1), vec![0, 1]);
    }
}
