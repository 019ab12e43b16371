//! How we prove who we are to GitHub (spec dewy.md 1.2): a GitHub App installation when
//! `GITHUB_APP_ID` is set, else a token from `GH_TOKEN` / `GITHUB_TOKEN`. Anonymous access is
//! refused, as in Dewy: the anonymous rate limit (60 requests/h per IP) would starve a fleet.
//!
//! An App signs a short-lived JWT (RS256) with its private key and trades it for an
//! installation token (valid 1 h) at `POST /app/installations/{id}/access_tokens`. We keep the
//! token and trade again when it has less than 5 minutes left, so no request is sent with a
//! token about to expire. The JWT is built by hand with `ring` (already in the tree through
//! russh) rather than a JWT crate: it is three base64url strings and one signature.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use time::{Duration, OffsetDateTime};

use crate::SourceError;

/// Dewy's text when no credential is configured.
pub const NO_TOKEN: &str =
    "no GitHub token found in GITHUB_TOKEN or GH_TOKEN environment variables";

/// How long before expiry an installation token is replaced.
pub const REFRESH_MARGIN: Duration = Duration::minutes(5);

/// Where credentials come from, read once at start-up.
pub enum Credentials {
    /// A personal access token or `GITHUB_TOKEN` of Actions.
    Token(String),
    /// A GitHub App installation.
    App(Box<AppKey>),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::App(k) => write!(
                f,
                "App {{ app_id: {}, installation_id: {} }}",
                k.app_id, k.installation_id
            ),
        }
    }
}

/// A GitHub App's identity and signing key.
pub struct AppKey {
    /// `GITHUB_APP_ID`.
    pub app_id: String,
    /// `GITHUB_APP_INSTALLATION_ID`.
    pub installation_id: String,
    key: RsaKeyPair,
}

impl Credentials {
    /// Reads the credentials from `env` (a lookup, so tests need not touch the process
    /// environment). Dewy's order: the App when `GITHUB_APP_ID` is set, else `GH_TOKEN`, else
    /// `GITHUB_TOKEN`. Empty values count as unset.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, SourceError> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(app_id) = get("GITHUB_APP_ID") {
            let installation_id = get("GITHUB_APP_INSTALLATION_ID").ok_or_else(|| {
                SourceError::Permanent(
                    "GITHUB_APP_INSTALLATION_ID is required when GITHUB_APP_ID is set".into(),
                )
            })?;
            if !installation_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SourceError::Permanent(format!(
                    "GITHUB_APP_INSTALLATION_ID must be a number, got {installation_id:?}"
                )));
            }
            let pem = match (
                get("GITHUB_APP_PRIVATE_KEY"),
                get("GITHUB_APP_PRIVATE_KEY_PATH"),
            ) {
                (Some(pem), _) => pem,
                (None, Some(path)) => std::fs::read_to_string(&path).map_err(|e| {
                    SourceError::Permanent(format!("read GITHUB_APP_PRIVATE_KEY_PATH {path}: {e}"))
                })?,
                (None, None) => {
                    return Err(SourceError::Permanent(
                        "GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_PATH is required when GITHUB_APP_ID is set"
                            .into(),
                    ));
                }
            };
            let key = parse_rsa_pem(&pem)
                .map_err(|e| SourceError::Permanent(format!("GitHub App private key: {e}")))?;
            return Ok(Credentials::App(Box::new(AppKey {
                app_id,
                installation_id,
                key,
            })));
        }
        get("GH_TOKEN")
            .or_else(|| get("GITHUB_TOKEN"))
            .map(Credentials::Token)
            .ok_or_else(|| SourceError::Permanent(NO_TOKEN.into()))
    }
}

impl AppKey {
    /// The JWT GitHub wants to authenticate as the App: `iss` = app id, issued 60 s in the past
    /// (GitHub's advice against clock drift), valid 10 minutes (GitHub's maximum).
    pub fn jwt(&self, now: OffsetDateTime) -> Result<String, SourceError> {
        let header = BASE64URL_NOPAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iat": (now - Duration::seconds(60)).unix_timestamp(),
            "exp": (now + Duration::minutes(10)).unix_timestamp(),
            "iss": self.app_id,
        });
        let claims = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| SourceError::Permanent("GitHub App JWT: RSA signing failed".into()))?;
        Ok(format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&sig)))
    }
}

/// An RSA private key from PEM: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), the two
/// forms GitHub hands out and Dewy accepts.
pub fn parse_rsa_pem(pem: &str) -> Result<RsaKeyPair, String> {
    let (label, der) = pem_block(pem)?;
    match label.as_str() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der).map_err(|e| format!("PKCS#1 key: {e}")),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("PKCS#8 key: {e}")),
        other => Err(format!(
            "expected an RSA private key in PEM (RSA PRIVATE KEY or PRIVATE KEY), found {other:?}"
        )),
    }
}

/// The first PEM block: its label and decoded body.
fn pem_block(pem: &str) -> Result<(String, Vec<u8>), String> {
    // Keys pasted into environment variables often arrive with literal `\n`.
    let pem = pem.replace("\\n", "\n");
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("no PEM block (-----BEGIN ...-----) found")?
        .to_string();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        if line == end {
            return BASE64
                .decode(body.as_bytes())
                .map(|der| (label, der))
                .map_err(|e| format!("bad base64 in PEM: {e}"));
        }
        if line.contains(':') {
            return Err("encrypted PEM keys are not supported".into());
        }
        body.push_str(line);
    }
    Err(format!("PEM block {label} has no END line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn token_order_and_missing_token_text() {
        let c = Credentials::from_env(&env(&[("GH_TOKEN", "a"), ("GITHUB_TOKEN", "b")])).unwrap();
        assert!(matches!(c, Credentials::Token(t) if t == "a"));
        let c = Credentials::from_env(&env(&[("GH_TOKEN", ""), ("GITHUB_TOKEN", "b")])).unwrap();
        assert!(matches!(c, Credentials::Token(t) if t == "b"));
        let e = Credentials::from_env(&env(&[])).unwrap_err();
        assert_eq!(e.to_string(), NO_TOKEN);
    }

    #[test]
    fn app_needs_installation_and_key() {
        let e =
            Credentials::from_env(&env(&[("GITHUB_APP_ID", "1"), ("GH_TOKEN", "a")])).unwrap_err();
        assert!(e.to_string().contains("GITHUB_APP_INSTALLATION_ID"), "{e}");
        let e = Credentials::from_env(&env(&[
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_INSTALLATION_ID", "2"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("GITHUB_APP_PRIVATE_KEY"), "{e}");
        let e = Credentials::from_env(&env(&[
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_INSTALLATION_ID", "2"),
            (
                "GITHUB_APP_PRIVATE_KEY",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            ),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("expected an RSA private key"), "{e}");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = Credentials::Token("ghp_secret".into());
        assert!(!format!("{c:?}").contains("secret"));
    }
}
