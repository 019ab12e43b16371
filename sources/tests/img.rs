//! `img://` against a real OCI registry: Debian's `docker-registry` (distribution 2.8) on
//! loopback, images built by `umoci` from `busybox-static` and pushed by `skopeo` (peers.md
//! section 2). The private-registry test runs distribution's real token auth: the registry
//! verifies the JWTs our little realm server below signs with a throwaway certificate.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dewy::url::RegistryUrl;
use common::digest::Digest;
use sources::http::{HttpClient, HttpConfig};
use sources::img::{Credentials, ImgSource, Platform};
use sources::{LayerKind, Release, SourceError};
use tokio::io::AsyncReadExt;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The peers are installed by scripts/install-deps; a missing one is a failure, not a skip.
fn require_tools() {
    let ok = ["docker-registry", "skopeo", "umoci", "openssl"]
        .iter()
        .all(|t| {
            Command::new("which")
                .arg(t)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        && Path::new("/bin/busybox").exists();
    assert!(
        ok,
        "docker-registry, skopeo, umoci, openssl and busybox-static are needed: run scripts/install-deps"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `docker-registry` on a free loopback port, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(auth_yaml: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-not-secret\n{auth_yaml}",
            data.display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn source(&self, repo: &str, query: &str) -> ImgSource {
        source(&format!("img://{}/{repo}{query}", self.host()), &|_| None)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn source(url: &str, env: &dyn Fn(&str) -> Option<String>) -> ImgSource {
    let url = RegistryUrl::parse(url).unwrap();
    ImgSource::with_env(&url, HttpClient::new(&HttpConfig::default()).unwrap(), env).unwrap()
}

/// An OCI layout with one image (`busybox` + `/hello.txt` = `text`) for `arch`, tagged `v1`.
fn build_image(dir: &Path, arch: &str, text: &str) -> PathBuf {
    let layout = dir.join(format!("oci-{arch}-{}", text.len()));
    let bundle = dir.join(format!("bundle-{arch}-{}", text.len()));
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::fs::write(rootfs.join("hello.txt"), text).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--config.cmd",
        "/bin/busybox",
    ]));
    layout
}

fn push(layout: &Path, reg: &Registry, repo: &str, tag: &str, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", reg.host()));
    run(&mut cmd);
}

/// (digest, size, layer digests) of a manifest, asked with curl (not with the code under test).
fn manifest_of(reg: &Registry, repo: &str, tag: &str) -> (String, usize, Vec<String>) {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (
        format!("sha256:{}", Digest::of(&out.stdout).to_hex()),
        out.stdout.len(),
        layers,
    )
}

fn layer_digests(r: &Release) -> Vec<String> {
    r.layers.iter().map(|l| l.locator.clone()).collect()
}

async fn read_all(src: &ImgSource, layer: &sources::Layer, offset: u64) -> Vec<u8> {
    let mut s = src.fetch(layer, offset).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn newest_semver_tag_layers_and_resumed_fetch() {
    require_tools();
    let reg = Registry::start("");
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path(), "amd64", "hello from layer\n");
    for tag in ["v1.0.0", "v1.2.0", "v1.10.0", "latest", "v2.0.0-rc.1"] {
        push(&layout, &reg, "demo/app", tag, None);
    }
    let (_, _, want_layers) = manifest_of(&reg, "demo/app", "v1.10.0");

    let src = reg.source("demo/app", "");
    let release = src.current().await.unwrap();
    assert_eq!(
        release.tag, "v1.10.0",
        "numeric, not lexicographic; rc skipped"
    );
    assert_eq!(release.slot, "");
    assert_eq!(layer_digests(&release), want_layers);
    assert!(!release.layers.is_empty());

    for layer in &release.layers {
        assert_eq!(layer.kind, LayerKind::ImageLayer);
        let bytes = read_all(&src, layer, 0).await;
        assert_eq!(Some(Digest::of(&bytes)), layer.digest, "{}", layer.name);
        assert_eq!(Some(bytes.len() as u64), layer.size);
        // Resume in the middle: the rest, byte for byte.
        let offset = bytes.len() as u64 / 2 + 1;
        let rest = read_all(&src, layer, offset).await;
        assert_eq!(rest, bytes[offset as usize..]);
    }

    let pre = reg.source("demo/app", "?pre-release=true");
    assert_eq!(pre.current().await.unwrap().tag, "v2.0.0-rc.1");

    // A blob that is not there: permanent, and says so.
    let mut missing = release.layers[0].clone();
    missing.locator = format!("sha256:{}", "0".repeat(64));
    match src.fetch(&missing, 0).await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("404"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a missing blob was served"),
    }
    // No version tag at all.
    push(&layout, &reg, "demo/untagged", "latest", None);
    assert!(matches!(
        reg.source("demo/untagged", "").current().await,
        Err(SourceError::NoVersion)
    ));
    // An unknown repository.
    let e = reg.source("demo/nothing", "").current().await.unwrap_err();
    assert!(
        matches!(&e, SourceError::Permanent(m) if m.contains("404")),
        "{e:?}"
    );
}

#[tokio::test]
async fn multi_arch_index_picks_this_host() {
    require_tools();
    let reg = Registry::start("");
    let work = tempfile::tempdir().unwrap();
    let amd = build_image(work.path(), "amd64", "amd64 payload\n");
    let arm = build_image(work.path(), "arm64", "arm64 payload, longer\n");
    push(&amd, &reg, "demo/multi", "amd64", None);
    push(&arm, &reg, "demo/multi", "arm64", None);
    let (amd_digest, amd_size, amd_layers) = manifest_of(&reg, "demo/multi", "amd64");
    let (arm_digest, arm_size, arm_layers) = manifest_of(&reg, "demo/multi", "arm64");
    assert_ne!(amd_layers, arm_layers);

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest,
             "size": arm_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest,
             "size": amd_size, "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let put = HttpClient::new(&HttpConfig::default())
        .unwrap()
        .client()
        .put(format!(
            "http://{}/v2/demo/multi/manifests/v3.0.0",
            reg.host()
        ))
        .header("content-type", OCI_INDEX)
        .body(serde_json::to_vec(&index).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());

    let host = Platform::host();
    let src = reg.source("demo/multi", "");
    let release = src.current().await.unwrap();
    assert_eq!(release.tag, "v3.0.0");
    let expected = match host.architecture.as_str() {
        "amd64" => &amd_layers,
        "arm64" => &arm_layers,
        other => panic!("test needs an amd64 or arm64 host, not {other}"),
    };
    assert_eq!(&layer_digests(&release), expected);
    for layer in &release.layers {
        let bytes = read_all(&src, layer, 0).await;
        assert_eq!(Some(Digest::of(&bytes)), layer.digest);
    }

    // Asked for the other architecture, the other manifest.
    let other = |arch: &str, variant: Option<&str>| Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.map(String::from),
    };
    let arm_release = reg
        .source("demo/multi", "")
        .with_platform(other("arm64", Some("v8")))
        .current()
        .await
        .unwrap();
    assert_eq!(layer_digests(&arm_release), arm_layers);
    let e = reg
        .source("demo/multi", "")
        .with_platform(other("s390x", None))
        .current()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SourceError::Permanent(m) if m.contains("no manifest for linux/s390x")),
        "{e:?}"
    );
}

#[tokio::test]
async fn new_tag_between_two_polls() {
    require_tools();
    let reg = Registry::start("");
    let work = tempfile::tempdir().unwrap();
    let one = build_image(work.path(), "amd64", "one\n");
    let two = build_image(work.path(), "amd64", "two two\n");
    push(&one, &reg, "demo/app", "v1.0.0", None);
    let src = reg.source("demo/app", "");
    let first = src.current().await.unwrap();
    assert_eq!(first.tag, "v1.0.0");
    // Unchanged: same answer (served from the HEAD-validated cache).
    assert_eq!(src.current().await.unwrap(), first);

    push(&two, &reg, "demo/app", "v1.1.0", None);
    let second = src.current().await.unwrap();
    assert_eq!(second.tag, "v1.1.0");
    assert_ne!(layer_digests(&second), layer_digests(&first));
    assert_eq!(
        layer_digests(&second),
        manifest_of(&reg, "demo/app", "v1.1.0").2
    );

    // The same tag moved to another image: the cached resolution is not reused.
    push(&one, &reg, "demo/app", "v1.1.0", None);
    let moved = src.current().await.unwrap();
    assert_eq!(moved.tag, "v1.1.0");
    assert_eq!(layer_digests(&moved), layer_digests(&first));
}

#[tokio::test]
async fn registry_down_is_transient() {
    let port = free_port(); // bound and released: nothing listens there
    let src = source(&format!("img://127.0.0.1:{port}/demo/app"), &|_| None);
    match src.current().await {
        Err(SourceError::Transient { message, .. }) => {
            assert!(message.contains(&port.to_string()), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A realm server: answers `GET /token` with a JWT distribution accepts, only for the right
/// Basic credentials, and records what it was asked.
struct Realm {
    port: u16,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const SERVICE: &str = "test-registry";
const ISSUER: &str = "test-issuer";
const USER: &str = "puller";
const PASS: &str = "s3cret";

fn b64url(b: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(b)
}

/// An RS256 JWT with the certificate in `x5c`, signed by `openssl dgst`.
fn sign_token(dir: &Path, repo: &str) -> String {
    let cert_pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let der_b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE,
        "iat": now - 5, "nbf": now - 5, "exp": now + 300, "jti": format!("{now}-{}", std::process::id()),
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).unwrap()),
        b64url(&serde_json::to_vec(&claims).unwrap())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("{signing_input}.{}", b64url(&out.stdout))
}

impl Realm {
    fn start(dir: PathBuf, repo: &'static str) -> Realm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let good = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{USER}:{PASS}").as_bytes())
        );
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                        && v.trim() == good
                    {
                        authorized = true;
                    }
                }
                log.lock().unwrap().push(request_line.trim().to_string());
                let (status, body) = if authorized {
                    let token = sign_token(&dir, repo);
                    (
                        "200 OK",
                        serde_json::json!({"token": token, "expires_in": 300}).to_string(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"details":"bad credentials"}"#.to_string(),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Realm { port, asked }
    }
}

#[tokio::test]
async fn private_registry_with_token_auth() {
    require_tools();
    const REPO: &str = "demo/private";
    let keys = tempfile::tempdir().unwrap();
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=test token signer"])
        .arg("-keyout")
        .arg(keys.path().join("key.pem"))
        .arg("-out")
        .arg(keys.path().join("cert.pem")));
    let realm = Realm::start(keys.path().to_path_buf(), REPO);
    let reg = Registry::start(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        realm.port,
        keys.path().join("cert.pem").display()
    ));
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path(), "amd64", "private\n");
    push(
        &layout,
        &reg,
        REPO,
        "v1.0.0",
        Some(&format!("{USER}:{PASS}")),
    );

    // The registry really is private.
    let anon = HttpClient::new(&HttpConfig::default())
        .unwrap()
        .client()
        .get(format!("http://{}/v2/{REPO}/tags/list", reg.host()))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    // ...and checks the tokens it is given (so a pass below means our token was verified).
    let forged = HttpClient::new(&HttpConfig::default())
        .unwrap()
        .client()
        .get(format!("http://{}/v2/{REPO}/tags/list", reg.host()))
        .bearer_auth(sign_token(keys.path(), REPO) + "x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let url = format!("img://{}/{REPO}", reg.host());
    // Credentials from the environment (Dewy's DOCKER_USERNAME/DOCKER_PASSWORD).
    let env = |k: &str| match k {
        "DOCKER_USERNAME" => Some(USER.to_string()),
        "DOCKER_PASSWORD" => Some(PASS.to_string()),
        _ => None,
    };
    let src = source(&url, &env);
    let release = src.current().await.unwrap();
    assert_eq!(release.tag, "v1.0.0");
    for layer in &release.layers {
        let bytes = read_all(&src, layer, 0).await;
        assert_eq!(Some(Digest::of(&bytes)), layer.digest);
    }
    let asked = realm.asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|r| r.contains("service=test-registry")
            && r.contains("scope=repository%3Ademo%2Fprivate%3Apull")),
        "{asked:?}"
    );

    // Credentials from Docker's config file.
    let cfg = tempfile::tempdir().unwrap();
    let auth = data_encoding::BASE64.encode(format!("{USER}:{PASS}").as_bytes());
    std::fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let dir = cfg.path().to_str().unwrap().to_string();
    let from_file = source(&url, &move |k: &str| {
        (k == "DOCKER_CONFIG").then(|| dir.clone())
    });
    assert_eq!(from_file.current().await.unwrap(), release);

    // No or wrong credentials: a permanent error that says what to do.
    let e = source(&url, &|_| None).current().await.unwrap_err();
    assert!(
        matches!(&e, SourceError::Permanent(m) if m.contains("401") && m.contains("DOCKER_USERNAME")),
        "{e:?}"
    );
    let wrong = source(&url, &|_| None).with_credentials(Some(Credentials {
        username: USER.into(),
        password: "wrong".into(),
    }));
    let e = wrong.current().await.unwrap_err();
    assert!(
        matches!(&e, SourceError::Permanent(m) if m.contains("401")),
        "{e:?}"
    );
    assert!(
        !e.to_string().contains("wrong"),
        "no secret in messages: {e}"
    );
}

#[tokio::test]
async fn realm_on_another_internal_host_is_refused() {
    require_tools();
    // The registry is 127.0.0.1; its realm names `localhost`, another host that resolves to
    // loopback: Dewy's SSRF guard refuses it before any request goes there.
    let keys = tempfile::tempdir().unwrap();
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=unused"])
        .arg("-keyout")
        .arg(keys.path().join("key.pem"))
        .arg("-out")
        .arg(keys.path().join("cert.pem")));
    let realm = Realm::start(keys.path().to_path_buf(), "demo/x");
    let reg = Registry::start(&format!(
        "auth:\n  token:\n    realm: http://localhost:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        realm.port,
        keys.path().join("cert.pem").display()
    ));
    let e = reg.source("demo/x", "").current().await.unwrap_err();
    assert!(
        matches!(&e, SourceError::Permanent(m) if m.contains("internal address")),
        "{e:?}"
    );
    assert!(realm.asked.lock().unwrap().is_empty());
}

/// A scripted registry stand-in for what distribution 2.8 does not do: paginated tags lists
/// (it ignores `n`, sends no `Link`), `ETag`s on them, and 503 with `Retry-After`.
struct Stub {
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

struct StubReq {
    method: String,
    path: String,
    if_none_match: Option<String>,
}

impl Stub {
    fn start<F>(handler: F) -> Stub
    where
        F: Fn(&StubReq) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + 'static,
    {
        use std::io::{BufRead, BufReader};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut if_none_match = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("if-none-match")
                    {
                        if_none_match = Some(v.trim().to_string());
                    }
                }
                let req = StubReq {
                    method,
                    path,
                    if_none_match,
                };
                seen.lock().unwrap().push(format!(
                    "{} {}{}",
                    req.method,
                    req.path,
                    if req.if_none_match.is_some() {
                        " (conditional)"
                    } else {
                        ""
                    }
                ));
                let (status, headers, body) = handler(&req);
                let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let body = if req.method == "HEAD" {
                    Vec::new()
                } else {
                    body
                };
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        Stub { port, log }
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[tokio::test]
async fn paginated_tags_with_etags_and_an_unchanged_tag() {
    let layer = b"layer bytes".to_vec();
    let layer_digest = format!("sha256:{}", Digest::of(&layer).to_hex());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", Digest::of(&manifest).to_hex());
    let stub = Stub::start(move |req| {
        let tags = |tags: &[&str], etag: &str, next: Option<&str>| {
            if req.if_none_match.as_deref() == Some(etag) {
                return (304, vec![("ETag", etag.to_string())], Vec::new());
            }
            let mut h = vec![("ETag", etag.to_string())];
            if let Some(n) = next {
                h.push(("Link", format!("<{n}>; rel=\"next\"")));
            }
            let body = serde_json::json!({"name": "demo/app", "tags": tags});
            (200, h, body.to_string().into_bytes())
        };
        match req.path.as_str() {
            "/v2/demo/app/tags/list" => tags(
                &["v1.0.0", "latest"],
                "\"p1\"",
                Some("/v2/demo/app/tags/list?last=latest&n=2"),
            ),
            "/v2/demo/app/tags/list?last=latest&n=2" => tags(&["v1.2.0", "v1.1.0"], "\"p2\"", None),
            "/v2/demo/app/manifests/v1.2.0" => (
                200,
                vec![
                    (
                        "Content-Type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    ),
                    ("Docker-Content-Digest", manifest_digest.clone()),
                ],
                manifest.clone(),
            ),
            "/v2/demo/busy/tags/list" => (503, vec![("Retry-After", "7".into())], Vec::new()),
            _ => (404, Vec::new(), Vec::new()),
        }
    });
    let src = source(&format!("img://127.0.0.1:{}/demo/app", stub.port), &|_| {
        None
    });
    let first = src.current().await.unwrap();
    assert_eq!(first.tag, "v1.2.0", "the newest across both pages");
    assert_eq!(first.layers[0].locator, layer_digest);
    assert_eq!(
        stub.take_log(),
        [
            "GET /v2/demo/app/tags/list",
            "GET /v2/demo/app/tags/list?last=latest&n=2",
            "GET /v2/demo/app/manifests/v1.2.0",
        ]
    );
    // Nothing changed: both pages revalidated (304), the tag's manifest checked by HEAD only.
    assert_eq!(src.current().await.unwrap(), first);
    assert_eq!(
        stub.take_log(),
        [
            "GET /v2/demo/app/tags/list (conditional)",
            "GET /v2/demo/app/tags/list?last=latest&n=2 (conditional)",
            "HEAD /v2/demo/app/manifests/v1.2.0",
        ]
    );

    let busy = source(&format!("img://127.0.0.1:{}/demo/busy", stub.port), &|_| {
        None
    });
    match busy.current().await {
        Err(SourceError::Transient {
            message,
            retry_after,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
