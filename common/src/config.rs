//! Configurations and their layers, with the exact JSON of deploy-tools (spec 2.1) and the
//! configuration hash (spec 0).

use crate::timefmt::OffsetDateTime;

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

impl Configuration {
    /// Builds a configuration and computes its hash from the layers.
    pub fn new(name: String, mtime: OffsetDateTime, layers: Vec<ComponentVersion>) -> Configuration {
        let hash = config_hash(layers.iter().map(|l| l.hash.as_str()));
        Configuration { name, mtime, hash, layers }
    }

    /// The exact bytes served as `configs/<name>.json`: tab indent, trailing newline, Go
    /// escaping, RFC3339Nano times.
    pub fn to_json(&self) -> String {
        todo!()
    }

    /// Decodes leniently, as Go does: unknown fields ignored, missing fields are zero values
    /// (empty strings, Unix epoch... Go's zero time `0001-01-01T00:00:00Z`), keys matched
    /// case-insensitively.
    pub fn from_json(bytes: &[u8]) -> Result<Configuration, ConfigError> {
        let _ = bytes;
        todo!()
    }

    /// True when `hash` is what the layers hash to (spec A13: agents check this).
    pub fn hash_matches_layers(&self) -> bool {
        self.hash == config_hash(self.layers.iter().map(|l| l.hash.as_str()))
    }
}

impl ComponentVersion {
    /// A layer record as the registry stores it: `File` is `files/<hash>`.
    pub fn new(name: String, version: String, hash: String, ctime: OffsetDateTime) -> ComponentVersion {
        let file = format!("files/{hash}");
        ComponentVersion { name, version, file, hash, ctime }
    }

    /// Compact one-line JSON (`json.Marshal`), the form of the original's DB records.
    pub fn to_compact_json(&self) -> String {
        todo!()
    }
}

/// `hex(sha256(h1 + "\n" + h2 + "\n" + ... + hn + "\n"))`.
pub fn config_hash<'a>(layer_hashes: impl IntoIterator<Item = &'a str>) -> String {
    let _ = layer_hashes.into_iter();
    todo!()
}
