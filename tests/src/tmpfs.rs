//! A small tmpfs mounted for one test: the only way to meet a real full disk (`ENOSPC` from
//! the kernel, not a simulated error) without filling the machine's own disk.
//!
//! Needs root (CI runs as root). Without the privilege, [`Tmpfs::mount`] returns `None` and
//! the caller skips, except under `CI=true`, where a test that silently skips would hide a
//! missing capability: there it panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::run_ok;

/// A tmpfs of a given size, unmounted (lazily, so a process still inside cannot keep it) when
/// dropped.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` KiB on a fresh temp dir; `None` (after saying why on
    /// stderr) where mounting is not permitted and `CI` is not `true`.
    pub fn mount(size_kib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir for the tmpfs");
        let out = crate::run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size_kib}k,mode=0755"),
                    "tmpfs",
                ])
                .arg(dir.path()),
            None,
        );
        if out.status.success() {
            return Some(Tmpfs { dir });
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("cannot mount a tmpfs (tests need root in CI):\n{out}");
        }
        eprintln!("skipped: cannot mount a tmpfs (needs root):\n{out}");
        None
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the mount.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Changes the size in place (contents kept): frees room after a test filled it.
    pub fn resize(&self, size_kib: u64) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size_kib}k")])
                .arg(self.dir.path()),
        );
    }

    /// Bytes still free (tmpfs keeps no reserve for root).
    pub fn free_bytes(&self) -> u64 {
        let out = crate::run(
            Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(self.dir.path()),
            None,
        );
        out.stdout_str()
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output not understood:\n{out}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_up_then_grows() {
        let Some(fs) = Tmpfs::mount(1024) else {
            return;
        };
        let err = std::fs::write(fs.join("big"), vec![1u8; 2 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(fs.free_bytes() < 64 << 10, "{}", fs.free_bytes());
        fs.resize(4096);
        std::fs::write(fs.join("big"), vec![1u8; 2 << 20]).unwrap();
        let path = fs.path().to_path_buf();
        drop(fs);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(&*path.to_string_lossy()), "still mounted");
    }
}
