//! Container mode (spec dewy.md 9): an `img://` image deployed with the docker or podman CLI,
//! a rolling update behind the built-in TCP proxy, health checks, rollback, image GC.
//!
//! - [`runtime`]: the CLI calls, each with a time limit.
//! - [`parse`]: what the CLIs print, and the arguments we give them (no I/O).
//! - [`proxy`]: the TCP proxies.
//! - [`health`]: a new replica's health check.
//! - [`deploy`]: one tick (pull, hooks, rolling update, rollback, reaping, image GC).
//!
//! Unlike Dewy: ticks never overlap; on start the running replicas of the app are adopted as
//! proxy backends (Dewy's proxy stays empty after a restart until a new version comes); the
//! current image is deployed again when fewer than `--replicas` of it run (Dewy: when none); a
//! replaced replica is drained (up to `--drain-time`, until its proxied connections end)
//! before it is stopped; image GC never removes the image of a running replica; failed ticks
//! back off as in the other modes (`--poll-backoff-max`), and a failed redeploy of the current
//! image is tried again (a new tag that fails is not, until a newer one comes).

pub mod deploy;
pub mod health;
pub mod parse;
pub mod proxy;
pub mod runtime;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dewy::cli::{DewyArgs, PortMapping};
use common::dewy::url::RegistryUrl;
use sources::img::ImgSource;

use crate::admin::{ContainerInfo, ListContainers};
use crate::dewy::mode::{Context, Lifecycle};
use parse::{Inspected, LABEL_REPLICA};
use proxy::Proxies;
use runtime::Runtime;

/// `stop --time` for replicas being replaced or shut down (Dewy).
pub const STOP_SECS: u64 = 10;

/// Everything one run of container mode keeps between ticks.
pub struct App {
    pub ctx: Arc<Context>,
    pub rt: Runtime,
    /// Label `dewy.app`.
    pub app: String,
    /// Replica names are `<base>-<unix>-<i>`.
    pub base: String,
    /// Extra `run` arguments without `--name`.
    pub extra: Vec<String>,
    pub user: Option<String>,
    pub mappings: Vec<PortMapping>,
    pub proxies: Proxies,
    /// `host/repo` of the image, without tag.
    pub repo: String,
    pub replicas: usize,
    /// The container port found in the image for `-p proxy` mappings (0 until known).
    pub detected: Mutex<u16>,
}

/// Runs container mode until `ctx.cancel`: proxies first, then a tick every interval. On
/// cancel, stops and removes the app's managed containers and the proxies. Returns false when
/// it could not start (bad ports, runtime missing...).
pub async fn run(ctx: Arc<Context>, url: RegistryUrl, source: ImgSource) -> bool {
    let app = match App::new(ctx.clone(), &url).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e:#}");
            return false;
        }
    };
    app.adopt().await;
    let mut lifecycle = Lifecycle::new(ctx.clone(), None);
    let poll = Duration::from_secs(ctx.args.interval.max(1));
    let max_backoff = crate::dewy::max_backoff(&ctx.args);
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            r = deploy::tick(&app, &source, &mut lifecycle) => r,
        };
        match &result {
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::error!("{}", crate::agent::describe(e));
                failures = failures.saturating_add(1);
            }
        }
        lifecycle.tick_done(result.as_ref().map(|_| ())).await;
        app.refresh_metrics().await;
        // As the other modes: the wait grows after failed ticks, so that a tag failing to heal
        // (or a registry that is down) is not retried, with a container started each time,
        // every interval.
        let wait = crate::dewy::poll_delay(poll, failures, None, max_backoff);
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    app.shutdown().await;
    true
}

/// `/api/containers`: the app's running managed containers, inspected.
/// At most two listings run at once, however many requests come (each costs two runtime
/// processes).
pub fn lister(args: &DewyArgs) -> ListContainers {
    let app = parse::app_name(&args.name, &args.registry);
    let bin = args.runtime.clone();
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    Arc::new(move || {
        let app = app.clone();
        let rt = Runtime { bin: bin.clone() };
        let gate = gate.clone();
        Box::pin(async move {
            let Ok(_permit) = gate.acquire_owned().await else {
                return Vec::new();
            };
            list(&rt, &app).await
        })
    })
}

async fn list(rt: &Runtime, app: &str) -> Vec<ContainerInfo> {
    let found = match rt.managed(app, false).await {
        Ok(ids) => rt.inspect(&ids).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(cs) => cs.iter().map(Inspected::info).collect(),
        Err(e) => {
            tracing::warn!("cannot list containers: {e:#}");
            Vec::new()
        }
    }
}

impl App {
    async fn new(ctx: Arc<Context>, url: &RegistryUrl) -> anyhow::Result<App> {
        let args = &ctx.args;
        let RegistryUrl::Img { host, repo, .. } = url else {
            anyhow::bail!("container mode needs an img:// registry");
        };
        let mappings =
            common::dewy::cli::container_ports(&args.ports).map_err(|e| anyhow::anyhow!("{e}"))?;
        if mappings.is_empty() {
            anyhow::bail!("container mode needs at least one -p proxy[:container] port");
        }
        common::dewy::cli::check_extra_args(&args.rest).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rt = Runtime::new(&args.runtime)?;
        let app = parse::app_name(&args.name, &args.registry);
        let (name, extra) = parse::split_name(&args.rest);
        let user = (!parse::has_user(&extra)).then(|| {
            // Dewy (#319): containers run as the agent's user unless the extra arguments say.
            let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
            format!("{}:{}", uid.as_raw(), gid.as_raw())
        });
        let idle =
            (args.proxy_idle_timeout > 0).then(|| Duration::from_secs(args.proxy_idle_timeout));
        let pairs: Vec<(u16, u16)> = mappings.iter().map(|m| (m.proxy, m.container)).collect();
        let proxies = Proxies::start(&pairs, idle, ctx.metrics.clone()).await?;
        ctx.metrics.set(
            "dewy_container_desired_replicas",
            "Replicas the app should run.",
            &[("app", &app)],
            args.replicas.max(1) as f64,
        );
        Ok(App {
            base: name.unwrap_or_else(|| app.clone()),
            extra,
            user,
            mappings,
            proxies,
            repo: format!("{host}/{repo}"),
            replicas: args.replicas.max(1) as usize,
            detected: Mutex::new(0),
            rt,
            app,
            ctx,
        })
    }

    /// The container port a mapping forwards to in `c` (auto-detected ones: the detected
    /// port, else the container's single published port).
    fn container_port(&self, m: &PortMapping, c: &Inspected) -> Option<u16> {
        if m.container != 0 {
            return Some(m.container);
        }
        let d = *self.detected.lock().unwrap_or_else(|e| e.into_inner());
        if d != 0 {
            return Some(d);
        }
        match c.ports.keys().collect::<Vec<_>>().as_slice() {
            [one] => Some(**one),
            _ => None,
        }
    }

    /// (proxy index, backend address) of a running container.
    pub fn backends_of(&self, c: &Inspected) -> Vec<(usize, SocketAddr)> {
        self.mappings
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let cport = self.container_port(m, c)?;
                let (_, host_port) = c.ports.get(&cport)?;
                Some((i, SocketAddr::from(([127, 0, 0, 1], *host_port))))
            })
            .collect()
    }

    pub fn add_backends(&self, b: &[(usize, SocketAddr)]) {
        for (i, addr) in b {
            if let Some((p, _)) = self.proxies.list.get(*i) {
                p.add(*addr);
            }
        }
        self.update_status();
    }

    /// Leaves only `keep` in the proxies: backends of replicas that went away by other means
    /// (removed by hand, died) are dropped after a deploy.
    pub fn keep_only(&self, keep: &[(usize, SocketAddr)]) {
        for (i, (p, _)) in self.proxies.list.iter().enumerate() {
            for addr in p.backends() {
                if !keep.contains(&(i, addr)) {
                    p.remove(addr);
                }
            }
        }
        self.update_status();
    }

    /// Takes `b` out of the proxies; returns the open-connection counters of the removed
    /// backends (to drain them).
    pub fn remove_backends(&self, b: &[(usize, SocketAddr)]) -> Vec<Arc<AtomicUsize>> {
        let open = b
            .iter()
            .filter_map(|(i, addr)| self.proxies.list.get(*i)?.0.remove(*addr))
            .collect();
        self.update_status();
        open
    }

    fn update_status(&self) {
        let n = self.proxies.backend_count();
        let mut st = self
            .ctx
            .admin
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        st.proxy_backends = n;
    }

    /// The running replicas of this app, left by an earlier run, become backends again.
    async fn adopt(&self) {
        let found = match self.rt.managed(&self.app, false).await {
            Ok(ids) => self.rt.inspect(&ids).await,
            Err(e) => Err(e),
        };
        let containers = match found {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot look for running replicas to adopt: {e:#}");
                return;
            }
        };
        let mut version = None;
        for c in containers.iter().filter(|c| c.state == "running") {
            let b = self.backends_of(c);
            if b.is_empty() {
                tracing::warn!(container = %c.name, "running replica publishes none of the proxied ports: not adopted");
                continue;
            }
            tracing::info!(container = %c.name, version = c.label(parse::LABEL_VERSION), "Adopting running container");
            self.add_backends(&b);
            version = Some(c.label(parse::LABEL_VERSION).to_string());
        }
        if let Some(v) = version {
            let mut st = self
                .ctx
                .admin
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            st.current_version = v;
            st.is_running = true;
        }
    }

    /// Stops and removes every managed container of the app (all at once), then the proxies.
    async fn shutdown(&self) {
        match self.rt.managed(&self.app, true).await {
            Ok(ids) => {
                let mut set = tokio::task::JoinSet::new();
                for id in ids {
                    let rt = self.rt.clone();
                    set.spawn(async move {
                        if let Err(e) = rt.stop(&id, STOP_SECS).await {
                            tracing::warn!("{e:#}");
                        }
                        match rt.rm(&id).await {
                            Ok(()) => tracing::info!(container = %short(&id), "Container stopped and removed"),
                            Err(e) => tracing::error!("{e:#}"),
                        }
                    });
                }
                while set.join_next().await.is_some() {}
            }
            Err(e) => tracing::error!("cannot list the app's containers to stop them: {e:#}"),
        }
        self.proxies.stop();
        tracing::info!("TCP proxies stopped");
    }

    /// Container gauges of spec 9.7 from a fresh `ps -a` + `inspect` of the app.
    pub async fn refresh_metrics(&self) {
        let found = match self.rt.managed(&self.app, true).await {
            Ok(ids) => self.rt.inspect(&ids).await,
            Err(e) => Err(e),
        };
        let Ok(cs) = found else {
            return;
        };
        let m = &self.ctx.metrics;
        for family in [
            "dewy_container_restarts",
            "dewy_container_status",
            "dewy_container_last_terminated_exit_code",
            "dewy_container_oom_killed",
            "dewy_container_started_timestamp_seconds",
            "dewy_container_info",
            "dewy_container_replicas",
        ] {
            m.clear(family);
        }
        let app = self.app.as_str();
        let mut running = 0;
        for c in &cs {
            let replica = c.label(LABEL_REPLICA);
            let l: &[(&str, &str)] = &[("app", app), ("container", &c.name), ("replica", replica)];
            m.set(
                "dewy_container_restarts",
                "Restarts of a replica.",
                l,
                c.restart_count as f64,
            );
            for state in [
                "created",
                "running",
                "paused",
                "restarting",
                "exited",
                "dead",
            ] {
                let l: &[(&str, &str)] = &[
                    ("app", app),
                    ("container", &c.name),
                    ("replica", replica),
                    ("state", state),
                ];
                let v = if c.state == state { 1.0 } else { 0.0 };
                m.set("dewy_container_status", "State of a replica.", l, v);
            }
            if c.state == "exited" || c.state == "dead" {
                m.set(
                    "dewy_container_last_terminated_exit_code",
                    "Exit code of a stopped replica.",
                    l,
                    c.exit_code as f64,
                );
                m.set(
                    "dewy_container_oom_killed",
                    "Whether a stopped replica was killed for memory.",
                    l,
                    if c.oom_killed { 1.0 } else { 0.0 },
                );
            }
            if let Some(t) = parse::rfc3339_seconds(&c.started_at) {
                m.set(
                    "dewy_container_started_timestamp_seconds",
                    "When a replica started.",
                    l,
                    t,
                );
            }
            m.set(
                "dewy_container_info",
                "Replicas and their images.",
                &[
                    ("app", app),
                    ("container", &c.name),
                    ("replica", replica),
                    ("image", &c.image),
                    ("version", c.label(parse::LABEL_VERSION)),
                ],
                1.0,
            );
            if c.state == "running" {
                running += 1;
            }
        }
        m.set(
            "dewy_container_replicas",
            "Running replicas.",
            &[("app", app)],
            running as f64,
        );
    }
}

/// The 12-digit ID both runtimes show.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
