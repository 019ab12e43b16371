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

/// The signals of Dewy's command words (spec dewy.md 8.6): HUP and USR1 are requests to
/// restart the server, INT/TERM/QUIT end the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: restart the worker (server-starter's behaviour; no notification).
    Hup,
    /// SIGUSR1: restart the worker and notify.
    Usr1,
}

/// What [`dewy_signals`] gives the mode: the end of the run, the Go name of the signal that
/// ended it (`interrupt`, `terminated`, `quit`, for the notification) and restart requests.
pub struct DewySignals {
    pub cancel: CancellationToken,
    pub stopped_by: std::sync::Arc<std::sync::OnceLock<&'static str>>,
    pub control: tokio::sync::mpsc::Receiver<Control>,
}

/// Installs the handlers. Must be called inside the runtime.
pub fn dewy_signals() -> std::io::Result<DewySignals> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let cancel = CancellationToken::new();
    let stopped_by = std::sync::Arc::new(std::sync::OnceLock::new());
    let (tx, control) = tokio::sync::mpsc::channel(8);
    let (c, s) = (cancel.clone(), stopped_by.clone());
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "interrupt",
                _ = term.recv() => "terminated",
                _ = quit.recv() => "quit",
                _ = hup.recv() => {
                    // A full queue already holds a restart request: one more adds nothing.
                    let _ = tx.try_send(Control::Hup);
                    continue;
                }
                _ = usr1.recv() => {
                    let _ = tx.try_send(Control::Usr1);
                    continue;
                }
            };
            tracing::info!(signal = name, "Stop receiving signal");
            let _ = s.set(name);
            c.cancel();
            return;
        }
    });
    Ok(DewySignals {
        cancel,
        stopped_by,
        control,
    })
}
