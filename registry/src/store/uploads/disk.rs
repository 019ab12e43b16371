//! The disk side of an upload: a thread that writes the queued chunks in arrival order.
//!
//! Sequential chunks are collected and written with `O_DIRECT` about a [`DIRECT_CHUNK`] at a
//! time, in whole [`DIRECT_ALIGN`] blocks: no copy into the page cache, no dirty pages to
//! write back before the fsync at CLOSE. `O_DIRECT` wants aligned memory too: a chunk whose
//! address is congruent to its file offset (the SFTP reader places WRITE data so) is handed to
//! the kernel as it is, one `pwritev` segment per chunk; only blocks that are not (a block
//! spanning two chunks, a chunk placed anywhere) are first copied into an aligned buffer. The
//! partial block at the end is written through the page cache when the queue closes.
//! Anything else falls back to the page cache for the rest of the upload: a write that is not
//! at the end of what was collected (out of order, overlapping, sparse), a filesystem that
//! refuses `O_DIRECT` at open (`EINVAL`), or one that refuses an aligned direct write. The
//! fallback keeps the order of writes, so the file ends up as if every write went through
//! `pwrite` in arrival order, and `finish`'s fsync covers both kinds of writes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, oneshot};

use super::super::{Ctx, Result, StoreError};

/// Bytes collected before a direct write: large enough that the per-write latency (a few ms
/// on a VM disk) is spread over many SFTP writes, small enough that what an upload holds stays
/// cheap.
const DIRECT_CHUNK: usize = 2 << 20;
/// Alignment of the memory, the file offset and the length of direct writes. 4 KiB covers
/// logical block sizes up to 4 KiB; a device that needs more refuses the first write with
/// `EINVAL` and the upload continues through the page cache.
pub const DIRECT_ALIGN: usize = 4096;
/// Most segments of one `pwritev`: Linux's `UIO_MAXIOV`.
const MAX_SEGMENTS: usize = 1024;
/// Chunks queued before the writer of the upload waits: with 255 KiB SFTP writes, 4 MiB,
/// which covers a direct write in progress at several hundred MB/s.
const QUEUED: usize = 16;
/// Through the page cache, writeback of the dirty pages is started every so many bytes, so
/// that the fsync before CLOSE's reply finds little left to write (hundreds of ms per GiB
/// otherwise).
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// How an upload's bytes reached the file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// With `O_DIRECT`.
    pub direct: u64,
    /// Of `direct`, what was copied into an aligned buffer first.
    pub copied: u64,
    /// Through the page cache.
    pub buffered: u64,
}

/// The handle on one upload's disk thread.
pub(super) struct Disk {
    chunks: mpsc::Sender<(u64, Bytes)>,
    /// The thread's outcome, sent when its queue ended (closed, or the thread failed); taken
    /// by the first call that finds the thread gone.
    done: Option<oneshot::Receiver<Result<Written>>>,
}

impl Disk {
    /// Starts the thread writing to `file` (open for writing, at `path`). With `direct_io`,
    /// it opens `path` a second time with `O_DIRECT` for the sequential part.
    pub(super) fn start(file: Arc<File>, path: PathBuf, direct_io: bool) -> Disk {
        let (chunks, queue) = mpsc::channel(QUEUED);
        let (report, done) = oneshot::channel();
        let name = path.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("upload-disk".into())
            .spawn(move || {
                let outcome = run(file, &path, direct_io, queue);
                // Nobody waits when the upload was dropped without `finish`.
                let _ = report.send(outcome);
            });
        if let Err(err) = spawned {
            // The closure (and with it the queue) is gone: every send fails and reports this.
            let (report, done) = oneshot::channel();
            let _ = report.send(Err(err).ctx(|| format!("starting the writer of {name}")));
            return Disk {
                chunks: mpsc::channel(1).0,
                done: Some(done),
            };
        }
        Disk {
            chunks,
            done: Some(done),
        }
    }

    /// Queues a chunk, waiting while the queue is full. Fails with the thread's error if it
    /// stopped on one.
    pub(super) async fn send(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if self.chunks.send((offset, data)).await.is_ok() {
            return Ok(());
        }
        match self.done.take() {
            Some(done) => failed(done.await),
            None => failed(Ok(Ok(Written::default()))),
        }
    }

    /// [`Disk::send`] for synchronous callers (not on an async runtime's thread).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn send_blocking(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if self.chunks.blocking_send((offset, data)).is_ok() {
            return Ok(());
        }
        match self.done.take() {
            Some(done) => failed(done.blocking_recv()),
            None => failed(Ok(Ok(Written::default()))),
        }
    }

    /// Ends the queue and waits until everything in it is in the file (blocking).
    pub(super) fn close(self) -> Result<Written> {
        drop(self.chunks);
        let vanished = || StoreError::Internal(anyhow::anyhow!("upload writer stopped"));
        self.done
            .ok_or_else(vanished)?
            .blocking_recv()
            .map_err(|_| vanished())?
    }
}

/// The error to report once the queue refused a chunk: the thread ended, on an error.
fn failed(outcome: std::result::Result<Result<Written>, oneshot::error::RecvError>) -> Result<()> {
    match outcome {
        Ok(Err(err)) => Err(err),
        // The thread ends early only on an error; be safe if that ever changes.
        Ok(Ok(_)) | Err(_) => Err(StoreError::Internal(anyhow::anyhow!(
            "upload writer stopped"
        ))),
    }
}

fn run(
    file: Arc<File>,
    path: &std::path::Path,
    direct_io: bool,
    mut queue: mpsc::Receiver<(u64, Bytes)>,
) -> Result<Written> {
    let direct = if direct_io { open_direct(path) } else { None };
    let mut writer = Writer::new(file, direct);
    while let Some((offset, data)) = queue.blocking_recv() {
        writer
            .write(offset, data)
            .ctx(|| format!("writing {} at offset {offset}", path.display()))?;
    }
    writer
        .flush()
        .ctx(|| format!("writing the end of {}", path.display()))?;
    Ok(writer.written)
}

/// `path` opened for writing with `O_DIRECT`, or `None` where that fails: `EINVAL` is a
/// filesystem without `O_DIRECT`, silently; anything else (out of descriptors...) is logged,
/// and the upload goes on through the page cache all the same.
fn open_direct(path: &std::path::Path) -> Option<File> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), cause = %e, "cannot open for direct writes, writing through the page cache");
            None
        }
    }
}

/// Writes in arrival order; see the module docs.
struct Writer {
    /// The upload opened without `O_DIRECT`.
    file: Arc<File>,
    /// Present while the upload is sequential and direct writes work.
    direct: Option<Direct>,
    written: Written,
    /// Buffered bytes written since writeback was last started.
    dirty: u64,
}

/// The sequential part not written yet: `[start, start + len)` of the file is `pending`, in
/// order; everything before `start` is written, and `start` is a multiple of
/// [`DIRECT_ALIGN`].
struct Direct {
    file: File,
    pending: VecDeque<Bytes>,
    len: usize,
    start: u64,
    /// For the blocks that cannot be written from where they are.
    bounce: AlignedBuf,
}

/// One segment of a direct write: `len` bytes of `pending[chunk]` from `from`, or of the
/// bounce buffer from `from`.
enum Segment {
    Pending {
        chunk: usize,
        from: usize,
        len: usize,
    },
    Bounce {
        from: usize,
        len: usize,
    },
}

impl Writer {
    fn new(file: Arc<File>, direct: Option<File>) -> Writer {
        Writer {
            file,
            direct: direct.map(|file| Direct {
                file,
                pending: VecDeque::new(),
                len: 0,
                start: 0,
                bounce: AlignedBuf::new(DIRECT_CHUNK),
            }),
            written: Written::default(),
            dirty: 0,
        }
    }

    fn write(&mut self, offset: u64, data: Bytes) -> io::Result<()> {
        let Some(d) = self.direct.as_mut() else {
            return self.buffered(offset, &data);
        };
        if offset != d.start + d.len as u64 {
            self.leave_direct()?;
            return self.buffered(offset, &data);
        }
        if data.is_empty() {
            return Ok(());
        }
        d.len += data.len();
        d.pending.push_back(data);
        self.write_direct(DIRECT_CHUNK)
    }

    /// Writes the pending whole blocks with `O_DIRECT` while at least `min` bytes are pending.
    fn write_direct(&mut self, min: usize) -> io::Result<()> {
        loop {
            let Some(d) = self.direct.as_mut().filter(|d| d.len >= min) else {
                return Ok(());
            };
            match d.write_blocks() {
                Ok((written, copied)) => {
                    self.written.direct += written as u64;
                    self.written.copied += copied as u64;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(cause = %e, "direct write refused, writing uploads through the page cache");
                    return self.leave_direct();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what is pending through the page cache and stops direct writes for good.
    fn leave_direct(&mut self) -> io::Result<()> {
        if let Some(d) = self.direct.take() {
            let mut offset = d.start;
            for chunk in &d.pending {
                self.buffered(offset, chunk)?;
                offset += chunk.len() as u64;
            }
        }
        Ok(())
    }

    fn buffered(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        self.written.buffered += data.len() as u64;
        self.dirty += data.len() as u64;
        if self.dirty >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(())
    }

    /// The end of the queue: the whole blocks still pending are written direct, the last
    /// partial block through the page cache.
    fn flush(&mut self) -> io::Result<()> {
        self.write_direct(DIRECT_ALIGN)?;
        self.leave_direct()
    }

    /// Asks the kernel to start writing the file's dirty pages now, without waiting for it.
    fn start_writeback(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: sync_file_range only reads its integer arguments; the fd is owned by
        // `self.file` and open for the duration of the call.
        let rc = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
        // Only an optimisation: on failure (e.g. a filesystem without support) `finish`'s
        // fsync still makes the upload durable.
        if rc == 0 {
            self.dirty = 0;
        }
    }
}

impl Direct {
    /// One direct write of the whole blocks at the front of `pending` (at least one; as many
    /// as the bounce buffer and the segment limit allow). Returns the bytes written and, of
    /// those, the bytes copied into the bounce buffer.
    fn write_blocks(&mut self) -> io::Result<(usize, usize)> {
        let want = self.len / DIRECT_ALIGN * DIRECT_ALIGN;
        let plan = self.plan(want);
        let pending = &self.pending;
        let bounce = self.bounce.as_ref();
        let segments: Vec<IoSlice<'_>> = plan
            .iter()
            .map(|s| match *s {
                Segment::Pending { chunk, from, len } => {
                    IoSlice::new(&pending[chunk][from..from + len])
                }
                Segment::Bounce { from, len } => IoSlice::new(&bounce[from..from + len]),
            })
            .collect();
        let copied: usize = plan
            .iter()
            .map(|s| match s {
                Segment::Bounce { len, .. } => *len,
                Segment::Pending { .. } => 0,
            })
            .sum();
        let n = rustix::io::pwritev(&self.file, &segments, self.start)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.consume(n);
        // A short write leaves `start` unaligned: the next direct write is refused (EINVAL)
        // and the rest goes through the page cache.
        Ok((n, copied.min(n)))
    }

    /// The segments of a direct write of up to `want` bytes (a multiple of [`DIRECT_ALIGN`],
    /// at most `len`): pending chunks where they are aligned in memory, the other blocks
    /// gathered into the bounce buffer.
    fn plan(&mut self, want: usize) -> Vec<Segment> {
        let mut plan = Vec::new();
        let (mut chunk, mut from, mut planned, mut bounced) = (0, 0, 0, 0);
        let bounce = self.bounce.as_mut();
        while planned < want && plan.len() < MAX_SEGMENTS {
            let rest = &self.pending[chunk][from..];
            let whole = rest.len().min(want - planned) / DIRECT_ALIGN * DIRECT_ALIGN;
            if whole > 0 && (rest.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
                plan.push(Segment::Pending {
                    chunk,
                    from,
                    len: whole,
                });
                from += whole;
                planned += whole;
            } else {
                if bounced + DIRECT_ALIGN > bounce.len() {
                    break;
                }
                let block = &mut bounce[bounced..bounced + DIRECT_ALIGN];
                let mut filled = 0;
                while filled < DIRECT_ALIGN {
                    let rest = &self.pending[chunk][from..];
                    let n = rest.len().min(DIRECT_ALIGN - filled);
                    block[filled..filled + n].copy_from_slice(&rest[..n]);
                    filled += n;
                    from += n;
                    if from == self.pending[chunk].len() {
                        chunk += 1;
                        from = 0;
                    }
                }
                match plan.last_mut() {
                    Some(Segment::Bounce { from, len }) if *from + *len == bounced => {
                        *len += DIRECT_ALIGN
                    }
                    _ => plan.push(Segment::Bounce {
                        from: bounced,
                        len: DIRECT_ALIGN,
                    }),
                }
                bounced += DIRECT_ALIGN;
                planned += DIRECT_ALIGN;
                continue;
            }
            if from == self.pending[chunk].len() {
                chunk += 1;
                from = 0;
            }
        }
        plan
    }

    /// Drops the first `n` bytes of `pending`: they are in the file.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        self.start += n as u64;
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            if front.len() > n {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.pending.pop_front();
        }
    }
}

/// A zeroed buffer whose start is aligned to [`DIRECT_ALIGN`], as `O_DIRECT` requires: a
/// slice of a slightly larger allocation. Its pages are the kernel's zero pages until used.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    fn as_ref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays `writes` through a `Writer` into a fresh file; returns the file's bytes and how
    /// they were written.
    fn replay(
        dir: &std::path::Path,
        direct_io: bool,
        writes: &[(u64, &[u8])],
    ) -> (Vec<u8>, Written) {
        let path = dir.join(format!("f-{direct_io}-{}", writes.len()));
        let file = Arc::new(File::create_new(&path).unwrap());
        let direct = if direct_io { open_direct(&path) } else { None };
        let mut w = Writer::new(file, direct);
        for (offset, data) in writes {
            w.write(*offset, Bytes::copy_from_slice(data)).unwrap();
        }
        w.flush().unwrap();
        (std::fs::read(&path).unwrap(), w.written)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn aligned_buffer_is_aligned() {
        let mut b = AlignedBuf::new(DIRECT_CHUNK);
        assert_eq!(b.as_ref().as_ptr() as usize % DIRECT_ALIGN, 0);
        assert_eq!(b.as_mut().len(), DIRECT_CHUNK);
    }

    #[test]
    fn sequential_writes_go_direct_and_the_tail_through_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        // Two whole chunks and an unaligned tail, in SFTP-sized writes.
        let data = pattern(2 * DIRECT_CHUNK + 12_345);
        let writes: Vec<(u64, &[u8])> = data
            .chunks(261_120)
            .enumerate()
            .map(|(i, c)| ((i * 261_120) as u64, c))
            .collect();
        let (got, written) = replay(tmp.path(), true, &writes);
        assert_eq!(got, data);
        assert_eq!(written.direct + written.buffered, data.len() as u64);
        // On a filesystem without O_DIRECT everything is buffered, and that is fine too.
        let probe = tmp.path().join("probe");
        File::create_new(&probe).unwrap();
        if open_direct(&probe).is_some() {
            // Every whole block direct, only the last partial one through the cache.
            assert_eq!(
                written.direct,
                (data.len() / DIRECT_ALIGN * DIRECT_ALIGN) as u64
            );
            assert_eq!(written.buffered, (data.len() % DIRECT_ALIGN) as u64);
        }
    }

    #[test]
    fn without_direct_io_everything_goes_through_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let data = pattern(DIRECT_CHUNK + 77);
        let (got, written) = replay(
            tmp.path(),
            false,
            &[(0, &data[..1000]), (1000, &data[1000..])],
        );
        assert_eq!(got, data);
        assert_eq!(
            written,
            Written {
                buffered: data.len() as u64,
                ..Written::default()
            }
        );
    }

    #[test]
    fn a_write_off_the_sequence_switches_to_the_cache_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let data = pattern(DIRECT_CHUNK + 5000);
        // One whole chunk direct, then a partly staged one, then a rewrite of bytes that are
        // both on disk (direct) and staged, then an append past a hole.
        let (got, written) = replay(
            tmp.path(),
            true,
            &[
                (0, &data[..]),
                (DIRECT_CHUNK as u64 - 2, b"abcd"),
                (data.len() as u64 + 3, b"z"),
            ],
        );
        let mut want = data.clone();
        want[DIRECT_CHUNK - 2..DIRECT_CHUNK + 2].copy_from_slice(b"abcd");
        want.extend_from_slice(b"\0\0\0z");
        assert_eq!(got, want);
        assert_eq!(written.direct + written.buffered, data.len() as u64 + 4 + 1);
    }

    #[test]
    fn a_first_write_not_at_zero_is_buffered() {
        let tmp = tempfile::tempdir().unwrap();
        let data = pattern(DIRECT_CHUNK * 2);
        let (got, written) = replay(tmp.path(), true, &[(10, &data[..])]);
        let mut want = vec![0u8; 10];
        want.extend_from_slice(&data);
        assert_eq!(got, want);
        assert_eq!(written.direct, 0);
    }

    /// `len` bytes of `data` from `from`, in memory placed as the SFTP reader places WRITE
    /// data: at an address congruent to `from` modulo the alignment.
    fn placed(data: &[u8], from: usize, len: usize) -> Bytes {
        let mut buf = Vec::with_capacity(len + DIRECT_ALIGN);
        let skip = from.wrapping_sub(buf.as_ptr() as usize) % DIRECT_ALIGN;
        buf.resize(skip, 0);
        buf.extend_from_slice(&data[from..from + len]);
        Bytes::from(buf).slice(skip..)
    }

    /// Chunks placed by their offset are written from where they are: nothing is copied when
    /// they are whole blocks, one block per chunk boundary inside a block otherwise. Chunks
    /// placed anywhere are copied, and the file is the same either way.
    #[test]
    fn placed_chunks_are_written_without_copying() {
        let tmp = tempfile::tempdir().unwrap();
        let probe = tmp.path().join("probe");
        File::create_new(&probe).unwrap();
        if open_direct(&probe).is_none() {
            eprintln!("note: no O_DIRECT on the temporary directory's filesystem");
            return;
        }
        let data = pattern(3 * DIRECT_CHUNK + 999);
        for (size, placed_at_offset) in [(32_768, true), (261_120, true), (261_120, false)] {
            let path = tmp.path().join(format!("f-{size}-{placed_at_offset}"));
            let file = Arc::new(File::create_new(&path).unwrap());
            let mut w = Writer::new(file, open_direct(&path));
            let mut chunks = 0;
            for from in (0..data.len()).step_by(size) {
                let len = size.min(data.len() - from);
                let chunk = if placed_at_offset {
                    placed(&data, from, len)
                } else {
                    Bytes::copy_from_slice(&data[from..from + len])
                };
                w.write(from as u64, chunk).unwrap();
                chunks += 1;
            }
            w.flush().unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                data,
                "{size} {placed_at_offset}"
            );
            let written = w.written;
            assert_eq!(
                written.direct,
                (data.len() / DIRECT_ALIGN * DIRECT_ALIGN) as u64
            );
            match (size, placed_at_offset) {
                (32_768, true) => assert_eq!(written.copied, 0),
                (_, true) => assert!(
                    written.copied > 0 && written.copied <= (chunks * DIRECT_ALIGN) as u64,
                    "one block per boundary at most: {written:?}"
                ),
                _ => assert!(written.copied > written.direct / 2, "{written:?}"),
            }
        }
    }
}
