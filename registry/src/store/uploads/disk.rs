//! The disk side of an upload: a thread that writes the queued chunks in arrival order.
//!
//! Sequential chunks are gathered into an aligned buffer and written with `O_DIRECT` a
//! [`DIRECT_CHUNK`] at a time: no copy into the page cache, no dirty pages to write back before
//! the fsync at CLOSE. The unaligned tail is written through the page cache when the queue
//! closes. Anything else falls back to the page cache for the rest of the upload: a write that
//! is not at the end of what was staged (out of order, overlapping, sparse), a filesystem that
//! refuses `O_DIRECT` at open (`EINVAL`), or one that refuses an aligned direct write. The
//! fallback keeps the order of writes, so the file ends up as if every write went through
//! `pwrite` in arrival order, and `finish`'s fsync covers both kinds of writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::super::{Ctx, Result, StoreError};

/// Size of one direct write: large enough that the per-write latency (a few ms on a VM disk)
/// is spread over many SFTP writes, small enough that the buffer stays cheap per upload.
const DIRECT_CHUNK: usize = 2 << 20;
/// Alignment of the buffer address, the file offset and the length of direct writes. 4 KiB
/// covers logical block sizes up to 4 KiB; a device that needs more refuses the first write
/// with `EINVAL` and the upload continues through the page cache.
const DIRECT_ALIGN: usize = 4096;
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
            .write(offset, &data)
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

/// The sequential prefix being staged for direct writes: `[start, start + len)` of the file is
/// in `buf[..len]`, everything before `start` is written.
struct Direct {
    file: File,
    buf: AlignedBuf,
    len: usize,
    start: u64,
}

impl Writer {
    fn new(file: Arc<File>, direct: Option<File>) -> Writer {
        Writer {
            file,
            direct: direct.map(|file| Direct {
                file,
                buf: AlignedBuf::new(DIRECT_CHUNK),
                len: 0,
                start: 0,
            }),
            written: Written::default(),
            dirty: 0,
        }
    }

    fn write(&mut self, offset: u64, mut data: &[u8]) -> io::Result<()> {
        let Some(d) = self.direct.as_mut() else {
            return self.buffered(offset, data);
        };
        if offset != d.start + d.len as u64 {
            self.leave_direct()?;
            return self.buffered(offset, data);
        }
        while !data.is_empty() {
            let n = data.len().min(DIRECT_CHUNK - d.len);
            d.buf.as_mut()[d.len..d.len + n].copy_from_slice(&data[..n]);
            d.len += n;
            data = &data[n..];
            if d.len < DIRECT_CHUNK {
                break;
            }
            match d.file.write_all_at(d.buf.as_ref(), d.start) {
                Ok(()) => {
                    d.start += DIRECT_CHUNK as u64;
                    d.len = 0;
                    self.written.direct += DIRECT_CHUNK as u64;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(cause = %e, "direct write refused, writing uploads through the page cache");
                    let end = d.start + d.len as u64;
                    self.leave_direct()?;
                    return self.buffered(end, data);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what is staged through the page cache and stops direct writes for good. A
    /// partial direct write of the staged chunk is simply overwritten with the same bytes.
    fn leave_direct(&mut self) -> io::Result<()> {
        if let Some(d) = self.direct.take() {
            self.buffered(d.start, &d.buf.as_ref()[..d.len])?;
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

    /// The end of the queue: the staged tail goes through the page cache (it is not a whole
    /// aligned chunk).
    fn flush(&mut self) -> io::Result<()> {
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

/// A zeroed buffer whose start is aligned to [`DIRECT_ALIGN`], as `O_DIRECT` requires: a
/// slice of a slightly larger allocation.
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
            w.write(*offset, data).unwrap();
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
            assert_eq!(
                written,
                Written {
                    direct: 2 * DIRECT_CHUNK as u64,
                    buffered: 12_345
                }
            );
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
                direct: 0,
                buffered: data.len() as u64
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
}
