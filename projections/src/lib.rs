//! Read models: what the REST API serves and the Kafka relay sends, folded from events.
//!
//! Pure code, no I/O. [`Views`] folds events into [`RequestRecord`]s and [`BatchRecord`]s;
//! [`render`] turns a record into IIB's JSON, one serializer per request type, so the API and
//! the stream can never disagree. The `iib` crate's projector loads the records an event
//! touches, applies it here and stores the result, with the rendered JSON, in the same
//! transaction as its checkpoint.

pub mod batch_view;
pub mod envelope;
pub mod render;
pub mod request_view;
pub mod timestamp;
pub mod views;

pub use batch_view::BatchRecord;
pub use envelope::{DomainEventPayload, ProjectedEvent};
pub use request_view::{RequestRecord, StateEntry};
pub use views::Views;
