//! Read-only SFTP for agents (spec 1.10, fixed: unknown configs are ENOENT, stable listings).

use russh::ChannelStream;
use russh::server::Msg;

use crate::store::Store;

/// Serves one service SFTP session until the client closes it.
pub async fn serve(stream: ChannelStream<Msg>, store: Store) {
    let _ = (stream, store);
    todo!()
}
