//! A layer handed to the unpacker while it is still being downloaded: the download task pushes
//! chunks (async, with backpressure), the unpack thread reads them (blocking). The stream only
//! ends cleanly after the writer says the whole blob matched its hash; a writer dropped before
//! that (hash mismatch, network error, shutdown) makes the reader fail, and with it the layer
//! and the staging tree.

use std::io::{self, Read};

use tokio::sync::mpsc;

/// Chunks in flight between the download and the unpacker (each up to the download's read
/// size, 256 KiB): enough to ride out short stalls on either side, small enough to not matter.
const DEPTH: usize = 64;

enum Msg {
    Data(Vec<u8>),
    Verified,
}

/// A connected writer/reader pair for one layer.
pub fn stream() -> (StreamWriter, StreamReader) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (
        StreamWriter {
            tx: Some(tx),
            once_stored: false,
        },
        StreamReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            done: false,
        },
    )
}

/// The download side.
pub struct StreamWriter {
    /// `None` once the reader is gone (the unpacker failed or finished early): the download
    /// still completes into the cache, the bytes just have nowhere else to go.
    tx: Option<mpsc::Sender<Msg>>,
    once_stored: bool,
}

impl StreamWriter {
    /// Ends the stream only once the blob is also in place in the cache, not as soon as it
    /// verified: for a blob the configuration lists again, whose second use opens the file.
    pub fn once_stored(mut self) -> StreamWriter {
        self.once_stored = true;
        self
    }

    pub fn is_once_stored(&self) -> bool {
        self.once_stored
    }

    /// Passes on the next bytes of the blob; waits while the unpacker is behind.
    pub async fn send(&mut self, data: &[u8]) {
        if let Some(tx) = &self.tx
            && tx.send(Msg::Data(data.to_vec())).await.is_err()
        {
            self.tx = None;
        }
    }

    /// The whole blob has been sent and matched its hash: the reader may reach its end.
    pub async fn verified(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Verified).await;
        }
    }
}

/// The unpacker side; blocking reads, for a `spawn_blocking` thread.
pub struct StreamReader {
    rx: mpsc::Receiver<Msg>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(d)) => {
                    self.chunk = d;
                    self.pos = 0;
                }
                Some(Msg::Verified) => self.done = true,
                None => {
                    return Err(io::Error::other(
                        "the layer's download did not complete and verify",
                    ));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: StreamReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[tokio::test]
    async fn ends_only_after_verification() {
        let (mut w, r) = stream();
        let reader = tokio::task::spawn_blocking(move || read_all(r));
        w.send(b"hello ").await;
        w.send(b"world").await;
        w.verified().await;
        assert_eq!(reader.await.unwrap().unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn writer_gone_before_verification_is_an_error() {
        let (mut w, r) = stream();
        let reader = tokio::task::spawn_blocking(move || read_all(r));
        w.send(b"all the bytes, but the hash did not match").await;
        drop(w);
        let err = reader.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("did not complete"), "{err}");
    }

    #[tokio::test]
    async fn writer_keeps_going_when_the_reader_is_gone() {
        let (mut w, r) = stream();
        drop(r);
        for _ in 0..(DEPTH * 2) {
            w.send(&[0u8; 1024]).await;
        }
        w.verified().await;
    }
}
