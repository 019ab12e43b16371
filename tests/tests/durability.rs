//! What survives what: restarts, `kill -9`, SIGTERM during an upload, a second registry on
//! the same dir, and host keys (generated once, or brought in any format ssh-keygen writes).
//! See spec 1.2-1.4, 1.14 and 8.B2/B4/B7.

use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{
    Keys, Registry, add_version, eqnice, fingerprint_of, keygen, sha256_hex, tar_gz, upload,
};

/// The fingerprint a client sees (ssh-keyscan, then ssh-keygen -lf).
fn client_fingerprint(reg: &Registry) -> String {
    fingerprint_of(&reg.known_hosts())
}

#[test]
fn pending_upload_survives_kill9() {
    let mut reg = Registry::start();
    let blob = tar_gz(&[("bin/app", b"durable")]);
    let hash = upload(&reg, &blob);
    reg.kill9();
    reg.restart();
    reg.ssh(&format!("addver -name code -version v01 -hash {hash}"))
        .assert_ok();
    // And the blob is served intact.
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got");
    reg.sftp_service(&format!("get /files/{hash} {}\n", got.display()))
        .assert_ok();
    assert_eq!(sha256_hex(&fs::read(&got).unwrap()), hash);
}

#[test]
fn metadata_survives_kill9_and_restart() {
    let mut reg = Registry::start();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    add_version(&reg, "config", "v01", &tar_gz(&[("b", b"2")]));
    reg.ssh("addconf -name p -layer code:v01 -layer config:v01")
        .assert_ok();
    let before = reg.ssh("showconf -v -name p");
    before.assert_ok();
    let comps = reg.ssh("showcomp -name code").stdout_str();
    reg.kill9();
    reg.restart();
    let after = reg.ssh("showconf -v -name p");
    after.assert_ok();
    eqnice!(before.stdout_str(), after.stdout_str());
    eqnice!(comps, reg.ssh("showcomp -name code").stdout_str());
    // A change right before a graceful restart is kept too.
    reg.ssh("delconf -name p -force").assert_ok();
    reg.restart();
    reg.ssh("configurations").assert_ok().assert_stdout("");
    reg.ssh("components")
        .assert_ok()
        .assert_stdout("code\nconfig\n");
}

#[test]
fn sigterm_exits_zero() {
    let mut reg = Registry::start();
    reg.ssh("components").assert_ok();
    let st = reg.stop();
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM: {st}\n{}",
        reg.log()
    );
    assert!(reg.log().contains("terminated"), "{}", reg.log());
}

#[test]
fn sigterm_during_upload_lets_it_finish() {
    let mut reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    // 3 MiB at 8 Mbit/s: about 3 s on the wire, so SIGTERM lands mid-transfer.
    let blob: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&file, &blob).unwrap();
    let mut sftp = Command::new("sftp");
    sftp.arg("-P")
        .arg(reg.port.to_string())
        .args(reg.ssh_opts(&reg.keys.operator))
        .args(["-l", "8000", "-b", "-"])
        .arg(reg.dest("op"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let batch = format!("put {} big.bin\n", file.display());
    let handle = thread::spawn(move || e2e::run(&mut sftp, Some(batch.as_bytes())));

    // Wait until bytes arrive in uploads/.
    let uploads = reg.data_dir().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = fs::read_dir(&uploads)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false);
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "upload never started");
        thread::sleep(Duration::from_millis(20));
    }
    reg.signal(libc::SIGTERM);
    // While it drains, new connections are refused (it stops accepting first).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", reg.port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !handle.is_finished(),
        "the upload ended before the drain was observed"
    );
    let out = handle.join().expect("sftp thread");
    out.assert_ok();
    let st = reg.wait_exit(60);
    assert_eq!(st.code(), Some(0), "{}", reg.log());
    reg.restart();
    reg.ssh(&format!(
        "addver -name big -version v1 -hash {}",
        sha256_hex(&blob)
    ))
    .assert_ok();
}

#[test]
fn second_registry_on_the_same_dir_refuses_to_start() {
    let reg = Registry::start();
    let err = match Registry::try_start_in(Some(reg.data_dir()), Keys::new(), &[]) {
        Ok(_) => panic!("a second registry started on {}", reg.data_dir().display()),
        Err(e) => e,
    };
    assert!(err.status.is_some_and(|s| !s.success()), "{err:?}");
    assert!(
        err.log.contains("another deploy-registry is using"),
        "{}",
        err.log
    );
    // The first one is unharmed.
    reg.ssh("components").assert_ok();
}

#[test]
fn host_key_is_created_once_and_kept() {
    let mut reg = Registry::start();
    let fp = reg.fingerprint();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let key = reg.data_dir().join("host_key");
    // Generated in a format ssh-keygen reads (ours is ed25519 in OpenSSH format, where the
    // original wrote PEM EC P-256, spec 8.A12); brought keys of either kind are tested below.
    let text = fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN "), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fingerprint_of(&key), fp);
    assert_eq!(client_fingerprint(&reg), fp);
    reg.restart();
    assert_eq!(reg.fingerprint(), fp);
    reg.kill9();
    reg.restart();
    assert_eq!(reg.fingerprint(), fp);
    assert_eq!(client_fingerprint(&reg), fp);
}

/// A host key made by ssh-keygen in the given format is used as is.
fn brought_host_key(kind: &str, extra: &[&str], header: &str) {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("host_key");
    keygen(&key, kind, extra);
    assert!(
        fs::read_to_string(&key).unwrap().starts_with(header),
        "ssh-keygen wrote another format"
    );
    let expected = fingerprint_of(&key);
    let mut reg = Registry::start_in(Some(data.path()), Keys::new(), &[]);
    assert_eq!(reg.fingerprint(), expected);
    assert_eq!(client_fingerprint(&reg), expected);
    reg.ssh("components").assert_ok();
    reg.restart();
    assert_eq!(reg.fingerprint(), expected);
    // The file is not rewritten.
    assert!(fs::read_to_string(&key).unwrap().starts_with(header));
}

#[test]
fn host_key_pem_ec() {
    brought_host_key("ecdsa", &["-m", "PEM"], "-----BEGIN EC PRIVATE KEY-----");
}

#[test]
fn host_key_pem_rsa() {
    brought_host_key(
        "rsa",
        &["-m", "PEM", "-b", "2048"],
        "-----BEGIN RSA PRIVATE KEY-----",
    );
}

#[test]
fn host_key_openssh_ed25519() {
    brought_host_key("ed25519", &[], "-----BEGIN OPENSSH PRIVATE KEY-----");
}

#[test]
fn host_key_openssh_ecdsa() {
    brought_host_key("ecdsa", &[], "-----BEGIN OPENSSH PRIVATE KEY-----");
}

#[test]
fn unreadable_host_key_is_fatal() {
    let data = tempfile::tempdir().unwrap();
    fs::write(data.path().join("host_key"), "not a key\n").unwrap();
    let err = match Registry::try_start_in(Some(data.path()), Keys::new(), &[]) {
        Ok(_) => panic!("started with a garbage host key"),
        Err(e) => e,
    };
    assert!(err.status.is_some_and(|s| !s.success()), "{err:?}");
    // The bad key is left for the operator to look at, not replaced.
    assert_eq!(
        fs::read_to_string(data.path().join("host_key")).unwrap(),
        "not a key\n"
    );
}

#[test]
fn fsck_finds_corrupt_missing_and_unknown_blobs() {
    let mut reg = Registry::start();
    let a = add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    let b = add_version(&reg, "code", "v02", &tar_gz(&[("b", b"b")]));
    let out = reg.ssh("fsck");
    out.assert_code(0);
    assert!(out.stdout_str().starts_with("checked 2 blobs ("), "{out}");
    assert!(out.stdout_str().ends_with("): no problems\n"), "{out}");

    // Bit rot in one blob, another one gone, a stray file.
    let files = reg.data_dir().join("files");
    use std::os::unix::fs::PermissionsExt;
    let pa = files.join(&a);
    fs::set_permissions(&pa, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&pa, b"rotten").unwrap();
    fs::remove_file(files.join(&b)).unwrap();
    let stray = "0".repeat(64);
    fs::write(files.join(&stray), b"").unwrap();
    let out = reg.ssh("fsck");
    out.assert_code(1);
    let text = out.stdout_str();
    for needle in [
        format!("hash mismatch for files/{a}"),
        format!("missing blob files/{b}"),
        format!("version \"v02\" of component \"code\" references missing blob {b}"),
        format!("unknown file files/{stray}"),
        "): 4 problems\n".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not reported:\n{out}");
    }

    // The same check offline, on a stopped registry's directory.
    reg.stop();
    let mut c = Command::new(e2e::bin("deploy-registry"));
    c.arg("-fsck").arg("-dir").arg(reg.data_dir());
    let off = e2e::run(&mut c, None);
    off.assert_code(1);
    eqnice!(text, off.stdout_str());
}

#[test]
fn kill9_during_upload_registers_nothing_partial() {
    let mut reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let blob: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    fs::write(&file, &blob).unwrap();
    let hash = sha256_hex(&blob);
    let mut sftp = Command::new("sftp");
    sftp.arg("-P")
        .arg(reg.port.to_string())
        .args(reg.ssh_opts(&reg.keys.operator))
        .args(["-l", "8000", "-b", "-"])
        .arg(reg.dest("op"));
    let batch = format!("put {} big.bin\n", file.display());
    let handle = thread::spawn(move || e2e::run(&mut sftp, Some(batch.as_bytes())));
    let uploads = reg.data_dir().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_dir(&uploads)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "upload never started");
        thread::sleep(Duration::from_millis(20));
    }
    reg.kill9();
    handle.join().expect("sftp thread").assert_fail();
    reg.restart();
    // The cut upload is not the content: its hash is unknown, nothing half-written is used.
    reg.ssh(&format!("addver -name big -version v1 -hash {hash}"))
        .assert_code(1)
        .assert_stdout("no uploaded file with given hash found\n");
    // Uploading again works, and the registry is consistent.
    assert_eq!(upload(&reg, &blob), hash);
    reg.ssh(&format!("addver -name big -version v1 -hash {hash}"))
        .assert_ok();
    reg.ssh("fsck").assert_ok();
}
