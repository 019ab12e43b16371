//! What is checked and bound once, before any worker runs: the command and the listening
//! sockets.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use socket2::{Domain, Socket, Type};

/// Backlog of each listening socket: during a restart, connections wait here until the new
/// worker accepts them, so it must hold a burst (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;

/// The program to run. A bare name is looked up in `PATH` now (Go's `exec.LookPath`); a path
/// is taken relative to the workers' directory and checked at each start instead, since it
/// usually goes through `current`, which the first deploy creates (`-- $PWD/current/app`).
pub(super) fn resolve_command(command: &str, dir: &Path) -> io::Result<PathBuf> {
    if command.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no command to run (the first argument after --)",
        ));
    }
    if command.contains('/') {
        return Ok(dir.join(command));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for entry in std::env::split_paths(&path) {
        // A relative PATH entry would make the command depend on the cwd (Go refuses it too).
        if !entry.is_absolute() {
            continue;
        }
        let candidate = entry.join(command);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("exec: {command:?}: executable file not found in $PATH"),
    ))
}

/// A regular file we may execute, or an error naming the path and what is wrong.
pub(super) fn check_executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("exec: {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("exec: {}: not a regular file", path.display()),
        ));
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("exec: {}: not executable: {e}", path.display()),
        )
    })
}

/// One bound port.
pub(super) struct Listener {
    pub port: u16,
    pub fd: OwnedFd,
}

/// Binds every port on all interfaces: `[::]` with `IPV6_V6ONLY` off (IPv4 and IPv6 on one
/// socket, as Go's `net.Listen("tcp", ":8000")`), or `0.0.0.0` where IPv6 is unavailable.
///
/// The returned descriptors are all at `3 + ports.len()` or above, so that mapping them onto
/// 3, 4, ... in a child never overwrites one that is still to be mapped.
pub(super) fn bind_all(ports: &[u16]) -> io::Result<Vec<Listener>> {
    let mut seen = std::collections::BTreeSet::new();
    let first_free = 3 + ports.len();
    let mut out = Vec::with_capacity(ports.len());
    for &port in ports {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port 0 is not a port to serve on",
            ));
        }
        if !seen.insert(port) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {port} is listed twice"),
            ));
        }
        let socket = bind_one(port)?;
        let fd = rustix::io::fcntl_dupfd_cloexec(&socket, first_free as i32)
            .map_err(|e| io::Error::other(format!("cannot keep the socket of port {port}: {e}")))?;
        out.push(Listener { port, fd });
    }
    Ok(out)
}

fn bind_one(port: u16) -> io::Result<Socket> {
    match bind_v6(port) {
        Ok(s) => Ok(s),
        // No IPv6 in this kernel or on this host: IPv4 only.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
            ) =>
        {
            tracing::debug!(port, "IPv6 unavailable ({e}); listening on 0.0.0.0");
            bind_socket(
                Domain::IPV4,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            )
        }
        Err(e) => Err(e),
    }
    .map_err(|e| {
        let kind = e.kind();
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            io::Error::new(
                kind,
                format!("cannot listen on port {port}: the port is already in use"),
            )
        } else {
            io::Error::new(kind, format!("cannot listen on port {port}: {e}"))
        }
    })
}

fn bind_v6(port: u16) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(false)?;
    bind_prepared(socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
}

fn bind_socket(domain: Domain, addr: SocketAddr) -> io::Result<Socket> {
    bind_prepared(Socket::new(domain, Type::STREAM, None)?, addr)
}

fn bind_prepared(socket: Socket, addr: SocketAddr) -> io::Result<Socket> {
    // A restarted agent rebinds at once even while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Fills the free descriptor numbers below `3 + n` with close-on-exec `/dev/null`s, kept for
/// the supervisor's life. std's `Command` reports exec failures through a pipe it opens at
/// spawn time; were that pipe to land on 3, 4, ..., our `dup2`s in the child would replace it
/// and a failed exec would go unreported.
pub(super) fn reserve_low_fds(n: usize) -> io::Result<Vec<File>> {
    let first_free = 3 + n;
    let mut kept = Vec::new();
    // Each open takes the lowest free number, so this ends within `first_free + 1` opens.
    for _ in 0..=first_free {
        let f = File::open("/dev/null")?;
        if f.as_raw_fd() as usize >= first_free {
            break;
        }
        kept.push(f);
    }
    Ok(kept)
}
