//! A real container registry (Debian's `docker-registry`, the CNCF distribution registry) on a
//! free loopback port, with its storage in a temporary directory; stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

const BINARY: &str = "/usr/bin/docker-registry";

/// A loopback port free right now (the OS may hand it out again; `start` retries).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub async fn start() -> Self {
        Self::start_with_auth(None).await
    }

    /// A registry that asks for basic auth (an htpasswd file made with Apache's `htpasswd`).
    pub async fn start_with_auth(user_and_password: Option<(&str, &str)>) -> Self {
        Self::start_with_config(user_and_password, None).await
    }

    /// A registry whose `auth:` section is `auth_config` (e.g. token auth).
    pub async fn start_with_auth_config(auth_config: &str) -> Self {
        Self::start_with_config(None, Some(auth_config)).await
    }

    async fn start_with_config(
        user_and_password: Option<(&str, &str)>,
        auth_config: Option<&str>,
    ) -> Self {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: run tests/run-all.sh, which installs Debian's docker-registry"
        );
        // A port the OS just freed can be taken by another test before we bind it: retry.
        for _ in 0..5 {
            if let Some(registry) = Self::try_start(user_and_password, auth_config).await {
                return registry;
            }
        }
        panic!("the registry did not start");
    }

    async fn try_start(
        user_and_password: Option<(&str, &str)>,
        auth_config: Option<&str>,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = user_and_password {
            let out = Command::new("htpasswd")
                .args(["-nbB", user, password])
                .output()
                .expect("htpasswd (Debian's apache2-utils) is needed; run tests/run-all.sh");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, out.stdout).unwrap();
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Some(auth) = auth_config {
            text.push_str(auth);
        }
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            // Only a registry answers /v2/ with this header: not some other test's server.
            if let Ok(r) = reqwest::get(format!("http://{host}/v2/")).await {
                if r.headers().contains_key("docker-distribution-api-version") {
                    return Some(Self {
                        child,
                        host,
                        _dir: dir,
                    });
                }
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
