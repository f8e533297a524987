//! A real Kafka-compatible broker: tansu (crates.io, built by the test command into
//! `~/.cache/iib/tansu`, or `TANSU`), with memory storage on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    /// Where clients connect (the TLS terminator's address for a TLS broker).
    pub address: String,
    /// librdkafka properties a client needs for this broker (TLS settings).
    pub client: Vec<(String, String)>,
    tls: Option<Child>,
}

/// How a broker is started.
#[derive(Default, Clone)]
pub struct BrokerOptions {
    /// tansu's storage engine (default `memory://tansu/`).
    pub storage: Option<String>,
    /// Environment for tansu (e.g. the S3 settings of an `s3://` engine).
    pub env: Vec<(String, String)>,
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

    /// A broker on `address` with `options` (e.g. durable storage, to restart it).
    pub async fn start_with(address: &str, options: &BrokerOptions) -> Self {
        Self::launch(address, address, options)
            .await
            .expect("the tansu broker did not start")
    }

    /// A broker reached over TLS: tansu on a private port, behind socat terminating TLS with
    /// `cert`/`key` on the advertised address; clients trust `ca`.
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Self {
        let public = format!("127.0.0.1:{}", super::server::free_port());
        let private = format!("127.0.0.1:{}", super::server::free_port());
        let mut broker = Self::launch(&private, &public, &BrokerOptions::default())
            .await
            .expect("the tansu broker did not start");
        let port = public.rsplit(':').next().unwrap().to_string();
        let tls = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:{private}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed by tests/run-all.sh");
        let started = Instant::now();
        while std::net::TcpStream::connect(&public).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "socat did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker.address = public;
        broker.tls = Some(tls);
        broker.client = vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.location".into(), ca.display().to_string()),
        ];
        broker
    }

    async fn try_start(address: &str) -> Option<Self> {
        Self::launch(address, address, &BrokerOptions::default()).await
    }

    async fn launch(address: &str, advertised: &str, options: &BrokerOptions) -> Option<Self> {
        let binary = binary();
        assert!(
            binary.exists(),
            "{} is missing: run tests/run-all.sh, which builds tansu",
            binary.display()
        );
        {
            let address = address.to_string();
            let url = format!("tcp://{address}");
            let advertised = format!("tcp://{advertised}");
            let storage = options
                .storage
                .clone()
                .unwrap_or_else(|| "memory://tansu/".into());
            let mut child = Command::new(&binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .args(["--storage-engine", &storage])
                .envs(options.env.iter().cloned())
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
                    return Some(Self {
                        child,
                        address,
                        client: Vec::new(),
                        tls: None,
                    });
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

impl Broker {
    /// Stops the broker at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(tls) = &mut self.tls {
            let _ = tls.kill();
            let _ = tls.wait();
        }
    }
}
