//! `ghr://` against a GitHub REST stand-in (github_standin): version pick across pages,
//! drafts, pre-releases, slots, the artifact pick, the grace period, checksums, rate limits,
//! outages, conditional requests, App auth, the redirect to storage and the audit upload.

mod github_standin;

use std::collections::HashMap;
use std::time::Duration;

use common::dewy::artifact::within_grace;
use common::dewy::report::{Command, audit_info};
use common::dewy::url::RegistryUrl;
use common::digest::Digest;
use github_standin::{App, GitHub, OWNER, REPO};
use sources::ghr::GhrSource;
use sources::http::{HttpClient, HttpConfig};
use sources::{LayerKind, SourceError};
use time::Duration as TimeDelta;
use tokio::io::AsyncReadExt;

const LINUX_AMD64: &[u8] = b"linux amd64 archive bytes";
const LINUX_ARM64: &[u8] = b"linux arm64 archive bytes";

fn http() -> HttpClient {
    HttpClient::new(&HttpConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        read_idle_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn source_env(query: &str, env: &HashMap<String, String>) -> Result<GhrSource, SourceError> {
    let url = RegistryUrl::parse(&format!("ghr://{OWNER}/{REPO}{query}")).unwrap();
    let lookup = |k: &str| env.get(k).cloned();
    GhrSource::from_url(&url, http(), &lookup).map(|s| s.with_platform("linux", "amd64"))
}

fn source(gh: &GitHub, query: &str) -> GhrSource {
    source_env(query, &gh.env()).unwrap()
}

fn platform_assets() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("app_darwin_arm64.tar.gz", b"darwin"),
        ("app_linux_arm64.tar.gz", LINUX_ARM64),
        ("app_linux_amd64.tar.gz", LINUX_AMD64),
        ("app_linux_amd64.txt", b"notes"),
    ]
}

async fn read_all(mut s: sources::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

fn hours(h: i64) -> TimeDelta {
    TimeDelta::hours(h)
}

#[tokio::test]
async fn newest_version_across_pages_drafts_skipped() {
    let gh = GitHub::start().await;
    {
        let mut st = gh.state();
        st.max_page = 2;
        // Oldest first here; the stand-in lists newest first.
        st.add_release("v1.9.0", hours(50), &platform_assets());
        st.add_release("v1.10.0", hours(40), &platform_assets());
        st.add_release("latest", hours(30), &platform_assets());
        st.add_release("v1.2.0", hours(20), &platform_assets());
        st.add_release("V9.0.0", hours(15), &platform_assets());
        st.add_release("v2.0.0", hours(10), &platform_assets());
        st.release_mut("v2.0.0").draft = true;
    }
    let r = source(&gh, "").current().await.unwrap();
    assert_eq!(
        r.tag, "v1.10.0",
        "v1.10.0 is on the last page; the draft v2.0.0 is skipped"
    );
    assert_eq!(r.slot, "");
    let pages = {
        let st = gh.state();
        st.count(200, "/repos/acme/app/releases?per_page=100")
            + st.count(200, "/repositories/1/releases")
    };
    assert_eq!(pages, 3, "6 releases at 2 per page");
    let st = gh.state();
    assert!(
        st.seen
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer ghp_standin_token")),
        "every API call authenticated"
    );
}

#[tokio::test]
async fn pre_release_rule_and_github_flag_ignored() {
    let gh = GitHub::start().await;
    {
        let mut st = gh.state();
        st.add_release("v1.2.0", hours(5), &platform_assets());
        st.add_release("v1.2.5", hours(4), &platform_assets());
        // GitHub's flag says pre-release, the tag does not: Dewy goes by the tag.
        st.release_mut("v1.2.5").prerelease = true;
        st.add_release("v1.3.0-rc.1", hours(3), &platform_assets());
    }
    assert_eq!(source(&gh, "").current().await.unwrap().tag, "v1.2.5");
    assert_eq!(
        source(&gh, "?pre-release=true")
            .current()
            .await
            .unwrap()
            .tag,
        "v1.3.0-rc.1"
    );
}

#[tokio::test]
async fn slot_and_calver() {
    let gh = GitHub::start().await;
    {
        let mut st = gh.state();
        st.add_release("v1.2.3+green", hours(5), &platform_assets());
        st.add_release("v1.2.4+blue", hours(4), &platform_assets());
        // CalVer tags that are not SemVer (two parts), the older one listed first.
        st.add_release("2026.10+green", hours(3), &platform_assets());
        st.add_release("2026.11", hours(3), &platform_assets());
    }
    let r = source(&gh, "").current().await.unwrap();
    assert_eq!((r.tag.as_str(), r.slot.as_str()), ("v1.2.4+blue", "blue"));
    let r = source(&gh, "?calver=YYYY.0M").current().await.unwrap();
    assert_eq!((r.tag.as_str(), r.slot.as_str()), ("2026.11", ""));
    gh.state()
        .add_release("2026.11+green", hours(0), &platform_assets());
    let r = source(&gh, "?calver=YYYY.0M").current().await.unwrap();
    assert_eq!(
        (r.tag.as_str(), r.slot.as_str()),
        ("2026.11+green", "green"),
        "equal precedence: the first listed (newest) wins"
    );
}

#[tokio::test]
async fn artifact_by_platform_and_by_name_with_download() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let src = source(&gh, "");
    let r = src.current().await.unwrap();
    assert_eq!(r.layers.len(), 1);
    let layer = &r.layers[0];
    assert_eq!(layer.name, "app_linux_amd64.tar.gz");
    assert_eq!(layer.size, Some(LINUX_AMD64.len() as u64));
    assert!(matches!(
        layer.kind,
        LayerKind::Artifact(common::dewy::artifact::ArtifactKind::TarGz)
    ));
    assert_eq!(layer.digest, None, "no checksum file published");
    assert_eq!(
        layer.locator, "ghr://acme/app/tag/v1.0.0/app_linux_amd64.tar.gz",
        "Dewy's artifact URL: the agent's cache key <tag>--<name> comes from it"
    );
    // A source that has not listed (a restarted agent resuming) finds the asset by tag.
    let fresh = source(&gh, "");
    assert_eq!(
        read_all(fresh.fetch(layer, 0).await.unwrap()).await,
        LINUX_AMD64
    );
    assert_eq!(
        gh.state()
            .count(200, "/repos/acme/app/releases/tags/v1.0.0"),
        1
    );
    assert_eq!(
        read_all(src.fetch(layer, 0).await.unwrap()).await,
        LINUX_AMD64
    );

    let arm = source(&gh, "").with_platform("linux", "arm64");
    let r = arm.current().await.unwrap();
    assert_eq!(r.layers[0].name, "app_linux_arm64.tar.gz");
    assert_eq!(
        read_all(arm.fetch(&r.layers[0], 0).await.unwrap()).await,
        LINUX_ARM64
    );

    let named = source(&gh, "?artifact=app_darwin_arm64.tar.gz");
    let r = named.current().await.unwrap();
    assert_eq!(r.layers[0].name, "app_darwin_arm64.tar.gz");
    assert_eq!(
        read_all(named.fetch(&r.layers[0], 0).await.unwrap()).await,
        b"darwin"
    );

    // GITHUB_ARTIFACT is the fallback for an unset ?artifact=.
    let mut env = gh.env();
    env.insert("GITHUB_ARTIFACT".into(), "app_linux_arm64.tar.gz".into());
    let r = source_env("", &env).unwrap().current().await.unwrap();
    assert_eq!(r.layers[0].name, "app_linux_arm64.tar.gz");
}

#[tokio::test]
async fn resumed_download_uses_range_and_no_token_reaches_storage() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let src = source(&gh, "");
    let r = src.current().await.unwrap();
    let tail = read_all(src.fetch(&r.layers[0], 6).await.unwrap()).await;
    assert_eq!(tail, &LINUX_AMD64[6..]);
    let st = gh.state();
    assert_eq!(st.storage_ranges, vec![Some("bytes=6-".to_string())]);
    assert_eq!(
        st.storage_auth,
        vec![None],
        "the redirect to the storage host must not carry the GitHub token"
    );
    assert!(
        st.seen
            .iter()
            .any(|s| s.path_and_query.contains("/releases/assets/")
                && s.status == 302
                && s.authorization.is_some()),
        "the API asset URL itself is authenticated"
    );
}

#[tokio::test]
async fn missing_artifact_within_and_after_grace_then_uploaded() {
    let gh = GitHub::start().await;
    let only_darwin: &[(&str, &[u8])] = &[("app_darwin_arm64.tar.gz", b"d")];
    gh.state()
        .add_release("v1.0.0", TimeDelta::minutes(5), only_darwin);
    let src = source(&gh, "");
    let now = time::OffsetDateTime::now_utc();
    match src.current().await {
        Err(SourceError::ArtifactNotFound {
            message,
            release_time,
        }) => {
            assert_eq!(message, "artifact not found: ");
            let t = release_time.expect("published_at");
            assert!((now - t - TimeDelta::minutes(5)).abs() < TimeDelta::seconds(5));
            assert!(
                within_grace(release_time, now),
                "5 min old: still in the grace period"
            );
        }
        other => panic!("{other:?}"),
    }
    gh.state().release_mut("v1.0.0").published_at = now - TimeDelta::minutes(31);
    match src.current().await {
        Err(SourceError::ArtifactNotFound { release_time, .. }) => {
            assert!(
                !within_grace(release_time, time::OffsetDateTime::now_utc()),
                "31 min old"
            );
        }
        other => panic!("{other:?}"),
    }
    // An explicitly named artifact says which one is missing.
    match source(&gh, "?artifact=app.zip").current().await {
        Err(SourceError::ArtifactNotFound { message, .. }) => {
            assert_eq!(message, "artifact not found: app.zip")
        }
        other => panic!("{other:?}"),
    }
    // CI uploads the asset later: the first page changes, the next poll sees it.
    gh.state()
        .add_asset("v1.0.0", "app_linux_amd64.tar.gz", LINUX_AMD64);
    let r = src.current().await.unwrap();
    assert_eq!(r.layers[0].name, "app_linux_amd64.tar.gz");
}

#[tokio::test]
async fn checksum_file_gives_digest_and_exposes_a_corrupt_artifact() {
    let gh = GitHub::start().await;
    let good = Digest::of(LINUX_AMD64);
    let sums = format!(
        "{}  app_linux_amd64.tar.gz\n{}  app_linux_arm64.tar.gz\n",
        good.to_hex(),
        Digest::of(LINUX_ARM64).to_hex()
    );
    let mut assets = platform_assets();
    assets.push(("checksums.txt", sums.as_bytes()));
    gh.state().add_release("v1.0.0", hours(1), &assets);
    let src = source(&gh, "");
    let r = src.current().await.unwrap();
    assert_eq!(r.layers[0].digest, Some(good));
    assert_eq!(
        Digest::of(&read_all(src.fetch(&r.layers[0], 0).await.unwrap()).await),
        good
    );

    // The artifact is replaced by other bytes: the published digest no longer matches what
    // downloads, which the cache's streaming check refuses.
    gh.state().release_mut("v1.0.0").assets[2].content = b"tampered".to_vec();
    let r = src.current().await.unwrap();
    let got = Digest::of(&read_all(src.fetch(&r.layers[0], 0).await.unwrap()).await);
    assert_eq!(r.layers[0].digest, Some(good));
    assert_ne!(got, good);

    // A malformed checksum file is an error, not a silent skip of verification.
    let mut assets = platform_assets();
    assets.push(("checksums.txt", b"not a checksum line\n"));
    gh.state().add_release("v1.1.0", hours(1), &assets);
    match src.current().await {
        Err(SourceError::Permanent(m)) => assert!(m.contains("checksums.txt"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unchanged_listing_is_a_free_304_and_a_new_release_is_seen() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let src = source(&gh, "");
    let first = src.current().await.unwrap();
    let budget = gh.state().rate_remaining;
    let second = src.current().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(gh.state().count(304, "/repos/acme/app/releases?"), 1);
    assert_eq!(gh.state().rate_remaining, budget, "a 304 costs nothing");

    gh.state()
        .add_release("v1.1.0", hours(0), &platform_assets());
    let third = src.current().await.unwrap();
    assert_eq!(third.tag, "v1.1.0");
}

#[tokio::test]
async fn rate_limit_is_transient_with_the_reset_time_and_no_further_requests() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 120;
    {
        let mut st = gh.state();
        st.rate_remaining = 0;
        st.rate_reset = reset;
    }
    let src = source(&gh, "");
    let check = |e: SourceError| match e {
        SourceError::Transient {
            message,
            retry_after,
        } => {
            assert!(message.contains("rate limit"), "{message}");
            let wait = retry_after.expect("retry_after").as_secs();
            assert!((110..=121).contains(&wait), "{wait}");
        }
        other => panic!("{other:?}"),
    };
    check(src.current().await.unwrap_err());
    let sent = gh.state().seen.len();
    check(src.current().await.unwrap_err());
    assert_eq!(
        gh.state().seen.len(),
        sent,
        "no request while the budget is spent"
    );
}

#[tokio::test]
async fn secondary_rate_limit_retry_after_is_honoured() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    {
        let mut st = gh.state();
        st.fail_with = Some((
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        ));
        st.retry_after = Some(30);
    }
    match source(&gh, "").current().await {
        Err(SourceError::Transient {
            message,
            retry_after,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)));
            assert!(message.contains("secondary rate limit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn outage_and_server_errors_are_transient() {
    let gh = GitHub::start().await;
    gh.state().fail_with = Some((503, "Service Unavailable"));
    assert!(matches!(
        source(&gh, "").current().await,
        Err(SourceError::Transient { .. })
    ));

    // Nothing listens on the port at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = gh.env();
    env.insert("GITHUB_API_URL".into(), format!("http://127.0.0.1:{port}"));
    match source_env("", &env).unwrap().current().await {
        Err(SourceError::Transient { message, .. }) => {
            assert!(message.contains("127.0.0.1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn forbidden_missing_and_unauthenticated_are_permanent_with_clear_text() {
    let gh = GitHub::start().await;
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let url = RegistryUrl::parse("ghr://acme/nope").unwrap();
    let env = gh.env();
    let lookup = |k: &str| env.get(k).cloned();
    match GhrSource::from_url(&url, http(), &lookup)
        .unwrap()
        .current()
        .await
    {
        Err(SourceError::Permanent(m)) => {
            assert!(
                m.contains("acme/nope") && m.contains("404") && m.contains("Not Found"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut env = gh.env();
    env.insert("GH_TOKEN".into(), "wrong".into());
    match source_env("", &env).unwrap().current().await {
        Err(SourceError::Permanent(m)) => {
            assert!(m.contains("401") && m.contains("Bad credentials"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    gh.state().fail_with = Some((403, "Resource not accessible by integration"));
    match source(&gh, "").current().await {
        Err(SourceError::Permanent(m)) => {
            assert!(
                m.contains("403") && m.contains("Resource not accessible"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_token_no_releases_no_version() {
    let gh = GitHub::start().await;
    let env = HashMap::from([("GITHUB_API_URL".to_string(), gh.base())]);
    match source_env("", &env) {
        Err(e) => assert_eq!(
            e.to_string(),
            "no GitHub token found in GITHUB_TOKEN or GH_TOKEN environment variables"
        ),
        Ok(_) => panic!("anonymous access must be refused"),
    }
    // GITHUB_TOKEN is the second choice; GITHUB_ENDPOINT the second API variable.
    let env = HashMap::from([
        ("GITHUB_ENDPOINT".to_string(), gh.base()),
        (
            "GITHUB_TOKEN".to_string(),
            github_standin::TOKEN.to_string(),
        ),
    ]);
    let src = source_env("", &env).unwrap();
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    gh.state().release_mut("v1.0.0").draft = true;
    assert_eq!(
        src.current().await.unwrap_err().to_string(),
        "no non-draft releases found"
    );
    gh.state()
        .add_release("nightly", hours(1), &platform_assets());
    assert!(matches!(src.current().await, Err(SourceError::NoVersion)));
}

#[tokio::test]
async fn audit_report_is_uploaded_to_the_release() {
    let gh = GitHub::start().await;
    let id = gh
        .state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    gh.state()
        .add_release("v1.1.0", hours(4), &platform_assets());
    let src = source(&gh, "");
    let info = audit_info("Web-01", Command::Server, time::OffsetDateTime::now_utc());
    let uploaded = src.report("v1.0.0", &info).await.unwrap();
    let uploads = gh.state().uploads.clone();
    assert_eq!(uploads.len(), 1);
    let (rel, name, ct, body) = &uploads[0];
    assert_eq!(*rel, id);
    assert_eq!(ct, "text/plain");
    assert!(body.starts_with("shipped to web-01 server at "), "{body}");
    assert_eq!(*body, info);
    assert_eq!(*name, uploaded);
    assert_eq!(*name, format!("{}.txt", body.replace(' ', "_")));
    assert!(
        name.ends_with("Z.txt")
            && name.len() == "shipped_to_web-01_server_at_20260719T073215.123456789Z.txt".len(),
        "{name}"
    );
    match src.report("v9.9.9", &info).await {
        Err(e) => assert_eq!(e.to_string(), "release not found: v9.9.9"),
        Ok(_) => panic!("no such release"),
    }
}

/// An RSA key in PEM from the system's openssl: PKCS#8, or PKCS#1 with `traditional`.
fn rsa_pem(traditional: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/install-deps)")
        .success();
    assert!(ok);
    if traditional {
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        return String::from_utf8(out.stdout).unwrap();
    }
    std::fs::read_to_string(path).unwrap()
}

async fn app_case(traditional: bool, ttl: TimeDelta, via_path: bool) -> (GitHub, GhrSource) {
    let gh = GitHub::start().await;
    let pem = rsa_pem(traditional);
    let key = sources::ghr::auth::parse_rsa_pem(&pem).unwrap();
    gh.state().app = Some(App {
        app_id: "4242".into(),
        installation_id: "77".into(),
        public_key: ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
        token_ttl: ttl,
        minted: 0,
    });
    gh.state()
        .add_release("v1.0.0", hours(5), &platform_assets());
    let mut env = HashMap::from([
        ("GITHUB_API_URL".to_string(), gh.base()),
        ("GITHUB_APP_ID".to_string(), "4242".to_string()),
        ("GITHUB_APP_INSTALLATION_ID".to_string(), "77".to_string()),
        // The App wins over a token.
        ("GH_TOKEN".to_string(), "ignored".to_string()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    if via_path {
        let p = dir.path().join("app.pem");
        std::fs::write(&p, &pem).unwrap();
        env.insert(
            "GITHUB_APP_PRIVATE_KEY_PATH".into(),
            p.display().to_string(),
        );
        let src = source_env("", &env).unwrap();
        return (gh, src);
    }
    env.insert("GITHUB_APP_PRIVATE_KEY".into(), pem);
    let src = source_env("", &env).unwrap();
    (gh, src)
}

#[tokio::test]
async fn github_app_jwt_is_verified_and_the_token_reused() {
    let (gh, src) = app_case(false, TimeDelta::hours(1), false).await;
    src.current().await.unwrap();
    let r = src.current().await.unwrap();
    src.fetch(&r.layers[0], 0).await.unwrap();
    let st = gh.state();
    assert_eq!(
        st.app.as_ref().unwrap().minted,
        1,
        "one exchange for an hour-long token"
    );
    assert!(
        st.seen
            .iter()
            .any(|s| s.path_and_query == "/app/installations/77/access_tokens" && s.status == 201)
    );
    assert!(
        st.seen
            .iter()
            .filter(|s| s.path_and_query.starts_with("/repos/"))
            .all(|s| s.authorization.as_deref() == Some("Bearer ghs_installation_1")),
        "API calls carry the installation token"
    );
}

#[tokio::test]
async fn github_app_pkcs1_key_from_path_and_refresh_near_expiry() {
    // Tokens valid 4 minutes are inside the 5-minute margin: every request trades anew.
    let (gh, src) = app_case(true, TimeDelta::minutes(4), true).await;
    src.current().await.unwrap();
    src.current().await.unwrap();
    assert_eq!(gh.state().app.as_ref().unwrap().minted, 2);
}

#[tokio::test]
async fn github_app_with_the_wrong_key_is_refused() {
    let (gh, src) = app_case(false, TimeDelta::hours(1), false).await;
    let other = sources::ghr::auth::parse_rsa_pem(&rsa_pem(false)).unwrap();
    gh.state().app.as_mut().unwrap().public_key = ring::signature::KeyPair::public_key(&other)
        .as_ref()
        .to_vec();
    match src.current().await {
        Err(SourceError::Permanent(m)) => {
            assert!(m.contains("installation token") && m.contains("401"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
