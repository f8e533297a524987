//! A request's own log: every step's lines, in `<IIB_REQUEST_LOGS_DIR>/<id>.log` (served by
//! `GET /builds/<id>/logs`), and in the process log with the request id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct RequestLog {
    request_id: u64,
    file: Option<Arc<Mutex<std::fs::File>>>,
    path: Option<PathBuf>,
}

impl RequestLog {
    /// Opens (appends to) the request's log file when `dir` is set.
    pub fn open(dir: Option<&Path>, request_id: u64) -> std::io::Result<Self> {
        let (file, path) = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("{request_id}.log"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                (Some(Arc::new(Mutex::new(file))), Some(path))
            }
            None => (None, None),
        };
        Ok(Self {
            request_id,
            file,
            path,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn write(&self, level: &str, message: &str) {
        if let Some(file) = &self.file {
            let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S,%3f");
            let line = format!(
                "{now} iib.workers {level} request {}: {message}\n",
                self.request_id
            );
            if let Ok(mut file) = file.lock() {
                // A full disk must not fail the build; the process log still has the line.
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    pub fn info(&self, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::info!(request_id = self.request_id, "{message}");
        self.write("INFO", message);
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::warn!(request_id = self.request_id, "{message}");
        self.write("WARNING", message);
    }

    pub fn error(&self, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::error!(request_id = self.request_id, "{message}");
        self.write("ERROR", message);
    }
}
