//! deploy-registry: an SSH server holding layers and configurations (see README.md).

mod sftp;
mod store;

fn main() {
    let _ = store::Options::default();
}
