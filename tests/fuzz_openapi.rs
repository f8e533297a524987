//! schemathesis (PyPI) fuzzes our OpenAPI document against a live `iib serve`: no generated
//! call may get a 5xx. The test command installs schemathesis in a cached venv and names it
//! in `SCHEMATHESIS` (default `~/.cache/iib/schemathesis-venv/bin/schemathesis`).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use support::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors() {
    let tool = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/iib/schemathesis-venv/bin/schemathesis")
        });
    assert!(
        tool.exists(),
        "{} is missing: run tests/run-all.sh, which installs schemathesis in a venv",
        tool.display()
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = BTreeMap::new();
    settings.insert(
        "IIB_WORKER_USERNAMES".to_string(),
        r#"["fuzz"]"#.to_string(),
    );
    settings.insert(
        "IIB_REQUEST_LOGS_DIR".to_string(),
        scratch.path().join("logs").display().to_string(),
    );
    let server = Server::start(&settings).await;
    let schema = server.url("/api/v1/openapi.json");
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .args(["run", &schema, "--url", &base, "-c", "not_a_server_error"])
            .args([
                "-H",
                "X-Remote-User: fuzz",
                "--max-examples",
                "25",
                "--seed",
                "42",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.contains("generated,"))
        .unwrap_or("no summary")
        .trim()
        .to_string();
    println!("schemathesis: {summary}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("passed"), "{summary}");
}
