//! Catalog rows as stored in MySQL; the shapes cached in Redis are these same structs.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::{categories, product_images, products, skus};

/// Product lifecycle; only `Published` products are shown to customers.
pub const STATUS_PUBLISHED: &str = "PUBLISHED";
/// SKU that can be sold.
pub const SKU_ACTIVE: &str = "ACTIVE";
/// A tier-gated product lower tiers do not see.
pub const GATE_HIDE: &str = "HIDE";
/// A tier-gated product lower tiers see, locked (they cannot buy it).
pub const GATE_LOCK: &str = "LOCK";

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = categories, check_for_backend(diesel::mysql::Mysql))]
pub struct Category {
    pub id: u64,
    pub parent_id: Option<u64>,
    pub slug: String,
    pub name_zh: String,
    pub name_en: String,
    pub position: i32,
}

/// A product (SPU).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = products, check_for_backend(diesel::mysql::Mysql))]
pub struct Product {
    pub id: u64,
    pub slug: String,
    pub name_zh: String,
    pub name_en: String,
    pub description_zh: String,
    pub description_en: String,
    pub status: String,
    pub rank_position: i32,
    pub price_min_fen: i64,
    pub price_max_fen: i64,
    pub created_at: chrono::NaiveDateTime,
    pub min_tier_rank: Option<i32>,
    pub tier_gate: String,
}

impl Product {
    /// Whether customers may see this product.
    pub fn is_published(&self) -> bool {
        self.status == STATUS_PUBLISHED
    }

    /// Whether a viewer of tier `rank` (`None` = staff) may see it at all.
    pub fn visible_to(&self, rank: Option<i32>) -> bool {
        match (rank, self.min_tier_rank) {
            (None, _) | (_, None) => true,
            (Some(rank), Some(min)) => rank >= min || self.tier_gate == GATE_LOCK,
        }
    }

    /// Whether a viewer of tier `rank` sees it locked (shown, not for sale to them).
    pub fn locked_for(&self, rank: Option<i32>) -> bool {
        matches!((rank, self.min_tier_rank), (Some(rank), Some(min)) if rank < min)
    }
}

/// A sellable variant of a product.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = skus, check_for_backend(diesel::mysql::Mysql))]
pub struct Sku {
    pub id: u64,
    pub product_id: u64,
    pub code: String,
    pub color: Option<String>,
    pub size: Option<String>,
    pub material: Option<String>,
    pub price_fen: i64,
    pub stock: i32,
    pub purchase_limit: Option<i32>,
    pub status: String,
    pub position: i32,
}

impl Sku {
    /// Sellable now: active and in stock.
    pub fn is_available(&self) -> bool {
        self.status == SKU_ACTIVE && self.stock > 0
    }
}

/// A product image on the CDN.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = product_images, check_for_backend(diesel::mysql::Mysql))]
pub struct ProductImage {
    pub id: u64,
    pub product_id: u64,
    pub url: String,
    pub alt: String,
    pub position: i32,
}

/// The whole category forest, ordered by (parent, position) — small enough to cache whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CategoryTree {
    pub categories: Vec<Category>,
}

impl CategoryTree {
    /// The category with this id.
    pub fn get(&self, id: u64) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// Direct children of `parent` (roots for `None`), in display order.
    pub fn children(&self, parent: Option<u64>) -> impl Iterator<Item = &Category> {
        self.categories
            .iter()
            .filter(move |c| c.parent_id == parent)
    }

    /// `id` and every category below it; empty when `id` does not exist.
    pub fn with_descendants(&self, id: u64) -> Vec<u64> {
        if self.get(id).is_none() {
            return Vec::new();
        }
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(self.children(Some(parent)).map(|c| c.id));
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(id: u64, parent_id: Option<u64>) -> Category {
        Category {
            id,
            parent_id,
            slug: format!("c{id}"),
            name_zh: String::new(),
            name_en: String::new(),
            position: 0,
        }
    }

    #[test]
    fn descendants_include_every_level() {
        let tree = CategoryTree {
            categories: vec![cat(1, None), cat(2, Some(1)), cat(3, Some(2)), cat(4, None)],
        };
        assert_eq!(tree.with_descendants(1), vec![1, 2, 3]);
        assert_eq!(tree.with_descendants(4), vec![4]);
        assert!(tree.with_descendants(99).is_empty());
        assert_eq!(
            tree.children(None).map(|c| c.id).collect::<Vec<_>>(),
            vec![1, 4]
        );
    }
}
