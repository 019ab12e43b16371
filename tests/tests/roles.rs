//! Who may do what (spec 1.5, 1.6, fixed per 8.A6/A9): operator and service roles chosen by
//! user name and key file, public-key auth only, no forwarding, key files reloaded on SIGHUP,
//! comments allowed, `from=` enforced.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{Keys, Registry, add_version, free_port, tar_gz};

const DENIED: &str = "Permission denied (publickey)";

#[test]
fn service_key_cannot_run_the_console() {
    let reg = Registry::start();
    let out = reg.ssh_as("deploy-agent", &reg.keys.service, "components");
    out.assert_fail();
    out.assert_stderr_contains("exec request failed on channel 0");
    assert!(out.stdout.is_empty(), "{out}");
    // Nor a shell.
    let out = reg.ssh_raw(
        "deploy-agent",
        &reg.keys.service,
        &["-T"],
        None,
        Some(b"components\n"),
    );
    out.assert_fail();
    assert!(!out.stdout_str().contains("Unknown command"), "{out}");
}

#[test]
fn service_key_cannot_write_over_sftp() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.tar.gz");
    fs::write(&f, tar_gz(&[("a", b"a")])).unwrap();
    let out = reg.sftp_service(&format!("put {} /x.tar.gz\n", f.display()));
    out.assert_fail();
    out.assert_stderr_contains("Permission denied");
    for cmd in [
        "mkdir /files/d",
        "rm /files/x",
        "rename /configs /c2",
        "symlink /etc/passwd /files/p",
    ] {
        let out = reg.sftp_service(&format!("{cmd}\n"));
        out.assert_fail();
    }
    // It reads fine (the listing works once something is stored).
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    reg.sftp_service("ls /files\n").assert_ok();
}

#[test]
fn operator_sftp_is_upload_only() {
    let reg = Registry::start();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"a")]));
    let dir = tempfile::tempdir().unwrap();
    let out = reg.sftp_op(&format!(
        "get /files/whatever {}/got\n",
        dir.path().display()
    ));
    out.assert_fail();
    // Listings are refused (the original said `remote readdir("/"): Permission denied`; the
    // exact client message depends on which request is refused first).
    reg.sftp_op("ls /\n").assert_fail();
    reg.sftp_op("ls /files\n").assert_fail();
}

#[test]
fn role_is_chosen_by_user_name_and_key_file() {
    let reg = Registry::start();
    // Operator key as the service user: not in service.keys.
    let out = reg.ssh_as("deploy-agent", &reg.keys.operator, "components");
    out.assert_code(255);
    out.assert_stderr_contains(DENIED);
    let out = reg.sftp("deploy-agent", &reg.keys.operator, "ls /\n");
    out.assert_fail();
    out.assert_stderr_contains(DENIED);
    // Service key as any other user: not in operator.keys.
    for user in ["op", "root", "deploy-agentx", "Deploy-Agent"] {
        let out = reg.ssh_as(user, &reg.keys.service, "components");
        out.assert_code(255);
        out.assert_stderr_contains(DENIED);
    }
    // Any user name other than deploy-agent is an operator.
    for user in ["op", "root", "alice"] {
        reg.ssh_as(user, &reg.keys.operator, "components")
            .assert_ok();
    }
}

#[test]
fn same_key_in_both_files_takes_the_role_of_the_user_name() {
    let keys = Keys::new();
    let both = keys.extra("both");
    let line = keys.public(&both);
    fs::write(
        &keys.operator_keys,
        format!("{}{line}", keys.public(&keys.operator)),
    )
    .unwrap();
    fs::write(
        &keys.service_keys,
        format!("{}{line}", keys.public(&keys.service)),
    )
    .unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    reg.ssh_as("op", &both, "components").assert_ok();
    reg.ssh_as("deploy-agent", &both, "components")
        .assert_fail()
        .assert_stderr_contains("exec request failed");
}

#[test]
fn unknown_key_is_refused() {
    let reg = Registry::start();
    for user in ["op", "deploy-agent", "nobody"] {
        let out = reg.ssh_as(user, &reg.keys.stranger, "components");
        out.assert_code(255);
        out.assert_stderr_contains(DENIED);
        assert!(out.stdout.is_empty());
    }
    // Each refusal is logged with the user, the address and the key (spec A8).
    let fp = e2e::fingerprint_of(&reg.keys.stranger);
    let log = reg.log();
    for user in ["op", "deploy-agent", "nobody"] {
        assert!(
            log.lines().any(|l| l.contains("login refused")
                && l.contains(&format!("user={user} "))
                && l.contains("addr=127.0.0.1:")
                && l.contains(&fp)),
            "no refusal logged for {user} with {fp}:\n{log}"
        );
    }
    // The registry keeps serving.
    reg.ssh("components").assert_ok();
}

#[test]
fn only_publickey_auth_is_offered() {
    let reg = Registry::start();
    let mut c = Command::new("ssh");
    c.arg("-p")
        .arg(reg.port.to_string())
        .args([
            "-F",
            "/dev/null",
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-i")
        .arg(&reg.keys.stranger)
        .arg("op@127.0.0.1")
        .arg("components");
    let out = e2e::run(&mut c, None);
    out.assert_code(255);
    let err = out.stderr_str();
    let methods: Vec<&str> = err
        .lines()
        .filter_map(|l| {
            l.split_once("Authentications that can continue: ")
                .map(|(_, m)| m.trim())
        })
        .collect();
    assert!(
        !methods.is_empty(),
        "no auth method list in ssh -v output:\n{out}"
    );
    assert!(
        methods.iter().all(|m| *m == "publickey"),
        "methods offered: {methods:?}"
    );
    // Asking for password or keyboard-interactive explicitly gets nowhere either.
    let mut c = reg.ssh_cmd(&reg.keys.stranger);
    c.args([
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    ])
    .arg(reg.dest("op"))
    .arg("components");
    let out = e2e::run(&mut c, None);
    out.assert_code(255);
    assert!(out.stderr_str().contains("Permission denied"), "{out}");
}

#[test]
fn port_forwarding_is_refused() {
    let reg = Registry::start();
    // A target that would answer if a forward ever reached it.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    target.set_nonblocking(true).unwrap();

    // Stdio forwarding (-W) opens a direct-tcpip channel: refused.
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.arg("-W")
        .arg(format!("127.0.0.1:{target_port}"))
        .arg(reg.dest("op"));
    let out = e2e::run(&mut c, Some(b"hello"));
    out.assert_fail();
    assert!(out.stdout.is_empty(), "{out}");

    // Remote forwarding (-R) is a global request: refused.
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("0:127.0.0.1:{target_port}"))
        .arg(reg.dest("op"));
    let out = e2e::run(&mut c, None);
    out.assert_fail();
    out.assert_stderr_contains("remote port forwarding failed");

    // Local forwarding (-L): ssh listens, but the channel it opens per connection is refused,
    // so the local connection is closed without reaching the target.
    let lport = free_port();
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.arg("-N")
        .arg("-L")
        .arg(format!("{lport}:127.0.0.1:{target_port}"))
        .arg(reg.dest("op"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let guard = KillOnDrop(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", lport)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ssh -L never listened on {lport}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = conn.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "forwarded connection should be closed, got data");
    thread::sleep(Duration::from_millis(200));
    assert!(target.accept().is_err(), "the forward reached the target");
    drop(guard);
    // The registry still serves.
    reg.ssh("components").assert_ok();
}

struct KillOnDrop<'a>(&'a mut std::process::Child);
impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Retries `f` until it returns true, for up to 15 s (a reload is asynchronous).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn key_files_are_reloaded_on_sighup() {
    let mut reg = Registry::start();
    let newkey = reg.keys.extra("newcomer");
    let newpub = reg.keys.public(&newkey);
    let oppub = reg.keys.public(&reg.keys.operator);
    reg.ssh_as("op", &newkey, "components").assert_code(255);

    fs::write(&reg.keys.operator_keys, format!("{oppub}{newpub}")).unwrap();
    reg.signal(libc::SIGHUP);
    eventually("new key accepted after SIGHUP", || {
        reg.ssh_as("op", &newkey, "components").ok()
    });
    reg.ssh("components").assert_ok();

    // Revoke the old operator key.
    fs::write(&reg.keys.operator_keys, &newpub).unwrap();
    reg.signal(libc::SIGHUP);
    eventually("old key refused after SIGHUP", || {
        reg.ssh("components").code() == Some(255)
    });
    reg.ssh_as("op", &newkey, "components").assert_ok();

    // Service keys too.
    let agentpub = reg.keys.public(&reg.keys.service);
    fs::write(&reg.keys.service_keys, &newpub).unwrap();
    reg.signal(libc::SIGHUP);
    eventually("service key revoked", || {
        reg.sftp_service("pwd\n").code() == Some(255)
    });
    reg.sftp("deploy-agent", &newkey, "pwd\n").assert_ok();

    // A broken file on reload keeps the keys in force (and the server running).
    fs::write(&reg.keys.operator_keys, "this is not a key\n").unwrap();
    reg.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(500));
    assert!(
        reg.is_running(),
        "registry died on a bad reload:\n{}",
        reg.log()
    );
    reg.ssh_as("op", &newkey, "components").assert_ok();
    fs::write(&reg.keys.service_keys, &agentpub).unwrap();
    assert!(reg.is_running());
}

#[test]
fn comments_and_blank_lines_in_key_files_are_accepted() {
    let keys = Keys::new();
    let op = keys.public(&keys.operator);
    let srv = keys.public(&keys.service);
    fs::write(
        &keys.operator_keys,
        format!("# operators\n\n   \n{op}\n# end\n"),
    )
    .unwrap();
    fs::write(
        &keys.service_keys,
        format!("\n# agents\n{}", srv.trim_end()),
    )
    .unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    reg.ssh("components").assert_ok();
    reg.sftp_service("pwd\n").assert_ok();
}

#[test]
fn key_file_without_keys_is_refused_at_start() {
    let keys = Keys::new();
    fs::write(&keys.operator_keys, "# nobody\n\n").unwrap();
    let path = keys.operator_keys.display().to_string();
    let err = match Registry::try_start_in(None, keys, &[]) {
        Ok(_) => panic!("registry started with an empty operator key file"),
        Err(e) => e,
    };
    assert!(err.status.is_some_and(|s| !s.success()), "{err:?}");
    assert!(
        err.log.contains(&path),
        "the error should name the file:\n{}",
        err.log
    );
}

#[test]
fn from_option_is_enforced() {
    let keys = Keys::new();
    let far = keys.extra("far");
    let near = keys.extra("near");
    let pattern = keys.extra("pattern");
    let negated = keys.extra("negated");
    let lines = format!(
        "{}from=\"10.0.0.1\" {}from=\"127.0.0.1\" {}from=\"10.*,127.0.0.?\" {}from=\"!127.0.0.1,*\" {}",
        keys.public(&keys.operator),
        keys.public(&far),
        keys.public(&near),
        keys.public(&pattern),
        keys.public(&negated)
    );
    fs::write(&keys.operator_keys, lines).unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    reg.ssh("components").assert_ok();
    reg.ssh_as("op", &near, "components").assert_ok();
    reg.ssh_as("op", &pattern, "components").assert_ok();
    let out = reg.ssh_as("op", &far, "components");
    out.assert_code(255);
    out.assert_stderr_contains(DENIED);
    let out = reg.ssh_as("op", &negated, "components");
    out.assert_code(255);
    out.assert_stderr_contains(DENIED);
}

#[test]
fn expiry_time_option_is_enforced() {
    let keys = Keys::new();
    let expired = keys.extra("expired");
    let valid = keys.extra("valid");
    let lines = format!(
        "{}expiry-time=\"20000101\" {}expiry-time=\"29991231\" {}",
        keys.public(&keys.operator),
        keys.public(&expired),
        keys.public(&valid)
    );
    fs::write(&keys.operator_keys, lines).unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    reg.ssh_as("op", &valid, "components").assert_ok();
    let out = reg.ssh_as("op", &expired, "components");
    out.assert_code(255);
    out.assert_stderr_contains(DENIED);
}

/// `command="..."` on an operator key (spec A6: the original ignored it and gave a full
/// console): whatever the client asks to run, that console line runs instead, as with sshd; a
/// shell runs it too; uploads are refused. `no-pty` refuses a terminal.
#[test]
fn command_and_no_pty_options_are_enforced() {
    let keys = Keys::new();
    let limited = keys.extra("limited");
    let nopty = keys.extra("nopty");
    let lines = format!(
        "{}command=\"showconf -name \\\"w b\\\"\" {}no-pty {}",
        keys.public(&keys.operator),
        keys.public(&limited),
        keys.public(&nopty)
    );
    fs::write(&keys.operator_keys, lines).unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    let forced = "configuration \"w b\" not found\n";
    reg.ssh_as("op", &limited, "delconf -name x")
        .assert_code(1)
        .assert_stdout(forced);
    // A shell (no command), with a terminal: the forced line, its output with CRLF.
    let mut shell = reg.ssh_cmd(&limited);
    shell.arg("-tt").arg(reg.dest("op"));
    let out = e2e::run(&mut shell, Some(b"delconf -name x\n"));
    out.assert_code(1);
    assert_eq!(
        out.stdout_str(),
        "configuration \"w b\" not found\r\n",
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    fs::write(&file, b"data").unwrap();
    let out = reg.sftp("op", &limited, &format!("put {} f.bin\n", file.display()));
    assert_ne!(
        out.code(),
        Some(0),
        "upload allowed to a command= key:\n{out}"
    );
    out.assert_stderr_contains("subsystem request failed");
    // The audit shows what ran, and the log what was asked.
    let audit = reg.ssh("audit").stdout_str();
    assert!(audit.contains("showconf -name 'w b'"), "{audit}");
    assert!(!audit.contains("delconf"), "{audit}");
    assert!(reg.log().contains("asked=delconf -name x"), "{}", reg.log());
    // no-pty: the terminal is refused (which `ssh -tt` takes as fatal, as against sshd);
    // without one the key has the full console.
    let mut c = reg.ssh_cmd(&nopty);
    c.arg("-tt").arg(reg.dest("op")).arg("showconf -name q");
    let out = e2e::run(&mut c, None);
    out.assert_stderr_contains("PTY allocation request failed");
    assert!(out.stdout.is_empty(), "{out}");
    reg.ssh_as("op", &nopty, "showconf -name q")
        .assert_code(1)
        .assert_stdout("configuration \"q\" not found\n");
    // Without options: a full console, a terminal.
    let mut c = reg.ssh_cmd(&reg.keys.operator);
    c.arg("-tt").arg(reg.dest("op")).arg("showconf -name q");
    e2e::run(&mut c, None)
        .assert_code(1)
        .assert_stdout("configuration \"q\" not found\r\n");
}

/// `-viewauth FILE`: its keys get the console's commands that only show (spec A7: the
/// original had no authorization model, every operator could delete everything); anything
/// else is refused, audited, and so are uploads. A key in both files is an operator.
#[test]
fn viewer_keys_only_look() {
    let keys = Keys::new();
    let viewer = keys.extra("viewer");
    let view_file = keys.operator_keys.with_file_name("viewer.keys");
    fs::write(
        &view_file,
        format!(
            "# read-only\n{}{}",
            keys.public(&viewer),
            keys.public(&keys.operator)
        ),
    )
    .unwrap();
    let reg = Registry::start_in(None, keys, &["-viewauth", view_file.to_str().unwrap()]);
    add_version(&reg, "code", "v1", &tar_gz(&[("f", b"1")]));
    reg.ssh("addconf -name web -layer code:v1").assert_ok();
    let shown = reg.ssh("showconf -name web").stdout_str();
    reg.ssh_as("eve", &viewer, "showconf -name web")
        .assert_code(0)
        .assert_stdout(&shown);
    reg.ssh_as("eve", &viewer, "components").assert_ok();
    reg.ssh_as("eve", &viewer, "status").assert_ok();
    reg.ssh_as("eve", &viewer, "forget -silent")
        .assert_code(1)
        .assert_stdout("forget: not allowed with a read-only key\n");
    reg.ssh_as("eve", &viewer, "delconf -name web -force")
        .assert_code(1)
        .assert_stdout("delconf: not allowed with a read-only key\n");
    reg.ssh_as("eve", &viewer, "showconf -name web").assert_ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    fs::write(&file, b"data").unwrap();
    let out = reg.sftp("eve", &viewer, &format!("put {} f.bin\n", file.display()));
    assert_ne!(out.code(), Some(0), "a viewer uploaded:\n{out}");
    out.assert_stderr_contains("subsystem request failed");
    // The interactive console too.
    let mut c = reg.ssh_cmd(&viewer);
    c.arg("-tt").arg(reg.dest("eve"));
    let out = e2e::run(&mut c, Some(b"addconf -name x -layer code:v1\rexit\r"));
    assert!(
        out.stdout_str()
            .contains("addconf: not allowed with a read-only key"),
        "{out}"
    );
    let audit = reg.ssh("audit").stdout_str();
    assert!(
        audit.lines().any(|l| l.contains("eve")
            && l.contains("fail: not allowed with a read-only key")
            && l.contains("delconf")),
        "{audit}"
    );
    // The operator's key is in the viewer file too: still an operator.
    reg.ssh("delconf -name web -force").assert_ok();
}

#[test]
fn only_the_sftp_subsystem_exists() {
    let reg = Registry::start();
    for (user, key) in [
        ("op", &reg.keys.operator),
        ("deploy-agent", &reg.keys.service),
    ] {
        let out = reg.ssh_raw(user, key, &["-s"], Some("shell"), None);
        out.assert_fail();
        out.assert_stderr_contains("subsystem request failed on channel 0");
    }
    // Environment variables are ignored, the command still runs.
    let out = reg.ssh_raw(
        "op",
        &reg.keys.operator,
        &["-o", "SetEnv=LD_PRELOAD=/tmp/x.so"],
        Some("components"),
        None,
    );
    out.assert_ok();
}

/// Writes `file` with `whole`'s key and a new key `name` limited to the configurations that
/// match `patterns`; returns the new key.
fn limited_key(
    keys: &Keys,
    file: &std::path::Path,
    whole: &std::path::Path,
    patterns: &str,
    name: &str,
) -> std::path::PathBuf {
    let limited = keys.extra(name);
    let lines = format!(
        "{}configs=\"{patterns}\" {}",
        keys.public(whole),
        keys.public(&limited)
    );
    fs::write(file, lines).unwrap();
    limited
}

/// An operator key with `configs="web*"` (A7: every operator could delete everything): its
/// console shows and changes only the web configurations; it uploads and adds versions to
/// components no other configuration uses, but deletes none and runs neither audit nor fsck.
/// Refusals are audited.
#[test]
fn an_operator_key_limited_to_some_configurations_changes_only_those() {
    let keys = Keys::new();
    let team = limited_key(
        &keys,
        &keys.operator_keys,
        &keys.operator,
        "web*",
        "web-team",
    );
    let reg = Registry::start_in(None, keys, &[]);
    add_version(&reg, "code", "v1", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name db -layer code:v1").assert_ok();
    let db = reg.ssh("showconf -name db").stdout_str();

    // An upload and addver of its own (not to `code`: db uses it), then its configurations,
    // with shared `code` as a layer.
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar.gz");
    fs::write(&layer, tar_gz(&[("a", b"2")])).unwrap();
    reg.sftp("alice", &team, &format!("put {} l.tgz\n", layer.display()))
        .assert_ok();
    let hash = e2e::sha256_hex(&fs::read(&layer).unwrap());
    let team_runs = |cmd: &str| reg.ssh_as("alice", &team, cmd);
    team_runs(&format!("addver -name code -version v2 -hash {hash}"))
        .assert_code(1)
        .assert_stdout("addver: component \"code\" is used by configuration \"db\", which is not among this key's configs=\n");
    team_runs(&format!("addver -name site -version v1 -hash {hash}")).assert_ok();
    team_runs("addconf -name web -layer code:v1 -layer site:v1").assert_ok();
    team_runs(&format!("addver -name site -version v2 -hash {hash}")).assert_ok();
    team_runs("changeconf -name web -component site -version v2").assert_ok();
    team_runs("configurations").assert_stdout("web\n");
    reg.ssh("configurations").assert_stdout("db\nweb\n");

    for (cmd, why) in [
        (
            "delconf -name db -force",
            "configuration \"db\" is not among this key's configs=",
        ),
        (
            "changeconf -name db -component site -version v1",
            "configuration \"db\" is not among this key's configs=",
        ),
        (
            "showconf -name db",
            "configuration \"db\" is not among this key's configs=",
        ),
        (
            "delver -name code -version v1",
            "not allowed with a key limited by configs=",
        ),
        ("audit", "not allowed with a key limited by configs="),
    ] {
        let word = cmd.split(' ').next().unwrap();
        team_runs(cmd)
            .assert_code(1)
            .assert_stdout(&format!("{word}: {why}\n"));
    }
    reg.ssh("showconf -name db").assert_stdout(&db);
    reg.ssh("showcomp -name code").assert_stdout_contains("v1");
    let audit = reg.ssh("audit").stdout_str();
    assert!(
        audit.lines().any(|l| l.contains("alice")
            && l.contains("is not among this key's configs=")
            && l.contains("delconf -name db -force")),
        "{audit}"
    );
}

/// `configs="pattern-list"` on a service key: its agent sees only those configurations, and
/// only the blobs they name; everything else does not exist for it (A7: every agent key read
/// every configuration and blob). Reports are limited the same way.
#[test]
fn a_service_key_limited_to_some_configurations_sees_only_those() {
    let keys = Keys::new();
    let web_only = limited_key(
        &keys,
        &keys.service_keys,
        &keys.service,
        "web*,!web-secret",
        "web-only",
    );
    let reg = Registry::start_in(None, keys, &[]);
    let web_blob = add_version(&reg, "code", "v01", &tar_gz(&[("a", b"web")]));
    let db_blob = add_version(&reg, "data", "v01", &tar_gz(&[("a", b"db")]));
    let old_blob = add_version(&reg, "code", "v00", &tar_gz(&[("a", b"old")]));
    reg.ssh("addconf -name web -layer code:v00").assert_ok();
    reg.ssh("changeconf -name web -component code -version v01")
        .assert_ok();
    reg.ssh("addconf -name web-secret -layer data:v01")
        .assert_ok();
    reg.ssh("addconf -name db -layer data:v01").assert_ok();

    let ls = |key: &std::path::Path, dir: &str| -> Vec<String> {
        let out = reg.sftp("deploy-agent", key, &format!("ls -1 {dir}\n"));
        out.assert_ok();
        let mut names: Vec<String> = out
            .stdout_str()
            .lines()
            .filter(|l| !l.starts_with("sftp>"))
            .map(|l| l.rsplit('/').next().unwrap_or(l).to_string())
            .collect();
        names.sort();
        names
    };
    let svc = reg.keys.service.clone();
    assert_eq!(
        ls(&svc, "configs"),
        ["db.json", "web-secret.json", "web.json"]
    );
    assert_eq!(ls(&web_only, "configs"), ["web.json"]);
    // The blobs of web, now and in its history (a rollback target); not db's.
    let mut want = vec![web_blob.clone(), old_blob.clone()];
    want.sort();
    assert_eq!(ls(&web_only, "files"), want);
    assert_eq!(ls(&svc, "files").len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let get = |key: &std::path::Path, path: &str| {
        let local = dir.path().join("got");
        let _ = fs::remove_file(&local);
        reg.sftp(
            "deploy-agent",
            key,
            &format!("get {path} {}\n", local.display()),
        )
    };
    get(&web_only, "configs/web.json").assert_ok();
    get(&web_only, &format!("files/{web_blob}")).assert_ok();
    for hidden in [
        "configs/db.json".to_string(),
        "configs/web-secret.json".to_string(),
        format!("files/{db_blob}"),
    ] {
        let out = get(&web_only, &hidden);
        assert_ne!(out.code(), Some(0), "{hidden} was readable:\n{out}");
        // What sftp says of a file that does not exist at all.
        out.assert_stderr_contains(&format!("File \"/{hidden}\" not found."));
        get(&svc, &hidden).assert_ok();
    }
    // A blob that web comes to name becomes readable.
    reg.ssh("addconf -name web -layer code:v01 -layer data:v01")
        .assert_ok();
    get(&web_only, &format!("files/{db_blob}")).assert_ok();

    // A real agent with the limited key deploys web, and finds no db.
    let agent = |name: &str| {
        let host = tempfile::tempdir().unwrap();
        let out = e2e::run(
            reg.agent_command(host.path(), name, &web_only).args([
                "-script",
                "",
                "-once",
                "-report-as",
                "agent-1",
            ]),
            None,
        );
        (out, host)
    };
    let (out, host) = agent("web");
    out.assert_ok();
    assert!(
        fs::read_to_string(host.path().join("state.json"))
            .unwrap()
            .contains(&db_blob),
        "{out}"
    );
    let (out, _) = agent("db");
    out.assert_fail();
    out.assert_stderr_contains("file does not exist");
    let status = reg.ssh("status").stdout_str();
    assert!(status.contains("web   agent-1   current"), "{status}");
    assert!(!status.contains("db "), "{status}");

    let report = |name: &str| {
        reg.ssh_as(
            "deploy-agent",
            &web_only,
            &format!("report -name {name} -host h1 -hash {}", "0".repeat(64)),
        )
    };
    report("web").assert_ok();
    report("db")
        .assert_code(1)
        .assert_stdout_contains("report: configuration \"db\" is not among this key's configs=");
}
