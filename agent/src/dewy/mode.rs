//! Dewy's command words: `deploy-agent server|assets|container [flags] [-- args]` (spec
//! dewy.md 8, 9), so that a Dewy user can put our agent in their systemd unit unchanged.
//!
//! `assets` and `server` run the one release pipeline ([`super::ReleaseAgent`]) in the
//! working directory, as Dewy does (`releases/`, `current`, `.dewy/cache`), with hooks,
//! notifications and metrics around it ([`Lifecycle`]); `server` also keeps a worker running on
//! the newest release ([`crate::supervise`]), health-checks it after each restart and rolls
//! back to the previous release when the check fails. `container` hands over to
//! [`crate::container`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::Configuration;
use common::dewy::cli::{DewyArgs, Word};
use common::dewy::notify::{HookKind, msg};
use common::dewy::report::Command;
use common::dewy::url::RegistryUrl;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminState, Status};
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::signals::Control;
use crate::supervise::{self, Supervisor};

/// Everything a mode's loop needs besides its source.
pub struct Context {
    pub args: DewyArgs,
    /// Dewy's working directory: `releases/`, `current`, `.dewy/cache`, hooks' cwd.
    pub dir: PathBuf,
    pub notifier: Arc<Notifier>,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<AdminState>,
    pub hooks: Hooks,
    pub cancel: CancellationToken,
}

impl Context {
    pub fn command(&self) -> Command {
        match self.args.word {
            Word::Mode(c) => c,
            Word::ContainerList => Command::Container,
        }
    }
}

/// Histogram buckets of `dewy.deployment.duration` (spec 9.7).
const DEPLOY_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Buckets for download durations (ours).
const DOWNLOAD_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What `server`/`assets` add around a deploy of the release pipeline.
pub struct Lifecycle {
    pub ctx: Arc<Context>,
    /// Server mode's worker; `None` for assets.
    pub supervisor: Option<Arc<Supervisor>>,
    /// The tag the worker was last started on.
    serving: Option<String>,
    /// A release that failed its health check and was rolled back: not deployed again (a
    /// newer release is).
    rejected: Option<String>,
}

/// Why activating a release did not leave it running.
pub enum ActivateError {
    /// The worker could not be started at all.
    Start(anyhow::Error),
    /// It started and failed its health check.
    Unhealthy(String),
}

impl Lifecycle {
    pub fn new(ctx: Arc<Context>, supervisor: Option<Arc<Supervisor>>) -> Lifecycle {
        Lifecycle {
            ctx,
            supervisor,
            serving: None,
            rejected: None,
        }
    }

    fn command(&self) -> &'static str {
        self.ctx.command().as_str()
    }

    /// The release failed its health check earlier: stay on the one we rolled back to.
    pub fn is_rejected(&self, tag: &str) -> bool {
        self.rejected.as_deref() == Some(tag)
    }

    pub fn reject(&mut self, tag: &str) {
        self.rejected = Some(tag.to_string());
    }

    /// A tick that found the running release current. In server mode the worker must be
    /// running on it (the agent restarted, or the worker was never started): start it.
    pub async fn ensure_running(&mut self, tag: &str) -> anyhow::Result<()> {
        let Some(sup) = &self.supervisor else {
            return Ok(());
        };
        if sup.is_running() && self.serving.is_some() {
            return Ok(());
        }
        tracing::info!(
            tag,
            "Deploy skipped: starting the server on the current release"
        );
        self.start_server(tag, false).await.map_err(|e| match e {
            ActivateError::Start(e) => e,
            ActivateError::Unhealthy(m) => anyhow::anyhow!(m),
        })
    }

    pub async fn downloaded(&self, tag: &str, bytes: u64, took: Duration) {
        tracing::info!(tag, "Download notification");
        if bytes > 0 {
            let m = &self.ctx.metrics;
            m.inc(
                "dewy_download_bytes_total",
                "Bytes downloaded from the registry.",
                &[],
                bytes,
            );
            m.observe_duration(
                "dewy_download_duration_seconds",
                "Time to download a release's missing layers.",
                DOWNLOAD_BUCKETS,
                &[],
                took,
            );
        }
        self.ctx.notifier.send(&msg::downloaded(tag)).await;
    }

    /// The before-deploy hook; its failure aborts the deploy (Dewy #495).
    pub async fn before_deploy(&self) -> anyhow::Result<()> {
        let Some(r) = self.ctx.hooks.run(HookKind::BeforeDeploy).await else {
            return Ok(());
        };
        self.ctx.notifier.send_hook_result(&r).await;
        if r.success {
            Ok(())
        } else {
            anyhow::bail!(
                "before-deploy hook failed with exit code {}: deploy aborted",
                r.exit_code
            )
        }
    }

    /// The after-deploy hook: logged and notified; a failure does not undo the deploy.
    pub async fn after_deploy(&self) {
        if let Some(r) = self.ctx.hooks.run(HookKind::AfterDeploy).await {
            self.ctx.notifier.send_hook_result(&r).await;
        }
    }

    /// SIGHUP/SIGUSR1 between ticks: restart the worker if one runs (server-starter restarts
    /// on HUP without a word); USR1 also notifies, in every mode (Dewy).
    pub async fn signal_restart(&mut self, usr1: bool) {
        if let Some(sup) = self.supervisor.clone()
            && sup.is_running()
        {
            match sup.start_or_restart().await {
                Ok(generation) => {
                    tracing::info!(generation, "Server restarted by signal");
                    self.ctx.metrics.inc(
                        "dewy_server_restarts_total",
                        "Server restarts.",
                        &[("reason", "signal")],
                        1,
                    );
                }
                Err(e) => tracing::error!("cannot restart the server: {e}"),
            }
        }
        if usr1 {
            self.ctx.notifier.send(&msg::restarted_by_usr1()).await;
        }
    }

    pub fn on_deploy(&self, release_dir: &Path) {
        self.ctx.notifier.on_deploy(release_dir);
    }

    /// Server mode: start the worker on the release `current` now points to, or restart it
    /// gracefully, then health-check it when `--health-path` is set.
    pub async fn start_server(&mut self, tag: &str, by_deploy: bool) -> Result<(), ActivateError> {
        let Some(sup) = self.supervisor.clone() else {
            return Ok(());
        };
        let restart = sup.is_running();
        let generation = sup
            .start_or_restart()
            .await
            .map_err(|e| ActivateError::Start(anyhow::anyhow!("cannot start the server: {e}")))?;
        self.serving = Some(tag.to_string());
        let has_port = !self.ctx.args.ports.is_empty();
        if restart {
            tracing::info!(tag, generation, "Server restarted");
            if by_deploy {
                self.ctx.metrics.inc(
                    "dewy_server_restarts_total",
                    "Server restarts.",
                    &[("reason", "deploy")],
                    1,
                );
            }
        } else {
            tracing::info!(tag, generation, "Server started");
        }
        self.health_check(&sup).await?;
        let text = if restart {
            msg::server_restarted(tag, has_port)
        } else {
            msg::server_started(tag, has_port)
        };
        self.ctx.notifier.send_important(&text).await;
        let mut st = lock(&self.ctx.admin.status);
        st.is_running = true;
        st.current_version = tag.to_string();
        Ok(())
    }

    async fn health_check(&self, sup: &Supervisor) -> Result<(), ActivateError> {
        let path = &self.ctx.args.health_path;
        if path.is_empty() {
            return Ok(());
        }
        let Some(port) = self.lowest_port() else {
            return Ok(());
        };
        let budget = Duration::from_secs(self.ctx.args.health_timeout.max(1));
        let start = Instant::now();
        // The old worker still answers on the shared sockets until it is gone: probe only the
        // new one (Dewy #490 waits for server-starter's status file the same way).
        if !sup.wait_single_worker(budget).await {
            tracing::warn!("the previous worker is still running; probing anyway");
        }
        let left = budget
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        let res = supervise::probe(port, path, left).await;
        let m = &self.ctx.metrics;
        m.inc("dewy_healthchecks_total", "Health checks.", &[], 1);
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                m.inc(
                    "dewy_healthchecks_failures_total",
                    "Failed health checks.",
                    &[],
                    1,
                );
                Err(ActivateError::Unhealthy(e))
            }
        }
    }

    fn lowest_port(&self) -> Option<u16> {
        supervise_ports(&self.ctx.args).ok()?.first().copied()
    }

    /// The release is running: metrics and status.
    pub fn deployed(&self, tag: &str, took: Duration) {
        let cmd = self.command();
        let m = &self.ctx.metrics;
        m.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", cmd)],
            1,
        );
        m.observe_duration(
            "dewy_deployment_duration_seconds",
            "Deployment duration.",
            DEPLOY_BUCKETS,
            &[("command", cmd)],
            took,
        );
        m.clear("dewy_current_version_info");
        m.set(
            "dewy_current_version_info",
            "The version deployed now.",
            &[("command", cmd), ("version", tag)],
            1.0,
        );
        let mut st = lock(&self.ctx.admin.status);
        st.current_version = tag.to_string();
        if self.supervisor.is_none() {
            st.is_running = true;
        }
    }

    /// The end of a tick: error limiting and poll metrics.
    pub async fn tick_done(&self, result: Result<(), &anyhow::Error>) {
        let m = &self.ctx.metrics;
        let now = common::timefmt::now().unix_timestamp() as f64;
        m.set(
            "dewy_last_poll_timestamp_seconds",
            "When the registry was last polled.",
            &[],
            now,
        );
        match result {
            Ok(()) => {
                m.set(
                    "dewy_last_poll_success",
                    "Whether the last poll succeeded.",
                    &[],
                    1.0,
                );
                self.ctx.notifier.reset_errors();
            }
            Err(e) => {
                m.set(
                    "dewy_last_poll_success",
                    "Whether the last poll succeeded.",
                    &[],
                    0.0,
                );
                m.inc(
                    "dewy_deployment_errors_total",
                    "Failed ticks.",
                    &[("command", self.command())],
                    1,
                );
                self.ctx
                    .notifier
                    .send_error(&crate::agent::describe(e))
                    .await;
            }
        }
    }

    /// After a failed health check: run the hooks again around the rollback (a hook that
    /// registers the service with a load balancer must see the release change back too).
    pub async fn rolled_back(&mut self, failed: &str, restored: &Configuration, reason: &str) {
        let tag = restored
            .layers
            .first()
            .map(|l| l.version.clone())
            .unwrap_or_default();
        self.reject(failed);
        tracing::error!(failed, restored = %tag, "Rolled back: {reason}");
        self.ctx
            .notifier
            .send_important(&msg::rolled_back(failed, &tag, reason))
            .await;
        self.ctx.metrics.inc(
            "dewy_rollbacks_total",
            "Releases rolled back after a failed health check.",
            &[],
            1,
        );
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn supervise_ports(args: &DewyArgs) -> Result<Vec<u16>, String> {
    if args.ports.is_empty() {
        return Ok(Vec::new());
    }
    common::dewy::cli::server_ports(&args.ports).map(|(p, _)| p)
}

/// `main` for the command words. `args` starts at the word.
pub fn main(args: &[String]) -> ExitCode {
    let args = match common::dewy::cli::parse(args, env!("CARGO_PKG_VERSION")) {
        common::dewy::cli::Parsed::Run(a) => *a,
        common::dewy::cli::Parsed::Exit { text, stdout, code } => {
            if stdout {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            return ExitCode::from(code);
        }
    };
    crate::logging::init_slog(
        &crate::logging::dewy_filter(&args.log_level),
        args.log_format == "json",
    );
    crate::run_to_exit(async move {
        if args.word == Word::ContainerList {
            return crate::admin::container_list(args.admin_port).await;
        }
        match run(args).await {
            Ok(ok) => ok,
            Err(e) => {
                // One line on stderr, in the chosen log format (text or JSON).
                tracing::error!("{e:#}");
                false
            }
        }
    })
}

async fn run(args: DewyArgs) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let Word::Mode(command) = args.word else {
        anyhow::bail!("command is not available");
    };
    let mut url = RegistryUrl::parse(&args.registry).map_err(|e| anyhow::anyhow!("{e}"))?;
    if matches!(url, RegistryUrl::Ssh { .. }) {
        anyhow::bail!(
            "ssh:// registries work with the native flags (deploy-agent -registry ssh://... -script ...), not with the {} command",
            command.as_str()
        );
    }
    url.apply_env_defaults(|k| std::env::var(k).ok());
    if !args.calver.is_empty() {
        url.set_calver(&args.calver)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if command == Command::Container && !matches!(url, RegistryUrl::Img { .. }) {
        anyhow::bail!("container mode needs an img:// registry");
    }
    if command != Command::Container && matches!(url, RegistryUrl::Img { .. }) {
        anyhow::bail!("img:// registries are for the container command");
    }
    let dir = std::env::current_dir().context("cannot read the working directory")?;
    // Two agents in one working directory would extract over each other's releases.
    let _lock = if command == Command::Container {
        None
    } else {
        Some(lock_workdir(&dir)?)
    };
    let ports = match command {
        Command::Server => {
            let (ports, warnings) = if args.ports.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                common::dewy::cli::server_ports(&args.ports).map_err(|e| anyhow::anyhow!(e))?
            };
            for w in warnings {
                tracing::warn!("{w}");
            }
            if ports.is_empty() && !args.health_path.is_empty() {
                anyhow::bail!("--health-path needs a --port to probe");
            }
            ports
        }
        _ => Vec::new(),
    };
    if command == Command::Server && args.rest.is_empty() {
        anyhow::bail!("server mode needs the command to run after --");
    }
    let notifier = Arc::new(
        Notifier::from_url(&args.notifier, &|k| std::env::var(k).ok())
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    let signals = crate::signals::dewy_signals().context("cannot install signal handlers")?;
    let cancel = signals.cancel.clone();
    let metrics = Arc::new(Metrics::new());
    let name = app_name(&args, &url);
    let admin = Arc::new(AdminState {
        name,
        command,
        status: std::sync::Mutex::new(Status::default()),
        containers: (command == Command::Container).then(|| crate::container::lister(&args)),
        metrics: args.telemetry.then(|| metrics.clone()),
    });
    if args.telemetry || command == Command::Container {
        let port = crate::admin::serve(args.admin_port, admin.clone(), cancel.clone())
            .await
            .context("cannot start the admin API")?;
        tracing::info!(port, "Admin API started");
    }
    let hooks = Hooks {
        before: (!args.before_deploy_hook.is_empty()).then(|| args.before_deploy_hook.clone()),
        after: (!args.after_deploy_hook.is_empty()).then(|| args.after_deploy_hook.clone()),
        dir: dir.clone(),
    };
    let ctx = Arc::new(Context {
        args,
        dir,
        notifier: notifier.clone(),
        metrics,
        admin,
        hooks,
        cancel: cancel.clone(),
    });
    notifier
        .send(&msg::started(env!("CARGO_PKG_VERSION"), command.as_str()))
        .await;

    let ok = if command == Command::Container {
        let http = sources::http::HttpClient::new(&sources::http::HttpConfig::default())?;
        let source = sources::img::ImgSource::new(&url, http)?;
        let mut control = signals.control;
        let n = notifier.clone();
        let watcher = tokio::spawn(async move {
            while let Some(c) = control.recv().await {
                if c == Control::Usr1 {
                    // Dewy sends this in every mode (spec 8.6).
                    n.send(&msg::restarted_by_usr1()).await;
                }
            }
        });
        let ok = crate::container::run(ctx.clone(), url, source).await;
        watcher.abort();
        ok
    } else {
        release_mode(ctx.clone(), url, ports, signals.control).await?
    };
    if let Some(sig) = signals.stopped_by.get() {
        notifier.send(&msg::stopped_by(sig)).await;
    }
    Ok(ok)
}

/// How long the old worker keeps running beside the new one, as server-starter reads it
/// (spec 8.5): `KILL_OLD_DELAY` seconds, else 5 with `ENABLE_AUTO_RESTART` set, else 0.
fn kill_old_delay(kill_old_delay: Option<&str>, auto_restart: Option<&str>) -> Duration {
    match kill_old_delay.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) => Duration::from_secs(secs),
        None if auto_restart.is_some_and(|v| !v.is_empty()) => Duration::from_secs(5),
        None => Duration::ZERO,
    }
}

/// `server` and `assets`: the release pipeline in the working directory.
async fn release_mode(
    ctx: Arc<Context>,
    url: RegistryUrl,
    ports: Vec<u16>,
    mut control: tokio::sync::mpsc::Receiver<Control>,
) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let supervisor = if ctx.command() == Command::Server {
        let kill_old_delay = kill_old_delay(
            std::env::var("KILL_OLD_DELAY").ok().as_deref(),
            std::env::var("ENABLE_AUTO_RESTART").ok().as_deref(),
        );
        let (command, args) = ctx
            .args
            .rest
            .split_first()
            .context("server mode needs the command to run after --")?;
        let sup = Supervisor::bind(supervise::Config {
            command: command.clone(),
            args: args.to_vec(),
            ports,
            dir: ctx.dir.clone(),
            kill_old_delay,
            stop_timeout: Duration::from_secs(10),
        })
        .context("cannot start the server supervisor")?;
        Some(Arc::new(sup))
    } else {
        None
    };

    let opts = options_for(&ctx)?;
    let source = super::store::build_cached_source(&url, &opts)?;
    let lifecycle = Lifecycle::new(ctx.clone(), supervisor.clone());
    let mut agent = super::ReleaseAgent::new(opts, url.to_string(), source, ctx.cancel.clone())
        .with_lifecycle(lifecycle);

    // SIGHUP/SIGUSR1 restart the worker; the restart happens between ticks so it never races
    // a deploy's own restart.
    let restarts = Arc::new(tokio::sync::Notify::new());
    let usr1 = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, u) = (restarts.clone(), usr1.clone());
    let watcher = tokio::spawn(async move {
        while let Some(c) = control.recv().await {
            if c == Control::Usr1 {
                u.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            r.notify_one();
        }
    });
    let ok = agent.run_with_restarts(&restarts, &usr1).await;
    watcher.abort();
    if let Some(sup) = supervisor {
        sup.shutdown().await;
    }
    Ok(ok)
}

/// The release pipeline's options for a command word: Dewy's working directory holds
/// `releases/`, `current` and `.dewy/`; no deploy script; our state file under `.dewy/`.
fn options_for(ctx: &Context) -> anyhow::Result<crate::cli::Options> {
    let crate::cli::Parse::Run(opts) = crate::cli::parse(&[]) else {
        anyhow::bail!("internal error: default options");
    };
    let mut opts = *opts;
    opts.dir = ctx.dir.clone();
    opts.script = None;
    opts.state = ctx.dir.join(".dewy").join("state.json");
    opts.poll = Duration::from_secs(ctx.args.interval.max(1));
    opts.max_backoff = super::max_backoff(&ctx.args);
    opts.slot = ctx.args.slot.clone();
    // Dewy refuses every symlink in a release (spec 3.4); only the ones that lead out are
    // the danger, and links inside (`node_modules/.bin`, `lib*.so`) are common.
    opts.policy.links_inside = true;
    // The shared registry cache names its entry after this text: Dewy's, which has
    // `--calver` injected into the query.
    let mut registry = ctx.args.registry.clone();
    if !ctx.args.calver.is_empty() {
        registry.push(if registry.contains('?') { '&' } else { '?' });
        registry.push_str("calver=");
        registry.push_str(&ctx.args.calver);
    }
    opts.registry = Some(registry);
    opts.cache = ctx.args.cache.clone();
    std::fs::create_dir_all(ctx.dir.join(".dewy"))?;
    Ok(opts)
}

/// The app's name for the admin API and container labels (spec 9.2): `--name`, else the last
/// path segment of the registry URL without `?...` and `:...`, else `app`.
fn app_name(args: &DewyArgs, url: &RegistryUrl) -> String {
    if !args.name.is_empty() {
        return args.name.clone();
    }
    let text = url.to_string();
    let path = text.split('?').next().unwrap_or("");
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("");
    if last.is_empty() || last.contains("//") {
        "app".into()
    } else {
        last.to_string()
    }
}

/// An exclusive, non-blocking lock on `<dir>/.dewy`, held for the run.
fn lock_workdir(dir: &Path) -> anyhow::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let dewy = dir.join(".dewy");
    std::fs::create_dir_all(&dewy)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dewy.display()))?;
    let fd = rustix::fs::open(
        &dewy,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", dewy.display()))?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        anyhow::anyhow!(
            "another deploy-agent runs in {} (lock on {} is held)",
            dir.display(),
            dewy.display()
        )
    })?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_old_delay_as_server_starter_reads_it() {
        let secs = |k, a| kill_old_delay(k, a).as_secs();
        assert_eq!(secs(None, None), 0);
        assert_eq!(secs(Some("3"), None), 3);
        assert_eq!(secs(Some(" 7 "), Some("1")), 7);
        assert_eq!(secs(None, Some("1")), 5);
        assert_eq!(secs(Some("soon"), Some("1")), 5);
        assert_eq!(secs(Some("soon"), None), 0);
        assert_eq!(secs(None, Some("")), 0);
    }
}
