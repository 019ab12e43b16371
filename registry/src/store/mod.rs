//! The registry's storage: metadata in SQLite (`<dir>/registry.sqlite3`), immutable blobs in
//! `<dir>/files/<sha256>`, durable uploads in `<dir>/uploads/`.
//!
//! Order of writes, so that `kill -9` at any moment leaves no dangling reference and no orphan
//! that is never collected:
//! - an upload is written to `uploads/`, fsynced, then recorded (hash → path) in the DB;
//! - `addver` links/renames the upload into `files/<hash>` and fsyncs `files/` *before* the
//!   transaction that references it; a blob on disk without a reference is collected by GC,
//!   a reference is never written for a blob that is not durable;
//! - GC deletes a blob only in the same transaction that proves it unreferenced.
//!
//! All methods are synchronous (SQLite); the async server calls them from `spawn_blocking`.
//! Error texts are deploy-tools' (spec 1.8), word for word.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::Configuration;
use common::console::render::{AuditRow, HistoryRow};
use common::digest::Digest;
use common::timefmt::OffsetDateTime;

/// Who runs a command, for the audit log and history.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user: String,
    /// `SHA256:...`
    pub key_fingerprint: String,
    pub remote_addr: String,
}

/// Limits and policies of the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Uploads not registered by `addver` within this age are deleted (original: 30 min).
    pub upload_ttl: Duration,
    /// Largest accepted upload, bytes.
    pub max_upload_bytes: u64,
    /// Most uploads pending (written, not yet used by addver or expired) at once.
    pub max_pending_uploads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            upload_ttl: Duration::from_secs(30 * 60),
            max_upload_bytes: 64 << 30,
            max_pending_uploads: 1000,
        }
    }
}

/// A store error. `Display` is the exact console text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no uploaded file with given hash found")]
    NoUpload,
    #[error("version {0:?} already exists")]
    VersionExists(String),
    #[error("no version {version:?} for component {component:?} found")]
    NoVersion { component: String, version: String },
    #[error("configuration {0:?} not found")]
    ConfigNotFound(String),
    #[error("configuration has no layer for component {0:?}")]
    NoLayer(String),
    #[error("no components found")]
    NoComponents,
    #[error("no component {0:?} found")]
    NoComponent(String),
    #[error("no versions for component {0:?} found")]
    NoVersions(String),
    #[error("version is used by configuration {0:?}")]
    VersionInUse(String),
    #[error("component is used by configuration {0:?}")]
    ComponentInUse(String),
    /// delcomp of an unknown component: `"<c>" component not found`.
    #[error("{0:?} component not found")]
    UnknownComponent(String),
    /// delconf of an unknown configuration: `"<n>" configuration not found`.
    #[error("{0:?} configuration not found")]
    UnknownConfiguration(String),
    /// rollback: no such history entry / nothing to roll back to.
    #[error("{0}")]
    History(String),
    /// Upload refused by a limit (size, count).
    #[error("{0}")]
    Limit(String),
    /// Anything else. The message shown to clients is generic; details go to the log only,
    /// so server paths never leak (spec A11).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Result of `fsck`.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    /// One line per problem (missing blob, hash mismatch, dangling reference, orphan blob...).
    pub problems: Vec<String>,
}

/// What an import of a deploy-tools `state.db` brought over.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub components: usize,
    pub versions: usize,
    pub configurations: usize,
    pub history_entries: usize,
}

/// Handle to the store; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Store {
    _private: (),
}

/// An upload in progress (one SFTP write-open). The SFTP layer calls `finish` on CLOSE and, as
/// the original does, for handles still open when the session ends. Dropped without `finish`,
/// the file stays in `uploads/` unregistered and expiry removes it.
pub struct Upload {
    _private: (),
}

impl Upload {
    /// Writes `data` at `offset`. Sequential writes are hashed as they arrive; out-of-order
    /// writes make `finish` re-read the file. Fails with `StoreError::Limit` past the size limit.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let _ = (offset, data);
        todo!()
    }

    /// Hashes (if not done while writing), fsyncs and registers the upload so that `addver
    /// -hash` finds it, even after a restart, until it expires. Returns its digest and size.
    pub fn finish(self) -> Result<(Digest, u64)> {
        todo!()
    }
}

impl Store {
    /// Opens (creating `dir` and its layout when missing) and takes the directory lock so that
    /// a second registry cannot run on the same `dir`. If `dir` holds a deploy-tools
    /// `state.db` and no `registry.sqlite3` yet, imports it first (same hashes, same blobs).
    pub fn open(dir: &Path, options: Options) -> Result<Store> {
        let _ = (dir, options);
        todo!()
    }

    pub fn dir(&self) -> &Path {
        todo!()
    }

    // --- uploads ---------------------------------------------------------------------------

    pub fn begin_upload(&self) -> Result<Upload> {
        todo!()
    }

    // --- console commands --------------------------------------------------------------------

    /// `addver`. The hash may name a pending upload or content already stored in `files/`.
    pub fn add_version(&self, component: &str, version: &str, hash: &str, actor: &Actor) -> Result<()> {
        let _ = (component, version, hash, actor);
        todo!()
    }

    /// `addconf`: creates or silently replaces (as the original). Records a history entry.
    pub fn add_conf(&self, name: &str, layers: &[(String, String)], actor: &Actor) -> Result<()> {
        let _ = (name, layers, actor);
        todo!()
    }

    /// `changeconf`. Records a history entry.
    pub fn change_conf(&self, name: &str, component: &str, version: &str, actor: &Actor) -> Result<()> {
        let _ = (name, component, version, actor);
        todo!()
    }

    /// `bumpconf`: sets the layer to the component's newest version (by ctime, then by insertion
    /// order). Returns the previous version when it changed. Records a history entry.
    pub fn bump_conf(&self, name: &str, component: &str, actor: &Actor) -> Result<Option<String>> {
        let _ = (name, component, actor);
        todo!()
    }

    pub fn show_conf(&self, name: &str) -> Result<Configuration> {
        let _ = name;
        todo!()
    }

    /// Versions of a component, oldest first. Unknown component: empty.
    pub fn show_comp(&self, component: &str) -> Result<Vec<(OffsetDateTime, String)>> {
        let _ = component;
        todo!()
    }

    /// Component names, sorted bytewise.
    pub fn components(&self) -> Result<Vec<String>> {
        todo!()
    }

    /// Configuration names, sorted bytewise.
    pub fn configurations(&self) -> Result<Vec<String>> {
        todo!()
    }

    pub fn del_ver(&self, component: &str, version: &str, actor: &Actor) -> Result<()> {
        let _ = (component, version, actor);
        todo!()
    }

    pub fn del_comp(&self, component: &str, actor: &Actor) -> Result<()> {
        let _ = (component, actor);
        todo!()
    }

    /// Deletes the configuration and its history (as the original). `force` is checked by the
    /// console, not here.
    pub fn del_conf(&self, name: &str, actor: &Actor) -> Result<()> {
        let _ = (name, actor);
        todo!()
    }

    /// Every saved state, newest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let _ = name;
        todo!()
    }

    /// Restores history entry `to` (default: the newest entry whose hash differs from the
    /// current one). Fails if a version it names no longer exists. Records a history entry.
    /// Returns the restored configuration.
    pub fn rollback(&self, name: &str, to: Option<u64>, actor: &Actor) -> Result<Configuration> {
        let _ = (name, to, actor);
        todo!()
    }

    /// Appends an audit record.
    pub fn record_audit(&self, row: &AuditRow) -> Result<()> {
        let _ = row;
        todo!()
    }

    /// The newest `limit` audit records, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        let _ = limit;
        todo!()
    }

    // --- service view --------------------------------------------------------------------------

    /// The exact bytes of `configs/<name>.json`, if the configuration exists.
    pub fn config_json(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let _ = name;
        todo!()
    }

    /// `<dir>/files`.
    pub fn blobs_dir(&self) -> PathBuf {
        todo!()
    }

    /// Path of a stored blob, if the store knows it (referenced or not) and it is on disk.
    pub fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        let _ = digest;
        todo!()
    }

    // --- housekeeping --------------------------------------------------------------------------

    /// Deletes uploads older than the TTL that no addver used. Returns how many.
    pub fn expire_uploads(&self) -> Result<usize> {
        todo!()
    }

    /// Keeps at most `keep` versions per component, never removing a version that a current
    /// configuration or any history entry names. Returns how many were removed.
    pub fn prune_versions(&self, keep: usize) -> Result<usize> {
        let _ = keep;
        todo!()
    }

    /// Removes blobs no version references, and files in `files/` the DB does not know.
    /// Returns how many.
    pub fn gc_blobs(&self) -> Result<usize> {
        todo!()
    }

    /// Re-hashes every blob and checks every reference.
    pub fn fsck(&self) -> Result<FsckReport> {
        todo!()
    }
}
