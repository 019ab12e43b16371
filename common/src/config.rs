//! Configurations and their layers, with the exact JSON of deploy-tools (spec 2.1) and the
//! configuration hash (spec 0).

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::digest::Hasher;
use crate::timefmt::{self, OffsetDateTime};

/// One version of one component: one layer of a configuration.
/// JSON keys are the Go field names `Name Version File Hash Ctime`, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentVersion {
    pub name: String,
    pub version: String,
    /// Always `files/<hash>` when we write it; agents must not trust it (spec A13).
    pub file: String,
    pub hash: String,
    pub ctime: OffsetDateTime,
}

/// A named, ordered list of layers. JSON keys `Name Mtime Hash Layers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    pub name: String,
    pub mtime: OffsetDateTime,
    pub hash: String,
    pub layers: Vec<ComponentVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration JSON: {0}")]
    Json(String),
}

/// Go's zero `time.Time`, what a missing time field decodes to.
pub const GO_ZERO_TIME: OffsetDateTime = time::macros::datetime!(0001-01-01 00:00:00 UTC);

#[derive(Serialize)]
struct LayerOut<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Version")]
    version: &'a str,
    #[serde(rename = "File")]
    file: &'a str,
    #[serde(rename = "Hash")]
    hash: &'a str,
    #[serde(rename = "Ctime")]
    ctime: String,
}

impl<'a> From<&'a ComponentVersion> for LayerOut<'a> {
    fn from(l: &'a ComponentVersion) -> Self {
        LayerOut {
            name: &l.name,
            version: &l.version,
            file: &l.file,
            hash: &l.hash,
            ctime: timefmt::rfc3339_nano(l.ctime),
        }
    }
}

#[derive(Serialize)]
struct ConfigOut<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Mtime")]
    mtime: String,
    #[serde(rename = "Hash")]
    hash: &'a str,
    #[serde(rename = "Layers")]
    layers: Vec<LayerOut<'a>>,
}

impl Configuration {
    /// Builds a configuration and computes its hash from the layers.
    pub fn new(
        name: String,
        mtime: OffsetDateTime,
        layers: Vec<ComponentVersion>,
    ) -> Configuration {
        let hash = config_hash(layers.iter().map(|l| l.hash.as_str()));
        Configuration {
            name,
            mtime,
            hash,
            layers,
        }
    }

    /// The exact bytes served as `configs/<name>.json`: tab indent, trailing newline, Go
    /// escaping, RFC3339Nano times.
    pub fn to_json(&self) -> String {
        // An empty list is `[]` here; Go writes `null` for a nil slice, but the original never
        // saved a configuration without layers (addconf requires one).
        crate::gojson::to_indented(&ConfigOut {
            name: &self.name,
            mtime: timefmt::rfc3339_nano(self.mtime),
            hash: &self.hash,
            layers: self.layers.iter().map(LayerOut::from).collect(),
        })
    }

    /// Decodes leniently, as Go does: unknown fields ignored, missing fields are zero values
    /// (empty strings, Go's zero time `0001-01-01T00:00:00Z`), keys matched case-insensitively,
    /// `null` leaves a field at its zero value. A value of the wrong type is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Configuration, ConfigError> {
        let doc: Json =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let mut c = Configuration {
            name: String::new(),
            mtime: GO_ZERO_TIME,
            hash: String::new(),
            layers: Vec::new(),
        };
        let fields = match doc {
            Json::Null => return Ok(c),
            Json::Obj(fields) => fields,
            other => return Err(type_error("Configuration", &other)),
        };
        for (key, value) in fields {
            match go_field(&key, &["Name", "Mtime", "Hash", "Layers"]) {
                Some("Name") => set_string(&mut c.name, value, "Configuration.Name")?,
                Some("Mtime") => set_time(&mut c.mtime, value, "Configuration.Mtime")?,
                Some("Hash") => set_string(&mut c.hash, value, "Configuration.Hash")?,
                Some("Layers") => match value {
                    Json::Null => c.layers = Vec::new(),
                    Json::Arr(items) => {
                        c.layers = items
                            .into_iter()
                            .map(layer_from)
                            .collect::<Result<_, _>>()?;
                    }
                    other => return Err(type_error("Configuration.Layers", &other)),
                },
                _ => {}
            }
        }
        Ok(c)
    }

    /// True when `hash` is what the layers hash to (spec A13: agents check this).
    pub fn hash_matches_layers(&self) -> bool {
        self.hash == config_hash(self.layers.iter().map(|l| l.hash.as_str()))
    }
}

fn layer_from(value: Json) -> Result<ComponentVersion, ConfigError> {
    let fields = match value {
        Json::Obj(fields) => fields,
        // Go would decode a nil *ComponentVersion and crash on first use; refuse it instead.
        Json::Null => return Err(ConfigError::Json("null layer".to_string())),
        other => return Err(type_error("Configuration.Layers", &other)),
    };
    let mut l = ComponentVersion {
        name: String::new(),
        version: String::new(),
        file: String::new(),
        hash: String::new(),
        ctime: GO_ZERO_TIME,
    };
    for (key, value) in fields {
        match go_field(&key, &["Name", "Version", "File", "Hash", "Ctime"]) {
            Some("Name") => set_string(&mut l.name, value, "ComponentVersion.Name")?,
            Some("Version") => set_string(&mut l.version, value, "ComponentVersion.Version")?,
            Some("File") => set_string(&mut l.file, value, "ComponentVersion.File")?,
            Some("Hash") => set_string(&mut l.hash, value, "ComponentVersion.Hash")?,
            Some("Ctime") => set_time(&mut l.ctime, value, "ComponentVersion.Ctime")?,
            _ => {}
        }
    }
    Ok(l)
}

/// Go's `encoding/json` field lookup: the exact name, else a case-insensitive match where,
/// as Go's fold does, `ſ` (U+017F) matches `s` and the Kelvin sign (U+212A) matches `k`.
fn go_field(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    if let Some(f) = fields.iter().find(|f| **f == key) {
        return Some(f);
    }
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    fields.iter().copied().find(|f| {
        key.chars().count() == f.len()
            && key
                .chars()
                .map(fold)
                .eq(f.chars().map(|c| c.to_ascii_lowercase()))
    })
}

fn set_string(slot: &mut String, value: Json, field: &str) -> Result<(), ConfigError> {
    match value {
        Json::Null => Ok(()),
        Json::Str(s) => {
            *slot = s;
            Ok(())
        }
        other => Err(type_error(field, &other)),
    }
}

fn set_time(slot: &mut OffsetDateTime, value: Json, field: &str) -> Result<(), ConfigError> {
    match value {
        Json::Null => Ok(()),
        Json::Str(s) => {
            *slot = timefmt::parse_rfc3339(&s).ok_or_else(|| {
                ConfigError::Json(format!("{field}: cannot parse {s:?} as RFC3339 time"))
            })?;
            Ok(())
        }
        other => Err(type_error(field, &other)),
    }
}

fn type_error(field: &str, value: &Json) -> ConfigError {
    let kind = match value {
        Json::Null => "null",
        Json::Bool => "bool",
        Json::Num => "number",
        Json::Str(_) => "string",
        Json::Arr(_) => "array",
        Json::Obj(_) => "object",
    };
    ConfigError::Json(format!(
        "cannot unmarshal {kind} into Go struct field {field}"
    ))
}

/// A JSON document that keeps object keys in document order, duplicates included, so that the
/// last of several case-variant keys wins as in Go.
enum Json {
    Null,
    Bool,
    Num,
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Num)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Num)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Num)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Json::Obj(fields))
            }
        }
        d.deserialize_any(V)
    }
}

impl ComponentVersion {
    /// A layer record as the registry stores it: `File` is `files/<hash>`.
    pub fn new(
        name: String,
        version: String,
        hash: String,
        ctime: OffsetDateTime,
    ) -> ComponentVersion {
        let file = format!("files/{hash}");
        ComponentVersion {
            name,
            version,
            file,
            hash,
            ctime,
        }
    }

    /// Compact one-line JSON (`json.Marshal`), the form of the original's DB records.
    pub fn to_compact_json(&self) -> String {
        crate::gojson::to_compact(&LayerOut::from(self))
    }
}

/// `hex(sha256(h1 + "\n" + h2 + "\n" + ... + hn + "\n"))`.
pub fn config_hash<'a>(layer_hashes: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Hasher::new();
    for l in layer_hashes {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.finish().to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Spec 2.1, the exact bytes served by the original.
    const SPEC_EXAMPLE: &str = r#"{
	"Name": "project1",
	"Mtime": "2026-11-22T07:26:29.184481867Z",
	"Hash": "d334f1c85f5e0b6a8ad473770251c2032ce06028b01d64dba2be777479b0f4de",
	"Layers": [
		{
			"Name": "code",
			"Version": "v01",
			"File": "files/8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1",
			"Hash": "8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1",
			"Ctime": "2026-11-22T07:26:19.817675717Z"
		},
		{
			"Name": "config",
			"Version": "v01-again",
			"File": "files/f1aa015149ab144337099c60b206bd7fec28c8a48c485136183dce5e1b03da38",
			"Hash": "f1aa015149ab144337099c60b206bd7fec28c8a48c485136183dce5e1b03da38",
			"Ctime": "2026-11-22T07:26:24.24956739Z"
		}
	]
}
"#;
    const H1: &str = "8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1";
    const H2: &str = "f1aa015149ab144337099c60b206bd7fec28c8a48c485136183dce5e1b03da38";

    #[test]
    fn config_hash_matches_spec_vector() {
        assert_eq!(
            config_hash([H1, H2]),
            "d334f1c85f5e0b6a8ad473770251c2032ce06028b01d64dba2be777479b0f4de"
        );
    }

    #[test]
    fn config_hash_of_no_layers_is_sha256_of_nothing() {
        assert_eq!(
            config_hash([]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn spec_example_round_trips_byte_for_byte() {
        let c = Configuration::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.to_json(), SPEC_EXAMPLE);
        assert!(c.hash_matches_layers());
    }

    #[test]
    fn spec_example_fields_decoded() {
        let c = Configuration::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.name, "project1");
        assert_eq!(c.mtime, datetime!(2026-11-22 07:26:29.184481867 UTC));
        assert_eq!(c.layers.len(), 2);
        assert_eq!(c.layers[1].version, "v01-again");
        assert_eq!(c.layers[1].file, format!("files/{H2}"));
        assert_eq!(
            c.layers[1].ctime,
            datetime!(2026-11-22 07:26:24.24956739 UTC)
        );
    }

    #[test]
    fn new_computes_the_hash_and_builds_the_spec_example() {
        let layers = vec![
            ComponentVersion::new(
                "code".into(),
                "v01".into(),
                H1.into(),
                datetime!(2026-11-22 07:26:19.817675717 UTC),
            ),
            ComponentVersion::new(
                "config".into(),
                "v01-again".into(),
                H2.into(),
                datetime!(2026-11-22 07:26:24.24956739 UTC),
            ),
        ];
        let c = Configuration::new(
            "project1".into(),
            datetime!(2026-11-22 07:26:29.184481867 UTC),
            layers,
        );
        assert_eq!(c.to_json(), SPEC_EXAMPLE);
    }

    #[test]
    fn hash_mismatch_detected() {
        let mut c = Configuration::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
        c.layers.swap(0, 1);
        assert!(!c.hash_matches_layers());
    }

    #[test]
    fn compact_layer_json() {
        let l = ComponentVersion::new(
            "a<b".into(),
            "v1".into(),
            H1.into(),
            datetime!(2026-11-22 07:26:19 UTC),
        );
        assert_eq!(
            l.to_compact_json(),
            format!(
                r#"{{"Name":"a\u003cb","Version":"v1","File":"files/{H1}","Hash":"{H1}","Ctime":"2026-11-22T07:26:19Z"}}"#
            )
        );
    }

    #[test]
    fn missing_fields_are_zero_values() {
        let c = Configuration::from_json(br#"{"Layers":[{}]}"#).unwrap();
        assert_eq!(c.name, "");
        assert_eq!(c.mtime, GO_ZERO_TIME);
        assert_eq!(c.layers[0].ctime, GO_ZERO_TIME);
        assert_eq!(c.layers[0].hash, "");
        assert_eq!(timefmt::rfc3339_nano(c.mtime), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn unknown_fields_ignored_and_keys_case_insensitive() {
        let c = Configuration::from_json(
            br#"{"name":"p","HASH":"h","extra":{"x":[1,2]},"layers":[{"vErSiOn":"v"}]}"#,
        )
        .unwrap();
        assert_eq!(c.name, "p");
        assert_eq!(c.hash, "h");
        assert_eq!(c.layers[0].version, "v");
    }

    #[test]
    fn go_fold_matches_long_s_and_kelvin_sign_only_where_go_does() {
        let c = Configuration::from_json("{\"Ha\u{17f}h\":\"h\",\"\u{17f}Name\":\"x\"}".as_bytes())
            .unwrap();
        assert_eq!(c.hash, "h");
        assert_eq!(c.name, "");
    }

    #[test]
    fn exact_key_preferred_then_last_wins() {
        let c = Configuration::from_json(br#"{"Name":"a","name":"b"}"#).unwrap();
        assert_eq!(c.name, "b");
        let c = Configuration::from_json(br#"{"name":"b","Name":"a"}"#).unwrap();
        assert_eq!(c.name, "a");
    }

    #[test]
    fn nulls_leave_zero_values() {
        let c = Configuration::from_json(br#"{"Name":null,"Mtime":null,"Layers":null}"#).unwrap();
        assert_eq!(c.name, "");
        assert_eq!(c.mtime, GO_ZERO_TIME);
        assert!(c.layers.is_empty());
        let c = Configuration::from_json(b"null").unwrap();
        assert_eq!(c.name, "");
    }

    #[test]
    fn wrong_types_and_bad_json_are_errors() {
        for bad in [
            &br#"{"Name":5}"#[..],
            br#"{"Layers":{}}"#,
            br#"{"Layers":[null]}"#,
            br#"{"Layers":["x"]}"#,
            br#"{"Mtime":"yesterday"}"#,
            br#"[]"#,
            br#"{"Name":"x"} trailing"#,
            b"",
            b"{",
        ] {
            assert!(
                Configuration::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(Configuration::from_json(deep.as_bytes()).is_err());
    }
}
