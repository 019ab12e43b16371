//! Container mode (spec dewy.md 9): an `img://` image deployed with the docker or podman CLI,
//! a rolling update behind the built-in TCP proxy, health checks, rollback, image GC.
//!
//! STUB: the interface is frozen; the implementation is being written.

use std::sync::Arc;

use common::dewy::url::RegistryUrl;
use sources::img::ImgSource;

use crate::dewy::mode::Context;

/// Runs container mode until `ctx.cancel`: proxies first, then a tick every interval. On
/// cancel, stops and removes the app's managed containers and the proxies. Returns false when
/// it could not start (bad ports, runtime missing...).
pub async fn run(ctx: Arc<Context>, url: RegistryUrl, source: ImgSource) -> bool {
    let _ = (ctx, url, source);
    false
}
