//! Checkout: one MySQL transaction that claims the idempotency key, reserves stock for every
//! line with a conditional `UPDATE … WHERE stock >= ?` in ascending SKU order (a fixed lock
//! order, so concurrent multi-SKU checkouts do not deadlock each other; a deadlock that happens
//! anyway is retried and never reaches the user), snapshots prices, names and the address, and
//! writes the first timeline entry and the inventory ledger.
//!
//! Idempotency follows Stripe: the same key with the same input returns the same order; with
//! different input it is `IDEMPOTENCY_KEY_REUSED`; concurrent requests with one key create one
//! order (the second waits on the first's uncommitted key row, then reads its result). Only
//! successes are remembered: a refused checkout leaves nothing behind, so a retry re-evaluates.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use super::{
    Actor, MAX_LINE_QUANTITY, MAX_ORDER_LINES, OrderRow, OrderStatus, Orders, is_duplicate_key,
    is_retryable_conflict, order_phone_aad,
};
use crate::DomainResult;
use crate::catalog::{SKU_ACTIVE, STATUS_PUBLISHED};
use crate::membership::quote::{PriceRefusal, Wanted};
use crate::membership::{CouponError, PointsError};
use crate::schema::{
    cart_lines, idempotency_keys, inventory_ledger, member_addresses, order_events, order_lines,
    order_pricing, orders, products, skus,
};

/// What the member asks for.
#[derive(Debug, Clone, Default)]
pub struct CheckoutRequest {
    /// The member placing the order.
    pub member_id: u64,
    /// Client-chosen key (8–64 of `[A-Za-z0-9_-]`), the same for every retry of one checkout.
    pub idempotency_key: String,
    /// Explicit lines (SKU, quantity) …
    pub lines: Vec<(u64, i32)>,
    /// … or lines taken from the cart (removed from it when the order is placed).
    pub cart_line_ids: Vec<u64>,
    /// Delivery address from the member's address book.
    pub address_id: u64,
    /// Code of one of the member's coupons.
    pub coupon_code: Option<String>,
    /// Points to pay with (only what the discount needs is taken; see `membership::pricing`).
    pub points: i64,
    /// Note for the boutique (at most 200 characters).
    pub note: Option<String>,
}

/// Why a checkout was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutError {
    /// No lines.
    EmptyOrder,
    /// More than 50 lines, or a quantity outside 1–99.
    InvalidQuantity { sku_id: Option<u64> },
    /// The idempotency key is malformed.
    InvalidIdempotencyKey,
    /// The key was used before with different input.
    IdempotencyKeyReused,
    /// The address is not one of the member's.
    AddressNotFound,
    /// A cart line is not in the member's cart.
    CartLineNotFound { line_id: u64 },
    /// The SKU does not exist, is inactive or its product is not published.
    SkuUnavailable { sku_id: u64 },
    /// Not enough stock for this SKU.
    OutOfStock { sku_id: u64 },
    /// The member would exceed the SKU's purchase limit.
    PurchaseLimitExceeded { sku_id: u64, limit: i32 },
    /// The SKU's product is for members of a higher tier.
    TierRequired { sku_id: u64, rank: i32 },
    /// The coupon cannot be used.
    Coupon(CouponError),
    /// The points cannot be used.
    Points(PointsError),
    /// The note is too long.
    NoteTooLong,
    /// The order would cost nothing (WeChat Pay takes at least 1 fen).
    ZeroTotal,
}

/// A placed (or replayed) order.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The order.
    pub order: OrderRow,
    /// True when this is the stored result of an earlier request with the same key.
    pub replayed: bool,
}

/// recipient, phone (encrypted), province, city, district, detail, postal code
type AddressSnapshot = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

enum TxError {
    Refused(CheckoutError),
    /// The key exists: another request with this key committed first.
    KeyTaken,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

fn valid_key(key: &str) -> bool {
    (8..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Canonical hash of the request parameters that identifies "the same request" (the lines as
/// asked for, merged per SKU and sorted; not what they resolved to).
fn request_hash(req: &CheckoutRequest) -> Vec<u8> {
    let mut lines: BTreeMap<u64, i32> = BTreeMap::new();
    for &(sku, q) in &req.lines {
        *lines.entry(sku).or_default() += q;
    }
    let mut cart: Vec<u64> = req.cart_line_ids.clone();
    cart.sort_unstable();
    let canonical = serde_json::json!({
        "lines": lines.iter().map(|(s, q)| [*s as i64, i64::from(*q)]).collect::<Vec<_>>(),
        "cart": cart,
        "address": req.address_id,
        "coupon": req.coupon_code,
        "points": req.points,
        "note": req.note,
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

impl Orders {
    /// Places an order (see the module docs). The outer `Result` is infrastructure, the inner
    /// one the business outcome.
    pub async fn place_order(
        &self,
        req: &CheckoutRequest,
    ) -> DomainResult<Result<Placed, CheckoutError>> {
        if !valid_key(&req.idempotency_key) {
            return Ok(Err(CheckoutError::InvalidIdempotencyKey));
        }
        if req.note.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Ok(Err(CheckoutError::NoteTooLong));
        }
        if !(0..=crate::membership::points::MAX_CHANGE).contains(&req.points) {
            return Ok(Err(CheckoutError::Points(PointsError::InvalidAmount)));
        }
        if req.lines.len() + req.cart_line_ids.len() > MAX_ORDER_LINES {
            return Ok(Err(CheckoutError::InvalidQuantity { sku_id: None }));
        }
        for &(sku_id, q) in &req.lines {
            if !(1..=MAX_LINE_QUANTITY).contains(&q) {
                return Ok(Err(CheckoutError::InvalidQuantity {
                    sku_id: Some(sku_id),
                }));
            }
        }
        if req.lines.is_empty() && req.cart_line_ids.is_empty() {
            return Ok(Err(CheckoutError::EmptyOrder));
        }
        let mut conn = self.db.conn().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = conn
                .transaction::<_, TxError, _>(async |conn| self.checkout_tx(conn, req).await)
                .await;
            match outcome {
                Ok(order) => {
                    // committed: a failure from here on must not turn the answer into an error
                    match self.product_ids_of(&mut conn, order.id).await {
                        Ok(product_ids) => {
                            drop(conn);
                            self.catalog.invalidate_products(&product_ids).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not invalidate the catalog cache")
                        }
                    }
                    metrics::counter!("ruizhu_orders_placed_total").increment(1);
                    return Ok(Ok(Placed {
                        order,
                        replayed: false,
                    }));
                }
                Err(TxError::Refused(e)) => return Ok(Err(e)),
                Err(TxError::KeyTaken) => return self.replay(&mut conn, req).await,
                Err(TxError::Db(e)) if is_retryable_conflict(&e) && attempt < 5 => {
                    metrics::counter!("ruizhu_checkout_retries_total").increment(1);
                    let jitter = u64::from(rand::random::<u8>() % 20);
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt + jitter))
                        .await;
                }
                Err(TxError::Db(e)) => return Err(e.into()),
            }
        }
    }

    async fn replay(
        &self,
        conn: &mut AsyncMysqlConnection,
        req: &CheckoutRequest,
    ) -> DomainResult<Result<Placed, CheckoutError>> {
        let stored: (Vec<u8>, u64) = idempotency_keys::table
            .find((req.member_id, &req.idempotency_key))
            .select((idempotency_keys::request_hash, idempotency_keys::order_id))
            .first(conn)
            .await?;
        if stored.0 != request_hash(req) {
            return Ok(Err(CheckoutError::IdempotencyKeyReused));
        }
        let order = orders::table
            .find(stored.1)
            .select(OrderRow::as_select())
            .first(conn)
            .await?;
        Ok(Ok(Placed {
            order,
            replayed: true,
        }))
    }

    /// The lines asked for, merged per SKU: explicit lines, or the member's cart lines.
    async fn resolve_lines(
        &self,
        conn: &mut AsyncMysqlConnection,
        req: &CheckoutRequest,
    ) -> QueryResult<Result<BTreeMap<u64, i32>, CheckoutError>> {
        let mut merged: BTreeMap<u64, i32> = BTreeMap::new();
        for &(sku, q) in &req.lines {
            *merged.entry(sku).or_default() += q;
        }
        if !req.cart_line_ids.is_empty() {
            let rows: Vec<(u64, u64, i32)> = cart_lines::table
                .filter(cart_lines::member_id.eq(req.member_id))
                .filter(cart_lines::id.eq_any(&req.cart_line_ids))
                .select((cart_lines::id, cart_lines::sku_id, cart_lines::quantity))
                // locked: a concurrent checkout of the same lines waits, then finds them gone
                .for_update()
                .load(conn)
                .await?;
            for id in &req.cart_line_ids {
                if !rows.iter().any(|r| r.0 == *id) {
                    return Ok(Err(CheckoutError::CartLineNotFound { line_id: *id }));
                }
            }
            for (_, sku, q) in rows {
                *merged.entry(sku).or_default() += q;
            }
        }
        if let Some((&sku, _)) = merged.iter().find(|(_, q)| **q > MAX_LINE_QUANTITY) {
            return Ok(Err(CheckoutError::InvalidQuantity { sku_id: Some(sku) }));
        }
        Ok(Ok(merged))
    }

    async fn checkout_tx(
        &self,
        conn: &mut AsyncMysqlConnection,
        req: &CheckoutRequest,
    ) -> Result<OrderRow, TxError> {
        let hash = request_hash(req);
        // 1. claim the key; a concurrent holder makes this wait, then fail as a duplicate
        let claimed = diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::member_id.eq(req.member_id),
                idempotency_keys::idem_key.eq(&req.idempotency_key),
                idempotency_keys::request_hash.eq(&hash),
                idempotency_keys::order_id.eq(0_u64),
            ))
            .execute(conn)
            .await;
        match claimed {
            Err(e) if is_duplicate_key(&e) => return Err(TxError::KeyTaken),
            other => other?,
        };

        let lines = self
            .resolve_lines(conn, req)
            .await?
            .map_err(TxError::Refused)?;

        // 2. the address, snapshotted
        let address: Option<AddressSnapshot> = member_addresses::table
            .filter(member_addresses::id.eq(req.address_id))
            .filter(member_addresses::member_id.eq(req.member_id))
            .select((
                member_addresses::recipient,
                member_addresses::phone_enc,
                member_addresses::province,
                member_addresses::city,
                member_addresses::district,
                member_addresses::detail,
                member_addresses::postal_code,
            ))
            .first(conn)
            .await
            .optional()?;
        let Some((recipient, phone_enc, province, city, district, detail, postal_code)) = address
        else {
            return Err(TxError::Refused(CheckoutError::AddressNotFound));
        };
        let phone = self
            .cipher
            .decrypt(
                &phone_enc,
                &format!("member:{}:address-phone", req.member_id),
            )
            .map_err(|_| TxError::Refused(CheckoutError::AddressNotFound))?;

        // 3. what is being bought, as it is now
        let sku_ids: Vec<u64> = lines.keys().copied().collect();
        type SkuSnapshot = (
            u64,
            u64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Option<i32>,
            String,
            String,
            String,
            String,
            Option<i32>,
        );
        let rows: Vec<SkuSnapshot> = skus::table
            .inner_join(products::table)
            .filter(skus::id.eq_any(&sku_ids))
            .select((
                skus::id,
                skus::product_id,
                skus::code,
                skus::color,
                skus::size,
                skus::material,
                skus::price_fen,
                skus::purchase_limit,
                skus::status,
                products::status,
                products::name_zh,
                products::name_en,
                products::min_tier_rank,
            ))
            .load(conn)
            .await?;
        let by_id: HashMap<u64, &SkuSnapshot> = rows.iter().map(|r| (r.0, r)).collect();
        for sku in &sku_ids {
            match by_id.get(sku) {
                Some(r) if r.8 == SKU_ACTIVE && r.9 == STATUS_PUBLISHED => {}
                _ => {
                    return Err(TxError::Refused(CheckoutError::SkuUnavailable {
                        sku_id: *sku,
                    }));
                }
            }
        }

        // 4. purchase limits: serialise this member's checkouts, then count what they hold
        let limited: Vec<(u64, i32)> = rows
            .iter()
            .filter_map(|r| r.7.map(|limit| (r.0, limit)))
            .collect();
        if !limited.is_empty() {
            crate::identity::lock_member(conn, req.member_id).await?;
            for (sku, limit) in limited {
                let held: Option<i64> = order_lines::table
                    .inner_join(orders::table)
                    .filter(orders::member_id.eq(req.member_id))
                    .filter(orders::status.ne(OrderStatus::Cancelled.as_str()))
                    .filter(order_lines::sku_id.eq(sku))
                    .select(diesel::dsl::sum(order_lines::quantity))
                    .first(conn)
                    .await?;
                if held.unwrap_or(0) + i64::from(lines[&sku]) > i64::from(limit) {
                    return Err(TxError::Refused(CheckoutError::PurchaseLimitExceeded {
                        sku_id: sku,
                        limit,
                    }));
                }
            }
        }

        // 5. the price: tier, member prices, coupon (its row locked) and points, by the one
        //    pricing function the cart preview uses too
        let wanted: Vec<Wanted> = lines
            .iter()
            .map(|(sku, q)| {
                let r = by_id[sku];
                Wanted {
                    sku_id: *sku,
                    product_id: r.1,
                    list_price_fen: r.6,
                    quantity: *q,
                    min_tier_rank: r.12,
                }
            })
            .collect();
        let priced = crate::membership::quote::price(
            &self.membership,
            conn,
            req.member_id,
            &wanted,
            req.coupon_code.as_deref(),
            req.points,
            true,
        )
        .await?
        .map_err(|refusal| {
            TxError::Refused(match refusal {
                PriceRefusal::TierRequired { sku_id, rank } => {
                    CheckoutError::TierRequired { sku_id, rank }
                }
                PriceRefusal::Coupon(e) => CheckoutError::Coupon(e),
                PriceRefusal::Points(e) => CheckoutError::Points(e),
            })
        })?;
        let quote = priced.quote;
        if quote.total_fen < 1 {
            return Err(TxError::Refused(CheckoutError::ZeroTotal));
        }
        let unit_price = |sku: &u64| priced.unit_prices.get(sku).copied().unwrap_or(by_id[sku].6);

        // 6. the order and its snapshot
        let deadline = chrono::Utc::now().naive_utc()
            + chrono::Duration::seconds(
                i64::try_from(self.settings.payment_window_secs).unwrap_or(1800),
            );
        diesel::insert_into(orders::table)
            .values((
                orders::member_id.eq(req.member_id),
                orders::status.eq(OrderStatus::PendingPayment.as_str()),
                orders::subtotal_fen.eq(quote.subtotal_fen),
                orders::discount_fen.eq(quote.discount_fen()),
                orders::shipping_fen.eq(quote.shipping_fen),
                orders::total_fen.eq(quote.total_fen),
                orders::ship_recipient.eq(&recipient),
                orders::ship_phone_enc.eq(""),
                orders::ship_province.eq(&province),
                orders::ship_city.eq(&city),
                orders::ship_district.eq(&district),
                orders::ship_detail.eq(&detail),
                orders::ship_postal_code.eq(&postal_code),
                orders::note.eq(req.note.as_deref().map(str::trim).filter(|n| !n.is_empty())),
                orders::payment_deadline.eq(deadline),
            ))
            .execute(conn)
            .await?;
        let order_id: u64 = diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
        >("LAST_INSERT_ID()"))
        .get_result(conn)
        .await?;
        let order_no = format!("R{}{:08}", chrono::Utc::now().format("%Y%m%d"), order_id);
        diesel::update(orders::table.find(order_id))
            .set((
                orders::order_no.eq(&order_no),
                orders::ship_phone_enc.eq(self.cipher.encrypt(&phone, &order_phone_aad(order_id))),
            ))
            .execute(conn)
            .await?;
        let line_rows: Vec<_> = lines
            .iter()
            .map(|(sku, q)| {
                let r = by_id[sku];
                (
                    order_lines::order_id.eq(order_id),
                    order_lines::sku_id.eq(*sku),
                    order_lines::product_id.eq(r.1),
                    order_lines::sku_code.eq(r.2.clone()),
                    order_lines::product_name_zh.eq(r.10.clone()),
                    order_lines::product_name_en.eq(r.11.clone()),
                    order_lines::color.eq(r.3.clone()),
                    order_lines::size.eq(r.4.clone()),
                    order_lines::material.eq(r.5.clone()),
                    order_lines::unit_price_fen.eq(unit_price(sku)),
                    order_lines::quantity.eq(*q),
                    order_lines::line_total_fen.eq(unit_price(sku) * i64::from(*q)),
                )
            })
            .collect();
        diesel::insert_into(order_lines::table)
            .values(&line_rows)
            .execute(conn)
            .await?;
        let ledger: Vec<_> = lines
            .iter()
            .map(|(sku, q)| {
                (
                    inventory_ledger::sku_id.eq(*sku),
                    inventory_ledger::delta.eq(-*q),
                    inventory_ledger::reason.eq("reserve"),
                    inventory_ledger::order_id.eq(Some(order_id)),
                )
            })
            .collect();
        diesel::insert_into(inventory_ledger::table)
            .values(&ledger)
            .execute(conn)
            .await?;
        let (actor_kind, actor_id) = Actor::Member(req.member_id).parts();
        diesel::insert_into(order_events::table)
            .values((
                order_events::order_id.eq(order_id),
                order_events::to_status.eq(OrderStatus::PendingPayment.as_str()),
                order_events::actor_kind.eq(actor_kind),
                order_events::actor_id.eq(actor_id),
            ))
            .execute(conn)
            .await?;
        diesel::insert_into(order_pricing::table)
            .values((
                order_pricing::order_id.eq(order_id),
                order_pricing::tier_rank.eq(priced.tier_rank),
                order_pricing::tier_discount_fen.eq(quote.tier_discount_fen),
                order_pricing::coupon_id.eq(priced.coupon_id),
                order_pricing::coupon_discount_fen.eq(quote.coupon_discount_fen),
                order_pricing::points_used.eq(quote.points_used),
                order_pricing::points_discount_fen.eq(quote.points_discount_fen),
            ))
            .execute(conn)
            .await?;
        // the coupon and points the price was made with (both rows are locked already)
        if let Some(coupon_id) = priced.coupon_id
            && !crate::membership::coupons::reserve(conn, coupon_id, order_id).await?
        {
            return Err(TxError::Refused(CheckoutError::Coupon(CouponError::Used)));
        }
        self.membership
            .spend_for_order(conn, req.member_id, order_id, &order_no, quote.points_used)
            .await?
            .map_err(|e| TxError::Refused(CheckoutError::Points(e)))?;
        diesel::update(idempotency_keys::table.find((req.member_id, &req.idempotency_key)))
            .set(idempotency_keys::order_id.eq(order_id))
            .execute(conn)
            .await?;
        if !req.cart_line_ids.is_empty() {
            let mut wanted = req.cart_line_ids.clone();
            wanted.sort_unstable();
            wanted.dedup();
            let removed = diesel::delete(
                cart_lines::table
                    .filter(cart_lines::member_id.eq(req.member_id))
                    .filter(cart_lines::id.eq_any(&wanted)),
            )
            .execute(conn)
            .await?;
            if removed != wanted.len() {
                return Err(TxError::Refused(CheckoutError::CartLineNotFound {
                    line_id: wanted[0],
                }));
            }
        }
        // 7. reserve stock, ascending SKU id (BTreeMap order) = one lock order for everyone.
        //    Last on purpose: a SKU row stays locked from here to COMMIT, so everything else
        //    is written first and a hot SKU is held for as short a time as possible.
        for (&sku, &quantity) in &lines {
            let reserved = diesel::update(
                skus::table
                    .filter(skus::id.eq(sku))
                    .filter(skus::stock.ge(quantity))
                    .filter(skus::status.eq(SKU_ACTIVE)),
            )
            .set(skus::stock.eq(skus::stock - quantity))
            .execute(conn)
            .await?;
            if reserved == 0 {
                return Err(TxError::Refused(CheckoutError::OutOfStock { sku_id: sku }));
            }
        }
        // after the reservations, so a SKU's events follow the order of its row lock: one
        // statement (the products are known), to keep a hot SKU's lock short
        let mut events = vec![(
            "order.placed".to_owned(),
            "order".to_owned(),
            order_id,
            serde_json::json!({
                "order_id": order_id, "order_no": order_no, "member_id": req.member_id,
                "total_fen": quote.total_fen, "discount_fen": quote.discount_fen(),
                "points_used": quote.points_used, "coupon_id": priced.coupon_id,
                "status": OrderStatus::PendingPayment.as_str(),
                "lines": lines.iter().map(|(sku, q)| serde_json::json!({ "sku_id": sku, "quantity": q })).collect::<Vec<_>>(),
            }),
        )];
        for (sku, q) in &lines {
            events.push((
                "inventory.stock_changed".to_owned(),
                "sku".to_owned(),
                *sku,
                serde_json::json!({ "sku_id": sku, "product_id": by_id[sku].1, "delta": -*q,
                                    "reason": "reserve", "order_id": order_id }),
            ));
        }
        crate::events::record_many(conn, &events).await?;

        Ok(orders::table
            .find(order_id)
            .select(OrderRow::as_select())
            .first(conn)
            .await?)
    }

    pub(crate) async fn product_ids_of(
        &self,
        conn: &mut AsyncMysqlConnection,
        order_id: u64,
    ) -> QueryResult<Vec<u64>> {
        order_lines::table
            .filter(order_lines::order_id.eq(order_id))
            .select(order_lines::product_id)
            .distinct()
            .load(conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hashes() {
        assert!(valid_key("order-2026-11-24-abc"));
        assert!(!valid_key("short"));
        assert!(!valid_key("has space in it"));
        let a = CheckoutRequest {
            address_id: 1,
            lines: vec![(3, 1), (1, 2)],
            ..Default::default()
        };
        let same = CheckoutRequest {
            address_id: 1,
            lines: vec![(1, 1), (3, 1), (1, 1)],
            ..Default::default()
        };
        let more = CheckoutRequest {
            address_id: 1,
            lines: vec![(1, 2), (3, 2)],
            ..Default::default()
        };
        let elsewhere = CheckoutRequest {
            address_id: 2,
            lines: vec![(1, 2), (3, 1)],
            ..Default::default()
        };
        assert_eq!(
            request_hash(&a),
            request_hash(&same),
            "order and splitting of lines do not matter"
        );
        assert_ne!(request_hash(&a), request_hash(&more));
        assert_ne!(request_hash(&a), request_hash(&elsewhere));
    }
}
