//! Order transitions after checkout. Each is a conditional update on the current status (so
//! two racing transitions cannot both apply) plus a timeline entry, in one transaction; a
//! cancellation also puts the reserved stock back, with ledger entries, exactly once.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use super::{Actor, OrderAction, OrderRow, OrderStatus, Orders, is_retryable_conflict};
use crate::DomainResult;
use crate::schema::{inventory_ledger, order_events, order_lines, orders, skus};

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// No such order, or not the caller's.
    NotFound,
    /// The state machine does not allow it from the current status.
    Invalid {
        from: OrderStatus,
        action: OrderAction,
    },
    /// The input is not acceptable (e.g. an empty tracking number).
    InvalidInput {
        field: &'static str,
        message: String,
    },
}

pub(crate) fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

enum TxError {
    Refused(TransitionError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

/// Extra columns a transition sets besides the status.
#[derive(Debug, Clone, Default)]
pub struct Shipment {
    /// Carrier name, e.g. `SF Express`.
    pub carrier: String,
    /// Carrier's tracking number.
    pub tracking_no: String,
}

impl Orders {
    /// Applies `action` to the order as `actor`. `owner` restricts it to that member's order.
    async fn transition(
        &self,
        order_id: u64,
        owner: Option<u64>,
        action: OrderAction,
        actor: Actor,
        note: Option<String>,
        shipment: Option<Shipment>,
    ) -> DomainResult<Result<OrderRow, TransitionError>> {
        let mut conn = self.db.conn().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let shipment = shipment.clone();
            let note = note.clone();
            let result = conn
                .transaction::<_, TxError, _>(async |conn| {
                    let current: Option<OrderRow> = orders::table
                        .find(order_id)
                        .select(OrderRow::as_select())
                        .for_update()
                        .first(conn)
                        .await
                        .optional()?;
                    let Some(current) = current.filter(|o| owner.is_none_or(|m| o.member_id == m))
                    else {
                        return Err(TxError::Refused(TransitionError::NotFound));
                    };
                    let from = current.status();
                    let to = from.apply(action).map_err(|e| {
                        TxError::Refused(TransitionError::Invalid {
                            from: e.from,
                            action: e.action,
                        })
                    })?;
                    if !apply(conn, &current, from, to, actor, note, shipment).await? {
                        // the row is locked, so only a status this binary cannot parse gets here
                        return Err(TxError::Refused(TransitionError::Invalid { from, action }));
                    }
                    if to == OrderStatus::Cancelled {
                        // lock order: order, member (points), SKUs — as checkout and payments
                        self.membership.after_cancelled(conn, &current).await?;
                        release_stock(conn, &[order_id]).await?;
                    }
                    Ok(orders::table
                        .find(order_id)
                        .select(OrderRow::as_select())
                        .first(conn)
                        .await?)
                })
                .await;
            match result {
                Ok(order) => {
                    if order.status() == OrderStatus::Cancelled {
                        match self.product_ids_of(&mut conn, order_id).await {
                            Ok(products) => self.catalog.invalidate_products(&products).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not invalidate the catalog cache")
                            }
                        }
                    }
                    return Ok(Ok(order));
                }
                Err(TxError::Refused(e)) => return Ok(Err(e)),
                Err(TxError::Db(e)) if is_retryable_conflict(&e) && attempt < 5 => continue,
                Err(TxError::Db(e)) => return Err(e.into()),
            }
        }
    }

    /// Cancels an unpaid order: the member for their own order, or staff for any.
    pub async fn cancel(
        &self,
        order_id: u64,
        actor: Actor,
    ) -> DomainResult<Result<OrderRow, TransitionError>> {
        let owner = match actor {
            Actor::Member(id) => Some(id),
            _ => None,
        };
        self.transition(order_id, owner, OrderAction::Cancel, actor, None, None)
            .await
    }

    /// Staff ship a paid order.
    pub async fn ship(
        &self,
        order_id: u64,
        staff_id: u64,
        carrier: &str,
        tracking_no: &str,
    ) -> DomainResult<Result<OrderRow, TransitionError>> {
        let carrier = carrier.trim();
        let tracking_no = tracking_no.trim();
        if carrier.is_empty() || carrier.chars().count() > 32 {
            return Ok(Err(TransitionError::InvalidInput {
                field: "carrier",
                message: "1–32 characters".into(),
            }));
        }
        if tracking_no.is_empty()
            || tracking_no.len() > 64
            || !tracking_no
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Ok(Err(TransitionError::InvalidInput {
                field: "trackingNo",
                message: "1–64 letters, digits or dashes".into(),
            }));
        }
        let shipment = Shipment {
            carrier: carrier.to_owned(),
            tracking_no: tracking_no.to_owned(),
        };
        self.transition(
            order_id,
            None,
            OrderAction::Ship,
            Actor::Staff(staff_id),
            None,
            Some(shipment),
        )
        .await
    }

    /// The member confirms they received their order.
    pub async fn confirm_receipt(
        &self,
        order_id: u64,
        member_id: u64,
    ) -> DomainResult<Result<OrderRow, TransitionError>> {
        self.transition(
            order_id,
            Some(member_id),
            OrderAction::Deliver,
            Actor::Member(member_id),
            None,
            None,
        )
        .await
    }

    /// Cancels an unpaid order whose payment deadline passed and whose prepay WeChat Pay has
    /// closed (payments call this; orders without a prepay are swept in batches).
    pub(crate) async fn cancel_expired(
        &self,
        order_id: u64,
    ) -> DomainResult<Result<OrderRow, TransitionError>> {
        self.transition(
            order_id,
            None,
            OrderAction::Cancel,
            Actor::System,
            Some("payment deadline passed".to_owned()),
            None,
        )
        .await
    }

    /// Cancels orders whose payment deadline passed, at most one batch; returns how many.
    /// Safe to run on every replica at once: rows are claimed with `FOR UPDATE SKIP LOCKED` and
    /// changed with a conditional update, so each order is cancelled (and its stock released)
    /// exactly once. Orders with an open WeChat Pay prepay are left to the payments worker,
    /// which closes the prepay first.
    pub async fn sweep_expired(&self) -> DomainResult<usize> {
        use crate::schema::payments;
        let mut conn = self.db.conn().await?;
        let batch = self.settings.sweep_batch;
        let cancelled = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                // a prepay WeChat Pay issued; a row whose prepay request failed does not count
                let open_prepay = payments::table
                    .filter(payments::order_id.eq(orders::id))
                    .filter(payments::status.eq(crate::payment::PAYMENT_PREPAY))
                    .filter(payments::prepay_id.is_not_null());
                let due: Vec<OrderRow> = orders::table
                    .filter(orders::status.eq(OrderStatus::PendingPayment.as_str()))
                    .filter(orders::payment_deadline.lt(now()))
                    .filter(diesel::dsl::not(diesel::dsl::exists(open_prepay)))
                    .order(orders::payment_deadline)
                    .limit(batch)
                    .select(OrderRow::as_select())
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?;
                let mut done = Vec::new();
                let mut cancelled: Vec<&OrderRow> = Vec::new();
                for order in &due {
                    if apply(
                        conn,
                        order,
                        OrderStatus::PendingPayment,
                        OrderStatus::Cancelled,
                        Actor::System,
                        Some("payment deadline passed".to_owned()),
                        None,
                    )
                    .await?
                    {
                        done.push(order.id);
                        cancelled.push(order);
                    }
                }
                // members in id order, so two sweepers never wait on each other's members
                cancelled.sort_by_key(|o| (o.member_id, o.id));
                for order in cancelled {
                    self.membership.after_cancelled(conn, order).await?;
                }
                release_stock(conn, &done).await?;
                Ok(done)
            })
            .await?;
        for id in &cancelled {
            match self.product_ids_of(&mut conn, *id).await {
                Ok(products) => self.catalog.invalidate_products(&products).await,
                Err(e) => tracing::warn!(error = %e, "could not invalidate the catalog cache"),
            }
        }
        if !cancelled.is_empty() {
            metrics::counter!("ruizhu_orders_expired_total").increment(cancelled.len() as u64);
        }
        Ok(cancelled.len())
    }

    /// Forgets idempotency keys older than the retention period (at least 72 h), one batch.
    pub async fn purge_idempotency_keys(&self) -> DomainResult<usize> {
        use crate::schema::idempotency_keys;
        let hours = i64::try_from(self.settings.idempotency_retention_hours.max(72)).unwrap_or(72);
        let cutoff = now() - chrono::Duration::hours(hours);
        let mut conn = self.db.conn().await?;
        let stale: Vec<(u64, String)> = idempotency_keys::table
            .filter(idempotency_keys::created_at.lt(cutoff))
            .select((idempotency_keys::member_id, idempotency_keys::idem_key))
            .limit(self.settings.sweep_batch)
            .load(&mut conn)
            .await?;
        for (member, key) in &stale {
            diesel::delete(idempotency_keys::table.find((member, key)))
                .execute(&mut conn)
                .await?;
        }
        Ok(stale.len())
    }

    /// Completes orders delivered more than `auto_complete_days` ago, one batch.
    pub async fn auto_complete(&self) -> DomainResult<usize> {
        let mut conn = self.db.conn().await?;
        let cutoff = now()
            - chrono::Duration::days(i64::try_from(self.settings.auto_complete_days).unwrap_or(7));
        let batch = self.settings.sweep_batch;
        Ok(conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let due: Vec<OrderRow> = orders::table
                    .filter(orders::status.eq(OrderStatus::Delivered.as_str()))
                    .filter(orders::delivered_at.lt(cutoff))
                    .limit(batch)
                    .select(OrderRow::as_select())
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?;
                let mut n = 0;
                for order in &due {
                    if apply(
                        conn,
                        order,
                        OrderStatus::Delivered,
                        OrderStatus::Completed,
                        Actor::System,
                        None,
                        None,
                    )
                    .await?
                    {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await?)
    }
}

/// The conditional status update plus its timeline entry; false when the order was no longer
/// in `from` (someone else moved it first).
pub(crate) async fn apply(
    conn: &mut AsyncMysqlConnection,
    order: &OrderRow,
    from: OrderStatus,
    to: OrderStatus,
    actor: Actor,
    note: Option<String>,
    shipment: Option<Shipment>,
) -> QueryResult<bool> {
    let at = now();
    let shipment_for_event = shipment.clone();
    let target = orders::table
        .filter(orders::id.eq(order.id))
        .filter(orders::status.eq(from.as_str()));
    let changed = match to {
        // back to PAID after a refund ended: it was paid when it was paid
        OrderStatus::Paid if from == OrderStatus::Refunding => {
            diesel::update(target)
                .set(orders::status.eq(to.as_str()))
                .execute(conn)
                .await?
        }
        OrderStatus::Paid => {
            diesel::update(target)
                .set((orders::status.eq(to.as_str()), orders::paid_at.eq(at)))
                .execute(conn)
                .await?
        }
        OrderStatus::Shipped => {
            let s = shipment.clone().unwrap_or_default();
            diesel::update(target)
                .set((
                    orders::status.eq(to.as_str()),
                    orders::shipped_at.eq(at),
                    orders::carrier.eq(s.carrier),
                    orders::tracking_no.eq(s.tracking_no),
                ))
                .execute(conn)
                .await?
        }
        OrderStatus::Delivered => {
            diesel::update(target)
                .set((orders::status.eq(to.as_str()), orders::delivered_at.eq(at)))
                .execute(conn)
                .await?
        }
        OrderStatus::Completed => {
            diesel::update(target)
                .set((orders::status.eq(to.as_str()), orders::completed_at.eq(at)))
                .execute(conn)
                .await?
        }
        OrderStatus::Cancelled => {
            diesel::update(target)
                .set((orders::status.eq(to.as_str()), orders::cancelled_at.eq(at)))
                .execute(conn)
                .await?
        }
        _ => {
            diesel::update(target)
                .set(orders::status.eq(to.as_str()))
                .execute(conn)
                .await?
        }
    };
    if changed == 0 {
        return Ok(false);
    }
    let (kind, id) = actor.parts();
    diesel::insert_into(order_events::table)
        .values((
            order_events::order_id.eq(order.id),
            order_events::from_status.eq(Some(from.as_str())),
            order_events::to_status.eq(to.as_str()),
            order_events::actor_kind.eq(kind),
            order_events::actor_id.eq(id),
            order_events::note.eq(note),
        ))
        .execute(conn)
        .await?;
    let mut payload = serde_json::json!({
        "order_id": order.id, "order_no": order.order_no, "member_id": order.member_id,
        "from": from.as_str(), "to": to.as_str(), "total_fen": order.total_fen,
        "actor": kind, "actor_id": id,
    });
    if let Some(s) = shipment_for_event {
        payload["carrier"] = serde_json::json!(s.carrier);
        payload["tracking_no"] = serde_json::json!(s.tracking_no);
    }
    crate::events::record(conn, order_event_type(from, to), "order", order.id, payload).await?;
    Ok(true)
}

/// The event type of a transition, named for what happened.
pub fn order_event_type(from: OrderStatus, to: OrderStatus) -> &'static str {
    use OrderStatus as S;
    match (from, to) {
        (S::Refunding, S::Refunded) => "order.refunded",
        (S::Refunding, _) => "order.refund_ended",
        (_, S::Paid) => "order.paid",
        (_, S::Cancelled) => "order.cancelled",
        (_, S::Shipped) => "order.shipped",
        (_, S::Delivered) => "order.delivered",
        (_, S::Completed) => "order.completed",
        (_, S::Refunding) => "order.refund_started",
        _ => "order.status_changed",
    }
}

/// A timeline entry without a status change (e.g. a late payment refunded automatically).
pub(crate) async fn note_event(
    conn: &mut AsyncMysqlConnection,
    order: &OrderRow,
    actor: Actor,
    note: &str,
) -> QueryResult<()> {
    let (kind, id) = actor.parts();
    diesel::insert_into(order_events::table)
        .values((
            order_events::order_id.eq(order.id),
            order_events::from_status.eq(Some(order.status.as_str())),
            order_events::to_status.eq(order.status.as_str()),
            order_events::actor_kind.eq(kind),
            order_events::actor_id.eq(id),
            order_events::note.eq(Some(note)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts the reserved units of these orders back, with `release` ledger entries. Stock rows are
/// updated once per SKU, in ascending SKU order (the lock order checkout uses), so a sweeper
/// batch does not deadlock with checkouts or with other sweepers.
pub(crate) async fn release_stock(
    conn: &mut AsyncMysqlConnection,
    order_ids: &[u64],
) -> QueryResult<()> {
    let lines: Vec<(u64, u64, i32)> = order_lines::table
        .filter(order_lines::order_id.eq_any(order_ids))
        .select((
            order_lines::order_id,
            order_lines::sku_id,
            order_lines::quantity,
        ))
        .load(conn)
        .await?;
    let mut per_sku: std::collections::BTreeMap<u64, i32> = std::collections::BTreeMap::new();
    for (_, sku, quantity) in &lines {
        *per_sku.entry(*sku).or_default() += *quantity;
    }
    for (sku, quantity) in &per_sku {
        diesel::update(skus::table.find(*sku))
            .set(skus::stock.eq(skus::stock + *quantity))
            .execute(conn)
            .await?;
    }
    let ledger: Vec<_> = lines
        .iter()
        .map(|(order, sku, q)| {
            (
                inventory_ledger::sku_id.eq(*sku),
                inventory_ledger::delta.eq(*q),
                inventory_ledger::reason.eq("release"),
                inventory_ledger::order_id.eq(Some(*order)),
            )
        })
        .collect();
    if !ledger.is_empty() {
        diesel::insert_into(inventory_ledger::table)
            .values(&ledger)
            .execute(conn)
            .await?;
    }
    let changes: Vec<crate::events::StockChange> = lines
        .iter()
        .map(|(order, sku, q)| (*sku, *q, "release", Some(*order)))
        .collect();
    crate::events::stock_changed(conn, &changes).await?;
    Ok(())
}
