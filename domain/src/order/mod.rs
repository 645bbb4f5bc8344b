//! Order context: checkout (stock reserved atomically, idempotent), the order state machine
//! applied as conditional updates with a timeline, the payment-deadline sweeper, and reads.

pub mod checkout;
pub mod lifecycle;
pub mod query;
pub mod state;

use serde::Deserialize;

use crate::catalog::Catalog;
use crate::crypto::FieldCipher;
use crate::db::Db;
use crate::membership::Membership;
use crate::schema::{order_events, order_lines, orders};

pub use state::{InvalidTransition, OrderAction, OrderStatus};

/// `[orders]` settings (`RUIZHU_ORDERS__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderSettings {
    /// How long an order waits for payment before the sweeper cancels it, in seconds.
    pub payment_window_secs: u64,
    /// Delivered orders complete automatically after this many days.
    pub auto_complete_days: u64,
    /// How often the sweeper runs, in milliseconds.
    pub sweep_interval_ms: u64,
    /// Orders the sweeper handles per transaction.
    pub sweep_batch: i64,
    /// Idempotency keys are kept at least this long, in hours.
    pub idempotency_retention_hours: u64,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            payment_window_secs: 30 * 60,
            auto_complete_days: 7,
            sweep_interval_ms: 5_000,
            sweep_batch: 100,
            idempotency_retention_hours: 72,
        }
    }
}

/// Most lines one order may have.
pub const MAX_ORDER_LINES: usize = 50;
/// Most units of one SKU per line.
pub const MAX_LINE_QUANTITY: i32 = 99;

/// An order as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::mysql::Mysql))]
pub struct OrderRow {
    pub id: u64,
    pub order_no: Option<String>,
    pub member_id: u64,
    pub status: String,
    pub subtotal_fen: i64,
    pub discount_fen: i64,
    pub shipping_fen: i64,
    pub total_fen: i64,
    pub refunded_fen: i64,
    pub ship_recipient: String,
    pub ship_phone_enc: String,
    pub ship_province: String,
    pub ship_city: String,
    pub ship_district: String,
    pub ship_detail: String,
    pub ship_postal_code: Option<String>,
    pub note: Option<String>,
    pub carrier: Option<String>,
    pub tracking_no: Option<String>,
    pub payment_deadline: chrono::NaiveDateTime,
    pub paid_at: Option<chrono::NaiveDateTime>,
    pub shipped_at: Option<chrono::NaiveDateTime>,
    pub delivered_at: Option<chrono::NaiveDateTime>,
    pub completed_at: Option<chrono::NaiveDateTime>,
    pub cancelled_at: Option<chrono::NaiveDateTime>,
    pub created_at: chrono::NaiveDateTime,
}

impl OrderRow {
    /// The status, parsed.
    pub fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.status).unwrap_or(OrderStatus::PendingPayment)
    }
}

/// A line of an order, as snapshotted at checkout.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_lines, check_for_backend(diesel::mysql::Mysql))]
pub struct OrderLineRow {
    pub id: u64,
    pub order_id: u64,
    pub sku_id: u64,
    pub product_id: u64,
    pub sku_code: String,
    pub product_name_zh: String,
    pub product_name_en: String,
    pub color: Option<String>,
    pub size: Option<String>,
    pub material: Option<String>,
    pub unit_price_fen: i64,
    pub quantity: i32,
    pub line_total_fen: i64,
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_events, check_for_backend(diesel::mysql::Mysql))]
pub struct OrderEventRow {
    pub id: u64,
    pub order_id: u64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor_kind: String,
    pub actor_id: Option<u64>,
    pub note: Option<String>,
    pub created_at: chrono::NaiveDateTime,
}

/// Who caused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The customer.
    Member(u64),
    /// A staff account.
    Staff(u64),
    /// The service itself (sweeper, payment notification).
    System,
}

impl Actor {
    pub(crate) fn parts(self) -> (&'static str, Option<u64>) {
        match self {
            Actor::Member(id) => ("member", Some(id)),
            Actor::Staff(id) => ("staff", Some(id)),
            Actor::System => ("system", None),
        }
    }
}

/// Orders over one database.
#[derive(Clone, Debug)]
pub struct Orders {
    pub(crate) db: Db,
    pub(crate) cipher: FieldCipher,
    pub(crate) catalog: Catalog,
    pub(crate) settings: OrderSettings,
    pub(crate) membership: Membership,
}

impl Orders {
    /// The order service.
    pub fn new(
        db: Db,
        cipher: FieldCipher,
        catalog: Catalog,
        membership: Membership,
        settings: OrderSettings,
    ) -> Self {
        Self {
            db,
            cipher,
            catalog,
            settings,
            membership,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &OrderSettings {
        &self.settings
    }

    /// The recipient's phone of an order, masked.
    pub fn ship_phone_masked(&self, order: &OrderRow) -> String {
        let phone = self
            .cipher
            .decrypt(&order.ship_phone_enc, &order_phone_aad(order.id))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        crate::identity::mask_phone(&phone)
    }
}

pub(crate) fn order_phone_aad(order_id: u64) -> String {
    format!("order:{order_id}:ship-phone")
}

/// Whether a database error is a deadlock or lock wait timeout, which a retry resolves.
pub(crate) fn is_retryable_conflict(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(kind, info) => {
            matches!(
                kind,
                diesel::result::DatabaseErrorKind::SerializationFailure
            ) || info.message().contains("Deadlock found")
                || info.message().contains("Lock wait timeout")
        }
        _ => false,
    }
}

/// Whether a database error is a duplicate key.
pub(crate) fn is_duplicate_key(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(kind, info) => {
            matches!(kind, diesel::result::DatabaseErrorKind::UniqueViolation)
                || info.message().contains("Duplicate entry")
        }
        _ => false,
    }
}

use diesel::prelude::*;
