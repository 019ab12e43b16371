//! The host key `<dir>/host_key` (spec 1.4).
//!
//! An existing key is read in any unencrypted format deploy-tools read (PEM `EC PRIVATE KEY`
//! SEC1, PEM `RSA PRIVATE KEY` PKCS#1, PKCS#8, OpenSSH), so a fleet's pinned fingerprint keeps
//! working after the switch. A missing key is generated as Ed25519 in OpenSSH format, mode 0600
//! (the original generated ECDSA P-256; spec A12).

use std::path::Path;

use anyhow::{Context as _, bail};
use russh::keys::ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};

/// File name inside `-dir`.
pub const FILE_NAME: &str = "host_key";

/// Loads `<dir>/host_key`, or creates it when absent.
pub fn load_or_create(dir: &Path) -> anyhow::Result<PrivateKey> {
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => decode(&text).with_context(|| format!("reading host key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .context("generating an ed25519 host key")?;
            // write_openssh_file creates the file with mode 0600.
            key.write_openssh_file(&path, LineEnding::LF)
                .with_context(|| format!("writing host key {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new ed25519 host key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading host key {}", path.display())),
    }
}

/// Decodes an unencrypted private key in any supported format.
pub fn decode(text: &str) -> anyhow::Result<PrivateKey> {
    if text.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED") {
        bail!("encrypted host keys are not supported");
    }
    let key = russh::keys::decode_secret_key(text, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    if key.is_encrypted() {
        bail!("encrypted host keys are not supported");
    }
    Ok(key)
}

/// `SHA256:<base64>`, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// Makes a key with ssh-keygen and returns (private key text, `ssh-keygen -lf` fingerprint).
    fn keygen(dir: &Path, args: &[&str]) -> (String, String) {
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_file(&path);
        let status = Command::new("ssh-keygen")
            .args(args)
            .args(["-q", "-N", "", "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .unwrap();
        let fp = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        (std::fs::read_to_string(&path).unwrap(), fp)
    }

    #[test]
    fn reads_every_format_the_original_read() {
        let dir = tempfile::tempdir().unwrap();
        for (args, header) in [
            (
                &["-t", "ecdsa", "-b", "256", "-m", "PEM"][..],
                "-----BEGIN EC PRIVATE KEY-----",
            ),
            (
                &["-t", "rsa", "-b", "2048", "-m", "PEM"][..],
                "-----BEGIN RSA PRIVATE KEY-----",
            ),
            (
                &["-t", "ed25519"][..],
                "-----BEGIN OPENSSH PRIVATE KEY-----",
            ),
            (
                &["-t", "ecdsa", "-b", "256"][..],
                "-----BEGIN OPENSSH PRIVATE KEY-----",
            ),
            (
                &["-t", "ecdsa", "-b", "256", "-m", "PKCS8"][..],
                "-----BEGIN PRIVATE KEY-----",
            ),
        ] {
            let (text, want) = keygen(dir.path(), args);
            assert!(text.starts_with(header), "{args:?}: {text}");
            let key = load_or_create(dir.path()).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
            assert_eq!(fingerprint(&key), want, "{args:?}");
        }
    }

    #[test]
    fn generates_ed25519_0600_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let path = dir.path().join(FILE_NAME);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(&fingerprint(&key)));
        assert_eq!(
            fingerprint(&load_or_create(dir.path()).unwrap()),
            fingerprint(&key)
        );
    }

    #[test]
    fn refuses_garbage_and_encrypted_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "not a key\n").unwrap();
        assert!(load_or_create(dir.path()).is_err());
        let path = dir.path().join(FILE_NAME);
        std::fs::remove_file(&path).unwrap();
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(load_or_create(dir.path()).is_err());
    }
}
