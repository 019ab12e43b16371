//! deploy-agent: tracks one configuration on a deploy-registry, fetches its layers into a
//! content-addressed cache, unpacks them safely, runs the deploy script and records the state.
//!
//! # Layout
//!
//! - [`cli`]: flags (the original's, Go style, plus ours).
//! - [`dewy`]: `-registry URL`: Dewy's registries into the same pipeline, Dewy's release layout.
//! - [`agent`]: the poll loop and one cycle: Source → LayerCache → Unpacker → Activator → State.
//! - [`registry_source`]: `configs/<name>.json` and `files/<hash>` over one kept SSH connection.
//! - [`cache`]: `cache/<sha256>` blobs, verified, resumable, cleaned by reachability.
//! - [`unpack`]: layers → `unpacked/<id>` (safe extraction, staging, durability).
//! - [`signals`]: SIGINT/SIGTERM as a cancellation token.
//! - [`script`]: the deploy script contract (environment, timeout, process group, logged output).
//! - [`activate`]: the `current` symlink and `-cleanold`.
//! - [`state`]: the state file, written atomically and durably.
//!
//! Dewy's command words (`server`, `assets`, `container`; [`dewy::mode`]) add:
//!
//! - [`supervise`]: server mode's worker, on inherited sockets, restarted gracefully.
//! - [`container`]: container mode (docker/podman CLI, rolling update, TCP proxy).
//! - [`hooks`]: before/after-deploy hooks.
//! - [`notify`]: Slack and mail notifications with Dewy's error limiting.
//! - [`metrics`], [`admin`]: Prometheus metrics and the local admin API.

pub mod activate;
pub mod admin;
pub mod agent;
pub mod cache;
pub mod cli;
pub mod container;
pub mod dewy;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod registry_source;
pub mod script;
pub mod signals;
pub mod state;
pub mod supervise;
pub mod unpack;

/// Runs a mode to its end on the agent's runtime and turns its success into the exit code
/// (0, or 1 as Go's `log.Fatal`). Two workers keep the agent small on a fleet host: downloads
/// and unpacking are I/O- and blocking-pool-bound, not worker-bound.
pub fn run_to_exit(mode: impl std::future::Future<Output = bool>) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    if rt.block_on(mode) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
