//! A real `iib serve` process on a loopback port it picks itself, with its own data directory.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub base: String,
    /// The data directory (a temporary one unless the caller gave one).
    pub data: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A free loopback port (the OS picks it; it is released before the caller binds it).
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
        let mut server = Self::start_in(dir.path(), settings, https).await;
        server._dir = Some(dir);
        server
    }

    /// Starts `iib serve` on the data directory `data` (e.g. to restart on the same database).
    pub async fn start_in(
        data: &std::path::Path,
        settings: &BTreeMap<String, String>,
        https: bool,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_iib"))
            .arg("serve")
            .env_clear()
            .env("IIB_DATA_DIR", data)
            // Port 0: the server binds a free port itself and says which on stdout.
            .env("IIB_LISTEN_ADDR", "127.0.0.1:0")
            .env("IIB_LOG_LEVEL", "WARN")
            // The API tests drive requests' states themselves; worker tests turn them on.
            .env("IIB_QUEUE_ACTORS", "false")
            .envs(settings)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = announced(&mut child, API_LISTENING, "serve").await;
        assert_eq!(base.starts_with("https://"), https, "{base}");
        Self {
            child,
            base,
            data: data.to_path_buf(),
            _dir: None,
        }
    }

    /// Starts `iib <args>` with exactly `settings` as its environment (no data directory, no
    /// defaults of the tests'), and waits for the line on stdout starting with `ready` (`iib:
    /// API listening on ` or `iib: metrics and probes on `); `base` is what follows it.
    pub async fn start_command(
        args: &[&str],
        settings: &BTreeMap<String, String>,
        ready: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_iib"))
            .args(args)
            .env_clear()
            .env("IIB_DATA_DIR", dir.path())
            .env("IIB_LOG_LEVEL", "WARN")
            .envs(settings)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = announced(&mut child, ready, &args.join(" ")).await;
        Self {
            child,
            base,
            data: dir.path().to_path_buf(),
            _dir: Some(dir),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Server {
    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// Kills the process at once (SIGKILL): no shutdown, no hand-back.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `iib serve` and `iib api` print on stdout before the URL they listen on.
pub const API_LISTENING: &str = "iib: API listening on ";
/// What `iib worker` and `iib relay` print before the URL of their metrics and probes.
pub const OPS_LISTENING: &str = "iib: metrics and probes on ";

/// Waits (up to 30 s) for the line on `child`'s piped stdout that starts with `ready`, and
/// returns the rest of it (the URL it listens on); panics when `iib <what>` exits first.
pub async fn announced(child: &mut Child, ready: &str, what: &str) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix(&ready) {
                let _ = sender.send(rest.to_string());
            }
        }
    });
    let started = Instant::now();
    loop {
        if let Ok(rest) = receiver.try_recv() {
            return rest;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("iib {what} exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "iib {what} did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
