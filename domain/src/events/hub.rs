//! The per-process fan-out of events to GraphQL subscriptions. Each replica feeds its hub from
//! its own consumer group (starting at the latest offset), so an event committed through any
//! replica reaches sockets on every replica.
//!
//! Routed: a subscriber of one order (or one consultation thread) only wakes for that
//! aggregate's events (thousands of members watching their own orders cost nothing per unrelated
//! event); subscribers of every event (staff consoles) share one channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::Event;

/// Capacity of the all-events channel; a subscriber further behind skips ahead (counted).
const CAPACITY: usize = 4_096;
/// Capacity of one aggregate's channel.
const PER_AGGREGATE: usize = 64;

/// Aggregates subscriptions follow one by one.
const ROUTED: [&str; 2] = ["order", "consultation"];

type Route = (&'static str, u64);

fn route_of(event: &Event) -> Option<Route> {
    let kind = ROUTED.into_iter().find(|k| *k == event.aggregate_type)?;
    Some((kind, event.aggregate_id.parse().ok()?))
}

/// Events for this process's subscriptions.
#[derive(Clone, Debug)]
pub struct EventHub {
    all: broadcast::Sender<Arc<Event>>,
    by_aggregate: Arc<Mutex<HashMap<Route, broadcast::Sender<Arc<Event>>>>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            all: broadcast::channel(CAPACITY).0,
            by_aggregate: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl EventHub {
    /// Hands an event to its subscribers.
    pub fn publish(&self, event: Arc<Event>) {
        if let Some(route) = route_of(&event) {
            let mut routes = self
                .by_aggregate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(tx) = routes.get(&route) {
                if tx.receiver_count() == 0 {
                    routes.remove(&route);
                } else {
                    let _ = tx.send(event.clone());
                }
            }
        }
        let _ = self.all.send(event);
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.all.subscribe()
    }

    /// A receiver of one order's events from now on.
    pub fn subscribe_order(&self, order_id: u64) -> broadcast::Receiver<Arc<Event>> {
        self.subscribe_route(("order", order_id))
    }

    /// A receiver of one consultation's events from now on.
    pub fn subscribe_consultation(&self, id: u64) -> broadcast::Receiver<Arc<Event>> {
        self.subscribe_route(("consultation", id))
    }

    fn subscribe_route(&self, route: Route) -> broadcast::Receiver<Arc<Event>> {
        let mut routes = self
            .by_aggregate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // drop routes nobody listens to any more (their orders may never change again)
        if routes.len() >= 1_024 && routes.len().is_power_of_two() {
            routes.retain(|_, tx| tx.receiver_count() > 0);
        }
        routes
            .entry(route)
            .or_insert_with(|| broadcast::channel(PER_AGGREGATE).0)
            .subscribe()
    }

    /// Current subscribers of every event (for metrics).
    pub fn subscribers(&self) -> usize {
        self.all.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(order: u64) -> Arc<Event> {
        Arc::new(Event {
            event_id: format!("e{order}"),
            event_type: "order.paid".into(),
            schema_version: 1,
            aggregate_type: "order".into(),
            aggregate_id: order.to_string(),
            occurred_at: String::new(),
            payload: serde_json::Value::Null,
        })
    }

    #[test]
    fn order_subscribers_only_see_their_order() {
        let hub = EventHub::default();
        let mut one = hub.subscribe_order(1);
        let mut all = hub.subscribe();
        hub.publish(event(2));
        hub.publish(event(1));
        assert_eq!(
            one.try_recv().map(|e| e.aggregate_id.clone()),
            Ok("1".into())
        );
        assert!(one.try_recv().is_err());
        assert_eq!(
            all.try_recv().map(|e| e.aggregate_id.clone()),
            Ok("2".into())
        );
        drop(one);
        hub.publish(event(1));
        assert!(
            hub.by_aggregate
                .lock()
                .map(|r| r.is_empty())
                .unwrap_or(false),
            "unused route dropped"
        );
    }
}
