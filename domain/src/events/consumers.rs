//! Event consumers. Each runs in its own consumer group and acknowledges an event (Kafka: stores
//! its offset) only after its effect is done; effects are deduplicated on the event id
//! (`processed_events`), so a redelivered event changes nothing.
//!
//! - **fan-out** (one group per process, from the latest offset): hands events to the
//!   process's [`EventHub`] for GraphQL subscriptions;
//! - **cache** (one group per process): drops cached products whose stock changed, in this
//!   process's memory and in Redis;
//! - **notifications**: WeChat subscription messages for paid and shipped orders, within the
//!   member's one-time consents (`subscription_quotas`; none left = skipped, not an error);
//! - **shipping**: `upload_shipping_info` when an order ships (WeChat keeps the funds frozen
//!   until it has it);
//! - **points**: members earn points when an order completes (once per order: the event id
//!   and the ledger's per-order source key both deduplicate).
//!
//! External calls cannot share a transaction with the dedup row. Messages claim it (with the
//! consent) first, so a crash between claim and call loses that one message rather than sending
//! it twice (a member is never messaged twice for one event); shipping uploads, which are
//! harmless to repeat, record it after the call and are retried until WeChat takes them.

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use serde::Deserialize;

use super::Event;
use super::bus::{Bus, Subscription};
use super::hub::EventHub;
use crate::DomainResult;
use crate::catalog::Catalog;
use crate::db::Db;
use crate::schema::{members, payments, processed_events, subscription_quotas};
use crate::wechat::{WechatClient, WechatError};

/// `[notifications]` settings (`RUIZHU_NOTIFICATIONS__*`): WeChat subscription messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// Template for "order paid"; empty = not sent.
    pub order_paid_template: String,
    /// Template for "order shipped"; empty = not sent.
    pub order_shipped_template: String,
    /// Page the message opens; `{order_id}` is replaced.
    pub order_page: String,
    /// Template for consultation reminders (24 h and 1 h before); empty = not sent.
    pub consultation_reminder_template: String,
    /// Page a consultation reminder opens; `{consultation_id}` is replaced.
    pub consultation_page: String,
    /// `formal`, `trial` or `developer`.
    pub miniprogram_state: String,
    /// Send `upload_shipping_info` when an order ships.
    pub upload_shipping_info: bool,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            order_paid_template: String::new(),
            order_shipped_template: String::new(),
            order_page: "pages/order/detail?id={order_id}".to_owned(),
            consultation_reminder_template: String::new(),
            consultation_page: "pages/consultation/detail?id={consultation_id}".to_owned(),
            miniprogram_state: "formal".to_owned(),
            upload_shipping_info: true,
        }
    }
}

/// Records one-time consents the member gave in `wx.requestSubscribeMessage` (one message
/// each) for the configured templates among `template_ids`; returns how many were recorded.
pub async fn add_consents(
    db: &Db,
    settings: &NotificationSettings,
    member_id: u64,
    template_ids: &[String],
) -> DomainResult<usize> {
    let known = [
        settings.order_paid_template.as_str(),
        settings.order_shipped_template.as_str(),
        settings.consultation_reminder_template.as_str(),
    ];
    let mut conn = db.conn().await?;
    let mut recorded = 0;
    for template in template_ids {
        if template.is_empty() || !known.contains(&template.as_str()) {
            continue;
        }
        diesel::insert_into(subscription_quotas::table)
            .values((
                subscription_quotas::member_id.eq(member_id),
                subscription_quotas::template_id.eq(template),
                subscription_quotas::remaining.eq(1),
            ))
            .on_conflict(diesel::dsl::DuplicatedKeys)
            .do_update()
            .set(subscription_quotas::remaining.eq(subscription_quotas::remaining + 1))
            .execute(&mut conn)
            .await?;
        recorded += 1;
    }
    Ok(recorded)
}

/// Claims `(consumer, event_id)`; false when it was already processed.
pub async fn claim(db: &Db, consumer: &str, event_id: &str) -> DomainResult<bool> {
    let mut conn = db.conn().await?;
    let inserted = diesel::insert_or_ignore_into(processed_events::table)
        .values((
            processed_events::consumer.eq(consumer),
            processed_events::event_id.eq(event_id),
        ))
        .execute(&mut conn)
        .await?;
    Ok(inserted == 1)
}

/// Runs `handle` for every event of `subscription`, acknowledging each once handled; a failed
/// effect (database unavailable) is retried after a pause, never skipped.
async fn drive<F, Fut>(name: &'static str, mut subscription: Subscription, handle: F)
where
    F: Fn(Arc<Event>) -> Fut,
    Fut: std::future::Future<Output = DomainResult<()>>,
{
    while let Some(delivery) = subscription.next().await {
        // how far behind the change this consumer is (outbox relay + transport + queueing):
        // the consumer lag in seconds, comparable across Kafka and the in-process bus
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&delivery.event.occurred_at) {
            let behind = (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            metrics::histogram!("ruizhu_event_consumer_delay_seconds", "consumer" => name)
                .record(behind);
        }
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match handle(delivery.event.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "event effect failed; retrying");
                    metrics::counter!("ruizhu_event_consumer_errors_total", "consumer" => name)
                        .increment(1);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
        subscription.ack(&delivery);
        metrics::counter!("ruizhu_events_consumed_total", "consumer" => name).increment(1);
    }
}

/// Everything the consumers need.
#[derive(Clone, Debug)]
pub struct Consumers {
    /// Where events come from.
    pub bus: Bus,
    /// Database (dedup rows, quotas, lookups).
    pub db: Db,
    /// Catalog (cache invalidation).
    pub catalog: Catalog,
    /// WeChat server APIs.
    pub wechat: WechatClient,
    /// Templates and switches.
    pub settings: NotificationSettings,
    /// This process's fan-out.
    pub hub: EventHub,
    /// This process's id (per-process consumer groups).
    pub instance: String,
    /// Points (earned on completed orders).
    pub membership: crate::membership::Membership,
}

impl Consumers {
    /// Starts every consumer; returns their tasks.
    pub fn spawn_all(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = self.spawn_local()?;
        tasks.extend(self.spawn_shared()?);
        Ok(tasks)
    }

    /// The consumers every serving process needs for itself: fan-out to its sockets and
    /// invalidation of its in-process cache.
    pub fn spawn_local(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let fanout = self.bus.subscribe(
            &format!("fanout-{}", self.instance),
            &[
                super::ORDER_EVENTS,
                super::PAYMENT_EVENTS,
                super::CONSULTATION_EVENTS,
            ],
            true,
        )?;
        let hub = self.hub.clone();
        tasks.push(tokio::spawn(drive("fanout", fanout, move |event| {
            let hub = hub.clone();
            async move {
                hub.publish(event);
                Ok(())
            }
        })));

        let cache = self.bus.subscribe(
            &format!("cache-{}", self.instance),
            &[super::INVENTORY_EVENTS],
            true,
        )?;
        let catalog = self.catalog.clone();
        tasks.push(tokio::spawn(drive("cache", cache, move |event| {
            let catalog = catalog.clone();
            async move {
                if let Some(product) = event.payload["product_id"].as_u64() {
                    catalog.invalidate_products(&[product]).await;
                }
                Ok(())
            }
        })));

        Ok(tasks)
    }

    /// The consumers one group runs for the whole deployment (worker role): WeChat messages
    /// and shipping uploads.
    pub fn spawn_shared(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let notifications = self.bus.subscribe(
            "notifications",
            &[super::ORDER_EVENTS, super::CONSULTATION_EVENTS],
            false,
        )?;
        let this = self.clone();
        tasks.push(tokio::spawn(drive(
            "notifications",
            notifications,
            move |event| {
                let this = this.clone();
                async move { this.notify(&event).await }
            },
        )));

        let shipping = self
            .bus
            .subscribe("shipping", &[super::ORDER_EVENTS], false)?;
        let this = self.clone();
        tasks.push(tokio::spawn(drive("shipping", shipping, move |event| {
            let this = this.clone();
            async move { this.upload_shipping(&event).await }
        })));

        let points = self
            .bus
            .subscribe("points", &[super::ORDER_EVENTS], false)?;
        let membership = self.membership.clone();
        tasks.push(tokio::spawn(drive("points", points, move |event| {
            let membership = membership.clone();
            async move {
                if event.event_type == "order.completed"
                    && let Some(order_id) = event.order_id()
                {
                    membership
                        .earn_for_completed_order(&event.event_id, order_id)
                        .await?;
                }
                Ok(())
            }
        })));
        Ok(tasks)
    }

    /// The subscription message for a paid or shipped order, within the member's consents.
    /// The dedup row and the consent are taken in one transaction before the call: a message
    /// is sent at most once per event (a timeout is not retried, so a member is never messaged
    /// twice), and a database failure before the call retries the whole event.
    pub async fn notify(&self, event: &Event) -> DomainResult<()> {
        let template = match event.event_type.as_str() {
            "order.paid" => self.settings.order_paid_template.clone(),
            "order.shipped" => self.settings.order_shipped_template.clone(),
            "consultation.reminder" => self.settings.consultation_reminder_template.clone(),
            _ => return Ok(()),
        };
        let p = &event.payload;
        let subject = p["order_id"]
            .as_u64()
            .or_else(|| p["consultation_id"].as_u64());
        let (Some(subject), Some(member_id)) = (subject, p["member_id"].as_u64()) else {
            return Ok(());
        };
        if template.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.conn().await?;
        if event.event_type == "consultation.reminder" {
            // cancelled or moved since the reminder was claimed: say nothing (and keep the
            // member's consent for a reminder that is still true)
            use crate::schema::consultations;
            let now: Option<(String, Option<chrono::NaiveDateTime>)> = consultations::table
                .find(subject)
                .select((consultations::status, consultations::scheduled_at))
                .first(&mut conn)
                .await
                .optional()?;
            let promised = p["scheduled_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.naive_utc());
            let still = now.is_some_and(|(status, at)| {
                status == crate::consultation::Status::Scheduled.as_str() && at == promised
            });
            if !still {
                return Ok(());
            }
        }
        let openid: Option<String> = members::table
            .find(member_id)
            .select(members::openid)
            .first(&mut conn)
            .await
            .optional()?;
        let Some(openid) = openid else {
            return Ok(());
        };
        let event_id = event.event_id.clone();
        let consent = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let claimed = diesel::insert_or_ignore_into(processed_events::table)
                    .values((
                        processed_events::consumer.eq("notifications"),
                        processed_events::event_id.eq(&event_id),
                    ))
                    .execute(conn)
                    .await?;
                if claimed == 0 {
                    return Ok(None); // done before
                }
                let used = diesel::update(
                    subscription_quotas::table
                        .filter(subscription_quotas::member_id.eq(member_id))
                        .filter(subscription_quotas::template_id.eq(&template))
                        .filter(subscription_quotas::remaining.gt(0)),
                )
                .set(subscription_quotas::remaining.eq(subscription_quotas::remaining - 1))
                .execute(conn)
                .await?;
                Ok(Some(used == 1))
            })
            .await?;
        drop(conn);
        match consent {
            None => return Ok(()),
            Some(false) => {
                metrics::counter!("ruizhu_wechat_messages_total", "outcome" => "no_consent")
                    .increment(1);
                return Ok(());
            }
            Some(true) => {}
        }
        let order_no = p["order_no"].as_str().unwrap_or_default();
        let data = if event.event_type == "consultation.reminder" {
            // China time, as members read it
            let at = p["scheduled_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .and_then(|t| {
                    chrono::FixedOffset::east_opt(8 * 3600).map(|cn| t.with_timezone(&cn))
                })
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            let when = if p["before"] == "1h" {
                "您的专属咨询将在1小时后开始"
            } else {
                "您的专属咨询将在24小时后开始"
            };
            serde_json::json!({
                "thing1": { "value": "定制咨询" },
                "time2": { "value": at },
                "thing3": { "value": when },
            })
        } else if event.event_type == "order.paid" {
            let fen = p["total_fen"].as_i64().unwrap_or_default();
            serde_json::json!({
                "character_string1": { "value": order_no },
                "amount2": { "value": format!("¥{}.{:02}", fen / 100, fen % 100) },
                "time3": { "value": event.occurred_at.get(..16).unwrap_or_default().replace('T', " ") },
            })
        } else {
            serde_json::json!({
                "character_string1": { "value": order_no },
                "thing2": { "value": p["carrier"].as_str().unwrap_or_default().chars().take(20).collect::<String>() },
                "character_string3": { "value": p["tracking_no"].as_str().unwrap_or_default() },
            })
        };
        let page = if event.event_type.starts_with("consultation.") {
            self.settings
                .consultation_page
                .replace("{consultation_id}", &subject.to_string())
        } else {
            self.settings
                .order_page
                .replace("{order_id}", &subject.to_string())
        };
        let outcome = match self
            .wechat
            .send_subscribe_message(
                &openid,
                &template,
                &page,
                &self.settings.miniprogram_state,
                data,
            )
            .await
        {
            Ok(()) => "sent",
            Err(WechatError::Other(43101)) => {
                // WeChat says no consent is left: trust it
                let mut conn = self.db.conn().await?;
                diesel::update(
                    subscription_quotas::table
                        .filter(subscription_quotas::member_id.eq(member_id))
                        .filter(subscription_quotas::template_id.eq(&template)),
                )
                .set(subscription_quotas::remaining.eq(0))
                .execute(&mut conn)
                .await?;
                "no_consent"
            }
            Err(e) => {
                tracing::warn!(error = %e, subject, "subscription message not sent (not retried: at most once)");
                "failed"
            }
        };
        metrics::counter!("ruizhu_wechat_messages_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// `upload_shipping_info` for a shipped order paid through WeChat Pay.
    pub async fn upload_shipping(&self, event: &Event) -> DomainResult<()> {
        if event.event_type != "order.shipped" || !self.settings.upload_shipping_info {
            return Ok(());
        }
        {
            let mut conn = self.db.conn().await?;
            let done: i64 = processed_events::table
                .filter(processed_events::consumer.eq("shipping"))
                .filter(processed_events::event_id.eq(&event.event_id))
                .count()
                .get_result(&mut conn)
                .await?;
            if done > 0 {
                return Ok(());
            }
        }
        let p = &event.payload;
        let (Some(order_id), Some(member_id)) = (p["order_id"].as_u64(), p["member_id"].as_u64())
        else {
            return Ok(());
        };
        let mut conn = self.db.conn().await?;
        let transaction: Option<Option<String>> = payments::table
            .filter(payments::order_id.eq(order_id))
            .select(payments::transaction_id)
            .first(&mut conn)
            .await
            .optional()?;
        let Some(Some(transaction_id)) = transaction else {
            return Ok(()); // not paid through WeChat Pay (e.g. development payments)
        };
        let openid: String = members::table
            .find(member_id)
            .select(members::openid)
            .first(&mut conn)
            .await?;
        drop(conn);
        let body = serde_json::json!({
            "order_key": { "order_number_type": 2, "transaction_id": transaction_id },
            "logistics_type": 1,
            "delivery_mode": 1,
            "shipping_list": [{
                "tracking_no": p["tracking_no"], "express_company": p["carrier"],
                "item_desc": format!("订单 {}", p["order_no"].as_str().unwrap_or_default()),
            }],
            "upload_time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "payer": { "openid": openid },
        });
        // an upload repeated after a crash is harmless, so the dedup row follows the call; a
        // transient failure fails the event, which is retried (its offset is not stored)
        let outcome = match self.wechat.upload_shipping_info(&body).await {
            Ok(()) => "uploaded",
            Err(e @ (WechatError::Unavailable(_) | WechatError::RateLimited)) => {
                metrics::counter!("ruizhu_wechat_shipping_uploads_total", "outcome" => "retrying")
                    .increment(1);
                return Err(crate::DomainError::Internal(format!(
                    "upload_shipping_info: {e}"
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, order_id, "upload_shipping_info refused: needs operations");
                "refused"
            }
        };
        claim(&self.db, "shipping", &event.event_id).await?;
        metrics::counter!("ruizhu_wechat_shipping_uploads_total", "outcome" => outcome)
            .increment(1);
        Ok(())
    }
}
