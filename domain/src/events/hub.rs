//! The per-process fan-out of events to GraphQL subscriptions. Each replica feeds its hub from
//! its own consumer group (starting at the latest offset), so an event committed through any
//! replica reaches sockets on every replica.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Event;

/// Capacity per subscriber; a subscriber further behind skips ahead (it is told by a log line
/// and a metric; order status subscriptions re-read the order, so they stay correct).
const CAPACITY: usize = 4_096;

/// Events for this process's subscriptions.
#[derive(Clone, Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventHub {
    /// Hands an event to every current subscriber.
    pub fn publish(&self, event: Arc<Event>) {
        let _ = self.tx.send(event);
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Current subscribers (for metrics).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
