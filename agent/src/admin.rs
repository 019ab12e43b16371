//! The local admin API (spec dewy.md 9.6): `localhost:<admin-port>` (trying the next 9 when
//! taken), `GET /api/status`, `GET /api/containers`, `GET /metrics`; anything but GET on
//! `/api/*` is 405. And `container list`, its client.
//!
//! STUB: the interface is frozen; the implementation is being written.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use common::dewy::report::Command;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// One container as `/api/containers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub status: String,
    pub ip_port: String,
    pub started_at: String,
    pub deployed_at: String,
    pub labels: BTreeMap<String, String>,
}

/// What `/api/status` shows; updated by the mode as it goes.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub current_version: String,
    pub proxy_backends: usize,
    pub is_running: bool,
}

pub type ListContainers =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<ContainerInfo>> + Send>> + Send + Sync>;

/// Shared between the mode and the admin server.
pub struct AdminState {
    pub name: String,
    pub command: Command,
    pub status: Mutex<Status>,
    /// Container mode: lists the managed containers.
    pub containers: Option<ListContainers>,
    /// With telemetry: served on `/metrics` (else 404).
    pub metrics: Option<Arc<Metrics>>,
}

/// Serves the admin API on `localhost:<port>` (or the next free of the 9 after it) until
/// `cancel`. Returns the port bound.
pub async fn serve(
    port: u16,
    state: Arc<AdminState>,
    cancel: CancellationToken,
) -> std::io::Result<u16> {
    let _ = (port, state, cancel);
    Err(std::io::Error::other("not implemented yet"))
}

/// `container list [--admin-port N]`: prints the table to stdout; false on failure (exit 1).
pub async fn container_list(admin_port: u16) -> bool {
    let _ = admin_port;
    false
}
