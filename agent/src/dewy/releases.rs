//! Dewy's release layout (spec dewy.md 3.4, 8.3 step 9): `<dir>/releases/<20060102T150405Z>/`,
//! `<dir>/current` a symlink to the absolute release directory, switched by renaming a fresh
//! symlink over it (never remove-then-create), and only the newest 7 releases kept.

use std::io;
use std::path::{Path, PathBuf};

use common::dewy::cachekey;

pub fn releases_dir(dir: &Path) -> PathBuf {
    dir.join("releases")
}

/// A name for a new release directory that does not exist yet: the current UTC second. Dewy
/// would extract two deploys of one second into the same directory; we wait for the next
/// second instead, so a running release is never overwritten.
pub async fn fresh_name(releases: &Path) -> String {
    loop {
        let name = cachekey::release_dir_name(common::timefmt::now());
        if std::fs::symlink_metadata(releases.join(&name)).is_err() {
            return name;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Where `<dir>/current` points, if it is a symlink.
pub fn current_target(dir: &Path) -> Option<PathBuf> {
    std::fs::read_link(dir.join("current")).ok()
}

/// Points `<dir>/current` at `target` (absolute, as Dewy does): a symlink under a temp name,
/// renamed over the old one, then the directory fsynced.
pub fn switch_current(dir: &Path, target: &Path) -> io::Result<()> {
    let link = dir.join("current");
    if std::fs::read_link(&link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = dir.join(format!(".current.tmp-{:016x}", rand::random::<u64>()));
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Points `<dir>/current` back at `target`, or removes it when there was none.
pub fn restore_current(dir: &Path, target: Option<&Path>) -> io::Result<()> {
    match target {
        Some(target) => switch_current(dir, target),
        None => match std::fs::remove_file(dir.join("current")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Removes all but the newest [`cachekey::KEEP_RELEASES`] entries of `releases/` (by mtime,
/// ties by name), never the one `current` points to. Returns the names removed.
pub fn keep_newest(dir: &Path) -> io::Result<Vec<String>> {
    let releases = releases_dir(dir);
    let current = current_target(dir).and_then(|t| t.file_name().map(|n| n.to_owned()));
    let mut entries = Vec::new();
    for ent in std::fs::read_dir(&releases)? {
        let ent = ent?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // Staging trees of a build in progress (ours, under the directory lock) are not
        // releases.
        if name.contains(".partial-") {
            continue;
        }
        let Ok(mtime) = ent.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        entries.push((name, mtime));
    }
    let mut removed = Vec::new();
    for i in cachekey::releases_to_remove(&entries, cachekey::KEEP_RELEASES) {
        let name = &entries[i].0;
        if current.as_deref() == Some(std::ffi::OsStr::new(name)) {
            continue;
        }
        crate::unpack::remove_tree(&releases.join(name))?;
        removed.push(name.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_seven_and_never_current() {
        let tmp = tempfile::tempdir().unwrap();
        let r = releases_dir(tmp.path());
        let names: Vec<String> = (0..10).map(|i| format!("20260101T0000{i:02}Z")).collect();
        for n in &names {
            std::fs::create_dir_all(r.join(n)).unwrap();
            std::fs::write(r.join(n).join("f"), b"x").unwrap();
        }
        // All mtimes may tie within a second: names decide then, oldest name is oldest.
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for (i, n) in names.iter().enumerate() {
            let f = std::fs::File::open(r.join(n)).unwrap();
            f.set_modified(t + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        switch_current(tmp.path(), &r.join(&names[0])).unwrap();
        let mut removed = keep_newest(tmp.path()).unwrap();
        removed.sort();
        assert_eq!(removed, vec![names[1].clone(), names[2].clone()]);
        assert!(r.join(&names[0]).is_dir());
        assert_eq!(std::fs::read_dir(&r).unwrap().count(), 8);
        assert_eq!(current_target(tmp.path()).unwrap(), r.join(&names[0]));
    }

    #[test]
    fn restore_current_points_back_or_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        switch_current(tmp.path(), &b).unwrap();
        restore_current(tmp.path(), Some(&a)).unwrap();
        assert_eq!(current_target(tmp.path()), Some(a));
        restore_current(tmp.path(), None).unwrap();
        assert_eq!(current_target(tmp.path()), None);
        restore_current(tmp.path(), None).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
