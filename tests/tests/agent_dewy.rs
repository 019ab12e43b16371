//! `deploy-agent --registry URL` end to end: Dewy's registries through the agent's pipeline,
//! Dewy's release layout (`releases/<UTC ts>/`, absolute `current`, newest 7 kept, cache keys
//! `<tag>--<artifact>` and `current`). Peers: moto (S3), docker-registry + skopeo + umoci
//! (img://), our own registry (ssh://).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::peers::{FakeGcs, Moto, OciRegistry};
use e2e::*;

/// An archive of `files` (name, content, mode) in `kind` (`zip`, `bz2`, `xz`), made by
/// Python's standard library: an independent writer of those formats.
fn py_archive(kind: &str, files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    let mut args = vec![kind.to_string(), out.display().to_string()];
    for (i, (name, data, mode)) in files.iter().enumerate() {
        let p = tmp.path().join(format!("f{i}"));
        fs::write(&p, data).unwrap();
        args.extend([name.to_string(), p.display().to_string(), format!("{mode}")]);
    }
    const PY: &str = r#"
import sys, tarfile, zipfile
kind, out, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
files = [(rest[i], rest[i+1], int(rest[i+2])) for i in range(0, len(rest), 3)]
if kind == "zip":
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, path, mode in files:
            zi = zipfile.ZipInfo(name)
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, open(path, "rb").read())
else:
    with tarfile.open(out, "w:" + kind) as t:
        for name, path, mode in files:
            ti = t.gettarinfo(path, name)
            ti.mode = mode
            with open(path, "rb") as f:
                t.addfile(ti, f)
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .args(&args)
        .status()
        .unwrap();
    assert!(st.success(), "python archive {kind}");
    fs::read(out).unwrap()
}

/// The host: the agent's cwd and `-dir`, a deploy script recording its environment.
struct Host {
    dir: tempfile::TempDir,
}

const SCRIPT: &str = "#!/bin/sh\nenv > \"env-$NEWID.txt\"\necho \"$NEWID\" >> deploys.log\n";

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("e2e-dewy")
            .tempdir()
            .unwrap();
        let p = dir.path().join("deploy.sh");
        fs::write(&p, SCRIPT).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        Host { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn command(&self, registry: &str, extra: &[&str]) -> Command {
        let mut c = dewy_agent(self.path());
        c.args(["--registry", registry, "-v"]).args(extra);
        c
    }
    fn once(&self, registry: &str, extra: &[&str]) -> Out {
        let mut c = self.command(registry, extra);
        c.arg("-once");
        run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS)
    }
    fn current(&self) -> PathBuf {
        fs::read_link(self.path().join("current")).expect("current symlink")
    }
    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path().join("releases"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn deploys(&self) -> Vec<String> {
        fs::read_to_string(self.path().join("deploys.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn env_of(&self, id: &str) -> String {
        fs::read_to_string(self.path().join(format!("env-{id}.txt"))).unwrap()
    }
}

fn config_hash(layer_hashes: &[&str]) -> String {
    let text: String = layer_hashes.iter().map(|h| format!("{h}\n")).collect();
    sha256_hex(text.as_bytes())
}

#[test]
fn s3_every_artifact_kind_deploys_and_seven_releases_are_kept() {
    let moto = Moto::start();
    moto.bucket("rel");
    let host = Host::new();
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    let arch = goarch();

    // First release: a tar.gz, no checksums file (hashed while downloading).
    let v1 = tar_gz(&[("bin/app", b"app 1.0.0")]);
    let v1_name = format!("app_linux_{arch}.tar.gz");
    moto.put("rel", &format!("app/v1.0.0/{v1_name}"), &v1);
    let out = host.once(&registry, &[]);
    out.assert_ok();
    let cur = host.current();
    assert!(cur.is_absolute(), "Dewy's current is absolute: {cur:?}");
    assert_eq!(
        cur.parent().unwrap(),
        fs::canonicalize(host.path()).unwrap().join("releases")
    );
    let ts = cur.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        ts.len() == 16 && ts.ends_with('Z') && ts.as_bytes()[8] == b'T',
        "{ts}"
    );
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"app 1.0.0"
    );
    assert_eq!(host.releases(), vec![ts.clone()]);
    // The script: NEWID is the configuration hash of the layer digests.
    let id1 = config_hash(&[&sha256_hex(&v1)]);
    assert_eq!(host.deploys(), vec![id1.clone()]);
    let env = host.env_of(&id1);
    assert!(env.contains(&format!("LAYER_0_NAME={v1_name}\n")), "{env}");
    assert!(env.contains("LAYER_0_VERSION=v1.0.0\n"), "{env}");
    assert!(env.contains("OLDID=\n"), "{env}");
    assert!(
        env.contains(&format!("NEWROOT={}\n", cur.display())),
        "{env}"
    );
    // Dewy's cache keys: the artifact under `<tag>--<name>`, and `current` naming it.
    let dewy = host.path().join(".dewy/cache");
    let key = format!("v1.0.0--{v1_name}");
    assert_eq!(fs::read(dewy.join(&key)).unwrap(), v1);
    assert_eq!(fs::read_to_string(dewy.join("current")).unwrap(), key);
    assert_eq!(
        fs::read(host.path().join("cache").join(sha256_hex(&v1))).unwrap(),
        v1
    );
    // The audit object (Dewy's report) next to the artifact.
    let listing = moto.list("rel", "app/v1.0.0/shipped_to_");
    assert!(
        listing.contains("_assets_at_") && listing.contains(".txt</Key>"),
        "{listing}"
    );

    // Nothing new: no download, no new release.
    let out = host.once(&registry, &[]);
    out.assert_ok();
    assert_eq!(host.releases(), vec![ts.clone()]);
    assert_eq!(host.deploys().len(), 1);

    // Every other artifact kind, one release each: 8 more deploys, 7 releases kept.
    let plain = b"#!/bin/sh\necho plain\n".to_vec();
    let kinds: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "v1.1.0",
            format!("app_linux_{arch}.zip"),
            py_archive("zip", &[("bin/app", b"app 1.1.0", 0o755)]),
            "bin/app",
        ),
        (
            "v1.2.0",
            format!("app_linux_{arch}.tar.bz2"),
            py_archive("bz2", &[("bin/app", b"app 1.2.0", 0o755)]),
            "bin/app",
        ),
        (
            "v1.3.0",
            format!("app_linux_{arch}.txz"),
            py_archive("xz", &[("bin/app", b"app 1.3.0", 0o755)]),
            "bin/app",
        ),
        (
            "v1.4.0",
            format!("app_linux_{arch}.tgz"),
            tar_gz(&[("bin/app", b"app 1.4.0")]),
            "bin/app",
        ),
        (
            "v1.5.0",
            format!("app_linux_{arch}.tar"),
            TarBuilder::new().file("bin/app", b"app 1.5.0").tar(),
            "bin/app",
        ),
        (
            "v1.6.0",
            format!("app_linux_{arch}.tar.gz"),
            tar_gz(&[("bin/app", b"app 1.6.0")]),
            "bin/app",
        ),
        (
            "v1.7.0",
            format!("app_linux_{arch}.tar.gz"),
            tar_gz(&[("bin/app", b"app 1.7.0")]),
            "bin/app",
        ),
    ];
    for (tag, name, bytes, path) in &kinds {
        moto.put("rel", &format!("app/{tag}/{name}"), bytes);
        let out = host.once(&registry, &[]);
        out.assert_ok();
        let want = format!("app {}", tag.trim_start_matches('v'));
        assert_eq!(
            fs::read_to_string(host.path().join("current").join(path)).unwrap(),
            want,
            "{tag} {name}:\n{out}"
        );
    }
    // A plain executable (explicit ?artifact=, it is no archive): `<release>/<name>`, 0755.
    moto.put("rel", "app/v1.8.0/tool", &plain);
    let out = host.once(&format!("{registry}&artifact=tool"), &[]);
    out.assert_ok();
    let tool = host.path().join("current/tool");
    assert_eq!(fs::read(&tool).unwrap(), plain);
    assert_eq!(
        fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
        0o755
    );

    let releases = host.releases();
    assert_eq!(releases.len(), 7, "{releases:?}");
    assert!(!releases.contains(&ts), "the oldest release is gone");
    assert_eq!(
        host.current().file_name().unwrap().to_str().unwrap(),
        releases.last().unwrap()
    );
    assert_eq!(host.deploys().len(), 9);
}

#[test]
fn s3_checksum_mismatch_leaves_current_alone() {
    let moto = Moto::start();
    moto.bucket("rel");
    let host = Host::new();
    let registry = format!("s3://us-east-1/rel?endpoint={}", moto.url());
    let name = format!("app_linux_{}.tar.gz", goarch());
    let v1 = tar_gz(&[("app", b"one")]);
    moto.put("rel", &format!("1.0.0/{name}"), &v1);
    moto.put(
        "rel",
        "1.0.0/checksums.txt",
        format!("{}  {name}\n", sha256_hex(&v1)).as_bytes(),
    );
    host.once(&registry, &[]).assert_ok();
    let before = host.current();
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"one");

    // The checksums file promises other bytes than the artifact has.
    let v2 = tar_gz(&[("app", b"two")]);
    moto.put("rel", &format!("2.0.0/{name}"), &v2);
    moto.put(
        "rel",
        "2.0.0/checksums.txt",
        format!("{}  {name}\n", sha256_hex(b"something else")).as_bytes(),
    );
    let out = host.once(&registry, &[]);
    out.assert_code(1);
    out.assert_stderr_contains("checksum mismatch");
    out.assert_stderr_contains("staying on the current release");
    assert_eq!(host.current(), before);
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"one");
    assert_eq!(host.releases().len(), 1);
    assert!(
        !host
            .path()
            .join("cache")
            .join(sha256_hex(b"something else"))
            .exists()
    );

    // Fixed upstream: the next poll deploys it.
    moto.put(
        "rel",
        "2.0.0/checksums.txt",
        format!("{}  {name}\n", sha256_hex(&v2)).as_bytes(),
    );
    host.once(&registry, &[]).assert_ok();
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"two");

    // An artifact larger than what a release may unpack to is not downloaded.
    let big: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    moto.put("rel", &format!("3.0.0/{name}"), &big);
    let out = host.once(&registry, &["-max-unpack-bytes", "1000"]);
    out.assert_code(1);
    out.assert_stderr_contains("more than -max-unpack-bytes 1000");
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"two");
}

#[test]
fn s3_slot_mismatch_is_skipped_and_missing_artifact_waits_out_the_grace_period() {
    let moto = Moto::start();
    moto.bucket("rel");
    let host = Host::new();
    let registry = format!("s3://us-east-1/rel?endpoint={}", moto.url());
    let name = format!("app_linux_{}.tar.gz", goarch());
    moto.put(
        "rel",
        &format!("v1.0.0+blue/{name}"),
        &tar_gz(&[("a", b"1")]),
    );
    // Following green: the newest release is blue's, skipped without error.
    let out = host.once(&registry, &["-slot", "green", "-log-level", "debug"]);
    out.assert_ok();
    out.assert_stderr_contains("Deploy skipped: slot mismatch");
    assert!(!host.path().join("current").exists());
    host.once(&registry, &["-slot", "blue"]).assert_ok();
    assert_eq!(fs::read(host.path().join("current/a")).unwrap(), b"1");

    // A new release whose artifact is not uploaded yet: within 30 minutes, not an error.
    moto.put("rel", "v2.0.0/notes.txt", b"soon");
    let out = host.once(&registry, &["-log-level", "debug"]);
    out.assert_ok();
    out.assert_stderr_contains("grace period");
    assert_eq!(fs::read(host.path().join("current/a")).unwrap(), b"1");
}

#[test]
fn unknown_scheme_or_option_exits_1_with_the_parsers_text() {
    let host = Host::new();
    let out = host.once("foo://bar/baz", &[]);
    out.assert_code(1);
    out.assert_stderr_contains("unsupported registry: foo://bar/baz");
    let out = host.once("s3://us-east-1/bucket?bogus=1", &[]);
    out.assert_code(1);
    out.assert_stderr_contains(r#"schema: invalid path "bogus""#);
    assert!(!host.path().join("current").exists());
}

#[test]
fn ssh_url_is_our_registry() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("bin/app", b"code v01")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let out = host.once(
        &format!("ssh://{}/project1", reg.addr()),
        &[
            "-fp",
            &reg.fingerprint(),
            "-key",
            reg.keys.service.to_str().unwrap(),
        ],
    );
    out.assert_ok();
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"code v01"
    );
    assert!(host.current().starts_with("unpacked"));
    assert_eq!(host.deploys().len(), 1);
}

/// An image of two layers built by umoci for this host: the first adds `hello.txt` and
/// `gone.txt`, the second changes `hello.txt`, adds `extra.txt` and deletes `gone.txt` (a
/// whiteout). Pushed by skopeo as `repo:tag`. Returns the layer digests.
fn push_image(work: &Path, reg: &OciRegistry, repo: &str, tag: &str, text: &str) -> Vec<String> {
    let layout = work.join(format!("oci-{tag}"));
    let bundle = work.join(format!("bundle-{tag}"));
    let image = format!("{}:{tag}", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    fs::write(rootfs.join("hello.txt"), "first layer").unwrap();
    fs::write(rootfs.join("gone.txt"), "deleted later").unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    fs::remove_dir_all(&bundle).unwrap();
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    fs::write(rootfs.join("hello.txt"), text).unwrap();
    fs::write(rootfs.join("extra.txt"), "second layer").unwrap();
    fs::remove_file(rootfs.join("gone.txt")).unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        goarch(),
    ]));
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{image}"))
            .arg(format!("docker://{}/{repo}:{tag}", reg.host())),
    );
    // The layer digests, from the pushed manifest (asked with curl, not the agent).
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/{repo}/manifests/{tag}", reg.host()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn img_layers_deploy_in_order_and_a_corrupt_blob_keeps_current() {
    let reg = OciRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let host = Host::new();
    let registry = format!("img://{}/app", reg.host());

    let layers = push_image(work.path(), &reg, "app", "v1.0.0", "one");
    assert_eq!(layers.len(), 2);
    let out = host.once(&registry, &[]);
    out.assert_ok();
    let cur = host.current();
    assert!(cur.is_absolute() && cur.starts_with(fs::canonicalize(host.path()).unwrap()));
    assert_eq!(
        fs::read_to_string(host.path().join("current/hello.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        fs::read_to_string(host.path().join("current/extra.txt")).unwrap(),
        "second layer"
    );
    assert!(!host.path().join("current/gone.txt").exists(), "whiteout");
    // NEWID: the configuration hash of the layer digests; one LAYER_<i> per image layer.
    let hexes: Vec<&str> = layers
        .iter()
        .map(|d| d.trim_start_matches("sha256:"))
        .collect();
    let id = config_hash(&hexes);
    assert_eq!(host.deploys(), vec![id.clone()]);
    let env = host.env_of(&id);
    assert!(
        env.contains(&format!("LAYER_1_NAME={}\n", layers[1])),
        "{env}"
    );
    assert!(env.contains("LAYER_1_VERSION=v1.0.0\n"), "{env}");
    for h in &hexes {
        assert!(host.path().join("cache").join(h).is_file());
    }
    // An image has no Dewy cache key.
    assert!(!host.path().join(".dewy/cache/current").exists());

    // A new tag: deployed again.
    let layers2 = push_image(work.path(), &reg, "app", "v1.1.0", "two");
    host.once(&registry, &[]).assert_ok();
    assert_eq!(
        fs::read_to_string(host.path().join("current/hello.txt")).unwrap(),
        "two"
    );
    assert_eq!(host.releases().len(), 2);

    // The registry serves damaged bytes for the next image's top layer: refused while
    // streaming, current stays.
    let layers3 = push_image(work.path(), &reg, "app", "v1.2.0", "three");
    let top = layers3.last().unwrap();
    assert!(!layers2.contains(top));
    let blob = reg.blob_path(top);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let before = host.current();
    let out = host.once(&registry, &[]);
    out.assert_code(1);
    out.assert_stderr_contains("checksum mismatch");
    assert_eq!(host.current(), before);
    assert_eq!(
        fs::read_to_string(host.path().join("current/hello.txt")).unwrap(),
        "two"
    );
    assert_eq!(host.releases().len(), 2);
}

#[test]
fn gs_deploys_the_newest_and_reports() {
    let gcs = FakeGcs::start();
    gcs.bucket("rel");
    let host = Host::new();
    let name = format!("app_linux_{}.tar.xz", goarch());
    gcs.put(
        "rel",
        &format!("app/v0.9.0/{name}"),
        &py_archive("xz", &[("app", b"old", 0o644)]),
    );
    gcs.put(
        "rel",
        &format!("app/v1.0.0/{name}"),
        &py_archive("xz", &[("app", b"new", 0o644)]),
    );
    let mut c = host.command("gs://rel/app", &["-once"]);
    c.env("STORAGE_EMULATOR_HOST", gcs.url());
    let out = run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"new");
    assert_eq!(
        fs::read_to_string(host.path().join(".dewy/cache/current")).unwrap(),
        format!("v1.0.0--{name}")
    );
    let listing = gcs.list("rel", "app/v1.0.0/shipped_to_");
    assert!(listing.contains("_assets_at_"), "{listing}");
}

#[test]
fn polling_picks_up_a_new_release_and_survives_an_outage() {
    let moto = Moto::start();
    moto.bucket("rel");
    let host = Host::new();
    let name = format!("app_linux_{}.tgz", goarch());
    moto.put("rel", &format!("1.0.0/{name}"), &tar_gz(&[("v", b"1")]));
    let registry = format!("s3://us-east-1/rel?endpoint={}", moto.url());
    let log = host.path().join("agent.log");
    let mut agent = host
        .command(&registry, &["-poll", "1s", "-script", ""])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read(host.path().join("current/v")).ok().as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "no deploy of {want:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(b"1");
    moto.put("rel", &format!("1.1.0/{name}"), &tar_gz(&[("v", b"2")]));
    wait_for(b"2");
    // The store goes away: errors are logged, the host keeps running 1.1.0.
    drop(moto);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fs::read(host.path().join("current/v")).unwrap(), b"2");
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    terminate(&mut agent);
    let text = fs::read_to_string(&log).unwrap();
    let after = text
        .split("switched to release 1.1.0")
        .nth(1)
        .unwrap_or_default();
    assert!(after.contains("s3://us-east-1/rel: "), "{text}");
    assert!(after.contains("terminated"), "{text}");
}

/// SIGTERM, then wait (bounded).
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Releases of the GitHub stand-in, newest first: (tag, [(asset name, bytes)]).
type Releases = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// A stand-in for GitHub's REST API (the release endpoints Dewy uses), on loopback, answering
/// one request per connection: the releases listing, one asset's bytes, a release by tag, and
/// the upload of the audit asset (recorded). Requests without the token are refused.
struct GitHubStandIn {
    port: u16,
    uploads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    releases: std::sync::Arc<std::sync::Mutex<Releases>>,
    /// Uploads answer 500 while set.
    fail_uploads: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GitHubStandIn {
    fn start() -> GitHubStandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = GitHubStandIn {
            port,
            uploads: Default::default(),
            releases: Default::default(),
            fail_uploads: Default::default(),
        };
        let (uploads, releases) = (s.uploads.clone(), s.releases.clone());
        let fail = s.fail_uploads.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (uploads, releases) = (uploads.clone(), releases.clone());
                let fail = fail.load(std::sync::atomic::Ordering::Relaxed);
                std::thread::spawn(move || serve_github(conn, port, &uploads, &releases, fail));
            }
        });
        s
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Publishes a release (newest first in the listing) with these assets.
    fn release(&self, tag: &str, assets: Vec<(String, Vec<u8>)>) {
        self.releases
            .lock()
            .unwrap()
            .insert(0, (tag.to_string(), assets));
    }
}

fn serve_github(
    mut conn: std::net::TcpStream,
    port: u16,
    uploads: &std::sync::Mutex<Vec<String>>,
    releases: &std::sync::Mutex<Releases>,
    fail_uploads: bool,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut len, mut authed) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.trim_end() == "authorization: bearer test-token" {
            authed = true;
        }
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let api = format!("http://127.0.0.1:{port}");
    let rels = releases.lock().unwrap().clone();
    let release_json = |i: usize, (tag, assets): &(String, Vec<(String, Vec<u8>)>)| {
        serde_json::json!({
            "id": i + 1,
            "tag_name": tag,
            "draft": false,
            "prerelease": false,
            "published_at": "2026-01-01T00:00:00Z",
            "upload_url": format!("{api}/api/uploads/repos/o/r/releases/{}/assets{{?name,label}}", i + 1),
            "assets": assets.iter().enumerate().map(|(j, (name, data))| serde_json::json!({
                "id": (i + 1) * 100 + j,
                "name": name,
                "size": data.len(),
            })).collect::<Vec<_>>(),
        })
    };
    let (status, ctype, out): (&str, &str, Vec<u8>) = if !authed {
        (
            "401 Unauthorized",
            "application/json",
            br#"{"message":"Bad credentials"}"#.to_vec(),
        )
    } else if method == "GET" && path == "/repos/o/r/releases" {
        let list: Vec<_> = rels
            .iter()
            .enumerate()
            .map(|(i, r)| release_json(i, r))
            .collect();
        (
            "200 OK",
            "application/json",
            serde_json::to_vec(&list).unwrap(),
        )
    } else if let Some(tag) = path.strip_prefix("/repos/o/r/releases/tags/") {
        match rels.iter().enumerate().find(|(_, r)| r.0 == tag) {
            Some((i, r)) => (
                "200 OK",
                "application/json",
                serde_json::to_vec(&release_json(i, r)).unwrap(),
            ),
            None => (
                "404 Not Found",
                "application/json",
                br#"{"message":"Not Found"}"#.to_vec(),
            ),
        }
    } else if let Some(id) = path.strip_prefix("/repos/o/r/releases/assets/") {
        let id: usize = id.parse().unwrap_or(0);
        let found = rels
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.1.iter()
                    .enumerate()
                    .map(move |(j, a)| ((i + 1) * 100 + j, a))
            })
            .find(|(k, _)| *k == id);
        match found {
            Some((_, (_, data))) => ("200 OK", "application/octet-stream", data.clone()),
            None => (
                "404 Not Found",
                "application/json",
                br#"{"message":"Not Found"}"#.to_vec(),
            ),
        }
    } else if method == "POST" && fail_uploads {
        (
            "500 Internal Server Error",
            "application/json",
            br#"{"message":"upload broken"}"#.to_vec(),
        )
    } else if method == "POST" && path.starts_with("/api/uploads/repos/o/r/releases/") {
        let name = query.strip_prefix("name=").unwrap_or(query).to_string();
        uploads
            .lock()
            .unwrap()
            .push(format!("{name}\n{}", String::from_utf8_lossy(&body)));
        ("201 Created", "application/json", br#"{"id":1}"#.to_vec())
    } else {
        (
            "404 Not Found",
            "application/json",
            br#"{"message":"Not Found"}"#.to_vec(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        out.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&out);
}

#[test]
fn ghr_deploys_the_newest_release_asset_and_uploads_the_audit() {
    let gh = GitHubStandIn::start();
    let host = Host::new();
    let name = format!("app_linux_{}.tar.gz", goarch());
    let v1 = tar_gz(&[("app", b"one")]);
    gh.release("v1.0.0", vec![(name.clone(), v1.clone())]);
    let v2 = tar_gz(&[("app", b"two")]);
    gh.release(
        "v1.1.0",
        vec![
            (
                "checksums.txt".into(),
                format!("{}  {name}\n", sha256_hex(&v2)).into_bytes(),
            ),
            (name.clone(), v2.clone()),
        ],
    );
    let mut c = host.command("ghr://o/r", &["-once"]);
    c.env("GITHUB_API_URL", gh.api())
        .env("GITHUB_TOKEN", "test-token")
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_ARTIFACT");
    let out = run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"two");
    let env = host.env_of(&config_hash(&[&sha256_hex(&v2)]));
    assert!(env.contains("LAYER_0_VERSION=v1.1.0\n"), "{env}");
    let uploads = gh.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(
        uploads[0].starts_with("shipped_to_") && uploads[0].contains("\nshipped to "),
        "{uploads:?}"
    );

    // The audit upload fails: logged, the deploy stands.
    gh.fail_uploads
        .store(true, std::sync::atomic::Ordering::Relaxed);
    gh.release("v1.2.0", vec![(name.clone(), tar_gz(&[("app", b"three")]))]);
    let out = run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    out.assert_stderr_contains("Report shipping failure");
    assert_eq!(fs::read(host.path().join("current/app")).unwrap(), b"three");
}

/// A `dewy.RegistryService` (tonic's server half over hyper HTTP/2, the sources crate's
/// message types) answering one release, recording reports; on its own runtime thread.
mod grpc_registry {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use hyper_util::rt::{TokioExecutor, TokioIo};
    use sources::grpc::proto::{
        CURRENT_PATH, CurrentRequest, CurrentResponse, REPORT_PATH, ReportRequest,
    };
    use tonic::server::{Grpc, UnaryService};
    use tonic_prost::ProstCodec;

    #[derive(Default)]
    pub struct State {
        pub answer: Option<CurrentResponse>,
        pub reports: Vec<ReportRequest>,
    }
    pub type Shared = Arc<Mutex<State>>;
    type BoxFut<T> =
        Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send>>;

    struct Current(Shared);
    impl UnaryService<CurrentRequest> for Current {
        type Response = CurrentResponse;
        type Future = BoxFut<CurrentResponse>;
        fn call(&mut self, _req: tonic::Request<CurrentRequest>) -> Self::Future {
            let answer = self.0.lock().unwrap().answer.clone();
            Box::pin(async move {
                answer
                    .map(tonic::Response::new)
                    .ok_or_else(|| tonic::Status::not_found("no release"))
            })
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

    /// Serves on a free loopback port until the process ends; returns (port, state).
    pub fn start() -> (u16, Shared) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Shared::default();
        let state = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let reg = shared.clone();
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
                                        _ => tonic::Status::unimplemented("no such method")
                                            .into_http(),
                                    };
                                    Ok::<_, Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        (port, state)
    }
}

#[test]
fn grpc_release_from_s3_deploys_and_reports() {
    let moto = Moto::start();
    moto.bucket("rel");
    let v1 = tar_gz(&[("app", b"grpc one")]);
    moto.put("rel", "v1.0.0/app.tar.gz", &v1);
    let (port, state) = grpc_registry::start();
    state.lock().unwrap().answer = Some(sources::grpc::proto::CurrentResponse {
        id: "20260719T163215Z".into(),
        tag: "v1.0.0".into(),
        artifact_url: format!(
            "s3://us-east-1/rel/v1.0.0/app.tar.gz?endpoint={}",
            moto.url()
        ),
        created_at: None,
    });
    let host = Host::new();
    let out = host.once(&format!("grpc://127.0.0.1:{port}?no-tls=true"), &[]);
    out.assert_ok();
    assert_eq!(
        fs::read(host.path().join("current/app")).unwrap(),
        b"grpc one"
    );
    let st = state.lock().unwrap();
    assert_eq!(st.reports.len(), 1);
    assert_eq!(st.reports[0].id, "20260719T163215Z");
    assert_eq!(st.reports[0].tag, "v1.0.0");
}

#[test]
fn dewy_cache_key_stands_in_for_the_download_and_a_failing_script_changes_nothing() {
    let moto = Moto::start();
    moto.bucket("rel");
    let host = Host::new();
    let registry = format!("s3://us-east-1/rel?endpoint={}", moto.url());
    let name = format!("app_linux_{}.tar.gz", goarch());
    moto.put(
        "rel",
        &format!("v1.0.0/{name}"),
        &tar_gz(&[("app", b"from s3")]),
    );
    // A cache shared with Go Dewy already holds this release's artifact under its key.
    let shared = tempfile::tempdir().unwrap();
    let cached = tar_gz(&[("app", b"from the dewy cache")]);
    fs::write(shared.path().join(format!("v1.0.0--{name}")), &cached).unwrap();
    let mut c = host.command(&registry, &["-once"]);
    c.env("DEWY_CACHEDIR", shared.path());
    let out = run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    out.assert_stderr_contains("layers fetched from the registry: 0 of 1");
    assert_eq!(
        fs::read(host.path().join("current/app")).unwrap(),
        b"from the dewy cache"
    );
    assert_eq!(
        fs::read_to_string(shared.path().join("current")).unwrap(),
        format!("v1.0.0--{name}")
    );
    assert!(
        host.path()
            .join("cache")
            .join(sha256_hex(&cached))
            .is_file()
    );

    // The deploy script fails for the next release: current, state and releases stay.
    moto.put(
        "rel",
        &format!("v2.0.0/{name}"),
        &tar_gz(&[("app", b"two")]),
    );
    fs::write(
        host.path().join("deploy.sh"),
        "#!/bin/sh\necho nope >&2\nexit 3\n",
    )
    .unwrap();
    let before = (host.current(), host.releases());
    let state = fs::read_to_string(host.path().join("state.json")).unwrap();
    let out = host.once(&registry, &[]);
    out.assert_code(1);
    out.assert_stderr_contains("call failure");
    assert_eq!((host.current(), host.releases()), before);
    assert_eq!(
        fs::read_to_string(host.path().join("state.json")).unwrap(),
        state
    );
    assert_eq!(
        fs::read(host.path().join("current/app")).unwrap(),
        b"from the dewy cache"
    );
}
