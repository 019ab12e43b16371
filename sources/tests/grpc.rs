//! `grpc://` against a `dewy.RegistryService` server written here (tonic's server half over
//! hyper HTTP/2, the same hand-written messages), and a GitHub stand-in for the artifact bytes.

mod github_standin;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dewy::report::Command;
use common::dewy::url::RegistryUrl;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sources::grpc::GrpcSource;
use sources::grpc::proto::{
    CURRENT_PATH, CurrentRequest, CurrentResponse, REPORT_PATH, ReportRequest, Timestamp,
};
use sources::http::{HttpClient, HttpConfig};
use sources::{LayerKind, SourceError};
use tokio::io::AsyncReadExt;
use tonic::server::{Grpc, UnaryService};
use tonic_prost::ProstCodec;

#[derive(Default)]
struct Registry {
    answer: Option<Result<CurrentResponse, tonic::Status>>,
    currents: Vec<CurrentRequest>,
    reports: Vec<ReportRequest>,
}

type Shared = Arc<Mutex<Registry>>;
type BoxFut<T> = Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send>>;

struct Current(Shared);
impl UnaryService<CurrentRequest> for Current {
    type Response = CurrentResponse;
    type Future = BoxFut<CurrentResponse>;
    fn call(&mut self, req: tonic::Request<CurrentRequest>) -> Self::Future {
        let mut reg = self.0.lock().unwrap();
        reg.currents.push(req.into_inner());
        let answer = reg
            .answer
            .clone()
            .unwrap_or_else(|| Err(tonic::Status::not_found("no release")));
        Box::pin(async move { answer.map(tonic::Response::new) })
    }
}

struct Report(Shared);
impl UnaryService<ReportRequest> for Report {
    type Response = ();
    type Future = BoxFut<()>;
    fn call(&mut self, req: tonic::Request<ReportRequest>) -> Self::Future {
        self.0.lock().unwrap().reports.push(req.into_inner());
        Box::pin(async { Ok(tonic::Response::new(())) })
    }
}

struct Server {
    addr: SocketAddr,
    reg: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start() -> Server {
        Server::start_with(None).await
    }

    /// With `tls`, connections are TLS (ALPN h2, as gRPC requires) before HTTP/2.
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reg = Shared::default();
        let shared = reg.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reg = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let reg = reg.clone();
                            async move {
                                let resp = match req.uri().path() {
                                    CURRENT_PATH => {
                                        Grpc::new(ProstCodec::default())
                                            .unary(Current(reg), req)
                                            .await
                                    }
                                    REPORT_PATH => {
                                        Grpc::new(ProstCodec::default())
                                            .unary(Report(reg), req)
                                            .await
                                    }
                                    _ => tonic::Status::unimplemented("no such method").into_http(),
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => http2.serve_connection(TokioIo::new(stream), svc).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => http2.serve_connection(TokioIo::new(tls), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Server { addr, reg, task }
    }

    fn answer(&self, a: Result<CurrentResponse, tonic::Status>) {
        self.reg.lock().unwrap().answer = Some(a);
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap()
    }
}

fn http() -> HttpClient {
    HttpClient::new(&HttpConfig::default()).unwrap()
}

fn source_with(target: &str, query: &str, env: &HashMap<String, String>) -> GrpcSource {
    let url = RegistryUrl::parse(&format!("grpc://{target}{query}")).unwrap();
    let env = env.clone();
    let lookup: sources::bucket::Env = std::sync::Arc::new(move |k: &str| env.get(k).cloned());
    GrpcSource::from_url(&url, http(), lookup)
        .unwrap()
        .with_platform("linux", "amd64")
}

fn source(server: &Server, query: &str) -> GrpcSource {
    source_with(&server.addr.to_string(), query, &HashMap::new())
}

fn answer(tag: &str, url: &str) -> CurrentResponse {
    CurrentResponse {
        id: "20260719T163215+0900".into(),
        tag: tag.into(),
        artifact_url: url.into(),
        created_at: Some(Timestamp {
            seconds: 1_784_446_335,
            nanos: 500,
        }),
    }
}

#[tokio::test]
async fn current_sends_platform_and_artifact_and_maps_the_answer() {
    let server = Server::start().await;
    server.answer(Ok(answer(
        "v1.2.3+blue",
        "ghr://acme/app/tag/v1.2.3+blue/app_linux_amd64.tar.gz",
    )));
    let r = source(&server, "?no-tls=true").current().await.unwrap();
    assert_eq!(r.tag, "v1.2.3+blue");
    assert_eq!(r.slot, "blue", "slot read client-side from the tag");
    assert_eq!(
        r.created_at,
        Some(time::OffsetDateTime::from_unix_timestamp_nanos(1_784_446_335_000_000_500).unwrap())
    );
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].name, "app_linux_amd64.tar.gz");
    assert_eq!(
        r.layers[0].locator,
        "ghr://acme/app/tag/v1.2.3+blue/app_linux_amd64.tar.gz"
    );
    assert!(matches!(r.layers[0].kind, LayerKind::Artifact(_)));

    source(&server, "?no-tls=true&artifact=app.zip")
        .current()
        .await
        .unwrap();
    let reg = server.reg();
    assert_eq!(
        reg.currents,
        vec![
            CurrentRequest {
                arch: "amd64".into(),
                os: "linux".into(),
                arifact_name: None,
            },
            CurrentRequest {
                arch: "amd64".into(),
                os: "linux".into(),
                arifact_name: Some("app.zip".into()),
            },
        ]
    );
}

#[tokio::test]
async fn calver_slot_and_no_created_at() {
    let server = Server::start().await;
    let mut a = answer(
        "2026.11.3+green",
        "gs://bucket/2026.11.3/app_linux_amd64.tar.gz",
    );
    a.created_at = None;
    server.answer(Ok(a));
    let r = source(&server, "?no-tls=true&calver=YYYY.0M.MICRO")
        .current()
        .await
        .unwrap();
    assert_eq!((r.slot.as_str(), r.created_at), ("green", None));
}

#[tokio::test]
async fn report_sends_the_answer_id_and_no_error() {
    let server = Server::start().await;
    server.answer(Ok(answer(
        "v1.2.3",
        "ghr://acme/app/tag/v1.2.3/app_linux_amd64.tar.gz",
    )));
    let src = source(&server, "?no-tls=true");
    src.current().await.unwrap();
    src.report("v1.2.3", Command::Server).await.unwrap();
    // A tag we did not get from this process (agent restarted): a fresh id.
    src.report("v1.0.0", Command::Assets).await.unwrap();
    let reg = server.reg();
    assert_eq!(
        reg.reports[0],
        ReportRequest {
            id: "20260719T163215+0900".into(),
            tag: "v1.2.3".into(),
            command: "server".into(),
            err: None,
        }
    );
    assert_eq!(reg.reports[1].command, "assets");
    assert_ne!(reg.reports[1].id, "20260719T163215+0900");
    assert_eq!(
        reg.reports[1].id.len(),
        "20260719T163215Z".len(),
        "{}",
        reg.reports[1].id
    );
}

#[tokio::test]
async fn ghr_artifact_bytes_come_from_github() {
    let gh = github_standin::GitHub::start().await;
    gh.state().add_release(
        "v1.2.3",
        time::Duration::hours(1),
        &[("app_linux_amd64.tar.gz", b"the artifact")],
    );
    let server = Server::start().await;
    server.answer(Ok(answer(
        "v1.2.3",
        "ghr://acme/app/tag/v1.2.3/app_linux_amd64.tar.gz",
    )));
    let src = source_with(&server.addr.to_string(), "?no-tls=true", &gh.env());
    let r = src.current().await.unwrap();
    let mut got = Vec::new();
    src.fetch(&r.layers[0], 4)
        .await
        .unwrap()
        .read_to_end(&mut got)
        .await
        .unwrap();
    assert_eq!(got, b"artifact");
    assert_eq!(gh.state().storage_auth, vec![None]);

    server.answer(Ok(answer(
        "v1.2.3",
        "ghr://acme/app/tag/v1.2.3/app_darwin_arm64.tar.gz",
    )));
    let r = src.current().await.unwrap();
    assert!(matches!(
        src.fetch(&r.layers[0], 0).await,
        Err(SourceError::ArtifactNotFound { .. })
    ));

    // Without GitHub credentials a ghr:// artifact cannot be fetched, and says why.
    let bare = source(&server, "?no-tls=true");
    let r = bare.current().await.unwrap();
    match bare.fetch(&r.layers[0], 0).await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("no GitHub token found"), "{m}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("fetched without credentials"),
    }
}

#[tokio::test]
async fn unsupported_artifact_urls_are_refused() {
    let server = Server::start().await;
    server.answer(Ok(answer("v1.2.3", "https://example.com/app.tar.gz")));
    match source(&server, "?no-tls=true").current().await {
        Err(SourceError::Permanent(m)) => {
            assert_eq!(m, "unsupported scheme: https://example.com/app.tar.gz")
        }
        other => panic!("{other:?}"),
    }
    server.answer(Ok(answer("v1.2.3", "ghr://acme/app/v1.2.3/app.tar.gz")));
    match source(&server, "?no-tls=true").current().await {
        Err(SourceError::Permanent(m)) => assert!(m.starts_with("invalid artifact url: "), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn statuses_and_outages() {
    let server = Server::start().await;
    server.answer(Err(tonic::Status::unavailable("maintenance")));
    assert!(matches!(
        source(&server, "?no-tls=true").current().await,
        Err(SourceError::Transient { .. })
    ));
    server.answer(Err(tonic::Status::permission_denied("who are you")));
    match source(&server, "?no-tls=true").current().await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("who are you"), "{m}"),
        other => panic!("{other:?}"),
    }
    let addr = server.addr;
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    match source_with(&addr.to_string(), "?no-tls=true", &HashMap::new())
        .current()
        .await
    {
        Err(SourceError::Transient { message, .. }) => {
            assert!(message.contains("Unavailable"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tls_is_the_default() {
    // A plaintext server and no `no-tls`: the TLS handshake fails, as a transient error, and
    // nothing is sent in the clear.
    let server = Server::start().await;
    server.answer(Ok(answer("v1.2.3", "ghr://acme/app/tag/v1.2.3/a.tar.gz")));
    let r = tokio::time::timeout(Duration::from_secs(20), source(&server, "").current())
        .await
        .expect("bounded");
    assert!(matches!(r, Err(SourceError::Transient { .. })), "{r:?}");
    assert!(server.reg().currents.is_empty());
}

/// A test CA and a server certificate for 127.0.0.1 it signed, from the system's openssl:
/// (CA PEM, server cert PEM, server key PEM). (webpki refuses a CA certificate as the server's.)
fn test_pki() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/install-deps)")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ]
    .into_iter()
    .chain([
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])
    .collect::<Vec<_>>());
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=registry.test",
    ]
    .into_iter()
    .chain(["-keyout", "k.pem", "-out", "leaf.csr"])
    .collect::<Vec<_>>());
    run(&[
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
    ]
    .into_iter()
    .chain([
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "c.pem",
    ])
    .collect::<Vec<_>>());
    let read = |n: &str| std::fs::read(p(n)).unwrap();
    (read("ca.pem"), read("c.pem"), read("k.pem"))
}

fn acceptor(cert: &[u8], key: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn tls_registry_with_a_trusted_ca() {
    let (ca, cert, key) = test_pki();
    let server = Server::start_with(Some(acceptor(&cert, &key))).await;
    server.answer(Ok(answer(
        "v1.2.3",
        "ghr://acme/app/tag/v1.2.3/app_linux_amd64.tar.gz",
    )));
    // Not in the system's roots: refused.
    let untrusted = tokio::time::timeout(Duration::from_secs(20), source(&server, "").current())
        .await
        .expect("bounded");
    assert!(
        matches!(untrusted, Err(SourceError::Transient { .. })),
        "{untrusted:?}"
    );
    assert!(server.reg().currents.is_empty());
    // Trusted as an extra root: Current and Report go over TLS.
    let src = source(&server, "").with_extra_root(&ca);
    assert_eq!(src.current().await.unwrap().tag, "v1.2.3");
    src.report("v1.2.3", Command::Container).await.unwrap();
    assert_eq!(server.reg().currents.len(), 1);
    assert_eq!(server.reg().reports[0].command, "container");
}
