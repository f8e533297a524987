//! Given/when/then tests of every build request rule, with cqrs-es' test framework.

use super::*;
use crate::params::RequestParams;
use crate::params::{AddParams, CreateEmptyIndexParams, RegenerateBundleParams};
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type Fixture = TestFramework<BuildRequest>;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn add_params() -> RequestParams {
    RequestParams::Add(AddParams {
        bundles: vec!["registry.example.com/kube-green-bundle:0.7.1".into()],
        from_index: Some("registry.example.com/index:v4.18".into()),
        overwrite_from_index: true,
        ..Default::default()
    })
}

fn submitted() -> BuildRequestEvent {
    BuildRequestEvent::RequestSubmitted {
        request_id: RequestId::new(7).unwrap(),
        batch_id: BatchId::new(3).unwrap(),
        user: Some("alice@EXAMPLE.COM".into()),
        params: add_params(),
        secrets_given: vec![SecretKind::OverwriteFromIndexToken],
        queue: Some("iib_serial".into()),
        state_reason: INITIAL_STATE_REASON.into(),
    }
}

fn claimed_by(name: &str, until: i64, attempt: u32) -> BuildRequestEvent {
    BuildRequestEvent::RequestClaimed {
        worker: worker(name),
        lease_until: t(until),
        attempt,
        taken_over_from: None,
    }
}

fn completed() -> BuildRequestEvent {
    BuildRequestEvent::RequestCompleted {
        state_reason: "The operator bundle(s) were successfully added to the index image".into(),
    }
}

#[test]
fn submit_records_the_request_with_iibs_initial_reason_and_only_secret_kinds() {
    Fixture::with(())
        .given_no_previous_events()
        .when(BuildRequestCommand::Submit {
            request_id: RequestId::new(7).unwrap(),
            batch_id: BatchId::new(3).unwrap(),
            user: Some("alice@EXAMPLE.COM".into()),
            params: add_params(),
            secrets_given: vec![
                SecretKind::OverwriteFromIndexToken,
                SecretKind::OverwriteFromIndexToken,
            ],
            queue: Some("iib_serial".into()),
        })
        .then_expect_events(vec![submitted()]);
}

#[test]
fn a_request_is_submitted_once() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Submit {
            request_id: RequestId::new(7).unwrap(),
            batch_id: BatchId::new(3).unwrap(),
            user: None,
            params: add_params(),
            secrets_given: vec![],
            queue: None,
        })
        .then_expect_error(BuildRequestError::AlreadySubmitted(
            RequestId::new(7).unwrap(),
        ));
}

#[test]
fn a_secret_the_type_does_not_take_is_rejected() {
    Fixture::with(())
        .given_no_previous_events()
        .when(BuildRequestCommand::Submit {
            request_id: RequestId::new(1).unwrap(),
            batch_id: BatchId::new(1).unwrap(),
            user: None,
            params: RequestParams::CreateEmptyIndex(CreateEmptyIndexParams {
                from_index: "r/i:1".into(),
                ..Default::default()
            }),
            secrets_given: vec![SecretKind::OverwriteFromIndexToken],
            queue: None,
        })
        .then_expect_error_message(
            "a create-empty-index request does not accept \"overwrite_from_index_token\"",
        );
}

#[test]
fn commands_on_a_request_that_does_not_exist_are_rejected() {
    Fixture::with(())
        .given_no_previous_events()
        .when(BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "done".into(),
        })
        .then_expect_error(BuildRequestError::NotSubmitted);
}

#[test]
fn a_worker_claims_an_unclaimed_request() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Claim {
            worker: worker("w1"),
            now: t(0),
            lease_until: t(60),
        })
        .then_expect_events(vec![claimed_by("w1", 60, 1)]);
}

#[test]
fn a_live_claim_blocks_a_second_worker() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::Claim {
            worker: worker("w2"),
            now: t(59),
            lease_until: t(120),
        })
        .then_expect_error(BuildRequestError::ClaimedByOther {
            worker: worker("w1"),
            lease_until: t(60),
        });
}

#[test]
fn an_expired_claim_is_taken_over_and_counts_an_attempt() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::Claim {
            worker: worker("w2"),
            now: t(61),
            lease_until: t(120),
        })
        .then_expect_events(vec![BuildRequestEvent::RequestClaimed {
            worker: worker("w2"),
            lease_until: t(120),
            attempt: 2,
            taken_over_from: Some(worker("w1")),
        }]);
}

#[test]
fn claiming_again_by_the_holder_renews_the_lease() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::Claim {
            worker: worker("w1"),
            now: t(30),
            lease_until: t(90),
        })
        .then_expect_events(vec![BuildRequestEvent::ClaimRenewed {
            worker: worker("w1"),
            lease_until: t(90),
        }]);
}

#[test]
fn a_lease_must_end_in_the_future() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Claim {
            worker: worker("w1"),
            now: t(10),
            lease_until: t(10),
        })
        .then_expect_error(BuildRequestError::LeaseInThePast);
}

#[test]
fn only_the_holder_renews_or_releases() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::RenewClaim {
            worker: worker("w2"),
            now: t(1),
            lease_until: t(90),
        })
        .then_expect_error(BuildRequestError::NotClaimHolder(worker("w2")));
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::ReleaseClaim {
            worker: worker("w2"),
            reason: "shutdown".into(),
        })
        .then_expect_error(BuildRequestError::NotClaimHolder(worker("w2")));
}

#[test]
fn a_released_request_can_be_claimed_at_once_by_another_worker() {
    Fixture::with(())
        .given(vec![
            submitted(),
            claimed_by("w1", 600, 1),
            BuildRequestEvent::ClaimReleased {
                worker: worker("w1"),
                reason: "worker shutting down".into(),
            },
        ])
        .when(BuildRequestCommand::Claim {
            worker: worker("w2"),
            now: t(5),
            lease_until: t(65),
        })
        .then_expect_events(vec![BuildRequestEvent::RequestClaimed {
            worker: worker("w2"),
            lease_until: t(65),
            attempt: 2,
            taken_over_from: None,
        }]);
}

#[test]
fn a_worker_without_the_claim_cannot_report_progress() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::RecordProgress {
            actor: Actor::Worker(worker("w1")),
            state_reason: "Resolving the bundles".into(),
        })
        .then_expect_error(BuildRequestError::NotClaimHolder(worker("w1")));
}

#[test]
fn the_claim_holder_and_api_workers_report_progress() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::RecordProgress {
            actor: Actor::Worker(worker("w1")),
            state_reason: "Resolving the bundles".into(),
        })
        .then_expect_events(vec![BuildRequestEvent::ProgressRecorded {
            state_reason: "Resolving the bundles".into(),
        }]);
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::RecordProgress {
            actor: Actor::Api {
                user: Some("iib-worker".into()),
            },
            state_reason: "Resolving the bundles".into(),
        })
        .then_expect_events(vec![BuildRequestEvent::ProgressRecorded {
            state_reason: "Resolving the bundles".into(),
        }]);
}

#[test]
fn repeating_the_current_reason_records_nothing() {
    Fixture::with(())
        .given(vec![
            submitted(),
            BuildRequestEvent::ProgressRecorded {
                state_reason: "Resolving the bundles".into(),
            },
        ])
        .when(BuildRequestCommand::RecordProgress {
            actor: Actor::System,
            state_reason: "Resolving the bundles".into(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn an_empty_reason_is_rejected() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Fail {
            actor: Actor::System,
            state_reason: "  ".into(),
        })
        .then_expect_error(BuildRequestError::EmptyStateReason);
}

#[test]
fn facts_are_recorded_when_the_type_allows_them() {
    let facts = BuildFacts {
        arches: ["amd64".to_string(), "s390x".to_string()].into(),
        index_image: Some("registry.example.com/iib-build:7".into()),
        ..Default::default()
    };
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::RecordFacts {
            actor: Actor::Worker(worker("w1")),
            facts: facts.clone(),
        })
        .then_expect_events(vec![BuildRequestEvent::FactsRecorded { facts }]);
}

#[test]
fn facts_of_another_type_are_rejected_with_iibs_message() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::RecordFacts {
            actor: Actor::System,
            facts: BuildFacts {
                bundle_image: Some("r/b:1".into()),
                parent_bundle_image_resolved: Some("r/p@sha256:1".into()),
                ..Default::default()
            },
        })
        .then_expect_error_message(
            "The following keys are not allowed: bundle_image, parent_bundle_image_resolved",
        );
}

#[test]
fn empty_or_already_known_facts_record_nothing() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::RecordFacts {
            actor: Actor::System,
            facts: BuildFacts::default(),
        })
        .then_expect_error(BuildRequestError::NoFacts);
    let facts = BuildFacts {
        index_image: Some("r/i:7".into()),
        ..Default::default()
    };
    Fixture::with(())
        .given(vec![
            submitted(),
            BuildRequestEvent::FactsRecorded {
                facts: facts.clone(),
            },
        ])
        .when(BuildRequestCommand::RecordFacts {
            actor: Actor::System,
            facts,
        })
        .then_expect_events(vec![]);
}

#[test]
fn the_claim_holder_completes_and_fails() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::Complete {
            actor: Actor::Worker(worker("w1")),
            state_reason: "The operator bundle(s) were successfully added to the index image"
                .into(),
        })
        .then_expect_events(vec![completed()]);
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 1)])
        .when(BuildRequestCommand::Fail {
            actor: Actor::Worker(worker("w2")),
            state_reason: "boom".into(),
        })
        .then_expect_error(BuildRequestError::NotClaimHolder(worker("w2")));
}

#[test]
fn the_system_fails_an_abandoned_request_whoever_held_it() {
    Fixture::with(())
        .given(vec![submitted(), claimed_by("w1", 60, 3)])
        .when(BuildRequestCommand::Fail {
            actor: Actor::System,
            state_reason: "The request was abandoned after 3 attempts".into(),
        })
        .then_expect_events(vec![BuildRequestEvent::RequestFailed {
            state_reason: "The request was abandoned after 3 attempts".into(),
        }]);
}

#[test]
fn final_states_are_final() {
    for command in [
        BuildRequestCommand::Fail {
            actor: Actor::System,
            state_reason: "late".into(),
        },
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "again".into(),
        },
        BuildRequestCommand::RecordProgress {
            actor: Actor::System,
            state_reason: "more".into(),
        },
        BuildRequestCommand::RecordFacts {
            actor: Actor::System,
            facts: BuildFacts {
                index_image: Some("r/i:1".into()),
                ..Default::default()
            },
        },
        BuildRequestCommand::Claim {
            worker: worker("w1"),
            now: t(0),
            lease_until: t(60),
        },
    ] {
        Fixture::with(())
            .given(vec![submitted(), completed()])
            .when(command)
            .then_expect_error_message("A complete request cannot change states");
    }
    Fixture::with(())
        .given(vec![
            submitted(),
            BuildRequestEvent::RequestFailed {
                state_reason: "boom".into(),
            },
        ])
        .when(BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "fixed".into(),
        })
        .then_expect_error_message("A failed request cannot change states");
}

#[test]
fn regenerate_bundle_records_its_own_facts() {
    let submitted = BuildRequestEvent::RequestSubmitted {
        request_id: RequestId::new(2).unwrap(),
        batch_id: BatchId::new(2).unwrap(),
        user: None,
        params: RequestParams::RegenerateBundle(RegenerateBundleParams {
            from_bundle_image: "r/b:1".into(),
            ..Default::default()
        }),
        secrets_given: vec![],
        queue: None,
        state_reason: INITIAL_STATE_REASON.into(),
    };
    let facts = BuildFacts {
        bundle_image: Some("r/iib-build:2".into()),
        from_bundle_image_resolved: Some("r/b@sha256:aa".into()),
        ..Default::default()
    };
    Fixture::with(())
        .given(vec![submitted])
        .when(BuildRequestCommand::RecordFacts {
            actor: Actor::System,
            facts: facts.clone(),
        })
        .then_expect_events(vec![BuildRequestEvent::FactsRecorded { facts }]);
}

#[test]
fn an_update_records_facts_and_state_together() {
    let facts = BuildFacts {
        index_image: Some("r/iib-build:7".into()),
        ..Default::default()
    };
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Update {
            actor: Actor::Api {
                user: Some("worker@DOMAIN.LOCAL".into()),
            },
            facts: Some(facts.clone()),
            state: Some((RequestState::Complete, "All done!".into())),
        })
        .then_expect_events(vec![
            BuildRequestEvent::FactsRecorded { facts },
            BuildRequestEvent::RequestCompleted {
                state_reason: "All done!".into(),
            },
        ]);
}

#[test]
fn an_update_with_one_bad_part_records_nothing() {
    Fixture::with(())
        .given(vec![submitted()])
        .when(BuildRequestCommand::Update {
            actor: Actor::System,
            facts: Some(BuildFacts {
                index_image: Some("r/i:1".into()),
                ..Default::default()
            }),
            state: Some((RequestState::Failed, " ".into())),
        })
        .then_expect_error(BuildRequestError::EmptyStateReason);
    Fixture::with(())
        .given(vec![submitted(), completed()])
        .when(BuildRequestCommand::Update {
            actor: Actor::System,
            facts: None,
            state: Some((RequestState::Complete, "again".into())),
        })
        .then_expect_error_message("A complete request cannot change states");
}

#[test]
fn hand_backs_are_not_counted_as_abandoned_claims() {
    use cqrs_es::Aggregate;
    let mut request = BuildRequest::default();
    let now = chrono::Utc::now();
    let claim = |worker: &str, attempt: u32| BuildRequestEvent::RequestClaimed {
        worker: WorkerId::new(worker),
        lease_until: now + chrono::Duration::seconds(60),
        attempt,
        taken_over_from: None,
    };
    request.apply(claim("a", 1));
    request.apply(BuildRequestEvent::ClaimReleased {
        worker: WorkerId::new("a"),
        reason: "shutdown".into(),
    });
    request.apply(claim("b", 2));
    // b holds it; a handed it back: nothing was abandoned.
    assert_eq!(request.abandoned(), 0);
    // b dies; c takes over.
    request.apply(claim("c", 3));
    assert_eq!(request.abandoned(), 1);
}

#[test]
fn the_request_remembers_which_secrets_it_was_sent_with() {
    let mut request = BuildRequest::default();
    request.apply(submitted());
    assert_eq!(
        request.secrets_given(),
        [SecretKind::OverwriteFromIndexToken]
    );
}
