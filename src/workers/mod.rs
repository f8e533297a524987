//! The workers: one actix actor per queue (`queue_actor`) deciding what runs, the `runner`
//! claiming and running requests on the service's tokio runtime, and one task per request type
//! (`tasks/`) doing IIB's work with the native registry client and catalog engine.

pub mod index_catalog;
pub mod index_image;
pub mod ocp_versions;
pub mod operator_manifest;
pub mod queue_actor;
pub mod request_log;
pub mod runner;
pub mod settings;
pub mod steps;
pub mod tasks;

use crate::command_bus::CommandBus;
use crate::shutdown::Shutdown;
use crate::store::Store;
use iib_aggregates::WorkerId;
use iib_oci::{ClientOptions, RegistryClient};
use runner::Runner;
use settings::WorkerSettings;
use std::sync::Arc;
use std::time::Duration;

/// A worker id unique to this process: host, process id and a random part.
pub fn worker_id() -> WorkerId {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let nonce: u32 = rand_u32();
    WorkerId::new(format!("{host}:{}:{nonce:08x}", std::process::id()))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() as u32
}

/// Starts the queue actors on a thread of their own (actix runs its own system) and returns
/// when `shutdown` fires and every running request has finished or been handed back.
pub async fn run(
    store: Store,
    bus: CommandBus,
    client_options: ClientOptions,
    settings: WorkerSettings,
    shutdown: Shutdown,
) -> Result<(), iib_oci::RegistryError> {
    let client = RegistryClient::new(client_options.clone())?;
    let catalogs = Arc::new(index_catalog::CatalogCache::new(
        settings.catalog_cache_bytes,
    ));
    let runner = Arc::new(Runner {
        store,
        bus,
        client,
        client_options,
        catalogs,
        settings: Arc::new(settings),
        worker: worker_id(),
        shutdown: shutdown.clone(),
        in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        unreadable: Default::default(),
    });
    tracing::info!(worker = %runner.worker, queues = runner.settings.queues.len(), "workers starting");
    let runtime = tokio::runtime::Handle::current();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (addresses_tx, addresses_rx) =
        tokio::sync::oneshot::channel::<Vec<actix::Addr<queue_actor::QueueActor>>>();
    let actors_runner = runner.clone();
    let thread = std::thread::Builder::new()
        .name("iib-queues".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let mut addresses = Vec::new();
                for queue in actors_runner.settings.queues.clone() {
                    let actor = queue_actor::QueueActor::new(
                        queue,
                        actors_runner.clone(),
                        runtime.clone(),
                        Duration::from_millis(100),
                    );
                    addresses.push(actix::Actor::start(actor));
                }
                let _ = addresses_tx.send(addresses.clone());
                // Park until asked to stop (polling a std channel without blocking the system).
                loop {
                    if stop_rx.try_recv().is_ok() {
                        break;
                    }
                    actix::clock::sleep(Duration::from_millis(100)).await;
                }
                drop(addresses);
            });
        })
        .expect("the queue thread starts");
    // Every commit (a submission, a request ending) may make work runnable: wake the actors
    // at once instead of at their next tick. While LISTEN/NOTIFY works, `committed` is woken by
    // every commit of every process too, and each actor hears `NOTIFY iib_work` for its own
    // queue (sent when the read model shows the change) instead.
    let committed = runner.bus.committed();
    let wakeups = runner.bus.wakeups().clone();
    if let Ok(addresses) = addresses_rx.await {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = committed.notified() => {
                        if wakeups.listening() {
                            continue;
                        }
                        for address in &addresses {
                            address.do_send(queue_actor::Poll);
                        }
                    }
                    _ = stop.wait() => break,
                }
            }
        });
    }
    shutdown.wait().await;
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    // Running requests see the shutdown and hand back their claims: wait for them (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runner.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
