//! Recording payments: notifications verified and decrypted (§3.4), development confirmations
//! and active queries all end in [`Payments::record_transaction`], which applies a transaction
//! exactly once (unique `transaction_id`, order row locked, conditional transition), including
//! the paid-after-cancel cases.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use super::{
    NotifyRefusal, PAYMENT_PAID, PaymentError, PaymentMode, PaymentRow, Payments, Recorded,
    Rejection, Source, TxError, refund,
};
use crate::DomainResult;
use crate::order::lifecycle::{apply, note_event, now};
use crate::order::{Actor, OrderRow, OrderStatus};
use crate::schema::{inventory_ledger, order_lines, orders, payments, refunds, skus};
use crate::wechatpay::{SignedHeaders, Transaction, TransactionAmount, VerifyError, WechatPay};

impl Payments {
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
                // 503 while a dependency is briefly away (WeChat Pay retries either way)
                let status = if e.is_retryable() { 503 } else { 500 };
                Err(NotifyRefusal::new(status, "temporarily unable to process"))
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
                // 503 while a dependency is briefly away (WeChat Pay retries either way)
                let status = if e.is_retryable() { 503 } else { 500 };
                Err(NotifyRefusal::new(status, "temporarily unable to process"))
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
                    record_tx(
                        conn,
                        &self.orders.membership,
                        tx,
                        &transaction_id,
                        source,
                        lease,
                    )
                    .await
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

fn security_event(kind: &'static str, out_trade_no: &str) {
    metrics::counter!("ruizhu_wechatpay_security_events_total", "kind" => kind).increment(1);
    tracing::warn!(
        target: "security",
        kind,
        out_trade_no,
        "WeChat Pay message refused"
    );
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

/// The transactional core of [`Payments::record_transaction`].
async fn record_tx(
    conn: &mut AsyncMysqlConnection,
    membership: &crate::membership::Membership,
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
            membership.after_paid(conn, &order).await?;
            Recorded::Paid
        }
        OrderStatus::Cancelled => {
            // its coupon and points go back to it too, or the payment is refunded (lock order:
            // order, member, coupon, SKUs)
            if membership.can_revive(conn, &order).await? && reserve_again(conn, order.id).await? {
                membership.revive(conn, &order).await?;
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
                membership.after_paid(conn, &order).await?;
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
                    "paid after cancellation; stock, coupon or points gone, refunding in full",
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
