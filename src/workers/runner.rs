//! Running one request: claim it through its aggregate (two workers never both run it), keep
//! the claim alive with a heartbeat, run its task with the queue's time limit, and complete or
//! fail it. A request whose workers died `max_attempts` times fails instead of looping.
//!
//! Three things keep one request from ever being run twice at once or left half done:
//! - **Fencing.** The task runs only while its claim is renewed: when the heartbeat learns the
//!   claim went to someone else, or cannot renew it (the database away) before the lease would
//!   run out, the task is stopped (its future dropped) before another worker may take over.
//! - **Panics.** A task that panics fails its request with the panic's message; its heartbeat
//!   stops and its queue slot is freed like any other end.
//! - **The end is recorded.** A request's final event is retried through short database
//!   outages, so a finished build is not run again because one write failed.

use super::index_catalog::CatalogCache;
use super::request_log::RequestLog;
use super::settings::{Queue, WorkerSettings};
use super::steps;
use super::tasks::{self, TaskError};
use crate::command_bus::{CommandBus, CommandContext, CommandError};
use crate::shutdown::Shutdown;
use crate::store::{Secret, Store, StoreError, WorkItem};
use chrono::Utc;
use iib_aggregates::params::{RequestParams, SecretKind};
use iib_aggregates::{Actor, BuildFacts, BuildRequestCommand, RequestId, WorkerId};
use iib_oci::{ClientOptions, RegistryClient};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// What every task gets: the request, its secrets, and the means to report and build.
pub struct TaskContext {
    pub id: u64,
    pub params: RequestParams,
    /// The queue the request was routed to (`None`: the default queue).
    pub queue: Option<String>,
    /// Who submitted it.
    pub user: Option<String>,
    secrets: Vec<Secret>,
    /// The kinds of secret the request was sent with (those missing from `secrets` expired).
    secrets_given: Vec<SecretKind>,
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

    /// Runs a command of the task's on its request. A conflict (another event of this request
    /// was appended meanwhile, most often our own heartbeat's) is decided again on the new
    /// version: the aggregate checks the claim afresh each time.
    async fn execute(&self, command: BuildRequestCommand) -> Result<(), TaskError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .bus
                .execute(self.request(), command.clone(), &self.context())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => continue,
                Err(e) => return Err(lost_or_failed(e)),
            }
        }
    }

    /// A new `state_reason` (IIB's `set_request_state(..., 'in_progress', reason)`).
    pub async fn progress(&self, reason: impl Into<String>) -> Result<(), TaskError> {
        let reason = reason.into();
        self.log.info(&reason);
        self.execute(BuildRequestCommand::RecordProgress {
            actor: Actor::Worker(self.worker.clone()),
            state_reason: reason,
        })
        .await
    }

    /// Facts learned while building (IIB's PATCHed keys; those the type does not record are
    /// left out).
    pub async fn facts(&self, facts: BuildFacts) -> Result<(), TaskError> {
        let facts = facts.restrict_to(self.params.request_type());
        if facts.is_empty() {
            return Ok(());
        }
        self.execute(BuildRequestCommand::RecordFacts {
            actor: Actor::Worker(self.worker.clone()),
            facts,
        })
        .await
    }

    /// A secret the request was sent with: `None` when it was sent without one; an error when
    /// it was sent with one that expired before the request ran (going on without it would
    /// use the service's own credentials where the user gave theirs).
    pub fn secret(&self, kind: SecretKind) -> Result<Option<&str>, TaskError> {
        let value = self
            .secrets
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.value.as_str());
        if value.is_none() && self.secrets_given.contains(&kind) {
            return Err(TaskError::Failed(format!(
                "The {} expired before the request ran (secrets are kept IIB_SECRET_LIFETIME_SECONDS); resubmit the request with it",
                kind.parameter()
            )));
        }
        Ok(value)
    }
}

/// How many times a worker's command is decided again after losing a race on its request.
const CONFLICT_RETRIES: usize = 5;

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
    pub in_flight: Arc<AtomicUsize>,
    /// Requests whose history cannot be read back (an event stored by an older iib that let a
    /// too-deep body through, say): no command can apply to them, so they are passed over
    /// instead of holding their queue, or later writers to their index, for ever.
    pub unreadable: std::sync::Mutex<BTreeSet<u64>>,
}

/// Counts a running request in `Runner::in_flight` until dropped, however the run ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A spawned task aborted when this is dropped: a heartbeat must not outlive the run it keeps
/// alive, even when that run unwinds from a panic.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How a request's run ends, as recorded.
enum End {
    Complete(String),
    Fail(String),
}

/// Why the heartbeat gave up the claim.
#[derive(Debug, Clone, PartialEq)]
enum ClaimLost {
    /// The aggregate refused the renewal: another worker holds the request, or it ended.
    Refused(String),
    /// The database did not take a renewal before the lease would run out.
    Unrenewed(String),
}

impl std::fmt::Display for ClaimLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "its claim was lost ({e})"),
            Self::Unrenewed(e) => write!(
                f,
                "its claim could not be renewed before its lease ran out ({e})"
            ),
        }
    }
}

/// The heartbeat's timing, from the lease: renew every third of it; retry a failed renewal
/// until `margin` before the lease ends, and stop the task then, so it has stopped before any
/// other worker may take the request over.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    lease: Duration,
    every: Duration,
    margin: Duration,
}

impl Heartbeat {
    fn new(lease: Duration) -> Self {
        Self {
            lease,
            every: lease / 3,
            margin: lease / 6,
        }
    }

    /// Keeps renewing through `renew` (which returns `Ok` when renewed, `Err((refused, why))`
    /// otherwise) while the lease holds; returns why it stopped. `lease_until` is when the
    /// current lease ends, by this process's clock.
    async fn keep<F, Fut>(self, mut lease_until: Instant, mut renew: F) -> ClaimLost
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), (bool, String)>>,
    {
        let mut renewed_at = Instant::now();
        loop {
            // A third of the lease after the last renewal; sooner when the lease we started
            // from had less left (the request took a while to start), so there is time to retry.
            let latest = lease_until
                .checked_sub(self.margin + self.every / 2)
                .unwrap_or(renewed_at);
            tokio::time::sleep_until((renewed_at + self.every).min(latest)).await;
            let give_up_at = lease_until - self.margin;
            let mut pause = (self.every / 8).min(Duration::from_millis(100));
            loop {
                let sent = Instant::now();
                match tokio::time::timeout_at(give_up_at, renew()).await {
                    Ok(Ok(())) => {
                        renewed_at = sent;
                        lease_until = sent + self.lease;
                        break;
                    }
                    Ok(Err((true, why))) => return ClaimLost::Refused(why),
                    Ok(Err((false, why))) => {
                        if Instant::now() + pause >= give_up_at {
                            return ClaimLost::Unrenewed(why);
                        }
                        tracing::warn!(error = %why, "renewing the claim failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(self.every / 2);
                    }
                    Err(_) => {
                        return ClaimLost::Unrenewed("the database did not answer in time".into())
                    }
                }
            }
        }
    }
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
        let unreadable = self
            .unreadable
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        for item in work {
            if claimed.len() >= slots {
                break;
            }
            if unreadable.contains(&item.id) {
                continue;
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
        let unreadable = self
            .unreadable
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        Ok(self
            .store
            .earlier_writers(index, item.id)
            .await?
            .iter()
            .any(|earlier| !unreadable.contains(&earlier.id)))
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
            Err(CommandError::Store(e @ StoreError::Corrupt(_))) => {
                tracing::error!(
                    request_id = id,
                    error = %e,
                    "the request's history cannot be read back: passing it over (see `iib replay --request`)"
                );
                if let Ok(mut unreadable) = self.unreadable.lock() {
                    unreadable.insert(id);
                }
                false
            }
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

    /// Runs a claimed request to its end (or hands it back at shutdown). The run is a task of
    /// its own, so that a panic anywhere in it ends here: the request fails with the panic's
    /// message (its heartbeat stopped while unwinding) instead of staying claimed forever.
    pub async fn run(self: Arc<Self>, id: u64, queue: Queue) {
        let _in_flight = InFlight::enter(&self.in_flight);
        let log = match RequestLog::open(self.settings.request_logs_dir.as_deref(), id) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(request_id = id, error = %e, "cannot open the request's log file");
                RequestLog::open(None, id).expect("no file to open")
            }
        };
        let run = tokio::spawn(self.clone().run_claimed(id, queue, log.clone())).await;
        let Err(e) = run else { return };
        let reason = if e.is_panic() {
            format!(
                "The worker failed unexpectedly: {}",
                panic_message(e.into_panic().as_ref())
            )
        } else {
            format!("The worker failed unexpectedly: {e}")
        };
        tracing::error!(request_id = id, "{reason}");
        log.error(&reason);
        if self.record_end(id, End::Fail(reason), &log).await {
            if let Ok(Some(record)) = self.store.request_record(id).await {
                let labels = crate::metrics::RequestLabels::new(
                    record.params.request_type(),
                    record.queue.as_deref(),
                );
                crate::metrics::request_ended(&labels, false, None);
            }
        }
        self.upload_log(id, &log).await;
    }

    async fn run_claimed(self: Arc<Self>, id: u64, queue: Queue, log: RequestLog) {
        let span = steps::request_span(id, self.worker.as_str());
        if crate::telemetry::enabled() {
            // The submitting call's span, from the events' metadata: this run links to it
            // and goes on in its trace, however long ago and wherever it was submitted.
            let submitted = self.submission_traceparent(id).await;
            crate::telemetry::follow(&span, submitted.as_deref());
        }
        let run = async {
            match self.prepare(id, &log).await {
                Ok(Some((context, lease_until))) => self.execute(context, queue, lease_until).await,
                Ok(None) => {}
                Err(e) => {
                    log.error(format!("cannot start the request: {e}"));
                    self.release(id, format!("the worker could not start it: {e}"))
                        .await;
                }
            }
        };
        run.instrument(span).await
    }

    /// The `traceparent` recorded with the request's submission, if any.
    async fn submission_traceparent(&self, id: u64) -> Option<String> {
        let events = self.store.load("BuildRequest", &id.to_string(), 0).await;
        events
            .ok()?
            .first()?
            .metadata
            .get(iib_aggregates::metadata::TRACEPARENT)?
            .as_str()
            .map(str::to_string)
    }

    /// Loads what the task needs, and when the claim's lease ends (by this process's clock);
    /// fails the request when its workers died too often.
    async fn prepare(
        &self,
        id: u64,
        log: &RequestLog,
    ) -> Result<Option<(TaskContext, Instant)>, String> {
        let request = RequestId::new(id).ok_or("request ids are positive")?;
        let aggregate = self.bus.request(request).await.map_err(|e| e.to_string())?;
        let (attempt, abandoned) = (aggregate.attempts(), aggregate.abandoned());
        let secrets_given = aggregate.secrets_given().to_vec();
        let lease_until = match aggregate.claim() {
            Some(claim) if claim.worker == self.worker => {
                let left = (claim.lease_until - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                Instant::now() + left
            }
            _ => return Err("this worker does not hold the request's claim".into()),
        };
        let record = self
            .store
            .request_record(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("request {request} is not in the read model yet"))?;
        let labels = crate::metrics::RequestLabels::new(
            record.params.request_type(),
            record.queue.as_deref(),
        );
        // Hand-backs at shutdown do not count: only workers that died holding the request.
        if abandoned >= self.settings.max_attempts {
            let reason = format!(
                "The request was abandoned {abandoned} times by workers that stopped while building it; it is not retried again"
            );
            log.error(&reason);
            let failed = self
                .command(
                    id,
                    BuildRequestCommand::Fail {
                        actor: Actor::Worker(self.worker.clone()),
                        state_reason: reason,
                    },
                )
                .await;
            if failed.is_ok() {
                crate::metrics::request_ended(&labels, false, None);
            }
            return Ok(None);
        }
        if attempt > 1 {
            log.warn(format!(
                "resuming the request (attempt {attempt}): its previous worker stopped or handed it back"
            ));
        }
        // The first start: how long the request waited in its queue since its submission.
        let waited = (attempt <= 1)
            .then(|| record.history.first())
            .flatten()
            .and_then(|submitted| (Utc::now() - submitted.updated).to_std().ok());
        crate::metrics::request_started(&labels, waited);
        let secrets = self
            .store
            .secrets(id, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        steps::describe(
            &tracing::Span::current(),
            &record.params,
            record.user.as_deref(),
            record.queue.as_deref(),
            attempt,
        );
        let context = TaskContext {
            id,
            params: record.params.clone(),
            queue: record.queue.clone(),
            user: record.user.clone(),
            secrets,
            secrets_given,
            bus: self.bus.clone(),
            client: self.client.clone(),
            client_options: self.client_options.clone(),
            settings: self.settings.clone(),
            catalogs: self.catalogs.clone(),
            log: log.clone(),
            worker: self.worker.clone(),
        };
        Ok(Some((context, lease_until)))
    }

    async fn execute(self: &Arc<Self>, context: TaskContext, queue: Queue, lease_until: Instant) {
        let id = context.id;
        let log = context.log.clone();
        // The heartbeat, on a task of its own so that a busy task cannot starve it; it says
        // when the claim is lost, and is stopped when this run ends however it ends.
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<ClaimLost>();
        let heartbeat = {
            let runner = self.clone();
            AbortOnDrop(tokio::spawn(async move {
                let renew = || runner.renew(id);
                let lost = Heartbeat::new(runner.settings.lease)
                    .keep(lease_until, renew)
                    .await;
                let _ = lost_tx.send(lost);
            }))
        };
        let started = Instant::now();
        let labels = crate::metrics::RequestLabels::new(
            context.params.request_type(),
            context.queue.as_deref(),
        );
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
            Ok(lost) = lost_rx => {
                // The task's future is dropped here: it stops before another worker may start.
                tracing::error!(request_id = id, worker = %self.worker, "stopped the task: {lost}");
                Some(Err(TaskError::Lost(format!(
                    "{lost}; the task was stopped so that no other worker runs the request at the same time"
                ))))
            },
            _ = self.shutdown.wait() => None,
        };
        let span = tracing::Span::current();
        match &outcome {
            Some(Ok(_)) => steps::ended(&span, "complete", None),
            Some(Err(TaskError::Failed(reason))) => steps::ended(&span, "failed", Some(reason)),
            Some(Err(TaskError::Lost(_))) => steps::ended(&span, "lost", None),
            None => steps::ended(&span, "handed_back", None),
        }
        match outcome {
            Some(Ok(reason)) => {
                log.info(&reason);
                if self.record_end(id, End::Complete(reason), &log).await {
                    crate::metrics::request_ended(&labels, true, Some(started.elapsed()));
                }
            }
            Some(Err(TaskError::Failed(reason))) => {
                log.error(&reason);
                if self.record_end(id, End::Fail(reason), &log).await {
                    crate::metrics::request_ended(&labels, false, Some(started.elapsed()));
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
        // Renewed until the end is recorded, so nobody takes a finished build over meanwhile.
        drop(heartbeat);
        self.upload_log(id, &log).await;
    }

    /// IIB uploads the request's log to S3 at the end of every run.
    async fn upload_log(&self, id: u64, log: &RequestLog) {
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

    /// Renews the claim once: `Err((true, _))` when the aggregate refused (the claim is lost),
    /// `Err((false, _))` when the database failed (worth another try).
    async fn renew(&self, id: u64) -> Result<(), (bool, String)> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or(chrono::Duration::seconds(60));
        let command = BuildRequestCommand::RenewClaim {
            worker: self.worker.clone(),
            now,
            lease_until: now + lease,
        };
        match self.command(id, command).await {
            Ok(_) => Ok(()),
            Err(CommandError::Store(e)) => Err((false, e.to_string())),
            Err(e) => Err((true, e.to_string())),
        }
    }

    /// Records how the request ended. Database errors are retried with backoff for up to a
    /// lease's length: the work is done, and a write that failed once must not make another
    /// worker run it all again. A refusal by the aggregate (another worker holds the request
    /// now, or it ended already) is final. Returns whether the end was recorded.
    async fn record_end(&self, id: u64, end: End, log: &RequestLog) -> bool {
        let actor = Actor::Worker(self.worker.clone());
        let (command, what) = match end {
            End::Complete(state_reason) => (
                BuildRequestCommand::Complete {
                    actor,
                    state_reason,
                },
                "the end",
            ),
            End::Fail(state_reason) => (
                BuildRequestCommand::Fail {
                    actor,
                    state_reason,
                },
                "the failure",
            ),
        };
        let give_up_at = Instant::now() + self.settings.lease;
        let mut pause = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.command(id, command.clone()).await {
                Ok(_) => return true,
                Err(CommandError::Store(e)) if Instant::now() + pause < give_up_at => {
                    log.warn(format!(
                        "recording {what} failed (attempt {attempt}): {e}; retrying in {} ms",
                        pause.as_millis()
                    ));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => {
                    log.error(format!("recording {what} failed: {e}"));
                    return false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    const LEASE: Duration = Duration::from_millis(600);

    /// A heartbeat whose renewals answer as `answer(n)` says for the n-th one (from 1).
    async fn heartbeat(
        answer: impl Fn(u32) -> Result<(), (bool, String)>,
        watch_for: Duration,
    ) -> (Option<ClaimLost>, Duration, u32) {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let keep = Heartbeat::new(LEASE).keep(started + LEASE, || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let answer = answer(n);
            async move { answer }
        });
        let lost = tokio::select! {
            lost = keep => Some(lost),
            _ = tokio::time::sleep(watch_for) => None,
        };
        (lost, started.elapsed(), calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_renewed_claim_keeps_the_task_running() {
        let (lost, _, renewals) = heartbeat(|_| Ok(()), LEASE * 3).await;
        assert_eq!(lost, None);
        assert!(renewals >= 6, "{renewals} renewals");
    }

    #[tokio::test]
    async fn a_claim_taken_by_another_worker_stops_the_task_at_once() {
        let (lost, elapsed, renewals) =
            heartbeat(|_| Err((true, "claimed by w2".into())), LEASE * 3).await;
        assert_eq!(lost, Some(ClaimLost::Refused("claimed by w2".into())));
        assert_eq!(renewals, 1);
        assert!(elapsed < LEASE / 2, "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_claim_the_database_cannot_renew_stops_the_task_before_the_lease_ends() {
        let (lost, elapsed, renewals) =
            heartbeat(|_| Err((false, "database is locked".into())), LEASE * 3).await;
        assert_eq!(
            lost,
            Some(ClaimLost::Unrenewed("database is locked".into()))
        );
        assert!(renewals > 1, "retried: {renewals}");
        assert!(elapsed < LEASE, "stopped after {elapsed:?}");
    }

    #[tokio::test]
    async fn a_renewal_that_hangs_stops_the_task_before_the_lease_ends() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let keep = Heartbeat::new(LEASE).keep(started + LEASE, || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), (bool, String)>>()
        });
        let lost = tokio::time::timeout(LEASE * 3, keep).await.unwrap();
        assert!(matches!(lost, ClaimLost::Unrenewed(_)), "{lost:?}");
        assert!(started.elapsed() < LEASE, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_lease_with_little_left_is_renewed_early_enough_to_retry() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        // A third of the lease left when the task starts: it renews at once, and keeps on.
        let keep = Heartbeat::new(LEASE).keep(started + LEASE / 3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        let lost = tokio::time::timeout(LEASE * 2, keep).await;
        assert!(lost.is_err(), "the claim was given up: {lost:?}");
        assert!(calls.load(Ordering::SeqCst) >= 4);
    }

    #[tokio::test]
    async fn a_database_hiccup_is_retried_within_the_lease() {
        let (lost, _, renewals) = heartbeat(
            |n| match n {
                1 | 2 => Err((false, "database is locked".into())),
                _ => Ok(()),
            },
            LEASE * 3,
        )
        .await;
        assert_eq!(lost, None);
        assert!(renewals >= 4, "{renewals} renewals");
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(text.as_ref()), "boom");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("boom 2"));
        assert_eq!(panic_message(owned.as_ref()), "boom 2");
    }
}
