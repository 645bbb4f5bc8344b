//! Order reads: by id, nested lines and timeline in batches, and keyset-paginated lists.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{OrderEventRow, OrderLineRow, OrderRow, OrderStatus, Orders};
use crate::DomainResult;
use crate::schema::{order_events, order_lines, orders};

/// Which orders staff list. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Only this member's orders.
    pub member_id: Option<u64>,
    /// Only orders in these statuses.
    pub statuses: Vec<OrderStatus>,
    /// Placed at or after.
    pub created_from: Option<chrono::NaiveDateTime>,
    /// Placed before.
    pub created_to: Option<chrono::NaiveDateTime>,
    /// Exactly this order number.
    pub order_no: Option<String>,
}

fn group<T>(ids: &[u64], rows: Vec<T>, key: impl Fn(&T) -> u64) -> HashMap<u64, Vec<T>> {
    let mut out: HashMap<u64, Vec<T>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for row in rows {
        out.entry(key(&row)).or_default().push(row);
    }
    out
}

impl Orders {
    /// Orders by id.
    pub async fn orders(&self, ids: &[u64]) -> DomainResult<HashMap<u64, OrderRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<OrderRow> = orders::table
            .filter(orders::id.eq_any(ids))
            .select(OrderRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|o| (o.id, o)).collect())
    }

    /// Lines of each order.
    pub async fn lines(&self, order_ids: &[u64]) -> DomainResult<HashMap<u64, Vec<OrderLineRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<OrderLineRow> = order_lines::table
            .filter(order_lines::order_id.eq_any(order_ids))
            .order((order_lines::order_id, order_lines::id))
            .select(OrderLineRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(group(order_ids, rows, |l| l.order_id))
    }

    /// Timeline of each order, oldest first.
    pub async fn events(
        &self,
        order_ids: &[u64],
    ) -> DomainResult<HashMap<u64, Vec<OrderEventRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<OrderEventRow> = order_events::table
            .filter(order_events::order_id.eq_any(order_ids))
            .order((order_events::order_id, order_events::id))
            .select(OrderEventRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(group(order_ids, rows, |e| e.order_id))
    }

    /// Newest first, after the order id `after`, at most `limit`, plus the total when asked.
    pub async fn list(
        &self,
        filter: &OrderFilter,
        after: Option<u64>,
        limit: i64,
        with_total: bool,
    ) -> DomainResult<(Vec<OrderRow>, i64)> {
        let build = || {
            let mut q = orders::table.into_boxed();
            if let Some(m) = filter.member_id {
                q = q.filter(orders::member_id.eq(m));
            }
            if !filter.statuses.is_empty() {
                q = q.filter(
                    orders::status.eq_any(
                        filter
                            .statuses
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>(),
                    ),
                );
            }
            if let Some(from) = filter.created_from {
                q = q.filter(orders::created_at.ge(from));
            }
            if let Some(to) = filter.created_to {
                q = q.filter(orders::created_at.lt(to));
            }
            if let Some(no) = &filter.order_no {
                q = q.filter(orders::order_no.eq(no.clone()));
            }
            q
        };
        let mut conn = self.db.conn().await?;
        let mut page = build();
        if let Some(after) = after {
            page = page.filter(orders::id.lt(after));
        }
        let rows: Vec<OrderRow> = if limit == 0 {
            Vec::new()
        } else {
            page.order(orders::id.desc())
                .limit(limit)
                .select(OrderRow::as_select())
                .load(&mut conn)
                .await?
        };
        let total = if with_total {
            build().count().get_result(&mut conn).await?
        } else {
            0
        };
        Ok((rows, total))
    }
}
