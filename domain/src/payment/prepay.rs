//! Prepays: one per order, reused while WeChat Pay keeps it valid; concurrent requests wait for
//! the one in flight, and no database connection is held across WeChat Pay calls.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{PAYMENT_PAID, PAYMENT_PREPAY, PaymentError, PaymentMode, PaymentRow, Payments, secs};
use crate::DomainResult;
use crate::order::lifecycle::now;
use crate::order::{OrderRow, OrderStatus};
use crate::schema::{members, order_lines, orders, payments};
use crate::wechatpay::{PayError, PayParams, WechatPay};

/// WeChat keeps a prepay id valid two hours; we stop reusing one a little earlier.
const PREPAY_REUSE: chrono::TimeDelta = chrono::TimeDelta::minutes(110);

impl Payments {
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
