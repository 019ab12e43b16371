//! Version pruning (`-maxver`) and blob garbage collection (spec 1.11, fixing B9).

use std::collections::HashSet;

use rusqlite::TransactionBehavior;

use super::uploads::remove_if_exists;
use super::{Ctx, Result, Store};

impl Store {
    /// Keeps at most `keep` versions per component, never removing a version that a current
    /// configuration or any history entry names. Returns how many were removed.
    ///
    /// Precisely: a version is removed when it is not among the `keep` newest of its component
    /// (by ctime, then insertion order) and no configuration, current or in history, names it.
    /// So the `keep` newest always stay, plus every referenced one, and the rollback target that
    /// `bumpconf` prints cannot be pruned away (spec B9). `keep == 0` disables pruning, as
    /// `-maxver 0` did.
    pub fn prune_versions(&self, keep: usize) -> Result<usize> {
        if keep == 0 {
            return Ok(0);
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| "begin".into())?;
        let referenced = referenced_versions(&tx)?;
        let all: Vec<(i64, String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT seq, component, version FROM versions
                     ORDER BY component, ctime_s DESC, ctime_ns DESC, seq DESC",
                )
                .ctx(|| "listing versions".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .ctx(|| "listing versions".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "listing versions".into())?
        };
        let mut removed = 0;
        let mut rank = 0usize;
        let mut current: Option<&str> = None;
        for (seq, component, version) in &all {
            if current != Some(component.as_str()) {
                current = Some(component);
                rank = 0;
            }
            rank += 1;
            if rank <= keep || referenced.contains(&(component.clone(), version.clone())) {
                continue;
            }
            tx.execute("DELETE FROM versions WHERE seq = ?1", [seq])
                .ctx(|| "deleting version".into())?;
            tracing::info!(component, version, "pruned version");
            removed += 1;
        }
        tx.commit().ctx(|| "commit of pruning".into())?;
        Ok(removed)
    }

    /// Removes blobs no version references, and files in `files/` the DB does not know.
    /// Returns how many.
    ///
    /// Runs under the connection lock, which `add_version_seen_by` holds from its lookup
    /// through its rename and commit: a blob is never deleted between another command's check
    /// and its use.
    /// A file is removed before its row's deletion commits, so a crash leaves a row without a
    /// file, which the next GC drops again (and `blob_path` does not serve meanwhile).
    pub fn gc_blobs(&self) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| "begin".into())?;
        let unreferenced: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT hash FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = b.hash)")
                .ctx(|| "listing unreferenced blobs".into())?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .ctx(|| "listing unreferenced blobs".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "listing unreferenced blobs".into())?
        };
        let mut removed = 0;
        for hash in &unreferenced {
            tx.execute("DELETE FROM blobs WHERE hash = ?1", [hash])
                .ctx(|| "deleting blob row".into())?;
            if super::is_blob_name(hash) {
                let path = self.inner.files.join(hash);
                if path.exists() {
                    removed += 1;
                }
                remove_if_exists(&path)?;
            }
            tracing::info!(%hash, "removed unreferenced blob");
        }
        let known: HashSet<String> = {
            let mut stmt = tx
                .prepare("SELECT hash FROM blobs")
                .ctx(|| "listing blobs".into())?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .ctx(|| "listing blobs".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "listing blobs".into())?
        };
        let entries = std::fs::read_dir(&self.inner.files)
            .ctx(|| format!("listing {}", self.inner.files.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", self.inner.files.display()))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| known.contains(n)) {
                continue;
            }
            let is_file = entry
                .file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false);
            if !is_file {
                tracing::warn!(path = %entry.path().display(), "unexpected entry in files/, left alone");
                continue;
            }
            // A crash between addver's rename and its commit, or a leftover temporary file.
            remove_if_exists(&entry.path())?;
            tracing::info!(path = %entry.path().display(), "removed file unknown to the database");
            removed += 1;
        }
        tx.commit().ctx(|| "commit of blob GC".into())?;
        Ok(removed)
    }
}

/// Every (component, version) named by a current configuration or a history entry.
pub(super) fn referenced_versions(
    conn: &rusqlite::Connection,
) -> Result<HashSet<(String, String)>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT DISTINCT json_extract(l.value, '$.Name'), json_extract(l.value, '$.Version')
             FROM {}",
            super::ALL_LAYERS
        ))
        .ctx(|| "listing referenced versions".into())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })
        .ctx(|| "listing referenced versions".into())?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| "listing referenced versions".into())
}
