//! Background work. In single-node mode `serve` runs these next to the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

/// Cancels orders past their payment deadline (those without a WeChat Pay prepay; the payments
/// worker closes the others first), completes long-delivered orders and forgets old idempotency
/// keys, forever.
/// Safe with any number of copies running (see `Orders::sweep_expired`).
pub fn spawn_order_sweeper(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(app.orders.settings().sweep_interval_ms.max(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // drain a backlog batch by batch, then wait for the next tick
            loop {
                match app.orders.sweep_expired().await {
                    Ok(n) if n as i64 >= app.orders.settings().sweep_batch => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "order sweeper failed; retrying next tick");
                        break;
                    }
                }
            }
            if let Err(e) = app.orders.auto_complete().await {
                tracing::warn!(error = %e, "auto-completion failed; retrying next tick");
            }
            if let Err(e) = app.orders.purge_idempotency_keys().await {
                tracing::warn!(error = %e, "idempotency key purge failed; retrying next tick");
            }
        }
    })
}

/// Payments worker: active queries of prepays whose callback is missing, closing expired (and
/// cancelled) prepays before their orders are cancelled, sending and checking refunds. Its own
/// task, so slow WeChat Pay calls never delay the order sweeper. Safe on every replica.
pub fn spawn_payments_worker(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(app.orders.settings().sweep_interval_ms.max(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match app.payments.run_once().await {
                Ok(round) if round != domain::payment::Round::default() => {
                    tracing::debug!(?round, "payments round");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "payments round failed; retrying next tick"),
            }
        }
    })
}

/// Membership upkeep, forever: expires points past their expiry, runs the yearly tier
/// reviews that are due, and gives birthday coupons (China dates). Each step is safe on every
/// replica at once (row locks, conditional updates and per-year issue keys).
pub fn spawn_membership_worker(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(app.membership.settings().worker_interval_ms.max(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let china = chrono::FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
        let mut birthdays_done: Option<chrono::NaiveDate> = None;
        loop {
            ticker.tick().await;
            loop {
                match app.membership.expire_due(200).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "points expiry failed; retrying next tick");
                        break;
                    }
                }
            }
            if let Err(e) = app.membership.earn_missing(200).await {
                tracing::warn!(error = %e, "points reconciliation failed; retrying next tick");
            }
            if let Err(e) = app.membership.review_due(200).await {
                tracing::warn!(error = %e, "tier review failed; retrying next tick");
            }
            // once a day per process (a whole-table pass); the per-year keys make repeats harmless
            let today = chrono::Utc::now().with_timezone(&china).date_naive();
            if birthdays_done != Some(today) {
                match app.membership.issue_birthday_coupons(today).await {
                    Ok(_) => birthdays_done = Some(today),
                    Err(e) => {
                        tracing::warn!(error = %e, "birthday coupons failed; retrying next tick")
                    }
                }
            }
        }
    })
}

/// Consultation reminders (24 h and 1 h before appointments), forever; each is claimed once
/// by a conditional update, so every replica may run it.
pub fn spawn_consultation_reminders(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(app.consultations.settings().reminder_interval_ms.max(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = app.consultations.send_due_reminders().await {
                tracing::warn!(error = %e, "consultation reminders failed; retrying next tick");
            }
        }
    })
}

/// Least time between two relay passes started by wake-ups (bounds the relay's own load under
/// a stream of writes to about 200 passes a second).
const WOKEN_SPACING: Duration = Duration::from_millis(5);

/// The outbox relay, forever: publishes unpublished events batch by batch (one relay at a time
/// per database, by a MySQL lock), and purges old published rows. In Kafka mode it first makes
/// sure the topics exist, retrying while the broker is unreachable; meanwhile the outbox keeps
/// every event and the API keeps working.
pub fn spawn_relay(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(app.settings.kafka.relay_interval_ms.max(10));
    tokio::spawn(async move {
        while let Err(e) = app.bus.ensure_topics().await {
            tracing::warn!(error = %e, "cannot create Kafka topics yet; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut passes: u64 = 0;
        loop {
            // an event written by this process wakes the relay at once; the poll finds the
            // others (and retries)
            let woken = tokio::select! {
                _ = ticker.tick() => false,
                () = domain::events::wake::written() => true,
            };
            // the event was written inside a transaction that commits right after: a pass
            // that finds nothing yet looks again shortly (3 times, 2 + 4 + 8 ms), and woken
            // passes are at least WOKEN_SPACING apart, so a burst of writes costs a bounded
            // number of passes
            let mut retries = if woken { 3 } else { 0 };
            let mut settle = Duration::from_millis(2);
            if woken {
                tokio::time::sleep(settle).await;
            }
            loop {
                match app.relay.run_once().await {
                    Ok(pass) if pass.published > 0 && pass.published == pass.read => continue,
                    Ok(pass) if pass.read == 0 && !pass.not_leader && retries > 0 => {
                        retries -= 1;
                        tokio::time::sleep(settle).await;
                        settle *= 2;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox relay failed; retrying next tick");
                        break;
                    }
                }
            }
            if woken {
                tokio::time::sleep(WOKEN_SPACING).await;
                continue;
            }
            passes += 1; // ticks only: the purge stays about every 600 poll intervals
            if passes.is_multiple_of(600)
                && let Err(e) = app.relay.purge().await
            {
                tracing::warn!(error = %e, "outbox purge failed");
            }
        }
    })
}

/// Asks the Kafka cluster for its metadata every 15 seconds and exports the answer as
/// `ruizhu_kafka_up` (1 or 0), so "Kafka down" is visible even when no event is waiting to be
/// published. Nothing to do for the in-process bus.
pub fn spawn_kafka_probe(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    if app.bus.is_embedded() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(15));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = true;
        loop {
            ticker.tick().await;
            let up = app.bus.probe().await.unwrap_or(true);
            metrics::gauge!("ruizhu_kafka_up").set(if up { 1.0 } else { 0.0 });
            if up != was_up {
                if up {
                    tracing::info!("Kafka answers again");
                } else {
                    tracing::warn!("Kafka does not answer; the outbox keeps the events");
                }
                was_up = up;
            }
        }
    }))
}

/// The relay and every event consumer (fan-out to subscriptions, cache invalidation, WeChat
/// messages, shipping uploads).
pub fn spawn_event_workers(app: Arc<App>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = app.consumers.spawn_all()?;
    tasks.push(spawn_relay(app));
    Ok(tasks)
}

/// The worker role: sweeper, payments worker, outbox relay and the deployment-wide consumers
/// (`ruizhu worker`, or `serve` in single-node mode).
pub fn spawn_background(app: Arc<App>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = app.consumers.spawn_shared()?;
    tasks.push(spawn_order_sweeper(app.clone()));
    tasks.push(spawn_payments_worker(app.clone()));
    tasks.push(spawn_membership_worker(app.clone()));
    tasks.push(spawn_consultation_reminders(app.clone()));
    tasks.push(spawn_relay(app));
    Ok(tasks)
}
