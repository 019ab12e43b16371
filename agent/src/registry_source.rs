//! The deploy-registry as a source: `configs/<name>.json` says what should run, `files/<hash>`
//! gives the layer bytes. One SSH connection is kept across polls and re-made (with
//! exponential backoff and jitter) when it drops (deploy-tools B18).

use std::time::Duration;

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::cache::{BlobReader, LayerSource};

/// A configuration larger than this is not a configuration.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

pub struct RegistrySource {
    target: client::Target,
    io_timeout: Duration,
    conn: Option<(client::Connection, SftpSession)>,
    /// Consecutive failed connects, for the backoff.
    failures: u32,
}

impl RegistrySource {
    pub fn new(target: client::Target, io_timeout: Duration) -> RegistrySource {
        RegistrySource {
            target,
            io_timeout,
            conn: None,
            failures: 0,
        }
    }

    /// How long to wait before the next connect attempt after failures: 1 s doubling to 60 s,
    /// ±20 % jitter so that a fleet does not reconnect in step. `None` when connected.
    pub fn reconnect_delay(&self) -> Option<Duration> {
        if self.failures == 0 {
            return None;
        }
        let base =
            Duration::from_secs(1u64 << (self.failures - 1).min(6)).min(Duration::from_secs(60));
        Some(base.mul_f64(rand::random_range(0.8..1.2)))
    }

    async fn session(&mut self) -> anyhow::Result<&SftpSession> {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            tracing::info!(addr = %self.target.addr, "connection to the registry was closed, reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            let made = async {
                let conn = client::Connection::connect(&self.target).await?;
                let sftp = tokio::time::timeout(self.io_timeout, conn.sftp())
                    .await
                    .map_err(|_| anyhow::anyhow!("opening the sftp session timed out"))??;
                anyhow::Ok((conn, sftp))
            }
            .await;
            match made {
                Ok(c) => {
                    tracing::info!(addr = %self.target.addr, fingerprint = c.0.server_fingerprint(), "connected to the registry");
                    self.failures = 0;
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    return Err(e);
                }
            }
        }
        match &self.conn {
            Some((_, sftp)) => Ok(sftp),
            None => anyhow::bail!("not connected"),
        }
    }

    /// Drops the connection after an error on it, so the next use reconnects.
    pub fn reset(&mut self) {
        if self.conn.take().is_some() {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// Reads `configs/<name>.json`. A missing configuration is `file does not exist`, as the
    /// original logged it.
    pub async fn fetch_config(&mut self, name: &str) -> anyhow::Result<Vec<u8>> {
        let reused = self.conn.is_some();
        match self.fetch_config_once(name).await {
            // A kept connection may have died since the last poll (registry restart, idle
            // timeout) without us noticing yet: one fresh attempt before calling it a failure.
            Err(e) if reused && !is_not_found(&e) => {
                tracing::info!(error = %format!("{e:#}"), "registry connection failed, reconnecting");
                self.failures = 0;
                self.fetch_config_once(name).await
            }
            res => res,
        }
    }

    async fn fetch_config_once(&mut self, name: &str) -> anyhow::Result<Vec<u8>> {
        let timeout = self.io_timeout;
        let sftp = self.session().await?;
        let path = format!("configs/{name}.json");
        let read = async {
            let mut f = sftp.open(path).await.map_err(sftp_error)?;
            let mut buf = Vec::new();
            (&mut f)
                .take(MAX_CONFIG_BYTES + 1)
                .read_to_end(&mut buf)
                .await?;
            if buf.len() as u64 > MAX_CONFIG_BYTES {
                anyhow::bail!("configuration is larger than {MAX_CONFIG_BYTES} bytes");
            }
            anyhow::Ok(buf)
        };
        let res = answered(timeout, read).await;
        if let Err(e) = &res
            && !is_not_found(e)
        {
            self.reset();
        }
        res
    }

    /// Sends `report` (for the registry's `status`) on the connection of the poll that just
    /// ended. False when there is none (the poll could not connect): nothing was sent, and
    /// the next poll reconnects.
    pub async fn report(&self, report: &common::report::Report) -> anyhow::Result<bool> {
        let Some((conn, _)) = self.conn.as_ref().filter(|(c, _)| !c.is_closed()) else {
            return Ok(false);
        };
        let out = answered(self.io_timeout, conn.exec(&report.to_line())).await?;
        if out.status != 0 {
            anyhow::bail!(
                "the registry refused it: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(true)
    }

    /// A handle to fetch blobs with while connected.
    pub async fn blobs(&mut self) -> anyhow::Result<Blobs<'_>> {
        let sftp = self.session().await?;
        Ok(Blobs { sftp })
    }
}

/// Blob access over the current SFTP session.
pub struct Blobs<'a> {
    sftp: &'a SftpSession,
}

impl LayerSource for Blobs<'_> {
    async fn open_blob(&self, hash: &str, offset: u64) -> anyhow::Result<BlobReader> {
        // Never the JSON's `File`: only the content address (deploy-tools A13).
        let mut f = self
            .sftp
            .open(format!("files/{hash}"))
            .await
            .map_err(sftp_error)?;
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::pin(f))
    }
}

/// `request`'s result, or an error once the registry has not answered it for `limit`.
async fn answered<T>(
    limit: Duration,
    request: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no answer from the registry for {}s",
                limit.as_secs()
            ))
        })
}

#[derive(Debug, thiserror::Error)]
#[error("file does not exist")]
pub struct NotFound;

fn sftp_error(e: russh_sftp::client::error::Error) -> anyhow::Error {
    match &e {
        russh_sftp::client::error::Error::Status(s) if s.status_code == StatusCode::NoSuchFile => {
            NotFound.into()
        }
        _ => e.into(),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NotFound>().is_some()
}
