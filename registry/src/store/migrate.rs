//! One-off import of a deploy-tools `state.db` (spec 1.12) on the first start in its directory.
//!
//! Blobs stay where they are (`files/<hash>`, the same layout), and each configuration's
//! `current` JSON is kept byte for byte, so the fleet sees the same hashes and bytes after the
//! switch. `state.db` itself is never modified.
//!
//! The import is written to `registry.sqlite3.import` and renamed to `registry.sqlite3` only
//! when complete: a crash during it leaves no database, and the next start imports again.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use common::config::{ComponentVersion, Configuration};
use rusqlite::{Connection, params};

use super::bolt::{Bucket, Db};
use super::{
    ImportReport, OffsetDateTime, Result, internal, is_blob_name, split_time, sync_dir, unix_nanos,
};

/// Who and which command the imported history rows name (the original recorded neither).
const IMPORT_USER: &str = "deploy-tools";
const IMPORT_COMMAND: &str = "import";

/// Everything read from the bolt file before anything is written.
#[derive(Default)]
struct Imported {
    /// Component names, each with its versions in byTime order.
    components: BTreeMap<String, Vec<ComponentVersion>>,
    /// Blob hashes the `files` bucket knows (referenced or not).
    blobs: Vec<String>,
    /// Name, current JSON, then history snapshots in key (time) order.
    configs: Vec<(String, Vec<u8>, Vec<Vec<u8>>)>,
}

fn utf8(bytes: &[u8], what: &str) -> anyhow::Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| anyhow!("{what} {:?} is not UTF-8", String::from_utf8_lossy(bytes)))
}

/// Decodes a compact ComponentVersion record with the configuration decoder (Go-lenient), by
/// wrapping it as the only layer of a configuration.
fn decode_version(json: &[u8]) -> anyhow::Result<ComponentVersion> {
    let mut wrapped = Vec::with_capacity(json.len() + 16);
    wrapped.extend_from_slice(b"{\"Layers\":[");
    wrapped.extend_from_slice(json);
    wrapped.extend_from_slice(b"]}");
    let mut cfg = Configuration::from_json(&wrapped).map_err(|e| anyhow!("{e}"))?;
    cfg.layers
        .pop()
        .ok_or_else(|| anyhow!("empty version record"))
}

fn children<'a>(bucket: &Bucket<'a>) -> anyhow::Result<Vec<(String, Bucket<'a>)>> {
    let mut out = Vec::new();
    for e in bucket.entries()? {
        if e.is_bucket {
            out.push((utf8(e.key, "bucket name")?, bucket.open_child(e.value)?));
        }
    }
    Ok(out)
}

fn read_bolt(path: &Path) -> anyhow::Result<Imported> {
    let db = Db::open(path)?;
    let root = db.root();
    let mut out = Imported::default();
    if let Some(components) = root.bucket(b"components")? {
        for (name, bucket) in children(&components)? {
            let mut versions = Vec::new();
            // byTime order is the original's version order (showcomp, "latest").
            if let Some(by_time) = bucket.bucket(b"byTime")? {
                for e in by_time.entries()? {
                    let cv = decode_version(e.value).with_context(|| {
                        format!(
                            "component {name:?} byTime {:?}",
                            String::from_utf8_lossy(e.key)
                        )
                    })?;
                    versions.push(cv);
                }
            }
            // byVersion is authoritative for which versions exist: add any byTime lacked.
            if let Some(by_version) = bucket.bucket(b"byVersion")? {
                for e in by_version.entries()? {
                    let version = utf8(e.key, "version")?;
                    if !versions.iter().any(|v| v.version == version) {
                        let cv = decode_version(e.value)
                            .with_context(|| format!("component {name:?} version {version:?}"))?;
                        versions.push(cv);
                    }
                }
            }
            out.components.insert(name, versions);
        }
    }
    if let Some(files) = root.bucket(b"files")? {
        for e in files.entries()? {
            out.blobs.push(utf8(e.key, "blob hash")?);
        }
    }
    if let Some(configs) = root.bucket(b"configs")? {
        for (name, bucket) in children(&configs)? {
            let mut current = None;
            let mut snapshots = Vec::new();
            for e in bucket.entries()? {
                if e.is_bucket {
                    continue;
                }
                if e.key == b"current" {
                    current = Some(e.value.to_vec());
                } else {
                    snapshots.push(e.value.to_vec());
                }
            }
            // A configuration bucket without `current` was never served; nothing to import.
            if let Some(current) = current {
                out.configs.push((name, current, snapshots));
            }
        }
    }
    Ok(out)
}

/// Imports `bolt` into a new database at `db`, returning the opened database.
pub(super) fn import_into_new_db(bolt: &Path, files: &Path, db: &Path) -> Result<Connection> {
    let imported = read_bolt(bolt)
        .with_context(|| format!("reading {}", bolt.display()))
        .map_err(internal)?;
    let tmp = db.with_extension("sqlite3.import");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = tmp.clone().into_os_string();
        p.push(suffix);
        super::uploads::remove_if_exists(Path::new(&p))?;
    }
    let mut conn = super::schema::open_db(&tmp)?;
    let report = write(&mut conn, &imported, files)
        .with_context(|| format!("importing {} into {}", bolt.display(), tmp.display()))
        .map_err(internal)?;
    // Checkpoint the WAL into the main file so that the rename carries everything.
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .and_then(|_| conn.close().map_err(|(_, e)| e))
        .context("closing the imported database")
        .map_err(internal)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .context("fsync of the imported database")
        .map_err(internal)?;
    std::fs::rename(&tmp, db)
        .with_context(|| format!("renaming {} to {}", tmp.display(), db.display()))
        .map_err(internal)?;
    if let Some(parent) = db.parent() {
        sync_dir(parent)?;
    }
    tracing::info!(
        from = %bolt.display(),
        components = report.components,
        versions = report.versions,
        configurations = report.configurations,
        history_entries = report.history_entries,
        "imported deploy-tools state.db (left untouched)"
    );
    super::schema::open_db(db)
}

fn write(conn: &mut Connection, imported: &Imported, files: &Path) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = unix_nanos(common::timefmt::now());
    // Blobs: every hash the DB knows and that is on disk. Not re-hashed here (fsck does that).
    let mut hashes: Vec<&str> = imported.blobs.iter().map(String::as_str).collect();
    hashes.extend(
        imported
            .components
            .values()
            .flatten()
            .map(|v| v.hash.as_str()),
    );
    hashes.sort_unstable();
    hashes.dedup();
    let mut present = std::collections::HashSet::new();
    for hash in hashes {
        if !is_blob_name(hash) {
            tracing::warn!(
                hash,
                "state.db names a blob that is not a sha256 hex digest; skipped"
            );
            continue;
        }
        match std::fs::metadata(files.join(hash)) {
            Ok(meta) if meta.is_file() => {
                tx.execute(
                    "INSERT INTO blobs (hash, size, stored_at) VALUES (?1, ?2, ?3)",
                    params![hash, i64::try_from(meta.len())?, now],
                )?;
                present.insert(hash);
            }
            _ => tracing::warn!(hash, "state.db names a blob missing from files/"),
        }
    }
    for (name, versions) in &imported.components {
        tx.execute("INSERT INTO components (name) VALUES (?1)", [name])?;
        report.components += 1;
        for v in versions {
            if !present.contains(v.hash.as_str()) {
                tracing::warn!(component = %name, version = %v.version, hash = %v.hash,
                    "version's blob is missing from files/; version not imported");
                continue;
            }
            let (s, ns) = split_time(v.ctime);
            tx.execute(
                "INSERT INTO versions (component, version, hash, ctime_s, ctime_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, v.version, v.hash, s, ns],
            )?;
            report.versions += 1;
        }
    }
    for (name, current, snapshots) in &imported.configs {
        let cfg = Configuration::from_json(current)
            .map_err(|e| anyhow!("configuration {name:?}: {e}"))?;
        tx.execute(
            "INSERT INTO configurations (name, json, hash, mtime) VALUES (?1, ?2, ?3, ?4)",
            params![name, current, cfg.hash, cfg.mtime.unix_timestamp()],
        )?;
        report.configurations += 1;
        let mut rows: Vec<(&[u8], OffsetDateTime, String)> = Vec::new();
        for snap in snapshots {
            match Configuration::from_json(snap) {
                Ok(c) => rows.push((snap, c.mtime, c.hash)),
                Err(e) => {
                    tracing::warn!(configuration = %name, "unreadable history snapshot skipped: {e}")
                }
            }
        }
        // Keys sort by second; order by the full Mtime inside the JSON.
        rows.sort_by_key(|r| r.1);
        // The current state is normally the newest snapshot; if not, it becomes the newest row.
        if rows.last().is_none_or(|last| last.0 != current.as_slice()) {
            rows.push((current, cfg.mtime, cfg.hash.clone()));
        }
        for (json, saved, hash) in rows {
            super::catalog::append_history(
                &tx,
                name,
                saved,
                IMPORT_USER,
                IMPORT_COMMAND,
                json,
                &hash,
                // Everything the old registry kept; the next save trims to `-maxhist`.
                0,
            )
            .map_err(|e| anyhow!("history of {name:?}: {e}"))?;
            report.history_entries += 1;
        }
    }
    tx.commit()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use sha2::{Digest as _, Sha256};
    use tokio_util::sync::CancellationToken;

    use super::super::{Actor, Options, Store};

    /// Builds and runs `tests/fixtures/mkbolt` (Go + the real bolt library) into `dir`.
    /// Returns false, with the reason printed, when Go or the bolt source is not installed —
    /// except in CI (`CI=true`), where scripts/install-deps installs both, so a missing one is a
    /// failure rather than a test that silently checks nothing.
    fn make_state_db(dir: &Path) -> bool {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mkbolt");
        let gopath = Path::new("/usr/share/gocode");
        let missing = if Command::new("go").arg("version").output().is_err() {
            Some("`go` not found")
        } else if !gopath.join("src/github.com/boltdb/bolt").is_dir() {
            Some("bolt source missing")
        } else {
            None
        };
        if let Some(why) = missing {
            let msg = format!("{why} (apt-get install golang-go golang-github-boltdb-bolt-dev)");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            println!("skipped: {msg}");
            return false;
        }
        let bin = dir.join("mkbolt-bin");
        let gocache = dir.join("gocache");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOCACHE", &gocache)
            .env("GOFLAGS", "")
            .output()
            .expect("running go build");
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state = dir.join("reg");
        let out = Command::new(&bin)
            .arg(&state)
            .output()
            .expect("running mkbolt");
        assert!(
            out.status.success(),
            "mkbolt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    /// The fixture really exercises what the reader must handle.
    #[test]
    fn fixture_has_branch_overflow_and_inline_pages() {
        let tmp = tempfile::tempdir().unwrap();
        if !make_state_db(tmp.path()) {
            return;
        }
        let db = super::Db::open(&tmp.path().join("reg/state.db")).unwrap();
        let root = db.root();
        let configs = root.bucket(b"configs").unwrap().unwrap();
        assert!(configs.bucket(b"web").unwrap().unwrap().is_inline());
        let big = configs.bucket(b"big").unwrap().unwrap();
        assert!(!big.is_inline());
        assert!(
            big.shape().unwrap().1 > 0,
            "big's JSON spans overflow pages"
        );
        let code = root
            .bucket(b"components")
            .unwrap()
            .unwrap()
            .bucket(b"code")
            .unwrap()
            .unwrap();
        let by_version = code.bucket(b"byVersion").unwrap().unwrap();
        assert!(
            by_version.shape().unwrap().0 > 0,
            "300 versions need branch pages"
        );
        assert_eq!(by_version.entries().unwrap().len(), 300);
        let empty = root
            .bucket(b"components")
            .unwrap()
            .unwrap()
            .bucket(b"empty")
            .unwrap()
            .unwrap();
        assert!(empty.bucket(b"byTime").unwrap().unwrap().is_inline());
        assert!(
            empty
                .bucket(b"byTime")
                .unwrap()
                .unwrap()
                .entries()
                .unwrap()
                .is_empty()
        );
        assert!(root.bucket(b"nope").unwrap().is_none());

        // The current meta page is the valid one with the higher txid. Damage it and the
        // reader falls back to the other one: the state before the fixture's only write
        // transaction, an empty root.
        let mut data = std::fs::read(tmp.path().join("reg/state.db")).unwrap();
        let (newest, other) = {
            let txid = |at: usize| {
                u64::from_le_bytes(data[at + 16 + 48..at + 16 + 56].try_into().unwrap())
            };
            if txid(0) > txid(4096) {
                (0, 4096)
            } else {
                (4096, 0)
            }
        };
        assert!(!db.root().entries().unwrap().is_empty());
        data[newest + 16 + 20] ^= 0xff; // inside the meta, covered by the checksum
        let older = super::Db::from_bytes(data.clone()).expect("falls back to the other meta page");
        assert!(older.root().entries().unwrap().is_empty());
        data[other + 16 + 20] ^= 0xff;
        assert!(super::Db::from_bytes(data).is_err(), "no valid meta page");
    }

    #[test]
    fn a_damaged_state_db_stops_the_open_and_imports_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("state.db"), vec![0x5a; 16384]).unwrap();
        let err = Store::open(tmp.path(), Options::default())
            .err()
            .expect("refused");
        assert!(matches!(err, super::super::StoreError::Internal(_)));
        assert!(
            !tmp.path().join("registry.sqlite3").exists(),
            "the next start tries again"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("state.db")).unwrap(),
            vec![0x5a; 16384]
        );
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn imports_a_real_deploy_tools_state_db() {
        let tmp = tempfile::tempdir().unwrap();
        if !make_state_db(tmp.path()) {
            return;
        }
        let dir = tmp.path().join("reg");
        // Leftover of an import interrupted by a crash: discarded, the import starts over.
        std::fs::write(dir.join("registry.sqlite3.import"), b"half-written").unwrap();
        let state_before = std::fs::read(dir.join("state.db")).unwrap();
        let store = Store::open(&dir, Options::default()).expect("open imports");
        assert_eq!(
            std::fs::read(dir.join("state.db")).unwrap(),
            state_before,
            "state.db untouched"
        );
        assert!(!dir.join("registry.sqlite3.import").exists());

        let mut expected: Vec<String> = vec![
            "code".into(),
            "config".into(),
            "empty".into(),
            "web<&>".into(),
        ];
        expected.extend((0..30).map(|i| format!("comp-{i:02}")));
        expected.sort();
        assert_eq!(store.components().unwrap(), expected);
        assert!(store.show_comp("empty").unwrap().is_empty());

        // 300 versions spread over branch pages, in time order, full precision kept.
        let code = store.show_comp("code").unwrap();
        assert_eq!(code.len(), 300);
        assert_eq!(code[0].1, "v001");
        assert_eq!(code[299].1, "v300");
        assert_eq!(
            common::timefmt::rfc3339_nano(code[0].0),
            "2026-11-22T07:26:20.817675718Z"
        );
        let config: Vec<String> = store
            .show_comp("config")
            .unwrap()
            .into_iter()
            .map(|v| v.1)
            .collect();
        assert_eq!(config, ["v01", "v01-again"]);

        assert_eq!(store.configurations().unwrap(), ["big", "project1", "web"]);
        // Served bytes are the original's, byte for byte; the JSON's hash is the layers' hash.
        let p1 = store.config_json("project1").unwrap().unwrap();
        let cfg = store.show_conf("project1").unwrap();
        assert_eq!(
            String::from_utf8(p1.clone()).unwrap(),
            cfg.to_json(),
            "our encoder agrees with Go's"
        );
        assert_eq!(cfg.layers[0].hash, sha(b"code-300"));
        assert_eq!(cfg.layers[1].version, "v01-again");
        assert!(cfg.hash_matches_layers());
        let web = store.show_conf("web").unwrap();
        assert_eq!(web.layers[0].name, "web<&>");
        assert!(
            String::from_utf8(store.config_json("web").unwrap().unwrap())
                .unwrap()
                .contains("web\\u003c\\u0026\\u003e")
        );
        // Layers are found inside the Go-escaped JSON: the version is in use.
        let a = Actor {
            user: "op".into(),
            ..Actor::default()
        };
        let err = store.del_ver("web<&>", "v1", &a).unwrap_err();
        assert_eq!(err.to_string(), "version is used by configuration \"web\"");
        // The overflow-page configuration.
        let big = store.show_conf("big").unwrap();
        assert_eq!(big.layers.len(), 30);
        assert!(store.config_json("big").unwrap().unwrap().len() > 4096);

        // History: both saves of project1, oldest first in seq order; rollback works on them.
        let hist = store.history("project1").unwrap();
        assert_eq!(hist.len(), 2);
        assert_eq!((hist[0].seq, hist[0].command.as_str()), (2, "import"));
        assert_eq!(hist[1].config.layers[0].version, "v001");
        let a = Actor {
            user: "op".into(),
            ..Actor::default()
        };
        let restored = store.rollback("project1", None, &a).unwrap();
        assert_eq!(restored.layers[0].version, "v001");

        // Blobs are usable: a new version of stored content needs no upload, and bump works.
        store
            .add_version("config", "v02", &sha(b"config"), &a)
            .unwrap();
        assert_eq!(
            store.bump_conf("project1", "config", &a).unwrap(),
            Some("v01".into())
        );
        // The unreferenced blob ("[]" in the files bucket) is collected; referenced ones stay.
        let gone = dir.join("files").join(sha(b"gone-content"));
        assert!(gone.exists());
        assert_eq!(store.gc_blobs().unwrap(), 1);
        assert!(!gone.exists());
        let report = store.fsck(&CancellationToken::new()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.blobs_checked, 332);

        // A second open does not import again.
        drop(store);
        let store = crate::store::tests::reopen(&dir, Options::default()).unwrap();
        assert_eq!(store.history("project1").unwrap().len(), 4);
    }
}
