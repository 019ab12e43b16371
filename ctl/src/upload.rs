//! `addver -file`: the local check, then the SFTP upload with progress.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::archive::{self, Checked};
use crate::progress;

/// Opens and checks the archive; errors read `file validation failed: ...` as the original's.
pub fn check_file(path: &Path) -> anyhow::Result<Checked> {
    let f = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!("open {}: {}", path.display(), common::goerr::errno_text(&e))
    })?;
    archive::check(f).map_err(|e| anyhow::anyhow!("file validation failed: {e}"))
}

/// Uploads the checked file. The registry hashes and registers the upload before it answers
/// CLOSE, so after `shutdown` the content is addressable by its hash.
pub async fn upload(
    conn: &client::Connection,
    path: &Path,
    checked: &Checked,
) -> anyhow::Result<()> {
    let failure = |e: &dyn std::fmt::Display| anyhow::anyhow!("upload failure: {e}");
    let sftp = conn.sftp().await?;
    // The name is ignored by the registry (every write-open is a fresh upload).
    let mut remote = sftp.create("upload").await.map_err(|e| failure(&e))?;
    let mut local = tokio::fs::File::open(path).await.map_err(|e| {
        anyhow::anyhow!("open {}: {}", path.display(), common::goerr::errno_text(&e))
    })?;
    let mut bar =
        progress::stdout_is_tty().then(|| progress::Bar::new(std::io::stdout(), checked.size));
    // The file is hashed again while sent: a file changed since the check would register a
    // hash that does not match what was uploaded.
    let mut hasher = common::digest::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    loop {
        let n = local.read(&mut buf).await.map_err(|e| failure(&e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        remote.write_all(&buf[..n]).await.map_err(|e| failure(&e))?;
        sent += n as u64;
        if let Some(bar) = bar.as_mut() {
            bar.advance(n as u64);
        }
    }
    remote.shutdown().await.map_err(|e| failure(&e))?;
    if let Some(bar) = bar {
        bar.finish();
    }
    if sent != checked.size || hasher.finish() != checked.digest {
        anyhow::bail!(
            "{} changed while it was uploaded; nothing was registered, try again",
            path.display()
        );
    }
    let _ = sftp.close().await;
    Ok(())
}
