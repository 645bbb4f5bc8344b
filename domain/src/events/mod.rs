//! Domain events: written to the transactional outbox in the same MySQL transaction as the change
//! they describe ([`record`]), published by the relay ([`relay`]) to Kafka topics or to the
//! in-process bus ([`bus`]), and consumed by consumers that deduplicate on the event id
//! ([`consumers`]) and by the per-process fan-out that feeds GraphQL subscriptions ([`hub`]).
//!
//! Payloads carry ids and amounts only: never phone numbers, addresses or openids.

pub mod bus;
pub mod consumers;
pub mod hub;
pub mod relay;
pub mod wake;

use diesel::prelude::*;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use crate::schema::{outbox_events, skus};

/// Version of the envelope and payload layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: i32 = 1;

/// `[kafka]` settings (`RUIZHU_KAFKA__*`). With `brokers` unset, events flow through the
/// in-process bus (single node).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`; unset = embedded mode.
    pub brokers: Option<String>,
    /// Prepended to every topic name (e.g. per environment).
    pub topic_prefix: String,
    /// Partitions of topics the service creates at start-up.
    pub partitions: i32,
    /// Replication factor of those topics.
    pub replication: i32,
    /// Prefix of consumer group ids.
    pub group_prefix: String,
    /// How often the relay looks for unpublished events, in milliseconds.
    pub relay_interval_ms: u64,
    /// Events the relay publishes per batch.
    pub relay_batch: i64,
    /// Bound on one produce (delivery report) or admin call, in milliseconds.
    pub timeout_ms: u64,
    /// Longest the broker may hold a fetch of the per-process live groups (subscription
    /// fan-out, cache invalidation), in milliseconds: with a broker that answers a long poll only
    /// when it runs out, this is what an event waits on its way to a subscriber.
    pub live_fetch_wait_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: None,
            topic_prefix: String::new(),
            partitions: 6,
            replication: 1,
            group_prefix: "ruizhu".to_owned(),
            relay_interval_ms: 25,
            relay_batch: 500,
            timeout_ms: 5_000,
            live_fetch_wait_ms: 5,
        }
    }
}

/// Topic of order events.
pub const ORDER_EVENTS: &str = "order-events";
/// Topic of payment and refund events.
pub const PAYMENT_EVENTS: &str = "payment-events";
/// Topic of stock changes.
pub const INVENTORY_EVENTS: &str = "inventory-events";
/// Topic of member events (tier changes).
pub const MEMBER_EVENTS: &str = "member-events";
/// Topic of consultation events (status changes, messages, reminders).
pub const CONSULTATION_EVENTS: &str = "consultation-events";
/// Every topic the service uses.
pub const TOPICS: [&str; 5] = [
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    INVENTORY_EVENTS,
    MEMBER_EVENTS,
    CONSULTATION_EVENTS,
];

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7: unique, roughly time-ordered; consumers deduplicate on it.
    pub event_id: String,
    /// e.g. `order.paid`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// [`SCHEMA_VERSION`] when written.
    pub schema_version: i32,
    /// `order`, `sku`, …
    pub aggregate_type: String,
    /// The aggregate's id (the Kafka message key: per-aggregate order is kept).
    pub aggregate_id: String,
    /// When the change committed (close to), RFC 3339 UTC.
    pub occurred_at: String,
    /// Ids and amounts.
    pub payload: serde_json::Value,
}

impl Event {
    /// The topic (without prefix) this event is published to.
    pub fn topic(&self) -> &'static str {
        topic_of(&self.aggregate_type)
    }

    /// The order id of an `order.*` event.
    pub fn order_id(&self) -> Option<u64> {
        (self.aggregate_type == "order")
            .then(|| self.aggregate_id.parse().ok())
            .flatten()
    }
}

fn topic_of(aggregate_type: &str) -> &'static str {
    match aggregate_type {
        "order" => ORDER_EVENTS,
        "payment" | "refund" => PAYMENT_EVENTS,
        "member" => MEMBER_EVENTS,
        "consultation" => CONSULTATION_EVENTS,
        _ => INVENTORY_EVENTS,
    }
}

/// Writes one event to the outbox, in the caller's transaction.
pub async fn record(
    conn: &mut AsyncMysqlConnection,
    event_type: &str,
    aggregate_type: &str,
    aggregate_id: u64,
    payload: serde_json::Value,
) -> QueryResult<()> {
    record_many(
        conn,
        &[(
            event_type.to_owned(),
            aggregate_type.to_owned(),
            aggregate_id,
            payload,
        )],
    )
    .await
}

/// Writes several events in one statement, in the caller's transaction.
pub async fn record_many(
    conn: &mut AsyncMysqlConnection,
    events: &[(String, String, u64, serde_json::Value)],
) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at = chrono::Utc::now().naive_utc();
    let rows: Vec<_> = events
        .iter()
        .map(|(event_type, aggregate_type, aggregate_id, payload)| {
            (
                outbox_events::event_id.eq(uuid::Uuid::now_v7().to_string()),
                outbox_events::event_type.eq(event_type.clone()),
                outbox_events::schema_version.eq(SCHEMA_VERSION),
                outbox_events::aggregate_type.eq(aggregate_type.clone()),
                outbox_events::aggregate_id.eq(aggregate_id.to_string()),
                outbox_events::topic.eq(topic_of(aggregate_type)),
                outbox_events::occurred_at.eq(at),
                outbox_events::payload.eq(payload.to_string()),
            )
        })
        .collect();
    diesel::insert_into(outbox_events::table)
        .values(&rows)
        .execute(conn)
        .await?;
    wake::outbox_written();
    Ok(())
}

/// One stock change for [`stock_changed`]: SKU, delta, reason, order.
pub type StockChange = (u64, i32, &'static str, Option<u64>);

/// `inventory.stock_changed` events for ledger entries written in the same transaction (with
/// the SKU's product, so caches of every replica can drop it).
pub async fn stock_changed(
    conn: &mut AsyncMysqlConnection,
    changes: &[StockChange],
) -> QueryResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<u64> = changes.iter().map(|c| c.0).collect();
    // callers write these after they changed (and locked) the SKU rows, so each SKU's events
    // are in the order of its changes
    let info: Vec<(u64, u64)> = skus::table
        .filter(skus::id.eq_any(&ids))
        .select((skus::id, skus::product_id))
        .load(conn)
        .await?;
    let info: std::collections::HashMap<u64, u64> = info.into_iter().collect();
    let events: Vec<_> = changes
        .iter()
        .map(|(sku, delta, reason, order)| {
            let product = info.get(sku).copied().unwrap_or_default();
            (
                "inventory.stock_changed".to_owned(),
                "sku".to_owned(),
                *sku,
                serde_json::json!({ "sku_id": sku, "product_id": product, "delta": delta,
                                    "reason": reason, "order_id": order }),
            )
        })
        .collect();
    record_many(conn, &events).await
}

/// A row of the outbox.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox_events, check_for_backend(diesel::mysql::Mysql))]
pub struct OutboxRow {
    pub id: u64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub topic: String,
    pub occurred_at: chrono::NaiveDateTime,
    pub payload: String,
    pub published_at: Option<chrono::NaiveDateTime>,
}

impl OutboxRow {
    /// The envelope.
    pub fn event(&self) -> Event {
        Event {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            occurred_at: self.occurred_at.and_utc().to_rfc3339(),
            payload: serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null),
        }
    }
}
