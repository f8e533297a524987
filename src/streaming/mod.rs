//! State changes to Kafka: IIB's `build.state` and `batch.state` messages (and optionally
//! every event), relayed from the event store with nothing lost.

pub mod messages;
pub mod relay;
