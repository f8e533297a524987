//! One actix actor per queue. It decides what runs: whenever a request of its queue may have
//! become runnable (a commit in this process; on PostgreSQL, `NOTIFY iib_work` from any
//! process, see `crate::wakeups`) and at its fallback tick, it asks the runner to claim what
//! fits its concurrency, starts each claimed request on the tokio runtime, and hears back when
//! each one ends. The tick looks every 100 ms, or every `wakeups::FALLBACK_POLL` while
//! notifications arrive. The actor holds no I/O itself; the runner's futures run on the
//! service's runtime.

use super::runner::Runner;
use super::settings::Queue;
use actix::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct QueueActor {
    queue: Queue,
    runner: Arc<Runner>,
    runtime: tokio::runtime::Handle,
    running: BTreeSet<u64>,
    polling: bool,
    tick: Duration,
    /// When this actor last looked for work.
    looked: Instant,
}

impl QueueActor {
    pub fn new(
        queue: Queue,
        runner: Arc<Runner>,
        runtime: tokio::runtime::Handle,
        tick: Duration,
    ) -> Self {
        Self {
            queue,
            runner,
            runtime,
            running: BTreeSet::new(),
            polling: false,
            tick,
            looked: Instant::now(),
        }
    }
}

/// Look for work now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

/// The fallback tick: look for work unless notifications make looking needless yet.
#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// The runner claimed these requests for this actor.
#[derive(Message)]
#[rtype(result = "()")]
struct Claimed(Vec<u64>);

/// A request this actor started has ended (or was handed back).
#[derive(Message)]
#[rtype(result = "()")]
struct Finished(u64);

/// How many requests run now (for tests and metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Running;

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            queue = self.queue.label(),
            concurrency = self.queue.settings.concurrency,
            "queue actor started"
        );
        ctx.run_interval(self.tick, |_, ctx| ctx.address().do_send(Tick));
        ctx.address().do_send(Poll);
        // `NOTIFY iib_work, '<this queue>'` from any process (and the listener's changes of
        // state) wake this actor at once.
        let signal = self.runner.bus.wakeups().queue(self.queue.label());
        let me = ctx.address();
        self.runtime.spawn(async move {
            while me.connected() {
                signal.notified().await;
                me.do_send(Poll);
            }
        });
    }
}

impl Handler<Tick> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        let every = self.runner.bus.wakeups().poll_every(self.tick);
        if self.looked.elapsed() + self.tick / 2 >= every {
            ctx.address().do_send(Poll);
        }
    }
}

impl Handler<Poll> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Poll, ctx: &mut Self::Context) {
        let slots = self
            .queue
            .settings
            .concurrency
            .saturating_sub(self.running.len());
        if self.polling || slots == 0 {
            return;
        }
        self.polling = true;
        self.looked = Instant::now();
        let runner = self.runner.clone();
        let queue = self.queue.clone();
        let running = self.running.clone();
        let me = ctx.address();
        self.runtime.spawn(async move {
            let claimed = match runner.claim_next(&queue, &running, slots).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(queue = queue.label(), error = %e, "looking for work failed");
                    Vec::new()
                }
            };
            me.do_send(Claimed(claimed));
        });
    }
}

impl Handler<Claimed> for QueueActor {
    type Result = ();

    fn handle(&mut self, Claimed(ids): Claimed, ctx: &mut Self::Context) {
        self.polling = false;
        for id in ids {
            self.running.insert(id);
            let runner = self.runner.clone();
            let queue = self.queue.clone();
            let me = ctx.address();
            self.runtime.spawn(async move {
                // The run is a task of its own, so this actor hears of its end even if it
                // panicked (the runner fails the request then): the slot never leaks.
                if let Err(e) = tokio::spawn(runner.run(id, queue)).await {
                    tracing::error!(request_id = id, error = %e, "a request's run ended abnormally");
                }
                me.do_send(Finished(id));
            });
        }
    }
}

impl Handler<Finished> for QueueActor {
    type Result = ();

    fn handle(&mut self, Finished(id): Finished, ctx: &mut Self::Context) {
        self.running.remove(&id);
        ctx.address().do_send(Poll);
    }
}

impl Handler<Running> for QueueActor {
    type Result = usize;

    fn handle(&mut self, _: Running, _: &mut Self::Context) -> usize {
        self.running.len()
    }
}
