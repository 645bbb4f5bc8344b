//! MySQL access: the connection pool, embedded migrations, database creation, and a statement
//! counter (exported as a metric and read by the N+1 tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{DomainError, DomainResult};

/// Every migration under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// A pooled MySQL connection.
pub type DbConn = Object<AsyncMysqlConnection>;

/// Database settings (`[database]` in the config file, `RUIZHU_DATABASE__*` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbSettings {
    /// `mysql://user:password@host:port/database`. Holds a password, so it never prints.
    pub url: SecretString,
    /// Maximum open connections per process.
    pub pool_size: usize,
    /// How long a request waits for a free connection (and for a new one to open) before it
    /// fails with a retryable `SERVICE_UNAVAILABLE`, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// Run pending migrations when `serve` starts (creating the database if missing).
    /// Defaults to on outside production; production runs `ruizhu migrate` as a separate step.
    pub auto_migrate: Option<bool>,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("mysql://root@127.0.0.1:3306/ruizhu"),
            pool_size: 16,
            acquire_timeout_ms: 2_000,
            auto_migrate: None,
        }
    }
}

/// Counts the SQL statements this process sent, across every pooled connection.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    /// Statements sent so far.
    pub fn get(&self) -> u64 {
        AtomicU64::load(&self.0, Ordering::Relaxed)
    }
}

struct CountingInstrumentation(StatementCounter, Arc<PoolHealth>);

impl Instrumentation for CountingInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => {
                AtomicU64::fetch_add(&(self.0).0, 1, Ordering::Relaxed);
                metrics::counter!("ruizhu_db_statements_total").increment(1);
            }
            InstrumentationEvent::FinishQuery { error: Some(e), .. }
                if crate::error::connection_lost(e) =>
            {
                self.1.note_lost()
            }
            _ => {}
        }
    }
}

/// When one of the pool's connections was last found dead (the server restarted or killed
/// it, the network dropped): for a while afterwards every pooled connection is checked with
/// `SELECT 1` before it is handed out, so one dead connection per pool slot does not cost one
/// failed request per slot. Per pool, so one pool's trouble costs no other pool a statement.
#[derive(Debug)]
struct PoolHealth {
    epoch: std::time::Instant,
    /// ms since `epoch` + 1; 0 = never.
    last_lost_ms: AtomicU64,
}

/// A lost connection seen only once its error reached the domain: diesel-async reports a
/// statement's failure to the pool's instrumentation when the statement starts, but not when
/// its result stream breaks while rows are read, and then the error no longer knows its pool.
/// Process-wide for that reason (a process has one pool; tests' extra pools pay a `SELECT 1`).
static LOST_IN_PROCESS: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Notes a lost connection found outside the pool's instrumentation (see [`LOST_IN_PROCESS`]).
pub(crate) fn note_connection_lost_in_process() {
    *LOST_IN_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
}

/// How long after a lost connection pooled connections are checked before use.
const VERIFY_AFTER_LOSS: Duration = Duration::from_secs(10);

impl PoolHealth {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn note_lost(&self) {
        AtomicU64::store(&self.last_lost_ms, self.now_ms() + 1, Ordering::Relaxed);
        metrics::counter!("ruizhu_db_connections_lost_total").increment(1);
    }

    fn recently_lost(&self) -> bool {
        let at = AtomicU64::load(&self.last_lost_ms, Ordering::Relaxed);
        (at != 0 && self.now_ms() + 1 - at < VERIFY_AFTER_LOSS.as_millis() as u64)
            || LOST_IN_PROCESS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < VERIFY_AFTER_LOSS)
    }
}

/// The MySQL pool plus what the process wants to know about it.
#[derive(Clone)]
pub struct Db {
    pool: Pool<AsyncMysqlConnection>,
    statements: StatementCounter,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Db {
    /// Builds the pool. No connection is opened until the first request needs one, so the
    /// process can start while MySQL is still coming up.
    pub fn new(settings: &DbSettings) -> anyhow::Result<Self> {
        let statements = StatementCounter::default();
        let counter = statements.clone();
        let health = Arc::new(PoolHealth {
            epoch: std::time::Instant::now(),
            last_lost_ms: AtomicU64::new(0),
        });
        let checks = health.clone();
        let mut config = ManagerConfig::default();
        // `Verified` would send a `SELECT 1` on every checkout. Connections broken inside a
        // transaction are dropped by diesel-async; idle ones that died with the server are
        // found by checking every connection only for a while after one was seen dead.
        config.recycling_method =
            RecyclingMethod::CustomFunction(Box::new(move |conn: &mut AsyncMysqlConnection| {
                let check = checks.recently_lost();
                async move {
                    if check {
                        diesel::sql_query("SELECT 1")
                            .execute(conn)
                            .await
                            .map(|_: usize| ())
                    } else {
                        Ok(())
                    }
                }
                .boxed()
            }));
        config.custom_setup = Box::new(move |url| {
            let counter = counter.clone();
            let health = health.clone();
            async move {
                let mut conn = AsyncMysqlConnection::establish(url).await?;
                diesel::sql_query("SET time_zone = '+00:00'")
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                // READ COMMITTED: no gap locks on searches, so unrelated members' writes do
                // not deadlock each other; correctness rests on row locks and conditional
                // updates, which this level keeps
                diesel::sql_query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                conn.set_instrumentation(CountingInstrumentation(counter, health));
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new_with_config(
            settings.url.expose_secret(),
            config,
        );
        let timeout = Duration::from_millis(settings.acquire_timeout_ms);
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .context("building the MySQL pool")?;
        Ok(Self { pool, statements })
    }

    /// A connection from the pool.
    pub async fn conn(&self) -> DomainResult<DbConn> {
        self.pool.get().await.map_err(DomainError::from)
    }

    /// Statements sent by this process so far.
    pub fn statements(&self) -> &StatementCounter {
        &self.statements
    }

    /// (connections open, connections idle, maximum).
    pub fn pool_usage(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size, s.available, s.max_size)
    }

    /// Checks that MySQL answers, for `/readyz`.
    pub async fn ping(&self) -> DomainResult<()> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}

/// Splits `mysql://…/name` into the server URL (no database) and the database name.
fn split_database(url: &str) -> anyhow::Result<(url::Url, String)> {
    let mut parsed = url::Url::parse(url).context("database url is not a valid URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database url must name a database made of [A-Za-z0-9_]"
    );
    parsed.set_path("");
    Ok((parsed, name))
}

/// Creates the database named in the URL when it does not exist yet.
pub async fn create_database_if_missing(url: &SecretString) -> anyhow::Result<()> {
    let (server, name) = split_database(url.expose_secret())?;
    let mut conn = AsyncMysqlConnection::establish(server.as_str())
        .await
        .context("connecting to the MySQL server")?;
    diesel::sql_query(format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut conn)
    .await
    .context("creating the database")?;
    Ok(())
}

/// Drops the database named in the URL (tests clean up with this).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let (server, name) = split_database(url)?;
    let mut conn = AsyncMysqlConnection::establish(server.as_str()).await?;
    // never wait long behind a connection that still holds a lock on a table in it
    diesel::sql_query("SET SESSION lock_wait_timeout = 5")
        .execute(&mut conn)
        .await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Applies pending migrations; returns the versions applied.
pub async fn run_migrations(url: &SecretString) -> anyhow::Result<Vec<String>> {
    let url = url.expose_secret().to_owned();
    // diesel_migrations is synchronous: run it on a blocking thread over the async connection.
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn: AsyncConnectionWrapper<AsyncMysqlConnection> =
            diesel::Connection::establish(&url).context("connecting for migrations")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .context("migration task panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_database_name_from_url() {
        let (server, name) = split_database("mysql://root@127.0.0.1:3306/ruizhu").unwrap();
        assert_eq!(name, "ruizhu");
        assert_eq!(server.as_str(), "mysql://root@127.0.0.1:3306");
        assert!(split_database("mysql://root@127.0.0.1:3306/").is_err());
        assert!(split_database("mysql://root@127.0.0.1:3306/bad`name").is_err());
    }
}
