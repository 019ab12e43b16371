//! The hashing side of an upload: a thread that hashes the sequential chunks in order.
//!
//! sha256 is the largest CPU cost of an upload after the cipher (~0.6 s per GiB with SHA-NI).
//! On its own thread it runs in parallel with the disk thread and off the async runtime's
//! workers, which are left to the SSH sessions (an SFTP loop hashing inline holds its worker
//! ~0.15 ms per 255 KiB WRITE). Measured against hashing inline: as fast or faster within the
//! noise of a shared 2-core machine.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::super::{Digest, Result, StoreError};

/// Chunks queued before the writer of the upload waits (as for the disk thread).
const QUEUED: usize = 16;

/// The handle on one upload's hashing thread.
pub(super) struct Hasher {
    chunks: mpsc::Sender<Bytes>,
    done: oneshot::Receiver<Digest>,
}

impl Hasher {
    /// Starts the thread; `None` if the system refuses a thread (the caller then re-reads the
    /// file at the end instead).
    pub(super) fn start() -> Option<Hasher> {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUED);
        let (report, done) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("upload-hash".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                while let Some(chunk) = queue.blocking_recv() {
                    hasher.update(&chunk);
                }
                let _ = report.send(Digest(hasher.finalize().into()));
            });
        match spawned {
            Ok(_) => Some(Hasher { chunks, done }),
            Err(err) => {
                tracing::warn!(cause = %err, "no hashing thread: the upload is hashed at close");
                None
            }
        }
    }

    /// Queues the next chunk of the sequence, waiting while the queue is full.
    pub(super) async fn send(&self, chunk: Bytes) -> Result<()> {
        self.chunks.send(chunk).await.map_err(|_| stopped())
    }

    /// [`Hasher::send`] for synchronous callers (not on an async runtime's thread).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn send_blocking(&self, chunk: Bytes) -> Result<()> {
        self.chunks.blocking_send(chunk).map_err(|_| stopped())
    }

    /// The digest of everything queued (blocking).
    pub(super) fn finish(self) -> Result<Digest> {
        drop(self.chunks);
        self.done.blocking_recv().map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Internal(anyhow::anyhow!("upload hashing thread stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_the_chunks_in_order() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 239) as u8).collect();
        let hasher = Hasher::start().expect("a thread");
        for chunk in data.chunks(261_120) {
            hasher.send_blocking(Bytes::copy_from_slice(chunk)).unwrap();
        }
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(hasher.finish().unwrap().0, want);
        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(Hasher::start().unwrap().finish().unwrap().0, empty);
    }
}
