//! Artifact kinds the unpacker does not read itself, turned into a tar stream it does: the
//! unpacker stays the single place where entries are checked (no `..`, no absolute names, no
//! symlink escapes, modes masked, size/entry/ratio limits), whatever the archive format.
//!
//! - `.tar.gz`/`.tgz`, `.tar` and OCI layers go to the unpacker as they are (gzip/zstd/tar by
//!   magic bytes).
//! - `.tar.bz2`/`.tbz2` and `.tar.xz`/`.txz` are decompressed here; the tar inside is passed on.
//! - `.zip` is re-written as a tar (a zip needs random access to its central directory, so it
//!   is read from the cached file).
//! - Anything else is a plain executable: a tar of one file, `<artifact name>`, mode 0755.
//!
//! The decompressed bytes are counted against the limits here too, because the unpacker sees
//! an uncompressed tar and so cannot check the expansion ratio.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use common::dewy::artifact::ArtifactKind;
use sources::LayerKind;

use crate::unpack::{self, LayerInput, Limits, StreamWriter};

/// Below this many output bytes the ratio is not checked (as in the unpacker).
const RATIO_FLOOR: u64 = 64 << 20;
const CHUNK: usize = 256 << 10;

/// How a cached layer reaches the unpacker.
pub enum Plan {
    /// The file itself.
    Direct(LayerInput),
    /// A converted stream; run [`Conversion::run`] on a blocking thread while unpacking.
    Convert(LayerInput, Conversion),
}

/// One pending conversion of a cached file into tar bytes.
pub struct Conversion {
    kind: ArtifactKind,
    path: PathBuf,
    name: String,
    limits: Limits,
    writer: StreamWriter,
}

/// Decides how the cached blob at `path` of a layer of `kind` named `name` is unpacked.
pub fn plan(kind: LayerKind, hash: &str, path: PathBuf, name: &str, limits: Limits) -> Plan {
    let direct = |path| {
        Plan::Direct(LayerInput::File {
            hash: hash.to_string(),
            path,
        })
    };
    let kind = match kind {
        LayerKind::ImageLayer => return direct(path),
        LayerKind::Artifact(ArtifactKind::TarGz | ArtifactKind::Tar) => return direct(path),
        LayerKind::Artifact(k) => k,
    };
    let (writer, reader) = unpack::stream();
    Plan::Convert(
        LayerInput::Stream {
            hash: hash.to_string(),
            reader,
        },
        Conversion {
            kind,
            path,
            name: name.to_string(),
            limits,
            writer,
        },
    )
}

impl Conversion {
    /// Writes the tar stream. Blocking: call on a blocking thread inside the runtime. On error
    /// the writer is dropped unverified, which fails the unpacker's layer.
    pub fn run(self, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
        let file = File::open(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", self.path.display()))?;
        let counted = Counted::new(file);
        let read_in = counted.count.clone();
        let mut out = Sink {
            writer: Some(self.writer),
            rt,
            out: 0,
            read_in,
            limits: self.limits,
        };
        match self.kind {
            ArtifactKind::TarBz2 => {
                let mut d = bzip2::read::MultiBzDecoder::new(BufReader::new(counted));
                copy(&mut d, &mut out).map_err(|e| anyhow::anyhow!("{}: bzip2: {e}", self.name))?;
            }
            ArtifactKind::TarXz => {
                let mut d = xz2::read::XzDecoder::new_multi_decoder(BufReader::new(counted));
                copy(&mut d, &mut out).map_err(|e| anyhow::anyhow!("{}: xz: {e}", self.name))?;
            }
            ArtifactKind::Zip => zip_to_tar(counted, &mut out, &self.limits)
                .map_err(|e| anyhow::anyhow!("{}: zip: {e}", self.name))?,
            ArtifactKind::Plain => plain_to_tar(counted, &self.name, &mut out)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.name))?,
            ArtifactKind::TarGz | ArtifactKind::Tar => {
                let mut f = counted;
                copy(&mut f, &mut out)?;
            }
        }
        out.finish();
        Ok(())
    }
}

fn copy(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
    }
}

struct Counted<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted {
            inner,
            count: Default::default(),
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for Counted<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// The tar bytes going to the unpacker, with the byte and ratio limits applied.
struct Sink {
    writer: Option<StreamWriter>,
    rt: tokio::runtime::Handle,
    out: u64,
    read_in: std::sync::Arc<std::sync::atomic::AtomicU64>,
    limits: Limits,
}

impl Sink {
    fn finish(mut self) {
        if let Some(w) = self.writer.take() {
            self.rt.block_on(w.verified());
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out += buf.len() as u64;
        if self.out > self.limits.max_bytes {
            return Err(io::Error::other(format!(
                "limit exceeded: more than {} bytes unpacked",
                self.limits.max_bytes
            )));
        }
        let read_in = self
            .read_in
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        if self.out > RATIO_FLOOR && self.out / read_in > self.limits.max_ratio {
            return Err(io::Error::other(format!(
                "limit exceeded: expansion ratio over {}",
                self.limits.max_ratio
            )));
        }
        if let Some(w) = &mut self.writer {
            self.rt.block_on(w.send(buf));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A zip archive as a tar: directories, regular files and symlinks (the unpacker decides
/// whether a link may stay), Unix modes when the zip has them.
fn zip_to_tar<R: Read + io::Seek>(file: R, out: &mut Sink, limits: &Limits) -> io::Result<()> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(io::Error::other)?;
    if archive.len() as u64 > limits.max_entries {
        return Err(io::Error::other(format!(
            "limit exceeded: {} entries, at most {} allowed",
            archive.len(),
            limits.max_entries
        )));
    }
    let mut tar = tar::Builder::new(out);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(io::Error::other)?;
        let name = entry.name().map_err(io::Error::other)?.to_string();
        check_name(&name)?;
        let mode = entry.unix_mode();
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        if entry.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode.map_or(0o755, |m| m & 0o777));
            h.set_size(0);
            tar.append_data(&mut h, name.trim_end_matches('/'), io::empty())?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| io::Error::other(format!("entry {name:?}: symlink target: {e}")))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, &name, &target)?;
        } else {
            let size = entry.size();
            if size > limits.max_bytes {
                return Err(io::Error::other(format!(
                    "entry {name:?}: limit exceeded: {size} bytes"
                )));
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode.map_or(0o644, |m| m & 0o777));
            h.set_size(size);
            // The declared size goes in the header: a shorter body is an error, not padding.
            let mut body = Exact {
                inner: (&mut entry).take(size),
                left: size,
                name: &name,
            };
            tar.append_data(&mut h, &name, &mut body)?;
        }
    }
    tar.into_inner()?;
    Ok(())
}

/// A zip entry name as the unpacker would accept it, refused here already so the error names
/// the entry (tar would refuse `..` with a less clear text).
fn check_name(name: &str) -> io::Result<()> {
    let p = Path::new(name);
    if name.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
    {
        return Err(io::Error::other(format!(
            "entry {name:?} rejected: it would escape the release directory"
        )));
    }
    Ok(())
}

struct Exact<'a, R> {
    inner: R,
    left: u64,
    name: &'a str,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "entry {:?}: {} bytes short of its declared size",
                self.name, self.left
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A plain executable as a tar of one file named `name`, mode 0755.
fn plain_to_tar(mut file: Counted<File>, name: &str, out: &mut Sink) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::other(format!(
            "artifact name {name:?} cannot name a file"
        )));
    }
    let size = file.inner.metadata()?.len();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(size);
    h.set_mtime(0);
    let mut tar = tar::Builder::new(out);
    let mut body = Exact {
        inner: (&mut file).take(size),
        left: size,
        name,
    };
    tar.append_data(&mut h, name, &mut body)?;
    tar.into_inner()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::AtomicBool;

    use zip::write::SimpleFileOptions;

    use super::*;
    use crate::unpack::Policy;

    enum Item<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn zip_of(items: &[Item<'_>]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for it in items {
            match it {
                Item::File(name, data, mode) => {
                    w.start_file(*name, stored.unix_permissions(*mode)).unwrap();
                    w.write_all(data).unwrap();
                }
                Item::Dir(name) => w.add_directory(*name, stored).unwrap(),
                Item::Link(name, target) => w.add_symlink(*name, *target, stored).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// Converts `bytes` of `kind` named `name` and unpacks it into `<tmp>/r/t`.
    async fn unpack(
        tmp: &Path,
        kind: ArtifactKind,
        name: &str,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<PathBuf, String> {
        let blob = tmp.join("blob");
        std::fs::write(&blob, bytes).unwrap();
        let Plan::Convert(input, conv) = plan(
            LayerKind::Artifact(kind),
            &"a".repeat(64),
            blob,
            name,
            limits,
        ) else {
            panic!("{kind:?} is converted");
        };
        let rt = tokio::runtime::Handle::current();
        let converting = tokio::task::spawn_blocking(move || conv.run(rt));
        let dir = tmp.join("r");
        let d = dir.clone();
        // As Dewy's modes unpack artifacts.
        let policy = Policy {
            limits,
            allow_special: false,
            links_inside: true,
        };
        let built = tokio::task::spawn_blocking(move || {
            unpack::build_tree_from(&d, "t", vec![input], &policy, &AtomicBool::new(false))
        })
        .await
        .unwrap();
        converting
            .await
            .unwrap()
            .map_err(|e| format!("convert: {e:#}"))?;
        built.map_err(|e| format!("unpack: {e}"))?;
        Ok(dir.join("t"))
    }

    #[tokio::test]
    async fn zip_files_dirs_modes_and_an_inner_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let z = zip_of(&[
            Item::Dir("bin/"),
            Item::File("bin/app", b"#!/bin/sh\n", 0o4755),
            Item::File("etc/conf", b"x=1", 0o600),
            Item::Link("bin/run", "app"),
        ]);
        let t = unpack(
            tmp.path(),
            ArtifactKind::Zip,
            "a.zip",
            &z,
            Limits::default(),
        )
        .await
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(t.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(std::fs::read(t.join("bin/app")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode("bin/app"), 0o755, "setuid masked");
        assert_eq!(mode("etc/conf"), 0o600);
        assert_eq!(
            std::fs::read_link(t.join("bin/run")).unwrap(),
            Path::new("app")
        );
    }

    #[tokio::test]
    async fn zip_escapes_are_refused() {
        for (items, why) in [
            (vec![Item::File("../evil", b"x", 0o644)], "escape"),
            (vec![Item::File("/abs", b"x", 0o644)], "escape"),
            (
                vec![
                    Item::Link("out", "/etc"),
                    Item::File("out/passwd", b"x", 0o644),
                ],
                "",
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let z = zip_of(&items);
            let err = unpack(
                tmp.path(),
                ArtifactKind::Zip,
                "a.zip",
                &z,
                Limits::default(),
            )
            .await
            .unwrap_err();
            assert!(err.contains(why), "{err}");
            assert!(!tmp.path().join("r/t").exists());
        }
    }

    #[tokio::test]
    async fn zip_limits_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let z = zip_of(&[
            Item::File("a", b"1", 0o644),
            Item::File("b", b"2", 0o644),
            Item::File("c", b"3", 0o644),
        ]);
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = unpack(tmp.path(), ArtifactKind::Zip, "a.zip", &z, limits)
            .await
            .unwrap_err();
        assert!(err.contains("limit exceeded"), "{err}");
        let limits = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        let z = zip_of(&[Item::File("big", &[7u8; 4096], 0o644)]);
        let err = unpack(tmp.path(), ArtifactKind::Zip, "a.zip", &z, limits)
            .await
            .unwrap_err();
        assert!(err.contains("limit exceeded"), "{err}");
    }

    #[tokio::test]
    async fn compressed_tars_and_a_plain_executable() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        tar.append_data(&mut h, "f", &b"ok"[..]).unwrap();
        let tar = tar.into_inner().unwrap();

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        for (kind, bytes) in [
            (ArtifactKind::TarBz2, bz.finish().unwrap()),
            (ArtifactKind::TarXz, xz.finish().unwrap()),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let t = unpack(tmp.path(), kind, "x", &bytes, Limits::default())
                .await
                .unwrap();
            assert_eq!(std::fs::read(t.join("f")).unwrap(), b"ok");
        }
        // Not bzip2 at all: the conversion's error, the tree never appears.
        let tmp = tempfile::tempdir().unwrap();
        let err = unpack(
            tmp.path(),
            ArtifactKind::TarBz2,
            "x.tbz2",
            &tar,
            Limits::default(),
        )
        .await
        .unwrap_err();
        assert!(err.contains("x.tbz2: bzip2"), "{err}");
        assert!(!tmp.path().join("r/t").exists());

        let tmp = tempfile::tempdir().unwrap();
        let t = unpack(
            tmp.path(),
            ArtifactKind::Plain,
            "tool",
            b"\x7fELF",
            Limits::default(),
        )
        .await
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(t.join("tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(t.join("tool")).unwrap(), b"\x7fELF");
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            unpack(
                tmp.path(),
                ArtifactKind::Plain,
                "..",
                b"x",
                Limits::default()
            )
            .await
            .is_err()
        );
    }
}
