//! Cart context: the member's server-side cart, priced live from the catalog.

use async_graphql::{Context, ID, Object, SimpleObject};
use domain::cart::{CartLine, Carts};

use crate::auth::{MemberGuard, member_id};
use crate::catalog::SkuNode;
use crate::error::internal;
use crate::id;
use crate::loaders::{CartByMember, Loaders, MemberById, ProductById, SkuById};
use crate::money::Money;
use crate::payload::{UserError, user_errors};

/// A member's cart.
pub struct CartNode {
    /// Whose.
    pub member_id: u64,
    /// The plain quote, computed once however many total fields are selected.
    preview: tokio::sync::OnceCell<crate::membership::CheckoutQuote>,
}

impl CartNode {
    /// The cart of `member_id`.
    pub fn new(member_id: u64) -> Self {
        Self {
            member_id,
            preview: tokio::sync::OnceCell::new(),
        }
    }
}

/// A line of the cart.
pub struct CartLineNode {
    line: CartLine,
    sku: Option<domain::catalog::Sku>,
    on_sale: bool,
}

impl CartLineNode {
    fn can_buy(&self) -> bool {
        self.on_sale
            && self.sku.as_ref().is_some_and(|s| {
                s.status == domain::catalog::SKU_ACTIVE && s.stock >= self.line.quantity
            })
    }

    fn price_fen(&self) -> i64 {
        self.sku.as_ref().map_or(0, |s| s.price_fen)
    }
}

async fn lines(ctx: &Context<'_>, member: u64) -> async_graphql::Result<Vec<CartLineNode>> {
    let loaders = ctx.data_unchecked::<Loaders>();
    let lines = loaders
        .order
        .load_one(CartByMember(member))
        .await?
        .map(|l| l.as_ref().clone())
        .unwrap_or_default();
    let skus = loaders
        .catalog
        .load_many(lines.iter().map(|l| SkuById(l.sku_id)))
        .await?;
    let products = loaders
        .catalog
        .load_many(skus.values().map(|s| ProductById(s.product_id)))
        .await?;
    // the cart owner's tier decides what they may buy (staff look at a member's cart too)
    let rank = loaders
        .identity
        .load_one(MemberById(member))
        .await?
        .map_or(0, |m| m.tier_rank);
    Ok(lines
        .into_iter()
        .map(|line| {
            let sku = skus.get(&SkuById(line.sku_id)).cloned();
            let on_sale = sku
                .as_ref()
                .and_then(|s| products.get(&ProductById(s.product_id)))
                .is_some_and(|p| p.is_published() && !p.locked_for(Some(rank)));
            CartLineNode { line, sku, on_sale }
        })
        .collect())
}

/// The member's cart: lines priced at today's prices. Lines that cannot be bought now stay in
/// the cart, flagged `available: false`, and are left out of the totals.
#[Object(name = "Cart")]
impl CartNode {
    /// Lines, oldest first.
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CartLineNode>> {
        lines(ctx, self.member_id).await
    }
    /// Sum of the available lines (at the member's prices).
    async fn subtotal(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(self.preview(ctx).await?.subtotal)
    }
    /// The tier discount checkout would apply to the available lines (coupons and points
    /// come on top: see `quote`).
    async fn discount(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(self.preview(ctx).await?.discount)
    }
    /// Shipping for the available lines.
    async fn shipping(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(self.preview(ctx).await?.shipping)
    }
    /// subtotal − discount + shipping.
    async fn total(&self, ctx: &Context<'_>) -> async_graphql::Result<Money> {
        Ok(self.preview(ctx).await?.total)
    }
    /// What checking out the available lines would cost with a coupon and points: the same
    /// computation `placeOrder` makes.
    async fn quote(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Code of one of the member's coupons.")] coupon_code: Option<String>,
        #[graphql(desc = "Points to pay with; 0 when omitted.")] points_to_use: Option<i64>,
    ) -> async_graphql::Result<crate::membership::QuotePayload> {
        let available = self.available(ctx).await?;
        crate::membership::quote(
            ctx,
            self.member_id,
            &available,
            coupon_code.as_deref(),
            points_to_use.unwrap_or(0),
        )
        .await
    }
}

impl CartNode {
    async fn available(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<(u64, i32)>> {
        Ok(lines(ctx, self.member_id)
            .await?
            .iter()
            .filter(|l| l.can_buy())
            .map(|l| (l.line.sku_id, l.line.quantity))
            .collect())
    }

    /// The plain quote (no coupon, no points) behind subtotal, discount, shipping and total.
    async fn preview(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<crate::membership::CheckoutQuote> {
        self.preview
            .get_or_try_init(|| async {
                let available = self.available(ctx).await?;
                let payload =
                    crate::membership::quote(ctx, self.member_id, &available, None, 0).await?;
                payload
                    .quote
                    .ok_or_else(|| crate::error::broken("a plain cart quote was refused"))
            })
            .await
            .cloned()
    }
}

/// A line of the cart.
#[Object(name = "CartLine")]
impl CartLineNode {
    /// Opaque id (for `updateCartLine`, `removeCartLine` and `placeOrder(cartLineIds)`).
    async fn id(&self) -> ID {
        id::encode("CartLine", self.line.id)
    }
    /// The SKU; null if it no longer exists.
    async fn sku(&self) -> Option<SkuNode> {
        self.sku.clone().map(SkuNode)
    }
    /// Units wanted.
    async fn quantity(&self) -> i32 {
        self.line.quantity
    }
    /// Today's price of one unit.
    async fn unit_price(&self) -> Money {
        Money::cny(self.price_fen())
    }
    /// Whether this line can be ordered now (on sale and enough stock).
    async fn available(&self) -> bool {
        self.can_buy()
    }
}

/// Result of a cart change.
#[derive(SimpleObject)]
pub struct CartPayload {
    /// The cart after the change (also when `errors` is not empty).
    pub cart: CartNode,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

fn carts<'a>(ctx: &Context<'a>) -> &'a Carts {
    ctx.data_unchecked::<Carts>()
}

fn payload(member: u64, result: Result<(), Vec<domain::validation::UserError>>) -> CartPayload {
    CartPayload {
        cart: CartNode::new(member),
        errors: result.err().map(user_errors).unwrap_or_default(),
    }
}

/// Cart changes.
#[derive(Default)]
pub struct CartMutation;

/// Cart changes.
#[Object]
impl CartMutation {
    /// Adds units of a SKU (to its existing line, if any). 1–99 units a line, 50 lines a cart,
    /// and the SKU's purchase limit.
    #[graphql(guard = "MemberGuard")]
    async fn add_cart_line(
        &self,
        ctx: &Context<'_>,
        sku_id: ID,
        quantity: i32,
    ) -> async_graphql::Result<CartPayload> {
        let member = member_id(ctx)?;
        let sku = id::decode("Sku", "skuId", &sku_id)?;
        Ok(payload(
            member,
            carts(ctx)
                .add(member, sku, quantity)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }

    /// Sets the units of a cart line (1–99).
    #[graphql(guard = "MemberGuard")]
    async fn update_cart_line(
        &self,
        ctx: &Context<'_>,
        line_id: ID,
        quantity: i32,
    ) -> async_graphql::Result<CartPayload> {
        let member = member_id(ctx)?;
        let line = id::decode("CartLine", "lineId", &line_id)?;
        Ok(payload(
            member,
            carts(ctx)
                .update(member, line, quantity)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }

    /// Removes a cart line.
    #[graphql(guard = "MemberGuard")]
    async fn remove_cart_line(
        &self,
        ctx: &Context<'_>,
        line_id: ID,
    ) -> async_graphql::Result<CartPayload> {
        let member = member_id(ctx)?;
        let line = id::decode("CartLine", "lineId", &line_id)?;
        Ok(payload(
            member,
            carts(ctx)
                .remove(member, line)
                .await
                .map_err(|e| internal(&e))?,
        ))
    }
}
