//! The Go `flag` package, as the original used it everywhere (console commands, the three
//! binaries): `-f v`, `-f=v`, `--f v`, `--f=v`; bools take `-b`, `-b=true|false`; parsing stops at
//! the first non-flag argument or after `--`; the last value wins except for repeatable flags;
//! `-h`/`-help` ask for usage. Messages and usage blocks are byte-identical to Go's.

use std::collections::HashMap;
use std::time::Duration;

/// Validates one value of a repeatable flag, given the values accepted before it.
/// `Err(reason)` becomes `invalid value "<v>" for flag -<name>: <reason>`.
pub type Check = fn(value: &str, previous: &[String]) -> Result<(), String>;

#[derive(Clone, Debug)]
pub enum Kind {
    String { default: &'static str },
    Bool,
    Int { default: i64 },
    Duration { default: Duration },
    /// Shown as `value` in usage; every occurrence is kept, in order.
    Repeated { check: Check },
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
    /// The last value given, else the default (`""` for strings without default).
    pub fn string(&self, set: &FlagSet, name: &str) -> String {
        let _ = (set, name);
        todo!()
    }
    pub fn bool(&self, name: &str) -> bool {
        let _ = name;
        todo!()
    }
    pub fn int(&self, set: &FlagSet, name: &str) -> i64 {
        let _ = (set, name);
        todo!()
    }
    /// The last value given, else the default. Zero and negative values (`-deadline 0`) are
    /// `GoDuration::NonPositive`.
    pub fn duration(&self, set: &FlagSet, name: &str) -> GoDuration {
        let _ = (set, name);
        todo!()
    }
    /// Every value of a repeatable flag, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        let _ = name;
        todo!()
    }
    /// Whether the flag was given at all.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

impl FlagSet {
    pub fn new(name: impl Into<String>, flags: Vec<Flag>) -> FlagSet {
        FlagSet { name: name.into(), flags }
    }

    pub fn parse(&self, args: &[String]) -> Result<Parsed, FlagError> {
        let _ = args;
        todo!()
    }

    /// `Usage of <name>:\n` followed by [`FlagSet::defaults`].
    pub fn usage(&self) -> String {
        todo!()
    }

    /// Go's `PrintDefaults`: flags sorted by name, `  -name type\n    \tusage (default "x")\n`,
    /// one-letter flags without a type name on one line (`  -v\tusage\n`).
    pub fn defaults(&self) -> String {
        todo!()
    }
}

/// A Go `time.Duration` value as our programs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoDuration {
    Positive(Duration),
    /// Zero or negative: callers treat these as "off" or substitute a default.
    NonPositive,
}

/// Go's `time.ParseDuration` (`30m`, `1h30m`, `90s`, `1.5h`, `300ms`, `0`, `-1s`); `None` when
/// Go would fail.
pub fn parse_duration(s: &str) -> Option<GoDuration> {
    let _ = s;
    todo!()
}

/// Go's `Duration.String()`: `30m0s`, `1h0m0s`, `1.5s`, `300ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let _ = d;
    todo!()
}
