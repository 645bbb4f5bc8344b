//! The demo catalog: a realistic luxury assortment in Chinese and English, loaded idempotently
//! (natural keys — category and product slugs, SKU codes — make a second run change nothing).

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::schema::{categories, product_categories, product_images, product_tags, products, skus};

/// What the seed wrote (or found already there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSummary {
    pub categories: i64,
    pub products: i64,
    pub skus: i64,
    pub images: i64,
}

struct Cat {
    slug: &'static str,
    zh: &'static str,
    en: &'static str,
    parent: Option<&'static str>,
}

const CATEGORIES: &[Cat] = &[
    Cat {
        slug: "handbags",
        zh: "手袋",
        en: "Handbags",
        parent: None,
    },
    Cat {
        slug: "totes",
        zh: "托特包",
        en: "Totes",
        parent: Some("handbags"),
    },
    Cat {
        slug: "shoulder-bags",
        zh: "肩背包",
        en: "Shoulder Bags",
        parent: Some("handbags"),
    },
    Cat {
        slug: "clutches",
        zh: "手拿包",
        en: "Clutches",
        parent: Some("handbags"),
    },
    Cat {
        slug: "small-leather-goods",
        zh: "皮具小件",
        en: "Small Leather Goods",
        parent: None,
    },
    Cat {
        slug: "wallets",
        zh: "钱包",
        en: "Wallets",
        parent: Some("small-leather-goods"),
    },
    Cat {
        slug: "card-holders",
        zh: "卡夹",
        en: "Card Holders",
        parent: Some("small-leather-goods"),
    },
    Cat {
        slug: "ready-to-wear",
        zh: "成衣",
        en: "Ready-to-Wear",
        parent: None,
    },
    Cat {
        slug: "womenswear",
        zh: "女装",
        en: "Womenswear",
        parent: Some("ready-to-wear"),
    },
    Cat {
        slug: "menswear",
        zh: "男装",
        en: "Menswear",
        parent: Some("ready-to-wear"),
    },
    Cat {
        slug: "shoes",
        zh: "鞋履",
        en: "Shoes",
        parent: None,
    },
    Cat {
        slug: "jewellery",
        zh: "珠宝",
        en: "Jewellery",
        parent: None,
    },
    Cat {
        slug: "watches",
        zh: "腕表",
        en: "Watches",
        parent: None,
    },
    Cat {
        slug: "silk-scarves",
        zh: "丝巾",
        en: "Silk Scarves",
        parent: None,
    },
    Cat {
        slug: "fragrance",
        zh: "香氛",
        en: "Fragrance",
        parent: None,
    },
    Cat {
        slug: "gifts",
        zh: "礼赠之选",
        en: "Gifts",
        parent: None,
    },
];

/// Collections ("lines") the products are named after.
const LINES: &[(&str, &str, &str)] = &[
    ("lotus", "青莲", "Lotus"),
    ("jade", "翡翠", "Jade"),
    ("silk-road", "丝路", "Silk Road"),
    ("peony", "牡丹", "Peony"),
    ("crane", "仙鹤", "Crane"),
    ("auspicious-cloud", "祥云", "Auspicious Cloud"),
    ("ink", "墨韵", "Ink Wash"),
    ("lantern", "宫灯", "Lantern"),
];

/// (category slug, item zh, item en, base price in yuan, sizes, materials)
type Item = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static [&'static str],
    &'static [&'static str],
);

const ITEMS: &[Item] = &[
    (
        "totes",
        "托特包",
        "Tote",
        28_500,
        &["中号 MM", "大号 GM"],
        &["小牛皮 Calfskin"],
    ),
    (
        "shoulder-bags",
        "肩背包",
        "Shoulder Bag",
        32_000,
        &["小号 PM", "中号 MM"],
        &["羊皮 Lambskin"],
    ),
    (
        "clutches",
        "手拿包",
        "Clutch",
        18_800,
        &["均码 One Size"],
        &["缎面 Satin", "鳄鱼皮 Crocodile"],
    ),
    (
        "wallets",
        "长款钱包",
        "Long Wallet",
        6_900,
        &["均码 One Size"],
        &["小牛皮 Calfskin"],
    ),
    (
        "card-holders",
        "卡夹",
        "Card Holder",
        3_200,
        &["均码 One Size"],
        &["粒面皮 Grained Leather"],
    ),
    (
        "womenswear",
        "真丝衬衫",
        "Silk Blouse",
        11_500,
        &["34", "36", "38", "40"],
        &["真丝 Silk"],
    ),
    (
        "menswear",
        "羊绒大衣",
        "Cashmere Coat",
        39_800,
        &["48", "50", "52"],
        &["羊绒 Cashmere"],
    ),
    (
        "shoes",
        "芭蕾平底鞋",
        "Ballet Flat",
        7_600,
        &["36", "37", "38", "39"],
        &["漆皮 Patent Leather"],
    ),
    (
        "jewellery",
        "手镯",
        "Bangle",
        45_000,
        &["16cm", "17cm"],
        &["18K 金 18K Gold"],
    ),
    (
        "watches",
        "腕表",
        "Watch",
        88_000,
        &["34mm", "38mm"],
        &["精钢 Steel", "玫瑰金 Rose Gold"],
    ),
    (
        "silk-scarves",
        "方巾",
        "Silk Twill Scarf",
        3_800,
        &["90cm"],
        &["斜纹真丝 Silk Twill"],
    ),
    (
        "fragrance",
        "香水",
        "Eau de Parfum",
        2_100,
        &["50ml", "100ml"],
        &["玻璃瓶 Glass Flacon"],
    ),
];

const COLORS: &[&str] = &[
    "象牙白 Ivory",
    "墨黑 Black",
    "朱砂红 Cinnabar",
    "黛青 Indigo",
    "驼色 Camel",
    "金色 Gold",
];
const TAGS: &[&str] = &["new", "bestseller", "limited", "exclusive", "gift"];

struct SeedProduct {
    slug: String,
    name_zh: String,
    name_en: String,
    description_zh: String,
    description_en: String,
    status: &'static str,
    rank: i32,
    categories: Vec<&'static str>,
    tags: Vec<&'static str>,
    skus: Vec<SeedSku>,
}

struct SeedSku {
    code: String,
    color: String,
    size: String,
    material: String,
    price_fen: i64,
    stock: i32,
}

/// The deterministic demo assortment: 64 products (62 published, 2 drafts), ~220 SKUs.
fn assortment() -> Vec<SeedProduct> {
    let mut out = Vec::new();
    let mut n: usize = 0;
    for (line_ix, (line_slug, line_zh, line_en)) in LINES.iter().enumerate() {
        // every line carries 8 of the 12 items, rotating so each item appears in several lines
        for k in 0..8 {
            let item_ix = (line_ix * 5 + k) % ITEMS.len();
            let (cat, item_zh, item_en, base_yuan, sizes, materials) = ITEMS[item_ix];
            n += 1;
            let slug = format!("{line_slug}-{}", item_en.to_lowercase().replace(' ', "-"));
            if out.iter().any(|p: &SeedProduct| p.slug == slug) {
                continue;
            }
            let colors: Vec<&str> = (0..2)
                .map(|c| COLORS[(line_ix + item_ix + c * 2) % COLORS.len()])
                .collect();
            let mut skus_out = Vec::new();
            for (ci, color) in colors.iter().enumerate() {
                for (si, size) in sizes.iter().enumerate().take(2) {
                    let material = materials[(ci + si) % materials.len()];
                    let step = i64::try_from(si * 8 + ci * 5 + line_ix).unwrap_or(0);
                    let price_yuan = base_yuan + base_yuan * step / 100;
                    let stock = i32::try_from((n * 7 + ci * 3 + si * 11) % 23).unwrap_or(0);
                    skus_out.push(SeedSku {
                        code: format!("RZ-{:03}-{}{}", out.len() + 1, ci + 1, si + 1),
                        color: (*color).to_owned(),
                        size: (*size).to_owned(),
                        material: material.to_owned(),
                        price_fen: price_yuan * 100,
                        stock,
                    });
                }
            }
            let mut categories = vec![cat];
            if n.is_multiple_of(5) {
                categories.push("gifts");
            }
            let mut tags = vec![TAGS[n % TAGS.len()]];
            if n.is_multiple_of(3) {
                tags.push(TAGS[(n / 3) % TAGS.len()]);
            }
            tags.sort_unstable();
            tags.dedup();
            let status = if n.is_multiple_of(31) {
                "DRAFT"
            } else {
                "PUBLISHED"
            };
            out.push(SeedProduct {
                name_zh: format!("{line_zh}系列{item_zh}"),
                name_en: format!("{line_en} {item_en}"),
                description_zh: format!(
                    "{line_zh}系列{item_zh}，由巴黎与上海工坊匠人手工打造，每一件都附有编号证书。"
                ),
                description_en: format!(
                    "The {line_en} {item_en}, handcrafted by artisans in our Paris and Shanghai \
                     ateliers; each piece comes with a numbered certificate."
                ),
                slug,
                status,
                rank: i32::try_from(out.len() * 10).unwrap_or(i32::MAX),
                categories,
                tags,
                skus: skus_out,
            });
        }
    }
    out
}

/// Loads the demo catalog; a second run finds everything present and changes nothing.
pub async fn seed_demo_catalog(conn: &mut AsyncMysqlConnection) -> anyhow::Result<SeedSummary> {
    let products_in = assortment();
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        {
            // Categories: roots first, then children with their parent ids.
            for pass_roots in [true, false] {
                let existing = category_ids(&mut *conn).await?;
                let rows: Vec<_> = CATEGORIES
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.parent.is_none() == pass_roots)
                    .map(|(i, c)| {
                        (
                            categories::slug.eq(c.slug),
                            categories::name_zh.eq(c.zh),
                            categories::name_en.eq(c.en),
                            categories::parent_id
                                .eq(c.parent.and_then(|p| existing.get(p).copied())),
                            categories::position.eq(i32::try_from(i).unwrap_or(0)),
                        )
                    })
                    .collect();
                diesel::insert_or_ignore_into(categories::table)
                    .values(&rows)
                    .execute(conn)
                    .await?;
            }
            let category_ids = category_ids(conn).await?;

            let product_rows: Vec<_> = products_in
                .iter()
                .map(|p| {
                    let min = p.skus.iter().map(|s| s.price_fen).min().unwrap_or(0);
                    let max = p.skus.iter().map(|s| s.price_fen).max().unwrap_or(0);
                    (
                        products::slug.eq(&p.slug),
                        products::name_zh.eq(&p.name_zh),
                        products::name_en.eq(&p.name_en),
                        products::description_zh.eq(&p.description_zh),
                        products::description_en.eq(&p.description_en),
                        products::status.eq(p.status),
                        products::rank_position.eq(p.rank),
                        products::price_min_fen.eq(min),
                        products::price_max_fen.eq(max),
                    )
                })
                .collect();
            diesel::insert_or_ignore_into(products::table)
                .values(&product_rows)
                .execute(conn)
                .await?;
            let slugs: Vec<&str> = products_in.iter().map(|p| p.slug.as_str()).collect();
            let product_ids: HashMap<String, u64> = products::table
                .filter(products::slug.eq_any(&slugs))
                .select((products::slug, products::id))
                .load::<(String, u64)>(conn)
                .await?
                .into_iter()
                .collect();

            let mut sku_rows = Vec::new();
            let mut image_rows = Vec::new();
            let mut link_rows = Vec::new();
            let mut tag_rows = Vec::new();
            for p in &products_in {
                let pid = product_ids[&p.slug];
                for (pos, s) in p.skus.iter().enumerate() {
                    sku_rows.push((
                        skus::product_id.eq(pid),
                        skus::code.eq(&s.code),
                        skus::color.eq(Some(&s.color)),
                        skus::size.eq(Some(&s.size)),
                        skus::material.eq(Some(&s.material)),
                        skus::price_fen.eq(s.price_fen),
                        skus::stock.eq(s.stock),
                        skus::position.eq(i32::try_from(pos).unwrap_or(0)),
                    ));
                }
                for pos in 0..3 {
                    image_rows.push((
                        product_images::product_id.eq(pid),
                        product_images::url.eq(format!(
                            "https://cdn.ruizhu.com/product/{}/{}.jpg",
                            p.slug,
                            pos + 1
                        )),
                        product_images::alt.eq(format!("{} {}", p.name_en, pos + 1)),
                        product_images::position.eq(pos),
                    ));
                }
                for cat in &p.categories {
                    link_rows.push((
                        product_categories::product_id.eq(pid),
                        product_categories::category_id.eq(category_ids[*cat]),
                    ));
                }
                for tag in &p.tags {
                    tag_rows.push((product_tags::product_id.eq(pid), product_tags::tag.eq(*tag)));
                }
            }
            diesel::insert_or_ignore_into(skus::table)
                .values(&sku_rows)
                .execute(conn)
                .await?;
            diesel::insert_or_ignore_into(product_images::table)
                .values(&image_rows)
                .execute(conn)
                .await?;
            diesel::insert_or_ignore_into(product_categories::table)
                .values(&link_rows)
                .execute(conn)
                .await?;
            diesel::insert_or_ignore_into(product_tags::table)
                .values(&tag_rows)
                .execute(conn)
                .await?;
            // seeded stock enters the inventory ledger once, so the ledger sums to the stock
            diesel::sql_query(
                "INSERT INTO inventory_ledger (sku_id, delta, reason, note) \
                 SELECT s.id, s.stock, 'initial', 'demo seed' FROM skus s \
                 WHERE s.stock <> 0 \
                 AND NOT EXISTS (SELECT 1 FROM inventory_ledger l WHERE l.sku_id = s.id)",
            )
            .execute(conn)
            .await?;

            Ok(SeedSummary {
                categories: categories::table.count().get_result(conn).await?,
                products: products::table.count().get_result(conn).await?,
                skus: skus::table.count().get_result(conn).await?,
                images: product_images::table.count().get_result(conn).await?,
            })
        }
    })
    .await
}

async fn category_ids(conn: &mut AsyncMysqlConnection) -> QueryResult<HashMap<String, u64>> {
    Ok(categories::table
        .select((categories::slug, categories::id))
        .load::<(String, u64)>(conn)
        .await?
        .into_iter()
        .collect())
}

/// Whether the catalog has no products yet (`serve` seeds the demo only then).
pub async fn catalog_is_empty(conn: &mut AsyncMysqlConnection) -> QueryResult<bool> {
    let n: i64 = products::table.count().get_result(conn).await?;
    Ok(n == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assortment_is_large_enough_and_unique() {
        let products = assortment();
        let published = products.iter().filter(|p| p.status == "PUBLISHED").count();
        assert!(published >= 60, "{published} published products");
        let skus: usize = products.iter().map(|p| p.skus.len()).sum();
        assert!(skus >= 200, "{skus} skus");
        let mut slugs: Vec<_> = products.iter().map(|p| &p.slug).collect();
        slugs.sort();
        slugs.dedup();
        assert_eq!(slugs.len(), products.len());
        let mut codes: Vec<_> = products
            .iter()
            .flat_map(|p| p.skus.iter().map(|s| &s.code))
            .collect();
        let total = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), total);
        assert!(CATEGORIES.len() >= 8);
    }
}
