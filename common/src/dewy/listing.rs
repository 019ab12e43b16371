//! Names from object-store listings (spec dewy.md 2.5): s3 and gs list "directories" under
//! the registry prefix to find versions, then the objects under the chosen one to find the
//! artifact. Both reduce a full key to a name the same way, so the version and artifact
//! rules see `v1.2.3` and `app.tar.gz`, not `releases/v1.2.3/` and
//! `releases/v1.2.3/app.tar.gz`.

/// Dewy's `strings.TrimPrefix(removeTrailingSlash(key), prefix)`: one trailing `/` goes,
/// then the prefix if the key starts with it. A common prefix `releases/v1.2.3/` under
/// `releases/` is the version `v1.2.3`; a key `releases/v1.2.3/sub/a.tgz` under
/// `releases/v1.2.3/` is the name `sub/a.tgz`.
pub fn name_under<'a>(key: &'a str, prefix: &str) -> &'a str {
    let key = key.strip_suffix('/').unwrap_or(key);
    key.strip_prefix(prefix).unwrap_or(key)
}

/// The version names of a delimiter listing's common prefixes, in listing order, paired with
/// the full prefix (the chosen one becomes `<prefix><version>/`, the base of the artifact's
/// key, keeping the listed spelling even where the reported tag is re-rendered).
pub fn version_dirs<'a, S: AsRef<str>>(
    common_prefixes: &'a [S],
    prefix: &str,
) -> Vec<(&'a str, &'a str)> {
    common_prefixes
        .iter()
        .map(|cp| (name_under(cp.as_ref(), prefix), cp.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dewy::version::pick_latest;

    #[test]
    fn names() {
        assert_eq!(name_under("releases/v1.2.3/", "releases/"), "v1.2.3");
        assert_eq!(name_under("v1.2.3/", ""), "v1.2.3");
        assert_eq!(
            name_under("releases/v1.2.3/sub/a.tgz", "releases/v1.2.3/"),
            "sub/a.tgz"
        );
        assert_eq!(name_under("other/x/", "releases/"), "other/x");
        assert_eq!(name_under("a//", ""), "a/");
    }

    #[test]
    fn listing_to_artifact_key_base() {
        let cps = ["p/1.2.3/", "p/latest/", "p/v01.2.4/", "p/v1.2.4+blue/"];
        let dirs = version_dirs(&cps, "p/");
        let names: Vec<&str> = dirs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["1.2.3", "latest", "v01.2.4", "v1.2.4+blue"]);
        let (i, v) = pick_latest(&names, false, None).unwrap();
        // v01.2.4 and v1.2.4+blue tie; the first listed wins, its tag is re-rendered, and
        // the artifact lives under the listed spelling.
        assert_eq!((v.render().as_str(), dirs[i].1), ("v1.2.4", "p/v01.2.4/"));
    }
}
