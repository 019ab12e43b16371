//! `s3://` against a real S3 peer: moto's server (peers.md 3a), started per test on its own
//! port. Fixtures are written with curl's own SigV4, not with the code under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::dewy::artifact::{Platform, within_grace};
use common::dewy::url::RegistryUrl;
use common::digest::Digest;
use e2e::peers::Moto;
use sources::http::{HttpClient, HttpConfig};
use sources::s3::S3Source;
use sources::{Layer, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINUX_AMD64: Platform<'static> = Platform {
    os: "linux",
    arch: "amd64",
};

use sources::bucket::Env;

/// Test credentials (moto accepts any) and nothing else: no IMDS probing, no profile files.
fn env_with(extra: Vec<(&'static str, String)>) -> Env {
    Arc::new(move |k: &str| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("test".to_string()),
        _ => extra.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
    })
}

fn http() -> HttpClient {
    HttpClient::new(&HttpConfig::default()).unwrap()
}

fn source(url: &str, env: Env) -> S3Source {
    let url = RegistryUrl::parse(url).unwrap();
    S3Source::new(&url, &http(), env)
        .unwrap()
        .with_platform(LINUX_AMD64)
}

async fn read_all(s: &S3Source, layer: &Layer, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    s.fetch(layer, offset)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn sums(entries: &[(&[u8], &str)]) -> Vec<u8> {
    entries
        .iter()
        .map(|(bytes, name)| format!("{}  {name}\n", Digest::of(bytes).to_hex()))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test]
async fn newest_version_artifact_pick_checksum_and_fetch() {
    let moto = Moto::start();
    moto.bucket("rel");
    let amd = b"linux amd64 archive bytes".to_vec();
    for v in ["1.2.0", "v2.0.0-rc.1", "latest"] {
        moto.put(
            "rel",
            &format!("app/{v}/app_{v}_linux_amd64.tar.gz"),
            b"old",
        );
    }
    // The newest stable: its assets in key order, the first matching archive wins.
    let dir = "app/1.10.0";
    moto.put("rel", &format!("{dir}/app_darwin_arm64.tar.gz"), b"mac");
    moto.put("rel", &format!("{dir}/app_linux_amd64.tar.gz"), &amd);
    moto.put("rel", &format!("{dir}/app_linux_arm64.tar.gz"), b"arm");
    moto.put("rel", &format!("{dir}/app_linux_x86_64.zip"), b"zip");
    moto.put(
        "rel",
        &format!("{dir}/checksums.txt"),
        &sums(&[
            (&amd, "app_linux_amd64.tar.gz"),
            (b"mac", "app_darwin_arm64.tar.gz"),
        ]),
    );

    let s = source(
        &format!("s3://us-east-1/rel/app?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    let r = s.current().await.unwrap();
    assert_eq!(r.tag, "1.10.0", "the listed spelling's v-less form");
    assert_eq!(r.slot, "");
    let layer = &r.layers[0];
    assert_eq!(layer.name, "app_linux_amd64.tar.gz");
    assert_eq!(layer.size, Some(amd.len() as u64));
    assert_eq!(layer.digest, Some(Digest::of(&amd)));
    assert_eq!(
        layer.locator,
        format!(
            "s3://us-east-1/rel/app/1.10.0/app_linux_amd64.tar.gz?endpoint={}",
            moto.url()
        )
    );
    assert_eq!(
        layer.checksum_url,
        Some(format!(
            "s3://us-east-1/rel/app/1.10.0/checksums.txt?endpoint={}",
            moto.url()
        ))
    );
    let age = time::OffsetDateTime::now_utc() - r.created_at.expect("LastModified");
    assert!(age.abs() < time::Duration::minutes(5), "{age}");
    assert_eq!(read_all(&s, layer, 0).await, amd);
    assert_eq!(
        read_all(&s, layer, 6).await,
        amd[6..].to_vec(),
        "ranged GET"
    );

    // With pre-releases the rc wins; an explicit artifact is taken by exact name.
    let s = source(
        &format!(
            "s3://us-east-1/rel/app/?endpoint={}&pre-release=true&artifact=app_v2.0.0-rc.1_linux_amd64.tar.gz",
            moto.url()
        ),
        env_with(vec![]),
    );
    let r = s.current().await.unwrap();
    assert_eq!(r.tag, "v2.0.0-rc.1");
    assert_eq!(r.layers[0].name, "app_v2.0.0-rc.1_linux_amd64.tar.gz");
    assert_eq!(r.layers[0].digest, None, "no checksum file published there");
    assert_eq!(r.layers[0].checksum_url, None);
    assert_eq!(read_all(&s, &r.layers[0], 0).await, b"old");

    // Another platform's pick in the same directory.
    let s = source(
        &format!("s3://us-east-1/rel/app?endpoint={}", moto.url()),
        env_with(vec![]),
    )
    .with_platform(Platform {
        os: "darwin",
        arch: "arm64",
    });
    let r = s.current().await.unwrap();
    assert_eq!(r.layers[0].name, "app_darwin_arm64.tar.gz");
    assert_eq!(r.layers[0].digest, Some(Digest::of(b"mac")));
}

#[tokio::test]
async fn slot_new_version_and_report() {
    let moto = Moto::start();
    moto.bucket("bkt");
    moto.put("bkt", "v1.0.0+blue/app_linux_amd64.tar.gz", b"one");
    let s = source(
        &format!("s3://us-east-1/bkt?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    let r = s.current().await.unwrap();
    assert_eq!((r.tag.as_str(), r.slot.as_str()), ("v1.0.0+blue", "blue"));

    // A new version appears between two polls.
    moto.put("bkt", "v1.1.0+green/app_linux_amd64.tar.gz", b"two");
    let r = s.current().await.unwrap();
    assert_eq!((r.tag.as_str(), r.slot.as_str()), ("v1.1.0+green", "green"));
    assert_eq!(read_all(&s, &r.layers[0], 0).await, b"two");

    // The audit record of a deploy: empty, text/plain, next to the artifact, and ignored by
    // the next pick.
    let now = time::macros::datetime!(2026-07-19 07:32:15.123456789 UTC);
    let info =
        common::dewy::report::audit_info("Web-01", common::dewy::report::Command::Server, now);
    let key = s.report(&r.tag, &info).await.unwrap();
    assert_eq!(
        key,
        "v1.1.0+green/shipped_to_web-01_server_at_20260719T073215.123456789Z.txt"
    );
    let (body, head) = moto.get("bkt", &key).expect("report object written");
    assert!(body.is_empty(), "{body:?}");
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert_eq!(
        s.current().await.unwrap().layers[0].name,
        "app_linux_amd64.tar.gz"
    );
}

#[tokio::test]
async fn missing_artifact_grace_and_corrupt_artifact() {
    let moto = Moto::start();
    moto.bucket("bkt");
    moto.put("bkt", "r/v3.0.0/notes.txt", b"CI uploads assets later");
    let s = source(
        &format!("s3://us-east-1/bkt/r?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    match s.current().await {
        Err(SourceError::ArtifactNotFound {
            message,
            release_time,
        }) => {
            assert_eq!(message, "artifact not found: r/v3.0.0/");
            let t = release_time.expect("LastModified of the first object");
            let now = time::OffsetDateTime::now_utc();
            assert!(
                within_grace(Some(t), now),
                "just published: inside the grace period"
            );
            assert!(
                !within_grace(Some(t), t + time::Duration::minutes(31)),
                "31 minutes later it is an error"
            );
        }
        other => panic!("{other:?}"),
    }

    // Corrupt upload: the published checksum stays, the bytes differ; the cache rejects it.
    let good = b"the real archive".to_vec();
    moto.put(
        "bkt",
        "r/v3.0.1/app_linux_amd64.tar.gz",
        b"truncated garbage",
    );
    moto.put(
        "bkt",
        "r/v3.0.1/app_linux_amd64.tar.gz.sha256",
        Digest::of(&good).to_hex().as_bytes(),
    );
    let r = s.current().await.unwrap();
    let layer = &r.layers[0];
    assert_eq!(layer.digest, Some(Digest::of(&good)));
    let fetched = read_all(&s, layer, 0).await;
    assert_ne!(Digest::of(&fetched), Digest::of(&good));

    // A checksum file that does not cover the artifact fails the release.
    moto.put("bkt", "r/v3.0.2/app_linux_amd64.tar.gz", b"x");
    moto.put(
        "bkt",
        "r/v3.0.2/checksums.txt",
        &sums(&[(b"y", "other.tar.gz")]),
    );
    match s.current().await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("not found in checksums.txt"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn endpoint_from_env_and_failures() {
    let moto = Moto::start();
    moto.bucket("bkt");
    moto.put("bkt", "1.0.0/tool_linux_amd64.tgz", b"tool");
    // No ?endpoint=: AWS_ENDPOINT_URL selects the endpoint (path-style), and the artifact URL
    // does not carry it.
    let s = source(
        "s3://us-east-1/bkt/",
        env_with(vec![("AWS_ENDPOINT_URL", moto.url())]),
    );
    let r = s.current().await.unwrap();
    assert_eq!(
        r.layers[0].locator,
        "s3://us-east-1/bkt/1.0.0/tool_linux_amd64.tgz"
    );
    assert_eq!(read_all(&s, &r.layers[0], 1).await, b"ool");

    // A locator elsewhere (a gRPC registry may point at any bucket) is fetched with a client
    // of its own: another bucket through the env endpoint, or an explicit endpoint.
    moto.bucket("other");
    moto.put("other", "x/y.tgz", b"elsewhere");
    let elsewhere = |locator: String| Layer {
        name: "y.tgz".into(),
        digest: None,
        size: None,
        kind: r.layers[0].kind,
        locator,
        checksum_url: None,
    };
    let via_env = elsewhere("s3://us-east-1/other/x/y.tgz".into());
    assert_eq!(read_all(&s, &via_env, 0).await, b"elsewhere");
    let explicit = elsewhere(format!(
        "s3://us-east-1/other/x/y.tgz?endpoint={}",
        moto.url()
    ));
    assert_eq!(read_all(&s, &explicit, 4).await, b"where");
    match s.fetch(&elsewhere("gs://b/x/y.tgz".into()), 0).await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("not an s3 artifact URL"), "{m}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a gs:// locator fetched from s3"),
    }

    // No such bucket: permanent, and says so.
    let s = source(
        &format!("s3://us-east-1/nope?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    match s.current().await {
        Err(SourceError::Permanent(m)) => assert_eq!(
            m,
            "s3://us-east-1/nope: HTTP 404: NoSuchBucket: The specified bucket does not exist"
        ),
        other => panic!("{other:?}"),
    }

    // Nothing listens there: transient.
    let dead = format!("http://127.0.0.1:{}", e2e::free_port());
    let s = source(
        &format!("s3://us-east-1/bkt?endpoint={dead}"),
        env_with(vec![]),
    );
    let started = Instant::now();
    match s.current().await {
        Err(SourceError::Transient { message, .. }) => {
            assert!(message.contains("s3://us-east-1/bkt"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));

    // No version directory at all.
    moto.bucket("empty");
    moto.put("empty", "latest/x.tgz", b"x");
    let s = source(
        &format!("s3://us-east-1/empty?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    assert!(matches!(s.current().await, Err(SourceError::NoVersion)));
}

#[tokio::test]
async fn listing_pages_through_many_versions() {
    let moto = Moto::start();
    moto.bucket("bkt");
    // More directories than one ListObjectsV2 page (1000) holds; the newest sorts last in
    // key order, so a first-page-only listing would miss it.
    let mut script = String::new();
    let dirs = (0..1100)
        .map(|i| format!("1.0.{i}"))
        .chain(["9.0.0".to_string()]);
    for d in dirs {
        script.push_str(&format!(
            "url = \"{}/bkt/p/{d}/a_linux_amd64.tgz\"\n",
            moto.url()
        ));
        script.push_str("upload-file = \"/dev/null\"\noutput = \"/dev/null\"\n");
    }
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), script).unwrap();
    moto.curl(&["-K", cfg.path().to_str().unwrap()]);
    let s = source(
        &format!("s3://us-east-1/bkt/p?endpoint={}", moto.url()),
        env_with(vec![]),
    );
    assert_eq!(s.current().await.unwrap().tag, "9.0.0");
}

/// A loopback HTTP server answering every request with `status` and `body`: S3's error
/// answers that moto does not give (throttling, denial), to see how they are sorted.
async fn canned(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn error_answers_sorted_by_what_to_do() {
    let (url, hits) = canned(
        "503 Slow Down",
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    )
    .await;
    match source(
        &format!("s3://us-east-1/bkt?endpoint={url}"),
        env_with(vec![]),
    )
    .current()
    .await
    {
        Err(SourceError::Transient { message, .. }) => assert_eq!(
            message,
            "s3://us-east-1/bkt: HTTP 503: SlowDown: Please reduce your request rate."
        ),
        other => panic!("{other:?}"),
    }
    // One quick retry inside the call, then the agent's own backoff takes over.
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let (url, _) = canned(
        "403 Forbidden",
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    )
    .await;
    match source(
        &format!("s3://us-east-1/bkt/p?endpoint={url}"),
        env_with(vec![]),
    )
    .current()
    .await
    {
        Err(SourceError::Permanent(m)) => {
            assert_eq!(
                m,
                "s3://us-east-1/bkt/p/: HTTP 403: AccessDenied: Access Denied"
            )
        }
        other => panic!("{other:?}"),
    }

    let (url, _) = canned("500 Internal Server Error", "").await;
    assert!(matches!(
        source(
            &format!("s3://us-east-1/bkt?endpoint={url}"),
            env_with(vec![])
        )
        .current()
        .await,
        Err(SourceError::Transient { .. })
    ));
}
