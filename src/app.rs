//! The application state, built once: pools, cache, domain services and the GraphQL schema.

use std::sync::Arc;
use std::time::Duration;

use domain::apq::PersistedQueries;
use domain::cache::Cache;
use domain::cart::Carts;
use domain::catalog::Catalog;
use domain::consultation::Consultations;
use domain::crypto::{BlindIndex, FieldCipher};
use domain::db::Db;
use domain::events::bus::Bus;
use domain::events::consumers::Consumers;
use domain::events::hub::EventHub;
use domain::events::relay::Relay;
use domain::identity::{Identity, TokenKeys};
use domain::membership::Membership;
use domain::order::Orders;
use domain::partner::Partners;
use domain::payment::{PaymentMode, Payments};
use domain::ratelimit::RateLimiter;
use domain::redis::Redis;
use domain::wechat::WechatClient;
use domain::wechatpay::WechatPay;
use metrics_exporter_prometheus::PrometheusHandle;
use resolvers::limits::Limits;
use resolvers::{ApiSchema, Loaders, Observe};

use crate::config::Settings;
use crate::telemetry;

/// Everything a request handler needs, shared by all of them.
pub struct App {
    /// The settings the process started with.
    pub settings: Settings,
    /// MySQL.
    pub db: Db,
    /// Redis (allowed to be down).
    pub redis: Redis,
    /// Redis-backed cache.
    pub cache: Cache,
    /// Catalog reads.
    pub catalog: Catalog,
    /// Logins, sessions, members, staff.
    pub identity: Identity,
    /// Checkout and the order lifecycle.
    pub orders: Orders,
    /// Carts.
    pub carts: Carts,
    /// Tiers, points and coupons.
    pub membership: Membership,
    /// VIP consultations.
    pub consultations: Consultations,
    /// WeChat Pay prepays, notifications, refunds.
    pub payments: Payments,
    /// Automatic persisted queries of `/graphql`.
    pub apq: PersistedQueries,
    /// Whole answers of hot catalog queries on `/graphql`.
    pub responses: crate::http::response_cache::Responses,
    /// Partners of `/partner/graphql` and their registered operations.
    pub partners: Partners,
    /// Rate-limit buckets (Redis, with in-process fallbacks).
    pub rate_limiter: RateLimiter,
    /// Events: the transport (Kafka or in-process).
    pub bus: Bus,
    /// The outbox relay.
    pub relay: Relay,
    /// This process's fan-out to subscriptions.
    pub hub: EventHub,
    /// The event consumers (started by `serve`/workers).
    pub consumers: Consumers,
    /// The executable GraphQL schema for `/graphql` callers who are not staff (and WebSocket):
    /// field suggestions as configured (off in production).
    pub schema: ApiSchema,
    /// The same schema for staff: suggestions always on.
    pub staff_schema: ApiSchema,
    /// The same schema for `/partner/graphql`: introspection and suggestions off.
    pub partner_schema: ApiSchema,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
}

impl App {
    /// Builds the state. Opens no connection: MySQL and Redis are reached on first use.
    pub fn build(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let db = Db::new(&settings.database)?;
        let redis = Redis::new(&settings.redis)?;
        let cache = Cache::new(redis.clone(), &settings.cache)?;
        let catalog = Catalog::new(db.clone(), cache.clone());
        let wechat = WechatClient::new(&settings.wechat, redis.clone())?;
        let apq = PersistedQueries::new(redis.clone(), 10_000);
        let bus = Bus::new(&settings.kafka)?;
        let relay = Relay::new(db.clone(), bus.clone(), settings.kafka.relay_batch);
        let hub = EventHub::default();
        let membership = Membership::new(db.clone(), settings.membership.clone());
        let consumers = Consumers {
            bus: bus.clone(),
            db: db.clone(),
            catalog: catalog.clone(),
            wechat: wechat.clone(),
            settings: settings.notifications.clone(),
            hub: hub.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            membership: membership.clone(),
        };
        let identity = Identity::new(
            db.clone(),
            redis.clone(),
            TokenKeys::new(&settings.jwt)?,
            FieldCipher::new(&settings.crypto)?,
            BlindIndex::new(&settings.crypto)?,
            wechat,
            settings.auth.clone(),
        );
        let cipher = FieldCipher::new(&settings.crypto)?;
        let orders = Orders::new(
            db.clone(),
            cipher,
            catalog.clone(),
            membership.clone(),
            settings.orders.clone(),
        );
        let carts = Carts::new(db.clone());
        let consultations = Consultations::new(db.clone(), settings.consultations.clone());
        let mode = if settings.wechatpay.merchant_configured() {
            PaymentMode::Merchant(WechatPay::new(
                &settings.wechatpay,
                &settings.wechat.app_id,
            )?)
        } else if settings.dev_payments() {
            PaymentMode::Development {
                app_id: settings.wechat.app_id.clone(),
            }
        } else {
            PaymentMode::Disabled
        };
        let payments = Payments::new(db.clone(), orders.clone(), mode, settings.wechatpay.clone());
        let rate_limiter = RateLimiter::new(redis.clone());
        let partners = Partners::new(
            db.clone(),
            Duration::from_millis(settings.partners.cache_ttl_ms),
        );
        let limits = settings.graphql.limits();
        let limits_extension = Limits::new(
            limits.clone(),
            &resolvers::sdl(),
            Some(settings.rate_limits.clone()),
        );
        // three schemas over the same types and services, differing only in what callers may
        // learn about the schema itself
        let builder = |limits_extension: Limits| {
            resolvers::schema_builder()
                .data(catalog.clone())
                .data(identity.clone())
                .data(orders.clone())
                .data(carts.clone())
                .data(payments.clone())
                .data(membership.clone())
                .data(consultations.clone())
                .data(hub.clone())
                .data(consumers.clone())
                .data(rate_limiter.clone())
                .data(Loaders::new(
                    resolvers::loaders::Sources {
                        catalog: catalog.clone(),
                        identity: identity.clone(),
                        orders: orders.clone(),
                        carts: carts.clone(),
                        payments: payments.clone(),
                        membership: membership.clone(),
                        consultations: consultations.clone(),
                    },
                    Duration::from_micros(settings.graphql.loader_delay_us),
                    settings.graphql.loader_at_poll_end,
                ))
                .extension(Observe)
                .extension(limits_extension)
                // the Limits extension bounds nesting first, with its own error code
                .limit_recursive_depth(limits.max_nesting() + 2)
        };
        let staff_schema = builder(limits_extension.introspection(true)).finish();
        let schema = match (settings.introspection(), settings.suggestions()) {
            (true, true) => staff_schema.clone(),
            (introspection, suggestions) => {
                let mut b = builder(limits_extension.introspection(introspection));
                if !introspection {
                    b = b.disable_introspection();
                }
                if !suggestions {
                    b = b.disable_suggestions();
                }
                b.finish()
            }
        };
        let partner_schema = builder(limits_extension.introspection(false))
            .disable_introspection()
            .disable_suggestions()
            .finish();
        let responses = crate::http::response_cache::responses(&settings.cache);
        Ok(Arc::new(Self {
            settings,
            db,
            redis,
            cache,
            catalog,
            identity,
            orders,
            carts,
            membership,
            consultations,
            payments,
            apq,
            responses,
            partners,
            rate_limiter,
            bus,
            relay,
            hub,
            consumers,
            schema,
            staff_schema,
            partner_schema,
            metrics: telemetry::metrics_handle(),
        }))
    }
}

/// Creates and migrates the database when configured to, then seeds the demo catalog into an
/// empty database when configured to. What `serve` does before it listens.
pub async fn prepare_database(settings: &Settings, db: &Db) -> anyhow::Result<()> {
    if settings.auto_migrate() {
        domain::db::create_database_if_missing(&settings.database.url).await?;
        let applied = domain::db::run_migrations(&settings.database.url).await?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied migrations");
        }
    }
    if settings.demo_seed() {
        let mut conn = db.conn().await?;
        if domain::catalog::seed::catalog_is_empty(&mut conn).await? {
            let summary = domain::catalog::seed::seed_demo_catalog(&mut conn).await?;
            domain::membership::seed::seed_demo_membership(&mut conn).await?;
            tracing::info!(?summary, "seeded the demo catalog");
        }
    }
    Ok(())
}
