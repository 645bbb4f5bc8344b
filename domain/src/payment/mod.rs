//! Payments: what WeChat Pay's answers mean for an order. Prepays (one per order, reused while
//! valid), verified notifications and active queries all end in [`Payments::record_transaction`],
//! which moves the order to PAID exactly once (the payment is stored under a unique
//! `transaction_id`, the order row is locked, the transition is conditional). A payment for an
//! order the sweeper already cancelled is honoured (stock reserved again) or refunded in full
//! automatically. Refunds carry deterministic `out_refund_no`s so every retry is the same refund.

mod prepay;
mod record;
mod refund;
mod worker;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::DomainResult;
use crate::db::Db;
use crate::order::{OrderStatus, Orders};
use crate::schema::{payments, refunds};
use crate::wechatpay::{WechatPay, WechatPaySettings};

pub use refund::{RefundError, RefundRow};
pub use worker::Round;

/// `payments.status` of a prepay waiting for the payer.
pub const PAYMENT_PREPAY: &str = "PREPAY";
/// `payments.status` once paid.
pub const PAYMENT_PAID: &str = "PAID";
/// `payments.status` once closed unpaid.
pub const PAYMENT_CLOSED: &str = "CLOSED";

/// How payments are made in this process.
#[derive(Clone, Debug)]
pub enum PaymentMode {
    /// A configured merchant: real WeChat Pay (or a fake at `api_base` in tests).
    Merchant(WechatPay),
    /// No merchant, development switch on: fake parameters and `devConfirmPayment`.
    Development {
        /// The mini-program's AppID, echoed in the fake parameters.
        app_id: String,
    },
    /// No merchant and no development payments: paying is unavailable.
    Disabled,
}

/// A payment as stored.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = payments, check_for_backend(diesel::mysql::Mysql))]
pub struct PaymentRow {
    pub id: u64,
    pub order_id: u64,
    pub out_trade_no: String,
    pub amount_fen: i64,
    pub status: String,
    pub prepay_id: Option<String>,
    pub prepay_at: Option<chrono::NaiveDateTime>,
    pub transaction_id: Option<String>,
    pub payer_total_fen: Option<i64>,
    pub paid_at: Option<chrono::NaiveDateTime>,
    pub source: Option<String>,
    pub next_query_at: Option<chrono::NaiveDateTime>,
    pub queries: i32,
    pub closed_at: Option<chrono::NaiveDateTime>,
    pub created_at: chrono::NaiveDateTime,
}

/// Why no payment could be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentError {
    /// No such order, or not the caller's.
    NotFound,
    /// The order is not waiting for payment.
    NotPayable(OrderStatus),
    /// The payment deadline has passed.
    Expired,
    /// WeChat Pay cannot be reached right now; try again.
    Unavailable(String),
    /// Paying is not configured on this deployment.
    Disabled,
}

/// How a payment became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A verified notification.
    Notify,
    /// An active query (missing callback).
    Query,
    /// Closing the order found it paid.
    Close,
    /// `devConfirmPayment` (development only).
    Dev,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Notify => "notify",
            Source::Query => "query",
            Source::Close => "close",
            Source::Dev => "dev",
        }
    }
}

/// What recording a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// PENDING_PAYMENT → PAID.
    Paid,
    /// The order had been cancelled; its stock was reserved again and it is PAID.
    PaidAfterCancel,
    /// The order had been cancelled and its stock is gone: a full refund was started.
    RefundingLatePayment,
    /// This transaction was already recorded: nothing changed.
    Duplicate,
    /// The order was already paid by another transaction (should never happen: WeChat Pay
    /// accepts one payment per `out_trade_no`); logged for operations, nothing changed.
    Conflict,
}

/// Why a transaction was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `mchid` is not ours.
    #[error("mchid is not this merchant")]
    ForeignMerchant,
    /// `appid` is not ours.
    #[error("appid is not this mini-program")]
    ForeignApp,
    /// No order has this `out_trade_no`.
    #[error("unknown out_trade_no")]
    UnknownOrder,
    /// `amount.total` differs from the order total.
    #[error("amount does not match the order total")]
    AmountMismatch,
    /// `trade_state` is not `SUCCESS`.
    #[error("trade_state is not SUCCESS")]
    NotSuccess,
    /// No transaction id, or not one WeChat Pay issues (≤ 32 letters and digits).
    #[error("transaction_id missing or malformed")]
    MissingTransactionId,
    /// No refund has this `out_refund_no`.
    #[error("unknown out_refund_no")]
    UnknownRefund,
}

impl Rejection {
    /// Mismatches that suggest forgery or misrouting: logged as security events.
    pub fn is_security_event(&self) -> bool {
        matches!(
            self,
            Rejection::ForeignMerchant | Rejection::ForeignApp | Rejection::AmountMismatch
        )
    }

    fn label(&self) -> &'static str {
        match self {
            Rejection::ForeignMerchant => "foreign_mchid",
            Rejection::ForeignApp => "foreign_appid",
            Rejection::UnknownOrder => "unknown_order",
            Rejection::AmountMismatch => "amount_mismatch",
            Rejection::NotSuccess => "not_success",
            Rejection::MissingTransactionId => "missing_transaction_id",
            Rejection::UnknownRefund => "unknown_refund",
        }
    }
}

/// A refused notification: the HTTP status and message to answer WeChat Pay with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRefusal {
    /// 4xx for bad notifications, 5xx when we could not process a good one (WeChat retries).
    pub status: u16,
    /// Goes into `{"code":"FAIL","message":…}`.
    pub message: String,
}

impl NotifyRefusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

enum TxError {
    Rejected(Rejection),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

/// The payment service.
#[derive(Clone, Debug)]
pub struct Payments {
    db: Db,
    orders: Orders,
    mode: PaymentMode,
    settings: WechatPaySettings,
}

impl Payments {
    /// The payment service in `mode`.
    pub fn new(db: Db, orders: Orders, mode: PaymentMode, settings: WechatPaySettings) -> Self {
        Self {
            db,
            orders,
            mode,
            settings,
        }
    }

    /// How payments are made here.
    pub fn mode(&self) -> &PaymentMode {
        &self.mode
    }

    /// Whether `devConfirmPayment` and fake parameters are on.
    pub fn is_development(&self) -> bool {
        matches!(self.mode, PaymentMode::Development { .. })
    }

    fn expected_ids(&self) -> (&str, &str) {
        match &self.mode {
            PaymentMode::Merchant(pay) => (pay.mch_id(), pay.app_id()),
            PaymentMode::Development { app_id } => ("DEV", app_id.as_str()),
            PaymentMode::Disabled => ("", ""),
        }
    }

    /// The payment of an order, if one was started.
    pub async fn payment_of(&self, order_id: u64) -> DomainResult<Option<PaymentRow>> {
        let mut conn = self.db.conn().await?;
        Ok(payments::table
            .filter(payments::order_id.eq(order_id))
            .select(PaymentRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// The payments of these orders, by order id (one statement).
    pub async fn payments_of(
        &self,
        order_ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, PaymentRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<PaymentRow> = payments::table
            .filter(payments::order_id.eq_any(order_ids))
            .select(PaymentRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|p| (p.order_id, p)).collect())
    }

    /// The refunds of these orders, oldest first, by order id (one statement).
    pub async fn refunds_of_orders(
        &self,
        order_ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, Vec<RefundRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<RefundRow> = refunds::table
            .filter(refunds::order_id.eq_any(order_ids))
            .order((refunds::order_id, refunds::id))
            .select(RefundRow::as_select())
            .load(&mut conn)
            .await?;
        let mut by_order: std::collections::HashMap<u64, Vec<RefundRow>> =
            std::collections::HashMap::new();
        for r in rows {
            by_order.entry(r.order_id).or_default().push(r);
        }
        Ok(by_order)
    }
}

fn secs(s: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
}
