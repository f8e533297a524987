//! The Kafka relay: reads committed events after its own checkpoint, in global order, and
//! publishes IIB's messages with an idempotent producer (acks=all). The checkpoint moves only
//! past events whose messages were all delivered, so nothing is skipped or lost across broker
//! outages, restarts or crashes; a crash may resend a page, with the same `correlation_id`s.
//! A broker outage never fails requests: events wait in the store. A message the broker
//! refuses for good (too large, invalid, not authorized) is recorded as a dead letter and the
//! relay goes on; transient errors are retried.

use super::messages::{messages_for, Message, Topics};
use crate::shutdown::Shutdown;
use crate::store::{DeadLetter, Store, StoreError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A message handed to the producer, or refused by it at once.
enum Enqueued {
    Pending(DeliveryFuture),
    Refused(KafkaError),
}

/// Whether a produce error is final for that message: the broker (or librdkafka's own checks)
/// will refuse it however often it is sent. Everything else (brokers away, leaders moving,
/// timeouts) is transient and the page is sent again.
pub fn is_permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error,
        KafkaError::MessageProduction(
            MessageSizeTooLarge
                | MessageBatchTooLarge
                | InvalidMessage
                | InvalidMessageSize
                | InvalidRecord
                | BadMessage
                | InvalidTimestamp
                | UnsupportedForMessageFormat
                | PolicyViolation
                | InvalidTopic
                | TopicAuthorizationFailed
        )
    )
}

/// The relay's checkpoint name.
pub const CHECKPOINT: &str = "kafka_relay";
const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub brokers: String,
    pub topics: Topics,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Extra librdkafka settings (security.protocol, sasl.*, ssl.*).
    pub properties: Vec<(String, String)>,
}

impl RelaySettings {
    /// The client settings: `defaults` first, then what IIB_KAFKA_PROPERTIES says (which wins).
    fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

pub struct Relay {
    store: Store,
    settings: RelaySettings,
    producer: FutureProducer,
}

impl Relay {
    pub fn new(store: Store, settings: RelaySettings) -> Result<Self, RelayError> {
        let producer: FutureProducer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("message.timeout.ms", "30000"),
                // Send as soon as a message is there: latency matters more than batching.
                ("linger.ms", "1"),
            ])
            .create()
            .map_err(|e| RelayError::Kafka(e.to_string()))?;
        Ok(Self {
            store,
            settings,
            producer,
        })
    }

    /// Creates the topics that are missing.
    pub async fn ensure_topics(&self) -> Result<(), RelayError> {
        let admin: AdminClient<DefaultClientContext> = self
            .settings
            .client_config(&[])
            .create()
            .map_err(|e| RelayError::Kafka(e.to_string()))?;
        let topics = &self.settings.topics;
        let names: Vec<&str> = [
            Some(topics.build_state.as_str()),
            Some(topics.batch_state.as_str()),
            topics.events.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let new: Vec<NewTopic> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &options)
            .await
            .map_err(|e| RelayError::Kafka(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(RelayError::Kafka(format!("creating topic {topic}: {code}")))
                }
            }
        }
        Ok(())
    }

    /// Enqueues a message; the future resolves when the broker has it. Messages are enqueued in
    /// order and the producer is idempotent, so one key's messages arrive in order even with
    /// many in flight. A message librdkafka refuses for good before sending (larger than
    /// `message.max.bytes`, say) comes back as `Refused`.
    async fn enqueue(&self, message: &Message) -> Result<Enqueued, RelayError> {
        loop {
            let mut headers = OwnedHeaders::new();
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.body)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(Enqueued::Pending(delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: let it drain a little.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) if is_permanent(&e) => return Ok(Enqueued::Refused(e)),
                Err((e, _)) => return Err(RelayError::Kafka(e.to_string())),
            }
        }
    }

    /// Sends `messages` (each with the position of the event it comes from) pipelined and waits
    /// until the broker has every one, or refused it for good: those become dead letters, so
    /// one message the broker can never take does not hold back every later one. Any other
    /// error fails the page, to be sent again.
    async fn send_all(&self, messages: &[(i64, Message)]) -> Result<u64, RelayError> {
        let mut pending = Vec::with_capacity(messages.len());
        for (position, message) in messages {
            pending.push((*position, message, self.enqueue(message).await?));
        }
        let mut sent = 0;
        for (position, message, enqueued) in pending {
            let refused = match enqueued {
                Enqueued::Refused(e) => e,
                Enqueued::Pending(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        sent += 1;
                        continue;
                    }
                    Ok(Err((e, _))) if is_permanent(&e) => e,
                    Ok(Err((e, _))) => return Err(RelayError::Kafka(e.to_string())),
                    Err(_) => return Err(RelayError::Kafka("the producer went away".into())),
                },
            };
            self.dead_letter(position, message, &refused).await?;
        }
        Ok(sent)
    }

    /// Records a message the broker refused for good and says so in the log.
    async fn dead_letter(
        &self,
        position: i64,
        message: &Message,
        error: &KafkaError,
    ) -> Result<(), RelayError> {
        let size = message.key.len()
            + message.body.len()
            + message
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
                .sum::<usize>();
        let letter = DeadLetter {
            position,
            topic: message.topic.clone(),
            key: message.key.clone(),
            error: error.to_string(),
            size: size as u64,
            recorded_at: chrono::Utc::now(),
        };
        if self.store.record_dead_letter(&letter).await? {
            tracing::error!(
                position,
                topic = %letter.topic,
                key = %letter.key,
                size,
                error = %letter.error,
                "the Kafka broker refused a message for good; it is recorded in relay_dead_letters \
                 and the relay goes on. Fix the cause (e.g. the topic's max.message.bytes), then \
                 resend it with `iib replay --to-kafka --from {}`",
                position - 1
            );
        }
        Ok(())
    }

    /// Publishes everything committed after the checkpoint; returns how many events it relayed.
    pub async fn catch_up(&self) -> Result<u64, RelayError> {
        let mut relayed = 0;
        loop {
            let position = self.store.checkpoint(CHECKPOINT).await?;
            let events = self.store.read_after(position, PAGE).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(relayed);
            };
            let mut messages = Vec::new();
            for event in &events {
                match messages_for(&self.store, event, &self.settings.topics).await {
                    Ok(more) => messages.extend(more.into_iter().map(|m| (event.position, m))),
                    // An event that cannot be turned into messages is set aside, not retried
                    // for ever: the events after it still reach the broker.
                    Err(e @ crate::store::StoreError::Corrupt(_)) => {
                        self.store
                            .set_aside(CHECKPOINT, event, &e.to_string())
                            .await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                relayed += 1;
            }
            // The checkpoint moves only once the broker has the whole page (or refused some of
            // it for good, recorded as dead letters).
            self.send_all(&messages).await?;
            self.store.advance_checkpoint(CHECKPOINT, last).await?;
        }
    }

    /// Republishes the messages of every event after `from` (for a new consumer), without
    /// touching the relay's checkpoint; repeats carry the same `correlation_id`s.
    pub async fn replay(&self, from: i64) -> Result<u64, RelayError> {
        let mut position = from;
        let mut sent = 0;
        loop {
            let events = self.store.read_after(position, PAGE).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(sent);
            };
            let mut messages = Vec::new();
            for event in &events {
                for message in messages_for(&self.store, event, &self.settings.topics).await? {
                    messages.push((event.position, message));
                }
            }
            sent += self.send_all(&messages).await?;
            position = last;
        }
    }

    /// Relays until shutdown: after each commit in this process, and every second.
    pub async fn run(self, committed: Arc<Notify>, shutdown: Shutdown) {
        if let Err(e) = self.ensure_topics().await {
            tracing::warn!(error = %e, "could not create the Kafka topics; relaying anyway");
        }
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            match self.catch_up().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "the Kafka relay is waiting for the broker; events stay in the store");
                }
            }
            let pause = Duration::from_secs(u64::from(failures.min(5)).max(1));
            tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => {}
            }
        }
    }
}
