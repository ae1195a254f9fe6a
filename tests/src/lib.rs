//! Test harness: real Postgres (one fresh database per test via `#[sqlx::test]`), real Redis (one
//! key prefix per test), real S3 (SeaweedFS locally; one bucket per test), and the real API on port 0.
//!
//! Run through `deploy/test`, which provisions the services and exports their settings.

pub mod browser;
pub mod webhook_receiver;

use std::time::Duration;

use moetune_api::auth::{ensure_tenant, Scope, TokenKeys};
use moetune_api::{ApiConfig, Application};
use moetune_scheduler::SchedulerConfig;
use sqlx::PgPool;

pub struct TestEnv {
    pub base: String,
    pub token: String,
    pub pool: PgPool,
    pub config: ApiConfig,
    pub s3: aws_sdk_s3::Client,
    pub http: reqwest::Client,
}

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

impl TestEnv {
    /// Starts the API for one test: fresh bucket, fresh Redis prefix, tenant "acme".
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, |_| {}).await
    }

    /// Like `start`, after `configure` has adjusted the API's settings.
    pub async fn start_with(pool: PgPool, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let mut config = ApiConfig::load().expect("MOETUNE_* settings (run the tests through deploy/test)");
        configure(&mut config);
        config.bind_addr = "127.0.0.1:0".into();
        config.redis_prefix = unique("moetune-test");
        config.s3.bucket = unique("test");
        let s3 = config.s3.client();
        s3.create_bucket().bucket(&config.s3.bucket).send().await.expect("create the test bucket");
        let app = Application::build_with_pool(config.clone(), pool.clone()).await.expect("api builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let tenant = ensure_tenant(&pool, "acme").await.expect("tenant");
        let token = TokenKeys::from_config(&config).expect("keys").mint(tenant, None, 3600).expect("token");
        Self { base, token, pool, config, s3, http: reqwest::Client::new() }
    }

    /// An HS256 token for a tenant (created if needed) with the given scopes (None: every tenant scope).
    pub async fn token_for(&self, tenant: &str, scopes: Option<&[Scope]>) -> String {
        let id = ensure_tenant(&self.pool, tenant).await.expect("tenant");
        TokenKeys::from_config(&self.config).expect("keys").mint(id, scopes, 3600).expect("token")
    }

    /// An operator token (scope `admin`).
    pub async fn admin_token(&self) -> String {
        self.token_for("operators", Some(&[Scope::Admin])).await
    }

    /// An API key (`mtk-…`) for an existing tenant, made by an operator through the API; `scopes`
    /// None gives every tenant scope.
    pub async fn api_key(&self, tenant: &str, name: &str, scopes: Option<&[&str]>) -> String {
        let mut body = serde_json::json!({"tenant": tenant, "name": name});
        if let Some(scopes) = scopes {
            body["scopes"] = serde_json::json!(scopes);
        }
        let response = self.http.post(self.url("/v1/admin/api_keys")).bearer_auth(self.admin_token().await).json(&body).send().await.expect("POST /v1/admin/api_keys");
        assert_eq!(response.status(), 200, "an operator creates API keys");
        let created: serde_json::Value = response.json().await.expect("json");
        created["value"].as_str().expect("the key's value").to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        let mut config = SchedulerConfig::load().expect("scheduler settings");
        config.redis_prefix = self.config.redis_prefix.clone();
        config.s3_bucket = self.config.s3.bucket.clone();
        config.reconcile_interval_ms = 300;
        config.placement_interval_ms = 300;
        config.metrics_addr = String::new();
        config.webhooks.allowed_private_networks = self.config.webhooks.allowed_private_networks.clone();
        config
    }

    /// The queue as the scheduler sees it.
    pub async fn queue(&self) -> moetune_domain::JobQueue {
        moetune_domain::JobQueue::connect(&self.config.redis_url, &self.config.redis_prefix).await.expect("redis")
    }

    /// Ids of the jobs waiting in the Redis queue, all tenants.
    pub async fn waiting_jobs(&self) -> Vec<String> {
        self.queue().await.waiting().await.expect("queue").into_iter().flat_map(|(_, jobs)| jobs).collect()
    }

    /// `POST /v1/files` with the given purpose and bytes.
    pub async fn upload(&self, purpose: &str, name: &str, body: Vec<u8>) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .text("purpose", purpose.to_string())
            .part("file", reqwest::multipart::Part::bytes(body).file_name(name.to_string()));
        self.http.post(self.url("/v1/files")).bearer_auth(&self.token).multipart(form).send().await.expect("upload request")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.http.get(self.url(path)).bearer_auth(&self.token).send().await.expect("GET");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("json")
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(&self.token).json(&body).send().await.expect("POST")
    }

    /// Keys in the test bucket (to prove nothing was stored) and unfinished multipart uploads.
    pub async fn stored_objects(&self) -> (Vec<String>, usize) {
        let listed = self.s3.list_objects_v2().bucket(&self.config.s3.bucket).send().await.expect("list");
        let keys = listed.contents().iter().filter_map(|o| o.key().map(String::from)).collect();
        let uploads = self.s3.list_multipart_uploads().bucket(&self.config.s3.bucket).send().await.expect("list uploads");
        (keys, uploads.uploads().len())
    }

    pub async fn file_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&self.pool).await.expect("count")
    }

    /// `POST /v1/files` of the demo dataset (deploy/demo/finance-alpaca-mini.jsonl, 240 alpaca examples).
    pub async fn upload_demo_dataset(&self) -> serde_json::Value {
        let dataset = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl")).expect("demo dataset");
        self.upload("fine-tune", "finance.jsonl", dataset).await.json().await.expect("file object")
    }

    /// The file once it has left `uploaded` (validated, or failed), at most 20 s.
    pub async fn settled_file(&self, id: &str) -> serde_json::Value {
        for _ in 0..200 {
            let file = self.get_json(&format!("/v1/files/{id}")).await;
            if file["status"] != "uploaded" {
                return file;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("file {id} still uploaded after 20 s");
    }

    /// Waits until the job has reported `steps` training steps (metrics events), at most 120 s.
    pub async fn wait_for_steps(&self, job_id: &str, steps: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let reported: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND type = 'metrics'")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await
                .expect("count metrics");
            if reported >= steps {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {job_id} reported {reported} of {steps} steps after 120 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until it reaches a terminal status or `timeout` passes.
    pub async fn wait_for_job(&self, id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
            if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} still {} after {timeout:?}", job["status"]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command line of a CPU runner serving the test's Redis prefix and bucket.
pub fn runner_command(env: &TestEnv, id: &str) -> std::process::Command {
    let mut command = std::process::Command::new(workspace_binary("moetune-runner"));
    command
        .arg("serve")
        .env("MOETUNE_HEARTBEAT_MS", "200")
        .env("MOETUNE_CLAIM_POLL_MS", "100")
        .env("MOETUNE_REDIS_PREFIX", &env.config.redis_prefix)
        .env("MOETUNE_S3__BUCKET", &env.config.s3.bucket)
        .env("MOETUNE_RUNNER_ID", id)
        .env("MOETUNE_DEVICE", "cpu")
        .env("MOETUNE_THREADS", "2")
        .env("MOETUNE_ADDRESS", "127.0.0.1")
        .env("MOETUNE_GANG_TIMEOUT_SECONDS", "60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    command
}

/// Starts a CPU runner process (see `runner_command`).
pub fn spawn_runner(env: &TestEnv, id: &str) -> KillOnDrop {
    KillOnDrop(runner_command(env, id).spawn().expect("runner starts"))
}

/// A free loopback port (for a process the test starts; it binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The URL of the test's own database, for processes the test starts.
pub fn database_url(pool: &PgPool) -> String {
    let database = pool.connect_options().get_database().expect("test database name").to_string();
    format!("postgres://postgres:postgres@127.0.0.1:5432/{database}")
}

/// Starts `moetune-api serve` as its own process on `port`, with the test's database, Redis prefix and
/// bucket (so `env.token` works against it); returns once `/healthz` answers.
pub async fn spawn_api(env: &TestEnv, port: u16) -> KillOnDrop {
    let settings = [
        ("MOETUNE_DATABASE_URL", database_url(&env.pool)),
        ("MOETUNE_REDIS_PREFIX", env.config.redis_prefix.clone()),
        ("MOETUNE_S3__BUCKET", env.config.s3.bucket.clone()),
    ];
    serve_api(&workspace_binary("moetune-api"), port, &settings).await.expect("the api process comes up")
}

/// Runs `BINARY serve` on `port` with `settings` added to the environment; returns once `/healthz`
/// answers (also used by the API benchmark with the release binary).
pub async fn serve_api(binary: &std::path::Path, port: u16, settings: &[(&str, String)]) -> anyhow::Result<KillOnDrop> {
    let child = std::process::Command::new(binary)
        .arg("serve")
        .env("MOETUNE_BIND_ADDR", format!("127.0.0.1:{port}"))
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
    let api = KillOnDrop(child);
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok(api);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{} did not come up on port {port}", binary.display())
}

/// The command line of `moetune-scheduler` for the test's database, Redis prefix and bucket.
pub fn scheduler_command(env: &TestEnv) -> std::process::Command {
    let mut command = std::process::Command::new(workspace_binary("moetune-scheduler"));
    command
        .env("MOETUNE_DATABASE_URL", database_url(&env.pool))
        .env("MOETUNE_REDIS_PREFIX", &env.config.redis_prefix)
        .env("MOETUNE_S3_BUCKET", &env.config.s3.bucket)
        .env("MOETUNE_RECONCILE_INTERVAL_MS", "300")
        .env("MOETUNE_METRICS_ADDR", "")
        .stdout(std::process::Stdio::null());
    command
}

/// Starts `moetune-scheduler` as its own process (see `scheduler_command`).
pub fn spawn_scheduler(env: &TestEnv) -> KillOnDrop {
    KillOnDrop(scheduler_command(env).spawn().expect("scheduler starts"))
}

/// Path of a workspace binary built by `cargo build` (deploy/test builds them before testing).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug").join(name);
    assert!(path.exists(), "{} is missing: run the tests through deploy/test (it builds the binaries)", path.display());
    path
}

/// A fresh scratch directory for one test of a suite (emptied if a previous run left it).
pub fn scratch_dir(suite: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("moetune-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The training loss of every step in `moetune-runner train`'s JSON-line events, by (stage, step).
pub fn train_losses(events: &[serde_json::Value]) -> std::collections::BTreeMap<(String, u64), f64> {
    events
        .iter()
        .filter(|e| e["type"] == "metrics")
        .map(|e| ((e["stage"].as_str().expect("stage").to_string(), e["step"].as_u64().expect("step")), e["train_loss"].as_f64().expect("loss")))
        .collect()
}

/// Runs a command to completion, failing the test with its stderr unless it succeeds; returns stdout.
pub fn run_ok(command: &mut std::process::Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Loads an HTML page in headless Chromium (Debian's `chromium`, installed by deploy/test) and returns
/// the DOM after its scripts ran and it was laid out.
pub fn render_in_chromium(html: &str) -> String {
    let path = std::env::temp_dir().join(format!("moetune-page-{}.html", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, html).expect("write page");
    let dom = run_ok(std::process::Command::new("chromium").args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]).arg(format!("file://{}", path.display())));
    std::fs::remove_file(&path).ok();
    dom
}

/// The value of `attribute` on the element with id `id` in `dom` (a serialized DOM).
pub fn attribute_of(dom: &str, id: &str, attribute: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..start].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let value = tag.split(&format!("{attribute}=\"")).nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

/// The `error` object of an API error response, after checking its status and request id.
pub async fn error_of(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.expect("json error body");
    body["error"].clone()
}

/// A path inside the repository, as a string (for commands the tests run).
pub fn repo_path(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A TCP proxy on loopback in front of a real service, which a test can cut (every connection closed,
/// new ones refused) and restore: a dependency going away and coming back, without stopping the
/// machine's own service under the other tests.
pub struct TcpProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(tokio::sync::watch::channel(0u64).0);
        let (target, accepting, cuts) = (target.to_string(), up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let (target, mut cut) = (target.clone(), cuts.subscribe());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, up, generation }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
