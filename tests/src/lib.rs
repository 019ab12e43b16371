//! End-to-end harness: starts the built binaries (`deploy-registry`, `deploy-agent`,
//! `deployctl`) and drives them with the real OpenSSH `ssh`, `sftp` and `ssh-keygen`.
//!
//! Every test gets its own temp dir and its own port, so tests are independent and run in
//! parallel. Every external command runs under a timeout ([`run_with_timeout`]): a hang fails
//! the test with the command line instead of hanging CI. Every process started here is killed
//! when its owner is dropped, panics included.
//!
//! # Layout
//! - [`bin`], [`free_port`]: where the binaries are, a port to listen on.
//! - [`run`], [`run_with_timeout`], [`Out`], [`eqnice!`]: running commands, checking output.
//! - [`Keys`]: real ed25519 keys and the two authorized_keys files.
//! - [`Registry`]: a running `deploy-registry` plus ssh/sftp helpers as operator or service.
//! - [`tar_gz`], [`TarBuilder`], [`RawEntry`]: archives, hostile ones included.
//! - [`sha256_hex`], [`upload`]: content hashes, uploading a blob.
//! - [`tmpfs::Tmpfs`]: a small filesystem to fill, for full-disk tests.

pub mod http;
pub mod peers;
pub mod smtp;
pub mod tmpfs;

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// Default limit for one external command: generous, because debug builds on a loaded
/// 2-core machine are slow, yet finite so that a hang fails instead of blocking CI.
pub const DEFAULT_TIMEOUT_SECS: u64 = 90;

/// How long a registry may take to print its fingerprint and accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root: the binaries live in its `target/`.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a built binary, so tests run what `cargo build --workspace` produced (or what
/// `$DEPLOY_BIN_DIR` points at, e.g. a release build).
pub fn bin(name: &str) -> PathBuf {
    let path = match std::env::var_os("DEPLOY_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => workspace().join("target").join("debug").join(name),
    };
    assert!(
        path.is_file(),
        "{} not found: build it first: cargo build --workspace",
        path.display()
    );
    path
}

/// Go's `runtime.GOARCH` of this machine: the arch in the artifact names Dewy's rules pick.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Runs a fixture-building command (umoci, skopeo...); fails the test with its output unless
/// it succeeds.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP port free right now on 127.0.0.1, so that parallel tests do not collide.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A unique name for per-test resources outside temp dirs (tmux sockets, ...).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a finished command produced; printed in full whenever an assertion on it fails.
pub struct Out {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Out {
    /// Exit status 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics (printing everything) unless the command exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "command failed:\n{self}");
        self
    }

    /// Panics (printing everything) unless the command exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit status:\n{self}");
        self
    }

    /// Panics unless the command exited non-zero.
    #[track_caller]
    pub fn assert_fail(&self) -> &Self {
        assert!(
            !self.ok(),
            "command succeeded but should have failed:\n{self}"
        );
        self
    }

    /// Panics unless stdout is exactly `expected` (with a readable diff).
    #[track_caller]
    pub fn assert_stdout(&self, expected: &str) -> &Self {
        if self.stdout_str() != expected {
            panic!(
                "stdout differs\n{}\n--- full output ---\n{self}",
                nice_diff(expected, &self.stdout_str())
            );
        }
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str().contains(needle),
            "stderr does not contain {needle:?}:\n{self}"
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout_str().contains(needle),
            "stdout does not contain {needle:?}:\n{self}"
        );
        self
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "status: {}", self.status)?;
        writeln!(
            f,
            "stdout ({} bytes):\n{}",
            self.stdout.len(),
            rule(&self.stdout_str())
        )?;
        write!(
            f,
            "stderr ({} bytes):\n{}",
            self.stderr.len(),
            rule(&self.stderr_str())
        )
    }
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn rule(s: &str) -> String {
    format!("~~~~~~~~~~\n{s}~~~~~~~~~~ (debug: {s:?})")
}

/// The expected and actual texts between rulers, plus their debug forms (which show
/// trailing spaces and tabs), like ripgrep's `eqnice!`.
pub fn nice_diff(expected: &str, got: &str) -> String {
    let mut first = None;
    for (i, (e, g)) in expected.lines().zip(got.lines()).enumerate() {
        if e != g {
            first = Some(i + 1);
            break;
        }
    }
    let first = match first {
        Some(n) => format!("first differing line: {n}"),
        None => format!(
            "line counts: expected {}, got {} (or trailing newline differs)",
            expected.lines().count(),
            got.lines().count()
        ),
    };
    format!(
        "\n\nexpected:\n{}\n\ngot:\n{}\n\n{first}\n",
        rule(expected),
        rule(got)
    )
}

/// `assert_eq!` for multi-line text: prints both sides between rulers, with debug forms so
/// trailing whitespace is visible.
#[macro_export]
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {{
        let expected: &str = &$expected;
        let got: &str = &$got;
        if expected != got {
            panic!("printed outputs differ!{}", $crate::nice_diff(expected, got));
        }
    }};
    ($expected:expr, $got:expr, $($ctx:tt)+) => {{
        let expected: &str = &$expected;
        let got: &str = &$got;
        if expected != got {
            panic!("printed outputs differ ({})!{}", format!($($ctx)+), $crate::nice_diff(expected, got));
        }
    }};
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '\\', ';', '\n', '\t']) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` with [`DEFAULT_TIMEOUT_SECS`]; `stdin` (if any) is written then closed,
/// otherwise stdin is /dev/null.
#[track_caller]
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Out {
    run_with_timeout(cmd, stdin, DEFAULT_TIMEOUT_SECS)
}

/// Runs `cmd` to completion, collecting stdout and stderr; kills it and panics (naming the
/// command and what it printed so far) if it runs longer than `secs`, so a hang is a failure.
#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, secs: u64) -> Out {
    let cmdline = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so a timeout kills helpers too (sftp's ssh child).
    .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin piped");
        let data = data.to_vec();
        // A server that closes early makes this write fail (EPIPE); that is the test's
        // business, judged by the exit status and output.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out_reader = reader(child.stdout.take().expect("stdout piped"));
    let err_reader = reader(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                kill_group(&child);
                let _ = child.kill();
                let status = child.wait().expect("wait");
                let stdout = out_reader.join().unwrap_or_default();
                let stderr = err_reader.join().unwrap_or_default();
                let out = Out {
                    cmdline,
                    status,
                    stdout,
                    stderr,
                };
                panic!("timed out after {secs} s (killed):\n{out}");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Out {
        cmdline,
        status,
        stdout,
        stderr,
    }
}

/// SIGKILL to the process group led by `child` (see `process_group(0)` above).
fn kill_group(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals our child's own process group.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// `deploy-agent` in `dir` as the Dewy-source tests run it: test AWS credentials (moto takes
/// any), and none of the caller's environment that could point it at another cache, endpoint,
/// profile or GCS emulator (tests set those after, where they need them).
pub fn dewy_agent(dir: &Path) -> Command {
    let mut c = Command::new(bin("deploy-agent"));
    c.current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("DEWY_CACHEDIR")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("STORAGE_EMULATOR_HOST");
    c
}

/// Waits for `child` to exit, polling every 100 ms for at most `limit` (a limit against hangs,
/// never an assertion on speed); `None` if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `cond` every 100 ms until it holds; panics naming `what` after `secs` (a limit
/// against hangs, never an assertion on speed).
#[track_caller]
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The `Hash` field of a configuration's JSON (spec 2.1).
pub fn config_hash(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("configuration JSON");
    v["Hash"].as_str().expect("a Hash field").to_string()
}

/// `len` incompressible bytes (xorshift from `seed`): what gzip cannot shrink, for tests
/// that must fill a disk or a window with a known number of bytes.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Lowercase hex sha256: how the registry names content.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Makes an unencrypted key pair with the real `ssh-keygen` (`kind`: `ed25519`, `ecdsa`,
/// `rsa`; `extra` e.g. `["-m", "PEM"]`), so the keys are exactly what operators use.
pub fn keygen(path: &Path, kind: &str, extra: &[&str]) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "e2e"])
        .args(extra)
        .arg("-f")
        .arg(path);
    run_with_timeout(&mut cmd, None, 60).assert_ok();
}

/// `ssh-keygen -lf <key>`'s `SHA256:...`, the reference fingerprint format.
pub fn fingerprint_of(key: &Path) -> String {
    let out = run_with_timeout(Command::new("ssh-keygen").arg("-lf").arg(key), None, 30);
    out.assert_ok();
    let s = out.stdout_str();
    s.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no SHA256 fingerprint in:\n{out}"))
        .to_string()
}

/// Real ed25519 keys (operator, service, stranger) and the `operator.keys`/`service.keys`
/// authorized_keys files the registry reads, in their own temp dir.
pub struct Keys {
    dir: TempDir,
    /// Private key listed in `operator.keys`.
    pub operator: PathBuf,
    /// Private key listed in `service.keys` (what an agent uses).
    pub service: PathBuf,
    /// A key listed nowhere.
    pub stranger: PathBuf,
    pub operator_keys: PathBuf,
    pub service_keys: PathBuf,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::Builder::new()
            .prefix("e2e-keys")
            .tempdir()
            .expect("tempdir");
        let operator = dir.path().join("operator");
        let service = dir.path().join("service");
        let stranger = dir.path().join("stranger");
        for k in [&operator, &service, &stranger] {
            keygen(k, "ed25519", &[]);
        }
        let operator_keys = dir.path().join("operator.keys");
        let service_keys = dir.path().join("service.keys");
        let keys = Keys {
            dir,
            operator,
            service,
            stranger,
            operator_keys,
            service_keys,
        };
        fs::write(&keys.operator_keys, keys.public(&keys.operator)).expect("write operator.keys");
        fs::write(&keys.service_keys, keys.public(&keys.service)).expect("write service.keys");
        keys
    }

    /// The directory holding the keys (for extra key files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `.pub` line (with trailing newline) of a private key made by [`keygen`].
    pub fn public(&self, private: &Path) -> String {
        let mut p = private.as_os_str().to_owned();
        p.push(".pub");
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"))
    }

    /// Makes another ed25519 key in the keys dir (not listed anywhere).
    pub fn extra(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        keygen(&p, "ed25519", &[]);
        p
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new()
    }
}

/// Why a registry did not come up (see [`Registry::try_start_in`]).
#[derive(Debug)]
pub struct StartError {
    /// `None` if it was still running but never got ready (it is killed then).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr.
    pub log: String,
}

/// A running `deploy-registry` in its own temp dir, on its own port. Dropping it kills it.
pub struct Registry {
    /// Holds `registry.log` (and `data/` unless another data dir was given).
    work: TempDir,
    data: PathBuf,
    pub port: u16,
    pub keys: Keys,
    extra: Vec<String>,
    child: Option<Child>,
    /// Exit status of the last run, once reaped.
    exited: Option<ExitStatus>,
    /// Where the current run's output starts in `registry.log` (restarts append).
    log_start: u64,
    fingerprint: String,
}

impl Registry {
    /// A fresh registry with fresh keys and an empty data dir.
    pub fn start() -> Registry {
        Registry::start_with(&[])
    }

    /// Like [`Registry::start`], with extra command-line flags (e.g. `["-maxver", "2"]`).
    pub fn start_with(extra: &[&str]) -> Registry {
        match Registry::try_start_in(None, Keys::new(), extra) {
            Ok(r) => r,
            Err(e) => panic!("deploy-registry did not start: {e:?}\n{}", e.log),
        }
    }

    /// A registry on a data dir the test prepared (e.g. with a host key of its own), with
    /// the given keys. `None` means a fresh `data/` in the registry's temp dir.
    pub fn start_in(data: Option<&Path>, keys: Keys, extra: &[&str]) -> Registry {
        match Registry::try_start_in(data, keys, extra) {
            Ok(r) => r,
            Err(e) => panic!("deploy-registry did not start: {e:?}\n{}", e.log),
        }
    }

    /// Like [`Registry::start_in`], but returns why it failed to start instead of
    /// panicking: for tests of refused configurations (locked dir, bad key files).
    pub fn try_start_in(
        data: Option<&Path>,
        keys: Keys,
        extra: &[&str],
    ) -> Result<Registry, StartError> {
        let work = tempfile::Builder::new()
            .prefix("e2e-registry")
            .tempdir()
            .expect("tempdir");
        let data = match data {
            Some(d) => d.to_path_buf(),
            None => {
                let d = work.path().join("data");
                fs::create_dir(&d).expect("mkdir data");
                d
            }
        };
        let mut reg = Registry {
            work,
            data,
            port: 0,
            keys,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            exited: None,
            log_start: 0,
            fingerprint: String::new(),
        };
        // free_port() can race with another test taking the same port: retry on a new one.
        for _ in 0..5 {
            reg.port = free_port();
            match reg.spawn() {
                Ok(()) => return Ok(reg),
                Err(e) if e.log.contains("in use") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StartError {
            status: None,
            log: reg.log(),
        })
    }

    /// The command line a start uses (binary and flags).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("deploy-registry"));
        cmd.arg("-addr")
            .arg(self.addr())
            .arg("-dir")
            .arg(&self.data)
            .arg("-opauth")
            .arg(&self.keys.operator_keys)
            .arg("-srvauth")
            .arg(&self.keys.service_keys)
            .args(&self.extra)
            // Plain log lines: the harness greps them.
            .env("NO_COLOR", "1");
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.work.path().join("registry.log")
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry.log");
        self.log_start = log.metadata().expect("stat log").len();
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&cmd)));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(StartError {
                    status: Some(status),
                    log: self.log(),
                });
            }
            if let Some(fp) = find_fingerprint(&self.current_log())
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.fingerprint = fp;
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                return Err(StartError {
                    status: None,
                    log: self.log(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's `-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The `SHA256:...` host key fingerprint the current run logged.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Everything the registry wrote to stderr/stdout, all runs (restarts append).
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// What the current run wrote so far.
    pub fn current_log(&self) -> String {
        let all = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(self.log_start).unwrap_or(0).min(all.len());
        strip_ansi(&String::from_utf8_lossy(&all[start..]))
    }

    /// The process id of the running registry.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("registry not running").id()
    }

    /// Whether the process is still alive (if it exited, its status is kept for
    /// [`Registry::wait_exit`]).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.exited = Some(status);
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) to the registry.
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits (at most `secs`) for the registry to exit on its own, e.g. after a signal sent
    /// with [`Registry::signal`], and returns its exit status; kills it and panics on timeout.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.is_running() {
            if Instant::now() >= deadline {
                self.kill9();
                panic!("registry did not exit within {secs} s\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.exited.take().expect("registry was not started")
    }

    /// SIGTERM, then waits (at most 60 s) and returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(60)
    }

    /// SIGKILL and reap: a crash at an arbitrary moment.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the registry (SIGTERM) if it runs, then starts it again on the same port, dir
    /// and keys; waits until it is ready.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        self.child = None;
        if let Err(e) = self.spawn() {
            panic!("deploy-registry did not restart: {e:?}\n{}", e.log);
        }
    }

    /// The ssh/sftp options that make runs independent of `~/.ssh` and never prompt.
    pub fn ssh_opts(&self, key: &Path) -> Vec<String> {
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
        v.push(key.display().to_string());
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "IdentitiesOnly=yes",
            "ConnectTimeout=10",
        ] {
            v.push("-o".into());
            v.push(o.into());
        }
        v
    }

    /// An `ssh` command as `user` with `key` to this registry, before the destination: add
    /// options, then `user@127.0.0.1` is appended by [`Registry::ssh_cmd_dest`].
    pub fn ssh_cmd(&self, key: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p")
            .arg(self.port.to_string())
            .args(self.ssh_opts(key));
        cmd
    }

    /// `user@127.0.0.1`.
    pub fn dest(&self, user: &str) -> String {
        format!("{user}@127.0.0.1")
    }

    /// Runs an operator console command in exec mode (`ssh op@host CMD`).
    #[track_caller]
    pub fn ssh(&self, cmd: &str) -> Out {
        self.ssh_as("op", &self.keys.operator, cmd)
    }

    /// Runs `ssh user@host CMD` with `key`.
    #[track_caller]
    pub fn ssh_as(&self, user: &str, key: &Path, cmd: &str) -> Out {
        let mut c = self.ssh_cmd(key);
        c.arg(self.dest(user)).arg(cmd);
        run(&mut c, None)
    }

    /// `ssh [extra...] user@host [cmd]` with `stdin`: for `-T`, `-tt`, `-N -L ...`.
    #[track_caller]
    pub fn ssh_raw(
        &self,
        user: &str,
        key: &Path,
        extra: &[&str],
        cmd: Option<&str>,
        stdin: Option<&[u8]>,
    ) -> Out {
        let mut c = self.ssh_cmd(key);
        c.args(extra).arg(self.dest(user));
        if let Some(cmd) = cmd {
            c.arg(cmd);
        }
        run(&mut c, stdin)
    }

    /// `sftp -b - user@host` with `batch` on stdin.
    #[track_caller]
    pub fn sftp(&self, user: &str, key: &Path, batch: &str) -> Out {
        self.sftp_args(user, key, &[], batch)
    }

    /// `sftp [extra...] -b - user@host`, e.g. `extra = ["-R", "512", "-B", "261120"]`.
    #[track_caller]
    pub fn sftp_args(&self, user: &str, key: &Path, extra: &[&str], batch: &str) -> Out {
        let mut c = Command::new("sftp");
        c.arg("-P")
            .arg(self.port.to_string())
            .args(self.ssh_opts(key))
            .args(extra)
            .args(["-b", "-"])
            .arg(self.dest(user));
        run(&mut c, Some(batch.as_bytes()))
    }

    /// Operator sftp (upload-only view).
    #[track_caller]
    pub fn sftp_op(&self, batch: &str) -> Out {
        self.sftp("op", &self.keys.operator, batch)
    }

    /// Service sftp, as `deploy-agent` sees it (read-only view).
    #[track_caller]
    pub fn sftp_service(&self, batch: &str) -> Out {
        self.sftp("deploy-agent", &self.keys.service, batch)
    }

    /// A known_hosts file for this registry (from `ssh-keyscan`), for clients that verify
    /// the host key that way.
    pub fn known_hosts(&self) -> PathBuf {
        let out = run_with_timeout(
            Command::new("ssh-keyscan").args(["-p", &self.port.to_string(), "127.0.0.1"]),
            None,
            30,
        );
        out.assert_ok();
        let path = self.work.path().join("known_hosts");
        fs::write(&path, &out.stdout).expect("write known_hosts");
        path
    }

    /// The registry's temp dir (the log lives there; free for test files).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The exact bytes the registry serves as `configs/<name>.json` to an agent.
    pub fn served_config(&self, name: &str) -> String {
        let tmp = tempfile::tempdir().expect("temp dir");
        let local = tmp.path().join("c.json");
        self.sftp_service(&format!("get configs/{name}.json {}\n", local.display()))
            .assert_ok();
        fs::read_to_string(local).expect("the fetched configuration")
    }

    /// `deployctl ARGS...` against this registry as the operator (`-addr -fp -key` given, no
    /// agent, no environment that could point it elsewhere; `HOME` is the work dir).
    pub fn deployctl(&self, args: &[&str]) -> Out {
        let mut c = Command::new(bin("deployctl"));
        c.env("USER", "op")
            .env("HOME", self.work_dir())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DEPLOYCTL_ADDR")
            .env_remove("DEPLOYCTL_FINGERPRINT")
            .env_remove("DOCKER_USERNAME")
            .env_remove("DOCKER_PASSWORD")
            .env_remove("DOCKER_CONFIG")
            .arg("-addr")
            .arg(self.addr())
            .arg("-fp")
            .arg(self.fingerprint())
            .arg("-key")
            .arg(&self.keys.operator)
            .args(args);
        run(&mut c, None)
    }

    /// `deploy-agent` tracking configuration `name` of this registry with `key`, run in `dir`
    /// (its `-dir .`, state file and script live there): add `-once`, `-script` and the rest.
    pub fn agent_command(&self, dir: &Path, name: &str, key: &Path) -> Command {
        let mut c = Command::new(bin("deploy-agent"));
        c.current_dir(dir)
            .args([
                "-addr",
                &self.addr(),
                "-fp",
                &self.fingerprint(),
                "-name",
                name,
            ])
            .arg("-key")
            .arg(key);
        c
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The fingerprint in the last `host key fingerprint: SHA256:...` line.
fn find_fingerprint(log: &str) -> Option<String> {
    const MARK: &str = "host key fingerprint: SHA256:";
    let at = log.rfind(MARK)? + MARK.len() - "SHA256:".len();
    let fp: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | ':' | '='))
        .collect();
    (fp.len() > "SHA256:".len()).then_some(fp)
}

/// Removes ANSI escape sequences (a log formatter may colour its output).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Uploads `bytes` through operator sftp (a temp file, `put`), asserts success and returns
/// the sha256 to give `addver -hash`.
#[track_caller]
pub fn upload(reg: &Registry, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("blob.tar.gz");
    fs::write(&file, bytes).expect("write blob");
    reg.sftp_op(&format!("put {} upload.tar.gz\n", file.display()))
        .assert_ok();
    sha256_hex(bytes)
}

/// Uploads `bytes` and registers them as `name`/`version` with `addver`; returns the hash.
#[track_caller]
pub fn add_version(reg: &Registry, name: &str, version: &str, bytes: &[u8]) -> String {
    let hash = upload(reg, bytes);
    reg.ssh(&format!(
        "addver -name {name} -version {version} -hash {hash}"
    ))
    .assert_ok();
    hash
}

/// A `.tar.gz` of regular files (mode 0644), in order: the common, well-formed layer.
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = TarBuilder::new();
    for (name, data) in entries {
        b = b.file(name, data);
    }
    b.gz()
}

/// Gzip-compresses `data` (for archives built by hand).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// One tar entry with every header field under the test's control: names with `..` or a
/// leading `/`, any link target, devices, setuid modes, lying sizes. Built with
/// [`RawEntry::file`] etc., adjusted with the chainable setters.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Raw name bytes, written as is (GNU long-name record if longer than 100 bytes).
    pub name: Vec<u8>,
    /// Type flag: b'0' file, b'5' dir, b'2' symlink, b'1' hard link, b'3' char dev,
    /// b'4' block dev, b'6' fifo, or anything else.
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    /// Link target (symlinks, hard links), raw.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// The size written in the header, if it should differ from `data.len()`.
    pub size: Option<u64>,
}

impl RawEntry {
    fn base(name: &str, typeflag: u8, mode: u32) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            data: Vec::new(),
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            size: None,
        }
    }

    /// A regular file, mode 0644.
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            data: data.to_vec(),
            ..RawEntry::base(name, b'0', 0o644)
        }
    }

    /// A directory, mode 0755.
    pub fn dir(name: &str) -> RawEntry {
        RawEntry::base(name, b'5', 0o755)
    }

    /// A symlink `name -> target`.
    pub fn symlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            link: target.as_bytes().to_vec(),
            ..RawEntry::base(name, b'2', 0o777)
        }
    }

    /// A hard link `name` to the earlier entry `target`.
    pub fn hardlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            link: target.as_bytes().to_vec(),
            ..RawEntry::base(name, b'1', 0o644)
        }
    }

    /// A character device.
    pub fn char_device(name: &str, major: u32, minor: u32) -> RawEntry {
        RawEntry {
            dev_major: major,
            dev_minor: minor,
            ..RawEntry::base(name, b'3', 0o666)
        }
    }

    /// A block device.
    pub fn block_device(name: &str, major: u32, minor: u32) -> RawEntry {
        RawEntry {
            dev_major: major,
            dev_minor: minor,
            ..RawEntry::base(name, b'4', 0o660)
        }
    }

    /// A FIFO.
    pub fn fifo(name: &str) -> RawEntry {
        RawEntry::base(name, b'6', 0o644)
    }

    pub fn mode(mut self, mode: u32) -> RawEntry {
        self.mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> RawEntry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> RawEntry {
        self.mtime = mtime;
        self
    }

    /// Raw name bytes (non-UTF-8 allowed).
    pub fn name_bytes(mut self, name: &[u8]) -> RawEntry {
        self.name = name.to_vec();
        self
    }

    /// Header size that lies about the data length.
    pub fn size(mut self, size: u64) -> RawEntry {
        self.size = Some(size);
        self
    }
}

/// Builds tar streams entry by entry, without the `tar` crate's path checks, so tests can
/// make both ordinary and hostile archives.
#[derive(Debug, Clone, Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    /// A regular file, mode 0644.
    pub fn file(self, name: &str, data: &[u8]) -> TarBuilder {
        self.entry(RawEntry::file(name, data))
    }

    /// A regular file with a mode.
    pub fn file_mode(self, name: &str, data: &[u8], mode: u32) -> TarBuilder {
        self.entry(RawEntry::file(name, data).mode(mode))
    }

    /// A directory, mode 0755.
    pub fn dir(self, name: &str) -> TarBuilder {
        self.entry(RawEntry::dir(name))
    }

    /// A directory with a mode.
    pub fn dir_mode(self, name: &str, mode: u32) -> TarBuilder {
        self.entry(RawEntry::dir(name).mode(mode))
    }

    /// A symlink `name -> target`.
    pub fn symlink(self, name: &str, target: &str) -> TarBuilder {
        self.entry(RawEntry::symlink(name, target))
    }

    /// A hard link `name` to `target`.
    pub fn hardlink(self, name: &str, target: &str) -> TarBuilder {
        self.entry(RawEntry::hardlink(name, target))
    }

    /// Any entry, header fields exactly as given.
    pub fn entry(mut self, e: RawEntry) -> TarBuilder {
        if e.name.len() > 100 {
            self.long_record(b'L', &e.name);
        }
        if e.link.len() > 100 {
            self.long_record(b'K', &e.link);
        }
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = e.name.len().min(100);
            old.name[..n].copy_from_slice(&e.name[..n]);
            let l = e.link.len().min(100);
            old.linkname[..l].copy_from_slice(&e.link[..l]);
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_entry_type(tar::EntryType::new(e.typeflag));
        if matches!(e.typeflag, b'3' | b'4') {
            h.set_device_major(e.dev_major).expect("device major");
            h.set_device_minor(e.dev_minor).expect("device minor");
        }
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.push_data(&e.data);
        self
    }

    /// A PAX extended header (`x`) whose records (`path`, `linkpath`, `size`, `uid`, ...)
    /// apply to the next entry: for names and targets past the ustar limits, or for tests of
    /// what a PAX record may override.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> TarBuilder {
        let mut body = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..14].copy_from_slice(b"././@PaxHeader");
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.push_data(&body);
        self
    }

    /// Raw bytes appended as they are (a corrupt header, trailing garbage...).
    pub fn raw(mut self, bytes: &[u8]) -> TarBuilder {
        self.buf.extend_from_slice(bytes);
        self
    }

    fn long_record(&mut self, kind: u8, value: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(value.len() as u64 + 1);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        let mut v = value.to_vec();
        v.push(0);
        self.push_data(&v);
    }

    fn push_data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The uncompressed tar stream, with the two zero end blocks.
    pub fn tar(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }

    /// The gzip-compressed tar stream.
    pub fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_found_in_log_lines() {
        let log = "2026/11/22 10:00:00 host key fingerprint: SHA256:abc+/0\n";
        assert_eq!(find_fingerprint(log).as_deref(), Some("SHA256:abc+/0"));
        let coloured = "\x1b[2mts\x1b[0m \x1b[32m INFO\x1b[0m host key fingerprint: SHA256:xyz\n";
        assert_eq!(
            find_fingerprint(&strip_ansi(coloured)).as_deref(),
            Some("SHA256:xyz")
        );
        assert_eq!(find_fingerprint("starting\n"), None);
    }

    #[test]
    fn tar_builder_round_trips_through_the_tar_crate() {
        let long = "d/".repeat(60) + "f";
        let gz = TarBuilder::new()
            .dir("d")
            .file_mode("d/x", b"hello", 0o4755)
            .symlink("d/l", "/etc/passwd")
            .hardlink("d/h", "d/x")
            .file(&long, b"long")
            .entry(RawEntry::char_device("d/dev", 1, 3))
            .gz();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                e.path_bytes().into_owned(),
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                e.link_name_bytes().map(|l| l.into_owned()),
            ));
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[1], (b"d/x".to_vec(), b'0', 0o4755, None));
        assert_eq!(seen[2].3.as_deref(), Some(&b"/etc/passwd"[..]));
        assert_eq!(seen[3].1, b'1');
        assert_eq!(seen[4].0, long.as_bytes());
        assert_eq!(seen[5].1, b'3');
    }

    #[test]
    fn pax_records_reach_the_next_entry() {
        let long = "p/".repeat(80) + "file";
        let t = TarBuilder::new()
            .pax(&[("path", long.as_bytes())])
            .file("short", b"x")
            .tar();
        let mut ar = tar::Archive::new(&t[..]);
        let names: Vec<Vec<u8>> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, [long.into_bytes()]);
    }

    #[test]
    fn hostile_names_are_written_raw() {
        let t = TarBuilder::new()
            .file("../escape", b"x")
            .file("/abs", b"y")
            .tar();
        assert_eq!(&t[..9], b"../escape");
        assert_eq!(&t[1024..1028], b"/abs");
        assert_eq!(t.len(), 512 * 4 + 1024);
    }

    #[test]
    fn run_with_timeout_kills_a_hang() {
        let r =
            std::panic::catch_unwind(|| run_with_timeout(Command::new("sleep").arg("30"), None, 1));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("timed out after 1 s"), "{msg}");
        assert!(msg.contains("sleep 30"), "{msg}");
    }

    #[test]
    fn run_passes_stdin() {
        let out = run(&mut Command::new("cat"), Some(b"abc"));
        out.assert_ok().assert_stdout("abc");
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
