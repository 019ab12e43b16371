//! `deploy-agent server` (Dewy's server mode, spec dewy.md 8.5, 8.6, 10, 12 #490) end to end:
//! releases of `tests/fixtures/server_app.py` as `app_linux_<arch>.tar.gz` artifacts in moto's
//! S3, the agent polling every second and keeping the app running on the ports it binds, as
//! Dewy's e2e runs `dewy server -p 8000 -- $PWD/current/dewy-testapp`.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use e2e::http::{Hammer, get};
use e2e::peers::Moto;
use e2e::*;

/// Generous bounds for things that take seconds: they fail a hung test, they time nothing.
const LONG: Duration = Duration::from_secs(120);

/// moto with bucket `rel`; releases under `app/<tag>/`.
struct Store {
    moto: Moto,
}

impl Store {
    fn start() -> Store {
        let moto = Moto::start();
        moto.bucket("rel");
        Store { moto }
    }

    fn registry(&self) -> String {
        format!("s3://us-east-1/rel/app?endpoint={}", self.moto.url())
    }

    /// Publishes `tag` as this archive.
    fn publish_archive(&self, tag: &str, archive: &[u8]) {
        let name = format!("app_linux_{}.tar.gz", goarch());
        self.moto.put("rel", &format!("app/{tag}/{name}"), archive);
    }

    /// Publishes `tag` serving `version` on `/`; with `unhealthy`, its `/health` answers 500.
    fn publish(&self, tag: &str, version: &str, unhealthy: bool) {
        let app = fs::read(workspace().join("tests/fixtures/server_app.py")).unwrap();
        let mut files: Vec<(&str, &[u8])> =
            vec![("server_app.py", &app), ("VERSION", version.as_bytes())];
        if unhealthy {
            files.push(("UNHEALTHY", b""));
        }
        let name = format!("app_linux_{}.tar.gz", goarch());
        self.moto
            .put("rel", &format!("app/{tag}/{name}"), &tar_gz(&files));
    }
}

/// A running `deploy-agent server ...` in a temp cwd; stdout (where the workers print) and
/// stderr (the log) go to files, appended across restarts. Stopped on drop.
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// Everything after `server`.
    args: Vec<String>,
}

impl Server {
    fn start(store: &Store, extra: &[&str]) -> Server {
        Server::start_with(store, extra, |dir| {
            vec![
                "python3".into(),
                dir.join("current/server_app.py").display().to_string(),
            ]
        })
    }

    /// With the worker's command line made from the working directory.
    fn start_with(store: &Store, extra: &[&str], command: impl Fn(&Path) -> Vec<String>) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("e2e-dewy-server")
            .tempdir()
            .unwrap();
        // Not a port the caller picked for something else (`--admin-port`): two free_port()
        // calls may answer the same port.
        let port = loop {
            let p = free_port();
            if !extra.contains(&p.to_string().as_str()) {
                break p;
            }
        };
        let mut args: Vec<String> = vec!["--registry".into(), store.registry()];
        for a in ["-i", "1", "-p", &port.to_string(), "-l", "info"]
            .into_iter()
            .chain(extra.iter().copied())
        {
            args.push(a.to_string());
        }
        args.push("--".into());
        args.extend(command(dir.path()));
        let child = spawn(dir.path(), &args);
        Server {
            dir,
            child,
            port,
            args,
        }
    }

    /// Starts the agent again in the same directory (after it exited), as systemd does.
    fn restart(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "still running");
        self.child = spawn(self.dir.path(), &self.args);
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }

    /// What the workers printed.
    fn out(&self) -> String {
        fs::read_to_string(self.path().join("agent.out")).unwrap_or_default()
    }

    fn both(&self) -> String {
        format!(
            "--- agent log ---\n{}\n--- stdout ---\n{}",
            self.log(),
            self.out()
        )
    }

    fn current(&self) -> PathBuf {
        fs::read_link(self.path().join("current")).expect("current symlink")
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + LONG;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}\n{}",
                self.both()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn serving(&self, version: &str) {
        self.wait_for(&format!("{version} on port {}", self.port), || {
            get(self.port, "/").is_ok_and(|(code, body)| code == 200 && body == version)
        });
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        match e2e::wait_exit(&mut self.child, LONG) {
            Some(status) => status,
            None => panic!("the agent did not exit\n{}", self.both()),
        }
    }

    /// The worker's pid and generation, from its `/info`.
    fn worker(&self) -> (u32, u64) {
        let (code, info) = get(self.port, "/info").unwrap();
        assert_eq!(code, 200, "{info}");
        let parts: Vec<&str> = info.split(' ').collect();
        (parts[2].parse().unwrap(), parts[1].parse().unwrap())
    }
}

fn spawn(dir: &Path, args: &[String]) -> Child {
    let append = |name: &str| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
    };
    Command::new(bin("deploy-agent"))
        .arg("server")
        .args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("DEWY_CACHEDIR")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("KILL_OLD_DELAY")
        .env_remove("ENABLE_AUTO_RESTART")
        .stdin(Stdio::null())
        .stdout(append("agent.out"))
        .stderr(append("agent.log"))
        .spawn()
        .unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so the agent stops its worker; SIGKILL if it hangs (the worker then
        // dies of the agent's death, PR_SET_PDEATHSIG).
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Asserts that nothing listens on `port` any more, naming who does if something still
/// does after a few seconds. (CI once found a listener right after the last holder was gone,
/// and never since: the wait and the name are for the next time.)
#[track_caller]
fn assert_port_free(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused(port) {
        if Instant::now() > deadline {
            let who = Command::new("ss")
                .args(["-ltnpH", &format!("sport = :{port}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("{what}: port {port} still accepts connections; listening: {who:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the process is gone (or a zombie nobody reaped yet: it holds no socket).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn serves_the_first_release_and_updates_without_dropping_a_connection() {
    let store = Store::start();
    store.publish("v1.0.0", "1.0.0", false);
    let admin = free_port();
    let mut server = Server::start(&store, &["--telemetry", "--admin-port", &admin.to_string()]);
    server.serving("1.0.0");
    let first = server.current();

    let hammer = Hammer::start(server.port);
    server.wait_for("the client's first answer", || hammer.got("1.0.0"));
    store.publish("v1.1.0", "1.1.0", false);
    server.wait_for("the client served 1.1.0", || hammer.got("1.1.0"));
    let (ok, failures, seen) = hammer.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}\n{}",
        failures.len(),
        ok as usize + failures.len(),
        server.both()
    );
    assert_eq!(seen.first().map(String::as_str), Some("1.0.0"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("1.1.0"), "{seen:?}");
    assert_ne!(server.current(), first);
    assert_eq!(
        fs::read_to_string(server.path().join("current/VERSION")).unwrap(),
        "1.1.0"
    );

    // The metrics Dewy's e2e checks in server mode: two deploys, one restart by a deploy.
    server.wait_for("the second deploy's metrics", || {
        get(admin, "/metrics").is_ok_and(|(_, m)| {
            m.contains("dewy_deployments_total{command=\"server\"} 2")
                && m.contains("dewy_server_restarts_total{reason=\"deploy\"} 1")
        })
    });

    // Dewy's audit record of each deploy names the mode.
    for tag in ["v1.0.0", "v1.1.0"] {
        server.wait_for(&format!("the audit record of {tag}"), || {
            let listing = store.moto.list("rel", &format!("app/{tag}/shipped_to_"));
            listing.contains("_server_at_") && !listing.contains("_assets_at_")
        });
    }

    let log = server.log();
    assert_eq!(count(&log, "Create symlink"), 2, "{log}");
    assert_eq!(count(&log, "level=ERROR"), 0, "{log}");
    // The workers' own output is the agent's stdout (Dewy's e2e greps it there).
    let out = server.out();
    assert!(
        out.contains("starting version 1.0.0 generation 1\n")
            && out.contains("starting version 1.1.0 generation 2\n"),
        "{out}"
    );
    // The old worker was stopped gracefully (SIGTERM, it finished and said so).
    assert!(
        out.contains("stopped version 1.0.0 generation 1\n"),
        "{out}"
    );

    server.signal("-TERM");
    assert!(server.wait_exit().success(), "{}", server.both());
    assert_port_free(server.port, "the worker still holds the port");
}

#[test]
fn a_release_failing_its_health_check_is_rolled_back_and_not_retried() {
    let store = Store::start();
    store.publish("v1.1.0", "1.1.0", false);
    let server = Server::start(
        &store,
        // A budget a loaded CI machine cannot miss for a healthy start; the broken release
        // uses it all (attempts every 2 s).
        &[
            "--health-path",
            "/health",
            "--health-timeout",
            "15",
            "--before-deploy-hook",
            "echo before >> hooks.log",
            "--after-deploy-hook",
            "echo after $(cat current/VERSION) >> hooks.log",
        ],
    );
    server.serving("1.1.0");
    server.wait_for("the first health check", || {
        server.log().contains("Server started")
    });
    let good = server.current();

    store.publish("v1.2.0", "1.2.0", true);
    // The tick's own error line is the last one the rollback writes: the counts below
    // start after it.
    server.wait_for("the rollback", || {
        server.log().contains("failed its health check")
            && server.log().contains("; rolled back to v1.1.0")
    });
    server.serving("1.1.0");
    assert_eq!(server.current(), good, "{}", server.both());
    let log = server.log();
    let rollback = log
        .lines()
        .find(|l| l.contains("Rolled back"))
        .unwrap()
        .to_string();
    assert!(
        rollback.contains("v1.2.0") && rollback.contains("health check failed after"),
        "{rollback}"
    );
    // v1.1.0, v1.2.0, and v1.1.0 again.
    assert_eq!(count(&log, "Create symlink"), 3, "{log}");
    // Dewy's `current` cache key names the release that runs again (a Dewy sharing the
    // cache reads it).
    assert_eq!(
        fs::read_to_string(server.path().join(".dewy/cache/current")).unwrap(),
        format!("v1.1.0--app_linux_{}.tar.gz", goarch())
    );

    // Ticks go on (one a second) without trying v1.2.0 again: its worker started once.
    let (_, generation) = server.worker();
    let ticks_before = count(&server.log(), "v1.2.0");
    std::thread::sleep(Duration::from_secs(5));
    let log = server.log();
    let out = server.out();
    assert_eq!(count(&out, "starting version 1.2.0"), 1, "{out}");
    assert_eq!(count(&log, "Create symlink"), 3, "{log}");
    assert_eq!(count(&log, "v1.2.0"), ticks_before, "{log}");
    assert_eq!(server.worker().1, generation, "{}", server.both());
    assert_eq!(get(server.port, "/").unwrap().1, "1.1.0");
    // The hooks ran around each change of `current`, the rollback included: a hook that
    // (de)registers the host elsewhere sees the release it is back on.
    assert_eq!(
        fs::read_to_string(server.dir.path().join("hooks.log")).unwrap(),
        "before\nafter 1.1.0\nbefore\nafter 1.2.0\nbefore\nafter 1.1.0\n",
        "{}",
        server.both()
    );
}

#[test]
fn sighup_and_sigusr1_restart_the_worker_and_sigterm_stops_everything() {
    let store = Store::start();
    store.publish("v1.0.0", "1.0.0", false);
    let mut server = Server::start(&store, &[]);
    server.serving("1.0.0");
    let (first, generation) = server.worker();
    assert_eq!(generation, 1);

    server.signal("-HUP");
    server.wait_for("generation 2", || {
        server
            .out()
            .contains("starting version 1.0.0 generation 2\n")
    });
    server.wait_for("the old worker gone", || gone(first));
    server.wait_for("generation 2 serving", || server.worker().1 == 2);

    server.signal("-USR1");
    server.wait_for("generation 3", || {
        server
            .out()
            .contains("starting version 1.0.0 generation 3\n")
    });
    server.wait_for("generation 3 serving", || server.worker().1 == 3);
    let (last, _) = server.worker();
    assert_eq!(count(&server.log(), "Create symlink"), 1);

    server.signal("-TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.both());
    assert_port_free(server.port, "a worker still holds the port");
    server.wait_for("the last worker gone", || gone(last));
    assert!(
        server
            .out()
            .contains("stopped version 1.0.0 generation 3\n"),
        "{}",
        server.both()
    );

    // Started again on the same directory (a systemd restart, the release unchanged): the
    // worker runs the current release again, without a new deploy.
    let current = server.current();
    server.restart();
    server.serving("1.0.0");
    assert_eq!(server.current(), current);
    assert_eq!(
        count(&server.log(), "Create symlink"),
        1,
        "{}",
        server.both()
    );
    assert_eq!(
        fs::read_dir(server.path().join("releases"))
            .unwrap()
            .count(),
        1,
        "{}",
        server.both()
    );
}

#[test]
fn a_killed_agent_takes_its_worker_along() {
    let store = Store::start();
    store.publish("v1.0.0", "1.0.0", false);
    let mut server = Server::start(&store, &[]);
    server.serving("1.0.0");
    let (worker, _) = server.worker();
    server.signal("-KILL");
    server.wait_exit();
    server.wait_for("the orphan worker gone", || gone(worker));
    assert_port_free(server.port, "an orphan holds the port");
}

#[test]
fn a_worker_killed_behind_the_agents_back_is_respawned() {
    let store = Store::start();
    store.publish("v1.0.0", "1.0.0", false);
    let server = Server::start(&store, &[]);
    server.serving("1.0.0");
    let (worker, _) = server.worker();
    let st = Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    server.wait_for("generation 2 serving", || {
        get(server.port, "/info").is_ok_and(|(_, info)| info.starts_with("1.0.0 2 "))
    });
    let log = server.log();
    let exited = log
        .lines()
        .find(|l| l.contains("worker exited"))
        .unwrap_or_else(|| panic!("no 'worker exited' line:\n{log}"));
    assert!(
        exited.contains(&format!("pid={worker}"))
            && exited.contains("generation=1")
            && exited.contains("SIGKILL"),
        "{exited}"
    );
    // A respawn is not a deploy.
    assert_eq!(count(&log, "Create symlink"), 1, "{log}");
    assert!(gone(worker));
}

/// A release whose command is missing (the worker cannot even be spawned) is rolled back
/// like an unhealthy one: `current` goes back to the release whose worker runs.
#[test]
fn a_release_whose_command_is_missing_is_rolled_back() {
    let store = Store::start();
    let app = fs::read(workspace().join("tests/fixtures/server_app.py")).unwrap();
    let with_run = |version: &str, run: bool| {
        let mut b = TarBuilder::new()
            .file("server_app.py", &app)
            .file("VERSION", version.as_bytes());
        if run {
            b = b.file_mode(
                "run",
                b"#!/bin/sh\nexec python3 \"$(dirname \"$0\")/server_app.py\"\n",
                0o755,
            );
        }
        b.gz()
    };
    store.publish_archive("v1.0.0", &with_run("1.0.0", true));
    let server = Server::start_with(&store, &[], |dir| {
        vec![dir.join("current/run").display().to_string()]
    });
    server.serving("1.0.0");
    let good = server.current();
    store.publish_archive("v1.1.0", &with_run("1.1.0", false));
    server.wait_for("the rollback", || {
        server.log().contains("release v1.1.0 did not start")
            && server.log().contains("; rolled back to v1.0.0")
    });
    assert_eq!(server.current(), good, "{}", server.both());
    assert_eq!(get(server.port, "/").unwrap().1, "1.0.0");
}
