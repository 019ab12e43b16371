//! `fsck`: re-hash every blob and check every reference. Reports, never repairs.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};

use rusqlite::params;
use tokio_util::sync::CancellationToken;

use super::uploads::hash_reader;
use super::{Ctx, FsckReport, Result, Store, StoreError, unix_nanos};

/// A blob's reader that fails once `stop` is cancelled, so that a large blob does not hold
/// an interrupted fsck until it is hashed.
pub(super) struct Stoppable<'a> {
    pub(super) file: &'a File,
    pub(super) stop: &'a CancellationToken,
}

impl Read for Stoppable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_cancelled() {
            return Err(io::Error::other("fsck interrupted"));
        }
        self.file.read(buf)
    }
}

impl Store {
    /// Re-hashes every blob and checks every reference.
    ///
    /// The blob list is read under the connection lock, the hashing (which may take minutes)
    /// runs without it, and `verified_at` is recorded afterwards for the blobs that passed.
    /// Problem lines name files relative to the registry directory. Once `stop` is cancelled
    /// (the client went away, or pressed Ctrl-C), it ends with [`StoreError::Interrupted`] and
    /// records nothing.
    pub fn fsck(&self, stop: &CancellationToken) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let blobs: Vec<(String, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT hash, size FROM blobs ORDER BY hash")
                .ctx(|| "listing blobs".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .ctx(|| "listing blobs".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "listing blobs".into())?
        };
        let mut verified = Vec::new();
        let mut missing = HashSet::new();
        for (hash, size) in &blobs {
            if stop.is_cancelled() {
                return Err(StoreError::Interrupted("fsck"));
            }
            let path = self.inner.files.join(hash);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.problems.push(format!("missing blob files/{hash}"));
                    missing.insert(hash.clone());
                    continue;
                }
                Err(e) => {
                    tracing::error!("fsck: opening {}: {e}", path.display());
                    report
                        .problems
                        .push(format!("unreadable blob files/{hash}: {}", e.kind()));
                    continue;
                }
            };
            let (digest, len) = match hash_reader(&mut Stoppable { file: &file, stop }) {
                Ok(r) => r,
                Err(_) if stop.is_cancelled() => return Err(StoreError::Interrupted("fsck")),
                Err(e) => {
                    tracing::error!("fsck: reading {}: {e}", path.display());
                    report
                        .problems
                        .push(format!("unreadable blob files/{hash}: {}", e.kind()));
                    continue;
                }
            };
            report.blobs_checked += 1;
            report.bytes_checked += len;
            let actual = hex::encode(digest.0);
            if actual != *hash {
                report.problems.push(format!(
                    "hash mismatch for files/{hash}: content hashes to {actual}"
                ));
            } else if i64::try_from(len).ok() != Some(*size) {
                report.problems.push(format!(
                    "size mismatch for files/{hash}: {len} bytes, recorded {size}"
                ));
            } else {
                verified.push(hash.clone());
            }
        }
        let conn = self.conn();
        let now = unix_nanos(common::timefmt::now());
        for hash in &verified {
            conn.execute(
                "UPDATE blobs SET verified_at = ?1 WHERE hash = ?2",
                params![now, hash],
            )
            .ctx(|| "recording verification".into())?;
        }
        // Versions whose blob is missing: what agents would fail to download.
        let mut stmt = conn
            .prepare("SELECT component, version, hash FROM versions ORDER BY component, version")
            .ctx(|| "listing versions".into())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .ctx(|| "listing versions".into())?;
        for row in rows {
            let (component, version, hash) = row.ctx(|| "listing versions".into())?;
            if missing.contains(&hash) {
                report.problems.push(format!(
                    "version {version:?} of component {component:?} references missing blob {hash}"
                ));
            }
        }
        // Layers of current configurations whose version is gone or changed content.
        let mut stmt = conn
            .prepare(
                "SELECT c.name, json_extract(l.value, '$.Name'), json_extract(l.value, '$.Version'),
                        json_extract(l.value, '$.Hash'), v.hash
                 FROM configurations c, json_each(CAST(c.json AS TEXT), '$.Layers') l
                 LEFT JOIN versions v ON v.component = json_extract(l.value, '$.Name')
                                     AND v.version = json_extract(l.value, '$.Version')
                 ORDER BY c.name",
            )
            .ctx(|| "checking configurations".into())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .ctx(|| "checking configurations".into())?;
        for row in rows {
            let (config, component, version, layer_hash, stored) =
                row.ctx(|| "checking configurations".into())?;
            match stored {
                None => report.problems.push(format!(
                    "configuration {config:?} names version {version:?} of component {component:?}, which does not exist"
                )),
                Some(h) if h != layer_hash => report.problems.push(format!(
                    "configuration {config:?} layer {component:?} {version:?} has hash {layer_hash}, the version has {h}"
                )),
                Some(_) => {}
            }
        }
        let known: HashSet<&str> = blobs.iter().map(|(h, _)| h.as_str()).collect();
        let entries = std::fs::read_dir(&self.inner.files)
            .ctx(|| format!("listing {}", self.inner.files.display()))?;
        let mut unknown = Vec::new();
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", self.inner.files.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(name.as_str()) {
                unknown.push(name);
            }
        }
        unknown.sort();
        for name in unknown {
            report
                .problems
                .push(format!("unknown file files/{name} (gc removes it)"));
        }
        Ok(report)
    }
}
