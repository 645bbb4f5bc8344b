//! System context: a heartbeat subscription that proves the WebSocket transports work end to
//! end (real subscriptions arrive with the order and consultation contexts).

use std::time::Duration;

use async_graphql::{Context, SimpleObject, Subscription};
use futures::Stream;
use futures::StreamExt as _;

use crate::error::bad_input;

/// One tick of the heartbeat subscription.
#[derive(SimpleObject, Debug, Clone)]
pub struct Heartbeat {
    /// 1 for the first tick, then 2, 3, …
    pub sequence: i32,
    /// Server time of the tick.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Subscriptions of the system context.
#[derive(Default)]
pub struct SystemSubscription;

/// System subscriptions.
#[Subscription]
impl SystemSubscription {
    /// Ticks every `intervalMs` milliseconds (100–60000, default 1000); stops after `count`
    /// ticks when given (1–1000), otherwise runs until the client unsubscribes.
    async fn heartbeat(
        &self,
        _ctx: &Context<'_>,
        #[graphql(default = 1000)] interval_ms: i32,
        count: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = Heartbeat>> {
        if !(100..=60_000).contains(&interval_ms) {
            return Err(bad_input("intervalMs", "must be between 100 and 60000"));
        }
        if let Some(c) = count
            && !(1..=1_000).contains(&c)
        {
            return Err(bad_input("count", "must be between 1 and 1000"));
        }
        let period = Duration::from_millis(u64::try_from(interval_ms).unwrap_or(1_000));
        let limit = count.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(0));
        let ticks = futures::stream::unfold(0_i32, move |n| async move {
            if n > 0 {
                tokio::time::sleep(period).await;
            }
            let next = n.saturating_add(1);
            Some((
                Heartbeat {
                    sequence: next,
                    at: chrono::Utc::now(),
                },
                next,
            ))
        });
        Ok(ticks.take(limit))
    }
}
