//! What a notification says about where it comes from: the host name (Go's `os.Hostname`),
//! the user's full name (Go's `user.Current().Name`) and the working directory.

use common::dewy::notify::mail::{Origin, passwd_full_name};

pub(super) fn hostname() -> String {
    sources::hostname().unwrap_or_default()
}

pub(super) fn origin(workdir: &std::path::Path) -> Origin {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Origin {
        hostname: hostname(),
        user: passwd_full_name(&passwd, rustix::process::getuid().as_raw()).unwrap_or_default(),
        cwd: workdir.display().to_string(),
    }
}
