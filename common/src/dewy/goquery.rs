//! The two Go libraries every Dewy registry URL goes through: `net/url` (`url.Parse`,
//! `URL.Query`) and `gorilla/schema`'s default decoder.
//!
//! Only the parts that change what a registry URL means are reproduced: where the host, path
//! and query split, which escapes are refused, how query pairs are decoded, and the decoder's
//! key matching and error texts. Anything Go accepts that would never name a registry (an
//! opaque `ghr:x` URL, a fragment) is either ignored as Go ignores it or refused early.

use crate::gostr;

/// `url.Parse`'s view of a hierarchical URL, reduced to what the registries read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoUrl {
    /// `URL.Host`: `host[:port]`, without user info, `%` escapes decoded.
    pub host: String,
    /// The authority's `user[:password]@` part, raw (Go keeps it in `URL.User`).
    pub userinfo: Option<String>,
    /// `URL.Path`, `%` escapes decoded (`+` stays `+`).
    pub path: String,
    /// `URL.Query()` as ordered pairs; pairs Go drops (bad escape, `;`, empty) are absent.
    pub query: Vec<(String, String)>,
}

/// `url.Parse(raw)` for `scheme://authority/path?query#fragment`. The error text is Go's
/// `parse "<raw>": <reason>`.
pub(crate) fn parse(raw: &str) -> Result<GoUrl, String> {
    let fail = |why: String| format!("parse {}: {}", gostr::quote(raw), why);
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(fail("net/url: invalid control character in URL".into()));
    }
    // The fragment is cut first, so a `?` after `#` is not a query.
    let (rest, _fragment) = raw.split_once('#').unwrap_or((raw, ""));
    let Some((_scheme, rest)) = rest.split_once("://") else {
        return Err(fail("missing \"://\"".into()));
    };
    let (rest, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, raw_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(authority[..i].to_string()), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host).map_err(fail)?;
    let path = unescape(raw_path, Mode::Path).map_err(fail)?;
    Ok(GoUrl {
        host,
        userinfo,
        path,
        query: parse_query(raw_query),
    })
}

/// `url.parseHost`: a bracketed IPv6 literal or a name, each with an optional `:digits` port.
fn parse_host(host: &str) -> Result<String, String> {
    let port_ok = |p: &str| {
        p.is_empty() || (p.starts_with(':') && p[1..].bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(inner) = host.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &inner[end + 1..];
        if !port_ok(colon_port) {
            return Err(format!(
                "invalid port {} after host",
                gostr::quote(colon_port)
            ));
        }
    } else if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !port_ok(colon_port) {
            return Err(format!(
                "invalid port {} after host",
                gostr::quote(colon_port)
            ));
        }
    }
    unescape(host, Mode::Host)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Path,
    QueryComponent,
}

/// `url.unescape`: `%XX` decoding with Go's per-mode refusals.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    let end = (i + 3).min(b.len());
                    return Err(format!("invalid URL escape {}", gostr::quote(&s[i..end])));
                };
                // Go allows only non-ASCII bytes (and %25) to be escaped in a host name.
                if mode == Mode::Host && hi < 8 && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {}", gostr::quote(&s[i..i + 3])));
                }
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if mode == Mode::QueryComponent => {
                out.push(b' ');
                i += 1;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && !host_char_ok(c) {
                    return Err(format!(
                        "invalid character {} in host name",
                        gostr::quote(&(c as char).to_string())
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "escapes decode to invalid UTF-8".to_string())
}

/// `!shouldEscape(c, encodeHost)`.
fn host_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c)
}

/// `url.ParseQuery` with its errors discarded, as `URL.Query()` does: a pair with a `;` or a
/// bad escape is dropped, an empty pair is skipped, the rest keep their order.
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                unescape(k, Mode::QueryComponent).ok()?,
                unescape(v, Mode::QueryComponent).ok()?,
            ))
        })
        .collect()
}

/// Go's `u.RawQuery = u.Query().Encode()` then `u.String()` for a registry URL: the query's
/// pairs (as [`parse_query`] reads them) sorted by key, values of one key in their order, and
/// re-escaped with `url.QueryEscape`. Dewy names its shared registry-cache entry after this
/// text, so the same registry written with its options in another order shares one entry.
pub fn canonical_url(raw: &str) -> String {
    let (head, fragment) = match raw.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (raw, None),
    };
    let Some((base, query)) = head.split_once('?') else {
        return raw.to_string();
    };
    let mut pairs = parse_query(query);
    // Stable: the values of one key keep their order, as Go's Encode does.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect();
    let mut out = base.to_string();
    if !encoded.is_empty() {
        out.push('?');
        out.push_str(&encoded.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

/// How a decoded field is typed in Dewy's option structs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
}

/// A decoded option value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Str(String),
    Bool(bool),
}

/// gorilla/schema's default `Decoder.Decode` of `query` into a struct whose `schema` tags are
/// `fields`. Returns `(field name, value)` in the order they were set; a later entry for the
/// same field overrides an earlier one.
///
/// - Keys match field names case-insensitively (`strings.EqualFold`).
/// - For a repeated key the last value is used; an empty value leaves the field unset.
/// - An unknown key is `schema: invalid path "<key>"`; a bad bool is
///   `schema: error converting value for "<key>"`.
/// - Several errors are reported as gorilla's `MultiError` does: one of them, then
///   ` (and N other error[s])`. Go picks that one from a map at random; we pick the first key
///   in query order so the message is stable.
pub(crate) fn decode(
    query: &[(String, String)],
    fields: &[(&'static str, Kind)],
) -> Result<Vec<(&'static str, Value)>, String> {
    // Go's url.Values groups values under the exact key; keys keep first-appearance order here.
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for (k, v) in query {
        match keys.iter_mut().find(|(key, _)| *key == k.as_str()) {
            Some(slot) => slot.1 = v.as_str(),
            None => keys.push((k.as_str(), v.as_str())),
        }
    }
    let mut set = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in keys {
        let Some(&(name, kind)) = fields.iter().find(|(name, _)| equal_fold(name, key)) else {
            errors.push(format!("schema: invalid path {}", gostr::quote(key)));
            continue;
        };
        if value.is_empty() {
            continue;
        }
        match kind {
            Kind::Str => set.push((name, Value::Str(value.to_string()))),
            Kind::Bool => match parse_bool(value) {
                Some(b) => set.push((name, Value::Bool(b))),
                None => errors.push(format!(
                    "schema: error converting value for {}",
                    gostr::quote(key)
                )),
            },
        }
    }
    match errors.len() {
        0 => Ok(set),
        1 => Err(errors.swap_remove(0)),
        2 => Err(format!("{} (and 1 other error)", errors[0])),
        n => Err(format!("{} (and {} other errors)", errors[0], n - 1)),
    }
}

/// gorilla/schema's bool converter: `on`, then Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "on" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `strings.EqualFold` for our ASCII field names: Unicode simple folding also maps the Kelvin
/// sign to `k` and long s to `s`, so `artifaKt` (U+212A) matches as it does in Go.
fn equal_fold(field: &str, key: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212A}' => 'k',
        '\u{17F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    field.chars().map(fold).eq(key.chars().map(fold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn splits_like_url_parse() {
        let u = parse("ghr://owner/re%2Fpo/?pre-release=true#frag?x=1").unwrap();
        assert_eq!(u.host, "owner");
        assert_eq!(u.path, "/re/po/");
        assert_eq!(u.query, q(&[("pre-release", "true")]));
        let u = parse("grpc://user:pw@10.0.0.1:9000").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("user:pw"));
        assert_eq!((u.host.as_str(), u.path.as_str()), ("10.0.0.1:9000", ""));
        let u = parse("ssh://[::1]:2022/web").unwrap();
        assert_eq!(u.host, "[::1]:2022");
    }

    #[test]
    fn refuses_what_url_parse_refuses() {
        assert_eq!(
            parse("s3://r/b/%zz").unwrap_err(),
            r#"parse "s3://r/b/%zz": invalid URL escape "%zz""#
        );
        assert_eq!(
            parse("ghr://own er/repo").unwrap_err(),
            r#"parse "ghr://own er/repo": invalid character " " in host name"#
        );
        assert_eq!(
            parse("grpc://host:port").unwrap_err(),
            r#"parse "grpc://host:port": invalid port ":port" after host"#
        );
        assert_eq!(
            parse("ghr://o/r\n").unwrap_err(),
            "parse \"ghr://o/r\\n\": net/url: invalid control character in URL"
        );
        assert!(parse("ghr://o/r%4").is_err());
        assert!(parse("ssh://[::1/x").is_err());
    }

    #[test]
    fn query_decoding_drops_what_go_drops() {
        let u = parse("ghr://o/r?a=1&&b=%zz&c=x;y&d=a+b%21&e").unwrap();
        assert_eq!(u.query, q(&[("a", "1"), ("d", "a b!"), ("e", "")]));
    }

    #[test]
    fn decode_rules() {
        let fields = [("artifact", Kind::Str), ("pre-release", Kind::Bool)];
        // Case-insensitive keys, last value wins, empty value ignored.
        let got = decode(
            &q(&[
                ("ARTIFACT", "a"),
                ("ARTIFACT", "b"),
                ("Pre-Release", "on"),
                ("artifact", ""),
            ]),
            &fields,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("artifact", Value::Str("b".into())),
                ("pre-release", Value::Bool(true))
            ]
        );
        assert_eq!(
            decode(&q(&[("x", "1")]), &fields).unwrap_err(),
            r#"schema: invalid path "x""#
        );
        assert_eq!(
            decode(&q(&[("pre-release", "yes")]), &fields).unwrap_err(),
            r#"schema: error converting value for "pre-release""#
        );
        assert_eq!(
            decode(&q(&[("x", "1"), ("y", "2"), ("pre-release", "2")]), &fields).unwrap_err(),
            r#"schema: invalid path "x" (and 2 other errors)"#
        );
        assert_eq!(
            decode(&q(&[("x", "1"), ("y", "2")]), &fields).unwrap_err(),
            r#"schema: invalid path "x" (and 1 other error)"#
        );
        assert_eq!(
            decode(&q(&[("pre-relea\u{17F}e", "1")]), &fields).unwrap(),
            vec![("pre-release", Value::Bool(true))]
        );
    }

    #[test]
    fn bools_like_strconv_parse_bool_plus_on() {
        for t in ["on", "1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["off", "ON", "yes", "tRUE", " true", ""] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }
}
