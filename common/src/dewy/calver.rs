//! Calendar versions (`--calver FMT` / `?calver=FMT`), spec dewy.md 2.3.
//!
//! Dewy turns the format into a Go regular expression and takes the submatches. We match the
//! same language with a small backtracking matcher instead of a regex engine: Go's submatch
//! rule is "the match a backtracking implementation would have chosen", so trying each
//! specifier's alternatives in the regex's own priority order (greedy counts longest first,
//! alternations left to right) yields the same segments, and `\d` stays ASCII-only as in Go
//! (the `regex` crate's `\d` is Unicode). A memo of failed (specifier, offset) states keeps it
//! linear in practice even with several `MICRO`s.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::version::{compare_pre_release, go_atoi};
use crate::gostr;

/// What the `--calver` flag's check prints before Dewy exits 1.
pub const INVALID_CALVER_FORMAT: &str = "invalid calver format";

/// The specifiers, in the order Dewy tries them at each position of the format (longest
/// first, so `YYYY` is not read as `YY` `YY`).
const SPECIFIERS: [(&str, Spec); 10] = [
    ("YYYY", Spec::Yyyy),
    ("0Y", Spec::ZeroY),
    ("YY", Spec::Yy),
    ("0M", Spec::ZeroM),
    ("MM", Spec::Mm),
    ("0W", Spec::ZeroW),
    ("WW", Spec::Ww),
    ("0D", Spec::ZeroD),
    ("DD", Spec::Dd),
    ("MICRO", Spec::Micro),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    Yyyy,
    ZeroY,
    Yy,
    ZeroM,
    Mm,
    ZeroW,
    Ww,
    ZeroD,
    Dd,
    Micro,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Spec(Spec),
    /// One byte of the format, matched literally (Go quotes each byte with `QuoteMeta`).
    Lit(u8),
}

/// Tags longer than this are never calendar versions here. The failure memo holds up to
/// (format tokens × tag length) entries, and a gRPC server or an object listing controls
/// the tag; real tags are far shorter (GitHub and OCI cap theirs near 128-255 bytes).
pub const MAX_TAG_LEN: usize = 1024;

/// A parsed format such as `YYYY.0M.MICRO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalVerFormat {
    format: String,
    tokens: Vec<Token>,
}

/// Why a format was refused; the texts are Dewy's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalVerError {
    /// The format is empty.
    #[error("calver format is empty")]
    Empty,
    /// The format has no specifier at all (e.g. `vX.Y`).
    #[error("calver format {} contains no valid specifiers (expected YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D, or MICRO)", gostr::quote(.0))]
    NoSpecifier(String),
}

/// A tag parsed by a [`CalVerFormat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalVer {
    /// Whether the tag starts with `v`.
    pub v: bool,
    /// The specifier values, in format order.
    pub segments: Vec<i64>,
    /// The part after `-`, or empty.
    pub pre_release: String,
    /// The part after `+` (the slot), or empty.
    pub build: String,
    /// The tag as given; Dewy uses it verbatim as the release's tag.
    pub original: String,
}

impl CalVerFormat {
    /// Reads a format, taking at each position the first specifier of
    /// `YYYY,0Y,YY,0M,MM,0W,WW,0D,DD,MICRO` that starts there, else one literal byte.
    pub fn parse(format: &str) -> Result<CalVerFormat, CalVerError> {
        if format.is_empty() {
            return Err(CalVerError::Empty);
        }
        let mut tokens = Vec::new();
        let mut rest = format;
        while !rest.is_empty() {
            if let Some((name, spec)) = SPECIFIERS.iter().find(|(name, _)| rest.starts_with(name)) {
                tokens.push(Token::Spec(*spec));
                rest = &rest[name.len()..];
            } else {
                // Byte-wise like Go; a multi-byte character becomes consecutive literal bytes.
                tokens.push(Token::Lit(rest.as_bytes()[0]));
                let mut next = 1;
                while !rest.is_char_boundary(next) {
                    tokens.push(Token::Lit(rest.as_bytes()[next]));
                    next += 1;
                }
                rest = &rest[next..];
            }
        }
        if !tokens.iter().any(|t| matches!(t, Token::Spec(_))) {
            return Err(CalVerError::NoSpecifier(format.to_string()));
        }
        Ok(CalVerFormat {
            format: format.to_string(),
            tokens,
        })
    }

    /// The format as given.
    pub fn as_str(&self) -> &str {
        &self.format
    }

    /// Parses `tag` as `^(v)?<format>(?:-(pre))?(?:\+(build))?$`, or `None` when it does not
    /// match (or a segment overflows, which Dewy also skips, or it exceeds [`MAX_TAG_LEN`]).
    pub fn parse_tag(&self, tag: &str) -> Option<CalVer> {
        if tag.len() > MAX_TAG_LEN {
            return None;
        }
        let b = tag.as_bytes();
        // `(v)?` is greedy: with the `v` first, then without.
        for start in [1, 0] {
            if start == 1 && !tag.starts_with('v') {
                continue;
            }
            let mut m = Matcher {
                fmt: self,
                tag: b,
                failed: HashSet::new(),
                spans: Vec::new(),
            };
            if let Some((pre, build)) = m.run(0, start) {
                let segments = m
                    .spans
                    .iter()
                    .map(|&(s, e)| go_atoi(&tag[s..e]))
                    .collect::<Option<Vec<_>>>()?;
                return Some(CalVer {
                    v: start == 1,
                    segments,
                    pre_release: pre.to_string(),
                    build: build.to_string(),
                    original: tag.to_string(),
                });
            }
        }
        None
    }
}

struct Matcher<'a> {
    fmt: &'a CalVerFormat,
    tag: &'a [u8],
    /// (token index, offset) pairs known not to lead to a match.
    failed: HashSet<(usize, usize)>,
    /// Byte spans of the specifier submatches on the current path.
    spans: Vec<(usize, usize)>,
}

impl<'a> Matcher<'a> {
    /// Matches tokens from `ti` at `pos`; on success returns (pre-release, build).
    fn run(&mut self, ti: usize, pos: usize) -> Option<(&'a str, &'a str)> {
        let Some(token) = self.fmt.tokens.get(ti) else {
            return suffix(self.tag, pos);
        };
        if self.failed.contains(&(ti, pos)) {
            return None;
        }
        let rest = &self.tag[pos..];
        match token {
            Token::Lit(c) => {
                if rest.first() == Some(c)
                    && let Some(found) = self.run(ti + 1, pos + 1)
                {
                    return Some(found);
                }
            }
            Token::Spec(spec) => {
                for len in candidates(*spec, rest) {
                    self.spans.push((pos, pos + len));
                    if let Some(found) = self.run(ti + 1, pos + len) {
                        return Some(found);
                    }
                    self.spans.pop();
                }
            }
        }
        self.failed.insert((ti, pos));
        None
    }
}

/// The lengths `spec`'s regex can match at the start of `s`, in the order Go's leftmost-first
/// semantics prefers them.
fn candidates(spec: Spec, s: &[u8]) -> Vec<usize> {
    let d = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, lo: u8, hi: u8| s.get(i).is_some_and(|c| (lo..=hi).contains(c));
    let mut out = Vec::new();
    let mut alt = |ok: bool, len: usize| {
        if ok {
            out.push(len);
        }
    };
    match spec {
        // (\d{4})
        Spec::Yyyy => alt((0..4).all(d), 4),
        // (\d{2,3}) greedy
        Spec::ZeroY => {
            alt((0..3).all(d), 3);
            alt((0..2).all(d), 2);
        }
        // (\d{1,3}) greedy
        Spec::Yy => {
            alt((0..3).all(d), 3);
            alt((0..2).all(d), 2);
            alt(d(0), 1);
        }
        // (0[1-9]|1[0-2])
        Spec::ZeroM => {
            alt(at(0, b'0', b'0') && at(1, b'1', b'9'), 2);
            alt(at(0, b'1', b'1') && at(1, b'0', b'2'), 2);
        }
        // ([1-9]|1[0-2])
        Spec::Mm => {
            alt(at(0, b'1', b'9'), 1);
            alt(at(0, b'1', b'1') && at(1, b'0', b'2'), 2);
        }
        // (0[1-9]|[1-4]\d|5[0-3])
        Spec::ZeroW => {
            alt(at(0, b'0', b'0') && at(1, b'1', b'9'), 2);
            alt(at(0, b'1', b'4') && d(1), 2);
            alt(at(0, b'5', b'5') && at(1, b'0', b'3'), 2);
        }
        // ([1-9]|[1-4]\d|5[0-3])
        Spec::Ww => {
            alt(at(0, b'1', b'9'), 1);
            alt(at(0, b'1', b'4') && d(1), 2);
            alt(at(0, b'5', b'5') && at(1, b'0', b'3'), 2);
        }
        // (0[1-9]|[12]\d|3[01])
        Spec::ZeroD => {
            alt(at(0, b'0', b'0') && at(1, b'1', b'9'), 2);
            alt(at(0, b'1', b'2') && d(1), 2);
            alt(at(0, b'3', b'3') && at(1, b'0', b'1'), 2);
        }
        // ([1-9]|[12]\d|3[01])
        Spec::Dd => {
            alt(at(0, b'1', b'9'), 1);
            alt(at(0, b'1', b'2') && d(1), 2);
            alt(at(0, b'3', b'3') && at(1, b'0', b'1'), 2);
        }
        // (\d+) greedy
        Spec::Micro => {
            let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
            out.extend((1..=n).rev());
        }
    }
    out
}

/// `(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$` at `pos`. Since `+` is not in the class,
/// only one split is possible, so no backtracking is needed here.
pub(crate) fn suffix(tag: &[u8], pos: usize) -> Option<(&str, &str)> {
    let ident = |c: &u8| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-';
    let rest = &tag[pos..];
    let (pre, after) = match rest.strip_prefix(b"-") {
        Some(r) => {
            let n = r.iter().take_while(|c| ident(c)).count();
            if n == 0 {
                return None;
            }
            (&r[..n], &r[n..])
        }
        None => (&rest[..0], rest),
    };
    let build = match after.strip_prefix(b"+") {
        Some(b) if !b.is_empty() && b.iter().all(ident) => b,
        Some(_) => return None,
        None if after.is_empty() => after,
        None => return None,
    };
    // Both are ASCII by construction.
    Some((
        std::str::from_utf8(pre).ok()?,
        std::str::from_utf8(build).ok()?,
    ))
}

impl CalVer {
    /// Dewy's `CalVer.Compare`: segments numerically left to right (a missing one counts as
    /// 0), then a stable version above a pre-release, then SemVer's pre-release rules. Build
    /// metadata is ignored.
    pub fn precedence(&self, other: &CalVer) -> Ordering {
        let n = self.segments.len().max(other.segments.len());
        for i in 0..n {
            let a = self.segments.get(i).copied().unwrap_or(0);
            let b = other.segments.get(i).copied().unwrap_or(0);
            if a != b {
                return a.cmp(&b);
            }
        }
        match (self.pre_release.is_empty(), other.pre_release.is_empty()) {
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => compare_pre_release(&self.pre_release, &other.pre_release),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(f: &str) -> CalVerFormat {
        CalVerFormat::parse(f).unwrap()
    }

    #[test]
    fn format_errors_have_dewys_texts() {
        assert_eq!(
            CalVerFormat::parse("").unwrap_err().to_string(),
            "calver format is empty"
        );
        assert_eq!(
            CalVerFormat::parse("vX.Y").unwrap_err().to_string(),
            "calver format \"vX.Y\" contains no valid specifiers (expected YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D, or MICRO)"
        );
    }

    #[test]
    fn specifiers_are_read_greedily_in_dewys_order() {
        let toks = |f: &str| fmt(f).tokens;
        assert_eq!(
            toks("YYYYY"),
            vec![Token::Spec(Spec::Yyyy), Token::Lit(b'Y')]
        );
        assert_eq!(
            toks("0YYY"),
            vec![Token::Spec(Spec::ZeroY), Token::Spec(Spec::Yy)]
        );
        assert_eq!(
            toks("YY.MM.MICRO-x"),
            vec![
                Token::Spec(Spec::Yy),
                Token::Lit(b'.'),
                Token::Spec(Spec::Mm),
                Token::Lit(b'.'),
                Token::Spec(Spec::Micro),
                Token::Lit(b'-'),
                Token::Lit(b'x'),
            ]
        );
    }

    #[test]
    fn parses_tags() {
        let f = fmt("YYYY.0M.MICRO");
        let c = f.parse_tag("v2024.01.3-rc.1+blue").unwrap();
        assert!(c.v);
        assert_eq!(c.segments, vec![2024, 1, 3]);
        assert_eq!((c.pre_release.as_str(), c.build.as_str()), ("rc.1", "blue"));
        assert_eq!(c.original, "v2024.01.3-rc.1+blue");
        for bad in [
            "2024.1.3",   // 0M wants two digits
            "2024.13.3",  // no month 13
            "24.01.3",    // YYYY wants four digits
            "V2024.01.3", // only a lowercase v
            "2024.01.3-", // empty pre-release
            "2024.01.3+", // empty build
            "2024.01.3+a+b",
            "2024.01.3_x",
            "2024.01.",
            "2024.01.٣", // Arabic-Indic digit: Go's \d is ASCII only
        ] {
            assert_eq!(f.parse_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn backtracking_prefers_what_go_prefers() {
        // Every expectation here was checked with Go 1.19's regexp on Dewy's pattern.
        // MM is ([1-9]|1[0-2]), DD ([1-9]|[12]\d|3[01]). On "1112" MM=1 leaves "112",
        // which no DD ends; MM=11 leaves "12", and DD=12 reaches the end.
        let c = fmt("MMDD").parse_tag("1112").unwrap();
        assert_eq!(c.segments, vec![11, 12]);
        // Both splits of "111" match; leftmost-first takes MM=1, DD=11.
        assert_eq!(fmt("MMDD").parse_tag("111").unwrap().segments, vec![1, 11]);
        // \d+ is greedy but gives back until the literal 1 and the rest can match.
        assert_eq!(
            fmt("MICRO1MICRO").parse_tag("12131").unwrap().segments,
            vec![12, 31]
        );
        // YY is \d{1,3}: greedy, so "2024" splits 202|4 under YYMICRO.
        assert_eq!(
            fmt("YYMICRO").parse_tag("2024").unwrap().segments,
            vec![202, 4]
        );
        // A literal v in the format can use the tag's v when (v)? gives it up.
        assert!(!fmt("vYYYY").parse_tag("v2024").unwrap().v);
        assert!(fmt("vYYYY").parse_tag("vv2024").unwrap().v);
    }

    #[test]
    fn many_micros_stay_fast() {
        let f = fmt("MICRO.MICRO.MICRO.MICRO.MICRO.MICRO");
        // Without the memo this backtracks through ~n^5 splits.
        let tag = format!("{}x", "1".repeat(MAX_TAG_LEN - 1));
        assert_eq!(f.parse_tag(&tag), None);
        let tag = format!("1.1.1.1.1.1-{}", "a".repeat(MAX_TAG_LEN - 12));
        assert_eq!(f.parse_tag(&tag).map(|c| c.segments.len()), Some(6));
        let tag = format!("1.1.1.1.1.1-{}", "a".repeat(MAX_TAG_LEN - 11));
        assert_eq!(f.parse_tag(&tag), None, "over the cap");
    }

    #[test]
    fn overflowing_segment_is_skipped() {
        assert_eq!(fmt("MICRO").parse_tag("99999999999999999999"), None);
        assert_eq!(
            fmt("MICRO")
                .parse_tag("9223372036854775807")
                .unwrap()
                .segments,
            vec![i64::MAX]
        );
    }

    #[test]
    fn ordering() {
        let f = fmt("YYYY.0M.MICRO");
        let p = |t: &str| f.parse_tag(t).unwrap();
        let chain = [
            "2023.12.9",
            "2024.01.1-alpha",
            "2024.01.1-beta.2",
            "2024.01.1-beta.11",
            "2024.01.1",
            "2024.01.2",
            "2024.01.10",
            "2024.02.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(p(w[0]).precedence(&p(w[1])), Ordering::Less, "{w:?}");
        }
        assert_eq!(
            p("2024.01.1+a").precedence(&p("v2024.01.1+b")),
            Ordering::Equal
        );
        // A missing segment counts as 0.
        let short = fmt("YYYY").parse_tag("2024").unwrap();
        let long = fmt("YYYY.MICRO").parse_tag("2024.0").unwrap();
        assert_eq!(short.precedence(&long), Ordering::Equal);
    }
}
