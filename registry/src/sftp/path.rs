//! Client paths: cleaned lexically, then matched against the few names each view has.
//!
//! No client path ever reaches the filesystem: the service view maps a matched name to a store
//! lookup (a configuration name, a digest), so `..`, absolute paths and symlinks have nothing
//! to escape into.

use common::digest::Digest;

/// Go's `path.Clean("/" + p)`: absolute, no `.`/`..`/empty components, `..` stops at `/`.
/// This is what deploy-tools (pkg/sftp) did to every request path, and what `realpath` answers.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// What a service-view path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePath {
    Root,
    ConfigsDir,
    FilesDir,
    /// `/configs/<name>.json`: the configuration's name.
    Config(String),
    /// `/files/<64 lowercase hex>`.
    Blob(Digest),
    /// Anything else: answered as "no such file".
    Unknown,
}

impl ServicePath {
    pub fn parse(raw: &str) -> ServicePath {
        let p = clean(raw);
        match p.as_str() {
            "/" => return ServicePath::Root,
            "/configs" => return ServicePath::ConfigsDir,
            "/files" => return ServicePath::FilesDir,
            _ => {}
        }
        if let Some(file) = p.strip_prefix("/configs/") {
            // After cleaning, `file` is one component (no `/`); the name must be non-empty.
            return match file.strip_suffix(".json") {
                Some(name) if !name.is_empty() && !file.contains('/') => {
                    ServicePath::Config(name.to_string())
                }
                _ => ServicePath::Unknown,
            };
        }
        if let Some(hex) = p.strip_prefix("/files/") {
            return match parse_digest(hex) {
                Some(d) => ServicePath::Blob(d),
                None => ServicePath::Unknown,
            };
        }
        ServicePath::Unknown
    }
}

/// Exactly 64 lowercase hex characters (the form the store writes), else `None`.
pub fn parse_digest(s: &str) -> Option<Digest> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(Digest(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean_of_absolute() {
        for (input, want) in [
            ("", "/"),
            (".", "/"),
            ("/", "/"),
            ("//", "/"),
            ("..", "/"),
            ("../../x", "/x"),
            ("files/x", "/files/x"),
            ("/files/x", "/files/x"),
            ("files/../registry.sqlite3", "/registry.sqlite3"),
            ("/configs/./a.json", "/configs/a.json"),
            ("a//b/./c/..", "/a/b"),
            ("/a/b/", "/a/b"),
            ("/../..", "/"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn service_paths_match_only_the_known_names() {
        let h = "ab".repeat(32);
        let d = parse_digest(&h).unwrap();
        for (input, want) in [
            ("/", ServicePath::Root),
            ("", ServicePath::Root),
            (".", ServicePath::Root),
            ("configs", ServicePath::ConfigsDir),
            ("/configs/", ServicePath::ConfigsDir),
            ("files", ServicePath::FilesDir),
            ("configs/x.json", ServicePath::Config("x".into())),
            ("/configs/x.json", ServicePath::Config("x".into())),
            (
                "/configs/with space.json",
                ServicePath::Config("with space".into()),
            ),
            ("/configs/a.b.json", ServicePath::Config("a.b".into())),
            ("/configs/.json", ServicePath::Unknown),
            ("/configs/x", ServicePath::Unknown),
            ("/configs/x.json/y", ServicePath::Unknown),
            (
                "/configs/../configs/x.json",
                ServicePath::Config("x".into()),
            ),
            (&format!("files/{h}"), ServicePath::Blob(d)),
            (&format!("/files/{h}"), ServicePath::Blob(d)),
            (&format!("/x/../files/{h}"), ServicePath::Blob(d)),
            (
                &format!("/files/{}", h.to_uppercase()),
                ServicePath::Unknown,
            ),
            (&format!("/files/{h}0"), ServicePath::Unknown),
            (&format!("/files/{h}/x"), ServicePath::Unknown),
            ("/files/../registry.sqlite3", ServicePath::Unknown),
            ("files/../registry.sqlite3", ServicePath::Unknown),
            ("/etc/passwd", ServicePath::Unknown),
            ("../../x", ServicePath::Unknown),
            ("/uploads", ServicePath::Unknown),
            ("/files/upload-123", ServicePath::Unknown),
            ("/host_key", ServicePath::Unknown),
        ] {
            assert_eq!(ServicePath::parse(input), want, "parse({input:?})");
        }
    }

    #[test]
    fn digest_parse_is_strict() {
        assert!(parse_digest(&"0".repeat(64)).is_some());
        assert!(parse_digest(&"0".repeat(63)).is_none());
        assert!(parse_digest(&"g".repeat(64)).is_none());
        assert!(parse_digest(&"A".repeat(64)).is_none());
        // 64 bytes but not 64 ASCII characters.
        assert!(parse_digest(&"é".repeat(32)).is_none());
    }
}
