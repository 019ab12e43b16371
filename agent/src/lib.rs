//! deploy-agent: tracks one configuration on a deploy-registry, fetches its layers into a
//! content-addressed cache, unpacks them safely, runs the deploy script and records the state.
//!
//! # Layout
//!
//! - [`cache`]: `cache/<sha256>` blobs, verified, resumable, cleaned by reachability.
//! - [`unpack`]: layers → `unpacked/<id>` (safe extraction, staging, durability).

pub mod cache;
pub mod unpack;
