//! Tiers: a member qualifies by paid spend (what they paid minus what was refunded) over the
//! rolling window. A payment that reaches a higher tier upgrades the member in the payment's
//! own transaction; tiers go down only at the yearly review, which re-qualifies the member on
//! the window's spend at that moment.

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncMysqlConnection, RunQueryDsl};

use super::{Membership, Tier, now};
use crate::DomainResult;
use crate::schema::{member_tier_changes, member_tiers, members, orders};
use crate::validation::UserError;

/// A change of a member's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierChange {
    /// The member.
    pub member_id: u64,
    /// Rank before.
    pub from_rank: i32,
    /// Rank after.
    pub to_rank: i32,
    /// The qualifying spend it was decided on.
    pub spend_fen: i64,
}

/// Every tier, lowest rank first.
pub(crate) async fn load_tiers(conn: &mut AsyncMysqlConnection) -> QueryResult<Vec<Tier>> {
    member_tiers::table
        .order(member_tiers::tier_rank)
        .select(Tier::as_select())
        .load(conn)
        .await
}

/// The rank `spend_fen` qualifies for.
fn qualifying_rank(tiers: &[Tier], spend_fen: i64) -> i32 {
    tiers
        .iter()
        .filter(|t| t.min_spend_fen <= spend_fen)
        .map(|t| t.tier_rank)
        .max()
        .unwrap_or(0)
}

/// A member's tier standing.
#[derive(Debug, Clone)]
pub struct Standing {
    /// Their tier.
    pub tier: Tier,
    /// The next tier up; `None` at the top.
    pub next: Option<Tier>,
    /// Paid spend over the window.
    pub spend_fen: i64,
    /// Since when they hold their tier; `None` for the starting tier.
    pub since: Option<chrono::NaiveDateTime>,
    /// Their next yearly review; `None` when there is nothing to review.
    pub review_at: Option<chrono::NaiveDateTime>,
}

/// A tier as operations define it.
#[derive(Debug, Clone, Default)]
pub struct TierInput {
    /// Stable code, e.g. `GOLD` (2–32 of `A-Z0-9_`).
    pub code: String,
    /// Order among tiers (0 = the starting tier); fixed once created.
    pub rank: i32,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Qualifying spend over the window, fen.
    pub min_spend_fen: i64,
    /// Checkout discount, basis points (0–5000).
    pub discount_bp: i32,
    /// Points per yuan paid (0–100).
    pub points_per_yuan: i32,
    /// May request VIP consultations.
    pub vip_consultation: bool,
    /// Free shipping from this goods total; `None` = never.
    pub free_shipping_threshold_fen: Option<i64>,
    /// Coupon template given on birthdays.
    pub birthday_coupon_template_id: Option<u64>,
}

impl TierInput {
    fn validate(&self) -> Vec<UserError> {
        let mut errors = Vec::new();
        if !(2..=32).contains(&self.code.len())
            || !self
                .code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            errors.push(UserError::invalid("input.code", "2–32 of A–Z, 0–9 and _"));
        }
        if !(0..=100).contains(&self.rank) {
            errors.push(UserError::invalid("input.rank", "0–100"));
        }
        for (field, name) in [
            ("input.nameZh", &self.name_zh),
            ("input.nameEn", &self.name_en),
        ] {
            if name.trim().is_empty() || name.chars().count() > 32 {
                errors.push(UserError::invalid(field, "1–32 characters"));
            }
        }
        if self.min_spend_fen < 0 {
            errors.push(UserError::invalid("input.minSpend", "not negative"));
        }
        if !(0..=5_000).contains(&self.discount_bp) {
            errors.push(UserError::invalid(
                "input.discountBasisPoints",
                "0–5000 (at most 50 %)",
            ));
        }
        if !(0..=100).contains(&self.points_per_yuan) {
            errors.push(UserError::invalid("input.pointsPerYuan", "0–100"));
        }
        if self.free_shipping_threshold_fen.is_some_and(|t| t < 0) {
            errors.push(UserError::invalid(
                "input.freeShippingThreshold",
                "not negative",
            ));
        }
        if self.rank == 0 && self.min_spend_fen != 0 {
            errors.push(UserError::invalid(
                "input.minSpend",
                "the starting tier (rank 0) needs no spend",
            ));
        }
        errors
    }
}

/// Paid spend of a member since `since`: what their orders were paid minus what was refunded.
async fn spend_since(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    since: chrono::NaiveDateTime,
) -> QueryResult<i64> {
    let spend: Option<i64> = orders::table
        .filter(orders::member_id.eq(member_id))
        .filter(orders::paid_at.ge(since))
        .select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        >("CAST(SUM(total_fen - refunded_fen) AS SIGNED)"))
        .first(conn)
        .await?;
    Ok(spend.unwrap_or(0))
}

impl Membership {
    fn window_start(&self) -> chrono::NaiveDateTime {
        now() - chrono::TimeDelta::days(self.settings.tier_window_days.max(1))
    }

    /// Every tier, lowest first.
    pub async fn tiers(&self) -> DomainResult<Vec<Tier>> {
        let mut conn = self.db.conn().await?;
        Ok(load_tiers(&mut conn).await?)
    }

    /// A member's tier, the next one and their qualifying spend.
    pub async fn standing(&self, member_id: u64) -> DomainResult<Option<Standing>> {
        let mut conn = self.db.conn().await?;
        let Some((rank, since, review_at)) = members::table
            .find(member_id)
            .select((
                members::tier_rank,
                members::tier_since,
                members::tier_review_at,
            ))
            .first::<(
                i32,
                Option<chrono::NaiveDateTime>,
                Option<chrono::NaiveDateTime>,
            )>(&mut conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        let tiers = load_tiers(&mut conn).await?;
        let spend = spend_since(&mut conn, member_id, self.window_start()).await?;
        let Some(tier) = super::tier_at(&tiers, rank).cloned() else {
            return Ok(None);
        };
        let next = tiers.iter().find(|t| t.tier_rank > tier.tier_rank).cloned();
        Ok(Some(Standing {
            tier,
            next,
            spend_fen: spend,
            since,
            review_at,
        }))
    }

    /// In a payment's transaction: moves the member up to the tier their spend now reaches
    /// (never down). The new tier holds until the review a year from now.
    pub(crate) async fn upgrade_if_qualified(
        &self,
        conn: &mut AsyncMysqlConnection,
        member_id: u64,
    ) -> QueryResult<Option<TierChange>> {
        let tiers = load_tiers(conn).await?;
        let spend = spend_since(conn, member_id, self.window_start()).await?;
        let target = qualifying_rank(&tiers, spend);
        let current: i32 = members::table
            .find(member_id)
            .select(members::tier_rank)
            .first(conn)
            .await?;
        if target <= current {
            return Ok(None);
        }
        let at = now();
        let changed = diesel::update(
            members::table
                .filter(members::id.eq(member_id))
                .filter(members::tier_rank.lt(target)),
        )
        .set((
            members::tier_rank.eq(target),
            members::tier_since.eq(Some(at)),
            members::tier_review_at.eq(Some(at + chrono::TimeDelta::days(365))),
        ))
        .execute(conn)
        .await?;
        if changed == 0 {
            return Ok(None);
        }
        let change = TierChange {
            member_id,
            from_rank: current,
            to_rank: target,
            spend_fen: spend,
        };
        record_change(conn, &change, "UPGRADE").await?;
        metrics::counter!("ruizhu_tier_changes_total", "reason" => "upgrade").increment(1);
        Ok(Some(change))
    }

    /// In a refund's transaction (the order's `refunded_fen` already includes it): a tier the
    /// member reached with this order's payment is taken back when the spend left no longer
    /// qualifies for it — never below the tier they held before that payment. (Otherwise a
    /// large order paid and refunded at once would buy a year at a high tier.)
    pub(crate) async fn after_refund(
        &self,
        conn: &mut AsyncMysqlConnection,
        order: &crate::order::OrderRow,
    ) -> QueryResult<Option<TierChange>> {
        let Some(paid_at) = order.paid_at else {
            return Ok(None);
        };
        let (current, since): (i32, Option<chrono::NaiveDateTime>) = members::table
            .find(order.member_id)
            .select((members::tier_rank, members::tier_since))
            .for_update()
            .first(conn)
            .await?;
        if since.is_none_or(|s| s < paid_at) {
            return Ok(None); // the tier did not come with this order
        }
        // the tier held before the upgrades since this payment
        let before: Option<i32> = member_tier_changes::table
            .filter(member_tier_changes::member_id.eq(order.member_id))
            .filter(member_tier_changes::created_at.ge(paid_at))
            .order(member_tier_changes::id.asc())
            .select(member_tier_changes::from_rank)
            .first(conn)
            .await
            .optional()?;
        let tiers = load_tiers(conn).await?;
        let spend = spend_since(conn, order.member_id, self.window_start()).await?;
        let target = qualifying_rank(&tiers, spend).max(before.unwrap_or(0));
        if target >= current {
            return Ok(None);
        }
        let at = now();
        diesel::update(members::table.find(order.member_id))
            .set((
                members::tier_rank.eq(target),
                members::tier_since.eq((target > 0).then_some(at)),
                members::tier_review_at.eq((target > 0).then(|| at + chrono::TimeDelta::days(365))),
            ))
            .execute(conn)
            .await?;
        let change = TierChange {
            member_id: order.member_id,
            from_rank: current,
            to_rank: target,
            spend_fen: spend,
        };
        record_change(conn, &change, "REFUND").await?;
        metrics::counter!("ruizhu_tier_changes_total", "reason" => "refund").increment(1);
        Ok(Some(change))
    }

    /// The yearly review, one batch: members whose review is due are re-qualified on their
    /// spend over the window (down, the same or up) and get their next review a year later.
    pub async fn review_due(&self, batch: i64) -> DomainResult<Vec<TierChange>> {
        let mut conn = self.db.conn().await?;
        let at = now();
        let due: Vec<u64> = members::table
            .filter(members::tier_review_at.le(at))
            .order(members::tier_review_at)
            .limit(batch)
            .select(members::id)
            .load(&mut conn)
            .await?;
        let since = self.window_start();
        let mut changes = Vec::new();
        for member_id in due {
            let change = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let Some((current, review_at, held_since)) = members::table
                        .find(member_id)
                        .select((
                            members::tier_rank,
                            members::tier_review_at,
                            members::tier_since,
                        ))
                        .for_update()
                        .first::<(
                            i32,
                            Option<chrono::NaiveDateTime>,
                            Option<chrono::NaiveDateTime>,
                        )>(conn)
                        .await
                        .optional()?
                    else {
                        return Ok(None);
                    };
                    if review_at.is_none_or(|r| r > at) {
                        return Ok(None);
                    }
                    let tiers = load_tiers(conn).await?;
                    let spend = spend_since(conn, member_id, since).await?;
                    let target = qualifying_rank(&tiers, spend);
                    let next_review = (target > 0).then(|| at + chrono::TimeDelta::days(365));
                    let tier_since = if target == current {
                        held_since
                    } else {
                        (target > 0).then_some(at)
                    };
                    diesel::update(members::table.find(member_id))
                        .set((
                            members::tier_rank.eq(target),
                            members::tier_review_at.eq(next_review),
                            members::tier_since.eq(tier_since),
                        ))
                        .execute(conn)
                        .await?;
                    if target == current {
                        return Ok(None);
                    }
                    let change = TierChange {
                        member_id,
                        from_rank: current,
                        to_rank: target,
                        spend_fen: spend,
                    };
                    record_change(conn, &change, "REVIEW").await?;
                    Ok(Some(change))
                })
                .await?;
            if let Some(change) = change {
                metrics::counter!("ruizhu_tier_changes_total", "reason" => "review").increment(1);
                changes.push(change);
            }
        }
        Ok(changes)
    }

    /// Creates a tier, or updates the one with this code (its rank cannot change).
    pub async fn upsert_tier(
        &self,
        input: &TierInput,
    ) -> DomainResult<Result<Tier, Vec<UserError>>> {
        let errors = input.validate();
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let mut conn = self.db.conn().await?;
        let existing: Option<Tier> = member_tiers::table
            .filter(member_tiers::code.eq(&input.code))
            .select(Tier::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        if let Some(t) = &existing
            && t.tier_rank != input.rank
        {
            return Ok(Err(vec![UserError::invalid(
                "input.rank",
                "a tier's rank cannot change once created",
            )]));
        }
        let values = (
            member_tiers::name_zh.eq(input.name_zh.trim()),
            member_tiers::name_en.eq(input.name_en.trim()),
            member_tiers::min_spend_fen.eq(input.min_spend_fen),
            member_tiers::discount_bp.eq(input.discount_bp),
            member_tiers::points_per_yuan.eq(input.points_per_yuan),
            member_tiers::vip_consultation.eq(input.vip_consultation),
            member_tiers::free_shipping_threshold_fen.eq(input.free_shipping_threshold_fen),
            member_tiers::birthday_coupon_template_id.eq(input.birthday_coupon_template_id),
        );
        let written = match existing {
            Some(t) => {
                diesel::update(member_tiers::table.find(t.id))
                    .set(values)
                    .execute(&mut conn)
                    .await
            }
            None => {
                diesel::insert_into(member_tiers::table)
                    .values((
                        member_tiers::code.eq(&input.code),
                        member_tiers::tier_rank.eq(input.rank),
                        values,
                    ))
                    .execute(&mut conn)
                    .await
            }
        };
        match written {
            Ok(_) => {}
            Err(e) if crate::order::is_duplicate_key(&e) => {
                return Ok(Err(vec![UserError::invalid(
                    "input.rank",
                    "another tier has this rank",
                )]));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Ok(member_tiers::table
            .filter(member_tiers::code.eq(&input.code))
            .select(Tier::as_select())
            .first(&mut conn)
            .await?))
    }
}

async fn record_change(
    conn: &mut AsyncMysqlConnection,
    change: &TierChange,
    reason: &str,
) -> QueryResult<()> {
    diesel::insert_into(member_tier_changes::table)
        .values((
            member_tier_changes::member_id.eq(change.member_id),
            member_tier_changes::from_rank.eq(change.from_rank),
            member_tier_changes::to_rank.eq(change.to_rank),
            member_tier_changes::reason.eq(reason),
            member_tier_changes::spend_fen.eq(change.spend_fen),
        ))
        .execute(conn)
        .await?;
    crate::events::record(
        conn,
        "member.tier_changed",
        "member",
        change.member_id,
        serde_json::json!({
            "member_id": change.member_id, "from_rank": change.from_rank,
            "to_rank": change.to_rank, "reason": reason,
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(rank: i32, min: i64) -> Tier {
        Tier {
            id: rank as u64 + 1,
            code: format!("T{rank}"),
            tier_rank: rank,
            name_zh: String::new(),
            name_en: String::new(),
            min_spend_fen: min,
            discount_bp: 0,
            points_per_yuan: 1,
            vip_consultation: false,
            free_shipping_threshold_fen: None,
            birthday_coupon_template_id: None,
        }
    }

    #[test]
    fn spend_qualifies_for_the_highest_tier_reached() {
        let tiers = [tier(0, 0), tier(1, 100), tier(2, 1_000)];
        assert_eq!(qualifying_rank(&tiers, 0), 0);
        assert_eq!(qualifying_rank(&tiers, 99), 0);
        assert_eq!(qualifying_rank(&tiers, 100), 1);
        assert_eq!(qualifying_rank(&tiers, 5_000), 2);
        assert_eq!(
            super::super::tier_at(&tiers, 7).map(|t| t.tier_rank),
            Some(2)
        );
        let gap = [tier(0, 0), tier(2, 1_000)];
        assert_eq!(super::super::tier_at(&gap, 1).map(|t| t.tier_rank), Some(0));
    }
}
