//! A real `iib serve` process on a free loopback port, with its own data directory.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
}

/// A free loopback port (the OS picks it; it is released before the server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `iib serve` with `settings` (name → value, as environment variables).
    pub async fn start(settings: &BTreeMap<String, String>) -> Self {
        Self::start_with(settings, false).await
    }

    pub async fn start_with(settings: &BTreeMap<String, String>, https: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_iib"));
        command
            .arg("serve")
            .env_clear()
            .env("IIB_DATA_DIR", dir.path())
            .env("IIB_LISTEN_ADDR", &addr)
            .env("IIB_LOG_LEVEL", "WARN")
            .envs(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().unwrap();
        let scheme = if https { "https" } else { "http" };
        let server = Self {
            child,
            base: format!("{scheme}://{addr}"),
            dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "iib serve did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
