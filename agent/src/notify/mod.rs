//! Notifications (spec dewy.md 7): `slack://` (chat.postMessage) and `mail://`/`smtp://`,
//! behind Dewy's error limiter and quiet mode. Sending never fails a deploy: a failure is
//! logged.
//!
//! STUB: the interface is frozen; the backends are being written.

use std::path::Path;

use common::dewy::notify::HookResult;

/// The one notifier of a run (`--notifier URL`; empty = none).
pub struct Notifier {
    _private: (),
}

impl Notifier {
    /// No notifications.
    pub fn null() -> Notifier {
        Notifier { _private: () }
    }

    /// From `--notifier URL`. `""` → [`Notifier::null`]. An unknown scheme, a bad option or a
    /// missing token/field is an error the caller reports at start (Dewy panics or silently
    /// drops notifications). `env` reads the environment (SLACK_TOKEN, MAIL_*).
    pub fn from_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Notifier, String> {
        let _ = env;
        if url.is_empty() {
            return Ok(Notifier::null());
        }
        Err(format!("unsupported notifier: {url}"))
    }

    /// An ordinary message (suppressed by quiet mode and while errors are counted).
    pub async fn send(&self, msg: &str) {
        let _ = msg;
    }

    /// An important message (sent in quiet mode; suppressed while errors are counted).
    pub async fn send_important(&self, msg: &str) {
        let _ = msg;
    }

    /// A failed tick: counted and limited (spec 7.4).
    pub async fn send_error(&self, err: &str) {
        let _ = err;
    }

    /// A successful tick: resets the error count (logs `Error count reset` when it was > 0).
    pub fn reset_errors(&self) {}

    /// A hook's result (quiet mode: failures only).
    pub async fn send_hook_result(&self, result: &HookResult) {
        let _ = result;
    }

    /// A release was extracted to `release_dir` (Slack threads read `.slack-thread-ts` there).
    pub fn on_deploy(&self, release_dir: &Path) {
        let _ = release_dir;
    }
}
