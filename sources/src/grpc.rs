//! `grpc://<host:port>`: a server implementing Dewy's `dewy.RegistryService` (spec dewy.md
//! 1.6, 5). The server decides the version; we send our platform and `?artifact=`, and fetch
//! the bytes from wherever its `artifact_url` points (a GitHub asset, an S3 or GCS object).
//!
//! Our fix: TLS. Dewy never set transport credentials, so only `?no-tls=true` worked there.
//! Here TLS (rustls, the system's roots) is the default and `no-tls=true` dials plain HTTP/2.

pub mod proto;

use std::sync::Arc;
use std::time::Duration;

use common::dewy::artifact::{ArtifactKind, Platform};
use common::dewy::artifact_url::ArtifactUrl;
use common::dewy::calver::CalVerFormat;
use common::dewy::report::{self, Command};
use common::dewy::url::RegistryUrl;
use common::dewy::version;
use common::timefmt::OffsetDateTime;
use tokio::sync::OnceCell;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use self::proto::{CurrentRequest, RegistryServiceClient, ReportRequest};
use crate::bucket::Env;
use crate::ghr::api::GitHub;
use crate::http::HttpClient;
use crate::{ByteStream, Layer, LayerKind, Release, SourceError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A followed gRPC registry.
pub struct GrpcSource {
    target: String,
    no_tls: bool,
    extra_root: Option<Certificate>,
    artifact: Option<String>,
    calver: Option<CalVerFormat>,
    os: String,
    arch: String,
    channel: OnceCell<Channel>,
    /// The last answer's (tag, id): `Report` sends the id of the answer that was deployed.
    last: std::sync::Mutex<Option<(String, String)>>,
    /// For `ghr://` artifact URLs; the error text when no GitHub credentials are configured
    /// (a server that only answers `s3://` URLs needs none).
    github: Result<Arc<GitHub>, String>,
    /// For `s3://` and `gs://` artifact URLs: a client of that store is made per fetch.
    http: HttpClient,
    env: Env,
}

impl GrpcSource {
    /// The source for a parsed `grpc://` URL. Credentials for the artifact's store come from
    /// `env` (see [`crate::bucket::process_env`]), as for a `ghr://`, `s3://` or `gs://`
    /// registry.
    pub fn from_url(
        url: &RegistryUrl,
        http: HttpClient,
        env: Env,
    ) -> Result<GrpcSource, SourceError> {
        let RegistryUrl::Grpc { target, opts } = url else {
            return Err(SourceError::Permanent(format!(
                "not a grpc:// registry: {}",
                url.scheme()
            )));
        };
        let calver = opts
            .calver
            .as_deref()
            .map(CalVerFormat::parse)
            .transpose()
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        let platform = Platform::current();
        Ok(GrpcSource {
            target: target.clone(),
            no_tls: opts.no_tls,
            extra_root: None,
            artifact: opts.artifact.clone(),
            calver,
            os: platform.os.to_string(),
            arch: platform.arch.to_string(),
            channel: OnceCell::new(),
            last: std::sync::Mutex::new(None),
            github: GitHub::from_env(http.clone(), &*env)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            http,
            env,
        })
    }

    /// Reports another platform to the server (Go names, e.g. `linux`, `arm64`).
    pub fn with_platform(mut self, os: &str, arch: &str) -> GrpcSource {
        self.os = os.to_string();
        self.arch = arch.to_string();
        self
    }

    /// Trusts this CA (PEM) besides the system's roots, for a registry with a private CA.
    pub fn with_extra_root(mut self, pem: &[u8]) -> GrpcSource {
        self.extra_root = Some(Certificate::from_pem(pem));
        self
    }

    /// The release the server says should run.
    pub async fn current(&self) -> Result<Release, SourceError> {
        let request = CurrentRequest {
            arch: self.arch.clone(),
            os: self.os.clone(),
            arifact_name: self.artifact.clone(),
        };
        let answer = self
            .client()
            .await?
            .current(request)
            .await
            .map_err(|s| status_error("Current", &s))?
            .into_inner();
        let artifact = ArtifactUrl::parse(&answer.artifact_url)
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        let name = artifact.file_name().to_string();
        let created_at = answer
            .created_at
            .and_then(|t| {
                OffsetDateTime::from_unix_timestamp(t.seconds)
                    .ok()
                    .map(|s| (s, t.nanos))
            })
            .map(|(s, nanos)| {
                s + time::Duration::nanoseconds(i64::from(nanos.clamp(0, 999_999_999)))
            });
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((answer.tag.clone(), answer.id.clone()));
        Ok(Release {
            slot: version::slot_of(&answer.tag, self.calver.as_ref()),
            tag: answer.tag,
            created_at,
            layers: vec![Layer {
                kind: LayerKind::Artifact(ArtifactKind::of(&name)),
                name,
                digest: None,
                size: None,
                locator: answer.artifact_url,
                checksum_url: None,
            }],
        })
    }

    /// The bytes of `layer` from `offset` on, from the scheme of its artifact URL.
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        let url = ArtifactUrl::parse(&layer.locator)
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        match url {
            ArtifactUrl::Ghr {
                owner,
                repo,
                tag,
                name,
            } => {
                let gh = self
                    .github
                    .as_ref()
                    .map_err(|e| SourceError::Permanent(format!("{}: {e}", layer.locator)))?;
                crate::ghr::fetch_artifact(gh, &owner, &repo, &tag, &name, offset).await
            }
            // The s3/gs sources fetch any artifact URL of their scheme; a registry URL naming
            // the artifact's bucket is all they need to exist.
            ArtifactUrl::S3 { region, bucket, .. } => {
                let store = self.store_url(&format!("s3://{region}/{bucket}"))?;
                crate::s3::S3Source::new(&store, &self.http, self.env.clone())?
                    .fetch(layer, offset)
                    .await
            }
            ArtifactUrl::Gs { bucket, .. } => {
                let store = self.store_url(&format!("gs://{bucket}"))?;
                crate::gs::GsSource::new(&store, &self.http, self.env.clone())?
                    .fetch(layer, offset)
                    .await
            }
            // Container mode pulls images with docker/podman; there are no bytes to stream.
            ArtifactUrl::Img { reference } => Err(SourceError::Permanent(format!(
                "artifact {reference} is an image: img:// artifacts are pulled by the container runtime, not fetched"
            ))),
        }
    }

    /// `Report` after a successful deploy of `tag`: the id is that of the answer that named
    /// `tag` (a fresh one if we have not seen it, e.g. after a restart); `err` is unset.
    pub async fn report(&self, tag: &str, command: Command) -> Result<(), SourceError> {
        let id = match &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((t, id)) if t == tag => id.clone(),
            _ => report::response_id(OffsetDateTime::now_utc()),
        };
        let request = ReportRequest {
            id,
            tag: tag.to_string(),
            command: command.as_str().to_string(),
            err: None,
        };
        self.client()
            .await?
            .report(request)
            .await
            .map(drop)
            .map_err(|s| status_error("Report", &s))
    }

    fn store_url(&self, url: &str) -> Result<RegistryUrl, SourceError> {
        RegistryUrl::parse(url)
            .map_err(|e| SourceError::Permanent(format!("artifact store {url}: {e}")))
    }

    async fn client(&self) -> Result<RegistryServiceClient, SourceError> {
        let channel = self
            .channel
            .get_or_try_init(|| async { self.endpoint().map(|e| e.connect_lazy()) })
            .await?;
        Ok(RegistryServiceClient::new(channel.clone()))
    }

    fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let bad = |e: &dyn std::fmt::Display| {
            SourceError::Permanent(format!("grpc://{}: {e}", self.target))
        };
        // gRPC's dialer defaults to port 443 whatever the transport.
        let has_port = self.target.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty() && !port.contains(']') && !host.is_empty()
        });
        let authority = if has_port {
            self.target.clone()
        } else {
            format!("{}:443", self.target)
        };
        let scheme = if self.no_tls { "http" } else { "https" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| bad(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        if !self.no_tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &self.extra_root {
                tls = tls.ca_certificate(ca.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        Ok(endpoint)
    }
}

/// A gRPC status as a [`SourceError`]: what a later retry can fix is transient.
fn status_error(method: &str, status: &tonic::Status) -> SourceError {
    use tonic::Code;
    let message = format!(
        "dewy.RegistryService/{method}: {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled => SourceError::Transient {
            message,
            retry_after: None,
        },
        _ => SourceError::Permanent(message),
    }
}
