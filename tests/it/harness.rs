//! Test harness: every test gets its own MySQL database, its own Redis key prefix and its own
//! server on an ephemeral port, and cleans them up when dropped.
//!
//! `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`) point the tests at other servers.

use std::net::SocketAddr;
use std::sync::Arc;

use ruizhu::app::{self, App};
use ruizhu::config::{Environment, Settings};
use secrecy::SecretString;
use serde_json::{Value, json};

pub fn mysql_base() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// How to build one test server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load the demo catalog.
    pub seed: bool,
    /// Cache layers on.
    pub cache: bool,
    /// Redis to use instead of the shared one.
    pub redis_url: Option<String>,
    /// DataLoader batching window; `None` keeps the production default.
    pub loader_delay_us: Option<u64>,
    /// Base URL of the (fake) WeChat API.
    pub wechat_base: Option<String>,
    /// `auth.dev_login`.
    pub dev_login: bool,
    /// MySQL connections (default 8).
    pub pool_size: Option<usize>,
    /// `orders.payment_window_secs`.
    pub payment_window_secs: Option<u64>,
    /// A WeChat Pay merchant (e.g. `FakeWechatPay::settings()`); none = development payments.
    pub wechatpay: Option<domain::wechatpay::WechatPaySettings>,
    /// Kafka brokers (`Some(kafka_brokers())` for the shared broker); none = in-process events.
    /// Topics and consumer groups get a prefix of their own per test.
    pub kafka: Option<String>,
    /// Run the outbox relay and the event consumers (what `serve` runs besides HTTP).
    pub events: bool,
    /// Adjusts any other setting.
    pub tweak: Option<fn(&mut Settings)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: true,
            cache: true,
            redis_url: None,
            loader_delay_us: None,
            wechat_base: None,
            dev_login: false,
            pool_size: None,
            payment_window_secs: None,
            wechatpay: None,
            kafka: None,
            events: false,
            tweak: None,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    db_url: String,
    redis_url: String,
    redis_prefix: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Whether dropping this removes the database and Redis keys (not for replicas).
    owner: bool,
    /// Background tasks (relay, consumers), stopped on drop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The broker tests use (`TEST_KAFKA_BROKERS`, default the local tansu on 127.0.0.1:9092).
pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

fn event_tasks(app: &Arc<App>, events: bool) -> Vec<tokio::task::JoinHandle<()>> {
    if events {
        ruizhu::workers::spawn_event_workers(app.clone()).expect("event workers start")
    } else {
        Vec::new()
    }
}

async fn serve(app: Arc<App>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        ruizhu::http::serve(app, listener, async move {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    (addr, tx)
}

/// Everything logged by any test in this process, for the no-secrets-in-logs check.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends the whole test process when it runs longer than `TEST_TIME_LIMIT_SECS` (default 20
/// minutes; the suite takes about one): a test stuck on a dependency fails the run with a
/// message instead of holding CI until its own limit.
fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = std::env::var("TEST_TIME_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_200_u64);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(limit));
            eprintln!("the integration tests ran longer than {limit} s (TEST_TIME_LIMIT_SECS); a test is stuck");
            std::process::exit(124);
        });
    });
}

/// Installs (once) a subscriber that keeps every log line, at trace level for our crates, in
/// the JSON format production uses.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "info,ruizhu=trace,domain=trace,resolvers=trace,tower_http=trace",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(|| LogSink)
            .try_init();
    });
}

impl TestApp {
    /// A seeded server with caching on.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_url = format!("{}/rz_test_{}", mysql_base(), &id[..16]);
        let redis_url = options.redis_url.clone().unwrap_or_else(redis_url);
        let redis_prefix = format!("rz-test:{}:", &id[..16]);

        let mut settings = Settings {
            env: Environment::Test,
            ..Settings::default()
        };
        settings.database.url = SecretString::from(db_url.clone());
        settings.database.pool_size = options.pool_size.unwrap_or(8);
        // the test machine runs many servers at once: waiting longer beats flaky failures
        settings.database.acquire_timeout_ms = 10_000;
        if let Some(secs) = options.payment_window_secs {
            settings.orders.payment_window_secs = secs;
        }
        settings.database.auto_migrate = Some(true);
        settings.redis.url = SecretString::from(redis_url.clone());
        settings.redis.key_prefix = redis_prefix.clone();
        settings.cache.enabled = options.cache;
        settings.seed.demo = Some(options.seed);
        settings.http.shutdown_grace_ms = 1_000;
        settings.wechat.app_id = crate::fake_wechat::APP_ID.to_owned();
        settings.wechat.app_secret = SecretString::from(crate::fake_wechat::APP_SECRET);
        settings.wechat.timeout_ms = 1_000;
        if let Some(base) = &options.wechat_base {
            settings.wechat.api_base = base.clone();
        }
        settings.auth.dev_login = options.dev_login;
        if let Some(pay) = &options.wechatpay {
            settings.wechatpay = pay.clone();
        }
        if let Some(brokers) = &options.kafka {
            settings.kafka.brokers = Some(brokers.clone());
            settings.kafka.topic_prefix = format!("rz-test-{}-", &id[..12]);
            settings.kafka.group_prefix = format!("rz-test-{}", &id[..12]);
            settings.kafka.partitions = 2;
            settings.kafka.timeout_ms = 3_000;
        }
        settings.kafka.relay_interval_ms = 20;
        // tests sign in and check out far more often than a person; the rate-limit tests set
        // their own numbers
        settings.rate_limits.member_burst = 100_000;
        settings.rate_limits.ip_burst = 100_000;
        if let Some(tweak) = options.tweak {
            tweak(&mut settings);
        }
        if let Some(delay) = options.loader_delay_us {
            settings.graphql.loader_delay_us = delay;
        }

        watchdog();
        capture_logs();
        let app = App::build(settings).expect("app builds");
        app::prepare_database(&app.settings, &app.db)
            .await
            .expect("database prepared");
        let (addr, tx) = serve(app.clone()).await;
        let tasks = event_tasks(&app, options.events);
        Self {
            addr,
            app,
            client: reqwest::Client::new(),
            db_url,
            redis_url,
            redis_prefix,
            shutdown: Some(tx),
            owner: true,
            tasks,
        }
    }

    /// A second server process over the same database and Redis (a replica).
    pub async fn replica(&self) -> Self {
        let app = App::build(self.app.settings.clone()).expect("replica builds");
        let (addr, tx) = serve(app.clone()).await;
        let tasks = event_tasks(&app, !self.tasks.is_empty());
        Self {
            tasks,
            addr,
            app,
            client: reqwest::Client::new(),
            db_url: self.db_url.clone(),
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            shutdown: Some(tx),
            owner: false,
        }
    }

    /// POSTs a GraphQL request with a bearer token; returns status and body.
    pub async fn post_as(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("JSON body"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SQL statements the server has sent so far.
    pub fn statements(&self) -> u64 {
        self.app.db.statements().get()
    }

    /// POSTs a GraphQL request and returns the parsed body (any status).
    pub async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.expect("JSON body");
        (status, body)
    }

    /// POSTs a GraphQL request that must succeed without errors; returns `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// POSTs a GraphQL request that must fail; returns the first error's `extensions.code`.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let (status, body) = self.post(query, variables).await;
        assert_eq!(status, 200, "{body}");
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {body}"))
            .to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if !self.owner {
            return;
        }
        let db_url = self.db_url.clone();
        let redis_url = self.redis_url.clone();
        let prefix = self.redis_prefix.clone();
        // async cleanup from a synchronous Drop: a thread with its own runtime
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = domain::db::drop_database(&db_url).await;
                if let Ok(client) = redis::Client::open(redis_url.as_str()) {
                    let connect = client.get_multiplexed_async_connection();
                    if let Ok(Ok(mut conn)) =
                        tokio::time::timeout(std::time::Duration::from_secs(1), connect).await
                    {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{prefix}*"))
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> =
                                redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                        }
                    }
                }
            });
        });
        // bounded: a failed test can leave a connection holding locks in its database
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = cleanup.join();
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    }
}

/// A private `redis-server` on a free port, killed when dropped (for Redis outage tests).
pub struct OwnRedis {
    pub url: String,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self {
            url,
            child: Some(child),
        }
    }

    /// `kill -9` the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
