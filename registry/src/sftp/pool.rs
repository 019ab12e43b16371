//! Reused buffers for large SFTP packets.
//!
//! An upload streams 255 KiB WRITE packets, and each buffer lives until the upload's threads
//! have hashed and written its data, a few MiB of packets later. Fresh from the allocator such
//! buffers are often new pages (glibc hands freed memory above its trim threshold back to the
//! kernel), which the kernel faults in and zero-fills: 50,000 page faults per GiB uploaded,
//! ~5% of the registry's CPU. Reused, they are warm (~160 faults per GiB).

use std::sync::Mutex;

use bytes::Bytes;

/// Capacity of a pooled buffer: the largest framed packet, and the room to place a WRITE's
/// data (see [`super::stream`]).
const CAPACITY: usize = super::MAX_PACKET as usize + 4 + crate::store::DIRECT_ALIGN - 1;
/// Most buffers a pool keeps for reuse (~17 MiB).
const KEPT: usize = 64;

/// The pool of the SFTP reader tasks.
pub static PACKETS: Pool = Pool::new();

/// Buffers of [`CAPACITY`] bytes, handed out empty and taken back when their bytes are dropped.
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer with room for `len` bytes: a pooled one if `len` needs more than half
    /// of one (so that a pooled buffer never holds less than half its size), else a fresh one.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        if len <= CAPACITY / 2 || len > CAPACITY {
            return Vec::with_capacity(len);
        }
        self.free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_else(|| Vec::with_capacity(CAPACITY))
    }

    /// The bytes of a buffer from [`Pool::buffer`]. A pooled buffer goes back to the pool once
    /// the last of them (and of their slices) is dropped.
    pub fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() == CAPACITY {
            Bytes::from_owner(Pooled { buf, pool: self })
        } else {
            Bytes::from(buf)
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut free) = self.pool.free.lock()
            && free.len() < KEPT
        {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    #[test]
    fn large_buffers_are_reused_once_their_bytes_are_dropped() {
        let pool = pool();
        let mut a = pool.buffer(CAPACITY - 100);
        a.extend_from_slice(b"first");
        let a_at = a.as_ptr();
        let bytes = pool.freeze(a);
        let slice = bytes.slice(1..3);
        drop(bytes);
        // Still held by the slice: a new buffer is another one.
        let b = pool.buffer(CAPACITY);
        assert_ne!(b.as_ptr(), a_at);
        assert_eq!(&slice[..], b"ir");
        drop(slice);
        // Back in the pool, empty and whole.
        let c = pool.buffer(CAPACITY / 2 + 1);
        assert_eq!(c.as_ptr(), a_at);
        assert!(c.is_empty() && c.capacity() == CAPACITY);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number() {
        let pool = pool();
        let all: Vec<Bytes> = (0..KEPT + 5)
            .map(|_| pool.freeze(pool.buffer(CAPACITY)))
            .collect();
        drop(all);
        assert_eq!(pool.free.lock().unwrap().len(), KEPT);
    }

    #[test]
    fn small_and_oversized_buffers_are_not_pooled() {
        let pool = pool();
        for len in [10, CAPACITY / 2, CAPACITY + 1] {
            let buf = pool.buffer(len);
            assert!(buf.capacity() >= len && buf.capacity() != CAPACITY);
            drop(pool.freeze(buf));
        }
        assert!(pool.free.lock().unwrap().is_empty());
    }
}
