//! Delivers due webhook deliveries. Any number of schedulers may run it: a delivery is claimed with
//! `FOR UPDATE SKIP LOCKED` and leased by pushing its `next_attempt_at` past the request timeout, so
//! one that a crashed dispatcher held is tried again (at least once, never lost).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::PgPool;

use moetune_domain::webhooks::network::NetworkPolicy;
use super::resolver::PolicyResolver;
use super::schedule::{parse_retry_after, RetrySchedule};
use moetune_domain::webhooks::signing::{signature_header, Secret};
use super::WebhookConfig;
use crate::metrics::Metrics;

/// What a receiver's answer body is kept to.
const KEPT_BODY_BYTES: usize = 1024;
/// How often events past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Dispatcher {
    pool: PgPool,
    http: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    schedule: RetrySchedule,
    config: WebhookConfig,
    metrics: Arc<Metrics>,
}

/// A claimed delivery with what sending it needs.
#[derive(sqlx::FromRow)]
struct Due {
    delivery_id: i64,
    attempts: i32,
    manual: bool,
    event_id: String,
    body: String,
    endpoint_id: String,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    disabled: bool,
}

/// How one attempt ended.
struct Outcome {
    status_code: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
    duration: Duration,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }

    fn gone(&self) -> bool {
        self.status_code == Some(410)
    }
}

impl Dispatcher {
    pub fn new(pool: PgPool, config: WebhookConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let policy = Arc::new(NetworkPolicy::parse(&config.allowed_private_networks).map_err(anyhow::Error::msg)?);
        let schedule = RetrySchedule::parse(&config.retry_schedule_ms, config.jitter).map_err(anyhow::Error::msg)?;
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            // A redirect could lead anywhere, private networks included: a 3xx is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from HTTP(S)_PROXY would resolve tenants' hosts itself, past the policy resolver.
            .no_proxy()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("moetune-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { pool, http, policy, schedule, config, metrics })
    }

    /// Delivers until the process stops. Each delivery runs on its own as soon as it is claimed; a new
    /// claim takes only as many as there are free slots, and none for an endpoint that already has
    /// `per_endpoint_concurrency` in flight, so a slow endpoint delays only its own deliveries.
    pub async fn run(&self) -> anyhow::Result<()> {
        let idle = Duration::from_millis(self.config.poll_interval_ms);
        let mut pruned_at = Instant::now() - PRUNE_EVERY;
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        loop {
            if pruned_at.elapsed() >= PRUNE_EVERY {
                pruned_at = Instant::now();
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning old webhook events failed");
                }
            }
            let free = self.config.concurrency.max(1).saturating_sub(in_flight.len());
            let mut claimed = 0;
            if free > 0 {
                match self.claim_due(free, &per_endpoint).await {
                    Ok(due) => {
                        claimed = due.len();
                        for due in due {
                            *per_endpoint.entry(due.endpoint_id.clone()).or_default() += 1;
                            in_flight.push(async move {
                                let endpoint = due.endpoint_id.clone();
                                (endpoint, self.deliver(due).await)
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming due webhook deliveries failed; retrying"),
                }
            }
            if claimed > 0 && in_flight.len() < self.config.concurrency {
                continue;
            }
            tokio::select! {
                Some((endpoint, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(count) = per_endpoint.get_mut(&endpoint) {
                        *count -= 1;
                        if *count == 0 {
                            per_endpoint.remove(&endpoint);
                        }
                    }
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "recording a webhook attempt failed; the delivery is retried after its lease");
                    }
                }
                () = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// Deletes events older than `retention_days` with their deliveries and attempts, unless one of
    /// their deliveries is still pending; returns how many events went.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM webhook_events e WHERE e.created_at < now() - make_interval(days => $1)
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')",
        )
        .bind(self.config.retention_days)
        .execute(&self.pool)
        .await?;
        if deleted.rows_affected() > 0 {
            tracing::info!(events = deleted.rows_affected(), "pruned old webhook events");
        }
        Ok(deleted.rows_affected())
    }

    /// Claims the deliveries that are due and attempts each (one pass, waiting for all); returns how
    /// many it claimed.
    pub async fn dispatch_due(&self) -> anyhow::Result<usize> {
        let due = self.claim_due(self.config.concurrency.max(1) * 2, &HashMap::new()).await?;
        let claimed = due.len();
        let results: Vec<anyhow::Result<()>> =
            futures_util::stream::iter(due).map(|d| self.deliver(d)).buffer_unordered(self.config.concurrency.max(1)).collect().await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        Ok(claimed)
    }

    /// Claims up to `limit` due deliveries, oldest first, at most `per_endpoint_concurrency` per
    /// endpoint less what `busy` says is already in flight there.
    async fn claim_due(&self, limit: usize, busy: &HashMap<String, usize>) -> anyhow::Result<Vec<Due>> {
        let lease_secs = (self.config.request_timeout_ms / 1000 + 30) as f64;
        let (busy_endpoints, busy_counts): (Vec<String>, Vec<i32>) = busy.iter().map(|(e, n)| (e.clone(), *n as i32)).unzip();
        Ok(sqlx::query_as(
            "UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
             FROM webhook_events e, webhook_endpoints w
             WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE id IN (
                                SELECT id FROM (
                                    SELECT id, endpoint_id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS nth
                                    FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()) due
                                LEFT JOIN unnest($3::text[], $4::int[]) AS busy(endpoint_id, in_flight) USING (endpoint_id)
                                WHERE due.nth <= $5 - coalesce(busy.in_flight, 0))
                            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
               AND e.id = d.event_id AND w.id = d.endpoint_id
             RETURNING d.id AS delivery_id, d.attempts, d.manual, e.id AS event_id, e.payload::text AS body,
                       w.id AS endpoint_id, w.url, w.secret,
                       CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END AS previous_secret,
                       w.disabled",
        )
        .bind(limit as i64)
        .bind(lease_secs)
        .bind(&busy_endpoints)
        .bind(&busy_counts)
        .bind(self.config.per_endpoint_concurrency.max(1) as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn deliver(&self, due: Due) -> anyhow::Result<()> {
        if due.disabled {
            sqlx::query("UPDATE webhook_deliveries SET status = 'failed' WHERE id = $1").bind(due.delivery_id).execute(&self.pool).await?;
            return Ok(());
        }
        let outcome = self.attempt(&due).await;
        let label = if outcome.succeeded() { "succeeded" } else if outcome.gone() { "gone" } else { "failed" };
        self.metrics.webhook_attempts.with_label_values(&[label]).inc();
        tracing::info!(event = %due.event_id, endpoint = %due.endpoint_id, outcome = label, status = ?outcome.status_code, "webhook attempt");
        self.record(&due, &outcome).await
    }

    /// One signed POST; never fails, the outcome says what happened.
    async fn attempt(&self, due: &Due) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome { status_code: None, body: None, error: Some(error), retry_after: None, duration: started.elapsed() };
        let url = match url::Url::parse(&due.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("invalid URL: {e}")),
        };
        if let Some(ip) = self.policy.literal_denied(&url) {
            return failed(format!("{ip} is a private or reserved address"));
        }
        let secrets: Result<Vec<Secret>, String> = std::iter::once(&due.secret).chain(&due.previous_secret).map(|s| Secret::parse(s)).collect();
        let secrets = match secrets {
            Ok(secrets) => secrets,
            Err(e) => return failed(format!("the endpoint's secret is unusable: {e}")),
        };
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature_header(&secrets, &due.event_id, timestamp, due.body.as_bytes()))
            .body(due.body.clone());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return failed(error_chain(&e)),
        };
        let status_code = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let mut kept = Vec::new();
        while kept.len() < KEPT_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(KEPT_BODY_BYTES - kept.len())]),
                _ => break,
            }
        }
        let body = Some(String::from_utf8_lossy(&kept).into_owned());
        Outcome { status_code: Some(status_code), body, error: None, retry_after, duration: started.elapsed() }
    }

    /// Stores the attempt and the delivery's next state in one transaction.
    async fn record(&self, due: &Due, outcome: &Outcome) -> anyhow::Result<()> {
        let made = due.attempts as usize + 1;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, event_id, endpoint_id, trigger, status, response_status_code, response_body, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(format!("atmpt_{}", uuid::Uuid::new_v4().simple()))
        .bind(due.delivery_id)
        .bind(&due.event_id)
        .bind(&due.endpoint_id)
        .bind(if due.manual { "manual" } else { "scheduled" })
        .bind(if outcome.succeeded() { "succeeded" } else { "failed" })
        .bind(outcome.status_code.map(i32::from))
        .bind(&outcome.body)
        .bind(&outcome.error)
        .bind(outcome.duration.as_millis().min(i32::MAX as u128) as i32)
        .execute(&mut *tx)
        .await?;
        let next = if outcome.succeeded() || outcome.gone() { None } else { self.schedule.next_delay(made, outcome.retry_after) };
        let status = match (outcome.succeeded(), next) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, manual = false,
                    next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
        )
        .bind(due.delivery_id)
        .bind(status)
        .bind(made as i32)
        .bind(next.unwrap_or_default().as_secs_f64())
        .execute(&mut *tx)
        .await?;
        if outcome.gone() {
            disable_gone(&mut tx, &due.endpoint_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `410 Gone`: the receiver says the endpoint no longer exists, so it gets nothing more.
async fn disable_gone(tx: &mut sqlx::PgConnection, endpoint_id: &str) -> sqlx::Result<()> {
    let reason = format!("The endpoint answered 410 Gone at {}; enable it again once it accepts deliveries.", chrono::Utc::now().to_rfc3339());
    sqlx::query("UPDATE webhook_endpoints SET disabled = true, disabled_reason = $2, updated_at = now() WHERE id = $1")
        .bind(endpoint_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE webhook_deliveries SET status = 'failed' WHERE endpoint_id = $1 AND status = 'pending'").bind(endpoint_id).execute(&mut *tx).await?;
    tracing::warn!(endpoint = endpoint_id, "webhook endpoint disabled after 410 Gone");
    Ok(())
}

/// The error and its causes: reqwest's own message alone hides why ("error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
