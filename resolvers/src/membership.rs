//! Membership context: tiers and their benefits, the member's standing, points ledger and
//! coupons, the checkout quote, and the operations side (tiers, coupon templates, issuing,
//! point adjustments).

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use domain::membership::coupons::{CouponFilter, NewCouponTemplate};
use domain::membership::quote::{PriceRefusal, Priced};
use domain::membership::tiers::{Standing, TierInput};
use domain::membership::{
    CouponError, CouponRow, CouponTemplateRow, LedgerEntry, Membership, PointsError, Tier,
};

use crate::auth::{MemberGuard, StaffGuard, Viewer, member_id, staff, viewer};
use crate::error::internal;
use crate::id;
use crate::loaders::{AllTiers, CouponTemplateById, Loaders, MemberById};
use crate::money::Money;
use crate::pagination::{decode_cursor, id_page, page_size};
use crate::payload::{UserError, UserErrorCode, user_errors};

fn membership<'a>(ctx: &Context<'a>) -> &'a Membership {
    ctx.data_unchecked::<Membership>()
}

/// Every tier, lowest first (one load per request).
pub(crate) async fn tiers(ctx: &Context<'_>) -> async_graphql::Result<Arc<Vec<Tier>>> {
    Ok(ctx
        .data_unchecked::<Loaders>()
        .membership
        .load_one(AllTiers)
        .await?
        .unwrap_or_default())
}

/// The tier rank the caller sees the catalog with: 0 when signed out, the member's tier, or
/// `None` (everything) for staff.
pub async fn viewer_rank(ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
    match viewer(ctx) {
        Viewer::Anonymous => Ok(Some(0)),
        Viewer::Authenticated(s) => match s.principal {
            domain::identity::Principal::Staff { .. } => Ok(None),
            domain::identity::Principal::Member { id } => {
                let member = ctx
                    .data_unchecked::<Loaders>()
                    .identity
                    .load_one(MemberById(id))
                    .await?;
                Ok(Some(member.map_or(0, |m| m.tier_rank)))
            }
        },
    }
}

/// A membership tier and its benefits.
pub struct TierNode(pub Tier);

/// A membership tier and its benefits.
#[Object(name = "Tier")]
impl TierNode {
    /// Stable code, e.g. `GOLD`.
    async fn code(&self) -> &str {
        &self.0.code
    }
    /// Order among tiers; 0 is every member's starting tier.
    async fn rank(&self) -> i32 {
        self.0.tier_rank
    }
    /// Name in Chinese, e.g. 金卡.
    async fn name(&self) -> &str {
        &self.0.name_zh
    }
    /// Name in English.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }
    /// Paid spend over the last 12 months that qualifies for it.
    async fn min_spend(&self) -> Money {
        Money::cny(self.0.min_spend_fen)
    }
    /// Checkout discount on items at list price, in basis points (500 = 5 %).
    async fn discount_basis_points(&self) -> i32 {
        self.0.discount_bp
    }
    /// Points earned per yuan paid when an order completes.
    async fn points_per_yuan(&self) -> i32 {
        self.0.points_per_yuan
    }
    /// Whether members of this tier may request VIP consultations.
    async fn vip_consultation(&self) -> bool {
        self.0.vip_consultation
    }
    /// Goods total from which shipping is free; null when shipping is never free.
    async fn free_shipping_threshold(&self) -> Option<Money> {
        self.0.free_shipping_threshold_fen.map(Money::cny)
    }
    /// The coupon given on a member's birthday; null when none.
    async fn birthday_coupon(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<CouponTemplateNode>> {
        match self.0.birthday_coupon_template_id {
            Some(id) => template(ctx, id).await,
            None => Ok(None),
        }
    }
}

/// Where a member stands: their tier, what they spent and how far the next tier is.
pub struct MemberTierNode(pub Standing);

/// Where a member stands: their tier, what they spent and how far the next tier is.
#[Object(name = "MemberTier")]
impl MemberTierNode {
    /// The tier held.
    async fn tier(&self) -> TierNode {
        TierNode(self.0.tier.clone())
    }
    /// Since when; null for the starting tier.
    async fn since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.since.map(|t| t.and_utc())
    }
    /// The yearly review, the only time a tier can go down; null when there is none due.
    async fn review_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.review_at.map(|t| t.and_utc())
    }
    /// Paid spend (minus refunds) over the last 12 months.
    async fn qualifying_spend(&self) -> Money {
        Money::cny(self.0.spend_fen)
    }
    /// The next tier up; null at the top.
    async fn next_tier(&self) -> Option<TierNode> {
        self.0.next.clone().map(TierNode)
    }
    /// Spend still needed for the next tier; null at the top.
    async fn amount_to_next_tier(&self) -> Option<Money> {
        self.0
            .next
            .as_ref()
            .map(|n| Money::cny((n.min_spend_fen - self.0.spend_fen).max(0)))
    }
    /// Progress towards the next tier, 0–1 (1 at the top).
    async fn progress(&self) -> f64 {
        match &self.0.next {
            None => 1.0,
            Some(n) if n.min_spend_fen <= 0 => 1.0,
            Some(n) => (self.0.spend_fen as f64 / n.min_spend_fen as f64).clamp(0.0, 1.0),
        }
    }
}

/// What a points ledger entry records.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointsEntryKind {
    /// Earned on a completed order.
    Earn,
    /// Spent at checkout.
    Spend,
    /// Given back because an order was cancelled or refunded.
    Reverse,
    /// Expired.
    Expire,
    /// Adjusted by customer service.
    Adjust,
}

/// One entry of a member's points ledger.
pub struct PointsEntryNode(pub LedgerEntry);

/// One entry of a member's points ledger (append-only).
#[Object(name = "PointsEntry")]
impl PointsEntryNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("PointsEntry", self.0.id)
    }
    /// What happened.
    async fn kind(&self) -> PointsEntryKind {
        use domain::membership::points::Kind;
        match Kind::parse(&self.0.kind) {
            Some(Kind::Earn) => PointsEntryKind::Earn,
            Some(Kind::Spend) => PointsEntryKind::Spend,
            Some(Kind::Reverse) => PointsEntryKind::Reverse,
            Some(Kind::Expire) => PointsEntryKind::Expire,
            _ => PointsEntryKind::Adjust,
        }
    }
    /// Points added (positive) or taken (negative).
    async fn delta(&self) -> i64 {
        self.0.delta
    }
    /// The balance right after this entry.
    async fn balance_after(&self) -> i64 {
        self.0.balance_after
    }
    /// Why, in words.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The order it concerns; null when none.
    async fn order(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::order::OrderNode>> {
        match self.0.order_id {
            Some(id) => crate::order::order_by_id(ctx, id).await,
            None => Ok(None),
        }
    }
    /// When the points of a positive entry expire; null for negative entries.
    async fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        (self.0.delta > 0)
            .then_some(self.0.expires_at)
            .flatten()
            .map(|t| t.and_utc())
    }
    /// When.
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.and_utc()
    }
}

crate::connection!(
    PointsEntryConnection,
    PointsEntryEdge,
    PointsEntryNode,
    "points ledger entries"
);

/// A coupon's state for its holder.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponStatus {
    /// Can be used (within its validity).
    Available,
    /// Held by an unpaid order; back to available if that order is cancelled.
    Reserved,
    /// Used by a paid order.
    Used,
    /// Past its validity, never used.
    Expired,
}

impl CouponStatus {
    fn filter(self) -> CouponFilter {
        match self {
            CouponStatus::Available => CouponFilter::Available,
            CouponStatus::Reserved => CouponFilter::Reserved,
            CouponStatus::Used => CouponFilter::Used,
            CouponStatus::Expired => CouponFilter::Expired,
        }
    }
}

/// How a coupon's value is counted.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponKind {
    /// A fixed amount off.
    Fixed,
    /// A percentage off (with an optional cap).
    Percent,
}

/// A coupon a member holds.
pub struct CouponNode(pub CouponRow);

/// A coupon a member holds; its code goes into `placeOrder(input: { couponCode })`.
#[Object(name = "Coupon")]
impl CouponNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Coupon", self.0.id)
    }
    /// The code to apply at checkout.
    async fn code(&self) -> &str {
        &self.0.code
    }
    /// Its state.
    async fn status(&self) -> CouponStatus {
        match self.0.status.as_str() {
            domain::membership::coupons::RESERVED => CouponStatus::Reserved,
            domain::membership::coupons::USED => CouponStatus::Used,
            _ if self.0.is_expired() => CouponStatus::Expired,
            _ => CouponStatus::Available,
        }
    }
    /// The template it was issued from (value, minimum spend, targets).
    async fn template(&self, ctx: &Context<'_>) -> async_graphql::Result<CouponTemplateNode> {
        template(ctx, self.0.template_id)
            .await?
            .ok_or_else(|| crate::error::broken("coupon template missing"))
    }
    /// Start of its validity.
    async fn valid_from(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.valid_from.and_utc()
    }
    /// End of its validity.
    async fn valid_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.valid_until.and_utc()
    }
    /// When its order was paid; null until then.
    async fn used_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.used_at.map(|t| t.and_utc())
    }
    /// The order holding or having used it; null when none.
    async fn order(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::order::OrderNode>> {
        match self.0.order_id {
            Some(id) => crate::order::order_by_id(ctx, id).await,
            None => Ok(None),
        }
    }
}

crate::connection!(CouponConnection, CouponEdge, CouponNode, "coupons");

/// A coupon template: what its coupons are worth and who may have them.
pub struct CouponTemplateNode(pub CouponTemplateRow);

async fn template(ctx: &Context<'_>, id: u64) -> async_graphql::Result<Option<CouponTemplateNode>> {
    Ok(ctx
        .data_unchecked::<Loaders>()
        .membership
        .load_one(CouponTemplateById(id))
        .await?
        .map(|t| CouponTemplateNode((*t).clone())))
}

/// A coupon template: what its coupons are worth and who may have them.
#[Object(name = "CouponTemplate")]
impl CouponTemplateNode {
    /// Opaque id (for `claimCoupon` and `issueCoupons`).
    async fn id(&self) -> ID {
        id::encode("CouponTemplate", self.0.id)
    }
    /// Shown to members.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Fine print.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// Fixed amount or percentage.
    async fn kind(&self) -> CouponKind {
        if self.0.kind == "PERCENT" {
            CouponKind::Percent
        } else {
            CouponKind::Fixed
        }
    }
    /// Amount off of a fixed coupon; null for percentage coupons.
    async fn amount_off(&self) -> Option<Money> {
        self.0.amount_fen.map(Money::cny)
    }
    /// Percent off of a percentage coupon; null for fixed coupons.
    async fn percent_off(&self) -> Option<i32> {
        self.0.percent_off
    }
    /// Most a percentage coupon takes off; null when uncapped.
    async fn max_discount(&self) -> Option<Money> {
        self.0.max_discount_fen.map(Money::cny)
    }
    /// Spend needed on the items it applies to.
    async fn min_spend(&self) -> Money {
        Money::cny(self.0.min_spend_fen)
    }
    /// Start of the window.
    async fn valid_from(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.valid_from.and_utc()
    }
    /// End of the window.
    async fn valid_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.valid_until.and_utc()
    }
    /// Each coupon is valid this many days from its issue (within the window); null = the
    /// whole window.
    async fn valid_days(&self) -> Option<i32> {
        self.0.valid_days
    }
    /// The lowest tier that may hold it; null when any member may.
    async fn required_tier(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<TierNode>> {
        let Some(rank) = self.0.min_tier_rank else {
            return Ok(None);
        };
        let tiers = tiers(ctx).await?;
        Ok(domain::membership::tier_at(&tiers, rank)
            .cloned()
            .map(TierNode))
    }
    /// Coupons left to issue; null when unlimited.
    async fn remaining(&self) -> Option<i32> {
        self.0.remaining()
    }
    /// Most one member may hold.
    async fn per_member_limit(&self) -> i32 {
        self.0.per_member_limit
    }
    /// Whether members can claim it themselves (`claimableCoupons`).
    async fn claimable(&self) -> bool {
        self.0.claimable
    }
    /// Whether coupons can still be claimed or issued from it.
    async fn active(&self) -> bool {
        self.0.active
    }
    /// Products it is limited to (empty with no categories either = the whole order).
    async fn product_ids(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ID>> {
        let targets = ctx
            .data_unchecked::<Loaders>()
            .membership
            .load_one(crate::loaders::CouponTargetsByTemplate(self.0.id))
            .await?;
        Ok(targets
            .map(|t| t.0.iter().map(|p| id::encode("Product", *p)).collect())
            .unwrap_or_default())
    }
    /// Categories it is limited to, subcategories included.
    async fn category_ids(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ID>> {
        let targets = ctx
            .data_unchecked::<Loaders>()
            .membership
            .load_one(crate::loaders::CouponTargetsByTemplate(self.0.id))
            .await?;
        Ok(targets
            .map(|t| t.1.iter().map(|c| id::encode("Category", *c)).collect())
            .unwrap_or_default())
    }
}

crate::connection!(
    CouponTemplateConnection,
    CouponTemplateEdge,
    CouponTemplateNode,
    "coupon templates"
);

/// What an order would cost: the same computation `placeOrder` makes.
#[derive(SimpleObject, Debug, Clone)]
pub struct CheckoutQuote {
    /// Σ unit price × quantity (member prices where they apply).
    pub subtotal: Money,
    /// The tier's discount on items at list price (rounded down per line).
    pub tier_discount: Money,
    /// The coupon's discount.
    pub coupon_discount: Money,
    /// What the points pay.
    pub points_discount: Money,
    /// Points taken for it.
    pub points_used: i64,
    /// Every discount together.
    pub discount: Money,
    /// Shipping (free from the tier's threshold).
    pub shipping: Money,
    /// What the member pays: subtotal − discount + shipping.
    pub total: Money,
}

impl From<&Priced> for CheckoutQuote {
    fn from(p: &Priced) -> Self {
        let q = p.quote;
        Self {
            subtotal: Money::cny(q.subtotal_fen),
            tier_discount: Money::cny(q.tier_discount_fen),
            coupon_discount: Money::cny(q.coupon_discount_fen),
            points_discount: Money::cny(q.points_discount_fen),
            points_used: q.points_used,
            discount: Money::cny(q.discount_fen()),
            shipping: Money::cny(q.shipping_fen),
            total: Money::cny(q.total_fen),
        }
    }
}

/// A quote, or why the coupon or points cannot be used.
#[derive(SimpleObject)]
pub struct QuotePayload {
    /// The quote; null when `errors` is not empty.
    pub quote: Option<CheckoutQuote>,
    /// Why the order could not be priced as asked.
    pub errors: Vec<UserError>,
}

/// The typed error of a coupon that cannot be used.
pub fn coupon_error(e: CouponError, field: &str) -> UserError {
    let (code, message) = match e {
        CouponError::NotFound => (UserErrorCode::CouponNotFound, "no such coupon".to_owned()),
        CouponError::Expired => (
            UserErrorCode::CouponExpired,
            "the coupon has expired".into(),
        ),
        CouponError::NotYetValid => (
            UserErrorCode::CouponNotYetValid,
            "the coupon is not valid yet".into(),
        ),
        CouponError::Used => (
            UserErrorCode::CouponUsed,
            "the coupon was already used".into(),
        ),
        CouponError::NotApplicable => (
            UserErrorCode::CouponNotApplicable,
            "the coupon does not apply to these items".into(),
        ),
        CouponError::MinSpend { min_spend_fen } => (
            UserErrorCode::CouponMinSpend,
            format!(
                "spend at least ¥{} on eligible items to use this coupon",
                domain::money::Fen(min_spend_fen).to_yuan_string()
            ),
        ),
        CouponError::TierRequired { rank } => (
            UserErrorCode::TierRequired,
            format!("this coupon is for tier rank {rank} and above"),
        ),
        CouponError::SoldOut => (
            UserErrorCode::CouponSoldOut,
            "every coupon of this kind has been given out".into(),
        ),
        CouponError::LimitReached => (
            UserErrorCode::LimitReached,
            "you already hold as many of these as allowed".into(),
        ),
        CouponError::Unavailable => (
            UserErrorCode::CouponUnavailable,
            "this coupon cannot be claimed".into(),
        ),
    };
    UserError::new(code, Some(field), message)
}

/// The typed error of points that cannot be used or adjusted.
pub fn points_error(e: PointsError, field: &str) -> UserError {
    match e {
        PointsError::Insufficient { balance } => UserError::new(
            UserErrorCode::PointsInsufficient,
            Some(field),
            format!("only {balance} points available"),
        ),
        PointsError::InvalidAmount => UserError::new(
            UserErrorCode::InvalidInput,
            Some(field),
            "a whole number of points, not zero and at most 10,000,000",
        ),
        PointsError::ReasonRequired => UserError::new(
            UserErrorCode::InvalidInput,
            Some("reason"),
            "1–200 characters",
        ),
        PointsError::MemberNotFound => {
            UserError::new(UserErrorCode::NotFound, Some("memberId"), "no such member")
        }
    }
}

/// The typed error of a refused price.
pub fn refusal_error(r: PriceRefusal) -> UserError {
    match r {
        PriceRefusal::TierRequired { sku_id, rank } => {
            let mut e = UserError::new(
                UserErrorCode::TierRequired,
                Some("input.lines"),
                format!("this item is for members of tier rank {rank} and above"),
            );
            e.sku_id = Some(id::encode("Sku", sku_id));
            e
        }
        PriceRefusal::Coupon(c) => coupon_error(c, "input.couponCode"),
        PriceRefusal::Points(p) => points_error(p, "input.pointsToUse"),
    }
}

/// A quote for `lines` (SKU id, units) of member `member`. Lines the member's tier may not
/// buy (a gate that changed since the cart was read) are left out, as checkout would refuse them.
pub(crate) async fn quote(
    ctx: &Context<'_>,
    member: u64,
    lines: &[(u64, i32)],
    coupon_code: Option<&str>,
    points: i64,
) -> async_graphql::Result<QuotePayload> {
    let mut lines = lines.to_vec();
    let priced = loop {
        let priced = membership(ctx)
            .preview(member, &lines, coupon_code, points)
            .await
            .map_err(|e| internal(&e))?;
        match priced {
            Err(PriceRefusal::TierRequired { sku_id, .. })
                if lines.iter().any(|(s, _)| *s == sku_id) =>
            {
                lines.retain(|(s, _)| *s != sku_id);
            }
            other => break other,
        }
    };
    Ok(match priced {
        Ok(p) => QuotePayload {
            quote: Some(CheckoutQuote::from(&p)),
            errors: Vec::new(),
        },
        Err(r) => QuotePayload {
            quote: None,
            errors: vec![refusal_error(r)],
        },
    })
}

/// `Member.tier`.
pub(crate) async fn standing(
    ctx: &Context<'_>,
    member: u64,
) -> async_graphql::Result<MemberTierNode> {
    membership(ctx)
        .standing(member)
        .await
        .map_err(|e| internal(&e))?
        .map(MemberTierNode)
        .ok_or_else(|| crate::error::broken("no tiers configured"))
}

/// `Member.pointsHistory`.
pub(crate) async fn points_history(
    ctx: &Context<'_>,
    member: u64,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<PointsEntryConnection> {
    let limit = page_size(first)?;
    let before = after.as_deref().map(decode_cursor::<u64>).transpose()?;
    let m = membership(ctx);
    let total = if ctx.look_ahead().field("totalCount").exists() {
        m.history_count(member).await.map_err(|e| internal(&e))?
    } else {
        0
    };
    let rows = if limit == 0 {
        Vec::new()
    } else {
        m.history(member, before, limit + 1)
            .await
            .map_err(|e| internal(&e))?
    };
    let (items, has_next) = id_page(rows, limit, |e| e.id, PointsEntryNode);
    Ok(PointsEntryConnection::new(
        items,
        before.is_some(),
        has_next,
        total,
    ))
}

/// `Member.coupons`.
pub(crate) async fn member_coupons(
    ctx: &Context<'_>,
    member: u64,
    status: Option<CouponStatus>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<CouponConnection> {
    let limit = page_size(first)?;
    let before = after.as_deref().map(decode_cursor::<u64>).transpose()?;
    let rows = if limit == 0 {
        Vec::new()
    } else {
        membership(ctx)
            .member_coupons(member, status.map(CouponStatus::filter), before, limit + 1)
            .await
            .map_err(|e| internal(&e))?
    };
    let (items, has_next) = id_page(rows, limit, |c| c.id, CouponNode);
    let total = items.len() as i64;
    Ok(CouponConnection::new(
        items,
        before.is_some(),
        has_next,
        total,
    ))
}

async fn template_page(
    rows: Vec<CouponTemplateRow>,
    limit: i64,
    before: Option<u64>,
) -> CouponTemplateConnection {
    let (items, has_next) = id_page(rows, limit, |t| t.id, CouponTemplateNode);
    let total = items.len() as i64;
    CouponTemplateConnection::new(items, before.is_some(), has_next, total)
}

/// Membership reads.
#[derive(Default)]
pub struct MembershipQuery;

/// Membership reads.
#[Object]
impl MembershipQuery {
    /// Every membership tier with its benefits, lowest first.
    async fn tiers(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TierNode>> {
        Ok(tiers(ctx).await?.iter().cloned().map(TierNode).collect())
    }

    /// Coupons members can claim now, newest first (`totalCount` counts this page only).
    async fn claimable_coupons(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<CouponTemplateConnection> {
        let limit = page_size(first)?;
        let before = after.as_deref().map(decode_cursor::<u64>).transpose()?;
        let rows = if limit == 0 {
            Vec::new()
        } else {
            membership(ctx)
                .claimable_templates(before, limit + 1)
                .await
                .map_err(|e| internal(&e))?
        };
        Ok(template_page(rows, limit, before).await)
    }

    /// Every coupon template, newest first (operations; `totalCount` counts this page only).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn coupon_templates(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<CouponTemplateConnection> {
        let limit = page_size(first)?;
        let before = after.as_deref().map(decode_cursor::<u64>).transpose()?;
        let rows = if limit == 0 {
            Vec::new()
        } else {
            membership(ctx)
                .all_templates(before, limit + 1)
                .await
                .map_err(|e| internal(&e))?
        };
        Ok(template_page(rows, limit, before).await)
    }

    /// A member by id, with their tier, points ledger and coupons (operations); null when
    /// there is none.
    #[graphql(guard = "StaffGuard::OPS")]
    async fn member(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<crate::identity::MemberNode>> {
        let id = id::decode("Member", "id", &id)?;
        Ok(ctx
            .data_unchecked::<Loaders>()
            .identity
            .load_one(MemberById(id))
            .await?
            .map(crate::identity::MemberNode))
    }
}

/// A tier as administrators define it.
#[derive(InputObject, Debug)]
#[graphql(name = "TierInput")]
pub struct TierDefinition {
    /// Stable code (2–32 of `A-Z0-9_`); an existing code updates that tier.
    pub code: String,
    /// Order among tiers (0 = the starting tier); cannot change once created.
    pub rank: i32,
    /// Name in Chinese.
    pub name: String,
    /// Name in English.
    pub name_en: String,
    /// Qualifying spend over 12 months, fen.
    pub min_spend_fen: i64,
    /// Checkout discount on items at list price, basis points (0–5000).
    pub discount_basis_points: i32,
    /// Points per yuan paid on completed orders (0–100).
    pub points_per_yuan: i32,
    /// May request VIP consultations.
    pub vip_consultation: bool,
    /// Free shipping from this goods total, fen; null = never free.
    pub free_shipping_threshold_fen: Option<i64>,
    /// Coupon template given on birthdays; null = none.
    pub birthday_coupon_template_id: Option<ID>,
}

/// Result of `upsertTier`.
#[derive(SimpleObject)]
pub struct TierPayload {
    /// The tier after the change; null when `errors` is not empty.
    pub tier: Option<TierNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

/// A new coupon template.
#[derive(InputObject, Debug)]
pub struct CouponTemplateInput {
    /// Shown to members (1–64 characters).
    pub name: String,
    /// Fine print (at most 200 characters).
    pub description: Option<String>,
    /// Fixed amount off, fen (give this or `percentOff`).
    pub amount_off_fen: Option<i64>,
    /// Percent off, 1–99 (give this or `amountOffFen`).
    pub percent_off: Option<i32>,
    /// Cap of a percentage coupon, fen.
    pub max_discount_fen: Option<i64>,
    /// Spend needed on the items it applies to, fen (0 when omitted).
    pub min_spend_fen: Option<i64>,
    /// Start of the window.
    pub valid_from: chrono::DateTime<chrono::Utc>,
    /// End of the window.
    pub valid_until: chrono::DateTime<chrono::Utc>,
    /// Each coupon valid this many days from its issue (within the window).
    pub valid_days: Option<i32>,
    /// Code of the lowest tier that may hold it; null = any member.
    pub required_tier_code: Option<String>,
    /// Most coupons ever issued; null = unlimited.
    pub total_quantity: Option<i32>,
    /// Most one member may hold (1 when omitted).
    pub per_member_limit: Option<i32>,
    /// Members can claim it themselves.
    pub claimable: Option<bool>,
    /// Limited to these products …
    pub product_ids: Option<Vec<ID>>,
    /// … and/or these categories (subcategories included); neither = the whole order.
    pub category_ids: Option<Vec<ID>>,
}

/// Result of a coupon template change.
#[derive(SimpleObject)]
pub struct CouponTemplatePayload {
    /// The template after the change; null when `errors` is not empty.
    pub template: Option<CouponTemplateNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `claimCoupon`.
#[derive(SimpleObject)]
pub struct ClaimCouponPayload {
    /// The coupon claimed; null when `errors` is not empty.
    pub coupon: Option<CouponNode>,
    /// Why no coupon was claimed; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `issueCoupons`.
#[derive(SimpleObject)]
pub struct IssueCouponsPayload {
    /// Coupons issued.
    pub issued: i32,
    /// Members skipped (limit reached, tier too low, unknown member).
    pub skipped: i32,
    /// Whether the template ran out before every member got one.
    pub sold_out: bool,
    /// Why nothing was issued; empty otherwise.
    pub errors: Vec<UserError>,
}

/// Result of `adjustPoints`.
#[derive(SimpleObject)]
pub struct AdjustPointsPayload {
    /// The ledger entry written; null when `errors` is not empty.
    pub entry: Option<PointsEntryNode>,
    /// The member's balance afterwards; null when `errors` is not empty.
    pub balance: Option<i64>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

/// Membership changes.
#[derive(Default)]
pub struct MembershipMutation;

/// Membership changes.
#[Object]
impl MembershipMutation {
    /// Claims a coupon from `claimableCoupons` (within its quantity, the per-member limit and
    /// its tier restriction).
    #[graphql(guard = "MemberGuard")]
    async fn claim_coupon(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
    ) -> async_graphql::Result<ClaimCouponPayload> {
        let member = member_id(ctx)?;
        let template = id::decode("CouponTemplate", "templateId", &template_id)?;
        let claimed = membership(ctx)
            .claim(member, template)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match claimed {
            Ok(c) => ClaimCouponPayload {
                coupon: Some(CouponNode(c)),
                errors: Vec::new(),
            },
            Err(e) => ClaimCouponPayload {
                coupon: None,
                errors: vec![coupon_error(e, "templateId")],
            },
        })
    }

    /// Creates a tier or updates the one with this code (administrators).
    #[graphql(guard = "StaffGuard::ADMIN")]
    async fn upsert_tier(
        &self,
        ctx: &Context<'_>,
        input: TierDefinition,
    ) -> async_graphql::Result<TierPayload> {
        let birthday = input
            .birthday_coupon_template_id
            .as_ref()
            .map(|t| id::decode("CouponTemplate", "input.birthdayCouponTemplateId", t))
            .transpose()?;
        let domain_input = TierInput {
            code: input.code,
            rank: input.rank,
            name_zh: input.name,
            name_en: input.name_en,
            min_spend_fen: input.min_spend_fen,
            discount_bp: input.discount_basis_points,
            points_per_yuan: input.points_per_yuan,
            vip_consultation: input.vip_consultation,
            free_shipping_threshold_fen: input.free_shipping_threshold_fen,
            birthday_coupon_template_id: birthday,
        };
        let (staff_id, _) = staff(ctx, StaffGuard::ADMIN.0)?;
        let result = membership(ctx)
            .upsert_tier(&domain_input)
            .await
            .map_err(|e| internal(&e))?;
        if result.is_ok() {
            tracing::info!(staff_id, code = %domain_input.code, "tier saved");
        }
        Ok(match result {
            Ok(t) => TierPayload {
                tier: Some(TierNode(t)),
                errors: Vec::new(),
            },
            Err(errors) => TierPayload {
                tier: None,
                errors: user_errors(errors),
            },
        })
    }

    /// Creates a coupon template (operations).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn create_coupon_template(
        &self,
        ctx: &Context<'_>,
        input: CouponTemplateInput,
    ) -> async_graphql::Result<CouponTemplatePayload> {
        let (staff_id, _) = staff(ctx, StaffGuard::OPS.0)?;
        let min_tier_rank = match &input.required_tier_code {
            None => None,
            Some(code) => match tiers(ctx).await?.iter().find(|t| &t.code == code) {
                Some(t) => Some(t.tier_rank),
                None => {
                    return Ok(CouponTemplatePayload {
                        template: None,
                        errors: vec![UserError::new(
                            UserErrorCode::NotFound,
                            Some("input.requiredTierCode"),
                            "no tier with this code",
                        )],
                    });
                }
            },
        };
        let decode_all = |ids: &Option<Vec<ID>>, kind: &str, field: &str| {
            ids.iter()
                .flatten()
                .map(|i| id::decode(kind, field, i))
                .collect::<async_graphql::Result<Vec<u64>>>()
        };
        let new = NewCouponTemplate {
            name: input.name.clone(),
            description: input.description.clone().unwrap_or_default(),
            amount_fen: input.amount_off_fen,
            percent_off: input.percent_off,
            max_discount_fen: input.max_discount_fen,
            min_spend_fen: input.min_spend_fen.unwrap_or(0),
            valid_from: input.valid_from.naive_utc(),
            valid_until: input.valid_until.naive_utc(),
            valid_days: input.valid_days,
            min_tier_rank,
            total_quantity: input.total_quantity,
            per_member_limit: input.per_member_limit.unwrap_or(1),
            claimable: input.claimable.unwrap_or(false),
            product_ids: decode_all(&input.product_ids, "Product", "input.productIds")?,
            category_ids: decode_all(&input.category_ids, "Category", "input.categoryIds")?,
        };
        let created = membership(ctx)
            .create_coupon_template(staff_id, &new)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match created {
            Ok(t) => CouponTemplatePayload {
                template: Some(CouponTemplateNode(t)),
                errors: Vec::new(),
            },
            Err(errors) => CouponTemplatePayload {
                template: None,
                errors: user_errors(errors),
            },
        })
    }

    /// Switches a coupon template on or off; issued coupons stay valid (operations).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn set_coupon_template_active(
        &self,
        ctx: &Context<'_>,
        id: ID,
        active: bool,
    ) -> async_graphql::Result<CouponTemplatePayload> {
        let template = id::decode("CouponTemplate", "id", &id)?;
        let updated = membership(ctx)
            .set_coupon_template_active(template, active)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match updated {
            Some(t) => CouponTemplatePayload {
                template: Some(CouponTemplateNode(t)),
                errors: Vec::new(),
            },
            None => CouponTemplatePayload {
                template: None,
                errors: vec![UserError::new(
                    UserErrorCode::NotFound,
                    Some("id"),
                    "no such coupon template",
                )],
            },
        })
    }

    /// Issues a coupon of a template to members, or to every member of a tier (operations;
    /// give `memberIds` or `tierCode`, at most 500 ids).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn issue_coupons(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
        member_ids: Option<Vec<ID>>,
        tier_code: Option<String>,
    ) -> async_graphql::Result<IssueCouponsPayload> {
        let (staff_id, _) = staff(ctx, StaffGuard::OPS.0)?;
        let template = id::decode("CouponTemplate", "templateId", &template_id)?;
        let refuse = |field: &str, message: &str| IssueCouponsPayload {
            issued: 0,
            skipped: 0,
            sold_out: false,
            errors: vec![UserError::new(
                UserErrorCode::InvalidInput,
                Some(field),
                message,
            )],
        };
        let m = membership(ctx);
        let outcome = match (member_ids, tier_code) {
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > 500 {
                    return Ok(refuse("memberIds", "1–500 member ids"));
                }
                let ids = ids
                    .iter()
                    .map(|i| id::decode("Member", "memberIds", i))
                    .collect::<async_graphql::Result<Vec<u64>>>()?;
                m.issue_to_members(staff_id, template, &ids).await
            }
            (None, Some(code)) => {
                let Some(rank) = tiers(ctx)
                    .await?
                    .iter()
                    .find(|t| t.code == code)
                    .map(|t| t.tier_rank)
                else {
                    return Ok(refuse("tierCode", "no tier with this code"));
                };
                m.issue_to_tier(staff_id, template, rank).await
            }
            _ => return Ok(refuse("memberIds", "give memberIds or tierCode, not both")),
        }
        .map_err(|e| internal(&e))?;
        Ok(match outcome {
            Ok(s) => IssueCouponsPayload {
                issued: i32::try_from(s.issued).unwrap_or(i32::MAX),
                skipped: i32::try_from(s.skipped).unwrap_or(i32::MAX),
                sold_out: s.sold_out,
                errors: Vec::new(),
            },
            Err(e) => IssueCouponsPayload {
                issued: 0,
                skipped: 0,
                sold_out: false,
                errors: vec![coupon_error(e, "templateId")],
            },
        })
    }

    /// Adds (positive `delta`) or removes points with a reason (operations; recorded with the
    /// staff account in the member's ledger). A balance never goes below zero.
    #[graphql(guard = "StaffGuard::OPS")]
    async fn adjust_points(
        &self,
        ctx: &Context<'_>,
        member_id: ID,
        delta: i64,
        reason: String,
    ) -> async_graphql::Result<AdjustPointsPayload> {
        let (staff_id, _) = staff(ctx, StaffGuard::OPS.0)?;
        let member = id::decode("Member", "memberId", &member_id)?;
        let adjusted = membership(ctx)
            .adjust(staff_id, member, delta, &reason)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match adjusted {
            Ok(entry) => AdjustPointsPayload {
                balance: Some(entry.balance_after),
                entry: Some(PointsEntryNode(entry)),
                errors: Vec::new(),
            },
            Err(e) => AdjustPointsPayload {
                entry: None,
                balance: None,
                errors: vec![points_error(e, "delta")],
            },
        })
    }
}
