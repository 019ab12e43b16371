//! A new replica's health check (spec 9.3, #478): after 3 s, `GET http://127.0.0.1:<port><path>`
//! attempts, each up to 5 s and 2 s apart, within `--health-timeout`; 2xx or 3xx is healthy
//! (redirects are not followed). Plain HTTP/1.1 over TCP: only the status line is read.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const FIRST_DELAY: Duration = Duration::from_secs(3);
const ATTEMPT: Duration = Duration::from_secs(5);
const PAUSE: Duration = Duration::from_secs(2);
/// The status line must fit here.
const MAX_HEAD: usize = 8 << 10;

/// The status code of one `GET`, or why there is none.
pub async fn get_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let path = request_target(path);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: deploy-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return Err("status line too long".into());
        }
    }
    status_code(&head).ok_or_else(|| "not an HTTP response".to_string())
}

/// `--health-path health` means `/health`; control characters (a header smuggled in the
/// path) are percent-encoded.
fn request_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for c in path.chars() {
        if c.is_ascii_control() || c == ' ' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// Probes until healthy or the budget is spent; `attempt` is called with each outcome (for
/// metrics). The error is #478's text.
pub async fn check(
    port: u16,
    path: &str,
    budget: Duration,
    mut attempt: impl FnMut(bool),
) -> Result<(), String> {
    let start = Instant::now();
    let mut n = 0u32;
    let last = loop {
        n += 1;
        let limit = ATTEMPT
            .min(budget.saturating_sub(start.elapsed()))
            .max(Duration::from_millis(100));
        let outcome = match tokio::time::timeout(limit, get_status(port, path)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("status {code}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        attempt(outcome.is_ok());
        let e = match outcome {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::debug!(port, path, attempt = n, error = %e, "Health check attempt failed");
        if start.elapsed() + PAUSE >= budget {
            break e;
        }
        tokio::time::sleep(PAUSE).await;
    };
    Err(format!(
        "health check failed after {n} attempts within {}: {last}",
        common::goflag::format_duration(budget)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(reply: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut b = [0u8; 1024];
                let _ = c.read(&mut b).await;
                let _ = c.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[test]
    fn request_targets() {
        assert_eq!(request_target("/health"), "/health");
        assert_eq!(request_target("health?x=1"), "/health?x=1");
        assert_eq!(request_target("/a b\r\nX: y"), "/a%20b%0D%0AX:%20y");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 302\r\n"), Some(302));
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), None);
    }

    #[tokio::test]
    async fn healthy_redirect_and_failing() {
        let ok = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let mut seen = Vec::new();
        check(ok, "/health", Duration::from_secs(10), |o| seen.push(o))
            .await
            .unwrap();
        assert_eq!(seen, vec![true]);
        let redirect = server("HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n").await;
        assert_eq!(get_status(redirect, "/").await, Ok(301));
        check(redirect, "/", Duration::from_secs(10), |_| {})
            .await
            .unwrap();
        let bad = server("HTTP/1.1 503 Unavailable\r\n\r\n").await;
        let mut n = 0;
        let e = check(bad, "/health", Duration::from_millis(2500), |o| {
            assert!(!o);
            n += 1
        })
        .await
        .unwrap_err();
        assert!(n >= 1);
        let want = format!("health check failed after {n} attempts within 2.5s: status 503");
        assert!(e.starts_with(&want), "{e}");
    }
}
