//! The Go `flag` package, as the original used it everywhere (console commands, the three
//! binaries): `-f v`, `-f=v`, `--f v`, `--f=v`; bools take `-b`, `-b=true|false`; parsing stops at
//! the first non-flag argument or after `--`; the last value wins except for repeatable flags;
//! `-h`/`-help` ask for usage. Messages and usage blocks are byte-identical to Go's.

use std::collections::HashMap;
use std::time::Duration;

use crate::gostr::quote;

/// Validates one value of a repeatable flag, given the values accepted before it.
/// `Err(reason)` becomes `invalid value "<v>" for flag -<name>: <reason>`.
pub type Check = fn(value: &str, previous: &[String]) -> Result<(), String>;

#[derive(Clone, Debug)]
pub enum Kind {
    String {
        default: &'static str,
    },
    Bool,
    Int {
        default: i64,
    },
    Duration {
        default: Duration,
    },
    /// Shown as `value` in usage; every occurrence is kept, in order.
    Repeated {
        check: Check,
    },
}

#[derive(Clone, Debug)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub usage: &'static str,
}

/// A set of flags for one command or program.
#[derive(Clone, Debug)]
pub struct FlagSet {
    pub name: String,
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// `-h` or `-help` was given (and is not a defined flag).
    Help,
    /// Go's message, e.g. `flag provided but not defined: -x`, `flag needs an argument: -name`,
    /// `invalid value "code" for flag -layer: invalid value`,
    /// `invalid boolean value "maybe" for -v: parse error`,
    /// `invalid value "x" for flag -maxver: parse error`.
    Message(String),
}

/// The result of a successful parse.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    values: HashMap<&'static str, Vec<String>>,
    /// Arguments after the flags (after the first non-flag or `--`).
    pub rest: Vec<String>,
}

impl Parsed {
    fn last(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// The last value given, else the default (`""` for strings without default).
    pub fn string(&self, set: &FlagSet, name: &str) -> String {
        if let Some(v) = self.last(name) {
            return v.to_string();
        }
        match set.find(name).map(|f| &f.kind) {
            Some(Kind::String { default }) => default.to_string(),
            _ => String::new(),
        }
    }
    pub fn bool(&self, name: &str) -> bool {
        self.last(name).and_then(parse_bool).unwrap_or(false)
    }
    pub fn int(&self, set: &FlagSet, name: &str) -> i64 {
        // Values were checked by `parse`; a value that no longer parses cannot happen.
        if let Some(v) = self.last(name).and_then(|v| parse_int(v).ok()) {
            return v;
        }
        match set.find(name).map(|f| &f.kind) {
            Some(Kind::Int { default }) => *default,
            _ => 0,
        }
    }
    /// The last value given, else the default. Zero and negative values (`-deadline 0`) are
    /// `GoDuration::NonPositive`.
    pub fn duration(&self, set: &FlagSet, name: &str) -> GoDuration {
        if let Some(v) = self.last(name).and_then(parse_duration) {
            return v;
        }
        match set.find(name).map(|f| &f.kind) {
            Some(Kind::Duration { default }) if !default.is_zero() => {
                GoDuration::Positive(*default)
            }
            _ => GoDuration::NonPositive,
        }
    }
    /// Every value of a repeatable flag, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
    /// Whether the flag was given at all.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

impl FlagSet {
    pub fn new(name: impl Into<String>, flags: Vec<Flag>) -> FlagSet {
        FlagSet {
            name: name.into(),
            flags,
        }
    }

    fn find(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// Go's `FlagSet.Parse` with `ContinueOnError`, one `parseOne` step per flag.
    pub fn parse(&self, args: &[String]) -> Result<Parsed, FlagError> {
        let mut parsed = Parsed::default();
        let mut i = 0;
        while i < args.len() {
            let s = args[i].as_str();
            if s.len() < 2 || !s.starts_with('-') {
                break;
            }
            let mut name = &s[1..];
            if let Some(rest) = name.strip_prefix('-') {
                if rest.is_empty() {
                    // "--" ends the flags and is consumed.
                    i += 1;
                    break;
                }
                name = rest;
            }
            if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
                return Err(FlagError::Message(format!("bad flag syntax: {s}")));
            }
            i += 1;
            // `=` cannot be the first character of the name (checked above).
            let (name, mut value) = match name.find('=') {
                Some(eq) => (&name[..eq], Some(&name[eq + 1..])),
                None => (name, None),
            };
            let Some(flag) = self.find(name) else {
                if name == "help" || name == "h" {
                    return Err(FlagError::Help);
                }
                return Err(FlagError::Message(format!(
                    "flag provided but not defined: -{name}"
                )));
            };
            if let Kind::Bool = flag.kind {
                let v = value.unwrap_or("true");
                if parse_bool(v).is_none() {
                    return Err(FlagError::Message(format!(
                        "invalid boolean value {} for -{name}: parse error",
                        quote(v)
                    )));
                }
                parsed
                    .values
                    .entry(flag.name)
                    .or_default()
                    .push(v.to_string());
                continue;
            }
            if value.is_none() && i < args.len() {
                value = Some(args[i].as_str());
                i += 1;
            }
            let Some(v) = value else {
                return Err(FlagError::Message(format!(
                    "flag needs an argument: -{name}"
                )));
            };
            let invalid = |reason: &str| {
                FlagError::Message(format!(
                    "invalid value {} for flag -{name}: {reason}",
                    quote(v)
                ))
            };
            let previous = parsed.values.entry(flag.name).or_default();
            match &flag.kind {
                Kind::String { .. } | Kind::Bool => {}
                Kind::Int { .. } => parse_int(v).map(|_| ()).map_err(|e| invalid(e.message()))?,
                Kind::Duration { .. } => {
                    if parse_duration(v).is_none() {
                        return Err(invalid("parse error"));
                    }
                }
                Kind::Repeated { check } => {
                    check(v, previous).map_err(|reason| invalid(&reason))?
                }
            }
            previous.push(v.to_string());
        }
        parsed.rest = args[i..].to_vec();
        Ok(parsed)
    }

    /// `Usage of <name>:\n` followed by [`FlagSet::defaults`].
    pub fn usage(&self) -> String {
        let head = if self.name.is_empty() {
            "Usage:\n".to_string()
        } else {
            format!("Usage of {}:\n", self.name)
        };
        head + &self.defaults()
    }

    /// Go's `PrintDefaults`: flags sorted by name, `  -name type\n    \tusage (default "x")\n`,
    /// one-letter flags without a type name on one line (`  -v\tusage\n`).
    pub fn defaults(&self) -> String {
        let mut flags: Vec<&Flag> = self.flags.iter().collect();
        flags.sort_by(|a, b| a.name.cmp(b.name));
        let mut out = String::new();
        for f in flags {
            let mut line = format!("  -{}", f.name);
            let (type_name, usage) = unquote_usage(f);
            if !type_name.is_empty() {
                line.push(' ');
                line.push_str(&type_name);
            }
            if line.len() <= 4 {
                line.push('\t');
            } else {
                line.push_str("\n    \t");
            }
            line.push_str(&usage.replace('\n', "\n    \t"));
            match &f.kind {
                Kind::String { default } if !default.is_empty() => {
                    line.push_str(&format!(" (default {})", quote(default)));
                }
                Kind::Int { default } if *default != 0 => {
                    line.push_str(&format!(" (default {default})"))
                }
                Kind::Duration { default } if !default.is_zero() => {
                    line.push_str(&format!(" (default {})", format_duration(*default)));
                }
                _ => {}
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Go's `flag.UnquoteUsage`: a back-quoted word in the usage names the value (and loses its
/// quotes), else the type's name.
fn unquote_usage(f: &Flag) -> (String, String) {
    let usage = f.usage;
    if let Some(open) = usage.find('`')
        && let Some(len) = usage[open + 1..].find('`')
    {
        let name = &usage[open + 1..open + 1 + len];
        let rest = &usage[open + 1 + len + 1..];
        return (name.to_string(), format!("{}{name}{rest}", &usage[..open]));
    }
    let type_name = match f.kind {
        Kind::String { .. } => "string",
        Kind::Bool => "",
        Kind::Int { .. } => "int",
        Kind::Duration { .. } => "duration",
        Kind::Repeated { .. } => "value",
    };
    (type_name.to_string(), usage.to_string())
}

/// `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumError {
    Syntax,
    Range,
}

impl NumError {
    /// The flag package's text for it (Go's `errParse` / `errRange`).
    fn message(self) -> &'static str {
        match self {
            NumError::Syntax => "parse error",
            NumError::Range => "value out of range",
        }
    }
}

/// `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b`/`0` prefixes, `_` separators.
fn parse_int(s: &str) -> Result<i64, NumError> {
    let (neg, digits) = match s.as_bytes().first() {
        None => return Err(NumError::Syntax),
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        Some(_) => (false, s),
    };
    let un = match parse_uint(digits) {
        Ok(n) => n,
        Err(NumError::Range) => u64::MAX,
        Err(e) => return Err(e),
    };
    let cutoff = 1u64 << 63;
    if !neg && un >= cutoff {
        return Err(NumError::Range);
    }
    if neg && un > cutoff {
        return Err(NumError::Range);
    }
    // un <= 2^63 here; 2^63 only when negative.
    Ok(if neg {
        0i64.wrapping_sub_unsigned(un)
    } else {
        un as i64
    })
}

/// `strconv.ParseUint(s, 0, 64)`.
fn parse_uint(s0: &str) -> Result<u64, NumError> {
    let b = s0.as_bytes();
    if b.is_empty() {
        return Err(NumError::Syntax);
    }
    let lower = |c: u8| c | 0x20;
    let (base, digits): (u64, &[u8]) = if b[0] == b'0' {
        match b.get(1).map(|&c| lower(c)) {
            Some(b'b') if b.len() >= 3 => (2, &b[2..]),
            Some(b'o') if b.len() >= 3 => (8, &b[2..]),
            Some(b'x') if b.len() >= 3 => (16, &b[2..]),
            _ => (8, &b[1..]),
        }
    } else {
        (10, b)
    };
    let cutoff = u64::MAX / base + 1;
    let mut underscores = false;
    let mut n: u64 = 0;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            _ if lower(c).is_ascii_lowercase() => lower(c) - b'a' + 10,
            _ => return Err(NumError::Syntax),
        };
        if u64::from(d) >= base {
            return Err(NumError::Syntax);
        }
        if n >= cutoff {
            return Err(NumError::Range);
        }
        n *= base;
        n = n.checked_add(u64::from(d)).ok_or(NumError::Range)?;
    }
    if underscores && !underscore_ok(s0) {
        return Err(NumError::Syntax);
    }
    Ok(n)
}

/// `strconv.underscoreOK`: underscores only between digits or after a base prefix.
fn underscore_ok(s: &str) -> bool {
    let mut s = s.as_bytes();
    if let [b'+' | b'-', rest @ ..] = s {
        s = rest;
    }
    let lower = |c: u8| c | 0x20;
    // '^' start, '0' digit or prefix, '_' underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(lower(s[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(s[1]) == b'x';
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// A Go `time.Duration` value as our programs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoDuration {
    Positive(Duration),
    /// Zero or negative: callers treat these as "off" or substitute a default.
    NonPositive,
}

const NANOS_MAX: u64 = 1 << 63;

/// Go's `leadingInt`: the digits at the start of `s` and the rest; `None` on overflow.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if x > NANOS_MAX / 10 {
            return None;
        }
        x = x * 10 + u64::from(s[i] - b'0');
        if x > NANOS_MAX {
            return None;
        }
        i += 1;
    }
    Some((x, &s[i..]))
}

/// Go's `leadingFraction`: digits past what fits are ignored.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        let c = s[i];
        i += 1;
        if overflow {
            continue;
        }
        if x > (NANOS_MAX - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > NANOS_MAX {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[i..])
}

/// Go's `time.ParseDuration` (`30m`, `1h30m`, `90s`, `1.5h`, `300ms`, `0`, `-1s`); `None` when
/// Go would fail.
pub fn parse_duration(s: &str) -> Option<GoDuration> {
    let mut b = s.as_bytes();
    let mut neg = false;
    if let [c @ (b'-' | b'+'), rest @ ..] = b {
        neg = *c == b'-';
        b = rest;
    }
    if b == b"0" {
        return Some(GoDuration::NonPositive);
    }
    if b.is_empty() {
        return None;
    }
    let mut d: u64 = 0;
    while !b.is_empty() {
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return None;
        }
        let before = b.len();
        let (mut v, rest) = leading_int(b)?;
        b = rest;
        let pre = before != b.len();
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let [b'.', rest @ ..] = b {
            let before = rest.len();
            let (ff, sc, rest) = leading_fraction(rest);
            (f, scale) = (ff, sc);
            post = before != rest.len();
            b = rest;
        }
        if !pre && !post {
            return None;
        }
        let unit_len = b
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(b.len());
        if unit_len == 0 {
            return None;
        }
        let unit: u64 = match &b[..unit_len] {
            b"ns" => 1,
            b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000, // us, µs (U+00B5), μs (U+03BC)
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        b = &b[unit_len..];
        if v > NANOS_MAX / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            // Go computes the fraction in float64 too, so results match to the nanosecond.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > NANOS_MAX {
                return None;
            }
        }
        d += v;
        if d > NANOS_MAX {
            return None;
        }
    }
    if neg || d == 0 {
        return Some(GoDuration::NonPositive);
    }
    if d > NANOS_MAX - 1 {
        return None;
    }
    Some(GoDuration::Positive(Duration::from_nanos(d)))
}

/// Go's `fmtFrac`: the low `prec` digits of `v` as `.ddd` without trailing zeros (empty when
/// they are all zero), and `v` without them.
fn frac(v: u64, prec: u32) -> (String, u64) {
    let p = 10u64.pow(prec);
    let (int, low) = (v / p, v % p);
    if low == 0 {
        return (String::new(), int);
    }
    let digits = format!("{low:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), int)
}

/// Go's `Duration.String()`: `30m0s`, `1h0m0s`, `1.5s`, `300ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    // Go's Duration is an int64 of nanoseconds; longer std durations are clamped to it.
    let u = u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .min(NANOS_MAX - 1);
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (f, int) = frac(u, prec);
        return format!("{int}{f}{unit}");
    }
    let (f, secs) = frac(u, 9);
    let mut out = format!("{}{f}s", secs % 60);
    let mins = secs / 60;
    if mins > 0 {
        out = format!("{}m{out}", mins % 60);
        let hours = mins / 60;
        if hours > 0 {
            out = format!("{hours}h{out}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn no_dup(value: &str, previous: &[String]) -> Result<(), String> {
        if !value.contains(':') {
            return Err("invalid value".into());
        }
        if previous.iter().any(|p| p == value) {
            return Err("duplicate".into());
        }
        Ok(())
    }

    fn set() -> FlagSet {
        FlagSet::new(
            "t",
            vec![
                Flag {
                    name: "name",
                    kind: Kind::String { default: "" },
                    usage: "configuration name",
                },
                Flag {
                    name: "v",
                    kind: Kind::Bool,
                    usage: "show extra details",
                },
                Flag {
                    name: "force",
                    kind: Kind::Bool,
                    usage: "remove configuration for real",
                },
                Flag {
                    name: "maxver",
                    kind: Kind::Int { default: 10 },
                    usage: "max.number of component versions to keep",
                },
                Flag {
                    name: "deadline",
                    kind: Kind::Duration {
                        default: Duration::from_secs(1800),
                    },
                    usage: "max.lifetime of TCP connection",
                },
                Flag {
                    name: "layer",
                    kind: Kind::Repeated { check: no_dup },
                    usage: "layer in component:version format",
                },
            ],
        )
    }

    fn err(a: &[&str]) -> FlagError {
        set().parse(&args(a)).expect_err("should fail")
    }

    fn msg(a: &[&str]) -> String {
        match err(a) {
            FlagError::Message(m) => m,
            FlagError::Help => panic!("help"),
        }
    }

    #[test]
    fn value_forms() {
        let s = set();
        for a in [
            &["-name", "p"][..],
            &["-name=p"],
            &["--name", "p"],
            &["--name=p"],
        ] {
            assert_eq!(s.parse(&args(a)).unwrap().string(&s, "name"), "p", "{a:?}");
        }
    }

    #[test]
    fn value_may_be_empty_or_look_like_a_flag() {
        let s = set();
        assert_eq!(s.parse(&args(&["-name="])).unwrap().string(&s, "name"), "");
        assert_eq!(
            s.parse(&args(&["-name", "-force"]))
                .unwrap()
                .string(&s, "name"),
            "-force"
        );
        assert_eq!(
            s.parse(&args(&["-name=a=b"])).unwrap().string(&s, "name"),
            "a=b"
        );
    }

    #[test]
    fn defaults_when_absent() {
        let s = set();
        let p = s.parse(&[]).unwrap();
        assert_eq!(p.string(&s, "name"), "");
        assert!(!p.bool("v"));
        assert_eq!(p.int(&s, "maxver"), 10);
        assert_eq!(
            p.duration(&s, "deadline"),
            GoDuration::Positive(Duration::from_secs(1800))
        );
        assert!(p.all("layer").is_empty());
        assert!(!p.is_set("name"));
    }

    #[test]
    fn bool_forms() {
        let s = set();
        assert!(s.parse(&args(&["-v"])).unwrap().bool("v"));
        assert!(s.parse(&args(&["-v=true"])).unwrap().bool("v"));
        assert!(s.parse(&args(&["--v=T"])).unwrap().bool("v"));
        assert!(!s.parse(&args(&["-v=false"])).unwrap().bool("v"));
        assert!(!s.parse(&args(&["-v", "-v=0"])).unwrap().bool("v"));
        // A bool never takes the next argument as its value.
        let p = s.parse(&args(&["-v", "false"])).unwrap();
        assert!(p.bool("v"));
        assert_eq!(p.rest, args(&["false"]));
    }

    #[test]
    fn last_value_wins() {
        let s = set();
        let p = s
            .parse(&args(&[
                "-name",
                "a",
                "-name=b",
                "-maxver",
                "3",
                "-maxver=0x10",
            ]))
            .unwrap();
        assert_eq!(p.string(&s, "name"), "b");
        assert_eq!(p.int(&s, "maxver"), 16);
    }

    #[test]
    fn repeated_accumulates_in_order() {
        let p = set()
            .parse(&args(&["-layer", "a:1", "-layer=b:2", "--layer", "c:"]))
            .unwrap();
        assert_eq!(p.all("layer"), args(&["a:1", "b:2", "c:"]));
    }

    #[test]
    fn repeated_check_messages() {
        assert_eq!(
            msg(&["-layer", "code"]),
            r#"invalid value "code" for flag -layer: invalid value"#
        );
        assert_eq!(
            msg(&["-layer", "a:1", "-layer", "a:1"]),
            r#"invalid value "a:1" for flag -layer: duplicate"#
        );
    }

    #[test]
    fn stops_at_first_non_flag() {
        let p = set().parse(&args(&["-v", "extra", "-name", "p"])).unwrap();
        assert!(!p.is_set("name"));
        assert_eq!(p.rest, args(&["extra", "-name", "p"]));
    }

    #[test]
    fn single_dash_is_a_non_flag() {
        let p = set().parse(&args(&["-", "-v"])).unwrap();
        assert_eq!(p.rest, args(&["-", "-v"]));
    }

    #[test]
    fn double_dash_ends_flags_and_is_consumed() {
        let p = set().parse(&args(&["-v", "--", "-name", "p"])).unwrap();
        assert_eq!(p.rest, args(&["-name", "p"]));
    }

    #[test]
    fn help_flags() {
        assert_eq!(err(&["-h"]), FlagError::Help);
        assert_eq!(err(&["--help"]), FlagError::Help);
        assert_eq!(err(&["-v", "-help=x"]), FlagError::Help);
    }

    #[test]
    fn h_defined_is_a_normal_flag() {
        let s = FlagSet::new(
            "x",
            vec![Flag {
                name: "h",
                kind: Kind::Bool,
                usage: "hosts",
            }],
        );
        assert!(s.parse(&args(&["-h"])).unwrap().bool("h"));
    }

    #[test]
    fn go_messages() {
        assert_eq!(msg(&["-x"]), "flag provided but not defined: -x");
        assert_eq!(msg(&["--x=1"]), "flag provided but not defined: -x");
        assert_eq!(msg(&["-name"]), "flag needs an argument: -name");
        assert_eq!(
            msg(&["-v=maybe"]),
            r#"invalid boolean value "maybe" for -v: parse error"#
        );
        assert_eq!(
            msg(&["-v="]),
            r#"invalid boolean value "" for -v: parse error"#
        );
        assert_eq!(
            msg(&["-maxver", "x"]),
            r#"invalid value "x" for flag -maxver: parse error"#
        );
        assert_eq!(
            msg(&["-maxver=99999999999999999999"]),
            r#"invalid value "99999999999999999999" for flag -maxver: value out of range"#
        );
        assert_eq!(
            msg(&["-deadline", "10"]),
            r#"invalid value "10" for flag -deadline: parse error"#
        );
        assert_eq!(msg(&["---name"]), "bad flag syntax: ---name");
        assert_eq!(msg(&["-=x"]), "bad flag syntax: -=x");
    }

    #[test]
    fn invalid_value_is_go_quoted() {
        assert_eq!(
            msg(&["-maxver", "a\"b\n"]),
            r#"invalid value "a\"b\n" for flag -maxver: parse error"#
        );
    }

    #[test]
    fn durations_through_flags() {
        let s = set();
        let d = |v: &str| {
            s.parse(&args(&["-deadline", v]))
                .unwrap()
                .duration(&s, "deadline")
        };
        assert_eq!(d("90s"), GoDuration::Positive(Duration::from_secs(90)));
        assert_eq!(d("0"), GoDuration::NonPositive);
        assert_eq!(d("-1s"), GoDuration::NonPositive);
    }

    #[test]
    fn usage_block_like_deploy_registry() {
        let s = FlagSet::new(
            "deploy-registry",
            vec![
                Flag {
                    name: "maxver",
                    kind: Kind::Int { default: 10 },
                    usage: "max.number of component versions to keep",
                },
                Flag {
                    name: "addr",
                    kind: Kind::String {
                        default: "localhost:2022",
                    },
                    usage: "address to listen",
                },
                Flag {
                    name: "deadline",
                    kind: Kind::Duration {
                        default: Duration::from_secs(1800),
                    },
                    usage: "max.lifetime of TCP connection",
                },
                Flag {
                    name: "dir",
                    kind: Kind::String {
                        default: "/var/lib/deploy-registry",
                    },
                    usage: "data directory",
                },
            ],
        );
        assert_eq!(
            s.usage(),
            "Usage of deploy-registry:\n  -addr string\n    \taddress to listen (default \"localhost:2022\")\n  -deadline duration\n    \tmax.lifetime of TCP connection (default 30m0s)\n  -dir string\n    \tdata directory (default \"/var/lib/deploy-registry\")\n  -maxver int\n    \tmax.number of component versions to keep (default 10)\n"
        );
    }

    #[test]
    fn usage_block_of_deploy_agent_as_observed() {
        let s = |name, default, usage| Flag {
            name,
            kind: Kind::String { default },
            usage,
        };
        let set = FlagSet::new(
            "deploy-agent",
            vec![
                s("addr", "localhost:2022", "registry address (host:port)"),
                Flag {
                    name: "cleanold",
                    kind: Kind::Bool,
                    usage: "remove unreferenced unpacked files after successful switch",
                },
                s(
                    "dir",
                    ".",
                    "directory to store downloaded and unpacked files",
                ),
                s("fp", "", "registry server key fingerprint"),
                s("key", "id_ecdsa", "ssh private key to use"),
                s("name", "", "configuration to track"),
                Flag {
                    name: "poll",
                    kind: Kind::Duration {
                        default: Duration::from_secs(30),
                    },
                    usage: "registry poll interval",
                },
                s("script", "./deploy.sh", "script to run on deploys"),
                s("state", "state.json", "file to save state to"),
                Flag {
                    name: "v",
                    kind: Kind::Bool,
                    usage: "be more chatty about what's happening",
                },
            ],
        );
        let spec = "Usage of deploy-agent:
  -addr string
    \tregistry address (host:port) (default \"localhost:2022\")
  -cleanold
    \tremove unreferenced unpacked files after successful switch
  -dir string
    \tdirectory to store downloaded and unpacked files (default \".\")
  -fp string
    \tregistry server key fingerprint
  -key string
    \tssh private key to use (default \"id_ecdsa\")
  -name string
    \tconfiguration to track
  -poll duration
    \tregistry poll interval (default 30s)
  -script string
    \tscript to run on deploys (default \"./deploy.sh\")
  -state string
    \tfile to save state to (default \"state.json\")
  -v\tbe more chatty about what's happening
";
        assert_eq!(set.usage(), spec);
    }

    #[test]
    fn defaults_bool_one_letter_on_one_line_longer_on_two() {
        assert_eq!(
            set().defaults(),
            "  -deadline duration\n    \tmax.lifetime of TCP connection (default 30m0s)\n  -force\n    \tremove configuration for real\n  -layer value\n    \tlayer in component:version format\n  -maxver int\n    \tmax.number of component versions to keep (default 10)\n  -name string\n    \tconfiguration name\n  -v\tshow extra details\n"
        );
    }

    #[test]
    fn defaults_zero_values_not_shown_and_backquoted_names_used() {
        let s = FlagSet::new(
            "",
            vec![
                Flag {
                    name: "n",
                    kind: Kind::Int { default: 0 },
                    usage: "count",
                },
                Flag {
                    name: "p",
                    kind: Kind::Duration {
                        default: Duration::ZERO,
                    },
                    usage: "a `period` to wait\nsecond line",
                },
            ],
        );
        assert_eq!(
            s.usage(),
            "Usage:\n  -n int\n    \tcount\n  -p period\n    \ta period to wait\n    \tsecond line\n"
        );
    }

    #[test]
    fn parse_duration_examples() {
        let p = |s: &str| parse_duration(s);
        assert_eq!(
            p("30m"),
            Some(GoDuration::Positive(Duration::from_secs(1800)))
        );
        assert_eq!(
            p("1h30m"),
            Some(GoDuration::Positive(Duration::from_secs(5400)))
        );
        assert_eq!(
            p("1.5h"),
            Some(GoDuration::Positive(Duration::from_secs(5400)))
        );
        assert_eq!(
            p("300ms"),
            Some(GoDuration::Positive(Duration::from_millis(300)))
        );
        assert_eq!(
            p("1µs"),
            Some(GoDuration::Positive(Duration::from_micros(1)))
        );
        assert_eq!(
            p(".5s"),
            Some(GoDuration::Positive(Duration::from_millis(500)))
        );
        assert_eq!(p("0"), Some(GoDuration::NonPositive));
        assert_eq!(p("-1s"), Some(GoDuration::NonPositive));
        for bad in [
            "",
            "10",
            "1x",
            "s",
            ".s",
            "1h-1m",
            "9223372036854775808ns",
            "+-1s",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_duration_examples() {
        let f = |n: u64| format_duration(Duration::from_nanos(n));
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m0s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(f(0), "0s");
        assert_eq!(f(999), "999ns");
        assert_eq!(f(1_500), "1.5µs");
        assert_eq!(f(90_061_000_000_001), "25h1m1.000000001s");
    }

    #[test]
    fn ints_in_go_syntax() {
        assert_eq!(parse_int("0x1F"), Ok(31));
        assert_eq!(parse_int("0o17"), Ok(15));
        assert_eq!(parse_int("017"), Ok(15));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("-1_000"), Ok(-1000));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), Err(NumError::Range));
        assert_eq!(parse_int("08"), Err(NumError::Syntax));
        assert_eq!(parse_int("1__0"), Err(NumError::Syntax));
        assert_eq!(parse_int(" 1"), Err(NumError::Syntax));
    }
}
