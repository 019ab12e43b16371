//! Public-key authentication: one unencrypted key file, or every identity of ssh-agent.

use std::sync::Arc;

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};

use crate::Identity;

type Agent = AgentClient<Box<dyn russh::keys::agent::client::AgentStream + Send + Unpin>>;

/// An identity ready to sign: the key is read (or the agent asked) before we dial.
pub(crate) enum Loaded {
    Key(Arc<PrivateKey>),
    Agent(Agent, Vec<AgentIdentity>),
}

impl Loaded {
    pub(crate) async fn load(identity: &Identity) -> anyhow::Result<Loaded> {
        match identity {
            Identity::KeyFile(path) => {
                let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                    anyhow::anyhow!(
                        "failed to read/parse key file {:?}: {}",
                        path.display().to_string(),
                        key_error(&e)
                    )
                })?;
                Ok(Loaded::Key(Arc::new(key)))
            }
            Identity::Agent => {
                let agent_err = |e: String| {
                    anyhow::anyhow!(
                        "cannot connect to ssh-agent, check if SSH_AUTH_SOCK is set: {e}"
                    )
                };
                // Go's net.Dial text for an empty address, which users may search for.
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| agent_err("dial unix: missing address".into()))?;
                let mut agent = AgentClient::connect_uds(&sock)
                    .await
                    .map_err(|e| agent_err(format!("dial unix {}: {e}", sock.to_string_lossy())))?
                    .dynamic();
                let ids = agent
                    .request_identities()
                    .await
                    .map_err(|e| anyhow::anyhow!("ssh-agent: cannot list identities: {e}"))?;
                Ok(Loaded::Agent(agent, ids))
            }
        }
    }

    /// Tries the identities in order until one is accepted.
    pub(crate) async fn authenticate(
        self,
        handle: &mut russh::client::Handle<crate::Handler>,
        user: &str,
    ) -> anyhow::Result<()> {
        let mut rsa_hash: Option<Option<HashAlg>> = None;
        let mut resolve_rsa =
            async |handle: &russh::client::Handle<crate::Handler>| -> Option<HashAlg> {
                if let Some(h) = rsa_hash {
                    return h;
                }
                // SHA-1 `ssh-rsa` is a last resort (spec A12): servers that do not announce
                // server-sig-algs get rsa-sha2-256, which every current server accepts.
                let h = match handle.best_supported_rsa_hash().await {
                    Ok(Some(h)) => h,
                    _ => Some(HashAlg::Sha256),
                };
                rsa_hash = Some(h);
                h
            };
        let failed = || {
            anyhow::anyhow!(
                "ssh: handshake failed: ssh: unable to authenticate, attempted methods [publickey], no supported methods remain"
            )
        };
        match self {
            Loaded::Key(key) => {
                let hash = if key.algorithm().is_rsa() {
                    resolve_rsa(handle).await
                } else {
                    None
                };
                let res = handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                    .await
                    .map_err(|e| anyhow::anyhow!("ssh: handshake failed: {e}"))?;
                if res.success() { Ok(()) } else { Err(failed()) }
            }
            Loaded::Agent(mut agent, ids) => {
                if ids.is_empty() {
                    anyhow::bail!(
                        "ssh: handshake failed: ssh-agent has no identities (add one with ssh-add)"
                    );
                }
                for id in ids {
                    let key = id.public_key().into_owned();
                    let hash = if key.algorithm().is_rsa() {
                        resolve_rsa(handle).await
                    } else {
                        None
                    };
                    let res = handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                        .map_err(|e| anyhow::anyhow!("ssh: handshake failed: ssh-agent: {e}"))?;
                    if res.success() {
                        return Ok(());
                    }
                }
                Err(failed())
            }
        }
    }
}

/// russh's key errors are terse ("The key is encrypted"); say what to do about the common one.
fn key_error(e: &russh::keys::Error) -> String {
    match e {
        russh::keys::Error::KeyIsEncrypted => {
            "the key is encrypted; use an unencrypted key or load it into ssh-agent".into()
        }
        russh::keys::Error::IO(io) => common::goerr::errno_text(io),
        other => other.to_string(),
    }
}
