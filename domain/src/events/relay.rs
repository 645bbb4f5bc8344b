//! The outbox relay: publishes unpublished outbox rows in id order, one batch at a time, and
//! marks them published only after the bus confirmed delivery. One relay at a time per
//! database (a MySQL named lock per batch), so events keep their order; a relay killed
//! mid-batch leaves its rows unpublished and the next batch sends them again (consumers
//! deduplicate on the event id). While Kafka is down the outbox is the buffer.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::RunQueryDsl;

use super::OutboxRow;
use super::bus::Bus;
use crate::DomainResult;
use crate::db::Db;
use crate::schema::outbox_events;

/// Published rows are deleted after this long.
const RETENTION_DAYS: i64 = 7;

/// Closes (instead of pooling) a connection that may still hold the relay lock.
struct LockGuard {
    conn: Option<crate::db::DbConn>,
    held: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.held
            && let Some(conn) = self.conn.take()
        {
            drop(diesel_async::pooled_connection::deadpool::Object::take(
                conn,
            ));
        }
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Nullable<BigInt>)]
    locked: Option<i64>,
}

/// The relay.
#[derive(Clone, Debug)]
pub struct Relay {
    db: Db,
    bus: Bus,
    batch: i64,
}

/// What one relay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Another relay holds the lock.
    pub not_leader: bool,
    /// Rows read.
    pub read: usize,
    /// Rows published and marked.
    pub published: usize,
}

impl Relay {
    /// A relay over `db` publishing to `bus`.
    pub fn new(db: Db, bus: Bus, batch: i64) -> Self {
        Self { db, bus, batch }
    }

    /// The bus it publishes to.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes one batch.
    pub async fn run_once(&self) -> DomainResult<Pass> {
        // the named lock belongs to this session: unless it is released, the connection must
        // not go back to the pool (it is closed instead, which releases the lock)
        let mut guard = LockGuard {
            conn: Some(self.db.conn().await?),
            held: false,
        };
        let Some(conn) = guard.conn.as_mut() else {
            return Ok(Pass::default());
        };
        let locked: Locked = diesel::sql_query(
            "SELECT GET_LOCK(CONCAT('ruizhu-outbox-relay:', DATABASE()), 0) AS locked",
        )
        .get_result(conn)
        .await?;
        if locked.locked != Some(1) {
            return Ok(Pass {
                not_leader: true,
                ..Pass::default()
            });
        }
        guard.held = true;
        let Some(conn) = guard.conn.as_mut() else {
            return Ok(Pass::default());
        };
        let result = self.publish_batch(conn).await;
        let released: Result<Locked, _> = diesel::sql_query(
            "SELECT RELEASE_LOCK(CONCAT('ruizhu-outbox-relay:', DATABASE())) AS locked",
        )
        .get_result(conn)
        .await;
        if matches!(released, Ok(Locked { locked: Some(1) })) {
            guard.held = false;
        }
        result
    }

    async fn publish_batch(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
    ) -> DomainResult<Pass> {
        let rows: Vec<OutboxRow> = outbox_events::table
            .filter(outbox_events::published_at.is_null())
            .order(outbox_events::id)
            .limit(self.batch)
            .select(OutboxRow::as_select())
            .load(conn)
            .await?;
        if let Some(first) = rows.as_slice().first() {
            let age = (chrono::Utc::now().naive_utc() - first.occurred_at)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            metrics::gauge!("ruizhu_outbox_oldest_unpublished_age_seconds").set(age);
        } else {
            metrics::gauge!("ruizhu_outbox_oldest_unpublished_age_seconds").set(0.0);
            metrics::gauge!("ruizhu_outbox_backlog").set(0.0);
            return Ok(Pass::default());
        }
        let events: Vec<_> = rows.iter().map(OutboxRow::event).collect();
        let started = std::time::Instant::now();
        let delivered = self.bus.publish(&events).await;
        metrics::histogram!("ruizhu_outbox_publish_seconds")
            .record(started.elapsed().as_secs_f64());
        let done: Vec<u64> = rows.iter().take(delivered).map(|r| r.id).collect();
        if !done.is_empty() {
            diesel::update(outbox_events::table.filter(outbox_events::id.eq_any(&done)))
                .set(outbox_events::published_at.eq(Some(chrono::Utc::now().naive_utc())))
                .execute(conn)
                .await?;
        }
        metrics::counter!("ruizhu_outbox_published_total").increment(done.len() as u64);
        metrics::gauge!("ruizhu_outbox_backlog").set((rows.len() - done.len()) as f64);
        if delivered < rows.len() {
            metrics::counter!("ruizhu_outbox_publish_failures_total").increment(1);
        }
        Ok(Pass {
            not_leader: false,
            read: rows.len(),
            published: done.len(),
        })
    }

    /// Deletes published outbox rows and consumer dedup rows older than the retention period,
    /// batch by batch until none is left.
    pub async fn purge(&self) -> DomainResult<usize> {
        let cutoff = chrono::Utc::now().naive_utc() - chrono::TimeDelta::days(RETENTION_DAYS);
        let mut conn = self.db.conn().await?;
        let mut total = 0;
        for table in ["outbox_events", "processed_events"] {
            let column = if table == "outbox_events" {
                "published_at"
            } else {
                "processed_at"
            };
            loop {
                let deleted =
                    diesel::sql_query(format!("DELETE FROM {table} WHERE {column} < ? LIMIT 5000"))
                        .bind::<diesel::sql_types::Datetime, _>(cutoff)
                        .execute(&mut conn)
                        .await?;
                total += deleted;
                if deleted < 5_000 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Rows not yet published.
    pub async fn backlog(&self) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        Ok(outbox_events::table
            .filter(outbox_events::published_at.is_null())
            .count()
            .get_result(&mut conn)
            .await?)
    }
}
