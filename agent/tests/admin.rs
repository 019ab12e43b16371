//! The Dewy command line through the real `deploy-agent` binary: `container list` against a
//! running admin API (found past a taken port), and the exits of `--version`, `--help` and
//! refused command lines.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use agent::admin::{AdminState, ContainerInfo, ListContainers, Status, serve};
use common::dewy::report::Command;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn deploy_agent(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("deploy-agent runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `n` consecutive free ports on 127.0.0.1, held by listeners nobody accepts on.
async fn consecutive(n: u16) -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base > u16::MAX - n {
            continue;
        }
        let mut held = Vec::new();
        for p in base..base + n {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await {
                Ok(l) => held.push(l),
                Err(_) => break,
            }
        }
        if held.len() == usize::from(n) {
            return (base, held);
        }
    }
    panic!("no {n} consecutive free ports");
}

/// Cancels the admin API when the test ends, passed or not.
struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn container(name: &str, ip_port: &str, deployed_at: &str) -> ContainerInfo {
    ContainerInfo {
        id: format!("id-{name}"),
        name: name.into(),
        image: "localhost:5000/app:v1.0.0".into(),
        status: "running".into(),
        ip_port: ip_port.into(),
        started_at: deployed_at.into(),
        deployed_at: deployed_at.into(),
        labels: BTreeMap::new(),
    }
}

#[tokio::test]
async fn container_list_through_the_binary_finds_the_api_past_a_taken_port() {
    let (base, mut held) = consecutive(10).await;
    let taken = held.remove(0);
    drop(held);
    let list = vec![
        container(
            "app-1700000000-1",
            "127.0.0.1:40002",
            "2026-11-22T08:00:01+01:00",
        ),
        container(
            "app-1700000000-0",
            "127.0.0.1:40001",
            "2026-11-22T08:00:00+01:00",
        ),
    ];
    let lister: ListContainers = Arc::new(move || {
        let list = list.clone();
        Box::pin(async move { list })
    });
    let state = Arc::new(AdminState {
        name: "app".into(),
        command: Command::Container,
        status: Mutex::new(Status::default()),
        containers: Some(lister),
        metrics: None,
    });
    let cancel = CancellationToken::new();
    let _stop = Stop(cancel.clone());
    let port = serve(base, state, cancel).await.unwrap();
    assert_eq!(port, base + 1);

    let run = deploy_agent(&["container", "list", "--admin-port", &base.to_string()]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "UPSTREAM           DEPLOY TIME            NAME\n\
             127.0.0.1:40001    2026-11-22 08:00:00    app-1700000000-0\n\
             127.0.0.1:40002    2026-11-22 08:00:01    app-1700000000-1\n\
             \n(Connected to admin API on port {})\n",
            base + 1
        )
    );
    drop(taken);
}

#[tokio::test]
async fn container_list_through_the_binary_without_an_api_exits_1() {
    // Hold the ten ports with listeners that hang up at once, so nothing else answers there.
    let (base, held) = consecutive(10).await;
    let tasks: Vec<_> = held
        .into_iter()
        .map(|l| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }))
        })
        .collect();
    let run = deploy_agent(&["container", "list", "--admin-port", &base.to_string()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "Error: no running deploy-agent admin API found (tried ports {base}-{})",
            base + 9
        )),
        "{}",
        run.stderr
    );
    drop(tasks);
}

#[tokio::test]
async fn dewy_words_version_help_and_refusals_exit_as_dewy() {
    let run = deploy_agent(&["server", "--version"]).await;
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        format!("deploy-agent version: {}\n", env!("CARGO_PKG_VERSION"))
    );

    let run = deploy_agent(&["assets", "-h"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .starts_with("Usage: deploy-agent server|assets|container"),
        "{}",
        run.stdout
    );

    for (args, text) in [
        (&["server"][..], "Error: --registry is not set\n"),
        (
            &["server", "--registry"][..],
            "Error: expected argument for flag `--registry'\n",
        ),
        (
            &["container", "--registry=img://r/a", "--nope"][..],
            "Error: unknown flag `nope'\n",
        ),
        (
            &["server", "--registry=ghr://o/r", "-i", "0"][..],
            "Error: --interval must be at least 1 second (got 0)\n",
        ),
        (
            &["container", "--registry=img://r/a", "-p", "80", "--", "-it"][..],
            "Error: extra argument -it is not allowed in container mode\n",
        ),
    ] {
        let run = deploy_agent(args).await;
        assert_eq!(run.code, 1, "{args:?}");
        assert_eq!(run.stderr, text, "{args:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}
