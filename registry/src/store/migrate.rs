//! One-off import of a deploy-tools `state.db`.

use std::path::Path;

use rusqlite::Connection;

use super::Result;

pub(super) fn import_into_new_db(bolt: &Path, files: &Path, db: &Path) -> Result<Connection> {
    let _ = (bolt, files);
    super::schema::open_db(db)
}
