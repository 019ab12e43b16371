//! Logs on stderr: the original's `log` layout (`2006/01/02 15:04:05 message`) for the native
//! flags, with the level shown for Dewy's command words (Dewy logs `level=INFO`), or JSON.

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
    init_with(filter, json, false);
}

/// As [`init`], with the level of each line shown (Dewy's command words).
pub fn init_leveled(filter: &str, json: bool) {
    init_with(filter, json, true);
}

fn init_with(filter: &str, json: bool, level: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_timer(LstdTime)
            .with_target(false)
            .with_level(level)
            .with_ansi(false)
            .init();
    }
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
