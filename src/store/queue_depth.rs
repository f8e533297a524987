//! How many unfinished requests each queue holds, waiting or running, for `/metrics`.

use super::{Store, StoreError};

/// The unfinished requests of one queue (`None`: the default queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: Option<String>,
    /// Not claimed by any worker.
    pub waiting: i64,
    /// Claimed by a worker (a dead worker's claim counts until another worker takes over).
    pub running: i64,
}

impl Store {
    /// Every queue that has unfinished requests, by name (the default queue first).
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        // COUNT(claimed_by) counts the claimed ones (a column's non-null values).
        let rows: Vec<(Option<String>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT queue, COUNT(*), COUNT(claimed_by) FROM request_views \
                 WHERE state = 'in_progress' GROUP BY queue",
            )
            .fetch_all(pool)
            .await?
        });
        let mut depths: Vec<QueueDepth> = rows
            .into_iter()
            .map(|(queue, all, claimed)| QueueDepth {
                queue,
                waiting: all - claimed,
                running: claimed,
            })
            .collect();
        depths.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(depths)
    }
}
