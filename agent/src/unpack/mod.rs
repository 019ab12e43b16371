//! Safe, durable unpacking of a configuration's layers into `unpacked/<id>`.
//!
//! Layers are applied in order into a fresh staging directory `unpacked/<id>.partial-<rand>`
//! (never a reused partial tree: deploy-tools B14). Archives are hostile until proven otherwise:
//! see [`extract`] for the rules. When every layer is in, the whole filesystem is synced once
//! (`syncfs`, far cheaper than an fsync per file), the staging dir is renamed to `unpacked/<id>`,
//! `unpacked/` is fsynced, and only then is the `unpacked/<id>.ok` marker written and made
//! durable (B13). A tree without its marker is never trusted: it is removed and rebuilt.

mod decode;
mod extract;
mod path;
pub mod stream;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags};

use extract::{EntryError, LayerFailure, Tree};
pub use stream::{StreamReader, StreamWriter, stream};

/// What one configuration may make us write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes over all layers.
    pub max_bytes: u64,
    /// Archive entries over all layers.
    pub max_entries: u64,
    /// Decompressed bytes per compressed byte (checked past 64 MiB of output).
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_ratio: 200,
        }
    }
}

/// The unpack policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub limits: Limits,
    /// When running as root: create device nodes and FIFOs, keep setuid/setgid/sticky bits and
    /// the archive's owners. Ignored otherwise.
    pub allow_special: bool,
    /// Refuse the tree when a symlink in it resolves outside it (an absolute target, or `..`
    /// past the root, also through other links): Dewy's releases, where the spec refuses
    /// every symlink. Checked by the kernel once the tree is whole (`RESOLVE_BENEATH`), since
    /// a later entry may change what an earlier link resolves to.
    pub links_inside: bool,
}

/// One layer file to apply.
#[derive(Debug, Clone)]
pub struct LayerFile {
    pub hash: String,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {index} ({hash}): entry {entry:?} rejected: {reason}")]
    Rejected {
        index: usize,
        hash: String,
        entry: String,
        reason: String,
    },
    #[error("layer {index} ({hash}){}: limit exceeded: {reason}", at_entry(.entry))]
    Limit {
        index: usize,
        hash: String,
        entry: Option<String>,
        reason: String,
    },
    #[error("layer {index} ({hash}){}", at_entry(.entry))]
    Layer {
        index: usize,
        hash: String,
        entry: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unpacking interrupted")]
    Cancelled,
}

fn at_entry(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(": entry {e:?}"))
        .unwrap_or_default()
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the built tree `unpacked/<id>` exists together with its `.ok` marker.
pub fn tree_ready(unpacked: &Path, id: &str) -> bool {
    unpacked.join(id).is_dir() && unpacked.join(format!("{id}.ok")).is_file()
}

/// What [`build_tree`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete tree with its marker was already there.
    Reused,
    Built,
}

/// Makes `unpacked/<id>` from `layers` (in order) unless a complete one exists.
/// `cancel` is checked between layers.
pub fn build_tree(
    unpacked: &Path,
    id: &str,
    layers: &[LayerFile],
    policy: &Policy,
    cancel: &AtomicBool,
) -> Result<Outcome, UnpackError> {
    let inputs = layers
        .iter()
        .map(|l| LayerInput::File {
            hash: l.hash.clone(),
            path: l.path.clone(),
        })
        .collect();
    build_tree_from(unpacked, id, inputs, policy, cancel)
}

/// Where one layer's bytes come from when building a tree.
pub enum LayerInput {
    /// A cached blob, already verified.
    File { hash: String, path: PathBuf },
    /// A blob arriving from the registry while it is downloaded (see [`stream`]). Unverified
    /// bytes only ever reach the staging directory, and the stream ends (instead of failing)
    /// only once the whole blob has matched its hash, so a tree containing a layer that did
    /// not verify is never renamed into place.
    Stream { hash: String, reader: StreamReader },
}

/// [`build_tree`] from inputs that may still be arriving.
pub fn build_tree_from(
    unpacked: &Path,
    id: &str,
    layers: Vec<LayerInput>,
    policy: &Policy,
    cancel: &AtomicBool,
) -> Result<Outcome, UnpackError> {
    std::fs::create_dir_all(unpacked).map_err(io_err("cannot create", unpacked))?;
    if tree_ready(unpacked, id) {
        return Ok(Outcome::Reused);
    }
    let unpacked_fd = open_dir(unpacked).map_err(io_err("cannot open", unpacked))?;
    remove_stale_partials(unpacked);
    let final_path = unpacked.join(id);
    let ok_path = unpacked.join(format!("{id}.ok"));
    // A marker without its tree, or a tree without its marker, is the remains of a crash;
    // removed before building, so that on a nearly full disk it does not take the room the
    // new tree needs.
    match std::fs::remove_file(&ok_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("cannot remove", &ok_path)(e));
        }
        _ => {}
    }
    if std::fs::symlink_metadata(&final_path).is_ok() {
        tracing::warn!(path = %final_path.display(), "removing incomplete unpacked tree (no .ok marker)");
        remove_tree(&final_path).map_err(io_err("cannot remove", &final_path))?;
    }

    let staging = Staging::create(unpacked, id)?;
    let root = open_dir(&staging.path).map_err(io_err("cannot open", &staging.path))?;
    let mut tree = Tree::new(root, staging.path.clone(), *policy);
    let count = layers.len();
    let mut hashes = Vec::with_capacity(count);
    for (i, layer) in layers.into_iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(UnpackError::Cancelled);
        }
        let index = i + 1;
        let (hash, input): (String, Box<dyn io::Read>) = match layer {
            LayerInput::File { hash, path } => {
                let file = File::open(&path).map_err(io_err("cannot open layer", &path))?;
                (hash, Box::new(file))
            }
            LayerInput::Stream { hash, reader } => (hash, Box::new(reader)),
        };
        let stream = decode::open_layer(input, tree.bytes(), policy.limits).map_err(|source| {
            UnpackError::Layer {
                index,
                hash: hash.clone(),
                entry: None,
                source,
            }
        })?;
        tree.apply_layer(stream, cancel)
            .map_err(|f| layer_error(index, &hash, f))?;
        hashes.push(hash);
    }
    if policy.links_inside {
        tree.check_links_inside().map_err(|(index, f)| {
            let hash = hashes.get(index.wrapping_sub(1)).map_or("", String::as_str);
            layer_error(index, hash, f)
        })?;
    }
    tree.apply_dir_metadata().map_err(|e| {
        layer_error(
            count,
            "directory metadata",
            LayerFailure {
                entry: None,
                error: e,
            },
        )
    })?;

    // One syncfs for the whole tree: per-file fsync costs a journal commit per file.
    rustix::fs::syncfs(tree.root_fd()).map_err(|e| UnpackError::Io {
        what: "cannot sync",
        path: staging.path.clone(),
        source: e.into(),
    })?;
    std::fs::rename(&staging.path, &final_path).map_err(io_err("cannot rename", &staging.path))?;
    staging.disarm();
    // Unmarked, the tree is never used: when the marker cannot be made durable (a full disk),
    // the tree goes too instead of holding the space until the next attempt.
    if let Err(e) = mark_built(&unpacked_fd, unpacked, &ok_path) {
        let _ = std::fs::remove_file(&ok_path);
        if let Err(r) = remove_tree(&final_path) {
            tracing::warn!(path = %final_path.display(), error = %r, "cannot remove unmarked tree");
        }
        return Err(e);
    }
    Ok(Outcome::Built)
}

/// Writes the `.ok` marker of a tree just renamed into `unpacked/`, both durably.
fn mark_built(unpacked_fd: &OwnedFd, unpacked: &Path, ok_path: &Path) -> Result<(), UnpackError> {
    rustix::fs::fsync(unpacked_fd).map_err(|e| io_err("cannot sync", unpacked)(e.into()))?;
    let marker = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(ok_path)
        .map_err(io_err("cannot create", ok_path))?;
    marker.sync_all().map_err(io_err("cannot sync", ok_path))?;
    rustix::fs::fsync(unpacked_fd).map_err(|e| io_err("cannot sync", unpacked)(e.into()))
}

fn layer_error(index: usize, hash: &str, f: LayerFailure) -> UnpackError {
    let hash = hash.to_string();
    match f.error {
        EntryError::Rejected(reason) => UnpackError::Rejected {
            index,
            hash,
            entry: f.entry.unwrap_or_default(),
            reason,
        },
        EntryError::Limit(reason) => UnpackError::Limit {
            index,
            hash,
            entry: f.entry,
            reason,
        },
        EntryError::Cancelled => UnpackError::Cancelled,
        EntryError::Io(source) => UnpackError::Layer {
            index,
            hash,
            entry: f.entry,
            source,
        },
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Staging dirs left by a crash. We hold the directory lock, so none is in use.
fn remove_stale_partials(unpacked: &Path) {
    let Ok(rd) = std::fs::read_dir(unpacked) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        if name.to_string_lossy().contains(".partial-")
            && let Err(e) = remove_tree(&ent.path())
        {
            tracing::warn!(path = %ent.path().display(), error = %e, "cannot remove stale staging dir");
        }
    }
}

/// The staging directory; removed on drop unless renamed into place.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(unpacked: &Path, id: &str) -> Result<Staging, UnpackError> {
        let path = unpacked.join(format!("{id}.partial-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(io_err("cannot create", &path))?;
        Ok(Staging { path, armed: true })
    }
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove staging dir");
        }
    }
}

/// Removes a file, link or directory tree, without following links, making directories
/// writable as needed (an archive may ship read-only directories).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            std::fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))?;
    }
    for ent in std::fs::read_dir(path)? {
        make_dirs_writable(&ent?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
