//! The `iib` command line: `serve`, `api`, `worker`, `migrate`, `relay`, `replay`, `config`,
//! `catalog`, `bench`.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::FutureExt;
use iib::command_bus::CommandBus;
use iib::projector::Projector;
use iib::settings::Settings;
use iib::store::Store;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "iib",
    version,
    about = "IIB Image Builder: build operator index images, natively"
)]
struct Cli {
    /// A TOML file with settings (the same keys as the environment; the environment wins).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API and workers in one process (the embedded default: SQLite under IIB_DATA_DIR).
    Serve,
    /// The REST API alone, without workers.
    Api,
    /// The background work alone: the queue actors, the projector, secret expiry (and the
    /// Kafka relay when IIB_KAFKA_BROKERS is set).
    Worker {
        /// Serve only these queues, comma-separated (`default` is the default queue); the same
        /// as IIB_WORKER_QUEUES, which this overrides.
        #[arg(long, value_name = "QUEUE,...")]
        queues: Option<String>,
    },
    /// Applies database migrations and exits.
    Migrate,
    /// The Kafka relay alone (it also runs inside `serve` and `worker` when IIB_KAFKA_BROKERS is set).
    Relay,
    /// Audit and recovery from the event store.
    Replay {
        /// Print the whole history of this request.
        #[arg(long, conflicts_with = "rebuild_projections")]
        request: Option<u64>,
        /// Print events as JSON lines instead of text.
        #[arg(long, requires = "request")]
        json: bool,
        /// Rebuild the read model from all events, showing progress and the rate.
        #[arg(long)]
        rebuild_projections: bool,
        /// Republish the Kafka messages of every event after --from (for a new consumer).
        #[arg(long, conflicts_with_all = ["request", "rebuild_projections"])]
        to_kafka: bool,
        /// The global position to republish after (0: everything).
        #[arg(long, default_value_t = 0, requires = "to_kafka")]
        from: i64,
    },
    /// Prints the effective settings: every setting, its value (secrets masked) and where it
    /// came from (default, file or environment); exits 1 with the problem when they are invalid.
    Config {
        /// table or json.
        #[arg(short, long, value_enum, default_value = "table")]
        output: ConfigOutput,
    },
    /// The catalog engine on its own (a native opm).
    Catalog {
        #[command(subcommand)]
        catalog: CatalogCommand,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ConfigOutput {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Validates a file-based catalog as `opm validate` does: exit 1 and opm's tree of problems.
    Validate {
        /// The catalog directory.
        dir: PathBuf,
    },
    /// Renders bundle images, bundle directories and catalog directories as `opm render`
    /// does, printing one catalog.
    Render {
        /// Bundle image pull specs, bundle directories (`manifests/` and `metadata/`) or
        /// catalog directories.
        #[arg(required = true)]
        refs: Vec<String>,
        /// The image pull spec a bundle directory stands for.
        #[arg(long)]
        image: Option<String>,
        #[arg(long, value_enum, default_value = "none")]
        migrate_level: iib::catalog_cli::MigrateLevel,
        /// json or yaml.
        #[arg(short, long, default_value = "json")]
        output: iib_fbc::write::Format,
    },
    /// Adds bundles to a file-based catalog directory (made when missing), as IIB's opm adds
    /// them, and writes it back as opm writes catalogs.
    Add {
        /// The catalog directory.
        #[arg(long)]
        catalog: PathBuf,
        /// Bundle image pull specs or bundle directories.
        #[arg(required = true)]
        refs: Vec<String>,
        /// The image pull spec a bundle directory stands for.
        #[arg(long)]
        image: Option<String>,
        /// How channel graphs are updated: replaces, semver or semver-skippatch.
        #[arg(long, default_value = "replaces", value_parser = parse_graph_mode)]
        mode: iib_fbc::add::GraphMode,
        /// Replace a bundle of the same name when it heads every channel it is in.
        #[arg(long)]
        overwrite_latest: bool,
        #[arg(long, value_enum, default_value = "bundle-object-to-csv-metadata")]
        migrate_level: iib::catalog_cli::MigrateLevel,
        /// json or yaml.
        #[arg(short, long, default_value = "json")]
        output: iib_fbc::write::Format,
    },
    /// Converts a legacy SQLite index database (opm's `index.db`) to a file-based catalog
    /// directory, as `opm migrate` does.
    Migrate {
        /// The index database.
        index_db: PathBuf,
        /// The catalog directory to write (must be empty or missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "bundle-object-to-csv-metadata")]
        migrate_level: iib::catalog_cli::MigrateLevel,
        /// json or yaml.
        #[arg(short, long, default_value = "json")]
        output: iib_fbc::write::Format,
    },
    /// Removes packages from a file-based catalog directory.
    Rm {
        /// The catalog directory.
        #[arg(long)]
        catalog: PathBuf,
        #[arg(required = true)]
        packages: Vec<String>,
        /// json or yaml.
        #[arg(short, long, default_value = "json")]
        output: iib_fbc::write::Format,
    },
}

fn parse_graph_mode(text: &str) -> Result<iib_fbc::add::GraphMode, String> {
    iib_fbc::add::GraphMode::parse(text).ok_or_else(|| {
        format!("invalid graph update mode {text:?}: use replaces, semver or semver-skippatch")
    })
}

#[derive(Subcommand)]
enum Bench {
    /// Fills a fresh store with requests (10 events each) and times a projection rebuild.
    Rebuild {
        /// Roughly how many events to write.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// The database to fill (default: a new SQLite file in a temporary directory).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Pushes, copies and builds multi-arch images against a registry, printing seconds and
    /// bytes uploaded (`deploy/bench-registry.sh` starts one).
    Registry {
        /// `host:port` of the registry (plain HTTP on loopback).
        #[arg(long)]
        registry: String,
        #[arg(long, default_value_t = 50)]
        base_mb: usize,
        #[arg(long, default_value_t = 5)]
        layer_mb: usize,
    },
    /// Builds a catalog of PACKAGES × BUNDLES and times load + validate + write, and adding
    /// one bundle to it (plus the fixtures' community catalog when given).
    Catalog {
        #[arg(long, default_value_t = 100)]
        packages: usize,
        #[arg(long, default_value_t = 10)]
        bundles: usize,
        /// The shared fixtures directory, to time the real community catalog too.
        #[arg(long)]
        fixtures: Option<PathBuf>,
    },
    /// Times POST add of one bundle to an index of PACKAGES × BUNDLES until complete, through
    /// `iib serve` against the registry at HOST (`deploy/bench-registry.sh add` starts one).
    Add {
        #[arg(long)]
        registry: String,
        #[arg(long, default_value_t = 100)]
        packages: usize,
        #[arg(long, default_value_t = 10)]
        bundles: usize,
        #[arg(long, default_value_t = 10)]
        requests: usize,
        /// Use the fixtures' community catalog as the index instead.
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Each request adds the next version on top of the previous one and overwrites the
        /// index (`overwrite_from_index`), as a release pipeline does.
        #[arg(long)]
        chain: bool,
    },
    /// Times the Kafka relay against the broker at BROKERS: commit-to-consumer latency of each
    /// build.state message, and a cold replay (`deploy/bench-kafka.sh` starts tansu).
    Kafka {
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 5000)]
        requests: u64,
    },
    /// One `iib api` and N `iib worker` processes on a fresh PostgreSQL database per run, adding
    /// small bundles against the registry at HOST: submissions/s, completions/s and the time
    /// from POST to a worker claiming the request, with and without LISTEN/NOTIFY
    /// (`deploy/bench-registry.sh fleet` starts the registry).
    Fleet {
        #[arg(long)]
        registry: String,
        /// A PostgreSQL URL whose user may create databases.
        #[arg(long)]
        database_url: String,
        /// The fleet sizes to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
        workers: Vec<usize>,
        /// Adds posted at once per run (throughput).
        #[arg(long, default_value_t = 60)]
        requests: usize,
        /// Adds posted one at a time on the idle fleet per run (POST-to-claim latency).
        #[arg(long, default_value_t = 20)]
        probes: usize,
        /// Callers posting at once.
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// Fills the configured (empty) store with finished requests, for API benchmarks.
    Seed {
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
    },
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("iib: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    // The command line's settings come after the environment, so they win.
    let mut environment: Vec<(String, String)> = std::env::vars().collect();
    if let Command::Worker {
        queues: Some(queues),
    } = &cli.command
    {
        environment.push(("IIB_WORKER_QUEUES".into(), queues.clone()));
    }
    let settings = Settings::load_with(cli.config.as_deref(), environment)?;
    // Traces are exported, and metrics recorded, by the long-running commands only.
    let long_running = matches!(
        cli.command,
        Command::Serve | Command::Api | Command::Worker { .. } | Command::Relay
    );
    let telemetry =
        iib::telemetry::init(&settings.telemetry, long_running).map_err(|e| anyhow::anyhow!(e))?;
    if !matches!(cli.command, Command::Config { .. }) {
        settings.log_unused();
    }
    if long_running {
        // Before anything runs, so that nothing recorded is lost.
        iib::metrics::install();
    }
    let result = command(cli, settings).await;
    // Off the async runtime's threads: the exporter blocks while it sends the last spans.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}

async fn command(cli: Cli, settings: Settings) -> Result<()> {
    match cli.command {
        Command::Serve => serve(settings, true, true).await,
        Command::Api => serve(settings, true, false).await,
        Command::Worker { .. } => serve(settings, false, true).await,
        Command::Config { output } => {
            let entries = settings.entries();
            let text = match output {
                ConfigOutput::Table => iib::settings::show::to_table(&entries),
                ConfigOutput::Json => {
                    format!("{:#}\n", iib::settings::show::to_json(&entries))
                }
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Relay => {
            let kafka = settings
                .kafka
                .clone()
                .ok_or_else(|| anyhow::anyhow!("set IIB_KAFKA_BROKERS to run the relay"))?;
            let store = open_migrated(&settings).await?;
            let relay = iib::streaming::relay::Relay::new(store.clone(), kafka)?;
            let shutdown = iib::shutdown::Shutdown::new();
            let bus = CommandBus::new(store.clone(), settings.storage.secret_lifetime);
            // Other processes' commits wake the relay through LISTEN/NOTIFY (PostgreSQL).
            tokio::spawn(
                bus.wakeups()
                    .clone()
                    .listen(store.clone(), shutdown.clone()),
            );
            if let Some(addr) = settings.listen.ops {
                let state = iib::api::ApiState::new(
                    store.clone(),
                    bus.clone(),
                    settings.api.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(serve_ops(addr, state, shutdown.clone())?);
            }
            let stop = shutdown.clone();
            let running = tokio::spawn(relay.run(bus.committed(), stop));
            shutdown.on_signal().await;
            running.await?;
            Ok(())
        }
        Command::Migrate => {
            let store = open(&settings).await?;
            let applied = store.migrate().await?;
            if applied.is_empty() {
                println!("the database is up to date");
            } else {
                println!("applied migrations: {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Replay {
            request,
            json,
            rebuild_projections,
            to_kafka,
            from,
        } => {
            let store = open_migrated(&settings).await?;
            if to_kafka {
                let kafka = settings
                    .kafka
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("set IIB_KAFKA_BROKERS to replay to Kafka"))?;
                let relay = iib::streaming::relay::Relay::new(store, kafka)?;
                relay.ensure_topics().await?;
                let sent = relay.replay(from).await?;
                println!("republished {sent} messages of the events after position {from}");
                Ok(())
            } else if let Some(id) = request {
                let events = iib::replay::request_history(&store, id).await?;
                if events.is_empty() {
                    bail!("request {id} does not exist");
                }
                let mut out = std::io::stdout().lock();
                if json {
                    for event in &events {
                        writeln!(out, "{}", iib::replay::to_json(event))?;
                    }
                } else {
                    iib::replay::print_history(&mut out, &events)?;
                }
                Ok(())
            } else if rebuild_projections {
                rebuild(&store).await
            } else {
                bail!("say what to replay: --request N or --rebuild-projections")
            }
        }
        Command::Catalog {
            catalog: CatalogCommand::Validate { dir },
        } => {
            let config = iib_fbc::load::load_dir(&dir)?;
            match iib_fbc::model::validate(&config) {
                Ok(()) => Ok(()),
                Err(problems) => {
                    eprintln!("{problems}");
                    std::process::exit(1);
                }
            }
        }
        Command::Catalog {
            catalog:
                CatalogCommand::Render {
                    refs,
                    image,
                    migrate_level,
                    output,
                },
        } => {
            let mut sources = iib::catalog_cli::Sources::new(client_options(&settings)?);
            let text = iib::catalog_cli::render(
                &mut sources,
                &refs,
                image.as_deref(),
                migrate_level,
                output,
            )
            .await?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Catalog {
            catalog:
                CatalogCommand::Add {
                    catalog,
                    refs,
                    image,
                    mode,
                    overwrite_latest,
                    migrate_level,
                    output,
                },
        } => {
            let mut sources = iib::catalog_cli::Sources::new(client_options(&settings)?);
            let catalog = iib::catalog_cli::catalog_dir(catalog)?;
            let lines = iib::catalog_cli::add(
                &mut sources,
                &catalog,
                &refs,
                image.as_deref(),
                mode,
                overwrite_latest,
                migrate_level,
                output,
            )
            .await?;
            for line in lines {
                eprintln!("{line}");
            }
            Ok(())
        }
        Command::Catalog {
            catalog:
                CatalogCommand::Rm {
                    catalog,
                    packages,
                    output,
                },
        } => iib::catalog_cli::rm(&catalog, &packages, output),
        Command::Catalog {
            catalog:
                CatalogCommand::Migrate {
                    index_db,
                    out,
                    migrate_level,
                    output,
                },
        } => iib::catalog_cli::migrate(&index_db, &out, migrate_level, output).await,
        Command::Bench {
            bench:
                Bench::Rebuild {
                    events,
                    database_url,
                },
        } => iib::bench::rebuild(events, database_url).await,
        Command::Bench {
            bench:
                Bench::Registry {
                    registry,
                    base_mb,
                    layer_mb,
                },
        } => iib::bench::registry(&registry, base_mb, layer_mb).await,
        Command::Bench {
            bench:
                Bench::Catalog {
                    packages,
                    bundles,
                    fixtures,
                },
        } => iib::bench::catalog(packages, bundles, fixtures),
        Command::Bench {
            bench:
                Bench::Add {
                    registry,
                    packages,
                    bundles,
                    requests,
                    fixtures,
                    chain,
                },
        } => iib::bench::add(&registry, packages, bundles, requests, fixtures, chain).await,
        Command::Bench {
            bench: Bench::Kafka { brokers, requests },
        } => iib::bench::kafka(&brokers, requests).await,
        Command::Bench {
            bench:
                Bench::Fleet {
                    registry,
                    database_url,
                    workers,
                    requests,
                    probes,
                    clients,
                },
        } => {
            iib::bench::fleet(
                &registry,
                &database_url,
                &workers,
                requests,
                probes,
                clients.max(1),
            )
            .await
        }
        Command::Bench {
            bench: Bench::Seed { requests },
        } => {
            open(&settings).await?;
            iib::bench::seed(&settings.storage.database_url, requests).await
        }
    }
}

fn client_options(settings: &Settings) -> Result<iib_oci::ClientOptions> {
    settings
        .registry
        .client_options()
        .map_err(|e| anyhow::anyhow!(e))
}

async fn open(settings: &Settings) -> Result<Store> {
    let storage = &settings.storage;
    if storage.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&storage.data_dir).with_context(|| {
            format!("cannot create IIB_DATA_DIR {}", storage.data_dir.display())
        })?;
    }
    let store = Store::connect(&storage.database_url)
        .await
        .with_context(|| {
            "cannot open the database (IIB_DATABASE_URL); is it running and reachable?"
        })?;
    Ok(store
        .with_secret_key(storage.secret_key.clone())
        .with_notifies(storage.pg_notify))
}

async fn open_migrated(settings: &Settings) -> Result<Store> {
    let store = open(settings).await?;
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied database migrations");
    }
    Ok(store)
}

async fn rebuild(store: &Store) -> Result<()> {
    let projector = Projector::new(store.clone());
    let mut last_shown = std::time::Instant::now();
    let report = projector
        .rebuild(|done, head| {
            if last_shown.elapsed() > Duration::from_millis(500) {
                eprintln!("  read {done} of {head} events");
                last_shown = std::time::Instant::now();
            }
        })
        .await?;
    println!(
        "rebuilt the read model: {} events, {} requests, {} batches in {:.3} s ({:.0} events/s)",
        report.events,
        report.requests,
        report.batches,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    Ok(())
}

/// Headers must arrive within `timeout` on every request of a connection (slowloris).
fn header_timeout<A>(server: &mut axum_server::Server<std::net::SocketAddr, A>, timeout: Duration) {
    server.http_builder().http1().header_read_timeout(timeout);
}

/// Binds `IIB_METRICS_ADDR` and returns the task serving `/metrics`, `/livez` and `/readyz`
/// there until shutdown (for processes without the API).
fn serve_ops(
    addr: std::net::SocketAddr,
    state: iib::api::ApiState,
    shutdown: iib::shutdown::Shutdown,
) -> Result<impl std::future::Future<Output = ()>> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (IIB_METRICS_ADDR)"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(%bound, "metrics and probes listening");
    // One line on stdout for whoever started us (with port 0: the port).
    println!("iib: metrics and probes on http://{bound}");
    Ok(async move {
        let app = iib::api::ops_router(state);
        let stop = async move { shutdown.wait().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "the metrics and probes listener stopped");
        }
    })
}

async fn serve(settings: Settings, api: bool, workers: bool) -> Result<()> {
    let store = open_migrated(&settings).await?;
    let bus = CommandBus::new(store.clone(), settings.storage.secret_lifetime);
    let shutdown = iib::shutdown::Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Other processes' commits and work reach this one through LISTEN/NOTIFY (PostgreSQL).
    tasks.spawn(
        bus.wakeups()
            .clone()
            .listen(store.clone(), shutdown.clone()),
    );
    if workers {
        tasks.spawn(iib::background::run_projector(
            Projector::new(store.clone()),
            bus.committed(),
            shutdown.clone(),
        ));
        tasks.spawn(iib::background::purge_secrets(
            store.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(iib::background::purge_request_data_periodically(
            store.clone(),
            settings.storage.retention.clone(),
            shutdown.clone(),
        ));
        if let Some(kafka) = settings.kafka.clone() {
            let relay = iib::streaming::relay::Relay::new(store.clone(), kafka)?;
            tasks.spawn(relay.run(bus.committed(), shutdown.clone()));
        }
        if settings.workers.queue_actors {
            let workers = iib::workers::run(
                store.clone(),
                bus.clone(),
                client_options(&settings)?,
                settings.workers.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = workers.await {
                    tracing::error!(error = %e, "the workers could not start");
                }
            });
        }
    }
    if !api {
        if let Some(addr) = settings.listen.ops {
            tasks.spawn(serve_ops(
                addr,
                iib::api::ApiState::new(
                    store.clone(),
                    bus.clone(),
                    settings.api.clone(),
                    shutdown.clone(),
                ),
                shutdown.clone(),
            )?);
        }
    }
    if api {
        let addr = settings.listen.addr;
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (IIB_LISTEN_ADDR)"))?;
        listener.set_nonblocking(true)?;
        let tls = match &settings.listen.tls {
            Some(files) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot load the TLS certificate {} and key {} (IIB_TLS_CERT, IIB_TLS_KEY)",
                            files.cert.display(),
                            files.key.display()
                        )
                    })?,
            ),
            None => None,
        };
        let http = settings.api.http;
        settings.api.auth.log_trust_model();
        let app = iib::api::router(iib::api::ApiState::new(
            store.clone(),
            bus.clone(),
            settings.api.clone(),
            shutdown.clone(),
        ))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let bound = listener.local_addr()?;
        tracing::info!(
            %bound,
            https = tls.is_some(),
            max_connections = http.max_connections,
            max_concurrent_requests = http.max_concurrent_requests,
            header_timeout_seconds = http.header_timeout.as_secs(),
            request_timeout_seconds = http.request_timeout.as_secs(),
            "iib API listening"
        );
        // One line on stdout for whoever started us (with IIB_LISTEN_ADDR port 0: the port).
        println!(
            "iib: API listening on {}://{bound}",
            if tls.is_some() { "https" } else { "http" }
        );
        let handle = axum_server::Handle::new();
        let stop = shutdown.clone();
        let stopping = handle.clone();
        tasks.spawn(async move {
            stop.wait().await;
            stopping.graceful_shutdown(Some(Duration::from_secs(30)));
        });
        let limited = iib::api::admission::LimitedAcceptor::new(
            axum_server::accept::DefaultAcceptor::new(),
            http.max_connections,
        );
        let served = match tls {
            Some(tls) => {
                let mut server = axum_server::from_tcp(listener)?
                    .acceptor(axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(limited));
                header_timeout(&mut server, http.header_timeout);
                server
                    .first_request_timeout(http.header_timeout)
                    .handle(handle)
                    .serve(app)
                    .boxed()
            }
            None => {
                let mut server = axum_server::from_tcp(listener)?.acceptor(limited);
                header_timeout(&mut server, http.header_timeout);
                server
                    .first_request_timeout(http.header_timeout)
                    .handle(handle)
                    .serve(app)
                    .boxed()
            }
        };
        tasks.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
    }
    shutdown.on_signal().await;
    tracing::info!("shutting down: finishing the current steps");
    while tasks.join_next().await.is_some() {}
    store.close().await;
    Ok(())
}
