//! The IIB domain: build requests and batches as event-sourced aggregates on `cqrs-es`.
//!
//! This crate does no I/O at all: no clock, no database, no network. Commands carry every
//! input a rule needs (the time included); events are the only output. Adapters in the `iib`
//! crate load events, call [`cqrs_es::Aggregate::handle`] and persist what it emits.

pub mod batch;
pub mod build_request;
pub mod facts;
pub mod ids;
pub mod metadata;
pub mod params;
pub mod state;

pub use batch::{Batch, BatchCommand, BatchError, BatchEvent, BatchMember};
pub use build_request::{
    Actor, BuildRequest, BuildRequestCommand, BuildRequestError, BuildRequestEvent,
};
pub use facts::BuildFacts;
pub use ids::{BatchId, RequestId, WorkerId};
pub use params::{RequestParams, SecretKind};
pub use state::{RequestState, RequestType};

/// The version written with every event of this crate; bump it (and add an upcaster in the
/// store) when an event's serialized shape changes incompatibly.
pub const EVENT_VERSION: &str = "1.0";
