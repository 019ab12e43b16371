//! One test per rule, each with an archive built byte by byte (the `tar` builder refuses the
//! hostile names we need).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::*;

const ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// A tar entry described by hand.
struct E {
    name: &'static str,
    kind: u8,
    link: &'static str,
    data: Vec<u8>,
    mode: u32,
    mtime: u64,
}

fn file(name: &'static str, data: &str) -> E {
    E {
        name,
        kind: b'0',
        link: "",
        data: data.as_bytes().to_vec(),
        mode: 0o644,
        mtime: 1_500_000_000,
    }
}
fn dir(name: &'static str, mode: u32) -> E {
    E {
        name,
        kind: b'5',
        link: "",
        data: vec![],
        mode,
        mtime: 1_500_000_000,
    }
}
fn symlink(name: &'static str, target: &'static str) -> E {
    E {
        name,
        kind: b'2',
        link: target,
        data: vec![],
        mode: 0o777,
        mtime: 0,
    }
}
fn hardlink(name: &'static str, target: &'static str) -> E {
    E {
        name,
        kind: b'1',
        link: target,
        data: vec![],
        mode: 0o644,
        mtime: 0,
    }
}
fn special(name: &'static str, kind: u8) -> E {
    E {
        name,
        kind,
        link: "",
        data: vec![],
        mode: 0o644,
        mtime: 0,
    }
}

fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            raw.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(e.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

struct Fixture {
    tmp: tempfile::TempDir,
    layers: Vec<LayerFile>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
            layers: vec![],
        }
    }
    fn layer_raw(&mut self, bytes: Vec<u8>) -> &mut Self {
        let path = self.tmp.path().join(format!("layer{}", self.layers.len()));
        std::fs::write(&path, bytes).unwrap();
        self.layers.push(LayerFile {
            hash: format!("h{}", self.layers.len()),
            path,
        });
        self
    }
    fn layer(&mut self, entries: &[E]) -> &mut Self {
        self.layer_raw(gz(&tar_bytes(entries)))
    }
    fn unpacked(&self) -> PathBuf {
        self.tmp.path().join("unpacked")
    }
    fn tree(&self) -> PathBuf {
        self.unpacked().join(ID)
    }
    fn build_with(&self, policy: Policy) -> Result<Outcome, UnpackError> {
        build_tree(
            &self.unpacked(),
            ID,
            &self.layers,
            &policy,
            &AtomicBool::new(false),
        )
    }
    fn build(&self) -> Result<Outcome, UnpackError> {
        self.build_with(Policy::default())
    }
    /// After a refused archive: no tree, no marker, no staging dir, nothing beside them.
    fn assert_nothing_left(&self) {
        let names: Vec<_> = std::fs::read_dir(self.unpacked())
            .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(names.is_empty(), "left behind in unpacked/: {names:?}");
        let mut top: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        top.sort();
        let mut want: Vec<std::ffi::OsString> = (0..self.layers.len())
            .map(|i| format!("layer{i}").into())
            .collect();
        want.push("unpacked".into());
        want.sort();
        assert_eq!(top, want, "something was written outside unpacked/");
    }
}

fn rejected(res: Result<Outcome, UnpackError>, entry: &str, reason_has: &str) {
    match res {
        Err(UnpackError::Rejected {
            entry: e, reason, ..
        }) => {
            assert_eq!(e, entry);
            assert!(
                reason.contains(reason_has),
                "reason {reason:?} lacks {reason_has:?}"
            );
        }
        other => panic!("expected rejection of {entry:?}, got {other:?}"),
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn builds_tree_with_marker_and_metadata() {
    let mut f = Fixture::new();
    f.layer(&[
        dir("bin", 0o755),
        E {
            mode: 0o750,
            ..file("bin/run", "#!/bin/sh\n")
        },
        file("etc/deep/conf", "v1"),
        symlink("lib", "/usr/lib/abs-target"),
        hardlink("bin/run2", "bin/run"),
    ])
    .layer(&[file("etc/deep/conf", "v2")]);
    assert_eq!(f.build().unwrap(), Outcome::Built);
    let t = f.tree();
    assert!(tree_ready(&f.unpacked(), ID));
    assert_eq!(
        std::fs::read_to_string(t.join("etc/deep/conf")).unwrap(),
        "v2"
    );
    assert_eq!(mode_of(&t.join("bin/run")), 0o750);
    assert_eq!(
        std::fs::metadata(t.join("bin/run")).unwrap().mtime(),
        1_500_000_000
    );
    assert_eq!(
        std::fs::read_link(t.join("lib")).unwrap(),
        Path::new("/usr/lib/abs-target")
    );
    assert_eq!(
        std::fs::metadata(t.join("bin/run2")).unwrap().ino(),
        std::fs::metadata(t.join("bin/run")).unwrap().ino()
    );
    // Implicit parents: 0755 at most, never world-writable.
    for d in ["etc", "etc/deep"] {
        assert_eq!(mode_of(&t.join(d)) & 0o022, 0, "{d}");
    }
    assert_eq!(mode_of(&f.unpacked().join(format!("{ID}.ok"))), 0o640);
    let names: Vec<_> = std::fs::read_dir(f.unpacked())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Second call reuses.
    assert_eq!(f.build().unwrap(), Outcome::Reused);
}

#[test]
fn zip_slip_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[file("ok.txt", "x"), file("../escaped.txt", "pwned")]);
    rejected(f.build(), "../escaped.txt", "'..'");
    f.assert_nothing_left();
}

#[test]
fn nested_dotdot_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[file("a/../../escaped.txt", "pwned")]);
    rejected(f.build(), "a/../../escaped.txt", "'..'");
    f.assert_nothing_left();
}

#[test]
fn absolute_path_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[file("/abs.txt", "x")]);
    rejected(f.build(), "/abs.txt", "absolute");
    f.assert_nothing_left();
}

#[test]
fn symlink_then_write_through_is_rejected() {
    let mut f = Fixture::new();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target: &'static str = Box::leak(outside.to_str().unwrap().to_string().into_boxed_str());
    f.layer(&[symlink("lnk", target), file("lnk/through.txt", "pwned")]);
    rejected(f.build(), "lnk/through.txt", "not a directory");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn symlink_to_parent_then_mkdir_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[symlink("up", ".."), dir("up/newdir", 0o755)]);
    rejected(f.build(), "up/newdir", "not a directory");
    f.assert_nothing_left();
}

#[test]
fn symlink_in_later_layer_is_not_followed() {
    let mut f = Fixture::new();
    f.layer(&[symlink("d", "/tmp")])
        .layer(&[file("d/x", "pwned")]);
    rejected(f.build(), "d/x", "not a directory");
    f.assert_nothing_left();
}

#[test]
fn file_over_symlink_replaces_the_link() {
    let mut f = Fixture::new();
    let outside = f.tmp.path().join("victim");
    std::fs::write(&outside, "original").unwrap();
    let target: &'static str = Box::leak(outside.to_str().unwrap().to_string().into_boxed_str());
    f.layer(&[symlink("f", target), file("f", "new")]);
    f.build().unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "original");
    assert_eq!(std::fs::read_to_string(f.tree().join("f")).unwrap(), "new");
    assert!(
        std::fs::symlink_metadata(f.tree().join("f"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn hard_link_out_of_tree_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[hardlink("pw", "../../../../etc/passwd")]);
    rejected(f.build(), "pw", "'..'");
    f.assert_nothing_left();
}

#[test]
fn hard_link_to_missing_or_symlink_is_rejected() {
    let mut f = Fixture::new();
    f.layer(&[hardlink("a", "nothing-here")]);
    rejected(f.build(), "a", "not a file already extracted");

    let mut f = Fixture::new();
    f.layer(&[symlink("s", "/etc/passwd"), hardlink("a", "s")]);
    rejected(f.build(), "a", "not a file already extracted");

    let mut f = Fixture::new();
    f.layer(&[symlink("d", "/etc"), hardlink("a", "d/passwd")]);
    rejected(f.build(), "a", "not a file already extracted");
    f.assert_nothing_left();
}

#[test]
fn overwrite_does_not_write_through_hard_link() {
    let mut f = Fixture::new();
    f.layer(&[
        file("a", "shared"),
        hardlink("b", "a"),
        E {
            mode: 0o600,
            ..file("b", "new b")
        },
    ]);
    f.build().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.tree().join("a")).unwrap(),
        "shared"
    );
    assert_eq!(
        std::fs::read_to_string(f.tree().join("b")).unwrap(),
        "new b"
    );
    // The later entry's mode wins (the original kept the old one: A3).
    assert_eq!(mode_of(&f.tree().join("b")), 0o600);
}

#[test]
fn hard_link_to_itself_leaves_no_temp_file() {
    let mut f = Fixture::new();
    f.layer(&[file("a", "x"), hardlink("a", "a")]);
    f.build().unwrap();
    let names: Vec<_> = std::fs::read_dir(f.tree())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["a"]);
}

#[test]
fn duplicate_entries_last_wins() {
    let mut f = Fixture::new();
    f.layer(&[file("x", "first"), dir("x", 0o755), file("x", "third")]);
    f.build().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.tree().join("x")).unwrap(),
        "third"
    );
}

#[test]
fn devices_and_fifos_are_rejected_by_default() {
    for (kind, name) in [(b'3', "chr"), (b'4', "blk"), (b'6', "fifo")] {
        let mut f = Fixture::new();
        f.layer(&[special(name, kind)]);
        rejected(f.build(), name, "device nodes and FIFOs are not allowed");
        f.assert_nothing_left();
    }
}

#[test]
fn setuid_setgid_sticky_are_stripped() {
    let mut f = Fixture::new();
    f.layer(&[
        E {
            mode: 0o6755,
            ..file("suid", "x")
        },
        dir("tmp", 0o1777),
    ]);
    f.build().unwrap();
    assert_eq!(mode_of(&f.tree().join("suid")), 0o755);
    assert_eq!(mode_of(&f.tree().join("tmp")), 0o777);
}

#[test]
fn decompression_bomb_is_stopped() {
    let mut f = Fixture::new();
    let big = E {
        data: vec![0u8; 4 << 20],
        ..file("zeros", "")
    };
    f.layer(&[big]);
    let policy = Policy {
        limits: Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        },
        ..Policy::default()
    };
    match f.build_with(policy) {
        Err(UnpackError::Limit { reason, .. }) => {
            assert!(reason.contains("1048576 bytes"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    f.assert_nothing_left();
}

#[test]
fn absurd_entry_count_is_stopped() {
    let mut f = Fixture::new();
    let names: Vec<&'static str> = (0..50)
        .map(|i| &*Box::leak(format!("f{i}").into_boxed_str()))
        .collect();
    let entries: Vec<E> = names.iter().map(|n| file(n, "")).collect();
    f.layer(&entries);
    let policy = Policy {
        limits: Limits {
            max_entries: 20,
            ..Limits::default()
        },
        ..Policy::default()
    };
    match f.build_with(policy) {
        Err(UnpackError::Limit { reason, entry, .. }) => {
            assert!(reason.contains("more than 20"), "{reason}");
            assert_eq!(entry.as_deref(), Some("f20"));
        }
        other => panic!("{other:?}"),
    }
    f.assert_nothing_left();
}

#[test]
fn links_leading_outside_are_refused_when_asked() {
    let inside = Policy {
        links_inside: true,
        ..Policy::default()
    };
    // Links that stay inside, whatever their shape: kept.
    let mut f = Fixture::new();
    f.layer(&[
        file("pkg/bin/tool", "#!/bin/sh\n"),
        symlink("node_modules/.bin/tool", "../../pkg/bin/tool"),
        symlink("lib/libx.so", "libx.so.1"),
        symlink("dangling", "not/there"),
        symlink("loop", "loop"),
        symlink("up/here", ".."),
        // Absolute, then replaced by a later entry: what is left is a file.
        symlink("gone", "/etc/passwd"),
        file("gone", "a file now"),
    ]);
    assert_eq!(f.build_with(inside).unwrap(), Outcome::Built);
    assert_eq!(
        std::fs::read_to_string(f.tree().join("node_modules/.bin/tool")).unwrap(),
        "#!/bin/sh\n"
    );

    // Out of the tree: directly, by `..`, or by a path through another link that `..`
    // alone would not show.
    for (entries, bad) in [
        (vec![symlink("etc/shadow", "/etc/shadow")], "etc/shadow"),
        (vec![symlink("a/b", "../../x")], "a/b"),
        (vec![symlink("d/up", ".."), symlink("e", "d/up/..")], "e"),
    ] {
        let mut f = Fixture::new();
        f.layer(&entries);
        match f.build_with(inside) {
            Err(UnpackError::Rejected { entry, reason, .. }) => {
                assert_eq!(entry, bad);
                assert!(reason.contains("leads outside the release"), "{reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
        f.assert_nothing_left();
        // deploy-tools layers keep such links: a base layer may hold `etc/localtime ->
        // /usr/share/zoneinfo/UTC`.
        assert_eq!(
            f.build_with(Policy::default()).unwrap(),
            Outcome::Built,
            "{bad}"
        );
    }
}

#[test]
fn whiteouts_delete_earlier_layers() {
    let mut f = Fixture::new();
    f.layer(&[
        file("a/x", "1"),
        file("a/y", "1"),
        file("b/keep", "1"),
        file("c", "1"),
    ])
    .layer(&[
        dir("a", 0o755),
        file("a/.wh..wh..opq", ""),
        file("a/z", "2"),
        file(".wh.c", ""),
        file("b/.wh.nothing", ""),
    ]);
    f.build().unwrap();
    let t = f.tree();
    let mut a: Vec<_> = std::fs::read_dir(t.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    a.sort();
    assert_eq!(a, vec!["z"]);
    assert!(!t.join("c").exists());
    assert!(t.join("b/keep").exists());
    assert!(!t.join(".wh.c").exists());
}

#[test]
fn later_layer_swaps_file_and_directory() {
    let mut f = Fixture::new();
    f.layer(&[file("p/q", "dir child"), file("r", "file")])
        .layer(&[
            file("p", "now a file"),
            dir("r", 0o755),
            file("r/s", "now a dir"),
        ]);
    f.build().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.tree().join("p")).unwrap(),
        "now a file"
    );
    assert_eq!(
        std::fs::read_to_string(f.tree().join("r/s")).unwrap(),
        "now a dir"
    );
}

#[test]
fn read_only_directory_from_archive_still_fills_and_cleans() {
    let mut f = Fixture::new();
    f.layer(&[dir("ro", 0o555), file("ro/a", "1")])
        .layer(&[file("ro/b", "2")]);
    f.build().unwrap();
    assert_eq!(mode_of(&f.tree().join("ro")), 0o555);
    assert!(f.tree().join("ro/b").exists());
    remove_tree(&f.tree()).unwrap();
    assert!(!f.tree().exists());
}

#[test]
fn zstd_and_plain_tar_layers() {
    let mut f = Fixture::new();
    f.layer_raw(tar_bytes(&[file("plain", "p")]));
    f.layer_raw(zstd::encode_all(&tar_bytes(&[file("zst", "z")])[..], 3).unwrap());
    f.build().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.tree().join("plain")).unwrap(),
        "p"
    );
    assert_eq!(std::fs::read_to_string(f.tree().join("zst")).unwrap(), "z");
}

#[test]
fn corrupt_gzip_fails_the_layer() {
    let mut f = Fixture::new();
    let mut bytes = gz(&tar_bytes(&[file("a", "hello")]));
    let n = bytes.len();
    bytes[n - 6] ^= 0xff; // CRC
    f.layer_raw(bytes);
    assert!(
        matches!(f.build(), Err(UnpackError::Layer { index: 1, .. })),
        "corrupt CRC accepted"
    );
    f.assert_nothing_left();
}

#[test]
fn tree_without_marker_is_rebuilt() {
    let mut f = Fixture::new();
    f.layer(&[file("good", "1")]);
    std::fs::create_dir_all(f.tree().join("junk-from-crash")).unwrap();
    std::fs::create_dir_all(f.unpacked().join(format!("{ID}.partial-1234"))).unwrap();
    assert_eq!(f.build().unwrap(), Outcome::Built);
    assert!(!f.tree().join("junk-from-crash").exists());
    assert!(f.tree().join("good").exists());
    assert!(!f.unpacked().join(format!("{ID}.partial-1234")).exists());
}

#[test]
fn cancel_between_layers_leaves_nothing() {
    let mut f = Fixture::new();
    f.layer(&[file("a", "1")]);
    let res = build_tree(
        &f.unpacked(),
        ID,
        &f.layers,
        &Policy::default(),
        &AtomicBool::new(true),
    );
    assert!(matches!(res, Err(UnpackError::Cancelled)));
    f.assert_nothing_left();
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // "<len> key=value\n" where len counts itself.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn meta(kind: u8, data: Vec<u8>) -> E {
    E {
        name: "././@LongLink",
        kind,
        link: "",
        data,
        mode: 0o644,
        mtime: 0,
    }
}

#[test]
fn gnu_long_names_and_pax_paths_are_honoured_and_checked() {
    let long: String = (0..30).map(|i| format!("dir{i:02}/")).collect::<String>() + "file.txt";
    let mut lname = long.clone().into_bytes();
    lname.push(0);
    let mut f = Fixture::new();
    f.layer(&[
        meta(b'L', lname),
        file("short-placeholder", "long"),
        meta(
            b'x',
            [
                pax_record("path", "pax/named.txt"),
                pax_record("mtime", "1.5"),
            ]
            .concat(),
        ),
        file("ignored-name", "pax"),
        meta(b'x', pax_record("linkpath", "pax/named.txt")),
        hardlink("pax-link", "ignored-target"),
    ]);
    f.build().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.tree().join(&long)).unwrap(),
        "long"
    );
    assert_eq!(
        std::fs::read_to_string(f.tree().join("pax/named.txt")).unwrap(),
        "pax"
    );
    assert_eq!(
        std::fs::read_to_string(f.tree().join("pax-link")).unwrap(),
        "pax"
    );
    assert!(!f.tree().join("short-placeholder").exists());

    // The long name goes through the same checks as any other name.
    let mut f = Fixture::new();
    f.layer(&[
        meta(b'x', pax_record("path", "../../pax-escape")),
        file("x", "pwned"),
    ]);
    rejected(f.build(), "../../pax-escape", "'..'");
    f.assert_nothing_left();
}

#[test]
fn oversized_metadata_records_are_refused_before_reading() {
    let mut f = Fixture::new();
    f.layer(&[meta(b'L', vec![b'a'; 100 << 10]), file("x", "")]);
    match f.build() {
        Err(UnpackError::Rejected { reason, .. }) => {
            assert!(reason.contains("GNU long name record larger"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let mut f = Fixture::new();
    f.layer(&[meta(b'x', pax_record("size", "99999999999")), file("x", "")]);
    match f.build() {
        Err(UnpackError::Rejected { reason, .. }) => {
            assert!(reason.contains("PAX size"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let mut f = Fixture::new();
    f.layer(&[special("sparse", b'S')]);
    rejected(f.build(), "sparse", "sparse");
    f.assert_nothing_left();
}

/// Archives made by the real GNU tar, in its default (gnu) and pax formats, with a name over
/// 100 bytes, a symlink, a hard link and an executable: what operators actually upload.
#[test]
fn archives_from_gnu_tar() {
    for format in ["gnu", "pax"] {
        let mut f = Fixture::new();
        let src = f.tmp.path().join(format!("src-{format}"));
        let long_dir = src.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&long_dir).unwrap();
        std::fs::write(long_dir.join("deep.txt"), "deep").unwrap();
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            src.join("bin/hello"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("bin/hello", src.join("hello")).unwrap();
        std::fs::hard_link(src.join("bin/hello"), src.join("bin/hello2")).unwrap();
        let out = f.tmp.path().join(format!("layer-{format}.tgz"));
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&out)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        f.layer_raw(std::fs::read(&out).unwrap());
        std::fs::remove_file(&out).unwrap();
        f.build().unwrap();
        let t = f.tree();
        let rel = long_dir.strip_prefix(&src).unwrap().join("deep.txt");
        assert_eq!(
            std::fs::read_to_string(t.join(rel)).unwrap(),
            "deep",
            "{format}"
        );
        assert_eq!(mode_of(&t.join("bin/hello")), 0o755);
        assert_eq!(
            std::fs::read_link(t.join("hello")).unwrap(),
            Path::new("bin/hello")
        );
        assert_eq!(
            std::fs::metadata(t.join("bin/hello2")).unwrap().ino(),
            std::fs::metadata(t.join("bin/hello")).unwrap().ino()
        );
        std::fs::remove_dir_all(&src).unwrap();
    }
}

/// A layer of many opaque whiteouts and many files must not take quadratic time.
#[test]
fn many_opaque_whiteouts_stay_linear() {
    let names: Vec<&'static str> = (0..4000)
        .map(|i| &*Box::leak(format!("d/f{i}").into_boxed_str()))
        .collect();
    let mut entries: Vec<E> = names.iter().map(|n| file(n, "")).collect();
    for _ in 0..4000 {
        entries.push(file("d/.wh..wh..opq", ""));
    }
    let mut f = Fixture::new();
    f.layer(&entries);
    let start = std::time::Instant::now();
    f.build().unwrap();
    assert_eq!(std::fs::read_dir(f.tree().join("d")).unwrap().count(), 4000);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn removed_directory_forgets_its_recorded_mode() {
    let mut f = Fixture::new();
    f.layer(&[dir("x", 0o700), dir("x/y", 0o700), dir("xz", 0o700)])
        .layer(&[file(".wh.x", ""), file("x/y/z", "new")]);
    f.build().unwrap();
    assert_eq!(
        mode_of(&f.tree().join("x")) & 0o077,
        0o055 & mode_of(&f.tree().join("x"))
    );
    assert_ne!(mode_of(&f.tree().join("x")), 0o700);
    assert_ne!(mode_of(&f.tree().join("x/y")), 0o700);
    // A sibling that merely shares the prefix keeps its mode.
    assert_eq!(mode_of(&f.tree().join("xz")), 0o700);
}

/// Inodes in use on the filesystem holding `path`.
fn inodes_used(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_files - st.f_ffree
}

fn limit_inodes(fs: &e2e::tmpfs::Tmpfs, n: u64) {
    let st = std::process::Command::new("mount")
        .args(["-o", &format!("remount,nr_inodes={n}")])
        .arg(fs.path())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The marker meets a real full disk (a tmpfs whose last inode went to the tree; root only):
/// the tree, never usable without its marker, is removed with the failure instead of holding
/// the space until the next attempt; with room again the same build succeeds.
#[test]
fn marker_on_a_full_disk_takes_its_tree_along() {
    let Some(fs) = e2e::tmpfs::Tmpfs::mount(1024) else {
        return;
    };
    let mut f = Fixture::new();
    f.layer(&[file("a", "1"), file("b", "2")]);
    let unpacked = fs.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let build = || {
        build_tree(
            &unpacked,
            ID,
            &f.layers,
            &Policy::default(),
            &AtomicBool::new(false),
        )
    };
    // Room for the staging dir and its two files, not for the marker.
    let used = inodes_used(fs.path());
    limit_inodes(&fs, used + 3);
    match build() {
        Err(UnpackError::Io { what, path, source }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}");
            assert_eq!(
                (what, path),
                ("cannot create", unpacked.join(format!("{ID}.ok")))
            );
        }
        other => panic!("{other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&unpacked).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(inodes_used(fs.path()), used);

    limit_inodes(&fs, used + 4);
    assert_eq!(build().unwrap(), Outcome::Built);
    assert!(tree_ready(&unpacked, ID));
}

/// An unmarked tree left by a crash is removed before the new one is built, not after: on a
/// disk with room for one copy only (a 1 MiB tmpfs; root only), the rebuild still fits.
#[test]
fn crash_leftover_tree_makes_room_before_the_rebuild() {
    let Some(fs) = e2e::tmpfs::Tmpfs::mount(1024) else {
        return;
    };
    let content: String = (0..600 * 1024u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2654435761) >> 27) as u8 % 26))
        .collect();
    let mut f = Fixture::new();
    f.layer(&[file("big", &content)]);
    let unpacked = fs.join("unpacked");
    std::fs::create_dir_all(unpacked.join(ID)).unwrap();
    std::fs::write(unpacked.join(ID).join("big"), &content).unwrap();
    let res = build_tree(
        &unpacked,
        ID,
        &f.layers,
        &Policy::default(),
        &AtomicBool::new(false),
    );
    assert_eq!(res.unwrap(), Outcome::Built);
    assert!(tree_ready(&unpacked, ID));
}
