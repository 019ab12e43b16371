//! `addver -file`: the local check, then the SFTP upload with progress, and the `addver`.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::console::{AddVer, Command, NO_UPLOAD};
use common::digest::Digest;

use crate::archive::{self, Checked};
use crate::progress;

/// Opens and checks the archive; errors read `file validation failed: ...` as the original's.
pub fn check_file(path: &Path) -> anyhow::Result<Checked> {
    let f = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!("open {}: {}", path.display(), common::goerr::errno_text(&e))
    })?;
    archive::check(f).map_err(|e| anyhow::anyhow!("file validation failed: {e}"))
}

/// Registers the checked file as `component` `version`: first by its hash, and only when the
/// registry stores no such content, uploads it and asks again. So content already stored is
/// not sent again, and a refusal (an existing version, a key limited by `configs=`) comes
/// before the upload, not after it. Returns the last `addver`'s answer.
pub async fn add_version(
    conn: &client::Connection,
    path: &Path,
    checked: &Checked,
    component: &str,
    version: &str,
) -> anyhow::Result<client::ExecOutput> {
    let line = addver_line(component, version, &checked.digest);
    if let Some(out) = add_stored(conn, &line).await? {
        return Ok(out);
    }
    upload(conn, path, checked).await?;
    conn.exec(&line).await
}

/// `addver -name component -version version -hash digest`.
pub fn addver_line(component: &str, version: &str, digest: &Digest) -> String {
    Command::AddVer(AddVer {
        name: component.to_string(),
        version: version.to_string(),
        hash: digest.to_hex(),
    })
    .to_line()
}

/// Runs an `addver` line; `None` when the registry has no content of that hash (upload it,
/// then run the line again).
pub async fn add_stored(
    conn: &client::Connection,
    line: &str,
) -> anyhow::Result<Option<client::ExecOutput>> {
    let out = conn.exec(line).await?;
    let missing = out.status != 0 && String::from_utf8_lossy(&out.stdout).contains(NO_UPLOAD);
    Ok((!missing).then_some(out))
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
