//! The values `/metrics` reads from the database on each scrape: the event store's head, how
//! far the read model and the Kafka relay are behind, queue depths, events set aside and
//! dead letters. Every process reads the same database, so each reports the same values.

use super::*;
use crate::store::{Store, StoreError};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Reads the database and sets the gauges (and the counters kept there); on failure
/// `iib_database_up` is 0 and the values stay those of the last good scrape.
pub async fn refresh(store: &Store, relay_enabled: bool) -> Result<(), StoreError> {
    let result = read(store, relay_enabled).await;
    metrics::gauge!(DATABASE_UP).set(if result.is_ok() { 1.0 } else { 0.0 });
    result
}

/// Seconds since `recorded_at`, never negative.
fn age(recorded_at: chrono::DateTime<chrono::Utc>) -> f64 {
    (chrono::Utc::now() - recorded_at).num_milliseconds().max(0) as f64 / 1000.0
}

async fn read(store: &Store, relay_enabled: bool) -> Result<(), StoreError> {
    let head = store.head_position().await?;
    let read_model = store.read_model_position().await?;
    let unapplied = store.read_after(read_model, 1).await?;
    let relay = store
        .checkpoint(crate::streaming::relay::CHECKPOINT)
        .await?;
    let unrelayed = store.read_after(relay, 1).await?;
    let set_aside = store.set_aside_counts().await?;
    let dead_letters = store.dead_letter_count().await?;
    let depths = store.queue_depths().await?;

    metrics::counter!(EVENTS).absolute(head.max(0) as u64);
    metrics::gauge!(READ_MODEL_LAG_EVENTS).set((head - read_model).max(0) as f64);
    metrics::gauge!(READ_MODEL_LAG_SECONDS)
        .set(unapplied.first().map_or(0.0, |e| age(e.recorded_at)));
    // Without IIB_KAFKA_BROKERS nothing is relayed: no lag, rather than every event ever stored.
    let (relay_events, relay_seconds) = if relay_enabled {
        (
            (head - relay).max(0) as f64,
            unrelayed.first().map_or(0.0, |e| age(e.recorded_at)),
        )
    } else {
        (0.0, 0.0)
    };
    metrics::gauge!(RELAY_LAG_EVENTS).set(relay_events);
    metrics::gauge!(RELAY_LAG_SECONDS).set(relay_seconds);
    metrics::counter!(RELAY_DEAD_LETTERS).absolute(dead_letters.max(0) as u64);
    for reader in ["read_model", crate::streaming::relay::CHECKPOINT] {
        let count = set_aside
            .iter()
            .find(|(r, _)| r == reader)
            .map_or(0, |(_, n)| *n);
        metrics::counter!(EVENTS_SET_ASIDE, "reader" => reader).absolute(count.max(0) as u64);
    }

    // A queue that empties must show 0, not its last depth: every queue seen stays listed.
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.insert(queue_label(None));
    for depth in &depths {
        seen.insert(queue_label(depth.queue.as_deref()));
    }
    for queue in seen.iter() {
        let depth = depths
            .iter()
            .find(|d| queue_label(d.queue.as_deref()) == *queue);
        let (waiting, running) = depth.map_or((0, 0), |d| (d.waiting, d.running));
        metrics::gauge!(QUEUE_DEPTH, "queue" => queue.clone(), "state" => "waiting")
            .set(waiting as f64);
        metrics::gauge!(QUEUE_DEPTH, "queue" => queue.clone(), "state" => "running")
            .set(running as f64);
    }
    Ok(())
}
