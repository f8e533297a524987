//! The command bus: loads an aggregate from the store, lets it decide a command, and appends
//! the events it emits (with metadata: who, when, which worker, correlation id, and the
//! `traceparent` of the span that issued the command when traces are exported).
//!
//! Two things go beyond `cqrs_es::CqrsFramework`, which commits one aggregate at a time:
//! a submission creates a batch and its requests (and stores their secrets) in one
//! transaction, and a request's final event is committed together with its batch's
//! settlement, so a batch can never miss the end of one of its requests.

use crate::store::{IdempotencyKey, NewEvent, Secret, Store, StoreError};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use iib_aggregates::batch::Annotations;
use iib_aggregates::metadata;
use iib_aggregates::{
    Batch, BatchCommand, BatchError, BatchId, BatchMember, BuildRequest, BuildRequestCommand,
    BuildRequestError, BuildRequestEvent, RequestId, RequestParams, RequestState, SecretKind,
    WorkerId,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::Notify;

/// How many times a command is decided again when its batch moved on meanwhile.
const BATCH_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Request(#[from] BuildRequestError),
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl CommandError {
    /// Two writers raced on one aggregate and this one lost.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(StoreError::Conflict { .. }))
    }
}

/// Who and what caused a command, written into each event's metadata.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    pub user: Option<String>,
    pub worker: Option<WorkerId>,
    pub correlation_id: Option<String>,
}

impl CommandContext {
    pub fn user(user: Option<String>) -> Self {
        Self {
            user,
            ..Default::default()
        }
    }

    pub fn worker(worker: WorkerId) -> Self {
        Self {
            worker: Some(worker),
            ..Default::default()
        }
    }

    fn metadata(&self, at: &DateTime<Utc>) -> Value {
        let mut map = Map::new();
        map.insert(
            metadata::RECORDED_AT.into(),
            crate::store::format_time(at).into(),
        );
        if let Some(user) = &self.user {
            map.insert(metadata::USER.into(), user.clone().into());
        }
        if let Some(worker) = &self.worker {
            map.insert(metadata::WORKER.into(), worker.as_str().into());
        }
        if let Some(id) = &self.correlation_id {
            map.insert(metadata::CORRELATION_ID.into(), id.clone().into());
        }
        // The span the command runs in (an HTTP call's, a worker's step): `None` unless traces
        // are exported.
        if let Some(traceparent) = crate::telemetry::current_traceparent() {
            map.insert(metadata::TRACEPARENT.into(), traceparent.into());
        }
        Value::Object(map)
    }
}

/// One request of a submission, with its secret values.
#[derive(Clone)]
pub struct RequestSubmission {
    pub params: RequestParams,
    pub secrets: Vec<(SecretKind, String)>,
    /// The queue the request goes to (`None`: the default queue).
    pub queue: Option<String>,
}

/// What the API hands over when a POST is valid: one request, or a batch of several.
#[derive(Clone)]
pub struct Submission {
    pub user: Option<String>,
    pub annotations: Option<Annotations>,
    pub requests: Vec<RequestSubmission>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub batch: BatchId,
    pub requests: Vec<RequestId>,
    /// The global position of the last event written.
    pub position: i64,
}

#[derive(Clone)]
pub struct CommandBus {
    store: Store,
    secret_lifetime: Duration,
    /// Woken after every commit, so the projector runs at once.
    committed: Arc<Notify>,
    /// Wake-ups from other processes (`committed` is woken by their commits too).
    wakeups: crate::wakeups::Wakeups,
}

/// An aggregate rebuilt from its events, and the version it was at.
struct Loaded<A> {
    aggregate: A,
    version: i64,
}

impl CommandBus {
    pub fn new(store: Store, secret_lifetime: Duration) -> Self {
        let committed = Arc::new(Notify::new());
        Self {
            wakeups: crate::wakeups::Wakeups::new(&store, committed.clone()),
            store,
            secret_lifetime,
            committed,
        }
    }

    /// This process's wake-up signals (`crate::wakeups`); its listener runs from `main`.
    pub fn wakeups(&self) -> &crate::wakeups::Wakeups {
        &self.wakeups
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Notified after each commit (and, through LISTEN/NOTIFY, each commit of another process).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    fn now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    async fn load<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let mut aggregate = A::default();
        let mut version = 0;
        for event in self.store.load(A::TYPE, id, 0).await? {
            let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
                StoreError::corrupt(format!("{} {id} event {}: {e}", A::TYPE, event.sequence))
            })?;
            aggregate.apply(payload);
            version = event.sequence;
        }
        Ok(Loaded { aggregate, version })
    }

    /// Lets `loaded` decide `command` and returns the events to append.
    async fn decide<A: Aggregate<Services = ()>>(
        loaded: &mut Loaded<A>,
        id: &str,
        command: A::Command,
        context: &CommandContext,
        at: &DateTime<Utc>,
    ) -> Result<(Vec<A::Event>, Vec<NewEvent>), A::Error> {
        let sink = EventSink::default();
        loaded.aggregate.handle(command, &(), &sink).await?;
        let events = sink.collect().await;
        let metadata = context.metadata(at);
        let new = events
            .iter()
            .enumerate()
            .map(|(i, event)| NewEvent {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: id.to_string(),
                sequence: loaded.version + 1 + i as i64,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(event).expect("events always serialize"),
                metadata: metadata.clone(),
                recorded_at: *at,
            })
            .collect();
        Ok((events, new))
    }

    async fn commit(&self, events: &[NewEvent], secrets: &[Secret]) -> Result<i64, StoreError> {
        self.commit_keyed(None, events, secrets, None).await
    }

    /// Appends in `tx` when given (begun by the caller), else in a transaction of its own.
    async fn commit_keyed(
        &self,
        tx: Option<crate::store::WriteTx>,
        events: &[NewEvent],
        secrets: &[Secret],
        key: Option<(&IdempotencyKey, &[u64])>,
    ) -> Result<i64, StoreError> {
        let positions = match tx {
            Some(tx) => self.store.append_in(tx, events, secrets, key).await?,
            None => self.store.append_keyed(events, secrets, key).await?,
        };
        if !positions.is_empty() {
            crate::wakeups::wake(&self.committed);
        }
        Ok(positions.last().copied().unwrap_or(0))
    }

    /// Creates a batch and its requests, and stores their secrets, in one transaction.
    pub async fn submit(
        &self,
        submission: Submission,
        context: &CommandContext,
    ) -> Result<Submitted, CommandError> {
        self.submit_keyed(submission, context, None).await
    }

    /// [`CommandBus::submit`], recording `key` with the new request ids in the same
    /// transaction (`StoreError::KeyTaken`, nothing written, when another call holds it).
    pub async fn submit_keyed(
        &self,
        submission: Submission,
        context: &CommandContext,
        key: Option<IdempotencyKey>,
    ) -> Result<Submitted, CommandError> {
        // Ids are taken in the transaction that appends the submission, so request ids follow
        // the order in which submissions commit (the serial queues' and indexes' order).
        let mut tx = self.store.begin_write().await?;
        let batch = BatchId::new(tx.next_ids("batch", 1).await?[0]).expect("sequences start at 1");
        let ids: Vec<RequestId> = tx
            .next_ids("request", submission.requests.len() as i64)
            .await?
            .into_iter()
            .map(|id| RequestId::new(id).expect("sequences start at 1"))
            .collect();
        let at = Self::now();
        let members = ids
            .iter()
            .zip(&submission.requests)
            .map(|(id, r)| BatchMember {
                id: *id,
                request_type: r.params.request_type(),
                organization: r.params.organization().map(str::to_string),
            })
            .collect();
        let mut loaded = Loaded::<Batch>::default_new();
        let (_, mut events) = Self::decide(
            &mut loaded,
            &batch.to_string(),
            BatchCommand::Create {
                batch_id: batch,
                user: submission.user.clone(),
                annotations: submission.annotations.clone(),
                members,
            },
            context,
            &at,
        )
        .await?;
        let mut secrets = Vec::new();
        for (id, request) in ids.iter().zip(submission.requests) {
            let mut loaded = Loaded::<BuildRequest>::default_new();
            let (_, request_events) = Self::decide(
                &mut loaded,
                &id.to_string(),
                BuildRequestCommand::Submit {
                    request_id: *id,
                    batch_id: batch,
                    user: submission.user.clone(),
                    params: request.params,
                    secrets_given: request.secrets.iter().map(|(kind, _)| *kind).collect(),
                    queue: request.queue,
                },
                context,
                &at,
            )
            .await?;
            events.extend(request_events);
            secrets.extend(request.secrets.into_iter().map(|(kind, value)| Secret {
                request_id: id.get(),
                kind,
                value,
                expires_at: at + self.secret_lifetime,
            }));
        }
        let request_ids: Vec<u64> = ids.iter().map(|id| id.get()).collect();
        let position = self
            .commit_keyed(
                Some(tx),
                &events,
                &secrets,
                key.as_ref().map(|k| (k, request_ids.as_slice())),
            )
            .await?;
        Ok(Submitted {
            batch,
            requests: ids,
            position,
        })
    }

    /// Runs a command on one request. A final state is committed with its batch's settlement.
    /// Returns the position of the last event written (0 when the command changed nothing).
    pub async fn execute(
        &self,
        request: RequestId,
        command: BuildRequestCommand,
        context: &CommandContext,
    ) -> Result<i64, CommandError> {
        let id = request.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let at = Self::now();
            let mut loaded = self.load::<BuildRequest>(&id).await?;
            let (decided, mut events) =
                Self::decide(&mut loaded, &id, command.clone(), context, &at).await?;
            let settled = decided.iter().find_map(|e| match e {
                BuildRequestEvent::RequestCompleted { .. } => Some(RequestState::Complete),
                BuildRequestEvent::RequestFailed { .. } => Some(RequestState::Failed),
                _ => None,
            });
            let mut batch_id = None;
            if let (Some(state), Some(batch)) = (settled, loaded.aggregate.batch()) {
                let batch = batch.to_string();
                let mut batch_loaded = self.load::<Batch>(&batch).await?;
                let (_, batch_events) = Self::decide(
                    &mut batch_loaded,
                    &batch,
                    BatchCommand::SettleRequest {
                        request_id: request,
                        state,
                    },
                    context,
                    &at,
                )
                .await?;
                events.extend(batch_events);
                batch_id = Some(batch);
            }
            match self.commit(&events, &[]).await {
                Ok(position) => return Ok(position),
                // Another request of the same batch ended meanwhile: decide again.
                Err(StoreError::Conflict {
                    ref aggregate_type,
                    ref aggregate_id,
                    ..
                }) if aggregate_type == Batch::TYPE
                    && Some(aggregate_id) == batch_id.as_ref()
                    && attempt < BATCH_RETRIES => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The aggregate state of a request, as the domain sees it.
    pub async fn request(&self, request: RequestId) -> Result<BuildRequest, StoreError> {
        Ok(self
            .load::<BuildRequest>(&request.to_string())
            .await?
            .aggregate)
    }
}

impl<A: Aggregate> Loaded<A> {
    fn default_new() -> Self {
        Self {
            aggregate: A::default(),
            version: 0,
        }
    }
}
