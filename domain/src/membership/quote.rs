//! Gathers what [`pricing::quote`](super::pricing::quote) needs for a member and a set of lines
//! — their tier, member prices, tier gates, the coupon and its targets, their points — on the
//! caller's connection: inside the checkout transaction (rows locked) or for a preview.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use super::coupons::{self, CouponError};
use super::points::PointsError;
use super::pricing::{self, PriceLine, PricingError, Quote};
use super::{Membership, tier_at};
use crate::DomainResult;
use crate::schema::{categories, members, product_categories, products, sku_member_prices, skus};

/// A line as the catalog has it.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The SKU.
    pub sku_id: u64,
    /// Its product.
    pub product_id: u64,
    /// List price of one unit.
    pub list_price_fen: i64,
    /// Units.
    pub quantity: i32,
    /// The product's tier gate.
    pub min_tier_rank: Option<i32>,
}

/// A priced set of lines.
#[derive(Debug, Clone)]
pub struct Priced {
    /// The amounts.
    pub quote: Quote,
    /// The coupon applied.
    pub coupon_id: Option<u64>,
    /// Unit price of each SKU (member price where it applies).
    pub unit_prices: BTreeMap<u64, i64>,
    /// The member's tier rank.
    pub tier_rank: i32,
}

/// Why the lines cannot be priced as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceRefusal {
    /// The SKU's product is for a higher tier.
    TierRequired {
        /// The SKU.
        sku_id: u64,
        /// The lowest rank that may buy it.
        rank: i32,
    },
    /// The coupon cannot be used.
    Coupon(CouponError),
    /// The points cannot be used.
    Points(PointsError),
}

/// The best member price of each SKU for a member of `rank` (the price of the highest tier at
/// or below it).
pub(crate) async fn member_prices(
    conn: &mut AsyncMysqlConnection,
    sku_ids: &[u64],
    rank: i32,
) -> QueryResult<HashMap<u64, i64>> {
    let rows: Vec<(u64, i32, i64)> = sku_member_prices::table
        .filter(sku_member_prices::sku_id.eq_any(sku_ids))
        .filter(sku_member_prices::tier_rank.le(rank))
        .order(sku_member_prices::tier_rank)
        .select((
            sku_member_prices::sku_id,
            sku_member_prices::tier_rank,
            sku_member_prices::price_fen,
        ))
        .load(conn)
        .await?;
    // ascending rank: the last one per SKU wins
    Ok(rows
        .into_iter()
        .map(|(sku, _, price)| (sku, price))
        .collect())
}

/// Categories of each product with all their ancestors.
async fn categories_with_ancestors(
    conn: &mut AsyncMysqlConnection,
    product_ids: &[u64],
) -> QueryResult<HashMap<u64, Vec<u64>>> {
    let links: Vec<(u64, u64)> = product_categories::table
        .filter(product_categories::product_id.eq_any(product_ids))
        .select((
            product_categories::product_id,
            product_categories::category_id,
        ))
        .load(conn)
        .await?;
    let parents: HashMap<u64, Option<u64>> = categories::table
        .select((categories::id, categories::parent_id))
        .load::<(u64, Option<u64>)>(conn)
        .await?
        .into_iter()
        .collect();
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for (product, category) in links {
        let entry = out.entry(product).or_default();
        let mut next = Some(category);
        // bounded: a category tree is shallow, and a cycle must not hang a checkout
        for _ in 0..32 {
            let Some(c) = next else { break };
            if !entry.contains(&c) {
                entry.push(c);
            }
            next = parents.get(&c).copied().flatten();
        }
    }
    Ok(out)
}

/// Prices `lines` for `member_id` with an optional coupon code and points. With `lock`, the
/// coupon row (and, when points are used, the member row) stays locked until the caller's
/// transaction ends.
pub(crate) async fn price(
    membership: &Membership,
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    lines: &[Wanted],
    coupon_code: Option<&str>,
    points: i64,
    lock: bool,
) -> QueryResult<Result<Priced, PriceRefusal>> {
    let has_coupon = coupon_code.is_some_and(|c| !c.trim().is_empty());
    let member = members::table
        .find(member_id)
        .select((members::tier_rank, members::points_balance));
    // lock order: the member before their coupon (as cancellations and payments)
    let (rank, balance): (i32, i64) = if lock && (points > 0 || has_coupon) {
        member.for_update().first(conn).await?
    } else {
        member.first(conn).await?
    };
    // points past their expiry are not spendable, even before the worker expires them
    let balance = balance - super::points::expired_unprocessed(conn, member_id).await?;
    if let Some(gated) = lines
        .iter()
        .find(|l| l.min_tier_rank.is_some_and(|min| min > rank))
    {
        return Ok(Err(PriceRefusal::TierRequired {
            sku_id: gated.sku_id,
            rank: gated.min_tier_rank.unwrap_or_default(),
        }));
    }
    let tiers = super::tiers::load_tiers(conn).await?;
    let terms = tier_at(&tiers, rank)
        .map(super::Tier::terms)
        .unwrap_or_default();
    let sku_ids: Vec<u64> = lines.iter().map(|l| l.sku_id).collect();
    let prices = member_prices(conn, &sku_ids, rank).await?;

    let coupon = match coupon_code.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(code) => match coupons::applicable(conn, member_id, rank, code, lock).await? {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(PriceRefusal::Coupon(e))),
        },
    };
    let needs_categories = coupon
        .as_ref()
        .is_some_and(|c| !c.terms.category_ids.is_empty());
    let mut category_ids = if needs_categories {
        let product_ids: Vec<u64> = lines.iter().map(|l| l.product_id).collect();
        categories_with_ancestors(conn, &product_ids).await?
    } else {
        HashMap::new()
    };
    let price_lines: Vec<PriceLine> = lines
        .iter()
        .map(|l| PriceLine {
            sku_id: l.sku_id,
            product_id: l.product_id,
            category_ids: category_ids.remove(&l.product_id).unwrap_or_default(),
            list_price_fen: l.list_price_fen,
            member_price_fen: prices.get(&l.sku_id).copied(),
            quantity: l.quantity,
        })
        .collect();
    let quote = match pricing::quote(
        &price_lines,
        terms,
        coupon.as_ref().map(|c| &c.terms),
        points,
        balance,
        membership.settings.pricing_rules(),
    ) {
        Ok(q) => q,
        Err(PricingError::CouponNotApplicable) => {
            return Ok(Err(PriceRefusal::Coupon(CouponError::NotApplicable)));
        }
        Err(PricingError::CouponMinSpend { min_spend_fen }) => {
            return Ok(Err(PriceRefusal::Coupon(CouponError::MinSpend {
                min_spend_fen,
            })));
        }
        Err(PricingError::PointsInsufficient { balance }) => {
            return Ok(Err(PriceRefusal::Points(PointsError::Insufficient {
                balance,
            })));
        }
        Err(PricingError::InvalidPoints) => {
            return Ok(Err(PriceRefusal::Points(PointsError::InvalidAmount)));
        }
    };
    Ok(Ok(Priced {
        quote,
        coupon_id: coupon.map(|c| c.coupon.id),
        unit_prices: price_lines
            .iter()
            .map(|l| {
                let r = l.resolve(terms.discount_bp);
                (r.sku_id, r.unit_price_fen)
            })
            .collect(),
        tier_rank: rank,
    }))
}

impl Membership {
    /// A preview of what `lines` (SKU, units) would cost the member, with the same rules as
    /// `placeOrder`. SKUs that do not exist are left out.
    pub async fn preview(
        &self,
        member_id: u64,
        lines: &[(u64, i32)],
        coupon_code: Option<&str>,
        points: i64,
    ) -> DomainResult<Result<Priced, PriceRefusal>> {
        let mut conn = self.db.conn().await?;
        let ids: Vec<u64> = lines.iter().map(|l| l.0).collect();
        let found: HashMap<u64, (u64, i64, Option<i32>)> = skus::table
            .inner_join(products::table)
            .filter(skus::id.eq_any(&ids))
            .select((
                skus::id,
                skus::product_id,
                skus::price_fen,
                products::min_tier_rank,
            ))
            .load::<(u64, u64, i64, Option<i32>)>(&mut conn)
            .await?
            .into_iter()
            .map(|(id, product, price, gate)| (id, (product, price, gate)))
            .collect();
        let wanted: Vec<Wanted> = lines
            .iter()
            .filter_map(|(sku, quantity)| {
                found.get(sku).map(|(product, price, gate)| Wanted {
                    sku_id: *sku,
                    product_id: *product,
                    list_price_fen: *price,
                    quantity: *quantity,
                    min_tier_rank: *gate,
                })
            })
            .collect();
        Ok(price(
            self,
            &mut conn,
            member_id,
            &wanted,
            coupon_code,
            points,
            false,
        )
        .await?)
    }

    /// Every member price of SKUs: (tier rank, price) per SKU, lowest rank first.
    pub async fn sku_member_prices(
        &self,
        sku_ids: &[u64],
    ) -> DomainResult<HashMap<u64, Vec<(i32, i64)>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<(u64, i32, i64)> = sku_member_prices::table
            .filter(sku_member_prices::sku_id.eq_any(sku_ids))
            .order((sku_member_prices::sku_id, sku_member_prices::tier_rank))
            .select((
                sku_member_prices::sku_id,
                sku_member_prices::tier_rank,
                sku_member_prices::price_fen,
            ))
            .load(&mut conn)
            .await?;
        let mut out: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
        for (sku, rank, price) in rows {
            out.entry(sku).or_default().push((rank, price));
        }
        Ok(out)
    }

    /// Member prices of SKUs for a member of `rank`.
    pub async fn member_prices(
        &self,
        sku_ids: &[u64],
        rank: i32,
    ) -> DomainResult<HashMap<u64, i64>> {
        let mut conn = self.db.conn().await?;
        Ok(member_prices(&mut conn, sku_ids, rank).await?)
    }
}

/// Operations' tier settings on the catalog. Callers drop the product from the caches after.
impl Membership {
    /// Gates a product to `rank` and above (`None` opens it to everyone); lower tiers do not
    /// see it (`HIDE`) or see it locked (`LOCK`). False when there is no such product.
    pub async fn set_product_gate(
        &self,
        product_id: u64,
        rank: Option<i32>,
        gate: &str,
    ) -> DomainResult<bool> {
        let mut conn = self.db.conn().await?;
        let changed = diesel::update(products::table.find(product_id))
            .set((
                products::min_tier_rank.eq(rank),
                products::tier_gate.eq(gate),
            ))
            .execute(&mut conn)
            .await?;
        let exists: i64 = products::table
            .find(product_id)
            .count()
            .get_result(&mut conn)
            .await?;
        Ok(changed > 0 || exists > 0)
    }

    /// Sets (or with `None` removes) a SKU's member price for a tier rank and above. Returns
    /// the SKU's product, `None` when there is no such SKU.
    pub async fn set_member_price(
        &self,
        sku_id: u64,
        rank: i32,
        price_fen: Option<i64>,
    ) -> DomainResult<Option<u64>> {
        let mut conn = self.db.conn().await?;
        let product: Option<u64> = skus::table
            .find(sku_id)
            .select(skus::product_id)
            .first(&mut conn)
            .await
            .optional()?;
        if product.is_none() {
            return Ok(None);
        }
        match price_fen {
            Some(price) => {
                diesel::replace_into(sku_member_prices::table)
                    .values((
                        sku_member_prices::sku_id.eq(sku_id),
                        sku_member_prices::tier_rank.eq(rank),
                        sku_member_prices::price_fen.eq(price),
                    ))
                    .execute(&mut conn)
                    .await?;
            }
            None => {
                diesel::delete(sku_member_prices::table.find((sku_id, rank)))
                    .execute(&mut conn)
                    .await?;
            }
        }
        Ok(product)
    }
}
