//! Hostile clients: over-long and garbage console lines, path traversal over SFTP, endless
//! uploads, connection floods and silent clients. Each must be refused cleanly and the
//! registry must keep serving everyone else (spec 8.A11, A14).

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::thread;
use std::time::{Duration, Instant};

use e2e::{Registry, add_version, run, sha256_hex, tar_gz};

#[track_caller]
fn still_serves(reg: &Registry) {
    reg.ssh("components").assert_ok();
}

#[test]
fn overlong_console_line_is_refused() {
    let reg = Registry::start();
    let line = format!("showconf -name {}", "x".repeat(100 * 1024));
    let out = reg.ssh(&line);
    out.assert_code(1);
    out.assert_stdout_contains("too long");
    assert!(
        out.stdout.len() < 4096,
        "the refusal should not echo the line back"
    );
    still_serves(&reg);
    // Same through the non-pty shell: the long line is refused, the next line runs.
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    let mut input = "y".repeat(100 * 1024).into_bytes();
    input.extend_from_slice(b"\ncomponents\n");
    let out = reg.ssh_raw("op", &reg.keys.operator, &["-T"], None, Some(&input));
    assert!(
        out.stdout.len() < 8192,
        "{} bytes of output",
        out.stdout.len()
    );
    out.assert_stdout_contains("too long");
    assert!(out.stdout_str().ends_with("\ncode\n"), "{out}");
    still_serves(&reg);
}

#[test]
fn garbage_commands_are_refused() {
    let reg = Registry::start();
    for bad in ["showconf -name \"unterminated", "'", "\\", "(", ")"] {
        let out = reg.ssh(bad);
        out.assert_code(1);
        out.assert_stdout("invalid command line string\n");
    }
    // Invalid UTF-8 and control bytes as the command.
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.arg(reg.dest("op")).arg(OsStr::from_bytes(
        b"\xff\xfe\x01\x02 \x1b[2J\x7f -name \xc3(",
    ));
    let out = run(&mut c, None);
    out.assert_code(1);
    still_serves(&reg);
    // Binary garbage, NULs included, through the shell; a valid line after it still runs.
    let mut input: Vec<u8> = (0..=255u8).cycle().take(8192).collect();
    input.extend_from_slice(b"\ncomponents\n");
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    let out = reg.ssh_raw("op", &reg.keys.operator, &["-T"], None, Some(&input));
    out.assert_code(0);
    assert!(out.stdout_str().ends_with("\ncode\n"), "{out}");
    still_serves(&reg);
    // And through a pty.
    let _ = reg.ssh_raw("op", &reg.keys.operator, &["-tt"], None, Some(&input));
    still_serves(&reg);
}

#[test]
fn service_sftp_cannot_escape() {
    let reg = Registry::start();
    let blob = tar_gz(&[("a", b"a")]);
    let hash = add_version(&reg, "code", "v01", &blob);
    reg.ssh("addconf -name p -layer code:v01").assert_ok();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("got");
    for path in [
        "../../etc/passwd",
        "/etc/passwd",
        "files/../registry.sqlite3",
        "/files/../registry.sqlite3",
        "/files/../../../../etc/passwd",
        "files/../host_key",
        "/host_key",
        "/registry.sqlite3",
        "/uploads",
        "configs/../host_key",
        "/configs/../../etc/passwd",
        "/configs/p.json/../../host_key",
        "/files/%2e%2e/host_key",
    ] {
        let out = reg.sftp_service(&format!("get {path} {}\n", dst.display()));
        out.assert_fail();
        assert!(
            !dst.exists() || fs::read(&dst).unwrap().is_empty(),
            "{path} leaked:\n{out}"
        );
        let _ = fs::remove_file(&dst);
    }
    // The legitimate paths work, in both forms.
    for path in [
        format!("/files/{hash}"),
        format!("files/{hash}"),
        format!("/files/../files/{hash}"),
    ] {
        reg.sftp_service(&format!("get {path} {}\n", dst.display()))
            .assert_ok();
        assert_eq!(sha256_hex(&fs::read(&dst).unwrap()), hash);
        fs::remove_file(&dst).unwrap();
    }
    reg.sftp_service(&format!("get configs/p.json {}\n", dst.display()))
        .assert_ok();
    // Symlinks and listings outside the two views are refused too.
    reg.sftp_service("ls /uploads\n").assert_fail();
    reg.sftp_service("ls /..\n").assert_ok(); // cleaned to "/"
    reg.sftp_service("readlink /files\n").assert_fail();
}

#[test]
fn operator_upload_names_cannot_escape() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob");
    fs::write(&src, b"payload").unwrap();
    let target = dir.path().join("escaped");
    for name in [
        format!("../../../../..{}", target.display()),
        target.display().to_string(),
    ] {
        // The name is ignored: the upload lands in uploads/ whatever it says.
        reg.sftp_op(&format!("put {} {name}\n", src.display()))
            .assert_ok();
        assert!(!target.exists(), "upload written to {}", target.display());
    }
    reg.ssh(&format!(
        "addver -name c -version v -hash {}",
        sha256_hex(b"payload")
    ))
    .assert_ok();
}

#[test]
fn endless_upload_is_cut() {
    let limit = 1 << 20;
    let reg = Registry::start_with(&["-maxupload", &limit.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    // A sparse 8 GiB file: without a limit this would take minutes and fill the disk.
    let big = dir.path().join("endless");
    fs::File::create(&big).unwrap().set_len(8 << 30).unwrap();
    let start = Instant::now();
    let out = reg.sftp_op(&format!("put {} endless\n", big.display()));
    out.assert_fail();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    // Nothing over the limit is kept.
    let uploads = reg.data_dir().join("uploads");
    if let Ok(rd) = fs::read_dir(&uploads) {
        for e in rd.flatten() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            assert!(len <= limit, "{} holds {len} bytes", e.path().display());
        }
    }
    // A file under the limit still uploads.
    let small = tar_gz(&[("f", b"small")]);
    add_version(&reg, "small", "v1", &small);
    still_serves(&reg);
}

#[test]
fn fifty_connections_at_once() {
    let reg = Registry::start();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    let outs: Vec<e2e::Out> = thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let reg = &reg;
                s.spawn(move || {
                    if i % 2 == 0 {
                        reg.ssh("components")
                    } else {
                        reg.sftp_service("ls /files\n")
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, out) in outs.iter().enumerate() {
        out.assert_ok();
        if i % 2 == 0 {
            out.assert_stdout("code\n");
        }
    }
    still_serves(&reg);
}

/// Reads until EOF or error; returns when the server dropped us, panics after `limit`.
fn wait_dropped(mut conn: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(start.elapsed() < limit, "still connected after {limit:?}");
    }
}

#[test]
fn silent_client_is_dropped() {
    let reg = Registry::start();
    let silent = TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
    // Says hello, then nothing.
    let mut half = TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
    half.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    // Meanwhile others are served.
    still_serves(&reg);
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| wait_dropped(silent, Duration::from_secs(45)));
        let b = s.spawn(|| wait_dropped(half, Duration::from_secs(45)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a <= Duration::from_secs(45) && b <= Duration::from_secs(45));
    still_serves(&reg);
}

#[test]
fn garbage_instead_of_ssh_is_dropped() {
    let reg = Registry::start();
    let mut conn = TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut junk = vec![0u8; 64 * 1024];
    junk.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7) as u8);
    let _ = conn.write_all(&junk);
    let took = wait_dropped(conn, Duration::from_secs(45));
    assert!(took < Duration::from_secs(45));
    still_serves(&reg);
}

#[test]
fn idle_session_is_cut_by_deadline() {
    // -deadline is an idle limit here (spec 8.B6): a shell that sits idle is closed...
    let reg = Registry::start_with(&["-deadline", "2s"]);
    let start = Instant::now();
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.arg("-tt").arg(reg.dest("op"));
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("idle session still open after 30 s with -deadline 2s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "cut too early: {:?}",
        start.elapsed()
    );
    let shown = reader.join().unwrap();
    assert!(
        shown.starts_with(b"\x1b[31m> "),
        "the shell never started: {:?}",
        String::from_utf8_lossy(&shown)
    );
    // ...while a transfer that keeps the connection busy for longer is not.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.bin");
    fs::write(&file, vec![7u8; 4 << 20]).unwrap();
    let t = Instant::now();
    reg.sftp_args(
        "op",
        &reg.keys.operator,
        &["-l", "8000"],
        &format!("put {} slow.bin\n", file.display()),
    )
    .assert_ok();
    assert!(
        t.elapsed() > Duration::from_secs(3),
        "the upload was not slow: {:?}",
        t.elapsed()
    );
    still_serves(&reg);
}

/// `-deadline 0` is no idle limit (spec B6): a console that waits seconds for its first line
/// is still there to run it. (Taken as a zero-length limit, it would be cut at once.)
#[test]
fn deadline_zero_means_no_idle_limit() {
    let reg = Registry::start_with(&["-deadline", "0"]);
    let ssh = reg.ssh_cmd(&reg.keys.operator);
    let mut c = std::process::Command::new("sh");
    c.args(["-c", "(sleep 3; echo 'showconf -name q') | \"$@\"", "sh"])
        .arg(ssh.get_program())
        .args(ssh.get_args())
        .arg("-T")
        .arg(reg.dest("op"));
    run(&mut c, None)
        .assert_code(0)
        .assert_stdout("configuration \"q\" not found\n");
}

/// A client that keeps sending SFTP requests but never reads the replies: once our replies
/// wait for window and its requests fill our queue, nothing can move again (russh's session
/// loop waits on the full channel queue, so it would not even see a window adjust). That
/// session must be ended, its connection closed and its `-maxconn` slot given back, instead
/// of being held for good.
#[test]
fn client_that_never_reads_replies_is_cut() {
    let reg = Registry::start_with(&["-deadline", "2s", "-maxconn", "1"]);
    // The harness's readiness probe (a bare TCP connect) holds the only slot until the
    // registry has seen it go: a client that comes first is refused, and tries again.
    let refusals = || reg.log().matches("too many connections").count();
    let mut attempts = 0;
    let (status, sent) = loop {
        let refused_before = refusals();
        let (status, sent) = never_read_replies(&reg);
        attempts += 1;
        if sent == 0 && refusals() > refused_before && attempts < 20 {
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        break (status, sent);
    };
    assert!(
        status.is_some(),
        "a session that stopped reading replies is still open after 90 s ({sent} bytes of requests sent)\n{}",
        reg.log()
    );
    assert!(
        sent > 64 << 20,
        "only {sent} bytes of requests were sent\n{}",
        reg.log()
    );
    assert!(
        reg.log().contains("stopped reading replies"),
        "{}",
        reg.log()
    );
    // The only -maxconn slot is free again.
    e2e::wait_for("a new connection after the cut", 30, || {
        reg.ssh("components").ok()
    });
}

/// Runs `ssh -s sftp` as a service key, sending requests without reading a reply, until ssh
/// ends (at most 90 s, then it is killed): its exit status (`None` if it was killed) and the
/// bytes of requests it took.
fn never_read_replies(reg: &Registry) -> (Option<std::process::ExitStatus>, usize) {
    let mut c = reg.ssh_cmd(&reg.keys.service);
    c.arg("-s").arg(reg.dest("deploy-agent")).arg("sftp");
    let mut ssh = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Replies go to a pipe nobody reads: ssh stops taking them once it is full.
    let _unread = ssh.stdout.take().unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        // INIT, then READs on an unknown handle (each answered by a small STATUS), far past
        // what our queue, russh's and the socket buffers hold together.
        let mut req = Vec::new();
        for i in 0..40_000u32 {
            let mut p = vec![5u8];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&1u32.to_be_bytes());
            p.push(b'x');
            p.extend_from_slice(&0u64.to_be_bytes());
            p.extend_from_slice(&32768u32.to_be_bytes());
            req.extend_from_slice(&(p.len() as u32).to_be_bytes());
            req.extend_from_slice(&p);
        }
        let mut sent = 0usize;
        if stdin.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).is_err() {
            return sent;
        }
        while sent < 1 << 30 {
            if stdin.write_all(&req).is_err() {
                break;
            }
            sent += req.len();
        }
        sent
    });
    let status = e2e::wait_exit(&mut ssh, Duration::from_secs(90));
    if status.is_none() {
        let _ = ssh.kill();
        let _ = ssh.wait();
    }
    (status, writer.join().unwrap())
}
