//! deploy-agent: tracks one configuration on a deploy-registry, fetches its layers into a
//! content-addressed cache, unpacks them safely, runs the deploy script and records the state.
//!
//! # Layout
//!
//! - [`cli`]: flags (the original's, Go style, plus ours).
//! - [`dewy`]: `-registry URL`: Dewy's registries into the same pipeline, Dewy's release layout.
//! - [`agent`]: the poll loop and one cycle: Source → LayerCache → Unpacker → Activator → State.
//! - [`registry_source`]: `configs/<name>.json` and `files/<hash>` over one kept SSH connection.
//! - [`cache`]: `cache/<sha256>` blobs, verified, resumable, cleaned by reachability.
//! - [`unpack`]: layers → `unpacked/<id>` (safe extraction, staging, durability).
//! - [`signals`]: SIGINT/SIGTERM as a cancellation token.
//! - [`script`]: the deploy script contract (environment, timeout, process group, logged output).
//! - [`activate`]: the `current` symlink and `-cleanold`.
//! - [`state`]: the state file, written atomically and durably.

pub mod activate;
pub mod agent;
pub mod cache;
pub mod cli;
pub mod dewy;
pub mod registry_source;
pub mod script;
pub mod signals;
pub mod state;
pub mod unpack;
