//! Coupons: templates (fixed or percentage, minimum spend, validity window, tier restriction,
//! total quantity, per-member limit, target products and categories), coupons issued from them
//! (claimed by a member, issued by operations to members or a whole tier, or given on
//! birthdays), and their use: one coupon per order, reserved by `placeOrder` in the checkout
//! transaction, used when the order is paid, released if it is cancelled.
//!
//! Quantity is a conditional `UPDATE … SET issued_count = issued_count + 1 WHERE issued_count
//! < total_quantity`, so a template is never over-issued; the per-member limit is counted under
//! the member's row lock; a coupon row is locked by the checkout that reserves it, so two
//! orders can never both use it.

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncMysqlConnection, RunQueryDsl};

use super::pricing::{CouponTerms, CouponValue};
use super::{Membership, now};
use crate::DomainResult;
use crate::order::OrderRow;
use crate::schema::{coupon_template_targets, coupon_templates, coupons, members};
use crate::validation::UserError;

/// Coupon statuses as stored.
pub const AVAILABLE: &str = "AVAILABLE";
/// Held by an unpaid order.
pub const RESERVED: &str = "RESERVED";
/// Its order was paid.
pub const USED: &str = "USED";

/// A coupon template.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = coupon_templates, check_for_backend(diesel::mysql::Mysql))]
pub struct CouponTemplateRow {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub amount_fen: Option<i64>,
    pub percent_off: Option<i32>,
    pub max_discount_fen: Option<i64>,
    pub min_spend_fen: i64,
    pub valid_from: chrono::NaiveDateTime,
    pub valid_until: chrono::NaiveDateTime,
    pub valid_days: Option<i32>,
    pub min_tier_rank: Option<i32>,
    pub total_quantity: Option<i32>,
    pub issued_count: i32,
    pub per_member_limit: i32,
    pub claimable: bool,
    pub active: bool,
}

impl CouponTemplateRow {
    /// What one of its coupons takes off.
    pub fn value(&self) -> CouponValue {
        match (self.kind.as_str(), self.amount_fen, self.percent_off) {
            ("PERCENT", _, Some(percent)) => CouponValue::Percent {
                percent,
                max_fen: self.max_discount_fen,
            },
            (_, Some(amount), _) => CouponValue::Fixed { amount_fen: amount },
            _ => CouponValue::Fixed { amount_fen: 0 },
        }
    }

    /// Coupons left to issue; `None` = unlimited.
    pub fn remaining(&self) -> Option<i32> {
        self.total_quantity.map(|q| (q - self.issued_count).max(0))
    }
}

/// An issued coupon.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = coupons, check_for_backend(diesel::mysql::Mysql))]
pub struct CouponRow {
    pub id: u64,
    pub template_id: u64,
    pub member_id: u64,
    pub code: String,
    pub status: String,
    pub order_id: Option<u64>,
    pub origin: String,
    pub valid_from: chrono::NaiveDateTime,
    pub valid_until: chrono::NaiveDateTime,
    pub used_at: Option<chrono::NaiveDateTime>,
    pub created_at: chrono::NaiveDateTime,
}

impl CouponRow {
    /// Whether it is past its validity.
    pub fn is_expired(&self) -> bool {
        self.valid_until < now()
    }
}

/// Why a coupon cannot be claimed, issued or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponError {
    /// No such coupon (or template) for this member.
    NotFound,
    /// Past its validity.
    Expired,
    /// Not valid yet.
    NotYetValid,
    /// Already used (or held by another order).
    Used,
    /// None of the order's lines is one it applies to.
    NotApplicable,
    /// The lines it applies to do not reach its minimum spend.
    MinSpend {
        /// The minimum, fen.
        min_spend_fen: i64,
    },
    /// The member's tier is below the coupon's.
    TierRequired {
        /// The lowest rank that may hold it.
        rank: i32,
    },
    /// Every coupon of the template has been issued.
    SoldOut,
    /// The member holds as many of these as they may.
    LimitReached,
    /// The template is switched off, or not open to claims.
    Unavailable,
}

/// Statuses a member filters their coupons by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponFilter {
    /// Can be used now (or later in its window).
    Available,
    /// Held by an unpaid order.
    Reserved,
    /// Used.
    Used,
    /// Past its validity, never used.
    Expired,
}

/// A new template.
#[derive(Debug, Clone, Default)]
pub struct NewCouponTemplate {
    /// Shown to members (1–64 characters).
    pub name: String,
    /// Fine print (at most 200 characters).
    pub description: String,
    /// Fixed amount off, fen (exactly one of this and `percent_off`).
    pub amount_fen: Option<i64>,
    /// Percent off, 1–99.
    pub percent_off: Option<i32>,
    /// Cap of a percentage coupon, fen.
    pub max_discount_fen: Option<i64>,
    /// Minimum spend on the lines it applies to, fen.
    pub min_spend_fen: i64,
    /// Window start.
    pub valid_from: chrono::NaiveDateTime,
    /// Window end.
    pub valid_until: chrono::NaiveDateTime,
    /// Each coupon valid this many days from issue (within the window).
    pub valid_days: Option<i32>,
    /// Lowest tier rank that may hold it.
    pub min_tier_rank: Option<i32>,
    /// Most coupons ever issued; `None` = unlimited.
    pub total_quantity: Option<i32>,
    /// Most one member may hold.
    pub per_member_limit: i32,
    /// Listed for members to claim.
    pub claimable: bool,
    /// Limited to these products …
    pub product_ids: Vec<u64>,
    /// … and/or these categories (and their subcategories).
    pub category_ids: Vec<u64>,
}

impl NewCouponTemplate {
    fn validate(&self) -> Vec<UserError> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > 64 {
            errors.push(UserError::invalid("input.name", "1–64 characters"));
        }
        if self.description.chars().count() > 200 {
            errors.push(UserError::invalid(
                "input.description",
                "at most 200 characters",
            ));
        }
        match (self.amount_fen, self.percent_off) {
            (Some(a), None) if a > 0 => {}
            (None, Some(p)) if (1..=99).contains(&p) => {}
            _ => errors.push(UserError::invalid(
                "input.amountOff",
                "exactly one of amountOff (> 0 fen) and percentOff (1–99)",
            )),
        }
        if self.max_discount_fen.is_some_and(|m| m <= 0) {
            errors.push(UserError::invalid("input.maxDiscount", "more than 0"));
        }
        if self.min_spend_fen < 0 {
            errors.push(UserError::invalid("input.minSpend", "not negative"));
        }
        if self.valid_from >= self.valid_until {
            errors.push(UserError::invalid("input.validUntil", "after validFrom"));
        }
        {
            use chrono::Datelike as _;
            for (field, at) in [
                ("input.validFrom", self.valid_from),
                ("input.validUntil", self.valid_until),
            ] {
                if !(2000..=2200).contains(&at.year()) {
                    errors.push(UserError::invalid(field, "a date between 2000 and 2200"));
                }
            }
        }
        if self.valid_days.is_some_and(|d| !(1..=3_650).contains(&d)) {
            errors.push(UserError::invalid("input.validDays", "1–3650"));
        }
        if self.total_quantity.is_some_and(|q| q < 1) {
            errors.push(UserError::invalid("input.totalQuantity", "at least 1"));
        }
        if !(1..=100).contains(&self.per_member_limit) {
            errors.push(UserError::invalid("input.perMemberLimit", "1–100"));
        }
        if self.product_ids.len() + self.category_ids.len() > 200 {
            errors.push(UserError::invalid(
                "input.productIds",
                "at most 200 targets",
            ));
        }
        errors
    }
}

/// Outcome of issuing one template to many members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IssueSummary {
    /// Coupons issued.
    pub issued: usize,
    /// Members skipped (limit reached, tier too low, no such member).
    pub skipped: usize,
    /// Stopped early because the template ran out.
    pub sold_out: bool,
}

const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn new_code() -> String {
    (0..10)
        .map(|_| CODE_ALPHABET[usize::from(rand::random::<u8>()) % CODE_ALPHABET.len()] as char)
        .collect()
}

async fn template_terms(
    conn: &mut AsyncMysqlConnection,
    template: &CouponTemplateRow,
) -> QueryResult<CouponTerms> {
    let targets: Vec<(String, u64)> = coupon_template_targets::table
        .filter(coupon_template_targets::template_id.eq(template.id))
        .select((
            coupon_template_targets::target_kind,
            coupon_template_targets::target_id,
        ))
        .load(conn)
        .await?;
    Ok(CouponTerms {
        value: template.value(),
        min_spend_fen: template.min_spend_fen,
        product_ids: targets
            .iter()
            .filter(|t| t.0 == "PRODUCT")
            .map(|t| t.1)
            .collect(),
        category_ids: targets
            .iter()
            .filter(|t| t.0 == "CATEGORY")
            .map(|t| t.1)
            .collect(),
    })
}

/// Issues one coupon of `template` to `member_id` in the caller's transaction. `issue_key`
/// makes it idempotent (the coupon issued before under the key is returned).
async fn issue_one(
    conn: &mut AsyncMysqlConnection,
    template: &CouponTemplateRow,
    member_id: u64,
    origin: &str,
    issue_key: Option<&str>,
) -> QueryResult<Result<CouponRow, CouponError>> {
    let at = now();
    let Some(rank) = members::table
        .find(member_id)
        .select(members::tier_rank)
        .for_update()
        .first::<i32>(conn)
        .await
        .optional()?
    else {
        return Ok(Err(CouponError::NotFound));
    };
    if let Some(key) = issue_key {
        let before: Option<CouponRow> = coupons::table
            .filter(coupons::template_id.eq(template.id))
            .filter(coupons::member_id.eq(member_id))
            .filter(coupons::issue_key.eq(key))
            .select(CouponRow::as_select())
            .first(conn)
            .await
            .optional()?;
        if let Some(before) = before {
            return Ok(Ok(before));
        }
    }
    if !template.active {
        return Ok(Err(CouponError::Unavailable));
    }
    if template.valid_until <= at {
        return Ok(Err(CouponError::Expired));
    }
    if let Some(min) = template.min_tier_rank
        && rank < min
    {
        return Ok(Err(CouponError::TierRequired { rank: min }));
    }
    if issue_key.is_none() {
        let held: i64 = coupons::table
            .filter(coupons::template_id.eq(template.id))
            .filter(coupons::member_id.eq(member_id))
            .count()
            .get_result(conn)
            .await?;
        if held >= i64::from(template.per_member_limit) {
            return Ok(Err(CouponError::LimitReached));
        }
    }
    let taken = diesel::update(
        coupon_templates::table
            .filter(coupon_templates::id.eq(template.id))
            .filter(
                coupon_templates::total_quantity
                    .is_null()
                    .or(coupon_templates::issued_count
                        .nullable()
                        .lt(coupon_templates::total_quantity)),
            ),
    )
    .set(coupon_templates::issued_count.eq(coupon_templates::issued_count + 1))
    .execute(conn)
    .await?;
    if taken == 0 {
        return Ok(Err(CouponError::SoldOut));
    }
    // N days from when it can first be used (issued before the window opens: from the opening)
    let valid_until = match template.valid_days {
        Some(days) => template
            .valid_until
            .min(at.max(template.valid_from) + chrono::TimeDelta::days(i64::from(days))),
        None => template.valid_until,
    };
    let mut attempt = 0;
    let code = loop {
        attempt += 1;
        let code = new_code();
        let inserted = diesel::insert_into(coupons::table)
            .values((
                coupons::template_id.eq(template.id),
                coupons::member_id.eq(member_id),
                coupons::code.eq(&code),
                coupons::status.eq(AVAILABLE),
                coupons::origin.eq(origin),
                coupons::issue_key.eq(issue_key),
                coupons::valid_from.eq(template.valid_from),
                coupons::valid_until.eq(valid_until),
            ))
            .execute(conn)
            .await;
        match inserted {
            Ok(_) => break code,
            // 50 random bits: a clash is rare, two in a row rarer still
            Err(e) if crate::order::is_duplicate_key(&e) && attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    };
    Ok(Ok(coupons::table
        .filter(coupons::code.eq(&code))
        .select(CouponRow::as_select())
        .first(conn)
        .await?))
}

/// A coupon a checkout may apply: found by code among the member's, usable now.
pub(crate) struct Applicable {
    /// The coupon.
    pub coupon: CouponRow,
    /// Its terms for pricing.
    pub terms: CouponTerms,
}

/// Looks up the member's coupon `code` for an order (locking its row when `lock`), and checks
/// it can be used now by a member of `rank`.
pub(crate) async fn applicable(
    conn: &mut AsyncMysqlConnection,
    member_id: u64,
    rank: i32,
    code: &str,
    lock: bool,
) -> QueryResult<Result<Applicable, CouponError>> {
    let code = code.trim().to_ascii_uppercase();
    // codes are ASCII letters and digits: anything else cannot be one (and must not reach an
    // ASCII column, where MySQL would refuse to compare it)
    if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(Err(CouponError::NotFound));
    }
    let query = coupons::table
        .filter(coupons::code.eq(&code))
        .filter(coupons::member_id.eq(member_id))
        .select(CouponRow::as_select());
    let coupon: Option<CouponRow> = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    let Some(coupon) = coupon else {
        return Ok(Err(CouponError::NotFound));
    };
    if coupon.status != AVAILABLE {
        return Ok(Err(CouponError::Used));
    }
    let at = now();
    if coupon.valid_until <= at {
        return Ok(Err(CouponError::Expired));
    }
    if coupon.valid_from > at {
        return Ok(Err(CouponError::NotYetValid));
    }
    let template: CouponTemplateRow = coupon_templates::table
        .find(coupon.template_id)
        .select(CouponTemplateRow::as_select())
        .first(conn)
        .await?;
    if let Some(min) = template.min_tier_rank
        && rank < min
    {
        return Ok(Err(CouponError::TierRequired { rank: min }));
    }
    let terms = template_terms(conn, &template).await?;
    Ok(Ok(Applicable { coupon, terms }))
}

/// Checkout: the coupon (locked by [`applicable`]) is reserved for the new order.
pub(crate) async fn reserve(
    conn: &mut AsyncMysqlConnection,
    coupon_id: u64,
    order_id: u64,
) -> QueryResult<bool> {
    Ok(diesel::update(
        coupons::table
            .filter(coupons::id.eq(coupon_id))
            .filter(coupons::status.eq(AVAILABLE)),
    )
    .set((
        coupons::status.eq(RESERVED),
        coupons::order_id.eq(Some(order_id)),
    ))
    .execute(conn)
    .await?
        == 1)
}

/// The order was paid: its coupon is used for good.
pub(crate) async fn mark_used(conn: &mut AsyncMysqlConnection, order_id: u64) -> QueryResult<()> {
    diesel::update(
        coupons::table
            .filter(coupons::order_id.eq(order_id))
            .filter(coupons::status.eq(RESERVED)),
    )
    .set((coupons::status.eq(USED), coupons::used_at.eq(Some(now()))))
    .execute(conn)
    .await?;
    Ok(())
}

/// The order was cancelled: its coupon can be used again (until it expires).
pub(crate) async fn release(conn: &mut AsyncMysqlConnection, order_id: u64) -> QueryResult<()> {
    diesel::update(
        coupons::table
            .filter(coupons::order_id.eq(order_id))
            .filter(coupons::status.eq(RESERVED)),
    )
    .set((
        coupons::status.eq(AVAILABLE),
        coupons::order_id.eq(None::<u64>),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// A cancelled order was paid after all: whether its coupon is still free to go back to it
/// (the row is locked). Its validity no longer matters: the price was paid with it.
pub(crate) async fn can_retake(
    conn: &mut AsyncMysqlConnection,
    order: &OrderRow,
) -> QueryResult<bool> {
    let Some(id) = super::pricing_of(conn, order.id).await?.coupon_id else {
        return Ok(true);
    };
    let status: Option<(String, Option<u64>)> = coupons::table
        .find(id)
        .select((coupons::status, coupons::order_id))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(matches!(status, Some((s, None)) if s == AVAILABLE))
}

/// Puts the coupon back on the revived order (after [`can_retake`] said yes).
pub(crate) async fn retake(conn: &mut AsyncMysqlConnection, order: &OrderRow) -> QueryResult<()> {
    if let Some(id) = super::pricing_of(conn, order.id).await?.coupon_id {
        reserve(conn, id, order.id).await?;
    }
    Ok(())
}

impl Membership {
    /// Creates a template.
    pub async fn create_coupon_template(
        &self,
        staff_id: u64,
        input: &NewCouponTemplate,
    ) -> DomainResult<Result<CouponTemplateRow, Vec<UserError>>> {
        let errors = input.validate();
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let mut conn = self.db.conn().await?;
        let template = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::insert_into(coupon_templates::table)
                    .values((
                        coupon_templates::name.eq(input.name.trim()),
                        coupon_templates::description.eq(input.description.trim()),
                        coupon_templates::kind.eq(if input.amount_fen.is_some() {
                            "FIXED"
                        } else {
                            "PERCENT"
                        }),
                        coupon_templates::amount_fen.eq(input.amount_fen),
                        coupon_templates::percent_off.eq(input.percent_off),
                        coupon_templates::max_discount_fen.eq(input.max_discount_fen),
                        coupon_templates::min_spend_fen.eq(input.min_spend_fen),
                        coupon_templates::valid_from.eq(input.valid_from),
                        coupon_templates::valid_until.eq(input.valid_until),
                        coupon_templates::valid_days.eq(input.valid_days),
                        coupon_templates::min_tier_rank.eq(input.min_tier_rank),
                        coupon_templates::total_quantity.eq(input.total_quantity),
                        coupon_templates::per_member_limit.eq(input.per_member_limit),
                        coupon_templates::claimable.eq(input.claimable),
                        coupon_templates::created_by.eq(Some(staff_id)),
                    ))
                    .execute(conn)
                    .await?;
                let id: u64 = diesel::select(diesel::dsl::sql::<
                    diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
                >("LAST_INSERT_ID()"))
                .get_result(conn)
                .await?;
                let mut targets: Vec<(&str, u64)> =
                    input.product_ids.iter().map(|p| ("PRODUCT", *p)).collect();
                targets.extend(input.category_ids.iter().map(|c| ("CATEGORY", *c)));
                targets.sort_unstable();
                targets.dedup();
                let rows: Vec<_> = targets
                    .iter()
                    .map(|(kind, target)| {
                        (
                            coupon_template_targets::template_id.eq(id),
                            coupon_template_targets::target_kind.eq(*kind),
                            coupon_template_targets::target_id.eq(*target),
                        )
                    })
                    .collect();
                if !rows.is_empty() {
                    diesel::insert_into(coupon_template_targets::table)
                        .values(&rows)
                        .execute(conn)
                        .await?;
                }
                coupon_templates::table
                    .find(id)
                    .select(CouponTemplateRow::as_select())
                    .first(conn)
                    .await
            })
            .await?;
        tracing::info!(
            staff_id,
            template_id = template.id,
            "coupon template created"
        );
        Ok(Ok(template))
    }

    /// Switches a template on or off (issued coupons stay valid).
    pub async fn set_coupon_template_active(
        &self,
        template_id: u64,
        active: bool,
    ) -> DomainResult<Option<CouponTemplateRow>> {
        let mut conn = self.db.conn().await?;
        diesel::update(coupon_templates::table.find(template_id))
            .set(coupon_templates::active.eq(active))
            .execute(&mut conn)
            .await?;
        Ok(coupon_templates::table
            .find(template_id)
            .select(CouponTemplateRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Templates by id.
    pub async fn coupon_templates(
        &self,
        ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, CouponTemplateRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<CouponTemplateRow> = coupon_templates::table
            .filter(coupon_templates::id.eq_any(ids))
            .select(CouponTemplateRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|t| (t.id, t)).collect())
    }

    /// Target products and categories of templates: (product ids, category ids) per template.
    pub async fn coupon_targets(
        &self,
        ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, (Vec<u64>, Vec<u64>)>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<(u64, String, u64)> = coupon_template_targets::table
            .filter(coupon_template_targets::template_id.eq_any(ids))
            .select((
                coupon_template_targets::template_id,
                coupon_template_targets::target_kind,
                coupon_template_targets::target_id,
            ))
            .load(&mut conn)
            .await?;
        let mut out: std::collections::HashMap<u64, (Vec<u64>, Vec<u64>)> = ids
            .iter()
            .map(|id| (*id, (Vec::new(), Vec::new())))
            .collect();
        for (template, kind, target) in rows {
            let entry = out.entry(template).or_default();
            if kind == "PRODUCT" {
                entry.0.push(target);
            } else {
                entry.1.push(target);
            }
        }
        Ok(out)
    }

    /// Templates open to claims now, newest first: up to `limit` after template id `before`.
    pub async fn claimable_templates(
        &self,
        before: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<CouponTemplateRow>> {
        let mut conn = self.db.conn().await?;
        let at = now();
        let mut q = coupon_templates::table
            .filter(coupon_templates::claimable.eq(true))
            .filter(coupon_templates::active.eq(true))
            .filter(coupon_templates::valid_until.gt(at))
            .into_boxed();
        if let Some(before) = before {
            q = q.filter(coupon_templates::id.lt(before));
        }
        Ok(q.order(coupon_templates::id.desc())
            .limit(limit)
            .select(CouponTemplateRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Every template (operations), newest first.
    pub async fn all_templates(
        &self,
        before: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<CouponTemplateRow>> {
        let mut conn = self.db.conn().await?;
        let mut q = coupon_templates::table.into_boxed();
        if let Some(before) = before {
            q = q.filter(coupon_templates::id.lt(before));
        }
        Ok(q.order(coupon_templates::id.desc())
            .limit(limit)
            .select(CouponTemplateRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// A member claims a coupon from the public list.
    pub async fn claim(
        &self,
        member_id: u64,
        template_id: u64,
    ) -> DomainResult<Result<CouponRow, CouponError>> {
        let mut conn = self.db.conn().await?;
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let template: Option<CouponTemplateRow> = coupon_templates::table
                    .find(template_id)
                    .select(CouponTemplateRow::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                let Some(template) = template else {
                    return Ok(Err(CouponError::NotFound));
                };
                if !template.claimable {
                    return Ok(Err(CouponError::Unavailable));
                }
                issue_one(conn, &template, member_id, "CLAIM", None).await
            })
            .await?;
        if outcome.is_ok() {
            metrics::counter!("ruizhu_coupons_issued_total", "origin" => "claim").increment(1);
        }
        Ok(outcome)
    }

    /// Operations issue a template to members (each in its own transaction).
    pub async fn issue_to_members(
        &self,
        staff_id: u64,
        template_id: u64,
        member_ids: &[u64],
    ) -> DomainResult<Result<IssueSummary, CouponError>> {
        let Some(template) = self
            .coupon_templates(&[template_id])
            .await?
            .remove(&template_id)
        else {
            return Ok(Err(CouponError::NotFound));
        };
        let mut summary = IssueSummary::default();
        let mut conn = self.db.conn().await?;
        for member_id in member_ids {
            let outcome = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    issue_one(conn, &template, *member_id, "ISSUE", None).await
                })
                .await?;
            match outcome {
                Ok(_) => summary.issued += 1,
                Err(CouponError::SoldOut) => {
                    summary.sold_out = true;
                    break;
                }
                Err(CouponError::Unavailable | CouponError::Expired) if summary.issued == 0 => {
                    return Ok(Err(CouponError::Unavailable));
                }
                Err(_) => summary.skipped += 1,
            }
        }
        metrics::counter!("ruizhu_coupons_issued_total", "origin" => "issue")
            .increment(summary.issued as u64);
        tracing::info!(
            staff_id,
            template_id,
            issued = summary.issued,
            skipped = summary.skipped,
            "coupons issued"
        );
        Ok(Ok(summary))
    }

    /// Operations issue a template to every member of a tier (in pages).
    pub async fn issue_to_tier(
        &self,
        staff_id: u64,
        template_id: u64,
        rank: i32,
    ) -> DomainResult<Result<IssueSummary, CouponError>> {
        let mut total = IssueSummary::default();
        let mut after = 0_u64;
        loop {
            let page: Vec<u64> = {
                let mut conn = self.db.conn().await?;
                members::table
                    .filter(members::tier_rank.eq(rank))
                    .filter(members::id.gt(after))
                    .order(members::id)
                    .limit(500)
                    .select(members::id)
                    .load(&mut conn)
                    .await?
            };
            let Some(&last) = page.last() else {
                break;
            };
            after = last;
            match self.issue_to_members(staff_id, template_id, &page).await? {
                Ok(s) => {
                    total.issued += s.issued;
                    total.skipped += s.skipped;
                    if s.sold_out {
                        total.sold_out = true;
                        break;
                    }
                }
                Err(e) if total.issued == 0 => return Ok(Err(e)),
                Err(_) => break,
            }
        }
        Ok(Ok(total))
    }

    /// Birthday gifts for `today` (a China date): every member born on this day whose tier has
    /// a birthday template gets one coupon of it, once a year (Feb 29 birthdays are served on
    /// Feb 28 in other years). Returns how many were issued.
    pub async fn issue_birthday_coupons(&self, today: chrono::NaiveDate) -> DomainResult<usize> {
        use chrono::Datelike as _;
        let tiers = self.tiers().await?;
        let mut days = vec![(today.month(), today.day())];
        if today.month() == 2 && today.day() == 28 && !today.leap_year() {
            days.push((2, 29));
        }
        let mut issued = 0;
        let mut conn = self.db.conn().await?;
        for (month, day) in days {
            let born: Vec<(u64, i32)> = members::table
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                    "MONTH(birthday) = {month} AND DAY(birthday) = {day}"
                )))
                .select((members::id, members::tier_rank))
                .load(&mut conn)
                .await?;
            for (member_id, rank) in born {
                let Some(template_id) =
                    super::tier_at(&tiers, rank).and_then(|t| t.birthday_coupon_template_id)
                else {
                    continue;
                };
                let key = format!("birthday:{}", today.year());
                let outcome = conn
                    .transaction::<_, diesel::result::Error, _>(async |conn| {
                        let template: Option<CouponTemplateRow> = coupon_templates::table
                            .find(template_id)
                            .select(CouponTemplateRow::as_select())
                            .first(conn)
                            .await
                            .optional()?;
                        match template {
                            Some(t) => {
                                let before: i64 = coupons::table
                                    .filter(coupons::template_id.eq(t.id))
                                    .filter(coupons::member_id.eq(member_id))
                                    .filter(coupons::issue_key.eq(&key))
                                    .count()
                                    .get_result(conn)
                                    .await?;
                                let result =
                                    issue_one(conn, &t, member_id, "BIRTHDAY", Some(&key)).await?;
                                Ok(result.is_ok() && before == 0)
                            }
                            None => Ok(false),
                        }
                    })
                    .await?;
                if outcome {
                    issued += 1;
                }
            }
        }
        if issued > 0 {
            metrics::counter!("ruizhu_coupons_issued_total", "origin" => "birthday")
                .increment(issued as u64);
        }
        Ok(issued)
    }

    /// A member's coupons, newest first, optionally of one status: up to `limit` after coupon
    /// id `before`.
    pub async fn member_coupons(
        &self,
        member_id: u64,
        filter: Option<CouponFilter>,
        before: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<CouponRow>> {
        let mut conn = self.db.conn().await?;
        let at = now();
        let mut q = coupons::table
            .filter(coupons::member_id.eq(member_id))
            .into_boxed();
        q = match filter {
            None => q,
            Some(CouponFilter::Available) => q
                .filter(coupons::status.eq(AVAILABLE))
                .filter(coupons::valid_until.gt(at)),
            Some(CouponFilter::Reserved) => q.filter(coupons::status.eq(RESERVED)),
            Some(CouponFilter::Used) => q.filter(coupons::status.eq(USED)),
            Some(CouponFilter::Expired) => q
                .filter(coupons::status.eq(AVAILABLE))
                .filter(coupons::valid_until.le(at)),
        };
        if let Some(before) = before {
            q = q.filter(coupons::id.lt(before));
        }
        Ok(q.order(coupons::id.desc())
            .limit(limit)
            .select(CouponRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Coupons by id.
    pub async fn coupons_by_id(
        &self,
        ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, CouponRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<CouponRow> = coupons::table
            .filter(coupons::id.eq_any(ids))
            .select(CouponRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|c| (c.id, c)).collect())
    }
}
