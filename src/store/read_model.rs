//! The read-model tables: request and batch rows with their rendered JSON, the filter
//! columns the API lists by, and the projector's checkpoint.

use super::{format_time, Store, StoreError};
use iib_aggregates::RequestType;
use iib_projections::{render, BatchRecord, RequestRecord};
use sqlx::{Any, Transaction};

pub const CHECKPOINT: &str = "read_model";

/// Reads and writes of the read model inside one projector transaction.
pub struct ReadModelRows<'a> {
    pub(crate) tx: &'a mut Transaction<'static, Any>,
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 400;

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// The rendered JSON and filter columns of a request row.
struct RequestColumns {
    request_type: RequestType,
    from_index: Option<String>,
    index_image: Option<String>,
    verbose: String,
    summary: String,
}

impl RequestColumns {
    fn of(record: &RequestRecord) -> Self {
        let verbose = render::verbose(record);
        let summary = render::summary(&verbose);
        let request_type = record.params.request_type();
        let text = |key: &str| {
            verbose
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        // IIB's list filters cover these types only.
        let from_index = matches!(
            request_type,
            RequestType::Add
                | RequestType::Rm
                | RequestType::CreateEmptyIndex
                | RequestType::FbcOperations
        )
        .then(|| text("from_index"))
        .flatten();
        let index_image = (request_type != RequestType::AddDeprecations)
            .then(|| text("index_image"))
            .flatten();
        Self {
            request_type,
            from_index,
            index_image,
            verbose: json(&verbose),
            summary: json(&summary),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("read-model records always serialize")
}

impl ReadModelRows<'_> {
    pub async fn checkpoint(&mut self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(&mut **self.tx)
                .await?,
        )
    }

    pub async fn set_checkpoint(&mut self, position: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
            .bind(position)
            .bind(CHECKPOINT)
            .execute(&mut **self.tx)
            .await?;
        Ok(())
    }

    pub async fn clear(&mut self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM request_views")
            .execute(&mut **self.tx)
            .await?;
        sqlx::query("DELETE FROM batch_views")
            .execute(&mut **self.tx)
            .await?;
        self.set_checkpoint(0).await
    }

    pub async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM request_views WHERE id = $1")
                .bind(id as i64)
                .fetch_optional(&mut **self.tx)
                .await?;
        record
            .map(|r| serde_json::from_str(&r).map_err(StoreError::corrupt))
            .transpose()
    }

    pub async fn batch(&mut self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM batch_views WHERE id = $1")
                .bind(id as i64)
                .fetch_optional(&mut **self.tx)
                .await?;
        record
            .map(|r| serde_json::from_str(&r).map_err(StoreError::corrupt))
            .transpose()
    }

    pub async fn put_request(&mut self, record: &RequestRecord) -> Result<(), StoreError> {
        self.put_requests(&[record]).await
    }

    /// Upserts request rows, many per statement.
    pub async fn put_requests(&mut self, records: &[&RequestRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO request_views (id, batch_id, request_type, state, username, from_index, \
                 index_image, claimed_by, lease_until, updated, record, verbose_json, summary_json) \
                 VALUES {} ON CONFLICT (id) DO UPDATE SET batch_id = excluded.batch_id, \
                 request_type = excluded.request_type, state = excluded.state, \
                 username = excluded.username, from_index = excluded.from_index, \
                 index_image = excluded.index_image, claimed_by = excluded.claimed_by, \
                 lease_until = excluded.lease_until, updated = excluded.updated, \
                 record = excluded.record, verbose_json = excluded.verbose_json, \
                 summary_json = excluded.summary_json",
                placeholders(chunk.len(), 13)
            );
            let mut query = sqlx::query(&sql);
            for record in chunk {
                let row = RequestColumns::of(record);
                query = query
                    .bind(record.id as i64)
                    .bind(record.batch as i64)
                    .bind(row.request_type.as_str())
                    .bind(record.state().as_str())
                    .bind(record.user.clone())
                    .bind(row.from_index)
                    .bind(row.index_image)
                    .bind(record.claimed_by.as_ref().map(|w| w.as_str().to_string()))
                    .bind(record.lease_until.as_ref().map(format_time))
                    .bind(format_time(&record.current().updated))
                    .bind(json(record))
                    .bind(row.verbose)
                    .bind(row.summary);
            }
            query.execute(&mut **self.tx).await?;
        }
        Ok(())
    }

    pub async fn put_batch(&mut self, record: &BatchRecord) -> Result<(), StoreError> {
        self.put_batches(&[record]).await
    }

    /// Upserts batch rows, many per statement.
    pub async fn put_batches(&mut self, records: &[&BatchRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO batch_views (id, state, record) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record",
                placeholders(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for record in chunk {
                query = query
                    .bind(record.id as i64)
                    .bind(record.state.as_str())
                    .bind(json(record));
            }
            query.execute(&mut **self.tx).await?;
        }
        Ok(())
    }

    /// Deletes the secrets of requests that ended.
    pub async fn delete_secrets(&mut self, request_ids: &[u64]) -> Result<(), StoreError> {
        for chunk in request_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM request_secrets WHERE request_id IN ({})",
                (1..=chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id as i64);
            }
            query.execute(&mut **self.tx).await?;
        }
        Ok(())
    }
}

impl Store {
    /// A request's IIB JSON (verbose or not, without link keys), if it exists.
    pub async fn request_json(&self, id: u64, verbose: bool) -> Result<Option<String>, StoreError> {
        let sql = if verbose {
            "SELECT verbose_json FROM request_views WHERE id = $1"
        } else {
            "SELECT summary_json FROM request_views WHERE id = $1"
        };
        Ok(sqlx::query_scalar(sql)
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn batch_record(&self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM batch_views WHERE id = $1")
                .bind(id as i64)
                .fetch_optional(&self.pool)
                .await?;
        record
            .map(|r| serde_json::from_str(&r).map_err(StoreError::corrupt))
            .transpose()
    }

    /// Every request row, by id: what a rebuild must reproduce exactly.
    pub async fn dump_read_model(&self) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, record, verbose_json, summary_json FROM request_views ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every batch row, by id.
    pub async fn dump_batches(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, state, record FROM batch_views ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The position the read model has applied up to.
    pub async fn read_model_position(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
