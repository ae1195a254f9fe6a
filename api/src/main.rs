use clap::{Parser, Subcommand};
use moetune_api::auth::{ensure_tenant, TokenKeys};
use moetune_api::openapi::ApiDoc;
use moetune_api::{ApiConfig, Application, MIGRATOR};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "moetune-api", about = "The moetune HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print a bearer token for TENANT, creating the tenant if needed.
    Token { tenant: String },
    /// Print the OpenAPI spec (redirect to openapi/openapi.json to update the checked-in copy).
    Openapi,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", ApiDoc::json());
        return Ok(());
    }
    // `token` prints for scripts: only warnings go to stderr there.
    let default_level = if matches!(cli.command, Some(Command::Token { .. })) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .init();
    let config = ApiConfig::load()?;
    match cli.command {
        Some(Command::Token { tenant }) => {
            let pool = sqlx::PgPool::connect(&config.database_url).await?;
            MIGRATOR.run(&pool).await?;
            let id = ensure_tenant(&pool, &tenant).await?;
            println!("{}", TokenKeys::new(&config.jwt_secret).mint(id, &tenant, config.token_ttl_days)?);
        }
        _ => {
            let app = Application::build(config.clone()).await?;
            tracing::info!(port = app.port(), "moetune api listening");
            app.run_until_stopped().await?;
        }
    }
    Ok(())
}
