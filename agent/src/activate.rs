//! Switching `<dir>/current` and cleaning old trees.

use std::io;
use std::path::{Path, PathBuf};

/// Points `<dir>/current` at `unpacked/<id>` (relative, so the directory can move): a symlink
/// under a temp name, renamed over the old one, then the directory fsynced.
pub fn switch_current(dir: &Path, id: &str) -> io::Result<()> {
    let target = PathBuf::from("unpacked").join(id);
    let link = dir.join("current");
    if std::fs::read_link(&link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = dir.join(format!(".current.tmp-{:016x}", rand::random::<u64>()));
    std::os::unix::fs::symlink(&target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The id `<dir>/current` points at, if it is one of ours.
pub fn current_id(dir: &Path) -> Option<String> {
    let t = std::fs::read_link(dir.join("current")).ok()?;
    let rest = t.strip_prefix("unpacked").ok()?;
    Some(rest.to_str()?.to_string())
}

/// `-cleanold`, spec 3.3 step 13: in `unpacked/`, skip `<new>` and `<new>.ok`; for a directory
/// with a 64-character name remove `<name>.ok` first, then the tree; remove any 67-character
/// name ending in `.ok`; leave everything else. We also never remove what `current` points to.
pub fn clean_old(dir: &Path, new_id: &str) -> io::Result<()> {
    let unpacked = dir.join("unpacked");
    let keep_current = current_id(dir);
    let keep = |name: &str| {
        let base = name.strip_suffix(".ok").unwrap_or(name);
        base == new_id || keep_current.as_deref() == Some(base)
    };
    for ent in std::fs::read_dir(&unpacked)? {
        let ent = ent?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if keep(&name) {
            continue;
        }
        let is_dir = ent.file_type()?.is_dir();
        if is_dir && name.len() == 64 {
            match std::fs::remove_file(unpacked.join(format!("{name}.ok"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            crate::unpack::remove_tree(&ent.path())?;
        } else if name.len() == 67 && name.ends_with(".ok") {
            crate::unpack::remove_tree(&ent.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_a_relative_symlink_switched_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        switch_current(tmp.path(), &a).unwrap();
        assert_eq!(
            std::fs::read_link(tmp.path().join("current")).unwrap(),
            Path::new("unpacked").join(&a)
        );
        switch_current(tmp.path(), &b).unwrap();
        assert_eq!(current_id(tmp.path()).as_deref(), Some(b.as_str()));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn cleanold_follows_the_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let u = tmp.path().join("unpacked");
        let (new, cur, old) = ("n".repeat(64), "c".repeat(64), "o".repeat(64));
        for d in [&new, &cur, &old] {
            std::fs::create_dir_all(u.join(d).join("sub")).unwrap();
            std::fs::write(u.join(format!("{d}.ok")), b"").unwrap();
        }
        std::fs::write(u.join(format!("{}.ok", "x".repeat(64))), b"").unwrap();
        std::fs::write(u.join("escaped.txt"), b"").unwrap();
        std::fs::create_dir(u.join("short-dir")).unwrap();
        switch_current(tmp.path(), &cur).unwrap();
        clean_old(tmp.path(), &new).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&u)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            cur.clone(),
            format!("{cur}.ok"),
            new.clone(),
            format!("{new}.ok"),
            "escaped.txt".into(),
            "short-dir".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }
}
