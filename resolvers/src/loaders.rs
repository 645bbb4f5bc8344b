//! DataLoaders, constructed in one place. Each key type names what it loads
//! (`SkusByProduct(product_id)`), and each batch function is one call into `domain` with a slice
//! of ids — so a page of 50 products costs one statement per nested list, not 50.
//!
//! The loaders live for the whole process and keep no cache of their own (values are cached by
//! `domain::cache`, which knows how to invalidate them): concurrent requests batch together.
//! They run through [`Batcher`](crate::batch::Batcher), which sends a batch when the poll of the
//! operation that opened it ends rather than after a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::Loader;
use domain::cart::{CartLine, Carts};
use domain::catalog::{Catalog, CategoryTree, Product, ProductImage, Sku};
use domain::consultation::booking::SlotRow;
use domain::consultation::{Boutique, ConsultationEventRow, Consultations};
use domain::identity::Identity;
use domain::identity::addresses::Address;
use domain::identity::members::Member;
use domain::identity::staff::StaffAccount;
use domain::membership::{CouponRow, CouponTemplateRow, Membership, OrderPricing, Tier};
use domain::order::{OrderEventRow, OrderLineRow, OrderRow, Orders};
use domain::payment::{PaymentRow, Payments, RefundRow};

use crate::batch::Batcher;
use crate::error::internal;

/// A product by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProductById(pub u64);
/// The SKUs of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkusByProduct(pub u64);
/// The images of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImagesByProduct(pub u64);
/// The category ids of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CategoriesByProduct(pub u64);
/// The tags of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TagsByProduct(pub u64);
/// A SKU by id (through its product's cached SKU list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkuById(pub u64);
/// The whole category tree (there is only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WholeCategoryTree;

/// Batch functions of the catalog context.
pub struct CatalogLoader(pub Catalog);

type Batch<K, V> = async_graphql::Result<HashMap<K, V>>;

fn rekey<K, V>(map: HashMap<u64, V>, key: impl Fn(u64) -> K) -> HashMap<K, V>
where
    K: std::hash::Hash + Eq,
{
    map.into_iter().map(|(id, v)| (key(id), v)).collect()
}

impl Loader<ProductById> for CatalogLoader {
    type Value = Arc<Product>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ProductById]) -> Batch<ProductById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.products(&ids).await.map_err(|e| internal(&e))?,
            ProductById,
        ))
    }
}

impl Loader<SkusByProduct> for CatalogLoader {
    type Value = Arc<Vec<Sku>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[SkusByProduct]) -> Batch<SkusByProduct, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.skus(&ids).await.map_err(|e| internal(&e))?,
            SkusByProduct,
        ))
    }
}

impl Loader<ImagesByProduct> for CatalogLoader {
    type Value = Arc<Vec<ProductImage>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ImagesByProduct]) -> Batch<ImagesByProduct, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.images(&ids).await.map_err(|e| internal(&e))?,
            ImagesByProduct,
        ))
    }
}

impl Loader<CategoriesByProduct> for CatalogLoader {
    type Value = Arc<Vec<u64>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[CategoriesByProduct]) -> Batch<CategoriesByProduct, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.category_ids(&ids).await.map_err(|e| internal(&e))?,
            CategoriesByProduct,
        ))
    }
}

impl Loader<TagsByProduct> for CatalogLoader {
    type Value = Arc<Vec<String>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[TagsByProduct]) -> Batch<TagsByProduct, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.tags(&ids).await.map_err(|e| internal(&e))?,
            TagsByProduct,
        ))
    }
}

impl Loader<SkuById> for CatalogLoader {
    type Value = Sku;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[SkuById]) -> Batch<SkuById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.skus_by_id(&ids).await.map_err(|e| internal(&e))?;
        Ok(rekey(found, SkuById))
    }
}

impl Loader<WholeCategoryTree> for CatalogLoader {
    type Value = Arc<CategoryTree>;
    type Error = async_graphql::Error;

    async fn load(&self, _: &[WholeCategoryTree]) -> Batch<WholeCategoryTree, Self::Value> {
        let tree = self.0.category_tree().await.map_err(|e| internal(&e))?;
        Ok(HashMap::from([(WholeCategoryTree, tree)]))
    }
}

/// A member by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberById(pub u64);
/// The address book of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressesByMember(pub u64);
/// A staff account by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StaffById(pub u64);

/// Batch functions of the identity context.
pub struct IdentityLoader(pub Identity);

impl Loader<MemberById> for IdentityLoader {
    type Value = Member;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[MemberById]) -> Batch<MemberById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.members(&ids).await.map_err(|e| internal(&e))?,
            MemberById,
        ))
    }
}

impl Loader<AddressesByMember> for IdentityLoader {
    type Value = Arc<Vec<Address>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[AddressesByMember]) -> Batch<AddressesByMember, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.addresses(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, list)| (AddressesByMember(id), Arc::new(list)))
            .collect())
    }
}

impl Loader<StaffById> for IdentityLoader {
    type Value = StaffAccount;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[StaffById]) -> Batch<StaffById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.staff(&ids).await.map_err(|e| internal(&e))?,
            StaffById,
        ))
    }
}

/// An order by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderById(pub u64);
/// The lines of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderLinesByOrder(pub u64);
/// The timeline of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderEventsByOrder(pub u64);
/// The cart lines of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CartByMember(pub u64);

/// Batch functions of the order and cart contexts.
pub struct OrderLoader(pub Orders, pub Carts);

impl Loader<OrderById> for OrderLoader {
    type Value = OrderRow;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[OrderById]) -> Batch<OrderById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.orders(&ids).await.map_err(|e| internal(&e))?,
            OrderById,
        ))
    }
}

impl Loader<OrderLinesByOrder> for OrderLoader {
    type Value = Arc<Vec<OrderLineRow>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[OrderLinesByOrder]) -> Batch<OrderLinesByOrder, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.lines(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (OrderLinesByOrder(id), Arc::new(v)))
            .collect())
    }
}

impl Loader<OrderEventsByOrder> for OrderLoader {
    type Value = Arc<Vec<OrderEventRow>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[OrderEventsByOrder]) -> Batch<OrderEventsByOrder, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.events(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (OrderEventsByOrder(id), Arc::new(v)))
            .collect())
    }
}

impl Loader<CartByMember> for OrderLoader {
    type Value = Arc<Vec<CartLine>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[CartByMember]) -> Batch<CartByMember, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.1.lines(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (CartByMember(id), Arc::new(v)))
            .collect())
    }
}

/// The payment of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaymentByOrder(pub u64);
/// The refunds of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefundsByOrder(pub u64);

/// Batch functions of the payment context.
pub struct PaymentLoader(pub Payments);

impl Loader<PaymentByOrder> for PaymentLoader {
    type Value = Arc<PaymentRow>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[PaymentByOrder]) -> Batch<PaymentByOrder, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.payments_of(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (PaymentByOrder(id), Arc::new(v)))
            .collect())
    }
}

impl Loader<RefundsByOrder> for PaymentLoader {
    type Value = Arc<Vec<RefundRow>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[RefundsByOrder]) -> Batch<RefundsByOrder, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self
            .0
            .refunds_of_orders(&ids)
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (RefundsByOrder(id), Arc::new(v)))
            .collect())
    }
}

/// Every membership tier (one key: the whole table, lowest rank first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllTiers;
/// A coupon template by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CouponTemplateById(pub u64);
/// A coupon by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CouponById(pub u64);
/// How an order's discount was made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PricingByOrder(pub u64);
/// The member prices of a SKU: (tier rank, price), lowest rank first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberPricesBySku(pub u64);

/// The products and categories a coupon template is limited to (both empty: anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CouponTargetsByTemplate(pub u64);

/// Batch functions of the membership context.
pub struct MembershipLoader(pub Membership);

impl Loader<CouponTargetsByTemplate> for MembershipLoader {
    type Value = Arc<(Vec<u64>, Vec<u64>)>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[CouponTargetsByTemplate],
    ) -> Batch<CouponTargetsByTemplate, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self
            .0
            .coupon_targets(&ids)
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (CouponTargetsByTemplate(id), Arc::new(v)))
            .collect())
    }
}

impl Loader<AllTiers> for MembershipLoader {
    type Value = Arc<Vec<Tier>>;
    type Error = async_graphql::Error;

    async fn load(&self, _: &[AllTiers]) -> Batch<AllTiers, Self::Value> {
        let tiers = self.0.tiers().await.map_err(|e| internal(&e))?;
        Ok(HashMap::from([(AllTiers, Arc::new(tiers))]))
    }
}

impl Loader<CouponTemplateById> for MembershipLoader {
    type Value = Arc<CouponTemplateRow>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[CouponTemplateById]) -> Batch<CouponTemplateById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self
            .0
            .coupon_templates(&ids)
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, t)| (CouponTemplateById(id), Arc::new(t)))
            .collect())
    }
}

impl Loader<CouponById> for MembershipLoader {
    type Value = CouponRow;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[CouponById]) -> Batch<CouponById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.coupons_by_id(&ids).await.map_err(|e| internal(&e))?,
            CouponById,
        ))
    }
}

impl Loader<PricingByOrder> for MembershipLoader {
    type Value = OrderPricing;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[PricingByOrder]) -> Batch<PricingByOrder, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.order_pricing(&ids).await.map_err(|e| internal(&e))?,
            PricingByOrder,
        ))
    }
}

impl Loader<MemberPricesBySku> for MembershipLoader {
    type Value = Arc<Vec<(i32, i64)>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[MemberPricesBySku]) -> Batch<MemberPricesBySku, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self
            .0
            .sku_member_prices(&ids)
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (MemberPricesBySku(id), Arc::new(v)))
            .collect())
    }
}

/// Every boutique (one key: the whole table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllBoutiques;
/// An advisor slot by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotById(pub u64);
/// The timeline of a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsultationTimeline(pub u64);

/// Batch functions of the consultation context.
pub struct ConsultationLoader(pub Consultations);

impl Loader<AllBoutiques> for ConsultationLoader {
    type Value = Arc<Vec<Boutique>>;
    type Error = async_graphql::Error;

    async fn load(&self, _: &[AllBoutiques]) -> Batch<AllBoutiques, Self::Value> {
        let all = self.0.boutiques().await.map_err(|e| internal(&e))?;
        Ok(HashMap::from([(AllBoutiques, Arc::new(all))]))
    }
}

impl Loader<SlotById> for ConsultationLoader {
    type Value = SlotRow;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[SlotById]) -> Batch<SlotById, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        Ok(rekey(
            self.0.slots_by_id(&ids).await.map_err(|e| internal(&e))?,
            SlotById,
        ))
    }
}

/// An advisor's free slots in the next 30 days (from when the batch runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FreeSlotsOfAdvisor(pub u64);

impl Loader<FreeSlotsOfAdvisor> for ConsultationLoader {
    type Value = Arc<Vec<SlotRow>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[FreeSlotsOfAdvisor]) -> Batch<FreeSlotsOfAdvisor, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let now = chrono::Utc::now().naive_utc();
        let found = self
            .0
            .free_slots_of(&ids, now, now + chrono::TimeDelta::days(30))
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (FreeSlotsOfAdvisor(id), Arc::new(v)))
            .collect())
    }
}

/// The read receipts of a consultation as one viewer may see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadReceiptsOf(pub domain::consultation::messages::ReceiptsKey);

impl Loader<ReadReceiptsOf> for ConsultationLoader {
    type Value = Arc<Vec<domain::consultation::messages::ReadRow>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ReadReceiptsOf]) -> Batch<ReadReceiptsOf, Self::Value> {
        let inner: Vec<_> = keys.iter().map(|k| k.0).collect();
        let found = self
            .0
            .receipts_many(&inner)
            .await
            .map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(k, v)| (ReadReceiptsOf(k), Arc::new(v)))
            .collect())
    }
}

impl Loader<ConsultationTimeline> for ConsultationLoader {
    type Value = Arc<Vec<ConsultationEventRow>>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ConsultationTimeline],
    ) -> Batch<ConsultationTimeline, Self::Value> {
        let ids: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let found = self.0.timelines(&ids).await.map_err(|e| internal(&e))?;
        Ok(found
            .into_iter()
            .map(|(id, v)| (ConsultationTimeline(id), Arc::new(v)))
            .collect())
    }
}

/// Every DataLoader of the API; added to the schema as data.
pub struct Loaders {
    /// Catalog reads.
    pub catalog: Batcher<CatalogLoader>,
    /// Identity reads.
    pub identity: Batcher<IdentityLoader>,
    /// Order and cart reads.
    pub order: Batcher<OrderLoader>,
    /// Payment and refund reads.
    pub payment: Batcher<PaymentLoader>,
    /// Tiers, coupons and order pricing.
    pub membership: Batcher<MembershipLoader>,
    /// Boutiques, slots and consultation timelines.
    pub consultation: Batcher<ConsultationLoader>,
}

/// The domain services the loaders batch into.
#[derive(Clone)]
pub struct Sources {
    /// Catalog.
    pub catalog: Catalog,
    /// Identity.
    pub identity: Identity,
    /// Orders.
    pub orders: Orders,
    /// Carts.
    pub carts: Carts,
    /// Payments.
    pub payments: Payments,
    /// Membership.
    pub membership: Membership,
    /// Consultations.
    pub consultations: Consultations,
}

impl Loaders {
    /// Builds the loaders: batches go out when the poll of the operation that opened them ends
    /// (`at_poll_end`, see [`crate::batch`]) or else after `delay`.
    pub fn new(sources: Sources, delay: Duration, at_poll_end: bool) -> Self {
        fn loader<L: Send + Sync + 'static>(inner: L, delay: Duration, end: bool) -> Batcher<L> {
            Batcher::new(inner, delay, 1_000, end)
        }
        let s = sources;
        Self {
            consultation: loader(ConsultationLoader(s.consultations), delay, at_poll_end),
            membership: loader(MembershipLoader(s.membership), delay, at_poll_end),
            payment: loader(PaymentLoader(s.payments), delay, at_poll_end),
            order: loader(OrderLoader(s.orders, s.carts), delay, at_poll_end),
            catalog: loader(CatalogLoader(s.catalog), delay, at_poll_end),
            identity: loader(IdentityLoader(s.identity), delay, at_poll_end),
        }
    }
}
