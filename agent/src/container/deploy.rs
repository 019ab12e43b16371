//! One tick of container mode (spec 9.3): newest tag, skip check, pull (login and one retry),
//! before-hook, rolling update behind the proxies with health checks, rollback of the new
//! replicas on failure, old replicas drained and stopped, exited ones reaped, after-hook,
//! notification, image GC.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::dewy::notify::msg;
use common::dewy::version::{Decision, SLOT_MISMATCH_LOG, slot_decision};
use sources::SourceError;
use sources::img::ImgSource;

use super::parse::{self, RunSpec};
use super::{App, STOP_SECS, health, short};
use crate::dewy::mode::Lifecycle;

/// Images of the app kept by the GC (Dewy).
const KEEP_IMAGES: usize = 7;
/// `stop --time` for a new replica that failed its check (Dewy).
const ROLLBACK_STOP_SECS: u64 = 5;

pub async fn tick(app: &App, source: &ImgSource, lc: &mut Lifecycle) -> Result<()> {
    let release = match source.current().await {
        Ok(r) => r,
        Err(SourceError::NoVersion) => bail!("no valid versioned image tag found in {}", app.repo),
        Err(e) => return Err(e.into()),
    };
    let tag = release.tag.as_str();
    if slot_decision(&release.slot, &app.ctx.args.slot) == Decision::SkipSlotMismatch {
        tracing::debug!(tag, slot = %release.slot, wanted = %app.ctx.args.slot, "{SLOT_MISMATCH_LOG}");
        return Ok(());
    }
    if lc.is_rejected(tag) {
        tracing::debug!(
            tag,
            "Deploy skipped: this image failed its health check and was rolled back"
        );
        return Ok(());
    }
    let image = format!("{}:{tag}", app.repo);
    // Dewy skips as soon as one replica of the image runs; we also deploy again when fewer
    // than --replicas run (an agent killed mid-update, replicas that died, a raised count).
    let running = app.rt.running_of(&image, &app.app).await?.len();
    if running >= app.replicas {
        tracing::debug!(tag, image = %image, "Deploy skipped");
        return Ok(());
    }
    if running > 0 {
        tracing::warn!(
            tag,
            running,
            desired = app.replicas,
            "Fewer replicas of the current image run than wanted: deploying it again"
        );
    }
    let started = Instant::now();
    pull(app, &image).await?;
    tracing::info!(tag, image = %image, "Pulled image");
    app.ctx.notifier.send(&msg::pulled(tag)).await;

    lc.before_deploy().await?;
    let n = match rolling(app, &image, tag).await {
        Ok(n) => n,
        Err(Failure::Unhealthy(e)) => {
            // A new tag that fails is not tried again until a newer one. The tag that already
            // runs is: healing it failed (the app's surroundings, a loaded host), its replicas
            // still serve, and the next tick (after the backoff) tries to heal it again.
            if running == 0 {
                lc.reject(tag);
            }
            app.ctx.metrics.inc(
                "dewy_rollbacks_total",
                "Releases rolled back after a failed health check.",
                &[],
                1,
            );
            return Err(e);
        }
        Err(Failure::Other(e)) => return Err(e),
    };
    lc.after_deploy().await;
    lc.deployed(tag, started.elapsed());
    tracing::info!(tag, replicas = n, "Container deployed successfully");
    app.ctx
        .notifier
        .send_important(&msg::container_deployed(n, app.replicas, tag))
        .await;
    if let Err(e) = gc(app).await {
        tracing::warn!("image GC: {e:#}");
    }
    Ok(())
}

/// Login when the environment has credentials, pull, and on an authorisation error log in
/// again and retry once. A failed pull with the image already here uses the local one.
async fn pull(app: &App, image: &str) -> Result<()> {
    let rt = &app.rt;
    let local = rt.image_inspect(image).await?.is_some();
    let registry = image.split('/').next().unwrap_or_default();
    let creds = parse::login_credentials(registry, &|k| std::env::var(k).ok());
    let login = || async {
        if let Some((user, password)) = &creds {
            match rt.login(registry, user, password).await {
                Ok(()) => tracing::info!(registry, user = %user, "Logged in to the registry"),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
    };
    login().await;
    let mut result = rt.pull(image).await?;
    if let Err(text) = &result
        && parse::is_auth_error(text)
    {
        tracing::warn!(
            image,
            "pull refused for lack of authorisation: logging in again"
        );
        login().await;
        result = rt.pull(image).await?;
    }
    match result {
        Ok(()) => Ok(()),
        Err(text) if local => {
            tracing::warn!(image, error = %text, "pull failed: using the local image");
            Ok(())
        }
        Err(text) => bail!("{} pull {image}: {text}", rt.bin),
    }
}

enum Failure {
    /// A new replica failed its health check: rolled back.
    Unhealthy(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

/// The container ports of this deploy, auto-detecting `-p proxy` ones from the image.
async fn container_ports(app: &App, image: &str) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    if app.mappings.iter().any(|m| m.container == 0) {
        let inspect = app
            .rt
            .image_inspect(image)
            .await?
            .with_context(|| format!("image {image} is not here after the pull"))?;
        let detected = parse::exposed_tcp_port(&inspect).map_err(anyhow::Error::msg)?;
        *app.detected.lock().unwrap_or_else(|e| e.into_inner()) = detected;
    }
    let detected = *app.detected.lock().unwrap_or_else(|e| e.into_inner());
    for m in &app.mappings {
        let p = if m.container == 0 {
            detected
        } else {
            m.container
        };
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

/// Starts the new replicas one by one, each checked and added to the proxies, then drains,
/// stops and removes the old ones. Returns the number of replicas started.
async fn rolling(app: &App, image: &str, tag: &str) -> std::result::Result<usize, Failure> {
    let rt = &app.rt;
    let old = rt.inspect(&rt.managed(&app.app, false).await?).await?;
    let cports = container_ports(app, image).await?;
    let deployed_at = common::timefmt::rfc3339_secs(common::timefmt::now());
    let unix = common::timefmt::now().unix_timestamp();
    let mut started: Vec<(String, Vec<(usize, std::net::SocketAddr)>)> = Vec::new();
    for i in 0..app.replicas {
        let name = format!("{}-{unix}-{i}", app.base);
        tracing::info!(container = %name, image, replica = i, "Starting new container");
        let args = parse::run_args(&RunSpec {
            name: &name,
            app: &app.app,
            deployed_at: &deployed_at,
            replica: i,
            version: tag,
            ports: &cports,
            extra: &app.extra,
            user: app.user.clone(),
            image,
            cmd: &app.ctx.args.cmd,
        });
        let step = start_one(app, &args, &name, &cports).await;
        match step {
            Ok((id, backends)) => {
                app.add_backends(&backends);
                started.push((id, backends));
            }
            Err((id, e)) => {
                if let Some(id) = id {
                    discard(app, &id, &[]).await;
                }
                tracing::error!(
                    container = %name,
                    earlier_new_replicas = started.len(),
                    "New replica of {tag} failed, removing the new replicas: {e:#}"
                );
                for (id, backends) in started.iter().rev() {
                    discard(app, id, backends).await;
                }
                return Err(match e {
                    Start::Unhealthy(m) => Failure::Unhealthy(anyhow::anyhow!(
                        "container {name} of {image}: {m}: deploy rolled back"
                    )),
                    Start::Other(e) => Failure::Other(
                        e.context(format!("container {name} of {image}: deploy rolled back")),
                    ),
                });
            }
        }
    }
    let new: HashSet<&str> = started.iter().map(|(id, _)| id.as_str()).collect();
    let leaving: Vec<&parse::Inspected> = old
        .iter()
        .filter(|c| !new.contains(c.id.as_str()))
        .collect();
    retire(app, &leaving).await;
    let current: Vec<_> = started
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    app.keep_only(&current);
    reap(app).await;
    Ok(started.len())
}

enum Start {
    Unhealthy(String),
    Other(anyhow::Error),
}

/// `run`, `port` and the health check of one replica. On failure the container's ID when
/// it was created, so that it is removed.
async fn start_one(
    app: &App,
    args: &[String],
    name: &str,
    cports: &[u16],
) -> std::result::Result<(String, Vec<(usize, std::net::SocketAddr)>), (Option<String>, Start)> {
    let rt = &app.rt;
    let id = rt.run(args).await.map_err(|e| (None, Start::Other(e)))?;
    let fail = |e: anyhow::Error| (Some(id.clone()), Start::Other(e));
    let mut published = std::collections::BTreeMap::new();
    for &p in cports {
        let host_port = rt.port(&id, p).await.map_err(fail)?;
        published.insert(p, ("127.0.0.1".to_string(), host_port));
    }
    let path = &app.ctx.args.health_path;
    if !path.is_empty() {
        let first = cports
            .first()
            .and_then(|p| published.get(p))
            .map(|(_, hp)| *hp)
            .ok_or_else(|| fail(anyhow::anyhow!("no published port to probe")))?;
        tokio::time::sleep(health::FIRST_DELAY).await;
        let budget = Duration::from_secs(app.ctx.args.health_timeout.max(1));
        let m = app.ctx.metrics.clone();
        let res = health::check(first, path, budget, |ok| {
            m.inc("dewy_healthchecks_total", "Health checks.", &[], 1);
            if !ok {
                m.inc(
                    "dewy_healthchecks_failures_total",
                    "Failed health checks.",
                    &[],
                    1,
                );
            }
        })
        .await;
        if let Err(e) = res {
            return Err((Some(id), Start::Unhealthy(e)));
        }
        tracing::info!(container = %name, port = first, path, "Health check passed");
    }
    let c = parse::Inspected {
        id: id.clone(),
        ports: published,
        ..Default::default()
    };
    Ok((id, app.backends_of(&c)))
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Unhealthy(m) => f.write_str(m),
            Start::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// A new replica of a failed deploy: out of the proxies, `stop --time=5`, `rm`.
async fn discard(app: &App, id: &str, backends: &[(usize, std::net::SocketAddr)]) {
    app.remove_backends(backends);
    if let Err(e) = app.rt.stop(id, ROLLBACK_STOP_SECS).await {
        tracing::warn!("{e:#}");
    }
    if let Err(e) = app.rt.rm(id).await {
        tracing::error!("{e:#}");
    }
}

/// The old replicas: all out of the proxies at once, so that once the new ones serve no new
/// connection reaches an old one; drained together (until their proxied connections end, at
/// most `--drain-time` for all); then stopped and removed. (One at a time, the second kept
/// taking new connections while the first drained, and the drains added up.)
async fn retire(app: &App, old: &[&parse::Inspected]) {
    let open: Vec<_> = old
        .iter()
        .flat_map(|c| app.remove_backends(&app.backends_of(c)))
        .collect();
    let drain = Duration::from_secs(app.ctx.args.drain_time);
    let deadline = Instant::now() + drain;
    let busy = || open.iter().any(|n| n.load(Ordering::Relaxed) > 0);
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in old {
        tracing::info!(container = %c.name, id = short(&c.id), "Stopping old container");
        if let Err(e) = app.rt.stop(&c.id, STOP_SECS).await {
            tracing::warn!("{e:#}");
        }
        if let Err(e) = app.rt.rm(&c.id).await {
            tracing::error!("{e:#}");
        }
    }
}

/// Exited replicas of the app are removed.
async fn reap(app: &App) {
    match app.rt.exited(&app.app).await {
        Ok(ids) => {
            for id in ids {
                match app.rt.rm(&id).await {
                    Ok(()) => tracing::info!(id = short(&id), "Removed exited container"),
                    Err(e) => tracing::warn!("{e:#}"),
                }
            }
        }
        Err(e) => tracing::warn!("cannot list exited containers: {e:#}"),
    }
}

/// Keeps the 7 newest images of the repository, and any a running replica uses.
async fn gc(app: &App) -> Result<()> {
    let rt = &app.rt;
    let images = rt.images(&app.repo).await?;
    let running = rt.inspect(&rt.managed(&app.app, false).await?).await?;
    let in_use: Vec<String> = running.into_iter().map(|c| c.image_id).collect();
    for id in parse::images_to_remove(&images, KEEP_IMAGES, &in_use) {
        match rt.rmi(&id).await {
            Ok(()) => tracing::info!(image = %id, "Removed old image"),
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    Ok(())
}
