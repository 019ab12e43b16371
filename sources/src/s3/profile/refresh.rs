//! Credentials that expire (a `credential_process`, an assumed role), kept and fetched again
//! before they do: every S3 request asks for a credential, so only the first one after the
//! refresh window waits.

use std::sync::Arc;
use std::time::Duration;

use common::timefmt::OffsetDateTime;
use object_store::aws::AwsCredential;
use object_store::client::CredentialProvider;

use super::{process, sts};

/// How long before `Expiration` credentials are replaced: a request signed now must still be
/// valid when the server reads it, and a slow download keeps its credential for a while.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// A credential and when it stops working (`None`: never). AwsCredential's Debug hides the
/// secret.
#[derive(Debug)]
pub struct Expiring {
    pub credential: AwsCredential,
    pub expires: Option<OffsetDateTime>,
}

#[derive(Debug)]
pub enum Kind {
    Process(process::Process),
    AssumeRole(sts::AssumeRole),
}

impl Kind {
    async fn fetch(&self) -> Result<Expiring, String> {
        match self {
            Kind::Process(p) => p.run().await,
            Kind::AssumeRole(r) => r.assume().await,
        }
    }
}

#[derive(Debug)]
pub struct Refreshing {
    kind: Kind,
    held: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<OffsetDateTime>)>>,
}

impl Refreshing {
    pub fn new(kind: Kind) -> Refreshing {
        Refreshing {
            kind,
            held: tokio::sync::Mutex::new(None),
        }
    }
}

fn fresh(expires: Option<OffsetDateTime>) -> bool {
    expires.is_none_or(|t| common::timefmt::now() + REFRESH_BEFORE < t)
}

#[async_trait::async_trait]
impl CredentialProvider for Refreshing {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        // One fetch at a time: concurrent requests wait for it instead of each running the
        // process or calling STS.
        let mut held = self.held.lock().await;
        if let Some((c, exp)) = held.as_ref()
            && fresh(*exp)
        {
            return Ok(c.clone());
        }
        let got = self
            .kind
            .fetch()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            })?;
        let c = Arc::new(got.credential);
        *held = Some((c.clone(), got.expires));
        Ok(c)
    }
}

/// Keys go into HTTP headers (object_store panics on a value that is not one): printable
/// ASCII only, and bounded.
pub fn check_key(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 8192 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{what} is empty, too long or not printable ASCII"));
    }
    Ok(())
}
