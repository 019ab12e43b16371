//! The two SFTP views of the registry.
//!
//! - [`operator`]: upload-only. Any write-open is a fresh upload, hashed and registered before
//!   CLOSE is answered.
//! - [`service`]: what `deploy-agent` sees, read-only: `configs/<name>.json` and `files/<sha256>`.
//!
//! Both run on [`stream::decoupled`], which keeps reading the channel while a reply waits for
//! the client's window (the russh + russh-sftp deadlock, spike-russh.md section 7).

pub mod operator;
pub mod service;
pub mod stream;
