//! Event metadata: who caused an event, when, through which worker, for which call.
//!
//! `cqrs-es` carries metadata as a string map next to each event; these are its keys. The
//! time an event was recorded is chosen by the adapter that commits it (the domain has no
//! clock) and is what the read model shows as `updated`.

/// RFC 3339 UTC time the event was committed, with microseconds.
pub const RECORDED_AT: &str = "recorded_at";
/// The user on whose behalf the command ran (absent when auth is off).
pub const USER: &str = "user";
/// The worker that ran the command, if a worker did.
pub const WORKER: &str = "worker";
/// Ties together all events caused by one incoming call (HTTP request id, worker step).
pub const CORRELATION_ID: &str = "correlation_id";
/// The W3C `traceparent` of the span that issued the command, when traces are exported: how a
/// worker links its span to the call that submitted the request, and what the Kafka relay
/// puts in the messages' headers.
pub const TRACEPARENT: &str = "traceparent";
