//! Typed, layered configuration: built-in defaults → optional TOML file → `RUIZHU_…` environment
//! (nested keys joined by `__`, e.g. `RUIZHU_DATABASE__URL`). Secrets are `SecretString`s, so
//! printing the settings never shows them. Production refuses development-only switches.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use domain::cache::CacheSettings;
use domain::consultation::ConsultationSettings;
use domain::crypto::CryptoSettings;
use domain::db::DbSettings;
use domain::events::KafkaSettings;
use domain::events::consumers::NotificationSettings;
use domain::identity::{AuthSettings, JwtSettings};
use domain::membership::MembershipSettings;
use domain::order::OrderSettings;
use domain::ratelimit::RateLimitSettings;
use domain::redis::RedisSettings;
use domain::wechat::WechatSettings;
use domain::wechatpay::WechatPaySettings;
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

/// Where the process runs; `production` turns development conveniences off and refuses to
/// start when one is switched on explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer machine (the default).
    #[default]
    Development,
    /// Automated tests.
    Test,
    /// The real thing.
    Production,
}

/// All settings of the process.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `RUIZHU_ENV`: development (default), test or production.
    pub env: Environment,
    /// `[http]`: listener and request limits.
    pub http: HttpSettings,
    /// `[database]`: MySQL.
    pub database: DbSettings,
    /// `[redis]`: Redis.
    pub redis: RedisSettings,
    /// `[cache]`: cache layers.
    pub cache: CacheSettings,
    /// `[graphql]`: GraphQL execution and operation limits.
    pub graphql: GraphqlSettings,
    /// `[rate_limits]`: per-partner, per-member and per-address rate limits.
    pub rate_limits: RateLimitSettings,
    /// `[partners]`: the partner endpoint.
    pub partners: PartnerSettings,
    /// `[jwt]`: access and refresh tokens.
    pub jwt: JwtSettings,
    /// `[auth]`: login behaviour.
    pub auth: AuthSettings,
    /// `[wechat]`: the mini-program's WeChat APIs.
    pub wechat: WechatSettings,
    /// `[wechatpay]`: the WeChat Pay merchant.
    pub wechatpay: WechatPaySettings,
    /// `[kafka]`: the event transport (unset brokers = in-process events).
    pub kafka: KafkaSettings,
    /// `[notifications]`: WeChat subscription messages and shipping uploads.
    pub notifications: NotificationSettings,
    /// `[crypto]`: keys for personal data.
    pub crypto: CryptoSettings,
    /// `[orders]`: checkout and the order lifecycle.
    pub orders: OrderSettings,
    /// `[membership]`: points, shipping fee and tier qualification.
    pub membership: MembershipSettings,
    /// `[consultations]`: VIP consultations.
    pub consultations: ConsultationSettings,
    /// `[workers]`: process roles.
    pub workers: WorkerSettings,
    /// `[seed]`: demo data.
    pub seed: SeedSettings,
    /// `[log]`: logging.
    pub log: LogSettings,
}

/// `[http]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Serve GraphiQL at `/graphiql`.
    pub graphiql: bool,
    /// How long in-flight requests may finish after SIGTERM before the process exits, in ms.
    pub shutdown_grace_ms: u64,
    /// A WebSocket must send `connection_init` within this many ms (else closed 4408).
    pub ws_init_timeout_ms: u64,
    /// Most subscriptions one WebSocket may have running at once.
    pub ws_max_subscriptions: usize,
    /// WebSocket ping interval in ms; a peer silent for two intervals is disconnected.
    pub ws_ping_interval_ms: u64,
    /// Reverse proxies in front of the service whose `X-Forwarded-For` entries are trusted for
    /// the caller's address (0: the TCP peer is the caller; 1: one ingress).
    pub trusted_proxy_hops: usize,
    /// Every HTTP request is answered within this many ms: past it the work is dropped (an
    /// open transaction rolls back) and the caller gets 503 `SERVICE_UNAVAILABLE` (`reason: TIMEOUT`), safe to retry with the
    /// same idempotency key. WebSocket sessions are not bounded by it, only their upgrade.
    pub request_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            body_limit_bytes: 64 * 1024,
            graphiql: true,
            shutdown_grace_ms: 10_000,
            ws_init_timeout_ms: 10_000,
            ws_max_subscriptions: 20,
            ws_ping_interval_ms: 15_000,
            trusted_proxy_hops: 0,
            request_timeout_ms: 10_000,
        }
    }
}

/// `[graphql]` settings: execution and the limits every document is held to (on `/graphql`,
/// `/graphql/ws` and `/partner/graphql`, before any resolver runs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlSettings {
    /// How long a DataLoader batch waits to gather keys, in microseconds, when it is not sent at
    /// the end of the operation's poll (`loader_at_poll_end` off, or a batch opened outside an
    /// operation).
    pub loader_delay_us: u64,
    /// Send a DataLoader batch when the poll of the operation that opened it ends (no timer);
    /// off: every batch waits `loader_delay_us` on the runtime's 1 ms timer, as async-graphql's
    /// own DataLoader does.
    pub loader_at_poll_end: bool,
    /// Deepest field nesting (`DEPTH_LIMIT_EXCEEDED`).
    pub max_depth: usize,
    /// Largest cost: each field 1 plus its children times `first`/`last`, or `list_size` for
    /// other lists (`COMPLEXITY_LIMIT_EXCEEDED`).
    pub max_complexity: u64,
    /// Most aliases in a document (`ALIAS_LIMIT_EXCEEDED`).
    pub max_aliases: usize,
    /// Most root fields in an operation (`ROOT_FIELD_LIMIT_EXCEEDED`).
    pub max_root_fields: usize,
    /// Most directives on one field (`DIRECTIVE_LIMIT_EXCEEDED`).
    pub max_directives_per_field: usize,
    /// Most directives in a document (`DIRECTIVE_LIMIT_EXCEEDED`).
    pub max_directives: usize,
    /// Most lexical tokens in a document, counted before parsing (`TOKEN_LIMIT_EXCEEDED`).
    pub max_tokens: usize,
    /// Multiplier of a list field without `first`/`last` in the cost.
    pub list_size: u64,
    /// Introspection on `/graphql` for callers who are not staff. Development switch: defaults
    /// to on outside production; refused in production (staff always have it).
    pub introspection: Option<bool>,
    /// "Did you mean …" suggestions in validation errors on `/graphql` for callers who are not
    /// staff; same default and production rule as `introspection`.
    pub suggestions: Option<bool>,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        let limits = resolvers::limits::OperationLimits::default();
        Self {
            loader_delay_us: 200,
            loader_at_poll_end: true,
            max_depth: limits.max_depth,
            max_complexity: limits.max_complexity,
            max_aliases: limits.max_aliases,
            max_root_fields: limits.max_root_fields,
            max_directives_per_field: limits.max_directives_per_field,
            max_directives: limits.max_directives,
            max_tokens: limits.max_tokens,
            list_size: limits.list_size,
            introspection: None,
            suggestions: None,
        }
    }
}

impl GraphqlSettings {
    /// The limits as the `Limits` extension takes them.
    pub fn limits(&self) -> resolvers::limits::OperationLimits {
        resolvers::limits::OperationLimits {
            max_depth: self.max_depth,
            max_complexity: self.max_complexity,
            max_aliases: self.max_aliases,
            max_root_fields: self.max_root_fields,
            max_directives_per_field: self.max_directives_per_field,
            max_directives: self.max_directives,
            max_tokens: self.max_tokens,
            list_size: self.list_size,
        }
    }
}

/// `[partners]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartnerSettings {
    /// How long each replica keeps partners and their operations in memory, in ms: a
    /// revocation or a newly registered manifest takes effect everywhere within this time.
    pub cache_ttl_ms: u64,
}

impl Default for PartnerSettings {
    fn default() -> Self {
        Self {
            cache_ttl_ms: 5_000,
        }
    }
}

/// `[workers]` settings: which process runs the background work.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// `serve` also runs the workers (single node; the default). Set to false when
    /// `ruizhu worker` processes run them.
    pub in_serve: bool,
    /// Where `ruizhu worker` serves `/healthz`, `/readyz` and `/metrics`.
    pub addr: SocketAddr,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            in_serve: true,
            addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// `[seed]` settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SeedSettings {
    /// Load the demo catalog at `serve` when the catalog is empty. Development switch: defaults
    /// to on outside production; refused in production.
    pub demo: Option<bool>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for ELK); the production default.
    Json,
    /// Human-readable lines; the development default.
    Pretty,
}

/// `[log]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `json` or `pretty`; defaults by environment.
    pub format: Option<LogFormat>,
    /// A `tracing` filter, e.g. `info` or `info,ruizhu=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: None,
            level: "info".to_owned(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` (or `./ruizhu.toml` when it exists), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new("ruizhu.toml").exists() => {
                figment = figment.merge(Toml::file("ruizhu.toml"));
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("RUIZHU_").split("__").ignore(&["config"]));
        let settings: Settings = figment.extract().context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses combinations that must never run, such as development switches in production.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.is_production() {
            anyhow::ensure!(
                self.seed.demo != Some(true),
                "RUIZHU_SEED__DEMO=true is a development switch and is refused in production"
            );
            anyhow::ensure!(
                !self.auth.dev_login,
                "RUIZHU_AUTH__DEV_LOGIN=true is a development switch and is refused in production"
            );
            anyhow::ensure!(
                self.jwt.secret.expose_secret() != domain::identity::tokens::DEV_JWT_SECRET,
                "set RUIZHU_JWT__SECRET: the development signing key is refused in production"
            );
            anyhow::ensure!(
                self.jwt.secondary_secret.as_ref().is_none_or(|k| {
                    k.expose_secret() != domain::identity::tokens::DEV_JWT_SECRET
                }),
                "RUIZHU_JWT__SECONDARY_SECRET: the development signing key is refused in production"
            );
            anyhow::ensure!(
                !self.crypto.uses_development_keys(),
                "set RUIZHU_CRYPTO__FIELD_KEYS__* and RUIZHU_CRYPTO__BLIND_INDEX_KEY: development keys are refused in production"
            );
            anyhow::ensure!(
                !self.wechat.app_secret.expose_secret().is_empty(),
                "set RUIZHU_WECHAT__APP_SECRET"
            );
            anyhow::ensure!(
                self.wechatpay.dev_payments != Some(true),
                "RUIZHU_WECHATPAY__DEV_PAYMENTS=true is a development switch and is refused in production"
            );
            anyhow::ensure!(
                self.graphql.introspection != Some(true) && self.graphql.suggestions != Some(true),
                "RUIZHU_GRAPHQL__INTROSPECTION/__SUGGESTIONS=true are development switches and are refused in production (staff have both)"
            );
            anyhow::ensure!(
                self.wechatpay.merchant_configured(),
                "set RUIZHU_WECHATPAY__MCH_ID and the other RUIZHU_WECHATPAY__* merchant settings"
            );
        }
        self.wechatpay.validate(self.is_production())?;
        anyhow::ensure!(
            self.http.body_limit_bytes >= 1024,
            "http.body_limit_bytes must be ≥ 1024"
        );
        anyhow::ensure!(
            self.database.pool_size >= 1,
            "database.pool_size must be ≥ 1"
        );
        let g = &self.graphql;
        anyhow::ensure!(
            g.max_depth >= 2
                && g.max_complexity >= 1
                && g.max_root_fields >= 1
                && g.max_tokens >= 16
                && g.list_size >= 1,
            "graphql limits: max_depth ≥ 2, max_complexity ≥ 1, max_root_fields ≥ 1, max_tokens ≥ 16, list_size ≥ 1"
        );
        let r = &self.rate_limits;
        anyhow::ensure!(
            [
                r.member_burst,
                r.member_per_minute,
                r.ip_burst,
                r.ip_per_minute,
                r.partner_burst,
                r.partner_per_minute
            ]
            .iter()
            .all(|n| *n >= 1),
            "rate_limits: every burst and per_minute is ≥ 1 (set rate_limits.enabled = false to turn them off)"
        );
        Ok(())
    }

    /// Whether this is production.
    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Whether `serve` loads the demo catalog into an empty database.
    pub fn demo_seed(&self) -> bool {
        self.seed.demo.unwrap_or(!self.is_production())
    }

    /// Whether payments run in development mode (no merchant configured, switch on).
    pub fn dev_payments(&self) -> bool {
        !self.wechatpay.merchant_configured()
            && self.wechatpay.dev_payments.unwrap_or(!self.is_production())
    }

    /// Whether callers who are not staff may introspect `/graphql`.
    pub fn introspection(&self) -> bool {
        self.graphql.introspection.unwrap_or(!self.is_production())
    }

    /// Whether callers who are not staff get field suggestions on `/graphql`.
    pub fn suggestions(&self) -> bool {
        self.graphql.suggestions.unwrap_or(!self.is_production())
    }

    /// Whether `serve` creates the database and applies migrations.
    pub fn auto_migrate(&self) -> bool {
        self.database.auto_migrate.unwrap_or(!self.is_production())
    }

    /// The log format in force.
    pub fn log_format(&self) -> LogFormat {
        self.log.format.unwrap_or(if self.is_production() {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn environment_overrides_file_and_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ruizhu.toml",
                "[http]\naddr = \"127.0.0.1:9000\"\nbody_limit_bytes = 4096\n",
            )?;
            jail.set_env("RUIZHU_HTTP__BODY_LIMIT_BYTES", "8192");
            jail.set_env(
                "RUIZHU_DATABASE__URL",
                "mysql://app:s3cr3t-pw@db:3306/ruizhu",
            );
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.http.addr.port(), 9000);
            assert_eq!(s.http.body_limit_bytes, 8192);
            assert_eq!(s.redis.key_prefix, "ruizhu:");
            assert!(
                !format!("{s:?}").contains("s3cr3t-pw"),
                "secrets must never print"
            );
            Ok(())
        });
    }

    #[test]
    fn production_refuses_development_switches() {
        Jail::expect_with(|jail| {
            jail.set_env("RUIZHU_ENV", "production");
            // production without its own keys does not start
            let err = Settings::load(None).expect_err("development keys must be refused");
            assert!(err.to_string().contains("RUIZHU_JWT__SECRET"), "{err}");
            jail.set_env(
                "RUIZHU_JWT__SECRET",
                "production-secret-of-at-least-32-bytes-long",
            );
            jail.set_env(
                "RUIZHU_CRYPTO__FIELD_KEYS__P1",
                "cHJvZHVjdGlvbi1maWVsZC1rZXktMzItYnl0ZXMhISE=",
            );
            jail.set_env("RUIZHU_CRYPTO__ACTIVE_FIELD_KEY", "p1");
            jail.set_env(
                "RUIZHU_CRYPTO__BLIND_INDEX_KEY",
                "cHJvZHVjdGlvbi1pbmRleC1rZXktMzItYnl0ZXMhISE=",
            );
            let err = Settings::load(None).expect_err("a WeChat secret is required");
            assert!(
                err.to_string().contains("RUIZHU_WECHAT__APP_SECRET"),
                "{err}"
            );
            jail.set_env("RUIZHU_WECHAT__APP_SECRET", "wechat-app-secret");
            let err = Settings::load(None).expect_err("a merchant is required");
            assert!(
                err.to_string().contains("RUIZHU_WECHATPAY__MCH_ID"),
                "{err}"
            );
            jail.set_env("RUIZHU_WECHATPAY__MCH_ID", "1900000001");
            jail.set_env(
                "RUIZHU_WECHATPAY__MERCHANT_KEY_PATH",
                "/run/secrets/apiclient_key.pem",
            );
            jail.set_env(
                "RUIZHU_WECHATPAY__MERCHANT_SERIAL",
                "5157F09EFDC096DE15EBE81A47057A72",
            );
            jail.set_env(
                "RUIZHU_WECHATPAY__PLATFORM_PUBLIC_KEY_PATH",
                "/run/secrets/pub_key.pem",
            );
            jail.set_env(
                "RUIZHU_WECHATPAY__PLATFORM_KEY_ID",
                "PUB_KEY_ID_0114232134912410000000000000",
            );
            jail.set_env(
                "RUIZHU_WECHATPAY__APIV3_KEY",
                "0123456789abcdef0123456789abcdef",
            );
            jail.set_env(
                "RUIZHU_WECHATPAY__NOTIFY_URL",
                "http://bff.example.com/webhooks/wechatpay/notify",
            );
            let err = Settings::load(None).expect_err("notify over plain http is refused");
            assert!(format!("{err:#}").contains("https"), "{err:#}");
            jail.set_env(
                "RUIZHU_WECHATPAY__NOTIFY_URL",
                "https://bff.example.com/webhooks/wechatpay/notify",
            );
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(!s.dev_payments());
            assert!(
                !format!("{s:?}").contains("0123456789abcdef0123456789abcdef"),
                "the APIv3 key must never print"
            );
            assert!(!s.demo_seed() && !s.auto_migrate());
            assert_eq!(s.log_format(), LogFormat::Json);
            assert!(!s.introspection() && !s.suggestions());
            jail.set_env("RUIZHU_GRAPHQL__INTROSPECTION", "true");
            let err = Settings::load(None).expect_err("introspection must be refused");
            assert!(err.to_string().contains("INTROSPECTION"));
            jail.set_env("RUIZHU_GRAPHQL__INTROSPECTION", "false");
            jail.set_env("RUIZHU_SEED__DEMO", "true");
            let err = Settings::load(None).expect_err("demo seed must be refused in production");
            assert!(err.to_string().contains("refused in production"));
            jail.set_env("RUIZHU_SEED__DEMO", "false");
            jail.set_env("RUIZHU_AUTH__DEV_LOGIN", "true");
            let err = Settings::load(None).expect_err("dev login must be refused in production");
            assert!(err.to_string().contains("DEV_LOGIN"));
            jail.set_env("RUIZHU_AUTH__DEV_LOGIN", "false");
            jail.set_env("RUIZHU_WECHATPAY__DEV_PAYMENTS", "true");
            let err = Settings::load(None).expect_err("dev payments must be refused in production");
            assert!(err.to_string().contains("DEV_PAYMENTS"));
            Ok(())
        });
    }

    #[test]
    fn limits_and_rate_limits_come_from_the_environment() {
        Jail::expect_with(|jail| {
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.introspection() && s.suggestions());
            assert_eq!(
                s.graphql.limits(),
                resolvers::limits::OperationLimits::default()
            );
            assert_eq!(s.rate_limits.mutations.len(), 4);
            jail.set_env("RUIZHU_GRAPHQL__MAX_DEPTH", "8");
            jail.set_env(
                "RUIZHU_RATE_LIMITS__MUTATIONS",
                "[placeOrder, createWeChatPayment]",
            );
            jail.set_env("RUIZHU_RATE_LIMITS__MEMBER_BURST", "3");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.graphql.max_depth, 8);
            assert_eq!(
                s.rate_limits.mutations,
                ["placeOrder", "createWeChatPayment"]
            );
            assert_eq!(s.rate_limits.member().burst, 3);
            jail.set_env("RUIZHU_RATE_LIMITS__IP_PER_MINUTE", "0");
            assert!(Settings::load(None).is_err(), "a rate of 0 is refused");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("RUIZHU_HTTP__ADRR", "127.0.0.1:1");
            assert!(Settings::load(None).is_err());
            Ok(())
        });
    }
}
