//! Stock adjustments by operations, recorded in the inventory ledger with their reason.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::Catalog;
use crate::DomainResult;
use crate::schema::{inventory_ledger, skus};
use crate::validation::{UserError, UserErrorCode};

impl Catalog {
    /// Adds `delta` (negative to remove) to a SKU's stock, never below zero; returns the new
    /// stock.
    pub async fn adjust_stock(
        &self,
        sku_id: u64,
        delta: i32,
        reason: &str,
        staff_id: u64,
    ) -> DomainResult<Result<i32, Vec<UserError>>> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Ok(Err(vec![UserError::invalid("reason", "1–200 characters")]));
        }
        if delta == 0 || delta.unsigned_abs() > 100_000 {
            return Ok(Err(vec![UserError::invalid(
                "delta",
                "a non-zero change of at most 100000 units",
            )]));
        }
        let mut conn = self.db.conn().await?;
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let product: Option<u64> = skus::table
                    .find(sku_id)
                    .select(skus::product_id)
                    .first(conn)
                    .await
                    .optional()?;
                let Some(product) = product else {
                    return Ok(Err(vec![UserError::not_found("skuId", "no such SKU")]));
                };
                let changed = diesel::update(
                    skus::table
                        .filter(skus::id.eq(sku_id))
                        .filter((skus::stock + delta).ge(0)),
                )
                .set(skus::stock.eq(skus::stock + delta))
                .execute(conn)
                .await?;
                if changed == 0 {
                    return Ok(Err(vec![UserError {
                        code: UserErrorCode::InvalidInput,
                        field: Some("delta".into()),
                        message: "stock cannot go below zero".into(),
                    }]));
                }
                diesel::insert_into(inventory_ledger::table)
                    .values((
                        inventory_ledger::sku_id.eq(sku_id),
                        inventory_ledger::delta.eq(delta),
                        inventory_ledger::reason.eq("adjust"),
                        inventory_ledger::actor_id.eq(Some(staff_id)),
                        inventory_ledger::note.eq(reason),
                    ))
                    .execute(conn)
                    .await?;
                crate::events::stock_changed(conn, &[(sku_id, delta, "adjust", None)]).await?;
                let stock: i32 = skus::table
                    .find(sku_id)
                    .select(skus::stock)
                    .first(conn)
                    .await?;
                Ok(Ok((product, stock)))
            })
            .await?;
        match outcome {
            Ok((product, stock)) => {
                self.invalidate_products(&[product]).await;
                Ok(Ok(stock))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Sum of the ledger of a SKU (equals its stock when every change went through the ledger).
    pub async fn ledger_sum(&self, sku_id: u64) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        let sum: Option<i64> = inventory_ledger::table
            .filter(inventory_ledger::sku_id.eq(sku_id))
            .select(diesel::dsl::sum(inventory_ledger::delta))
            .first(&mut conn)
            .await?;
        Ok(sum.unwrap_or(0))
    }
}
