//! Unit tests of the store against real temporary directories.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::*;

fn actor(user: &str) -> Actor {
    Actor {
        user: user.to_string(),
        key_fingerprint: "SHA256:x".into(),
        remote_addr: "127.0.0.1:1".into(),
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, Options::default()).expect("open")
}

/// Opens `dir` again once the previous store was dropped. Another test of this binary may be
/// spawning a process meanwhile (`ssh-keygen`): from fork to exec its child holds a copy of
/// every descriptor, our lock file's included, and the lock lasts as long as any copy does. So
/// `Locked` is retried for a while.
pub(super) fn reopen(dir: &Path, options: Options) -> Result<Store> {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, options.clone()) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Uploads `data` in 3-byte sequential chunks; returns its hash.
pub(crate) fn upload(store: &Store, data: &[u8]) -> String {
    let mut up = store.begin_upload().expect("begin");
    let mut off = 0u64;
    for chunk in data.chunks(3) {
        up.write_at(off, chunk).expect("write");
        off += chunk.len() as u64;
    }
    let (digest, size) = up.finish().expect("finish");
    assert_eq!(size, data.len() as u64);
    hex::encode(digest.0)
}

/// A store with component `c` holding versions of the given contents.
pub(crate) fn with_versions(
    store: &Store,
    component: &str,
    versions: &[(&str, &[u8])],
) -> Vec<String> {
    versions
        .iter()
        .map(|(v, data)| {
            let h = upload(store, data);
            store
                .add_version(component, v, &h, &actor("op"))
                .expect("addver");
            h
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn layers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect()
}

#[test]
fn open_creates_layout_and_locks_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reg");
    let store = open(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("files")), 0o700);
    assert_eq!(mode(&dir.join("uploads")), 0o700);
    assert!(dir.join("registry.sqlite3").is_file());
    // The metadata is as private as the blobs; WAL and SHM files copy the database's mode.
    assert_eq!(mode(&dir.join("registry.sqlite3")), 0o600);
    assert_eq!(mode(&dir.join("registry.sqlite3-wal")), 0o600);
    assert_eq!(store.dir(), dir);
    assert_eq!(store.blobs_dir(), dir.join("files"));

    let second = Store::open(&dir, Options::default());
    match second {
        Err(e @ StoreError::Locked(_)) => {
            assert_eq!(
                e.to_string(),
                format!("another deploy-registry is using {}", dir.display())
            )
        }
        other => panic!("second open: {:?}", other.err()),
    }
    // A clone shares the lock; dropping every handle releases it.
    let clone = store.clone();
    drop(store);
    assert!(Store::open(&dir, Options::default()).is_err());
    drop(clone);
    reopen(&dir, Options::default()).expect("open");
}

#[test]
fn pragmas_are_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let conn = store.conn();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        (mode.as_str(), sync, fk, version),
        ("wal", 2, 1, schema::SCHEMA_VERSION)
    );
}

#[test]
fn newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        reopen(tmp.path(), Options::default()),
        Err(StoreError::Internal(_))
    ));
}

#[test]
fn large_upload_starts_writeback_and_stays_intact() {
    // Over several writeback chunks, in SFTP-sized writes: the early writeback must not
    // change what is hashed or stored.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut up = store.begin_upload().expect("begin");
    for (i, chunk) in data.chunks(261_120).enumerate() {
        up.write_at((i * 261_120) as u64, chunk).expect("write");
    }
    let (digest, size) = up.finish().expect("finish");
    assert_eq!(size, data.len() as u64);
    assert_eq!(hex::encode(digest.0), sha(&data));
    let path = store.pending_upload(&sha(&data)).expect("registered");
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn sequential_upload_is_hashed_and_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let data = b"hello, layered world".repeat(1000);
    let h = upload(&store, &data);
    assert_eq!(h, sha(&data));
    let path = store.pending_upload(&h).expect("registered");
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("upload-")
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn out_of_order_and_overlapping_writes_are_rehashed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut up = store.begin_upload().unwrap();
    up.write_at(5, b"world").unwrap();
    up.write_at(0, b"XXXXX").unwrap();
    up.write_at(0, b"hello").unwrap(); // overwrites
    let (d, size) = up.finish().unwrap();
    assert_eq!((hex::encode(d.0), size), (sha(b"helloworld"), 10));

    // A sparse write leaves a hole of zeros.
    let mut up = store.begin_upload().unwrap();
    up.write_at(0, b"a").unwrap();
    up.write_at(3, b"b").unwrap();
    let (d, _) = up.finish().unwrap();
    assert_eq!(hex::encode(d.0), sha(b"a\0\0b"));

    // Empty upload.
    let up = store.begin_upload().unwrap();
    let (d, size) = up.finish().unwrap();
    assert_eq!((hex::encode(d.0), size), (sha(b""), 0));
}

#[test]
fn upload_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        max_upload_bytes: 10,
        max_pending_uploads: 2,
        ..Options::default()
    };
    let store = Store::open(tmp.path(), options).unwrap();
    let mut up = store.begin_upload().unwrap();
    up.write_at(0, b"0123456789").unwrap();
    let err = up.write_at(10, b"x").unwrap_err();
    assert!(matches!(err, StoreError::Limit(_)));
    assert_eq!(err.to_string(), "upload exceeds the size limit of 10 bytes");
    assert!(matches!(
        up.write_at(u64::MAX, b"x"),
        Err(StoreError::Limit(_))
    ));
    up.finish().unwrap(); // pending: 1 registered

    let open_one = store.begin_upload().unwrap(); // 1 registered + 1 open
    let err = store.begin_upload().err().expect("limit");
    assert!(
        err.to_string()
            .starts_with("too many pending uploads (limit 2)"),
        "{err}"
    );
    drop(open_one); // a dropped upload no longer counts
    let up = store.begin_upload().unwrap();
    drop(up);

    // A reserve larger than any disk: refused at open, and the refusal does not count.
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        min_free_bytes: u64::MAX,
        max_pending_uploads: 1,
        ..Options::default()
    };
    let store = Store::open(tmp.path(), options).unwrap();
    for _ in 0..2 {
        let err = store.begin_upload().err().expect("reserve");
        assert!(err.to_string().contains("nearly full"), "{err}");
    }
}

#[test]
fn an_abandoned_upload_gives_its_space_back_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let files = || {
        std::fs::read_dir(tmp.path().join("uploads"))
            .unwrap()
            .count()
    };
    let mut up = store.begin_upload().unwrap();
    up.write_at(0, &[7u8; 300_000]).unwrap();
    assert_eq!(files(), 1);
    drop(up);
    assert_eq!(files(), 0, "an unregistered upload's file goes with it");
    let kept = upload(&store, b"kept");
    assert!(
        store.pending_upload(&kept).unwrap().exists(),
        "a registered one stays"
    );
}

#[test]
fn a_full_disk_is_named_without_paths() {
    let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
        .context("writing /secret/path/upload-1");
    let err = internal(enospc);
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    assert_eq!(err.to_string(), "the registry's disk is full");
    let quota = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EDQUOT));
    assert!(matches!(internal(quota), StoreError::DiskFull(_)));
    let sqlite =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    assert!(matches!(
        internal(anyhow::Error::new(sqlite)),
        StoreError::DiskFull(_)
    ));
    let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EIO));
    let err = internal(other);
    assert!(matches!(err, StoreError::Internal(_)));
    assert_eq!(err.to_string(), "internal error");
}

#[test]
fn newest_upload_of_same_content_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = upload(&store, b"same");
    let first = store.pending_upload(&h).unwrap();
    assert_eq!(upload(&store, b"same"), h);
    let second = store.pending_upload(&h).unwrap();
    assert_ne!(first, second);
    assert!(second.exists());
    // The older file goes after CLOSE was answered: wait for it.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while first.exists() {
        assert!(
            std::time::Instant::now() < give_up,
            "older duplicate never removed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = std::fs::read_dir(tmp.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(left, 1);
}

#[test]
fn add_version_moves_the_upload_into_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = upload(&store, b"layer one");
    let src = store.pending_upload(&h).unwrap();
    store.add_version("code", "v1", &h, &actor("op")).unwrap();
    let blob = tmp.path().join("files").join(&h);
    assert_eq!(std::fs::read(&blob).unwrap(), b"layer one");
    assert_eq!(mode(&blob), 0o600);
    assert!(!src.exists());
    assert!(store.pending_upload(&h).is_none());
    let digest = Digest(Sha256::digest(b"layer one").into());
    assert_eq!(store.blob_path(&digest), Some(blob));
    assert_eq!(store.components().unwrap(), vec!["code"]);
    let versions = store.show_comp("code").unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].1, "v1");
}

#[test]
fn add_version_errors_keep_the_upload_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    assert_eq!(
        store
            .add_version("c", "v", &"0".repeat(64), &a)
            .unwrap_err()
            .to_string(),
        "no uploaded file with given hash found"
    );
    // Not a blob name: never joined to a path.
    assert!(matches!(
        store.add_version("c", "v", &"../".repeat(21), &a),
        Err(StoreError::NoUpload)
    ));
    assert!(matches!(
        store.add_version("c", "v", &"A".repeat(64), &a),
        Err(StoreError::NoUpload)
    ));

    let h1 = upload(&store, b"one");
    store.add_version("c", "v1", &h1, &a).unwrap();
    let h2 = upload(&store, b"two");
    let err = store.add_version("c", "v1", &h2, &a).unwrap_err();
    assert_eq!(err.to_string(), "version \"v1\" already exists");
    // B1: the upload is still pending, nothing went to files/, and the next addver works.
    assert!(store.pending_upload(&h2).unwrap().exists());
    assert!(!tmp.path().join("files").join(&h2).exists());
    store.add_version("c", "v2", &h2, &a).unwrap();
    assert!(tmp.path().join("files").join(&h2).exists());
}

#[test]
fn add_version_of_already_stored_content_needs_no_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = with_versions(&store, "c", &[("v1", b"content")]).remove(0);
    store.add_version("c", "v2", &h, &actor("op")).unwrap();
    store.add_version("other", "v1", &h, &actor("op")).unwrap();
    assert_eq!(store.show_comp("c").unwrap().len(), 2);
    // Stored but deleted from disk: not usable.
    std::fs::remove_file(tmp.path().join("files").join(&h)).unwrap();
    assert!(matches!(
        store.add_version("c", "v3", &h, &actor("op")),
        Err(StoreError::NoUpload)
    ));
}

#[test]
fn a_limited_key_adds_versions_only_to_components_no_other_configuration_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    with_versions(&store, "code", &[("v1", b"code one")]);
    store
        .add_conf("web", &layers(&[("code", "v1")]), &a)
        .unwrap();
    let web_only = |config: &str| config == "web";
    let h2 = upload(&store, b"code two");
    store
        .add_version_seen_by("code", "v2", &h2, &a, web_only)
        .unwrap();

    store
        .add_conf("db", &layers(&[("code", "v1")]), &a)
        .unwrap();
    let h3 = upload(&store, b"code three");
    let err = store
        .add_version_seen_by("code", "v3", &h3, &a, web_only)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "component \"code\" is used by configuration \"db\", which is not among this key's configs="
    );
    // Refused before anything else is looked at, and the upload stays for another try.
    assert!(matches!(
        store.add_version_seen_by("code", "v3", "nonsense", &a, web_only),
        Err(StoreError::SharedComponent { .. })
    ));
    assert!(store.pending_upload(&h3).unwrap().exists());
    let versions: Vec<String> = store
        .show_comp("code")
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(!versions.contains(&"v3".to_string()), "{versions:?}");
    // A component of its own, and anything for a key that sees every configuration.
    store
        .add_version_seen_by("tools", "v1", &h3, &a, web_only)
        .unwrap();
    store.add_version("code", "v3", &h2, &a).unwrap();
}

#[test]
fn an_upload_whose_file_vanished_is_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = upload(&store, b"gone");
    std::fs::remove_file(store.pending_upload(&h).unwrap()).unwrap();
    assert!(matches!(
        store.add_version("c", "v", &h, &actor("op")),
        Err(StoreError::NoUpload)
    ));
    assert!(store.pending_upload(&h).is_none());
}

#[test]
fn uploads_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let h = {
        let store = open(tmp.path());
        upload(&store, b"durable")
    };
    let store = reopen(tmp.path(), Options::default()).expect("open");
    store.add_version("c", "v", &h, &actor("op")).unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("files").join(&h)).unwrap(),
        b"durable"
    );
}

#[test]
fn concurrent_add_version_of_one_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = upload(&store, b"shared content");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            let h = h.clone();
            std::thread::spawn(move || store.add_version("c", &format!("v{i}"), &h, &actor("op")))
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect(
            "every addver succeeds: the first consumes the upload, the rest reuse the blob",
        );
    }
    assert_eq!(store.show_comp("c").unwrap().len(), 4);
    assert!(tmp.path().join("files").join(&h).is_file());
}

#[test]
fn expire_uploads_removes_old_stray_and_vanished() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        upload_ttl: Duration::from_secs(3600),
        ..Options::default()
    };
    let store = Store::open(tmp.path(), options).unwrap();
    let fresh = upload(&store, b"fresh");
    let vanished = upload(&store, b"vanished");
    std::fs::remove_file(store.pending_upload(&vanished).unwrap()).unwrap();
    let stray = tmp.path().join("uploads").join("upload-123");
    std::fs::write(&stray, b"partial").unwrap();
    let other = tmp.path().join("uploads").join("notes.txt");
    std::fs::write(&other, b"keep").unwrap();
    // Nothing is old yet: only the vanished row goes (it is not counted as a removed upload).
    assert_eq!(store.expire_uploads().unwrap(), 0);
    assert!(store.pending_upload(&vanished).is_none());
    assert!(store.pending_upload(&fresh).is_some());
    assert!(stray.exists());
    drop(store);

    let options = Options {
        upload_ttl: Duration::ZERO,
        ..Options::default()
    };
    let store = reopen(tmp.path(), options).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let path = store.pending_upload(&fresh).unwrap();
    assert_eq!(store.expire_uploads().unwrap(), 2);
    assert!(!path.exists());
    assert!(!stray.exists());
    assert!(other.exists(), "only upload-* files are touched");
    assert!(matches!(
        store.add_version("c", "v", &fresh, &actor("op")),
        Err(StoreError::NoUpload)
    ));
}

#[test]
fn add_conf_and_show() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let hc = with_versions(&store, "code", &[("v01", b"code")]);
    let hf = with_versions(&store, "config", &[("v01", b"config")]);
    let err = store
        .add_conf(
            "p",
            &layers(&[("code", "v01"), ("config", "nope")]),
            &actor("op"),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no version \"nope\" for component \"config\" found"
    );
    assert!(
        store.configurations().unwrap().is_empty(),
        "a failed addconf saves nothing"
    );

    store
        .add_conf(
            "p",
            &layers(&[("code", "v01"), ("config", "v01")]),
            &actor("op"),
        )
        .unwrap();
    let cfg = store.show_conf("p").unwrap();
    assert_eq!(cfg.name, "p");
    assert_eq!(cfg.layers.len(), 2);
    assert_eq!(cfg.layers[0].hash, hc[0]);
    assert_eq!(cfg.layers[0].file, format!("files/{}", hc[0]));
    assert_eq!(cfg.layers[1].hash, hf[0]);
    assert_eq!(
        cfg.hash,
        common::config::config_hash([hc[0].as_str(), hf[0].as_str()])
    );
    assert_eq!(cfg.layers[0].ctime, store.show_comp("code").unwrap()[0].0);
    assert_eq!(
        store.config_json("p").unwrap().unwrap(),
        cfg.to_json().into_bytes()
    );
    assert_eq!(store.config_json("nope").unwrap(), None);
    assert_eq!(
        store.show_conf("nope").unwrap_err().to_string(),
        "configuration \"nope\" not found"
    );

    // Silently replaced.
    store
        .add_conf("p", &layers(&[("config", "v01")]), &actor("op"))
        .unwrap();
    assert_eq!(store.show_conf("p").unwrap().layers.len(), 1);
}

#[test]
fn change_conf_checks_in_spec_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    let h = with_versions(&store, "code", &[("v1", b"1"), ("v2", b"2")]);
    with_versions(&store, "other", &[("v1", b"o")]);
    assert_eq!(
        store
            .change_conf("nope", "code", "v9", &a)
            .unwrap_err()
            .to_string(),
        "no version \"v9\" for component \"code\" found"
    );
    assert_eq!(
        store
            .change_conf("nope", "code", "v2", &a)
            .unwrap_err()
            .to_string(),
        "configuration \"nope\" not found"
    );
    store.add_conf("p", &layers(&[("code", "v1")]), &a).unwrap();
    assert_eq!(
        store
            .change_conf("p", "other", "v1", &a)
            .unwrap_err()
            .to_string(),
        "configuration has no layer for component \"other\""
    );
    let before = store.show_conf("p").unwrap();
    store.change_conf("p", "code", "v2", &a).unwrap();
    let after = store.show_conf("p").unwrap();
    assert_eq!(after.layers[0].version, "v2");
    assert_eq!(after.layers[0].hash, h[1]);
    assert!(after.mtime > before.mtime);
    // Same version again: only Mtime changes.
    store.change_conf("p", "code", "v2", &a).unwrap();
    let again = store.show_conf("p").unwrap();
    assert_eq!(again.hash, after.hash);
    assert!(again.mtime > after.mtime);
}

#[test]
fn bump_conf_errors_and_result() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    assert_eq!(
        store.bump_conf("p", "code", &a).unwrap_err().to_string(),
        "no components found"
    );
    with_versions(&store, "code", &[("v1", b"1")]);
    assert_eq!(
        store.bump_conf("p", "nope", &a).unwrap_err().to_string(),
        "no component \"nope\" found"
    );
    assert_eq!(
        store.bump_conf("p", "code", &a).unwrap_err().to_string(),
        "configuration \"p\" not found"
    );
    store.add_conf("p", &layers(&[("code", "v1")]), &a).unwrap();
    let m0 = store.show_conf("p").unwrap().mtime;
    assert_eq!(store.bump_conf("p", "code", &a).unwrap(), None, "unchanged");
    assert!(store.show_conf("p").unwrap().mtime > m0, "always saved");
    with_versions(&store, "code", &[("v2", b"2")]);
    assert_eq!(
        store.bump_conf("p", "code", &a).unwrap(),
        Some("v1".to_string())
    );
    assert_eq!(store.show_conf("p").unwrap().layers[0].version, "v2");

    with_versions(&store, "other", &[("v1", b"o")]);
    assert_eq!(
        store.bump_conf("p", "other", &a).unwrap_err().to_string(),
        "configuration has no layer for component \"other\""
    );
    store.del_ver("other", "v1", &a).unwrap();
    assert_eq!(
        store.bump_conf("p", "other", &a).unwrap_err().to_string(),
        "no versions for component \"other\" found"
    );
}

#[test]
fn bump_conf_breaks_ctime_ties_by_insertion_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    // "b" < "a" is false bytewise; the original would pick the larger version string "b"
    // for a same-second tie. We pick the one added last, "a".
    with_versions(&store, "code", &[("b", b"1"), ("a", b"2")]);
    store
        .conn()
        .execute("UPDATE versions SET ctime_s = 1000, ctime_ns = 5", [])
        .unwrap();
    store.add_conf("p", &layers(&[("code", "b")]), &a).unwrap();
    assert_eq!(store.bump_conf("p", "code", &a).unwrap(), Some("b".into()));
    assert_eq!(store.show_conf("p").unwrap().layers[0].version, "a");
    // Sub-second precision counts: "b" one nanosecond later wins.
    store
        .conn()
        .execute("UPDATE versions SET ctime_ns = 6 WHERE version = 'b'", [])
        .unwrap();
    assert_eq!(store.bump_conf("p", "code", &a).unwrap(), Some("a".into()));
    assert_eq!(
        store
            .show_comp("code")
            .unwrap()
            .iter()
            .map(|v| v.1.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn listings_are_bytewise() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = upload(&store, b"x");
    for c in ["b", "B", "a", "Z", "é", "a b"] {
        store.add_version(c, "v", &h, &actor("op")).unwrap();
    }
    assert_eq!(
        store.components().unwrap(),
        ["B", "Z", "a", "a b", "b", "é"]
    );
    for n in ["zz", "Zz", "_"] {
        store
            .add_conf(n, &layers(&[("a", "v")]), &actor("op"))
            .unwrap();
    }
    assert_eq!(store.configurations().unwrap(), ["Zz", "_", "zz"]);
    assert!(store.show_comp("unknown").unwrap().is_empty());
}

#[test]
fn deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    with_versions(&store, "code", &[("v1", b"1"), ("v2", b"2")]);
    store.add_conf("p", &layers(&[("code", "v1")]), &a).unwrap();
    store.add_conf("a", &layers(&[("code", "v1")]), &a).unwrap();
    assert_eq!(
        store.del_ver("code", "v9", &a).unwrap_err().to_string(),
        "no version \"v9\" for component \"code\" found"
    );
    assert_eq!(
        store.del_ver("code", "v1", &a).unwrap_err().to_string(),
        "version is used by configuration \"a\""
    );
    assert_eq!(
        store.del_comp("code", &a).unwrap_err().to_string(),
        "component is used by configuration \"a\""
    );
    assert_eq!(
        store.del_comp("nope", &a).unwrap_err().to_string(),
        "\"nope\" component not found"
    );
    store.del_ver("code", "v2", &a).unwrap();
    assert_eq!(store.show_comp("code").unwrap().len(), 1);

    assert_eq!(
        store.del_conf("nope", &a).unwrap_err().to_string(),
        "\"nope\" configuration not found"
    );
    store.del_conf("a", &a).unwrap();
    store.del_conf("p", &a).unwrap();
    assert!(store.configurations().unwrap().is_empty());
    assert_eq!(
        store.history("p").unwrap_err().to_string(),
        "configuration \"p\" not found"
    );
    // History went with it: a new "p" starts over.
    store.add_conf("p", &layers(&[("code", "v1")]), &a).unwrap();
    assert_eq!(
        store
            .history("p")
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [1]
    );
    store.del_conf("p", &a).unwrap();

    store.del_comp("code", &a).unwrap();
    assert!(store.components().unwrap().is_empty());
    assert!(store.show_comp("code").unwrap().is_empty());
    // The component stays after its last delver, as the original's bucket did.
    with_versions(&store, "x", &[("v", b"x")]);
    store.del_ver("x", "v", &a).unwrap();
    assert_eq!(store.components().unwrap(), ["x"]);
}

#[test]
fn history_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = with_versions(&store, "code", &[("v1", b"1"), ("v2", b"2"), ("v3", b"3")]);
    store
        .add_conf("p", &layers(&[("code", "v1")]), &actor("alice"))
        .unwrap();
    store.change_conf("p", "code", "v2", &actor("bob")).unwrap();
    store.bump_conf("p", "code", &actor("carol")).unwrap();
    store.bump_conf("p", "code", &actor("carol")).unwrap(); // same hash as before

    let hist = store.history("p").unwrap();
    let summary: Vec<_> = hist
        .iter()
        .map(|r| {
            (
                r.seq,
                r.user.as_str(),
                r.command.as_str(),
                r.config.layers[0].version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (4, "carol", "bumpconf", "v3"),
            (3, "carol", "bumpconf", "v3"),
            (2, "bob", "changeconf", "v2"),
            (1, "alice", "addconf", "v1")
        ]
    );
    assert_eq!(hist[0].saved_at, hist[0].config.mtime);

    // Default: the newest entry whose hash differs from the current one (seq 2).
    let restored = store.rollback("p", None, &actor("dave")).unwrap();
    assert_eq!(restored.layers[0].version, "v2");
    assert_eq!(restored.layers[0].hash, h[1]);
    assert_eq!(restored.layers[0].ctime, hist[2].config.layers[0].ctime);
    assert!(restored.mtime > hist[0].config.mtime);
    assert_eq!(store.show_conf("p").unwrap(), restored);
    let newest = &store.history("p").unwrap()[0];
    assert_eq!(
        (newest.seq, newest.command.as_str(), newest.user.as_str()),
        (5, "rollback", "dave")
    );

    // Explicit entry.
    let restored = store.rollback("p", Some(1), &actor("dave")).unwrap();
    assert_eq!(restored.layers[0].version, "v1");
    assert_eq!(
        store
            .rollback("p", Some(99), &actor("x"))
            .unwrap_err()
            .to_string(),
        "no history entry 99 for configuration \"p\""
    );
    assert_eq!(
        store
            .rollback("nope", None, &actor("x"))
            .unwrap_err()
            .to_string(),
        "configuration \"nope\" not found"
    );

    // A version it names is gone: refused, nothing saved.
    store.del_ver("code", "v3", &actor("x")).unwrap();
    assert_eq!(
        store
            .rollback("p", Some(4), &actor("x"))
            .unwrap_err()
            .to_string(),
        "cannot roll back: version \"v3\" of component \"code\" no longer exists"
    );
    // Re-added with other content: still refused.
    let other = upload(&store, b"not 3");
    store
        .add_version("code", "v3", &other, &actor("x"))
        .unwrap();
    assert!(store.rollback("p", Some(4), &actor("x")).is_err());
    assert_eq!(store.history("p").unwrap().len(), 6);

    // Nothing to roll back to.
    store
        .add_conf("single", &layers(&[("code", "v1")]), &actor("x"))
        .unwrap();
    assert_eq!(
        store
            .rollback("single", None, &actor("x"))
            .unwrap_err()
            .to_string(),
        "nothing to roll back to for configuration \"single\""
    );
}

#[test]
fn prune_keeps_newest_and_referenced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    let data: Vec<(String, Vec<u8>)> = (1..=6).map(|i| (format!("v{i}"), vec![i as u8])).collect();
    let versions: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(v, d)| (v.as_str(), d.as_slice()))
        .collect();
    with_versions(&store, "c", &versions);
    with_versions(&store, "d", &[("only", b"d")]);
    // v1 is in the current configuration; v2 only in history.
    store.add_conf("p", &layers(&[("c", "v2")]), &a).unwrap();
    store.change_conf("p", "c", "v1", &a).unwrap();
    assert_eq!(store.prune_versions(0).unwrap(), 0, "0 disables pruning");
    assert_eq!(store.prune_versions(2).unwrap(), 2); // v3, v4
    let left: Vec<String> = store
        .show_comp("c")
        .unwrap()
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(left, ["v1", "v2", "v5", "v6"]);
    assert_eq!(store.show_comp("d").unwrap().len(), 1);
    assert_eq!(store.prune_versions(1).unwrap(), 1); // v5
    // GC then removes the pruned blobs, and only those.
    assert_eq!(store.gc_blobs().unwrap(), 3);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("files")).unwrap().count(),
        4
    );
}

#[test]
fn gc_removes_unreferenced_and_unknown_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = actor("op");
    let h = with_versions(&store, "c", &[("v1", b"keep"), ("v2", b"drop")]);
    store.del_ver("c", "v2", &a).unwrap();
    let files = tmp.path().join("files");
    std::fs::write(files.join("f".repeat(64)), b"orphan of a crash").unwrap();
    std::fs::write(files.join(".tmp-123"), b"temp").unwrap();
    std::fs::create_dir(files.join("subdir")).unwrap();
    let pending = upload(&store, b"pending upload");
    assert_eq!(store.gc_blobs().unwrap(), 3);
    assert!(files.join(&h[0]).is_file());
    assert!(!files.join(&h[1]).exists());
    assert!(files.join("subdir").is_dir());
    assert!(
        store.pending_upload(&pending).unwrap().exists(),
        "uploads are not GC's business"
    );
    assert_eq!(store.gc_blobs().unwrap(), 0);
    // v2's content can no longer be added without a new upload.
    assert!(matches!(
        store.add_version("c", "v3", &h[1], &a),
        Err(StoreError::NoUpload)
    ));
    let digest = Digest(Sha256::digest(b"drop").into());
    assert_eq!(store.blob_path(&digest), None);
}

/// A cancelled fsck ends at once, also inside a large blob, and records nothing.
#[test]
fn fsck_stops_when_told() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = with_versions(&store, "c", &[("v", b"v")]);
    let stop = CancellationToken::new();
    stop.cancel();
    let err = store.fsck(&stop).unwrap_err();
    assert!(matches!(err, StoreError::Interrupted("fsck")), "{err}");
    assert_eq!(err.to_string(), "fsck interrupted");

    // Inside a blob: the reader fails at its next read once stopped.
    let file = File::open(tmp.path().join("files").join(&h[0])).unwrap();
    let live = CancellationToken::new();
    let mut reader = super::fsck::Stoppable {
        file: &file,
        stop: &live,
    };
    let mut buf = [0u8; 1];
    assert_eq!(reader.read(&mut buf).unwrap(), 1);
    live.cancel();
    assert!(reader.read(&mut buf).is_err());
    let verified: i64 = store
        .conn()
        .query_row("SELECT count(verified_at) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verified, 0);
}

#[test]
fn fsck_reports_without_repairing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = with_versions(
        &store,
        "c",
        &[("good", b"good"), ("bad", b"bad"), ("gone", b"gone")],
    );
    let report = store.fsck(&CancellationToken::new()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.blobs_checked, report.bytes_checked), (3, 11));
    let verified: i64 = store
        .conn()
        .query_row("SELECT count(verified_at) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verified, 3);

    let files = tmp.path().join("files");
    std::fs::write(files.join(&h[1]), b"BAD").unwrap();
    std::fs::remove_file(files.join(&h[2])).unwrap();
    std::fs::write(files.join("stray"), b"").unwrap();
    let report = store.fsck(&CancellationToken::new()).unwrap();
    let mut expected = vec![
        format!(
            "hash mismatch for files/{}: content hashes to {}",
            h[1],
            sha(b"BAD")
        ),
        format!("missing blob files/{}", h[2]),
        format!(
            "version \"gone\" of component \"c\" references missing blob {}",
            h[2]
        ),
        "unknown file files/stray (gc removes it)".to_string(),
    ];
    let mut got = report.problems.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        files.join("stray").exists() && files.join(&h[1]).exists(),
        "fsck does not delete"
    );
}

#[test]
fn audit_keeps_the_newest_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    for i in 0..5 {
        store
            .record_audit(&AuditRow {
                time: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i).unwrap()
                    + time::Duration::nanoseconds(7),
                user: format!("u{i}"),
                key_fingerprint: "SHA256:abc".into(),
                remote_addr: "[::1]:22".into(),
                command: format!("showconf -name p{i}"),
                result: if i % 2 == 0 {
                    "ok".into()
                } else {
                    "fail: nope".into()
                },
            })
            .unwrap();
    }
    let rows = store.audit(3).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.user.as_str()).collect::<Vec<_>>(),
        ["u2", "u3", "u4"]
    );
    assert_eq!(rows[1].result, "fail: nope");
    assert_eq!(
        rows[2].time,
        OffsetDateTime::from_unix_timestamp(1_700_000_004).unwrap()
            + time::Duration::nanoseconds(7)
    );
    assert_eq!(store.audit(100).unwrap().len(), 5);
    assert!(store.audit(0).unwrap().is_empty());
}

#[test]
fn internal_errors_do_not_leak_paths() {
    let e = internal(anyhow::anyhow!(
        "rename /secret/uploads/upload-1 /secret/files/x: ENOENT"
    ));
    assert_eq!(e.to_string(), "internal error");
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<Upload>();
}

#[test]
fn sequential_upload_is_not_reread() {
    // The hash comes from the bytes as they were written: content changed on disk behind the
    // upload's back does not show, which proves finish did not read the file again.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut up = store.begin_upload().unwrap();
    up.write_at(0, b"as written").unwrap();
    let path = std::fs::read_dir(tmp.path().join("uploads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&path, b"AS WRITTEN").unwrap();
    let (d, _) = up.finish().unwrap();
    assert_eq!(hex::encode(d.0), sha(b"as written"));
}

#[test]
fn gc_racing_add_version_never_loses_a_referenced_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let h = with_versions(&store, "c", &[("base", b"content")]).remove(0);
    store.del_ver("c", "base", &actor("op")).unwrap(); // unreferenced: GC may take it any time
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.gc_blobs().unwrap();
            }
        })
    };
    let files = tmp.path().join("files");
    let mut reuploads = 0;
    for i in 0..200 {
        let version = format!("v{i}");
        match store.add_version("c", &version, &h, &actor("op")) {
            Ok(()) => {}
            // GC won: the content is gone and must be uploaded again; then addver works.
            Err(StoreError::NoUpload) => {
                reuploads += 1;
                assert_eq!(upload(&store, b"content"), h);
                store.add_version("c", &version, &h, &actor("op")).unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
        assert!(files.join(&h).is_file(), "a referenced blob is on disk");
        assert_eq!(std::fs::read(files.join(&h)).unwrap(), b"content");
        store.del_ver("c", &version, &actor("op")).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    gc.join().unwrap();
    println!("GC won {reuploads} of 200 races");
}

#[test]
fn history_and_audit_keep_their_newest_and_pruning_reaches_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        max_history: 2,
        max_audit: 3,
        ..Options::default()
    };
    let store = Store::open(tmp.path(), options).unwrap();
    let a = actor("op");
    with_versions(
        &store,
        "c",
        &[("v1", b"1"), ("v2", b"2"), ("v3", b"3"), ("v4", b"4")],
    );
    store.add_conf("p", &layers(&[("c", "v1")]), &a).unwrap();
    for v in ["v2", "v3", "v4"] {
        store.change_conf("p", "c", v, &a).unwrap();
    }
    let seqs: Vec<u64> = store.history("p").unwrap().iter().map(|h| h.seq).collect();
    assert_eq!(seqs, [4, 3], "the two newest saves, newest first");
    // v1 and v2 were named only by the dropped entries: -maxver may now remove them.
    assert_eq!(store.prune_versions(1).unwrap(), 2);
    let left: Vec<String> = store
        .show_comp("c")
        .unwrap()
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(left, ["v3", "v4"]);
    assert!(matches!(
        store.rollback("p", Some(1), &a),
        Err(StoreError::History(_))
    ));
    store.rollback("p", Some(3), &a).unwrap();
    for i in 0..5 {
        store
            .record_audit(&AuditRow {
                time: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i).unwrap(),
                user: format!("u{i}"),
                key_fingerprint: "SHA256:abc".into(),
                remote_addr: "[::1]:22".into(),
                command: "components".into(),
                result: "ok".into(),
            })
            .unwrap();
    }
    let users: Vec<String> = store
        .audit(100)
        .unwrap()
        .into_iter()
        .map(|r| r.user)
        .collect();
    assert_eq!(users, ["u2", "u3", "u4"]);
}
