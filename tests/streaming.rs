//! What the relay sends for each committed event: IIB's build.state and batch.state messages,
//! built from the event stream (the broker itself is exercised in tests/kafka.rs).

mod support;

use chrono::Duration;
use iib::command_bus::{CommandBus, CommandContext};
use iib::streaming::messages::{messages_for, Message, Topics};
use iib_aggregates::{Actor, BuildRequestCommand};
use serde_json::Value;

fn topics() -> Topics {
    Topics {
        build_state: "iib.build.state".into(),
        batch_state: "iib.batch.state".into(),
        events: None,
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lifecycle_gives_iibs_messages_in_order() {
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    let submitted = support::submit_rm(&bus, Some("bob@EXAMPLE.COM"), "kube-green").await;
    let id = submitted.requests[0];
    for command in [
        BuildRequestCommand::RecordProgress {
            actor: Actor::System,
            state_reason: "Removing the operators".into(),
        },
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "The operator(s) were removed".into(),
        },
    ] {
        bus.execute(id, command, &CommandContext::default())
            .await
            .unwrap();
    }
    let mut messages = Vec::new();
    for event in db.store.read_after(0, 100).await.unwrap() {
        messages.extend(messages_for(&db.store, &event, &topics()).await.unwrap());
    }
    let summary: Vec<(String, String, String)> = messages
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            (
                m.topic.clone(),
                m.key.clone(),
                body["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("iib.batch.state", "1", "in_progress"),
        ("iib.build.state", "1", "in_progress"),
        ("iib.build.state", "1", "in_progress"),
        ("iib.build.state", "1", "complete"),
        ("iib.batch.state", "1", "complete"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(summary, expected);
    let progress: Value = serde_json::from_str(&messages[2].body).unwrap();
    assert_eq!(
        progress["state_reason"], "Removing the operators",
        "the body is the request as of that event"
    );
    assert!(
        progress.get("state_history").is_none(),
        "non-verbose, as IIB's build.state"
    );
    assert_eq!(progress["removed_operators"][0], "kube-green");
    let build = &messages[3];
    assert_eq!(header(build, "batch"), Some("1"));
    assert_eq!(header(build, "id"), Some("1"));
    assert_eq!(header(build, "state"), Some("complete"));
    assert_eq!(header(build, "user"), Some("bob@EXAMPLE.COM"));
    assert_eq!(header(build, "content-type"), Some("application/json"));
    let ids: std::collections::BTreeSet<_> = messages
        .iter()
        .map(|m| header(m, "correlation_id").unwrap())
        .collect();
    assert_eq!(ids.len(), messages.len(), "every message has its own id");
    let batch: Value = serde_json::from_str(&messages[4].body).unwrap();
    assert_eq!(batch["requests"][0]["request_type"], "rm");
    assert_eq!(batch["user"], "bob@EXAMPLE.COM");
    // Building the messages again gives the same ids: a resend is recognisable.
    let again = messages_for(
        &db.store,
        &db.store.read_after(0, 1).await.unwrap()[0],
        &topics(),
    )
    .await
    .unwrap();
    assert_eq!(
        header(&again[0], "correlation_id"),
        header(&messages[0], "correlation_id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_goes_to_the_events_topic_when_one_is_set() {
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    support::submit_rm(&bus, None, "op").await;
    let topics = Topics {
        events: Some("iib.events".into()),
        ..topics()
    };
    let mut events = Vec::new();
    for event in db.store.read_after(0, 100).await.unwrap() {
        events.extend(
            messages_for(&db.store, &event, &topics)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.topic == "iib.events"),
        );
    }
    let names: Vec<&str> = events.iter().map(|m| header(m, "event").unwrap()).collect();
    assert_eq!(names, ["BatchCreated", "RequestSubmitted"]);
    assert_eq!(events[1].key, "BuildRequest-1");
    let body: Value = serde_json::from_str(&events[1].body).unwrap();
    assert_eq!(body["event"], "RequestSubmitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_traceparent_their_event_was_recorded_with() {
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    support::submit_rm(&bus, None, "op").await;
    let topics = Topics {
        events: Some("iib.events".into()),
        ..topics()
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut with = Vec::new();
    let mut without = Vec::new();
    for event in db.store.read_after(0, 100).await.unwrap() {
        // Recorded with tracing off: no traceparent in the metadata, none in the headers.
        without.extend(messages_for(&db.store, &event, &topics).await.unwrap());
        let mut traced = event.clone();
        traced.metadata["traceparent"] = traceparent.into();
        with.extend(messages_for(&db.store, &traced, &topics).await.unwrap());
    }
    assert_eq!(with.len(), 4, "{with:?}");
    assert_eq!(without.len(), with.len());
    for message in &with {
        assert_eq!(
            header(message, "traceparent"),
            Some(traceparent),
            "{message:?}"
        );
    }
    for message in &without {
        assert_eq!(header(message, "traceparent"), None, "{message:?}");
    }
}
