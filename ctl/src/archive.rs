//! Local archive check before upload (fixes spec B21: the original validated *while*
//! uploading, so broken archives were uploaded anyway). One pass reads every byte: it hashes
//! the file and walks the archive to the end of every entry.
//!
//! Accepted: gzip (one or more members), zstd, or plain tar, told apart by the first bytes —
//! the same set `deploy-agent` unpacks.

use std::io::{self, BufRead, BufReader, Read};

use common::digest::{Digest, Hasher};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// What a successful check learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub digest: Digest,
    pub size: u64,
    pub entries: u64,
}

/// Counts and hashes every byte that the decoders pull from the file.
struct Tee<R> {
    inner: R,
    hasher: Hasher,
    size: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Checks that `file` is a readable archive and returns its sha256 and size. The error text
/// is what follows `file validation failed: `.
pub fn check(file: impl Read) -> Result<Checked, String> {
    let mut tee = Tee {
        inner: file,
        hasher: Hasher::new(),
        size: 0,
    };
    let entries = {
        let mut buffered = BufReader::with_capacity(256 << 10, &mut tee);
        let head = buffered.fill_buf().map_err(|e| e.to_string())?;
        if head.is_empty() {
            return Err("the file is empty, not an archive".into());
        }
        let mut decoded: Box<dyn Read + '_> = if head.starts_with(GZIP_MAGIC) {
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
        } else if head.starts_with(ZSTD_MAGIC) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|e| format!("zstd: {e}"))?,
            )
        } else {
            Box::new(buffered)
        };
        let entries = walk_tar(&mut decoded)?;
        // Past the tar end marker: the compressed stream must still end cleanly (gzip CRC,
        // no garbage member), and whatever is left counts for the hash.
        io::copy(&mut decoded, &mut io::sink()).map_err(|e| format!("after tar end: {e}"))?;
        entries
    };
    io::copy(&mut tee, &mut io::sink()).map_err(|e| e.to_string())?;
    Ok(Checked {
        digest: tee.hasher.finish(),
        size: tee.size,
        entries,
    })
}

fn walk_tar(r: &mut dyn Read) -> Result<u64, String> {
    let mut archive = tar::Archive::new(r);
    let mut n = 0u64;
    for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("tar: {e}"))?;
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("tar: {path}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_tar_is_hashed_over_the_file_bytes() {
        let file = gz(&tar_bytes(&[("a", b"hello"), ("dir/b", &[7u8; 100_000])]));
        let c = check(&file[..]).unwrap();
        assert_eq!(c.digest, Digest::of(&file));
        assert_eq!(c.size, file.len() as u64);
        assert_eq!(c.entries, 2);
    }

    #[test]
    fn empty_but_valid_tar_gz_passes() {
        let file = gz(&tar_bytes(&[]));
        assert_eq!(check(&file[..]).unwrap().entries, 0);
    }

    #[test]
    fn zstd_and_plain_tar_pass() {
        let t = tar_bytes(&[("x", b"y")]);
        let z = zstd::encode_all(&t[..], 3).unwrap();
        assert_eq!(check(&z[..]).unwrap().digest, Digest::of(&z));
        assert_eq!(check(&t[..]).unwrap().entries, 1);
    }

    #[test]
    fn gzip_of_non_tar_fails() {
        let file = gz(&[b'x'; 3000]);
        let err = check(&file[..]).unwrap_err();
        assert!(err.starts_with("tar: "), "{err}");
    }

    #[test]
    fn truncated_gzip_fails() {
        let file = gz(&tar_bytes(&[("a", &[1u8; 50_000])]));
        let err = check(&file[..file.len() / 2]).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn corrupt_crc_fails() {
        let mut file = gz(&tar_bytes(&[("a", b"abc")]));
        let n = file.len();
        file[n - 6] ^= 0xff; // inside the CRC32 trailer
        assert!(check(&file[..]).is_err());
    }

    #[test]
    fn text_and_empty_files_fail() {
        assert!(check(&b"just some text, not a tar header at all"[..]).is_err());
        assert_eq!(
            check(&b""[..]).unwrap_err(),
            "the file is empty, not an archive"
        );
    }

    #[test]
    fn trailing_garbage_after_gzip_fails() {
        let mut file = gz(&tar_bytes(&[("a", b"abc")]));
        file.extend_from_slice(b"garbage");
        assert!(check(&file[..]).is_err());
    }
}
