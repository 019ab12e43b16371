//! Logs on stderr: the original's `log` layout (`2006/01/02 15:04:05 message`) or JSON for the
//! native flags; Go `slog`'s text or JSON for Dewy's command words ([`slog`]).

mod slog;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Go's `log.LstdFlags` prefix, `2026/11/22 07:26:29`, in UTC.
struct LstdTime;

impl FormatTime for LstdTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let t = common::timefmt::now();
        write!(
            w,
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive (an invalid one means
/// `info`).
pub fn init(filter: &str, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_timer(LstdTime)
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .init();
    }
}

/// As Dewy logs (its command words): slog's text or JSON.
pub fn init_slog(filter: &str, json: bool) {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter))
        .with_writer(std::io::stderr)
        .event_format(slog::Slog { json })
        .init();
}

fn env_filter(filter: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Dewy's `--log-level` (already `debug|info|warn|error`) as a filter: our crates at that
/// level, libraries (HTTP, TLS, SSH) no chattier than `warn`.
pub fn dewy_filter(level: &str) -> String {
    match level {
        "debug" | "info" => {
            format!("warn,agent={level},sources={level},common={level},deploy_agent={level}")
        }
        other => other.to_string(),
    }
}
