//! Upload-only SFTP for operators (spec 1.9, fixed: durable uploads, size limits).

use russh::ChannelStream;
use russh::server::Msg;

use crate::store::{Actor, Store};

/// Serves one operator SFTP session until the client closes it.
pub async fn serve(stream: ChannelStream<Msg>, store: Store, actor: Actor) {
    let _ = (stream, store, actor);
    todo!()
}
