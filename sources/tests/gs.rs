//! `gs://` against a real GCS peer: fake-gcs-server (peers.md 4a), started per test on its own
//! port and reached through `STORAGE_EMULATOR_HOST`. Fixtures are uploaded with curl.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::dewy::artifact::{Platform, within_grace};
use common::dewy::url::RegistryUrl;
use common::digest::Digest;
use e2e::peers::FakeGcs;
use sources::gs::GsSource;
use sources::http::{HttpClient, HttpConfig};
use sources::{Layer, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINUX_AMD64: Platform<'static> = Platform {
    os: "linux",
    arch: "amd64",
};

fn curl_ok(args: &[&str]) -> bool {
    Command::new("curl")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn source(url: &str, emulator: String) -> GsSource {
    let env: sources::bucket::Env =
        Arc::new(move |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| emulator.clone()));
    let http = HttpClient::new(&HttpConfig::default()).unwrap();
    GsSource::new(&RegistryUrl::parse(url).unwrap(), &http, env)
        .unwrap()
        .with_platform(LINUX_AMD64)
}

async fn read_all(s: &GsSource, layer: &Layer, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    s.fetch(layer, offset)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn newest_version_artifact_checksum_fetch_and_new_version() {
    let gcs = FakeGcs::start();
    gcs.bucket("rel");
    let amd = b"linux amd64 archive".to_vec();
    for v in ["1.2.0", "1.10.0", "v2.0.0-rc.1", "latest"] {
        gcs.put("rel", &format!("app/{v}/app_linux_amd64.tar.gz"), b"old");
    }
    gcs.put("rel", "app/1.10.0/app_darwin_arm64.tar.gz", b"mac");
    gcs.put("rel", "app/1.10.0/app_linux_amd64.tar.gz", &amd);
    gcs.put(
        "rel",
        "app/1.10.0/SHA256SUMS",
        format!("{}  app_linux_amd64.tar.gz\n", Digest::of(&amd).to_hex()).as_bytes(),
    );

    // Host without scheme, as the Go client accepts it.
    let emulator = format!("127.0.0.1:{}", gcs.port);
    let s = source("gs://rel/app", emulator.clone());
    let r = s.current().await.unwrap();
    assert_eq!(r.tag, "1.10.0");
    let layer = &r.layers[0];
    assert_eq!(layer.name, "app_linux_amd64.tar.gz");
    assert_eq!(layer.locator, "gs://rel/app/1.10.0/app_linux_amd64.tar.gz");
    assert_eq!(layer.digest, Some(Digest::of(&amd)));
    assert_eq!(layer.size, Some(amd.len() as u64));
    let created = gcs
        .meta("rel", "app/1.10.0/app_linux_amd64.tar.gz")
        .unwrap()["timeCreated"]
        .as_str()
        .map(str::to_string)
        .unwrap();
    assert_eq!(
        r.created_at,
        common::timefmt::parse_rfc3339(&created),
        "created_at is the object's timeCreated"
    );
    assert_eq!(read_all(&s, layer, 0).await, amd);
    assert_eq!(read_all(&s, layer, 6).await, amd[6..].to_vec());

    let s = source(
        "gs://rel/app?pre-release=true&artifact=app_linux_amd64.tar.gz",
        gcs.url(),
    );
    let r = s.current().await.unwrap();
    assert_eq!(r.tag, "v2.0.0-rc.1");
    assert_eq!(r.layers[0].digest, None);

    // CalVer directories, compared as numbers (2026.11.2 > 2026.9.30).
    gcs.bucket("cal");
    for d in ["2026.9.30", "2026.11.2", "2026.10.15", "v1.0.0"] {
        gcs.put("cal", &format!("{d}/app_linux_amd64.tgz"), d.as_bytes());
    }
    let r = source("gs://cal?calver=YYYY.MM.DD", gcs.url())
        .current()
        .await
        .unwrap();
    assert_eq!(r.tag, "2026.11.2");

    // A new version appears between two polls, with a slot.
    let s = source("gs://rel/app", emulator);
    gcs.put("rel", "app/v1.11.0+blue/app_linux_amd64.tar.gz", b"new");
    let r = s.current().await.unwrap();
    assert_eq!((r.tag.as_str(), r.slot.as_str()), ("v1.11.0+blue", "blue"));
    assert_eq!(read_all(&s, &r.layers[0], 0).await, b"new");

    // The audit record: empty, text/plain, next to the artifact.
    let now = time::macros::datetime!(2026-07-19 07:32:15.000000001 UTC);
    let info = common::dewy::report::audit_info("HOST", common::dewy::report::Command::Assets, now);
    let name = s.report(&r.tag, &info).await.unwrap();
    assert_eq!(
        name,
        "app/v1.11.0+blue/shipped_to_host_assets_at_20260719T073215.000000001Z.txt"
    );
    let meta = gcs.meta("rel", &name).expect("audit object written");
    assert_eq!(meta["size"], "0");
    assert_eq!(meta["contentType"], "text/plain");
    assert_eq!(
        s.current().await.unwrap().layers[0].name,
        "app_linux_amd64.tar.gz"
    );
}

#[tokio::test]
async fn missing_artifact_corrupt_artifact_and_failures() {
    let gcs = FakeGcs::start();
    gcs.bucket("bkt");
    gcs.put("bkt", "v1.0.0/readme.txt", b"assets come later");
    let s = source("gs://bkt", gcs.url());
    match s.current().await {
        Err(SourceError::ArtifactNotFound {
            message,
            release_time,
        }) => {
            assert_eq!(message, "artifact not found: v1.0.0/");
            let t = release_time.expect("timeCreated of the first object");
            assert!(within_grace(Some(t), time::OffsetDateTime::now_utc()));
            assert!(!within_grace(Some(t), t + time::Duration::minutes(31)));
        }
        other => panic!("{other:?}"),
    }

    let good = b"good bytes".to_vec();
    gcs.put("bkt", "v1.0.1/app_linux_amd64.zip", b"bad bytes");
    gcs.put(
        "bkt",
        "v1.0.1/app_linux_amd64.zip.sha256",
        Digest::of(&good).to_hex().as_bytes(),
    );
    let r = s.current().await.unwrap();
    assert_eq!(r.layers[0].digest, Some(Digest::of(&good)));
    assert_ne!(
        Digest::of(&read_all(&s, &r.layers[0], 0).await),
        Digest::of(&good)
    );

    let s = source("gs://nope/p", gcs.url());
    match s.current().await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("gs://nope/p/: HTTP 404"), "{m}"),
        other => panic!("{other:?}"),
    }

    let dead = format!("127.0.0.1:{}", e2e::free_port());
    match source("gs://bkt", dead).current().await {
        Err(SourceError::Transient { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn listing_pages() {
    let gcs = FakeGcs::start();
    gcs.bucket("bkt");
    // More objects in the version directory than one page (maxResults=1000) holds, the
    // artifact last in name order: a first-page-only listing would not find it.
    // (fake-gcs-server returns delimiter prefixes unpaged, so the object listing is where
    // paging can be seen.)
    let mut script = String::new();
    let names = (0..1100)
        .map(|i| format!("notes_{i:04}.txt"))
        .chain(["z_linux_amd64.tgz".to_string()]);
    for n in names {
        script.push_str(&format!(
            "url = \"{}/upload/storage/v1/b/bkt/o?uploadType=media&name=p/1.0.0/{n}\"\n",
            gcs.url()
        ));
        script.push_str("upload-file = \"/dev/null\"\noutput = \"/dev/null\"\n");
    }
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), script).unwrap();
    // -X POST with upload-file: the JSON API's media upload is a POST.
    assert!(curl_ok(&[
        "-fsS",
        "-X",
        "POST",
        "-K",
        cfg.path().to_str().unwrap()
    ]));
    let r = source("gs://bkt/p", gcs.url()).current().await.unwrap();
    assert_eq!(r.layers[0].name, "z_linux_amd64.tgz");
}

/// A loopback HTTP server answering every request with `status`, `headers` and `body`: the
/// API's error answers that fake-gcs-server does not give (rate limits, denial).
async fn canned(status: &'static str, headers: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
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
                    "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn error_answers_sorted_by_what_to_do() {
    let url = canned(
        "429 Too Many Requests",
        "Retry-After: 7\r\n",
        r#"{"error":{"code":429,"message":"The rate of change requests to the object is too high."}}"#,
    )
    .await;
    match source("gs://bkt/p", url).current().await {
        Err(SourceError::Transient {
            message,
            retry_after,
        }) => {
            assert_eq!(
                message,
                "gs://bkt/p/: HTTP 429: The rate of change requests to the object is too high."
            );
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
    let url = canned(
        "403 Forbidden",
        "",
        r#"{"error":{"code":403,"message":"x does not have storage.objects.list access."}}"#,
    )
    .await;
    match source("gs://bkt", url).current().await {
        Err(SourceError::Permanent(m)) => assert_eq!(
            m,
            "gs://bkt/: HTTP 403: x does not have storage.objects.list access."
        ),
        other => panic!("{other:?}"),
    }
    let url = canned("502 Bad Gateway", "", "<html>").await;
    assert!(matches!(
        source("gs://bkt", url).current().await,
        Err(SourceError::Transient { .. })
    ));
}
