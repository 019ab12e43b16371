//! Dewy's shared cache (`--cache s3://…|gs://…?registry-ttl=D`, spec dewy.md 6) against real
//! peers: moto and fake-gcs-server hold both the registry and the cache bucket. Two members
//! (two `Shared` with their own staging directories and lock owners) stand for two hosts; the
//! registry is a real `Source` whose calls are counted.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::dewy::artifact::Platform;
use common::dewy::url::RegistryUrl;
use common::digest::Digest;
use e2e::peers::{FakeGcs, Moto};
use sources::bucket::Env;
use sources::cache::{CacheConfig, Shared, config};
use sources::http::{HttpClient, HttpConfig};
use sources::{Layer, Release, Source, SourceError};
use tokio::io::AsyncReadExt;

const LINUX_AMD64: Platform<'static> = Platform {
    os: "linux",
    arch: "amd64",
};
const ARTIFACT: &[u8] = b"the v1.0.0 linux amd64 archive";
const KEY: &str = "v1.0.0--app_linux_amd64.tar.gz";

fn http() -> HttpClient {
    HttpClient::new(&HttpConfig::default()).unwrap()
}

fn s3_env() -> Env {
    Arc::new(|k: &str| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("test".to_string()),
        _ => None,
    })
}

fn gs_env(gcs: &FakeGcs) -> Env {
    let host = gcs.url();
    Arc::new(move |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| host.clone()))
}

/// One fleet member: the shared cache in front of a registry whose calls are counted.
struct Member {
    shared: Shared,
    upstream: Source,
    polls: AtomicUsize,
    downloads: AtomicUsize,
    /// Makes the registry fail (an outage).
    down: std::sync::atomic::AtomicBool,
    _staging: tempfile::TempDir,
}

impl Member {
    fn new(registry: &str, cache: &str, owner: &str, env: Env) -> Member {
        Member::with_max(registry, cache, owner, env, 1 << 20)
    }

    fn with_max(registry: &str, cache: &str, owner: &str, env: Env, max: u64) -> Member {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let url = RegistryUrl::parse(registry).unwrap();
        let upstream = match &url {
            RegistryUrl::S3 { .. } => Source::S3(
                sources::s3::S3Source::new(&url, &http(), env.clone())
                    .unwrap()
                    .with_platform(LINUX_AMD64)
                    .into(),
            ),
            _ => Source::Gs(
                sources::gs::GsSource::new(&url, &http(), env.clone())
                    .unwrap()
                    .with_platform(LINUX_AMD64)
                    .into(),
            ),
        };
        let staging = tempfile::tempdir().unwrap();
        let config = config::parse(cache).unwrap();
        let shared = Shared::open(
            &config,
            registry,
            staging.path().to_path_buf(),
            max,
            &http(),
            env,
        )
        .unwrap()
        .expect("a bucket cache")
        .with_owner(owner);
        Member {
            shared,
            upstream,
            polls: AtomicUsize::new(0),
            downloads: AtomicUsize::new(0),
            down: Default::default(),
            _staging: staging,
        }
    }

    async fn current(&self) -> Result<Release, SourceError> {
        self.shared
            .current(|| async {
                self.polls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(SourceError::Transient {
                        message: "registry down".into(),
                        retry_after: None,
                    });
                }
                self.upstream.current().await
            })
            .await
    }

    async fn fetch(&self, layer: &Layer) -> Result<Vec<u8>, String> {
        let mut stream = self
            .shared
            .fetch(layer, 0, |offset| async move {
                self.downloads.fetch_add(1, Ordering::SeqCst);
                self.upstream.fetch(layer, offset).await
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        stream
            .read_to_end(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn staged(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self._staging.path().join(name)).ok()
    }

    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }

    fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }
}

/// The object name of the registry entry of `canonical` (the registry URL with its query
/// re-encoded), computed from Dewy's rule on its own.
fn entry_name(prefix: &str, canonical: &str) -> String {
    let p = Platform::current();
    let hex = Digest::of(format!("{canonical}|{}|{}", p.os, p.arch).as_bytes()).to_hex();
    format!("{prefix}registry-cache/{}.json", &hex[..16])
}

fn checksums() -> Vec<u8> {
    format!(
        "{}  app_linux_amd64.tar.gz\n",
        Digest::of(ARTIFACT).to_hex()
    )
    .into_bytes()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Dewy's entry shape: Go field names, `locked_by` omitted, the zero `locked_at`;
/// `ChecksumURL` (Dewy #491) when the release publishes one.
fn assert_dewy_shape(entry: &serde_json::Value, artifact_url: &str, checksum_url: Option<&str>) {
    let obj = entry.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["fetched_at", "locked_at", "response"], "{entry}");
    assert_eq!(entry["locked_at"], "0001-01-01T00:00:00Z");
    let r = entry["response"].as_object().unwrap();
    let mut fields: Vec<&str> = r.keys().map(String::as_str).collect();
    fields.sort();
    match checksum_url {
        Some(url) => {
            assert_eq!(
                fields,
                [
                    "ArtifactURL",
                    "ChecksumURL",
                    "CreatedAt",
                    "ID",
                    "Slot",
                    "Tag"
                ]
            );
            assert_eq!(r["ChecksumURL"], url);
        }
        None => assert_eq!(fields, ["ArtifactURL", "CreatedAt", "ID", "Slot", "Tag"]),
    }
    assert_eq!(r["Tag"], "v1.0.0");
    assert_eq!(r["ArtifactURL"], artifact_url);
    assert_eq!(r["Slot"], "");
    let fetched = entry["fetched_at"].as_str().unwrap();
    assert!(
        common::timefmt::parse_rfc3339(fetched).is_some(),
        "{fetched}"
    );
    assert!(r["CreatedAt"].is_string());
}

/// An entry as another member left it `age` ago, for a staleness test.
fn aged(entry: &[u8], age: time::Duration) -> Vec<u8> {
    let mut v = json(entry);
    let t = common::timefmt::now() - age;
    v["fetched_at"] = serde_json::Value::String(common::timefmt::rfc3339_nano(t));
    serde_json::to_vec(&v).unwrap()
}

struct S3Fleet {
    moto: Moto,
    registry: String,
    cache: String,
    entry: String,
}

fn s3_fleet(ttl: &str) -> S3Fleet {
    let moto = Moto::start();
    moto.bucket("rel");
    moto.bucket("fleet");
    moto.put("rel", "app/v1.0.0/app_linux_amd64.tar.gz", ARTIFACT);
    moto.put("rel", "app/v1.0.0/checksums.txt", &checksums());
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    let cache = format!(
        "s3://us-east-1/fleet/.cache/t?registry-ttl={ttl}&endpoint={}",
        moto.url()
    );
    // Go's `url.Values.Encode` re-escapes the query for the key.
    let canonical = format!(
        "s3://us-east-1/rel/app?endpoint=http%3A%2F%2F127.0.0.1%3A{}",
        moto.port
    );
    let entry = entry_name(".cache/t/", &canonical);
    S3Fleet {
        moto,
        registry,
        cache,
        entry,
    }
}

#[tokio::test]
async fn s3_two_members_poll_and_download_once() {
    let f = s3_fleet("1h");
    let a = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    let b = Member::new(&f.registry, &f.cache, "b:2", s3_env());

    let ra = a.current().await.unwrap();
    assert_eq!(a.polls(), 1);
    assert!(
        ra.layers[0].digest.is_some(),
        "the polling member saw the checksum"
    );
    let (entry, _) = f.moto.get("fleet", &f.entry).expect("entry written");
    let artifact_url = format!(
        "s3://us-east-1/rel/app/v1.0.0/app_linux_amd64.tar.gz?endpoint={}",
        f.moto.url()
    );
    let checksum_url = format!(
        "s3://us-east-1/rel/app/v1.0.0/checksums.txt?endpoint={}",
        f.moto.url()
    );
    assert_dewy_shape(&json(&entry), &artifact_url, Some(&checksum_url));

    let rb = b.current().await.unwrap();
    assert_eq!(b.polls(), 0, "b answered from the shared entry");
    assert_eq!(
        (rb.tag.as_str(), rb.layers[0].locator.as_str()),
        ("v1.0.0", artifact_url.as_str())
    );
    assert_eq!(rb.layers[0].name, "app_linux_amd64.tar.gz");
    assert_eq!(rb.created_at, ra.created_at);

    assert_eq!(a.fetch(&ra.layers[0]).await.unwrap(), ARTIFACT);
    assert_eq!(a.downloads(), 1);
    let (cached, _) = f.moto.get("fleet", &format!(".cache/t/{KEY}")).unwrap();
    assert_eq!(cached, ARTIFACT);
    let (current, _) = f.moto.get("fleet", ".cache/t/current").unwrap();
    assert_eq!(current, KEY.as_bytes(), "current is the key, no newline");
    assert_eq!(a.staged(KEY).as_deref(), Some(ARTIFACT));

    assert_eq!(b.fetch(&rb.layers[0]).await.unwrap(), ARTIFACT);
    assert_eq!(b.downloads(), 0, "b read the artifact from the bucket");
    assert_eq!(b.staged(KEY).as_deref(), Some(ARTIFACT));
    assert_eq!(b.staged("current").as_deref(), Some(KEY.as_bytes()));

    // A stale entry: the next member to look refreshes it for everyone, once.
    f.moto
        .put("fleet", &f.entry, &aged(&entry, time::Duration::hours(2)));
    b.current().await.unwrap();
    a.current().await.unwrap();
    assert_eq!((a.polls(), b.polls()), (1, 1));
    let (refreshed, _) = f.moto.get("fleet", &f.entry).unwrap();
    assert_dewy_shape(&json(&refreshed), &artifact_url, Some(&checksum_url));
}

/// A second member that arrives while the first one's claim on a new entry is in progress
/// waits for its answer. It starts once that claim is in the bucket, not at the same instant:
/// moto checks a conditional PUT and stores the object in two steps without a lock, so two
/// simultaneous `If-None-Match: *` creates can both succeed there (S3 itself serialises them),
/// and a test of that race against moto fails now and then for moto's sake.
#[tokio::test]
async fn s3_a_claim_in_progress_is_waited_for() {
    let f = s3_fleet("1h");
    let a = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    let b = Member::new(&f.registry, &f.cache, "b:2", s3_env());
    let first = a.current();
    tokio::pin!(first);
    let mut done = None;
    while done.is_none() && f.moto.get("fleet", &f.entry).is_none() {
        tokio::select! {
            r = &mut first => done = Some(r),
            () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
        }
    }
    let (ra, rb) = match done {
        Some(ra) => (ra, b.current().await),
        None => tokio::join!(first, b.current()),
    };
    assert_eq!(ra.unwrap().tag, rb.unwrap().tag);
    assert_eq!(a.polls() + b.polls(), 1, "b waited for a's answer");
    let (entry, _) = f.moto.get("fleet", &f.entry).unwrap();
    assert!(json(&entry).get("locked_by").is_none(), "lock released");
}

#[tokio::test]
async fn s3_outage_serves_the_stale_result_and_a_corrupt_entry_is_bypassed() {
    let f = s3_fleet("30s");
    let a = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    a.current().await.unwrap();
    let (entry, _) = f.moto.get("fleet", &f.entry).unwrap();
    let old = aged(&entry, time::Duration::minutes(5));
    f.moto.put("fleet", &f.entry, &old);

    a.down.store(true, Ordering::SeqCst);
    let stale = a.current().await.expect("the stale result");
    assert_eq!(stale.tag, "v1.0.0");
    assert_eq!(a.polls(), 2, "the registry was asked");
    let (after, _) = f.moto.get("fleet", &f.entry).unwrap();
    let after = json(&after);
    assert_eq!(after["locked_at"], "0001-01-01T00:00:00Z", "lock released");
    assert_eq!(after["fetched_at"], json(&old)["fetched_at"], "still stale");

    // Nothing to fall back on: the registry's error.
    let b = Member::new(
        &f.registry,
        &f.cache.replace(".cache/t", ".cache/empty"),
        "b:2",
        s3_env(),
    );
    b.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        b.current().await,
        Err(SourceError::Transient { .. })
    ));

    // A corrupt entry is bypassed, and left alone.
    f.moto.put("fleet", &f.entry, b"{not json");
    a.down.store(false, Ordering::SeqCst);
    assert_eq!(a.current().await.unwrap().tag, "v1.0.0");
    assert_eq!(a.polls(), 3);
    assert_eq!(f.moto.get("fleet", &f.entry).unwrap().0, b"{not json");
}

#[tokio::test]
async fn s3_poisoned_bucket_is_not_deployed() {
    let f = s3_fleet("0s");
    f.moto
        .put("fleet", &format!(".cache/t/{KEY}"), b"evil bytes");
    let a = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    let r = a.current().await.unwrap();
    assert!(r.layers[0].digest.is_some());
    assert_eq!(a.fetch(&r.layers[0]).await.unwrap(), ARTIFACT);
    assert_eq!(
        a.downloads(),
        1,
        "the registry's bytes replaced the bucket's"
    );
    assert_eq!(
        f.moto.get("fleet", &format!(".cache/t/{KEY}")).unwrap().0,
        ARTIFACT
    );
    assert!(
        f.moto.get("fleet", &f.entry).is_none(),
        "no registry-ttl, no entry"
    );

    // Registry bytes that do not match their checksum are refused and not cached.
    f.moto
        .put("rel", "app/v1.0.0/app_linux_amd64.tar.gz", b"tampered");
    let b = Member::new(
        &f.registry,
        &f.cache.replace(".cache/t", ".cache/u"),
        "b:2",
        s3_env(),
    );
    let r = b.current().await.unwrap();
    let err = b.fetch(&r.layers[0]).await.unwrap_err();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(f.moto.get("fleet", &format!(".cache/u/{KEY}")).is_none());
    assert_eq!(b.staged(KEY), None);
}

/// The fleet's S3 source behind its shared cache, staging in `staging`.
fn shared_source(f: &S3Fleet, staging: &std::path::Path) -> Source {
    let shared = Shared::open(
        &config::parse(&f.cache).unwrap(),
        &f.registry,
        staging.to_path_buf(),
        1 << 20,
        &http(),
        s3_env(),
    )
    .unwrap()
    .unwrap();
    let url = RegistryUrl::parse(&f.registry).unwrap();
    Source::S3(
        sources::s3::S3Source::new(&url, &http(), s3_env())
            .unwrap()
            .with_platform(LINUX_AMD64)
            .into(),
    )
    .with_shared_cache(shared)
}

/// The whole `Source`: `with_shared_cache` routes `current` and `fetch` through the cache.
#[tokio::test]
async fn s3_source_with_shared_cache() {
    let f = s3_fleet("1h");
    let warm = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    let r = warm.current().await.unwrap();
    warm.fetch(&r.layers[0]).await.unwrap();
    // The registry loses the release: a member that still gets it can only have it from
    // the cache.
    f.moto.curl(&[
        "-X",
        "DELETE",
        &format!("{}/rel/app/v1.0.0/app_linux_amd64.tar.gz", f.moto.url()),
    ]);
    let staging = tempfile::tempdir().unwrap();
    let source = shared_source(&f, staging.path());
    let r = source.current().await.unwrap();
    let mut out = Vec::new();
    source
        .fetch(&r.layers[0], 0)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out, ARTIFACT);
    // A resumed read is served from the staged copy.
    let mut tail = Vec::new();
    source
        .fetch(&r.layers[0], 4)
        .await
        .unwrap()
        .read_to_end(&mut tail)
        .await
        .unwrap();
    assert_eq!(tail, &ARTIFACT[4..]);
    assert_eq!(
        r.layers[0].digest,
        Some(Digest::of(ARTIFACT)),
        "the checksum file the shared result names was read"
    );
    // Read once per release, not at every poll: gone from the registry now, still known.
    f.moto.curl(&[
        "-X",
        "DELETE",
        &format!("{}/rel/app/v1.0.0/checksums.txt", f.moto.url()),
    ]);
    let again = source.current().await.unwrap();
    assert_eq!(again.layers[0].digest, Some(Digest::of(ARTIFACT)));

    // The bucket's copy is replaced by other bytes: a host without its own staged copy,
    // taking the shared result, knows the sha256 and refuses them (the registry has lost
    // the artifact, so there is nothing to deploy).
    f.moto
        .put("fleet", &format!(".cache/t/{KEY}"), b"evil bytes");
    let fresh = tempfile::tempdir().unwrap();
    let source = shared_source(&f, fresh.path());
    f.moto.put("rel", "app/v1.0.0/checksums.txt", &checksums());
    let r = source.current().await.unwrap();
    assert_eq!(r.layers[0].digest, Some(Digest::of(ARTIFACT)));
    let mut out = Vec::new();
    let read = match source.fetch(&r.layers[0], 0).await {
        Ok(mut stream) => stream.read_to_end(&mut out).await.map(|_| ()),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    assert!(read.is_err() && out != b"evil bytes", "{read:?} {out:?}");
}

fn gcs_media(gcs: &FakeGcs, bucket: &str, name: &str) -> Option<Vec<u8>> {
    let name = name.replace('/', "%2F").replace('+', "%2B");
    let out = Command::new("curl")
        .args([
            "-fs",
            &format!("{}/storage/v1/b/{bucket}/o/{name}?alt=media", gcs.url()),
        ])
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

#[tokio::test]
async fn gs_two_members_poll_and_download_once() {
    let gcs = FakeGcs::start();
    gcs.bucket("rel");
    gcs.bucket("fleet");
    gcs.put("rel", "app/v1.0.0/app_linux_amd64.tar.gz", ARTIFACT);
    let registry = "gs://rel/app";
    let cache = "gs://fleet/.cache/g?registry-ttl=30s";
    let entry = entry_name(".cache/g/", registry);
    let a = Member::new(registry, cache, "a:1", gs_env(&gcs));
    let b = Member::new(registry, cache, "b:2", gs_env(&gcs));

    let (ra, rb) = tokio::join!(a.current(), b.current());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(a.polls() + b.polls(), 1, "one poll for both");
    assert_eq!(ra.layers[0].locator, rb.layers[0].locator);
    let doc = gcs_media(&gcs, "fleet", &entry).expect("entry written");
    assert_dewy_shape(
        &json(&doc),
        "gs://rel/app/v1.0.0/app_linux_amd64.tar.gz",
        None,
    );
    b.current().await.unwrap();
    a.current().await.unwrap();
    assert_eq!(a.polls() + b.polls(), 1);

    assert_eq!(a.fetch(&ra.layers[0]).await.unwrap(), ARTIFACT);
    assert_eq!(b.fetch(&rb.layers[0]).await.unwrap(), ARTIFACT);
    assert_eq!(a.downloads() + b.downloads(), 1, "downloaded once");
    assert_eq!(
        gcs_media(&gcs, "fleet", &format!(".cache/g/{KEY}")).as_deref(),
        Some(ARTIFACT)
    );
    assert_eq!(
        gcs_media(&gcs, "fleet", ".cache/g/current").as_deref(),
        Some(KEY.as_bytes())
    );

    // Stale: refreshed once, the entry's generation check lets one writer through.
    gcs.put("fleet", &entry, &aged(&doc, time::Duration::hours(1)));
    let (x, y) = tokio::join!(a.current(), b.current());
    x.unwrap();
    y.unwrap();
    assert_eq!(a.polls() + b.polls(), 2);

    // Corrupt: bypassed.
    gcs.put("fleet", &entry, b"[]");
    a.current().await.unwrap();
    assert_eq!(a.polls() + b.polls(), 3);
    assert_eq!(
        gcs_media(&gcs, "fleet", &entry).as_deref(),
        Some(&b"[]"[..])
    );
}

#[test]
fn file_backend_has_no_shared_cache() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}?registry-ttl=30s", dir.path().display());
    let config = config::parse(&url).unwrap();
    assert_eq!(
        config.backend,
        sources::cache::Backend::File {
            dir: Some(dir.path().to_path_buf())
        }
    );
    let shared = Shared::open(
        &config,
        "ghr://o/r",
        dir.path().to_path_buf(),
        1,
        &http(),
        s3_env(),
    )
    .unwrap();
    assert!(shared.is_none());
    assert!(!config.is_atomic());
    assert_eq!(config::parse("").unwrap(), CacheConfig::default_file());
}

/// An entry as a member holding the refresh lock leaves it: no fresh answer, locked now.
fn locked_entry(locked_at: time::OffsetDateTime) -> Vec<u8> {
    serde_json::json!({
        "fetched_at": "0001-01-01T00:00:00Z",
        "locked_at": common::timefmt::rfc3339_nano(locked_at),
        "locked_by": "other-host:7",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn s3_a_held_lock_is_waited_for_and_an_expired_one_taken_over() {
    let f = s3_fleet("1h");
    let a = Member::new(&f.registry, &f.cache, "a:1", s3_env());
    f.moto
        .put("fleet", &f.entry, &locked_entry(common::timefmt::now()));
    // The lock holder publishes its answer while `a` waits: `a` serves it without polling.
    let published = serde_json::json!({
        "response": {"ID": "x", "Tag": "v9.9.9", "ArtifactURL": "s3://us-east-1/rel/app/v9.9.9/app_linux_amd64.tar.gz",
                     "CreatedAt": null, "Slot": ""},
        "fetched_at": common::timefmt::rfc3339_nano(common::timefmt::now()),
        "locked_at": "0001-01-01T00:00:00Z",
    })
    .to_string();
    let waiting = a.current();
    let publish = async {
        // Any time within the lock TTL (60 s here) works; a little later than `a`'s first read.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        f.moto.put("fleet", &f.entry, published.as_bytes());
    };
    let (got, ()) = tokio::join!(waiting, publish);
    let got = got.unwrap();
    assert_eq!(got.tag, "v9.9.9", "the lock holder's answer");
    assert_eq!(got.layers[0].digest, None);
    assert_eq!(a.polls(), 0);

    // A lock older than the lock TTL is abandoned: taken over and refreshed.
    let b = Member::new(
        &f.registry,
        &f.cache.replace(".cache/t", ".cache/v"),
        "b:2",
        s3_env(),
    );
    let canonical = format!(
        "s3://us-east-1/rel/app?endpoint=http%3A%2F%2F127.0.0.1%3A{}",
        f.moto.port
    );
    let entry_v = entry_name(".cache/v/", &canonical);
    f.moto.put(
        "fleet",
        &entry_v,
        &locked_entry(common::timefmt::now() - time::Duration::minutes(10)),
    );
    assert_eq!(b.current().await.unwrap().tag, "v1.0.0");
    assert_eq!(b.polls(), 1);
    let (doc, _) = f.moto.get("fleet", &entry_v).unwrap();
    assert!(
        json(&doc).get("locked_by").is_none(),
        "{}",
        String::from_utf8_lossy(&doc)
    );
}

#[test]
fn registry_ttl_needs_a_one_artifact_registry() {
    let dir = tempfile::tempdir().unwrap();
    let config = config::parse("s3://us-east-1/fleet/c?registry-ttl=30s").unwrap();
    let open = |registry: &str| {
        Shared::open(
            &config,
            registry,
            dir.path().to_path_buf(),
            1,
            &http(),
            s3_env(),
        )
        .unwrap()
        .unwrap()
    };
    let key = open("ghr://o/r").registry_key().unwrap();
    assert!(key.starts_with("c/registry-cache/"), "{key}");
    assert_eq!(open("img://ghcr.io/o/app").registry_key(), None);
}

#[tokio::test]
async fn s3_reads_are_capped() {
    let f = s3_fleet("0s");
    f.moto.put("fleet", &format!(".cache/t/{KEY}"), &[b'x'; 64]);
    let small = ARTIFACT.len() as u64 - 1;
    let a = Member::with_max(&f.registry, &f.cache, "a:1", s3_env(), small);
    let r = a.current().await.unwrap();
    let err = a.fetch(&r.layers[0]).await.unwrap_err();
    assert!(err.contains(&format!("larger than {small} bytes")), "{err}");
    assert_eq!(a.downloads(), 1, "the oversized bucket object was skipped");
    assert_eq!(a.staged(KEY), None);
}
