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
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Load data.
    Seed {
        /// The demo catalog (categories, products, SKUs, images); safe to run twice.
        #[arg(long, required = true)]
        demo: bool,
    },
    /// Print the GraphQL schema (SDL), or write it to a file.
    ExportSchema {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
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

    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init_logging(&settings);
    match cli.command {
        Command::Serve => serve(settings).await,
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
            app.catalog.invalidate_category_tree().await;
            tracing::info!(?summary, "demo catalog loaded");
            Ok(())
        }
        Command::ExportSchema { .. } => Ok(()),
    }
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
    http::serve(app, listener, http::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
