//! The shared registry result (Dewy's `registry/cached.go`, spec dewy.md 6.4): with
//! `registry-ttl` on an S3 or GCS cache, one member of a fleet asks the registry per TTL and
//! the others read its answer from the bucket.
//!
//! - A fresh entry is served.
//! - An entry locked by another member (within the lock TTL) is re-read every 250 ms, at most
//!   lock TTL + 250 ms; after that the registry is asked directly.
//! - Otherwise this member claims the entry with a compare-and-swap write (a conflict means
//!   someone else claimed it: read again), asks the registry, and writes the answer, which
//!   releases the lock.
//! - A registry failure releases the lock and serves the previous answer, stale, if any.
//! - An entry that cannot be read or parsed (other than absent) is bypassed: the registry is
//!   asked directly and nothing is written, so a broken bucket never stops deploys.

use std::future::Future;
use std::time::{Duration, Instant};

use common::dewy::artifact::Platform;

use super::entry::{self, Entry};
use super::remote::{Remote, Swap};
use crate::{Release, SourceError};

/// The log line of a member that asked the registry for the fleet (Dewy's text).
pub const REFRESHED_LOG: &str = "Registry result refreshed from upstream";

/// The most an entry may weigh: it holds four short strings.
const MAX_ENTRY: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(250);

pub struct RegistryCache {
    key: String,
    ttl: Duration,
    lock_ttl: Duration,
    /// `host:pid`, written into the lock.
    owner: String,
}

impl RegistryCache {
    /// The cache of `registry_url`'s answers (as given on the command line; its query is
    /// canonicalised for the key).
    pub fn new(registry_url: &str, platform: &Platform<'_>, ttl: Duration) -> RegistryCache {
        RegistryCache {
            key: entry::entry_key(registry_url, platform),
            ttl,
            lock_ttl: entry::lock_ttl(ttl),
            owner: format!(
                "{}:{}",
                crate::hostname().unwrap_or_else(|| "localhost".into()),
                std::process::id()
            ),
        }
    }

    /// The entry's key (`registry-cache/<hash>.json`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces `host:pid` in the lock (tests run two members in one process).
    pub fn with_owner(mut self, owner: String) -> RegistryCache {
        self.owner = owner;
        self
    }

    /// The release to deploy, from the shared entry or from `upstream`.
    pub async fn current<F, Fut>(
        &self,
        remote: &Remote,
        upstream: F,
    ) -> Result<Release, SourceError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Release, SourceError>>,
    {
        let deadline = Instant::now() + self.lock_ttl + POLL;
        loop {
            let (entry, version) = match self.read(remote).await {
                Ok(Some(found)) => found,
                Ok(None) => (Entry::default(), String::new()),
                Err(e) => {
                    tracing::warn!(key = %self.key, "registry cache unreadable, asking the registry directly: {e}");
                    return upstream().await;
                }
            };
            let now = common::timefmt::now();
            if let Some(r) = entry
                .response
                .as_ref()
                .filter(|_| entry.is_fresh(now, self.ttl))
            {
                tracing::debug!(key = %self.key, tag = %r.tag, "registry result from the shared cache");
                return Ok(entry::release_of(r));
            }
            if entry.is_locked(now, self.lock_ttl) {
                if Instant::now() >= deadline {
                    tracing::warn!(key = %self.key, locked_by = %entry.locked_by, "registry cache lock held too long, asking the registry directly");
                    return upstream().await;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            let claim = Entry {
                locked_at: now,
                locked_by: self.owner.clone(),
                ..entry.clone()
            };
            let lock_version = match remote
                .write_if_match(&self.key, &version, claim.to_json())
                .await
            {
                Ok(Swap::Written(v)) => v,
                Ok(Swap::Conflict) => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, "cannot lock the registry cache, asking the registry directly: {e}");
                    return upstream().await;
                }
            };
            return self.refresh(remote, entry, &lock_version, upstream).await;
        }
    }

    /// As the lock holder: asks the registry and publishes its answer, or releases the lock
    /// and serves the old answer when the registry fails.
    async fn refresh<F, Fut>(
        &self,
        remote: &Remote,
        old: Entry,
        lock_version: &str,
        upstream: F,
    ) -> Result<Release, SourceError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Release, SourceError>>,
    {
        match upstream().await {
            Ok(release) => {
                let now = common::timefmt::now();
                match entry::response_of(&release, now) {
                    Some(response) => {
                        let fresh = Entry {
                            response: Some(response),
                            fetched_at: now,
                            ..Entry::default()
                        };
                        self.publish(remote, lock_version, fresh).await;
                        tracing::info!(key = %self.key, tag = %release.tag, "{REFRESHED_LOG}");
                    }
                    None => {
                        // An answer the entry cannot carry: leave the old one, unlocked.
                        self.publish(remote, lock_version, unlocked(old)).await;
                    }
                }
                Ok(release)
            }
            Err(e) => {
                self.publish(remote, lock_version, unlocked(old.clone()))
                    .await;
                match old.response {
                    Some(r) => {
                        tracing::warn!(key = %self.key, tag = %r.tag, "registry failed, serving the cached result: {e}");
                        Ok(entry::release_of(&r))
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn publish(&self, remote: &Remote, version: &str, e: Entry) {
        match remote.write_if_match(&self.key, version, e.to_json()).await {
            Ok(Swap::Written(_)) => {}
            // Our lock expired and another member took over: its write wins.
            Ok(Swap::Conflict) => {
                tracing::warn!(key = %self.key, "registry cache changed while locked, result not shared");
            }
            Err(err) => tracing::warn!(key = %self.key, "cannot write the registry cache: {err}"),
        }
    }

    async fn read(&self, remote: &Remote) -> Result<Option<(Entry, String)>, SourceError> {
        let Some((bytes, version)) = remote.read_versioned(&self.key, MAX_ENTRY).await? else {
            return Ok(None);
        };
        let entry = Entry::from_json(&bytes).map_err(SourceError::Permanent)?;
        Ok(Some((entry, version)))
    }
}

fn unlocked(e: Entry) -> Entry {
    Entry {
        locked_at: entry::zero(),
        locked_by: String::new(),
        ..e
    }
}
