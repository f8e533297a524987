//! A real Kafka-compatible broker: tansu (crates.io, built by the test command into
//! `~/.cache/iib/tansu`, or `TANSU`), with memory storage on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub address: String,
}

fn binary() -> PathBuf {
    std::env::var_os("TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/iib/tansu/bin/tansu")
        })
}

impl Broker {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let address = format!("127.0.0.1:{}", super::server::free_port());
            if let Some(broker) = Self::try_start(&address).await {
                return broker;
            }
        }
        panic!("the tansu broker did not start");
    }

    /// A broker on a given address (e.g. one a client already points at).
    pub async fn start_at(address: &str) -> Self {
        Self::try_start(address)
            .await
            .expect("the tansu broker did not start")
    }

    async fn try_start(address: &str) -> Option<Self> {
        let binary = binary();
        assert!(
            binary.exists(),
            "{} is missing: run tests/run-all.sh, which builds tansu",
            binary.display()
        );
        {
            let address = address.to_string();
            let url = format!("tcp://{address}");
            let mut child = Command::new(&binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(&address).is_ok() {
                    return Some(Self { child, address });
                }
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
