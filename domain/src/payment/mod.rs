//! Payments: what WeChat Pay's answers mean for an order. Prepays (one per order, reused while
//! valid), verified notifications and active queries all end in [`Payments::record_transaction`],
//! which moves the order to PAID exactly once (the payment is stored under a unique
//! `transaction_id`, the order row is locked, the transition is conditional). A payment for an
//! order the sweeper already cancelled is honoured (stock reserved again) or refunded in full
//! automatically. Refunds carry deterministic `out_refund_no`s so every retry is the same refund.

mod refund;
mod worker;

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use serde::Serialize;

use crate::DomainResult;
use crate::db::Db;
use crate::order::lifecycle::{apply, note_event, now};
use crate::order::{Actor, OrderRow, OrderStatus, Orders};
use crate::schema::{inventory_ledger, members, order_lines, orders, payments, refunds, skus};
use crate::wechatpay::{
    PayError, PayParams, SignedHeaders, Transaction, TransactionAmount, VerifyError, WechatPay,
    WechatPaySettings,
};

pub use refund::{RefundError, RefundRow};
pub use worker::Round;

/// `payments.status` of a prepay waiting for the payer.
pub const PAYMENT_PREPAY: &str = "PREPAY";
/// `payments.status` once paid.
pub const PAYMENT_PAID: &str = "PAID";
/// `payments.status` once closed unpaid.
pub const PAYMENT_CLOSED: &str = "CLOSED";

/// WeChat keeps a prepay id valid two hours; we stop reusing one a little earlier.
const PREPAY_REUSE: chrono::TimeDelta = chrono::TimeDelta::minutes(110);

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

fn security_event(kind: &'static str, out_trade_no: &str) {
    metrics::counter!("ruizhu_wechatpay_security_events_total", "kind" => kind).increment(1);
    tracing::warn!(
        target: "security",
        kind,
        out_trade_no,
        "WeChat Pay message refused"
    );
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

    /// `wx.requestPayment` parameters for the member's unpaid order. One prepay per order: a
    /// valid prepay is reused, and concurrent calls wait for the one request in flight. No
    /// database connection is held while waiting or while WeChat Pay answers.
    pub async fn create_payment(
        &self,
        order_id: u64,
        member_id: u64,
    ) -> DomainResult<Result<PayParams, PaymentError>> {
        let found: Option<(OrderRow, String)> = {
            let mut conn = self.db.conn().await?;
            orders::table
                .inner_join(members::table.on(members::id.eq(orders::member_id)))
                .filter(orders::id.eq(order_id))
                .filter(orders::member_id.eq(member_id))
                .select((OrderRow::as_select(), members::openid))
                .first(&mut conn)
                .await
                .optional()?
        };
        let Some((order, openid)) = found else {
            return Ok(Err(PaymentError::NotFound));
        };
        if let Err(e) = payable(&order) {
            return Ok(Err(e));
        }
        let out_trade_no = order.order_no.clone().unwrap_or_default();
        let pay = match &self.mode {
            PaymentMode::Merchant(pay) => pay,
            PaymentMode::Development { app_id } => {
                return Ok(Ok(PayParams {
                    app_id: app_id.clone(),
                    time_stamp: chrono::Utc::now().timestamp().to_string(),
                    nonce_str: "DEVELOPMENT0NOT0REAL".to_owned(),
                    package: format!("prepay_id=DEV-NOT-A-REAL-PREPAY-{out_trade_no}"),
                    sign_type: "RSA".to_owned(),
                    pay_sign: "DEVELOPMENT-ONLY-NOT-A-SIGNATURE".to_owned(),
                }));
            }
            PaymentMode::Disabled => return Ok(Err(PaymentError::Disabled)),
        };
        {
            let mut conn = self.db.conn().await?;
            // concurrent INSERT IGNOREs of one key can deadlock in InnoDB: retried
            let mut attempt = 0;
            loop {
                attempt += 1;
                let inserted = diesel::insert_or_ignore_into(payments::table)
                    .values((
                        payments::order_id.eq(order.id),
                        payments::out_trade_no.eq(&out_trade_no),
                        payments::amount_fen.eq(order.total_fen),
                        payments::status.eq(PAYMENT_PREPAY),
                    ))
                    .execute(&mut conn)
                    .await;
                match inserted {
                    Err(e) if crate::order::is_retryable_conflict(&e) && attempt < 10 => {
                        tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        // a claim outlives the slowest possible prepay call, so a crashed claimer is taken over
        let claim_ttl = chrono::TimeDelta::milliseconds(
            i64::try_from(self.settings.timeout_ms * u64::from(self.settings.retries + 1))
                .unwrap_or(30_000)
                + 2_000,
        );
        let give_up = std::time::Instant::now() + claim_ttl.to_std().unwrap_or_default();
        loop {
            let claimed = {
                let mut conn = self.db.conn().await?;
                let row: PaymentRow = payments::table
                    .filter(payments::order_id.eq(order.id))
                    .select(PaymentRow::as_select())
                    .first(&mut conn)
                    .await?;
                if row.status != PAYMENT_PREPAY {
                    return Ok(Err(PaymentError::NotPayable(
                        if row.status == PAYMENT_PAID {
                            OrderStatus::Paid
                        } else {
                            OrderStatus::Cancelled
                        },
                    )));
                }
                let fresh_after = now() - PREPAY_REUSE;
                if let (Some(prepay_id), Some(at)) = (&row.prepay_id, row.prepay_at)
                    && at > fresh_after
                {
                    return Ok(Ok(pay.pay_params(prepay_id)));
                }
                let at = now();
                let won = diesel::update(
                    payments::table
                        .filter(payments::id.eq(row.id))
                        .filter(payments::status.eq(PAYMENT_PREPAY))
                        .filter(
                            payments::prepay_id
                                .is_null()
                                .or(payments::prepay_at.le(fresh_after)),
                        )
                        .filter(
                            payments::prepay_claimed_at
                                .is_null()
                                .or(payments::prepay_claimed_at.lt(at - claim_ttl)),
                        ),
                )
                .set(payments::prepay_claimed_at.eq(at))
                .execute(&mut conn)
                .await?;
                (won == 1).then_some(row)
            };
            if let Some(row) = claimed {
                return self.request_prepay(pay, order.id, &row, &openid).await;
            }
            if std::time::Instant::now() > give_up {
                return Ok(Err(PaymentError::Unavailable(
                    "another request is creating this payment".to_owned(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks WeChat Pay for a prepay (this request holds the claim) and stores it.
    async fn request_prepay(
        &self,
        pay: &WechatPay,
        order_id: u64,
        row: &PaymentRow,
        openid: &str,
    ) -> DomainResult<Result<PayParams, PaymentError>> {
        let release = async || -> DomainResult<()> {
            let mut conn = self.db.conn().await?;
            diesel::update(payments::table.find(row.id))
                .set(payments::prepay_claimed_at.eq(None::<chrono::NaiveDateTime>))
                .execute(&mut conn)
                .await?;
            Ok(())
        };
        // the order may have been cancelled or paid while this request waited for the claim
        let (order, lines) = {
            let mut conn = self.db.conn().await?;
            let order: OrderRow = orders::table
                .find(order_id)
                .select(OrderRow::as_select())
                .first(&mut conn)
                .await?;
            let lines: Vec<String> = order_lines::table
                .filter(order_lines::order_id.eq(order_id))
                .order(order_lines::id)
                .select(order_lines::product_name_zh)
                .load(&mut conn)
                .await?;
            (order, lines)
        };
        if let Err(e) = payable(&order) {
            release().await?;
            return Ok(Err(e));
        }
        let result = pay
            .prepay(
                &row.out_trade_no,
                &describe(&lines),
                order.total_fen,
                openid,
                order.payment_deadline.and_utc(),
            )
            .await;
        match result {
            Ok(prepay_id) => {
                let at = now();
                let first_query = self
                    .settings
                    .query_after_secs
                    .as_slice()
                    .first()
                    .map(|s| at + secs(*s))
                    .unwrap_or(order.payment_deadline);
                let mut conn = self.db.conn().await?;
                diesel::update(payments::table.find(row.id))
                    .set((
                        payments::prepay_id.eq(&prepay_id),
                        payments::prepay_at.eq(at),
                        payments::prepay_claimed_at.eq(None::<chrono::NaiveDateTime>),
                        payments::next_query_at.eq(first_query.min(order.payment_deadline)),
                    ))
                    .execute(&mut conn)
                    .await?;
                metrics::counter!("ruizhu_payments_prepays_total").increment(1);
                Ok(Ok(pay.pay_params(&prepay_id)))
            }
            Err(e) => {
                release().await?;
                tracing::warn!(error = %e, order_id, "prepay failed");
                Ok(Err(PaymentError::Unavailable(match e {
                    PayError::Rejected { code, .. } => format!("WeChat Pay refused: {code}"),
                    other => other.to_string(),
                })))
            }
        }
    }

    /// Handles `POST /webhooks/wechatpay/notify`: the five verification steps of §3.4, then the
    /// business checks, then the transition. `Ok` = answer 204.
    pub async fn handle_payment_notification(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
    ) -> Result<Recorded, NotifyRefusal> {
        let pay = self.merchant_for_notifications()?;
        let plaintext = open(pay, headers, body, "transaction")?;
        let transaction: Transaction = serde_json::from_slice(&plaintext)
            .map_err(|_| NotifyRefusal::new(400, "malformed transaction"))?;
        match self.record_transaction(&transaction, Source::Notify).await {
            Ok(Ok(recorded)) => Ok(recorded),
            Ok(Err(rejection)) => Err(NotifyRefusal::new(400, rejection.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "payment notification not processed");
                Err(NotifyRefusal::new(500, "temporarily unable to process"))
            }
        }
    }

    /// Handles `POST /webhooks/wechatpay/refund-notify` (same verification, AAD `refund`).
    pub async fn handle_refund_notification(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
    ) -> Result<(), NotifyRefusal> {
        let pay = self.merchant_for_notifications()?;
        let plaintext = open(pay, headers, body, "refund")?;
        let value: serde_json::Value = serde_json::from_slice(&plaintext)
            .map_err(|_| NotifyRefusal::new(400, "malformed refund"))?;
        if let Some(mchid) = value["mchid"].as_str()
            && mchid != pay.mch_id()
        {
            security_event(
                "foreign_mchid",
                value["out_trade_no"].as_str().unwrap_or(""),
            );
            return Err(NotifyRefusal::new(
                400,
                Rejection::ForeignMerchant.to_string(),
            ));
        }
        let state: crate::wechatpay::RefundState = serde_json::from_value(value)
            .map_err(|_| NotifyRefusal::new(400, "malformed refund"))?;
        match self.apply_refund_state(&state).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(rejection)) => Err(NotifyRefusal::new(400, rejection.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "refund notification not processed");
                Err(NotifyRefusal::new(500, "temporarily unable to process"))
            }
        }
    }

    fn merchant_for_notifications(&self) -> Result<&WechatPay, NotifyRefusal> {
        match &self.mode {
            PaymentMode::Merchant(pay) => Ok(pay),
            _ => Err(NotifyRefusal::new(404, "no merchant is configured")),
        }
    }

    /// Development only: runs the same path as a verified notification for the member's order.
    pub async fn dev_confirm(
        &self,
        order_id: u64,
        member_id: u64,
    ) -> DomainResult<Result<Recorded, PaymentError>> {
        let PaymentMode::Development { app_id } = &self.mode else {
            return Ok(Err(PaymentError::Disabled));
        };
        let mut conn = self.db.conn().await?;
        let order: Option<OrderRow> = orders::table
            .filter(orders::id.eq(order_id))
            .filter(orders::member_id.eq(member_id))
            .select(OrderRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        let Some(order) = order else {
            return Ok(Err(PaymentError::NotFound));
        };
        let transaction = Transaction {
            appid: app_id.clone(),
            mchid: "DEV".to_owned(),
            out_trade_no: order.order_no.clone().unwrap_or_default(),
            transaction_id: Some(format!("DEV{:029}", order.id)),
            trade_state: "SUCCESS".to_owned(),
            success_time: Some(chrono::Utc::now().to_rfc3339()),
            amount: TransactionAmount {
                total: order.total_fen,
                payer_total: Some(order.total_fen),
                currency: Some("CNY".to_owned()),
            },
        };
        Ok(self
            .record_transaction(&transaction, Source::Dev)
            .await?
            .map_err(|_| PaymentError::NotFound))
    }

    /// Records a successful transaction exactly once: business checks, then (order row locked)
    /// PENDING_PAYMENT → PAID with the payment stored under its unique `transaction_id`, or the
    /// paid-after-cancel handling. Duplicates change nothing.
    pub async fn record_transaction(
        &self,
        tx: &Transaction,
        source: Source,
    ) -> DomainResult<Result<Recorded, Rejection>> {
        let (mch_id, app_id) = self.expected_ids();
        let refusal = if tx.mchid != mch_id {
            Some(Rejection::ForeignMerchant)
        } else if tx.appid != app_id {
            Some(Rejection::ForeignApp)
        } else if tx.trade_state != "SUCCESS" {
            Some(Rejection::NotSuccess)
        } else if !tx.transaction_id.as_deref().is_some_and(|t| {
            (1..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
        }) {
            Some(Rejection::MissingTransactionId)
        } else {
            None
        };
        if let Some(rejection) = refusal {
            return Ok(Err(self.reject(rejection, tx)));
        }
        let transaction_id = tx.transaction_id.clone().unwrap_or_default();
        let lease = self.lease();
        let mut conn = self.db.conn().await?;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let result = conn
                .transaction::<_, TxError, _>(async |conn| {
                    record_tx(conn, tx, &transaction_id, source, lease).await
                })
                .await;
            match result {
                Err(TxError::Db(e)) if crate::order::is_retryable_conflict(&e) && attempt < 5 => {
                    continue;
                }
                other => break other,
            }
        };
        let (recorded, order_id) = match outcome {
            Ok(done) => done,
            Err(TxError::Rejected(rejection)) => return Ok(Err(self.reject(rejection, tx))),
            Err(TxError::Db(e)) => return Err(e.into()),
        };
        let label = match recorded {
            Recorded::Paid => "paid",
            Recorded::PaidAfterCancel => "paid_after_cancel",
            Recorded::RefundingLatePayment => "late_payment_refunded",
            Recorded::Duplicate => "duplicate",
            Recorded::Conflict => "conflict",
        };
        metrics::counter!("ruizhu_payments_recorded_total", "outcome" => label, "source" => source.as_str())
            .increment(1);
        match recorded {
            Recorded::Conflict => tracing::error!(
                order_id,
                "a second transaction for an already paid order: needs manual review"
            ),
            Recorded::PaidAfterCancel => {
                if let Ok(products) = self.orders.product_ids_of(&mut conn, order_id).await {
                    self.orders.catalog.invalidate_products(&products).await;
                }
            }
            Recorded::RefundingLatePayment => {
                // the refund request runs off the notification's path; the worker retries it
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.dispatch_pending_refunds_of(order_id).await {
                        tracing::warn!(error = %e, order_id, "automatic refund not sent yet");
                    }
                });
            }
            _ => {}
        }
        Ok(Ok(recorded))
    }

    fn reject(&self, rejection: Rejection, tx: &Transaction) -> Rejection {
        if rejection.is_security_event() {
            security_event(rejection.label(), &tx.out_trade_no);
        } else {
            metrics::counter!("ruizhu_payments_rejected_total", "reason" => rejection.label())
                .increment(1);
            tracing::info!(reason = rejection.label(), out_trade_no = %tx.out_trade_no, "transaction refused");
        }
        rejection
    }
}

fn open(
    pay: &WechatPay,
    headers: &SignedHeaders,
    body: &[u8],
    aad: &str,
) -> Result<Vec<u8>, NotifyRefusal> {
    pay.open_notification(headers, body, aad)
        .map(|(_, plaintext)| plaintext)
        .map_err(|e: VerifyError| {
            security_event(e.label(), "");
            let status = match e {
                VerifyError::Malformed | VerifyError::Decrypt => 400,
                _ => 401,
            };
            NotifyRefusal::new(status, e.to_string())
        })
}

/// Whether the order can be paid now.
fn payable(order: &OrderRow) -> Result<(), PaymentError> {
    if order.status() != OrderStatus::PendingPayment {
        return Err(PaymentError::NotPayable(order.status()));
    }
    if order.payment_deadline <= now() + chrono::TimeDelta::seconds(5) {
        return Err(PaymentError::Expired);
    }
    Ok(())
}

fn secs(s: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
}

/// ≤ 127 characters: the first product's name, and how many more lines there are.
fn describe(lines: &[String]) -> String {
    let first = lines.first().map(String::as_str).unwrap_or("RUIZHU");
    let text = if lines.len() > 1 {
        format!("{first} 等{}件商品", lines.len())
    } else {
        first.to_owned()
    };
    text.chars().take(127).collect()
}

/// The transactional core of [`Payments::record_transaction`].
async fn record_tx(
    conn: &mut AsyncMysqlConnection,
    tx: &Transaction,
    transaction_id: &str,
    source: Source,
    lease: chrono::TimeDelta,
) -> Result<(Recorded, u64), TxError> {
    let order: Option<OrderRow> = orders::table
        .filter(orders::order_no.eq(&tx.out_trade_no))
        .select(OrderRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some(order) = order else {
        return Err(TxError::Rejected(Rejection::UnknownOrder));
    };
    if tx.amount.total != order.total_fen {
        return Err(TxError::Rejected(Rejection::AmountMismatch));
    }
    let existing: Option<PaymentRow> = payments::table
        .filter(payments::order_id.eq(order.id))
        .select(PaymentRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    if let Some(recorded) = existing.as_ref().and_then(|p| p.transaction_id.as_deref()) {
        return Ok((
            if recorded == transaction_id {
                Recorded::Duplicate
            } else {
                Recorded::Conflict
            },
            order.id,
        ));
    }
    let paid_at = tx
        .success_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.naive_utc())
        .unwrap_or_else(now);
    let note = format!("WeChat Pay transaction ({})", source.as_str());
    let recorded = match order.status() {
        OrderStatus::PendingPayment => {
            if !apply(
                conn,
                &order,
                OrderStatus::PendingPayment,
                OrderStatus::Paid,
                Actor::System,
                Some(note),
                None,
            )
            .await?
            {
                return Ok((Recorded::Conflict, order.id));
            }
            Recorded::Paid
        }
        OrderStatus::Cancelled => {
            if reserve_again(conn, order.id).await? {
                apply(
                    conn,
                    &order,
                    OrderStatus::Cancelled,
                    OrderStatus::Paid,
                    Actor::System,
                    Some("paid after cancellation; stock reserved again".to_owned()),
                    None,
                )
                .await?;
                Recorded::PaidAfterCancel
            } else {
                let order_no = order.order_no.clone().unwrap_or_default();
                diesel::insert_into(refunds::table)
                    .values((
                        refunds::order_id.eq(order.id),
                        refunds::out_refund_no.eq(format!("{order_no}A")),
                        refunds::amount_fen.eq(order.total_fen),
                        refunds::reason.eq("订单已取消，库存不足，自动退款"),
                        refunds::status.eq(refund::STATUS_PENDING),
                        refunds::kind.eq(refund::KIND_AUTO),
                        // sent right after the commit; the worker takes over after the lease
                        refunds::next_check_at.eq(now() + lease),
                    ))
                    .execute(conn)
                    .await?;
                note_event(
                    conn,
                    &order,
                    Actor::System,
                    "paid after cancellation; stock gone, refunding in full",
                )
                .await?;
                Recorded::RefundingLatePayment
            }
        }
        _ => return Ok((Recorded::Conflict, order.id)),
    };
    let values = (
        payments::status.eq(PAYMENT_PAID),
        payments::transaction_id.eq(Some(transaction_id)),
        payments::payer_total_fen.eq(tx.amount.payer_total),
        payments::paid_at.eq(Some(paid_at)),
        payments::source.eq(Some(source.as_str())),
        payments::next_query_at.eq(None::<chrono::NaiveDateTime>),
    );
    if let Some(existing) = existing {
        diesel::update(payments::table.find(existing.id))
            .set(values)
            .execute(conn)
            .await?;
    } else {
        diesel::insert_into(payments::table)
            .values((
                payments::order_id.eq(order.id),
                payments::out_trade_no.eq(&tx.out_trade_no),
                payments::amount_fen.eq(order.total_fen),
                values,
            ))
            .execute(conn)
            .await?;
    }
    crate::events::record(
        conn,
        "payment.recorded",
        "payment",
        order.id,
        serde_json::json!({
            "order_id": order.id, "out_trade_no": tx.out_trade_no, "transaction_id": transaction_id,
            "amount_fen": tx.amount.total, "source": source.as_str(),
            "outcome": match recorded {
                Recorded::Paid => "paid",
                Recorded::PaidAfterCancel => "paid_after_cancel",
                _ => "refunding_late_payment",
            },
        }),
    )
    .await?;
    Ok((recorded, order.id))
}

/// Reserves a cancelled order's units again if every SKU still has them (rows locked in
/// ascending SKU order, like checkout); all or nothing, with ledger entries.
async fn reserve_again(conn: &mut AsyncMysqlConnection, order_id: u64) -> QueryResult<bool> {
    let lines: Vec<(u64, i32)> = order_lines::table
        .filter(order_lines::order_id.eq(order_id))
        .select((order_lines::sku_id, order_lines::quantity))
        .load(conn)
        .await?;
    let mut wanted: std::collections::BTreeMap<u64, i32> = std::collections::BTreeMap::new();
    for (sku, quantity) in &lines {
        *wanted.entry(*sku).or_default() += *quantity;
    }
    let ids: Vec<u64> = wanted.keys().copied().collect();
    let stock: Vec<(u64, i32)> = skus::table
        .filter(skus::id.eq_any(&ids))
        .order(skus::id)
        .select((skus::id, skus::stock))
        .for_update()
        .load(conn)
        .await?;
    let available: std::collections::HashMap<u64, i32> = stock.into_iter().collect();
    if wanted
        .iter()
        .any(|(sku, q)| available.get(sku).copied().unwrap_or(0) < *q)
    {
        return Ok(false);
    }
    for (sku, quantity) in &wanted {
        diesel::update(skus::table.find(*sku))
            .set(skus::stock.eq(skus::stock - *quantity))
            .execute(conn)
            .await?;
    }
    let ledger: Vec<_> = lines
        .iter()
        .map(|(sku, q)| {
            (
                inventory_ledger::sku_id.eq(*sku),
                inventory_ledger::delta.eq(-*q),
                inventory_ledger::reason.eq("reserve"),
                inventory_ledger::order_id.eq(Some(order_id)),
                inventory_ledger::note.eq(Some("paid after cancellation")),
            )
        })
        .collect();
    diesel::insert_into(inventory_ledger::table)
        .values(&ledger)
        .execute(conn)
        .await?;
    let changes: Vec<crate::events::StockChange> = lines
        .iter()
        .map(|(sku, q)| (*sku, -*q, "reserve", Some(order_id)))
        .collect();
    crate::events::stock_changed(conn, &changes).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_fit_wechat_limits() {
        assert_eq!(describe(&[]), "RUIZHU");
        assert_eq!(describe(&["丝巾".into()]), "丝巾");
        assert_eq!(describe(&["丝巾".into(), "手袋".into()]), "丝巾 等2件商品");
        assert_eq!(describe(&["长".repeat(300)]).chars().count(), 127);
    }
}
