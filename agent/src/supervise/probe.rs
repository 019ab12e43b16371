//! Server mode's health check (Dewy #490).

use std::time::Duration;

use tokio::time::Instant;

/// One attempt may take this long.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Attempts start this far apart.
const EVERY: Duration = Duration::from_secs(2);
/// The least time an attempt gets, even at the end of a small budget.
const ATTEMPT_MIN: Duration = Duration::from_millis(500);

/// `GET http://127.0.0.1:<port><path>` every 2 s until `timeout` (at least once); 2xx/3xx is
/// healthy, redirects are not followed. The error says how many attempts were made and what
/// the last one saw.
pub async fn probe(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("http://127.0.0.1:{port}{path}");
    // The process-wide TLS provider must be set before any reqwest client is built in this
    // workspace (rustls without a built-in provider), even one that only speaks plain HTTP.
    sources::http::install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A loopback probe must never go through an HTTP_PROXY from the environment.
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the health check client: {e}"))?;
    let deadline = super::deadline_after(timeout);
    let mut attempts = 0u32;
    let last = loop {
        let began = Instant::now();
        attempts += 1;
        let budget = ATTEMPT
            .min(deadline.saturating_duration_since(began))
            .max(ATTEMPT_MIN);
        let seen = match client.get(&url).timeout(budget).send().await {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => error_chain(&e),
        };
        tracing::debug!(url, attempts, "health check attempt failed: {seen}");
        let next = began + EVERY;
        if next >= deadline {
            break seen;
        }
        tokio::time::sleep_until(next).await;
    };
    Err(format!(
        "health check failed after {attempts} attempts within {}: {last}",
        common::goflag::format_duration(timeout)
    ))
}

/// reqwest's own text hides the cause ("error sending request"): add the sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}
