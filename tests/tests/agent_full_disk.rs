//! deploy-agent on a real full disk: its `-dir` and `-state` on a small tmpfs, so downloads,
//! unpacking and the state file meet the kernel's own ENOSPC. A real registry, a real agent
//! process polling every second; the deploy script, the agent's log and the test's notes live
//! in an ordinary temp dir (the cwd), off the full disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use e2e::tmpfs::Tmpfs;
use e2e::*;

/// Records every run (`OLDID NEWID`, one line) and what the script saw of the new tree, so the
/// test can tell whether it ran, for which release, and on a complete tree.
const SCRIPT: &str = "#!/bin/sh\necho \"$OLDID $NEWID\" >> deploys.log\ncat \"$NEWROOT/version\" > \"seen-$NEWID.txt\"\n";

const MIB: u64 = 1 << 20;

/// The agent's cwd (script, log) plus its `-dir` and `-state` on a tmpfs.
struct Host {
    cwd: tempfile::TempDir,
    fs: Tmpfs,
}

impl Host {
    /// `None` when a tmpfs cannot be mounted here (not root, outside CI).
    fn new(size_kib: u64) -> Option<Host> {
        let fs = Tmpfs::mount(size_kib)?;
        let cwd = tempfile::Builder::new()
            .prefix("e2e-agent-full")
            .tempdir()
            .expect("tempdir");
        let h = Host { cwd, fs };
        h.script(SCRIPT);
        Some(h)
    }
    fn script(&self, body: &str) {
        let p = self.cwd.path().join("deploy.sh");
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn dir(&self) -> &Path {
        self.fs.path()
    }
    fn state_path(&self) -> PathBuf {
        self.fs.join("state.json")
    }
    fn state(&self) -> String {
        fs::read_to_string(self.state_path()).unwrap_or_default()
    }
    fn current(&self) -> Option<PathBuf> {
        fs::read_link(self.fs.join("current")).ok()
    }
    fn log(&self) -> String {
        fs::read_to_string(self.cwd.path().join("agent.log")).unwrap_or_default()
    }
    fn deploys(&self) -> Vec<String> {
        fs::read_to_string(self.cwd.path().join("deploys.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    /// A long-running agent polling every second, its stderr in `agent.log`.
    fn spawn(&self, reg: &Registry) -> AgentProc {
        let log = fs::File::create(self.cwd.path().join("agent.log")).unwrap();
        let child = Command::new(bin("deploy-agent"))
            .current_dir(self.cwd.path())
            .args(["-addr", &reg.addr(), "-fp", &reg.fingerprint()])
            .args(["-name", "project1", "-v", "-poll", "1s"])
            .args(["-key", reg.keys.service.to_str().unwrap()])
            .arg("-dir")
            .arg(self.dir())
            .arg("-state")
            .arg(self.state_path())
            .stderr(log)
            .spawn()
            .unwrap();
        AgentProc(child)
    }
    /// Every path under the tmpfs (relative, sorted), with file sizes: what must not change
    /// while a deploy fails, and where leftovers would show.
    fn listing(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for ent in rd.flatten() {
                let p = ent.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let meta = fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(root, &p, out);
                } else {
                    out.push(format!("{rel} {}", meta.len()));
                }
            }
        }
        let mut v = Vec::new();
        walk(self.dir(), self.dir(), &mut v);
        v.sort();
        v
    }
}

/// Kills the agent however the test ends.
struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl AgentProc {
    fn assert_running(&mut self, host: &Host) {
        let st = self.0.try_wait().unwrap();
        assert!(st.is_none(), "agent exited: {st:?}\n{}", host.log());
    }
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("disk full")).collect()
}

/// Publishes a small first configuration, starts the agent and waits for its deploy; returns
/// the agent and the served JSON.
fn first_deploy(reg: &Registry, host: &Host) -> (AgentProc, String) {
    add_version(
        reg,
        "code",
        "v01",
        &tar_gz(&[("version", b"v01"), ("bin/app", b"app v01")]),
    );
    reg.ssh("addconf -name project1 -layer code:v01")
        .assert_ok();
    let agent = host.spawn(reg);
    wait_for("first deploy", 60, || {
        host.log().contains("switched to the new configuration")
    });
    let json = reg.served_config("project1");
    assert_eq!(host.state(), json);
    assert_eq!(host.deploys(), vec![format!(" {}", config_hash(&json))]);
    (agent, json)
}

/// Publishes `v02` with `payload` as `big.bin` on a 4 MiB disk where it does not fit: the
/// agent says so in one line per attempt, runs no script, keeps the old release as it was,
/// gives the space back (all of it, or all but the verified blob when `blob_kept`), keeps
/// polling, and deploys once the disk has grown, without a restart. Returns the first
/// disk-full line.
fn fails_cleanly_then_deploys(payload: &[u8], blob_kept: bool) -> Option<String> {
    let host = Host::new(4096)?;
    let reg = Registry::start();
    let (mut agent, first_json) = first_deploy(&reg, &host);
    let first = config_hash(&first_json);
    let before = host.listing();
    let free_before = host.fs.free_bytes();
    assert!(
        before.contains(&format!("unpacked/{first}/version 3")),
        "{before:?}"
    );

    let tar = TarBuilder::new()
        .file("version", b"v02")
        .file("big.bin", payload)
        .tar();
    // At best compression zeros become one small SFTP read: the blob is whole in the cache
    // before the unpacker gets its first byte, so only the unpacking can meet the full disk.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&tar).unwrap();
    let layer = enc.finish().unwrap();
    let blob = add_version(&reg, "code", "v02", &layer);
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    let second = config_hash(&reg.served_config("project1"));

    // Two failed attempts: the agent survived the first and is still polling.
    wait_for("two failed attempts", 90, || {
        error_lines(&host.log()).len() >= 2
    });
    agent.assert_running(&host);

    // Between attempts nothing of the failed release is left (no staging tree, no partial
    // download) and the space is free again.
    let mut expected = before.clone();
    let mut slack = 64 * 1024;
    if blob_kept {
        expected.push(format!("cache/{blob} {}", layer.len()));
        expected.sort();
        slack += layer.len() as u64;
    }
    let given_back = || host.listing() == expected && host.fs.free_bytes() + slack >= free_before;
    let mut tries = 0;
    while !given_back() {
        tries += 1;
        assert!(
            tries < 600,
            "the failed attempts' space was not given back: {} bytes free, {free_before} before\nexpected: {expected:#?}\nnow: {:#?}\n{}",
            host.fs.free_bytes(),
            host.listing(),
            host.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The old release is untouched and the script never ran for the new one.
    assert_eq!(host.state(), first_json);
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&first)));
    assert_eq!(fs::read(host.fs.join("current/version")).unwrap(), b"v01");
    assert_eq!(host.deploys(), vec![format!(" {first}")]);
    assert!(!host.cwd.path().join(format!("seen-{second}.txt")).exists());

    // One clear line per attempt and nothing else: no warning about leftovers.
    let log = host.log();
    let after_first: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("switched to the new configuration"))
        .skip(1)
        .collect();
    let attempts = after_first
        .iter()
        .filter(|l| l.contains(&format!("configuration update available: {second}")))
        .count();
    for l in &after_first {
        assert!(
            l.contains("configuration update available")
                || l.starts_with('\t')
                || l.contains("layers fetched from the registry")
                || { l.contains(" disk full") && l.contains("No space left on device") },
            "unexpected line: {l}\n{log}"
        );
    }
    let failures = error_lines(&log).len();
    assert!(
        failures + 1 >= attempts && failures <= attempts,
        "{failures} errors for {attempts} attempts\n{log}"
    );

    let downloads = after_first
        .iter()
        .filter(|l| l.contains("layers fetched from the registry: 1 of 1"))
        .count();
    assert_eq!(downloads, usize::from(blob_kept), "{log}");

    // Room for the blob and its tree: the next poll deploys.
    host.fs.resize(32 * 1024);
    wait_for("deploy after the disk grew", 90, || {
        host.log()
            .contains(&format!("switched to the new configuration: {second}"))
    });
    agent.assert_running(&host);
    assert_eq!(
        host.deploys(),
        vec![format!(" {first}"), format!("{first} {second}")]
    );
    assert_eq!(
        fs::read_to_string(host.cwd.path().join(format!("seen-{second}.txt"))).unwrap(),
        "v02"
    );
    assert_eq!(host.state(), reg.served_config("project1"));
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&second)));
    assert!(fs::read(host.fs.join("current/big.bin")).unwrap() == payload);
    let line = error_lines(&host.log())[0].to_string();
    eprintln!("agent's disk-full line: {line}");
    Some(line)
}

/// Incompressible bytes bigger than the disk: the download itself meets ENOSPC.
#[test]
fn layer_larger_than_the_disk_then_disk_grows() {
    if let Some(line) = fails_cleanly_then_deploys(&noise((6 * MIB) as usize, 11), false) {
        assert!(
            line.contains(".partial\": No space left on device"),
            "{line}"
        );
    }
}

/// Zeros that compress to a few KiB: the download completes and verifies, the unpacking meets
/// ENOSPC. The verified blob stays in the cache (it is the pending configuration's) and is not
/// downloaded again.
#[test]
fn tree_larger_than_the_disk_then_disk_grows() {
    if let Some(line) = fails_cleanly_then_deploys(&vec![0u8; (6 * MIB) as usize], true) {
        assert!(line.contains("entry \"big.bin\""), "{line}");
    }
}

/// The disk fills between unpacking and saving the state (the deploy script fills it): the
/// state save fails with one clear line, nothing is switched, no temp state file is left, and
/// once space is freed the release is deployed from the tree already built.
#[test]
fn state_file_write_on_a_full_disk() {
    let Some(host) = Host::new(4096) else { return };
    let reg = Registry::start();
    let (mut agent, first_json) = first_deploy(&reg, &host);
    let first = config_hash(&first_json);

    let filler = host.fs.join("filler");
    host.script(&format!(
        "{SCRIPT}if [ -e fill-once ]; then rm fill-once; cat /dev/zero > '{}' 2>/dev/null; fi\nexit 0\n",
        filler.display()
    ));
    fs::write(host.cwd.path().join("fill-once"), b"").unwrap();
    add_version(
        &reg,
        "code",
        "v02",
        &tar_gz(&[("version", b"v02"), ("bin/app", b"app v02")]),
    );
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    let second = config_hash(&reg.served_config("project1"));

    wait_for("the state save to fail", 90, || {
        host.log().contains("cannot save state file")
    });
    agent.assert_running(&host);
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot save state file"))
        .unwrap();
    assert!(
        line.contains("disk full") && line.contains("No space left on device"),
        "unclear error line: {line}\n{log}"
    );
    // The retry runs the script again: not every poll, with the script's backoff.
    assert!(
        log.contains(&format!(
            "state file not saved, next attempt in 1s config={second}"
        )),
        "{log}"
    );
    assert_eq!(host.state(), first_json);
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&first)));
    let leftovers: Vec<String> = host
        .listing()
        .into_iter()
        .filter(|p| p.starts_with(".state.json.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The operator frees the space: the next poll completes the deploy.
    fs::remove_file(&filler).unwrap();
    wait_for("deploy after space was freed", 90, || {
        host.log()
            .contains(&format!("switched to the new configuration: {second}"))
    });
    agent.assert_running(&host);
    assert_eq!(host.state(), reg.served_config("project1"));
    assert_eq!(host.current(), Some(Path::new("unpacked").join(&second)));
    // The script saw the complete new tree every time it ran, always from the old release.
    let deploys = host.deploys();
    assert!(deploys.len() >= 3, "{deploys:?}");
    assert!(
        deploys[1..]
            .iter()
            .all(|d| *d == format!("{first} {second}")),
        "{deploys:?}"
    );
    assert_eq!(
        fs::read_to_string(host.cwd.path().join(format!("seen-{second}.txt"))).unwrap(),
        "v02"
    );
    eprintln!("agent's state-save line: {line}\n{}", host.log());
}
