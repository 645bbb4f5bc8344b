//! Catalog context: categories, products (SPU), SKUs, images and tags — reads through the cache,
//! plus the demo seed.

pub mod inventory;
mod model;
mod query;
pub mod seed;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use model::{
    Category, CategoryTree, GATE_HIDE, GATE_LOCK, Product, ProductImage, SKU_ACTIVE,
    STATUS_PUBLISHED, Sku,
};
pub use query::{ProductFilter, ProductKey, ProductSort};

use crate::DomainResult;
use crate::cache::Cache;
use crate::db::Db;

/// Cache namespaces of the catalog (also the `cache` label of the cache metrics).
mod ns {
    pub const PRODUCT: &str = "catalog:product:v2";
    pub const SKUS: &str = "catalog:skus:v2";
    pub const IMAGES: &str = "catalog:images:v1";
    pub const CATEGORIES_OF: &str = "catalog:product-categories:v1";
    pub const TAGS: &str = "catalog:tags:v1";
    pub const TREE: &str = "catalog:category-tree:v1";
}

/// Catalog reads. Per-id reads go through the two cache layers; list pages go to MySQL.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
    cache: Cache,
    /// Bumped after every invalidation: answers computed under an older value are stale.
    generation: Arc<AtomicU64>,
}

impl Catalog {
    /// The catalog over this database and cache.
    pub fn new(db: Db, cache: Cache) -> Self {
        Self {
            db,
            cache,
            generation: Arc::default(),
        }
    }

    /// The catalog's generation in this process: it changes after every invalidation (a
    /// write here, or an inventory event from anywhere), so anything derived from the catalog
    /// under an older generation may be stale (the response cache keys on it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After the data caches are purged: what was computed before is stale from now on.
    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Products by id (any status; callers decide visibility).
    pub async fn products(&self, ids: &[u64]) -> DomainResult<HashMap<u64, Arc<Product>>> {
        self.cache
            .get_many(ns::PRODUCT, ids, |missing| async move {
                let mut conn = self.db.conn().await?;
                Ok(query::products_by_ids(&mut conn, &missing).await?)
            })
            .await
    }

    /// SKUs of each product.
    pub async fn skus(&self, product_ids: &[u64]) -> DomainResult<HashMap<u64, Arc<Vec<Sku>>>> {
        self.cache
            .get_many(ns::SKUS, product_ids, |missing| async move {
                let mut conn = self.db.conn().await?;
                Ok(query::skus_by_product(&mut conn, &missing).await?)
            })
            .await
    }

    /// Images of each product.
    pub async fn images(
        &self,
        product_ids: &[u64],
    ) -> DomainResult<HashMap<u64, Arc<Vec<ProductImage>>>> {
        self.cache
            .get_many(ns::IMAGES, product_ids, |missing| async move {
                let mut conn = self.db.conn().await?;
                Ok(query::images_by_product(&mut conn, &missing).await?)
            })
            .await
    }

    /// Category ids of each product.
    pub async fn category_ids(
        &self,
        product_ids: &[u64],
    ) -> DomainResult<HashMap<u64, Arc<Vec<u64>>>> {
        self.cache
            .get_many(ns::CATEGORIES_OF, product_ids, |missing| async move {
                let mut conn = self.db.conn().await?;
                Ok(query::category_ids_by_product(&mut conn, &missing).await?)
            })
            .await
    }

    /// Tags of each product.
    pub async fn tags(&self, product_ids: &[u64]) -> DomainResult<HashMap<u64, Arc<Vec<String>>>> {
        self.cache
            .get_many(ns::TAGS, product_ids, |missing| async move {
                let mut conn = self.db.conn().await?;
                Ok(query::tags_by_product(&mut conn, &missing).await?)
            })
            .await
    }

    /// SKUs by id, read from MySQL (stock must be current here: carts and orders use it).
    pub async fn skus_by_id(&self, ids: &[u64]) -> DomainResult<HashMap<u64, Sku>> {
        let mut conn = self.db.conn().await?;
        Ok(query::skus_by_ids(&mut conn, ids).await?)
    }

    /// The whole category tree.
    pub async fn category_tree(&self) -> DomainResult<Arc<CategoryTree>> {
        self.cache
            .get_one(ns::TREE, || async move {
                let mut conn = self.db.conn().await?;
                Ok(query::category_tree(&mut conn).await?)
            })
            .await
    }

    /// One page of published products: up to `limit` rows after `after`.
    pub async fn list_products(
        &self,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<ProductKey>,
        limit: i64,
    ) -> DomainResult<Vec<Product>> {
        let mut conn = self.db.conn().await?;
        Ok(query::list_products(&mut conn, filter, sort, after, limit).await?)
    }

    /// How many published products match `filter`.
    pub async fn count_products(&self, filter: &ProductFilter) -> DomainResult<i64> {
        let mut conn = self.db.conn().await?;
        Ok(query::count_products(&mut conn, filter).await?)
    }

    /// Forgets everything cached about these products; catalog writes call it after commit.
    pub async fn invalidate_products(&self, product_ids: &[u64]) {
        for namespace in [
            ns::PRODUCT,
            ns::SKUS,
            ns::IMAGES,
            ns::CATEGORIES_OF,
            ns::TAGS,
        ] {
            self.cache.invalidate(namespace, product_ids).await;
        }
        self.bump_generation();
    }

    /// Forgets the cached category tree; category writes call it after commit.
    pub async fn invalidate_category_tree(&self) {
        self.cache.invalidate(ns::TREE, &[0]).await;
        self.bump_generation();
    }
}
