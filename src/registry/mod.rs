//! Talking to container registries natively (no skopeo, podman or buildah): references,
//! digests, manifests, credentials, and the HTTP client. Parsing and modelling are pure and
//! kept apart from the client so they can be tested and fuzzed without a network.

pub mod auth;
pub mod build;
pub mod bundle;
pub mod client;
pub mod digest;
pub mod inspect;
pub mod manifest;
pub mod reference;
pub mod unpack;

pub use client::{ClientOptions, ReadLimits, RegistryClient, RegistryError, RetryPolicy};
pub use digest::Digest;
pub use manifest::Manifest;
pub use reference::Reference;
