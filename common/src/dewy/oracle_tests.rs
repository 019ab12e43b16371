//! Golden vectors from Go 1.19 (`testdata/oracle/main.go` → `testdata/vectors.json`): Dewy's
//! own CalVer/SemVer regexes run by Go's `regexp`, its pre-release comparison under Go's
//! `strconv.Atoi`, and `net/url`'s parsing. Our hand-written matchers must agree on every one.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use super::calver::CalVerFormat;
use super::goquery;
use super::version::{SemVer, compare_pre_release};

fn vectors() -> Value {
    serde_json::from_str(include_str!("testdata/vectors.json")).expect("vectors.json")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

#[test]
fn calver_formats_match_go() {
    let v = vectors();
    for case in v["Formats"].as_array().unwrap() {
        let (format, want) = (s(&case[0]), s(&case[1]));
        let got = CalVerFormat::parse(format)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(got, want, "format {format:?}");
    }
}

#[test]
fn calver_tags_match_go() {
    let v = vectors();
    let cases = v["CalVer"].as_array().unwrap();
    let mut matched = 0;
    for case in cases {
        let (format, tag, want) = (s(&case[0]), s(&case[1]), &case[2]);
        let got = CalVerFormat::parse(format).unwrap().parse_tag(tag);
        match (got, want) {
            (None, Value::Null) => {}
            (Some(c), Value::Object(w)) => {
                matched += 1;
                let segs: Vec<i64> = w["Segs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_i64().unwrap())
                    .collect();
                assert_eq!(c.v, w["V"].as_bool().unwrap(), "{format} {tag}");
                assert_eq!(c.segments, segs, "{format} {tag}");
                assert_eq!(c.pre_release, s(&w["Pre"]), "{format} {tag}");
                assert_eq!(c.build, s(&w["Build"]), "{format} {tag}");
            }
            (got, want) => panic!("{format} {tag:?}: got {got:?}, Go {want}"),
        }
    }
    // The generator must keep producing both outcomes, or this test proves little.
    assert!(
        matched > 100 && cases.len() - matched > 100,
        "{matched}/{}",
        cases.len()
    );
}

#[test]
fn semver_tags_match_go() {
    let v = vectors();
    let cases = v["SemVer"].as_array().unwrap();
    let mut strict = 0;
    for case in cases {
        let (tag, want) = (s(&case[0]), &case[1]);
        let loose = SemVer::parse(tag, true);
        let tight = SemVer::parse(tag, false);
        match (&loose, want) {
            (None, Value::Null) => assert_eq!(tight, None, "{tag:?}"),
            (Some(sv), Value::Array(w)) => {
                assert_eq!(tight.is_some(), w[0].as_bool().unwrap(), "{tag:?}");
                strict += usize::from(tight.is_some());
                assert_eq!(sv.v, w[1].as_bool().unwrap(), "{tag:?}");
                let core: Vec<u64> = w[2]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .collect();
                assert_eq!(sv.core.to_vec(), core, "{tag:?}");
                assert_eq!(sv.pre_release, s(&w[3]), "{tag:?}");
                assert_eq!(sv.build, s(&w[4]), "{tag:?}");
            }
            (got, want) => panic!("{tag:?}: got {got:?}, Go {want}"),
        }
    }
    assert!(strict > 50, "{strict}");
}

#[test]
fn pre_release_order_matches_go() {
    let v = vectors();
    for case in v["PreCmp"].as_array().unwrap() {
        let (a, b) = (s(&case[0]), s(&case[1]));
        let want = case[2].as_i64().unwrap().cmp(&0);
        assert_eq!(compare_pre_release(a, b), want, "{a} vs {b}");
        assert_eq!(compare_pre_release(b, a), want.reverse(), "{b} vs {a}");
        if a == b {
            assert_eq!(want, Ordering::Equal);
        }
    }
}

#[test]
fn url_parsing_matches_go() {
    let v = vectors();
    for case in v["URL"].as_array().unwrap() {
        let (raw, want) = (s(&case[0]), &case[1]);
        match goquery::parse(raw) {
            Err(e) => assert_eq!(Some(e.as_str()), want["Err"].as_str(), "{raw:?}"),
            Ok(u) => {
                assert!(
                    want.get("Err").is_none(),
                    "{raw:?}: Go refused it: {}",
                    want["Err"]
                );
                assert_eq!(u.host, want["Host"].as_str().unwrap_or(""), "{raw:?}");
                assert_eq!(u.path, want["Path"].as_str().unwrap_or(""), "{raw:?}");
                assert_eq!(
                    u.userinfo.is_some(),
                    want["User"].as_bool().unwrap_or(false),
                    "{raw:?}"
                );
                // Go's Query() is a map of value lists; compare in that shape.
                let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (k, val) in &u.query {
                    got.entry(k.clone()).or_default().push(val.clone());
                }
                let want_q: BTreeMap<String, Vec<String>> = match want.get("Query") {
                    Some(q) => serde_json::from_value(q.clone()).unwrap(),
                    None => BTreeMap::new(),
                };
                assert_eq!(got, want_q, "{raw:?}");
            }
        }
    }
}
