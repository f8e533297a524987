//! `iib-oci`: container registries and images, natively — no container engine, no skopeo,
//! podman or buildah, nothing executed.
//!
//! - **Talking to registries** ([`client`]): the OCI distribution API (and Docker registry v2)
//!   for manifests, indexes and blobs; basic and bearer authentication per repository scope
//!   ([`auth`]), retries on connection errors, 429 and 5xx ([`RetryPolicy`]), and bounded
//!   reads ([`ReadLimits`]): every answer is untrusted, so none is read into memory without a
//!   cap, and digests are checked.
//! - **Reading images** ([`inspect`], [`unpack`], [`bundle`]): labels, arches, a
//!   `skopeo inspect`-like summary, and chosen paths out of an image's layers, safely (no path
//!   traversal, nothing written through a symlink, no devices, decompression bombs stopped
//!   early; OCI whiteouts applied).
//! - **Building images** ([`build`]): deterministic layers, config changes, per-arch manifests
//!   and an index on a base image whose layers are mounted, never uploaded again.
//!
//! Parsing and modelling ([`reference`](mod@reference), [`digest`], [`manifest`], [`auth`],
//! [`unpack`]) are pure and kept apart from the client, so they can be tested and fuzzed
//! without a network.
//!
//! The client records registry calls, retries and bytes by registry host through the
//! [`metrics`](https://docs.rs/metrics) facade ([`mod@metrics`] names them): a no-op unless
//! the program installs a recorder.
//!
//! The crate reads no environment variables, settings or files of its own: everything a
//! [`RegistryClient`] needs comes in a [`ClientOptions`] its caller fills in. CPU-bound steps
//! (decompressing and unpacking layers) run on tokio's blocking pool, so the client needs a
//! tokio runtime.
//!
//! # Example
//!
//! Copy an image (every arch) to another registry, then build an image on it with one more
//! layer and a label, and push it with an index for two arches:
//!
//! ```no_run
//! use iib_oci::build::{layer, ConfigChanges};
//! use iib_oci::{ClientOptions, Reference, RegistryClient};
//! use std::collections::BTreeMap;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = RegistryClient::new(ClientOptions::default())?;
//! let base: Reference = "registry.example.com/base/image:1.0".parse()?;
//! let copied: Reference = "localhost:5000/mirror/image:1.0".parse()?;
//! let (digest, uploaded) = client.copy(&base, &copied, None).await?;
//! println!("{copied} is {digest}; {uploaded} bytes uploaded");
//!
//! let files = BTreeMap::from([("configs/hello.txt".to_string(), b"hello\n".to_vec())]);
//! let changes = ConfigChanges {
//!     labels: BTreeMap::from([("example.label".to_string(), "yes".to_string())]),
//!     created_by: "example".into(),
//!     ..Default::default()
//! };
//! let target: Reference = "localhost:5000/built/image:latest".parse()?;
//! let arches = ["amd64".to_string(), "arm64".to_string()];
//! let built = client
//!     .build(&copied, &target, &arches, &[layer(&files)], &changes, None)
//!     .await?;
//! println!("{target} is the index {}", built.index);
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod blocking;
pub mod build;
pub mod bundle;
pub mod client;
pub mod digest;
pub mod inspect;
pub mod manifest;
pub mod metrics;
pub mod reference;
pub mod unpack;

pub use client::{
    ClientOptions, LimitNames, ReadLimits, RegistryClient, RegistryError, RetryPolicy,
};
pub use digest::Digest;
pub use manifest::Manifest;
pub use reference::Reference;

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
