//! Membership context: tiers qualified by paid spend over a rolling window (upgrade at once,
//! downgrade only at the yearly review), the append-only points ledger (earn on completion,
//! spend at checkout, given back on cancellation and refund, expiry), coupons (templates,
//! claims, issues, one per order), member prices and tier-gated products, and the one pricing
//! function every checkout path uses ([`pricing`]).
//!
//! Money-moving steps run inside the order transactions that cause them (checkout, payment,
//! cancellation, refund) through the `pub(crate)` hooks here, so an order and its points and
//! coupon can never disagree; earning on completion is an event consumer, deduplicated on the
//! event id and on the ledger's per-order source key.

pub mod coupons;
pub mod points;
pub mod pricing;
pub mod quote;
pub mod seed;
pub mod tiers;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Deserialize;

use crate::db::Db;
use crate::schema::{member_tiers, order_pricing};

pub use coupons::{CouponError, CouponRow, CouponTemplateRow, NewCouponTemplate};
pub use points::{LedgerEntry, PointsError};
pub use pricing::{PricingError, Quote};
pub use tiers::TierChange;

/// `[membership]` settings (`RUIZHU_MEMBERSHIP__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSettings {
    /// Points worth ¥1 at checkout.
    pub points_per_yuan: i64,
    /// Most of an order (after tier discount and coupon) points may pay, in basis points.
    pub points_max_ratio_bp: i64,
    /// Points expire this many days after they were earned.
    pub points_expire_days: i64,
    /// Flat shipping fee below the tier's free-shipping threshold, in fen.
    pub shipping_fee_fen: i64,
    /// Paid spend over this many days qualifies for a tier.
    pub tier_window_days: i64,
    /// How often the membership worker runs (expiry, yearly reviews, birthday coupons), ms.
    pub worker_interval_ms: u64,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            points_per_yuan: 100,
            points_max_ratio_bp: 5_000,
            points_expire_days: 730,
            shipping_fee_fen: 2_000,
            tier_window_days: 365,
            worker_interval_ms: 60_000,
        }
    }
}

impl MembershipSettings {
    /// The pricing rules these settings make.
    pub fn pricing_rules(&self) -> pricing::PricingRules {
        pricing::PricingRules {
            points_per_yuan: self.points_per_yuan,
            points_max_ratio_bp: self.points_max_ratio_bp,
            shipping_fee_fen: self.shipping_fee_fen,
        }
    }
}

/// A tier and its benefits.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = member_tiers, check_for_backend(diesel::mysql::Mysql))]
pub struct Tier {
    pub id: u64,
    pub code: String,
    pub tier_rank: i32,
    pub name_zh: String,
    pub name_en: String,
    pub min_spend_fen: i64,
    pub discount_bp: i32,
    pub points_per_yuan: i32,
    pub vip_consultation: bool,
    pub free_shipping_threshold_fen: Option<i64>,
    pub birthday_coupon_template_id: Option<u64>,
}

impl Tier {
    /// What pricing needs of it.
    pub fn terms(&self) -> pricing::TierTerms {
        pricing::TierTerms {
            discount_bp: self.discount_bp,
            free_shipping_threshold_fen: self.free_shipping_threshold_fen,
        }
    }
}

/// The tier of `rank` among `tiers` (sorted by rank): the highest tier at or below it, so a
/// member keeps sensible benefits even if ops removed their exact tier.
pub fn tier_at(tiers: &[Tier], rank: i32) -> Option<&Tier> {
    tiers
        .iter()
        .rev()
        .find(|t| t.tier_rank <= rank)
        .or(tiers.first())
}

/// How an order's discount was made up and what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = order_pricing, check_for_backend(diesel::mysql::Mysql))]
pub struct OrderPricing {
    pub order_id: u64,
    pub tier_rank: i32,
    pub tier_discount_fen: i64,
    pub coupon_id: Option<u64>,
    pub coupon_discount_fen: i64,
    pub points_used: i64,
    pub points_discount_fen: i64,
}

/// The pricing row of an order (all zero for orders placed before membership).
pub(crate) async fn pricing_of(
    conn: &mut diesel_async::AsyncMysqlConnection,
    order_id: u64,
) -> QueryResult<OrderPricing> {
    Ok(order_pricing::table
        .find(order_id)
        .select(OrderPricing::as_select())
        .first(conn)
        .await
        .optional()?
        .unwrap_or(OrderPricing {
            order_id,
            ..OrderPricing::default()
        }))
}

/// Membership over one database.
#[derive(Debug, Clone)]
pub struct Membership {
    pub(crate) db: Db,
    pub(crate) settings: MembershipSettings,
}

impl Membership {
    /// The membership service.
    pub fn new(db: Db, settings: MembershipSettings) -> Self {
        Self { db, settings }
    }

    /// The settings in force.
    pub fn settings(&self) -> &MembershipSettings {
        &self.settings
    }

    /// Pricing rows of orders.
    pub async fn order_pricing(
        &self,
        order_ids: &[u64],
    ) -> crate::DomainResult<std::collections::HashMap<u64, OrderPricing>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<OrderPricing> = order_pricing::table
            .filter(order_pricing::order_id.eq_any(order_ids))
            .select(OrderPricing::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|p| (p.order_id, p)).collect())
    }
}

/// Current time, as stored (UTC).
pub(crate) fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Hooks the order and payment transactions call, so an order's coupon, points and the
/// member's tier change in the same transaction as the order.
impl Membership {
    /// In the payment's transaction: the order's coupon is used for good and the member moves
    /// up to the tier their spend now reaches.
    pub(crate) async fn after_paid(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
        order: &crate::order::OrderRow,
    ) -> QueryResult<()> {
        // one lock order everywhere: member, then their coupon (whose foreign key reads the
        // member row), then SKUs
        crate::identity::lock_member(conn, order.member_id).await?;
        coupons::mark_used(conn, order.id).await?;
        self.upgrade_if_qualified(conn, order.member_id).await?;
        Ok(())
    }

    /// In the cancellation's transaction: the coupon is free again and the points come back.
    pub(crate) async fn after_cancelled(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
        order: &crate::order::OrderRow,
    ) -> QueryResult<()> {
        crate::identity::lock_member(conn, order.member_id).await?;
        coupons::release(conn, order.id).await?;
        self.return_for_cancel(conn, order).await
    }

    /// A cancelled order was paid after all: whether its coupon and points can go back to it
    /// (the rows involved are locked until the transaction ends).
    pub(crate) async fn can_revive(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
        order: &crate::order::OrderRow,
    ) -> QueryResult<bool> {
        crate::identity::lock_member(conn, order.member_id).await?;
        Ok(self.can_respend(conn, order).await? && coupons::can_retake(conn, order).await?)
    }

    /// Takes the coupon and points of a revived order again (after [`Self::can_revive`]).
    pub(crate) async fn revive(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
        order: &crate::order::OrderRow,
    ) -> QueryResult<()> {
        coupons::retake(conn, order).await?;
        if !self.respend_for_order(conn, order).await? {
            return Err(diesel::result::Error::RollbackTransaction);
        }
        Ok(())
    }
}
