//! deploy-agent end to end: a real registry, a real agent process, real OpenSSH for setup.
//! Spec: deploy-tools.md section 3 and the agent items of section 8.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::*;

/// The agent's working directory (its cwd, `-dir .` and `-state state.json` live here), with a
/// deploy script that records every deploy.
struct Host {
    dir: tempfile::TempDir,
}

const SCRIPT: &str = "#!/bin/sh\nenv > \"env-$NEWID.txt\"\ncat \"$STATEFILE\" > \"statefile-$NEWID.json\"\necho \"$NEWID\" >> deploys.log\necho \"deploying $NEWID\"\n";

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("e2e-agent")
            .tempdir()
            .expect("tempdir");
        let h = Host { dir };
        h.script(SCRIPT);
        h
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn script(&self, body: &str) {
        let p = self.path().join("deploy.sh");
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn command(&self, reg: &Registry, extra: &[&str]) -> Command {
        let mut c = reg.agent_command(self.path(), "project1", &reg.keys.service);
        c.arg("-v").args(extra);
        c
    }
    /// One cycle (`-once`).
    fn once(&self, reg: &Registry, extra: &[&str]) -> Out {
        let mut args = vec!["-once"];
        args.extend_from_slice(extra);
        run_with_timeout(&mut self.command(reg, &args), None, DEFAULT_TIMEOUT_SECS)
    }
    fn state(&self) -> String {
        fs::read_to_string(self.path().join("state.json")).unwrap_or_default()
    }
    fn current(&self) -> Option<PathBuf> {
        fs::read_link(self.path().join("current")).ok()
    }
    fn unpacked(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path().join("unpacked"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn env_of(host: &Host, id: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(host.path().join(format!("env-{id}.txt"))).unwrap();
    let mut v: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !["PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()))
        .collect();
    v.sort();
    v
}

fn fetched_line(out: &Out) -> String {
    out.stderr_str()
        .lines()
        .find(|l| l.contains("layers fetched from the registry"))
        .unwrap_or_else(|| panic!("no fetch counter in:\n{out}"))
        .to_string()
}

#[test]
fn deploy_update_rollback_cleanold() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("bin/app", b"code v01")]));
    add_version(
        &reg,
        "config",
        "v01",
        &tar_gz(&[("etc/app.conf", b"config v01")]),
    );
    reg.ssh("addconf -name project1 -layer code:v01 -layer config:v01")
        .assert_ok();

    // First deploy.
    let out = host.once(&reg, &[]);
    out.assert_ok();
    let first_json = reg.served_config("project1");
    let first = config_hash(&first_json);
    assert_eq!(
        host.state(),
        first_json,
        "state file must be the served JSON, byte for byte"
    );
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&first)));
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"code v01"
    );
    assert_eq!(host.unpacked(), vec![first.clone(), format!("{first}.ok"),]);
    out.assert_stderr_contains(&format!(
        "configuration update available: {first}\n\tcomponent 1: \"code\", version: \"v01\"\n\tcomponent 2: \"config\", version: \"v01\""
    ));
    out.assert_stderr_contains(&format!("switched to the new configuration: {first}"));
    out.assert_stderr_contains(&format!("deploying {first}"));
    assert!(fetched_line(&out).contains("2 of 2"));

    // The script's environment, exactly.
    let mut want: Vec<(String, String)> = vec![
        ("OLDID".into(), "".into()),
        ("OLDROOT".into(), "unpacked".into()),
        ("NEWID".into(), first.clone()),
        ("NEWROOT".into(), format!("unpacked/{first}")),
        ("LAYER_0_NAME".into(), "code".into()),
        ("LAYER_0_VERSION".into(), "v01".into()),
        ("LAYER_1_NAME".into(), "config".into()),
        ("LAYER_1_VERSION".into(), "v01".into()),
    ];
    for k in [
        "PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LC_ALL", "SHELL",
    ] {
        if let Ok(v) = std::env::var(k) {
            want.push((k.into(), v));
        }
    }
    let got = env_of(&host, &first);
    let statefile = got
        .iter()
        .find(|(k, _)| k == "STATEFILE")
        .expect("STATEFILE")
        .1
        .clone();
    want.push(("STATEFILE".into(), statefile.clone()));
    want.sort();
    assert_eq!(got, want);
    assert!(
        Path::new(&statefile)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("json-state-")
    );
    assert!(
        !Path::new(&statefile).exists(),
        "STATEFILE must be removed after the script"
    );
    assert_eq!(
        fs::read_to_string(host.path().join(format!("statefile-{first}.json"))).unwrap(),
        first_json
    );

    // Nothing changed: nothing happens.
    host.once(&reg, &[]).assert_ok();
    assert_eq!(
        fs::read_to_string(host.path().join("deploys.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    // Update one layer: exactly one layer crosses the network.
    add_version(&reg, "code", "v02", &tar_gz(&[("bin/app", b"code v02")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    let out = host.once(&reg, &[]);
    out.assert_ok();
    let second = config_hash(&reg.served_config("project1"));
    assert!(
        fetched_line(&out).contains("1 of 2"),
        "{}",
        fetched_line(&out)
    );
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"code v02"
    );
    let env2 = env_of(&host, &second);
    assert!(env2.contains(&("OLDID".into(), first.clone())));
    assert!(env2.contains(&("OLDROOT".into(), format!("unpacked/{first}"))));
    assert!(env2.contains(&("LAYER_0_VERSION".into(), "v02".into())));

    // Roll back: the old tree is reused, nothing is downloaded.
    reg.ssh("changeconf -name project1 -component code -version v01")
        .assert_ok();
    let out = host.once(&reg, &[]);
    out.assert_ok();
    assert_eq!(config_hash(&reg.served_config("project1")), first);
    assert!(
        fetched_line(&out).contains("0 of 2"),
        "{}",
        fetched_line(&out)
    );
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&first)));
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"code v01"
    );
    assert_eq!(
        host.unpacked().len(),
        4,
        "both trees kept without -cleanold"
    );

    // -cleanold: only the new tree stays; unrelated files are left alone (spec 3.3 step 13).
    fs::write(host.path().join("unpacked/escaped.txt"), b"").unwrap();
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    host.once(&reg, &["-cleanold"]).assert_ok();
    assert_eq!(
        host.unpacked(),
        vec![
            second.clone(),
            format!("{second}.ok"),
            "escaped.txt".to_string()
        ]
    );
}

#[test]
fn failing_script_keeps_old_state_and_is_retried() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    host.script("#!/bin/sh\necho nope >&2\nexit 3\n");
    let out = host.once(&reg, &[]);
    out.assert_fail();
    out.assert_stderr_contains("\"./deploy.sh\" call failure: exit status 3");
    out.assert_stderr_contains("script: nope");
    assert_eq!(host.state(), "");
    assert_eq!(host.current(), None);
    host.script(SCRIPT);
    host.once(&reg, &[]).assert_ok();
    assert_eq!(host.state(), reg.served_config("project1"));
}

#[test]
fn corrupt_state_file_is_reported_and_replaced_by_next_deploy() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    fs::write(host.path().join("state.json"), b"{garbage").unwrap();
    host.script("#!/bin/sh\nexit 1\n");
    let out = host.once(&reg, &[]);
    out.assert_fail();
    out.assert_stderr_contains("is unreadable");
    assert_eq!(
        host.state(),
        "{garbage",
        "a failed deploy must not destroy the state file"
    );
    host.script(SCRIPT);
    host.once(&reg, &[]).assert_ok();
    assert_eq!(host.state(), reg.served_config("project1"));
}

#[test]
fn startup_checks_in_spec_order() {
    let reg = Registry::start();
    let host = Host::new();
    let bare = |args: &[&str]| {
        let mut c = Command::new(bin("deploy-agent"));
        c.current_dir(host.path()).args(args);
        run_with_timeout(&mut c, None, 30)
    };
    bare(&[])
        .assert_code(1)
        .assert_stderr_contains("empty configuration name");
    bare(&["-name", "x", "-state", ""])
        .assert_code(1)
        .assert_stderr_contains("no state file set");
    bare(&["-name", "x", "-fp", "md5:xx"])
        .assert_code(1)
        .assert_stderr_contains("invalid server key fingerprint, expecting SHA256 fingerprint");
    bare(&["-name", "x", "-fp", "SHA256:x", "-key", "/nonexist"])
        .assert_code(1)
        .assert_stderr_contains("open /nonexist: no such file or directory");
    // The directory lock.
    let mut long = host.command(&reg, &["-poll", "1h"]);
    long.stderr(std::process::Stdio::null());
    let mut child = long.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = host.once(&reg, &[]);
    let _ = child.kill();
    let _ = child.wait();
    out.assert_code(1).assert_stderr_contains(
        "cannot acquire exclusive lock on \".\": resource temporarily unavailable",
    );
}

/// A configuration whose second layer is `hostile`; the agent must refuse it, name the
/// entry, write nothing outside its staging tree, and stay on nothing.
fn refuse(hostile: Vec<u8>, entry: &str) {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "base", "v1", &tar_gz(&[("ok.txt", b"fine")]));
    add_version(&reg, "evil", "v1", &hostile);
    reg.ssh("addconf -name project1 -layer base:v1 -layer evil:v1")
        .assert_ok();
    let before = listing(host.path().parent().unwrap());
    let out = host.once(&reg, &[]);
    out.assert_fail();
    out.assert_stderr_contains("layer 2 (");
    out.assert_stderr_contains(&format!("entry {entry:?}"));
    assert_eq!(host.state(), "");
    assert_eq!(host.current(), None);
    assert_eq!(
        host.unpacked(),
        Vec::<String>::new(),
        "staging tree left behind"
    );
    assert!(!host.path().join("escaped.txt").exists());
    assert!(!host.path().join("outside").join("through.txt").exists());
    assert_eq!(
        listing(host.path()),
        Vec::<String>::new(),
        "written into the agent's directory"
    );
    let after = listing(host.path().parent().unwrap());
    assert_eq!(
        before, after,
        "something appeared next to the agent's directory"
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("escaped") || n.contains("through") || n.contains("pwned"))
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_zip_slip() {
    refuse(
        TarBuilder::new().file("../../escaped.txt", b"pwned").gz(),
        "../../escaped.txt",
    );
}

#[test]
fn hostile_absolute_path() {
    refuse(
        TarBuilder::new().file("/tmp/pwned-abs.txt", b"pwned").gz(),
        "/tmp/pwned-abs.txt",
    );
}

#[test]
fn hostile_symlink_then_write_through() {
    refuse(
        TarBuilder::new()
            .symlink("lnk", "/tmp")
            .file("lnk/pwned-through.txt", b"pwned")
            .gz(),
        "lnk/pwned-through.txt",
    );
}

#[test]
fn hostile_symlink_to_parent_then_mkdir() {
    refuse(
        TarBuilder::new()
            .symlink("up", "../..")
            .dir("up/pwned-dir")
            .gz(),
        "up/pwned-dir",
    );
}

#[test]
fn hostile_hard_link_out() {
    refuse(
        TarBuilder::new()
            .hardlink("pw", "../../../../../etc/passwd")
            .gz(),
        "pw",
    );
}

#[test]
fn hostile_device_node() {
    refuse(
        TarBuilder::new()
            .entry(RawEntry::char_device("null", 1, 3))
            .gz(),
        "null",
    );
}

#[test]
fn hostile_fifo() {
    refuse(TarBuilder::new().entry(RawEntry::fifo("pipe")).gz(), "pipe");
}

#[test]
fn hostile_decompression_bomb() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(
        &reg,
        "bomb",
        "v1",
        &TarBuilder::new().file("zeros", &vec![0u8; 8 << 20]).gz(),
    );
    reg.ssh("addconf -name project1 -layer bomb:v1").assert_ok();
    let out = host.once(&reg, &["-max-unpack-bytes", "1048576"]);
    out.assert_fail().assert_stderr_contains("limit exceeded");
    assert_eq!(host.unpacked(), Vec::<String>::new());
}

#[test]
fn hostile_entry_count() {
    let reg = Registry::start();
    let host = Host::new();
    let mut b = TarBuilder::new();
    for i in 0..300 {
        b = b.file(&format!("f{i}"), b"");
    }
    add_version(&reg, "many", "v1", &b.gz());
    reg.ssh("addconf -name project1 -layer many:v1").assert_ok();
    let out = host.once(&reg, &["-max-entries", "100"]);
    out.assert_fail()
        .assert_stderr_contains("more than 100 archive entries");
    assert_eq!(host.unpacked(), Vec::<String>::new());
}

#[test]
fn hostile_setuid_and_duplicates_are_neutralised() {
    let reg = Registry::start();
    let host = Host::new();
    let layer = TarBuilder::new()
        .file_mode("suid", b"x", 0o4755)
        .file("dup", b"first")
        .file("dup", b"second")
        .gz();
    add_version(&reg, "odd", "v1", &layer);
    reg.ssh("addconf -name project1 -layer odd:v1").assert_ok();
    host.once(&reg, &[]).assert_ok();
    let m = fs::metadata(host.path().join("current/suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(m & 0o7777, 0o755);
    assert_eq!(
        fs::read(host.path().join("current/dup")).unwrap(),
        b"second"
    );
}

/// `-allow-special` (as root) restores the original's behaviour for the layers that need it:
/// setuid bits and FIFOs (and device nodes, owners) are kept instead of refused (spec A5).
#[test]
fn allow_special_keeps_setuid_and_fifos_as_root() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let reg = Registry::start();
    let host = Host::new();
    // The directory we just created is owned by our effective uid.
    if fs::metadata(host.path()).unwrap().uid() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let layer = TarBuilder::new()
        .file_mode("suid", b"x", 0o4755)
        .entry(RawEntry::fifo("pipe"))
        .gz();
    add_version(&reg, "special", "v1", &layer);
    reg.ssh("addconf -name project1 -layer special:v1")
        .assert_ok();
    host.once(&reg, &["-allow-special"]).assert_ok();
    let current = host.path().join("current");
    let suid = fs::metadata(current.join("suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    let pipe = fs::symlink_metadata(current.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo(), "{:?}", pipe.file_type());
}

/// Directories a layer implies but does not list are 0755 (spec A4: the original made them
/// 0777 and set the process umask to 0 for that); an agent started with umask 0 shows it.
#[test]
fn implicit_parents_are_0755_even_with_umask_0() {
    let reg = Registry::start();
    let host = Host::new();
    let layer = TarBuilder::new().file_mode("deep/er/f", b"x", 0o640).gz();
    add_version(&reg, "tree", "v1", &layer);
    reg.ssh("addconf -name project1 -layer tree:v1").assert_ok();
    let agent = host.command(&reg, &["-once"]);
    let mut c = Command::new("sh");
    c.args(["-c", "umask 0 && exec \"$@\"", "sh"])
        .arg(agent.get_program())
        .args(agent.get_args())
        .current_dir(host.path());
    run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS).assert_ok();
    let mode = |p: &str| {
        fs::metadata(host.path().join("current").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        (mode("deep"), mode("deep/er"), mode("deep/er/f")),
        (0o755, 0o755, 0o640)
    );
}

/// kill -9 at random moments; afterwards the host is on the old or the new configuration,
/// never a mix, and the next run converges. See: OSTree's destructive tests.
#[test]
fn kill9_at_random_moments_never_mixes() {
    let reg = Registry::start();
    let host = Host::new();
    // Big enough layers that downloads and unpacks take a while.
    let mk = |tag: &str| {
        let mut b = TarBuilder::new();
        for i in 0..200 {
            b = b.file(&format!("d{}/f{i}", i % 10), &version_file(tag, i));
        }
        b.file("tag", tag.as_bytes()).gz()
    };
    add_version(&reg, "code", "a", &mk("a"));
    add_version(&reg, "code", "b", &mk("b"));
    reg.ssh("addconf -name project1 -layer code:a").assert_ok();
    host.once(&reg, &[]).assert_ok();
    let hash_a = config_hash(&host.state());

    let mut seed = std::process::id() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut want = "a";
    let (mut switched, mut interrupted) = (0, 0);
    // At least 24 rounds, more (up to 80) until both outcomes were seen; the delay range
    // widens when no kill let a deploy finish and narrows when none cut one short, so the
    // test adapts to a slow or fast machine.
    let mut max_delay: u64 = 640;
    let mut round = 0;
    while round < 24 || ((switched == 0 || interrupted == 0) && round < 80) {
        if round >= 24 && switched == 0 {
            max_delay = (max_delay * 2).min(20_000);
        } else if round >= 24 && interrupted == 0 {
            max_delay = (max_delay / 2).max(10);
        }
        want = if want == "a" { "b" } else { "a" };
        reg.ssh(&format!(
            "changeconf -name project1 -component code -version {want}"
        ))
        .assert_ok();
        let mut child = host
            .command(&reg, &["-poll", "1s"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Mostly short delays: a whole deploy of these layers takes a few hundred ms here.
        let delay = next() % (max_delay >> (4 - round % 5)).max(1);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        unsafe_kill9(child.id());
        let _ = child.wait();
        let tag = check_consistent(&host, round);
        if tag == want {
            switched += 1;
        } else {
            interrupted += 1;
        }
        round += 1;
    }
    eprintln!(
        "kill -9 rounds: {switched} reached the new configuration, {interrupted} were cut short"
    );
    // Both outcomes must occur, or the kills did not land inside deploys.
    assert!(
        switched > 0 && interrupted > 0,
        "switched {switched}, interrupted {interrupted}"
    );
    let out = host.once(&reg, &[]);
    out.assert_ok();
    let tag = fs::read_to_string(host.path().join("current/tag")).unwrap();
    assert_eq!(tag, want, "did not converge");
    // Hashes, not bytes: an equal hash saved earlier (with an older Mtime) is "no change".
    assert_eq!(
        config_hash(&host.state()),
        config_hash(&reg.served_config("project1"))
    );
    assert_eq!(config_hash(&host.state()) == hash_a, want == "a");
}

fn unsafe_kill9(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// `current` points at a complete tree (its `.ok` exists, and its files are all of one
/// version), and the state names a complete tree too.
fn check_consistent(host: &Host, round: usize) -> String {
    let Some(cur) = host.current() else {
        panic!("round {round}: no current symlink")
    };
    let id = cur.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        host.path().join(format!("unpacked/{id}.ok")).exists(),
        "round {round}: current without .ok"
    );
    let root = host.path().join(&cur);
    let tag = fs::read_to_string(root.join("tag")).unwrap();
    let mut n = 0;
    for d in 0..10 {
        for ent in fs::read_dir(root.join(format!("d{d}"))).unwrap() {
            let ent = ent.unwrap();
            let data = fs::read(ent.path()).unwrap();
            let i: u32 = ent.file_name().to_str().unwrap()[1..].parse().unwrap();
            assert_eq!(
                data,
                version_file(&tag, i),
                "round {round}: file {i} is not of version {tag}"
            );
            n += 1;
        }
    }
    assert_eq!(n, 200, "round {round}: missing files");
    let state = host.state();
    assert!(!state.is_empty(), "round {round}: state lost");
    let sid = config_hash(&state);
    assert!(
        host.path().join(format!("unpacked/{sid}.ok")).exists(),
        "round {round}: state names an incomplete tree"
    );
    tag
}

fn version_file(tag: &str, i: u32) -> Vec<u8> {
    (0..20_000u32)
        .map(|j| ((j * 7 + i) as u8) ^ tag.as_bytes()[0])
        .collect()
}

/// Spawns a long-running agent with its stderr in `agent.log`.
fn spawn_agent(host: &Host, reg: &Registry, extra: &[&str]) -> std::process::Child {
    let log = fs::File::create(host.path().join("agent.log")).unwrap();
    host.command(reg, extra).stderr(log).spawn().unwrap()
}

fn sigterm(child: &std::process::Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// See deploy-tools B18: one SSH connection serves every poll.
#[test]
fn one_connection_across_polls_and_clean_shutdown() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let mut child = spawn_agent(&host, &reg, &["-poll", "1s"]);
    let log = || fs::read_to_string(host.path().join("agent.log")).unwrap_or_default();
    wait_for("first deploy", 60, || {
        log().contains("switched to the new configuration")
    });
    // Let several polls pass, then change the configuration: picked up on the same connection.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    add_version(&reg, "code", "v02", &tar_gz(&[("a", b"2")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    wait_for("second deploy", 60, || {
        log().matches("switched to the new configuration").count() == 2
    });
    sigterm(&child);
    let status =
        wait_exit(&mut child, std::time::Duration::from_secs(30)).expect("the agent did not exit");
    assert!(status.success(), "exit {status:?}\n{}", log());
    let log = log();
    assert_eq!(log.matches("connected to the registry").count(), 1, "{log}");
    assert!(log.contains(" terminated\n"), "{log}");
}

/// See deploy-tools B17: on shutdown the whole script process group is stopped.
#[test]
fn shutdown_stops_script_and_its_children() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    host.script("#!/bin/sh\nsleep 300 &\necho $! > child.pid\nwait\n");
    let mut child = spawn_agent(&host, &reg, &[]);
    let pidfile = host.path().join("child.pid");
    wait_for("script start", 60, || {
        fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let grandchild: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sigterm(&child);
    let status =
        wait_exit(&mut child, std::time::Duration::from_secs(30)).expect("the agent did not exit");
    assert!(status.success());
    wait_for("grandchild to die", 15, || {
        let stat = fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    });
    assert_eq!(
        host.state(),
        "",
        "an interrupted deploy must not be recorded"
    );
}

/// See deploy-tools B19: known_hosts instead of a fingerprint, and several fingerprints.
#[test]
fn known_hosts_and_fingerprint_rotation() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let kh = reg.known_hosts();
    let mut c = Command::new(bin("deploy-agent"));
    c.current_dir(host.path()).args([
        "-once",
        "-addr",
        &format!("127.0.0.1:{}", reg.port),
        "-known-hosts",
        kh.to_str().unwrap(),
        "-name",
        "project1",
        "-key",
        reg.keys.service.to_str().unwrap(),
    ]);
    run_with_timeout(&mut c, None, DEFAULT_TIMEOUT_SECS).assert_ok();
    assert_eq!(host.state(), reg.served_config("project1"));

    let other = Host::new();
    let rotated = format!(
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,{}",
        reg.fingerprint()
    );
    other.once(&reg, &["-fp", &rotated]).assert_ok();
    let third = Host::new();
    third
        .once(
            &reg,
            &["-fp", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
        )
        .assert_fail()
        .assert_stderr_contains("host key");
}

/// See deploy-tools B15: a cached blob damaged on disk is detected and fetched again.
#[test]
fn damaged_cache_entry_is_fetched_again() {
    let reg = Registry::start();
    let host = Host::new();
    let code = add_version(&reg, "code", "v01", &tar_gz(&[("bin/app", b"code v01")]));
    add_version(&reg, "config", "v01", &tar_gz(&[("etc/c", b"1")]));
    add_version(&reg, "config", "v02", &tar_gz(&[("etc/c", b"2")]));
    reg.ssh("addconf -name project1 -layer code:v01 -layer config:v01")
        .assert_ok();
    host.once(&reg, &[]).assert_ok();
    let blob = host.path().join("cache").join(&code);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    reg.ssh("changeconf -name project1 -component config -version v02")
        .assert_ok();
    let out = host.once(&reg, &[]);
    out.assert_ok()
        .assert_stderr_contains("cached layer is corrupt");
    assert_eq!(
        fs::read(host.path().join("current/bin/app")).unwrap(),
        b"code v01"
    );
    assert_eq!(fs::read(host.path().join("current/etc/c")).unwrap(), b"2");
    assert_eq!(sha256_hex(&fs::read(&blob).unwrap()), code);
}

/// The registry dies in the middle of a download: one clear log line, the partial download is
/// kept, and after the registry is back the agent resumes where it stopped.
#[test]
fn registry_gone_mid_transfer_then_resume() {
    let mut reg = Registry::start();
    let host = Host::new();
    let big = tar_gz(&[("big.bin", &noise(160 << 20, 7))]);
    let hash = add_version(&reg, "code", "v01", &big);
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let mut child = spawn_agent(&host, &reg, &["-poll", "1s"]);
    let partial = host.path().join("cache").join(format!("{hash}.partial"));
    wait_for("download to start", 60, || {
        fs::metadata(&partial).is_ok_and(|m| m.len() > (4 << 20))
    });
    reg.kill9();
    let log = || fs::read_to_string(host.path().join("agent.log")).unwrap_or_default();
    wait_for("the agent to notice", 90, || {
        log().contains("registry connection lost while downloading layer")
            || log().contains("no data from the registry")
    });
    let kept = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "partial download not kept\n{}", log());
    reg.restart();
    wait_for("deploy after restart", 120, || {
        log().contains("switched to the new configuration")
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = log();
    assert!(log.contains("download resumed at byte"), "{log}");
    assert_eq!(
        sha256_hex(&fs::read(host.path().join("cache").join(&hash)).unwrap()),
        hash
    );
}

/// See deploy-tools B17: a failing script is retried with backoff, not every poll.
#[test]
fn failing_script_backs_off() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    host.script("#!/bin/sh\necho x >> attempts\nexit 1\n");
    let mut child = spawn_agent(&host, &reg, &["-poll", "1s"]);
    let attempts =
        || fs::read_to_string(host.path().join("attempts")).map_or(0, |s| s.lines().count());
    wait_for("first attempt", 60, || attempts() >= 1);
    std::thread::sleep(std::time::Duration::from_secs(7));
    let _ = child.kill();
    let _ = child.wait();
    let n = attempts();
    let log = fs::read_to_string(host.path().join("agent.log")).unwrap();
    // Polls every ~1 s; backoff 1 s, 2 s, 4 s allows about 4 attempts in 7 s, not 8.
    assert!((2..=4).contains(&n), "{n} attempts\n{log}");
    assert!(
        log.contains("deploy script failed, next attempt in"),
        "{log}"
    );
}

#[test]
fn missing_configuration_is_file_does_not_exist() {
    let reg = Registry::start();
    let host = Host::new();
    host.once(&reg, &["-name", "nosuch"])
        .assert_fail()
        .assert_stderr_contains("file does not exist");
    assert_eq!(host.state(), "");
}

/// `-dir` and `-state` elsewhere than the cwd; five layers, one changes, one is fetched.
#[test]
fn custom_dir_and_state_five_layers_one_fetched() {
    let reg = Registry::start();
    let host = Host::new();
    let mut layers = String::new();
    for i in 0..5 {
        add_version(
            &reg,
            &format!("c{i}"),
            "v1",
            &tar_gz(&[(&format!("f{i}"), b"v1")]),
        );
        layers.push_str(&format!(" -layer c{i}:v1"));
    }
    reg.ssh(&format!("addconf -name project1{layers}"))
        .assert_ok();
    let args = ["-dir", "data", "-state", "st/state.json"];
    let out = host.once(&reg, &args);
    out.assert_ok();
    assert!(fetched_line(&out).contains("5 of 5"));
    let first = config_hash(&reg.served_config("project1"));
    assert_eq!(
        fs::read_to_string(host.path().join("st/state.json")).unwrap(),
        reg.served_config("project1")
    );
    assert_eq!(
        fs::read_link(host.path().join("data/current")).unwrap(),
        Path::new("unpacked").join(&first)
    );
    let env = env_of(&host, &first);
    assert!(
        env.contains(&("OLDROOT".into(), "data/unpacked".into())),
        "{env:?}"
    );
    assert!(env.contains(&("NEWROOT".into(), format!("data/unpacked/{first}"))));
    assert!(env.contains(&("LAYER_4_NAME".into(), "c4".into())));

    add_version(&reg, "c2", "v2", &tar_gz(&[("f2", b"v2")]));
    reg.ssh("changeconf -name project1 -component c2 -version v2")
        .assert_ok();
    let out = host.once(&reg, &args);
    out.assert_ok();
    assert!(
        fetched_line(&out).contains("1 of 5"),
        "{}",
        fetched_line(&out)
    );
    assert_eq!(
        fs::read(host.path().join("data/current/f2")).unwrap(),
        b"v2"
    );
    assert_eq!(
        fs::read(host.path().join("data/current/f4")).unwrap(),
        b"v1"
    );
}

/// A registry crash between polls: the dead kept connection is replaced and the agent
/// carries on.
#[test]
fn registry_restart_between_polls_reconnects() {
    let mut reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let mut child = spawn_agent(&host, &reg, &["-poll", "1s"]);
    let log = || fs::read_to_string(host.path().join("agent.log")).unwrap_or_default();
    wait_for("first deploy", 60, || {
        log().contains("switched to the new configuration")
    });
    // A crash, not a drain: the agent's kept connection just dies.
    reg.kill9();
    reg.restart();
    add_version(&reg, "code", "v02", &tar_gz(&[("a", b"2")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    wait_for("deploy after restart", 60, || {
        log().matches("switched to the new configuration").count() == 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log().matches("connected to the registry").count() >= 2,
        "{}",
        log()
    );
}

/// `-script ""` turns the script off; the state is still saved (spec 3.1).
#[test]
fn empty_script_flag_skips_the_script() {
    let reg = Registry::start();
    let host = Host::new();
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    host.once(&reg, &["-script", ""]).assert_ok();
    assert_eq!(host.state(), reg.served_config("project1"));
    assert!(!host.path().join("deploys.log").exists());
    assert_eq!(fs::read(host.path().join("current/a")).unwrap(), b"1");
}

/// What the registry's `status` shows after agents report (deploy-tools B19: the original's
/// agents report nothing): per configuration and host, the state, the hash that runs, when,
/// from where, and why the last poll failed.
#[test]
fn status_shows_what_each_host_reported() {
    let reg = Registry::start();
    let (a, b, c) = (Host::new(), Host::new(), Host::new());
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let v01 = config_hash(&reg.served_config("project1"));
    a.once(&reg, &["-report-as", "web-1"]).assert_ok();
    b.script("#!/bin/sh\nexit 3\n");
    b.once(&reg, &["-report-as", "web 2; x"]).assert_fail();
    c.once(&reg, &["-no-report"]).assert_ok();
    // Rows by configuration and host; columns split on runs of spaces, the error last.
    let rows = |name: Option<&str>| -> Vec<Vec<String>> {
        let cmd = name.map_or("status".to_string(), |n| format!("status -name {n}"));
        let out = reg.ssh(&cmd);
        out.assert_ok();
        out.stdout_str()
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect()
    };
    let now = rows(None);
    assert_eq!(now.len(), 2, "{now:?}");
    let (web2, web1) = (&now[0], &now[1]);
    assert_eq!(
        web1[..4],
        ["project1", "web-1", "current", &v01[..12]],
        "{now:?}"
    );
    assert!(
        web1[4].ends_with('Z') && web1[5].starts_with("127.0.0.1:"),
        "{now:?}"
    );
    assert_eq!(
        web2[..4],
        ["project1", "web 2; x", "failed", "-"],
        "{now:?}"
    );
    assert!(web2[6].contains("exit status 3"), "{now:?}");

    // A new state of the configuration: web-1 is behind until it polls; the failed host
    // deploys once its script works.
    add_version(&reg, "code", "v02", &tar_gz(&[("a", b"2")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    let v02 = config_hash(&reg.served_config("project1"));
    assert_eq!(rows(Some("project1"))[1][2], "behind");
    b.script(SCRIPT);
    b.once(&reg, &["-report-as", "web 2; x"]).assert_ok();
    let now = rows(Some("project1"));
    assert_eq!(
        now[0][..4],
        ["project1", "web 2; x", "current", &v02[..12]],
        "{now:?}"
    );
    assert_eq!(now[0].len(), 6, "no error once a poll succeeded: {now:?}");
    assert!(rows(Some("other")).is_empty());
    // Reports outlive their configuration, marked.
    reg.ssh("delconf -name project1 -force").assert_ok();
    assert!(
        rows(None).iter().all(|r| r[2] == "deleted"),
        "{:?}",
        rows(None)
    );

    // A service key may send reports and nothing else; a bad report is refused and says why.
    let svc = &reg.keys.service;
    let bad = reg.ssh_as(
        "deploy-agent",
        svc,
        "report -name project1 -host h -hash abc",
    );
    bad.assert_code(1);
    bad.assert_stdout_contains("-hash should be empty or 64 lowercase hex digits");
    reg.ssh_as("deploy-agent", svc, "status").assert_fail();
    let good = format!("report -name project1 -host h -hash {v02} -error 'disk full'");
    reg.ssh_as("deploy-agent", svc, &good).assert_ok();
    assert!(
        rows(None)
            .iter()
            .any(|r| r[1] == "h" && r[2] == "failed" && r[6] == "disk full"),
        "{:?}",
        rows(None)
    );

    // Operators forget hosts that are gone: one by name (it shows again if it reports again),
    // or every silent one (none is, this soon).
    reg.ssh("forget -name project1 -host 'web 2; x'")
        .assert_ok()
        .assert_stdout("project1   web 2; x\n");
    assert!(
        !rows(None).iter().any(|r| r[1] == "web 2; x"),
        "{:?}",
        rows(None)
    );
    reg.ssh("forget -name project1 -host 'web 2; x'")
        .assert_code(1)
        .assert_stdout("no report of host \"web 2; x\" for configuration \"project1\" found\n");
    reg.ssh("forget -silent").assert_ok().assert_stdout("");
    assert_eq!(rows(None).len(), 2, "{:?}", rows(None));
    reg.ssh("forget -name project1")
        .assert_code(1)
        .assert_stdout("either -host or -silent should be set\n");
    reg.ssh_as("deploy-agent", svc, "forget -silent")
        .assert_fail();
    assert_eq!(rows(None).len(), 2, "{:?}", rows(None));
    let audit = reg.ssh("audit -n 20").stdout_str();
    assert!(
        audit
            .lines()
            .any(|l| l.contains(" ok ") && l.ends_with("forget -name project1 -host 'web 2; x'")),
        "{audit}"
    );
}
