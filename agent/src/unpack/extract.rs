//! Applying one tar stream to the staging tree. Every name is resolved beneath the root one
//! component at a time with `O_NOFOLLOW|O_DIRECTORY`, so no symlink (from this layer, an earlier
//! one, or an earlier entry) is ever followed while writing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::decode::{Budgeted, limit_message};
use super::path::{display_name, enclosed_components};
use super::{Policy, remove_tree};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const TEMP_PREFIX: &str = ".deploy-agent-tmp-";

/// Longest GNU long name / long link record accepted (Linux paths stop at 4 KiB).
const MAX_LONG_NAME: u64 = 64 << 10;
/// Largest PAX record set accepted for one entry.
const MAX_PAX: u64 = 1 << 20;

/// GNU long-name/long-link and PAX `path`/`linkpath` records, waiting for the entry they
/// describe.
#[derive(Default)]
struct PendingMeta {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
}

impl PendingMeta {
    /// Takes in `entry` if it is a metadata record (returns `true`), bounded in size.
    fn absorb<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<bool, EntryError> {
        let kind = entry.header().entry_type();
        let too_big = |what: &str, max: u64| {
            EntryError::Rejected(format!("{what} record larger than {max} bytes"))
        };
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            if entry.size() > MAX_LONG_NAME {
                return Err(too_big("GNU long name", MAX_LONG_NAME));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            while data.last() == Some(&0) {
                data.pop();
            }
            if kind.is_gnu_longname() {
                self.name = Some(data);
            } else {
                self.link = Some(data);
            }
            return Ok(true);
        }
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            if entry.size() > MAX_PAX {
                return Err(too_big("PAX", MAX_PAX));
            }
            if kind.is_pax_global_extensions() {
                io::copy(entry, &mut io::sink())?;
                return Ok(true);
            }
            if let Some(exts) = entry.pax_extensions()? {
                for ext in exts {
                    let ext = ext?;
                    match ext.key_bytes() {
                        b"path" => self.name = Some(ext.value_bytes().to_vec()),
                        b"linkpath" => self.link = Some(ext.value_bytes().to_vec()),
                        // It would change how the archive is framed, which raw reading does
                        // not follow; only files over 8 GiB need it.
                        b"size" => {
                            return Err(EntryError::Rejected(
                                "PAX size records (files over 8 GiB) are not supported".into(),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// The paths this layer created, and every prefix of them, as keyed hashes: an opaque
/// whiteout must keep them, and the lookup has to stay O(1) however many entries a hostile
/// layer holds (a scan per whiteout would be quadratic).
#[derive(Default)]
struct LayerPaths {
    keys: std::hash::RandomState,
    prefixes: HashSet<u64>,
    /// Directories already emptied by an opaque whiteout in this layer: a repeat is a no-op
    /// (what is left there came from this layer), and skipping it keeps listing linear.
    opaque_done: HashSet<u64>,
}

impl LayerPaths {
    fn step(&self, prev: u64, comp: &OsStr) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.keys.build_hasher();
        prev.hash(&mut h);
        comp.as_bytes().hash(&mut h);
        h.finish()
    }
    fn key(&self, comps: &[OsString]) -> u64 {
        comps.iter().fold(0, |k, c| self.step(k, c))
    }
    fn insert(&mut self, comps: &[OsString]) {
        let mut k = 0;
        for c in comps {
            k = self.step(k, c);
            self.prefixes.insert(k);
        }
    }
    fn has_child(&self, parent_key: u64, child: &OsStr) -> bool {
        self.prefixes.contains(&self.step(parent_key, child))
    }
}

/// Why one entry failed.
#[derive(Debug)]
pub(crate) enum EntryError {
    /// The archive asked for something we refuse.
    Rejected(String),
    /// A limit was exceeded.
    Limit(String),
    Io(io::Error),
    /// The agent is shutting down.
    Cancelled,
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        match limit_message(&e) {
            Some(m) => EntryError::Limit(m),
            None => EntryError::Io(e),
        }
    }
}
impl From<Errno> for EntryError {
    fn from(e: Errno) -> Self {
        EntryError::Io(e.into())
    }
}

type Comps = Vec<OsString>;

/// The staging tree being built, across layers.
pub(crate) struct Tree {
    root: Rc<OwnedFd>,
    root_path: PathBuf,
    policy: Policy,
    privileged: bool,
    /// Directory modes and mtimes, applied once at the end so that a read-only directory from
    /// the archive cannot stop later entries from being written into it.
    dir_meta: BTreeMap<Comps, (u32, Option<Timespec>)>,
    /// Entries seen so far (all layers), for the entry-count limit.
    entries: u64,
    /// Decompressed bytes produced by earlier layers.
    bytes: u64,
    /// See [`copy_with`].
    copy_buf: Vec<u8>,
    /// The directories along the path [`Tree::open_dir`] last opened, by name from the root:
    /// consecutive entries mostly share their parents, and walking from the root costs two
    /// syscalls per component. Forgotten whenever anything is removed from the tree, so they
    /// are always what a walk would find.
    open_dirs: RefCell<Vec<(OsString, Rc<OwnedFd>)>>,
    /// Layers begun so far.
    layers: usize,
    /// Symlinks made, with their layer's number and their targets, for
    /// [`Tree::check_links_inside`].
    links: Vec<(usize, Comps, Vec<u8>)>,
}

/// A failure inside a layer, with the entry it concerns (if any).
pub(crate) struct LayerFailure {
    pub(crate) entry: Option<String>,
    pub(crate) error: EntryError,
}

impl Tree {
    pub(crate) fn new(root: OwnedFd, root_path: PathBuf, policy: Policy) -> Tree {
        let privileged = rustix::process::geteuid().is_root();
        Tree {
            root: Rc::new(root),
            root_path,
            policy,
            privileged,
            dir_meta: BTreeMap::new(),
            entries: 0,
            bytes: 0,
            copy_buf: Vec::new(),
            open_dirs: RefCell::new(Vec::new()),
            layers: 0,
            links: Vec::new(),
        }
    }

    /// Fails on the first symlink that resolves outside the tree, with the number of the
    /// layer that made it. A dangling or looping link stays inside; so does one that a later
    /// entry replaced or removed.
    pub(crate) fn check_links_inside(&self) -> Result<(), (usize, LayerFailure)> {
        for (layer, comps, target) in &self.links {
            let path: PathBuf = comps.iter().collect();
            let failure = |error| LayerFailure {
                entry: Some(path.display().to_string()),
                error,
            };
            match rustix::fs::openat2(
                &*self.root,
                &path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(_) | Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {}
                Err(Errno::XDEV) => {
                    return Err((
                        *layer,
                        failure(EntryError::Rejected(format!(
                            "symlink to {:?} leads outside the release",
                            display_name(target)
                        ))),
                    ));
                }
                Err(e) => return Err((*layer, failure(e.into()))),
            }
        }
        Ok(())
    }

    pub(crate) fn root_fd(&self) -> &OwnedFd {
        &self.root
    }

    /// Extracts one layer (already wrapped by [`super::decode::open_layer`]).
    pub(crate) fn apply_layer(
        &mut self,
        mut stream: Budgeted,
        cancel: &AtomicBool,
    ) -> Result<(), LayerFailure> {
        self.layers += 1;
        let mut this_layer = LayerPaths::default();
        let fail = |entry: Option<&[u8]>, error: EntryError| LayerFailure {
            entry: entry.map(display_name),
            error,
        };
        {
            let mut archive = tar::Archive::new(&mut stream);
            // Raw entries: the long-name and PAX records are read here, with a size cap, rather
            // than by `tar` into memory of whatever size the header claims.
            let entries = archive
                .entries()
                .map_err(|e| fail(None, e.into()))?
                .raw(true);
            let mut meta = PendingMeta::default();
            for entry in entries {
                if cancel.load(Ordering::Relaxed) {
                    return Err(fail(None, EntryError::Cancelled));
                }
                let mut entry = entry.map_err(|e| fail(None, e.into()))?;
                self.entries += 1;
                if self.entries > self.policy.limits.max_entries {
                    let name = meta
                        .name
                        .take()
                        .unwrap_or_else(|| entry.path_bytes().into_owned());
                    return Err(fail(
                        Some(&name),
                        EntryError::Limit(format!(
                            "more than {} archive entries",
                            self.policy.limits.max_entries
                        )),
                    ));
                }
                if meta.absorb(&mut entry).map_err(|e| fail(None, e))? {
                    continue;
                }
                let raw_name = meta
                    .name
                    .take()
                    .unwrap_or_else(|| entry.path_bytes().into_owned());
                let link = meta
                    .link
                    .take()
                    .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
                self.apply_entry(&mut entry, &raw_name, link, &mut this_layer)
                    .map_err(|error| fail(Some(&raw_name), error))?;
            }
            if meta.name.is_some() || meta.link.is_some() {
                return Err(fail(
                    None,
                    EntryError::Rejected("long name or PAX record without an entry".into()),
                ));
            }
        }
        // Read to the real end so the gzip trailer (CRC, length) is checked and the budget
        // covers everything the stream holds.
        io::copy(&mut stream, &mut io::sink()).map_err(|e| LayerFailure {
            entry: None,
            error: e.into(),
        })?;
        self.bytes += stream.produced();
        Ok(())
    }

    /// Bytes produced by the layers applied so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_name: &[u8],
        link: Option<Vec<u8>>,
        this_layer: &mut LayerPaths,
    ) -> Result<(), EntryError> {
        let kind = entry.header().entry_type();
        let comps =
            enclosed_components(raw_name).map_err(|r| EntryError::Rejected(r.to_string()))?;
        let Some((name, parent)) = comps.split_last() else {
            // `./` itself: the root is ours, its mode is not the archive's to set.
            if kind.is_dir() {
                return Ok(());
            }
            return Err(EntryError::Rejected("entry names the unpack root".into()));
        };
        let name = name.clone();
        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent, &name, target, this_layer);
        }
        if name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            return Err(EntryError::Rejected(
                "name is reserved for the agent's temporary files".into(),
            ));
        }
        let mode = entry.header().mode()?;
        let mtime = entry.header().mtime().ok().map(|s| Timespec {
            tv_sec: s as i64,
            tv_nsec: 0,
        });
        let perm = self.permitted_mode(mode);

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let dir = self.open_dir(parent, true)?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                // A fresh tree mostly gets new names: create the file in place. O_EXCL never
                // follows a symlink, and the name is ours alone until the staging tree is
                // complete, so a failure just removes it. Only when the name exists does the
                // new file go through a temporary name and a rename over the old one (A3).
                let (fd, tmp) = match rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    flags,
                    Mode::from_raw_mode(0o600),
                ) {
                    Ok(fd) => (fd, None),
                    Err(Errno::EXIST) => {
                        self.clear_dir_at(&dir, parent, &name)?;
                        let tmp = temp_name();
                        let fd = rustix::fs::openat(
                            &dir,
                            &tmp,
                            flags | OFlags::NOFOLLOW,
                            Mode::from_raw_mode(0o600),
                        )?;
                        (fd, Some(tmp))
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut file = File::from(fd);
                let mut buf = std::mem::take(&mut self.copy_buf);
                let written = (|| -> Result<(), EntryError> {
                    copy_with(entry, &mut file, &mut buf)?;
                    self.finish_metadata(file.as_fd(), entry.header(), perm, mtime)?;
                    if let Some(tmp) = &tmp {
                        rustix::fs::renameat(&dir, tmp, &dir, &name)?;
                    }
                    Ok(())
                })();
                self.copy_buf = buf;
                if written.is_err() {
                    let made = tmp.as_deref().map_or(name.as_os_str(), OsStr::new);
                    let _ = rustix::fs::unlinkat(&dir, made, AtFlags::empty());
                }
                written?;
            }
            EntryType::Directory => {
                let dir = self.open_dir(parent, true)?;
                // Mostly new: mkdir first, look at what is there only when something is.
                match rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => match kind_at(&dir, &name)? {
                        Some(FileType::Directory) => {}
                        _ => {
                            self.forget_dir();
                            rustix::fs::unlinkat(&dir, &name, AtFlags::empty())?;
                            rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o755))?;
                        }
                    },
                    Err(e) => return Err(e.into()),
                }
                if self.privileged && self.policy.allow_special {
                    let d = rustix::fs::openat(&dir, &name, dir_flags(), Mode::empty())?;
                    chown_from(&d, entry.header())?;
                }
                self.dir_meta.insert(comps.clone(), (perm, mtime));
            }
            EntryType::Symlink => {
                let target = link
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| EntryError::Rejected("symlink without a target".into()))?;
                let dir = self.open_dir(parent, true)?;
                // Link targets are data: stored as given, never followed by us.
                let tmp = temp_name();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, &tmp)?;
                self.replace_with(&dir, parent, &tmp, &name)?;
                if self.policy.links_inside {
                    self.links.push((self.layers, comps.clone(), target));
                }
            }
            EntryType::Link => {
                let raw_target =
                    link.ok_or_else(|| EntryError::Rejected("hard link without a target".into()))?;
                let target = enclosed_components(&raw_target)
                    .map_err(|r| EntryError::Rejected(format!("hard link target: {r}")))?;
                let not_inside = || {
                    EntryError::Rejected(format!(
                        "hard link target {:?} is not a file already extracted in this tree",
                        display_name(&raw_target)
                    ))
                };
                let (tname, tparent) = target.split_last().ok_or_else(not_inside)?;
                let tdir = match self.open_dir(tparent, false) {
                    Ok(d) => d,
                    Err(EntryError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(not_inside());
                    }
                    Err(EntryError::Rejected(_)) => return Err(not_inside()),
                    Err(e) => return Err(e),
                };
                if kind_at(&tdir, tname)? != Some(FileType::RegularFile) {
                    return Err(not_inside());
                }
                let dir = self.open_dir(parent, true)?;
                let tmp = temp_name();
                rustix::fs::linkat(&tdir, tname, &dir, &tmp, AtFlags::empty())?;
                self.replace_with(&dir, parent, &tmp, &name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !(self.policy.allow_special && self.privileged) {
                    return Err(EntryError::Rejected(
                        "device nodes and FIFOs are not allowed (-allow-special, as root, permits them)".into(),
                    ));
                }
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = entry.header().device_major()?.unwrap_or(0);
                        let minor = entry.header().device_minor()?.unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                let dir = self.open_dir(parent, true)?;
                let tmp = temp_name();
                rustix::fs::mknodat(&dir, &tmp, ft, Mode::from_raw_mode(0o600), dev)?;
                // The name was just made by mknodat, so it is not a link to follow.
                rustix::fs::chmodat(&dir, &tmp, Mode::from_raw_mode(perm), AtFlags::empty())?;
                self.replace_with(&dir, parent, &tmp, &name)?;
            }
            EntryType::GNUSparse => {
                return Err(EntryError::Rejected(
                    "GNU sparse files are not supported".into(),
                ));
            }
            other => {
                return Err(EntryError::Rejected(format!(
                    "unsupported header type flag 0x{:02x} ({:?})",
                    other.as_byte(),
                    other.as_byte() as char
                )));
            }
        }
        this_layer.insert(&comps);
        Ok(())
    }

    /// setuid, setgid and sticky survive only when asked for and running as root.
    fn permitted_mode(&self, mode: u32) -> u32 {
        if self.policy.allow_special && self.privileged {
            mode & 0o7777
        } else {
            mode & 0o777
        }
    }

    fn finish_metadata(
        &self,
        fd: impl AsFd,
        header: &tar::Header,
        perm: u32,
        mtime: Option<Timespec>,
    ) -> Result<(), EntryError> {
        if self.privileged && self.policy.allow_special {
            chown_from(&fd, header)?;
        }
        // fchmod after chown: chown clears setuid/setgid.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
        if let Some(m) = mtime {
            rustix::fs::futimens(
                &fd,
                &Timestamps {
                    last_access: m,
                    last_modification: m,
                },
            )?;
        }
        Ok(())
    }

    /// Renames `tmp` over `name`, first removing a directory that stands there (a later layer
    /// may replace a directory with a file or a link).
    fn replace_with(
        &mut self,
        dir: &OwnedFd,
        parent: &[OsString],
        tmp: &str,
        name: &OsStr,
    ) -> Result<(), EntryError> {
        let res = self
            .clear_dir_at(dir, parent, name)
            .and_then(|_| Ok(rustix::fs::renameat(dir, tmp, dir, name)?));
        // Also after success: renaming a hard link over another name of the same inode does
        // nothing and leaves `tmp` behind (rename(2)).
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        res
    }

    /// Removes `name` if it is a directory, so that a non-directory can take its place.
    fn clear_dir_at(
        &mut self,
        dir: &OwnedFd,
        parent: &[OsString],
        name: &OsStr,
    ) -> Result<(), EntryError> {
        if kind_at(dir, name)? == Some(FileType::Directory) {
            self.remove_path(parent, name)?;
        }
        Ok(())
    }

    /// Removes `parent/name` (any type, recursively) and forgets pending directory metadata
    /// beneath it.
    fn remove_path(&mut self, parent: &[OsString], name: &OsStr) -> Result<(), EntryError> {
        let mut comps: Comps = parent.to_vec();
        comps.push(name.to_os_string());
        // Every component was just opened with O_NOFOLLOW, and this process is the only writer
        // of the staging tree, so this path names the same directory.
        let path = comps.iter().fold(self.root_path.clone(), |p, c| p.join(c));
        self.forget_dir();
        remove_tree(&path)?;
        // Keys under `comps` sort right after it, contiguously: remove just that range
        // (a `retain` over every directory per removal would be quadratic).
        let under: Vec<Comps> = self
            .dir_meta
            .range(comps.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&comps))
            .cloned()
            .collect();
        for k in under {
            self.dir_meta.remove(&k);
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        target: &[u8],
        this_layer: &mut LayerPaths,
    ) -> Result<(), EntryError> {
        if name == OPAQUE_WHITEOUT {
            // Empty the directory of what earlier layers put there; keep this layer's entries.
            let dir = self.open_dir(parent, true)?;
            let parent_key = this_layer.key(parent);
            if !this_layer.opaque_done.insert(parent_key) {
                return Ok(());
            }
            let mut victims = Vec::new();
            for ent in rustix::fs::Dir::read_from(&dir)? {
                let ent = ent?;
                let n = OsStr::from_bytes(ent.file_name().to_bytes());
                if n == "." || n == ".." || this_layer.has_child(parent_key, n) {
                    continue;
                }
                victims.push(n.to_os_string());
            }
            for v in victims {
                self.remove_path(parent, &v)?;
            }
            return Ok(());
        }
        if target.is_empty()
            || target == b"."
            || target == b".."
            || target.starts_with(WHITEOUT_PREFIX.as_bytes())
        {
            return Err(EntryError::Rejected("invalid whiteout".into()));
        }
        let target = OsStr::from_bytes(target);
        let dir = match self.open_dir(parent, false) {
            Ok(d) => d,
            // Nothing there to delete.
            Err(EntryError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if kind_at(&dir, target)?.is_some() {
            self.remove_path(parent, target)?;
        }
        Ok(())
    }

    /// Opens the directory `comps` beneath the root without following any symlink. With
    /// `create`, missing directories are made 0755 (subject to the umask, so never wider).
    fn open_dir(&self, comps: &[OsString], create: bool) -> Result<Rc<OwnedFd>, EntryError> {
        let mut open = self.open_dirs.borrow_mut();
        // Entries come sorted more often than not: most of the path is already open.
        let common = open
            .iter()
            .zip(comps)
            .take_while(|((n, _), c)| n == *c)
            .count();
        open.truncate(common);
        let mut cur = match open.last() {
            Some((_, fd)) => fd.clone(),
            None => self.root.clone(),
        };
        for c in &comps[common..] {
            let next = match rustix::fs::openat(&*cur, c.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&*cur, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&*cur, c.as_os_str(), dir_flags(), Mode::empty())?
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return Err(EntryError::Rejected(format!(
                        "{:?} is not a directory (symlinks are never followed during unpacking)",
                        c
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            cur = Rc::new(next);
            open.push((c.clone(), cur.clone()));
        }
        Ok(cur)
    }

    /// Forgets the directories [`Tree::open_dir`] keeps open (something was removed or
    /// replaced, so a path may now lead elsewhere).
    fn forget_dir(&self) {
        self.open_dirs.borrow_mut().clear();
    }

    /// Applies the recorded directory modes and mtimes, deepest first so that setting a
    /// parent's mtime is not undone by work on its children.
    pub(crate) fn apply_dir_metadata(&mut self) -> Result<(), EntryError> {
        let meta = std::mem::take(&mut self.dir_meta);
        let mut items: Vec<_> = meta.into_iter().collect();
        items.sort_by_key(|item| std::cmp::Reverse(item.0.len()));
        for (comps, (perm, mtime)) in items {
            let fd = match self.open_dir(&comps, false) {
                Ok(fd) => fd,
                Err(_) => continue, // removed or replaced later; nothing to apply
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
            if let Some(m) = mtime {
                rustix::fs::futimens(
                    &fd,
                    &Timestamps {
                        last_access: m,
                        last_modification: m,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Size of the buffer file contents are copied through: large writes mean few syscalls and
/// whole pages (`io::copy` uses 8 KiB).
const COPY_BUF: usize = 1 << 20;

/// `io::copy` through `buf` (grown to [`COPY_BUF`] on first use).
fn copy_with(r: &mut impl Read, w: &mut File, buf: &mut Vec<u8>) -> io::Result<u64> {
    use std::io::Write;
    if buf.len() < COPY_BUF {
        buf.resize(COPY_BUF, 0);
    }
    let mut total = 0;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn temp_name() -> String {
    format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())
}

fn kind_at(dir: &OwnedFd, name: impl AsRef<Path>) -> Result<Option<FileType>, EntryError> {
    match rustix::fs::statat(dir, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn chown_from(fd: &impl AsFd, header: &tar::Header) -> Result<(), EntryError> {
    let uid = u32::try_from(header.uid()?)
        .map_err(|_| EntryError::Rejected("uid out of range".into()))?;
    let gid = u32::try_from(header.gid()?)
        .map_err(|_| EntryError::Rejected("gid out of range".into()))?;
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(())
}
