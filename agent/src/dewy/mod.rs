//! `deploy-agent --registry URL`: Dewy's registries (`ghr://`, `s3://`, `gs://`, `img://`,
//! `grpc://`) through the agent's one pipeline, and `ssh://` as another spelling of
//! `-addr`/`-name`.
//!
//! A release is a configuration whose layers are the release's artifacts (one for Dewy, one
//! per image layer for an OCI image): the layers go through the content-addressed cache
//! ([`store`]), the same safe unpacker ([`convert`] feeds it the archive kinds it does not
//! read itself), the same deploy script contract (`NEWID` is the configuration hash of the
//! layer digests, `LAYER_<i>_NAME/VERSION` the artifact name and tag) and the same state
//! file. Only the place differs: Dewy's `<dir>/releases/<UTC timestamp>/` and an absolute
//! `<dir>/current` symlink ([`releases`]), the newest 7 releases kept.

pub mod convert;
pub mod mode;
pub mod releases;
pub mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::config::{ComponentVersion, Configuration};
use common::dewy::artifact::within_grace;
use common::dewy::cachekey;
use common::dewy::report::{Command, audit_info};
use common::dewy::url::RegistryUrl;
use common::dewy::version::{Decision, SLOT_MISMATCH_LOG, slot_decision};
use sources::http::{HttpClient, HttpConfig};
use sources::{Layer, LayerKind, Release, Source, SourceError};
use tokio_util::sync::CancellationToken;

use crate::agent::{Outcome, describe};
use crate::cache::{Cache, CacheError};
use crate::cli::Options;
use crate::state::{self, Loaded};
use crate::{script, unpack};

/// Applies `-registry`. `ssh://host:port/<configuration>` becomes `-addr host:port -name
/// <configuration>` (the deploy-registry path, with `-fp`/`-known-hosts`/`-key`) and `None`
/// is returned; any other scheme is returned for [`run`]. An unknown scheme or option is the
/// URL parser's text.
pub fn resolve(opts: &mut Options) -> Result<Option<RegistryUrl>, String> {
    let Some(text) = opts.registry.clone() else {
        return Ok(None);
    };
    let mut url = RegistryUrl::parse(&text).map_err(|e| e.to_string())?;
    if let RegistryUrl::Ssh { host, port, config } = &url {
        opts.addr = format!("{host}:{port}");
        opts.name = config.clone();
        return Ok(None);
    }
    url.apply_env_defaults(|k| std::env::var(k).ok());
    Ok(Some(url))
}

/// The source for a Dewy registry URL, reading credentials from the process environment.
pub fn build_source(url: &RegistryUrl) -> Result<Source, SourceError> {
    let http = HttpClient::new(&HttpConfig::default())?;
    let env = sources::bucket::process_env();
    Ok(match url {
        RegistryUrl::Img { .. } => Source::Img(sources::img::ImgSource::new(url, http)?.into()),
        RegistryUrl::S3 { .. } => Source::S3(sources::s3::S3Source::new(url, &http, env)?.into()),
        RegistryUrl::Gs { .. } => Source::Gs(sources::gs::GsSource::new(url, &http, env)?.into()),
        RegistryUrl::Ghr { .. } => Source::Ghr(
            sources::ghr::GhrSource::from_url(url, http, &|k| std::env::var(k).ok())?.into(),
        ),
        RegistryUrl::Grpc { .. } => {
            Source::Grpc(sources::grpc::GrpcSource::from_url(url, http, env)?.into())
        }
        RegistryUrl::Ssh { .. } => {
            return Err(SourceError::Permanent(
                "ssh:// is the deploy-registry, not a Dewy source".into(),
            ));
        }
    })
}

/// `main` for a Dewy source: the runtime, signals, the poll loop. The directory lock is the
/// caller's.
pub fn main(opts: Options, url: RegistryUrl) -> ExitCode {
    crate::run_to_exit(async move {
        let source = match store::build_cached_source(&url, &opts) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return false;
            }
        };
        let cancel = crate::signals::cancel_on_signals();
        ReleaseAgent::new(opts, url.to_string(), source, cancel)
            .run()
            .await
    })
}

/// A deploy script failing for one release is retried with exponential backoff.
struct ScriptBackoff {
    id: String,
    attempts: u32,
    next: Instant,
}

/// Longest wait between polls after errors, unless `--poll-backoff-max` says otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// The longest wait between polls after errors: `--poll-backoff-max`, or our default.
pub fn max_backoff(args: &common::dewy::cli::DewyArgs) -> Duration {
    args.poll_backoff_max
        .map_or(DEFAULT_MAX_BACKOFF, Duration::from_secs)
}

pub struct ReleaseAgent {
    opts: Options,
    /// The registry URL for the state's configuration name and logs.
    name: String,
    source: Source,
    cache: Cache,
    cancel: CancellationToken,
    dewy_dir: PathBuf,
    /// Consecutive failed cycles, for the backoff.
    failures: u32,
    script_backoff: Option<ScriptBackoff>,
    /// The state file's last reported defect, so it is logged once, not every poll.
    corrupt_reported: Option<String>,
    /// Dewy's command words: hooks, notifications, metrics, the server worker.
    lifecycle: Option<mode::Lifecycle>,
}

impl ReleaseAgent {
    pub fn new(
        opts: Options,
        name: String,
        source: Source,
        cancel: CancellationToken,
    ) -> ReleaseAgent {
        let cache = Cache::new(opts.dir.join("cache"), opts.io_timeout);
        let dewy_dir = store::dewy_cache_dir_for(&opts);
        ReleaseAgent {
            opts,
            name,
            source,
            cache,
            cancel,
            dewy_dir,
            failures: 0,
            script_backoff: None,
            corrupt_reported: None,
            lifecycle: None,
        }
    }

    pub fn with_lifecycle(mut self, lifecycle: mode::Lifecycle) -> ReleaseAgent {
        self.lifecycle = Some(lifecycle);
        self
    }

    /// Polls until cancelled. With `-once`, runs one cycle and returns its success.
    pub async fn run(&mut self) -> bool {
        self.run_inner(None).await
    }

    /// [`ReleaseAgent::run`], also restarting the server worker between polls whenever
    /// `restarts` is notified (SIGHUP; SIGUSR1 when `usr1` is set, which also notifies).
    pub async fn run_with_restarts(
        &mut self,
        restarts: &tokio::sync::Notify,
        usr1: &AtomicBool,
    ) -> bool {
        self.run_inner(Some((restarts, usr1))).await
    }

    async fn run_inner(&mut self, restarts: Option<(&tokio::sync::Notify, &AtomicBool)>) -> bool {
        loop {
            let res = self.cycle().await;
            if let Some(lc) = &self.lifecycle
                && !self.cancel.is_cancelled()
            {
                lc.tick_done(res.as_ref().map(|_| ())).await;
            }
            let mut retry_after = None;
            let ok = match &res {
                Ok(_) => {
                    self.failures = 0;
                    true
                }
                Err(e) => {
                    if !self.cancel.is_cancelled() {
                        tracing::error!("{}", describe(e));
                    }
                    self.failures = self.failures.saturating_add(1);
                    if let Some(SourceError::Transient {
                        retry_after: Some(d),
                        ..
                    }) = e.downcast_ref::<SourceError>()
                    {
                        retry_after = Some(*d);
                    }
                    false
                }
            };
            if self.opts.once || self.cancel.is_cancelled() {
                return ok || self.cancel.is_cancelled();
            }
            let wait = poll_delay(
                self.opts.poll,
                self.failures,
                retry_after,
                self.opts.max_backoff,
            );
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = self.cancel.cancelled() => return true,
                    _ = async {
                        match restarts {
                            Some((n, _)) => n.notified().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        let usr1 = restarts.is_some_and(|(_, u)| u.swap(false, Ordering::SeqCst));
                        if let Some(lc) = &mut self.lifecycle {
                            lc.signal_restart(usr1).await;
                        }
                    }
                }
            }
        }
    }

    pub async fn cycle(&mut self) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let local = state::load_reporting(&self.opts.state, &mut self.corrupt_reported);
        let release = match self.source.current().await {
            Ok(r) => r,
            Err(SourceError::ArtifactNotFound {
                message,
                release_time,
            }) if within_grace(release_time, common::timefmt::now()) => {
                tracing::debug!("{message} (the release is younger than the grace period)");
                return Ok(Outcome::UpToDate);
            }
            Err(e) => return Err(e.into()),
        };
        if slot_decision(&release.slot, &self.opts.slot) == Decision::SkipSlotMismatch {
            tracing::debug!(
                tag = %release.tag,
                slot = %release.slot,
                wanted = %self.opts.slot,
                "{SLOT_MISMATCH_LOG}"
            );
            return Ok(Outcome::UpToDate);
        }
        if release.layers.is_empty() {
            anyhow::bail!("release {} has no layers", release.tag);
        }
        if let Some(lc) = &self.lifecycle
            && lc.is_rejected(&release.tag)
        {
            tracing::debug!(tag = %release.tag, "Deploy skipped: this release was rolled back (it did not start or failed its health check)");
            return Ok(Outcome::UpToDate);
        }
        if self.is_current(&local, &release) {
            if let Some(lc) = &mut self.lifecycle {
                lc.ensure_running(&release.tag).await?;
            }
            tracing::debug!(tag = %release.tag, "Deploy skipped");
            return Ok(Outcome::UpToDate);
        }
        if self.opts.verbose {
            let mut msg = format!("release update available: {}", release.tag);
            for (i, l) in release.layers.iter().enumerate() {
                msg.push_str(&format!("\n\tlayer {}: {}", i + 1, l.name));
            }
            tracing::info!("{msg}");
        }

        let key = dewy_key(&release);
        let fetch_started = Instant::now();
        let (hashes, fetched_bytes) = self.fetch_layers(&release, key.as_deref()).await?;
        if let Some(lc) = &self.lifecycle {
            lc.downloaded(&release.tag, fetched_bytes, fetch_started.elapsed())
                .await;
            lc.before_deploy().await?;
        }
        let now = common::timefmt::now();
        let config = Configuration::new(
            self.name.clone(),
            now,
            release
                .layers
                .iter()
                .zip(&hashes)
                .map(|(l, h)| {
                    ComponentVersion::new(
                        l.name.clone(),
                        release.tag.clone(),
                        h.clone(),
                        release.created_at.unwrap_or(now),
                    )
                })
                .collect(),
        );
        if let Some(b) = &self.script_backoff
            && b.id == config.hash
            && Instant::now() < b.next
        {
            return Ok(Outcome::Backoff);
        }

        let releases = releases::releases_dir(&self.opts.dir);
        mkdir(&releases)?;
        let name = releases::fresh_name(&releases).await;
        self.build(&release, &hashes, &releases, &name).await?;
        let new_root = std::path::absolute(releases.join(&name))
            .context("cannot resolve the release directory")?;
        tracing::info!(tag = %release.tag, dir = %new_root.display(), "Extract archive");
        if let Some(lc) = &self.lifecycle {
            lc.on_deploy(&new_root);
        }

        if let Some(script) = self.opts.script.clone() {
            let old_id = local.hash().to_string();
            let old_root = releases::current_target(&self.opts.dir).unwrap_or(releases.clone());
            let inv = script::Invocation {
                script: &script,
                old_root,
                old_id: &old_id,
                new_root: new_root.clone(),
                new: &config,
                timeout: self.opts.script_timeout,
            };
            if let Err(e) = script::run(&inv, &self.cancel).await {
                if !self.cancel.is_cancelled() {
                    self.note_script_failure(&config.hash);
                }
                let _ = unpack::remove_tree(&new_root);
                return Err(e.into());
            }
        }
        self.script_backoff = None;
        let was_current = releases::current_target(&self.opts.dir);
        let previous = was_current
            .clone()
            .filter(|t| t.is_dir())
            .zip(local.config().cloned());
        // `current` first, the state second: the state is what says "nothing to do" on the
        // next poll, so a crash in between only makes that poll deploy the release again.
        releases::switch_current(&self.opts.dir, &new_root).context("cannot switch current")?;
        tracing::info!(from = %self.opts.dir.join("current").display(), to = %new_root.display(), "Create symlink");
        if let Err(e) = state::save(&self.opts.state, &config) {
            // Not saved (a full disk): `current` goes back to the release the state names, so
            // that the retry's script gets the OLDROOT of its OLDID, and a server's `current`
            // names the release that runs.
            if let Err(back) = releases::restore_current(&self.opts.dir, was_current.as_deref()) {
                tracing::error!("cannot switch current back: {back}");
            }
            return Err(anyhow::Error::new(e)
                .context(format!("cannot save state file {:?}", self.opts.state)));
        }
        self.corrupt_reported = None;
        // Only Dewy's command words roll back (`activate`): the key is read for them alone.
        let was_key = self
            .lifecycle
            .as_ref()
            .and_then(|_| store::current_key(&self.dewy_dir));
        if let (Some(key), [hash]) = (&key, hashes.as_slice()) {
            store::write_keys(&self.cache, &self.dewy_dir, key, hash);
            if fetched_bytes > 0 {
                tracing::info!(cache_key = %key, "Cached artifact");
            }
        }
        if self.lifecycle.is_some() {
            self.activate(&release.tag, previous, was_key).await?;
        }
        if let Some(lc) = &self.lifecycle {
            lc.deployed(&release.tag, started.elapsed());
        }
        match releases::keep_newest(&self.opts.dir) {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!(?removed, "old releases removed");
            }
            Ok(_) => {}
            Err(e) => tracing::error!("error removing old releases: {e}"),
        }
        if self.opts.verbose {
            tracing::info!("switched to release {} ({})", release.tag, config.hash);
        }
        self.report(&release.tag).await;
        // Blobs of neither the running nor this release go after the cache's grace time.
        let keep = hashes.iter().cloned().collect();
        if let Err(e) = self.cache.clean(&keep) {
            tracing::error!("error cleaning cache directory: {}", describe(&e.into()));
        }
        Ok(Outcome::Deployed(config.hash))
    }

    /// Dewy's steps after `current` moved: the after-deploy hook, then (server mode) the
    /// worker restarted on the new release and health-checked; on a failed check, `current`,
    /// the state and Dewy's `current` cache key go back to the previous release, whose worker
    /// is started again, and the hooks run again around it.
    async fn activate(
        &mut self,
        tag: &str,
        previous: Option<(PathBuf, Configuration)>,
        was_key: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let Some(lc) = &mut self.lifecycle else {
            return Ok(());
        };
        lc.after_deploy().await;
        {
            let mut st = lc
                .ctx
                .admin
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            st.current_version = tag.to_string();
        }
        // A worker that cannot even start (its command missing from the new release) is
        // rolled back like one that fails its health check: `current` must name what runs.
        let (failure, reason) = match lc.start_server(tag, true).await {
            Ok(()) => return Ok(()),
            Err(mode::ActivateError::Start(e)) => ("did not start", format!("{e:#}")),
            Err(mode::ActivateError::Unhealthy(reason)) => ("failed its health check", reason),
        };
        let Some((old_root, old_config)) = previous else {
            lc.reject(tag);
            anyhow::bail!(
                "release {tag} {failure} and there is no previous release to roll back to: {reason}"
            );
        };
        lc.before_deploy().await.ok();
        releases::switch_current(&self.opts.dir, &old_root)
            .context("cannot switch current back")?;
        tracing::info!(from = %self.opts.dir.join("current").display(), to = %old_root.display(), "Create symlink");
        state::save(&self.opts.state, &old_config)
            .with_context(|| format!("cannot save state file {:?}", self.opts.state))?;
        store::restore_current_key(&self.dewy_dir, was_key.as_deref());
        lc.after_deploy().await;
        let old_tag = old_config
            .layers
            .first()
            .map(|l| l.version.clone())
            .unwrap_or_default();
        let restarted = lc.start_server(&old_tag, false).await;
        lc.rolled_back(tag, &old_config, &reason).await;
        let worse = match restarted {
            Ok(()) => String::new(),
            Err(mode::ActivateError::Start(e)) => {
                format!("; the previous release did not start either: {e:#}")
            }
            Err(mode::ActivateError::Unhealthy(m)) => {
                format!("; the previous release is unhealthy too: {m}")
            }
        };
        anyhow::bail!("release {tag} {failure} ({reason}); rolled back to {old_tag}{worse}")
    }

    /// The state says this release runs (same layers, same tag, same digests where the source
    /// gives them) and `current` points at an existing release: nothing to fetch or hash.
    fn is_current(&self, local: &Loaded, release: &Release) -> bool {
        let Some(c) = local.config() else {
            return false;
        };
        let same = c.layers.len() == release.layers.len()
            && c.layers.iter().zip(&release.layers).all(|(s, l)| {
                s.name == l.name
                    && s.version == release.tag
                    && l.digest.is_none_or(|d| d.to_hex() == s.hash)
            });
        same && releases::current_target(&self.opts.dir).is_some_and(|t| t.is_dir())
    }

    /// Every layer into the cache; their sha256s in layer order.
    async fn fetch_layers(
        &mut self,
        release: &Release,
        key: Option<&str>,
    ) -> anyhow::Result<(Vec<String>, u64)> {
        let mut hashes = Vec::with_capacity(release.layers.len());
        let mut fetched = 0;
        let mut bytes = 0u64;
        for layer in &release.layers {
            if self.cancel.is_cancelled() {
                anyhow::bail!("interrupted");
            }
            let hash = match &layer.digest {
                Some(d) => {
                    let hash = d.to_hex();
                    let cached = self.cache.contains(&hash) && {
                        let cache = self.cache.clone();
                        let h = hash.clone();
                        tokio::task::spawn_blocking(move || cache.verify(&h))
                            .await
                            .context("verify task failed")??
                    };
                    if !cached {
                        let blob = store::LayerBlob {
                            source: &self.source,
                            layer,
                        };
                        let res = tokio::select! {
                            r = self.cache.fetch(&blob, &hash) => r,
                            _ = self.cancel.cancelled() => anyhow::bail!("interrupted"),
                        };
                        match res {
                            Ok(_) => {
                                fetched += 1;
                                bytes += self.blob_len(&hash);
                            }
                            Err(CacheError::HashMismatch { actual, .. }) => anyhow::bail!(
                                "checksum mismatch for {} of release {}: expected sha256 {hash}, downloaded {actual}; staying on the current release",
                                layer.name,
                                release.tag
                            ),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    hash
                }
                None => {
                    let adopted = match key {
                        Some(k) => store::adopt_key(&self.cache, &self.dewy_dir, k)?,
                        None => None,
                    };
                    match adopted {
                        Some(h) => h,
                        None => {
                            fetched += 1;
                            let hash = tokio::select! {
                                r = store::fetch_unverified(&self.cache, &self.source, layer, release.created_at, self.opts.io_timeout, self.opts.policy.limits.max_bytes) => r?,
                                _ = self.cancel.cancelled() => anyhow::bail!("interrupted"),
                            };
                            bytes += self.blob_len(&hash);
                            hash
                        }
                    }
                }
            };
            hashes.push(hash);
        }
        tracing::info!(
            tag = %release.tag,
            "layers fetched from the registry: {fetched} of {}",
            release.layers.len()
        );
        Ok((hashes, bytes))
    }

    fn blob_len(&self, hash: &str) -> u64 {
        std::fs::metadata(self.cache.path(hash)).map_or(0, |m| m.len())
    }

    /// `releases/<name>` from the cached layers, through the safe unpacker. The unpacker's
    /// `.ok` marker is not part of Dewy's layout: removed once the tree is in place.
    async fn build(
        &self,
        release: &Release,
        hashes: &[String],
        releases: &Path,
        name: &str,
    ) -> anyhow::Result<()> {
        let limits = self.opts.policy.limits;
        let mut inputs = Vec::with_capacity(hashes.len());
        let mut conversions = Vec::new();
        for (layer, hash) in release.layers.iter().zip(hashes) {
            match convert::plan(layer.kind, hash, self.cache.path(hash), &layer.name, limits) {
                convert::Plan::Direct(input) => inputs.push(input),
                convert::Plan::Convert(input, conv) => {
                    inputs.push(input);
                    conversions.push(conv);
                }
            }
        }
        let rt = tokio::runtime::Handle::current();
        let converting: Vec<_> = conversions
            .into_iter()
            .map(|c| {
                let rt = rt.clone();
                tokio::task::spawn_blocking(move || c.run(rt))
            })
            .collect();
        let dir = releases.to_path_buf();
        let id = name.to_string();
        let policy = self.opts.policy;
        let flag = Arc::new(AtomicBool::new(false));
        let worker_flag = flag.clone();
        let task = tokio::task::spawn_blocking(move || {
            unpack::build_tree_from(&dir, &id, inputs, &policy, &worker_flag)
        });
        let cancel = self.cancel.clone();
        let watcher = tokio::spawn(async move {
            cancel.cancelled().await;
            flag.store(true, Ordering::Relaxed);
        });
        let built = task.await;
        watcher.abort();
        // A conversion's error is the cause; the unpacker's is then only its echo.
        for c in converting {
            c.await.context("conversion task failed")??;
        }
        built.context("unpack task failed")??;
        let marker = releases.join(format!("{name}.ok"));
        std::fs::remove_file(&marker)
            .with_context(|| format!("cannot remove {}", marker.display()))?;
        crate::cache::sync_dir(releases)?;
        Ok(())
    }

    fn note_script_failure(&mut self, id: &str) {
        let attempts = match &self.script_backoff {
            Some(b) if b.id == id => b.attempts + 1,
            _ => 1,
        };
        let delay = poll_delay(self.opts.poll, attempts, None, self.opts.max_backoff)
            .max(Duration::from_secs(1));
        tracing::warn!(
            config = id,
            attempts,
            "deploy script failed, next attempt in {}",
            common::goflag::format_duration(delay)
        );
        self.script_backoff = Some(ScriptBackoff {
            id: id.to_string(),
            attempts,
            next: Instant::now() + delay,
        });
    }

    /// Dewy's audit record of the deploy (spec 4), naming the mode (`server` or `assets`; the
    /// native flags deploy as assets do); a failure is logged, never the deploy's.
    async fn report(&self, tag: &str) {
        let command = self
            .lifecycle
            .as_ref()
            .map_or(Command::Assets, |lc| lc.ctx.command());
        let info = audit_info(
            &sources::hostname().unwrap_or_else(|| "localhost".into()),
            command,
            common::timefmt::now(),
        );
        let res = match &self.source {
            Source::S3(s) => s.report(tag, &info).await.map(|_| ()),
            Source::Gs(s) => s.report(tag, &info).await.map(|_| ()),
            Source::Ghr(s) => s.report(tag, &info).await.map(|_| ()),
            Source::Grpc(s) => s.report(tag, command).await,
            Source::Img(_) => Ok(()),
        };
        if let Err(e) = res {
            tracing::error!(tag, "Report shipping failure: {e}");
        }
    }
}

/// Dewy's cache key of a one-artifact release (`<tag>--<artifact>`); `None` for an image.
fn dewy_key(release: &Release) -> Option<String> {
    match release.layers.as_slice() {
        [
            Layer {
                kind: LayerKind::Artifact(_),
                locator,
                ..
            },
        ] => Some(cachekey::artifact_key(&release.tag, locator)),
        _ => None,
    }
}

/// The poll interval after `failures` failed cycles in a row: doubled per failure from the
/// second on, up to `max` (never below the interval itself, so a `max` of 0 is no backoff,
/// Dewy's `--poll-backoff-max 0`), at least what the server asked for, ±10 % jitter so a
/// fleet does not poll in step. After a failure it is logged (debug), for whoever waits for
/// the retry.
pub fn poll_delay(
    poll: Duration,
    failures: u32,
    retry_after: Option<Duration>,
    max: Duration,
) -> Duration {
    let base = if failures == 0 {
        poll
    } else {
        poll.saturating_mul(1 << (failures - 1).min(16))
            .min(max.max(poll))
    };
    let jittered = base.mul_f64(rand::random_range(0.9..1.1));
    let wait = match retry_after {
        Some(r) => jittered.max(r),
        None => jittered,
    };
    if failures > 0 {
        tracing::debug!("next poll in {}", common::goflag::format_duration(wait));
    }
    wait
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let poll = Duration::from_secs(10);
        let max = DEFAULT_MAX_BACKOFF;
        let within = |d: Duration, secs: u64| {
            d >= Duration::from_secs(secs).mul_f64(0.9)
                && d <= Duration::from_secs(secs).mul_f64(1.1)
        };
        assert!(within(poll_delay(poll, 0, None, max), 10));
        assert!(
            within(poll_delay(poll, 1, None, max), 10),
            "doubles from the second"
        );
        assert!(within(poll_delay(poll, 3, None, max), 40));
        assert!(within(poll_delay(poll, 30, None, max), 900));
        let ra = poll_delay(poll, 1, Some(Duration::from_secs(120)), max);
        assert!(ra >= Duration::from_secs(120));
        // --poll-backoff-max: its cap, and 0 for none.
        assert!(within(
            poll_delay(poll, 30, None, Duration::from_secs(60)),
            60
        ));
        assert!(within(poll_delay(poll, 30, None, Duration::ZERO), 10));
    }
}
