//! `extensions`: what the production schema extensions (`Observe`: operation metrics and
//! records; `Limits`: depth, complexity, aliases, root fields, directives, tokens, rate limits)
//! cost per request, in process, on the suite's product-list query: the production schema of
//! `App::build` against the same schema built over the same services without extensions.
//! Alternates the two `--runs` times (`--iterations` sequential requests each, data caches
//! warm) and prints the per-request times and their medians as JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use resolvers::auth::{ClientInfo, Viewer};
use resolvers::{ApiSchema, Loaders, OperationInfo};
use serde_json::json;

const LIST: &str = "query List($first: Int) { products(first: $first) { edges { node { id name nameEn priceRange { min { amount currency } max { amount currency } } skus { id code color size price { amount currency } available stockStatus } images { url alt } } } } }";

#[derive(Parser, Debug)]
struct Args {
    /// The demo database.
    #[arg(long)]
    database_url: String,
    /// Redis key prefix (the suite's own).
    #[arg(long, default_value = "rz-bench-ext:")]
    redis_prefix: String,
    /// List size.
    #[arg(long, default_value_t = 20)]
    first: i32,
    /// Requests per measurement.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Alternating measurements of each schema.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

async fn per_request(schema: &ApiSchema, first: i32, iterations: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..iterations {
        let request = async_graphql::Request::new(LIST)
            .variables(async_graphql::Variables::from_json(
                json!({ "first": first }),
            ))
            .data(OperationInfo::new(false))
            .data(Viewer::Anonymous)
            .data(ClientInfo::default());
        // the bare schema has no `Observe` to send DataLoader batches at the end of each poll:
        // the same scope around both keeps batching equal, so only the extensions differ
        let response = resolvers::batch::flush_scope(schema.execute(request)).await;
        anyhow::ensure!(response.errors.is_empty(), "{:?}", response.errors);
    }
    Ok(started.elapsed() / iterations)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = ruizhu::config::Settings::default();
    settings.database.url = secrecy::SecretString::from(args.database_url.clone());
    settings.redis.key_prefix = args.redis_prefix.clone();
    let app = ruizhu::app::App::build(settings)?;
    let bare: ApiSchema = resolvers::schema_builder()
        .data(app.catalog.clone())
        .data(app.identity.clone())
        .data(app.orders.clone())
        .data(app.carts.clone())
        .data(app.payments.clone())
        .data(app.membership.clone())
        .data(app.consultations.clone())
        .data(app.hub.clone())
        .data(app.consumers.clone())
        .data(app.rate_limiter.clone())
        .data(Loaders::new(
            resolvers::loaders::Sources {
                catalog: app.catalog.clone(),
                identity: app.identity.clone(),
                orders: app.orders.clone(),
                carts: app.carts.clone(),
                payments: app.payments.clone(),
                membership: app.membership.clone(),
                consultations: app.consultations.clone(),
            },
            Duration::from_micros(app.settings.graphql.loader_delay_us),
            app.settings.graphql.loader_at_poll_end,
        ))
        .finish();
    let production = Arc::new(app.schema.clone());
    // warm the data caches and both code paths
    per_request(&production, args.first, 200).await?;
    per_request(&bare, args.first, 200).await?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        with.push(
            per_request(&production, args.first, args.iterations)
                .await?
                .as_secs_f64()
                * 1e6,
        );
        without.push(
            per_request(&bare, args.first, args.iterations)
                .await?
                .as_secs_f64()
                * 1e6,
        );
    }
    let (w, wo) = (median(with.clone()), median(without.clone()));
    #[allow(clippy::print_stdout)] // the report is the output
    {
        println!(
            "{}",
            json!({
                "first": args.first,
                "iterations": args.iterations,
                "with_extensions_us": { "runs": with, "median": w },
                "without_extensions_us": { "runs": without, "median": wo },
                "overhead": w / wo - 1.0,
            })
        );
    }
    Ok(())
}
