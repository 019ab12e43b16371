//! `s3://` credentials from the AWS profile files against a real moto (S3 and STS on one
//! port). moto does not check signatures or IAM, so the tests look at what the client sends:
//! a recording TCP proxy in front of moto sees each request's `Credential=<key>/…/<service>/`
//! scope and each STS answer's fresh `<AccessKeyId>`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::dewy::artifact::Platform;
use common::dewy::url::RegistryUrl;
use e2e::peers::Moto;
use sources::bucket::Env;
use sources::http::{HttpClient, HttpConfig};
use sources::s3::S3Source;
use sources::{Layer, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LINUX_AMD64: Platform<'static> = Platform {
    os: "linux",
    arch: "amd64",
};

/// Bytes seen each way, all connections appended in order of arrival.
#[derive(Default)]
struct Recording {
    up: Mutex<Vec<u8>>,
    down: Mutex<Vec<u8>>,
}

impl Recording {
    fn up(&self) -> String {
        String::from_utf8_lossy(&self.up.lock().unwrap()).into_owned()
    }
    fn down(&self) -> String {
        String::from_utf8_lossy(&self.down.lock().unwrap()).into_owned()
    }
    /// `(access key, service)` of every signed request, in order.
    fn signers(&self) -> Vec<(String, String)> {
        self.up()
            .split("Credential=")
            .skip(1)
            .map(|s| {
                let scope: Vec<&str> = s.split([',', ' ']).next().unwrap().split('/').collect();
                (scope[0].to_string(), scope[3].to_string())
            })
            .collect()
    }
    /// Every request (head, body) sent, in order: the client sends one at a time here.
    fn requests(&self) -> Vec<(String, Vec<u8>)> {
        let up = self.up.lock().unwrap().clone();
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(end) = find(&up[at..], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&up[at..at + end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let body = up[at + end + 4..at + end + 4 + len].to_vec();
            at += end + 4 + len;
            out.push((head, body));
        }
        out
    }
    /// Every value of `<tag>` in what moto answered, in order.
    fn answered(&self, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        self.down()
            .split(&open)
            .skip(1)
            .map(|s| s.split(&close).next().unwrap().to_string())
            .collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Recomputes a request's SigV4 signature with botocore (moto's venv), an implementation
/// independent of the one under test; moto itself does not check signatures.
fn botocore_agrees(head: &str, body: &[u8], secret: &str, endpoint: &str) {
    const PY: &str = r#"
import hashlib, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
head, secret, endpoint = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.stdin.buffer.read()
lines = head.split("\r\n")
method, path, _ = lines[0].split(" ")
h = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
fields = dict(p.strip().split("=", 1) for p in h["authorization"].split(" ", 1)[1].split(","))
key, date, region, service, _ = fields["Credential"].split("/")
signed = fields["SignedHeaders"].split(";")
assert h["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest(), "payload hash"
req = AWSRequest(method=method, url=endpoint + path, data=body, headers={n: h[n] for n in signed})
req.context["timestamp"] = h["x-amz-date"]
auth = SigV4Auth(Credentials(key, secret), service, region)
sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
assert sig == fields["Signature"], (sig, fields["Signature"])
"#;
    let mut child = std::process::Command::new("/opt/deploy-peers-venv/bin/python")
        .args(["-c", PY, head, secret, endpoint])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "botocore disagrees on:\n{head}"
    );
}

/// A TCP proxy to `port` recording both directions; it lives as long as the test's runtime.
async fn recording_proxy(port: u16) -> (String, Arc<Recording>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Arc::new(Recording::default());
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let r2 = r.clone();
                tokio::join!(
                    pump(cr, sw, move |b| r.up.lock().unwrap().extend_from_slice(b)),
                    pump(sr, cw, move |b| r2
                        .down
                        .lock()
                        .unwrap()
                        .extend_from_slice(b)),
                );
            });
        }
    });
    (format!("http://{addr}"), rec)
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    record: impl Fn(&[u8]),
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                record(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The profile files and the proxy as the only endpoint; no keys in the environment, no
/// HOME (so no real `~/.aws` is read).
fn env(dir: &Path, profile: &str, endpoint: &str) -> Env {
    let vars = [
        ("AWS_PROFILE", profile.to_string()),
        (
            "AWS_CONFIG_FILE",
            dir.join("config").to_str().unwrap().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("credentials").to_str().unwrap().to_string(),
        ),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
    ];
    Arc::new(move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
}

fn source(env: Env) -> Result<S3Source, SourceError> {
    let url = RegistryUrl::parse("s3://us-east-1/rel/app").unwrap();
    let http = HttpClient::new(&HttpConfig::default()).unwrap();
    Ok(S3Source::new(&url, &http, env)?.with_platform(LINUX_AMD64))
}

/// What every test starts from: moto with one release of one artifact (written by curl, not
/// by the code under test), the recording proxy in front of it (its endpoint), and an empty
/// directory for the profile files. Returns moto (keep it), the artifact's bytes, the
/// endpoint, the recording and the directory.
async fn setup() -> (Moto, Vec<u8>, String, Arc<Recording>, tempfile::TempDir) {
    let moto = Moto::start();
    moto.bucket("rel");
    let body = b"release bytes".to_vec();
    moto.put("rel", "app/v1.0.0/app_linux_amd64.tar.gz", &body);
    let (endpoint, rec) = recording_proxy(moto.port).await;
    (moto, body, endpoint, rec, tempfile::tempdir().unwrap())
}

/// `base` with keys in the environment as well.
fn with_env_keys(base: Env) -> Env {
    Arc::new(move |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("AKIDFROMENV".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("env-secret".to_string()),
        _ => base(k),
    })
}

async fn deploy_bytes(s: &S3Source) -> Vec<u8> {
    let release = s.current().await.unwrap();
    assert_eq!(release.tag, "v1.0.0");
    let layer: &Layer = &release.layers[0];
    let mut out = Vec::new();
    s.fetch(layer, 0)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn role_chain_assumes_each_role_with_the_previous_keys() {
    let (_moto, body, endpoint, rec, dir) = setup().await;
    std::fs::write(
        dir.path().join("credentials"),
        "[base]\naws_access_key_id = AKIDBASEPROFILE\naws_secret_access_key = base-secret\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        "[profile mid]\nrole_arn = arn:aws:iam::123456789012:role/mid\nsource_profile = base\n\
         [profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\n\
         source_profile = mid\nexternal_id = ext-42\nrole_session_name = agent-test\n\
         duration_seconds = 1800\n",
    )
    .unwrap();
    let s = source(env(dir.path(), "deploy", &endpoint)).unwrap();
    assert_eq!(deploy_bytes(&s).await, body);
    // A second round uses the cached role credentials: no more AssumeRole.
    assert_eq!(deploy_bytes(&s).await, body);

    let signers = rec.signers();
    let sts: Vec<&String> = signers
        .iter()
        .filter(|(_, svc)| svc == "sts")
        .map(|(k, _)| k)
        .collect();
    let s3: Vec<&String> = signers
        .iter()
        .filter(|(_, svc)| svc == "s3")
        .map(|(k, _)| k)
        .collect();
    let issued = rec.answered("AccessKeyId");
    assert_eq!(issued.len(), 2, "two AssumeRole answers: {issued:?}");
    assert!(issued.iter().all(|k| k != "AKIDBASEPROFILE"));
    // mid is assumed with base's keys, deploy with mid's fresh ones.
    assert_eq!(sts, [&"AKIDBASEPROFILE".to_string(), &issued[0]]);
    let up = rec.up();
    let mid = up
        .find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fmid")
        .unwrap();
    let deploy = up
        .find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdeploy")
        .unwrap();
    assert!(mid < deploy);
    assert!(up[deploy..].contains("ExternalId=ext-42"));
    assert!(up[deploy..].contains("RoleSessionName=agent-test"));
    assert!(up[deploy..].contains("DurationSeconds=1800"));
    // Every S3 request is signed by the deploy role, with its session token.
    assert!(s3.len() >= 4, "{signers:?}");
    assert!(s3.iter().all(|k| **k == issued[1]), "{signers:?}");
    // The STS calls are signed as AWS would check them: mid's with base's secret, deploy's
    // with the secret STS issued for mid.
    let secrets = rec.answered("SecretAccessKey");
    let sts_calls: Vec<_> = rec
        .requests()
        .into_iter()
        .filter(|(h, _)| h.starts_with("POST "))
        .collect();
    assert_eq!(sts_calls.len(), 2);
    botocore_agrees(&sts_calls[0].0, &sts_calls[0].1, "base-secret", &endpoint);
    botocore_agrees(&sts_calls[1].0, &sts_calls[1].1, &secrets[0], &endpoint);
    let token = &rec.answered("SessionToken")[1];
    assert!(up.to_ascii_lowercase().contains(&format!(
        "x-amz-security-token: {}",
        token.to_ascii_lowercase()
    )));
}

#[tokio::test]
async fn credential_source_environment_is_the_role_source() {
    let (_moto, body, endpoint, rec, dir) = setup().await;
    std::fs::write(
        dir.path().join("config"),
        "[profile r]\nrole_arn = arn:aws:iam::123456789012:role/r\ncredential_source = Environment\n",
    )
    .unwrap();
    let base = env(dir.path(), "r", &endpoint);
    let env = with_env_keys(base);
    let s = source(env).unwrap();
    assert_eq!(deploy_bytes(&s).await, body);
    let issued = rec.answered("AccessKeyId");
    assert_eq!(issued.len(), 1);
    let signers = rec.signers();
    assert_eq!(signers[0], ("AKIDFROMENV".to_string(), "sts".to_string()));
    assert!(signers.len() >= 3);
    assert!(
        signers[1..]
            .iter()
            .all(|(k, svc)| *k == issued[0] && svc == "s3"),
        "{signers:?}"
    );
}

#[tokio::test]
async fn env_keys_win_over_a_profile_with_static_keys() {
    let (_moto, body, endpoint, rec, dir) = setup().await;
    std::fs::write(
        dir.path().join("credentials"),
        "[p]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n",
    )
    .unwrap();
    let base = env(dir.path(), "p", &endpoint);
    let env = with_env_keys(base);
    let s = source(env).unwrap();
    assert_eq!(deploy_bytes(&s).await, body);
    let signers = rec.signers();
    assert!(!signers.is_empty());
    assert!(
        signers
            .iter()
            .all(|(k, svc)| k == "AKIDFROMENV" && svc == "s3"),
        "{signers:?}"
    );
}

#[tokio::test]
async fn credential_process_split_like_the_cli_and_refreshed_before_expiry() {
    let (_moto, body, endpoint, rec, dir) = setup().await;
    let runs = dir.path().join("runs");
    let script = dir.path().join("creds helper.sh");
    // The helper logs its arguments and prints an expiry given by a file the test changes.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s|%s\\n' \"$1\" \"$2\" >> '{runs}'\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"AKIDPROCESS\",\"SecretAccessKey\":\"s\",\
             \"SessionToken\":\"proc-token\",\"Expiration\":\"%s\"}}' \"$(cat '{exp}')\"\n",
            runs = runs.display(),
            exp = dir.path().join("exp").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("exp"), "2099-01-01T00:00:00Z").unwrap();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "[profile p]\ncredential_process = \"{}\" 'one arg' two\n",
            script.display()
        ),
    )
    .unwrap();
    let s = source(env(dir.path(), "p", &endpoint)).unwrap();
    assert_eq!(deploy_bytes(&s).await, body);
    assert_eq!(deploy_bytes(&s).await, body);
    // Far from expiry: one run for every request so far.
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "one arg|two\n");
    let signers = rec.signers();
    assert!(signers.len() >= 4);
    assert!(
        signers
            .iter()
            .all(|(k, svc)| k == "AKIDPROCESS" && svc == "s3")
    );
    assert!(
        rec.up()
            .to_ascii_lowercase()
            .contains("x-amz-security-token: proc-token")
    );

    // Credentials that expire within the refresh window are fetched again before use:
    // a new source (so nothing is held) gets one that expires in a minute, and each
    // request after the first runs the helper again.
    std::fs::remove_file(&runs).unwrap();
    let soon =
        common::timefmt::rfc3339_secs(common::timefmt::now() + std::time::Duration::from_secs(60));
    std::fs::write(dir.path().join("exp"), soon).unwrap();
    let s = source(env(dir.path(), "p", &endpoint)).unwrap();
    assert_eq!(deploy_bytes(&s).await, body);
    let runs_now = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(runs_now >= 2, "{runs_now} runs");
}

#[tokio::test]
async fn failing_process_and_unsupported_profiles_are_clear_errors() {
    let (_moto, _, endpoint, rec, dir) = setup().await;
    std::fs::write(
        dir.path().join("config"),
        "[profile fails]\ncredential_process = sh -c 'echo helper says no >&2; exit 3'\n\
         [profile garbage]\ncredential_process = echo '{\"Version\":1,\"AccessKeyId\":\"SECRETID\"}'\n\
         [profile sso]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\n\
         [profile loop]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = loop2\n\
         [profile loop2]\nrole_arn = arn:aws:iam::1:role/y\nsource_profile = loop\n",
    )
    .unwrap();
    let e = source(env(dir.path(), "fails", &endpoint))
        .unwrap()
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"fails\"") && e.contains("helper says no"),
        "{e}"
    );
    let e = source(env(dir.path(), "garbage", &endpoint))
        .unwrap()
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected JSON") && !e.contains("SECRETID"),
        "{e}"
    );
    for (profile, key) in [("sso", "sso_session"), ("loop", "source_profile")] {
        let Err(e) = source(env(dir.path(), profile, &endpoint)) else {
            panic!("{profile} accepted");
        };
        let e = e.to_string();
        assert!(
            e.contains(&format!("\"{profile}\"")) && e.contains(key),
            "{e}"
        );
    }
    // No request was signed with anything: nothing fell through to other credentials.
    assert!(rec.signers().is_empty(), "{:?}", rec.signers());
}
