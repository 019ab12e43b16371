//! The server-mode supervisor with real workers: python3 running `tests/fixtures/server_app.py`
//! (or a small inline script) on the sockets the supervisor binds.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::supervise::{Config, Supervisor, probe};
use e2e::free_port;
use e2e::http::{Hammer, get};

const APP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/server_app.py"
);

/// A Dewy-like working directory: `releases/<v>/{server_app.py,VERSION}` and `current`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(first: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        site.release(first);
        site.switch(first);
        site
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn release(&self, version: &str) -> PathBuf {
        let d = self.path().join("releases").join(version);
        fs::create_dir_all(&d).unwrap();
        fs::copy(APP, d.join("server_app.py")).unwrap();
        fs::write(d.join("VERSION"), version).unwrap();
        d
    }
    /// Points `current` at the release, atomically (as the agent does).
    fn switch(&self, version: &str) {
        let tmp = self.path().join("current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(self.path().join("releases").join(version), &tmp).unwrap();
        fs::rename(&tmp, self.path().join("current")).unwrap();
    }
    fn config(&self, ports: &[u16]) -> Config {
        Config {
            command: "python3".into(),
            args: vec![
                self.path()
                    .join("current/server_app.py")
                    .display()
                    .to_string(),
            ],
            ports: ports.to_vec(),
            dir: self.path().to_path_buf(),
            kill_old_delay: Duration::ZERO,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

async fn get_async(port: u16, path: &'static str) -> std::io::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || get(port, path))
        .await
        .unwrap()
}

/// Polls `check` until it returns `Some`, failing the test after `secs` (a bound, not a
/// measurement).
async fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the port answers `/` with `version`.
async fn serving(port: u16, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get_async(port, "/").await {
            Ok((200, body)) if body == version => return,
            other => assert!(
                Instant::now() < deadline,
                "port {port} does not serve {version}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_the_sockets_as_fds_3_4_and_server_starter_env() {
    let site = Site::new("v1");
    const REPORT: &str = r#"
import json, os, socket, time
fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))
        fds.append(int(name))
    except OSError:
        pass  # the listing's own descriptor, closed by now
socks = {}
for fd in (3, 4):
    s = socket.socket(fileno=fd)
    socks[fd] = [s.getsockname()[1], s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), s.family == socket.AF_INET6]
    s.detach()
gen = os.environ["SERVER_STARTER_GENERATION"]
with open("report-%s.tmp" % gen, "w") as f:
    json.dump({"port": os.environ["SERVER_STARTER_PORT"], "fds": sorted(fds), "socks": socks,
               "cwd": os.getcwd(), "home": os.environ.get("HOME"), "stdin": os.readlink("/proc/self/fd/0")}, f)
os.rename("report-%s.tmp" % gen, "report-%s.json" % gen)
time.sleep(600)
"#;
    let (a, b) = (free_port(), free_port());
    let mut config = site.config(&[a, b]);
    config.args = vec!["-c".into(), REPORT.into()];
    config.stop_timeout = Duration::from_secs(5);
    let sup = Supervisor::bind(config).unwrap();
    assert!(!sup.is_running());
    assert_eq!(sup.start_or_restart().await.unwrap(), 1);
    assert!(sup.is_running());
    let read = |generation: u32| {
        let p = site.path().join(format!("report-{generation}.json"));
        move || {
            fs::read_to_string(&p)
                .ok()
                .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        }
    };
    let r = eventually(60, "the worker's report", read(1)).await;
    assert_eq!(r["port"], format!("{a}=3;{b}=4"));
    // Only stdio and the two sockets: nothing else of ours leaks into the worker.
    assert_eq!(r["fds"], serde_json::json!([0, 1, 2, 3, 4]), "{r}");
    assert_eq!(r["socks"]["3"][0], a);
    assert_eq!(r["socks"]["4"][0], b);
    assert_eq!(r["socks"]["3"][1], 1, "fd 3 is a listening socket: {r}");
    assert_eq!(
        fs::canonicalize(r["cwd"].as_str().unwrap()).unwrap(),
        fs::canonicalize(site.path()).unwrap()
    );
    // Our environment is passed on.
    assert_eq!(r["home"], serde_json::json!(std::env::var("HOME").ok()));
    assert_eq!(r["stdin"], "/dev/null");
    // The sockets listen on all interfaces: IPv4 reaches them (and IPv6 where there is one).
    TcpStream::connect(("127.0.0.1", a)).unwrap();
    if r["socks"]["3"][2] == true {
        TcpStream::connect(("::1", a)).unwrap();
    }

    // A restart: generation 2 gets the same sockets; generation 1 goes.
    let first = sup.worker_pids();
    assert_eq!(sup.start_or_restart().await.unwrap(), 2);
    let r = eventually(60, "the second worker's report", read(2)).await;
    assert_eq!(r["port"], format!("{a}=3;{b}=4"));
    assert_eq!(r["fds"], serde_json::json!([0, 1, 2, 3, 4]), "{r}");
    assert!(sup.wait_single_worker(Duration::from_secs(60)).await);
    assert_eq!(sup.worker_pids().len(), 1);
    assert_ne!(sup.worker_pids(), first);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_a_stream_of_requests_drop_no_connection() {
    let site = Site::new("1.0.0");
    site.release("2.0.0");
    let port = free_port();
    let sup = Supervisor::bind(site.config(&[port])).unwrap();
    sup.start_or_restart().await.unwrap();
    serving(port, "1.0.0").await;

    let hammer = Hammer::start(port);
    let client_got = |version: &'static str| || hammer.got(version).then_some(());
    eventually(60, "the client's first answer", client_got("1.0.0")).await;
    for (i, version) in ["2.0.0", "1.0.0", "2.0.0", "1.0.0", "2.0.0"]
        .into_iter()
        .enumerate()
    {
        site.switch(version);
        let generation = sup.start_or_restart().await.unwrap();
        assert_eq!(generation, i as u64 + 2);
        assert!(
            sup.wait_single_worker(Duration::from_secs(60)).await,
            "the old worker did not go"
        );
        eventually(
            60,
            "the client served by the new worker",
            client_got(version),
        )
        .await;
    }
    let (ok, failures, seen) = hammer.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(ok > 0);
    // The client saw every switch (the old and new workers may alternate while they overlap).
    assert!(seen.len() >= 6, "{seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("1.0.0"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("2.0.0"), "{seen:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_respawned_as_a_new_generation() {
    // Dewy's own e2e form: the command is a path through `current`, relative here.
    let site = Site::new("1.0.0");
    let script = site.path().join("releases/1.0.0/server_app.py");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let mut config = site.config(&[port]);
    config.command = "./current/server_app.py".into();
    config.args.clear();
    let sup = Supervisor::bind(config).unwrap();
    sup.start_or_restart().await.unwrap();
    serving(port, "1.0.0").await;
    let (_, info) = get_async(port, "/info").await.unwrap();
    let pid: u32 = info.split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(info, format!("1.0.0 1 {pid}"));
    assert_eq!(sup.worker_pids(), vec![pid]);

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let respawned = eventually(60, "a respawned worker", || {
        let p = sup.worker_pids();
        (p.len() == 1 && p[0] != pid).then(|| p[0])
    })
    .await;
    assert!(!alive(pid), "the dead worker is reaped");
    assert!(sup.is_running());
    assert_eq!(sup.generation(), 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, info)) = get_async(port, "/info").await
            && info == format!("1.0.0 2 {respawned}")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the respawned worker does not serve"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sup.shutdown().await;
    assert!(!alive(respawned));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_worker_and_kills_one_that_ignores_sigterm() {
    let site = Site::new("1.0.0");
    let port = free_port();
    let mut config = site.config(&[port]);
    // The old worker stays: two generations are alive when the shutdown comes.
    config.kill_old_delay = Duration::from_secs(600);
    let sup = Supervisor::bind(config).unwrap();
    sup.start_or_restart().await.unwrap();
    serving(port, "1.0.0").await;
    sup.start_or_restart().await.unwrap();
    eventually(60, "two workers", || {
        (sup.worker_pids().len() == 2).then_some(())
    })
    .await;
    assert!(
        !sup.wait_single_worker(Duration::from_millis(300)).await,
        "the old worker waits for KILL_OLD_DELAY"
    );
    let pids = sup.worker_pids();
    sup.shutdown().await;
    assert!(!sup.is_running());
    assert!(sup.worker_pids().is_empty());
    for pid in pids {
        assert!(!alive(pid), "worker {pid} left behind");
    }
    let err = sup.start_or_restart().await.unwrap_err();
    assert!(err.to_string().contains("shut down"), "{err}");
    drop(sup);
    // The supervisor's own sockets went with it.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    // A worker deaf to SIGTERM gets SIGKILL after stop_timeout.
    let mut config = site.config(&[]);
    config.args = vec![
        "-c".into(),
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('ready', 'w').close()\ntime.sleep(600)\n".into(),
    ];
    config.stop_timeout = Duration::from_secs(1);
    let sup = Supervisor::bind(config).unwrap();
    sup.start_or_restart().await.unwrap();
    let ready = site.path().join("ready");
    eventually(60, "the deaf worker", || ready.exists().then_some(())).await;
    let pids = sup.worker_pids();
    sup.shutdown().await;
    assert!(!alive(pids[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_and_taken_ports_are_clear_errors() {
    let site = Site::new("1.0.0");
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Supervisor::bind(site.config(&[free_port(), port]))
        .err()
        .expect("a taken port");
    let text = err.to_string();
    assert!(
        text.contains(&format!("port {port}")) && text.contains("already in use"),
        "{text}"
    );

    let mut config = site.config(&[]);
    config.command = "no-such-command-here".into();
    let err = Supervisor::bind(config).err().expect("a missing command");
    assert!(
        err.to_string()
            .contains("\"no-such-command-here\": executable file not found in $PATH"),
        "{err}"
    );

    // A path is checked when a worker starts (it usually goes through `current`).
    fs::write(site.path().join("not-executable"), "#!/bin/sh\n").unwrap();
    for (name, want) in [
        ("./not-executable", "not executable"),
        ("./current/missing", "No such file"),
    ] {
        let mut config = site.config(&[]);
        config.command = name.into();
        let sup = Supervisor::bind(config).unwrap();
        let err = sup.start_or_restart().await.unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains(name.trim_start_matches("./")),
            "{err}"
        );
        assert!(!sup.is_running());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_healthy_from_unhealthy_and_absent() {
    let site = Site::new("1.0.0");
    let port = free_port();
    let sup = Supervisor::bind(site.config(&[port])).unwrap();
    sup.start_or_restart().await.unwrap();
    serving(port, "1.0.0").await;

    probe(port, "/health", Duration::from_secs(10))
        .await
        .unwrap();
    // 3xx is healthy and not followed (its target answers 404).
    assert_eq!(get_async(port, "/redirect").await.unwrap().0, 302);
    probe(port, "/redirect", Duration::from_secs(10))
        .await
        .unwrap();

    fs::write(site.path().join("current/UNHEALTHY"), "").unwrap();
    let err = probe(port, "/health", Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("health check failed after ")
            && err.contains(" attempts within 3s: ")
            && err.contains("500"),
        "{err}"
    );
    let err = probe(port, "/missing", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.ends_with("status 404 Not Found"), "{err}");
    sup.shutdown().await;

    // Nothing listens there.
    let err = probe(free_port(), "/health", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("health check failed after 1 attempts within 1s: ")
            && err.to_lowercase().contains("refused"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_worker_is_retried_until_shutdown_and_never_after() {
    let site = Site::new("1.0.0");
    let mut config = site.config(&[free_port()]);
    config.args = vec!["-c".into(), "import sys; sys.exit(3)".into()];
    let sup = Supervisor::bind(config).unwrap();
    sup.start_or_restart().await.unwrap();
    // Respawned after 1 s, then 2 s (the backoff).
    eventually(60, "two respawns", || (sup.generation() >= 3).then_some(())).await;
    assert!(sup.is_running());
    sup.shutdown().await;
    assert!(!sup.is_running());
    let generation = sup.generation();
    // Longer than the next backoff (4 s): a respawn still pending would have happened.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(sup.generation(), generation);
    assert!(sup.worker_pids().is_empty());
}
