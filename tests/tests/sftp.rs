//! The registry's two SFTP views, driven by the real OpenSSH `sftp` against the built
//! `deploy-registry` (spec 1.9 operator upload-only, 1.10 service read-only, and the fixes of
//! spec 8: A11, A14, B4, B5).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{Registry, add_version, run_with_timeout, sha256_hex, upload};

/// Deterministic, incompressible-enough bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_temp(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p.display().to_string()
}

/// A registry with component `app` v1 (`layer`) and configuration `web` = [app:v1].
fn registry_with_config(layer: &[u8]) -> (Registry, String) {
    let reg = Registry::start();
    let hash = add_version(&reg, "app", "v1", layer);
    reg.ssh("addconf -name web -layer app:v1").assert_ok();
    (reg, hash)
}

#[test]
fn put_then_addver_right_away_and_the_name_is_ignored() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let data = payload(3 << 20, 1);
    let f = write_temp(dir.path(), "layer.tar.gz", &data);
    reg.sftp_op(&format!("pwd\nput {f} some/dir/../ignored-name.bin\n"))
        .assert_ok()
        .assert_stdout_contains("Remote working directory: /");
    // No pause: the CLOSE reply came after the upload was registered.
    reg.ssh(&format!(
        "addver -name app -version v1 -hash {}",
        sha256_hex(&data)
    ))
    .assert_ok();
    let stored = reg.data_dir().join("files").join(sha256_hex(&data));
    assert_eq!(fs::read(stored).unwrap(), data);
}

#[test]
fn operator_cannot_list_read_or_change_anything() {
    let reg = Registry::start();
    upload(&reg, b"something");
    // `sftp -b` stops at the first failing command: one session per command.
    for cmd in [
        "ls",
        "rm upload.tar.gz",
        "mkdir d",
        "rmdir d",
        "rename a b",
        "ln -s a b",
        "chmod 600 a",
    ] {
        // A refused `ls` does not make `sftp -b` exit non-zero: the check is on the message.
        let out = reg.sftp_op(&format!("{cmd}\n"));
        assert!(
            out.stderr_str().contains("Permission denied"),
            "{cmd}: expected Permission denied\n{out}"
        );
    }
    // `ls DIR` and `get` stat the path first; stat is refused (as in the original), which
    // OpenSSH reports as "not found".
    for cmd in ["ls /files", "get upload.tar.gz /dev/null"] {
        reg.sftp_op(&format!("{cmd}\n"))
            .assert_fail()
            .assert_stderr_contains("not found");
    }
}

#[test]
fn service_gets_exact_config_json_and_blobs() {
    let layer = payload(1 << 20, 2);
    let (reg, hash) = registry_with_config(&layer);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("web.json");
    let blob = dir.path().join("blob");
    let abs_conf = dir.path().join("web-abs.json");
    let abs_blob = dir.path().join("blob-abs");
    reg.sftp_service(&format!(
        "get configs/web.json {}\nget files/{hash} {}\nget /configs/web.json {}\nget /files/{hash} {}\n",
        conf.display(),
        blob.display(),
        abs_conf.display(),
        abs_blob.display()
    ))
    .assert_ok();
    assert_eq!(fs::read(&blob).unwrap(), layer);
    assert_eq!(fs::read(&abs_blob).unwrap(), layer);
    let json = fs::read_to_string(&conf).unwrap();
    assert_eq!(fs::read_to_string(&abs_conf).unwrap(), json);
    // The exact bytes of spec 2.1: rebuilt from the two times in it, everything else known.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mtime = v["Mtime"].as_str().unwrap();
    let ctime = v["Layers"][0]["Ctime"].as_str().unwrap();
    let conf_hash = sha256_hex(format!("{hash}\n").as_bytes());
    let want = format!(
        "{{\n\t\"Name\": \"web\",\n\t\"Mtime\": \"{mtime}\",\n\t\"Hash\": \"{conf_hash}\",\n\t\"Layers\": [\n\t\t{{\n\t\t\t\"Name\": \"app\",\n\t\t\t\"Version\": \"v1\",\n\t\t\t\"File\": \"files/{hash}\",\n\t\t\t\"Hash\": \"{hash}\",\n\t\t\t\"Ctime\": \"{ctime}\"\n\t\t}}\n\t]\n}}\n"
    );
    assert_eq!(json, want);
}

#[test]
fn service_listings_are_stable_and_show_only_blobs() {
    let (reg, hash) = registry_with_config(b"layer");
    reg.ssh("addconf -name alpha -layer app:v1").assert_ok();
    let out = reg.sftp_service("ls /\nls configs\nls files\n");
    out.assert_ok();
    let s = out.stdout_str();
    let listed: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("sftp>"))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(
        listed,
        [
            "/configs",
            "/files",
            "configs/alpha.json",
            "configs/web.json",
            &format!("files/{hash}")
        ],
        "{out}"
    );
}

#[test]
fn service_unknown_and_hostile_paths_are_not_found() {
    let (reg, _hash) = registry_with_config(b"layer");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let zeros = "0".repeat(64);
    for path in [
        "configs/nope.json".to_string(),
        format!("files/{zeros}"),
        "files/../registry.sqlite3".to_string(),
        "/etc/passwd".to_string(),
        "../../x".to_string(),
        "../../../../../etc/passwd".to_string(),
        "files/../host_key".to_string(),
        "configs/../../etc/passwd".to_string(),
        "uploads".to_string(),
    ] {
        let out = reg.sftp_service(&format!("get {path} {}\n", dest.display()));
        out.assert_fail();
        let err = out.stderr_str();
        assert!(
            err.contains("not found") || err.contains("No such file"),
            "get {path}: expected not found\n{out}"
        );
        assert!(
            !err.contains(&reg.data_dir().display().to_string()),
            "server path leaked: {out}"
        );
        assert!(!dest.exists(), "get {path} created a local file");
    }
}

#[test]
fn service_writes_are_refused() {
    let (reg, hash) = registry_with_config(b"layer");
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "x", b"x");
    for cmd in [
        format!("put {f} x"),
        format!("put {f} files/{hash}"),
        format!("put {f} configs/web.json"),
        format!("rm files/{hash}"),
        "mkdir files/d".to_string(),
        format!("rename files/{hash} files/y"),
        format!("ln -s files/{hash} files/l"),
    ] {
        let out = reg.sftp_service(&format!("{cmd}\n"));
        out.assert_fail();
        assert!(
            out.stderr_str().contains("Permission denied"),
            "{cmd}\n{out}"
        );
    }
    // Nothing changed.
    assert_eq!(
        fs::read(reg.data_dir().join("files").join(&hash)).unwrap(),
        b"layer"
    );
}

/// spike-russh.md section 7: deep pipelining used to hang the session for good.
#[test]
fn deep_pipelined_download_completes() {
    let layer = payload(64 << 20, 3);
    let (reg, hash) = registry_with_config(&layer);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let mut c = Command::new("sftp");
    c.arg("-P")
        .arg(reg.port.to_string())
        .args(reg.ssh_opts(&reg.keys.service))
        .args(["-R", "512", "-B", "261120", "-b", "-"])
        .arg(reg.dest("deploy-agent"));
    let batch = format!("get files/{hash} {}\n", dest.display());
    run_with_timeout(&mut c, Some(batch.as_bytes()), 120).assert_ok();
    assert!(fs::read(&dest).unwrap() == layer, "downloaded blob differs");
}

/// spec 8.B4: pending uploads are durable.
#[test]
fn uploads_survive_a_restart() {
    let mut reg = Registry::start();
    let hash = upload(&reg, b"uploaded before the restart");
    reg.restart();
    reg.ssh(&format!("addver -name app -version v1 -hash {hash}"))
        .assert_ok();
}

/// spec 8.A14: a size limit, refused with a clear failure; the registry stays usable.
#[test]
fn upload_over_the_size_limit_is_refused() {
    let reg = Registry::start_with(&["-maxupload", "100000"]);
    let dir = tempfile::tempdir().unwrap();
    let big = payload(1 << 20, 4);
    let f = write_temp(dir.path(), "big", &big);
    let out = reg.sftp_op(&format!("put {f} big\n"));
    out.assert_fail();
    let hash = sha256_hex(&big);
    reg.ssh(&format!("addver -name app -version v1 -hash {hash}"))
        .assert_fail();
    // Small uploads still work.
    add_version(&reg, "app", "v2", b"small enough");
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// An upload from OpenSSH `sftp` (255 KiB writes, as `limits@openssh.com` allows) goes to disk
/// with `O_DIRECT` from the buffers its data arrived in: every whole block direct, the last
/// partial one through the page cache, and at most one block per write copied (the blocks
/// that span two writes).
#[test]
fn a_put_is_written_direct_from_where_it_arrived() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let data = payload((8 << 20) + 1000, 11);
    let f = write_temp(dir.path(), "layer", &data);
    reg.sftp_op(&format!("put {f}\n")).assert_ok();
    let log = reg.log();
    let line = log
        .lines()
        .find(|l| l.contains("upload registered") && l.contains("direct_bytes="))
        .unwrap_or_else(|| panic!("no upload registered line in\n{log}"));
    let size = data.len() as u64;
    assert_eq!(field(line, "size"), size);
    let (direct, copied, buffered) = (
        field(line, "direct_bytes"),
        field(line, "copied_bytes"),
        field(line, "buffered_bytes"),
    );
    if direct == 0 {
        eprintln!("note: no O_DIRECT on the data directory's filesystem: {line}");
        assert_eq!(buffered, size);
        return;
    }
    assert_eq!(
        (direct, buffered),
        (size / 4096 * 4096, size % 4096),
        "{line}"
    );
    let writes = size.div_ceil(261_120);
    assert!(copied <= writes * 4096, "{line}");
}

/// Killing the client mid-transfer leaves the registry healthy.
#[test]
fn dropped_upload_leaves_the_registry_healthy() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "big", &payload(256 << 20, 5));
    let mut c = Command::new("sftp");
    c.arg("-P")
        .arg(reg.port.to_string())
        .args(reg.ssh_opts(&reg.keys.operator))
        .args(["-b", "-"])
        .arg(reg.dest("op"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "put {f} big").unwrap();
    }
    // Wait until the upload is under way, then kill the client.
    let uploads = reg.data_dir().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = fs::read_dir(&uploads)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > (1 << 20)).unwrap_or(false))
            })
            .unwrap_or(false);
        if started {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "sftp ended before the upload could be interrupted: {st}\n{}",
                reg.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the upload never started\n{}",
            reg.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Still serving, both views and the console.
    add_version(&reg, "app", "v1", b"after the drop");
    reg.ssh("addconf -name web -layer app:v1").assert_ok();
    reg.sftp_service("ls configs\n")
        .assert_ok()
        .assert_stdout_contains("web.json");
}

/// `put -p` sets the mode with FSETSTAT after writing; the original refused it (an error after
/// the upload went through); we accept and ignore it.
#[test]
fn put_preserve_uploads_cleanly() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let b = write_temp(dir.path(), "b", b"put with -p");
    reg.sftp_op(&format!("put -p {b}\n")).assert_ok();
    reg.ssh(&format!(
        "addver -name app -version v1 -hash {}",
        sha256_hex(b"put with -p")
    ))
    .assert_ok();
}

/// Modern `scp` (SFTP mode) uploads like `put`, and exits 0 only if the channel carries
/// `exit-status` 0 (as sshd sends when the sftp subsystem ends).
#[test]
fn scp_uploads() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = write_temp(dir.path(), "a", b"copied with scp");
    let mut c = Command::new("scp");
    c.arg("-P")
        .arg(reg.port.to_string())
        .args(reg.ssh_opts(&reg.keys.operator))
        .arg(&a)
        .arg(format!("{}:any/name", reg.dest("op")));
    run_with_timeout(&mut c, None, 60).assert_ok();
    reg.ssh(&format!(
        "addver -name app -version v1 -hash {}",
        sha256_hex(b"copied with scp")
    ))
    .assert_ok();
}
