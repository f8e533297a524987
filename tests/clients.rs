//! Real clients over HTTPS: `iiblib` (IIB's Python client, from PyPI) and a Rust client that
//! trusts only our test CA. The test command installs iiblib in a venv and names its Python in
//! `IIBLIB_PYTHON` (default `~/.cache/iib/iiblib-venv/bin/python`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::server::Server;

use support::tls::certificates;

async fn https_server(dir: &Path) -> (Server, PathBuf) {
    let (ca, cert, key) = certificates(dir);
    let mut settings = BTreeMap::new();
    settings.insert("IIB_TLS_CERT".to_string(), cert.display().to_string());
    settings.insert("IIB_TLS_KEY".to_string(), key.display().to_string());
    settings.insert(
        "IIB_REQUEST_LOGS_DIR".to_string(),
        dir.join("logs").display().to_string(),
    );
    (Server::start_with(&settings, true).await, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_with_https_links_to_a_client_that_trusts_our_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = https_server(dir.path()).await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let created: serde_json::Value = client
        .post(server.url("/api/v1/builds/rm"))
        .header("X-Remote-User", "bob@EXAMPLE.COM")
        .json(&serde_json::json!({"operators": ["kube-green"], "from_index": "r/index:v4.18", "binary_image": "r/opm:1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["request_type"], "rm");
    let logs = created["logs"]["url"].as_str().unwrap();
    assert!(logs.starts_with("https://127.0.0.1:"), "{logs}");
    // Plain HTTP on the TLS port does not get an answer.
    let plain = reqwest::Client::new()
        .get(
            server
                .url("/api/v1/healthcheck")
                .replace("https://", "http://"),
        )
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

fn iiblib_python() -> PathBuf {
    std::env::var_os("IIBLIB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/iib/iiblib-venv/bin/python")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iiblib_from_pypi_parses_our_answers_over_https() {
    let python = iiblib_python();
    assert!(
        python.exists(),
        "{} is missing: run tests/run-all.sh, which installs iiblib in a venv",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = https_server(dir.path()).await;
    let host = server.base.trim_start_matches("https://").to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/iiblib_check.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &host, &ca.display().to_string(), "bob@EXAMPLE.COM"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("iiblib OK"),
        "iiblib failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
