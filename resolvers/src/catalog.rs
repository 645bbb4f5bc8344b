//! Catalog context: the public product and category read path.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use domain::catalog::{
    Catalog, CategoryTree, Product, ProductFilter, ProductKey, ProductSort, Sku,
};

use crate::error::{bad_input, internal};
use crate::id;
use crate::loaders::{
    CategoriesByProduct, ImagesByProduct, Loaders, ProductById, SkusByProduct, TagsByProduct,
    WholeCategoryTree,
};
use crate::money::Money;
use crate::pagination::{decode_cursor, encode_cursor, page_size};

/// A SKU with this many units or fewer is shown as `LOW_STOCK`.
pub const LOW_STOCK_THRESHOLD: i32 = 3;
/// Longest accepted search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 64;
/// Most tags accepted in one filter.
pub const MAX_FILTER_TAGS: usize = 10;

fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

async fn category_tree(ctx: &Context<'_>) -> async_graphql::Result<Arc<CategoryTree>> {
    loaders(ctx)
        .catalog
        .load_one(WholeCategoryTree)
        .await?
        .ok_or_else(|| crate::ErrorCode::Internal.error("category tree missing"))
}

/// Root fields whose answers depend on nothing but the catalog and [`response_scope`]: a query
/// selecting only these (and `__typename`) may be answered from the response cache. Keep this in
/// step with the resolvers below — a field that reads anything about the caller beyond their
/// tier rank does not belong here.
pub const CACHEABLE_ROOT_FIELDS: &[&str] = &["products", "product", "categories", "category"];

/// Whether an operation with these root fields (fragments expanded) may be answered from the
/// response cache: at least one catalog read and nothing else but `__typename`.
pub fn cacheable_root_fields(fields: &[String]) -> bool {
    fields
        .iter()
        .any(|f| CACHEABLE_ROOT_FIELDS.contains(&f.as_str()))
        && fields
            .iter()
            .all(|f| f == "__typename" || CACHEABLE_ROOT_FIELDS.contains(&f.as_str()))
}

/// What about the caller changes a catalog answer, as a response-cache key part: the tier rank
/// the catalog is seen with (member prices, `locked`, tier-gated products: see
/// [`crate::membership::viewer_rank`]), signed-out callers apart from members. `None` for staff,
/// whose answers are never cached (they see every product and staff-only fields such as
/// `Sku.stock`), and when the member's tier cannot be read.
pub async fn response_scope(
    viewer: &crate::auth::Viewer,
    identity: &domain::identity::Identity,
) -> Option<String> {
    use domain::identity::Principal;
    match viewer {
        crate::auth::Viewer::Anonymous => Some("anonymous".to_owned()),
        crate::auth::Viewer::Authenticated(s) => match s.principal {
            Principal::Staff { .. } => None,
            Principal::Member { id } => {
                let members = identity.members(&[id]).await.ok()?;
                let rank = members.get(&id).map_or(0, |m| m.tier_rank);
                Some(format!("tier:{rank}"))
            }
        },
    }
}

/// Catalog fields of `Query`.
#[derive(Default)]
pub struct CatalogQuery;

/// Orderings of the product list.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[graphql(name = "ProductSort")]
pub enum ProductOrder {
    /// The brand's merchandising order.
    #[default]
    Featured,
    /// Most recently added first.
    Newest,
    /// Lowest starting price first.
    PriceAsc,
    /// Highest starting price first.
    PriceDesc,
}

impl ProductOrder {
    fn domain(self) -> ProductSort {
        match self {
            ProductOrder::Featured => ProductSort::Featured,
            ProductOrder::Newest => ProductSort::Newest,
            ProductOrder::PriceAsc => ProductSort::PriceAsc,
            ProductOrder::PriceDesc => ProductSort::PriceDesc,
        }
    }

    fn tag(self) -> char {
        match self {
            ProductOrder::Featured => 'F',
            ProductOrder::Newest => 'N',
            ProductOrder::PriceAsc => 'A',
            ProductOrder::PriceDesc => 'D',
        }
    }
}

/// Which products to list; every field is optional and they combine with AND.
#[derive(InputObject, Debug, Default)]
pub struct ProductFilterInput {
    /// Only products in this category or any category below it.
    pub category_id: Option<ID>,
    /// Case-insensitive text contained in the Chinese or English name (at most 64 characters).
    pub search: Option<String>,
    /// Only products with a SKU priced at or above this amount, in fen.
    pub min_price: Option<i64>,
    /// Only products with a SKU priced at or below this amount, in fen.
    pub max_price: Option<i64>,
    /// Only products carrying every one of these tags (at most 10).
    pub tags: Option<Vec<String>>,
}

impl ProductFilterInput {
    async fn into_domain(self, ctx: &Context<'_>) -> async_graphql::Result<ProductFilter> {
        let category_ids = match &self.category_id {
            Some(raw) => {
                let id = id::decode("Category", "filter.categoryId", raw)?;
                Some(category_tree(ctx).await?.with_descendants(id))
            }
            None => None,
        };
        if let Some(text) = &self.search
            && text.chars().count() > MAX_SEARCH_CHARS
        {
            return Err(bad_input(
                "filter.search",
                format!("at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        for (name, value) in [
            ("filter.minPrice", self.min_price),
            ("filter.maxPrice", self.max_price),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(bad_input(name, "must not be negative"));
            }
        }
        if let (Some(min), Some(max)) = (self.min_price, self.max_price)
            && min > max
        {
            return Err(bad_input(
                "filter.minPrice",
                "must not exceed filter.maxPrice",
            ));
        }
        let tags = self.tags.unwrap_or_default();
        if tags.len() > MAX_FILTER_TAGS {
            return Err(bad_input(
                "filter.tags",
                format!("at most {MAX_FILTER_TAGS} tags"),
            ));
        }
        Ok(ProductFilter {
            category_ids,
            search: self.search,
            min_price_fen: self.min_price,
            max_price_fen: self.max_price,
            tags,
            viewer_rank: crate::membership::viewer_rank(ctx).await?,
        })
    }
}

crate::connection!(ProductConnection, ProductEdge, ProductNode, "products");

/// Catalog reads.
#[Object]
impl CatalogQuery {
    /// Published products, `first` (0–50, default 20) at a time after the cursor `after`.
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(
            desc = "Continue after this cursor (`pageInfo.endCursor` of the previous page)."
        )]
        after: Option<String>,
        #[graphql(desc = "Which products; all published products when omitted.")] filter: Option<
            ProductFilterInput,
        >,
        #[graphql(desc = "Ordering; `FEATURED` when null or omitted.")] sort: Option<ProductOrder>,
    ) -> async_graphql::Result<ProductConnection> {
        let sort = sort.unwrap_or_default();
        let limit = page_size(first)?;
        let after_key = match &after {
            Some(cursor) => {
                let (tag, value, id): (char, i64, u64) = decode_cursor(cursor)?;
                if tag != sort.tag() {
                    return Err(bad_input(
                        "after",
                        "cursor belongs to a different sort order",
                    ));
                }
                Some(ProductKey { value, id })
            }
            None => None,
        };
        let filter = filter.unwrap_or_default().into_domain(ctx).await?;
        let catalog = ctx.data_unchecked::<Catalog>();
        // the count is a second query: run it only when the client selected the field
        let total = if ctx.look_ahead().field("totalCount").exists() {
            catalog
                .count_products(&filter)
                .await
                .map_err(|e| internal(&e))?
        } else {
            0
        };
        let mut rows = if limit == 0 {
            Vec::new()
        } else {
            catalog
                .list_products(&filter, sort.domain(), after_key, limit + 1)
                .await
                .map_err(|e| internal(&e))?
        };
        let has_next = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let items = rows
            .into_iter()
            .map(|p| {
                let key = sort.domain().key_of(&p);
                (
                    encode_cursor(&(sort.tag(), key.value, key.id)),
                    ProductNode(Arc::new(p)),
                )
            })
            .collect();
        Ok(ProductConnection::new(
            items,
            after.is_some(),
            has_next,
            total,
        ))
    }

    /// A published product by id; null when there is none (or it is not published).
    async fn product(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<ProductNode>> {
        let id = id::decode("Product", "id", &id)?;
        let product = loaders(ctx).catalog.load_one(ProductById(id)).await?;
        visible(ctx, product).await
    }

    /// The top-level categories, in display order; walk `children` for the rest of the tree.
    async fn categories(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CategoryNode>> {
        let tree = category_tree(ctx).await?;
        let roots = tree.children(None).map(|c| c.id).collect::<Vec<_>>();
        Ok(roots
            .into_iter()
            .map(|id| CategoryNode {
                tree: tree.clone(),
                id,
            })
            .collect())
    }

    /// A category by id; null when there is none.
    async fn category(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<CategoryNode>> {
        let id = id::decode("Category", "id", &id)?;
        let tree = category_tree(ctx).await?;
        Ok(tree.get(id).is_some().then_some(CategoryNode { tree, id }))
    }
}

/// A product (SPU): what customers browse. Prices and stock live on its SKUs.
pub struct ProductNode(pub Arc<Product>);

/// The product if the viewer may see it: published, and not hidden from their tier.
async fn visible(
    ctx: &Context<'_>,
    product: Option<Arc<Product>>,
) -> async_graphql::Result<Option<ProductNode>> {
    let Some(product) = product.filter(|p| p.is_published()) else {
        return Ok(None);
    };
    if product.min_tier_rank.is_none() {
        return Ok(Some(ProductNode(product)));
    }
    let rank = crate::membership::viewer_rank(ctx).await?;
    Ok(product.visible_to(rank).then_some(ProductNode(product)))
}

/// Lowest and highest SKU price of a product.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct PriceRange {
    /// Lowest SKU price.
    pub min: Money,
    /// Highest SKU price (equal to `min` when every SKU costs the same).
    pub max: Money,
}

/// A product (SPU): what customers browse. Prices and stock live on its SKUs.
#[Object(name = "Product")]
impl ProductNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Product", self.0.id)
    }

    /// URL-friendly unique name, e.g. `lotus-tote`.
    async fn slug(&self) -> &str {
        &self.0.slug
    }

    /// Name in Chinese.
    async fn name(&self) -> &str {
        &self.0.name_zh
    }

    /// Name in English.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }

    /// Description in Chinese (plain text).
    async fn description(&self) -> &str {
        &self.0.description_zh
    }

    /// Description in English (plain text).
    async fn description_en(&self) -> &str {
        &self.0.description_en
    }

    /// Lowest and highest SKU price.
    async fn price_range(&self) -> PriceRange {
        PriceRange {
            min: Money::cny(self.0.price_min_fen),
            max: Money::cny(self.0.price_max_fen),
        }
    }

    /// The lowest tier that may buy it; null when every customer may.
    async fn required_tier(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::membership::TierNode>> {
        let Some(rank) = self.0.min_tier_rank else {
            return Ok(None);
        };
        let tiers = crate::membership::tiers(ctx).await?;
        Ok(domain::membership::tier_at(&tiers, rank)
            .cloned()
            .map(crate::membership::TierNode))
    }

    /// True when the viewer's tier is below `requiredTier`: shown, but not for sale to them
    /// (checkout refuses it with `TIER_REQUIRED`).
    async fn locked(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        if self.0.min_tier_rank.is_none() {
            return Ok(false);
        }
        let rank = crate::membership::viewer_rank(ctx).await?;
        Ok(self.0.locked_for(rank))
    }

    /// Sellable variants, in display order (inactive SKUs are left out).
    async fn skus(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SkuNode>> {
        let skus = loaders(ctx)
            .catalog
            .load_one(SkusByProduct(self.0.id))
            .await?;
        Ok(skus
            .iter()
            .flat_map(|list| list.iter())
            .filter(|s| s.status == domain::catalog::SKU_ACTIVE)
            .cloned()
            .map(SkuNode)
            .collect())
    }

    /// Images, first one is the cover.
    async fn images(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProductImage>> {
        let images = loaders(ctx)
            .catalog
            .load_one(ImagesByProduct(self.0.id))
            .await?;
        Ok(images
            .iter()
            .flat_map(|list| list.iter())
            .map(|i| ProductImage {
                url: i.url.clone(),
                alt: i.alt.clone(),
            })
            .collect())
    }

    /// Categories the product is listed in.
    async fn categories(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CategoryNode>> {
        let (ids, tree) = futures::try_join!(
            loaders(ctx)
                .catalog
                .load_one(CategoriesByProduct(self.0.id)),
            category_tree(ctx)
        )?;
        Ok(ids
            .iter()
            .flat_map(|list| list.iter())
            .filter(|id| tree.get(**id).is_some())
            .map(|&id| CategoryNode {
                tree: tree.clone(),
                id,
            })
            .collect())
    }

    /// Merchandising tags such as `new`, `bestseller`, `limited`.
    async fn tags(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let tags = loaders(ctx)
            .catalog
            .load_one(TagsByProduct(self.0.id))
            .await?;
        Ok(tags.map(|t| t.as_ref().clone()).unwrap_or_default())
    }

    /// Whether at least one SKU can be bought now.
    async fn available(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let skus = loaders(ctx)
            .catalog
            .load_one(SkusByProduct(self.0.id))
            .await?;
        Ok(skus.is_some_and(|list| list.iter().any(Sku::is_available)))
    }
}

/// An image of a product on the CDN.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProductImage {
    /// HTTPS URL of the image.
    pub url: String,
    /// Text alternative for screen readers.
    pub alt: String,
}

/// How much of a SKU is left, without revealing exact stock.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockStatus {
    /// Comfortably in stock.
    InStock,
    /// Only a few left (3 or fewer).
    LowStock,
    /// None left.
    OutOfStock,
}

/// One attribute of a SKU, e.g. `{ name: "color", value: "墨黑 Black" }`.
#[derive(SimpleObject, Debug, Clone)]
pub struct SkuAttribute {
    /// `color`, `size` or `material`.
    pub name: &'static str,
    /// The value, as shown to customers.
    pub value: String,
}

/// A sellable variant of a product (one colour, size and material).
pub struct SkuNode(pub Sku);

/// A sellable variant of a product (one colour, size and material).
#[Object(name = "Sku")]
impl SkuNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Sku", self.0.id)
    }

    /// The brand's article code, e.g. `RZ-001-11`.
    async fn code(&self) -> &str {
        &self.0.code
    }

    /// Colour; null when the product comes in one colour only.
    async fn color(&self) -> Option<&str> {
        self.0.color.as_deref()
    }

    /// Size; null for one-size products.
    async fn size(&self) -> Option<&str> {
        self.0.size.as_deref()
    }

    /// Material; null when not specified.
    async fn material(&self) -> Option<&str> {
        self.0.material.as_deref()
    }

    /// Colour, size and material as a list (only those that are set).
    async fn attributes(&self) -> Vec<SkuAttribute> {
        [
            ("color", &self.0.color),
            ("size", &self.0.size),
            ("material", &self.0.material),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.clone().map(|value| SkuAttribute { name, value }))
        .collect()
    }

    /// Price.
    async fn price(&self) -> Money {
        Money::cny(self.0.price_fen)
    }

    /// Whether it can be bought now.
    async fn available(&self) -> bool {
        self.0.is_available()
    }

    /// Stock level as customers see it.
    async fn stock_status(&self) -> StockStatus {
        match self.0.stock {
            s if s <= 0 => StockStatus::OutOfStock,
            s if s <= LOW_STOCK_THRESHOLD => StockStatus::LowStock,
            _ => StockStatus::InStock,
        }
    }

    /// Units in stock (staff only; customers see `stockStatus`).
    #[graphql(guard = "crate::auth::StaffGuard::ANY")]
    async fn stock(&self) -> i32 {
        self.0.stock
    }

    /// Most units one customer may buy across their orders; null when unlimited.
    async fn purchase_limit(&self) -> Option<i32> {
        self.0.purchase_limit
    }

    /// The viewer's member price for their tier; null when this SKU has none for them (or
    /// it would not be lower than `price`). Checkout charges it instead of `price`.
    async fn member_price(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Money>> {
        let Some(rank) = crate::membership::viewer_rank(ctx).await? else {
            return Ok(None);
        };
        let prices = loaders(ctx)
            .membership
            .load_one(crate::loaders::MemberPricesBySku(self.0.id))
            .await?;
        Ok(prices
            .and_then(|p| p.iter().rev().find(|(r, _)| *r <= rank).map(|(_, f)| *f))
            .filter(|f| *f < self.0.price_fen)
            .map(Money::cny))
    }

    /// The product this SKU belongs to; null if it is not published (or hidden from the
    /// viewer's tier).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductNode>> {
        let product = loaders(ctx)
            .catalog
            .load_one(ProductById(self.0.product_id))
            .await?;
        visible(ctx, product).await
    }
}

/// Result of `adjustStock`.
#[derive(SimpleObject)]
pub struct AdjustStockPayload {
    /// Units in stock after the change; null when `errors` is not empty.
    pub stock: Option<i32>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<crate::payload::UserError>,
}

/// Catalog changes (operations).
#[derive(Default)]
pub struct CatalogMutation;

/// Catalog changes (operations).
#[Object]
impl CatalogMutation {
    /// Adds `delta` units to a SKU's stock (negative to remove; never below zero), recorded in
    /// the inventory ledger with `reason`.
    #[graphql(guard = "crate::auth::StaffGuard::OPS")]
    async fn adjust_stock(
        &self,
        ctx: &Context<'_>,
        sku_id: ID,
        delta: i32,
        reason: String,
    ) -> async_graphql::Result<AdjustStockPayload> {
        let (staff_id, _) = crate::auth::staff(ctx, crate::auth::StaffGuard::OPS.0)?;
        let sku = id::decode("Sku", "skuId", &sku_id)?;
        let result = ctx
            .data_unchecked::<Catalog>()
            .adjust_stock(sku, delta, &reason, staff_id)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match result {
            Ok(stock) => AdjustStockPayload {
                stock: Some(stock),
                errors: Vec::new(),
            },
            Err(e) => AdjustStockPayload {
                stock: None,
                errors: crate::payload::user_errors(e),
            },
        })
    }

    /// Limits a product to a tier and above (`requiredTierCode` null opens it to everyone):
    /// lower tiers do not see it (`HIDE`) or see it locked (`LOCK`, the default).
    #[graphql(guard = "crate::auth::StaffGuard::OPS")]
    async fn set_product_tier_gate(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        required_tier_code: Option<String>,
        gate: Option<TierGate>,
    ) -> async_graphql::Result<ProductGatePayload> {
        let product = id::decode("Product", "productId", &product_id)?;
        let rank = match &required_tier_code {
            None => None,
            Some(code) => match tier_rank_of(ctx, code).await? {
                Some(rank) => Some(rank),
                None => {
                    return Ok(ProductGatePayload::refused(
                        "requiredTierCode",
                        "no tier with this code",
                    ));
                }
            },
        };
        let gate = gate.unwrap_or(TierGate::Lock);
        let found = ctx
            .data_unchecked::<domain::membership::Membership>()
            .set_product_gate(product, rank, gate.stored())
            .await
            .map_err(|e| internal(&e))?;
        if !found {
            return Ok(ProductGatePayload::refused("productId", "no such product"));
        }
        ProductGatePayload::changed(ctx, product).await
    }

    /// Sets a SKU's member price for a tier and above (`priceFen` null removes it).
    #[graphql(guard = "crate::auth::StaffGuard::OPS")]
    async fn set_member_price(
        &self,
        ctx: &Context<'_>,
        sku_id: ID,
        tier_code: String,
        price_fen: Option<i64>,
    ) -> async_graphql::Result<ProductGatePayload> {
        let sku = id::decode("Sku", "skuId", &sku_id)?;
        if price_fen.is_some_and(|p| p < 1) {
            return Ok(ProductGatePayload::refused("priceFen", "at least 1 fen"));
        }
        let Some(rank) = tier_rank_of(ctx, &tier_code).await? else {
            return Ok(ProductGatePayload::refused(
                "tierCode",
                "no tier with this code",
            ));
        };
        let product = ctx
            .data_unchecked::<domain::membership::Membership>()
            .set_member_price(sku, rank, price_fen)
            .await
            .map_err(|e| internal(&e))?;
        let Some(product) = product else {
            return Ok(ProductGatePayload::refused("skuId", "no such SKU"));
        };
        ProductGatePayload::changed(ctx, product).await
    }
}

async fn tier_rank_of(ctx: &Context<'_>, code: &str) -> async_graphql::Result<Option<i32>> {
    Ok(crate::membership::tiers(ctx)
        .await?
        .iter()
        .find(|t| t.code == code)
        .map(|t| t.tier_rank))
}

/// How a tier-gated product shows to lower tiers.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierGate {
    /// Not shown at all.
    Hide,
    /// Shown, locked: `Product.locked` is true and checkout refuses it.
    Lock,
}

impl TierGate {
    fn stored(self) -> &'static str {
        match self {
            TierGate::Hide => domain::catalog::GATE_HIDE,
            TierGate::Lock => domain::catalog::GATE_LOCK,
        }
    }
}

/// Result of a product's tier settings change.
#[derive(SimpleObject)]
pub struct ProductGatePayload {
    /// The product after the change; null when `errors` is not empty.
    pub product: Option<ProductNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<crate::payload::UserError>,
}

impl ProductGatePayload {
    /// The product after a change of its tier settings, dropped from the caches first.
    async fn changed(ctx: &Context<'_>, product: u64) -> async_graphql::Result<Self> {
        let catalog = ctx.data_unchecked::<Catalog>();
        catalog.invalidate_products(&[product]).await;
        let loaded = catalog
            .products(&[product])
            .await
            .map_err(|e| internal(&e))?;
        Ok(Self {
            product: loaded.get(&product).cloned().map(ProductNode),
            errors: Vec::new(),
        })
    }

    fn refused(field: &str, message: &str) -> Self {
        Self {
            product: None,
            errors: vec![crate::payload::UserError::new(
                crate::payload::UserErrorCode::InvalidInput,
                Some(field),
                message,
            )],
        }
    }
}

/// A node of the category tree.
pub struct CategoryNode {
    tree: Arc<CategoryTree>,
    id: u64,
}

impl CategoryNode {
    fn row(&self) -> &domain::catalog::Category {
        // constructed only for ids present in the tree
        self.tree
            .get(self.id)
            .unwrap_or_else(|| unreachable!("category node outside its tree"))
    }
}

/// A node of the category tree.
#[Object(name = "Category")]
impl CategoryNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Category", self.id)
    }

    /// URL-friendly unique name, e.g. `handbags`.
    async fn slug(&self) -> &str {
        &self.row().slug
    }

    /// Name in Chinese.
    async fn name(&self) -> &str {
        &self.row().name_zh
    }

    /// Name in English.
    async fn name_en(&self) -> &str {
        &self.row().name_en
    }

    /// The category above; null for a top-level category.
    async fn parent(&self) -> Option<CategoryNode> {
        self.row().parent_id.map(|id| CategoryNode {
            tree: self.tree.clone(),
            id,
        })
    }

    /// Categories directly below, in display order.
    async fn children(&self) -> Vec<CategoryNode> {
        self.tree
            .children(Some(self.id))
            .map(|c| CategoryNode {
                tree: self.tree.clone(),
                id: c.id,
            })
            .collect()
    }
}
