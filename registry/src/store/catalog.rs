//! Console commands (spec 1.8) and what the service side reads (spec 1.10).
//!
//! Each writing command is one `BEGIN IMMEDIATE` transaction. Every saved configuration state
//! is also appended to `history` (spec B8), which `history` lists and `rollback` restores.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use common::config::ComponentVersion;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    Actor, AuditRow, Configuration, Ctx, Digest, HistoryRow, OffsetDateTime, Result, Store,
    StoreError, is_blob_name, join_time, split_time, sync_dir, unix_nanos,
};

/// One stored version.
struct VersionRow {
    hash: String,
    ctime: OffsetDateTime,
}

fn begin(conn: &mut rusqlite::Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(|| "begin transaction".into())
}

fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().ctx(|| "commit".into())
}

fn lookup_version(
    tx: &rusqlite::Connection,
    component: &str,
    version: &str,
) -> Result<Option<VersionRow>> {
    let row: Option<(String, i64, i64)> = tx
        .query_row(
            "SELECT hash, ctime_s, ctime_ns FROM versions WHERE component = ?1 AND version = ?2",
            [component, version],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .ctx(|| format!("looking up version {version:?} of {component:?}"))?;
    row.map(|(hash, s, ns)| {
        Ok(VersionRow {
            hash,
            ctime: join_time(s, ns)?,
        })
    })
    .transpose()
}

fn require_version(
    tx: &rusqlite::Connection,
    component: &str,
    version: &str,
) -> Result<VersionRow> {
    lookup_version(tx, component, version)?.ok_or_else(|| StoreError::NoVersion {
        component: component.to_string(),
        version: version.to_string(),
    })
}

fn decode_config(name: &str, json: &[u8]) -> Result<Configuration> {
    Configuration::from_json(json).ctx(|| format!("decoding stored configuration {name:?}"))
}

fn load_config(tx: &rusqlite::Connection, name: &str) -> Result<Option<Configuration>> {
    let json: Option<Vec<u8>> = tx
        .query_row(
            "SELECT json FROM configurations WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .ctx(|| format!("loading configuration {name:?}"))?;
    json.map(|j| decode_config(name, &j)).transpose()
}

fn require_config(tx: &rusqlite::Connection, name: &str) -> Result<Configuration> {
    load_config(tx, name)?.ok_or_else(|| StoreError::ConfigNotFound(name.to_string()))
}

/// Saves `config` as the current state and appends it to the history, which keeps its newest
/// `keep_history` entries (all with 0).
pub(super) fn save_config(
    tx: &rusqlite::Connection,
    config: &Configuration,
    user: &str,
    command: &str,
    keep_history: usize,
) -> Result<()> {
    let json = config.to_json();
    let (s, _) = split_time(config.mtime);
    tx.execute(
        "INSERT INTO configurations (name, json, hash, mtime) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET json = excluded.json, hash = excluded.hash, mtime = excluded.mtime",
        params![config.name, json.as_bytes(), config.hash, s],
    )
    .ctx(|| format!("saving configuration {:?}", config.name))?;
    append_history(
        tx,
        &config.name,
        config.mtime,
        user,
        command,
        json.as_bytes(),
        &config.hash,
        keep_history,
    )
}

/// Appends a history entry of `name`, then drops all but its newest `keep` (none with 0):
/// versions named only by dropped entries become prunable by `-maxver`.
#[allow(clippy::too_many_arguments)]
pub(super) fn append_history(
    tx: &rusqlite::Connection,
    name: &str,
    saved: OffsetDateTime,
    user: &str,
    command: &str,
    json: &[u8],
    hash: &str,
    keep: usize,
) -> Result<()> {
    let (s, ns) = split_time(saved);
    tx.execute(
        "INSERT INTO history (config, seq, saved_s, saved_ns, user, command, json, hash)
         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM history WHERE config = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
        params![name, s, ns, user, command, json, hash],
    )
    .ctx(|| format!("appending history of {name:?}"))?;
    if keep > 0 {
        tx.execute(
            "DELETE FROM history WHERE config = ?1
             AND seq <= (SELECT max(seq) FROM history WHERE config = ?1) - ?2",
            params![name, i64::try_from(keep).unwrap_or(i64::MAX)],
        )
        .ctx(|| format!("trimming history of {name:?}"))?;
    }
    Ok(())
}

/// The current configurations (bytewise) with a layer matching the condition.
fn configs_using(
    tx: &rusqlite::Connection,
    component: &str,
    version: Option<&str>,
) -> Result<Vec<String>> {
    tx.prepare(
        "SELECT DISTINCT c.name FROM configurations c, json_each(CAST(c.json AS TEXT), '$.Layers') l
         WHERE json_extract(l.value, '$.Name') = ?1
           AND (?2 IS NULL OR json_extract(l.value, '$.Version') = ?2)
         ORDER BY c.name",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![component, version], |r| r.get(0))?
            .collect()
    })
    .ctx(|| format!("looking for configurations using {component:?}"))
}

/// Replaces the layer of `component`, keeping its position (changeconf, bumpconf).
fn replace_layer(
    config: &Configuration,
    component: &str,
    version: &str,
    row: &VersionRow,
) -> Result<Vec<ComponentVersion>> {
    let mut layers = config.layers.clone();
    let layer = layers
        .iter_mut()
        .find(|l| l.name == component)
        .ok_or_else(|| StoreError::NoLayer(component.to_string()))?;
    *layer = ComponentVersion::new(
        component.to_string(),
        version.to_string(),
        row.hash.clone(),
        row.ctime,
    );
    Ok(layers)
}

impl Store {
    /// `addver` by a key that sees every configuration.
    #[cfg(test)]
    pub fn add_version(
        &self,
        component: &str,
        version: &str,
        hash: &str,
        actor: &Actor,
    ) -> Result<()> {
        self.add_version_seen_by(component, version, hash, actor, |_| true)
    }

    /// `addver`. The hash may name a pending upload or content already stored in `files/`.
    ///
    /// A key that sees only the configurations `may_see` accepts is refused when another
    /// configuration uses `component` (its `bumpconf` would deploy the new version). That is
    /// checked in the transaction that adds the version, so a configuration added meanwhile
    /// cannot slip between the check and the change.
    ///
    /// Order: the version check first (so `already exists` leaves the upload pending, spec
    /// B1), then the blob is made durable in `files/`, then one transaction references it.
    /// All under the connection lock, so GC cannot interleave (spec B3).
    pub fn add_version_seen_by(
        &self,
        component: &str,
        version: &str,
        hash: &str,
        actor: &Actor,
        may_see: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        if let Some(other) = configs_using(&tx, component, None)?
            .into_iter()
            .find(|c| !may_see(c))
        {
            return Err(StoreError::SharedComponent {
                component: component.to_string(),
                configuration: other,
            });
        }
        if !is_blob_name(hash) {
            return Err(StoreError::NoUpload);
        }
        let upload: Option<(String, i64)> = tx
            .query_row(
                "SELECT path, size FROM uploads WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx(|| "looking up upload".into())?;
        let stored: Option<i64> = tx
            .query_row("SELECT size FROM blobs WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()
            .ctx(|| "looking up blob".into())?;
        let blob_path = self.inner.files.join(hash);
        let stored = stored.filter(|_| blob_path.is_file());
        if upload.is_none() && stored.is_none() {
            return Err(StoreError::NoUpload);
        }
        if lookup_version(&tx, component, version)?.is_some() {
            return Err(StoreError::VersionExists(version.to_string()));
        }
        // An upload whose file vanished (removed by hand) is no upload: forget it.
        let upload = match upload {
            Some((name, size)) => {
                let src = self.inner.uploads.join(&name);
                match std::fs::File::open(&src) {
                    Ok(f) => {
                        f.sync_all().ctx(|| format!("fsync of {}", src.display()))?;
                        Some((src, size))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(upload = %name, %hash, "registered upload file vanished");
                        tx.execute("DELETE FROM uploads WHERE hash = ?1", [hash])
                            .ctx(|| "dropping upload".into())?;
                        None
                    }
                    Err(e) => return Err(e).ctx(|| format!("opening {}", src.display())),
                }
            }
            None => None,
        };
        let size = match (upload, stored) {
            (Some((src, size)), _) => {
                // Same content as any blob already there, so replacing it is harmless.
                std::fs::rename(&src, &blob_path)
                    .ctx(|| format!("rename {} {}", src.display(), blob_path.display()))?;
                sync_dir(&self.inner.files)?;
                sync_dir(&self.inner.uploads)?;
                tx.execute("DELETE FROM uploads WHERE hash = ?1", [hash])
                    .ctx(|| "dropping upload".into())?;
                size
            }
            (None, Some(size)) => size,
            (None, None) => {
                commit(tx)?;
                return Err(StoreError::NoUpload);
            }
        };
        let now = common::timefmt::now();
        let (s, ns) = split_time(now);
        tx.execute(
            "INSERT INTO blobs (hash, size, stored_at) VALUES (?1, ?2, ?3) ON CONFLICT(hash) DO NOTHING",
            params![hash, size, unix_nanos(now)],
        )
        .ctx(|| "recording blob".into())?;
        tx.execute(
            "INSERT OR IGNORE INTO components (name) VALUES (?1)",
            [component],
        )
        .ctx(|| "recording component".into())?;
        tx.execute(
            "INSERT INTO versions (component, version, hash, ctime_s, ctime_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![component, version, hash, s, ns],
        )
        .ctx(|| "recording version".into())?;
        commit(tx)?;
        tracing::info!(user = %actor.user, component, version, hash, "version added");
        Ok(())
    }

    /// `addconf`: creates or silently replaces (as the original). Records a history entry.
    pub fn add_conf(&self, name: &str, layers: &[(String, String)], actor: &Actor) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        let mut resolved = Vec::with_capacity(layers.len());
        for (component, version) in layers {
            let row = require_version(&tx, component, version)?;
            resolved.push(ComponentVersion::new(
                component.clone(),
                version.clone(),
                row.hash,
                row.ctime,
            ));
        }
        let config = Configuration::new(name.to_string(), common::timefmt::now(), resolved);
        save_config(
            &tx,
            &config,
            &actor.user,
            "addconf",
            self.inner.options.max_history,
        )?;
        commit(tx)
    }

    /// `changeconf`. Records a history entry.
    pub fn change_conf(
        &self,
        name: &str,
        component: &str,
        version: &str,
        actor: &Actor,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        let row = require_version(&tx, component, version)?;
        let config = require_config(&tx, name)?;
        let layers = replace_layer(&config, component, version, &row)?;
        let config = Configuration::new(name.to_string(), common::timefmt::now(), layers);
        save_config(
            &tx,
            &config,
            &actor.user,
            "changeconf",
            self.inner.options.max_history,
        )?;
        commit(tx)
    }

    /// `bumpconf`: sets the layer to the component's newest version (by ctime, then by insertion
    /// order). Returns the previous version when it changed. Records a history entry.
    pub fn bump_conf(&self, name: &str, component: &str, actor: &Actor) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        let any: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM components)", [], |r| r.get(0))
            .ctx(|| "counting components".into())?;
        if !any {
            return Err(StoreError::NoComponents);
        }
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM components WHERE name = ?1)",
                [component],
                |r| r.get(0),
            )
            .ctx(|| "looking up component".into())?;
        if !known {
            return Err(StoreError::NoComponent(component.to_string()));
        }
        let newest: Option<(String, String, i64, i64)> = tx
            .query_row(
                "SELECT version, hash, ctime_s, ctime_ns FROM versions WHERE component = ?1
                 ORDER BY ctime_s DESC, ctime_ns DESC, seq DESC LIMIT 1",
                [component],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .ctx(|| "looking up newest version".into())?;
        let Some((version, hash, s, ns)) = newest else {
            return Err(StoreError::NoVersions(component.to_string()));
        };
        let row = VersionRow {
            hash,
            ctime: join_time(s, ns)?,
        };
        let config = require_config(&tx, name)?;
        let previous = config
            .layers
            .iter()
            .find(|l| l.name == component)
            .map(|l| l.version.clone());
        let layers = replace_layer(&config, component, &version, &row)?;
        let config = Configuration::new(name.to_string(), common::timefmt::now(), layers);
        save_config(
            &tx,
            &config,
            &actor.user,
            "bumpconf",
            self.inner.options.max_history,
        )?;
        commit(tx)?;
        Ok(previous.filter(|p| *p != version))
    }

    pub fn show_conf(&self, name: &str) -> Result<Configuration> {
        require_config(&self.conn(), name)
    }

    /// Versions of a component, oldest first. Unknown component: empty.
    pub fn show_comp(&self, component: &str) -> Result<Vec<(OffsetDateTime, String)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT ctime_s, ctime_ns, version FROM versions WHERE component = ?1
                 ORDER BY ctime_s, ctime_ns, seq",
            )
            .ctx(|| "listing versions".into())?;
        let rows = stmt
            .query_map([component], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .ctx(|| "listing versions".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (s, ns, version) = row.ctx(|| "listing versions".into())?;
            out.push((join_time(s, ns)?, version));
        }
        Ok(out)
    }

    /// Component names, sorted bytewise.
    pub fn components(&self) -> Result<Vec<String>> {
        self.names("SELECT name FROM components ORDER BY name COLLATE BINARY")
    }

    /// Configuration names, sorted bytewise.
    pub fn configurations(&self) -> Result<Vec<String>> {
        self.names("SELECT name FROM configurations ORDER BY name COLLATE BINARY")
    }

    fn names(&self, sql: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).ctx(|| sql.to_string())?;
        let rows = stmt.query_map([], |r| r.get(0)).ctx(|| sql.to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| sql.to_string())
    }

    pub fn del_ver(&self, component: &str, version: &str, actor: &Actor) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        require_version(&tx, component, version)?;
        if let Some(config) = configs_using(&tx, component, Some(version))?
            .into_iter()
            .next()
        {
            return Err(StoreError::VersionInUse(config));
        }
        tx.execute(
            "DELETE FROM versions WHERE component = ?1 AND version = ?2",
            [component, version],
        )
        .ctx(|| "deleting version".into())?;
        commit(tx)?;
        tracing::info!(user = %actor.user, component, version, "version deleted");
        Ok(())
    }

    pub fn del_comp(&self, component: &str, actor: &Actor) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM components WHERE name = ?1)",
                [component],
                |r| r.get(0),
            )
            .ctx(|| "looking up component".into())?;
        if !known {
            return Err(StoreError::UnknownComponent(component.to_string()));
        }
        if let Some(config) = configs_using(&tx, component, None)?.into_iter().next() {
            return Err(StoreError::ComponentInUse(config));
        }
        tx.execute("DELETE FROM versions WHERE component = ?1", [component])
            .ctx(|| "deleting versions".into())?;
        tx.execute("DELETE FROM components WHERE name = ?1", [component])
            .ctx(|| "deleting component".into())?;
        commit(tx)?;
        tracing::info!(user = %actor.user, component, "component deleted");
        Ok(())
    }

    /// Deletes the configuration and its history (as the original). `force` is checked by the
    /// console, not here.
    pub fn del_conf(&self, name: &str, actor: &Actor) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        tx.execute("DELETE FROM history WHERE config = ?1", [name])
            .ctx(|| "deleting history".into())?;
        let n = tx
            .execute("DELETE FROM configurations WHERE name = ?1", [name])
            .ctx(|| "deleting configuration".into())?;
        if n == 0 {
            return Err(StoreError::UnknownConfiguration(name.to_string()));
        }
        commit(tx)?;
        tracing::info!(user = %actor.user, name, "configuration deleted");
        Ok(())
    }

    /// Every saved state, newest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let conn = self.conn();
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM configurations WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )
            .ctx(|| "looking up configuration".into())?;
        if !exists {
            return Err(StoreError::ConfigNotFound(name.to_string()));
        }
        history_rows(&conn, name, None)
    }

    /// Restores history entry `to` (default: the newest entry whose hash differs from the
    /// current one). Fails if a version it names no longer exists. Records a history entry.
    /// Returns the restored configuration.
    pub fn rollback(&self, name: &str, to: Option<u64>, actor: &Actor) -> Result<Configuration> {
        let mut conn = self.conn();
        let tx = begin(&mut conn)?;
        let current = require_config(&tx, name)?;
        let target = match to {
            Some(seq) => history_rows(&tx, name, Some(seq))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    StoreError::History(format!(
                        "no history entry {seq} for configuration {name:?}"
                    ))
                })?,
            None => history_rows(&tx, name, None)?
                .into_iter()
                .find(|row| row.config.hash != current.hash)
                .ok_or_else(|| {
                    StoreError::History(format!(
                        "nothing to roll back to for configuration {name:?}"
                    ))
                })?,
        };
        for layer in &target.config.layers {
            let still = lookup_version(&tx, &layer.name, &layer.version)?;
            if still.is_none_or(|v| v.hash != layer.hash) {
                return Err(StoreError::History(format!(
                    "cannot roll back: version {:?} of component {:?} no longer exists",
                    layer.version, layer.name
                )));
            }
        }
        // Layers are rebuilt (File = files/<hash>) but keep the Ctime they had when saved.
        let layers = target
            .config
            .layers
            .iter()
            .map(|l| {
                ComponentVersion::new(l.name.clone(), l.version.clone(), l.hash.clone(), l.ctime)
            })
            .collect();
        let config = Configuration::new(name.to_string(), common::timefmt::now(), layers);
        save_config(
            &tx,
            &config,
            &actor.user,
            "rollback",
            self.inner.options.max_history,
        )?;
        commit(tx)?;
        tracing::info!(user = %actor.user, name, seq = target.seq, "configuration rolled back");
        Ok(config)
    }

    /// Appends an audit record, then drops all but the newest `max_audit` (none with 0).
    pub fn record_audit(&self, row: &AuditRow) -> Result<()> {
        let (s, ns) = split_time(row.time);
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (time_s, time_ns, user, fingerprint, addr, command, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                s,
                ns,
                row.user,
                row.key_fingerprint,
                row.remote_addr,
                row.command,
                row.result
            ],
        )
        .ctx(|| "recording audit".into())?;
        let keep = self.inner.options.max_audit;
        if keep > 0 {
            conn.execute(
                "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?1",
                [i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .ctx(|| "trimming audit".into())?;
        }
        Ok(())
    }

    /// The newest `limit` audit records, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT time_s, time_ns, user, fingerprint, addr, command, result FROM
                 (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )
            .ctx(|| "listing audit".into())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map([limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    AuditRow {
                        time: OffsetDateTime::UNIX_EPOCH,
                        user: r.get(2)?,
                        key_fingerprint: r.get(3)?,
                        remote_addr: r.get(4)?,
                        command: r.get(5)?,
                        result: r.get(6)?,
                    },
                ))
            })
            .ctx(|| "listing audit".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (s, ns, mut row) = row.ctx(|| "listing audit".into())?;
            row.time = join_time(s, ns)?;
            out.push(row);
        }
        Ok(out)
    }

    /// The layer hashes of the configurations that `include` accepts, as they are and as their
    /// history has them: the blobs that a key limited to those configurations may read (a
    /// rollback target's too).
    pub fn layer_hashes(&self, include: &dyn Fn(&str) -> bool) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT DISTINCT t.config, json_extract(l.value, '$.Hash') FROM {}",
                super::ALL_LAYERS
            ))
            .ctx(|| "listing layers".into())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .ctx(|| "listing layers".into())?;
        let mut out = HashSet::new();
        for row in rows {
            if let (name, Some(hash)) = row.ctx(|| "listing layers".into())?
                && include(&name)
            {
                out.insert(hash);
            }
        }
        Ok(out)
    }

    /// The exact bytes of `configs/<name>.json`, if the configuration exists.
    pub fn config_json(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.conn()
            .query_row(
                "SELECT json FROM configurations WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .ctx(|| format!("loading configuration {name:?}"))
    }

    /// Path of a stored blob, if the store knows it (referenced or not) and it is on disk.
    pub fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        let hash = hex::encode(digest.0);
        let known = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE hash = ?1)",
            [&hash],
            |r| r.get::<_, bool>(0),
        );
        match known {
            Ok(true) => Some(self.inner.files.join(&hash)).filter(|p| p.is_file()),
            Ok(false) => None,
            Err(e) => {
                tracing::error!("store: looking up blob {hash}: {e}");
                None
            }
        }
    }
}

/// History rows of `name`, newest first; only `seq` when given.
fn history_rows(
    conn: &rusqlite::Connection,
    name: &str,
    seq: Option<u64>,
) -> Result<Vec<HistoryRow>> {
    let mut stmt = conn
        .prepare(
            "SELECT seq, saved_s, saved_ns, user, command, json FROM history
             WHERE config = ?1 AND (?2 IS NULL OR seq = ?2) ORDER BY seq DESC",
        )
        .ctx(|| "listing history".into())?;
    let seq = seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    let rows = stmt
        .query_map(params![name, seq], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })
        .ctx(|| "listing history".into())?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, s, ns, user, command, json) = row.ctx(|| "listing history".into())?;
        out.push(HistoryRow {
            seq: u64::try_from(seq).unwrap_or(0),
            saved_at: join_time(s, ns)?,
            user,
            command,
            config: decode_config(name, &json)?,
        });
    }
    Ok(out)
}
