//! The read-model tables: request and batch rows with their rendered JSON, the filter
//! columns the API lists by, and the projector's checkpoint.

use super::{format_time, Store, StoreError, WriteTx};
use iib_aggregates::RequestType;
use iib_projections::{render, BatchRecord, RequestRecord};

pub const CHECKPOINT: &str = "read_model";

/// Reads and writes of the read model inside one projector transaction.
pub struct ReadModelRows<'a> {
    pub tx: &'a mut WriteTx,
}

/// Rows per multi-row statement. sqlx's SQLite driver slows down on statements with
/// thousands of parameters: 16–64 rows measured fastest (`iib bench rebuild`).
const ROWS_PER_STATEMENT: usize = 32;

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

/// One `request_views` row: the rendered JSON and the filter columns.
struct RequestColumns {
    id: i64,
    batch_id: i64,
    request_type: &'static str,
    state: &'static str,
    username: Option<String>,
    from_index: Option<String>,
    index_image: Option<String>,
    queue: Option<String>,
    claimed_by: Option<String>,
    lease_until: Option<String>,
    writes_index: Option<String>,
    updated: String,
    record: String,
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
            id: record.id as i64,
            batch_id: record.batch as i64,
            request_type: request_type.as_str(),
            state: record.state().as_str(),
            username: record.user.clone(),
            from_index,
            index_image,
            queue: record.queue.clone(),
            claimed_by: record.claimed_by.as_ref().map(|w| w.as_str().to_string()),
            lease_until: record.lease_until.as_ref().map(format_time),
            writes_index: record.params.overwritten_index().map(str::to_string),
            updated: format_time(&record.current().updated),
            record: json(record),
            verbose: json(&verbose),
            summary: json(&summary),
        }
    }
}

const REQUEST_RECORD: &str = "SELECT record FROM request_views WHERE id = $1";
const BATCH_RECORD: &str = "SELECT record FROM batch_views WHERE id = $1";

/// A stored record's JSON, parsed.
fn parse<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, StoreError> {
    text.map(|r| serde_json::from_str(&r).map_err(StoreError::corrupt))
        .transpose()
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("read-model records always serialize")
}

impl ReadModelRows<'_> {
    pub async fn checkpoint(&mut self) -> Result<i64, StoreError> {
        Ok(on_tx!(self.tx, conn => {
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(conn)
                .await?
        }))
    }

    pub async fn set_checkpoint(&mut self, position: i64) -> Result<(), StoreError> {
        on_tx!(self.tx, conn => {
            sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
                .bind(position)
                .bind(CHECKPOINT)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    pub async fn clear(&mut self) -> Result<(), StoreError> {
        on_tx!(self.tx, conn => {
            sqlx::query("DELETE FROM request_views").execute(&mut *conn).await?;
            sqlx::query("DELETE FROM batch_views").execute(&mut *conn).await?;
            sqlx::query("DELETE FROM images").execute(&mut *conn).await?;
        });
        self.set_checkpoint(0).await
    }

    pub async fn request(&mut self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        parse(on_tx!(self.tx, conn => {
            sqlx::query_scalar(REQUEST_RECORD).bind(id as i64).fetch_optional(conn).await?
        }))
    }

    pub async fn batch(&mut self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        parse(on_tx!(self.tx, conn => {
            sqlx::query_scalar(BATCH_RECORD).bind(id as i64).fetch_optional(conn).await?
        }))
    }

    /// Upserts request rows, many per statement.
    pub async fn put_requests(&mut self, records: &[&RequestRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO request_views (id, batch_id, request_type, state, username, from_index, \
                 index_image, queue, claimed_by, lease_until, writes_index, updated, record, verbose_json, \
                 summary_json) \
                 VALUES {} ON CONFLICT (id) DO UPDATE SET batch_id = excluded.batch_id, \
                 request_type = excluded.request_type, state = excluded.state, \
                 username = excluded.username, from_index = excluded.from_index, \
                 index_image = excluded.index_image, queue = excluded.queue, \
                 claimed_by = excluded.claimed_by, \
                 lease_until = excluded.lease_until, writes_index = excluded.writes_index, \
                 updated = excluded.updated, \
                 record = excluded.record, verbose_json = excluded.verbose_json, \
                 summary_json = excluded.summary_json",
                placeholders(chunk.len(), 15)
            );
            let rows: Vec<RequestColumns> = chunk.iter().map(|r| RequestColumns::of(r)).collect();
            on_tx!(self.tx, conn => {
                let mut query = sqlx::query(&sql);
                for row in &rows {
                    query = query
                        .bind(row.id)
                        .bind(row.batch_id)
                        .bind(row.request_type)
                        .bind(row.state)
                        .bind(&row.username)
                        .bind(&row.from_index)
                        .bind(&row.index_image)
                        .bind(&row.queue)
                        .bind(&row.claimed_by)
                        .bind(&row.lease_until)
                        .bind(&row.writes_index)
                        .bind(&row.updated)
                        .bind(&row.record)
                        .bind(&row.verbose)
                        .bind(&row.summary);
                }
                query.execute(conn).await?;
            });
        }
        Ok(())
    }

    /// Records pull specs as known (IIB's `image` table).
    pub async fn put_images(&mut self, specs: &[&str]) -> Result<(), StoreError> {
        for chunk in specs.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO images (pull_spec) VALUES {} ON CONFLICT (pull_spec) DO NOTHING",
                placeholders(chunk.len(), 1)
            );
            on_tx!(self.tx, conn => {
                let mut query = sqlx::query(&sql);
                for spec in chunk {
                    query = query.bind(*spec);
                }
                query.execute(conn).await?;
            });
        }
        Ok(())
    }

    /// Upserts batch rows, many per statement.
    pub async fn put_batches(&mut self, records: &[&BatchRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO batch_views (id, state, record) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record",
                placeholders(chunk.len(), 3)
            );
            let rows: Vec<(i64, &str, String)> = chunk
                .iter()
                .map(|r| (r.id as i64, r.state.as_str(), json(r)))
                .collect();
            on_tx!(self.tx, conn => {
                let mut query = sqlx::query(&sql);
                for (id, state, record) in &rows {
                    query = query.bind(*id).bind(*state).bind(record);
                }
                query.execute(conn).await?;
            });
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
            on_tx!(self.tx, conn => {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id as i64);
                }
                query.execute(conn).await?;
            });
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
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(id as i64).fetch_optional(pool).await?
        }))
    }

    /// A request's read-model record (everything the JSON shows and more), if it exists.
    pub async fn request_record(&self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        parse(on_pool!(self, pool => {
            sqlx::query_scalar(REQUEST_RECORD).bind(id as i64).fetch_optional(pool).await?
        }))
    }

    pub async fn batch_record(&self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        parse(on_pool!(self, pool => {
            sqlx::query_scalar(BATCH_RECORD).bind(id as i64).fetch_optional(pool).await?
        }))
    }

    /// Every request row, by id: what a rebuild must reproduce exactly.
    pub async fn dump_read_model(&self) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, record, verbose_json, summary_json FROM request_views ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every batch row, by id.
    pub async fn dump_batches(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as("SELECT id, state, record FROM batch_views ORDER BY id")
                .fetch_all(pool)
                .await?
        }))
    }

    /// The position the read model has applied up to.
    pub async fn read_model_position(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(pool)
                .await?
        }))
    }
}

/// The filters of `GET /builds`, already validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub state: Option<String>,
    pub batch: Option<i64>,
    pub request_type: Option<String>,
    pub user: Option<String>,
    pub from_index: Option<String>,
    pub from_index_startswith: Option<String>,
    pub index_image: Option<String>,
}

/// One page of `GET /builds`: the total that matches and the rows' JSON, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub total: i64,
    pub items: Vec<String>,
}

impl ListFilter {
    /// `WHERE ...` with `$1..` placeholders, and the values to bind, in order.
    fn sql(&self) -> (String, Vec<SqlValue>) {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        let mut add = |clause: &str, value: SqlValue| {
            values.push(value);
            clauses.push(clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(v) = &self.state {
            add("state = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = self.batch {
            add("batch_id = ?", SqlValue::Int(v));
        }
        if let Some(v) = &self.request_type {
            add("request_type = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &self.user {
            add("username = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &self.from_index {
            add("from_index = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &self.from_index_startswith {
            // Portable and free of LIKE's wildcards.
            add(
                "substr(from_index, 1, length(?)) = ?",
                SqlValue::Text(v.clone()),
            );
        }
        if let Some(v) = &self.index_image {
            add("index_image = ?", SqlValue::Text(v.clone()));
        }
        if clauses.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", clauses.join(" AND ")), values)
        }
    }
}

#[derive(Debug, Clone)]
enum SqlValue {
    Text(String),
    Int(i64),
}

macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                SqlValue::Text(v) => query.bind(v.clone()),
                SqlValue::Int(v) => query.bind(*v),
            };
        }
        query
    }};
}

impl Store {
    /// A page of requests matching `filter`, newest first.
    pub async fn list_requests(
        &self,
        filter: &ListFilter,
        page: i64,
        per_page: i64,
        verbose: bool,
    ) -> Result<ListPage, StoreError> {
        // `substr(x, 1, length($n)) = $n` names one placeholder twice: both databases bind it
        // once.
        let (where_sql, values) = filter.sql();
        let column = if verbose {
            "verbose_json"
        } else {
            "summary_json"
        };
        let count_sql = format!("SELECT COUNT(*) FROM request_views{where_sql}");
        let n = values.len();
        let page_sql = format!(
            "SELECT {column} FROM request_views{where_sql} ORDER BY id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let offset = (page - 1).saturating_mul(per_page);
        let (total, items) = on_pool!(self, pool => {
            let total: i64 = bind_all!(sqlx::query_scalar(&count_sql), &values)
                .fetch_one(pool)
                .await?;
            let items: Vec<String> = bind_all!(sqlx::query_scalar(&page_sql), &values)
                .bind(per_page)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            (total, items)
        });
        Ok(ListPage { total, items })
    }

    /// Whether any request ever named this pull spec.
    pub async fn image_known(&self, pull_spec: &str) -> Result<bool, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM images WHERE pull_spec = $1")
                .bind(pull_spec)
                .fetch_one(pool)
                .await?
        }) > 0)
    }

    /// Whether any known pull spec starts with `prefix`.
    pub async fn image_prefix_known(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM images WHERE substr(pull_spec, 1, length($1)) = $1",
            )
            .bind(prefix)
            .fetch_one(pool)
            .await?
        }) > 0)
    }
}

impl Store {
    /// A named reader's position in the event stream (0 for a new reader).
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let position: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(position.unwrap_or(0))
    }

    /// Moves a named reader's position forward (never back).
    pub async fn advance_checkpoint(&self, name: &str, position: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position \
                 WHERE projection_checkpoints.position < excluded.position",
            )
            .bind(name)
            .bind(position)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

/// `id, claimed_by, lease_until, writes_index` as queried.
type WorkRow = (i64, Option<String>, Option<String>, Option<String>);

/// An unfinished request as the queue actors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub id: u64,
    pub claimed_by: Option<String>,
    pub lease_until: Option<chrono::DateTime<chrono::Utc>>,
    pub writes_index: Option<String>,
}

impl WorkItem {
    /// Whether a worker holds it now.
    pub fn is_held(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.claimed_by.is_some() && self.lease_until.is_some_and(|l| l > now)
    }
}

impl Store {
    /// The unfinished requests of a queue (`None`: the default queue), oldest first.
    pub async fn queue_work(
        &self,
        queue: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let rows: Vec<WorkRow> = on_pool!(self, pool => {
            match queue {
                Some(queue) => sqlx::query_as(
                    "SELECT id, claimed_by, lease_until, writes_index FROM request_views \
                     WHERE state = 'in_progress' AND queue = $1 ORDER BY id LIMIT $2",
                )
                .bind(queue)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                None => sqlx::query_as(
                    "SELECT id, claimed_by, lease_until, writes_index FROM request_views \
                     WHERE state = 'in_progress' AND queue IS NULL ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?,
            }
        });
        Self::work_items(rows)
    }

    /// The unfinished requests that overwrite `index` and were submitted before `before`.
    pub async fn earlier_writers(
        &self,
        index: &str,
        before: u64,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let rows: Vec<WorkRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, claimed_by, lease_until, writes_index FROM request_views \
                 WHERE writes_index = $1 AND state = 'in_progress' AND id < $2 ORDER BY id",
            )
            .bind(index)
            .bind(before as i64)
            .fetch_all(pool)
            .await?
        });
        Self::work_items(rows)
    }

    fn work_items(rows: Vec<WorkRow>) -> Result<Vec<WorkItem>, StoreError> {
        rows.into_iter()
            .map(|(id, claimed_by, lease_until, writes_index)| {
                Ok(WorkItem {
                    id: id as u64,
                    claimed_by,
                    lease_until: lease_until.as_deref().map(super::parse_time).transpose()?,
                    writes_index,
                })
            })
            .collect()
    }
}
