//! The poll loop and one cycle of it (spec 3.3), as the pipeline Source → LayerCache → Unpacker
//! → Activator → State.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::config::{ComponentVersion, Configuration};
use common::report::{REPORT_EVERY, Report};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheError};
use crate::cli::Options;
use crate::registry_source::RegistrySource;
use crate::state;
use crate::{activate, script, unpack};

/// How a cycle ended (errors aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    Deployed(String),
    /// The deploy of this configuration failed recently after its tree was built (script or
    /// state file); waiting for the backoff.
    Backoff,
}

/// A deploy that keeps failing at its script (or its state file) is retried with exponential
/// backoff, not every poll (B17).
struct ScriptBackoff {
    hash: String,
    attempts: u32,
    next: Instant,
}

/// Reporting to the registry after each poll (`-report-as`, `-no-report`).
struct Reporting {
    host: String,
    /// The last report the registry took, and when.
    sent: Option<(Report, Instant)>,
    /// A failure to report was logged as a warning; the next ones go to debug until one works.
    warned: bool,
}

pub struct Agent {
    opts: Options,
    source: RegistrySource,
    cache: Cache,
    cancel: CancellationToken,
    corrupt_reported: Option<String>,
    backoff: Option<ScriptBackoff>,
    reporting: Option<Reporting>,
    /// Why the last poll failed (kept while a failed deploy waits for its backoff).
    last_error: Option<String>,
}

impl Agent {
    pub fn new(opts: Options, target: client::Target, cancel: CancellationToken) -> Agent {
        let cache = Cache::new(opts.dir.join("cache"), opts.io_timeout);
        let source = RegistrySource::new(target, opts.io_timeout);
        let reporting = opts.report_as.as_ref().map(|host| Reporting {
            host: match host.as_str() {
                "" => hostname(),
                given => given.to_string(),
            },
            sent: None,
            warned: false,
        });
        Agent {
            opts,
            source,
            cache,
            cancel,
            corrupt_reported: None,
            backoff: None,
            reporting,
            last_error: None,
        }
    }

    /// Polls until cancelled. With `-once`, runs one cycle and returns its success.
    pub async fn run(&mut self) -> bool {
        loop {
            let res = self.cycle().await;
            let ok = match &res {
                Ok(_) => true,
                Err(e) => {
                    if !self.cancel.is_cancelled() {
                        tracing::error!("{}", describe(e));
                    }
                    false
                }
            };
            if !self.cancel.is_cancelled() {
                self.report(&res).await;
            }
            if self.opts.once || self.cancel.is_cancelled() {
                return ok || self.cancel.is_cancelled();
            }
            let jittered = self.opts.poll.mul_f64(rand::random_range(0.9..1.1));
            let wait = match self.source.reconnect_delay() {
                Some(d) if !ok => d.min(jittered),
                _ => jittered,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return true,
            }
        }
    }

    /// Tells the registry what runs here and how the poll went, when that changed or every
    /// [`REPORT_EVERY`]. Best effort: a registry that takes no reports (the original) costs
    /// one warning.
    async fn report(&mut self, res: &anyhow::Result<Outcome>) {
        match res {
            Ok(Outcome::Backoff) => {}
            Ok(_) => self.last_error = None,
            Err(e) => self.last_error = Some(describe(e)),
        }
        let Some(r) = &mut self.reporting else {
            return;
        };
        let report = Report::new(
            &self.opts.name,
            &r.host,
            state::load(&self.opts.state).hash(),
            self.last_error.as_deref(),
        );
        if !report_due(r.sent.as_ref(), &report, Instant::now()) {
            return;
        }
        match self.source.report(&report).await {
            Ok(true) => {
                r.sent = Some((report, Instant::now()));
                r.warned = false;
            }
            Ok(false) => {}
            Err(e) if !r.warned => {
                r.warned = true;
                tracing::warn!(
                    "could not report to the registry (its status will not show this host): {e:#}"
                );
            }
            Err(e) => tracing::debug!("could not report to the registry: {e:#}"),
        }
    }

    fn unpacked(&self) -> PathBuf {
        self.opts.dir.join("unpacked")
    }

    pub async fn cycle(&mut self) -> anyhow::Result<Outcome> {
        let local = state::load_reporting(&self.opts.state, &mut self.corrupt_reported);
        let bytes = self.source.fetch_config(&self.opts.name).await?;
        let remote = Configuration::from_json(&bytes)?;
        validate(&remote)?;

        // Keep the blobs of what runs AND of what is about to (B15).
        let keep: HashSet<String> = local
            .config()
            .into_iter()
            .chain([&remote])
            .flat_map(|c| c.layers.iter().map(|l| l.hash.clone()))
            .collect();
        if let Err(e) = self.cache.clean(&keep) {
            tracing::error!("error cleaning cache directory: {}", describe(&e.into()));
        }

        if remote.hash == local.hash() {
            // A crash between saving the state and switching `current` is repaired here.
            if unpack::tree_ready(&self.unpacked(), &remote.hash)
                && activate::current_id(&self.opts.dir).as_deref() != Some(remote.hash.as_str())
            {
                activate::switch_current(&self.opts.dir, &remote.hash)
                    .context("cannot switch current")?;
            }
            return Ok(Outcome::UpToDate);
        }
        if let Some(b) = &self.backoff
            && b.hash == remote.hash
            && Instant::now() < b.next
        {
            return Ok(Outcome::Backoff);
        }
        if self.opts.verbose {
            let mut msg = format!("configuration update available: {}", remote.hash);
            for (i, l) in remote.layers.iter().enumerate() {
                msg.push_str(&format!(
                    "\n\tcomponent {}: {}, version: {}",
                    i + 1,
                    common::gostr::quote(&l.name),
                    common::gostr::quote(&l.version)
                ));
            }
            tracing::info!("{msg}");
        }

        if unpack::tree_ready(&self.unpacked(), &remote.hash) {
            tracing::info!(
                config = %remote.hash,
                "layers fetched from the registry: 0 of {} (unpacked tree reused)",
                remote.layers.len()
            );
        } else {
            self.fetch_and_build(&remote).await?;
        }

        if let Some(script) = self.opts.script.clone() {
            let old_id = local.hash().to_string();
            let inv = script::Invocation {
                script: &script,
                old_root: go_join(&self.unpacked(), &old_id),
                old_id: &old_id,
                new_root: go_join(&self.unpacked(), &remote.hash),
                new: &remote,
                timeout: self.opts.script_timeout,
            };
            if let Err(e) = script::run(&inv, &self.cancel).await {
                if !self.cancel.is_cancelled() {
                    self.note_failure(&remote.hash, "deploy script failed");
                }
                return Err(e.into());
            }
        }
        // Not saved (a full disk), the deploy is retried, script included: with the script's
        // backoff, not every poll.
        if let Err(e) = state::save(&self.opts.state, &remote) {
            self.note_failure(&remote.hash, "state file not saved");
            return Err(anyhow::Error::new(e)
                .context(format!("cannot save state file {:?}", self.opts.state)));
        }
        self.backoff = None;
        self.corrupt_reported = None;
        activate::switch_current(&self.opts.dir, &remote.hash).context("cannot switch current")?;
        if self.opts.verbose {
            tracing::info!("switched to the new configuration: {}", remote.hash);
        }
        if self.opts.cleanold
            && let Err(e) = activate::clean_old(&self.opts.dir, &remote.hash)
        {
            tracing::error!("error cleaning old unpacked files: {e}");
        }
        Ok(Outcome::Deployed(remote.hash))
    }

    /// A deploy that failed after its tree was built (`what` says where) is retried with
    /// exponential backoff, not every poll: each retry runs the script again (B17).
    fn note_failure(&mut self, hash: &str, what: &str) {
        let attempts = match &self.backoff {
            Some(b) if b.hash == hash => b.attempts + 1,
            _ => 1,
        };
        let base = self.opts.poll.max(Duration::from_secs(1));
        let delay = base
            .saturating_mul(1 << (attempts - 1).min(10))
            .min(Duration::from_secs(1800));
        tracing::warn!(
            config = %hash,
            attempts,
            "{what}, next attempt in {}",
            common::goflag::format_duration(delay)
        );
        self.backoff = Some(ScriptBackoff {
            hash: hash.to_string(),
            attempts,
            next: Instant::now() + delay,
        });
    }

    /// Downloads the missing layers and builds the tree from them at the same time: each
    /// layer is unpacked into the staging directory while it streams in (the download of
    /// layer i+1 overlapping the unpacking of layer i), and the tree is put in place only once
    /// every layer has matched its hash. A layer that fails verification fails its stream, so
    /// the staging directory is removed and nothing of it is used.
    async fn fetch_and_build(&mut self, remote: &Configuration) -> anyhow::Result<()> {
        // Re-hash cached blobs before trusting them: a damaged one is removed and fetched
        // again (B15).
        let mut cached: HashSet<&str> = HashSet::new();
        for l in &remote.layers {
            if cached.contains(l.hash.as_str()) || !self.cache.contains(&l.hash) {
                continue;
            }
            // Hashing a large layer takes a while: off the async workers.
            let cache = self.cache.clone();
            let hash = l.hash.clone();
            let ok = tokio::task::spawn_blocking(move || cache.verify(&hash))
                .await
                .context("verify task failed")??;
            if ok {
                cached.insert(&l.hash);
            }
        }
        let mut inputs = Vec::with_capacity(remote.layers.len());
        let mut downloads = Vec::new();
        let mut planned: HashSet<&str> = HashSet::new();
        for l in &remote.layers {
            let hash = l.hash.clone();
            // A blob listed twice is downloaded once; the unpacker reaches its second use only
            // after the first stream ended, that is after the blob was verified and in place.
            if cached.contains(l.hash.as_str()) || !planned.insert(&l.hash) {
                let path = self.cache.path(&l.hash);
                inputs.push(unpack::LayerInput::File { hash, path });
            } else {
                let (mut writer, reader) = unpack::stream();
                if remote.layers.iter().filter(|o| o.hash == l.hash).count() > 1 {
                    writer = writer.once_stored();
                }
                downloads.push((hash.clone(), writer));
                inputs.push(unpack::LayerInput::Stream { hash, reader });
            }
        }

        let unpacked = self.unpacked();
        let id = remote.hash.clone();
        let policy = self.opts.policy;
        let flag = Arc::new(AtomicBool::new(false));
        let worker_flag = flag.clone();
        let task = tokio::task::spawn_blocking(move || {
            unpack::build_tree_from(&unpacked, &id, inputs, &policy, &worker_flag)
        });
        let cancel = self.cancel.clone();
        let watcher = tokio::spawn(async move {
            cancel.cancelled().await;
            flag.store(true, Ordering::Relaxed);
        });
        // On error the remaining writers are dropped, which fails the unpacker's stream.
        let fetched = self.download(remote, downloads).await;
        let built = task.await;
        watcher.abort();
        // The download's error is the cause; the unpacker's is then only its echo.
        fetched?;
        built.context("unpack task failed")??;
        Ok(())
    }

    /// Downloads `downloads` (in configuration order) into the cache, each also into its
    /// stream; logs how many layers crossed the network.
    async fn download(
        &mut self,
        remote: &Configuration,
        downloads: Vec<(String, unpack::StreamWriter)>,
    ) -> anyhow::Result<()> {
        let mut fetched = 0;
        let mut bytes = 0;
        for (hash, writer) in downloads {
            if self.cancel.is_cancelled() {
                anyhow::bail!("interrupted");
            }
            let res = {
                let blobs = self.source.blobs().await?;
                tokio::select! {
                    r = self.cache.fetch_into(&blobs, &hash, Some(writer)) => r,
                    _ = self.cancel.cancelled() => anyhow::bail!("interrupted"),
                }
            };
            match res {
                Ok(Some(f)) => {
                    fetched += 1;
                    bytes += f.downloaded;
                    if f.resumed_from > 0 {
                        tracing::info!(layer = %hash, "download resumed at byte {}", f.resumed_from);
                    }
                    tracing::debug!(layer = %hash, bytes = f.downloaded, resumed_from = f.resumed_from, "layer downloaded");
                }
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, CacheError::Network { .. } | CacheError::Stalled { .. }) {
                        self.source.reset();
                    }
                    return Err(e.into());
                }
            }
        }
        tracing::info!(
            config = %remote.hash,
            "layers fetched from the registry: {fetched} of {} ({bytes} bytes)",
            remote.layers.len()
        );
        Ok(())
    }
}

/// Whether `report` is to be sent: it says something new, or the last was sent
/// [`REPORT_EVERY`] ago.
fn report_due(sent: Option<&(Report, Instant)>, report: &Report, now: Instant) -> bool {
    sent.is_none_or(|(last, at)| last != report || now.duration_since(*at) >= REPORT_EVERY)
}

/// This host's name, as the kernel has it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Spec 3.3 step 4 plus the checks the original lacked (A13): every layer hash is a lowercase
/// sha256 (it names a file), and `Hash` is what the layers hash to.
pub fn validate(c: &Configuration) -> anyhow::Result<()> {
    let h = &c.hash;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!(
            "invalid state hash value: {}, expecting sha256 sum",
            common::gostr::quote(h)
        );
    }
    if c.layers.is_empty() {
        anyhow::bail!("invalid state: no layers");
    }
    for l in &c.layers {
        if l.hash.len() != 64 {
            anyhow::bail!("invalid length of layer hash: {}", go_layer(l));
        }
        if !l
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            anyhow::bail!(
                "invalid layer hash: {}, expecting lowercase sha256 hex",
                common::gostr::quote(&l.hash)
            );
        }
    }
    if !c.hash_matches_layers() {
        anyhow::bail!(
            "configuration hash mismatch: Hash {} does not match its layers ({}); refusing it",
            common::gostr::quote(h),
            common::config::config_hash(c.layers.iter().map(|l| l.hash.as_str()))
        );
    }
    Ok(())
}

/// Go's `%v` of a `*ComponentVersion`.
fn go_layer(l: &ComponentVersion) -> String {
    let t = l.ctime;
    format!(
        "&{{{} {} {} {} {:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} +0000 UTC}}",
        l.name,
        l.version,
        l.file,
        l.hash,
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// `filepath.Join(base, name)`: joined and cleaned, so `./unpacked` + `""` is `unpacked`.
pub fn go_join(base: &Path, name: &str) -> PathBuf {
    let joined = format!("{}/{}", base.to_string_lossy(), name);
    let abs = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if abs => {}
            _ => parts.push(p),
        }
    }
    let s = parts.join("/");
    PathBuf::from(match (abs, s.is_empty()) {
        (true, _) => format!("/{s}"),
        (false, true) => ".".into(),
        (false, false) => s,
    })
}

/// One line for the log: the error chain, with a full disk called by its name.
pub fn describe(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let disk_full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(common::disk::is_full)
    });
    if disk_full && !text.starts_with("disk full") {
        format!("disk full: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_sent_when_they_change_or_are_old() {
        let t0 = Instant::now();
        let ok = Report::new("web", "h", "", None);
        let failed = Report::new("web", "h", "", Some("no route"));
        assert!(report_due(None, &ok, t0));
        let sent = (ok.clone(), t0);
        assert!(!report_due(Some(&sent), &ok, t0 + Duration::from_secs(599)));
        assert!(report_due(
            Some(&sent),
            &failed,
            t0 + Duration::from_secs(1)
        ));
        assert!(report_due(Some(&sent), &ok, t0 + REPORT_EVERY));
    }

    #[test]
    fn go_join_cleans_like_filepath_join() {
        assert_eq!(
            go_join(Path::new("./unpacked"), ""),
            PathBuf::from("unpacked")
        );
        assert_eq!(
            go_join(Path::new("unpacked"), "abc"),
            PathBuf::from("unpacked/abc")
        );
        assert_eq!(
            go_join(Path::new("/tmp/t/./unpacked"), ""),
            PathBuf::from("/tmp/t/unpacked")
        );
        assert_eq!(
            go_join(Path::new("a/../unpacked"), "x"),
            PathBuf::from("unpacked/x")
        );
    }

    #[test]
    fn full_disk_is_named() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("cannot save state file");
        assert!(
            describe(&e).starts_with("disk full: cannot save state file: "),
            "{}",
            describe(&e)
        );
        let other = anyhow::anyhow!("file does not exist");
        assert_eq!(describe(&other), "file does not exist");
    }

    fn conf(hash: &str, layers: &[&str]) -> Configuration {
        let t = common::timefmt::now();
        let mut c = Configuration::new(
            "p".into(),
            t,
            layers
                .iter()
                .map(|h| ComponentVersion::new("c".into(), "v".into(), h.to_string(), t))
                .collect(),
        );
        if !hash.is_empty() {
            c.hash = hash.into();
        }
        c
    }

    #[test]
    fn validation_messages() {
        let good = "a".repeat(64);
        assert!(validate(&conf("", &[&good])).is_ok());
        let e = validate(&conf("xyz", &[&good])).unwrap_err().to_string();
        assert_eq!(e, "invalid state hash value: \"xyz\", expecting sha256 sum");
        let e = validate(&conf(&"b".repeat(64), &[]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid state: no layers");
        let e = validate(&conf("", &["abc"])).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid length of layer hash: &{c v files/abc abc "),
            "{e}"
        );
        let traversal = format!("../../../../etc/{}", "a".repeat(48));
        assert!(
            validate(&conf("", &[&traversal]))
                .unwrap_err()
                .to_string()
                .starts_with("invalid layer hash")
        );
        let e = validate(&conf(&"b".repeat(64), &[&good]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("configuration hash mismatch"), "{e}");
    }
}
