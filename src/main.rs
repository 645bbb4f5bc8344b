//! `ruizhu`: one binary, one subcommand per role.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ruizhu::app::{self, App};
use ruizhu::config::Settings;
use ruizhu::{http, telemetry};

/// RUIZHU backend-for-frontend.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML config file (default: ./ruizhu.toml when present). Environment variables
    /// `RUIZHU_…` override it.
    #[arg(long, global = true, env = "RUIZHU_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP and WebSocket. Outside production it also creates and migrates the database
    /// and loads the demo catalog into an empty one.
    Serve,
    /// Run the background work only (outbox relay, WeChat message and shipping consumers, order
    /// sweeper, payments worker) with `/healthz`, `/readyz` and `/metrics` on
    /// `RUIZHU_WORKERS__ADDR`. Pair with `RUIZHU_WORKERS__IN_SERVE=false` on `serve`.
    Worker,
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Load data.
    Seed {
        /// The demo catalog (categories, products, SKUs, images); safe to run twice.
        #[arg(long, required = true)]
        demo: bool,
    },
    /// Manage staff accounts.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Manage partners of `/partner/graphql`.
    Partner {
        #[command(subcommand)]
        command: PartnerCommand,
    },
    /// GET a local URL and exit 0 on a 2xx answer: the container health check (the runtime
    /// image has no curl or shell). Needs no configuration.
    Probe {
        /// What to ask, e.g. `http://127.0.0.1:8080/readyz`.
        #[arg(default_value = "http://127.0.0.1:8080/healthz")]
        url: url::Url,
    },
    /// Load and check the configuration (file and `RUIZHU_…` environment) as `serve` and
    /// `worker` would, including the JWT and personal-data keys, then print a summary without
    /// secrets. Opens no connection. Exits non-zero on an unknown key or a refused value.
    CheckConfig,
    /// Print the GraphQL schema (SDL), or write it to a file.
    ExportSchema {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum StaffCommand {
    /// Create a staff account. The password is read from the first line of standard input, or
    /// from the environment variable named by `--password-env` (at least 12 characters).
    Create {
        /// Sign-in name: 3–64 characters of [A-Za-z0-9._-].
        #[arg(long)]
        username: String,
        /// ADVISOR, OPS or ADMIN.
        #[arg(long)]
        role: String,
        /// Name shown to colleagues and clients.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Read the password from this environment variable instead of standard input.
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PartnerCommand {
    /// Create a partner and print its key on standard output. The key is shown this once:
    /// only its SHA-256 is stored.
    Create {
        /// 3–64 characters of [a-z0-9-].
        #[arg(long)]
        name: String,
        /// Comma-separated scopes (`catalog:read`).
        #[arg(long)]
        scopes: String,
        /// Its own budget: cost units a minute (default `RUIZHU_RATE_LIMITS__PARTNER_PER_MINUTE`).
        #[arg(long)]
        cost_per_minute: Option<u32>,
        /// Its own bucket capacity (default `RUIZHU_RATE_LIMITS__PARTNER_BURST`).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Revoke a partner: its key stops working on every replica within
    /// `RUIZHU_PARTNERS__CACHE_TTL_MS`.
    Revoke {
        /// The partner's name.
        #[arg(long)]
        name: String,
    },
    /// Register an Apollo persisted-query manifest as the partner's whole set of operations
    /// (operations missing from it stop working). Every operation is checked against the
    /// schema, the operation limits and the partner's scopes first; nothing is stored unless
    /// all pass.
    Register {
        /// The partner's name.
        #[arg(long)]
        partner: String,
        /// The manifest (`{"format":"apollo-persisted-query-manifest","version":1,…}`).
        manifest: PathBuf,
    },
}

async fn partner_command(settings: Settings, command: PartnerCommand) -> anyhow::Result<()> {
    use std::io::Write as _;
    let app = App::build(settings)?;
    match command {
        PartnerCommand::Create {
            name,
            scopes,
            cost_per_minute,
            burst,
        } => {
            let (partner, key) =
                ruizhu::partners::create(&app, &name, &scopes, cost_per_minute, burst).await?;
            tracing::info!(id = partner.id, name = partner.name, scopes = ?partner.scopes,
                "partner created; its key is printed once on standard output");
            let mut out = std::io::stdout();
            writeln!(out, "{}", secrecy::ExposeSecret::expose_secret(&key))?;
        }
        PartnerCommand::Revoke { name } => {
            ruizhu::partners::revoke(&app, &name).await?;
            tracing::info!(name, "partner revoked");
        }
        PartnerCommand::Register { partner, manifest } => {
            let json = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let registration = ruizhu::partners::register(&app, &partner, &json).await?;
            let mut out = std::io::stdout();
            for op in &registration.operations {
                writeln!(
                    out,
                    "{}  {:<8} cost {:>6}  {}",
                    op.id, op.kind, op.cost, op.name
                )?;
            }
            tracing::info!(
                partner,
                operations = registration.operations.len(),
                removed = registration.removed,
                "manifest registered"
            );
        }
    }
    Ok(())
}

fn read_password(from_env: Option<&str>) -> anyhow::Result<secrecy::SecretString> {
    let password = match from_env {
        Some(var) => {
            std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    Ok(secrecy::SecretString::from(password))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ExportSchema { output } = &cli.command {
        // needs no configuration, database or network
        let sdl = resolvers::sdl();
        match output {
            Some(path) => {
                std::fs::write(path, sdl).with_context(|| format!("writing {}", path.display()))?
            }
            None => {
                use std::io::Write as _;
                std::io::stdout().write_all(sdl.as_bytes())?;
            }
        }
        return Ok(());
    }

    if let Command::Probe { url } = &cli.command {
        return probe(url).await;
    }

    let settings = Settings::load(cli.config.as_deref())?;
    if let Command::Partner { command } = cli.command {
        // standard output is the command's result (a key, the registered operations)
        telemetry::init_logging_to_stderr(&settings);
        return partner_command(settings, command).await;
    }
    telemetry::init_logging(&settings);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Worker => worker(settings).await,
        Command::Migrate => {
            domain::db::create_database_if_missing(&settings.database.url).await?;
            let applied = domain::db::run_migrations(&settings.database.url).await?;
            tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
            Ok(())
        }
        Command::Seed { demo } => {
            anyhow::ensure!(demo, "only --demo is available");
            anyhow::ensure!(
                !settings.is_production(),
                "the demo seed is refused in production"
            );
            let app = App::build(settings)?;
            let mut conn = app.db.conn().await?;
            let summary = domain::catalog::seed::seed_demo_catalog(&mut conn).await?;
            domain::membership::seed::seed_demo_membership(&mut conn).await?;
            app.catalog.invalidate_category_tree().await;
            tracing::info!(?summary, "demo catalog loaded");
            Ok(())
        }
        Command::Staff {
            command:
                StaffCommand::Create {
                    username,
                    role,
                    display_name,
                    password_env,
                },
        } => {
            let role = domain::identity::Role::parse(&role.to_uppercase())
                .context("--role must be ADVISOR, OPS or ADMIN")?;
            let password = read_password(password_env.as_deref())?;
            let app = App::build(settings)?;
            let id = app
                .identity
                .create_staff(&username, &password, role, &display_name)
                .await?;
            tracing::info!(id, username, role = role.as_str(), "staff account created");
            Ok(())
        }
        Command::CheckConfig => check_config(&settings),
        Command::ExportSchema { .. } | Command::Partner { .. } | Command::Probe { .. } => Ok(()),
    }
}

/// One plain HTTP/1.1 GET with a 3-second bound; Ok only for a 2xx status.
async fn probe(url: &url::Url) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    anyhow::ensure!(url.scheme() == "http", "probe speaks plain http only");
    let host = url.host_str().context("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ruizhu-probe\r\nConnection: close\r\n\r\n",
        &url[url::Position::BeforePath..url::Position::AfterQuery]
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        head.truncate(n);
        Ok::<_, std::io::Error>(head)
    })
    .await
    .context("no answer within 3 s")??;
    let status_line = String::from_utf8_lossy(&answer);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(
        status.starts_with('2') && status.len() == 3,
        "{url} answered {:?}",
        status_line.lines().next().unwrap_or_default()
    );
    Ok(())
}

fn check_config(settings: &Settings) -> anyhow::Result<()> {
    domain::identity::TokenKeys::new(&settings.jwt)?;
    domain::crypto::FieldCipher::new(&settings.crypto)?;
    domain::crypto::BlindIndex::new(&settings.crypto)?;
    let summary = serde_json::json!({
        "env": format!("{:?}", settings.env).to_lowercase(),
        "http_addr": settings.http.addr.to_string(),
        "graphiql": settings.http.graphiql,
        "workers_in_serve": settings.workers.in_serve,
        "workers_addr": settings.workers.addr.to_string(),
        "auto_migrate": settings.auto_migrate(),
        "demo_seed": settings.demo_seed(),
        "dev_login": settings.auth.dev_login,
        "dev_payments": settings.dev_payments(),
        "wechatpay_merchant": settings.wechatpay.merchant_configured(),
        "events": if settings.kafka.brokers.as_deref().is_some_and(|b| !b.is_empty()) {
            "kafka"
        } else {
            "in-process"
        },
        "field_key_ids": settings.crypto.field_keys.keys().collect::<Vec<_>>(),
        "active_field_key": settings.crypto.active_field_key,
    });
    use std::io::Write as _;
    writeln!(std::io::stdout(), "configuration ok: {summary}")?;
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.http.addr;
    tracing::info!(env = ?settings.env, %addr, "starting");
    let app = App::build(settings)?;
    app::prepare_database(&app.settings, &app.db).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("listening on http://{addr} (GraphiQL at /graphiql)");
    // this process's sockets and caches always follow the events
    let mut tasks = app.consumers.spawn_local()?;
    tasks.extend(ruizhu::workers::spawn_kafka_probe(app.clone()));
    if app.settings.workers.in_serve {
        // single-node mode: the workers run in this process too
        tasks.extend(ruizhu::workers::spawn_background(app.clone())?);
    }
    http::serve(app, listener, http::shutdown_signal()).await?;
    for task in tasks {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn worker(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.workers.addr;
    tracing::info!(env = ?settings.env, %addr, "starting the worker");
    let app = App::build(settings)?;
    let mut tasks = ruizhu::workers::spawn_background(app.clone())?;
    tasks.extend(ruizhu::workers::spawn_kafka_probe(app.clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, http::ops_router(app))
        .with_graceful_shutdown(http::shutdown_signal())
        .await?;
    for task in tasks {
        task.abort();
    }
    tracing::info!("worker stopped");
    Ok(())
}
