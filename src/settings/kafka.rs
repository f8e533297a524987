//! Kafka: the relay's brokers (`IIB_KAFKA_BROKERS`; unset, the relay is off), topics, how the
//! topics it creates are laid out, and extra librdkafka properties.

use super::read::Reader;
use super::source::SettingsError;
use crate::streaming::messages::Topics;
use crate::streaming::relay::RelaySettings;

/// Kafka's own cap on partitions per topic is far below this; it keeps `i32` arithmetic safe.
const MAX_PARTITIONS: i64 = 100_000;

/// `None` when no brokers are configured.
pub(super) fn read(r: &Reader) -> Result<Option<RelaySettings>, SettingsError> {
    // Every Kafka setting is checked even with the relay off, so a typo does not wait for the
    // day the brokers are set.
    let properties = r
        .object("IIB_KAFKA_PROPERTIES")?
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(SettingsError::Invalid {
                key: "IIB_KAFKA_PROPERTIES".into(),
                problem: format!("the value of {k} must be a string, number or boolean"),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let topic = |key: &str| -> Result<String, SettingsError> {
        let name = r.text(key)?;
        if name.is_empty() {
            return Err(SettingsError::Malformed {
                key: key.to_string(),
                expected: "a topic name",
                value: name,
            });
        }
        Ok(name)
    };
    let topics = Topics {
        build_state: topic("IIB_KAFKA_BUILD_STATE_TOPIC")?,
        batch_state: topic("IIB_KAFKA_BATCH_STATE_TOPIC")?,
        events: r.optional_text("IIB_KAFKA_EVENTS_TOPIC"),
    };
    let partitions = r.between::<i32>("IIB_KAFKA_PARTITIONS", 1, MAX_PARTITIONS, "")?;
    let replication_factor = r.between::<i32>("IIB_KAFKA_REPLICATION_FACTOR", 1, 100, "")?;
    let Some(brokers) = r.optional_text("IIB_KAFKA_BROKERS") else {
        return Ok(None);
    };
    Ok(Some(RelaySettings {
        brokers,
        topics,
        partitions,
        replication_factor,
        properties,
    }))
}
