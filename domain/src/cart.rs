//! Cart context: a server-side cart per member. Lines keep the SKU and quantity only; prices
//! and availability are read live from the catalog when the cart is shown, and snapshotted
//! only at checkout.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::DomainResult;
use crate::catalog::{SKU_ACTIVE, STATUS_PUBLISHED};
use crate::db::Db;
use crate::order::MAX_LINE_QUANTITY;
use crate::schema::{cart_lines, products, skus};
use crate::validation::{UserError, UserErrorCode};

/// Most lines one cart may hold.
pub const MAX_CART_LINES: i64 = 50;

/// A line of a cart.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = cart_lines, check_for_backend(diesel::mysql::Mysql))]
pub struct CartLine {
    pub id: u64,
    pub member_id: u64,
    pub sku_id: u64,
    pub quantity: i32,
}

/// Carts over one database.
#[derive(Clone, Debug)]
pub struct Carts {
    db: Db,
}

fn quantity_error(field: &str) -> Vec<UserError> {
    vec![UserError::invalid(
        field,
        format!("quantity must be between 1 and {MAX_LINE_QUANTITY}"),
    )]
}

impl Carts {
    /// Carts over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Cart lines of each member, oldest first.
    pub async fn lines(&self, member_ids: &[u64]) -> DomainResult<HashMap<u64, Vec<CartLine>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<CartLine> = cart_lines::table
            .filter(cart_lines::member_id.eq_any(member_ids))
            .order((cart_lines::member_id, cart_lines::id))
            .select(CartLine::as_select())
            .load(&mut conn)
            .await?;
        let mut out: HashMap<u64, Vec<CartLine>> =
            member_ids.iter().map(|&m| (m, Vec::new())).collect();
        for row in rows {
            out.entry(row.member_id).or_default().push(row);
        }
        Ok(out)
    }

    /// Adds `quantity` of a SKU (to an existing line of it, or as a new line).
    pub async fn add(
        &self,
        member_id: u64,
        sku_id: u64,
        quantity: i32,
    ) -> DomainResult<Result<(), Vec<UserError>>> {
        if !(1..=MAX_LINE_QUANTITY).contains(&quantity) {
            return Ok(Err(quantity_error("quantity")));
        }
        let mut conn = self.db.conn().await?;
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                // serialises this member's cart changes, so the 50-line limit holds under races
                crate::identity::lock_member(conn, member_id).await?;
                type Row = (String, String, Option<i32>, Option<i32>, String);
                let sku: Option<Row> = skus::table
                    .inner_join(products::table)
                    .filter(skus::id.eq(sku_id))
                    .select((
                        skus::status,
                        products::status,
                        skus::purchase_limit,
                        products::min_tier_rank,
                        products::tier_gate,
                    ))
                    .first(conn)
                    .await
                    .optional()?;
                let rank: i32 = crate::schema::members::table
                    .find(member_id)
                    .select(crate::schema::members::tier_rank)
                    .first(conn)
                    .await?;
                // a product hidden from the member's tier does not exist for them
                let hidden = |gate: &Option<i32>, how: &str| {
                    gate.is_some_and(|min| min > rank) && how == crate::catalog::GATE_HIDE
                };
                match &sku {
                    Some((s, p, _, gate, how))
                        if s == SKU_ACTIVE && p == STATUS_PUBLISHED && !hidden(gate, how) => {}
                    _ => {
                        return Ok(Err(vec![UserError {
                            code: UserErrorCode::NotFound,
                            field: Some("skuId".into()),
                            message: "this item is not available".into(),
                        }]));
                    }
                }
                let existing: Option<CartLine> = cart_lines::table
                    .filter(cart_lines::member_id.eq(member_id))
                    .filter(cart_lines::sku_id.eq(sku_id))
                    .select(CartLine::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                let limit = sku
                    .and_then(|s| s.2)
                    .unwrap_or(MAX_LINE_QUANTITY)
                    .min(MAX_LINE_QUANTITY);
                match existing {
                    Some(line) => {
                        let total = line.quantity + quantity;
                        if total > limit {
                            return Ok(Err(vec![UserError {
                                code: UserErrorCode::LimitReached,
                                field: Some("quantity".into()),
                                message: format!("at most {limit} of this item"),
                            }]));
                        }
                        diesel::update(cart_lines::table.find(line.id))
                            .set(cart_lines::quantity.eq(total))
                            .execute(conn)
                            .await?;
                    }
                    None => {
                        let count: i64 = cart_lines::table
                            .filter(cart_lines::member_id.eq(member_id))
                            .count()
                            .get_result(conn)
                            .await?;
                        if count >= MAX_CART_LINES {
                            return Ok(Err(vec![UserError {
                                code: UserErrorCode::LimitReached,
                                field: None,
                                message: format!(
                                    "at most {MAX_CART_LINES} different items in the cart"
                                ),
                            }]));
                        }
                        if quantity > limit {
                            return Ok(Err(vec![UserError {
                                code: UserErrorCode::LimitReached,
                                field: Some("quantity".into()),
                                message: format!("at most {limit} of this item"),
                            }]));
                        }
                        diesel::insert_into(cart_lines::table)
                            .values((
                                cart_lines::member_id.eq(member_id),
                                cart_lines::sku_id.eq(sku_id),
                                cart_lines::quantity.eq(quantity),
                            ))
                            .execute(conn)
                            .await?;
                    }
                }
                Ok(Ok(()))
            })
            .await?;
        Ok(outcome)
    }

    /// Sets a line's quantity.
    pub async fn update(
        &self,
        member_id: u64,
        line_id: u64,
        quantity: i32,
    ) -> DomainResult<Result<(), Vec<UserError>>> {
        if !(1..=MAX_LINE_QUANTITY).contains(&quantity) {
            return Ok(Err(quantity_error("quantity")));
        }
        let mut conn = self.db.conn().await?;
        let limit: Option<Option<i32>> = cart_lines::table
            .inner_join(skus::table)
            .filter(cart_lines::id.eq(line_id))
            .filter(cart_lines::member_id.eq(member_id))
            .select(skus::purchase_limit)
            .first(&mut conn)
            .await
            .optional()?;
        let Some(limit) = limit else {
            return Ok(Err(vec![UserError::not_found(
                "lineId",
                "no such cart line",
            )]));
        };
        if let Some(limit) = limit
            && quantity > limit
        {
            return Ok(Err(vec![UserError {
                code: UserErrorCode::LimitReached,
                field: Some("quantity".into()),
                message: format!("at most {limit} of this item"),
            }]));
        }
        diesel::update(
            cart_lines::table
                .filter(cart_lines::id.eq(line_id))
                .filter(cart_lines::member_id.eq(member_id)),
        )
        .set(cart_lines::quantity.eq(quantity))
        .execute(&mut conn)
        .await?;
        Ok(Ok(()))
    }

    /// Removes a line.
    pub async fn remove(
        &self,
        member_id: u64,
        line_id: u64,
    ) -> DomainResult<Result<(), Vec<UserError>>> {
        let mut conn = self.db.conn().await?;
        let n = diesel::delete(
            cart_lines::table
                .filter(cart_lines::id.eq(line_id))
                .filter(cart_lines::member_id.eq(member_id)),
        )
        .execute(&mut conn)
        .await?;
        Ok(if n == 0 {
            Err(vec![UserError::not_found("lineId", "no such cart line")])
        } else {
            Ok(())
        })
    }
}
