//! Catalog reads from MySQL. Every function that serves nested data takes a slice of ids and
//! answers with one statement, so DataLoaders can batch a whole page into one query.

use std::collections::HashMap;

use diesel::mysql::Mysql;
use diesel::prelude::*;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use super::model::{Category, CategoryTree, Product, ProductImage, STATUS_PUBLISHED, Sku};
use crate::schema::{categories, product_categories, product_images, product_tags, products, skus};

/// Orderings of the product list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductSort {
    /// Merchandising order (`rank_position`), then id.
    Featured,
    /// Most recently added first.
    Newest,
    /// Lowest starting price first.
    PriceAsc,
    /// Highest starting price first.
    PriceDesc,
}

/// Which published products to list. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// Products in any of these categories (callers expand a category to its descendants).
    pub category_ids: Option<Vec<u64>>,
    /// Case-insensitive substring of the Chinese or English name.
    pub search: Option<String>,
    /// At least one SKU priced at or above this, in fen.
    pub min_price_fen: Option<i64>,
    /// At least one SKU priced at or below this, in fen.
    pub max_price_fen: Option<i64>,
    /// Products carrying every one of these tags.
    pub tags: Vec<String>,
    /// The viewer's tier rank: products gated above it with `HIDE` are left out. `None` shows
    /// everything (staff).
    pub viewer_rank: Option<i32>,
}

/// Position in a product list: the sort key and id of the last product seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductKey {
    pub value: i64,
    pub id: u64,
}

impl ProductSort {
    /// The sort key of `p` under this ordering.
    pub fn key_of(self, p: &Product) -> ProductKey {
        let value = match self {
            ProductSort::Featured => i64::from(p.rank_position),
            ProductSort::Newest => 0,
            ProductSort::PriceAsc | ProductSort::PriceDesc => p.price_min_fen,
        };
        ProductKey { value, id: p.id }
    }
}

/// Escapes `%`, `_` and `\` so user text matches literally in `LIKE` (MySQL's escape is `\`).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

fn filtered(filter: &ProductFilter) -> products::BoxedQuery<'static, Mysql> {
    let mut q = products::table
        .filter(products::status.eq(STATUS_PUBLISHED))
        .into_boxed();
    if let Some(ids) = &filter.category_ids {
        q = q.filter(
            products::id.eq_any(
                product_categories::table
                    .filter(product_categories::category_id.eq_any(ids.clone()))
                    .select(product_categories::product_id),
            ),
        );
    }
    if let Some(text) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let pattern = like_pattern(text);
        q = q.filter(
            products::name_zh
                .like(pattern.clone())
                .or(products::name_en.like(pattern)),
        );
    }
    if filter.min_price_fen.is_some() || filter.max_price_fen.is_some() {
        // correlated subquery: some SKU of this product is priced inside the range
        let priced = skus::table
            .select(skus::id)
            .filter(skus::product_id.eq(products::id))
            .filter(skus::price_fen.ge(filter.min_price_fen.unwrap_or(i64::MIN)))
            .filter(skus::price_fen.le(filter.max_price_fen.unwrap_or(i64::MAX)));
        q = q.filter(diesel::dsl::exists(priced));
    }
    if let Some(rank) = filter.viewer_rank {
        q = q.filter(
            products::min_tier_rank
                .is_null()
                .or(products::min_tier_rank.le(rank))
                .or(products::tier_gate.eq(super::model::GATE_LOCK)),
        );
    }
    for tag in &filter.tags {
        q = q.filter(
            products::id.eq_any(
                product_tags::table
                    .filter(product_tags::tag.eq(tag.clone()))
                    .select(product_tags::product_id),
            ),
        );
    }
    q
}

/// One page of published products after `after`, at most `limit` rows.
pub async fn list_products(
    conn: &mut AsyncMysqlConnection,
    filter: &ProductFilter,
    sort: ProductSort,
    after: Option<ProductKey>,
    limit: i64,
) -> QueryResult<Vec<Product>> {
    let mut q = filtered(filter);
    q = match sort {
        ProductSort::Featured => {
            if let Some(k) = after {
                let v = i32::try_from(k.value).unwrap_or(i32::MAX);
                q = q.filter(
                    products::rank_position
                        .gt(v)
                        .or(products::rank_position.eq(v).and(products::id.gt(k.id))),
                );
            }
            q.order((products::rank_position.asc(), products::id.asc()))
        }
        ProductSort::Newest => {
            if let Some(k) = after {
                q = q.filter(products::id.lt(k.id));
            }
            q.order(products::id.desc())
        }
        ProductSort::PriceAsc => {
            if let Some(k) = after {
                q = q.filter(
                    products::price_min_fen
                        .gt(k.value)
                        .or(products::price_min_fen
                            .eq(k.value)
                            .and(products::id.gt(k.id))),
                );
            }
            q.order((products::price_min_fen.asc(), products::id.asc()))
        }
        ProductSort::PriceDesc => {
            if let Some(k) = after {
                q = q.filter(
                    products::price_min_fen
                        .lt(k.value)
                        .or(products::price_min_fen
                            .eq(k.value)
                            .and(products::id.lt(k.id))),
                );
            }
            q.order((products::price_min_fen.desc(), products::id.desc()))
        }
    };
    q.limit(limit).select(Product::as_select()).load(conn).await
}

/// How many published products match `filter`.
pub async fn count_products(
    conn: &mut AsyncMysqlConnection,
    filter: &ProductFilter,
) -> QueryResult<i64> {
    filtered(filter).count().get_result(conn).await
}

/// Products by id, whatever their status.
pub async fn products_by_ids(
    conn: &mut AsyncMysqlConnection,
    ids: &[u64],
) -> QueryResult<HashMap<u64, Product>> {
    let rows: Vec<Product> = products::table
        .filter(products::id.eq_any(ids))
        .select(Product::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|p| (p.id, p)).collect())
}

/// Groups rows by product id, giving every requested id an entry (empty when it has none).
fn group<T>(ids: &[u64], rows: Vec<T>, product_of: impl Fn(&T) -> u64) -> HashMap<u64, Vec<T>> {
    let mut out: HashMap<u64, Vec<T>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for row in rows {
        out.entry(product_of(&row)).or_default().push(row);
    }
    out
}

/// SKUs of each product, in display order.
pub async fn skus_by_product(
    conn: &mut AsyncMysqlConnection,
    product_ids: &[u64],
) -> QueryResult<HashMap<u64, Vec<Sku>>> {
    let rows: Vec<Sku> = skus::table
        .filter(skus::product_id.eq_any(product_ids))
        .order((skus::product_id, skus::position, skus::id))
        .select(Sku::as_select())
        .load(conn)
        .await?;
    Ok(group(product_ids, rows, |s| s.product_id))
}

/// SKUs by id.
pub async fn skus_by_ids(
    conn: &mut AsyncMysqlConnection,
    ids: &[u64],
) -> QueryResult<HashMap<u64, Sku>> {
    let rows: Vec<Sku> = skus::table
        .filter(skus::id.eq_any(ids))
        .select(Sku::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|s| (s.id, s)).collect())
}

/// Images of each product, in display order.
pub async fn images_by_product(
    conn: &mut AsyncMysqlConnection,
    product_ids: &[u64],
) -> QueryResult<HashMap<u64, Vec<ProductImage>>> {
    let rows: Vec<ProductImage> = product_images::table
        .filter(product_images::product_id.eq_any(product_ids))
        .order((product_images::product_id, product_images::position))
        .select(ProductImage::as_select())
        .load(conn)
        .await?;
    Ok(group(product_ids, rows, |i| i.product_id))
}

/// Category ids of each product.
pub async fn category_ids_by_product(
    conn: &mut AsyncMysqlConnection,
    product_ids: &[u64],
) -> QueryResult<HashMap<u64, Vec<u64>>> {
    let rows: Vec<(u64, u64)> = product_categories::table
        .filter(product_categories::product_id.eq_any(product_ids))
        .order((
            product_categories::product_id,
            product_categories::category_id,
        ))
        .select((
            product_categories::product_id,
            product_categories::category_id,
        ))
        .load(conn)
        .await?;
    let grouped = group(product_ids, rows, |r| r.0);
    Ok(grouped
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|r| r.1).collect()))
        .collect())
}

/// Tags of each product, alphabetically.
pub async fn tags_by_product(
    conn: &mut AsyncMysqlConnection,
    product_ids: &[u64],
) -> QueryResult<HashMap<u64, Vec<String>>> {
    let rows: Vec<(u64, String)> = product_tags::table
        .filter(product_tags::product_id.eq_any(product_ids))
        .order((product_tags::product_id, product_tags::tag))
        .select((product_tags::product_id, product_tags::tag))
        .load(conn)
        .await?;
    let grouped = group(product_ids, rows, |r| r.0);
    Ok(grouped
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|r| r.1).collect()))
        .collect())
}

/// Every category, ordered for display.
pub async fn category_tree(conn: &mut AsyncMysqlConnection) -> QueryResult<CategoryTree> {
    let categories = categories::table
        .order((categories::parent_id, categories::position, categories::id))
        .select(Category::as_select())
        .load(conn)
        .await?;
    Ok(CategoryTree { categories })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_matches_user_text_literally() {
        assert_eq!(like_pattern("tote"), "%tote%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
