//! CPU-bound work off the async runtime. Decompressing and unpacking layers takes from
//! milliseconds to seconds; on a runtime worker thread it would stall every other task
//! scheduled there, so it runs on tokio's blocking pool and the async caller awaits it like
//! any other I/O.

/// Runs `work` on tokio's blocking pool and returns what it returns. A panic in `work` is
/// resumed in the caller, so it unwinds as if the caller had run `work` itself.
///
/// Dropping the returned future does not stop `work` (threads cannot be cancelled); its result
/// is then discarded. Work given here must therefore have no effect outside its return value.
pub(crate) async fn run<T, F>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime itself is shutting down.
        Err(e) => panic!("CPU-bound work was cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_runtime_and_panics_reach_the_caller() {
        let runtime_thread = std::thread::current().id();
        let worker_thread = super::run(|| std::thread::current().id()).await;
        assert_ne!(worker_thread, runtime_thread);
        let caught = tokio::spawn(super::run(|| -> u8 { panic!("boom") })).await;
        let panic = caught.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom"));
    }
}
