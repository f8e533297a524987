//! A real S3-compatible server for tests: moto's server (`moto[server]` from PyPI, installed by
//! tests/run-all.sh into a cached venv; `MOTO_SERVER` names its binary) on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

fn binary() -> String {
    std::env::var("MOTO_SERVER").unwrap_or_else(|_| {
        format!(
            "{}/.cache/iib/moto-venv/bin/moto_server",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    })
}

impl S3Server {
    pub async fn start() -> Self {
        let binary = binary();
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: run tests/run-all.sh, which installs moto[server]"
        );
        let port = super::server::free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{endpoint}/")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, endpoint }
    }

    /// The AWS settings that point a client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Creates a bucket (moto accepts any credentials).
    pub async fn create_bucket(&self, name: &str) {
        let answer = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{}",
            answer.text().await.unwrap()
        );
    }

    /// A signed client of `bucket` on this server.
    pub fn bucket(&self, bucket: &str) -> iib::artifacts::S3Bucket {
        iib::artifacts::S3Bucket::new(
            bucket,
            "us-east-1",
            Some(&self.endpoint),
            ("testing", "testing", None),
        )
    }

    /// The bucket's listing (S3's XML), for diagnostics.
    pub fn listing(&self, bucket: &str) -> Vec<u8> {
        Command::new("curl")
            .args(["-s", &format!("{}/{bucket}?list-type=2", self.endpoint)])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
