//! Running one request: claim it through its aggregate (two workers never both run it), keep
//! the claim alive with a heartbeat, run its task with the queue's time limit, and complete or
//! fail it. A request whose workers died `max_attempts` times fails instead of looping.

use super::index_catalog::CatalogCache;
use super::request_log::RequestLog;
use super::settings::{Queue, WorkerSettings};
use super::tasks::{self, TaskError};
use crate::command_bus::{CommandBus, CommandContext, CommandError};
use crate::registry::{ClientOptions, RegistryClient};
use crate::shutdown::Shutdown;
use crate::store::{Secret, Store, StoreError, WorkItem};
use chrono::Utc;
use iib_aggregates::params::{RequestParams, SecretKind};
use iib_aggregates::{Actor, BuildFacts, BuildRequestCommand, RequestId, WorkerId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// What every task gets: the request, its secrets, and the means to report and build.
pub struct TaskContext {
    pub id: u64,
    pub params: RequestParams,
    /// The queue the request was routed to (`None`: the default queue).
    pub queue: Option<String>,
    /// Who submitted it.
    pub user: Option<String>,
    secrets: Vec<Secret>,
    pub bus: CommandBus,
    pub client: RegistryClient,
    /// What `client` was made from (a request's own credentials make a client of their own).
    pub client_options: ClientOptions,
    pub settings: Arc<WorkerSettings>,
    /// Index catalogs this worker read or built.
    pub catalogs: Arc<CatalogCache>,
    pub log: RequestLog,
    pub worker: WorkerId,
}

impl TaskContext {
    fn request(&self) -> RequestId {
        RequestId::new(self.id).expect("ids are positive")
    }

    fn context(&self) -> CommandContext {
        CommandContext::worker(self.worker.clone())
    }

    /// A new `state_reason` (IIB's `set_request_state(..., 'in_progress', reason)`).
    pub async fn progress(&self, reason: impl Into<String>) -> Result<(), TaskError> {
        let reason = reason.into();
        self.log.info(&reason);
        self.bus
            .execute(
                self.request(),
                BuildRequestCommand::RecordProgress {
                    actor: Actor::Worker(self.worker.clone()),
                    state_reason: reason,
                },
                &self.context(),
            )
            .await
            .map(|_| ())
            .map_err(lost_or_failed)
    }

    /// Facts learned while building (IIB's PATCHed keys; those the type does not record are
    /// left out).
    pub async fn facts(&self, facts: BuildFacts) -> Result<(), TaskError> {
        let facts = facts.restrict_to(self.params.request_type());
        if facts.is_empty() {
            return Ok(());
        }
        self.bus
            .execute(
                self.request(),
                BuildRequestCommand::RecordFacts {
                    actor: Actor::Worker(self.worker.clone()),
                    facts,
                },
                &self.context(),
            )
            .await
            .map(|_| ())
            .map_err(lost_or_failed)
    }

    /// A secret the request was sent with.
    pub fn secret(&self, kind: SecretKind) -> Option<&str> {
        self.secrets
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.value.as_str())
    }
}

/// A command the aggregate refused means the request cannot go on (it fails with why); a store
/// or claim problem means this worker lost it (someone else resumes it).
fn lost_or_failed(error: CommandError) -> TaskError {
    use iib_aggregates::BuildRequestError as E;
    match &error {
        CommandError::Request(E::ClaimedByOther { .. } | E::NotClaimHolder(_) | E::Final(_)) => {
            TaskError::Lost(error.to_string())
        }
        CommandError::Request(_) | CommandError::Batch(_) => {
            TaskError::Failed(format!("The worker could not record its progress: {error}"))
        }
        CommandError::Store(_) => TaskError::Lost(error.to_string()),
    }
}

/// The worker side shared by every queue actor.
pub struct Runner {
    pub store: Store,
    pub bus: CommandBus,
    pub client: RegistryClient,
    pub client_options: ClientOptions,
    pub settings: Arc<WorkerSettings>,
    pub catalogs: Arc<CatalogCache>,
    pub worker: WorkerId,
    pub shutdown: Shutdown,
    /// Requests running now in this process.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Runner {
    /// Claims the next requests of `queue` this worker may start now (at most `slots`),
    /// skipping `running`. A serial queue starts its oldest unfinished request only when no
    /// other worker holds one; a request that overwrites an index waits for every earlier
    /// request on that index.
    pub async fn claim_next(
        &self,
        queue: &Queue,
        running: &BTreeSet<u64>,
        slots: usize,
    ) -> Result<Vec<u64>, StoreError> {
        if slots == 0 || self.shutdown.is_triggered() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let work = self.store.queue_work(queue.name.as_deref(), 200).await?;
        let serial = queue.settings.concurrency == 1;
        if serial && (!running.is_empty() || work.iter().any(|w| w.is_held(now))) {
            return Ok(Vec::new());
        }
        let mut claimed = Vec::new();
        let mut blocked_indexes: BTreeSet<String> = BTreeSet::new();
        for item in work {
            if claimed.len() >= slots {
                break;
            }
            if running.contains(&item.id) || item.is_held(now) {
                if let Some(index) = &item.writes_index {
                    blocked_indexes.insert(index.clone());
                }
                continue;
            }
            if let Some(index) = &item.writes_index {
                if blocked_indexes.contains(index)
                    || self.earlier_writer_pending(index, &item).await?
                {
                    blocked_indexes.insert(index.clone());
                    if serial {
                        break;
                    }
                    continue;
                }
                blocked_indexes.insert(index.clone());
            }
            if self.claim(item.id).await {
                claimed.push(item.id);
            }
            if serial {
                break; // only the oldest
            }
        }
        Ok(claimed)
    }

    async fn earlier_writer_pending(
        &self,
        index: &str,
        item: &WorkItem,
    ) -> Result<bool, StoreError> {
        Ok(!self.store.earlier_writers(index, item.id).await?.is_empty())
    }

    /// Takes the request's claim; false when another worker holds it or it ended.
    async fn claim(&self, id: u64) -> bool {
        let Some(request) = RequestId::new(id) else {
            return false;
        };
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or(chrono::Duration::seconds(60));
        match self
            .bus
            .execute(
                request,
                BuildRequestCommand::Claim {
                    worker: self.worker.clone(),
                    now,
                    lease_until: now + lease,
                },
                &CommandContext::worker(self.worker.clone()),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(request_id = id, error = %e, "not claimed");
                false
            }
        }
    }

    async fn command(&self, id: u64, command: BuildRequestCommand) -> Result<i64, CommandError> {
        self.bus
            .execute(
                RequestId::new(id).expect("ids are positive"),
                command,
                &CommandContext::worker(self.worker.clone()),
            )
            .await
    }

    /// Runs a claimed request to its end (or hands it back at shutdown).
    pub async fn run(self: Arc<Self>, id: u64, queue: Queue) {
        use std::sync::atomic::Ordering;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.run_claimed(id, queue).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    async fn run_claimed(self: &Arc<Self>, id: u64, queue: Queue) {
        let log = match RequestLog::open(self.settings.request_logs_dir.as_deref(), id) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(request_id = id, error = %e, "cannot open the request's log file");
                RequestLog::open(None, id).expect("no file to open")
            }
        };
        match self.prepare(id, &log).await {
            Ok(Some(context)) => self.execute(context, queue).await,
            Ok(None) => {}
            Err(e) => {
                log.error(format!("cannot start the request: {e}"));
                self.release(id, format!("the worker could not start it: {e}"))
                    .await;
            }
        }
    }

    /// Loads what the task needs; fails the request when its workers died too often.
    async fn prepare(&self, id: u64, log: &RequestLog) -> Result<Option<TaskContext>, String> {
        let request = RequestId::new(id).ok_or("request ids are positive")?;
        let aggregate = self.bus.request(request).await.map_err(|e| e.to_string())?;
        let (attempt, abandoned) = (aggregate.attempts(), aggregate.abandoned());
        // Hand-backs at shutdown do not count: only workers that died holding the request.
        if abandoned >= self.settings.max_attempts {
            let reason = format!(
                "The request was abandoned {abandoned} times by workers that stopped while building it; it is not retried again"
            );
            log.error(&reason);
            let _ = self
                .command(
                    id,
                    BuildRequestCommand::Fail {
                        actor: Actor::Worker(self.worker.clone()),
                        state_reason: reason,
                    },
                )
                .await;
            return Ok(None);
        }
        if attempt > 1 {
            log.warn(format!(
                "resuming the request (attempt {attempt}): its previous worker stopped or handed it back"
            ));
        }
        let record = self
            .store
            .request_record(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("request {request} is not in the read model yet"))?;
        let secrets = self
            .store
            .secrets(id, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(TaskContext {
            id,
            params: record.params.clone(),
            queue: record.queue.clone(),
            user: record.user.clone(),
            secrets,
            bus: self.bus.clone(),
            client: self.client.clone(),
            client_options: self.client_options.clone(),
            settings: self.settings.clone(),
            catalogs: self.catalogs.clone(),
            log: log.clone(),
            worker: self.worker.clone(),
        }))
    }

    async fn execute(self: &Arc<Self>, context: TaskContext, queue: Queue) {
        let id = context.id;
        let log = context.log.clone();
        // The heartbeat: renew the lease at a third of its length while the task runs.
        let heartbeat = {
            let runner = self.clone();
            tokio::spawn(async move {
                let every = runner.settings.lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let now = Utc::now();
                    let lease = chrono::Duration::from_std(runner.settings.lease)
                        .unwrap_or(chrono::Duration::seconds(60));
                    let renewed = runner
                        .command(
                            id,
                            BuildRequestCommand::RenewClaim {
                                worker: runner.worker.clone(),
                                now,
                                lease_until: now + lease,
                            },
                        )
                        .await;
                    if let Err(e) = renewed {
                        tracing::warn!(request_id = id, error = %e, "renewing the claim failed");
                    }
                }
            })
        };
        let limit = queue.settings.time_limit_seconds.map(Duration::from_secs);
        let task = tasks::run(&context);
        let outcome = tokio::select! {
            outcome = async {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, task).await.unwrap_or_else(|_| {
                        Err(TaskError::Failed(format!(
                            "The request exceeded the time limit of {} seconds of the {} queue",
                            limit.as_secs(),
                            queue.label()
                        )))
                    }),
                    None => task.await,
                }
            } => Some(outcome),
            _ = self.shutdown.wait() => None,
        };
        heartbeat.abort();
        let actor = Actor::Worker(self.worker.clone());
        match outcome {
            Some(Ok(reason)) => {
                log.info(&reason);
                if let Err(e) = self
                    .command(
                        id,
                        BuildRequestCommand::Complete {
                            actor,
                            state_reason: reason,
                        },
                    )
                    .await
                {
                    log.error(format!("recording the end failed: {e}"));
                }
            }
            Some(Err(TaskError::Failed(reason))) => {
                log.error(&reason);
                if let Err(e) = self
                    .command(
                        id,
                        BuildRequestCommand::Fail {
                            actor,
                            state_reason: reason,
                        },
                    )
                    .await
                {
                    log.error(format!("recording the failure failed: {e}"));
                }
            }
            Some(Err(TaskError::Lost(reason))) => {
                // The claim or the store went away: whoever holds the request now finishes it.
                log.warn(format!("stopped working on the request: {reason}"));
            }
            None => {
                log.warn("the worker is shutting down: handing the request back");
                self.release(id, "the worker shut down; another worker resumes it".into())
                    .await;
            }
        }
        // IIB uploads the request's log to S3 at the end of every run.
        if let (Some(bucket), Some(path)) = (&self.settings.s3, log.path()) {
            match tokio::fs::read(path).await {
                Ok(bytes) => {
                    if let Err(e) = bucket
                        .put(crate::artifacts::Artifact::Logs, id, bytes)
                        .await
                    {
                        tracing::error!(request_id = id, error = %e, "uploading the request's log failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(request_id = id, error = %e, "cannot read the request's log")
                }
            }
        }
    }

    async fn release(&self, id: u64, reason: String) {
        if let Err(e) = self
            .command(
                id,
                BuildRequestCommand::ReleaseClaim {
                    worker: self.worker.clone(),
                    reason,
                },
            )
            .await
        {
            tracing::warn!(request_id = id, error = %e, "handing the request back failed; its lease will expire");
        }
    }
}
