//! deploy-agent: see the crate docs of `agent` and spec/deploy-tools.md section 3.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use agent::agent::Agent;
use agent::cli::{self, LogFormat, Parse};

/// `log.Fatal`: one line, exit 1.
fn fatal(msg: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{msg}");
    ExitCode::from(1)
}

/// Spec 3.2 step 3: a non-blocking exclusive flock on the directory, held for the whole run.
fn lock_dir(dir: &Path) -> Result<OwnedFd, String> {
    let quoted = common::gostr::quote(&dir.to_string_lossy());
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        format!(
            "cannot acquire exclusive lock on {quoted}: {}",
            common::goerr::errno_text(&e.into())
        )
    })?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        format!(
            "cannot acquire exclusive lock on {quoted}: {}",
            common::goerr::errno_text(&e.into())
        )
    })?;
    Ok(fd)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|w| common::dewy::cli::is_command_word(w))
    {
        return agent::dewy::mode::main(&args);
    }
    let mut opts = match cli::parse(&args) {
        Parse::Run(o) => *o,
        Parse::Exit(msg, code) => {
            eprint!("{msg}");
            return ExitCode::from(code);
        }
    };
    agent::logging::init(&opts.log_level, opts.log_format == LogFormat::Json);
    // `-registry`: ssh:// becomes -addr/-name; a Dewy source runs its own loop below.
    let dewy = match agent::dewy::resolve(&mut opts) {
        Ok(d) => d,
        Err(msg) => return fatal(msg),
    };

    if opts.name.is_empty() && dewy.is_none() {
        return fatal("empty configuration name");
    }
    if opts.state.as_os_str().is_empty() {
        return fatal("no state file set");
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&opts.dir)
        {
            return fatal(format!(
                "mkdir {}: {}",
                opts.dir.display(),
                common::goerr::errno_text(&e)
            ));
        }
    }
    let _lock = match lock_dir(&opts.dir) {
        Ok(fd) => fd,
        Err(msg) => return fatal(msg),
    };
    if let Some(url) = dewy {
        return agent::dewy::main(opts, url);
    }
    let host_check = match &opts.known_hosts {
        Some(path) => client::HostCheck::KnownHosts(path.clone()),
        None => {
            if opts.fingerprints.is_empty()
                || !opts.fingerprints.iter().all(|f| f.starts_with("SHA256:"))
            {
                return fatal("invalid server key fingerprint, expecting SHA256 fingerprint");
            }
            client::HostCheck::Fingerprints(opts.fingerprints.clone())
        }
    };
    if let Err(e) = std::fs::read(&opts.key) {
        return fatal(format!(
            "open {}: {}",
            opts.key.display(),
            common::goerr::errno_text(&e)
        ));
    }
    let target = client::Target {
        addr: opts.addr.clone(),
        user: "deploy-agent".into(),
        host_check,
        identity: client::Identity::KeyFile(opts.key.clone()),
        connect_timeout: Duration::from_secs(30),
    };

    agent::run_to_exit(async move {
        let cancel = agent::signals::cancel_on_signals();
        Agent::new(opts, target, cancel).run().await
    })
}
