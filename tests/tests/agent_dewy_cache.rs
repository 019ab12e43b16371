//! `deploy-agent --registry URL -cache URL` end to end (spec dewy.md 6.2-6.4, 10 "Shared
//! cache"): two hosts sharing an S3 (moto) or GCS (fake-gcs-server) cache with
//! `registry-ttl` poll the registry and download the artifact once between them; an outage
//! of the registry serves the stale shared result; a corrupt entry is bypassed; `file:///dir`
//! moves Dewy's cache directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use e2e::peers::{FakeGcs, Moto};
use e2e::*;

const REFRESHED: &str = "Registry result refreshed from upstream";
const WRITTEN: &str = "Artifact written to the shared cache";
const SHARED_HIT: &str = "Artifact read from the shared cache";

fn artifact_name() -> String {
    format!("app_linux_{}.tar.gz", goarch())
}

/// A tar.gz holding `app.txt` = `text`, made by tar(1).
fn tarball(text: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("app.txt"), text).unwrap();
    let out = tmp.path().join("a.tar.gz");
    let st = Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(tmp.path())
        .arg("app.txt")
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(out).unwrap()
}

/// One fleet host: its own directory, the agent's cwd and `-dir`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("e2e-dewy-cache")
            .tempdir()
            .unwrap();
        let p = dir.path().join("deploy.sh");
        fs::write(&p, "#!/bin/sh\necho \"$NEWID\" >> deploys.log\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        Host { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn once(&self, registry: &str, cache: &str, env: &[(&str, String)]) -> Out {
        let mut c = dewy_agent(self.path());
        c.args(["--registry", registry, "-cache", cache, "-once", "-v"]);
        for (k, v) in env {
            c.env(k, v);
        }
        run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS)
    }

    fn deployed_text(&self) -> String {
        fs::read_to_string(self.path().join("current").join("app.txt")).unwrap()
    }

    fn dewy_key(&self, key: &str) -> Option<Vec<u8>> {
        fs::read(self.path().join(".dewy/cache").join(key)).ok()
    }
}

fn log(out: &Out) -> String {
    format!("{}{}", out.stdout_str(), out.stderr_str())
}

fn count(out: &Out, needle: &str) -> usize {
    log(out).matches(needle).count()
}

/// The registry entry's name: Dewy's rule, from the registry URL with its query re-encoded.
fn entry_name(prefix: &str, canonical: &str) -> String {
    let hex = sha256_hex(format!("{canonical}|linux|{}", goarch()).as_bytes());
    format!("{prefix}registry-cache/{}.json", &hex[..16])
}

fn assert_dewy_entry(doc: &[u8], tag: &str, artifact_url: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["fetched_at", "locked_at", "response"], "{v}");
    assert_eq!(v["locked_at"], "0001-01-01T00:00:00Z");
    assert_eq!(v["response"]["Tag"], tag);
    assert_eq!(v["response"]["ArtifactURL"], artifact_url);
    v
}

#[test]
fn s3_two_hosts_poll_and_download_once_then_survive_an_outage() {
    let moto = Moto::start();
    moto.bucket("rel");
    moto.bucket("fleet");
    let name = artifact_name();
    let archive = tarball("version one\n");
    moto.put("rel", &format!("app/v1.0.0/{name}"), &archive);
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    let cache = format!(
        "s3://us-east-1/fleet/.cache/e2e?endpoint={}&registry-ttl=1h",
        moto.url()
    );
    let key = format!("v1.0.0--{name}");
    let (a, b) = (Host::new(), Host::new());

    let out_a = a.once(&registry, &cache, &[]);
    out_a.assert_ok();
    assert_eq!(a.deployed_text(), "version one\n");
    assert_eq!(count(&out_a, REFRESHED), 1, "{}", log(&out_a));
    assert_eq!(count(&out_a, WRITTEN), 1, "{}", log(&out_a));
    // Moto::get reads text; the archive is binary.
    let object = moto.curl(&[&format!("{}/fleet/.cache/e2e/{key}", moto.url())]);
    assert_eq!(object, archive);
    assert_eq!(
        moto.get("fleet", ".cache/e2e/current").unwrap().0,
        key.as_bytes()
    );
    let canonical = format!(
        "s3://us-east-1/rel/app?endpoint=http%3A%2F%2F127.0.0.1%3A{}",
        moto.port
    );
    let entry = entry_name(".cache/e2e/", &canonical);
    let (doc, _) = moto.get("fleet", &entry).expect("registry entry");
    let artifact_url = format!(
        "s3://us-east-1/rel/app/v1.0.0/{name}?endpoint={}",
        moto.url()
    );
    assert_dewy_entry(&doc, "v1.0.0", &artifact_url);

    // The registry loses the artifact: host b can only deploy from the shared cache.
    moto.curl(&[
        "-X",
        "DELETE",
        &format!("{}/rel/app/v1.0.0/{name}", moto.url()),
    ]);
    let out_b = b.once(&registry, &cache, &[]);
    out_b.assert_ok();
    assert_eq!(b.deployed_text(), "version one\n");
    assert_eq!(count(&out_b, REFRESHED), 0, "{}", log(&out_b));
    assert_eq!(count(&out_b, WRITTEN), 0, "{}", log(&out_b));
    assert_eq!(count(&out_b, SHARED_HIT), 1, "{}", log(&out_b));
    assert_eq!(b.dewy_key(&key).as_deref(), Some(&archive[..]));
    assert_eq!(b.dewy_key("current").as_deref(), Some(key.as_bytes()));

    // Registry outage (nothing listed) after the TTL: the stale result is served.
    let mut stale: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    stale["fetched_at"] = "2020-01-01T00:00:00Z".into();
    moto.put("fleet", &entry, stale.to_string().as_bytes());
    let c = Host::new();
    let out_c = c.once(&registry, &cache, &[]);
    out_c.assert_ok();
    assert_eq!(c.deployed_text(), "version one\n");
    assert!(
        log(&out_c).contains("serving the cached result"),
        "{}",
        log(&out_c)
    );
    let (after, _) = moto.get("fleet", &entry).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(after["fetched_at"], "2020-01-01T00:00:00Z", "still stale");
    assert_eq!(after["locked_at"], "0001-01-01T00:00:00Z", "lock released");

    // A corrupt entry is bypassed: the registry is asked directly, and it lists no release
    // now, so nothing is deployed (no stale answer from a bypassed entry).
    moto.put("fleet", &entry, b"{corrupt");
    let d = Host::new();
    let out_d = d.once(&registry, &cache, &[]);
    assert!(!d.path().join("current").exists(), "{}", log(&out_d));
    assert!(
        log(&out_d).contains("registry cache unreadable"),
        "{}",
        log(&out_d)
    );
    assert_eq!(moto.get("fleet", &entry).unwrap().0, b"{corrupt");
}

#[test]
fn gs_two_hosts_poll_and_download_once() {
    let gcs = FakeGcs::start();
    gcs.bucket("rel");
    gcs.bucket("fleet");
    let name = artifact_name();
    let archive = tarball("gcs one\n");
    gcs.put("rel", &format!("app/v1.0.0/{name}"), &archive);
    let env = [("STORAGE_EMULATOR_HOST", gcs.url())];
    let registry = "gs://rel/app";
    let cache = "gs://fleet/.cache/g?registry-ttl=1h";
    let (a, b) = (Host::new(), Host::new());
    let out_a = a.once(registry, cache, &env);
    out_a.assert_ok();
    let out_b = b.once(registry, cache, &env);
    out_b.assert_ok();
    assert_eq!(a.deployed_text(), "gcs one\n");
    assert_eq!(b.deployed_text(), "gcs one\n");
    assert_eq!(count(&out_a, REFRESHED) + count(&out_b, REFRESHED), 1);
    assert_eq!(count(&out_a, WRITTEN) + count(&out_b, WRITTEN), 1);
    assert_eq!(count(&out_b, SHARED_HIT), 1, "{}", log(&out_b));
    let key = format!("v1.0.0--{name}");
    assert!(gcs.meta("fleet", &format!(".cache/g/{key}")).is_some());
    let entry = entry_name(".cache/g/", registry);
    let meta = gcs.meta("fleet", &entry).expect("registry entry");
    assert!(meta["generation"].is_string(), "{meta}");
}

#[test]
fn file_cache_dir() {
    let moto = Moto::start();
    moto.bucket("rel");
    let name = artifact_name();
    moto.put("rel", &format!("app/v1.0.0/{name}"), &tarball("file one\n"));
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    let keys = tempfile::tempdir().unwrap();
    let cache = format!("file://{}?registry-ttl=30s", keys.path().display());
    let host = Host::new();
    let out = host.once(&registry, &cache, &[]);
    out.assert_ok();
    assert!(
        log(&out).contains("registry-ttl is ignored"),
        "{}",
        log(&out)
    );
    assert_eq!(count(&out, REFRESHED), 0);
    let key = format!("v1.0.0--{name}");
    assert!(keys.path().join(&key).is_file());
    assert_eq!(
        fs::read(keys.path().join("current")).unwrap(),
        key.as_bytes()
    );
    assert!(
        !host.path().join(".dewy").exists(),
        "the URL's directory is used"
    );
}

#[test]
fn unknown_cache_scheme() {
    let host = Host::new();
    let out = host.once("s3://us-east-1/rel/app", "x://y", &[]);
    out.assert_code(2);
    assert!(
        log(&out).contains("unsupported cache scheme \"x\"; supported schemes: file, s3, gs"),
        "{}",
        log(&out)
    );
}
