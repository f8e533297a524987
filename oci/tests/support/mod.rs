//! Test support: real servers on free loopback ports, no mocks. A registry (Debian's
//! `docker-registry`), a registry that answers with hostile sizes, a Docker token service, and
//! a proxy that injects faults. The service's tests use these modules too (`#[path]` in its
//! `tests/support/mod.rs`), so they depend on nothing but this crate's dev-dependencies.

#![allow(dead_code)]

pub mod faults;
pub mod hostile_registry;
pub mod registry;
pub mod token_issuer;
