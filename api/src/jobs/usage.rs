//! Expert usage as an object of its own: every monitor check of a job, per MoE layer, with the
//! routing drift from the base model (the `monitor` events' data, typed).

use moetune_types::{JobId, LayerUsage, RunnerEventKind, TenantId};
use serde::Serialize;
use utoipa::ToSchema;

use super::history::{get_owned, page_start};
use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::AppState;

/// One expert-usage monitor check (`fine_tuning.job.expert_usage`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpertUsage {
    /// The id of the job event that recorded the check (`ftevent-N`): the cursor for `after`.
    pub id: String,
    /// Always `fine_tuning.job.expert_usage`.
    pub object: &'static str,
    pub created_at: UnixTime,
    /// The attempt that measured it.
    pub attempt: i32,
    /// `sft` or `qat`.
    pub stage: String,
    pub step: u32,
    /// Per MoE layer: every expert's count and share of the routed (token, choice) pairs on the
    /// diagnostic prompts, their concentration, and how much of the validation data the layer still
    /// routes as the base model does.
    pub layers: Vec<LayerExpertUsage>,
    pub mean_top1_share: f64,
    pub mean_entropy_norm: f64,
    /// Fraction of validation tokens (mean over layers) whose top-k experts differ from the base's.
    pub routing_drift: Option<f64>,
    /// The router-collapse alert fired.
    pub alert: bool,
    /// The routing drift crossed `monitor.max_routing_drift`: the job paused.
    pub drift_exceeded: bool,
    /// What the monitor did: `lr_decayed to …`, `early_stop`, `paused`, or null.
    pub action: Option<String>,
    pub learning_rate: f64,
}

/// One MoE layer at one check.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayerExpertUsage {
    /// The decoder layer's index in the model.
    pub layer: usize,
    /// Routed (token, choice) pairs per expert, by expert index.
    pub counts: Vec<u64>,
    /// `counts` as fractions of the layer's routed pairs, by expert index.
    pub shares: Vec<f64>,
    /// The busiest expert's share.
    pub top1_share: f64,
    /// Entropy of `shares` divided by ln(experts): 1 = uniform use, 0 = one expert takes everything.
    pub entropy_norm: f64,
    pub kl_to_uniform: f64,
    /// Mean entropy of the per-token router distribution.
    pub avg_token_entropy: f64,
    /// Fraction of validation tokens this layer sends to the same top-k experts as the base model.
    pub base_agreement: Option<f64>,
}

impl From<LayerUsage> for LayerExpertUsage {
    fn from(usage: LayerUsage) -> Self {
        let total = usage.counts.iter().sum::<u64>().max(1) as f64;
        let shares = usage.counts.iter().map(|&c| c as f64 / total).collect();
        let LayerUsage { layer, top1_share, entropy_norm, kl_to_uniform, avg_token_entropy, counts, base_agreement } = usage;
        Self { layer, counts, shares, top1_share, entropy_norm, kl_to_uniform, avg_token_entropy, base_agreement }
    }
}

#[derive(sqlx::FromRow)]
struct MonitorRow {
    seq: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    attempt: i32,
    data: Option<serde_json::Value>,
}

/// The job's monitor checks, newest first; `after` is the id of the last check already seen.
pub async fn expert_usage(state: &AppState, tenant: TenantId, job_id: &JobId, after: Option<&str>, limit: i64) -> Result<(Vec<ExpertUsage>, bool), ApiError> {
    get_owned(state, tenant, job_id).await?;
    let after_seq = page_start(after)?;
    let rows: Vec<MonitorRow> = sqlx::query_as(
        "SELECT seq, created_at, attempt, data FROM job_events
         WHERE job_id = $1 AND type = 'monitor' AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(job_id)
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let has_more = rows.len() as i64 > limit;
    let checks = rows.into_iter().take(limit as usize).filter_map(check).collect();
    Ok((checks, has_more))
}

/// A recorded `monitor` event as a check (events of other shapes are skipped).
fn check(row: MonitorRow) -> Option<ExpertUsage> {
    let kind = serde_json::from_value::<RunnerEventKind>(row.data?).ok()?;
    let RunnerEventKind::Monitor { stage, step, layers, mean_top1_share, mean_entropy_norm, alert, action, learning_rate, routing_drift, drift_exceeded } = kind else {
        return None;
    };
    Some(ExpertUsage {
        id: format!("ftevent-{}", row.seq),
        object: "fine_tuning.job.expert_usage",
        created_at: row.created_at.into(),
        attempt: row.attempt,
        stage,
        step,
        layers: layers.into_iter().map(LayerExpertUsage::from).collect(),
        mean_top1_share,
        mean_entropy_norm,
        routing_drift,
        alert,
        drift_exceeded,
        action,
        learning_rate,
    })
}
