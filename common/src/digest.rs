//! sha256 content addresses.

use std::fmt;

use sha2::Digest as _;

/// A sha256 digest. Displays as 64 lowercase hex characters, the form used in
/// `files/<sha256>`, `-hash` and the configuration JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a sha256 hex digest: {0:?}")]
pub struct BadDigest(pub String);

impl Digest {
    /// Parses exactly 64 lowercase hex characters. Uppercase is refused: blob identity is the
    /// lowercase form (spec 0), and the original never matched an uppercase hash either.
    pub fn parse_hex(s: &str) -> Result<Digest, BadDigest> {
        let bad = || BadDigest(s.to_string());
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Incremental sha256 (a thin wrapper so that every crate hashes the same way).
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn of_empty_is_the_known_sha256() {
        assert_eq!(Digest::of(b"").to_hex(), EMPTY);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    #[test]
    fn parse_hex_round_trips() {
        let d = Digest::parse_hex(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(format!("{d:?}"), format!("Digest({EMPTY})"));
    }

    #[test]
    fn parse_hex_refuses_uppercase_wrong_length_and_non_hex() {
        assert!(Digest::parse_hex(&EMPTY.to_uppercase()).is_err());
        assert!(Digest::parse_hex(&EMPTY[..63]).is_err());
        assert!(Digest::parse_hex(&format!("{EMPTY}0")).is_err());
        let mut g = EMPTY.to_string();
        g.replace_range(0..1, "g");
        assert_eq!(Digest::parse_hex(&g), Err(BadDigest(g.clone())));
        // 64 bytes but not 64 chars of hex: a multi-byte char must not panic the slicing.
        let mut m = "é".to_string();
        m.push_str(&EMPTY[..62]);
        assert_eq!(m.len(), 64);
        assert!(Digest::parse_hex(&m).is_err());
    }
}
