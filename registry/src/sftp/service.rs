//! Read-only SFTP for agents (spec 1.10, fixed: unknown configs are ENOENT, stable listings).
//!
//! The view has exactly these names, after lexical cleaning of the client path:
//! `/`, `/configs`, `/files`, `/configs/<name>.json` (the configuration's JSON, snapshotted at
//! open) and `/files/<sha256>` (a stored blob). Everything else does not exist, and every write
//! or mutation is refused with PERMISSION_DENIED.
//!
//! Fixed relative to deploy-tools (spec 8.B5): stat of an unknown configuration is NO_SUCH_FILE,
//! the root listing works before any blob exists, `/configs` is listed in name order, `/files`
//! lists only stored blobs, and an unknown blob fails at OPEN rather than at the first READ.
//! A blob is read through the descriptor opened at OPEN, so a GC that removes it meanwhile does
//! not break a download in progress.
//!
//! A key limited to some configurations (`configs=`, see [`crate::keys::Restrictions`]) sees
//! only those, and only the blobs that they or their history name: everything else does not
//! exist for it (spec A7: any agent key read every configuration and blob).

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use russh::ChannelStream;
use russh::server::Msg;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, FileMode, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncWrite};

use super::path::{ServicePath, parse_digest};
use super::{
    MAX_HANDLES, MAX_READ_WRITE, bad_handle, denied, failure, internal, no_such_file,
    store_failure, too_many_handles,
};
use crate::keys::Restrictions;
use crate::store::Store;

/// A limited key's readable blobs are worked out again on a miss at most this often: each time
/// reads every configuration it may see, with its history.
pub(super) const READABLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Directory entries sent per READDIR answer (well inside one packet).
const READDIR_BATCH: usize = 128;

/// Serves one service SFTP session until the client closes it.
// The frozen entry point; the session code uses `serve_then` (exit-status before close).
#[allow(dead_code)]
pub async fn serve(stream: ChannelStream<Msg>, store: Store) {
    serve_on(
        stream,
        store,
        Restrictions::default(),
        super::Context::alone(async {}),
    )
    .await;
}

/// Like [`serve`], in the connection's context `cx`: its `before_close` runs after the session
/// ended and before the channel closes, the place to send `exit-status` 0 as sshd does, which
/// `scp` (SFTP mode) requires to report success.
pub async fn serve_then(
    stream: ChannelStream<Msg>,
    store: Store,
    scope: Restrictions,
    cx: super::Context<impl Future<Output = ()> + Send>,
) {
    serve_on(stream, store, scope, cx).await;
}

/// [`serve_then`] on any stream (tests drive it over an in-memory pipe).
pub async fn serve_on<S, F>(stream: S, store: Store, scope: Restrictions, cx: super::Context<F>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: Future<Output = ()>,
{
    let handler = Service {
        store,
        scope,
        readable: None,
        handles: HashMap::new(),
        next_handle: 0,
    };
    super::run(stream, handler, cx).await;
}

struct Service {
    store: Store,
    /// The login key's restrictions: `configs=` limits what this view shows.
    scope: Restrictions,
    /// With `configs=`: the blobs the key may read, as last computed, and when.
    readable: Option<(std::collections::HashSet<String>, std::time::Instant)>,
    handles: HashMap<String, Open>,
    next_handle: u64,
}

enum Open {
    /// The configuration's JSON as it was at OPEN.
    Config(Arc<[u8]>),
    /// A blob, read with positioned reads; `size` is fixed because blobs are immutable.
    Blob {
        file: Arc<std::fs::File>,
        size: u64,
    },
    Dir {
        entries: Vec<File>,
        next: usize,
    },
}

/// Runs a blocking store or filesystem call off the async workers.
async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, StatusReply>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(what, &e))
}

fn now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// The registry process's own uid/gid, the owner shown for virtual entries (as the original).
fn owner() -> (u32, u32) {
    static OWNER: OnceLock<(u32, u32)> = OnceLock::new();
    // /proc/self belongs to the process's effective uid/gid.
    *OWNER.get_or_init(|| {
        std::fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0))
    })
}

fn virtual_attrs(mode: FileMode, perms: u32, size: u64, mtime: u32) -> FileAttributes {
    let (uid, gid) = owner();
    FileAttributes {
        size: Some(size),
        uid: Some(uid),
        gid: Some(gid),
        permissions: Some(mode.bits() | perms),
        atime: Some(mtime),
        mtime: Some(mtime),
        ..FileAttributes::default()
    }
}

/// `/` and `/configs`: `drwxr-x---`, as the original.
fn virtual_dir() -> FileAttributes {
    virtual_attrs(FileMode::DIR, 0o750, 0, now())
}

/// `/configs/<name>.json`: `-rw-r--r--`, sized to the JSON.
fn config_attrs(len: usize) -> FileAttributes {
    virtual_attrs(FileMode::REG, 0o644, len as u64, now())
}

/// `/files`: the real directory when it exists, else an empty `drwx------` (before the first
/// blob is stored the original failed here; we show an empty directory).
fn files_dir_attrs(dir: &std::path::Path) -> Result<FileAttributes, StatusReply> {
    match std::fs::metadata(dir) {
        Ok(md) => Ok(FileAttributes::from(&md)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(virtual_attrs(FileMode::DIR, 0o700, 0, now()))
        }
        Err(e) => Err(internal("stat files dir", &e)),
    }
}

/// Path of a stored blob as a regular file, or NO_SUCH_FILE.
fn blob_file(store: &Store, digest: &common::digest::Digest) -> Result<PathBuf, StatusReply> {
    store.blob_path(digest).ok_or_else(no_such_file)
}

fn open_blob(
    store: &Store,
    digest: &common::digest::Digest,
) -> Result<(std::fs::File, u64), StatusReply> {
    let path = blob_file(store, digest)?;
    let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => no_such_file(),
        _ => internal("open blob", &format!("{}: {e}", path.display())),
    })?;
    let md = file.metadata().map_err(|e| internal("stat blob", &e))?;
    if !md.is_file() {
        return Err(no_such_file());
    }
    Ok((file, md.len()))
}

fn stat_blob(
    store: &Store,
    digest: &common::digest::Digest,
) -> Result<FileAttributes, StatusReply> {
    let path = blob_file(store, digest)?;
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.is_file() => Ok(FileAttributes::from(&md)),
        Ok(_) => Err(no_such_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_such_file()),
        Err(e) => Err(internal("stat blob", &format!("{}: {e}", path.display()))),
    }
}

fn config_json(store: &Store, scope: &Restrictions, name: &str) -> Result<Vec<u8>, StatusReply> {
    if !scope.may_see(name) {
        return Err(no_such_file());
    }
    match store.config_json(name) {
        Ok(Some(json)) => Ok(json),
        Ok(None) => Err(no_such_file()),
        Err(e) => Err(store_failure(e)),
    }
}

/// Stored blobs only: names that are digests, regular files (never temp files or anything
/// else that may sit in `files/`), in name order.
fn list_blobs(dir: &std::path::Path) -> Result<Vec<File>, StatusReply> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(internal("list blobs", &format!("{}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| internal("list blobs", &e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if parse_digest(&name).is_none() {
            continue;
        }
        match entry.metadata() {
            Ok(md) if md.is_file() => out.push(File::new(name, FileAttributes::from(&md))),
            // Removed meanwhile (GC), or not a plain file: not a blob.
            _ => {}
        }
    }
    out.sort_by(|a, b| a.filename.cmp(&b.filename));
    Ok(out)
}

fn list_configs(store: &Store, scope: &Restrictions) -> Result<Vec<File>, StatusReply> {
    let mut names = store.configurations().map_err(store_failure)?;
    names.retain(|n| scope.may_see(n));
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // Deleted between the two calls: skip it, as a later listing would.
        if let Ok(Some(json)) = store.config_json(&name) {
            out.push(File::new(format!("{name}.json"), config_attrs(json.len())));
        }
    }
    Ok(out)
}

fn list_root(store: &Store) -> Result<Vec<File>, StatusReply> {
    let files = files_dir_attrs(&store.blobs_dir())?;
    let mut configs = virtual_dir();
    configs.mtime = files.mtime;
    Ok(vec![
        File::new("configs", configs),
        File::new("files", files),
    ])
}

/// Stat of `path`; a blob must have passed [`Service::may_read`].
fn stat_path(
    store: &Store,
    scope: &Restrictions,
    path: ServicePath,
) -> Result<FileAttributes, StatusReply> {
    match path {
        ServicePath::Root | ServicePath::ConfigsDir => Ok(virtual_dir()),
        ServicePath::FilesDir => files_dir_attrs(&store.blobs_dir()),
        ServicePath::Config(name) => {
            config_json(store, scope, &name).map(|j| config_attrs(j.len()))
        }
        ServicePath::Blob(digest) => stat_blob(store, &digest),
        ServicePath::Unknown => Err(no_such_file()),
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

fn eof() -> StatusReply {
    StatusCode::Eof.with_message("End of file")
}

impl Service {
    fn add_handle(&mut self, open: Open) -> String {
        let handle = self.next_handle.to_string();
        self.next_handle += 1;
        self.handles.insert(handle.clone(), open);
        handle
    }

    /// The blobs a key with `configs=` may read, computed again unless that was done within
    /// [`READABLE_RECHECK`] (the configurations change while an agent stays connected);
    /// `None` for a key without it, which reads them all.
    async fn refresh_readable(
        &mut self,
    ) -> Result<Option<&std::collections::HashSet<String>>, StatusReply> {
        if self.scope.configs.is_none() {
            return Ok(None);
        }
        if self
            .readable
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < READABLE_RECHECK)
        {
            return Ok(self.readable.as_ref().map(|(set, _)| set));
        }
        let (store, scope) = (self.store.clone(), self.scope.clone());
        let set = blocking("list layers", move || {
            store
                .layer_hashes(&|name| scope.may_see(name))
                .map_err(store_failure)
        })
        .await??;
        let (set, _) = self.readable.insert((set, std::time::Instant::now()));
        Ok(Some(set))
    }

    /// Whether the key may read blob `digest`: any key without `configs=`; else one that a
    /// configuration it may see names. Computed at the first need and again on a miss.
    async fn may_read(&mut self, digest: &common::digest::Digest) -> Result<bool, StatusReply> {
        let hex = digest.to_hex();
        if self
            .readable
            .as_ref()
            .is_some_and(|(set, _)| set.contains(&hex))
        {
            return Ok(true);
        }
        Ok(self
            .refresh_readable()
            .await?
            .is_none_or(|r| r.contains(&hex)))
    }
}

impl super::server::View for Service {}

impl russh_sftp::server::Handler for Service {
    type Error = StatusReply;

    /// Every request this view does not serve is refused as the original's views refused
    /// them: PERMISSION_DENIED (write, setstat, remove, mkdir, rmdir, rename, readlink, symlink,
    /// ...). Unknown extended requests are OP_UNSUPPORTED (see `extended`).
    fn unimplemented(&self) -> StatusReply {
        denied()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, StatusReply> {
        Ok(super::version())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, StatusReply> {
        Ok(Name {
            id,
            files: vec![File::dummy(super::path::clean(&path))],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        let path = ServicePath::parse(&path);
        if let ServicePath::Blob(digest) = &path
            && !self.may_read(digest).await?
        {
            return Err(no_such_file());
        }
        let (store, scope) = (self.store.clone(), self.scope.clone());
        let attrs = blocking("stat", move || stat_path(&store, &scope, path)).await??;
        Ok(Attrs { id, attrs })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        // Nothing in this view is a symlink.
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, StatusReply> {
        let attrs = match self.handles.get(&handle) {
            None => return Err(bad_handle()),
            Some(Open::Config(json)) => config_attrs(json.len()),
            Some(Open::Dir { .. }) => virtual_dir(),
            Some(Open::Blob { file, .. }) => {
                let file = Arc::clone(file);
                let md = blocking("fstat", move || file.metadata()).await?;
                FileAttributes::from(&md.map_err(|e| internal("fstat blob", &e))?)
            }
        };
        Ok(Attrs { id, attrs })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, StatusReply> {
        if pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        ) {
            return Err(denied());
        }
        if self.handles.len() >= MAX_HANDLES {
            return Err(too_many_handles());
        }
        let (store, scope) = (self.store.clone(), self.scope.clone());
        let open = match ServicePath::parse(&filename) {
            ServicePath::Config(name) => {
                let json =
                    blocking("open config", move || config_json(&store, &scope, &name)).await??;
                Open::Config(json.into())
            }
            ServicePath::Blob(digest) => {
                if !self.may_read(&digest).await? {
                    return Err(no_such_file());
                }
                let (file, size) =
                    blocking("open blob", move || open_blob(&store, &digest)).await??;
                Open::Blob {
                    file: Arc::new(file),
                    size,
                }
            }
            ServicePath::Root | ServicePath::ConfigsDir | ServicePath::FilesDir => {
                return Err(failure("not a regular file"));
            }
            ServicePath::Unknown => return Err(no_such_file()),
        };
        Ok(Handle {
            id,
            handle: self.add_handle(open),
        })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusReply> {
        let len = u64::from(len.min(MAX_READ_WRITE));
        match self.handles.get(&handle) {
            None => Err(bad_handle()),
            Some(Open::Dir { .. }) => Err(failure("is a directory")),
            Some(Open::Config(json)) => {
                let size = json.len() as u64;
                if offset >= size {
                    return Err(eof());
                }
                // Both bounds are <= json.len(), which is a usize.
                let start = offset as usize;
                let end = (offset + len).min(size) as usize;
                Ok(Data {
                    id,
                    data: json[start..end].to_vec(),
                })
            }
            Some(Open::Blob { file, size }) => {
                if offset >= *size || len == 0 {
                    return Err(eof());
                }
                // At most MAX_READ_WRITE, so it fits a usize.
                let want = len.min(*size - offset) as usize;
                // A page-cached pread of <= 255 KiB takes tens of microseconds: done in place
                // (measured in `read_strategies`: a blocking-pool hop per read costs ~4x more).
                let mut data = vec![0u8; want];
                let n = file
                    .read_at(&mut data, offset)
                    .map_err(|e| internal("read blob", &e))?;
                data.truncate(n);
                if data.is_empty() {
                    return Err(eof());
                }
                Ok(Data { id, data })
            }
        }
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, StatusReply> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(bad_handle()),
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(too_many_handles());
        }
        let (store, scope) = (self.store.clone(), self.scope.clone());
        let entries = match ServicePath::parse(&path) {
            ServicePath::Root => blocking("list /", move || list_root(&store)).await??,
            ServicePath::ConfigsDir => {
                blocking("list configs", move || list_configs(&store, &scope)).await??
            }
            ServicePath::FilesDir => {
                let mut blobs =
                    blocking("list files", move || list_blobs(&store.blobs_dir())).await??;
                if let Some(readable) = self.refresh_readable().await? {
                    blobs.retain(|b| readable.contains(&b.filename));
                }
                blobs
            }
            ServicePath::Config(_) | ServicePath::Blob(_) => {
                return Err(failure("not a directory"));
            }
            ServicePath::Unknown => return Err(no_such_file()),
        };
        Ok(Handle {
            id,
            handle: self.add_handle(Open::Dir { entries, next: 0 }),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, StatusReply> {
        let Some(Open::Dir { entries, next }) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        if *next >= entries.len() {
            return Err(eof());
        }
        let end = (*next + READDIR_BATCH).min(entries.len());
        let files = entries[*next..end].to_vec();
        *next = end;
        Ok(Name { id, files })
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        _data: Vec<u8>,
    ) -> Result<Packet, StatusReply> {
        super::extended(id, &request)
    }
}
