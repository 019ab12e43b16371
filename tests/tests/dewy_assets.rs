//! `deploy-agent assets` end to end, as a Dewy user runs it: the working directory holds
//! `releases/`, `current` and `.dewy/`, releases come from a real S3 peer (moto), hooks run
//! around each deploy, the admin API serves status and metrics with `--telemetry`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::http::get;
use e2e::peers::Moto;
use e2e::*;

/// A running `deploy-agent <word> ...` in its own working directory, logging to a file.
struct Dewy {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dewy {
    fn new() -> Dewy {
        Dewy {
            dir: tempfile::Builder::new()
                .prefix("e2e-assets")
                .tempdir()
                .unwrap(),
            child: None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = dewy_agent(self.path());
        c.args(args);
        c
    }

    fn start(&mut self, args: &[&str]) {
        let log = fs::File::create(self.path().join("agent.log")).unwrap();
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    fn current(&self) -> Option<PathBuf> {
        fs::read_link(self.path().join("current")).ok()
    }

    /// Waits (30 s at most) until `cond` holds, failing with the agent's log.
    fn wait_for(&mut self, what: &str, cond: impl Fn(&Dewy) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(&*self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; agent log:\n{}",
                self.log()
            );
            if let Some(c) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = self.log();
                assert!(
                    matches!(c, Ok(None)),
                    "the agent exited ({c:?}) waiting for {what}:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn serves(&self, file: &str, want: &str) -> bool {
        fs::read_to_string(self.path().join("current").join(file)).is_ok_and(|s| s == want)
    }

    /// SIGTERM and the exit status (10 s at most).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not exit on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dewy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn publish(moto: &Moto, version: &str, content: &str) {
    let name = format!("app_linux_{}.tar.gz", goarch());
    moto.put(
        "rel",
        &format!("app/{version}/{name}"),
        &tar_gz(&[("VERSION", content.as_bytes())]),
    );
}

/// moto with bucket `rel` holding one release under `app/`, and the registry URL for it.
fn store_with(version: &str, content: &str) -> (Moto, String) {
    let moto = Moto::start();
    moto.bucket("rel");
    publish(&moto, version, content);
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    (moto, registry)
}

#[test]
fn assets_follows_releases_with_hooks_around_each_deploy() {
    let (moto, registry) = store_with("v1.0.0", "one");
    let mut dewy = Dewy::new();
    // The after hook sees the new `current` (it runs after the switch).
    dewy.start(&[
        "assets",
        "--registry",
        &registry,
        "-i",
        "1",
        "-l",
        "info",
        "--before-deploy-hook",
        "echo before >> hooks.log",
        "--after-deploy-hook",
        "echo after $(cat current/VERSION) >> hooks.log",
    ]);
    dewy.wait_for("v1.0.0 in current", |d| d.serves("VERSION", "one"));
    publish(&moto, "v1.1.0", "two");
    dewy.wait_for("v1.1.0 in current", |d| d.serves("VERSION", "two"));
    dewy.wait_for("the second after hook", |d| {
        fs::read_to_string(d.path().join("hooks.log")).is_ok_and(|s| s.lines().count() == 4)
    });
    assert_eq!(
        fs::read_to_string(dewy.path().join("hooks.log")).unwrap(),
        "before\nafter one\nbefore\nafter two\n"
    );
    let cur = dewy.current().unwrap();
    assert!(cur.is_absolute(), "{cur:?}");
    assert_eq!(
        cur.parent().unwrap(),
        fs::canonicalize(dewy.path()).unwrap().join("releases")
    );
    // Two polls a second apart find nothing new: no third deploy.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dewy.count("Create symlink"), 2, "{}", dewy.log());
    assert_eq!(dewy.count("Download notification"), 2, "{}", dewy.log());
    // Dewy's layout (slog), which its e2e greps: no error, and every line leveled.
    assert_eq!(dewy.count("level=ERROR"), 0, "{}", dewy.log());
    assert!(
        dewy.log()
            .lines()
            .all(|l| l.starts_with("time=") && l.contains(" level=") && l.contains(" msg=")),
        "{}",
        dewy.log()
    );
    assert!(
        dewy.log().contains(" level=INFO msg=\"Create symlink\" "),
        "{}",
        dewy.log()
    );
    assert_eq!(
        fs::read_to_string(dewy.path().join(".dewy/cache/current")).unwrap(),
        format!("v1.1.0--app_linux_{}.tar.gz", goarch())
    );
    assert!(dewy.terminate().success());
}

#[test]
fn a_failing_before_hook_aborts_the_deploy_and_is_retried() {
    let (_moto, registry) = store_with("v1.0.0", "one");
    let mut dewy = Dewy::new();
    // Fails until the file `allow` exists.
    dewy.start(&[
        "assets",
        "--registry",
        &registry,
        "-i",
        "1",
        "-l",
        "info",
        "--before-deploy-hook",
        "test -e allow || { echo 'not yet' >&2; exit 3; }",
    ]);
    dewy.wait_for("the hook failure", |d| {
        d.log()
            .contains("before-deploy hook failed with exit code 3")
    });
    assert!(dewy.current().is_none(), "no deploy: {}", dewy.log());
    assert!(
        !dewy.path().join("releases").exists()
            || fs::read_dir(dewy.path().join("releases")).unwrap().count() == 0,
        "nothing extracted"
    );
    assert!(dewy.log().contains("not yet"), "{}", dewy.log());
    fs::write(dewy.path().join("allow"), "").unwrap();
    dewy.wait_for("the deploy after the hook passes", |d| {
        d.serves("VERSION", "one")
    });
    assert!(dewy.terminate().success());
}

#[test]
fn a_release_with_a_link_leading_outside_is_refused_and_links_inside_are_kept() {
    let moto = Moto::start();
    moto.bucket("rel");
    let name = format!("app_linux_{}.tar.gz", goarch());
    let release = |version: &str| {
        TarBuilder::new()
            .file("VERSION", version.as_bytes())
            .file("pkg/bin/tool", b"#!/bin/sh\n")
            .symlink("node_modules/.bin/tool", "../../pkg/bin/tool")
    };
    moto.put("rel", &format!("app/v1.0.0/{name}"), &release("one").gz());
    let registry = format!("s3://us-east-1/rel/app?endpoint={}", moto.url());
    let mut dewy = Dewy::new();
    dewy.start(&["assets", "--registry", &registry, "-i", "1", "-l", "info"]);
    dewy.wait_for("v1.0.0 in current", |d| d.serves("VERSION", "one"));
    assert!(dewy.serves("node_modules/.bin/tool", "#!/bin/sh\n"));
    let first = dewy.current().unwrap();

    // Dewy refuses every symlink in a release: the ones that lead out are refused here.
    let hostile = release("two").symlink("public/shadow", "/etc/shadow").gz();
    moto.put("rel", &format!("app/v1.1.0/{name}"), &hostile);
    dewy.wait_for("the refusal", |d| {
        d.log().contains(
            r#"entry \"public/shadow\" rejected: symlink to \"/etc/shadow\" leads outside the release"#,
        )
    });
    assert_eq!(dewy.current().unwrap(), first, "{}", dewy.log());
    assert!(dewy.serves("VERSION", "one"));
    assert!(dewy.terminate().success());
}

/// `--cache` with `registry-ttl`, as Dewy's e2e runs it: the first host asks the registry
/// and fills the shared bucket, the second deploys from what the first shared.
#[test]
fn two_hosts_share_the_registry_result_and_the_artifact_through_cache() {
    let (moto, registry) = store_with("v1.0.0", "one");
    moto.bucket("fleet");
    let cache = format!(
        "s3://us-east-1/fleet/shared?endpoint={}&registry-ttl=1h",
        moto.url()
    );
    let run = |dewy: &mut Dewy| {
        dewy.start(&[
            "assets",
            "--registry",
            &registry,
            "--cache",
            &cache,
            "-i",
            "1",
            "-l",
            "info",
        ]);
        dewy.wait_for("the deploy", |d| d.serves("VERSION", "one"));
        assert!(dewy.terminate().success());
        dewy.log()
    };
    let first = run(&mut Dewy::new());
    assert!(
        first.contains("Registry result refreshed from upstream"),
        "{first}"
    );
    assert!(
        first.contains("Artifact written to the shared cache"),
        "{first}"
    );
    let listing = moto.list("fleet", "shared/registry-cache/");
    assert!(listing.contains(".json</Key>"), "{listing}");

    let second = run(&mut Dewy::new());
    assert!(!second.contains("Registry result refreshed"), "{second}");
    assert!(
        second.contains("Artifact read from the shared cache"),
        "{second}"
    );
}

#[test]
fn telemetry_serves_status_and_metrics() {
    let (_moto, registry) = store_with("v2.0.0", "metrics");
    let admin = free_port();
    let mut dewy = Dewy::new();
    dewy.start(&[
        "assets",
        "--registry",
        &registry,
        "-i",
        "1",
        "--telemetry",
        "--admin-port",
        &admin.to_string(),
    ]);
    dewy.wait_for("the deploy", |d| d.serves("VERSION", "metrics"));
    dewy.wait_for("the deploy's metrics", |_| {
        get(admin, "/metrics")
            .unwrap()
            .1
            .contains("dewy_deployments_total{command=\"assets\"} 1")
    });
    let (status, metrics) = get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    for needle in [
        "dewy_current_version_info{command=\"assets\",version=\"v2.0.0\"} 1",
        "dewy_download_bytes_total ",
        "dewy_last_poll_success 1",
        "dewy_deployment_duration_seconds_count{command=\"assets\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    let (status, body) = get(admin, "/api/status").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["command"], 1, "{body}");
    assert_eq!(v["current_version"], "v2.0.0", "{body}");
    assert_eq!(v["name"], "app", "{body}");
    assert!(dewy.terminate().success());
}

/// `--poll-backoff-max` (Dewy #481) caps the wait between polls after errors: doubled from
/// the second failed poll on, never past the cap. (We back off by default, up to 15 min;
/// Dewy only with this flag.) Read from the waits the agent logs, not timed.
#[test]
fn poll_backoff_max_caps_the_wait_after_errors() {
    // Nothing listens there: every poll fails at once.
    let registry = format!(
        "s3://us-east-1/b/p?endpoint=http://127.0.0.1:{}",
        free_port()
    );
    let mut dewy = Dewy::new();
    dewy.start(&[
        "assets",
        "--registry",
        &registry,
        "-i",
        "1",
        "-l",
        "debug",
        "--poll-backoff-max",
        "3",
    ]);
    dewy.wait_for("five failed polls", |d| d.count("next poll in ") >= 5);
    let log = dewy.log();
    let waits: Vec<f64> = log
        .split("next poll in ")
        .skip(1)
        .map(|rest| {
            let text: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            match text.strip_suffix("ms") {
                Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
                None => text.strip_suffix('s').unwrap().parse::<f64>().unwrap(),
            }
        })
        .collect();
    // ±10 % jitter: 1, 2, then 3 (the cap; 4 and 8 without it).
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.1 + 0.001;
    assert!(
        near(waits[0], 1.0) && near(waits[1], 2.0),
        "{waits:?}\n{log}"
    );
    assert!(
        waits[2..5].iter().all(|w| near(*w, 3.0)),
        "{waits:?}\n{log}"
    );
    assert!(dewy.terminate().success());
}

#[test]
fn command_line_errors_exit_1_with_a_clear_text() {
    let dewy = Dewy::new();
    let out = run_with_timeout(&mut dewy.command(&["assets"]), None, 20);
    out.assert_code(1)
        .assert_stderr_contains("Error: --registry is not set");
    let out = run_with_timeout(
        &mut dewy.command(&["assets", "--registry", "ftp://x/y"]),
        None,
        20,
    );
    out.assert_code(1);
    let out = run_with_timeout(
        &mut dewy.command(&["server", "--registry", "s3://us-east-1/b/p", "-p", "8000"]),
        None,
        20,
    );
    out.assert_code(1)
        .assert_stderr_contains("server mode needs the command to run after --");
    let out = run_with_timeout(
        &mut dewy.command(&[
            "assets",
            "--registry",
            "s3://us-east-1/b/p",
            "--notifier",
            "pigeon://coop",
        ]),
        None,
        20,
    );
    out.assert_code(1).assert_stderr_contains("pigeon");
}

/// The notifier through the binary: Dewy's texts, as mail to a real SMTP server (aiosmtpd with
/// AUTH), for the start, the download, a failing hook and the stop.
#[test]
fn mail_notifications_tell_the_story_of_a_run() {
    let smtpd = e2e::smtp::Smtpd::start("dewy", "s3cret");
    let (_moto, registry) = store_with("v1.0.0", "one");
    let notifier = format!(
        "mail://127.0.0.1:{}/ops@example.test?username=dewy&from=dewy@example.test&subject=deploys",
        smtpd.port
    );
    let mut dewy = Dewy::new();
    let log = fs::File::create(dewy.path().join("agent.log")).unwrap();
    let child = dewy
        .command(&[
            "assets",
            "--registry",
            &registry,
            "-i",
            "1",
            "--notifier",
            &notifier,
            "--after-deploy-hook",
            "echo 'hook says hi'; exit 4",
        ])
        .env("MAIL_PASSWORD", "s3cret")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    dewy.child = Some(child);
    dewy.wait_for("the deploy", |d| d.serves("VERSION", "one"));
    let bodies = || -> Vec<String> {
        smtpd
            .messages()
            .iter()
            .map(|m| m["body"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bodies().iter().any(|b| b.contains("After Deploy Hook")) {
        assert!(
            Instant::now() < deadline,
            "no hook mail: {:?}\n{}",
            bodies(),
            dewy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGUSR1 is announced in every mode (Dewy), also where there is no server to restart.
    let pid = dewy.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bodies().iter().any(|b| b.contains("SIGUSR1")) {
        assert!(Instant::now() < deadline, "no USR1 mail: {:?}", bodies());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dewy.terminate().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bodies().iter().any(|b| b.contains("Stop receiving")) {
        assert!(Instant::now() < deadline, "no stop mail: {:?}", bodies());
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = smtpd.messages();
    let first = |needle: &str| {
        all.iter()
            .find(|m| m["body"].as_str().unwrap_or_default().starts_with(needle))
            .unwrap_or_else(|| panic!("no mail starting {needle:?} in {all:#?}"))
    };
    let started = first("Automatic shipping started by *Dewy* (v");
    assert!(
        started["body"].as_str().unwrap().contains(": assets)"),
        "{started}"
    );
    assert_eq!(started["Subject"], "deploys");
    assert_eq!(started["From"], "dewy@example.test");
    assert_eq!(started["To"], "ops@example.test");
    first("Downloaded artifact for `v1.0.0`");
    first("Restarted receiving by `SIGUSR1` signal");
    first("Stop receiving by `terminated` signal");
    let hook = all
        .iter()
        .find(|m| {
            m["Subject"]
                .as_str()
                .is_some_and(|s| s.contains("After Deploy Hook FAILED"))
        })
        .unwrap_or_else(|| panic!("no hook mail in {all:#?}"));
    let body = hook["body"].as_str().unwrap();
    assert!(
        body.contains("hook says hi") && body.contains("4"),
        "{body}"
    );
    // The password went over SMTP AUTH, never into the log.
    assert!(!dewy.log().contains("s3cret"), "{}", dewy.log());
}

#[test]
fn a_second_agent_in_the_same_directory_is_refused() {
    let (_moto, registry) = store_with("v1.0.0", "one");
    let mut dewy = Dewy::new();
    dewy.start(&["assets", "--registry", &registry, "-i", "1", "-l", "info"]);
    dewy.wait_for("the deploy", |d| d.serves("VERSION", "one"));
    let out = run_with_timeout(
        &mut dewy.command(&["assets", "--registry", &registry, "-i", "1"]),
        None,
        30,
    );
    out.assert_code(1)
        .assert_stderr_contains("another deploy-agent runs in");
    assert!(dewy.serves("VERSION", "one"));
    assert!(dewy.terminate().success());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (_moto, registry) = store_with("v1.0.0", "one");
    let mut dewy = Dewy::new();
    dewy.start(&[
        "assets",
        "--registry",
        &registry,
        "-i",
        "1",
        "-l",
        "info",
        "-f",
        "json",
    ]);
    dewy.wait_for("the deploy", |d| d.serves("VERSION", "one"));
    assert!(dewy.terminate().success());
    let log = dewy.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let symlink = lines
        .iter()
        .find(|v| v["msg"] == "Create symlink")
        .unwrap_or_else(|| panic!("no Create symlink in {log}"));
    assert_eq!(symlink["level"], "INFO", "{symlink}");
    assert!(
        symlink["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{symlink}"
    );
    assert!(
        symlink["to"]
            .as_str()
            .is_some_and(|t| t.contains("/releases/")),
        "{symlink}"
    );
}
