//! Host key verification: an exact `SHA256:` fingerprint list, or an OpenSSH known_hosts file.
//!
//! The decision is made inside the handshake (russh calls [`Checker::check`]); the reason for a
//! rejection is kept so `connect` can report what to do instead of russh's generic
//! "unknown key".

use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

use crate::HostCheck;

/// `SHA256:<unpadded base64>`, byte-identical to `ssh-keygen -lf`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Accepts `sha256:` (the original's help text said so) as well as `SHA256:`; only the prefix is
/// case-insensitive, the base64 part is compared exactly.
pub fn normalize_fingerprint(fp: &str) -> String {
    match fp.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => format!("SHA256:{}", &fp[7..]),
        _ => fp.to_string(),
    }
}

/// A host check bound to the address we dial.
#[derive(Debug, Clone)]
pub struct Checker {
    check: HostCheck,
    host: String,
    port: u16,
}

impl Checker {
    pub fn new(check: &HostCheck, host: &str, port: u16) -> Checker {
        let check = match check {
            HostCheck::Fingerprints(fps) => {
                HostCheck::Fingerprints(fps.iter().map(|f| normalize_fingerprint(f)).collect())
            }
            other => other.clone(),
        };
        Checker {
            check,
            host: host.to_string(),
            port,
        }
    }

    /// Fails early, before dialing, when the known_hosts file cannot be read (as Go's
    /// `knownhosts.New` does).
    pub fn preflight(&self) -> anyhow::Result<()> {
        if let HostCheck::KnownHosts(path) = &self.check {
            std::fs::File::open(path).map_err(|e| {
                anyhow::anyhow!("open {}: {}", path.display(), common::goerr::errno_text(&e))
            })?;
        }
        Ok(())
    }

    /// `Ok(())` if the key is trusted, else the reason (without the `ssh: handshake failed: `
    /// prefix).
    pub fn check(&self, key: &PublicKey) -> Result<(), String> {
        let seen = fingerprint(key);
        match &self.check {
            HostCheck::Fingerprints(fps) => {
                if fps.contains(&seen) {
                    Ok(())
                } else {
                    Err(format!("host key fingerprint mismatch: {seen}"))
                }
            }
            HostCheck::KnownHosts(path) => self.check_known_hosts(path, key, &seen),
        }
    }

    fn host_pattern(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    fn check_known_hosts(&self, path: &Path, key: &PublicKey, seen: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("open {}: {}", path.display(), common::goerr::errno_text(&e)))?;
        if revoked(&text, key) {
            return Err(format!(
                "host key {seen} is marked @revoked in {}",
                path.display()
            ));
        }
        // russh matches plain and hashed (`|1|salt|hmac`) host patterns for us; we decide
        // ourselves so several keys per host (rotation) work and comments do not matter.
        let entries = russh::keys::known_hosts::known_host_keys_path(&self.host, self.port, path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if entries.iter().any(|(_, k)| k.key_data() == key.key_data()) {
            return Ok(());
        }
        let host = self.host_pattern();
        if let Some((_, other)) = entries
            .iter()
            .find(|(_, k)| k.algorithm() == key.algorithm())
        {
            // russh's line numbers skip comment lines; find the line ourselves.
            let line = line_of(&text, other).map_or_else(String::new, |n| format!(":{n}"));
            return Err(format!(
                "host key mismatch for {host}: the server offered {seen}, {}{line} has another key; \
                 if the host key was changed on purpose, update that line or pass -fp {seen}",
                path.display()
            ));
        }
        Err(format!(
            "host key for {host} is not in {}; pass -fp {seen} or add it",
            path.display()
        ))
    }
}

/// The 1-based number of the line that holds `key`.
fn line_of(text: &str, key: &PublicKey) -> Option<usize> {
    let encoded = key.to_openssh().ok()?;
    let b64 = encoded.split_whitespace().nth(1)?;
    text.lines()
        .position(|l| l.split_whitespace().any(|f| f == b64))
        .map(|i| i + 1)
}

/// Whether an `@revoked` line names this key. A revoked key is refused for every host,
/// whatever the line's host pattern: that is the safe reading.
fn revoked(text: &str, key: &PublicKey) -> bool {
    text.lines().any(|line| {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("@revoked") {
            return false;
        }
        let (_hosts, _alg, b64) = (fields.next(), fields.next(), fields.next());
        b64.and_then(|b| russh::keys::parse_public_key_base64(b).ok())
            .is_some_and(|k| k.key_data() == key.key_data())
    })
}

/// `$HOME/.ssh/known_hosts`.
pub fn default_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".ssh").join("known_hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@x";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ b@y";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn kh(content: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("known_hosts");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    #[test]
    fn fingerprint_prefix_is_case_insensitive_only_in_the_prefix() {
        assert_eq!(normalize_fingerprint("sha256:AbC"), "SHA256:AbC");
        assert_eq!(normalize_fingerprint("Sha256:AbC"), "SHA256:AbC");
        assert_eq!(normalize_fingerprint("SHA256:abc"), "SHA256:abc");
        assert_eq!(normalize_fingerprint("MD5:aa"), "MD5:aa");
        assert_eq!(normalize_fingerprint("é"), "é");
    }

    #[test]
    fn fingerprint_list_accepts_any_listed_key() {
        let a = key(KEY_A);
        let fp = fingerprint(&a);
        assert!(fp.starts_with("SHA256:"));
        let lower = format!("sha256:{}", &fp[7..]);
        let c = Checker::new(
            &HostCheck::Fingerprints(vec!["SHA256:other".into(), lower]),
            "h",
            22,
        );
        assert_eq!(c.check(&a), Ok(()));
        let err = c.check(&key(KEY_B)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "host key fingerprint mismatch: {}",
                fingerprint(&key(KEY_B))
            )
        );
    }

    #[test]
    fn known_hosts_uses_bracketed_port_form() {
        let (_d, p) = kh(&format!("[127.0.0.1]:2022 {}\n", &KEY_A[..KEY_A.len() - 4]));
        let c = Checker::new(&HostCheck::KnownHosts(p.clone()), "127.0.0.1", 2022);
        assert_eq!(c.check(&key(KEY_A)), Ok(()));
        // the same entry does not vouch for another port
        let c = Checker::new(&HostCheck::KnownHosts(p.clone()), "127.0.0.1", 2023);
        let err = c.check(&key(KEY_A)).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "host key for [127.0.0.1]:2023 is not in {}; pass -fp SHA256:",
                p.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn known_hosts_mismatch_names_the_line_and_fingerprint() {
        let (_d, p) = kh(&format!("# comment\nlocalhost {KEY_B}\n"));
        let c = Checker::new(&HostCheck::KnownHosts(p.clone()), "localhost", 22);
        let err = c.check(&key(KEY_A)).unwrap_err();
        assert!(err.contains("host key mismatch for localhost"), "{err}");
        assert!(err.contains(&fingerprint(&key(KEY_A))), "{err}");
        assert!(err.contains(&format!("{}:2", p.display())), "{err}");
    }

    #[test]
    fn known_hosts_rotation_with_two_keys_of_one_type() {
        let (_d, p) = kh(&format!("localhost {KEY_B}\nlocalhost {KEY_A}\n"));
        let c = Checker::new(&HostCheck::KnownHosts(p), "localhost", 22);
        assert_eq!(c.check(&key(KEY_A)), Ok(()));
    }

    #[test]
    fn known_hosts_revoked_key_is_refused() {
        let (_d, p) = kh(&format!("localhost {KEY_A}\n@revoked * {KEY_A}\n"));
        let c = Checker::new(&HostCheck::KnownHosts(p), "localhost", 22);
        assert!(c.check(&key(KEY_A)).unwrap_err().contains("@revoked"));
    }

    #[test]
    fn missing_known_hosts_fails_preflight_like_go() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope");
        let c = Checker::new(&HostCheck::KnownHosts(p.clone()), "h", 22);
        assert_eq!(
            c.preflight().unwrap_err().to_string(),
            format!("open {}: no such file or directory", p.display())
        );
    }
}
