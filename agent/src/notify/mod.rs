//! Notifications (spec dewy.md 7): `slack://` (chat.postMessage) and `mail://`/`smtp://`,
//! behind Dewy's error limiter and quiet mode. Sending never fails a deploy: a failure is
//! logged as `notification failed: ...`.
//!
//! - [`slack`]: chat.postMessage with a bot token (`SLACK_TOKEN`), threads.
//! - [`mail`]: SMTP via lettre.
//! - `origin`: the host, user and directory a message names.
//!
//! Unlike Dewy, a bad `--notifier` is an error at start (Dewy panics on an unknown scheme and
//! silently drops notifications on a bad option or a missing token).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::dewy::notify::HookResult;
use common::dewy::notify::limit::{Class, ErrorLimiter, allowed};
use common::dewy::notify::mail::MailConfig;
use common::dewy::notify::slack::SlackConfig;

mod mail;
mod origin;
mod slack;

pub use slack::{DEFAULT_API_URL, ENV_API_URL};

/// The one notifier of a run (`--notifier URL`; empty = none).
pub struct Notifier {
    backend: Backend,
    quiet: bool,
    errors: Mutex<ErrorLimiter>,
}

enum Backend {
    Null,
    Slack(slack::Slack),
    Mail(mail::Mail),
}

impl Notifier {
    /// No notifications.
    pub fn null() -> Notifier {
        Notifier::with(Backend::Null, false)
    }

    fn with(backend: Backend, quiet: bool) -> Notifier {
        Notifier {
            backend,
            quiet,
            errors: Mutex::new(ErrorLimiter::new()),
        }
    }

    /// From `--notifier URL`. `""` → [`Notifier::null`]. An unknown scheme, a bad option or a
    /// missing token/field is an error the caller reports at start (Dewy panics or silently
    /// drops notifications). `env` reads the environment (SLACK_TOKEN, SLACK_API_URL, MAIL_*).
    pub fn from_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Notifier, String> {
        let cwd = std::env::current_dir().unwrap_or_default();
        Notifier::from_url_in(url, env, &cwd)
    }

    /// [`Notifier::from_url`] for an agent working in `workdir` instead of the current
    /// directory: Slack threads start from `<workdir>/current/.slack-thread-ts`, mails name
    /// it as the working directory.
    pub fn from_url_in(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
        workdir: &Path,
    ) -> Result<Notifier, String> {
        if url.is_empty() {
            return Ok(Notifier::null());
        }
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        match scheme {
            "slack" => {
                let cfg = SlackConfig::parse(url).map_err(|e| format!("slack notifier: {e}"))?;
                let quiet = cfg.quiet;
                let s = slack::Slack::new(cfg, env, &origin::hostname(), workdir)
                    .map_err(|e| format!("slack notifier: {e}"))?;
                Ok(Notifier::with(Backend::Slack(s), quiet))
            }
            "mail" | "smtp" => {
                let cfg = MailConfig::parse(url, env).map_err(|e| format!("mail notifier: {e}"))?;
                let quiet = cfg.quiet;
                let m = mail::Mail::new(cfg, origin::origin(workdir))
                    .map_err(|e| format!("mail notifier: {e}"))?;
                Ok(Notifier::with(Backend::Mail(m), quiet))
            }
            _ => Err(format!(
                "unsupported notifier scheme {}: use slack:// or mail://",
                common::gostr::quote(scheme)
            )),
        }
    }

    fn limiter(&self) -> MutexGuard<'_, ErrorLimiter> {
        // The limiter is a counter: a panic elsewhere cannot leave it inconsistent.
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allows(&self, class: Class) -> bool {
        allowed(class, self.quiet, &self.limiter())
    }

    /// An ordinary message (suppressed by quiet mode and while errors are counted).
    pub async fn send(&self, msg: &str) {
        if self.allows(Class::Normal) {
            self.deliver(msg, false).await;
        }
    }

    /// An important message (sent in quiet mode; suppressed while errors are counted).
    pub async fn send_important(&self, msg: &str) {
        if self.allows(Class::Important) {
            self.deliver(msg, false).await;
        }
    }

    /// A failed tick: counted and limited (spec 7.4).
    pub async fn send_error(&self, err: &str) {
        let (count, text) = {
            let mut l = self.limiter();
            let text = l.record(err);
            (l.count(), text)
        };
        tracing::error!(count, error = err, "Error count");
        if let Some(text) = text {
            self.deliver(&text, true).await;
        }
    }

    /// A successful tick: resets the error count (logs `Error count reset` when it was > 0).
    pub fn reset_errors(&self) {
        let mut l = self.limiter();
        let from = l.count();
        if l.reset() {
            tracing::info!(from, to = 0, "Error count reset");
        }
    }

    /// A hook's result (quiet mode: failures only).
    pub async fn send_hook_result(&self, result: &HookResult) {
        if !self.allows(Class::Hook {
            success: result.success,
        }) {
            return;
        }
        let sent = match &self.backend {
            Backend::Null => Ok(()),
            Backend::Slack(s) => s.send_hook_result(result).await,
            Backend::Mail(m) => m.send_hook_result(result).await,
        };
        log_failure(sent);
    }

    /// A release was extracted to `release_dir` (Slack threads read `.slack-thread-ts` there).
    pub fn on_deploy(&self, release_dir: &Path) {
        if let Backend::Slack(s) = &self.backend {
            s.on_deploy(release_dir);
        }
    }

    async fn deliver(&self, msg: &str, is_error: bool) {
        let sent = match &self.backend {
            Backend::Null => Ok(()),
            Backend::Slack(s) => s.send(msg, is_error).await,
            Backend::Mail(m) => m.send(msg).await,
        };
        log_failure(sent);
    }
}

fn log_failure(sent: Result<(), String>) {
    if let Err(e) = sent {
        tracing::warn!("notification failed: {e}");
    }
}
