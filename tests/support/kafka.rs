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
        let binary = binary();
        assert!(
            binary.exists(),
            "{} is missing: run tests/run-all.sh, which builds tansu",
            binary.display()
        );
        for _ in 0..5 {
            let port = super::server::free_port();
            let address = format!("127.0.0.1:{port}");
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
                    return Self { child, address };
                }
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("the tansu broker did not start");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
