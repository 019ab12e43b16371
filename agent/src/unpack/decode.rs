//! Turning a layer file into a tar byte stream: compression chosen by magic bytes, and the
//! budget (total bytes, expansion ratio) enforced on every byte that comes out.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use super::Limits;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Below this many output bytes the ratio is not checked: tiny layers of text compress far
/// beyond any sane ratio, and a few MiB cannot hurt anyone.
const RATIO_FLOOR: u64 = 64 << 20;

/// The error carried inside an `io::Error` when a layer exceeds a limit, so that it can be told
/// apart from a corrupt stream and reported as what it is.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub(crate) String);

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LimitExceeded {}

/// If `err` (or what it wraps) is a limit violation, its message.
pub(crate) fn limit_message(err: &io::Error) -> Option<String> {
    let inner = err.get_ref()?;
    if let Some(l) = inner.downcast_ref::<LimitExceeded>() {
        return Some(l.0.clone());
    }
    // tar wraps reader errors in its own error with the original as source.
    let mut src = inner.source();
    while let Some(e) = src {
        if let Some(l) = e.downcast_ref::<LimitExceeded>() {
            return Some(l.0.clone());
        }
        if let Some(m) = e.downcast_ref::<io::Error>().and_then(limit_message) {
            return Some(m);
        }
        src = e.source();
    }
    None
}

/// Counts bytes read from the compressed file.
struct CountIn<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream with the budget applied.
pub(crate) struct Budgeted {
    inner: Box<dyn Read>,
    compressed_in: Rc<Cell<u64>>,
    out: u64,
    /// Bytes already produced by earlier layers.
    total_before: u64,
    limits: Limits,
}

impl Budgeted {
    /// Bytes produced by this layer so far.
    pub(crate) fn produced(&self) -> u64 {
        self.out
    }
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let total = self.total_before + self.out;
        if total > self.limits.max_bytes {
            return Err(io::Error::other(LimitExceeded(format!(
                "unpacked size exceeds the limit of {} bytes",
                self.limits.max_bytes
            ))));
        }
        let input = self.compressed_in.get().max(1);
        if self.out > RATIO_FLOOR && self.out / input > self.limits.max_ratio {
            return Err(io::Error::other(LimitExceeded(format!(
                "expansion ratio exceeds {}:1 (decompression bomb?)",
                self.limits.max_ratio
            ))));
        }
        Ok(n)
    }
}

/// Wraps a layer file: gzip (one or more members), zstd or plain tar, told apart by the first
/// bytes, never by a file name.
pub(crate) fn open_layer(
    file: impl Read + 'static,
    total_before: u64,
    limits: Limits,
) -> io::Result<Budgeted> {
    let count = Rc::new(Cell::new(0));
    let mut buffered = BufReader::with_capacity(
        256 << 10,
        CountIn {
            inner: file,
            count: count.clone(),
        },
    );
    let head = buffered.fill_buf()?;
    let inner: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    };
    Ok(Budgeted {
        inner,
        compressed_in: count,
        out: 0,
        total_before,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits() -> Limits {
        Limits {
            max_bytes: 1 << 40,
            max_entries: 1_000_000,
            max_ratio: 100,
        }
    }

    #[test]
    fn formats_by_magic() {
        let plain = b"hello plain".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello gzip").unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&b"hello zstd"[..], 3).unwrap();
        for (input, want) in [
            (plain, "hello plain"),
            (gz, "hello gzip"),
            (zst, "hello zstd"),
        ] {
            let mut out = String::new();
            open_layer(io::Cursor::new(input), 0, limits())
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn bomb_is_stopped_by_ratio() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            gz.write_all(&zeros).unwrap();
        }
        let gz = gz.finish().unwrap();
        let mut r = open_layer(io::Cursor::new(gz), 0, limits()).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(
            limit_message(&err).unwrap().contains("expansion ratio"),
            "{err}"
        );
    }

    #[test]
    fn total_bytes_bounded_across_layers() {
        let l = Limits {
            max_bytes: 1000,
            ..limits()
        };
        let mut r = open_layer(io::Cursor::new(vec![7u8; 600]), 500, l).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(limit_message(&err).unwrap().contains("1000 bytes"), "{err}");
    }
}
