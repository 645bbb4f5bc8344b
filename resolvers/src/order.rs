//! Order context: checkout, the order lifecycle, and order reads for members and staff.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use domain::identity::{Principal, Role};
use domain::order::checkout::{CheckoutError, CheckoutRequest};
use domain::order::lifecycle::TransitionError;
use domain::order::query::OrderFilter;
use domain::order::{
    Actor, OrderEventRow, OrderLineRow, OrderRow, OrderStatus as DomainStatus, Orders,
};

use crate::ErrorCode;
use crate::auth::{MemberGuard, StaffGuard, Viewer, member_id, staff, viewer};
use crate::catalog::SkuNode;
use crate::error::internal;
use crate::id;
use crate::loaders::{
    CouponById, Loaders, OrderById, OrderEventsByOrder, OrderLinesByOrder, PricingByOrder, SkuById,
};
use crate::money::Money;
use crate::pagination::{decode_cursor, encode_cursor, page_size};
use crate::payload::{UserError, UserErrorCode};

fn orders<'a>(ctx: &Context<'a>) -> &'a Orders {
    ctx.data_unchecked::<Orders>()
}

/// Where an order is in its life.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Placed, stock reserved, waiting for payment until `paymentDeadline`.
    PendingPayment,
    /// Paid; waiting to be shipped.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer.
    Delivered,
    /// Closed.
    Completed,
    /// Cancelled before payment; the stock went back.
    Cancelled,
    /// A refund is in progress.
    Refunding,
    /// Refunded in full.
    Refunded,
}

impl From<DomainStatus> for OrderStatus {
    fn from(s: DomainStatus) -> Self {
        match s {
            DomainStatus::PendingPayment => OrderStatus::PendingPayment,
            DomainStatus::Paid => OrderStatus::Paid,
            DomainStatus::Shipped => OrderStatus::Shipped,
            DomainStatus::Delivered => OrderStatus::Delivered,
            DomainStatus::Completed => OrderStatus::Completed,
            DomainStatus::Cancelled => OrderStatus::Cancelled,
            DomainStatus::Refunding => OrderStatus::Refunding,
            DomainStatus::Refunded => OrderStatus::Refunded,
        }
    }
}

impl OrderStatus {
    pub(crate) fn domain(self) -> DomainStatus {
        DomainStatus::ALL
            .into_iter()
            .find(|d| OrderStatus::from(*d) == self)
            .unwrap_or(DomainStatus::PendingPayment)
    }
}

/// Who caused an entry of the order timeline.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderActor {
    /// The customer.
    Member,
    /// A staff member.
    Staff,
    /// The service (payment deadline, payment notification, automatic completion).
    System,
}

/// An order.
pub struct OrderNode(pub OrderRow);

/// A delivery address as snapshotted on an order.
#[derive(SimpleObject)]
pub struct ShippingAddress {
    /// Who receives the parcel.
    pub recipient: String,
    /// Recipient's phone, masked (`138****5678`).
    pub phone_masked: String,
    /// Province.
    pub province: String,
    /// City.
    pub city: String,
    /// District.
    pub district: String,
    /// Street, building, room.
    pub detail: String,
    /// Postal code; null when not given.
    pub postal_code: Option<String>,
}

fn utc(t: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    t.and_utc()
}

impl OrderNode {
    async fn pricing(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<domain::membership::OrderPricing> {
        Ok(ctx
            .data_unchecked::<Loaders>()
            .membership
            .load_one(PricingByOrder(self.0.id))
            .await?
            .unwrap_or(domain::membership::OrderPricing {
                order_id: self.0.id,
                ..Default::default()
            }))
    }
}

/// An order by id, without access checks (for fields reachable only by its owner or staff).
pub(crate) async fn order_by_id(
    ctx: &Context<'_>,
    id: u64,
) -> async_graphql::Result<Option<OrderNode>> {
    Ok(ctx
        .data_unchecked::<Loaders>()
        .order
        .load_one(OrderById(id))
        .await?
        .map(OrderNode))
}

/// An order: what was bought at which price, where it goes, and its timeline.
#[Object(name = "Order")]
impl OrderNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Order", self.0.id)
    }
    /// Human-readable order number, e.g. `R2026112400000042`.
    async fn order_no(&self) -> &str {
        self.0.order_no.as_deref().unwrap_or_default()
    }
    /// Current status.
    async fn status(&self) -> OrderStatus {
        self.0.status().into()
    }
    /// What was bought, with the prices and names of the moment of purchase.
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderLineNode>> {
        let lines = ctx
            .data_unchecked::<Loaders>()
            .order
            .load_one(OrderLinesByOrder(self.0.id))
            .await?;
        Ok(lines
            .map(|l| l.iter().cloned().map(OrderLineNode).collect())
            .unwrap_or_default())
    }
    /// Every status change, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderEventNode>> {
        let events = ctx
            .data_unchecked::<Loaders>()
            .order
            .load_one(OrderEventsByOrder(self.0.id))
            .await?;
        Ok(events
            .map(|e| e.iter().cloned().map(OrderEventNode).collect())
            .unwrap_or_default())
    }
    /// The WeChat Pay payment, once one was started.
    async fn payment(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::payment::PaymentNode>> {
        crate::payment::payment_of(ctx, self.0.id).await
    }
    /// Refunds, oldest first.
    async fn refunds(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<crate::payment::RefundNode>> {
        crate::payment::refunds_of(ctx, self.0.id).await
    }
    /// Sum of the lines.
    async fn subtotal(&self) -> Money {
        Money::cny(self.0.subtotal_fen)
    }
    /// Discounts applied (member tier, coupon, points).
    async fn discount(&self) -> Money {
        Money::cny(self.0.discount_fen)
    }
    /// The member tier's part of the discount.
    async fn tier_discount(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(Money::cny(self.pricing(ctx).await?.tier_discount_fen))
    }
    /// The coupon's part of the discount.
    async fn coupon_discount(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(Money::cny(self.pricing(ctx).await?.coupon_discount_fen))
    }
    /// The points' part of the discount.
    async fn points_discount(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(Money::cny(self.pricing(ctx).await?.points_discount_fen))
    }
    /// Points the order used (given back if it is cancelled or refunded).
    async fn points_used(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(self.pricing(ctx).await?.points_used)
    }
    /// The coupon applied; null when none.
    async fn coupon(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::membership::CouponNode>> {
        let Some(id) = self.pricing(ctx).await?.coupon_id else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .membership
            .load_one(CouponById(id))
            .await?
            .map(crate::membership::CouponNode))
    }
    /// Shipping charged.
    async fn shipping(&self) -> Money {
        Money::cny(self.0.shipping_fen)
    }
    /// What the customer pays: subtotal − discount + shipping.
    async fn total(&self) -> Money {
        Money::cny(self.0.total_fen)
    }
    /// Refunded so far.
    async fn refunded(&self) -> Money {
        Money::cny(self.0.refunded_fen)
    }
    /// Delivery address as it was at checkout.
    async fn shipping_address(&self, ctx: &Context<'_>) -> ShippingAddress {
        ShippingAddress {
            recipient: self.0.ship_recipient.clone(),
            phone_masked: orders(ctx).ship_phone_masked(&self.0),
            province: self.0.ship_province.clone(),
            city: self.0.ship_city.clone(),
            district: self.0.ship_district.clone(),
            detail: self.0.ship_detail.clone(),
            postal_code: self.0.ship_postal_code.clone(),
        }
    }
    /// The customer's note; null when none.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// Carrier, once shipped.
    async fn carrier(&self) -> Option<&str> {
        self.0.carrier.as_deref()
    }
    /// Tracking number, once shipped.
    async fn tracking_no(&self) -> Option<&str> {
        self.0.tracking_no.as_deref()
    }
    /// Unpaid orders are cancelled automatically after this moment.
    async fn payment_deadline(&self) -> chrono::DateTime<chrono::Utc> {
        utc(self.0.payment_deadline)
    }
    /// When the order was placed.
    async fn placed_at(&self) -> chrono::DateTime<chrono::Utc> {
        utc(self.0.created_at)
    }
    /// When payment was confirmed; null before.
    async fn paid_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.paid_at.map(utc)
    }
    /// When it was shipped; null before.
    async fn shipped_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.shipped_at.map(utc)
    }
    /// When receipt was confirmed; null before.
    async fn delivered_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.delivered_at.map(utc)
    }
    /// When it was cancelled; null unless cancelled.
    async fn cancelled_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.cancelled_at.map(utc)
    }
}

/// A line of an order.
pub struct OrderLineNode(pub OrderLineRow);

/// A line of an order, snapshotted at checkout.
#[Object(name = "OrderLine")]
impl OrderLineNode {
    /// The SKU as it is now; null if it no longer exists.
    async fn sku(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SkuNode>> {
        Ok(ctx
            .data_unchecked::<Loaders>()
            .catalog
            .load_one(SkuById(self.0.sku_id))
            .await?
            .map(SkuNode))
    }
    /// Article code at purchase.
    async fn sku_code(&self) -> &str {
        &self.0.sku_code
    }
    /// Product name (Chinese) at purchase.
    async fn product_name(&self) -> &str {
        &self.0.product_name_zh
    }
    /// Product name (English) at purchase.
    async fn product_name_en(&self) -> &str {
        &self.0.product_name_en
    }
    /// Colour at purchase; null when none.
    async fn color(&self) -> Option<&str> {
        self.0.color.as_deref()
    }
    /// Size at purchase; null when none.
    async fn size(&self) -> Option<&str> {
        self.0.size.as_deref()
    }
    /// Material at purchase; null when none.
    async fn material(&self) -> Option<&str> {
        self.0.material.as_deref()
    }
    /// Price of one unit at purchase.
    async fn unit_price(&self) -> Money {
        Money::cny(self.0.unit_price_fen)
    }
    /// Units bought.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// unitPrice × quantity.
    async fn line_total(&self) -> Money {
        Money::cny(self.0.line_total_fen)
    }
}

/// An entry of an order's timeline.
pub struct OrderEventNode(pub OrderEventRow);

/// An entry of an order's timeline.
#[Object(name = "OrderEvent")]
impl OrderEventNode {
    /// Status before; null for the first entry (the order being placed).
    async fn from_status(&self) -> Option<OrderStatus> {
        self.0
            .from_status
            .as_deref()
            .and_then(DomainStatus::parse)
            .map(Into::into)
    }
    /// Status after.
    async fn to_status(&self) -> OrderStatus {
        DomainStatus::parse(&self.0.to_status)
            .unwrap_or(DomainStatus::PendingPayment)
            .into()
    }
    /// Who caused it.
    async fn actor(&self) -> OrderActor {
        match self.0.actor_kind.as_str() {
            "member" => OrderActor::Member,
            "staff" => OrderActor::Staff,
            _ => OrderActor::System,
        }
    }
    /// Why, when recorded (e.g. `payment deadline passed`).
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When.
    async fn at(&self) -> chrono::DateTime<chrono::Utc> {
        utc(self.0.created_at)
    }
}

crate::connection!(OrderConnection, OrderEdge, OrderNode, "orders");

/// One line of a new order.
#[derive(InputObject, Debug)]
pub struct OrderLineInput {
    /// The SKU.
    pub sku_id: ID,
    /// Units, 1–99.
    pub quantity: i32,
}

/// A checkout.
#[derive(InputObject, Debug)]
pub struct PlaceOrderInput {
    /// Chosen by the client (8–64 of `[A-Za-z0-9_-]`, e.g. a UUID) and sent again unchanged on
    /// every retry of this checkout: a retry returns the order the first attempt created.
    pub idempotency_key: String,
    /// The lines to buy; give these or `cartLineIds`.
    pub lines: Option<Vec<OrderLineInput>>,
    /// Cart lines to buy (removed from the cart once ordered); give these or `lines`.
    pub cart_line_ids: Option<Vec<ID>>,
    /// Delivery address from the member's address book.
    pub address_id: ID,
    /// Code of one of the member's coupons (`me.coupons`); one coupon per order.
    pub coupon_code: Option<String>,
    /// Points to pay with (100 points = ¥1 by default, at most half of the amount after the
    /// tier discount and coupon; only the points the discount needs are taken). 0 when omitted.
    pub points_to_use: Option<i64>,
    /// Note for the boutique (at most 200 characters).
    pub note: Option<String>,
}

/// Result of `placeOrder`.
#[derive(SimpleObject)]
pub struct PlaceOrderPayload {
    /// The order; null when `errors` is not empty.
    pub order: Option<OrderNode>,
    /// True when this repeats the answer to an earlier request with the same idempotency key.
    pub replayed: bool,
    /// Why the order was not placed; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of an order change.
#[derive(SimpleObject)]
pub struct OrderPayload {
    /// The order after the change; null when `errors` is not empty.
    pub order: Option<OrderNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

/// Which orders staff see.
#[derive(InputObject, Debug, Default)]
pub struct OrderFilterInput {
    /// Only these statuses.
    pub status: Option<Vec<OrderStatus>>,
    /// Only this member's.
    pub member_id: Option<ID>,
    /// Placed at or after.
    pub created_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Placed before.
    pub created_to: Option<chrono::DateTime<chrono::Utc>>,
    /// Exactly this order number.
    pub order_no: Option<String>,
}

fn checkout_error(e: CheckoutError) -> UserError {
    let sku = |code, id: u64, message: &str| {
        let mut err = UserError::new(code, Some("input.lines"), message);
        err.sku_id = Some(id::encode("Sku", id));
        err
    };
    match e {
        CheckoutError::EmptyOrder => UserError::new(
            UserErrorCode::EmptyOrder,
            Some("input.lines"),
            "the order has no lines",
        ),
        CheckoutError::InvalidQuantity { sku_id: Some(id) } => sku(
            UserErrorCode::InvalidInput,
            id,
            "quantity must be between 1 and 99 per SKU",
        ),
        CheckoutError::InvalidQuantity { sku_id: None } => UserError::new(
            UserErrorCode::InvalidInput,
            Some("input.lines"),
            "at most 50 lines",
        ),
        CheckoutError::InvalidIdempotencyKey => UserError::new(
            UserErrorCode::InvalidInput,
            Some("input.idempotencyKey"),
            "8–64 characters of A–Z, a–z, 0–9, _ and -",
        ),
        CheckoutError::IdempotencyKeyReused => UserError::new(
            UserErrorCode::IdempotencyKeyReused,
            Some("input.idempotencyKey"),
            "this key was already used for a different order; use a new key for a new checkout",
        ),
        CheckoutError::AddressNotFound => UserError::new(
            UserErrorCode::AddressNotFound,
            Some("input.addressId"),
            "no such address",
        ),
        CheckoutError::CartLineNotFound { .. } => UserError::new(
            UserErrorCode::NotFound,
            Some("input.cartLineIds"),
            "a cart line is no longer in the cart",
        ),
        CheckoutError::SkuUnavailable { sku_id } => sku(
            UserErrorCode::SkuUnavailable,
            sku_id,
            "this item is not on sale",
        ),
        CheckoutError::OutOfStock { sku_id } => sku(
            UserErrorCode::OutOfStock,
            sku_id,
            "not enough stock for this item",
        ),
        CheckoutError::PurchaseLimitExceeded { sku_id, limit } => sku(
            UserErrorCode::PurchaseLimitExceeded,
            sku_id,
            &format!("at most {limit} per customer"),
        ),
        CheckoutError::TierRequired { sku_id, rank } => crate::membership::refusal_error(
            domain::membership::quote::PriceRefusal::TierRequired { sku_id, rank },
        ),
        CheckoutError::Coupon(e) => crate::membership::coupon_error(e, "input.couponCode"),
        CheckoutError::Points(e) => crate::membership::points_error(e, "input.pointsToUse"),
        CheckoutError::ZeroTotal => UserError::new(
            UserErrorCode::InvalidInput,
            Some("input.lines"),
            "an order must cost at least ¥0.01",
        ),
        CheckoutError::NoteTooLong => UserError::new(
            UserErrorCode::InvalidInput,
            Some("input.note"),
            "at most 200 characters",
        ),
    }
}

fn transition_payload(result: Result<OrderRow, TransitionError>) -> OrderPayload {
    match result {
        Ok(order) => OrderPayload {
            order: Some(OrderNode(order)),
            errors: Vec::new(),
        },
        Err(e) => {
            let error = match e {
                TransitionError::NotFound => {
                    UserError::new(UserErrorCode::NotFound, Some("orderId"), "no such order")
                }
                TransitionError::Invalid { from, action } => UserError::new(
                    UserErrorCode::InvalidOrderTransition,
                    None,
                    format!("cannot {action:?} an order that is {from}").to_lowercase(),
                ),
                TransitionError::InvalidInput { field, message } => {
                    UserError::new(UserErrorCode::InvalidInput, Some(field), message)
                }
            };
            OrderPayload {
                order: None,
                errors: vec![error],
            }
        }
    }
}

/// Lists orders as a connection; shared by `Member.orders` and staff `orders`.
pub(crate) async fn order_connection(
    ctx: &Context<'_>,
    filter: OrderFilter,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<OrderConnection> {
    let limit = page_size(first)?;
    let after_id = after.as_deref().map(decode_cursor::<u64>).transpose()?;
    let with_total = ctx.look_ahead().field("totalCount").exists();
    let (mut rows, total) = orders(ctx)
        .list(&filter, after_id, limit + 1, with_total)
        .await
        .map_err(|e| internal(&e))?;
    let has_next = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let items = rows
        .into_iter()
        .map(|o| (encode_cursor(&o.id), OrderNode(o)))
        .collect();
    Ok(OrderConnection::new(
        items,
        after_id.is_some(),
        has_next,
        total,
    ))
}

/// Order reads.
#[derive(Default)]
pub struct OrderQuery;

/// Order reads.
#[Object]
impl OrderQuery {
    /// An order by id: the owner's own, or any for staff. Null when there is none (or it is
    /// another member's).
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<OrderNode>> {
        let order_id = id::decode("Order", "id", &id)?;
        let Viewer::Authenticated(subject) = viewer(ctx) else {
            return Err(ErrorCode::Unauthenticated.error("sign in to see orders"));
        };
        let order = ctx
            .data_unchecked::<Loaders>()
            .order
            .load_one(OrderById(order_id))
            .await?;
        Ok(order
            .filter(|o| match subject.principal {
                Principal::Member { id } => o.member_id == id,
                Principal::Staff { .. } => true,
            })
            .map(OrderNode))
    }

    /// All orders, newest first (staff).
    #[graphql(guard = "StaffGuard::ANY")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
        #[graphql(desc = "Which orders; all when omitted.")] filter: Option<OrderFilterInput>,
    ) -> async_graphql::Result<OrderConnection> {
        let f = filter.unwrap_or_default();
        let filter = OrderFilter {
            member_id: f
                .member_id
                .as_ref()
                .map(|m| id::decode("Member", "filter.memberId", m))
                .transpose()?,
            statuses: f
                .status
                .unwrap_or_default()
                .into_iter()
                .map(OrderStatus::domain)
                .collect(),
            created_from: f.created_from.map(|t| t.naive_utc()),
            created_to: f.created_to.map(|t| t.naive_utc()),
            order_no: f.order_no,
        };
        order_connection(ctx, filter, first, after).await
    }
}

/// Order changes.
#[derive(Default)]
pub struct OrderMutation;

/// Order changes.
#[Object]
impl OrderMutation {
    /// Places an order: reserves stock for every line atomically, snapshots prices and the
    /// address, and starts the payment window. Business failures come back in `errors`.
    #[graphql(guard = "MemberGuard")]
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<PlaceOrderPayload> {
        let member = member_id(ctx)?;
        let mut lines = Vec::new();
        for (i, line) in input.lines.unwrap_or_default().iter().enumerate() {
            lines.push((
                id::decode("Sku", &format!("input.lines[{i}].skuId"), &line.sku_id)?,
                line.quantity,
            ));
        }
        let cart_line_ids = input
            .cart_line_ids
            .unwrap_or_default()
            .iter()
            .map(|l| id::decode("CartLine", "input.cartLineIds", l))
            .collect::<async_graphql::Result<Vec<_>>>()?;
        let request = CheckoutRequest {
            member_id: member,
            idempotency_key: input.idempotency_key,
            lines,
            cart_line_ids,
            address_id: id::decode("Address", "input.addressId", &input.address_id)?,
            coupon_code: input.coupon_code,
            points: input.points_to_use.unwrap_or(0),
            note: input.note,
        };
        let placed = orders(ctx)
            .place_order(&request)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match placed {
            Ok(p) => PlaceOrderPayload {
                order: Some(OrderNode(p.order)),
                replayed: p.replayed,
                errors: Vec::new(),
            },
            Err(e) => PlaceOrderPayload {
                order: None,
                replayed: false,
                errors: vec![checkout_error(e)],
            },
        })
    }

    /// Cancels an unpaid order: the owner's own, or any order for operations. Reserved stock
    /// goes back.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<OrderPayload> {
        let id = id::decode("Order", "orderId", &order_id)?;
        let actor = match viewer(ctx) {
            Viewer::Anonymous => {
                return Err(ErrorCode::Unauthenticated.error("sign in to cancel orders"));
            }
            Viewer::Authenticated(s) => match s.principal {
                Principal::Member { id } => Actor::Member(id),
                Principal::Staff {
                    id,
                    role: Role::Ops | Role::Admin,
                } => Actor::Staff(id),
                Principal::Staff { .. } => {
                    return Err(ErrorCode::Forbidden.error("your role may not cancel orders"));
                }
            },
        };
        Ok(transition_payload(
            orders(ctx)
                .cancel(id, actor)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }

    /// The owner confirms they received a shipped order.
    #[graphql(guard = "MemberGuard")]
    async fn confirm_receipt(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<OrderPayload> {
        let member = member_id(ctx)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        Ok(transition_payload(
            orders(ctx)
                .confirm_receipt(id, member)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }

    /// Operations ship a paid order.
    #[graphql(guard = "StaffGuard::OPS")]
    async fn ship_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        carrier: String,
        tracking_no: String,
    ) -> async_graphql::Result<OrderPayload> {
        let (staff_id, _) = staff(ctx, StaffGuard::OPS.0)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        Ok(transition_payload(
            orders(ctx)
                .ship(id, staff_id, &carrier, &tracking_no)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }
}
