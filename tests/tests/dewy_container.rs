//! `deploy-agent container` (Dewy's container mode, spec dewy.md 9) against real peers: podman
//! (runc, isolated storage and network), images built by umoci from busybox-static and pushed
//! by skopeo to Debian's docker-registry. The app is busybox httpd serving `/VERSION` and, when
//! healthy, `/health`; traffic goes through the agent's TCP proxy.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::peers::{OciRegistry, Podman};
use e2e::*;

/// The podman tests run one at a time: they share the host's CNI iptables chains, which a
/// finishing test removes when it sees them empty.
static PODMAN: Mutex<()> = Mutex::new(());

/// What each podman test starts with. Bound in this order, dropped in the reverse: the
/// agent's directory and the work dir first, the lock last.
struct Peers {
    /// Held for the whole test (see [`PODMAN`]).
    _serial: std::sync::MutexGuard<'static, ()>,
    /// A docker-registry, with a login when asked.
    reg: OciRegistry,
    /// podman, with that registry as an insecure one.
    podman: Podman,
    work: tempfile::TempDir,
    /// `agent/` in the work dir: the agent's working directory.
    dir: PathBuf,
}

impl Peers {
    fn start(auth: Option<(&str, &str)>) -> Peers {
        let serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
        let reg = OciRegistry::start_with_auth(auth);
        let podman = Podman::start(&[&reg.host()]);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("agent");
        fs::create_dir(&dir).unwrap();
        Peers {
            _serial: serial,
            reg,
            podman,
            work,
            dir,
        }
    }
}

/// `deploy-agent container`'s arguments for `image` (`host/repo`) behind proxy port `proxy`
/// (container port 8080): podman, a poll every second, the admin API on a free port, debug
/// logs; then `extra` (which may end with `--` and run arguments).
fn agent_args(image: &str, proxy: u16, extra: &[&str]) -> Vec<String> {
    let common = [
        "--registry".to_string(),
        format!("img://{image}"),
        "-p".to_string(),
        format!("{proxy}:8080"),
        "--runtime".to_string(),
        "podman".to_string(),
        "--interval".to_string(),
        "1".to_string(),
        "--admin-port".to_string(),
        free_port().to_string(),
        "-l".to_string(),
        "debug".to_string(),
    ];
    common
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect()
}

/// Generous limits for things that take seconds: they fail a hung test, they time nothing.
const LONG: Duration = Duration::from_secs(180);

/// An image of busybox-static whose entrypoint serves `/www` with httpd on 8080 (a shell as
/// PID 1 that exits on SIGTERM, so `stop` does not wait for its kill timeout). `/www/VERSION`
/// holds `version`; `/www/health` exists only when `healthy`. Pushed as `repo:version`.
fn push_app(
    work: &Path,
    reg: &OciRegistry,
    repo: &str,
    version: &str,
    healthy: bool,
    creds: Option<&str>,
) {
    push_app_created(work, reg, repo, version, healthy, creds, None);
}

/// [`push_app`] with the image's creation time set (what `images` orders by).
fn push_app_created(
    work: &Path,
    reg: &OciRegistry,
    repo: &str,
    version: &str,
    healthy: bool,
    creds: Option<&str>,
    created: Option<&str>,
) {
    let layout = work.join(format!("oci-{version}"));
    let bundle = work.join(format!("bundle-{version}"));
    let image = format!("{}:{version}", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("www/VERSION"), version).unwrap();
    if healthy {
        fs::write(rootfs.join("www/health"), "ok").unwrap();
    }
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        goarch(),
        "--config.exposedports",
        "8080/tcp",
        "--config.entrypoint",
        "/bin/sh",
        "--config.entrypoint",
        "-c",
        "--config.entrypoint",
        "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait",
    ]));
    if let Some(t) = created {
        run_ok(Command::new("umoci").args(["config", "--image", &image, "--created", t]));
    }
    let mut copy = Command::new("skopeo");
    copy.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        copy.args(["--dest-creds", c]);
    }
    run_ok(
        copy.arg(format!("oci:{image}"))
            .arg(format!("docker://{}/{repo}:{version}", reg.host())),
    );
}

/// One `GET path` through `port`: the body, or None (refused, closed, not 200).
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// The port the admin API says it bound (the one asked for, or one of the 9 after it).
fn admin_port(log: &str) -> u16 {
    let at = log
        .find("Admin API started\" port=")
        .expect("admin API started")
        + 24;
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + LONG;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}\n--- agent log ---\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running `deploy-agent container ...`, killed on drop; stderr in `log`.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, podman: &Podman, args: &[String], name: &str) -> Agent {
        Agent::start_env(dir, podman, args, name, &[])
    }

    fn start_env(
        dir: &Path,
        podman: &Podman,
        args: &[String],
        name: &str,
        env: &[(&str, &str)],
    ) -> Agent {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin("deploy-agent"))
            .arg("container")
            .args(args)
            .current_dir(dir)
            .envs(podman.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Deploys that succeeded so far, as the log says.
    fn deploys(&self) -> usize {
        self.log()
            .matches("Container deployed successfully")
            .count()
    }

    /// Waits (bounded) for the agent to exit.
    fn wait(&mut self) -> std::process::ExitStatus {
        match e2e::wait_exit(&mut self.child, LONG) {
            Some(status) => status,
            None => panic!("agent did not exit\n{}", self.log()),
        }
    }

    fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args([sig, &self.child.id().to_string()]));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One managed container as the test sees it through podman itself.
#[derive(Debug)]
struct Seen {
    name: String,
    state: String,
    version: String,
    replica: String,
    labels: serde_json::Value,
}

fn managed(podman: &Podman, app: &str) -> Vec<Seen> {
    let out = podman.ok(&[
        "ps",
        "-a",
        "--filter",
        "label=dewy.managed=true",
        "--filter",
        &format!("label=dewy.app={app}"),
        "--format",
        "json",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
    let mut seen: Vec<Seen> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Seen {
            name: c["Names"][0].as_str().unwrap_or_default().to_string(),
            state: c["State"].as_str().unwrap_or_default().to_string(),
            version: c["Labels"]["dewy.version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            replica: c["Labels"]["dewy.replica"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            labels: c["Labels"].clone(),
        })
        .collect();
    seen.sort_by(|a, b| a.replica.cmp(&b.replica));
    seen
}

/// Both replicas of `version` running, nothing else of the app left (running or not).
fn only_version(podman: &Podman, app: &str, version: &str) -> bool {
    let seen = managed(podman, app);
    seen.len() == 2
        && seen
            .iter()
            .all(|c| c.version == version && c.state == "running")
}

/// What the proxy serves on a few connections (round-robin covers both replicas).
fn served(port: u16) -> Vec<Option<String>> {
    (0..4).map(|_| get(port, "/VERSION")).collect()
}

#[test]
fn rolling_update_rollback_adoption_and_shutdown() {
    let Peers {
        _serial,
        reg,
        podman,
        work,
        dir,
    } = Peers::start(None);
    let proxy = free_port();
    // A second proxy port whose container port is found in the image (EXPOSE 8080/tcp).
    let proxy2 = free_port();
    let app = "web";
    let args = agent_args(
        &format!("{}/demo/{app}", reg.host()),
        proxy,
        &[
            "-p",
            &proxy2.to_string(),
            "--replicas",
            "2",
            "--health-path",
            "/health",
            "--health-timeout",
            "4",
            "--drain-time",
            "60",
            "--telemetry",
            "--before-deploy-hook",
            "test ! -e block",
            "--after-deploy-hook",
            "echo after >> after.log",
            "--",
            "-e",
            "GREETING=hi",
        ],
    );

    // v1: two replicas behind the proxy.
    push_app(
        work.path(),
        &reg,
        &format!("demo/{app}"),
        "v1.0.0",
        true,
        None,
    );
    let mut agent = Agent::start(&dir, &podman, &args, "first");
    let log = || agent.log();
    wait_for(
        "v1 through the proxy",
        || served(proxy).iter().all(|s| s.as_deref() == Some("v1.0.0")),
        &log,
    );
    wait_for("the v1 deploy", || agent.deploys() > 0, &log);
    assert!(
        only_version(&podman, app, "v1.0.0"),
        "{:?}",
        managed(&podman, app)
    );
    let v1 = managed(&podman, app);
    for (i, c) in v1.iter().enumerate() {
        // Dewy's names and labels: <app>-<unix seconds>-<replica>.
        let parts: Vec<&str> = c.name.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{c:?}");
        assert_eq!(parts[0], i.to_string(), "{c:?}");
        assert!(parts[1].parse::<u64>().is_ok(), "{c:?}");
        assert_eq!(parts[2], app, "{c:?}");
        assert_eq!(c.labels["dewy.managed"], "true");
        assert_eq!(c.labels["dewy.app"], app);
        assert_eq!(c.replica, i.to_string());
        assert!(
            c.labels["dewy.deployed_at"]
                .as_str()
                .is_some_and(|t| t.len() >= 20 && t.contains('T')),
            "{c:?}"
        );
    }
    // The admin API lists the replicas; the metrics show them and the deploy.
    let admin = admin_port(&agent.log());
    let replicas = format!("dewy_container_replicas{{app=\"{app}\"}} 2");
    wait_for(
        "the container metrics",
        || get(admin, "/metrics").is_some_and(|m| m.contains(&replicas)),
        &log,
    );
    let metrics = get(admin, "/metrics").unwrap();
    for want in [
        format!("dewy_container_desired_replicas{{app=\"{app}\"}} 2"),
        format!(
            "dewy_container_info{{app=\"{app}\",container=\"{}\"",
            v1[0].name
        ),
        "state=\"running\"} 1".to_string(),
        "dewy_deployments_total{command=\"container\"} 1".to_string(),
        format!("dewy_proxy_connections_total{{proxy_port=\"{proxy}\"}}"),
        format!("dewy_proxy_backends{{proxy_port=\"{proxy}\"}} 2"),
        "dewy_healthchecks_total".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want} missing in\n{metrics}");
    }
    let list: serde_json::Value =
        serde_json::from_str(&get(admin, "/api/containers").unwrap()).unwrap();
    let mut names: Vec<&str> = list["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(
                c["ip_port"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{c}"
            );
            assert_eq!(c["labels"]["dewy.version"], "v1.0.0", "{c}");
            assert_eq!(c["status"], "running", "{c}");
            c["name"].as_str().unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, [v1[0].name.as_str(), v1[1].name.as_str()]);
    // The extra run arguments reached the container.
    let env = podman.ok(&["exec", &v1[0].name, "/bin/sh", "-c", "echo $GREETING"]);
    assert_eq!(env.trim(), "hi");
    let text = agent.log();
    assert!(text.contains("TCP proxy started"), "{text}");
    assert!(text.contains(&format!("proxy_port={proxy}")), "{text}");
    assert!(
        text.contains("All TCP proxies started successfully"),
        "{text}"
    );
    assert!(text.contains("count=2"), "{text}");
    assert!(text.contains(&format!("proxy_port={proxy2}")), "{text}");
    assert!(
        served(proxy2)
            .iter()
            .all(|s| s.as_deref() == Some("v1.0.0"))
    );
    // Not root unless asked: the agent's own uid:gid (root here, so 0:0).
    let user = podman.ok(&["inspect", "--format", "{{.Config.User}}", &v1[0].name]);
    // A directory we created is owned by our uid and gid.
    let me = fs::metadata(&dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(user.trim(), format!("{}:{}", me.uid(), me.gid()));
    assert_eq!(text.matches("Starting new container").count(), 2, "{text}");
    assert!(
        text.matches("Backend added to TCP proxy").count() >= 2,
        "{text}"
    );

    // v2: rolling update; the old replicas go, drained first (--drain-time, Dewy #478): a
    // connection through the proxy opened before (so to a v1 replica) and used only once
    // every new connection gets v2 is served by v1, not cut. (The update must take less than
    // the 60 s of --drain-time and of busybox httpd's wait for a request; it takes ~10 s.)
    let mut held = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    push_app(
        work.path(),
        &reg,
        &format!("demo/{app}"),
        "v2.0.0",
        true,
        None,
    );
    wait_for(
        "v2 on every new connection",
        || served(proxy).iter().all(|s| s.as_deref() == Some("v2.0.0")),
        &log,
    );
    assert!(
        !agent.log().contains("Stopping old container"),
        "v1 stopped while a connection to it was open:\n{}",
        agent.log()
    );
    write!(
        held,
        "GET /VERSION HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    held.read_to_string(&mut resp).unwrap();
    assert!(resp.ends_with("\r\n\r\nv1.0.0"), "{resp:?}");
    drop(held);
    wait_for("the v2 deploy", || agent.deploys() == 2, &log);
    assert!(
        only_version(&podman, app, "v2.0.0"),
        "{:?}",
        managed(&podman, app)
    );
    assert!(served(proxy).iter().all(|s| s.as_deref() == Some("v2.0.0")));
    assert!(
        served(proxy2)
            .iter()
            .all(|s| s.as_deref() == Some("v2.0.0"))
    );
    assert_eq!(agent.log().matches("Starting new container").count(), 4);
    assert_eq!(
        fs::read_to_string(dir.join("after.log")).unwrap(),
        "after\nafter\n"
    );

    // The agent dies without cleaning up; a new one adopts the running replicas instead of
    // starting an empty proxy (Dewy's quirk) or deploying again.
    agent.signal("-KILL");
    agent.wait();
    drop(agent);
    let mut agent = Agent::start(&dir, &podman, &args, "second");
    let log = || agent.log();
    wait_for(
        "the adopted replicas skipping the deploy",
        || agent.log().contains("Deploy skipped"),
        &log,
    );
    let text = agent.log();
    assert_eq!(
        text.matches("Adopting running container").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("Starting new container"), "{text}");
    assert!(served(proxy).iter().all(|s| s.as_deref() == Some("v2.0.0")));
    assert!(
        served(proxy2)
            .iter()
            .all(|s| s.as_deref() == Some("v2.0.0"))
    );

    // One replica goes away behind the agent's back: the image is deployed again (Dewy waits
    // for a new version), and the gone replica's backend leaves the proxy.
    let adopted = managed(&podman, app);
    podman.ok(&["rm", "-f", "-t", "0", &adopted[0].name]);
    wait_for("the redeploy of v2", || agent.deploys() > 0, &log);
    assert!(
        agent.log().contains("deploying it again"),
        "{}",
        agent.log()
    );
    let healed = managed(&podman, app);
    assert!(only_version(&podman, app, "v2.0.0"), "{healed:?}");
    assert!(
        healed
            .iter()
            .all(|c| adopted.iter().all(|a| a.name != c.name)),
        "{healed:?} {adopted:?}"
    );
    assert!(served(proxy).iter().all(|s| s.as_deref() == Some("v2.0.0")));
    assert!(
        served(proxy2)
            .iter()
            .all(|s| s.as_deref() == Some("v2.0.0"))
    );

    // A failing before-deploy hook aborts the deploy (Dewy #495): nothing is started.
    fs::write(dir.join("block"), "").unwrap();
    push_app(
        work.path(),
        &reg,
        &format!("demo/{app}"),
        "v3.0.0",
        false,
        None,
    );
    wait_for(
        "the before-deploy hook to refuse v3",
        || agent.log().contains("before-deploy hook failed"),
        &log,
    );
    assert_eq!(agent.log().matches("Starting new container").count(), 2);
    assert!(only_version(&podman, app, "v2.0.0"));
    fs::remove_file(dir.join("block")).unwrap();

    // v3 fails its health check: its replica is rolled back, v2 keeps serving.
    wait_for(
        "the v3 rollback",
        || agent.log().contains("deploy rolled back"),
        &log,
    );
    wait_for(
        "no v3 container",
        || only_version(&podman, app, "v2.0.0"),
        &log,
    );
    let text = agent.log();
    assert!(
        text.contains("health check failed after") && text.contains("attempts within 4s"),
        "{text}"
    );
    assert!(served(proxy).iter().all(|s| s.as_deref() == Some("v2.0.0")));
    let metrics = get(admin_port(&agent.log()), "/metrics").unwrap();
    assert!(
        metrics.contains("dewy_healthchecks_failures_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dewy_deployment_errors_total{command=\"container\"}"),
        "{metrics}"
    );

    // SIGTERM: the app's containers are stopped and removed, the proxy closes, exit 0.
    agent.signal("-TERM");
    let status = agent.wait();
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(managed(&podman, app).is_empty(), "{}", agent.log());
    assert!(TcpStream::connect(("127.0.0.1", proxy)).is_err());
}

/// The waits before the next poll that the agent logged after failed ticks, in seconds.
fn poll_waits(log: &str) -> Vec<f64> {
    log.split("next poll in ")
        .skip(1)
        .filter_map(|rest| {
            // The message is quoted (slog): `msg="next poll in 1.8s"`.
            let d = rest.split_whitespace().next()?.trim_end_matches('"');
            match d.strip_suffix("ms") {
                Some(ms) => ms.parse::<f64>().ok().map(|v| v / 1000.0),
                None => d.strip_suffix('s')?.parse().ok(),
            }
        })
        .collect()
}

/// When healing the current image fails its health check, the tag is not given up like a bad
/// new release: the next ticks (backing off) try again, and the app gets its replicas back.
#[test]
fn a_failed_heal_is_tried_again_with_backoff() {
    let Peers {
        _serial,
        reg,
        podman,
        work,
        dir,
    } = Peers::start(None);
    // The health path is served from the host: replicas started while it is missing fail
    // their check; those already running keep serving.
    let live = work.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("ok"), "ok").unwrap();
    let app = "heal";
    push_app(
        work.path(),
        &reg,
        &format!("demo/{app}"),
        "v1.0.0",
        true,
        None,
    );
    let proxy = free_port();
    let args = agent_args(
        &format!("{}/demo/{app}", reg.host()),
        proxy,
        &[
            "--replicas",
            "2",
            "--health-path",
            "/live/ok",
            "--health-timeout",
            "3",
            "--",
            "-v",
            &format!("{}:/www/live:ro", live.display()),
        ],
    );
    let mut agent = Agent::start(&dir, &podman, &args, "heal");
    let log = || agent.log();
    wait_for("the v1 deploy", || agent.deploys() > 0, &log);
    assert!(only_version(&podman, app, "v1.0.0"), "{}", agent.log());

    fs::remove_file(live.join("ok")).unwrap();
    let gone = managed(&podman, app).remove(0);
    podman.ok(&["rm", "-f", "-t", "0", &gone.name]);
    wait_for(
        "a failed heal, and the wait after it growing",
        || {
            let text = agent.log();
            text.contains("deploy rolled back") && poll_waits(&text).iter().any(|&w| w > 1.5)
        },
        &log,
    );
    let seen = managed(&podman, app);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].state, "running", "{seen:?}");
    assert_eq!(get(proxy, "/VERSION").as_deref(), Some("v1.0.0"));

    fs::write(live.join("ok"), "ok").unwrap();
    wait_for("the heal tried again", || agent.deploys() == 2, &log);
    assert!(
        only_version(&podman, app, "v1.0.0"),
        "{:?}\n{}",
        managed(&podman, app),
        agent.log()
    );
    assert!(
        !agent
            .log()
            .contains("this image failed its health check and was rolled back"),
        "{}",
        agent.log()
    );
    assert!(served(proxy).iter().all(|s| s.as_deref() == Some("v1.0.0")));
    agent.signal("-TERM");
    assert!(agent.wait().success(), "{}", agent.log());
}

#[test]
fn a_private_registry_is_logged_in_with_the_password_on_stdin() {
    let (user, password) = ("deployer", "pw-Zq8s7Xk2");
    let Peers {
        _serial,
        reg,
        podman,
        work,
        dir,
    } = Peers::start(Some((user, password)));
    let creds = format!("{user}:{password}");
    push_app(
        work.path(),
        &reg,
        "private/api",
        "v1.0.0",
        true,
        Some(&creds),
    );
    let proxy = free_port();
    let args = agent_args(&format!("{}/private/api", reg.host()), proxy, &[]);
    let env = [("DOCKER_USERNAME", user), ("DOCKER_PASSWORD", password)];
    let mut agent = Agent::start_env(&dir, &podman, &args, "private", &env);
    let log = || agent.log();
    wait_for(
        "v1 from the private registry",
        || get(proxy, "/VERSION").as_deref() == Some("v1.0.0"),
        &log,
    );
    let text = agent.log();
    assert!(text.contains("Logged in to the registry"), "{text}");
    assert!(!text.contains(password), "{text}");
    // podman kept the login (in this instance's auth file, not the host's).
    let auth = fs::read_to_string(podman.auth_file()).unwrap();
    assert!(auth.contains(&reg.host()), "{auth}");
    agent.signal("-TERM");
    let status = agent.wait();
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(managed(&podman, "api").is_empty());
}

#[test]
fn image_gc_keeps_the_seven_newest_images() {
    let Peers {
        _serial,
        reg,
        podman,
        work,
        dir,
    } = Peers::start(None);
    let repo = format!("{}/demo/gc", reg.host());
    // Eight versions, each created a day after the other; the first seven are already here.
    for day in 1..=8 {
        let v = format!("v1.0.{day}");
        let created = format!("2026-01-{day:02}T00:00:00Z");
        push_app_created(work.path(), &reg, "demo/gc", &v, true, None, Some(&created));
        if day < 8 {
            podman.ok(&["pull", "-q", &format!("{repo}:{v}")]);
        }
    }
    let tags = |podman: &Podman| -> Vec<String> {
        let mut t: Vec<String> = podman
            .ok(&["images", "--format", "{{.Tag}}", &repo])
            .lines()
            .map(str::to_string)
            .collect();
        t.sort();
        t
    };
    assert_eq!(tags(&podman).len(), 7);
    // An exited replica of the app left from an earlier run, on the oldest image: reaped by
    // the deploy (Dewy #458-460), which also frees that image for the GC.
    podman.ok(&[
        "run",
        "--name",
        "gc-1-0",
        "--label",
        "dewy.managed=true",
        "--label",
        "dewy.app=gc",
        "--entrypoint",
        "/bin/sh",
        &format!("{repo}:v1.0.1"),
        "-c",
        "exit 0",
    ]);
    let exited = || podman.ok(&["ps", "-aq", "--filter", "name=^gc-1-0$"]);
    assert!(!exited().trim().is_empty(), "the exited replica is there");
    let proxy = free_port();
    let args = agent_args(&repo, proxy, &[]);
    let mut agent = Agent::start(&dir, &podman, &args, "gc");
    let log = || agent.log();
    wait_for("the deploy of v1.0.8", || agent.deploys() > 0, &log);
    wait_for(
        "the oldest image removed",
        || agent.log().contains("Removed old image"),
        &log,
    );
    assert!(
        agent.log().contains("Removed exited container"),
        "{}",
        agent.log()
    );
    assert_eq!(exited().trim(), "", "the exited replica is gone");
    let want: Vec<String> = (2..=8).map(|d| format!("v1.0.{d}")).collect();
    assert_eq!(tags(&podman), want, "{}", agent.log());
    assert_eq!(get(proxy, "/VERSION").as_deref(), Some("v1.0.8"));
    agent.signal("-TERM");
    assert!(agent.wait().success(), "{}", agent.log());
}

#[test]
fn forbidden_extra_args_are_refused_with_exit_1() {
    // No runtime or registry is reached: the arguments are checked first.
    let dir = tempfile::tempdir().unwrap();
    for (bad, said) in [
        ("--privileged", "--privileged"),
        ("-it", "-it"),
        ("--label=dewy.app=x", "dewy."),
    ] {
        let out = run(
            Command::new(bin("deploy-agent"))
                .args([
                    "container",
                    "--registry",
                    "img://127.0.0.1:1/demo/web",
                    "-p",
                    &format!("{}:8080", free_port()),
                    "--runtime",
                    "podman",
                    "--",
                    bad,
                ])
                .current_dir(dir.path()),
            None,
        );
        out.assert_code(1);
        out.assert_stderr_contains("Error:");
        out.assert_stderr_contains(said);
    }
}
