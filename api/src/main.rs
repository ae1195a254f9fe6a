use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a request allocates and frees many small objects (JSON values,
/// rows, headers) across worker threads, where glibc's arenas spent a sixth of the API's CPU time
/// under load (`deploy/bench api`, perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use moetune_api::auth::{ensure_tenant, Scope, TokenKeys};
use moetune_api::openapi::ApiDoc;
use moetune_api::{ApiConfig, Application, MIGRATOR};

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
    /// Print a bearer token (HS256 JWT) for TENANT, creating the tenant if needed.
    Token {
        tenant: String,
        /// Space-separated scopes (default: every tenant scope). `admin` makes an operator token.
        #[arg(long)]
        scopes: Option<String>,
    },
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
    moetune_platform::settings::init_logging(default_level);
    let config = ApiConfig::load()?;
    match cli.command {
        Some(Command::Token { tenant, scopes }) => {
            let scopes = scopes.map(|s| Scope::parse_list(&s)).transpose().map_err(anyhow::Error::msg)?;
            let pool = sqlx::PgPool::connect(&config.database_url).await?;
            MIGRATOR.run(&pool).await?;
            let id = ensure_tenant(&pool, &tenant).await?;
            println!("{}", TokenKeys::from_config(&config)?.mint(id, scopes.as_deref(), config.token_ttl_days * 86_400)?);
        }
        _ => {
            let app = Application::build(config.clone()).await?;
            tracing::info!(port = app.port(), "moetune api listening");
            app.run_until_stopped().await?;
        }
    }
    Ok(())
}
