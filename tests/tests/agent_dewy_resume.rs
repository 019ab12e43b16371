//! `deploy-agent --registry s3://…`: an artifact without a published digest is downloaded
//! resumably. The agent is SIGKILLed mid-download, then run again; a TCP proxy in front of
//! moto (which also slows the first run down so there is a "mid") counts the bytes moto
//! sends, so the test sees that the second run fetched about the rest, not everything. On a
//! full disk the partial is dropped instead: kept, it would hold the space. The last test
//! fills the disk later, between the deploy script and the state file.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use e2e::peers::Moto;
use e2e::*;

/// Counts the bytes moto answers with; while `slow`, passes them on in small paced chunks.
struct Proxy {
    port: u16,
    down: Arc<AtomicU64>,
    slow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s, st) = (down.clone(), slow.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pump(c2, s2, None, None));
                let (d, s) = (d.clone(), s.clone());
                thread::spawn(move || pump(server, client, Some(d), Some(s)));
            }
        });
        Proxy {
            port,
            down,
            slow,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Option<Arc<AtomicU64>>,
    slow: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let paced = slow.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        let want = if paced { 16 << 10 } else { buf.len() };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if paced {
            thread::sleep(Duration::from_millis(4));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// An agent that is killed (SIGKILL) when the guard goes, whatever the test did.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host::new_in(&std::env::temp_dir())
    }
    fn new_in(parent: &Path) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("e2e-dewy-resume")
            .tempdir_in(parent)
            .unwrap();
        let p = dir.path().join("deploy.sh");
        fs::write(&p, "#!/bin/sh\necho \"$NEWID\" >> deploys.log\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        Host { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn command(&self, registry: &str) -> Command {
        let mut c = dewy_agent(self.path());
        c.args(["--registry", registry, "-v", "-once"]);
        c
    }
    /// The partial download in `cache/`, if any.
    fn partial(&self) -> Option<PathBuf> {
        fs::read_dir(self.path().join("cache"))
            .ok()?
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("resume-") && !n.ends_with(".meta")
            })
    }
    /// Starts a download and SIGKILLs the agent once `at_least` bytes are on disk; returns
    /// the partial's length after the kill.
    fn kill_mid_download(&self, registry: &str, at_least: u64, total: u64) -> u64 {
        let mut c = self.command(registry);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut agent = Agent(c.spawn().unwrap());
        // Generous, only against a hang: the assertion is on bytes, not on time.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let len = self
                .partial()
                .and_then(|p| fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            if len >= at_least {
                break;
            }
            assert!(
                agent.0.try_wait().unwrap().is_none(),
                "the agent ended before the partial reached {at_least} bytes ({len})"
            );
            assert!(Instant::now() < deadline, "the download did not progress");
            thread::sleep(Duration::from_millis(20));
        }
        agent.0.kill().unwrap();
        agent.0.wait().unwrap();
        let len = fs::metadata(self.partial().expect("partial kept"))
            .unwrap()
            .len();
        assert!(
            len < total,
            "killed after the whole download ({len} of {total})"
        );
        len
    }
}

const SIZE: usize = 24 << 20;
/// The agent's fsync interval for these downloads (agent/src/dewy/store/resume.rs).
const CHECKPOINT: u64 = 4 << 20;

fn setup() -> (Moto, Proxy, Host, String, String) {
    let moto = Moto::start();
    moto.bucket("rel");
    let proxy = Proxy::start(moto.port);
    let host = Host::new();
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", proxy.url());
    let key = format!("app/v1.0.0/app_linux_{}.tar.gz", goarch());
    (moto, proxy, host, registry, key)
}

#[test]
fn killed_download_resumes_from_where_it_stopped() {
    let (moto, proxy, host, registry, key) = setup();
    let big = noise(SIZE, 7);
    let art = tar_gz(&[("bin/big", &big)]);
    let total = art.len() as u64;
    moto.put("rel", &key, &art);

    proxy.slow.store(true, Ordering::SeqCst);
    let had = host.kill_mid_download(&registry, total / 2, total);
    assert!(!host.path().join("current").exists());
    // What a power cut can leave after the last fsync: bytes that were never the object's.
    // The agent only trusts the length it recorded after syncing (every CHECKPOINT bytes).
    let partial = host.partial().unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&partial).unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
    drop(f);

    proxy.slow.store(false, Ordering::SeqCst);
    proxy.down.store(0, Ordering::SeqCst);
    let out = run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    let fetched = proxy.down.load(Ordering::SeqCst);
    // The rest from the last checkpoint before the kill, plus the listing and headers: at
    // most about half of the artifact (the kill came after half of it).
    let rest = total - had;
    let slack = CHECKPOINT + (256 << 10);
    assert!(
        fetched >= rest && fetched < rest + slack && fetched < total / 2 + slack,
        "fetched {fetched} bytes, the rest was {rest} of {total}"
    );
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("resuming a partial download"), "{log}");
    assert_eq!(fs::read(host.path().join("current/bin/big")).unwrap(), big);
    assert_eq!(
        fs::read(host.path().join("cache").join(sha256_hex(&art))).unwrap(),
        art
    );
    assert_eq!(host.partial(), None, "the partial became the cache blob");
}

#[test]
fn partial_of_a_replaced_object_restarts_from_zero() {
    let (moto, proxy, host, registry, _) = setup();
    // A plain executable, so the replacement can have exactly the same size.
    let registry = format!("{registry}&artifact=tool");
    let old = noise(SIZE, 7);
    moto.put("rel", "app/v1.0.0/tool", &old);

    proxy.slow.store(true, Ordering::SeqCst);
    host.kill_mid_download(&registry, old.len() as u64 / 4, old.len() as u64);

    // The same key and the same size, other bytes: only the object's time tells. S3 times
    // are in seconds, so the replacement waits for the next one.
    let new = noise(SIZE, 11);
    thread::sleep(Duration::from_millis(1100));
    moto.put("rel", "app/v1.0.0/tool", &new);

    proxy.slow.store(false, Ordering::SeqCst);
    proxy.down.store(0, Ordering::SeqCst);
    let out = run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS);
    out.assert_ok();
    let fetched = proxy.down.load(Ordering::SeqCst);
    assert!(
        fetched >= new.len() as u64,
        "fetched {fetched} bytes of {}: not from zero",
        new.len()
    );
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("changed since the partial download"), "{log}");
    assert_eq!(fs::read(host.path().join("current/tool")).unwrap(), new);
}

/// The download meets a full disk (a tmpfs smaller than the artifact): one clear error, the
/// partial is not kept (its space is back), and once the disk is larger the next run deploys.
#[test]
fn full_disk_drops_the_partial_then_deploys_once_there_is_room() {
    let Some(disk) = e2e::tmpfs::Tmpfs::mount(8 << 10) else {
        return;
    };
    let (moto, proxy, _, registry, key) = setup();
    let host = Host::new_in(disk.path());
    let big = noise(12 << 20, 5);
    let art = tar_gz(&[("bin/big", &big)]);
    moto.put("rel", &key, &art);
    let free = disk.free_bytes();

    let out = run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS);
    assert!(!out.ok(), "{out}");
    let log = out.stderr_str() + &out.stdout_str();
    assert!(
        log.contains("disk full") && log.contains("No space left on device"),
        "the error must name the full disk:\n{log}"
    );
    assert_eq!(host.partial(), None, "a partial on a full disk is not kept");
    assert!(
        disk.free_bytes() + (64 << 10) >= free,
        "space not given back: {} free, {free} before",
        disk.free_bytes()
    );
    assert!(!host.path().join("current").exists());

    disk.resize(64 << 10);
    proxy.down.store(0, Ordering::SeqCst);
    run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS).assert_ok();
    assert_eq!(fs::read(host.path().join("current/bin/big")).unwrap(), big);
    assert!(
        proxy.down.load(Ordering::SeqCst) >= art.len() as u64,
        "downloaded from zero"
    );
}

/// The deploy script fills the disk, so the state file cannot be saved: the run fails with
/// one clear error and `current` still names the release the state names (it was switched
/// first; before, it was left on the new tree, and the retry's script got that tree as
/// OLDROOT with the old release's OLDID). Once there is room, the next run deploys and the
/// script sees the old release as OLDROOT.
#[test]
fn state_file_on_a_full_disk_leaves_current_on_the_release_the_state_names() {
    let Some(disk) = e2e::tmpfs::Tmpfs::mount(8 << 10) else {
        return;
    };
    let (moto, _proxy, _, registry, key) = setup();
    let host = Host::new_in(disk.path());
    let script = host.path().join("deploy.sh");
    fs::write(
        &script,
        "#!/bin/sh\necho \"$OLDID $OLDROOT $NEWID $NEWROOT\" >> deploys.log\n\
         [ -e fill-the-disk ] && head -c 64M /dev/zero > fill 2>/dev/null\nexit 0\n",
    )
    .unwrap();
    moto.put("rel", &key, &tar_gz(&[("version", b"1")]));
    run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS).assert_ok();
    let first = fs::read_link(host.path().join("current")).unwrap();
    let state = fs::read_to_string(host.path().join("state.json")).unwrap();

    moto.put(
        "rel",
        &key.replace("v1.0.0", "v1.1.0"),
        &tar_gz(&[("version", b"2")]),
    );
    fs::write(host.path().join("fill-the-disk"), "").unwrap();
    let out = run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS);
    assert!(!out.ok(), "{out}");
    let log = out.stderr_str() + &out.stdout_str();
    assert!(
        log.contains("cannot save state file") && log.contains("No space left on device"),
        "{log}"
    );
    assert_eq!(fs::read_link(host.path().join("current")).unwrap(), first);
    assert_eq!(
        fs::read_to_string(host.path().join("state.json")).unwrap(),
        state
    );

    fs::remove_file(host.path().join("fill")).unwrap();
    fs::remove_file(host.path().join("fill-the-disk")).unwrap();
    run_with_timeout(&mut host.command(&registry), None, DEFAULT_TIMEOUT_SECS).assert_ok();
    assert_eq!(fs::read(host.path().join("current/version")).unwrap(), b"2");
    let runs = fs::read_to_string(host.path().join("deploys.log")).unwrap();
    let last: Vec<&str> = runs.lines().last().unwrap().split(' ').collect();
    assert_eq!(Path::new(last[1]), first, "OLDROOT of the retry:\n{runs}");
    assert_eq!(
        Path::new(last[3]),
        fs::read_link(host.path().join("current")).unwrap()
    );
}
