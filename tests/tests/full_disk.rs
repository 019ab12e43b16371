//! The registry on a real full disk (a small tmpfs holding its data dir): uploads and console
//! commands that do not fit fail with an error that says so, nothing stored before is lost or
//! changed, the space a failed upload took is given back at once, and everything works again
//! as soon as there is room, without a restart.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use e2e::tmpfs::Tmpfs;
use e2e::{Keys, Registry, add_version, noise, sha256_hex, tar_gz, upload};

/// The registry's data dir, the uploads it holds and the state a client sees, for comparing
/// before and after a failure.
struct Seen {
    showconf: String,
    config_json: Vec<u8>,
    blob_hash: String,
}

fn seen(reg: &Registry, blob: &str, scratch: &Path) -> Seen {
    let showconf = reg.ssh("showconf -v -name web").assert_ok().stdout_str();
    let json = scratch.join("web.json");
    let got = scratch.join("blob");
    reg.sftp_service(&format!(
        "get /configs/web.json {}\nget /files/{blob} {}\n",
        json.display(),
        got.display()
    ))
    .assert_ok();
    Seen {
        showconf,
        config_json: fs::read(&json).unwrap(),
        blob_hash: sha256_hex(&fs::read(&got).unwrap()),
    }
}

fn upload_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits until the filesystem has at least `want` bytes free again: the space of a failed
/// upload comes back once its writer thread has closed the file.
fn wait_free(fs: &Tmpfs, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.free_bytes() < want {
        assert!(
            Instant::now() < deadline,
            "space not given back: {} free, {want} expected",
            fs.free_bytes()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Fills what is left of `fs` with a file, until the kernel says ENOSPC.
fn fill(fs: &Tmpfs) -> std::path::PathBuf {
    let path = fs.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    path
}

#[test]
fn full_disk_fails_clearly_loses_nothing_and_recovers() {
    let Some(fs) = Tmpfs::mount(32 << 10) else {
        return;
    };
    let data = fs.join("data");
    // No reserve: this is about the disk really full (the reserve has its own test).
    let reg = Registry::start_in(Some(&data), Keys::new(), &["-minfree", "0"]);
    let scratch = tempfile::tempdir().unwrap();
    let blob = add_version(&reg, "code", "v01", &tar_gz(&[("bin/app", b"one")]));
    reg.ssh("addconf -name web -layer code:v01").assert_ok();
    let before = seen(&reg, &blob, scratch.path());
    let uploads_before = upload_files(&data);
    let free_before = fs.free_bytes();

    // 1. sftp put of more than the disk holds.
    let big = scratch.path().join("big.bin");
    fs::write(&big, noise(free_before as usize + (4 << 20), 1)).unwrap();
    let put = reg.sftp_op(&format!("put {} big\n", big.display()));
    assert!(!put.ok(), "a put that cannot fit must fail:\n{put}");
    let log = reg.current_log();
    assert!(
        log.contains("No space left on device") && log.contains("the registry's disk is full"),
        "the log must name the cause:\n{log}"
    );
    // The failed upload is not kept: its space is free again, no new file in uploads/.
    wait_free(&fs, free_before - (256 << 10));
    assert_eq!(upload_files(&data), uploads_before);

    // 2. deployctl prints the registry's own words (OpenSSH sftp shows only "Failure").
    let archive = scratch.path().join("big.tar.gz");
    fs::write(
        &archive,
        tar_gz(&[("blob", &noise(free_before as usize + (4 << 20), 2))]),
    )
    .unwrap();
    let archive = archive.to_string_lossy();
    let out = reg.deployctl(&[
        "addver", "-name", "code", "-version", "v02", "-file", &archive,
    ]);
    assert!(!out.ok(), "{out}");
    assert!(
        out.stderr_str().contains("the registry's disk is full"),
        "deployctl must say why:\n{out}"
    );
    wait_free(&fs, free_before - (256 << 10));
    assert_eq!(upload_files(&data), uploads_before);

    // 3. The disk completely full: a console command that must write fails clearly, one
    // that only reads still works.
    let filler = fill(&fs);
    let add = reg.ssh("addconf -name api -layer code:v01");
    add.assert_code(1);
    assert!(
        add.stdout_str().contains("the registry's disk is full"),
        "the console must say why:\n{add}"
    );
    reg.ssh("showconf -name web").assert_ok();
    let small = tar_gz(&[("bin/app", b"two")]);
    let refused = reg.sftp_op(&format!(
        "put {} small\n",
        write_file(scratch.path(), "small.tar.gz", &small).display()
    ));
    assert!(!refused.ok(), "{refused}");

    // Nothing stored before changed.
    let after = seen(&reg, &blob, scratch.path());
    assert_eq!(after.showconf, before.showconf);
    assert_eq!(after.config_json, before.config_json);
    assert_eq!(after.blob_hash, blob);
    reg.ssh("configurations").assert_ok().assert_stdout("web\n");

    // 4. Room again: everything works, without a restart.
    fs::remove_file(&filler).unwrap();
    let hash = upload(&reg, &small);
    reg.ssh(&format!("addver -name code -version v02 -hash {hash}"))
        .assert_ok();
    reg.ssh("addconf -name api -layer code:v02").assert_ok();
    reg.ssh("fsck").assert_ok();
    assert_eq!(
        seen(&reg, &blob, scratch.path()).config_json,
        before.config_json
    );
}

/// `-minfree`: uploads leave that much of the disk free, so that they never fill it; a refused
/// upload says why, gives its space back, and the console keeps writing.
#[test]
fn uploads_leave_the_reserve_free() {
    let Some(fs) = Tmpfs::mount(32 << 10) else {
        return;
    };
    let data = fs.join("data");
    let reserve = 16u64 << 20;
    let reg = Registry::start_in(
        Some(&data),
        Keys::new(),
        &["-minfree", &reserve.to_string()],
    );
    let scratch = tempfile::tempdir().unwrap();
    // Well inside what is free above the reserve.
    let blob = add_version(
        &reg,
        "code",
        "v01",
        &tar_gz(&[("bin/app", &noise(1 << 20, 3))]),
    );
    reg.ssh("addconf -name web -layer code:v01").assert_ok();
    let uploads_before = upload_files(&data);
    let free_before = fs.free_bytes();
    assert!(free_before > reserve + (8 << 20), "{free_before}");

    // More than what is free above the reserve, yet less than what is free: refused. (By more
    // than what the upload's threads may have queued and not written yet, a few MiB.)
    let size = (free_before - reserve) as usize + (6 << 20);
    let archive = write_file(
        scratch.path(),
        "big.tar.gz",
        &tar_gz(&[("blob", &noise(size, 4))]),
    );
    let out = reg.deployctl(&[
        "addver",
        "-name",
        "code",
        "-version",
        "v02",
        "-file",
        &archive.to_string_lossy(),
    ]);
    assert!(!out.ok(), "{out}");
    out.assert_stderr_contains(&format!(
        "the registry's disk is nearly full: uploads leave {reserve} bytes free (-minfree)"
    ));
    wait_free(&fs, free_before - (256 << 10));
    assert_eq!(upload_files(&data), uploads_before);

    // At the reserve already, an upload is refused when it opens; the console still writes.
    let filler = fs.join("filler");
    fs::write(
        &filler,
        vec![0u8; (free_before - reserve) as usize + (1 << 20)],
    )
    .unwrap();
    let small = write_file(scratch.path(), "small.tar.gz", &tar_gz(&[("a", b"two")]));
    let put = reg.sftp_op(&format!("put {} small\n", small.display()));
    assert!(!put.ok(), "{put}");
    assert!(
        reg.current_log().contains("nearly full"),
        "{}",
        reg.current_log()
    );
    reg.ssh("addconf -name api -layer code:v01").assert_ok();
    fs::remove_file(&filler).unwrap();
    upload(&reg, b"fits again");
    assert_eq!(seen(&reg, &blob, scratch.path()).blob_hash, blob);
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}
