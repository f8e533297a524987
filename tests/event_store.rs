//! The event-sourced core end to end, on SQLite and on PostgreSQL: submission, progress,
//! completion, concurrent writers, secrets, projection rebuild, replay.

mod support;

use chrono::{Duration, Utc};
use iib::command_bus::{CommandBus, CommandContext, CommandError, RequestSubmission, Submission};
use iib::projector::Projector;
use iib::store::{NewEvent, StoreError};
use iib_aggregates::params::*;
use iib_aggregates::*;
use serde_json::{json, Value};
use support::TestDb;

fn bus(db: &TestDb) -> CommandBus {
    CommandBus::new(db.store.clone(), Duration::hours(1))
}

fn add(n: usize) -> RequestSubmission {
    RequestSubmission {
        params: RequestParams::Add(AddParams {
            bundles: vec![format!("registry.example.com/kube-green-bundle:0.{n}.0")],
            from_index: Some("registry.example.com/index:v4.18".into()),
            overwrite_from_index: true,
            build_tags: vec!["v4.18-nightly".into()],
            ..Default::default()
        }),
        secrets: vec![(
            SecretKind::OverwriteFromIndexToken,
            "bob:s3cr3t-t0ken".into(),
        )],
        queue: Some("iib_serial_bob".into()),
    }
}

fn single(request: RequestSubmission) -> Submission {
    Submission {
        user: Some("bob@EXAMPLE.COM".into()),
        annotations: None,
        requests: vec![request],
    }
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name)
}

async fn claim(bus: &CommandBus, id: RequestId, w: &str) -> Result<i64, CommandError> {
    let now = Utc::now();
    bus.execute(
        id,
        BuildRequestCommand::Claim {
            worker: worker(w),
            now,
            lease_until: now + Duration::minutes(5),
        },
        &CommandContext::worker(worker(w)),
    )
    .await
}

async fn get(db: &TestDb, id: RequestId) -> Value {
    let text = db
        .store
        .request_json(id.get(), true)
        .await
        .unwrap()
        .expect("request row");
    serde_json::from_str(&text).unwrap()
}

async fn submit_progress_complete(db: TestDb) {
    let bus = bus(&db);
    let projector = Projector::new(db.store.clone());
    let submitted = bus
        .submit(
            single(add(1)),
            &CommandContext::user(Some("bob@EXAMPLE.COM".into())),
        )
        .await
        .unwrap();
    let id = submitted.requests[0];
    assert_eq!(id.get(), 1);
    assert_eq!(submitted.batch.get(), 1);
    projector.catch_up().await.unwrap();

    let view = get(&db, id).await;
    assert_eq!(view["state"], "in_progress");
    assert_eq!(view["state_reason"], "The request was initiated");
    assert_eq!(view["user"], "bob@EXAMPLE.COM");
    assert_eq!(view["batch"], 1);
    assert_eq!(view["request_type"], "add");
    assert!(
        view.get("queue").is_none(),
        "the queue is not part of IIB's JSON"
    );
    // The token is with the worker, not in the read model.
    assert!(!view.to_string().contains("s3cr3t"));
    let secrets = db.store.secrets(id.get(), Utc::now()).await.unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].value, "bob:s3cr3t-t0ken");
    assert!(
        !format!("{secrets:?}").contains("s3cr3t"),
        "Debug must not print secrets"
    );

    claim(&bus, id, "w1").await.unwrap();
    let as_worker = CommandContext::worker(worker("w1"));
    bus.execute(
        id,
        BuildRequestCommand::RecordProgress {
            actor: Actor::Worker(worker("w1")),
            state_reason: "Building the index image for the following arches: amd64, s390x".into(),
        },
        &as_worker,
    )
    .await
    .unwrap();
    bus.execute(
        id,
        BuildRequestCommand::RecordFacts {
            actor: Actor::Worker(worker("w1")),
            facts: BuildFacts {
                arches: ["s390x".to_string(), "amd64".to_string()].into(),
                index_image: Some("registry.example.com/iib-build:1".into()),
                ..Default::default()
            },
        },
        &as_worker,
    )
    .await
    .unwrap();
    bus.execute(
        id,
        BuildRequestCommand::Complete {
            actor: Actor::Worker(worker("w1")),
            state_reason: "The operator bundle(s) were successfully added to the index image"
                .into(),
        },
        &as_worker,
    )
    .await
    .unwrap();
    projector.catch_up().await.unwrap();

    let view = get(&db, id).await;
    assert_eq!(view["state"], "complete");
    assert_eq!(view["arches"], json!(["amd64", "s390x"]));
    assert_eq!(view["index_image"], "registry.example.com/iib-build:1");
    let history: Vec<&str> = view["state_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["complete", "in_progress", "in_progress"]);
    assert_eq!(view["updated"], view["state_history"][0]["updated"]);
    // The request's end settled its batch and deleted its secrets.
    let batch = db.store.batch_record(1).await.unwrap().unwrap();
    assert_eq!(batch.state, RequestState::Complete);
    assert!(db
        .store
        .secrets(id.get(), Utc::now())
        .await
        .unwrap()
        .is_empty());
    // Final is final.
    let err = bus
        .execute(
            id,
            BuildRequestCommand::Fail {
                actor: Actor::System,
                state_reason: "too late".into(),
            },
            &CommandContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "A complete request cannot change states");
}
on_both_backends!(submit_progress_complete);

async fn a_failed_request_fails_its_batch_only_when_all_are_done(db: TestDb) {
    let bus = bus(&db);
    let submitted = bus
        .submit(
            Submission {
                user: None,
                annotations: Some(
                    json!({"errata": "RHBA-2026:1"})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                requests: vec![add(1), add(2), add(3)],
            },
            &CommandContext::default(),
        )
        .await
        .unwrap();
    let ids = submitted.requests.clone();
    assert_eq!(ids.iter().map(|i| i.get()).collect::<Vec<_>>(), [1, 2, 3]);
    let end = |state_reason: &str, fail: bool| {
        if fail {
            BuildRequestCommand::Fail {
                actor: Actor::System,
                state_reason: state_reason.into(),
            }
        } else {
            BuildRequestCommand::Complete {
                actor: Actor::System,
                state_reason: state_reason.into(),
            }
        }
    };
    // Two requests of one batch end at the same time: both land, the batch sees both.
    let nobody = CommandContext::default();
    let (a, b) = tokio::join!(
        bus.execute(ids[0], end("done", false), &nobody),
        bus.execute(ids[1], end("boom", true), &nobody),
    );
    a.unwrap();
    b.unwrap();
    Projector::new(db.store.clone()).catch_up().await.unwrap();
    let batch = db
        .store
        .batch_record(submitted.batch.get())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.state, RequestState::InProgress);
    assert_eq!(
        get(&db, ids[0]).await["batch_annotations"],
        json!({"errata": "RHBA-2026:1"})
    );
    bus.execute(ids[2], end("done", false), &CommandContext::default())
        .await
        .unwrap();
    Projector::new(db.store.clone()).catch_up().await.unwrap();
    let batch = db
        .store
        .batch_record(submitted.batch.get())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.state, RequestState::Failed);
    assert_eq!(batch.to_json()["requests"].as_array().unwrap().len(), 3);
}
on_both_backends!(a_failed_request_fails_its_batch_only_when_all_are_done);

async fn concurrent_writers_never_both_win(db: TestDb) {
    let bus = bus(&db);
    let id = bus
        .submit(single(add(1)), &CommandContext::default())
        .await
        .unwrap()
        .requests[0];
    // Two workers race for one request, many times over: exactly one holds it each time.
    for round in 0..10 {
        let id = if round == 0 {
            id
        } else {
            bus.submit(single(add(round)), &CommandContext::default())
                .await
                .unwrap()
                .requests[0]
        };
        let (a, b) = tokio::join!(claim(&bus, id, "w1"), claim(&bus, id, "w2"));
        let winners = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {a:?} / {b:?}");
        let loser = if a.is_ok() { b } else { a };
        match loser.unwrap_err() {
            CommandError::Request(BuildRequestError::ClaimedByOther { .. }) => {}
            e if e.is_conflict() => {}
            e => panic!("unexpected error {e}"),
        }
        let request = bus.request(id).await.unwrap();
        assert_eq!(request.attempts(), 1);
    }
    // At the store level: two appends of the same next version, one wins.
    let event = |worker: &str| NewEvent {
        aggregate_type: "BuildRequest".into(),
        aggregate_id: id.to_string(),
        sequence: 3,
        event_type: "ProgressRecorded".into(),
        event_version: EVENT_VERSION.into(),
        payload: json!({"ProgressRecorded": {"state_reason": worker}}),
        metadata: json!({}),
        recorded_at: Utc::now(),
    };
    let (e1, e2) = (vec![event("a")], vec![event("b")]);
    let (a, b) = tokio::join!(db.store.append(&e1, &[]), db.store.append(&e2, &[]));
    assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1);
    assert!(matches!(
        a.err().or(b.err()),
        Some(StoreError::Conflict { .. })
    ));
}
on_both_backends!(concurrent_writers_never_both_win);

async fn an_expired_claim_is_taken_over(db: TestDb) {
    let bus = bus(&db);
    let id = bus
        .submit(single(add(1)), &CommandContext::default())
        .await
        .unwrap()
        .requests[0];
    let now = Utc::now();
    bus.execute(
        id,
        BuildRequestCommand::Claim {
            worker: worker("dead"),
            now: now - Duration::minutes(10),
            lease_until: now - Duration::minutes(5),
        },
        &CommandContext::default(),
    )
    .await
    .unwrap();
    claim(&bus, id, "alive").await.unwrap();
    let request = bus.request(id).await.unwrap();
    assert_eq!(request.claim().unwrap().worker, worker("alive"));
    assert_eq!(request.attempts(), 2);
}
on_both_backends!(an_expired_claim_is_taken_over);

/// Many requests of every type, in every state.
async fn varied_history(bus: &CommandBus) {
    let types = vec![
        RequestParams::Rm(RmParams {
            operators: vec!["kube-green".into()],
            from_index: Some("r/index:1".into()),
            ..Default::default()
        }),
        RequestParams::RegenerateBundle(RegenerateBundleParams {
            from_bundle_image: "r/bundle:1".into(),
            bundle_replacements: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        }),
        RequestParams::MergeIndexImage(MergeIndexImageParams {
            source_from_index: "r/src:1".into(),
            target_index: Some("r/tgt:1".into()),
            ..Default::default()
        }),
        RequestParams::CreateEmptyIndex(CreateEmptyIndexParams {
            from_index: "r/index:1".into(),
            labels: Some([("x".to_string(), "y".to_string())].into()),
            ..Default::default()
        }),
        RequestParams::RecursiveRelatedBundles(RecursiveRelatedBundlesParams {
            parent_bundle_image: "r/parent:1".into(),
            organization: Some("acme".into()),
        }),
        RequestParams::FbcOperations(FbcOperationsParams {
            fbc_fragments: vec!["r/frag:1".into()],
            from_index: "r/index:1".into(),
            ..Default::default()
        }),
        RequestParams::AddDeprecations(AddDeprecationsParams {
            operator_package: "kube-green".into(),
            deprecation_schema: r#"{"schema":"olm.deprecations"}"#.into(),
            from_index: "r/index:1".into(),
            ..Default::default()
        }),
    ];
    for (i, params) in types.into_iter().cycle().take(35).enumerate() {
        let mut requests = vec![RequestSubmission {
            params,
            secrets: vec![],
            queue: None,
        }];
        if i % 5 == 0 {
            requests.push(add(i));
        }
        let submitted = bus
            .submit(
                Submission {
                    user: (i % 2 == 0).then(|| format!("user{i}")),
                    annotations: (i % 3 == 0).then(|| json!({"n": i}).as_object().unwrap().clone()),
                    requests,
                },
                &CommandContext::default(),
            )
            .await
            .unwrap();
        for (j, id) in submitted.requests.into_iter().enumerate() {
            claim(bus, id, "w").await.unwrap();
            let w = || Actor::Worker(worker("w"));
            let ctx = CommandContext::worker(worker("w"));
            bus.execute(
                id,
                BuildRequestCommand::RecordProgress {
                    actor: w(),
                    state_reason: format!("step {i}"),
                },
                &ctx,
            )
            .await
            .unwrap();
            match (i + j) % 3 {
                0 => bus
                    .execute(
                        id,
                        BuildRequestCommand::Complete {
                            actor: w(),
                            state_reason: "ok".into(),
                        },
                        &ctx,
                    )
                    .await
                    .unwrap(),
                1 => bus
                    .execute(
                        id,
                        BuildRequestCommand::Fail {
                            actor: w(),
                            state_reason: "no".into(),
                        },
                        &ctx,
                    )
                    .await
                    .unwrap(),
                _ => 0,
            };
        }
    }
}

async fn a_rebuild_equals_the_live_read_model_byte_for_byte(db: TestDb) {
    let bus = bus(&db);
    let projector = Projector::new(db.store.clone());
    varied_history(&bus).await;
    // Live: applied in small steps as events arrived, plus once more at the end.
    projector.catch_up().await.unwrap();
    let live = db.store.dump_read_model().await.unwrap();
    let live_batches = db.store.dump_batches().await.unwrap();
    assert_eq!(live.len(), 42);
    let report = projector.rebuild(|_, _| {}).await.unwrap();
    assert_eq!(report.requests, 42);
    assert_eq!(
        report.events as i64,
        db.store.head_position().await.unwrap()
    );
    assert_eq!(db.store.dump_read_model().await.unwrap(), live);
    assert_eq!(db.store.dump_batches().await.unwrap(), live_batches);
    assert_eq!(
        db.store.read_model_position().await.unwrap(),
        report.events as i64
    );
    // Applying again is harmless: nothing new, nothing changes.
    assert_eq!(projector.catch_up().await.unwrap(), 0);
    assert_eq!(db.store.dump_read_model().await.unwrap(), live);
}
on_both_backends!(a_rebuild_equals_the_live_read_model_byte_for_byte);

async fn live_projection_in_many_small_steps_equals_one_pass(db: TestDb) {
    let bus = bus(&db);
    let projector = Projector::new(db.store.clone());
    // Project after every few commits while the history is being written.
    let handle = {
        let projector = projector.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                projector.catch_up().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    varied_history(&bus).await;
    handle.await.unwrap();
    projector.catch_up().await.unwrap();
    let live = db.store.dump_read_model().await.unwrap();
    projector.rebuild(|_, _| {}).await.unwrap();
    assert_eq!(db.store.dump_read_model().await.unwrap(), live);
}
on_both_backends!(live_projection_in_many_small_steps_equals_one_pass);

async fn replay_shows_the_whole_history_without_secrets(db: TestDb) {
    let bus = bus(&db);
    let id = bus
        .submit(
            single(add(1)),
            &CommandContext::user(Some("bob@EXAMPLE.COM".into())),
        )
        .await
        .unwrap()
        .requests[0];
    claim(&bus, id, "w1").await.unwrap();
    bus.execute(
        id,
        BuildRequestCommand::Fail {
            actor: Actor::Worker(worker("w1")),
            state_reason: "Failed to push the index image".into(),
        },
        &CommandContext::worker(worker("w1")),
    )
    .await
    .unwrap();
    let events = iib::replay::request_history(&db.store, id.get())
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        names,
        [
            "BatchCreated",
            "RequestSubmitted",
            "RequestClaimed",
            "RequestFailed",
            "BatchRequestSettled",
            "BatchFinished"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(iib::replay::actor(&events[1]), "user bob@EXAMPLE.COM");
    assert_eq!(iib::replay::actor(&events[3]), "worker w1");
    let mut text = Vec::new();
    iib::replay::print_history(&mut text, &events).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("Failed to push the index image"));
    assert!(
        text.contains("overwrite_from_index_token"),
        "the kind of secret is recorded"
    );
    for event in &events {
        let line = iib::replay::to_json(event).to_string();
        assert!(!line.contains("s3cr3t"), "a secret leaked into {line}");
    }
}
on_both_backends!(replay_shows_the_whole_history_without_secrets);

async fn cqrs_es_runs_on_our_repository(db: TestDb) {
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::CqrsFramework;
    let bus = bus(&db);
    let id = bus
        .submit(single(add(1)), &CommandContext::default())
        .await
        .unwrap()
        .requests[0];
    let cqrs = CqrsFramework::new(
        PersistedEventStore::<_, BuildRequest>::new_event_store(db.store.clone()),
        vec![],
        (),
    );
    cqrs.execute(
        &id.to_string(),
        BuildRequestCommand::RecordProgress {
            actor: Actor::System,
            state_reason: "through CqrsFramework".into(),
        },
    )
    .await
    .unwrap();
    let err = cqrs
        .execute(
            "999",
            BuildRequestCommand::Complete {
                actor: Actor::System,
                state_reason: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    Projector::new(db.store.clone()).catch_up().await.unwrap();
    assert_eq!(get(&db, id).await["state_reason"], "through CqrsFramework");
}
on_both_backends!(cqrs_es_runs_on_our_repository);

/// One event that cannot be read back (stored by an older iib that let a 125-deep body
/// through) or whose row the database refuses (a NUL in a pull spec, on PostgreSQL) is set
/// aside: the events after it are still projected, the rebuild skips it too, and its history
/// stays readable.
async fn a_bad_event_is_set_aside_and_the_rest_goes_on(db: TestDb) {
    let bus = bus(&db);
    let projector = Projector::new(db.store.clone());
    let ctx = CommandContext::user(Some("bob@EXAMPLE.COM".into()));
    let first = bus.submit(single(add(1)), &ctx).await.unwrap();
    projector.catch_up().await.unwrap();
    let mut deep = json!(1);
    for _ in 0..125 {
        deep = json!([deep]);
    }
    let unreadable = db
        .store
        .append(
            &[NewEvent {
                aggregate_type: "Batch".into(),
                aggregate_id: "999".into(),
                sequence: 1,
                event_type: "BatchCreated".into(),
                event_version: iib_aggregates::EVENT_VERSION.into(),
                payload: json!({"BatchCreated": {"batch_id": 999, "user": null, "annotations": {"a": deep}, "members": []}}),
                metadata: json!({}),
                recorded_at: Utc::now(),
            }],
            &[],
        )
        .await
        .unwrap()[0];
    let mut nul = add(2);
    if let RequestParams::Add(params) = &mut nul.params {
        params.from_index = Some("registry.example.com/index:v4.18\u{0}".into());
    }
    let refused = bus.submit(single(nul), &ctx).await.unwrap();
    let after = bus.submit(single(add(3)), &ctx).await.unwrap();
    projector.catch_up().await.unwrap();
    assert_eq!(
        db.store.read_model_position().await.unwrap(),
        db.store.head_position().await.unwrap()
    );
    assert_eq!(get(&db, first.requests[0]).await["state"], "in_progress");
    assert_eq!(get(&db, after.requests[0]).await["state"], "in_progress");
    let set_aside = db.store.set_aside_events().await.unwrap();
    let positions: Vec<i64> = set_aside.iter().map(|s| s.position).collect();
    assert!(positions.contains(&unreadable), "{set_aside:?}");
    assert!(
        set_aside[0].error.contains("recursion limit"),
        "{set_aside:?}"
    );
    let nul_row = db
        .store
        .request_json(refused.requests[0].get(), true)
        .await
        .unwrap();
    if db.url.starts_with("postgres") {
        // PostgreSQL's text refuses the NUL: that request's submission is set aside.
        assert!(nul_row.is_none());
        assert!(set_aside
            .iter()
            .any(|s| s.aggregate_id == refused.requests[0].to_string()));
    } else {
        assert!(nul_row.is_some());
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
    }
    // A rebuild leaves out the same events and equals the live read model.
    let live = db.store.dump_read_model().await.unwrap();
    projector.rebuild(|_, _| {}).await.unwrap();
    assert_eq!(db.store.dump_read_model().await.unwrap(), live);
    // Reading every event in order still works: the unreadable payload is shown as text.
    let all = db.store.read_after(0, 1000).await.unwrap();
    let shown = all.iter().find(|e| e.position == unreadable).unwrap();
    assert!(shown.payload["unreadable_payload"]
        .as_str()
        .unwrap()
        .starts_with("{\"BatchCreated\""));
}
on_both_backends!(a_bad_event_is_set_aside_and_the_rest_goes_on);
