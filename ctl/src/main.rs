//! `deployctl`: the operator CLI for deploy-registry (spec section 4).
//!
//! Exit codes: 0 ok, 1 runtime or remote failure, 2 usage. Arguments are parsed and validated
//! locally with the registry's own grammar, then re-quoted (`Command::to_line`), so a value
//! such as `-name "x -force"` stays one value (fixes spec A10).
//!
//! Differences from the original, on purpose:
//! - `-h` exits 0 (Go >= 1.15 behaviour; Go <= 1.14 gave 2). Subcommand `-h` exits 2 with the
//!   subcommand's usage, like any subcommand flag error.
//! - `-fp` help says `SHA256:...` and a `sha256:` prefix is accepted too (B20); several
//!   fingerprints may be given separated by commas (host key rotation).
//! - known_hosts: unknown and changed keys name the host entry, the file and the fingerprint
//!   seen; `@revoked` lines refuse the key; `@cert-authority` is not supported.
//! - `addver -file` checks the archive (gzip, zstd or plain tar, every entry read to the end)
//!   before connecting, so a broken archive is never uploaded (B21). An empty file is refused
//!   (the original let it pass because its validator saw io.EOF).
//! - `addver -file` asks the registry for the file's hash first: content it already stores is
//!   not uploaded again, and an existing version or a refusal is known before the upload.
//! - `addver -hash H` (without `-file`) registers content the registry already stores.
//! - `history`, `rollback`, `audit`, `fsck`, `status`, `forget` are passed to the registry like
//!   the others.
//! - Runtime errors are printed once as `deployctl: <error>`; argument errors print the
//!   original's texts as they are. A remote failure exits 1 silently (the registry spoke).
//! - RSA keys sign with rsa-sha2-512/256, never SHA-1 `ssh-rsa` unless the server says so.
//! - `import` replaces deploy-from-docker (spec 5): see `import.rs`.

mod archive;
mod cli;
mod import;
mod progress;
mod upload;

use std::io::Write;
use std::time::Duration;

use cli::{Global, Plan};

/// The original's dial timeout (connect, handshake and auth).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The registry gives this user name the service role; an operator tool must not use it.
const SERVICE_USER: &str = "deploy-agent";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = cli::plan(&args, &|k| std::env::var(k).ok());
    let code = match plan {
        Plan::Exit { code, stderr } => {
            let _ = std::io::stderr().write_all(stderr.as_bytes());
            code
        }
        plan => match run(plan) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("deployctl: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn run(plan: Plan) -> anyhow::Result<i32> {
    // Checked before the connection: a broken archive is refused before anything is sent
    // (spec B21).
    let checked = match &plan {
        Plan::Upload { file, .. } => Some(upload::check_file(file)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match plan {
            Plan::Exec { global, line } => {
                let conn = connect(&global).await?;
                remote(&conn, &line).await
            }
            Plan::Upload {
                global,
                name,
                version,
                file,
            } => {
                let checked =
                    checked.ok_or_else(|| anyhow::anyhow!("internal: file not checked"))?;
                let conn = connect(&global).await?;
                let out = upload::add_version(&conn, &file, &checked, &name, &version).await?;
                echo(&out);
                Ok(if out.status == 0 { 0 } else { 1 })
            }
            Plan::Import { global, args } => import::import(connect(&global), &args).await,
            Plan::Exit { code, .. } => Ok(code),
        }
    })
}

/// Runs one console line; output passes through. A remote failure exits 1 without a message
/// of ours: the registry already said why.
async fn remote(conn: &client::Connection, line: &str) -> anyhow::Result<i32> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let status = conn.exec_to(line, &mut stdout, &mut stderr).await?;
    Ok(if status == 0 { 0 } else { 1 })
}

/// Writes a remote command's output through, as it came.
fn echo(out: &client::ExecOutput) {
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
}

async fn connect(global: &Global) -> anyhow::Result<client::Connection> {
    let user = std::env::var("USER").unwrap_or_default();
    if user == SERVICE_USER {
        anyhow::bail!(
            "$USER is {SERVICE_USER:?}, the registry's service account; deployctl connects as $USER, so run it as (or set USER to) an operator name"
        );
    }
    let host_check = if global.fingerprints.is_empty() {
        client::HostCheck::KnownHosts(client::hostkey::default_known_hosts())
    } else {
        client::HostCheck::Fingerprints(global.fingerprints.clone())
    };
    let identity = match &global.key {
        Some(k) => client::Identity::KeyFile(k.clone()),
        None => client::Identity::Agent,
    };
    client::Connection::connect(&client::Target {
        addr: global.addr.clone(),
        user,
        host_check,
        identity,
        connect_timeout: CONNECT_TIMEOUT,
    })
    .await
}
