//! The registry's storage: metadata in SQLite (`<dir>/registry.sqlite3`), immutable blobs in
//! `<dir>/files/<sha256>`, durable uploads in `<dir>/uploads/`.
//!
//! Order of writes, so that `kill -9` or a power loss at any moment leaves no dangling
//! reference and no orphan that is never collected:
//! - an upload is written to `uploads/`, fsynced (file and directory), then recorded
//!   (hash → file) in the DB; an unrecorded file is removed by upload expiry after the TTL;
//! - `addver` checks the version first (so `already exists` leaves the upload pending, spec
//!   B1), renames the upload to `files/<hash>`, fsyncs `files/` *before* the transaction that
//!   references it and drops the upload row; a blob on disk without a row (a crash after the
//!   rename) is collected by GC, and a reference is never written for a blob that is not
//!   durable;
//! - GC deletes a blob inside the transaction that proves it unreferenced; a crash after the
//!   unlink leaves a row without a file, which is never served and is dropped by the next GC.
//!
//! All methods are synchronous (SQLite); the async server calls them from `spawn_blocking`.
//! Error texts are deploy-tools' (spec 1.8), word for word.
//!
//! Every command runs under one connection mutex and, when it writes, in one `BEGIN IMMEDIATE`
//! transaction. `addver` and the blob GC hold that mutex across their file-system steps too, so
//! a GC can never delete a blob between `addver`'s rename and its commit (spec B3), and two
//! `addver`s of one hash are simply serialised. Long reads of blob content (upload hashing,
//! `fsck`) happen outside the mutex.
//!
//! Layout: `schema` (tables, pragmas), `uploads` (durable uploads and their expiry), `catalog`
//! (console commands and the service view), `status` (what agents report), `housekeeping`
//! (pruning, GC), `fsck`, `migrate` + `bolt` (one-off import of a deploy-tools `state.db`).

mod bolt;
mod catalog;
mod fsck;
mod housekeeping;
mod migrate;
mod schema;
mod status;
mod uploads;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use common::config::Configuration;
use common::console::render::{AuditRow, HistoryRow};
use common::digest::Digest;
use common::timefmt::OffsetDateTime;
use rusqlite::Connection;

#[cfg(test)]
pub(crate) mod tests;

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
    /// Most uploads being written with their own hashing and disk threads at once (two
    /// threads and up to ~10 MiB of queues each). Past it, an upload is written from the
    /// blocking pool one write at a time and hashed at CLOSE: slower, but a client opening
    /// hundreds of uploads cannot make us start thousands of threads.
    pub max_threaded_uploads: usize,
    /// History entries kept per configuration (`-maxhist`; 0 keeps all). Versions named only
    /// by dropped entries become prunable.
    pub max_history: usize,
    /// Audit records kept (`-maxaudit`; 0 keeps all).
    pub max_audit: usize,
    /// Free space of the data directory's filesystem that uploads leave alone (`-minfree`;
    /// 0: none), so that an upload cannot fill the disk the metadata (and the host) needs.
    pub min_free_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            upload_ttl: Duration::from_secs(30 * 60),
            max_upload_bytes: 64 << 30,
            max_pending_uploads: 1000,
            max_threaded_uploads: 32,
            max_history: 20,
            max_audit: 100_000,
            min_free_bytes: 1 << 30,
        }
    }
}

/// A store error. `Display` is the exact console text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", common::console::NO_UPLOAD)]
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
    /// `addver` with a key limited by `configs=`, to a component that a configuration it
    /// may not see uses.
    #[error(
        "component {component:?} is used by configuration {configuration:?}, which is not among this key's configs="
    )]
    SharedComponent {
        component: String,
        configuration: String,
    },
    /// `forget -host` of a host with no report kept for that configuration.
    #[error("no report of host {host:?} for configuration {config:?} found")]
    NoReport { config: String, host: String },
    /// A long command stopped on request (its client went away, or pressed Ctrl-C).
    #[error("{0} interrupted")]
    Interrupted(&'static str),
    /// Upload refused by a limit (size, count).
    #[error("{0}")]
    Limit(String),
    /// `open`: another process holds the directory lock.
    #[error("another deploy-registry is using {0}")]
    Locked(String),
    /// The data directory's filesystem is full (or over quota). Shown as is: it names no
    /// path and tells the operator what to do; the cause (with paths) goes to the log.
    #[error("the registry's disk is full")]
    DiskFull(#[source] anyhow::Error),
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
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    files: PathBuf,
    uploads: PathBuf,
    options: Options,
    conn: Mutex<Connection>,
    /// Uploads begun and not yet finished or dropped; they count against `max_pending_uploads`
    /// together with the finished ones waiting for `addver`.
    open_uploads: AtomicUsize,
    /// Uploads holding their own threads, up to `max_threaded_uploads`.
    threaded_uploads: AtomicUsize,
    /// Holds the `flock` on `registry.lock` for the store's life.
    _lock: File,
}

pub use uploads::{DIRECT_ALIGN, Upload};

const DB_FILE: &str = "registry.sqlite3";
const LOCK_FILE: &str = "registry.lock";
const BOLT_FILE: &str = "state.db";

impl Store {
    /// Opens (creating `dir` and its layout when missing) and takes the directory lock so that
    /// a second registry cannot run on the same `dir`. If `dir` holds a deploy-tools
    /// `state.db` and no `registry.sqlite3` yet, imports it first (same hashes, same blobs).
    pub fn open(dir: &Path, options: Options) -> Result<Store> {
        make_dir(dir)?;
        let lock = take_lock(dir)?;
        let files = dir.join("files");
        let uploads = dir.join("uploads");
        make_dir(&files)?;
        make_dir(&uploads)?;
        let db_path = dir.join(DB_FILE);
        let bolt_path = dir.join(BOLT_FILE);
        let import = !db_path.exists() && bolt_path.exists();
        // The import writes into a temporary database that is renamed into place only when
        // complete: a crash half-way leaves no registry.sqlite3, so the next start imports again.
        let conn = if import {
            migrate::import_into_new_db(&bolt_path, &files, &db_path)?
        } else {
            schema::open_db(&db_path)?
        };
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                files,
                uploads,
                options,
                conn: Mutex::new(conn),
                open_uploads: AtomicUsize::new(0),
                threaded_uploads: AtomicUsize::new(0),
                _lock: lock,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `<dir>/files`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.inner.files.clone()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back when the Transaction was
        // dropped during unwinding, so the connection itself is still usable.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Creates `dir` with mode 0700 if it is missing (an existing directory is left as it is).
fn make_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(internal(
            anyhow::Error::new(e).context(format!("creating directory {}", dir.display())),
        )),
    }
}

fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
        .map_err(internal)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            // Not Internal: the operator must see why the registry does not start.
            Err(StoreError::Locked(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(internal(
            anyhow::Error::new(e).context(format!("locking {}", path.display())),
        )),
    }
}

/// Logs the full error (with paths) and wraps it; clients only ever see "internal error", or
/// that the disk is full.
fn internal(err: anyhow::Error) -> StoreError {
    tracing::error!("store: {err:#}");
    if is_disk_full(&err) {
        StoreError::DiskFull(err)
    } else {
        StoreError::Internal(err)
    }
}

/// ENOSPC or EDQUOT from a file operation, or SQLite's own "database or disk is full".
fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let io_full = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(common::disk::is_full);
        let sqlite_full = matches!(
            e.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull
        );
        io_full || sqlite_full
    })
}

/// `.ctx("what")` on any fallible call: an `Internal` error whose log line says what failed.
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> Ctx<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| internal(anyhow::Error::new(e).context(what())))
    }
}

/// fsyncs a directory, making renames and creations in it durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync of directory {}", dir.display()))
}

/// True for the form of a blob name: 64 lowercase hex characters. Only such names are ever
/// joined onto `files/`, so a hash from a client can never become a path elsewhere.
fn is_blob_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Times are stored as (Unix seconds, nanoseconds) so that any time, even Go's zero time from
/// an imported state.db, fits, and ordering keeps full precision.
fn split_time(t: OffsetDateTime) -> (i64, i64) {
    (t.unix_timestamp(), i64::from(t.nanosecond()))
}

fn join_time(secs: i64, nanos: i64) -> Result<OffsetDateTime> {
    let base = OffsetDateTime::from_unix_timestamp(secs)
        .ctx(|| format!("stored time {secs} out of range"))?;
    Ok(base + time::Duration::nanoseconds(nanos))
}

fn unix_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// The time [`unix_nanos`] stored.
fn from_unix_nanos(nanos: i64) -> Result<OffsetDateTime> {
    join_time(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000),
    )
}

/// For a FROM clause: every layer of every configuration, as it is and as its history has it,
/// as `t.config` (the configuration's name) and `l.value` (the layer's JSON object).
const ALL_LAYERS: &str = "(SELECT name AS config, json FROM configurations
                           UNION ALL SELECT config, json FROM history) t,
                          json_each(CAST(t.json AS TEXT), '$.Layers') l";
