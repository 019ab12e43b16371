//! Which tag is the newest release: SemVer parsing and ordering, the choice among a listing,
//! and blue/green slots (spec dewy.md 2.1, 2.2, 2.4).
//!
//! Every source lists candidate tags (GitHub releases, S3/GCS "directories", OCI tags) and
//! then makes the same choice, so it lives here once. The rules are Dewy's, including its
//! accidents: tags that are not versions are skipped without a word, only a lowercase `v`
//! prefix counts, build metadata never orders, and among equal versions the first in listing
//! order wins. The SemVer grammar is two fixed regular expressions, matched by hand here (a
//! regex crate would add a dependency for a dozen lines, and its `\d` is Unicode where Go's is
//! ASCII).

use std::cmp::Ordering;

use super::calver::{self, CalVer, CalVerFormat};

/// The error when no tag of a listing is a usable version.
pub const NO_VALID_VERSION: &str = "no valid versioned object found";

/// The debug line Dewy logs when the newest release belongs to another slot.
pub const SLOT_MISMATCH_LOG: &str = "Deploy skipped: slot mismatch";

/// A tag matching `^(v)?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemVer {
    /// Whether the tag starts with `v`.
    pub v: bool,
    /// Major, minor, patch. Leading zeros are accepted; values beyond `i64::MAX` are clamped
    /// to it, as Go's `strconv.Atoi` does.
    pub core: [u64; 3],
    /// The part after `-`, or empty.
    pub pre_release: String,
    /// The part after `+` (the slot), or empty.
    pub build: String,
}

impl SemVer {
    /// Parses a tag. With `allow_pre_release` false the stricter regex applies, so a tag with
    /// a `-pre` part is `None` (a `+build` is still fine).
    pub fn parse(tag: &str, allow_pre_release: bool) -> Option<SemVer> {
        let b = tag.as_bytes();
        let (v, mut pos) = match b.first() {
            Some(b'v') => (true, 1),
            _ => (false, 0),
        };
        let mut core = [0u64; 3];
        for (i, slot) in core.iter_mut().enumerate() {
            if i > 0 {
                if b.get(pos) != Some(&b'.') {
                    return None;
                }
                pos += 1;
            }
            let n = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            *slot = go_atoi_clamped(&tag[pos..pos + n]);
            pos += n;
        }
        let (pre, build) = calver::suffix(b, pos)?;
        if !allow_pre_release && !pre.is_empty() {
            return None;
        }
        Some(SemVer {
            v,
            core,
            pre_release: pre.to_string(),
            build: build.to_string(),
        })
    }

    /// SemVer precedence as Dewy orders it (spec 2.2): the core numerically, a stable version
    /// above its pre-releases, pre-releases by SemVer 2.0 §11. Build metadata is ignored.
    pub fn precedence(&self, other: &SemVer) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.pre_release.is_empty(), other.pre_release.is_empty()) {
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => compare_pre_release(&self.pre_release, &other.pre_release),
            }
        })
    }

    /// Dewy's `SemVer.String()`, the tag s3/gs sources report: re-rendered from the parts, so
    /// `v01.2.3` becomes `v1.2.3`.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}{}.{}.{}",
            if self.v { "v" } else { "" },
            self.core[0],
            self.core[1],
            self.core[2]
        );
        if !self.pre_release.is_empty() {
            s.push('-');
            s.push_str(&self.pre_release);
        }
        if !self.build.is_empty() {
            s.push('+');
            s.push_str(&self.build);
        }
        s
    }
}

/// A chosen version, SemVer or CalVer depending on whether a calver format was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// Parsed as SemVer.
    Sem(SemVer),
    /// Parsed by the calver format.
    Cal(CalVer),
}

impl Version {
    /// The build metadata: the release's slot.
    pub fn slot(&self) -> &str {
        match self {
            Version::Sem(s) => &s.build,
            Version::Cal(c) => &c.build,
        }
    }

    /// The pre-release part, or empty.
    pub fn pre_release(&self) -> &str {
        match self {
            Version::Sem(s) => &s.pre_release,
            Version::Cal(c) => &c.pre_release,
        }
    }

    /// Dewy's `version.String()`: SemVer re-rendered ([`SemVer::render`]), CalVer verbatim.
    /// s3 and gs report this as the tag; ghr and img report the listed tag itself.
    pub fn render(&self) -> String {
        match self {
            Version::Sem(s) => s.render(),
            Version::Cal(c) => c.original.clone(),
        }
    }

    /// Precedence between two versions of the same kind. A SemVer and a CalVer never meet in
    /// one listing; should they, they compare equal so the first keeps winning.
    pub fn precedence(&self, other: &Version) -> Ordering {
        match (self, other) {
            (Version::Sem(a), Version::Sem(b)) => a.precedence(b),
            (Version::Cal(a), Version::Cal(b)) => a.precedence(b),
            _ => Ordering::Equal,
        }
    }
}

/// The newest version among `tags`, given in the source's listing order, with its index.
///
/// Tags that do not parse are skipped; without `pre_release`, tags with a `-pre` part are
/// skipped too. With a `calver` format only that format is tried (no SemVer fallback). On
/// equal precedence the earlier tag wins (Dewy replaces its pick only on a strict `>`).
/// `None` means Dewy's [`NO_VALID_VERSION`] error.
pub fn pick_latest<S: AsRef<str>>(
    tags: &[S],
    pre_release: bool,
    calver: Option<&CalVerFormat>,
) -> Option<(usize, Version)> {
    let mut best: Option<(usize, Version)> = None;
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.as_ref();
        let parsed = match calver {
            Some(f) => f.parse_tag(tag).map(Version::Cal),
            None => SemVer::parse(tag, pre_release).map(Version::Sem),
        };
        let Some(v) = parsed else { continue };
        if !pre_release && !v.pre_release().is_empty() {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(_, b)| v.precedence(b) == Ordering::Greater)
        {
            best = Some((i, v));
        }
    }
    best
}

/// The slot (build metadata) of a tag a server handed us (grpc): CalVer first when a format
/// is given, then SemVer with pre-releases allowed; empty when neither parses.
pub fn slot_of(tag: &str, calver: Option<&CalVerFormat>) -> String {
    calver
        .and_then(|f| f.parse_tag(tag))
        .map(|c| c.build)
        .or_else(|| SemVer::parse(tag, true).map(|s| s.build))
        .unwrap_or_default()
}

/// What to do with the release chosen over all slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its slot is the one we follow (or we follow any).
    Deploy,
    /// Another slot's release is the newest: skip this tick silently (log
    /// [`SLOT_MISMATCH_LOG`] at debug, reset the error count). There is no fallback to the
    /// newest release of our slot.
    SkipSlotMismatch,
}

/// Dewy's slot rule (spec 2.4), applied after [`pick_latest`]: an empty `wanted` slot
/// matches anything, otherwise the release's slot must equal it exactly.
pub fn slot_decision(release_slot: &str, wanted: &str) -> Decision {
    if wanted.is_empty() || wanted == release_slot {
        Decision::Deploy
    } else {
        Decision::SkipSlotMismatch
    }
}

/// SemVer 2.0 §11 pre-release precedence, as Dewy implements it: identifiers split on `.`;
/// two numeric ones compare as integers; a numeric one is below an alphanumeric one;
/// alphanumeric ones compare as bytes; a shorter list is lower when all before are equal.
/// "Numeric" is whatever Go's `strconv.Atoi` accepts, so `-1` is numeric and a number beyond
/// `i64` is not.
pub fn compare_pre_release(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let mut pa = a.split('.');
    let mut pb = b.split('.');
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (go_atoi(x), go_atoi(y)) {
                    (Some(m), Some(n)) => m.cmp(&n),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.as_bytes().cmp(y.as_bytes()),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Go's `strconv.Atoi`: an optional sign, then ASCII digits, within `i64`.
pub(crate) fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// `strconv.Atoi` with its error ignored, as Dewy's SemVer parser does: on overflow Go
/// returns the largest `int`.
fn go_atoi_clamped(digits: &str) -> u64 {
    go_atoi(digits).map_or(i64::MAX as u64, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sem(t: &str) -> SemVer {
        SemVer::parse(t, true).unwrap()
    }

    #[test]
    fn parses_the_two_regexes() {
        let s = sem("v1.2.3-rc.1+blue");
        assert_eq!(
            s,
            SemVer {
                v: true,
                core: [1, 2, 3],
                pre_release: "rc.1".into(),
                build: "blue".into()
            }
        );
        assert_eq!(sem("01.002.3").core, [1, 2, 3]);
        assert_eq!(sem("1.2.3-a-b.c--d").pre_release, "a-b.c--d");
        assert_eq!(sem("1.2.3+x-y.z").build, "x-y.z");
        // Without pre-release: the -pre form does not match at all, +build does.
        assert_eq!(SemVer::parse("1.2.3-rc.1", false), None);
        assert_eq!(SemVer::parse("v1.2.3+green", false).unwrap().build, "green");
        for bad in [
            "V1.2.3",
            "1.2.3.4",
            "v1.2",
            "latest",
            "release-1.2.3",
            "app/v1.2.3",
            "vv1.2.3",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a+",
            "1.2.3+a+b",
            "1.2.3-a_b",
            " 1.2.3",
            "1.2.3 ",
            "1..3",
            "1.2.٣",
            "-1.2.3",
            "+1.2.3",
            "1.2.3-é",
        ] {
            assert_eq!(SemVer::parse(bad, true), None, "{bad}");
        }
    }

    #[test]
    fn huge_core_numbers_clamp_like_atoi() {
        assert_eq!(sem("99999999999999999999.0.0").core[0], i64::MAX as u64);
        assert_eq!(sem("9223372036854775807.0.0").core[0], i64::MAX as u64);
    }

    #[test]
    fn render_reformats_the_core() {
        assert_eq!(sem("v01.2.3-rc.1+blue").render(), "v1.2.3-rc.1+blue");
        assert_eq!(sem("1.2.3").render(), "1.2.3");
    }

    #[test]
    fn semver_spec_chain() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1-0",
            "1.0.1",
            "1.1.0",
            "1.10.0",
            "2.0.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(sem(w[0]).precedence(&sem(w[1])), Ordering::Less, "{w:?}");
            assert_eq!(sem(w[1]).precedence(&sem(w[0])), Ordering::Greater, "{w:?}");
        }
        // Shuffled listings always come back to the last of the chain.
        let mut tags: Vec<&str> = chain.to_vec();
        tags.reverse();
        tags.rotate_left(5);
        let (i, v) = pick_latest(&tags, true, None).unwrap();
        assert_eq!((tags[i], v.render()), ("2.0.0", "2.0.0".to_string()));
    }

    #[test]
    fn pre_release_identifier_rules() {
        use Ordering::*;
        for (a, b, want) in [
            ("1", "a", Less),
            ("2", "11", Less),
            ("beta.2", "beta.11", Less),
            ("a.b", "a", Greater),
            ("A", "a", Less),
            ("-1", "0", Less), // Atoi takes the sign: both numeric
            ("99999999999999999999", "a", Less), // not numeric: bytes compare
            ("99999999999999999999", "1", Greater),
            ("01", "1", Equal), // equal numerically; first in listing wins
        ] {
            assert_eq!(compare_pre_release(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn build_metadata_is_ignored_and_first_listed_wins() {
        let (i, v) = pick_latest(&["v1.2.3+blue", "v1.2.3+green"], false, None).unwrap();
        assert_eq!((i, v.slot()), (0, "blue"));
        let (i, _) = pick_latest(&["1.2.3", "v1.2.3"], false, None).unwrap();
        assert_eq!(i, 0);
        let (i, _) = pick_latest(&["v1.2.3", "1.2.3", "v1.2.4-rc.1"], false, None).unwrap();
        assert_eq!(i, 0);
        let (i, _) = pick_latest(&["v1.2.3", "1.2.3", "v1.2.4-rc.1"], true, None).unwrap();
        assert_eq!(i, 2);
    }

    #[test]
    fn non_versions_are_skipped_and_none_is_no_valid_version() {
        let tags = ["latest", "V9.9.9", "1.2.3.4", "v1.0.0", "nightly"];
        let (i, _) = pick_latest(&tags, false, None).unwrap();
        assert_eq!(i, 3);
        assert_eq!(pick_latest(&["latest", "v1.0.0-rc.1"], false, None), None);
        assert_eq!(pick_latest::<&str>(&[], true, None), None);
    }

    #[test]
    fn calver_selection_does_not_fall_back_to_semver() {
        let f = CalVerFormat::parse("YYYY.0M.MICRO").unwrap();
        let tags = ["9.9.9", "2024.02.1-rc.1", "2024.01.7", "v2024.01.7+b"];
        let (i, v) = pick_latest(&tags, false, Some(&f)).unwrap();
        assert_eq!((i, v.render()), (2, "2024.01.7".to_string()));
        let (i, v) = pick_latest(&tags, true, Some(&f)).unwrap();
        assert_eq!((i, v.pre_release()), (1, "rc.1"));
        assert_eq!(pick_latest(&["1.2.3"], true, Some(&f)), None);
    }

    #[test]
    fn slots() {
        assert_eq!(slot_of("v1.2.3+blue", None), "blue");
        assert_eq!(slot_of("v1.2.3-rc.1+green", None), "green");
        assert_eq!(slot_of("latest", None), "");
        let f = CalVerFormat::parse("YYYY.MICRO").unwrap();
        assert_eq!(slot_of("2024.5+blue", Some(&f)), "blue");
        // Not the calver format: SemVer is tried next.
        assert_eq!(slot_of("1.2.3+green", Some(&f)), "green");

        assert_eq!(slot_decision("blue", ""), Decision::Deploy);
        assert_eq!(slot_decision("", ""), Decision::Deploy);
        assert_eq!(slot_decision("blue", "blue"), Decision::Deploy);
        assert_eq!(slot_decision("green", "blue"), Decision::SkipSlotMismatch);
        assert_eq!(slot_decision("", "blue"), Decision::SkipSlotMismatch);
    }

    #[test]
    fn newest_over_all_slots_then_skip() {
        // Dewy picks the newest over all slots; a blue instance does not fall back to 1.0.0+blue.
        let tags = ["v1.0.0+blue", "v1.1.0+green"];
        let (_, v) = pick_latest(&tags, false, None).unwrap();
        assert_eq!(slot_decision(v.slot(), "blue"), Decision::SkipSlotMismatch);
        assert_eq!(slot_decision(v.slot(), "green"), Decision::Deploy);
    }
}
