//! The SQLite schema and connection settings.
//!
//! `synchronous=FULL` with WAL: a commit that returned is on disk, because a console command
//! that printed nothing (success) must survive a power loss. Foreign keys make the database
//! itself refuse a version whose blob row is missing, and a blob row deleted while a version
//! still names it.
//!
//! Names are TEXT compared with the default BINARY collation, so `ORDER BY name` is bolt's
//! bytewise key order.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::Connection;

use super::{Ctx, Result};

/// `PRAGMA user_version` of the schema below. A database with a newer version is refused
/// rather than misread.
pub(super) const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE components (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- One row per blob in files/, referenced or not (GC deletes the unreferenced ones).
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,      -- unix nanoseconds
    verified_at INTEGER              -- unix nanoseconds of the last fsck that re-hashed it
) WITHOUT ROWID;

-- seq is the insertion order: it breaks ctime ties (bumpconf's \"latest\").
CREATE TABLE versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    component TEXT NOT NULL REFERENCES components(name),
    version TEXT NOT NULL,
    hash TEXT NOT NULL REFERENCES blobs(hash),
    ctime_s INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    UNIQUE (component, version)
);
CREATE INDEX versions_by_hash ON versions(hash);
CREATE INDEX versions_by_time ON versions(component, ctime_s, ctime_ns, seq);

-- Finished uploads waiting for addver; path is a file name inside uploads/.
CREATE TABLE uploads (
    hash TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL         -- unix nanoseconds
) WITHOUT ROWID;

-- json holds the exact bytes served as configs/<name>.json.
CREATE TABLE configurations (
    name TEXT PRIMARY KEY,
    json BLOB NOT NULL,
    hash TEXT NOT NULL,
    mtime INTEGER NOT NULL           -- unix seconds
) WITHOUT ROWID;

CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL REFERENCES configurations(name) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    saved_s INTEGER NOT NULL,
    saved_ns INTEGER NOT NULL,
    user TEXT NOT NULL,
    command TEXT NOT NULL,
    json BLOB NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (config, seq)
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_s INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    user TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    addr TEXT NOT NULL,
    command TEXT NOT NULL,
    result TEXT NOT NULL
);
";

/// Version 2: what agents report (`status`). One row per configuration and host, replaced by
/// each report; no foreign key, so that a report about a deleted configuration still shows.
const SCHEMA_V2: &str = "
CREATE TABLE agent_status (
    config TEXT NOT NULL,
    host TEXT NOT NULL,
    hash TEXT NOT NULL,
    error TEXT,                      -- NULL: the agent's last poll succeeded
    reported INTEGER NOT NULL,       -- unix nanoseconds
    addr TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (config, host)
) WITHOUT ROWID;
CREATE INDEX agent_status_by_time ON agent_status(reported);
";

/// Opens (creating if missing) the database at `path` and brings its schema up to date.
pub(super) fn open_db(path: &Path) -> Result<Connection> {
    // SQLite creates a new database (and then its -wal and -shm files, which copy the
    // database's mode) with 0644 under the usual umask; the metadata is as private as the
    // blobs, so the file is created 0600 first.
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    let conn = Connection::open(path).ctx(|| format!("opening {}", path.display()))?;
    configure(&conn).ctx(|| format!("configuring {}", path.display()))?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Housekeeping and a console command may meet; wait rather than fail with SQLITE_BUSY
    // (only possible if someone opens the file with the sqlite3 shell meanwhile).
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx(|| format!("reading user_version of {}", path.display()))?;
    match version {
        0 => {
            let sql = format!(
                "BEGIN IMMEDIATE; {SCHEMA_V1} {SCHEMA_V2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            );
            conn.execute_batch(&sql)
                .ctx(|| format!("creating schema in {}", path.display()))
        }
        1 => {
            let sql = format!(
                "BEGIN IMMEDIATE; {SCHEMA_V2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            );
            conn.execute_batch(&sql)
                .ctx(|| format!("upgrading the schema of {}", path.display()))
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(super::internal(anyhow::anyhow!(
            "{} has schema version {other}, newer than this program's {SCHEMA_VERSION}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_gains_the_status_table_and_keeps_its_data() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA_V1} PRAGMA user_version = 1; INSERT INTO components VALUES ('code');"
            ))
            .unwrap();
        }
        let conn = open_db(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM agent_status", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
        let kept: String = conn
            .query_row("SELECT name FROM components", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "code");
        drop(conn);
        // Opened again, nothing to do.
        open_db(&path).unwrap();
    }
}
