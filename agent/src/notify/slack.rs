//! chat.postMessage with a bot token. The request is the documented JSON form
//! (`Authorization: Bearer`, `application/json`), not slack-go's form encoding: both are
//! accepted by Slack and JSON carries the attachment without a second encoding.
//!
//! `SLACK_API_URL` replaces `https://slack.com/api/` (tests, proxies, Slack-compatible
//! gateways). One post takes at most [`TOTAL`]: a rate limit (HTTP 429) is waited out once
//! when its `Retry-After` fits in that time, otherwise the message is dropped and logged.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::dewy::notify::HookResult;
use common::dewy::notify::slack::{self as layout, Attachment, ICON_URL, SlackConfig, USERNAME};
use serde::Deserialize;
use sources::http::header::{AUTHORIZATION, CONTENT_TYPE};
use sources::http::{HttpClient, HttpConfig, Url, read_bounded, retry_after};
use tokio::time::Instant;

pub const DEFAULT_API_URL: &str = "https://slack.com/api/";
/// The environment variable that overrides [`DEFAULT_API_URL`].
pub const ENV_API_URL: &str = "SLACK_API_URL";
/// Where the CI leaves the ts of the thread a release belongs to.
const THREAD_FILE: &str = ".slack-thread-ts";
/// A notification may hold up a deploy this long at most.
const TOTAL: Duration = Duration::from_secs(10);
/// chat.postMessage answers with a small JSON object; a peer sending more is not Slack.
const MAX_ANSWER: usize = 64 * 1024;
/// A thread ts is a short decimal (`1700000000.123456`); a larger file is not one.
const MAX_THREAD_FILE: u64 = 256;

pub(super) struct Slack {
    cfg: SlackConfig,
    /// Never logged: it is only ever put in the Authorization header.
    token: String,
    endpoint: Url,
    http: HttpClient,
    hostname: String,
    thread_ts: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

impl Slack {
    pub(super) fn new(
        cfg: SlackConfig,
        env: &dyn Fn(&str) -> Option<String>,
        hostname: &str,
        workdir: &Path,
    ) -> Result<Slack, String> {
        let token = env("SLACK_TOKEN").filter(|t| !t.is_empty()).ok_or(
            "SLACK_TOKEN is required (a bot token with chat:write and chat:write.customize)",
        )?;
        // It goes into a header: refuse here what would fail every post later.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("SLACK_TOKEN holds spaces or control characters".into());
        }
        let base = env(ENV_API_URL)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        let endpoint = api_endpoint(&base)?;
        let http = HttpClient::new(&HttpConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: TOTAL,
            read_idle_timeout: TOTAL,
        })
        .map_err(|e| e.to_string())?;
        let slack = Slack {
            cfg,
            token,
            endpoint,
            http,
            hostname: hostname.to_string(),
            thread_ts: Mutex::new(None),
        };
        slack.on_deploy(&workdir.join("current"));
        Ok(slack)
    }

    /// Follows the thread of the release in `dir` (when `thread=true`): its
    /// `.slack-thread-ts`, or no thread when the release has none (the old thread belongs to
    /// another release).
    pub(super) fn on_deploy(&self, dir: &Path) {
        if !self.cfg.thread {
            return;
        }
        let ts = read_thread_ts(&dir.join(THREAD_FILE));
        match &ts {
            Some(ts) => tracing::info!(thread_ts = %ts, "Slack thread"),
            None => {
                tracing::debug!(dir = %dir.display(), "no {THREAD_FILE}: posting to the channel")
            }
        }
        *self.thread_ts.lock().unwrap_or_else(|e| e.into_inner()) = ts;
    }

    pub(super) async fn send(&self, msg: &str, is_error: bool) -> Result<(), String> {
        let at = layout::message_attachment(&self.cfg, msg, &self.hostname, now());
        self.post(at, is_error).await
    }

    pub(super) async fn send_hook_result(&self, r: &HookResult) -> Result<(), String> {
        let at = layout::hook_attachment(&self.cfg, r, &self.hostname, now());
        self.post(at, false).await
    }

    async fn post(&self, at: Attachment, is_error: bool) -> Result<(), String> {
        let mut body = serde_json::json!({
            "channel": self.cfg.channel,
            "username": USERNAME,
            "icon_url": ICON_URL,
            "attachments": [at],
        });
        let thread = self
            .thread_ts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(ts) = thread {
            body["thread_ts"] = ts.into();
            if is_error {
                // Errors also show in the channel, not only in a thread nobody watches.
                body["reply_broadcast"] = true.into();
            }
        }
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        match tokio::time::timeout(TOTAL, self.post_json(body)).await {
            Ok(result) => result,
            Err(_) => Err(format!("slack: no answer within {}s", TOTAL.as_secs())),
        }
    }

    async fn post_json(&self, body: Vec<u8>) -> Result<(), String> {
        let deadline = Instant::now() + TOTAL;
        let mut retried = false;
        loop {
            let request = self
                .http
                .client()
                .post(self.endpoint.clone())
                .header(AUTHORIZATION, format!("Bearer {}", self.token))
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body.clone());
            let response = self
                .http
                .send_raw(request)
                .await
                .map_err(|e| format!("slack: {e}"))?;
            let status = response.status();
            if status.as_u16() == 429 {
                let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
                if !retried && Instant::now() + wait < deadline {
                    tracing::info!(
                        retry_after = wait.as_secs(),
                        "slack: rate limited, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    retried = true;
                    continue;
                }
                return Err(format!(
                    "slack: rate limited (HTTP 429, Retry-After {}s): message dropped",
                    wait.as_secs()
                ));
            }
            if !status.is_success() {
                return Err(format!("slack: HTTP {status}"));
            }
            let bytes = read_bounded(response, MAX_ANSWER)
                .await
                .map_err(|e| format!("slack: {e}"))?;
            let answer: Answer = serde_json::from_slice(&bytes)
                .map_err(|e| format!("slack: answer is not chat.postMessage's JSON: {e}"))?;
            return if answer.ok {
                Ok(())
            } else {
                Err(format!(
                    "slack: {}",
                    answer
                        .error
                        .as_deref()
                        .unwrap_or("ok=false without an error")
                ))
            };
        }
    }
}

/// `<base>/chat.postMessage`; a base without its trailing `/` still keeps its last segment.
fn api_endpoint(base: &str) -> Result<Url, String> {
    let mut base = base.to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    Url::parse(&base)
        .and_then(|u| u.join("chat.postMessage"))
        .map_err(|e| format!("{ENV_API_URL}: not a URL: {e}"))
}

fn read_thread_ts(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_THREAD_FILE {
        tracing::warn!(path = %path.display(), "ignoring {THREAD_FILE}: not a small file");
        return None;
    }
    let ts = std::fs::read_to_string(path).ok()?.trim().to_string();
    (!ts.is_empty()).then_some(ts)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_under_the_base() {
        let e = |b: &str| api_endpoint(b).map(|u| u.to_string());
        assert_eq!(
            e(DEFAULT_API_URL).unwrap(),
            "https://slack.com/api/chat.postMessage"
        );
        assert_eq!(
            e("http://127.0.0.1:8080/proxy/api").unwrap(),
            "http://127.0.0.1:8080/proxy/api/chat.postMessage"
        );
        assert!(
            e("not a url")
                .unwrap_err()
                .starts_with("SLACK_API_URL: not a URL")
        );
    }

    #[test]
    fn thread_file_is_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(THREAD_FILE);
        assert_eq!(read_thread_ts(&f), None);
        std::fs::write(&f, "\n 1700000000.000001 \n").unwrap();
        assert_eq!(read_thread_ts(&f).as_deref(), Some("1700000000.000001"));
        std::fs::write(&f, "  \n").unwrap();
        assert_eq!(read_thread_ts(&f), None);
        std::fs::write(&f, "9".repeat(4096)).unwrap();
        assert_eq!(read_thread_ts(&f), None);
    }
}
