//! A channel stream whose read side is drained by its own task (spike-russh.md section 7).
//!
//! russh delivers incoming channel data through a bounded queue, and when that queue is full the
//! whole SSH session loop blocks, including the processing of the client's WINDOW_ADJUST.
//! russh-sftp's server loop is read → handle → write: while it waits for window to send a large
//! READ reply it reads nothing, so a client that pipelines enough requests (`sftp -R 512`, or
//! 255 KiB requests with the default depth) fills russh's queue and both sides wait forever.
//!
//! Here a task keeps reading the channel into our own queue whatever the SFTP loop is doing, so
//! russh's session loop never blocks on us. It queues whole SFTP packets, each read into a
//! buffer of its size: a 255 KiB WRITE reaches the upload without another copy, and wakes the
//! SFTP loop once rather than once per SSH packet. A WRITE's data is placed in its buffer at an
//! address congruent to its file offset modulo [`DIRECT_ALIGN`], so that the upload's disk
//! thread can hand it to `O_DIRECT` as it is instead of copying it into an aligned buffer (a
//! copy that cost ~15% of the registry's CPU on an upload); large buffers come from
//! [`pool::PACKETS`]. The queue holds at most [`QUEUE_CAP`] bytes, and all queues together
//! [`crate::server::TOTAL_INPUT_CAP`]; past that the reader waits for the SFTP loop to
//! consume. A queued packet counts as the memory its buffer holds (at most twice its bytes).
//! Only requests count, and requests other than WRITE are tens of bytes, so the cap is reached
//! only by writes, whose replies are tiny and never wait for window: pausing then cannot close
//! the cycle above (a client that breaks it on purpose: `server::Ended::Stuck`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Join, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::pool;
use super::server::SSH_FXP_WRITE;
use crate::store::DIRECT_ALIGN;

/// Most request bytes read from the channel but not yet consumed by the SFTP loop.
pub const QUEUE_CAP: usize = 64 << 20;

/// Largest piece the reader queues at once: our largest SFTP packet with its length field.
/// Packets up to this size are queued whole, in one buffer, so that
/// [`QueueReader::next_packet`] hands them out without copying. The length field of a longer
/// one (a protocol violation) is queued at once, alone, so that `next_packet` refuses it
/// without waiting for a body that may never come.
const FRAME_MAX: usize = super::MAX_PACKET as usize + 4;

/// A WRITE's fields before its data, after the length: type, id, handle length...
const WRITE_FIXED: usize = 1 + 4 + 4;
/// ... the handle (ours are short; a longer one only means the data is not placed) ...
const HANDLE_MAX: usize = 256;
/// ... the offset and the data's length.
const WRITE_HEAD_MAX: usize = WRITE_FIXED + HANDLE_MAX + 8 + 4;
/// Packets shorter than this are not worth placing: less than a block of data.
const PLACED_MIN: usize = 4 + WRITE_FIXED + 8 + 4 + DIRECT_ALIGN;

/// Our queue for reading, the channel itself for writing.
pub type Decoupled<S> = Join<QueueReader, WriteHalf<S>>;

/// Splits `stream` and spawns the task that drains its read half (see the module docs).
///
/// Also returns that task: it ends once the channel reached EOF or the returned stream was
/// dropped, and hands back the read half. Holding that half keeps the underlying stream (the
/// SSH channel) open, for a last message before it closes; dropping it closes the stream.
///
/// The queue holds at most [`QUEUE_CAP`] bytes, and takes them from `total` too (see
/// [`crate::server::input_room`]).
pub fn decoupled_parts<S>(
    stream: S,
    total: Arc<Semaphore>,
) -> (Decoupled<S>, JoinHandle<ReadHalf<S>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    decoupled_with_cap(stream, QUEUE_CAP, total)
}

fn decoupled_with_cap<S>(
    stream: S,
    cap: usize,
    total: Arc<Semaphore>,
) -> (Decoupled<S>, JoinHandle<ReadHalf<S>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Queued>();
    let budget = Budget {
        own: Arc::new(Semaphore::new(cap)),
        total,
        cap,
    };
    let full = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(drain(
        read_half,
        tx,
        budget.clone(),
        Arc::clone(&full),
        cap.min(FRAME_MAX),
    ));
    let stream = tokio::io::join(
        QueueReader {
            rx,
            current: Bytes::new(),
            current_charge: 0,
            budget,
            full,
        },
        write_half,
    );
    (stream, reader)
}

/// The reader task: queues the channel's bytes one SFTP packet (length field included) at a
/// time, packets longer than `piece` bytes as their length field alone, then the rest in
/// pieces, until EOF or until the queue is dropped. Each read asks
/// only for the rest of the current packet, so a packet fills one buffer of its own size.
async fn drain<R: AsyncRead + Unpin>(
    mut read_half: R,
    tx: mpsc::UnboundedSender<Queued>,
    budget: Budget,
    full: Arc<AtomicBool>,
    piece: usize,
) -> R {
    loop {
        let mut header = [0u8; 4];
        let Some(got) = read_full(&mut read_half, &mut header, &tx).await else {
            return read_half;
        };
        let len = u32::from_be_bytes(header) as usize;
        let total = match len.checked_add(header.len()) {
            _ if got < header.len() => got,
            Some(total) if total <= piece => total,
            // Too long: see FRAME_MAX. What follows is forwarded as it comes.
            _ => header.len(),
        };
        let mut eof = got < header.len();
        // A large packet's first fields, read ahead to place a WRITE's data.
        let mut head = [0u8; WRITE_HEAD_MAX];
        let mut head_len = 0;
        if !eof && total >= PLACED_MIN {
            let Some((n, ended)) = read_head(&mut read_half, &mut head, total, &tx).await else {
                return read_half;
            };
            (head_len, eof) = (n, ended);
        }
        let offset = write_offset(&head[..head_len]);
        let room = if offset.is_some() {
            DIRECT_ALIGN - 1
        } else {
            0
        };
        let mut buf = pool::PACKETS.buffer(room + total);
        if let Some(offset) = offset {
            let data_at = buf.as_ptr() as usize + got + head_len;
            buf.resize((offset as usize).wrapping_sub(data_at) % DIRECT_ALIGN, 0);
        }
        let skip = buf.len();
        buf.put_slice(&header[..got]);
        buf.put_slice(&head[..head_len]);
        while !eof && buf.len() - skip < total {
            let missing = total - (buf.len() - skip);
            match read_some(&mut read_half, &mut (&mut buf).limit(missing), &tx).await {
                Some(0) => eof = true,
                Some(_) => {}
                None => return read_half,
            }
        }
        // What the packet holds is charged, not just its bytes: a buffer's capacity is at most
        // twice its packet (the room to place a WRITE, a pooled buffer), and the cap bounds
        // memory. Never more than the semaphore holds.
        let charge = buf.capacity().min(budget.cap);
        let mut buf = pool::PACKETS.freeze(buf);
        buf.advance(skip);
        if !buf.is_empty() {
            let permits = u32::try_from(charge).unwrap_or(u32::MAX);
            if !budget.try_take(permits) {
                full.store(true, Ordering::Relaxed);
                let acquired = tokio::select! {
                    taken = budget.take(permits) => taken,
                    () = tx.closed() => false,
                };
                full.store(false, Ordering::Relaxed);
                if !acquired {
                    return read_half;
                }
            }
            if tx.send((buf, charge)).is_err() {
                budget.give(charge);
                return read_half;
            }
        }
        if eof {
            // Dropping `tx` ends the queue once the SFTP loop has read what is in it.
            return read_half;
        }
    }
}

/// Reads until `dst` is full or the channel ends: the byte count, or `None` once the queue was
/// dropped.
async fn read_full<R: AsyncRead + Unpin>(
    read_half: &mut R,
    dst: &mut [u8],
    tx: &mpsc::UnboundedSender<Queued>,
) -> Option<usize> {
    let mut got = 0;
    while got < dst.len() {
        match read_some(read_half, &mut &mut dst[got..], tx).await? {
            0 => break,
            n => got += n,
        }
    }
    Some(got)
}

/// Reads a packet's first fields into `head`: the fixed ones and, if it is a WRITE, the rest
/// up to its data. Returns the bytes read and whether the channel ended first, or `None` once
/// the queue was dropped.
async fn read_head<R: AsyncRead + Unpin>(
    read_half: &mut R,
    head: &mut [u8; WRITE_HEAD_MAX],
    total: usize,
    tx: &mpsc::UnboundedSender<Queued>,
) -> Option<(usize, bool)> {
    let n = read_full(read_half, &mut head[..WRITE_FIXED], tx).await?;
    let Some(end) = write_head_len(&head[..n], total) else {
        return Some((n, n < WRITE_FIXED));
    };
    let rest = read_full(read_half, &mut head[n..end], tx).await?;
    Some((n + rest, n + rest < end))
}

/// Given a packet's first [`WRITE_FIXED`] bytes (after the length) and its framed length: if it
/// is a WRITE, the length of its head up to the data ([`write_offset`] reads it).
fn write_head_len(fixed: &[u8], total: usize) -> Option<usize> {
    let [kind, _, _, _, _, l0, l1, l2, l3] = *fixed else {
        return None;
    };
    let handle = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if kind != SSH_FXP_WRITE || handle > HANDLE_MAX {
        return None;
    }
    let end = WRITE_FIXED + handle + 8 + 4;
    (4 + end <= total).then_some(end)
}

/// The file offset of a WRITE whose whole head (up to its data) is `head`.
fn write_offset(head: &[u8]) -> Option<u64> {
    let end = write_head_len(head.get(..WRITE_FIXED)?, usize::MAX)?;
    let at = head.len().checked_sub(12).filter(|_| head.len() == end)?;
    let offset: [u8; 8] = head[at..at + 8].try_into().ok()?;
    Some(u64::from_be_bytes(offset))
}

/// One read into `dst`: the byte count (0 at EOF; a failed read counts as EOF, the channel is
/// gone either way), or `None` once the queue was dropped.
async fn read_some<R: AsyncRead + Unpin>(
    read_half: &mut R,
    dst: &mut impl BufMut,
    tx: &mpsc::UnboundedSender<Queued>,
) -> Option<usize> {
    tokio::select! {
        r = read_half.read_buf(dst) => Some(r.unwrap_or_else(|err| {
            tracing::debug!(cause = %err, "sftp channel read failed");
            0
        })),
        () = tx.closed() => None,
    }
}

/// A queued piece and the room it was charged.
type Queued = (Bytes, usize);

/// Room for queued bytes, one permit per byte: the session's own and the one all share.
#[derive(Clone)]
struct Budget {
    own: Arc<Semaphore>,
    total: Arc<Semaphore>,
    /// The permits of `own`: no piece is charged more.
    cap: usize,
}

impl Budget {
    /// Takes `n` from both at once, or nothing.
    fn try_take(&self, n: u32) -> bool {
        let Ok(own) = self.own.try_acquire_many(n) else {
            return false;
        };
        let Ok(total) = self.total.try_acquire_many(n) else {
            return false;
        };
        own.forget();
        total.forget();
        true
    }

    /// Waits for `n` from both; false if a semaphore was closed.
    async fn take(&self, n: u32) -> bool {
        let Ok(own) = self.own.acquire_many(n).await else {
            return false;
        };
        let Ok(total) = self.total.acquire_many(n).await else {
            return false;
        };
        own.forget();
        total.forget();
        true
    }

    fn give(&self, n: usize) {
        self.own.add_permits(n);
        self.total.add_permits(n);
    }
}

/// The read side: the bytes the reader task queued, in order, as SFTP packets
/// ([`QueueReader::next_packet`]) or as a byte stream (`AsyncRead`); the end when the channel
/// reached EOF (or failed) and the queue is empty. Reading never fails: a broken channel is
/// just its end.
pub struct QueueReader {
    rx: mpsc::UnboundedReceiver<Queued>,
    current: Bytes,
    /// The room `current` was charged when it was queued: given back to `budget` once it is
    /// used.
    current_charge: usize,
    budget: Budget,
    /// Set while the reader task waits for room: the peer has sent more than the cap holds.
    full: Arc<AtomicBool>,
}

/// A framed SFTP packet longer than the limit: the peer broke the protocol.
#[derive(Debug)]
pub struct PacketTooLong(pub u32);

impl QueueReader {
    /// Whether the reader task waits for room (this queue at its cap, or all of them at
    /// theirs): no more of the channel is being read, so russh's own queue fills next.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// The next SFTP packet (type byte and payload, without the length), or `None` at EOF.
    ///
    /// The reader task queues each packet whole, in a buffer of its own, so it is handed out
    /// without copying; only a packet split across queued pieces (longer than the reader's
    /// piece, or a stream not framed as SFTP) is copied once into its own buffer. russh-sftp's
    /// own reader zero-fills a buffer and then copies twice more.
    pub async fn next_packet(&mut self, max_len: u32) -> Result<Option<Bytes>, PacketTooLong> {
        let Some(len) = self.take(4).await else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len > max_len {
            return Err(PacketTooLong(len));
        }
        // A packet cut short by EOF is dropped, as russh-sftp does.
        Ok(self.take(len as usize).await)
    }

    /// Exactly `n` bytes, or `None` if the queue ends first.
    async fn take(&mut self, n: usize) -> Option<Bytes> {
        if !self.fill().await {
            return (n == 0).then(Bytes::new);
        }
        if self.current.len() >= n {
            let out = self.current.split_to(n);
            self.release_if_used();
            return Some(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            if !self.fill().await {
                return None;
            }
            let k = self.current.len().min(n - out.len());
            out.extend_from_slice(&self.current[..k]);
            self.current.advance(k);
            self.release_if_used();
        }
        Some(out.freeze())
    }

    /// Makes `current` non-empty; false at the end of the queue.
    async fn fill(&mut self) -> bool {
        while self.current.is_empty() {
            match self.rx.recv().await {
                Some((chunk, charge)) => {
                    self.current_charge = charge;
                    self.current = chunk;
                }
                None => return false,
            }
        }
        true
    }

    fn release_if_used(&mut self) {
        if self.current.is_empty() && self.current_charge > 0 {
            self.budget.give(self.current_charge);
            self.current_charge = 0;
        }
    }
}

/// Gives back the room of what was queued but never consumed: the total is shared, and a
/// session that ends with a full queue (a client cut off for not reading) must not keep it.
impl Drop for QueueReader {
    fn drop(&mut self) {
        self.budget.give(self.current_charge);
        // Closed first, so that the reader task's next send fails (and gives its room back
        // itself) instead of landing behind this loop.
        self.rx.close();
        while let Ok((_, charge)) = self.rx.try_recv() {
            self.budget.give(charge);
        }
    }
}

impl AsyncRead for QueueReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current[..n]);
                this.current.advance(n);
                if this.current.is_empty() {
                    this.budget.give(this.current_charge);
                    this.current_charge = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some((chunk, charge)) => {
                    this.current_charge = charge;
                    this.current = chunk;
                }
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn passes_bytes_in_order_and_ends_at_eof() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut s, _reader) = decoupled_parts(server, crate::server::input_room());
        let (mut cr, mut cw) = tokio::io::split(client);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&sent).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        // The write side still reaches the peer.
        s.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        cr.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }

    /// The point of the module: the peer's writes keep being accepted while nobody reads our
    /// side, up to the cap, and then the reader waits instead of growing without bound.
    #[tokio::test]
    async fn drains_without_a_consumer_up_to_the_cap() {
        let (client, server) = tokio::io::duplex(4096);
        let cap = 256 << 10;
        let (s, _reader) = decoupled_with_cap(server, cap, crate::server::input_room());
        let (_cr, mut cw) = tokio::io::split(client);
        // Far more than the duplex buffer: only completes because the task drains it.
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            cw.write_all(&vec![7u8; cap / 2]),
        )
        .await;
        assert!(
            first.is_ok(),
            "writes below the cap must not wait for the consumer"
        );
        assert!(!s.reader().is_full());
        // Beyond the cap (plus the duplex buffer and one chunk in flight) the writer must stall.
        let over = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            cw.write_all(&vec![7u8; cap * 2]),
        )
        .await;
        assert!(over.is_err(), "the queue must stop growing at its cap");
        assert!(s.reader().is_full(), "the reader task waits for room");
        drop(s);
    }

    /// The room all sessions share bounds them together: once one session's queue holds it
    /// all, another's reader waits, until the first one's bytes are consumed.
    #[tokio::test]
    async fn sessions_share_the_total_cap() {
        let total = Arc::new(Semaphore::new(64 << 10));
        let (client_a, server_a) = tokio::io::duplex(4096);
        let (client_b, server_b) = tokio::io::duplex(4096);
        let (mut a, _ra) = decoupled_with_cap(server_a, 64 << 10, Arc::clone(&total));
        let (b, _rb) = decoupled_with_cap(server_b, 64 << 10, Arc::clone(&total));
        let (_car, mut caw) = tokio::io::split(client_a);
        let (_cbr, mut cbw) = tokio::io::split(client_b);
        let fill = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            caw.write_all(&vec![1u8; 64 << 10]),
        )
        .await;
        assert!(fill.is_ok(), "a fills the total cap");
        let written = tokio::spawn(async move {
            cbw.write_all(&[2u8; 32 << 10]).await.unwrap();
            cbw
        });
        wait_until(|| b.reader().is_full()).await;
        assert!(!written.is_finished(), "b's bytes wait for room");
        let mut buf = vec![0u8; 64 << 10];
        a.read_exact(&mut buf).await.unwrap();
        let _cbw = tokio::time::timeout(std::time::Duration::from_secs(5), written)
            .await
            .expect("b's bytes are taken once a's are consumed")
            .unwrap();
        wait_until(|| !b.reader().is_full()).await;
        // b's 32 KiB stay queued, unconsumed, when b ends: its room comes back all the same.
        drop(b);
        wait_until(|| total.available_permits() == 64 << 10).await;
    }

    async fn wait_until(cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5 s");
    }

    #[tokio::test]
    async fn dropping_the_stream_releases_the_read_half() {
        let (client, server) = tokio::io::duplex(64);
        let (s, reader) = decoupled_parts(server, crate::server::input_room());
        drop(s);
        drop(reader.await.unwrap());
        let mut client = client;
        // Both halves of the server end are gone: the peer sees EOF.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("peer must see the stream closed")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn packets_are_framed_across_chunks_and_limited() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (s, _reader) = decoupled_parts(server, crate::server::input_room());
        let (mut input, _output) = s.into_inner();
        let (_cr, mut cw) = tokio::io::split(client);
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let over = vec![9u8; 1000];
        let mut wire = Vec::new();
        for p in [&b"abc"[..], &big[..], &b""[..], &over[..]] {
            wire.extend_from_slice(&(p.len() as u32).to_be_bytes());
            wire.extend_from_slice(p);
        }
        // Over our own largest packet, and no body follows.
        wire.extend_from_slice(&(crate::sftp::MAX_PACKET + 1).to_be_bytes());
        // Written in odd pieces so that packets straddle the reader's reads.
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(7777) {
                cw.write_all(piece).await.unwrap();
            }
            cw
        });
        let max = crate::sftp::MAX_PACKET;
        assert_eq!(input.next_packet(max).await.unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(input.next_packet(max).await.unwrap().unwrap(), &big[..]);
        assert_eq!(input.next_packet(max).await.unwrap().unwrap(), &b""[..]);
        assert!(
            input.next_packet(999).await.is_err(),
            "1000 bytes is over a 999 limit"
        );
        // The consumer stopped at the refused length field: re-read what followed it.
        let mut body = [0u8; 1000];
        input.read_exact(&mut body).await.unwrap();
        assert_eq!(body, over[..]);
        // Refused on its length field alone, without waiting for the body.
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(10), input.next_packet(max))
                .await
                .expect("an over-long length is refused at once");
        assert!(refused.is_err());
        let mut cw = writer.await.unwrap();
        cw.shutdown().await.unwrap();
        assert!(input.next_packet(max).await.unwrap().is_none());
    }

    /// WRITE data arrives at an address congruent to its file offset (what the disk thread's
    /// direct writes need), whatever the handle's length and however the bytes were cut; other
    /// packets, and WRITEs with an oversized handle, pass as they are.
    #[tokio::test]
    async fn write_data_is_placed_by_its_offset() {
        use russh_sftp::protocol::{Extended, Packet, Write};
        let (client, server) = tokio::io::duplex(1 << 20);
        let (s, _reader) = decoupled_parts(server, crate::server::input_room());
        let (mut input, _output) = s.into_inner();
        let (_cr, mut cw) = tokio::io::split(client);
        // Each packet framed, and for a WRITE that should be placed: its offset and data length.
        let write = |handle: &str, offset: u64, len: usize| {
            let packet = Packet::Write(Write {
                id: 7,
                handle: handle.into(),
                offset,
                data: (0..len).map(|i| (i % 249) as u8).collect(),
            });
            let placed = handle.len() <= HANDLE_MAX && len >= DIRECT_ALIGN;
            (
                Bytes::try_from(packet).unwrap(),
                placed.then_some((offset, len)),
            )
        };
        let extended = Packet::Extended(Extended {
            id: 8,
            request: "x".into(),
            data: vec![6u8; 20_000],
        });
        let packets = [
            write("1", 0, 261_120),
            write("1", 261_120, 261_120),
            write("12345678", 12_345, 32_768),
            write(&"h".repeat(HANDLE_MAX), (1 << 40) + 4095, 5000),
            write(&"h".repeat(HANDLE_MAX + 1), 100, 8000),
            // Too small to be worth placing.
            write("1", 3, 10),
            (Bytes::try_from(extended).unwrap(), None),
        ];
        let wire: Vec<u8> = packets.iter().flat_map(|(p, _)| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(5_003) {
                cw.write_all(piece).await.unwrap();
            }
            cw
        });
        for (i, (framed, placed)) in packets.iter().enumerate() {
            let got = input.next_packet(crate::sftp::MAX_PACKET).await.unwrap();
            let got = got.expect("a packet");
            assert_eq!(got, framed[4..], "packet {i} arrives as sent");
            if let Some((offset, len)) = placed {
                let data_at = got.as_ptr() as usize + got.len() - len;
                assert_eq!(
                    data_at % DIRECT_ALIGN,
                    (offset % DIRECT_ALIGN as u64) as usize,
                    "packet {i}: data at {data_at:#x}, offset {offset}"
                );
            }
        }
        let mut cw = writer.await.unwrap();
        cw.shutdown().await.unwrap();
        assert!(
            input
                .next_packet(crate::sftp::MAX_PACKET)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A WRITE cut short by EOF in the middle of its head ends the queue without a packet.
    #[tokio::test]
    async fn a_write_cut_in_its_head_ends_the_queue() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (s, _reader) = decoupled_parts(server, crate::server::input_room());
        let (mut input, _output) = s.into_inner();
        let (_cr, mut cw) = tokio::io::split(client);
        let mut wire = 100_000u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[SSH_FXP_WRITE, 0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]);
        cw.write_all(&wire).await.unwrap();
        cw.shutdown().await.unwrap();
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            input.next_packet(crate::sftp::MAX_PACKET),
        )
        .await
        .expect("EOF ends the queue");
        assert!(end.unwrap().is_none());
    }

    /// A queued packet is charged the memory its buffer holds (here a WRITE with the room to
    /// place its data), and all of it comes back once the packet is consumed.
    #[tokio::test]
    async fn a_packet_is_charged_what_its_buffer_holds() {
        let total = Arc::new(Semaphore::new(1 << 20));
        let (client, server) = tokio::io::duplex(1 << 16);
        let (s, _reader) = decoupled_with_cap(server, 1 << 20, Arc::clone(&total));
        let (mut input, _output) = s.into_inner();
        let (_cr, mut cw) = tokio::io::split(client);
        let write = russh_sftp::protocol::Packet::Write(russh_sftp::protocol::Write {
            id: 1,
            handle: "1".into(),
            offset: 3,
            data: vec![1u8; 5000],
        });
        let framed = Bytes::try_from(write).unwrap();
        cw.write_all(&framed).await.unwrap();
        let charged = framed.len() + DIRECT_ALIGN - 1;
        wait_until(|| total.available_permits() == (1 << 20) - charged).await;
        let packet = input.next_packet(crate::sftp::MAX_PACKET).await.unwrap();
        assert_eq!(packet.unwrap(), framed[4..]);
        assert_eq!(total.available_permits(), 1 << 20);
    }
}
