//! The payments worker's rounds, safe on every replica at once (rows claimed with
//! `FOR UPDATE SKIP LOCKED` by pushing their next check forward before acting):
//!
//! - **active query**: prepays whose callback has not come are queried at the configured
//!   offsets (2 and 10 minutes by default) and once shortly before the payment deadline, so a
//!   paid order never waits for WeChat's 24-hour retry schedule;
//! - **close before cancel**: an expired order with a prepay is closed at WeChat Pay before the
//!   order is cancelled; `ORDERPAID` (or a query showing SUCCESS) marks it paid instead. The
//!   prepay of an order its owner or operations cancelled is closed the same way, so it can no
//!   longer be paid (a payment that slipped in first is handled as paid-after-cancel);
//! - **refunds**: pending refunds are (re)sent, processing ones are queried.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::refund::{STATUS_PENDING, STATUS_PROCESSING};
use super::{
    PAYMENT_CLOSED, PAYMENT_PREPAY, PaymentMode, PaymentRow, Payments, RefundRow, Source, secs,
};
use crate::DomainResult;
use crate::order::OrderStatus;
use crate::order::lifecycle::now;
use crate::schema::{orders, payments, refunds};
use crate::wechatpay::{CloseOutcome, WechatPay};

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Prepays queried.
    pub queried: usize,
    /// Orders found paid by a query or a close.
    pub found_paid: usize,
    /// Expired orders closed and cancelled.
    pub closed: usize,
    /// Refunds sent or queried.
    pub refunds_checked: usize,
}

/// How long past its deadline an order whose prepay cannot be closed (WeChat Pay unreachable)
/// is cancelled anyway: `time_expire` = the deadline, so WeChat Pay no longer accepts payment,
/// and a payment that still slipped through is handled as paid-after-cancel.
const CLOSE_GIVE_UP: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Rows one worker round handles per job. Each may take a WeChat Pay call of up to
/// `timeout × (retries + 1)`, so rounds stay short and the lease below covers a whole round.
const BATCH: i64 = 20;

impl Payments {
    /// One round of every payments job; returns what it did.
    pub async fn run_once(&self) -> DomainResult<Round> {
        let mut round = Round::default();
        if let PaymentMode::Merchant(pay) = &self.mode {
            self.query_due(pay, &mut round).await?;
            self.close_expired(pay, &mut round).await?;
        }
        self.check_refunds(&mut round).await?;
        Ok(round)
    }

    /// Claims up to one batch of rows whose next check is due by moving the check forward.
    async fn claim_due_payments(
        &self,
        filter_expired: bool,
    ) -> DomainResult<Vec<(PaymentRow, chrono::NaiveDateTime, String)>> {
        let mut conn = self.db.conn().await?;
        let at = now();
        let lease = self.lease();
        Ok(conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                // `next_query_at` doubles as the lease: queries before the deadline, closing after
                // it (or once the order was cancelled by its owner or operations)
                let pending = OrderStatus::PendingPayment.as_str();
                let base = payments::table
                    .inner_join(orders::table)
                    .filter(payments::status.eq(PAYMENT_PREPAY))
                    .select((
                        PaymentRow::as_select(),
                        orders::payment_deadline,
                        orders::status,
                    ))
                    .limit(BATCH);
                let due: Vec<(PaymentRow, chrono::NaiveDateTime, String)> = if filter_expired {
                    base.filter(
                        orders::status
                            .eq(pending)
                            .and(orders::payment_deadline.lt(at))
                            .or(orders::status.eq(OrderStatus::Cancelled.as_str())),
                    )
                    .filter(
                        payments::next_query_at
                            .is_null()
                            .or(payments::next_query_at.le(at)),
                    )
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?
                } else {
                    base.filter(payments::prepay_id.is_not_null())
                        .filter(orders::status.eq(pending))
                        .filter(payments::next_query_at.le(at))
                        .filter(orders::payment_deadline.gt(at))
                        .for_update()
                        .skip_locked()
                        .load(conn)
                        .await?
                };
                for (p, _, _) in &due {
                    // the lease: another replica skips these until it runs out
                    diesel::update(payments::table.find(p.id))
                        .set(payments::next_query_at.eq(Some(at + lease)))
                        .execute(conn)
                        .await?;
                }
                Ok(due)
            })
            .await?)
    }

    async fn query_due(&self, pay: &WechatPay, round: &mut Round) -> DomainResult<()> {
        for (payment, deadline, _) in self.claim_due_payments(false).await? {
            round.queried += 1;
            let mut conn = self.db.conn().await?;
            diesel::update(payments::table.find(payment.id))
                .set(payments::queries.eq(payments::queries + 1))
                .execute(&mut conn)
                .await?;
            match pay.query_order(&payment.out_trade_no).await {
                Ok(Some(tx)) if tx.trade_state == "SUCCESS" => {
                    if self.record_transaction(&tx, Source::Query).await?.is_ok() {
                        round.found_paid += 1;
                    } else {
                        // refused (logged and counted): no more queries; the close at expiry decides
                        diesel::update(payments::table.find(payment.id))
                            .set(payments::next_query_at.eq(None::<chrono::NaiveDateTime>))
                            .execute(&mut conn)
                            .await?;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "active payment query failed"),
            }
            let next = self.next_query(&payment, deadline);
            diesel::update(payments::table.find(payment.id))
                .set(payments::next_query_at.eq(next))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// The next active query after now: the next configured offset from the prepay, else one
    /// last time a minute before the deadline, else none (the close at expiry settles it).
    fn next_query(
        &self,
        payment: &PaymentRow,
        deadline: chrono::NaiveDateTime,
    ) -> Option<chrono::NaiveDateTime> {
        let at = now();
        let base = payment.prepay_at.unwrap_or(payment.created_at);
        let last_call = deadline - chrono::TimeDelta::seconds(60);
        self.settings
            .query_after_secs
            .iter()
            .map(|s| base + secs(*s))
            .chain(std::iter::once(last_call))
            .filter(|t| *t > at && *t < deadline)
            .min()
    }

    async fn close_expired(&self, pay: &WechatPay, round: &mut Round) -> DomainResult<()> {
        let close_after = secs(self.settings.close_after_secs);
        for (payment, deadline, status) in self.claim_due_payments(true).await? {
            let already_cancelled = status == OrderStatus::Cancelled.as_str();
            let at = now();
            let prepaid = payment.prepay_at.unwrap_or(payment.created_at);
            if prepaid + close_after > at {
                // WeChat Pay refuses to close an order this young; the lease retries it later
                continue;
            }
            let outcome = pay.close_order(&payment.out_trade_no).await;
            let give_up = deadline + CLOSE_GIVE_UP < at;
            let cancel = match outcome {
                Ok(CloseOutcome::Closed) => true,
                Ok(CloseOutcome::AlreadyPaid) => {
                    match pay.query_order(&payment.out_trade_no).await {
                        Ok(Some(tx)) if tx.trade_state == "SUCCESS" => {
                            if self.record_transaction(&tx, Source::Close).await?.is_ok() {
                                round.found_paid += 1;
                            }
                        }
                        other => tracing::warn!(
                            answer = ?other.map(|t| t.map(|t| t.trade_state)),
                            "close said ORDERPAID but the query does not show SUCCESS"
                        ),
                    }
                    // if the payment could not be recorded, the order must not hold its stock
                    // forever: past the give-up time it is cancelled (a payment is then handled
                    // as paid-after-cancel)
                    give_up
                }
                Err(e) if give_up => {
                    tracing::error!(
                        error = %e,
                        order_id = payment.order_id,
                        "closing the expired prepay keeps failing; cancelling the order without it"
                    );
                    metrics::counter!("ruizhu_payments_close_given_up_total").increment(1);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, order_id = payment.order_id, "close failed; will retry");
                    false
                }
            };
            let cancelled = cancel
                && (already_cancelled
                    || self
                        .orders
                        .cancel_expired(payment.order_id)
                        .await?
                        .is_ok_and(|o| o.status() == OrderStatus::Cancelled));
            if cancelled {
                let mut conn = self.db.conn().await?;
                diesel::update(
                    payments::table
                        .find(payment.id)
                        .filter(payments::status.eq(PAYMENT_PREPAY)),
                )
                .set((
                    payments::status.eq(PAYMENT_CLOSED),
                    payments::closed_at.eq(Some(now())),
                    payments::next_query_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(&mut conn)
                .await?;
                if !already_cancelled {
                    metrics::counter!("ruizhu_orders_expired_total").increment(1);
                }
                round.closed += 1;
            }
        }
        Ok(())
    }

    /// How long a claimed row is left to the replica that claimed it: a whole round of calls.
    pub(super) fn lease(&self) -> chrono::TimeDelta {
        let per_call = self.settings.timeout_ms * u64::from(self.settings.retries + 1);
        let round = per_call.saturating_mul(u64::try_from(BATCH).unwrap_or(20)) / 1_000;
        secs(round.max(60))
    }

    async fn check_refunds(&self, round: &mut Round) -> DomainResult<()> {
        let at = now();
        let lease = self.lease();
        let due: Vec<RefundRow> = {
            let mut conn = self.db.conn().await?;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let due: Vec<RefundRow> = refunds::table
                    .filter(refunds::status.eq_any([STATUS_PENDING, STATUS_PROCESSING]))
                    .filter(refunds::next_check_at.le(at))
                    .limit(BATCH)
                    .select(RefundRow::as_select())
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?;
                for r in &due {
                    diesel::update(refunds::table.find(r.id))
                        .set(refunds::next_check_at.eq(Some(at + lease)))
                        .execute(conn)
                        .await?;
                }
                Ok(due)
            })
            .await?
        };
        for refund in due {
            round.refunds_checked += 1;
            if refund.status == STATUS_PENDING {
                self.dispatch_refund(&refund).await?;
                continue;
            }
            let PaymentMode::Merchant(pay) = &self.mode else {
                continue;
            };
            match pay.query_refund(&refund.out_refund_no).await {
                Ok(Some(mut state)) => {
                    if state.out_refund_no.is_empty() {
                        state.out_refund_no = refund.out_refund_no.clone();
                    }
                    let _ = self.apply_refund_state(&state).await?;
                }
                Ok(None) => {
                    tracing::error!(out_refund_no = %refund.out_refund_no, "WeChat Pay does not know a processing refund");
                    let mut conn = self.db.conn().await?;
                    diesel::update(refunds::table.find(refund.id))
                        .set(refunds::next_check_at.eq(Some(now() + chrono::TimeDelta::hours(1))))
                        .execute(&mut conn)
                        .await?;
                }
                Err(e) => tracing::warn!(error = %e, "refund query failed"),
            }
        }
        Ok(())
    }
}
