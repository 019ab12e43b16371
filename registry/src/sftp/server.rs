//! The SFTP request loop both views run, in place of `russh_sftp::server::run`.
//!
//! It keeps russh-sftp's packet types and its `Handler` trait, and differs in two ways that
//! matter for throughput and robustness:
//! - packets come framed from our queue ([`QueueReader::next_packet`]): no zero-filled buffer
//!   per packet, and a WRITE's data reaches the handler as a slice of the received bytes
//!   ([`View::write_bytes`]) instead of two more copies;
//! - a protocol violation (an oversized packet) ends the session instead of being skipped
//!   and reparsed from the middle of its payload.
//!
//! Like russh-sftp's loop it is sequential: one request is answered before the next is read.

use std::time::Duration;

use bytes::{Buf, Bytes};
use russh_sftp::protocol::{Packet, Status, StatusCode};
use russh_sftp::server::{Handler, StatusReply};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::stream::QueueReader;

pub(super) const SSH_FXP_WRITE: u8 = 6;

/// A view's handler, with WRITE taking the data without a copy.
pub trait View: Handler<Error = StatusReply> + Send {
    /// SSH_FXP_WRITE. The default copies and calls [`Handler::write`].
    fn write_bytes(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Bytes,
    ) -> impl Future<Output = Result<Status, StatusReply>> + Send {
        self.write(id, handle, offset, data.to_vec())
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The input ended or broke the protocol, or the output failed.
    Closed,
    /// A reply waited for window for `stall_limit` while the client's requests filled our
    /// queue: the client does not read what we send, and since russh's session loop blocks
    /// once its channel queue is full too, it could never even tell us it did. Only ending
    /// the channel (and the connection) gets us out.
    Stuck,
}

/// Answers requests from `input` on `output` until the input ends (or breaks the protocol, or
/// the output fails, or the session is stuck: see [`Ended::Stuck`]). `handler` is dropped when
/// it returns.
pub async fn serve<H, W>(
    mut input: QueueReader,
    mut output: W,
    mut handler: H,
    max_packet: u32,
    stall_limit: Duration,
) -> Ended
where
    H: View,
    W: AsyncWrite + Unpin,
{
    loop {
        let packet = match input.next_packet(max_packet).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ended::Closed,
            Err(too_long) => {
                tracing::warn!(
                    len = too_long.0,
                    max = max_packet,
                    "sftp: packet over the limit, ending the session"
                );
                return Ended::Closed;
            }
        };
        let reply = dispatch(&mut handler, packet).await;
        let bytes = match Bytes::try_from(reply) {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(cause = %err, "sftp: reply not encodable");
                return Ended::Closed;
            }
        };
        let send = async {
            output.write_all(&bytes).await?;
            output.flush().await
        };
        tokio::pin!(send);
        loop {
            match tokio::time::timeout(stall_limit, &mut send).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return Ended::Closed,
                // A client that is merely slow to read, or paused, has not filled the queue:
                // it is left to the idle limit.
                Err(_) if input.is_full() => return Ended::Stuck,
                Err(_) => {}
            }
        }
    }
}

/// A handler result as a reply packet.
fn reply<T: Into<Packet>>(id: u32, result: Result<T, StatusReply>) -> Packet {
    match result {
        Ok(p) => p.into(),
        Err(e) => Packet::Status(Status {
            id,
            status_code: e.status_code,
            error_message: e.error_message.unwrap_or_else(|| e.status_code.to_string()),
            language_tag: e.language_tag.unwrap_or_else(|| "en-US".to_string()),
        }),
    }
}

/// WRITE's fields, the data as a slice of `b`: `id, handle, offset, data`.
fn parse_write(mut b: Bytes) -> Option<(u32, String, u64, Bytes)> {
    b.advance(1);
    let id = b.try_get_u32().ok()?;
    let handle_len = b.try_get_u32().ok()? as usize;
    if b.remaining() < handle_len {
        return None;
    }
    let handle = String::from_utf8(b.split_to(handle_len).to_vec()).ok()?;
    let offset = b.try_get_u64().ok()?;
    let data_len = b.try_get_u32().ok()? as usize;
    if b.remaining() < data_len {
        return None;
    }
    Some((id, handle, offset, b.split_to(data_len)))
}

async fn dispatch<H: View>(h: &mut H, mut packet: Bytes) -> Packet {
    if packet.first() == Some(&SSH_FXP_WRITE) {
        return match parse_write(packet) {
            Some((id, handle, offset, data)) => {
                reply(id, h.write_bytes(id, handle, offset, data).await)
            }
            None => Packet::error(0, StatusCode::BadMessage),
        };
    }
    let Ok(request) = Packet::try_from(&mut packet) else {
        return Packet::error(0, StatusCode::BadMessage);
    };
    let id = request.get_request_id();
    match request {
        Packet::Init(p) => reply(id, h.init(p.version, p.extensions).await),
        Packet::Open(p) => reply(id, h.open(p.id, p.filename, p.pflags, p.attrs).await),
        Packet::Close(p) => reply(id, h.close(p.id, p.handle).await),
        Packet::Read(p) => reply(id, h.read(p.id, p.handle, p.offset, p.len).await),
        Packet::Write(p) => reply(id, h.write(p.id, p.handle, p.offset, p.data).await),
        Packet::Lstat(p) => reply(id, h.lstat(p.id, p.path).await),
        Packet::Fstat(p) => reply(id, h.fstat(p.id, p.handle).await),
        Packet::SetStat(p) => reply(id, h.setstat(p.id, p.path, p.attrs).await),
        Packet::FSetStat(p) => reply(id, h.fsetstat(p.id, p.handle, p.attrs).await),
        Packet::OpenDir(p) => reply(id, h.opendir(p.id, p.path).await),
        Packet::ReadDir(p) => reply(id, h.readdir(p.id, p.handle).await),
        Packet::Remove(p) => reply(id, h.remove(p.id, p.filename).await),
        Packet::MkDir(p) => reply(id, h.mkdir(p.id, p.path, p.attrs).await),
        Packet::RmDir(p) => reply(id, h.rmdir(p.id, p.path).await),
        Packet::RealPath(p) => reply(id, h.realpath(p.id, p.path).await),
        Packet::Stat(p) => reply(id, h.stat(p.id, p.path).await),
        Packet::Rename(p) => reply(id, h.rename(p.id, p.oldpath, p.newpath).await),
        Packet::ReadLink(p) => reply(id, h.readlink(p.id, p.path).await),
        Packet::Symlink(p) => reply(id, h.symlink(p.id, p.linkpath, p.targetpath).await),
        Packet::Extended(p) => reply(id, h.extended(p.id, p.request, p.data).await),
        // Replies (VERSION, STATUS, DATA...) are not requests.
        _ => Packet::error(id, StatusCode::BadMessage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_parsed_without_copying_the_data() {
        let write = russh_sftp::protocol::Write {
            id: 9,
            handle: "h1".into(),
            offset: 1 << 40,
            data: vec![5u8; 1000],
        };
        let mut framed = Bytes::try_from(Packet::Write(write)).unwrap();
        framed.advance(4);
        let (id, handle, offset, data) = parse_write(framed.clone()).unwrap();
        assert_eq!(
            (id, handle.as_str(), offset, data.len()),
            (9, "h1", 1 << 40, 1000)
        );
        assert!(data.iter().all(|&b| b == 5));
        // A slice of the packet, not a copy.
        assert_eq!(data.as_ptr(), framed[framed.len() - 1000..].as_ptr());
        // Truncated packets are refused.
        for cut in [1, 5, 10, 20, framed.len() - 1] {
            assert!(parse_write(framed.slice(..cut)).is_none(), "cut at {cut}");
        }
    }
}
