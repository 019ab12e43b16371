//! `deployctl` end to end: the built binary against the built `deploy-registry` (spec 4):
//! every subcommand, the addver upload, local archive refusal (B21), safe re-quoting (A10),
//! host key checks (fingerprint, known_hosts), key file and ssh-agent auth, environment
//! defaults, exit codes 0/1/2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Out, Registry, bin, eqnice, gzip, run, run_with_timeout, sha256_hex, tar_gz};

/// A `deployctl` with a controlled environment: operator user `op`, a HOME of our own (so no
/// real known_hosts or agent leaks in), no DEPLOYCTL_* variables.
fn ctl_env(home: &Path) -> Command {
    let mut c = Command::new(bin("deployctl"));
    c.env("USER", "op")
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DEPLOYCTL_ADDR")
        .env_remove("DEPLOYCTL_FINGERPRINT");
    c
}

/// `deployctl -addr <reg> -fp <fp> -key <operator key> ARGS...`.
fn ctl(reg: &Registry, args: &[&str]) -> Out {
    reg.deployctl(args)
}

#[track_caller]
fn ok(out: &Out) -> String {
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "stderr not empty:\n{out}");
    out.stdout_str()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn uploads(reg: &Registry) -> Vec<String> {
    match std::fs::read_dir(reg.data_dir().join("uploads")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn usage_and_exit_codes_without_a_registry() {
    let home = tempfile::tempdir().unwrap();
    let out = run(&mut ctl_env(home.path()), None);
    out.assert_code(2);
    assert!(out.stdout.is_empty());
    let err = out.stderr_str();
    assert!(
        err.starts_with(
            "addr should be set\n\nUsage: deployctl [flags] subcommand [subcommand flags]\n  -addr string\n"
        ),
        "{out}"
    );
    assert!(err.contains("\nSubcommands:\n\naddver "), "{out}");
    assert!(err.contains("(SHA256:...)"), "{out}");

    let usage = err.trim_start_matches("addr should be set\n\n").to_string();
    let out = run(ctl_env(home.path()).arg("-h"), None);
    out.assert_code(0);
    eqnice!(usage, out.stderr_str());

    let out = run(ctl_env(home.path()).args(["-addr", "127.0.0.1:1"]), None);
    out.assert_code(2);
    eqnice!(usage, out.stderr_str());

    let out = run(ctl_env(home.path()).args(["-nope"]), None);
    out.assert_code(2);
    eqnice!(
        format!("flag provided but not defined: -nope\n{usage}"),
        out.stderr_str()
    );

    for cmd in ["help", "frobnicate"] {
        let out = run(
            ctl_env(home.path()).args(["-addr", "127.0.0.1:1", cmd]),
            None,
        );
        out.assert_code(1);
        eqnice!(format!("unknown command: \"{cmd}\"\n"), out.stderr_str());
    }

    // local validation happens before any connection (port 1 is closed)
    let out = run(
        ctl_env(home.path()).args(["-addr", "127.0.0.1:1", "showconf"]),
        None,
    );
    out.assert_code(1);
    eqnice!("name should be set\n", out.stderr_str());
    let out = run(
        ctl_env(home.path()).args(["-addr", "127.0.0.1:1", "showconf", "-x"]),
        None,
    );
    out.assert_code(2);
    assert!(
        out.stderr_str()
            .starts_with("flag provided but not defined: -x\nUsage of showconf:\n"),
        "{out}"
    );
    let out = run(
        ctl_env(home.path()).args(["-addr", "127.0.0.1:1", "addver", "-name", "a"]),
        None,
    );
    out.assert_code(1);
    eqnice!(
        "name, version and file should all be set\n",
        out.stderr_str()
    );

    // the service account name is refused before connecting
    let out = run(
        ctl_env(home.path()).env("USER", "deploy-agent").args([
            "-addr",
            "127.0.0.1:1",
            "-key",
            "/x",
            "components",
        ]),
        None,
    );
    out.assert_code(1);
    assert!(out.stderr_str().contains("deploy-agent"), "{out}");
}

#[test]
fn every_subcommand_happy_path() {
    let reg = Registry::start();
    let dir = reg.work_dir();
    let code_v1 = tar_gz(&[("bin/app", b"v1")]);
    let code_v2 = tar_gz(&[("bin/app", b"v2")]);
    let cfg_v1 = tar_gz(&[("etc/app.conf", b"x=1")]);
    let f1 = write_file(dir, "code1.tar.gz", &code_v1);
    let f2 = write_file(dir, "code2.tar.gz", &code_v2);
    let f3 = write_file(dir, "cfg1.tar.gz", &cfg_v1);

    for (name, version, file) in [("code", "v1", &f1), ("config", "v1", &f3)] {
        let out = ctl(
            &reg,
            &[
                "addver",
                "-name",
                name,
                "-version",
                version,
                "-file",
                file.to_str().unwrap(),
            ],
        );
        // not a terminal: no progress line
        eqnice!("", ok(&out));
    }
    // the blob is stored under its sha256
    assert!(
        reg.data_dir()
            .join("files")
            .join(sha256_hex(&code_v1))
            .is_file()
    );

    eqnice!("code\nconfig\n", ok(&ctl(&reg, &["components"])));
    eqnice!(
        reg.ssh("showcomp -name code").assert_ok().stdout_str(),
        ok(&ctl(&reg, &["showcomp", "-name", "code"]))
    );

    eqnice!(
        "",
        ok(&ctl(
            &reg,
            &[
                "addconf",
                "-name",
                "web",
                "-layer",
                "code:v1",
                "-layer",
                "config:v1"
            ]
        ))
    );
    eqnice!("web\n", ok(&ctl(&reg, &["configurations"])));
    let shown = ok(&ctl(&reg, &["showconf", "-name", "web"]));
    eqnice!(
        reg.ssh("showconf -name web").assert_ok().stdout_str(),
        shown
    );
    assert!(shown.starts_with("code "), "{shown}");
    eqnice!(
        reg.ssh("showconf -name web -v").assert_ok().stdout_str(),
        ok(&ctl(&reg, &["showconf", "-name", "web", "-v"]))
    );

    // v2, then bump: the rollback hint passes through
    ok(&ctl(
        &reg,
        &[
            "addver",
            "-name",
            "code",
            "-version",
            "v2",
            "-file",
            f2.to_str().unwrap(),
        ],
    ));
    eqnice!(
        "to roll back run:\n\tchangeconf -name=\"web\" -component=\"code\" -version=\"v1\"\n",
        ok(&ctl(
            &reg,
            &["bumpconf", "-name", "web", "-component", "code"]
        ))
    );
    eqnice!(
        "",
        ok(&ctl(
            &reg,
            &[
                "changeconf",
                "-name",
                "web",
                "-component",
                "code",
                "-version",
                "v1"
            ]
        ))
    );
    assert!(
        ok(&ctl(&reg, &["showconf", "-name", "web"])).contains(" v1 "),
        "changeconf did not apply"
    );

    // our additions
    let history = ok(&ctl(&reg, &["history", "-name", "web"]));
    eqnice!(
        reg.ssh("history -name web").assert_ok().stdout_str(),
        history
    );
    assert!(history.lines().count() >= 3, "{history}");
    ctl(&reg, &["rollback", "-name", "web"]).assert_code(0);
    assert!(
        ok(&ctl(&reg, &["showconf", "-name", "web"])).contains(" v2 "),
        "rollback did not restore the bumped state"
    );
    let audit = ok(&ctl(&reg, &["audit"]));
    assert!(audit.contains("addconf"), "{audit}");
    ctl(&reg, &["fsck"]).assert_code(0);
    // No agent reported yet; the flag is checked locally, as the console checks it.
    eqnice!("", ok(&ctl(&reg, &["status", "-name", "web"])));
    ctl(&reg, &["status", "-name", "a/b"])
        .assert_code(1)
        .assert_stderr_contains("name cannot contain / symbol");
    eqnice!("", ok(&ctl(&reg, &["forget", "-silent"])));
    ctl(&reg, &["forget", "-name", "web", "-host", "gone"])
        .assert_code(1)
        .assert_stdout("no report of host \"gone\" for configuration \"web\" found\n");
    ctl(&reg, &["forget", "-name", "web"])
        .assert_code(1)
        .assert_stderr_contains("either -host or -silent should be set");

    // deletes
    eqnice!("", ok(&ctl(&reg, &["delconf", "-name", "web", "-force"])));
    eqnice!("", ok(&ctl(&reg, &["configurations"])));
    eqnice!(
        "",
        ok(&ctl(&reg, &["delver", "-name", "code", "-version", "v1"]))
    );
    eqnice!("", ok(&ctl(&reg, &["delcomp", "-name", "config"])));
    eqnice!("code\n", ok(&ctl(&reg, &["components"])));
}

#[test]
fn remote_errors_pass_through_and_exit_1() {
    let reg = Registry::start();
    let f = write_file(reg.work_dir(), "a.tar.gz", &tar_gz(&[("a", b"a")]));
    let args = [
        "addver",
        "-name",
        "c",
        "-version",
        "v03",
        "-file",
        f.to_str().unwrap(),
    ];
    ok(&ctl(&reg, &args));
    let out = ctl(&reg, &args);
    out.assert_code(1);
    // the registry's text, on stdout as the original console writes it; nothing of ours
    eqnice!("version \"v03\" already exists\n", out.stdout_str());
    eqnice!("", out.stderr_str());
    // known before the upload (the original uploaded, then was refused): nothing was sent
    assert_eq!(uploads(&reg), Vec::<String>::new());

    let out = ctl(&reg, &["showconf", "-name", "nope"]);
    out.assert_code(1);
    eqnice!("configuration \"nope\" not found\n", out.stdout_str());
    eqnice!("", out.stderr_str());
}

#[test]
fn invalid_archive_is_refused_before_upload() {
    let reg = Registry::start();
    let dir = reg.work_dir();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"this is not an archive at all, just text".to_vec()),
        ("gzip-of-text", gzip(&[b'x'; 5000])),
        ("truncated", {
            let t = tar_gz(&[("big", &[7u8; 200_000])]);
            t[..t.len() / 2].to_vec()
        }),
    ];
    // the check below is only meaningful if this is where uploads land
    assert!(reg.data_dir().join("uploads").is_dir());
    let before = uploads(&reg);
    for (name, data) in cases {
        let f = write_file(dir, name, &data);
        let out = ctl(
            &reg,
            &[
                "addver",
                "-name",
                "c",
                "-version",
                name,
                "-file",
                f.to_str().unwrap(),
            ],
        );
        out.assert_code(1);
        assert!(
            out.stderr_str()
                .starts_with("deployctl: file validation failed: "),
            "{out}"
        );
        assert_eq!(uploads(&reg), before, "{name}: something reached uploads/");
    }
    eqnice!("", ok(&ctl(&reg, &["components"])));
    // a missing file is a local error too
    let out = ctl(
        &reg,
        &[
            "addver",
            "-name",
            "c",
            "-version",
            "v",
            "-file",
            "/no/such.tgz",
        ],
    );
    out.assert_code(1);
    eqnice!(
        "deployctl: open /no/such.tgz: no such file or directory\n",
        out.stderr_str()
    );
}

#[test]
fn addver_by_stored_hash_without_upload() {
    let reg = Registry::start();
    let data = tar_gz(&[("a", b"same")]);
    let f = write_file(reg.work_dir(), "a.tar.gz", &data);
    ok(&ctl(
        &reg,
        &[
            "addver",
            "-name",
            "c",
            "-version",
            "v1",
            "-file",
            f.to_str().unwrap(),
        ],
    ));
    let h = sha256_hex(&data);
    eqnice!(
        "",
        ok(&ctl(
            &reg,
            &["addver", "-name", "c", "-version", "v2", "-hash", &h]
        ))
    );
    let shown = ok(&ctl(&reg, &["showcomp", "-name", "c"]));
    assert!(shown.contains(" v1 ") && shown.contains(" v2 "), "{shown}");
    let out = ctl(
        &reg,
        &[
            "addver", "-name", "c", "-version", "v3", "-hash", &h, "-file", "x",
        ],
    );
    out.assert_code(2);
    assert!(
        out.stderr_str()
            .starts_with("-file and -hash are mutually exclusive"),
        "{out}"
    );
}

#[test]
fn injected_flag_in_a_value_is_not_a_flag() {
    // spec A10: the original sent `delconf -name x -force` and deleted x without confirmation.
    let reg = Registry::start();
    let f = write_file(reg.work_dir(), "a.tar.gz", &tar_gz(&[("a", b"a")]));
    ok(&ctl(
        &reg,
        &[
            "addver",
            "-name",
            "c",
            "-version",
            "v1",
            "-file",
            f.to_str().unwrap(),
        ],
    ));
    ok(&ctl(&reg, &["addconf", "-name", "x", "-layer", "c:v1"]));
    let out = ctl(&reg, &["delconf", "-name", "x -force"]);
    out.assert_code(1);
    eqnice!(
        "Run command with -force flag to confirm removal\n",
        out.stdout_str()
    );
    let out = ctl(&reg, &["delconf", "-name", "x -force", "-force"]);
    out.assert_code(1);
    eqnice!("\"x -force\" configuration not found\n", out.stdout_str());
    // shell metacharacters are data too
    let out = ctl(&reg, &["showconf", "-name", "x; delconf -name x -force"]);
    out.assert_code(1);
    eqnice!(
        "configuration \"x; delconf -name x -force\" not found\n",
        out.stdout_str()
    );
    eqnice!("x\n", ok(&ctl(&reg, &["configurations"])));
}

#[test]
fn fingerprint_check() {
    let reg = Registry::start();
    let mut c = ctl_env(reg.work_dir());
    c.args(["-addr", &reg.addr(), "-key"])
        .arg(&reg.keys.operator)
        .args([
            "-fp",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "components",
        ]);
    let out = run(&mut c, None);
    out.assert_code(1);
    eqnice!(
        format!(
            "deployctl: ssh: handshake failed: host key fingerprint mismatch: {}\n",
            reg.fingerprint()
        ),
        out.stderr_str()
    );
    // the help text's lowercase prefix is accepted (B20)
    let lower = reg.fingerprint().replacen("SHA256:", "sha256:", 1);
    let mut c = ctl_env(reg.work_dir());
    c.args(["-addr", &reg.addr(), "-fp", &lower, "-key"])
        .arg(&reg.keys.operator)
        .arg("components");
    ok(&run(&mut c, None));
}

/// `ssh-keygen -y` of the registry's host key: the `.pub` line.
fn host_pub(reg: &Registry) -> String {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(reg.data_dir().join("host_key")),
        None,
        30,
    );
    out.assert_ok();
    out.stdout_str()
}

#[test]
fn known_hosts_fallback() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let kh = home.path().join(".ssh").join("known_hosts");
    let run_ctl = || {
        let mut c = ctl_env(home.path());
        c.args(["-addr", &reg.addr(), "-key"])
            .arg(&reg.keys.operator)
            .arg("components");
        run(&mut c, None)
    };
    // no file: Go's knownhosts.New error
    let out = run_ctl();
    out.assert_code(1);
    eqnice!(
        format!(
            "deployctl: open {}: no such file or directory\n",
            kh.display()
        ),
        out.stderr_str()
    );

    std::fs::create_dir_all(kh.parent().unwrap()).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{} {}", reg.port, host_pub(&reg))).unwrap();
    ok(&run_ctl());

    // an entry without the port form is for port 22: unknown here, and the message says what
    // to do
    std::fs::write(&kh, format!("127.0.0.1 {}", host_pub(&reg))).unwrap();
    let out = run_ctl();
    out.assert_code(1);
    eqnice!(
        format!(
            "deployctl: ssh: handshake failed: host key for [127.0.0.1]:{} is not in {}; pass -fp {} or add it\n",
            reg.port,
            kh.display(),
            reg.fingerprint()
        ),
        out.stderr_str()
    );
}

struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path, keys: &[&Path]) -> Agent {
    let sock = dir.join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent { child, sock };
    for _ in 0..500 {
        if agent.sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for k in keys {
        run_with_timeout(
            Command::new("ssh-add")
                .arg("-q")
                .arg(k)
                .env("SSH_AUTH_SOCK", &agent.sock),
            None,
            30,
        )
        .assert_ok();
    }
    agent
}

#[test]
fn ssh_agent_auth() {
    let reg = Registry::start();
    let agent_dir = tempfile::tempdir().unwrap();
    // the stranger key first: every identity is tried
    let agent = start_agent(agent_dir.path(), &[&reg.keys.stranger, &reg.keys.operator]);
    let mut c = ctl_env(reg.work_dir());
    c.env("SSH_AUTH_SOCK", &agent.sock).args([
        "-addr",
        &reg.addr(),
        "-fp",
        &reg.fingerprint(),
        "components",
    ]);
    ok(&run(&mut c, None));

    let mut c = ctl_env(reg.work_dir());
    c.args([
        "-addr",
        &reg.addr(),
        "-fp",
        &reg.fingerprint(),
        "components",
    ]);
    let out = run(&mut c, None);
    out.assert_code(1);
    eqnice!(
        "deployctl: cannot connect to ssh-agent, check if SSH_AUTH_SOCK is set: dial unix: missing address\n",
        out.stderr_str()
    );
}

#[test]
fn environment_defaults() {
    let reg = Registry::start();
    let mut c = ctl_env(reg.work_dir());
    c.env("DEPLOYCTL_ADDR", reg.addr())
        .env("DEPLOYCTL_FINGERPRINT", reg.fingerprint())
        .arg("-key")
        .arg(&reg.keys.operator)
        .arg("configurations");
    ok(&run(&mut c, None));

    // set but empty still overrides (and then addr is missing)
    let mut c = ctl_env(reg.work_dir());
    c.env("DEPLOYCTL_ADDR", "").arg("configurations");
    let out = run(&mut c, None);
    out.assert_code(2);
    assert!(
        out.stderr_str().starts_with("addr should be set\n"),
        "{out}"
    );

    // flags win over the environment
    let mut c = ctl_env(reg.work_dir());
    c.env("DEPLOYCTL_ADDR", "127.0.0.1:1")
        .env("DEPLOYCTL_FINGERPRINT", "SHA256:wrong")
        .args(["-addr", &reg.addr(), "-fp", &reg.fingerprint(), "-key"])
        .arg(&reg.keys.operator)
        .arg("configurations");
    ok(&run(&mut c, None));
}

#[test]
fn bad_key_file_and_unknown_key() {
    let reg = Registry::start();
    let out = ctl_with_key(&reg, Path::new("/no/key"));
    out.assert_code(1);
    eqnice!(
        "deployctl: failed to read/parse key file \"/no/key\": no such file or directory\n",
        out.stderr_str()
    );
    let out = ctl_with_key(&reg, &reg.keys.stranger);
    out.assert_code(1);
    assert!(out.stderr_str().contains("unable to authenticate"), "{out}");
}

fn ctl_with_key(reg: &Registry, key: &Path) -> Out {
    let mut c = ctl_env(reg.work_dir());
    c.args(["-addr", &reg.addr(), "-fp", &reg.fingerprint(), "-key"])
        .arg(key)
        .arg("components");
    run(&mut c, None)
}

#[test]
fn progress_is_shown_on_a_terminal() {
    let reg = Registry::start();
    let data = tar_gz(&[("big", &vec![3u8; 3 << 20])]);
    let f = write_file(reg.work_dir(), "big.tar.gz", &data);
    // `script` gives deployctl a pty as stdout
    let on_a_terminal = |version: &str| {
        let line = format!(
            "{} -addr {} -fp {} -key {} addver -name big -version {version} -file {}",
            bin("deployctl").display(),
            reg.addr(),
            reg.fingerprint(),
            reg.keys.operator.display(),
            f.display()
        );
        let mut c = Command::new("script");
        c.env("USER", "op")
            .env_remove("SSH_AUTH_SOCK")
            .args(["-qec", &line, "/dev/null"]);
        run(&mut c, None)
    };
    let out = on_a_terminal("v1");
    out.assert_code(0);
    let shown = out.stdout_str();
    assert!(shown.starts_with('\r'), "{shown:?}");
    let size = format!("/{:.2}KB 100%", data.len() as f64 / 1024.0);
    assert!(shown.contains(&size), "{size} not in {shown:?}");
    assert!(shown.trim_end().ends_with("MB/s"), "{shown:?}");
    assert!(
        reg.data_dir()
            .join("files")
            .join(sha256_hex(&data))
            .is_file()
    );

    // The same content as another version: registered by its hash, nothing to upload, so
    // no progress either.
    let out = on_a_terminal("v2");
    out.assert_code(0);
    eqnice!("", out.stdout_str());
    let versions = reg.ssh("showcomp -name big").assert_ok().stdout_str();
    assert!(
        versions
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("v2")),
        "{versions}"
    );
}

#[test]
fn key_file_formats() {
    // RSA (signed with rsa-sha2-*), ECDSA, in OpenSSH and PEM encodings, as operators have them
    let keys = e2e::Keys::new();
    let formats: [(&str, &str, &[&str]); 4] = [
        ("rsa_openssh", "rsa", &["-b", "2048"]),
        ("rsa_pem", "rsa", &["-b", "2048", "-m", "PEM"]),
        ("ecdsa_pem", "ecdsa", &["-m", "PEM"]),
        ("ed25519_openssh", "ed25519", &[]),
    ];
    let mut listed = std::fs::read_to_string(&keys.operator_keys).unwrap();
    let mut paths = Vec::new();
    for (name, kind, extra) in formats {
        let p = keys.dir().join(name);
        e2e::keygen(&p, kind, extra);
        listed += &keys.public(&p);
        paths.push(p);
    }
    std::fs::write(&keys.operator_keys, listed).unwrap();
    let reg = Registry::start_in(None, keys, &[]);
    for p in &paths {
        ok(&ctl_with_key(&reg, p));
    }

    // an encrypted key: say what to do
    let enc = reg.keys.dir().join("encrypted");
    run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&enc),
        None,
        30,
    )
    .assert_ok();
    let out = ctl_with_key(&reg, &enc);
    out.assert_code(1);
    eqnice!(
        format!(
            "deployctl: failed to read/parse key file \"{}\": the key is encrypted; use an unencrypted key or load it into ssh-agent\n",
            enc.display()
        ),
        out.stderr_str()
    );
}
