//! deploy-registry: an SSH server holding layers and configurations (see README.md).
//!
//! Layout:
//! - [`cli`]: flags (the original's, Go style, plus ours).
//! - [`keys`]: authorized keys, roles, options, reload; [`hostkey`]: `<dir>/host_key`.
//! - [`server`]: accept loop, limits, graceful shutdown; [`session`]: one connection's requests.
//! - [`console`]: console commands and the interactive line editor.
//! - [`sftp`]: the operator (upload-only) and service (read-only) SFTP views.
//! - [`store`]: metadata and blobs; [`housekeeping`]: its periodic jobs.

mod cli;
mod console;
mod hostkey;
mod housekeeping;
mod keys;
mod server;
mod session;
mod sftp;
mod store;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(options) => options,
        Err(cli::Exit::Usage { text, status }) => {
            eprint!("{text}");
            return ExitCode::from(status);
        }
    };
    init_logging(options.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!("starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

async fn run(options: cli::Options) -> anyhow::Result<ExitCode> {
    let store_options = store::Options {
        max_upload_bytes: options.maxupload,
        max_history: options.maxhist,
        max_audit: options.maxaudit,
        min_free_bytes: options.minfree,
        ..store::Options::default()
    };
    if options.fsck {
        let store = store::Store::open(&options.dir, store_options)?;
        let report = tokio::task::spawn_blocking(move || {
            store.fsck(&tokio_util::sync::CancellationToken::new())
        })
        .await??;
        print!("{}", console::fsck_text(&report));
        return Ok(if report.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    // The original's order: key files, host key, database, listener (spec 1.2).
    let keyring = Arc::new(keys::Keyring::load(
        &options.opauth,
        &options.srvauth,
        options.viewauth.as_deref(),
    )?);
    // Unlike the original, a missing -dir is created.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&options.dir)
        .with_context(|| format!("creating data directory {}", options.dir.display()))?;
    let host_key = hostkey::load_or_create(&options.dir)?;
    tracing::info!("host key fingerprint: {}", hostkey::fingerprint(&host_key));
    let store = store::Store::open(&options.dir, store_options)?;
    tracing::info!(dir = %store.dir().display(), "data directory open");

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let jobs = TaskTracker::new();
    housekeeping::start(&store, options.maxver, &jobs, &token);
    jobs.close();

    let listener = tokio::net::TcpListener::bind(&options.addr)
        .await
        .with_context(|| format!("listen on {}", options.addr))?;
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| options.addr.clone(), |a| a.to_string()), "listening");

    let shared = Arc::new(server::Shared {
        store,
        keys: keyring.clone(),
        token: token.clone(),
        tracker,
        idle_limit: options.deadline,
        input_room: server::input_room(),
    });
    let config = Arc::new(server::ssh_config(host_key, options.deadline));
    let stop = stop_signal(keyring)?;
    server::run(
        listener,
        config,
        shared,
        options.maxconn,
        options.shutdown_timeout,
        stop,
    )
    .await;
    token.cancel();
    jobs.wait().await;
    Ok(ExitCode::SUCCESS)
}

use std::os::unix::fs::DirBuilderExt as _;

/// Completes on SIGTERM or SIGINT (logging the signal name as the original did); reloads the
/// key files on every SIGHUP meanwhile.
fn stop_signal(keyring: Arc<keys::Keyring>) -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("terminated"); return; }
                _ = int.recv() => { tracing::info!("interrupt"); return; }
                _ = hup.recv() => {
                    let keyring = keyring.clone();
                    let _ = tokio::task::spawn_blocking(move || keyring.reload()).await;
                }
            }
        }
    })
}
