//! Demo membership data (development only, idempotent): a claimable welcome coupon, a gold
//! birthday coupon, member prices on a few SKUs and one product locked to gold members, so the
//! benefits can be tried in GraphiQL right after `serve` seeds the catalog.

use diesel::prelude::*;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use crate::schema::{coupon_templates, member_tiers, products, sku_member_prices, skus};

const WELCOME: &str = "新客礼遇 ¥200";
const BIRTHDAY: &str = "生日礼遇 9折";

/// Loads the demo membership data; running it again changes nothing.
pub async fn seed_demo_membership(conn: &mut AsyncMysqlConnection) -> anyhow::Result<()> {
    let now = chrono::Utc::now().naive_utc();
    let year = chrono::TimeDelta::days(365);
    for (name, description, amount, percent, max, min_spend, claimable, days) in [
        (
            WELCOME,
            "满 ¥2,000 减 ¥200，领取后 30 天内有效",
            Some(20_000_i64),
            None,
            None,
            200_000_i64,
            true,
            Some(30),
        ),
        (
            BIRTHDAY,
            "生日月享 9 折，最高减 ¥1,000",
            None,
            Some(10),
            Some(100_000_i64),
            0,
            false,
            Some(31),
        ),
    ] {
        let exists: i64 = coupon_templates::table
            .filter(coupon_templates::name.eq(name))
            .count()
            .get_result(conn)
            .await?;
        if exists > 0 {
            continue;
        }
        diesel::insert_into(coupon_templates::table)
            .values((
                coupon_templates::name.eq(name),
                coupon_templates::description.eq(description),
                coupon_templates::kind.eq(if amount.is_some() { "FIXED" } else { "PERCENT" }),
                coupon_templates::amount_fen.eq(amount),
                coupon_templates::percent_off.eq(percent),
                coupon_templates::max_discount_fen.eq(max),
                coupon_templates::min_spend_fen.eq(min_spend),
                coupon_templates::valid_from.eq(now - chrono::TimeDelta::days(1)),
                coupon_templates::valid_until.eq(now + year),
                coupon_templates::valid_days.eq(days),
                coupon_templates::per_member_limit.eq(1),
                coupon_templates::claimable.eq(claimable),
            ))
            .execute(conn)
            .await?;
    }
    let birthday: u64 = coupon_templates::table
        .filter(coupon_templates::name.eq(BIRTHDAY))
        .select(coupon_templates::id)
        .first(conn)
        .await?;
    diesel::update(
        member_tiers::table
            .filter(member_tiers::tier_rank.ge(2))
            .filter(member_tiers::birthday_coupon_template_id.is_null()),
    )
    .set(member_tiers::birthday_coupon_template_id.eq(Some(birthday)))
    .execute(conn)
    .await?;

    // the last published product is for gold members and above (shown locked to others)
    let last: Option<u64> = products::table
        .filter(products::status.eq(crate::catalog::STATUS_PUBLISHED))
        .order(products::id.desc())
        .select(products::id)
        .first(conn)
        .await
        .optional()?;
    if let Some(id) = last {
        diesel::update(
            products::table
                .find(id)
                .filter(products::min_tier_rank.is_null()),
        )
        .set((
            products::min_tier_rank.eq(Some(2)),
            products::tier_gate.eq(crate::catalog::GATE_LOCK),
        ))
        .execute(conn)
        .await?;
    }
    // member prices: 5 % off for silver, 10 % off for gold on the ten most expensive SKUs
    let priciest: Vec<(u64, i64)> = skus::table
        .order((skus::price_fen.desc(), skus::id))
        .limit(10)
        .select((skus::id, skus::price_fen))
        .load(conn)
        .await?;
    let rows: Vec<_> = priciest
        .iter()
        .flat_map(|(sku, price)| {
            [(1, 95), (2, 90)].map(|(rank, pct)| {
                (
                    sku_member_prices::sku_id.eq(*sku),
                    sku_member_prices::tier_rank.eq(rank),
                    sku_member_prices::price_fen.eq(price * pct / 100),
                )
            })
        })
        .collect();
    if !rows.is_empty() {
        diesel::insert_or_ignore_into(sku_member_prices::table)
            .values(&rows)
            .execute(conn)
            .await?;
    }
    Ok(())
}
