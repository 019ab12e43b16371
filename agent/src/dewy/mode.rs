//! Dewy's command words (`server`, `assets`, `container`): what a mode run shares.
//!
//! STUB: being written.

use std::path::PathBuf;
use std::sync::Arc;

use common::dewy::cli::DewyArgs;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminState;
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::notify::Notifier;

/// Everything a mode's loop needs besides its source.
pub struct Context {
    pub args: DewyArgs,
    /// Dewy's working directory: `releases/`, `current`, `.dewy/cache`, hooks' cwd.
    pub dir: PathBuf,
    pub notifier: Arc<Notifier>,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<AdminState>,
    pub hooks: Hooks,
    pub cancel: CancellationToken,
}
