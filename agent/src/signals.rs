//! SIGINT/SIGTERM end the agent the way the original did: the signal's name is logged and
//! the poll loop stops at its next await point (a running script is then stopped too).

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. Must be called inside the runtime.
pub fn cancel_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let signals = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("interrupt"),
            _ = term.recv() => tracing::info!("terminated"),
        }
        signals.cancel();
    });
    cancel
}
