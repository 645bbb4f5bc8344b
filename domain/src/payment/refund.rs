//! Refunds: requested by operations (partial or full, total ≤ paid) or started automatically for
//! a payment that arrived after its order was cancelled and could not be honoured. Each refund
//! has a deterministic `out_refund_no`, so retries (after a timeout, a 5xx or a crash) are the
//! same refund to WeChat Pay. The order is REFUNDING while an operations refund is in flight and
//! ends REFUNDED (full) or back where it was (partial, or the refund failed), with an event.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use serde::Serialize;

use super::{PAYMENT_PAID, PaymentMode, Payments, Rejection, TxError};
use crate::order::lifecycle::{apply, note_event, now};
use crate::order::{Actor, OrderRow, OrderStatus};
use crate::schema::{orders, payments, refunds};
use crate::wechatpay::{PayError, RefundRequest, RefundState};
use crate::{DomainError, DomainResult};

/// Not yet accepted by WeChat Pay (the request is sent, and retried, by the worker).
pub const STATUS_PENDING: &str = "PENDING";
/// Accepted; WeChat Pay is moving the money.
pub const STATUS_PROCESSING: &str = "PROCESSING";
/// Done.
pub const STATUS_SUCCESS: &str = "SUCCESS";
/// Closed by WeChat Pay without paying out.
pub const STATUS_CLOSED: &str = "CLOSED";
/// Failed (e.g. the payer's card was closed), or refused by WeChat Pay: needs operations.
pub const STATUS_ABNORMAL: &str = "ABNORMAL";
/// Requested by operations.
pub const KIND_OPS: &str = "ops";
/// Started automatically for a payment after cancellation.
pub const KIND_AUTO: &str = "auto";

/// Longest refund reason (WeChat Pay shows it to the payer; 80 characters).
pub const MAX_REASON_CHARS: usize = 80;

/// A refund as stored.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = refunds, check_for_backend(diesel::mysql::Mysql))]
pub struct RefundRow {
    pub id: u64,
    pub order_id: u64,
    pub out_refund_no: String,
    pub refund_id: Option<String>,
    pub amount_fen: i64,
    pub reason: String,
    pub status: String,
    pub kind: String,
    pub resume_status: Option<String>,
    pub requested_by: Option<u64>,
    pub failure: Option<String>,
    pub next_check_at: Option<chrono::NaiveDateTime>,
    pub attempts: i32,
    pub finished_at: Option<chrono::NaiveDateTime>,
    pub created_at: chrono::NaiveDateTime,
}

impl RefundRow {
    /// SUCCESS and CLOSED never change again. ABNORMAL can still become SUCCESS (WeChat Pay
    /// reports it once the abnormal refund was handled by hand).
    fn is_final(&self) -> bool {
        matches!(self.status.as_str(), STATUS_SUCCESS | STATUS_CLOSED)
    }
}

/// Why a refund was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundError {
    /// No such order.
    NotFound,
    /// The order's status does not allow a refund (or one is already in progress).
    InvalidTransition(OrderStatus),
    /// A refund of this order is still on its way.
    RefundInProgress,
    /// The amount is not between 1 fen and what is left to refund.
    InvalidAmount {
        /// What may still be refunded, in fen.
        refundable_fen: i64,
    },
    /// The reason is empty or too long.
    InvalidReason,
    /// The order has no recorded payment to refund.
    NotPaid,
}

fn backoff(attempts: i32) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::from(attempts.clamp(1, 10)) * 30)
}

impl Payments {
    /// Refunds of an order, oldest first.
    pub async fn refunds_of(&self, order_id: u64) -> DomainResult<Vec<RefundRow>> {
        let mut conn = self.db.conn().await?;
        Ok(refunds::table
            .filter(refunds::order_id.eq(order_id))
            .order(refunds::id)
            .select(RefundRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Operations refund `amount_fen` of a paid order. The refund is recorded and the order
    /// moves to REFUNDING in one transaction; then the request goes to WeChat Pay (retried by
    /// the worker with the same `out_refund_no` if it cannot be sent now).
    ///
    /// A CANCELLED order that was paid late and whose automatic refund failed (CLOSED or
    /// ABNORMAL) can be refunded again this way; its status does not change.
    pub async fn refund_order(
        &self,
        order_id: u64,
        staff_id: u64,
        amount_fen: i64,
        reason: &str,
    ) -> DomainResult<Result<RefundRow, RefundError>> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Ok(Err(RefundError::InvalidReason));
        }
        let lease = self.lease();
        let mut conn = self.db.conn().await?;
        let created = conn
            .transaction::<_, TxErr, _>(async |conn| {
                let order: OrderRow = orders::table
                    .find(order_id)
                    .select(OrderRow::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or(TxErr::Refused(RefundError::NotFound))?;
                let from = order.status();
                let late_payment = from == OrderStatus::Cancelled;
                if !from.refundable() && !late_payment {
                    return Err(TxErr::Refused(RefundError::InvalidTransition(from)));
                }
                let in_flight: i64 = refunds::table
                    .filter(refunds::order_id.eq(order_id))
                    .filter(refunds::status.eq_any([STATUS_PENDING, STATUS_PROCESSING]))
                    .count()
                    .get_result(conn)
                    .await?;
                if in_flight > 0 {
                    return Err(TxErr::Refused(RefundError::RefundInProgress));
                }
                let paid: i64 = payments::table
                    .filter(payments::order_id.eq(order_id))
                    .filter(payments::status.eq(PAYMENT_PAID))
                    .count()
                    .get_result(conn)
                    .await?;
                if paid == 0 {
                    return Err(TxErr::Refused(RefundError::NotPaid));
                }
                let refundable_fen = order.total_fen - order.refunded_fen;
                if amount_fen < 1 || amount_fen > refundable_fen {
                    return Err(TxErr::Refused(RefundError::InvalidAmount {
                        refundable_fen,
                    }));
                }
                let earlier: i64 = refunds::table
                    .filter(refunds::order_id.eq(order_id))
                    .count()
                    .get_result(conn)
                    .await?;
                let out_refund_no = format!(
                    "{}R{}",
                    order.order_no.clone().unwrap_or_default(),
                    earlier + 1
                );
                diesel::insert_into(refunds::table)
                    .values((
                        refunds::order_id.eq(order_id),
                        refunds::out_refund_no.eq(&out_refund_no),
                        refunds::amount_fen.eq(amount_fen),
                        refunds::reason.eq(reason),
                        refunds::status.eq(STATUS_PENDING),
                        refunds::kind.eq(if late_payment { KIND_AUTO } else { KIND_OPS }),
                        refunds::resume_status.eq((!late_payment).then_some(from.as_str())),
                        refunds::requested_by.eq(Some(staff_id)),
                        // sent right after the commit; the worker takes over after the lease
                        refunds::next_check_at.eq(now() + lease),
                    ))
                    .execute(conn)
                    .await?;
                let note = format!("refund of {amount_fen} fen: {reason}");
                if late_payment {
                    note_event(conn, &order, Actor::Staff(staff_id), &note).await?;
                } else {
                    apply(
                        conn,
                        &order,
                        from,
                        OrderStatus::Refunding,
                        Actor::Staff(staff_id),
                        Some(note),
                        None,
                    )
                    .await?;
                }
                Ok(refunds::table
                    .filter(refunds::out_refund_no.eq(&out_refund_no))
                    .select(RefundRow::as_select())
                    .first(conn)
                    .await?)
            })
            .await;
        let refund = match created {
            Ok(refund) => refund,
            Err(TxErr::Refused(e)) => return Ok(Err(e)),
            Err(TxErr::Db(e)) => return Err(e.into()),
        };
        metrics::counter!("ruizhu_refunds_requested_total", "kind" => KIND_OPS).increment(1);
        self.dispatch_refund(&refund).await?;
        Ok(Ok(self.refund(refund.id).await?))
    }

    async fn refund(&self, id: u64) -> DomainResult<RefundRow> {
        let mut conn = self.db.conn().await?;
        Ok(refunds::table
            .find(id)
            .select(RefundRow::as_select())
            .first(&mut conn)
            .await?)
    }

    /// Sends the order's pending refunds now (the worker does the same on its schedule).
    pub(crate) async fn dispatch_pending_refunds_of(&self, order_id: u64) -> DomainResult<()> {
        let pending: Vec<RefundRow> = {
            let mut conn = self.db.conn().await?;
            refunds::table
                .filter(refunds::order_id.eq(order_id))
                .filter(refunds::status.eq(STATUS_PENDING))
                .select(RefundRow::as_select())
                .load(&mut conn)
                .await?
        };
        for refund in &pending {
            self.dispatch_refund(refund).await?;
        }
        Ok(())
    }

    /// Asks WeChat Pay for one pending refund and applies the answer. Transport failures leave
    /// it pending for the worker (same `out_refund_no` next time).
    pub(crate) async fn dispatch_refund(&self, refund: &RefundRow) -> DomainResult<()> {
        if refund.status != STATUS_PENDING {
            return Ok(());
        }
        let pay = match &self.mode {
            PaymentMode::Merchant(pay) => pay,
            PaymentMode::Development { .. } => {
                let state = RefundState {
                    out_refund_no: refund.out_refund_no.clone(),
                    refund_id: Some(format!("DEV-{}", refund.out_refund_no)),
                    status: STATUS_SUCCESS.to_owned(),
                    ..RefundState::default()
                };
                return self.apply_refund_state(&state).await.map(|_| ());
            }
            PaymentMode::Disabled => return Ok(()),
        };
        let (out_trade_no, total_fen): (Option<String>, i64) = {
            let mut conn = self.db.conn().await?;
            orders::table
                .find(refund.order_id)
                .select((orders::order_no, orders::total_fen))
                .first(&mut conn)
                .await?
        };
        let out_trade_no = out_trade_no.unwrap_or_default();
        let request = RefundRequest {
            out_trade_no: &out_trade_no,
            out_refund_no: &refund.out_refund_no,
            reason: &refund.reason,
            refund_fen: refund.amount_fen,
            total_fen,
        };
        match pay.refund(&request).await {
            Ok(mut state) => {
                if state.out_refund_no.is_empty() {
                    state.out_refund_no = refund.out_refund_no.clone();
                }
                self.apply_refund_state(&state).await.map(|_| ())
            }
            Err(PayError::Rejected { code, message, .. })
                if !matches!(
                    code.as_str(),
                    "NOT_ENOUGH" | "FREQUENCY_LIMITED" | "SYSTEM_ERROR" | "USER_ACCOUNT_ABNORMAL"
                ) =>
            {
                tracing::error!(%code, %message, out_refund_no = %refund.out_refund_no, "WeChat Pay refused a refund");
                let state = RefundState {
                    out_refund_no: refund.out_refund_no.clone(),
                    status: STATUS_ABNORMAL.to_owned(),
                    ..RefundState::default()
                };
                let failure: String = format!("{code}: {message}").chars().take(200).collect();
                self.finish(&state, Some(failure)).await.map(|_| ())
            }
            Err(e) => {
                tracing::warn!(error = %e, out_refund_no = %refund.out_refund_no, "refund not sent; will retry");
                let mut conn = self.db.conn().await?;
                diesel::update(refunds::table.find(refund.id))
                    .set((
                        refunds::attempts.eq(refunds::attempts + 1),
                        refunds::next_check_at.eq(now() + backoff(refund.attempts + 1)),
                    ))
                    .execute(&mut conn)
                    .await?;
                Ok(())
            }
        }
    }

    /// Applies a refund state from WeChat Pay (API answer, query or notification). Final states
    /// are applied once; repeats change nothing.
    pub async fn apply_refund_state(
        &self,
        state: &RefundState,
    ) -> DomainResult<Result<(), Rejection>> {
        self.finish(state, None).await
    }

    async fn finish(
        &self,
        state: &RefundState,
        failure: Option<String>,
    ) -> DomainResult<Result<(), Rejection>> {
        let mut conn = self.db.conn().await?;
        let order_id: Option<u64> = refunds::table
            .filter(refunds::out_refund_no.eq(&state.out_refund_no))
            .select(refunds::order_id)
            .first(&mut conn)
            .await
            .optional()?;
        let Some(order_id) = order_id else {
            return Ok(Err(Rejection::UnknownRefund));
        };
        let result = conn
            .transaction::<_, TxError, _>(async |conn| {
                finish_tx(conn, &self.orders.membership, order_id, state, failure).await
            })
            .await;
        match result {
            Ok(()) => Ok(Ok(())),
            Err(TxError::Rejected(r)) => Ok(Err(r)),
            Err(TxError::Db(e)) => Err(DomainError::from(e)),
        }
    }
}

enum TxErr {
    Refused(RefundError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxErr {
    fn from(e: diesel::result::Error) -> Self {
        TxErr::Db(e)
    }
}

async fn finish_tx(
    conn: &mut AsyncMysqlConnection,
    membership: &crate::membership::Membership,
    order_id: u64,
    state: &RefundState,
    failure: Option<String>,
) -> Result<(), TxError> {
    // lock order: the order row, then the refund (as refund_order does)
    let order: OrderRow = orders::table
        .find(order_id)
        .select(OrderRow::as_select())
        .for_update()
        .first(conn)
        .await?;
    let refund: RefundRow = refunds::table
        .filter(refunds::out_refund_no.eq(&state.out_refund_no))
        .select(RefundRow::as_select())
        .for_update()
        .first(conn)
        .await?;
    let status = state.status.as_str();
    let was_abnormal = refund.status == STATUS_ABNORMAL;
    if refund.is_final() || (was_abnormal && status != STATUS_SUCCESS) {
        // repeats of a final answer change nothing
        return Ok(());
    }
    match status {
        STATUS_PROCESSING => {
            diesel::update(refunds::table.find(refund.id))
                .set((
                    refunds::status.eq(STATUS_PROCESSING),
                    refunds::refund_id.eq(state.refund_id.clone().or(refund.refund_id.clone())),
                    refunds::next_check_at.eq(now() + chrono::TimeDelta::seconds(60)),
                ))
                .execute(conn)
                .await?;
            return Ok(());
        }
        STATUS_SUCCESS | STATUS_CLOSED | STATUS_ABNORMAL => {}
        _ => return Ok(()),
    }
    diesel::update(refunds::table.find(refund.id))
        .set((
            refunds::status.eq(status),
            refunds::refund_id.eq(state.refund_id.clone().or(refund.refund_id.clone())),
            refunds::failure.eq(failure),
            refunds::finished_at.eq(Some(now())),
            refunds::next_check_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .await?;
    let succeeded = status == STATUS_SUCCESS;
    if succeeded {
        diesel::update(orders::table.find(order_id))
            .set(orders::refunded_fen.eq(orders::refunded_fen + refund.amount_fen))
            .execute(conn)
            .await?;
        if refund.kind != KIND_AUTO {
            // the points the order used come back in proportion (an automatic refund is of a
            // cancelled order, whose points came back when it was cancelled), and a tier this
            // order's payment brought goes if the spend left no longer earns it
            membership
                .return_for_refund(
                    conn,
                    &order,
                    refund.id,
                    order.refunded_fen + refund.amount_fen,
                )
                .await?;
            membership.after_refund(conn, &order).await?;
        }
    }
    metrics::counter!("ruizhu_refunds_finished_total", "kind" => refund.kind.clone(), "status" => status.to_owned())
        .increment(1);
    crate::events::record(
        conn,
        if succeeded { "payment.refund_succeeded" } else { "payment.refund_failed" },
        "refund",
        order_id,
        serde_json::json!({
            "order_id": order_id, "out_refund_no": refund.out_refund_no,
            "amount_fen": refund.amount_fen, "status": status, "automatic": refund.kind == KIND_AUTO,
        }),
    )
    .await?;
    if was_abnormal {
        // money WeChat Pay reported abnormal went out after all; the order had already gone
        // back to where it was, so it is refunded now (in full: REFUNDED, with the timeline)
        tracing::warn!(out_refund_no = %refund.out_refund_no, "an abnormal refund succeeded later");
        note_event(
            conn,
            &order,
            Actor::System,
            "refund reported abnormal has succeeded",
        )
        .await?;
        let from = order.status();
        if refund.kind == KIND_OPS
            && from.refundable()
            && order.refunded_fen + refund.amount_fen >= order.total_fen
        {
            apply(
                conn,
                &order,
                from,
                OrderStatus::Refunding,
                Actor::System,
                None,
                None,
            )
            .await?;
            apply(
                conn,
                &order,
                OrderStatus::Refunding,
                OrderStatus::Refunded,
                Actor::System,
                Some("refunded in full".to_owned()),
                None,
            )
            .await?;
        }
        return Ok(());
    }
    if refund.kind == KIND_AUTO {
        let note = if succeeded {
            "automatic refund of the late payment completed"
        } else {
            tracing::error!(out_refund_no = %refund.out_refund_no, status, "automatic refund failed: needs operations");
            "automatic refund of the late payment failed: needs operations"
        };
        note_event(conn, &order, Actor::System, note).await?;
        return Ok(());
    }
    if order.status() != OrderStatus::Refunding {
        tracing::error!(
            order_id,
            status = %order.status,
            "refund finished for an order that is not refunding"
        );
        return Ok(());
    }
    let refunded_in_full = succeeded && order.refunded_fen + refund.amount_fen >= order.total_fen;
    let resume = refund
        .resume_status
        .as_deref()
        .and_then(OrderStatus::parse)
        .filter(|s| s.refundable())
        .unwrap_or(OrderStatus::Paid);
    let (to, note) = if refunded_in_full {
        (OrderStatus::Refunded, "refunded in full".to_owned())
    } else if succeeded {
        (
            resume,
            format!("partial refund of {} fen completed", refund.amount_fen),
        )
    } else {
        (resume, format!("refund {status}"))
    };
    apply(
        conn,
        &order,
        OrderStatus::Refunding,
        to,
        Actor::System,
        Some(note),
        None,
    )
    .await?;
    Ok(())
}
