//! API and upload measurements for `deploy/bench`, one JSON object per line on stdout.
//!
//! Starts the release `moetune-api` as its own process on a fresh database, Redis prefix and bucket
//! (the settings come from the `MOETUNE_*` env `deploy/bench` exports), then measures:
//!
//! * `POST /v1/fine_tuning/jobs` and `GET /v1/fine_tuning/jobs` from 64 concurrent connections (one
//!   tenant each), against a baseline that does the same Postgres work directly, in as few round trips,
//!   on a pool of the API's size: the job insert with its events and the Redis enqueue; the page query.
//! * a 1 GiB JSONL upload through `POST /v1/files` against a direct S3 PUT of the same bytes, and the
//!   API process's peak RSS.
//!
//! Everything it creates is removed at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use moetune_api::auth::{ensure_tenant, TokenKeys};
use moetune_api::ApiConfig;
use moetune_e2e::{free_port, serve_api, KillOnDrop};
use moetune_types::JobAssignment;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

const CONNECTIONS: usize = 64;
/// The API's own pool size (`Application::build`), so the baseline gets the same database capacity.
const POOL_SIZE: u32 = 16;

struct Bench {
    config: ApiConfig,
    pool: PgPool,
    database: String,
    api_binary: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let api_binary = PathBuf::from(args.next().context("usage: moetune-api-bench API_BINARY [requests-per-connection] [upload-bytes]")?);
    let per_connection: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let upload_bytes: u64 = args.next().map_or(Ok(1 << 30), |a| a.parse())?;
    let bench = Bench::setup(api_binary).await?;
    let outcome = bench.run(per_connection, upload_bytes).await;
    bench.teardown().await?;
    for line in outcome? {
        println!("{line}");
    }
    Ok(())
}

impl Bench {
    async fn setup(api_binary: PathBuf) -> anyhow::Result<Self> {
        let mut config = ApiConfig::load()?;
        let id = &Uuid::new_v4().simple().to_string()[..12];
        let database = format!("moetune_bench_{id}");
        let admin = PgPoolOptions::new().max_connections(1).connect(&replace_database(&config.database_url, "postgres")).await?;
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await?;
        config.database_url = replace_database(&config.database_url, &database);
        config.redis_prefix = format!("moetune-bench-{id}");
        config.s3.bucket = format!("bench-{id}");
        config.s3.client().create_bucket().bucket(&config.s3.bucket).send().await.context("creating the bench bucket")?;
        let pool = PgPoolOptions::new().max_connections(POOL_SIZE).connect(&config.database_url).await?;
        moetune_api::MIGRATOR.run(&pool).await?;
        Ok(Self { config, pool, database, api_binary })
    }

    async fn run(&self, per_connection: usize, upload_bytes: u64) -> anyhow::Result<Vec<Value>> {
        let mut lines = Vec::new();
        let api = self.spawn_api().await?;
        let http = reqwest::Client::new();
        let keys = TokenKeys::from_config(&self.config)?;
        let mut tenants = Vec::new();
        let dataset = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo/finance-alpaca-mini.jsonl"))?;
        for i in 0..CONNECTIONS {
            let tenant = ensure_tenant(&self.pool, &format!("bench-{i}")).await?;
            let token = keys.mint(tenant, None, 3600)?;
            let file = upload(&http, &api.base, &token, reqwest::Body::from(dataset.clone()), dataset.len() as u64).await?;
            tenants.push(Arc::new(Tenant { id: tenant, token, file }));
        }

        let base = api.base.clone();
        let create = Load::run(per_connection, &tenants, move |client, tenant| {
            let url = format!("{base}/v1/fine_tuning/jobs");
            async move {
                let body = json!({"model": "moetune/tiny-mixtral", "training_file": tenant.file});
                let response = client.post(url).bearer_auth(&tenant.token).json(&body).send().await?;
                ensure!(response.status() == 200, "create job: {} {}", response.status(), response.text().await?);
                Ok(())
            }
        })
        .await?;
        let template = self.template_job(&tenants[0]).await?;
        let queue = moetune_domain::JobQueue::connect(&self.config.redis_url, &self.config.redis_prefix).await?;
        let template = Arc::new((template, queue, self.pool.clone()));
        let create_base = Load::run(per_connection, &tenants, move |_, tenant| {
            let template = template.clone();
            async move { insert_and_enqueue(&template.0, &template.1, &template.2, tenant.id).await }
        })
        .await?;
        lines.push(create.compare("api_create_job", &create_base));

        let base = api.base.clone();
        let list = Load::run(per_connection, &tenants, move |client, tenant| {
            let url = format!("{base}/v1/fine_tuning/jobs?limit=20");
            async move {
                let response = client.get(url).bearer_auth(&tenant.token).send().await?;
                ensure!(response.status() == 200, "list jobs: {}", response.status());
                // Only what the check needs is decoded: the load generator shares the CPU with the API.
                let page: Page = response.json().await?;
                ensure!(!page.data.is_empty(), "a page of jobs");
                Ok(())
            }
        })
        .await?;
        let pool = self.pool.clone();
        let list_base = Load::run(per_connection, &tenants, move |_, tenant| {
            let pool = pool.clone();
            async move { page_query(&pool, tenant.id).await }
        })
        .await?;
        lines.push(list.compare("api_list_jobs", &list_base));
        drop(api);

        if upload_bytes > 0 {
            lines.push(self.upload_bench(&http, &tenants[0], upload_bytes).await?);
        }
        Ok(lines)
    }

    /// A fresh API process (so its peak RSS is its own), up once `/healthz` answers.
    async fn spawn_api(&self) -> anyhow::Result<Api> {
        let port = free_port();
        let settings = [
            ("MOETUNE_DATABASE_URL", self.config.database_url.clone()),
            ("MOETUNE_REDIS_PREFIX", self.config.redis_prefix.clone()),
            ("MOETUNE_S3__BUCKET", self.config.s3.bucket.clone()),
            ("MOETUNE_QUOTAS__MAX_CONCURRENT_JOBS", "100000000".into()),
            ("MOETUNE_QUOTAS__MAX_STORAGE_BYTES", "100000000000".into()),
            // One tenant makes every request: a bucket that never runs dry, so the limiter's Redis call
            // is measured but never refuses.
            ("MOETUNE_RATE_LIMITS__REQUESTS_PER_SECOND", "1000000000".into()),
            ("MOETUNE_RATE_LIMITS__BURST", "1000000000".into()),
            ("RUST_LOG", "warn".into()),
        ];
        let process = serve_api(&self.api_binary, port, &settings).await?;
        Ok(Api { base: format!("http://127.0.0.1:{port}"), process })
    }

    /// One job the API created, as the baseline's template: its row values and its queue assignment.
    async fn template_job(&self, tenant: &Tenant) -> anyhow::Result<Template> {
        let (id, model, training_file, spec, hyperparameters, requirements): (moetune_types::JobId, String, String, Value, Value, Value) = sqlx::query_as(
            "SELECT id, model, training_file, spec, hyperparameters, requirements FROM jobs WHERE tenant_id = $1 LIMIT 1",
        )
        .bind(tenant.id)
        .fetch_one(&self.pool)
        .await?;
        let mut conn = self.pool.acquire().await?;
        let assignment = moetune_domain::store::assignment(&mut conn, &id, &self.config.s3.bucket).await?;
        Ok(Template { model, training_file, spec, hyperparameters, requirements, assignment })
    }

    async fn upload_bench(&self, http: &reqwest::Client, tenant: &Tenant, bytes: u64) -> anyhow::Result<Value> {
        let path = std::env::temp_dir().join(format!("moetune-bench-{bytes}.jsonl"));
        write_dataset(&path, bytes)?;
        let size = std::fs::metadata(&path)?.len();
        let api = self.spawn_api().await?;
        let rss_idle = peak_rss_kib(api.process.0.id())?;
        let started = Instant::now();
        let file = tokio::fs::File::open(&path).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        upload(http, &api.base, &tenant.token, body, size).await?;
        let api_s = started.elapsed().as_secs_f64();
        let rss_peak = peak_rss_kib(api.process.0.id())?;
        drop(api);

        let s3 = self.config.s3.client();
        // Read first (not timed): a streamed file body is sent aws-chunked, which some S3 servers (Garage) refuse.
        let bytes = tokio::fs::read(&path).await?;
        let started = Instant::now();
        let body = aws_sdk_s3::primitives::ByteStream::from(bytes);
        s3.put_object().bucket(&self.config.s3.bucket).key("bench/direct.jsonl").body(body).send().await?;
        let direct_s = started.elapsed().as_secs_f64();
        Ok(json!({
            "bench": "upload", "bytes": size, "api_s": api_s, "direct_s": direct_s,
            "api_mbps": size as f64 / api_s / 1e6, "direct_mbps": size as f64 / direct_s / 1e6, "ratio": direct_s / api_s,
            "api_rss_idle_mib": rss_idle as f64 / 1024.0, "api_rss_peak_mib": rss_peak as f64 / 1024.0,
        }))
    }

    async fn teardown(&self) -> anyhow::Result<()> {
        self.pool.close().await;
        let admin = PgPoolOptions::new().max_connections(1).connect(&replace_database(&self.config.database_url, "postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)).execute(&admin).await?;
        let s3 = self.config.s3.client();
        let bucket = &self.config.s3.bucket;
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            for object in page?.contents() {
                s3.delete_object().bucket(bucket).key(object.key().unwrap_or_default()).send().await?;
            }
        }
        s3.delete_bucket().bucket(bucket).send().await?;
        let client = redis::Client::open(self.config.redis_url.as_str())?;
        let mut redis = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.config.redis_prefix)).query_async(&mut redis).await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut redis).await?;
        }
        Ok(())
    }
}

/// A page of the list, decoded no further than its length.
#[derive(serde::Deserialize)]
struct Page {
    data: Vec<serde::de::IgnoredAny>,
}

struct Api {
    base: String,
    process: KillOnDrop,
}

struct Tenant {
    id: moetune_types::TenantId,
    token: String,
    file: String,
}

struct Template {
    model: String,
    training_file: String,
    spec: Value,
    hyperparameters: Value,
    requirements: Value,
    assignment: JobAssignment,
}

/// The Postgres and Redis work of a job creation, done directly and in as few round trips as the API:
/// the row (queued) with the same two events in one statement, then the enqueue through the queue
/// script. (The API's statement also checks the files and takes a quota slot; this one only writes.)
async fn insert_and_enqueue(t: &Template, queue: &moetune_domain::JobQueue, pool: &PgPool, tenant: moetune_types::TenantId) -> anyhow::Result<()> {
    let id = moetune_types::JobId::generate();
    sqlx::query(
        "WITH job AS (
            INSERT INTO jobs (id, tenant_id, model, training_file, spec, hyperparameters, status, metadata, method_type, priority, requirements, queued_at)
            VALUES ($1, $2, $3, $4, $5, $6, 'queued', '{}', 'supervised', 0, $7, now())
            RETURNING id
         )
         INSERT INTO job_events (job_id, attempt, level, type, message, data)
         SELECT job.id, 1, 'info', 'message', e.message, e.data
         FROM job, (VALUES (1, 'Validating training file', NULL), (2, 'Files validated, job queued', '{\"status\": \"queued\"}'::jsonb)) AS e (n, message, data)
         ORDER BY e.n",
    )
    .bind(&id)
    .bind(tenant)
    .bind(&t.model)
    .bind(&t.training_file)
    .bind(&t.spec)
    .bind(&t.hyperparameters)
    .bind(&t.requirements)
    .execute(pool)
    .await?;
    let mut assignment = t.assignment.clone();
    assignment.job_id = id;
    queue.enqueue(&assignment).await
}

/// The page `GET /v1/fine_tuning/jobs?limit=20` shows, read directly with the API's own query (the
/// rows with their artifacts), built by the API's own code so the statement text, and so its plan, match.
async fn page_query(pool: &PgPool, tenant: moetune_types::TenantId) -> anyhow::Result<()> {
    let mut query = sqlx::QueryBuilder::new(moetune_api::jobs::SELECT_JOBS);
    query.push("tenant_id = ").push_bind(tenant);
    moetune_api::pagination::finish_page(&mut query, None, true, 20);
    let rows = query.build().fetch_all(pool).await?;
    ensure!(!rows.is_empty(), "a page of jobs");
    Ok(())
}

async fn upload(http: &reqwest::Client, base: &str, token: &str, body: reqwest::Body, length: u64) -> anyhow::Result<String> {
    let part = reqwest::multipart::Part::stream_with_length(body, length).file_name("train.jsonl");
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", part);
    let response = http.post(format!("{base}/v1/files")).bearer_auth(token).multipart(form).send().await?;
    ensure!(response.status() == 200, "upload: {} {}", response.status(), response.text().await?);
    let file: Value = response.json().await?;
    Ok(file["id"].as_str().context("file id")?.to_string())
}

/// Latencies of one load: `per_connection` requests from each of the 64 concurrent connections.
struct Load {
    latencies_ms: Vec<f64>,
    seconds: f64,
}

impl Load {
    async fn run<F, Fut>(per_connection: usize, tenants: &[Arc<Tenant>], request: F) -> anyhow::Result<Self>
    where
        F: Fn(reqwest::Client, Arc<Tenant>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for tenant in tenants {
            let (tenant, request) = (tenant.clone(), request.clone());
            // One client per task: one keep-alive connection each.
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let sent = Instant::now();
                    request(client.clone(), tenant.clone()).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies_ms = Vec::new();
        for task in tasks {
            latencies_ms.extend(task.await??);
        }
        latencies_ms.sort_by(f64::total_cmp);
        Ok(Self { latencies_ms, seconds: started.elapsed().as_secs_f64() })
    }

    fn per_second(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.seconds
    }

    fn percentile(&self, p: f64) -> f64 {
        let index = ((self.latencies_ms.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_ms.len()) - 1;
        self.latencies_ms[index]
    }

    fn compare(&self, name: &str, baseline: &Load) -> Value {
        json!({
            "bench": name, "connections": CONNECTIONS, "requests": self.latencies_ms.len(),
            "per_s": self.per_second(), "p50_ms": self.percentile(0.5), "p99_ms": self.percentile(0.99),
            "baseline_per_s": baseline.per_second(), "baseline_p50_ms": baseline.percentile(0.5), "baseline_p99_ms": baseline.percentile(0.99),
            "ratio": self.per_second() / baseline.per_second(),
        })
    }
}

/// `bytes` of valid chat-format JSONL (kept between runs).
fn write_dataset(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= bytes) {
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut written, mut i) = (0u64, 0u64);
    while written < bytes {
        let line = format!(
            "{}\n",
            json!({"messages": [
                {"role": "user", "content": format!("Question {i}: what is the expected return of a diversified bond portfolio over ten years?")},
                {"role": "assistant", "content": format!("Answer {i}: it depends on yields at purchase, duration and credit losses; historically close to the starting yield.")}
            ]})
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    out.flush()?;
    Ok(())
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM in /proc status")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

fn replace_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => url.to_string(),
    }
}
