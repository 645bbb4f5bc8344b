//! `drills`: fault drills (`docs/reliability.md`). Starts its own MariaDB, Redis and broker
//! (separate ports and data directories: the shared services are never touched), two `ruizhu
//! serve` instances and one `ruizhu worker` on them, with TCP proxies in front of MySQL and
//! Redis that can add latency. For each drill it holds a mixed load (browse, checkout with an
//! idempotency key, the payment notification for every order, staff subscriptions to live
//! order events), records every operation (invoke → ok / fail / unknown), injects one fault,
//! heals it, lets the system recover, and then checks the invariants on the database:
//!
//! - stock conservation per SKU (initial = available + held by live orders, never negative)
//!   and the inventory ledger's sum;
//! - every acknowledged order exists exactly once; no order without a client's idempotency key;
//!   an order a client was told failed does not exist; every unknown outcome resolved (by the
//!   client's retries with the same key, or by reading state);
//! - no order paid twice; every acknowledged payment has its order PAID with one payment;
//! - every committed change has its event exactly once in the outbox, the outbox drains, and
//!   every `order.paid` event was processed by the notifications consumer once;
//! - no request took longer than the server's deadline.
//!
//! Prints one JSON report (and writes it with `--json`). Exit status 1 on any violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bench::client::{self, Outcome};
use bench::wxpay::{Notification, Platform};
use clap::Parser;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Every drill, in the order they run.
const DRILLS: &[&str] = &[
    "redis-kill",
    "redis-freeze",
    "mysql-restart",
    "server-kill",
    "worker-kill",
    "slow-mysql",
    "slow-redis",
    // last: the broker keeps what these do to consumer groups for the rest of the run
    "broker-stop",
    "broker-restart",
];

/// Run only when named: with tansu as the broker, consumers can stay without partitions after
/// it comes back empty (docs/reliability.md, "Known failure").
const ON_REQUEST: &[&str] = &["broker-restart"];

/// The servers' request deadline in the drills (`RUIZHU_HTTP__REQUEST_TIMEOUT_MS`).
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a client keeps retrying one operation after the load stopped.
const RESOLVE_LIMIT: Duration = Duration::from_secs(60);
const APP_ID: &str = "wxdrill00000000000";
const MCH_ID: &str = "1900000001";
const KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";

#[derive(Parser, Debug)]
#[command(about = "Fault drills: load, one fault, recovery, invariants")]
struct Args {
    /// `short` (CI: a few seconds per phase) or `full`.
    #[arg(long, default_value = "short")]
    profile: String,
    /// Drills to run (default: all).
    #[arg(long = "drill")]
    drills: Vec<String>,
    /// The `ruizhu` binary under test (a release build).
    #[arg(long)]
    ruizhu: PathBuf,
    /// The Kafka-protocol broker (tansu).
    #[arg(long, default_value = "tansu")]
    tansu: PathBuf,
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the work directory (logs, data) afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Profile {
    warmup_s: u64,
    fault_s: u64,
    broker_outage_s: u64,
    recovery_s: u64,
    users: usize,
}

impl Profile {
    fn named(name: &str) -> anyhow::Result<Self> {
        match name {
            "short" => Ok(Self {
                warmup_s: 3,
                fault_s: 6,
                broker_outage_s: 10,
                recovery_s: 8,
                users: 8,
            }),
            "full" => Ok(Self {
                warmup_s: 10,
                fault_s: 30,
                broker_outage_s: 60,
                recovery_s: 30,
                users: 16,
            }),
            other => anyhow::bail!("unknown profile {other}: short or full"),
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log(message: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "[drills {}] {message}",
            chrono::Utc::now().format("%H:%M:%S%.3f")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// processes

/// A child process the drill starts, kills and starts again.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
    ) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?,
        );
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// `kill -9`, then reaps it.
    async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM and up to 60 s for a clean exit, then `kill -9`.
    async fn terminate(&mut self) -> anyhow::Result<()> {
        if self.pid().is_some() {
            self.signal("TERM").await?;
            if let Some(child) = self.child.as_mut()
                && tokio::time::timeout(Duration::from_secs(60), child.wait())
                    .await
                    .is_ok()
            {
                self.child = None;
            }
        }
        self.kill9().await
    }
}

async fn wait_tcp(port: u16, what: &str) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what} did not listen on {port} within 60 s")
}

async fn wait_http(url: &str, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} was not ready at {url} within 60 s")
}

// ---------------------------------------------------------------------------------------------
// a TCP proxy that can add latency

/// Forwards connections to an upstream port, adding `delay_ms` before every chunk sent
/// upstream (every statement or command waits that long).
#[derive(Clone)]
struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
}

async fn start_proxy(upstream: u16) -> anyhow::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let delay_ms = Arc::new(AtomicU64::new(0));
    let delay = delay_ms.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            let delay = delay.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return; // upstream down: the client sees its connection closed
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let up = async {
                    let mut buf = vec![0_u8; 16 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                // either side closing closes both
                tokio::select! {
                    () = up => {}
                    _ = down => {}
                }
            });
        }
    });
    Ok(Proxy { port, delay_ms })
}

// ---------------------------------------------------------------------------------------------
// the stack under test

struct Stack {
    dir: PathBuf,
    mysql: Proc,
    mysql_port: u16,
    mysql_proxy: Proxy,
    redis: Proc,
    redis_port: u16,
    redis_proxy: Proxy,
    broker: Proc,
    broker_port: u16,
    servers: Vec<Proc>,
    urls: Vec<String>,
    worker: Proc,
    worker_url: String,
    platform: Arc<Platform>,
}

impl Stack {
    async fn start(args: &Args, dir: &Path) -> anyhow::Result<Self> {
        // MariaDB, its own data directory and port
        let data = dir.join("mysql");
        let status = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("mariadb-install-db")?;
        anyhow::ensure!(status.success(), "mariadb-install-db failed");
        let mysql_port = free_port()?;
        let mysql_args: Vec<String> = vec![
            "--no-defaults".into(),
            "--user=root".into(),
            format!("--datadir={}", data.display()),
            format!("--port={mysql_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("mysql.sock").display()),
            format!("--pid-file={}", dir.join("mysql.pid").display()),
            "--skip-grant-tables".into(),
            "--innodb-buffer-pool-size=128M".into(),
            "--max-connections=500".into(),
        ];
        let mut mysql = Proc::new(
            "mysql",
            Path::new("/usr/sbin/mariadbd"),
            &mysql_args,
            &[],
            dir,
        );
        mysql.spawn()?;
        wait_tcp(mysql_port, "MariaDB").await?;

        let redis_port = free_port()?;
        let redis_args: Vec<String> = [
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut redis = Proc::new("redis", Path::new("redis-server"), &redis_args, &[], dir);
        redis.spawn()?;
        wait_tcp(redis_port, "Redis").await?;

        let broker_port = free_port()?;
        let listener = format!("tcp://127.0.0.1:{broker_port}");
        let broker_args: Vec<String> = vec![
            "broker".into(),
            "--listener-url".into(),
            listener.clone(),
            "--advertised-listener-url".into(),
            listener,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        let mut broker = Proc::new("broker", &args.tansu, &broker_args, &[], dir);
        broker.spawn()?;
        wait_tcp(broker_port, "the broker").await?;

        let mysql_proxy = start_proxy(mysql_port).await?;
        let redis_proxy = start_proxy(redis_port).await?;

        // WeChat Pay keys, made for this run
        let (platform_pem, keys) = make_keys(dir)?;
        let platform = Arc::new(Platform::new(
            APP_ID,
            MCH_ID,
            &keys.apiv3,
            KEY_ID,
            &platform_pem,
        )?);

        let common: Vec<(String, String)> = [
            (
                "RUIZHU_DATABASE__URL",
                // through the proxy: mysql_async would otherwise switch to MariaDB's socket
                format!(
                    "mysql://root@127.0.0.1:{}/ruizhu_drill?prefer_socket=false",
                    mysql_proxy.port
                ),
            ),
            ("RUIZHU_DATABASE__POOL_SIZE", "16".into()),
            (
                "RUIZHU_REDIS__URL",
                format!("redis://127.0.0.1:{}", redis_proxy.port),
            ),
            ("RUIZHU_KAFKA__BROKERS", format!("127.0.0.1:{broker_port}")),
            ("RUIZHU_KAFKA__TOPIC_PREFIX", "drill-".into()),
            ("RUIZHU_KAFKA__GROUP_PREFIX", "drill".into()),
            ("RUIZHU_AUTH__DEV_LOGIN", "true".into()),
            ("RUIZHU_RATE_LIMITS__ENABLED", "false".into()),
            ("RUIZHU_WORKERS__IN_SERVE", "false".into()),
            (
                "RUIZHU_HTTP__REQUEST_TIMEOUT_MS",
                DEADLINE.as_millis().to_string(),
            ),
            ("RUIZHU_ORDERS__PAYMENT_WINDOW_SECS", "86400".into()),
            ("RUIZHU_LOG__LEVEL", "warn".into()),
            ("RUIZHU_WECHAT__APP_ID", APP_ID.into()),
            ("RUIZHU_WECHAT__API_BASE", "http://127.0.0.1:9".into()),
            ("RUIZHU_WECHATPAY__MCH_ID", MCH_ID.into()),
            ("RUIZHU_WECHATPAY__API_BASE", "http://127.0.0.1:9".into()),
            (
                "RUIZHU_WECHATPAY__MERCHANT_KEY_PATH",
                keys.merchant_path.clone(),
            ),
            ("RUIZHU_WECHATPAY__MERCHANT_SERIAL", "DRILLSERIAL".into()),
            (
                "RUIZHU_WECHATPAY__PLATFORM_PUBLIC_KEY_PATH",
                keys.platform_pub_path.clone(),
            ),
            ("RUIZHU_WECHATPAY__PLATFORM_KEY_ID", KEY_ID.into()),
            ("RUIZHU_WECHATPAY__APIV3_KEY", keys.apiv3.clone()),
            (
                "RUIZHU_WECHATPAY__NOTIFY_URL",
                "https://drill.invalid/webhooks/wechatpay/notify".into(),
            ),
            (
                "RUIZHU_NOTIFICATIONS__ORDER_PAID_TEMPLATE",
                "drill-order-paid".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        for step in [
            vec!["migrate".to_owned()],
            vec!["seed".to_owned(), "--demo".to_owned()],
            vec![
                "staff".into(),
                "create".into(),
                "--username".into(),
                "drill-ops".into(),
                "--role".into(),
                "OPS".into(),
                "--password-env".into(),
                "DRILL_OPS_PASSWORD".into(),
            ],
        ] {
            let mut env = common.clone();
            env.push(("DRILL_OPS_PASSWORD".into(), "drill-ops-password".into()));
            let mut setup = Proc::new(
                &format!("setup-{}", step[0]),
                &args.ruizhu,
                &step,
                &env,
                dir,
            );
            setup.spawn()?;
            let status = setup.child.as_mut().context("setup step")?.wait().await?;
            anyhow::ensure!(
                status.success(),
                "ruizhu {} failed (see {})",
                step.join(" "),
                setup.log.display()
            );
        }

        let mut servers = Vec::new();
        let mut urls = Vec::new();
        for name in ["server-a", "server-b"] {
            let port = free_port()?;
            let mut env = common.clone();
            env.push(("RUIZHU_HTTP__ADDR".into(), format!("127.0.0.1:{port}")));
            let mut p = Proc::new(name, &args.ruizhu, &["serve".to_owned()], &env, dir);
            p.spawn()?;
            urls.push(format!("http://127.0.0.1:{port}"));
            servers.push(p);
        }
        let worker_port = free_port()?;
        let mut env = common.clone();
        env.push((
            "RUIZHU_WORKERS__ADDR".into(),
            format!("127.0.0.1:{worker_port}"),
        ));
        let mut worker = Proc::new("worker", &args.ruizhu, &["worker".to_owned()], &env, dir);
        worker.spawn()?;
        let worker_url = format!("http://127.0.0.1:{worker_port}");
        for url in &urls {
            wait_http(&format!("{url}/readyz"), "a server").await?;
        }
        wait_http(&format!("{worker_url}/healthz"), "the worker").await?;

        Ok(Self {
            dir: dir.to_owned(),
            mysql,
            mysql_port,
            mysql_proxy,
            redis,
            redis_port,
            redis_proxy,
            broker,
            broker_port,
            servers,
            urls,
            worker,
            worker_url,
            platform,
        })
    }

    /// The database, directly (not through the proxy), for setup and the checkers.
    fn db(&self) -> anyhow::Result<domain::db::Db> {
        domain::db::Db::new(&domain::db::DbSettings {
            url: format!("mysql://root@127.0.0.1:{}/ruizhu_drill", self.mysql_port).into(),
            pool_size: 4,
            ..domain::db::DbSettings::default()
        })
    }

    async fn restart_server(&mut self, i: usize) -> anyhow::Result<()> {
        self.servers[i].spawn()?;
        wait_http(&format!("{}/readyz", self.urls[i]), "a restarted server").await
    }

    async fn shutdown(&mut self) {
        for p in self.servers.iter_mut().chain([&mut self.worker]) {
            let _ = p.terminate().await;
        }
        let _ = self.broker.kill9().await;
        let _ = self.redis.kill9().await;
        let _ = self.mysql.terminate().await;
    }
}

struct Keys {
    merchant_path: String,
    platform_pub_path: String,
    apiv3: String,
}

fn make_keys(dir: &Path) -> anyhow::Result<(String, Keys)> {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let mut rng = rand::thread_rng();
    let merchant = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
    let platform = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
    let merchant_path = dir.join("merchant.pem");
    std::fs::write(
        &merchant_path,
        merchant.to_pkcs8_pem(LineEnding::LF)?.as_bytes(),
    )?;
    let platform_pub_path = dir.join("platform_pub.pem");
    std::fs::write(
        &platform_pub_path,
        platform.to_public_key().to_public_key_pem(LineEnding::LF)?,
    )?;
    let apiv3: String = uuid::Uuid::new_v4().simple().to_string();
    Ok((
        platform.to_pkcs8_pem(LineEnding::LF)?.to_string(),
        Keys {
            merchant_path: merchant_path.display().to_string(),
            platform_pub_path: platform_pub_path.display().to_string(),
            apiv3,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// load and its history

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Browse,
    Checkout,
    Pay,
}

/// One request as the client saw it.
#[derive(Debug, Clone, Serialize)]
struct Op {
    kind: Kind,
    /// Seconds since the drill started, at invoke.
    at: f64,
    ms: f64,
    /// `ok`, `fail:<code>` or `unknown:<why>`.
    outcome: String,
}

impl Op {
    fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// What one checkout (one idempotency key) came to in the end.
#[derive(Debug, Clone)]
enum Resolution {
    /// The order, and whether its payment notification was acknowledged.
    Order { order_no: String, paid: bool },
    /// A definite refusal (e.g. `OUT_OF_STOCK`).
    Refused(String),
    /// Retries ran out: left to the checker to read from the database.
    Unresolved,
}

#[derive(Default)]
struct History {
    ops: Vec<Op>,
    keys: Vec<(String, Resolution)>,
    subscription_events: u64,
    subscription_reconnects: u64,
}

struct Ctx {
    client: reqwest::Client,
    urls: Vec<String>,
    platform: Arc<Platform>,
    skus: Vec<String>,
    t0: Instant,
    stop: AtomicBool,
    stopped_at: Mutex<Option<Instant>>,
    history: Mutex<History>,
    serial: AtomicU64,
}

struct Member {
    token: String,
    address: String,
}

impl Ctx {
    fn record(&self, kind: Kind, started: Instant, ms: f64, outcome: String) {
        let op = Op {
            kind,
            at: started.duration_since(self.t0).as_secs_f64(),
            ms,
            outcome,
        };
        if let Ok(mut h) = self.history.lock() {
            h.ops.push(op);
        }
    }

    /// Gives up retrying once the load has stopped for `RESOLVE_LIMIT`.
    fn out_of_time(&self) -> bool {
        self.stopped_at
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|s| s.elapsed() > RESOLVE_LIMIT)
    }

    /// One GraphQL request on server `first`, or the other one if `first` refuses the
    /// connection (as a load balancer would); recorded in the history. Data that `valid`
    /// rejects counts as a failure.
    async fn graphql(
        &self,
        kind: Kind,
        first: usize,
        token: Option<&str>,
        query: &str,
        vars: &Value,
        valid: fn(&Value) -> bool,
    ) -> Outcome {
        let started = Instant::now();
        let mut outcome = Outcome::Refused;
        for i in 0..self.urls.len() {
            let url = format!("{}/graphql", self.urls[(first + i) % self.urls.len()]);
            let call = client::graphql(&self.client, &url, token, query, vars.clone()).await;
            outcome = call.outcome;
            if !matches!(outcome, Outcome::Refused) {
                break;
            }
        }
        if let Outcome::Ok(data) = &outcome
            && !valid(data)
        {
            outcome = Outcome::Fail("unexpected data".to_owned());
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let text = match &outcome {
            Outcome::Ok(_) => "ok".to_owned(),
            Outcome::Fail(code) => format!("fail:{code}"),
            Outcome::Refused => "fail:refused".to_owned(),
            Outcome::Unknown(why) => format!("unknown:{why}"),
        };
        self.record(kind, started, ms, text);
        outcome
    }

    async fn browse(&self, n: usize) {
        self.graphql(
            Kind::Browse,
            n,
            None,
            "{ products(first: 10) { edges { node { id skus { id } } } } }",
            &json!({}),
            // an answer without products is a failure too
            |data| {
                data["products"]["edges"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
            },
        )
        .await;
    }

    /// One checkout with a fresh idempotency key, retried with the same key until the outcome
    /// is known; then the payment notification, retried until acknowledged.
    async fn checkout(&self, member: &Member, n: usize, rng: &mut u64) {
        let key = uuid::Uuid::new_v4().to_string();
        let sku = &self.skus[usize::try_from(next(rng)).unwrap_or(0) % self.skus.len()];
        let vars = json!({ "i": { "idempotencyKey": key, "addressId": member.address,
            "lines": [{ "skuId": sku, "quantity": 1 }] } });
        let query = "mutation P($i: PlaceOrderInput!) { placeOrder(input: $i) { \
                     order { orderNo total { amount } } errors { code } } }";
        let mut attempt = 0;
        let resolution = loop {
            let outcome = self
                .graphql(
                    Kind::Checkout,
                    n + attempt,
                    Some(&member.token),
                    query,
                    &vars,
                    |data| data["placeOrder"].is_object(),
                )
                .await;
            attempt += 1;
            if let Outcome::Ok(data) = &outcome {
                let p = &data["placeOrder"];
                if let (Some(no), Some(total)) = (
                    p["order"]["orderNo"].as_str(),
                    p["order"]["total"]["amount"].as_i64(),
                ) {
                    let paid = self.pay(no, total, n).await;
                    break Resolution::Order {
                        order_no: no.to_owned(),
                        paid,
                    };
                }
                if let Some(code) = p["errors"][0]["code"].as_str() {
                    break Resolution::Refused(code.to_owned());
                }
            }
            // an error, a refusal or no answer: it may have happened, so ask again with the same
            // key (the answer is the order the first attempt made, if it made one)
            if self.out_of_time() {
                break Resolution::Unresolved;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt.min(10) as u64)).await;
        };
        if let Ok(mut h) = self.history.lock() {
            h.keys.push((key, resolution));
        }
    }

    /// Sends the order's payment notification until it is acknowledged (204), as WeChat Pay
    /// does; true when it was.
    async fn pay(&self, order_no: &str, total: i64, n: usize) -> bool {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let note: Notification =
            match self
                .platform
                .payment(order_no, &format!("4200{serial:028}"), total, serial)
            {
                Ok(n) => n,
                Err(_) => return false,
            };
        let mut attempt = 0;
        loop {
            let url = format!(
                "{}/webhooks/wechatpay/notify",
                self.urls[(n + attempt) % self.urls.len()]
            );
            attempt += 1;
            let started = Instant::now();
            let result = note
                .request(&self.client, &url, &self.platform.key_id)
                .send()
                .await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let outcome = match result {
                Ok(r) if r.status().as_u16() == 204 => "ok".to_owned(),
                Ok(r) => format!("fail:HTTP {}", r.status().as_u16()),
                Err(e) => match client::transport_outcome(&e) {
                    Outcome::Refused => "fail:refused".to_owned(),
                    _ => "unknown:no answer".to_owned(),
                },
            };
            let ok = outcome == "ok";
            self.record(Kind::Pay, started, ms, outcome);
            if ok {
                return true;
            }
            if self.out_of_time() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt.min(10) as u64)).await;
        }
    }
}

fn next(state: &mut u64) -> u64 {
    // xorshift64: reproducible choices per user, no shared state
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn sign_in(ctx: &Ctx, name: &str) -> anyhow::Result<Member> {
    let url = format!("{}/graphql", ctx.urls[0]);
    let login = client::graphql(
        &ctx.client,
        &url,
        None,
        "mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken } }",
        json!({ "c": format!("dev:{name}") }),
    )
    .await;
    let Outcome::Ok(data) = login.outcome else {
        anyhow::bail!("sign-in failed: {:?}", login.outcome);
    };
    let token = data["loginWithWeChat"]["accessToken"]
        .as_str()
        .context("no token")?
        .to_owned();
    let address = client::graphql(&ctx.client, &url, Some(&token),
        r#"mutation A { addAddress(input: { recipient: "Drill", phone: "13812345678", province: "上海市", city: "上海市", district: "静安区", detail: "南京西路 1266 号" }) { address { id } } }"#,
        json!({})).await;
    let Outcome::Ok(data) = address.outcome else {
        anyhow::bail!("address failed: {:?}", address.outcome);
    };
    let address = data["addAddress"]["address"]["id"]
        .as_str()
        .context("no address")?
        .to_owned();
    Ok(Member { token, address })
}

/// A staff console watching `orderEvents` over graphql-transport-ws on one server, connecting
/// again whenever the socket closes.
async fn watch_orders(ctx: Arc<Ctx>, url: String, token: String) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let ws_url = url.replacen("http://", "ws://", 1) + "/graphql/ws";
    let mut first = true;
    while !ctx.stop.load(Ordering::Relaxed) {
        if !first {
            if let Ok(mut h) = ctx.history.lock() {
                h.subscription_reconnects += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        first = false;
        let Ok(mut request) = ws_url.as_str().into_client_request() else {
            return;
        };
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
        );
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(request),
        )
        .await
        else {
            continue;
        };
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        let subscribe = json!({ "id": "1", "type": "subscribe",
            "payload": { "query": "subscription { orderEvents { eventId type toStatus } }" } });
        if ws.send(Message::text(init.to_string())).await.is_err()
            || ws.send(Message::text(subscribe.to_string())).await.is_err()
        {
            continue;
        }
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if ctx.stop.load(Ordering::Relaxed) { return; }
                    continue;
                }
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("next") => {
                            if let Ok(mut h) = ctx.history.lock() {
                                h.subscription_events += 1;
                            }
                        }
                        Some("ping") => {
                            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                        }
                        Some("error" | "complete") => break,
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
}

struct Load {
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(
        stack: &Stack,
        skus: &[String],
        users: usize,
        run: &str,
    ) -> anyhow::Result<Self> {
        let ctx = Arc::new(Ctx {
            client: reqwest::Client::builder()
                .timeout(DEADLINE + Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(1))
                .pool_max_idle_per_host(64)
                .build()?,
            urls: stack.urls.clone(),
            platform: stack.platform.clone(),
            skus: skus.to_vec(),
            t0: Instant::now(),
            stop: AtomicBool::new(false),
            stopped_at: Mutex::new(None),
            history: Mutex::new(History::default()),
            serial: AtomicU64::new(
                u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1),
            ),
        });
        let mut members = Vec::new();
        for u in 0..users {
            members.push(sign_in(&ctx, &format!("drill-{run}-{u}")).await?);
        }
        let staff = client::graphql(&ctx.client, &format!("{}/graphql", ctx.urls[0]), None,
            "mutation S { staffLogin(username: \"drill-ops\", password: \"drill-ops-password\") { accessToken } }",
            json!({})).await;
        let Outcome::Ok(staff) = staff.outcome else {
            anyhow::bail!("staff sign-in failed: {:?}", staff.outcome);
        };
        let staff = staff["staffLogin"]["accessToken"]
            .as_str()
            .context("no staff token")?
            .to_owned();
        let mut tasks = Vec::new();
        for url in &ctx.urls {
            tasks.push(tokio::spawn(watch_orders(
                ctx.clone(),
                url.clone(),
                staff.clone(),
            )));
        }
        for (u, member) in members.into_iter().enumerate() {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (u as u64 + 1);
                let mut n = u;
                while !ctx.stop.load(Ordering::Relaxed) {
                    n += 1;
                    if n % 2 == 0 {
                        ctx.browse(n).await;
                    } else {
                        ctx.checkout(&member, n, &mut rng).await;
                    }
                }
            }));
        }
        Ok(Self { ctx, tasks })
    }

    /// Stops new operations; waits for the ones in flight to resolve (bounded).
    async fn stop(self) -> History {
        self.ctx.stop.store(true, Ordering::Relaxed);
        if let Ok(mut s) = self.ctx.stopped_at.lock() {
            *s = Some(Instant::now());
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(RESOLVE_LIMIT + Duration::from_secs(30), t).await;
        }
        self.ctx
            .history
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// checkers

#[derive(QueryableByName)]
struct IdNum {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct SkuStock {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    stock: i64,
    #[diesel(sql_type = BigInt)]
    held: i64,
    #[diesel(sql_type = BigInt)]
    ledger: i64,
}

#[derive(QueryableByName)]
struct OrderRow {
    #[diesel(sql_type = Text)]
    order_no: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    idem_key: String,
    #[diesel(sql_type = BigInt)]
    payments: i64,
    #[diesel(sql_type = BigInt)]
    placed: i64,
    #[diesel(sql_type = BigInt)]
    paid_events: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The state before a drill.
struct Snapshot {
    stock: HashMap<i64, i64>,
    max_order: i64,
    max_ledger: i64,
    max_outbox: i64,
}

async fn count(db: &domain::db::Db, sql: &str) -> anyhow::Result<i64> {
    use diesel_async::RunQueryDsl as _;
    let mut conn = db.conn().await?;
    let row: Count = diesel::sql_query(sql).get_result(&mut conn).await?;
    Ok(row.n)
}

async fn snapshot(db: &domain::db::Db) -> anyhow::Result<Snapshot> {
    use diesel_async::RunQueryDsl as _;
    let mut conn = db.conn().await?;
    let rows: Vec<IdNum> =
        diesel::sql_query("SELECT CAST(id AS SIGNED) AS id, CAST(stock AS SIGNED) AS n FROM skus")
            .load(&mut conn)
            .await?;
    drop(conn);
    Ok(Snapshot {
        stock: rows.into_iter().map(|r| (r.id, r.n)).collect(),
        max_order: count(
            db,
            "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) AS n FROM orders",
        )
        .await?,
        max_ledger: count(
            db,
            "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) AS n FROM inventory_ledger",
        )
        .await?,
        max_outbox: count(
            db,
            "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) AS n FROM outbox_events",
        )
        .await?,
    })
}

/// Counts the drill's `order.paid` events the notifications consumer has not processed.
fn unprocessed_sql(snap: &Snapshot) -> String {
    format!(
        "SELECT COUNT(*) AS n FROM outbox_events e LEFT JOIN processed_events p \
         ON p.consumer = 'notifications' AND p.event_id = e.event_id \
         WHERE e.id > {} AND e.event_type = 'order.paid' AND p.event_id IS NULL",
        snap.max_outbox
    )
}

/// Waits until every outbox row is published and every `order.paid` event was taken by the
/// notifications consumer; the seconds it took, or `None` after `limit`.
async fn wait_drained(db: &domain::db::Db, snap: &Snapshot, limit: Duration) -> Option<f64> {
    let started = Instant::now();
    let unpublished =
        "SELECT COUNT(*) AS n FROM outbox_events WHERE published_at IS NULL".to_owned();
    let unprocessed = unprocessed_sql(snap);
    while started.elapsed() < limit {
        if let (Ok(0), Ok(0)) = (count(db, &unpublished).await, count(db, &unprocessed).await) {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The invariants, as a list of violations (empty when all hold), plus what was resolved by
/// reading state.
async fn check(
    db: &domain::db::Db,
    snap: &Snapshot,
    history: &History,
) -> anyhow::Result<(Vec<String>, usize)> {
    use diesel_async::RunQueryDsl as _;
    let mut v = Vec::new();
    let mut conn = db.conn().await?;

    // stock conservation and the ledger
    let skus: Vec<SkuStock> = diesel::sql_query(format!(
        "SELECT CAST(s.id AS SIGNED) AS id, CAST(s.stock AS SIGNED) AS stock, \
           CAST(COALESCE(h.q, 0) AS SIGNED) AS held, CAST(COALESCE(l.d, 0) AS SIGNED) AS ledger \
         FROM skus s \
         LEFT JOIN (SELECT ol.sku_id, SUM(ol.quantity) AS q FROM order_lines ol \
                    JOIN orders o ON o.id = ol.order_id \
                    WHERE o.id > {mo} AND o.status <> 'CANCELLED' GROUP BY ol.sku_id) h ON h.sku_id = s.id \
         LEFT JOIN (SELECT sku_id, SUM(delta) AS d FROM inventory_ledger WHERE id > {ml} \
                    GROUP BY sku_id) l ON l.sku_id = s.id",
        mo = snap.max_order,
        ml = snap.max_ledger
    ))
    .load(&mut conn)
    .await?;
    for s in &skus {
        let initial = snap.stock.get(&s.id).copied().unwrap_or(0);
        if s.stock < 0 {
            v.push(format!("SKU {}: negative stock {}", s.id, s.stock));
        }
        if initial != s.stock + s.held {
            v.push(format!(
                "SKU {}: initial {initial} ≠ available {} + held by live orders {}",
                s.id, s.stock, s.held
            ));
        }
        if s.stock - initial != s.ledger {
            v.push(format!(
                "SKU {}: stock moved by {} but the ledger says {}",
                s.id,
                s.stock - initial,
                s.ledger
            ));
        }
    }

    // orders, keys, payments, events
    let orders: Vec<OrderRow> = diesel::sql_query(format!(
        "SELECT COALESCE(o.order_no, '') AS order_no, o.status, \
           COALESCE((SELECT MIN(k.idem_key) FROM idempotency_keys k WHERE k.order_id = o.id), '') AS idem_key, \
           (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.transaction_id IS NOT NULL) AS payments, \
           (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_type = 'order' \
              AND e.aggregate_id = CAST(o.id AS CHAR) COLLATE utf8mb4_unicode_ci AND e.event_type = 'order.placed') AS placed, \
           (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_type = 'order' \
              AND e.aggregate_id = CAST(o.id AS CHAR) COLLATE utf8mb4_unicode_ci AND e.event_type = 'order.paid') AS paid_events \
         FROM orders o WHERE o.id > {}",
        snap.max_order
    ))
    .load(&mut conn)
    .await?;
    let by_no: HashMap<&str, &OrderRow> = orders.iter().map(|o| (o.order_no.as_str(), o)).collect();
    let by_key: HashMap<&str, &OrderRow> =
        orders.iter().map(|o| (o.idem_key.as_str(), o)).collect();
    let sent_keys: HashSet<&str> = history.keys.iter().map(|(k, _)| k.as_str()).collect();
    let mut resolved_by_reading = 0;
    let mut acknowledged = HashSet::new();
    for (key, resolution) in &history.keys {
        match resolution {
            Resolution::Order { order_no, paid } => {
                if !acknowledged.insert(order_no.as_str()) {
                    v.push(format!("order {order_no} acknowledged for two keys"));
                }
                match by_no.get(order_no.as_str()) {
                    None => v.push(format!("acknowledged order {order_no} does not exist")),
                    Some(o) => {
                        if o.idem_key != *key {
                            v.push(format!(
                                "order {order_no} is not under the key that made it"
                            ));
                        }
                        if *paid && (o.status != "PAID" || o.payments != 1) {
                            v.push(format!(
                                "order {order_no}: payment acknowledged but status {} with {} payments",
                                o.status, o.payments
                            ));
                        }
                    }
                }
            }
            Resolution::Refused(code) => {
                if by_key.contains_key(key.as_str()) {
                    v.push(format!("a checkout refused with {code} made an order"));
                }
            }
            // the client never learned the outcome: read it (an order under the key, or none)
            Resolution::Unresolved => resolved_by_reading += 1,
        }
    }
    for o in &orders {
        if o.idem_key.is_empty() || !sent_keys.contains(o.idem_key.as_str()) {
            v.push(format!("order {} has no key a client sent", o.order_no));
        }
        if o.payments > 1 {
            v.push(format!("order {} paid {} times", o.order_no, o.payments));
        }
        if o.status == "PAID" && o.payments != 1 {
            v.push(format!(
                "order {} PAID with {} payments",
                o.order_no, o.payments
            ));
        }
        if o.placed != 1 {
            v.push(format!(
                "order {}: {} order.placed events",
                o.order_no, o.placed
            ));
        }
        let expected_paid = i64::from(o.status == "PAID");
        if o.paid_events != expected_paid {
            v.push(format!(
                "order {} ({}): {} order.paid events",
                o.order_no, o.status, o.paid_events
            ));
        }
    }
    let unpublished: Count =
        diesel::sql_query("SELECT COUNT(*) AS n FROM outbox_events WHERE published_at IS NULL")
            .get_result(&mut conn)
            .await?;
    if unpublished.n > 0 {
        v.push(format!("{} outbox rows never published", unpublished.n));
    }

    // no request past the deadline (plus a second for the answer to travel)
    let hung = history
        .ops
        .iter()
        .filter(|o| o.ms > (DEADLINE + Duration::from_secs(1)).as_secs_f64() * 1000.0)
        .count();
    if hung > 0 {
        v.push(format!(
            "{hung} requests took longer than the {} s deadline",
            DEADLINE.as_secs()
        ));
    }
    Ok((v, resolved_by_reading))
}

// ---------------------------------------------------------------------------------------------
// one drill

#[derive(Default, Serialize)]
struct Window {
    seconds: f64,
    requests: usize,
    per_sec: f64,
    success: f64,
    checkout_success: f64,
    browse_success: f64,
    browse_p99_ms: f64,
    failed_p99_ms: f64,
}

fn window(ops: &[Op], from: f64, to: f64) -> Window {
    let inside: Vec<&Op> = ops.iter().filter(|o| o.at >= from && o.at < to).collect();
    let rate = |kind: Option<Kind>| {
        let of: Vec<&&Op> = inside
            .iter()
            .filter(|o| kind.is_none_or(|k| o.kind == k))
            .collect();
        if of.is_empty() {
            1.0
        } else {
            of.iter().filter(|o| o.ok()).count() as f64 / of.len() as f64
        }
    };
    let p99 = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        ms.get((ms.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let seconds = (to - from).max(0.001);
    Window {
        seconds,
        requests: inside.len(),
        per_sec: inside.len() as f64 / seconds,
        success: rate(None),
        checkout_success: rate(Some(Kind::Checkout)),
        browse_success: rate(Some(Kind::Browse)),
        browse_p99_ms: p99(inside
            .iter()
            .filter(|o| o.kind == Kind::Browse)
            .map(|o| o.ms)
            .collect()),
        failed_p99_ms: p99(inside.iter().filter(|o| !o.ok()).map(|o| o.ms).collect()),
    }
}

async fn inject(
    stack: &mut Stack,
    db: &domain::db::Db,
    snap: &Snapshot,
    drill: &str,
    p: &Profile,
) -> anyhow::Result<()> {
    let fault = Duration::from_secs(p.fault_s);
    match drill {
        "redis-kill" => {
            stack.redis.kill9().await?;
            tokio::time::sleep(fault).await;
            stack.redis.spawn()?;
            wait_tcp(stack.redis_port, "Redis").await?;
        }
        "redis-freeze" => {
            stack.redis.signal("STOP").await?;
            tokio::time::sleep(fault).await;
            stack.redis.kill9().await?;
            stack.redis.spawn()?;
            wait_tcp(stack.redis_port, "Redis").await?;
        }
        "mysql-restart" => {
            stack.mysql.terminate().await?;
            tokio::time::sleep(fault).await;
            stack.mysql.spawn()?;
            wait_tcp(stack.mysql_port, "MariaDB").await?;
        }
        "broker-stop" => {
            // the broker stops answering (connections hang) and comes back with its data
            stack.broker.signal("STOP").await?;
            tokio::time::sleep(Duration::from_secs(p.broker_outage_s)).await;
            stack.broker.signal("CONT").await?;
        }
        "broker-restart" => {
            // the broker dies and comes back empty (tansu's memory storage: no topics, no
            // groups, no producer state, and the events it had acknowledged but not yet
            // delivered are gone); the operator replays the outbox since the incident
            // (docs/operations.md, "Kafka lost acknowledged events")
            stack.broker.kill9().await?;
            tokio::time::sleep(Duration::from_secs(p.broker_outage_s)).await;
            stack.broker.spawn()?;
            wait_tcp(stack.broker_port, "the broker").await?;
            use diesel_async::RunQueryDsl as _;
            let mut conn = db.conn().await?;
            diesel::sql_query(format!(
                "UPDATE outbox_events SET published_at = NULL WHERE id > {}",
                snap.max_outbox
            ))
            .execute(&mut conn)
            .await?;
        }
        "server-kill" => {
            // kill -9 in the middle of checkouts and notifications; clients retry elsewhere
            // with the same keys, and the server comes back
            stack.servers[0].kill9().await?;
            tokio::time::sleep(fault).await;
            stack.restart_server(0).await?;
        }
        "worker-kill" => {
            stack.worker.kill9().await?;
            // down for longer than the consumer session timeout (10 s): tansu 0.6 expires a
            // dead group member only when a request reaches the coordinator after that
            // timeout, so a worker rejoining sooner waits on its join indefinitely (Kafka
            // expires the member on its own)
            tokio::time::sleep(fault.max(Duration::from_secs(12))).await;
            stack.worker.spawn()?;
            wait_http(&format!("{}/healthz", stack.worker_url), "the worker").await?;
        }
        "slow-mysql" => {
            stack.mysql_proxy.delay_ms.store(1_000, Ordering::Relaxed);
            tokio::time::sleep(fault).await;
            stack.mysql_proxy.delay_ms.store(0, Ordering::Relaxed);
        }
        "slow-redis" => {
            stack.redis_proxy.delay_ms.store(2_000, Ordering::Relaxed);
            tokio::time::sleep(fault).await;
            stack.redis_proxy.delay_ms.store(0, Ordering::Relaxed);
        }
        other => anyhow::bail!("unknown drill {other}"),
    }
    Ok(())
}

/// What the drill must show beyond the invariants (issue 12, "behaviour to reach").
fn behaviour(drill: &str, during: &Window, recovery_s: Option<f64>) -> Vec<String> {
    let mut v = Vec::new();
    match drill {
        "redis-kill" | "redis-freeze" | "slow-redis" => {
            if during.browse_success < 0.99 {
                v.push(format!(
                    "catalog reads without Redis: {:.1} % succeeded (want ≥ 99 %)",
                    during.browse_success * 100.0
                ));
            }
            if during.browse_p99_ms > 1_000.0 {
                v.push(format!(
                    "catalog reads waited on Redis: p99 {:.0} ms (want ≤ 1 s)",
                    during.browse_p99_ms
                ));
            }
        }
        "mysql-restart" if during.failed_p99_ms > 3_000.0 => {
            v.push(format!(
                "with MySQL down, failures took p99 {:.0} ms (want ≤ 3 s: fail fast)",
                during.failed_p99_ms
            ));
        }
        "broker-stop" | "broker-restart" if during.checkout_success < 0.99 => {
            v.push(format!(
                "with the broker down, {:.1} % of checkouts succeeded (want ≥ 99 %)",
                during.checkout_success * 100.0
            ));
        }
        _ => {}
    }
    match recovery_s {
        Some(s) if s > 10.0 => v.push(format!("recovered {s:.1} s after healing (want ≤ 10 s)")),
        None => v.push("no checkout succeeded after healing".to_owned()),
        _ => {}
    }
    v
}

async fn run_drill(
    stack: &mut Stack,
    db: &domain::db::Db,
    skus: &[String],
    drill: &str,
    p: &Profile,
) -> anyhow::Result<Value> {
    log(&format!("{drill}: load"));
    let snap = snapshot(db).await?;
    let load = Load::start(stack, skus, p.users, drill).await?;
    let t0 = load.ctx.t0;
    tokio::time::sleep(Duration::from_secs(p.warmup_s)).await;
    let fault_at = t0.elapsed().as_secs_f64();
    log(&format!("{drill}: fault"));
    inject(stack, db, &snap, drill, p).await?;
    let healed_at = t0.elapsed().as_secs_f64();
    log(&format!("{drill}: healed; recovering"));
    tokio::time::sleep(Duration::from_secs(p.recovery_s)).await;
    let end = t0.elapsed().as_secs_f64();
    let history = load.stop().await;
    log(&format!("{drill}: checking"));
    let drained = wait_drained(db, &snap, Duration::from_secs(90)).await;
    let (mut violations, resolved_by_reading) = check(db, &snap, &history).await?;
    if drained.is_none() {
        let unprocessed = count(db, &unprocessed_sql(&snap)).await.unwrap_or(-1);
        violations.push(format!(
            "not drained within 90 s: {unprocessed} order.paid events never processed"
        ));
    }
    let before = window(&history.ops, 0.0, fault_at);
    let during = window(&history.ops, fault_at, healed_at);
    let after = window(&history.ops, healed_at, end);
    let recovery_s = history
        .ops
        .iter()
        .filter(|o| o.kind == Kind::Checkout && o.ok() && o.at >= healed_at)
        .map(|o| o.at + o.ms / 1000.0 - healed_at)
        .reduce(f64::min);
    violations.extend(behaviour(drill, &during, recovery_s));
    let unknown = history
        .ops
        .iter()
        .filter(|o| o.outcome.starts_with("unknown"))
        .count();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for o in &history.ops {
        *outcomes.entry(o.outcome.clone()).or_default() += 1;
    }
    let orders = history
        .keys
        .iter()
        .filter(|(_, r)| matches!(r, Resolution::Order { .. }))
        .count();
    log(&format!(
        "{drill}: {} requests, {} orders, {} violations {violations:?}",
        history.ops.len(),
        orders,
        violations.len()
    ));
    Ok(json!({
        "drill": drill,
        "fault_at_s": fault_at, "healed_at_s": healed_at, "end_s": end,
        "before": before, "during": during, "after": after,
        "recovery_s": recovery_s,
        "drain_s": drained,
        "requests": history.ops.len(),
        "outcomes": outcomes,
        "unknown_outcomes": unknown,
        "checkouts": history.keys.len(),
        "orders": orders,
        "resolved_by_reading_state": resolved_by_reading,
        "subscription_events": history.subscription_events,
        "subscription_reconnects": history.subscription_reconnects,
        "violations": violations,
    }))
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = Profile::named(&args.profile)?;
    let drills: Vec<String> = if args.drills.is_empty() {
        DRILLS
            .iter()
            .filter(|d| !ON_REQUEST.contains(d))
            .map(|d| (*d).to_owned())
            .collect()
    } else {
        args.drills.clone()
    };
    for d in &drills {
        anyhow::ensure!(DRILLS.contains(&d.as_str()), "unknown drill {d}");
    }
    let dir = std::env::temp_dir().join(format!("ruizhu-drills-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    log(&format!("work directory {}", dir.display()));
    let mut stack = Stack::start(&args, &dir).await?;
    let work = async {
        use diesel_async::RunQueryDsl as _;
        let db = stack.db()?;
        // plenty of stock on the SKUs the load buys, so orders are refused for faults, not stock
        let mut conn = db.conn().await?;
        diesel::sql_query("UPDATE skus SET stock = 1000000 WHERE status = 'ACTIVE'")
            .execute(&mut conn)
            .await?;
        drop(conn);
        let page = client::graphql(
            &reqwest::Client::new(),
            &format!("{}/graphql", stack.urls[0]),
            None,
            "{ products(first: 20) { edges { node { skus { id } } } } }",
            json!({}),
        )
        .await;
        let Outcome::Ok(page) = page.outcome else {
            anyhow::bail!("reading the catalog failed: {:?}", page.outcome);
        };
        let skus: Vec<String> = page["products"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["node"]["skus"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .take(40)
            .collect();
        anyhow::ensure!(!skus.is_empty(), "no SKUs in the catalog");
        let mut reports = Vec::new();
        for d in &drills {
            reports.push(run_drill(&mut stack, &db, &skus, d, &profile).await?);
        }
        Ok::<_, anyhow::Error>(reports)
    };
    // stopped from outside: still stop every process this run started
    let result = tokio::select! {
        r = work => r,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    stack.shutdown().await;
    let reports = result?;
    let violations: usize = reports
        .iter()
        .map(|r| r["violations"].as_array().map_or(0, Vec::len))
        .sum();
    let report = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "profile": args.profile, "settings": profile,
        "deadline_ms": DEADLINE.as_millis() as u64,
        "drills": reports, "violations": violations,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if args.keep {
        log(&format!("kept {}", stack.dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    anyhow::ensure!(violations == 0, "{violations} violations");
    Ok(())
}
