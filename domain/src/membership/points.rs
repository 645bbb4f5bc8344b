//! The points ledger: append-only entries, each with the balance after it. Every change locks
//! the member row first (one writer per member at a time), so a balance can never be overdrawn,
//! and carries a `source` key unique per member (`order:42:earn`, `order:42:spend`, …), so an
//! effect that is retried or delivered twice is written once.
//!
//! Positive entries are lots with an expiry; debits (spends, expiries, negative adjustments)
//! consume the lots that expire first. Invariant, per member: Σ delta = Σ remaining =
//! `members.points_balance` ≥ 0.

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncMysqlConnection, RunQueryDsl};

use super::{Membership, now};
use crate::DomainResult;
use crate::order::OrderRow;
use crate::schema::{members, orders, points_ledger, processed_events};

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Earned on a completed order.
    Earn,
    /// Spent at checkout.
    Spend,
    /// Given back (order cancelled or refunded).
    Reverse,
    /// Expired.
    Expire,
    /// Adjusted by operations.
    Adjust,
}

impl Kind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Earn => "EARN",
            Kind::Spend => "SPEND",
            Kind::Reverse => "REVERSE",
            Kind::Expire => "EXPIRE",
            Kind::Adjust => "ADJUST",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Earn,
            Kind::Spend,
            Kind::Reverse,
            Kind::Expire,
            Kind::Adjust,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = points_ledger, check_for_backend(diesel::mysql::Mysql))]
pub struct LedgerEntry {
    pub id: u64,
    pub member_id: u64,
    pub kind: String,
    pub delta: i64,
    pub balance_after: i64,
    pub remaining: i64,
    pub expires_at: Option<chrono::NaiveDateTime>,
    pub reason: String,
    pub source: String,
    pub order_id: Option<u64>,
    pub staff_id: Option<u64>,
    pub created_at: chrono::NaiveDateTime,
}

/// Why points could not be taken or adjusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointsError {
    /// The member has fewer points than that.
    Insufficient {
        /// What they have.
        balance: i64,
    },
    /// Zero, negative where it must be positive, or absurdly large.
    InvalidAmount,
    /// An adjustment needs a reason (1–200 characters).
    ReasonRequired,
    /// No such member.
    MemberNotFound,
}

/// Largest single change (guards against typos like an extra six zeros).
pub const MAX_CHANGE: i64 = 10_000_000;

/// One change to write.
#[derive(Debug, Clone)]
pub(crate) struct Change<'a> {
    pub member_id: u64,
    pub kind: Kind,
    /// Always positive; the kind says which way.
    pub amount: i64,
    pub source: String,
    pub reason: &'a str,
    pub order_id: Option<u64>,
    pub staff_id: Option<u64>,
}

/// Locks the member row; their balance, or `None` when there is no such member.
async fn lock_balance(conn: &mut AsyncMysqlConnection, member_id: u64) -> QueryResult<Option<i64>> {
    members::table
        .find(member_id)
        .select(members::points_balance)
        .for_update()
        .first(conn)
        .await
        .optional()
}

async fn already_written(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    source: &str,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        points_ledger::table
            .filter(points_ledger::member_id.eq(member_id))
            .filter(points_ledger::source.eq(source)),
    ))
    .get_result(conn)
    .await
}

/// Adds a lot of `change.amount` points expiring at `expires_at`. False when `change.source`
/// was already written (nothing changes).
pub(crate) async fn credit(
    conn: &mut AsyncMysqlConnection,
    change: &Change<'_>,
    expires_at: chrono::NaiveDateTime,
) -> QueryResult<bool> {
    let Some(balance) = lock_balance(conn, change.member_id).await? else {
        return Ok(false);
    };
    if change.amount <= 0 || already_written(conn, change.member_id, &change.source).await? {
        return Ok(false);
    }
    let after = balance + change.amount;
    diesel::update(members::table.find(change.member_id))
        .set(members::points_balance.eq(after))
        .execute(conn)
        .await?;
    diesel::insert_into(points_ledger::table)
        .values((
            points_ledger::member_id.eq(change.member_id),
            points_ledger::kind.eq(change.kind.as_str()),
            points_ledger::delta.eq(change.amount),
            points_ledger::balance_after.eq(after),
            points_ledger::remaining.eq(change.amount),
            points_ledger::expires_at.eq(Some(expires_at)),
            points_ledger::reason.eq(change.reason),
            points_ledger::source.eq(&change.source),
            points_ledger::order_id.eq(change.order_id),
            points_ledger::staff_id.eq(change.staff_id),
        ))
        .execute(conn)
        .await?;
    Ok(true)
}

/// Takes `change.amount` points, from the lots that expire first. `Ok(false)` when
/// `change.source` was already written; `Err` when the balance is short (nothing changes).
pub(crate) async fn debit(
    conn: &mut AsyncMysqlConnection,
    change: &Change<'_>,
) -> QueryResult<Result<bool, PointsError>> {
    let Some(balance) = lock_balance(conn, change.member_id).await? else {
        return Ok(Err(PointsError::MemberNotFound));
    };
    if change.amount <= 0 {
        return Ok(Err(PointsError::InvalidAmount));
    }
    if already_written(conn, change.member_id, &change.source).await? {
        return Ok(Ok(false));
    }
    // points past their expiry go first (the worker may not have got to them yet)
    let balance = balance - expire_member(conn, change.member_id, balance).await?;
    if balance < change.amount {
        return Ok(Err(PointsError::Insufficient { balance }));
    }
    let soonest = consume_lots(conn, change.member_id, change.amount).await?;
    let after = balance - change.amount;
    diesel::update(members::table.find(change.member_id))
        .set(members::points_balance.eq(after))
        .execute(conn)
        .await?;
    diesel::insert_into(points_ledger::table)
        .values((
            points_ledger::member_id.eq(change.member_id),
            points_ledger::kind.eq(change.kind.as_str()),
            points_ledger::delta.eq(-change.amount),
            points_ledger::balance_after.eq(after),
            points_ledger::remaining.eq(0),
            // the soonest expiry among the points taken: what they get back if returned
            points_ledger::expires_at.eq(soonest),
            points_ledger::reason.eq(change.reason),
            points_ledger::source.eq(&change.source),
            points_ledger::order_id.eq(change.order_id),
            points_ledger::staff_id.eq(change.staff_id),
        ))
        .execute(conn)
        .await?;
    Ok(Ok(true))
}

/// Points of a member past their expiry that the worker has not expired yet.
pub(crate) async fn expired_unprocessed(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
) -> QueryResult<i64> {
    let sum: Option<i64> = points_ledger::table
        .filter(points_ledger::member_id.eq(member_id))
        .filter(points_ledger::remaining.gt(0))
        .filter(points_ledger::expires_at.lt(now()))
        .select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        >("CAST(SUM(remaining) AS SIGNED)"))
        .first(conn)
        .await?;
    Ok(sum.unwrap_or(0))
}

/// Expires a member's lots past their expiry (the member row is locked, `balance` is theirs);
/// returns the points expired.
async fn expire_member(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    balance: i64,
) -> QueryResult<i64> {
    let lots: Vec<(u64, i64)> = points_ledger::table
        .filter(points_ledger::member_id.eq(member_id))
        .filter(points_ledger::expires_at.lt(now()))
        .filter(points_ledger::remaining.gt(0))
        .select((points_ledger::id, points_ledger::remaining))
        .load(conn)
        .await?;
    let mut after = balance;
    let mut expired = 0;
    for (lot, remaining) in lots {
        diesel::update(points_ledger::table.find(lot))
            .set(points_ledger::remaining.eq(0))
            .execute(conn)
            .await?;
        after -= remaining;
        expired += remaining;
        diesel::insert_into(points_ledger::table)
            .values((
                points_ledger::member_id.eq(member_id),
                points_ledger::kind.eq(Kind::Expire.as_str()),
                points_ledger::delta.eq(-remaining),
                points_ledger::balance_after.eq(after),
                points_ledger::remaining.eq(0),
                points_ledger::reason.eq("points expired"),
                points_ledger::source.eq(format!("lot:{lot}:expire")),
            ))
            .execute(conn)
            .await?;
    }
    if expired > 0 {
        diesel::update(members::table.find(member_id))
            .set(members::points_balance.eq(after))
            .execute(conn)
            .await?;
        metrics::counter!("ruizhu_points_expired_total").increment(expired as u64);
    }
    Ok(expired)
}

/// When the points an order spent expire (the soonest of the lots it took); `None` when it
/// spent none, or before this was recorded.
async fn spent_expiry(
    conn: &mut AsyncMysqlConnection,
    order: &OrderRow,
) -> QueryResult<Option<chrono::NaiveDateTime>> {
    Ok(points_ledger::table
        .filter(points_ledger::member_id.eq(order.member_id))
        .filter(points_ledger::order_id.eq(order.id))
        .filter(points_ledger::kind.eq(Kind::Spend.as_str()))
        .order(points_ledger::id.desc())
        .select(points_ledger::expires_at)
        .first::<Option<chrono::NaiveDateTime>>(conn)
        .await
        .optional()?
        .flatten())
}

/// Takes `amount` from the member's lots, soonest expiry first (the member row is locked);
/// returns the soonest expiry among the lots taken from.
async fn consume_lots(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    mut amount: i64,
) -> QueryResult<Option<chrono::NaiveDateTime>> {
    let lots: Vec<(u64, i64, Option<chrono::NaiveDateTime>)> = points_ledger::table
        .filter(points_ledger::member_id.eq(member_id))
        .filter(points_ledger::remaining.gt(0))
        .order((points_ledger::expires_at.asc(), points_ledger::id.asc()))
        .select((
            points_ledger::id,
            points_ledger::remaining,
            points_ledger::expires_at,
        ))
        .load(conn)
        .await?;
    let mut soonest: Option<chrono::NaiveDateTime> = None;
    for (id, remaining, expires) in lots {
        if amount == 0 {
            break;
        }
        if let Some(e) = expires {
            soonest = Some(soonest.map_or(e, |s| s.min(e)));
        }
        let take = remaining.min(amount);
        diesel::update(points_ledger::table.find(id))
            .set(points_ledger::remaining.eq(remaining - take))
            .execute(conn)
            .await?;
        amount -= take;
    }
    if amount > 0 {
        // the balance said there were enough: the lots and the balance disagree
        tracing::error!(
            member_id,
            short = amount,
            "points lots short of the balance"
        );
        return Err(diesel::result::Error::RollbackTransaction);
    }
    Ok(soonest)
}

fn order_label(order: &OrderRow) -> String {
    order
        .order_no
        .clone()
        .unwrap_or_else(|| order.id.to_string())
}

impl Membership {
    fn expiry(&self) -> chrono::NaiveDateTime {
        now() + chrono::TimeDelta::days(self.settings.points_expire_days.max(1))
    }

    /// Checkout: takes the points an order uses (the member row is locked by the caller's
    /// transaction; a short balance refuses the checkout).
    pub(crate) async fn spend_for_order(
        &self,
        conn: &mut AsyncMysqlConnection,
        member_id: u64,
        order_id: u64,
        order_no: &str,
        points: i64,
    ) -> QueryResult<Result<(), PointsError>> {
        if points == 0 {
            return Ok(Ok(()));
        }
        let reason = format!("used on order {order_no}");
        let change = Change {
            member_id,
            kind: Kind::Spend,
            amount: points,
            source: format!("order:{order_id}:spend"),
            reason: &reason,
            order_id: Some(order_id),
            staff_id: None,
        };
        Ok(debit(conn, &change).await?.map(|_| ()))
    }

    /// An order was cancelled: the points it used come back, once.
    pub(crate) async fn return_for_cancel(
        &self,
        conn: &mut AsyncMysqlConnection,
        order: &OrderRow,
    ) -> QueryResult<()> {
        let used = super::pricing_of(conn, order.id).await?.points_used;
        if used <= 0 {
            return Ok(());
        }
        let reason = format!("order {} cancelled", order_label(order));
        let change = Change {
            member_id: order.member_id,
            kind: Kind::Reverse,
            amount: used,
            source: format!("order:{}:cancel", order.id),
            reason: &reason,
            order_id: Some(order.id),
            staff_id: None,
        };
        // they come back with the expiry they had, not a fresh one
        let expires = spent_expiry(conn, order)
            .await?
            .unwrap_or_else(|| self.expiry());
        credit(conn, &change, expires).await?;
        Ok(())
    }

    /// A cancelled order was paid after all and revived: its points are taken again. False
    /// when the member no longer has them (the payment is refunded instead).
    pub(crate) async fn respend_for_order(
        &self,
        conn: &mut AsyncMysqlConnection,
        order: &OrderRow,
    ) -> QueryResult<bool> {
        let used = super::pricing_of(conn, order.id).await?.points_used;
        if used <= 0 {
            return Ok(true);
        }
        let reason = format!("order {} paid after cancellation", order_label(order));
        let change = Change {
            member_id: order.member_id,
            kind: Kind::Spend,
            amount: used,
            source: format!("order:{}:respend", order.id),
            reason: &reason,
            order_id: Some(order.id),
            staff_id: None,
        };
        Ok(debit(conn, &change).await?.is_ok())
    }

    /// Whether the member still has the points a cancelled order used (locks the member).
    pub(crate) async fn can_respend(
        &self,
        conn: &mut AsyncMysqlConnection,
        order: &OrderRow,
    ) -> QueryResult<bool> {
        let used = super::pricing_of(conn, order.id).await?.points_used;
        if used <= 0 {
            return Ok(true);
        }
        Ok(lock_balance(conn, order.member_id)
            .await?
            .is_some_and(|b| b >= used))
    }

    /// A refund of an order succeeded and the order has now `refunded_fen` back in all: the
    /// points it used come back in the same proportion (all of them on a full refund), each
    /// refund once.
    pub(crate) async fn return_for_refund(
        &self,
        conn: &mut AsyncMysqlConnection,
        order: &OrderRow,
        refund_id: u64,
        refunded_fen: i64,
    ) -> QueryResult<()> {
        let used = super::pricing_of(conn, order.id).await?.points_used;
        // in proportion to the goods refunded (the points did not pay for shipping)
        let goods = order.total_fen - order.shipping_fen;
        if used <= 0 || goods <= 0 {
            return Ok(());
        }
        let due = if refunded_fen >= goods {
            used
        } else {
            (i128::from(used) * i128::from(refunded_fen.max(0)) / i128::from(goods)) as i64
        };
        let prefix = format!("order:{}:refund:", order.id);
        let returned: Option<i64> = points_ledger::table
            .filter(points_ledger::member_id.eq(order.member_id))
            .filter(points_ledger::order_id.eq(order.id))
            .filter(points_ledger::source.like(format!("{prefix}%")))
            .select(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
            >("CAST(SUM(delta) AS SIGNED)"))
            .first::<Option<i64>>(conn)
            .await?;
        let amount = due - returned.unwrap_or(0);
        if amount <= 0 {
            return Ok(());
        }
        let reason = format!("order {} refunded", order_label(order));
        let change = Change {
            member_id: order.member_id,
            kind: Kind::Reverse,
            amount,
            source: format!("{prefix}{refund_id}"),
            reason: &reason,
            order_id: Some(order.id),
            staff_id: None,
        };
        let expires = spent_expiry(conn, order)
            .await?
            .unwrap_or_else(|| self.expiry());
        credit(conn, &change, expires).await?;
        Ok(())
    }

    /// Consumer of `order.completed`: the member earns points for what they paid (minus
    /// shipping and refunds) at their tier's rate, once per order — deduplicated on the event
    /// id and on the ledger's `order:<id>:earn` source. Returns the points earned (0 when the
    /// event was seen before).
    pub async fn earn_for_completed_order(
        &self,
        event_id: &str,
        order_id: u64,
    ) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        let expires = self.expiry();
        let earned = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let claimed = diesel::insert_or_ignore_into(processed_events::table)
                    .values((
                        processed_events::consumer.eq("points"),
                        processed_events::event_id.eq(event_id),
                    ))
                    .execute(conn)
                    .await?;
                if claimed == 0 {
                    return Ok(0);
                }
                let Some(order) = orders::table
                    .find(order_id)
                    .select(OrderRow::as_select())
                    .first(conn)
                    .await
                    .optional()?
                else {
                    return Ok(0);
                };
                if order.status() != crate::order::OrderStatus::Completed {
                    return Ok(0);
                }
                let Some(_) = lock_balance(conn, order.member_id).await? else {
                    return Ok(0);
                };
                let rank: i32 = members::table
                    .find(order.member_id)
                    .select(members::tier_rank)
                    .first(conn)
                    .await?;
                let tiers = super::tiers::load_tiers(conn).await?;
                let rate = super::tier_at(&tiers, rank).map_or(1, |t| t.points_per_yuan);
                let paid = order.total_fen - order.shipping_fen - order.refunded_fen;
                let points = (paid.max(0) / 100) * i64::from(rate.max(0));
                if points == 0 {
                    return Ok(0);
                }
                let reason = format!("order {} completed", order_label(&order));
                let change = Change {
                    member_id: order.member_id,
                    kind: Kind::Earn,
                    amount: points,
                    source: format!("order:{}:earn", order.id),
                    reason: &reason,
                    order_id: Some(order.id),
                    staff_id: None,
                };
                Ok(if credit(conn, &change, expires).await? {
                    points
                } else {
                    0
                })
            })
            .await?;
        if earned > 0 {
            metrics::counter!("ruizhu_points_earned_total").increment(earned as u64);
        }
        Ok(earned)
    }

    /// Credits completed orders of the last 30 days that earned nothing yet (an event the
    /// in-process bus dropped, a consumer that was down): the same effect as the consumer,
    /// once per order. Returns how many orders were looked at.
    pub async fn earn_missing(&self, batch: i64) -> DomainResult<usize> {
        #[derive(QueryableByName)]
        struct Due {
            #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::BigInt>)]
            id: u64,
        }
        let mut conn = self.db.conn().await?;
        let at = now();
        let due: Vec<Due> = diesel::sql_query(
            "SELECT o.id FROM orders o \
             WHERE o.status = 'COMPLETED' AND o.completed_at BETWEEN ? AND ? \
               AND NOT EXISTS (SELECT 1 FROM points_ledger l \
                               WHERE l.member_id = o.member_id \
                                 AND l.source = CONCAT('order:', o.id, ':earn')) \
               AND NOT EXISTS (SELECT 1 FROM processed_events p \
                               WHERE p.consumer = 'points' \
                                 AND p.event_id = CONCAT('reconcile:', o.id)) \
             ORDER BY o.completed_at LIMIT ?",
        )
        .bind::<diesel::sql_types::Datetime, _>(at - chrono::TimeDelta::days(30))
        // give the consumer a few minutes first
        .bind::<diesel::sql_types::Datetime, _>(at - chrono::TimeDelta::minutes(5))
        .bind::<diesel::sql_types::BigInt, _>(batch)
        .load(&mut conn)
        .await?;
        drop(conn);
        for d in &due {
            self.earn_for_completed_order(&format!("reconcile:{}", d.id), d.id)
                .await?;
        }
        Ok(due.len())
    }

    /// Operations add (`delta` > 0) or remove points with a reason; the entry records who.
    pub async fn adjust(
        &self,
        staff_id: u64,
        member_id: u64,
        delta: i64,
        reason: &str,
    ) -> DomainResult<Result<LedgerEntry, PointsError>> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Ok(Err(PointsError::ReasonRequired));
        }
        if delta == 0 || delta.unsigned_abs() > MAX_CHANGE.unsigned_abs() {
            return Ok(Err(PointsError::InvalidAmount));
        }
        let source = format!("adjust:{}", uuid::Uuid::now_v7().simple());
        let change = Change {
            member_id,
            kind: Kind::Adjust,
            amount: delta.abs(),
            source: source.clone(),
            reason,
            order_id: None,
            staff_id: Some(staff_id),
        };
        let expires = self.expiry();
        let mut conn = self.db.conn().await?;
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                if delta > 0 {
                    if !credit(conn, &change, expires).await? {
                        return Ok(Err(PointsError::MemberNotFound));
                    }
                } else if let Err(e) = debit(conn, &change).await? {
                    return Ok(Err(e));
                }
                Ok(Ok(points_ledger::table
                    .filter(points_ledger::member_id.eq(member_id))
                    .filter(points_ledger::source.eq(&source))
                    .select(LedgerEntry::as_select())
                    .first(conn)
                    .await?))
            })
            .await?;
        if outcome.is_ok() {
            // the audit trail is the entry itself (who, how much, why); this line is for ops
            tracing::info!(staff_id, member_id, delta, "points adjusted");
        }
        Ok(outcome)
    }

    /// Expires lots past their expiry, one batch of members; returns the points expired.
    /// Members are locked one at a time before their lots (the order every debit uses).
    pub async fn expire_due(&self, batch: i64) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        let due: Vec<u64> = points_ledger::table
            .filter(points_ledger::expires_at.lt(now()))
            .filter(points_ledger::remaining.gt(0))
            .select(points_ledger::member_id)
            .distinct()
            .limit(batch)
            .load(&mut conn)
            .await?;
        let mut total = 0;
        for member_id in due {
            total += conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let Some(balance) = lock_balance(conn, member_id).await? else {
                        return Ok(0);
                    };
                    expire_member(conn, member_id, balance).await
                })
                .await?;
        }
        Ok(total)
    }

    /// A member's ledger, newest first: up to `limit` entries older than `before` (an entry id).
    pub async fn history(
        &self,
        member_id: u64,
        before: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<LedgerEntry>> {
        let mut conn = self.db.conn().await?;
        let mut q = points_ledger::table
            .filter(points_ledger::member_id.eq(member_id))
            .into_boxed();
        if let Some(before) = before {
            q = q.filter(points_ledger::id.lt(before));
        }
        Ok(q.order(points_ledger::id.desc())
            .limit(limit)
            .select(LedgerEntry::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Entries in a member's ledger.
    pub async fn history_count(&self, member_id: u64) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        Ok(points_ledger::table
            .filter(points_ledger::member_id.eq(member_id))
            .count()
            .get_result(&mut conn)
            .await?)
    }
}
