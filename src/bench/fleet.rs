//! `iib bench fleet`: one `iib api` and 1, 2, 3... `iib worker` processes (this binary) on a
//! fresh PostgreSQL database each, adding one small bundle to a small index per request
//! against a local registry. Prints, with and without LISTEN/NOTIFY (`IIB_PG_NOTIFY`):
//! - sustained submissions/s and completions/s: `requests` adds posted at once by `clients`
//!   callers, until every one ended;
//! - the time from a request's submission to a worker claiming it (p50/p99) on an idle fleet:
//!   `probes` adds posted one at a time, each after the previous one ended and a random pause
//!   (so they do not line up with the pollers' ticks), timed from the events' own times.

use super::{push_files_image, synthetic_bundle};
use anyhow::{bail, Context, Result};
use iib_oci::{ClientOptions, Reference, RegistryClient};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one configuration measured.
struct Figures {
    submissions_per_second: f64,
    completions_per_second: f64,
    start_p50_ms: f64,
    start_p99_ms: f64,
    failed: usize,
}

/// Child processes killed when dropped.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `iib <args>` with `env` and returns it with the rest of the line starting with
/// `ready` on its stdout.
fn start(args: &[&str], env: &[(String, String)], ready: &str) -> Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .env_clear()
        .env("IIB_LOG_LEVEL", "WARN")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(ready) {
                    let rest = rest.to_string();
                    // Keep draining stdout so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines.by_ref() {});
                    return Ok((child, rest));
                }
            }
            _ => bail!("iib {args:?} did not start"),
        }
    }
}

pub async fn run(
    host: &str,
    admin_url: &str,
    workers: &[usize],
    requests: usize,
    probes: usize,
    clients: usize,
) -> Result<()> {
    let client = RegistryClient::new(ClientOptions::default())?;
    let run = format!("{:x}", chrono::Utc::now().timestamp_micros());
    // A binary image and a small index (5 packages × 4 bundles), then one new package per
    // request to add: each add reads the index, adds a bundle and pushes its own image.
    let binary: Reference = format!("{host}/bench/opm-{run}:v4.18").parse()?;
    push_files_image(
        &client,
        &binary,
        &BTreeMap::from([("bin/opm".to_string(), super::noise("opm", 1 << 20))]),
        &BTreeMap::new(),
    )
    .await?;
    let mut catalog = iib_fbc::declcfg::DeclarativeConfig::default();
    super::add_synthetic_packages(&mut catalog, host, 5, 4)?;
    let index: Reference = format!("{host}/bench/index-{run}:v4.18").parse()?;
    super::push_catalog_index(&client, &binary, &index, &catalog).await?;
    let total_runs = workers.len() * 2;
    let mut bundles = Vec::new();
    let per_run = requests + probes;
    for r in 0..per_run * total_runs {
        let package = format!("bench-extra-{r}");
        let files: BTreeMap<String, Vec<u8>> = synthetic_bundle(&package, "1.0.0", None)
            .into_iter()
            .collect();
        let labels = BTreeMap::from([(
            "operators.operatorframework.io.bundle.package.v1".to_string(),
            package.clone(),
        )]);
        let reference: Reference = format!("{host}/bench/{package}-bundle:1.0.0-{run}").parse()?;
        push_files_image(&client, &reference, &files, &labels).await?;
        bundles.push(reference.to_string());
    }
    eprintln!(
        "from_index {index}: {} bundles; per run {requests} adds of one new package posted by {clients} clients at once, then {probes} one at a time",
        catalog.bundles.len()
    );
    println!("| LISTEN/NOTIFY | workers | submissions/s | completions/s | idle POST → claimed p50 | p99 | failed |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut chunks = bundles.chunks(per_run);
    for notify in [true, false] {
        for &count in workers {
            let chunk = chunks.next().expect("enough bundles").to_vec();
            let (burst, probing) = chunk.split_at(requests);
            let figures = one(
                host,
                admin_url,
                count,
                notify,
                burst,
                probing,
                &index.to_string(),
                &binary.to_string(),
                clients,
            )
            .await?;
            println!(
                "| {} | {count} | {:.1} | {:.2} | {:.0} ms | {:.0} ms | {} |",
                if notify { "on" } else { "off (100 ms poll)" },
                figures.submissions_per_second,
                figures.completions_per_second,
                figures.start_p50_ms,
                figures.start_p99_ms,
                figures.failed,
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one(
    host: &str,
    admin_url: &str,
    workers: usize,
    notify: bool,
    bundles: &[String],
    probes: &[String],
    index: &str,
    binary: &str,
    clients: usize,
) -> Result<Figures> {
    // A fresh database.
    let name = format!("iib_bench_fleet_{}", chrono::Utc::now().timestamp_micros());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("cannot reach PostgreSQL (--database-url)")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    let url = format!("{base}/{name}");
    let logs = tempfile::tempdir()?;
    let env: Vec<(String, String)> = [
        ("IIB_DATABASE_URL", url.as_str()),
        ("IIB_PG_NOTIFY", if notify { "true" } else { "false" }),
        ("IIB_REGISTRY", host),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap_or(".")),
        ("IIB_LISTEN_ADDR", "127.0.0.1:0"),
        ("IIB_METRICS_ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut fleet = Fleet(Vec::new());
    // Migrations first, so the processes do not race to apply them.
    let migrated = Command::new(std::env::current_exe()?)
        .arg("migrate")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .status()?;
    if !migrated.success() {
        bail!("iib migrate failed");
    }
    let (api, base_url) = start(&["api"], &env, "iib: API listening on ")?;
    fleet.0.push(api);
    for _ in 0..workers {
        let (worker, _) = start(&["worker"], &env, "iib: metrics and probes on ")?;
        fleet.0.push(worker);
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut posting = tokio::task::JoinSet::new();
    for lane in 0..clients {
        let mine: Vec<String> = bundles
            .iter()
            .skip(lane)
            .step_by(clients)
            .cloned()
            .collect();
        let (http, base_url, index, binary) = (
            http.clone(),
            base_url.clone(),
            index.to_string(),
            binary.to_string(),
        );
        posting.spawn(async move {
            for bundle in mine {
                let answer: serde_json::Value = http
                    .post(format!("{base_url}/api/v1/builds/add"))
                    .json(
                        &json!({"bundles": [bundle], "from_index": index, "binary_image": binary}),
                    )
                    .send()
                    .await?
                    .json()
                    .await?;
                if answer["id"].as_u64().is_none() {
                    bail!("the add was refused: {answer}");
                }
            }
            Ok(())
        });
    }
    while let Some(posted) = posting.join_next().await {
        posted??;
    }
    let submitted_in = started.elapsed();
    // Until every request ended.
    let mut db = PgConnection::connect(&url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let finished_in = loop {
        let ended: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE event_type IN ('RequestCompleted', 'RequestFailed')",
        )
        .fetch_one(&mut db)
        .await?;
        if ended as usize >= bundles.len() {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "only {ended} of {} requests ended in 10 minutes",
                bundles.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // On the idle fleet: one at a time.
    let mut probe_ids = std::collections::HashSet::new();
    for (n, bundle) in probes.iter().enumerate() {
        let pause = 50 + (n as u64 * 7919) % 400;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let answer: serde_json::Value = http
            .post(format!("{base_url}/api/v1/builds/add"))
            .json(&json!({"bundles": [bundle], "from_index": index, "binary_image": binary}))
            .send()
            .await?
            .json()
            .await?;
        let Some(id) = answer["id"].as_u64() else {
            bail!("the add was refused: {answer}");
        };
        probe_ids.insert(id.to_string());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ended: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE aggregate_type = 'BuildRequest' \
                 AND aggregate_id = $1 AND event_type IN ('RequestCompleted', 'RequestFailed')",
            )
            .bind(id.to_string())
            .fetch_one(&mut db)
            .await?;
            if ended > 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("request {id} did not end in 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Submission → first claim, from the events' own times (both stamped by this machine).
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, recorded_at FROM events \
         WHERE event_type IN ('RequestSubmitted', 'RequestClaimed', 'RequestFailed') \
         ORDER BY global_position",
    )
    .fetch_all(&mut db)
    .await?;
    let mut submitted: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut waits = Vec::new();
    let mut failed = 0;
    for (id, event, at) in rows {
        let at = crate::store::parse_time(&at)?;
        match event.as_str() {
            "RequestSubmitted" => {
                submitted.insert(id, at);
            }
            "RequestClaimed" => {
                if let (true, Some(from)) = (probe_ids.contains(&id), submitted.remove(&id)) {
                    waits.push((at - from).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            _ => failed += 1,
        }
    }
    drop(fleet);
    db.close().await?;
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    waits.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        waits
            .get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Figures {
        submissions_per_second: bundles.len() as f64 / submitted_in.as_secs_f64(),
        completions_per_second: bundles.len() as f64 / finished_in.as_secs_f64(),
        start_p50_ms: at(0.5),
        start_p99_ms: at(0.99),
        failed,
    })
}
