//! Live order updates over WebSocket, fed by this process's [`EventHub`] (which every replica
//! fills from its own consumer group, so a change made through any replica reaches sockets on
//! all of them).

use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use domain::events::Event;
use domain::events::hub::EventHub;
use domain::order::{OrderStatus as DomainStatus, Orders};
use futures::Stream;
use tokio::sync::broadcast;

use crate::ErrorCode;
use crate::auth::{MemberGuard, StaffGuard, member_id};
use crate::error::internal;
use crate::id;
use crate::order::{OrderNode, OrderStatus};

/// A change of an order's status.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct OrderStatusChange {
    /// The event's id (UUIDv7; the same id is never delivered twice on one subscription).
    pub event_id: String,
    /// What happened, e.g. `order.paid`, `order.shipped`, `order.placed`.
    #[graphql(name = "type")]
    pub event_type: String,
    /// Status before; null for a new order.
    pub from_status: Option<OrderStatus>,
    /// Status after.
    pub to_status: OrderStatus,
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    #[graphql(skip)]
    order_id: u64,
}

#[async_graphql::ComplexObject]
impl OrderStatusChange {
    /// The order as it is now (loaded only when selected, batched across subscribers).
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<OrderNode>> {
        let loaders = ctx.data_unchecked::<crate::loaders::Loaders>();
        Ok(loaders
            .order
            .load_one(crate::loaders::OrderById(self.order_id))
            .await?
            .map(OrderNode))
    }
}

fn status(value: &serde_json::Value) -> Option<OrderStatus> {
    value.as_str().and_then(DomainStatus::parse).map(Into::into)
}

/// Event ids a subscription remembers, to drop redeliveries (relay retries, rebalances).
const SEEN: usize = 256;

/// Order events of the hub as a stream, keeping those `keep` accepts, each event once.
fn order_changes(
    rx: broadcast::Receiver<Arc<Event>>,
    keep: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = OrderStatusChange> {
    let seen = std::collections::VecDeque::<String>::with_capacity(SEEN);
    futures::stream::unfold((rx, keep, seen), |(mut rx, keep, mut seen)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a subscription fell behind");
                    metrics::counter!("ruizhu_subscription_events_dropped_total").increment(n);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if event.aggregate_type != "order" || !keep(&event) {
                continue;
            }
            let Some(order_id) = event.order_id() else {
                continue;
            };
            if seen.contains(&event.event_id) {
                continue;
            }
            if seen.len() == SEEN {
                seen.pop_front();
            }
            seen.push_back(event.event_id.clone());
            let to = status(&event.payload["to"])
                .or_else(|| status(&event.payload["status"]))
                .unwrap_or(OrderStatus::PendingPayment);
            let change = OrderStatusChange {
                event_id: event.event_id.clone(),
                event_type: event.event_type.clone(),
                from_status: status(&event.payload["from"]),
                to_status: to,
                at: chrono::DateTime::parse_from_rfc3339(&event.occurred_at)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(|_| chrono::Utc::now()),
                order_id,
            };
            return Some((change, (rx, keep, seen)));
        }
    })
}

/// Live order subscriptions.
#[derive(Default)]
pub struct LiveSubscription;

/// Live order subscriptions.
#[Subscription]
impl LiveSubscription {
    /// Status changes of one of the caller's orders (paid, shipped, refunded, …).
    #[graphql(guard = "MemberGuard")]
    async fn order_status_changed(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = OrderStatusChange> + use<>> {
        let member = member_id(ctx)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        let orders = ctx.data_unchecked::<Orders>().clone();
        // subscribe before the ownership check, so no change between the two is missed
        let rx = ctx.data_unchecked::<EventHub>().subscribe_order(id);
        let owned = orders
            .orders(&[id])
            .await
            .map_err(|e| internal(&e))?
            .get(&id)
            .is_some_and(|o| o.member_id == member);
        if !owned {
            return Err(ErrorCode::NotFound.error("no such order"));
        }
        Ok(order_changes(rx, move |e| e.order_id() == Some(id)))
    }

    /// Every order event (staff): new orders and every status change, for the live console.
    #[graphql(guard = "StaffGuard::ANY")]
    async fn order_events(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = OrderStatusChange> + use<>> {
        let rx = ctx.data_unchecked::<EventHub>().subscribe();
        Ok(order_changes(rx, |_| true))
    }
}

/// Live-update mutations.
#[derive(Default)]
pub struct LiveMutation;

/// Live-update mutations.
#[async_graphql::Object]
impl LiveMutation {
    /// After `wx.requestSubscribeMessage` succeeds, the mini-program reports the templates the
    /// member accepted: each acceptance allows one subscription message (order paid / shipped).
    /// Returns how many were recorded (unknown templates are ignored).
    #[graphql(guard = "MemberGuard")]
    async fn accept_subscription_messages(
        &self,
        ctx: &Context<'_>,
        template_ids: Vec<String>,
    ) -> async_graphql::Result<i32> {
        let member = member_id(ctx)?;
        if template_ids.len() > 10 {
            return Err(crate::error::bad_input("templateIds", "at most 10"));
        }
        let consumers = ctx.data_unchecked::<domain::events::consumers::Consumers>();
        let n = domain::events::consumers::add_consents(
            &consumers.db,
            &consumers.settings,
            member,
            &template_ids,
        )
        .await
        .map_err(|e| internal(&e))?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
}
