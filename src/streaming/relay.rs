//! The Kafka relay: reads committed events after its own checkpoint, in global order, and
//! publishes IIB's messages with an idempotent producer (acks=all). The checkpoint moves only
//! past events whose messages were all delivered, so nothing is skipped or lost across broker
//! outages, restarts or crashes; a crash may resend a page, with the same `correlation_id`s.
//! A broker outage never fails requests: events wait in the store. A message the broker
//! refuses for good (too large, invalid, not authorized) is recorded as a dead letter and the
//! relay goes on; transient errors are retried.
//!
//! **One relay at a time.** Any number of processes may run the relay (`iib serve`,
//! `iib worker`, `iib relay`), but on PostgreSQL only one of them publishes: the one holding
//! the session-level advisory lock [`RELAY_LOCK`] on a connection of its own. The others try
//! to take it every second; when the holder dies (even by SIGKILL) PostgreSQL ends its
//! session and the lock passes on. The holder checks its lock's connection before each page,
//! and stops publishing as soon as that connection is gone. A new holder first reads the tail
//! of every partition of the relay's topics and skips the messages found there that its
//! predecessor delivered without moving the checkpoint (by their `correlation_id`, which names
//! the event's position), so a takeover sends each message once, in order per key. On SQLite
//! (one process) there is no lock; a restart after a crash skips delivered messages the same
//! way.

use super::messages::{messages_for, Message, Topics};
use crate::shutdown::Shutdown;
use crate::store::{DeadLetter, Store, StoreError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
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
/// The PostgreSQL advisory lock (session-level) whose holder is the one relay publishing.
pub const RELAY_LOCK: i64 = 7_262_012;
/// Messages read back from the end of each partition when taking over: more than one page can
/// produce (at most three messages an event: build.state, batch.state and the events topic),
/// and only the last page can have been delivered without the checkpoint moving.
const TAIL: i64 = PAGE * 4;

/// The relay role, held: on PostgreSQL the connection holding [`RELAY_LOCK`].
pub struct Role {
    connection: Option<sqlx::PgConnection>,
}

impl Role {
    /// Whether the role is still ours: the lock's connection answers (a lost connection has
    /// lost the lock with it).
    async fn check(&mut self) -> Result<(), RelayError> {
        if let Some(connection) = &mut self.connection {
            sqlx::query("SELECT 1")
                .execute(&mut *connection)
                .await
                .map_err(|e| RelayError::Lost(e.to_string()))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Config(String),
    #[error("the relay's lock connection was lost: {0}")]
    Lost(String),
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
    /// `correlation_id`s of messages after the checkpoint that a previous relay delivered
    /// without moving the checkpoint (read from the topics' tails when taking the role).
    delivered: std::sync::Mutex<std::collections::HashSet<String>>,
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
            delivered: Default::default(),
        })
    }

    /// Takes the relay role if nobody holds it (`None`: another process does). SQLite has no
    /// lock: the role is always this process's.
    pub async fn try_take_role(&self) -> Result<Option<Role>, RelayError> {
        let Some(mut connection) = self.store.dedicated_connection().await? else {
            return Ok(Some(Role { connection: None }));
        };
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut connection)
            .await
            .map_err(StoreError::from)?;
        Ok(taken.then_some(Role {
            connection: Some(connection),
        }))
    }

    /// Reads the tail of every partition of the relay's topics and remembers the messages a
    /// previous relay delivered after the checkpoint, so that they are not sent again.
    pub async fn learn_delivered(&self) -> Result<usize, RelayError> {
        let after = self.store.checkpoint(CHECKPOINT).await?;
        let names: Vec<String> = self
            .settings
            .topics
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut config = self
            .settings
            .client_config(&[("enable.auto.commit", "false")]);
        // Assigned partitions only: the group is never joined, nothing is committed.
        config.set("group.id", "iib-relay-takeover");
        let delivered =
            tokio::task::spawn_blocking(move || tail_correlations(config, &names, after))
                .await
                .map_err(|e| RelayError::Kafka(e.to_string()))??;
        let found = delivered.len();
        if found > 0 {
            tracing::info!(
                messages = found,
                checkpoint = after,
                "taking over the Kafka relay: messages delivered after the checkpoint are not sent again"
            );
        }
        *self.delivered() = delivered;
        Ok(found)
    }

    fn delivered(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.delivered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the topics that are missing.
    pub async fn ensure_topics(&self) -> Result<(), RelayError> {
        let admin: AdminClient<DefaultClientContext> = self
            .settings
            .client_config(&[])
            .create()
            .map_err(|e| RelayError::Kafka(e.to_string()))?;
        let names = self.settings.topics.names();
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
        // librdkafka waits for an admin request in flight when its client is dropped, so a
        // short request timeout is what lets a shutdown during start-up end promptly.
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .operation_timeout(Some(Duration::from_secs(10)));
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
        self.catch_up_holding(&mut Role { connection: None }).await
    }

    /// [`Relay::catch_up`] while holding `role`, checked before each page.
    async fn catch_up_holding(&self, role: &mut Role) -> Result<u64, RelayError> {
        let mut relayed = 0;
        loop {
            role.check().await?;
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
            {
                let delivered = self.delivered();
                if !delivered.is_empty() {
                    messages.retain(|(_, m)| {
                        m.correlation_id().is_none_or(|id| !delivered.contains(id))
                    });
                }
            }
            // The checkpoint moves only once the broker has the whole page (or refused some of
            // it for good, recorded as dead letters).
            self.send_all(&messages).await?;
            self.store.advance_checkpoint(CHECKPOINT, last).await?;
            self.delivered()
                .retain(|id| correlation_position(id).is_some_and(|p| p > last));
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

    /// Relays until shutdown, while holding the relay role (waiting for it meanwhile): after
    /// each commit (here, or elsewhere through LISTEN/NOTIFY), and every second.
    pub async fn run(self, committed: Arc<Notify>, shutdown: Shutdown) {
        // Creating the topics waits for the brokers (up to a minute when they are down): a
        // shutdown meanwhile ends the relay at once.
        tokio::select! {
            created = self.ensure_topics() => {
                if let Err(e) = created {
                    tracing::warn!(error = %e, "could not create the Kafka topics; relaying anyway");
                }
            }
            _ = shutdown.wait() => return,
        }
        let mut failures = 0u32;
        let mut role: Option<Role> = None;
        let mut waiting_logged = false;
        while !shutdown.is_triggered() {
            if role.is_none() {
                match self.try_take_role().await {
                    Ok(Some(taken)) => match self.learn_delivered().await {
                        Ok(_) => {
                            tracing::info!("this process relays events to Kafka");
                            role = Some(taken);
                            waiting_logged = false;
                        }
                        // Without knowing what was delivered, publishing could repeat it: give
                        // the role back and try again.
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(error = %e, failures, "cannot read the Kafka topics' tails; the Kafka relay waits for the broker");
                        }
                    },
                    Ok(None) => {
                        if !waiting_logged {
                            tracing::info!(
                                "another process relays events to Kafka; taking over if it stops"
                            );
                            waiting_logged = true;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "cannot take the Kafka relay's lock; retrying");
                    }
                }
            }
            if let Some(held) = &mut role {
                match self.catch_up_holding(held).await {
                    Ok(_) => failures = 0,
                    Err(RelayError::Lost(e)) => {
                        tracing::warn!(error = %e, "the Kafka relay lost its lock; it stops publishing and tries to take the lock again");
                        role = None;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "the Kafka relay is waiting for the broker; events stay in the store");
                    }
                }
            }
            let pause = Duration::from_secs(u64::from(failures.min(5)).max(1));
            // Only the holder hears commits; the others try the lock every second.
            let holding = role.is_some();
            tokio::select! {
                _ = committed.notified(), if holding => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => {}
            }
        }
    }
}

/// The position a `correlation_id` (`iib-<position>-<topic>`) names.
fn correlation_position(id: &str) -> Option<i64> {
    id.strip_prefix("iib-")?.split('-').next()?.parse().ok()
}

/// The `correlation_id`s of the messages at the end of each partition of `topics` (from the
/// last [`TAIL`] of each, by the watermarks, to the end) whose position is after `after`. The
/// end is where the broker says the partition ends (partition EOF), not the high watermark
/// alone: tansu reports a watermark short of the last record of a batch. One topic at a time,
/// since librdkafka's EOF names only the partition.
fn tail_correlations(
    mut config: ClientConfig,
    topics: &[String],
    after: i64,
) -> Result<std::collections::HashSet<String>, RelayError> {
    let kafka = |e: KafkaError| RelayError::Kafka(e.to_string());
    let timeout = Duration::from_secs(10);
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().map_err(kafka)?;
    let metadata = consumer.fetch_metadata(None, timeout).map_err(kafka)?;
    let mut found = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for topic in metadata.topics() {
        if !topics.iter().any(|t| t == topic.name()) {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        let mut open = std::collections::BTreeSet::new();
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), timeout)
                .map_err(kafka)?;
            assignment
                .add_partition_offset(
                    topic.name(),
                    partition.id(),
                    Offset::Offset(low.max(high - TAIL)),
                )
                .map_err(kafka)?;
            open.insert(partition.id());
        }
        consumer.assign(&assignment).map_err(kafka)?;
        while !open.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(RelayError::Kafka(
                    "reading the topics' tails took over a minute".into(),
                ));
            }
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    open.remove(&partition);
                    continue;
                }
                Some(Err(e)) => return Err(kafka(e)),
                Some(Ok(message)) => message,
            };
            let id = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "correlation_id")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string)
            });
            if let Some(id) = id {
                if correlation_position(&id).is_some_and(|p| p > after) {
                    found.insert(id);
                }
            }
        }
    }
    Ok(found)
}
