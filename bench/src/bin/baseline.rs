//! `baseline`: the read-path suite's baselines (`bench/run.sh`), served by a plain axum router
//! with no middleware:
//!
//! - `/static/{first}`: the exact bytes `/graphql` answers to the suite's product-list query
//!   with that `first` (fetched from the running server once at start-up), and
//!   `/static/typename` the bytes of `{ __typename }`;
//! - `/serde/{first}`: the same list built into plain structs from the demo database once at
//!   start-up (products, SKUs and images, through `domain`, no cache) and serialized with
//!   serde_json on every request.
//!
//! Both read the request body like `/graphql` does. At start-up it checks that the serde_json
//! answer is byte-for-byte the GraphQL answer (so the comparison is over the same bytes) and
//! says so on standard output as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use clap::Parser;
use domain::catalog::{Catalog, ProductFilter, ProductSort};
use serde::Serialize;
use serde_json::json;

/// The suite's product-list query (also in `bench/run.sh`'s request files).
pub const LIST: &str = "query List($first: Int) { products(first: $first) { edges { node { id name nameEn priceRange { min { amount currency } max { amount currency } } skus { id code color size price { amount currency } available stockStatus } images { url alt } } } } }";

#[derive(Parser, Debug)]
#[command(about = "Baseline routes for the read-path benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The running server's GraphQL endpoint (source of the static bytes).
    #[arg(long)]
    graphql_url: String,
    /// The demo database.
    #[arg(long)]
    database_url: String,
    /// List sizes to serve.
    #[arg(long, value_delimiter = ',', default_value = "1,5,20,50")]
    sizes: Vec<usize>,
}

#[derive(Serialize)]
struct Answer<'a> {
    data: Data<'a>,
}
#[derive(Serialize)]
struct Data<'a> {
    products: Connection<'a>,
}
#[derive(Serialize)]
struct Connection<'a> {
    edges: &'a [Edge],
}
#[derive(Serialize)]
struct Edge {
    node: Node,
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    id: String,
    name: String,
    name_en: String,
    price_range: PriceRange,
    skus: Vec<SkuOut>,
    images: Vec<Image>,
}
#[derive(Serialize)]
struct PriceRange {
    min: Money,
    max: Money,
}
#[derive(Serialize)]
struct Money {
    amount: i64,
    currency: &'static str,
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SkuOut {
    id: String,
    code: String,
    color: Option<String>,
    size: Option<String>,
    price: Money,
    available: bool,
    stock_status: &'static str,
}
#[derive(Serialize)]
struct Image {
    url: String,
    alt: String,
}

fn gid(kind: &str, id: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

fn cny(amount: i64) -> Money {
    Money {
        amount,
        currency: "CNY",
    }
}

/// The first `max` products as the API lists them to a signed-out caller, with their SKUs and
/// images: what the resolvers compute, without GraphQL.
async fn load(catalog: &Catalog, max: usize) -> anyhow::Result<Vec<Edge>> {
    let filter = ProductFilter {
        viewer_rank: Some(0),
        ..ProductFilter::default()
    };
    let products = catalog
        .list_products(&filter, ProductSort::Featured, None, max as i64)
        .await?;
    let ids: Vec<u64> = products.iter().map(|p| p.id).collect();
    let skus = catalog.skus(&ids).await?;
    let images = catalog.images(&ids).await?;
    Ok(products
        .into_iter()
        .map(|p| Edge {
            node: Node {
                id: gid("Product", p.id),
                price_range: PriceRange {
                    min: cny(p.price_min_fen),
                    max: cny(p.price_max_fen),
                },
                skus: skus
                    .get(&p.id)
                    .map(|list| {
                        list.iter()
                            .filter(|s| s.status == domain::catalog::SKU_ACTIVE)
                            .map(|s| SkuOut {
                                id: gid("Sku", s.id),
                                code: s.code.clone(),
                                color: s.color.clone(),
                                size: s.size.clone(),
                                price: cny(s.price_fen),
                                available: s.is_available(),
                                stock_status: match s.stock {
                                    s if s <= 0 => "OUT_OF_STOCK",
                                    s if s <= 3 => "LOW_STOCK",
                                    _ => "IN_STOCK",
                                },
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                images: images
                    .get(&p.id)
                    .map(|list| {
                        list.iter()
                            .map(|i| Image {
                                url: i.url.clone(),
                                alt: i.alt.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                name: p.name_zh,
                name_en: p.name_en,
            },
        })
        .collect())
}

struct Baselines {
    static_bytes: HashMap<String, Bytes>,
    edges: HashMap<usize, Vec<Edge>>,
}

fn json_response(body: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn static_route(
    State(b): State<Arc<Baselines>>,
    Path(which): Path<String>,
    _body: Bytes,
) -> Response {
    match b.static_bytes.get(&which) {
        Some(bytes) => json_response(bytes.clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serde_route(
    State(b): State<Arc<Baselines>>,
    Path(first): Path<usize>,
    _body: Bytes,
) -> Response {
    let Some(edges) = b.edges.get(&first) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let answer = Answer {
        data: Data {
            products: Connection { edges },
        },
    };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => json_response(Bytes::from(bytes)),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let mut static_bytes = HashMap::new();
    let typename = client
        .post(&args.graphql_url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await?
        .bytes()
        .await?;
    static_bytes.insert("typename".to_owned(), typename);

    let db = domain::db::Db::new(&domain::db::DbSettings {
        url: secrecy::SecretString::from(args.database_url.clone()),
        pool_size: 2,
        ..domain::db::DbSettings::default()
    })?;
    let redis = domain::redis::Redis::new(&domain::redis::RedisSettings::default())?;
    let cache = domain::cache::Cache::new(
        redis,
        &domain::cache::CacheSettings {
            enabled: false,
            ..domain::cache::CacheSettings::default()
        },
    )?;
    let catalog = Catalog::new(db, cache);
    let mut edges = HashMap::new();
    let mut identical = serde_json::Map::new();
    for &first in &args.sizes {
        let graphql = client
            .post(&args.graphql_url)
            .json(&json!({ "query": LIST, "variables": { "first": first } }))
            .send()
            .await?
            .bytes()
            .await?;
        anyhow::ensure!(
            graphql.starts_with(b"{\"data\":"),
            "the list query failed: {}",
            String::from_utf8_lossy(&graphql)
        );
        let list = load(&catalog, first).await?;
        let serialized = serde_json::to_vec(&Answer {
            data: Data {
                products: Connection { edges: &list },
            },
        })?;
        identical.insert(first.to_string(), json!(serialized == graphql.as_ref()));
        if serialized != graphql.as_ref() {
            eprintln!(
                "baseline: serde_json answer for first={first} differs from the GraphQL one ({} vs {} bytes)",
                serialized.len(),
                graphql.len()
            );
        }
        static_bytes.insert(first.to_string(), graphql.clone());
        edges.insert(first, list);
    }
    let sizes: serde_json::Map<String, serde_json::Value> = static_bytes
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.len())))
        .collect();
    #[allow(clippy::print_stdout)] // the report is the output
    {
        println!(
            "{}",
            json!({ "serde_identical_to_graphql": identical, "bytes": sizes })
        );
    }
    let state = Arc::new(Baselines {
        static_bytes,
        edges,
    });
    let router = Router::new()
        .route("/static/{which}", any(static_route))
        .route("/serde/{first}", any(serde_route))
        .with_state(state);
    // TCP_NODELAY as `ruizhu serve` sets it
    let listener = axum::serve::ListenerExt::tap_io(
        tokio::net::TcpListener::bind(&args.listen).await?,
        |tcp| {
            let _ = tcp.set_nodelay(true);
        },
    );
    axum::serve(listener, router).await?;
    Ok(())
}
